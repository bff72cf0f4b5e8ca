"""How a claim is scored: held, did not hold, or inconclusive with why, from a 95% interval
(:mod:`vaelab.studies.intervals`). An interval on the claimed side holds; one wholly on the other side does not; one
that spans the line is inconclusive, and so is one seed (no spread to build an interval from), a failed run among
those the claim reads, or a metric or run not measured at this scale."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

from vaelab.studies import intervals
from vaelab.studies.intervals import Interval

HELD, NOT_HELD, INCONCLUSIVE = "held", "did not hold", "inconclusive"
OUTCOMES = (HELD, NOT_HELD, INCONCLUSIVE)


@dataclass
class Decision:
    """What a rule found: the outcome, vaelab's measurement (with its interval), why, and the deciding interval;
    ``more``, for an inconclusive one: how many times its replicates (seeds) would decide it at the same estimate and
    spread (:func:`vaelab.studies.intervals.replicates_to_decide`)."""

    outcome: str
    measurement: str
    why: str = ""
    interval: Optional[Interval] = None
    more: Optional[float] = None


@dataclass
class ClaimOutcome:
    id: str
    claim: str
    document: str
    outcome: str  # held | did not hold | inconclusive
    measurement: str
    why: str
    explains: str
    interval: Optional[Interval] = None
    seeds_to_decide: Optional[int] = None  # inconclusive: the seeds per setting that would decide it (estimated)

    def to_json(self) -> dict:
        return asdict(self)


def side(iv: Interval, direction: str, line: float, what: str) -> Decision:
    """Held when the interval lies on the claimed side of ``line``; not held when wholly on (or at) the other."""
    above = direction in ("greater", "increasing")
    if (iv.low > line) if above else (iv.high < line):
        return Decision(HELD, what, "", iv)
    if (iv.high <= line) if above else (iv.low >= line):
        return Decision(NOT_HELD, what, f"its 95% interval lies on the other side of {intervals.number(line)}", iv)
    return Decision(INCONCLUSIVE, what, f"its 95% interval spans {intervals.number(line)}", iv,
                    intervals.replicates_to_decide(iv, abs(iv.value - line)))


def equivalent(iv: Interval, tolerance: float, what: str) -> Decision:
    """Held when the interval lies within +-tolerance, not held when wholly outside it."""
    if -tolerance <= iv.low and iv.high <= tolerance:
        return Decision(HELD, what, f"within the tolerance of {100 * tolerance:g}%", iv)
    if iv.low > tolerance or iv.high < -tolerance:
        return Decision(NOT_HELD, what, f"beyond the tolerance of {100 * tolerance:g}%", iv)
    return Decision(INCONCLUSIVE, what, f"its 95% interval reaches past the tolerance of {100 * tolerance:g}%", iv,
                    intervals.replicates_to_decide(iv, abs(abs(iv.value) - tolerance)))


def all_of(parts: list[tuple[str, Decision]], every: bool) -> Decision:
    """One decision from several labelled ones. ``every``: the claim holds for each part (a grid value, a sigma, a
    setting), so one part that did not hold decides it; otherwise the parts are replicates (runs) that must agree."""
    if len(parts) == 1:
        label, d = parts[0]
        return Decision(d.outcome, f"{label}: {d.measurement}" if label else d.measurement, d.why, d.interval, d.more)
    outcomes = [d.outcome for _, d in parts]
    measurement = "; ".join(f"{label}: {d.measurement}" for label, d in parts)
    reasons: dict[str, list[str]] = {}  # why -> the parts it was said of, in order
    for label, d in parts:
        if d.why and d.outcome != HELD:
            reasons.setdefault(d.why, []).append(label)
    whys = "; ".join(f"{why} ({', '.join(labels)})" for why, labels in reasons.items())
    held = sum(o == HELD for o in outcomes)
    if held == len(parts):
        return Decision(HELD, measurement, "")
    if every and NOT_HELD in outcomes or not every and all(o == NOT_HELD for o in outcomes):
        failed = [label for label, d in parts if d.outcome == NOT_HELD]
        return Decision(NOT_HELD, measurement, f"did not hold for {', '.join(failed)}" + (f": {whys}" if whys else ""))
    open_parts = [d.more for _, d in parts if d.outcome == INCONCLUSIVE]  # every one must be decided
    more = max(open_parts) if open_parts and None not in open_parts else None
    return Decision(INCONCLUSIVE, measurement, (f"held in {held} of {len(parts)}; " if held else "") + whys,
                    more=more)


def seeds_wanted(more: Optional[float], seeds: int) -> Optional[int]:
    """The seeds per setting at which an inconclusive decision would be decided (``more`` times the replicates)."""
    if more is None or seeds < 2:
        return None
    return max(seeds + 1, math.ceil(seeds * more - 1e-6))


def seeds_sentence(more: Optional[float], seeds: int) -> str:
    """What would decide an inconclusive claim: 'about 9 seeds per setting would decide it at the estimate and spread
    measured (3 now: 3x the runs)', or '' where no number of seeds would (or none can be estimated)."""
    wanted = seeds_wanted(more, seeds)
    if wanted is None:
        return ""
    return (f"about {wanted} seeds per setting would decide it at the estimate and spread measured ({seeds} now: "
            f"{wanted / seeds:.3g}x the runs)")


def outcome_counts(outcomes: list[ClaimOutcome]) -> dict[str, int]:
    """How many claims held, did not hold and were inconclusive, in that order."""
    return {k: sum(o.outcome == k for o in outcomes) for k in OUTCOMES}
