"""What every rule kind shares: the ``where`` filter, the checks of the metrics it names, and its registration. A rule
kind is one subclass of :class:`RuleBase` with a ``kind: Literal["NAME"]`` field and a :meth:`RuleBase.decide`; defining
it registers it in :data:`RULES` (the spec's validation, its error messages and the scorecard read that table)."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vaelab.studies.claims.decisions import Decision
from vaelab.studies.claims.metrics import check_metric, check_where
from vaelab.studies.claims.reader import Reader

Direction = Literal["greater", "less"]
RULES: dict[str, type["RuleBase"]] = {}  # kind -> its rule class, in the order the kinds were defined


class RuleBase(BaseModel):
    """A rule kind: a subclass with the field ``kind: Literal["NAME"]``, its parameters and :meth:`decide`."""

    model_config = ConfigDict(extra="forbid")
    where: dict[str, Any] = Field(default_factory=dict, description="only runs whose column or metric matches: "
                                                                    "a value, a list, {min, max, prefix}")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        (kind,) = cls.model_fields["kind"].annotation.__args__
        if kind in RULES:
            raise TypeError(f"two rule kinds are named {kind!r}: {RULES[kind].__name__} and {cls.__name__}")
        RULES[kind] = cls

    @field_validator("metric", "than", "se", check_fields=False)
    @classmethod
    def _metric(cls, v: Any) -> Any:
        return check_metric(v) if isinstance(v, str) else v

    @field_validator("where", "a", "b", check_fields=False)
    @classmethod
    def _where(cls, v: Optional[dict], info) -> Optional[dict]:
        return v if v is None else check_where(v, info.field_name)

    def keys(self) -> list[str]:
        """The grid keys the rule names (checked against the study's grid)."""
        return []

    def decide(self, reader: Reader) -> Decision:
        """The rule decided from the study's runs."""
        raise NotImplementedError
