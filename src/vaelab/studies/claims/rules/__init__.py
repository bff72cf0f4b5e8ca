"""The rule kinds of claims, one module each. Importing a module defines its rule class, which registers itself in
:data:`RULES` (:mod:`.base`); :data:`Rule` is the union a claim's ``rule`` validates against, told apart by ``kind``.
A new rule kind is one module here with one :class:`RuleBase` subclass, and its name in the import line below (whose
order is the order the spec's errors list the kinds in)."""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from vaelab.studies.claims.rules import trend, compare, near, read, verdict, theorem3, winner  # noqa: F401  # isort: skip
from vaelab.studies.claims.rules.base import RULES, Direction, RuleBase

Rule = Annotated[Union[tuple(RULES.values())], Field(discriminator="kind")]  # type: ignore[valid-type]

__all__ = ["RULES", "Direction", "Rule", "RuleBase"]
