"""The confidence intervals a claim is decided by (95%), each over independent replicates: runs trained with
different seeds, or the pairs of a Monte Carlo check. Every function returns None where its replicates give no
spread to build an interval from (one run per group, one point on a line), never an interval of width zero
made up from nothing.

- :func:`mean`: Student t interval of a mean (a difference per run, a share per run).
- :func:`difference`: Welch t interval of the difference of two groups' means.
- :func:`slope`: ordinary least squares slope of y on x, with its t interval (n - 2 degrees of freedom).
- :func:`sd_ratio`: the ratio of two groups' standard deviations, from the F distribution.
- :func:`proportion`: Wilson interval of a share of n independent trials.

:func:`replicates_to_decide` reads an interval that spans its line the other way: how many times its replicates
would narrow it enough to decide, if its estimate and their spread stayed as they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate, the ends of its interval, the number of replicates behind it, the degrees of freedom of its t
    quantile (None where it has none: a Wilson or F interval, a Monte Carlo standard error) and how many means or
    coefficients were fitted to the replicates (``fitted``: 1 for a mean, 2 for a slope or two groups' means)."""

    value: float
    low: float
    high: float
    n: int
    df: float | None = None
    fitted: int = 1

    def text(self, signed: bool = False, scale: float = 1.0, unit: str = "") -> str:
        """'318 [270, 369]' (``signed``: '+72 [+31, +113]'; ``scale`` and ``unit``: '4.2% [1.0%, 7.5%]'), with as
        many decimals as show the interval's width to two digits."""
        v, lo, hi = (number(x * scale, (self.high - self.low) * scale, signed) + unit
                     for x in (self.value, self.low, self.high))
        return f"{v} [{lo}, {hi}]"


def number(x: float, width: float = 0.0, signed: bool = False) -> str:
    """``x`` to the decimals that show ``width`` (an interval's) to two digits, or without a width to three
    significant digits; never a nonzero ``x`` shown as 0 (up to six decimals)."""
    if not math.isfinite(x):
        return str(x)
    if width > 0 and math.isfinite(width):
        decimals = 1 - math.floor(math.log10(width) + 1e-9)
    elif x != 0:
        decimals = 2 - math.floor(math.log10(abs(x)) + 1e-9)
    else:
        decimals = 0
    decimals = min(max(decimals, 0), 6)
    while x and round(x, decimals) == 0 and decimals < 6:  # a small value next to a wide interval: one digit of it
        decimals += 1
    return f"{x:{'+' if signed else ''}.{decimals}f}"


def z() -> float:
    """The standard normal quantile of the level's two-sided interval (1.96 at 95%)."""
    return float(stats.norm.ppf(0.5 + LEVEL / 2))


def _t(df: float) -> float:
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def _var(xs: Sequence[float]) -> float:
    m = sum(xs) / len(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def mean(values: Sequence[float], floor: float | None = None) -> Interval | None:
    """The mean of ``values`` with its t interval (None for fewer than two); ``floor``: the least value the quantity
    can take (0 for a distance), where the interval's lower end stops (its coverage is unchanged)."""
    n = len(values)
    if n < 2:
        return None
    m = sum(values) / n
    half = _t(n - 1) * math.sqrt(_var(values) / n)
    return Interval(m, m - half if floor is None else max(floor, m - half), m + half, n, n - 1)


def difference(a: Sequence[float], b: Sequence[float]) -> Interval | None:
    """mean(a) - mean(b) with Welch's t interval (None unless each group has two values or more)."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = _var(a) / len(a), _var(b) / len(b)
    d = sum(a) / len(a) - sum(b) / len(b)
    se2 = va + vb
    if se2 == 0:  # every replicate of each group equal: the difference is exact
        return Interval(d, d, d, len(a) + len(b))
    df = se2 ** 2 / ((va ** 2 / (len(a) - 1) if va else 0) + (vb ** 2 / (len(b) - 1) if vb else 0))
    half = _t(df) * math.sqrt(se2)
    return Interval(d, d - half, d + half, len(a) + len(b), df, 2)


def slope(xs: Sequence[float], ys: Sequence[float]) -> Interval | None:
    """The least-squares slope of ys on xs with its t interval (None with fewer than three points or one x)."""
    n = len(xs)
    if n < 3 or len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    resid = sum((y - my - b * (x - mx)) ** 2 for x, y in zip(xs, ys))
    half = _t(n - 2) * math.sqrt(resid / (n - 2) / sxx)
    return Interval(b, b - half, b + half, n, n - 2, 2)


def sd_ratio(a: Sequence[float], b: Sequence[float]) -> Interval | None:
    """sd(a) / sd(b) with its interval from the F distribution (None unless each group has two values or more, or
    when b has no spread at all)."""
    if len(a) < 2 or len(b) < 2 or _var(b) == 0:
        return None
    ratio = _var(a) / _var(b)
    da, db = len(a) - 1, len(b) - 1
    lo = ratio / stats.f.ppf(0.5 + LEVEL / 2, da, db)
    hi = ratio / stats.f.ppf(0.5 - LEVEL / 2, da, db)
    return Interval(math.sqrt(ratio), math.sqrt(lo), math.sqrt(hi), len(a) + len(b))


def proportion(p: float, n: int) -> Interval:
    """A share ``p`` of ``n`` independent trials with its Wilson interval."""
    q = z()
    centre = (p + q * q / (2 * n)) / (1 + q * q / n)
    half = q * math.sqrt(p * (1 - p) / n + q * q / (4 * n * n)) / (1 + q * q / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n)


MAX_FACTOR = 100.0


def replicates_to_decide(iv: Interval, room: float) -> float | None:
    """The smallest factor f >= 1 by which the replicates behind ``iv`` would have to grow for its half-width to fall
    below ``room`` (the distance from its estimate to the line that decides it), if the estimate and the replicates'
    spread stayed as they are: the standard error shrinks as 1/sqrt(f) and the t quantile's degrees of freedom
    become df (f n - fitted) / (n - fitted) (exact for a mean, a slope and Welch's difference of two groups of equal
    size). None where ``iv`` has no t quantile, the estimate sits on the line, or it takes more than MAX_FACTOR."""
    if iv.df is None or iv.df <= 0 or iv.n <= iv.fitted or room <= 0 or not math.isfinite(room):
        return None
    half = iv.high - iv.value  # the upper half: a lower end may have been stopped at a floor

    def narrower(f: float) -> bool:
        return half / math.sqrt(f) * _t(iv.df * (f * iv.n - iv.fitted) / (iv.n - iv.fitted)) / _t(iv.df) < room

    if narrower(1.0):
        return 1.0
    if not narrower(MAX_FACTOR):
        return None
    lo, hi = 1.0, MAX_FACTOR
    while hi - lo > 1e-9:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if narrower(mid) else (mid, hi)
    return hi
