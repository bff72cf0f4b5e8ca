"""``read``: a metric beats another (or a number) by a relative ``margin`` in every run: a deterministic read of one
trained model, for studies of one seed and for properties that need no seeds (a geodesic's shape)."""
from __future__ import annotations

import math
from typing import Literal, Union

from pydantic import Field

from vaelab.studies import intervals
from vaelab.studies.claims.decisions import HELD, INCONCLUSIVE, NOT_HELD, Decision, all_of
from vaelab.studies.claims.reader import Reader
from vaelab.studies.claims.rules.base import Direction, RuleBase


LISTED = 6  # up to this many runs, the measurement lists each; above it, their range and the runs that did not hold


class Read(RuleBase):
    kind: Literal["read"]
    metric: str
    direction: Direction
    than: Union[float, str]
    margin: float = Field(0.0, ge=0, description="relative: 0.2 is by more than 20%")

    def decide(self, reader: Reader) -> Decision:
        than = (self.than,) if isinstance(self.than, str) else ()  # a metric of the same runs, or a number
        rows, missing = reader.measured(self.where, self.metric, *than)
        if missing:
            return missing
        sign = 1 if self.direction == "greater" else -1
        parts, read = [], []
        for r in rows:
            a = reader.value(r, self.metric)
            b = reader.value(r, self.than) if isinstance(self.than, str) else self.than
            change = (a - b) / abs(b) if b else math.copysign(math.inf, a - b) if a != b else 0.0
            read.append((a, b, change))
            shown = f"{reader.name(self.metric)} {intervals.number(a)} vs {intervals.number(b)} ({100 * change:+.0f}%)"
            if sign * change > self.margin:
                parts.append((reader.label(r), Decision(HELD, shown)))
            elif sign * change <= 0:
                parts.append((reader.label(r), Decision(NOT_HELD, shown)))
            else:
                parts.append((reader.label(r), Decision(INCONCLUSIVE, shown,
                                                        f"within the {100 * self.margin:g}% margin")))
        than = reader.name(self.than) if isinstance(self.than, str) else intervals.number(self.than)
        d = all_of(parts, every=False)
        rule_text = f"{self.direction} than {than}" + (f" by more than {100 * self.margin:g}%" if self.margin else "")
        if len(parts) <= LISTED:
            return Decision(d.outcome, d.measurement, f"{rule_text}, read per run" + (f"; {d.why}" if d.why else ""))
        counts = [(sum(p.outcome == o for _, p in parts), word) for o, word in
                  ((HELD, "held"), (NOT_HELD, "did not hold"), (INCONCLUSIVE, f"within the {100 * self.margin:g}% margin"))]
        tally = ", ".join(f"{word} in {n}" for n, word in counts if n)
        why = "" if d.outcome == HELD else f"; {tally} of {len(parts)} runs"
        return Decision(d.outcome, self._range(reader, read, parts), f"{rule_text}, read per run{why}")

    def _range(self, reader: Reader, read: list[tuple[float, float, float]], parts: list[tuple[str, Decision]]) -> str:
        """Many runs in a few words: 'in 45 runs, geodesic_sigma_rise 4.04 to 9.92 vs 1.00 (+304% to +892%)', then
        each run that did not hold or is open, by name, when they are few (up to LISTED)."""
        def span(values):
            low, high = min(values), max(values)
            return intervals.number(low) if low == high else f"{intervals.number(low)} to {intervals.number(high)}"

        a, b, change = zip(*read)
        text = (f"in {len(read)} runs, {reader.name(self.metric)} {span(a)} vs {span(b)} "
                f"({100 * min(change):+.0f}%" + (f" to {100 * max(change):+.0f}%)" if min(change) != max(change) else ")"))
        odd = [f"{label}: {d.measurement}" for label, d in parts if d.outcome != HELD]
        return text + (f"; not held or open in {len(odd)}: " + "; ".join(odd) if 0 < len(odd) <= LISTED else "")
