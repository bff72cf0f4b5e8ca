"""``compare``: a metric greater (or less) than another metric in the same runs (the mean difference per run), than a
number, or between two groups of runs ``a`` and ``b`` (Welch); ``statistic: sd`` compares the groups' spreads over
seeds (an F interval on their ratio)."""
from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

from pydantic import Field, model_validator

from vaelab.studies import intervals
from vaelab.studies.claims.decisions import INCONCLUSIVE, Decision, side
from vaelab.studies.claims.metrics import where_text
from vaelab.studies.claims.reader import Reader
from vaelab.studies.claims.rules.base import Direction, RuleBase


def _runs(n: int) -> str:
    return f"{n} run{'s' * (n != 1)}"


class Compare(RuleBase):
    kind: Literal["compare"]
    metric: str
    direction: Direction
    than: Union[float, str, None] = Field(None, description="a metric of the same runs, or a number")
    a: Optional[dict[str, Any]] = Field(None, description="with b: two groups of runs (filters like where)")
    b: Optional[dict[str, Any]] = None
    statistic: Literal["mean", "sd"] = Field("mean", description="sd: the groups' spread over seeds")
    names: Optional[tuple[str, str]] = Field(None, description="what to call groups a and b (default: their filters)")

    @model_validator(mode="after")
    def _one_form(self):
        if (self.than is None) == (self.a is None or self.b is None) or (self.a is None) != (self.b is None):
            raise ValueError("compare takes either `than` (a metric or a number) or both groups `a` and `b`")
        if self.statistic == "sd" and self.a is None:
            raise ValueError("statistic sd compares the spread of two groups `a` and `b`")
        return self

    def decide(self, reader: Reader) -> Decision:
        return self._than(reader) if self.a is None else self._groups(reader)

    def _than(self, reader: Reader) -> Decision:
        """One set of runs: the metric against another metric of the same runs, or a number."""
        name = reader.name(self.metric)
        than = (self.than,) if isinstance(self.than, str) else ()  # a metric of the same runs, or a number
        rows, missing = reader.measured(self.where, self.metric, *than)
        if missing:
            return missing
        other = reader.name(self.than) if isinstance(self.than, str) else intervals.number(self.than)
        diffs = [reader.value(r, self.metric) - (reader.value(r, self.than) if isinstance(self.than, str)
                                                 else self.than) for r in rows]
        iv = intervals.mean(diffs)
        if iv is None:
            return Decision(INCONCLUSIVE, f"{name} - {other}: {intervals.number(diffs[0])}",
                            "one run: no spread over seeds to build an interval from")
        return side(iv, self.direction, 0.0, f"{name} - {other}, mean over {iv.n} runs: {iv.text(signed=True)}")

    def _groups(self, reader: Reader) -> Decision:
        """Two groups of runs: their means (Welch), or their spreads over seeds (F)."""
        name = reader.name(self.metric)
        sides = []
        for group in (self.a, self.b):
            rows, missing = reader.measured({**self.where, **group}, self.metric)
            if missing:
                return missing
            sides.append(reader.numbers(rows, self.metric))
        a, b = sides
        name_a, name_b = self.names or (where_text(self.a), where_text(self.b))
        stat = (lambda v: sum(v) / len(v)) if self.statistic == "mean" else \
            (lambda v: math.sqrt(sum((x - sum(v) / len(v)) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan)
        word = "mean" if self.statistic == "mean" else "sd over seeds"
        shown = (f"{name} {word} {intervals.number(stat(a))} ({name_a}, {_runs(len(a))}) vs "
                 f"{intervals.number(stat(b))} ({name_b}, {_runs(len(b))})")
        if min(len(a), len(b)) < 2:
            return Decision(INCONCLUSIVE, shown, "one seed: no spread over seeds to build an interval from")
        if self.statistic == "sd":
            iv = intervals.sd_ratio(a, b)
            if iv is None:
                return Decision(INCONCLUSIVE, shown, f"{name_b} has no spread at all to compare against")
            return side(iv, self.direction, 1.0, f"{shown}; ratio {iv.text()}")
        iv = intervals.difference(a, b)
        return side(iv, self.direction, 0.0, f"{shown}; difference {iv.text(signed=True)}")
