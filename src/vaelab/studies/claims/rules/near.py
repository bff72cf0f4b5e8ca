"""``near``: a metric the same within a relative ``tolerance`` ``across`` a grid key (every pair of its values,
Welch), or equal to a model-free ``reference`` in every run (with the run's own standard error ``se``)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from vaelab.studies import intervals
from vaelab.studies.claims.decisions import HELD, INCONCLUSIVE, NOT_HELD, Decision, all_of, equivalent
from vaelab.studies.claims.metrics import REFERENCES, is_number, match, short, sort_values
from vaelab.studies.claims.reader import Reader, groups
from vaelab.studies.claims.rules.base import RuleBase
from vaelab.studies.intervals import Interval


class Near(RuleBase):
    kind: Literal["near"]
    metric: str
    tolerance: float = Field(..., gt=0, description="relative: 0.1 is within 10%")
    across: Optional[str] = Field(None, description="a grid key: the metric's mean the same at each of its values")
    reference: Optional[Literal[tuple(REFERENCES)]] = Field(  # type: ignore[valid-type]
        None, description="a model-free value of each run")
    se: Optional[str] = Field(None, description="with reference: the metric's standard error in each run")
    by: Optional[str] = None

    @model_validator(mode="after")
    def _one_form(self):
        if (self.across is None) == (self.reference is None):
            raise ValueError("near takes either `across` (a grid key) or `reference` "
                             f"(one of {', '.join(REFERENCES)})")
        return self

    def keys(self) -> list[str]:
        return [k for k in (self.across, self.by) if k]

    def decide(self, reader: Reader) -> Decision:
        rows, missing = reader.measured(self.where, self.metric)
        if missing:
            return missing
        if self.reference:  # per grid point (and variant): its seeds' mean against the reference
            points: dict[str, list[dict]] = {}
            for r in rows:
                points.setdefault(reader.results.label(r), []).append(r)
            return all_of([(label, self._reference(reader, runs)) for label, runs in points.items()], every=True)
        return all_of([(label, self._across(reader, group)) for label, group in groups(rows, self.by)], every=True)

    def _reference(self, reader: Reader, rows: list[dict]) -> Decision:
        """The runs' mean value against the model-free reference, relative, with the runs' mean standard error (not
        shrunk by their number: seeds of one grid point may share the analysis's random draws)."""
        ref, value = REFERENCES[self.reference](reader, rows[0]), sum(reader.numbers(rows, self.metric)) / len(rows)
        if not is_number(ref) or ref == 0:
            return Decision(INCONCLUSIVE, f"{intervals.number(value)}", f"no {self.reference} reference for these runs")
        ses = reader.numbers(rows, self.se) if self.se else [0.0] * len(rows)
        if len(ses) < len(rows):
            return Decision(INCONCLUSIVE, f"{intervals.number(value)}", f"a run lacks {reader.name(self.se)}")
        se = sum(ses) / len(ses)
        half = intervals.z() * se / abs(ref)
        dev = value / ref - 1
        iv = Interval(dev, dev - half, dev + half, 1)
        return equivalent(iv, self.tolerance, f"{intervals.number(value)} against {intervals.number(ref)} "
                                              f"({iv.text(signed=True, scale=100, unit='%')})")

    def _across(self, reader: Reader, rows: list[dict]) -> Decision:
        """Every pair of the grid key's values: the difference of their means, relative to the mean over all runs."""
        grid = sort_values({r[self.across] for r in rows})
        values = {str(g): reader.numbers([r for r in rows if match(r[self.across], g)], self.metric) for g in grid}
        overall = [v for vs in values.values() for v in vs]
        centre = abs(sum(overall) / len(overall)) or 1.0
        shown = (f"{reader.name(self.metric)} {', '.join(intervals.number(sum(v) / len(v)) for v in values.values())} "
                 f"at {short(self.across)} {', '.join(map(str, grid))}")
        if len(grid) < 2:
            return Decision(INCONCLUSIVE, shown, f"one value of {short(self.across)} at this scale")
        if min(len(v) for v in values.values()) < 2:
            return Decision(INCONCLUSIVE, shown, "one seed: no spread over seeds to build an interval from")
        pairs = [(g, h, intervals.difference(values[str(h)], values[str(g)]))
                 for i, g in enumerate(grid) for h in grid[i + 1:]]
        pairs = [(g, h, Interval(iv.value / centre, iv.low / centre, iv.high / centre, iv.n, iv.df, iv.fitted)) for g, h, iv in pairs]
        verdicts = [(g, h, equivalent(iv, self.tolerance, "")) for g, h, iv in pairs]
        order = {HELD: 0, INCONCLUSIVE: 1, NOT_HELD: 2}
        g, h, worst = max(verdicts, key=lambda t: (order[t[2].outcome], abs(t[2].interval.value)))
        pair = f"{short(self.across)} {h} vs {g}"
        open_pairs = [d.more for _, _, d in verdicts if d.outcome == INCONCLUSIVE]  # each must be decided
        return Decision(worst.outcome, f"{shown}; {pair}: {worst.interval.text(signed=True, scale=100, unit='%')} of "
                                       "the mean", worst.why + ("" if worst.outcome == HELD else f" ({pair})"),
                        worst.interval, max(open_pairs) if open_pairs and None not in open_pairs else None)
