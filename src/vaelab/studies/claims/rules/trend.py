"""``trend``: a metric against a grid key rises (or falls): the least-squares slope over every run (seeds are the
replicates), against the grid value's rank, log or value; ``by`` another grid key: within each of its values."""
from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import Field

from vaelab.studies import intervals
from vaelab.studies.claims.decisions import INCONCLUSIVE, Decision, all_of, side
from vaelab.studies.claims.metrics import is_number, match, short, sort_values
from vaelab.studies.claims.reader import Reader, groups
from vaelab.studies.claims.rules.base import RuleBase


class Trend(RuleBase):
    kind: Literal["trend"]
    metric: str
    over: str = Field(..., description="the grid key along which the metric moves")
    direction: Literal["increasing", "decreasing"]
    x: Literal["rank", "log", "linear"] = Field("rank", description="the slope is per grid step, per decade, per unit")
    by: Optional[str] = Field(None, description="a grid key: the trend must hold within each of its values")

    def keys(self) -> list[str]:
        return [k for k in (self.over, self.by) if k]

    def decide(self, reader: Reader) -> Decision:
        rows, missing = reader.measured(self.where, self.metric)
        if missing:
            return missing
        return all_of([(label, self._slope(reader, group)) for label, group in groups(rows, self.by)], every=True)

    def _slope(self, reader: Reader, rows: list[dict]) -> Decision:
        grid = sort_values({r[self.over] for r in rows})
        means = []
        for g in grid:
            vals = reader.numbers([r for r in rows if match(r[self.over], g)], self.metric)
            means.append(f"{intervals.number(sum(vals) / len(vals))}")
        seeds = max(sum(match(r[self.over], g) for r in rows) for g in grid)
        shown = (f"{reader.name(self.metric)} {', '.join(means)} at {short(self.over)} {', '.join(map(str, grid))}"
                 + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
        if len(grid) < 2:
            return Decision(INCONCLUSIVE, shown, f"one value of {short(self.over)} at this scale")
        if seeds < 2:
            return Decision(INCONCLUSIVE, shown, "one seed: no spread over seeds to tell a trend from noise")
        if self.x == "log" and any(not is_number(g) or g <= 0 for g in grid):
            return Decision(INCONCLUSIVE, shown, f"x: log needs positive values of {short(self.over)}")
        position = {str(g): (i if self.x == "rank" else math.log10(g) if self.x == "log" else g)
                    for i, g in enumerate(grid)}
        xs = [position[str(next(g for g in grid if match(r[self.over], g)))] for r in rows]
        iv = intervals.slope(xs, [float(reader.value(r, self.metric)) for r in rows])
        unit = {"rank": "grid step", "log": "decade", "linear": "unit"}[self.x]
        return side(iv, self.direction, 0.0, f"{shown}; slope per {unit} {iv.text(signed=True)}")
