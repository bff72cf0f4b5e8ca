"""Alternating timings of a baseline (fp32, an eager step) against a candidate (bf16, a compiled step), and the
interval that decides between them: each round's ratio base / candidate is one observation, and a decision is taken
only when a distribution-free interval on the median of those ratios lies wholly on one side of a threshold (the
probes in vaelab.precision and vaelab.training_step; docs/machine-probes.md)."""
from __future__ import annotations

import datetime as dt
import math
import os
import statistics
from dataclasses import dataclass, field
from typing import Any

CONFIDENCE = 0.98  # two-sided, spent over the looks: the look at MIN_ROUNDS * 2^j rounds has 1 - 0.02 / 2^(j+1)


def median_interval(values: list[float], confidence: float) -> tuple[float, float, float] | None:
    """A distribution-free interval on the median of ``values``: (x_(k), x_(n+1-k), coverage) with the largest k
    whose coverage 1 - 2 P(Binomial(n, 1/2) <= k - 1) is at least ``confidence``; None when n is too small.

    Why order statistics: a round's ratio is skewed and heavy-tailed (a burst of load hits one side of one round),
    and the rounds are few. The interval assumes only independent rounds from one continuous distribution: no
    normality, no symmetry, and its coverage is exact at every n, where a bootstrap of a median from 8-30 rounds
    is coarse and under-covers (it resamples the few values it has)."""
    n = len(values)
    ordered, k, below = sorted(values), 0, 0.0
    for j in range(n // 2):  # P(B <= j), summed in logs (2^-n underflows past n = 1074)
        below += math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) - n * math.log(2))
        if 2 * below > 1 - confidence:
            break
        k, coverage = j + 1, 1 - 2 * below
    return (ordered[k - 1], ordered[n - k], coverage) if k else None


def look_confidence(look: int) -> float:
    """The confidence of look ``look`` (0, 1, ...; at MIN_ROUNDS * 2^look rounds): 1 - (1 - CONFIDENCE) / 2^(look+1),
    so that all looks together err (on either side) with probability at most 1 - CONFIDENCE."""
    return 1 - (1 - CONFIDENCE) / 2 ** (look + 1)


@dataclass
class Rounds:
    """One alternating measurement of a baseline (fp32, eager) against a candidate (bf16, compiled): each round's
    per-call seconds of both, and the verdict of the interval on the median of their ratios base / candidate."""

    base: list[float] = field(default_factory=list)
    cand: list[float] = field(default_factory=list)
    first: tuple[float, float] = (math.nan, math.nan)  # the first (cold) call of each: kernel selection, JIT, compiling
    warmup_calls: int = 0  # calls of each before the first timed round (the cold one included)
    seconds: float = 0.0  # the whole measurement's wall time
    early_stop: bool = False  # the first timed round found the candidate ``give_up`` times slower
    threshold: float | None = None
    interval: tuple[float, float] | None = None  # at the last look
    confidence: float | None = None  # the last look's coverage
    verdict: str | None = None  # "faster": the candidate beats the threshold; "slower": it does not; None: undecided

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.base, self.cand)]

    @property
    def ratio(self) -> float:
        """The candidate's speed-up: the median of the rounds' base / candidate times."""
        return statistics.median(self.ratios)

    @property
    def spread(self) -> float:
        """The ratios' interquartile range over their median (0 with fewer than two rounds)."""
        r = self.ratios
        if len(r) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(r, n=4, method="inclusive")
        return (q3 - q1) / statistics.median(r)

    def look(self, confidence: float) -> None:
        """Take the interval at ``confidence`` and its verdict against the threshold."""
        found = median_interval(self.ratios, confidence)
        if found is None:
            return
        lo, hi, self.confidence = found
        self.interval = (lo, hi)
        self.verdict = "faster" if lo > self.threshold else "slower" if hi < self.threshold else None

    def record(self) -> dict[str, Any]:
        """What a cache entry and a run's metrics keep of it."""
        interval = [round(v, 4) for v in self.interval] if self.interval else None
        return {"ratio": round(self.ratio, 4), "interval": interval,
                "confidence": round(self.confidence, 4) if self.confidence else None, "rounds": len(self.base),
                "spread": round(self.spread, 4), "warmup_calls": self.warmup_calls,
                "probe_s": round(self.seconds, 3), "early_stop": self.early_stop}


def when_and_load() -> dict[str, Any]:
    """When (UTC) a decision is taken and the machine's load then (1, 5 and 15 minute averages)."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "load": load}
