"""The fixes study's statistics: which way to get good samples from a big latent wins where, and the sentences that
say so. The ``winner`` claim rule decides with :func:`decide`; the study's figures (vaelab.report.fixes_figures) draw
the same numbers and read the same decision.

The study's variants are labelled FIX-SETTING (``standard-200``, ``vamp-800``, ``warmup-spatial``): FIX is how the
model was trained (the standard prior, the VampPrior, KL warm-up; declared here), SETTING the model. The fixes fitted
after training (ex-post Gaussian, ex-post GMM, two-stage VAE) are the samplers of kind ``fix`` in the samplers'
catalogue (vaelab.analysis.samplers.catalogue), read from the standard-prior runs of each setting; q(z) itself
(samples of the aggregate posterior) is the floor no sampler of the latent can beat by much. Each fix's number is its
mean over seeds with their standard deviation; a fix wins only when its mean beats every other fix's by more than the
two standard deviations added (their +-1 sd bars do not overlap), else the fixes within that distance of the best
tie, and with one seed no winner is declared at all.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Literal

from vaelab.analysis.samplers.catalogue import CATALOGUE
from vaelab.analysis.samplers.catalogue import FIXES as SAMPLER_FIXES
from vaelab.studies import intervals


@dataclass(frozen=True)
class Fix:
    name: str
    words: str  # as the sentences and axes name it
    trained: str  # the FIX part of the variants whose runs it is read from
    sampler: str  # its sampler in the quality analysis
    kind: Literal["training", "post-hoc", "floor"]


TRAINED = (  # the fixes of training: the FIX part of a variant label
    Fix("standard", "the standard prior", "standard", "prior", "training"),
    Fix("vamp", "the VampPrior", "vamp", "prior", "training"),
    Fix("warmup", "KL warm-up", "warmup", "prior", "training"),
)
TRAINING = tuple(f.name for f in TRAINED)
FIXES = TRAINED + tuple(Fix(n, CATALOGUE[n].phrase, "standard", n, "post-hoc") for n in SAMPLER_FIXES)
FLOOR = Fix("posterior", CATALOGUE["posterior"].phrase, "standard", "posterior", "floor")
REAL = Fix("real-train", "real training images", "standard", "real-train", "floor")  # a reference in precision/recall


@dataclass(frozen=True)
class Stat:
    """A fix's values over seeds: mean, sample standard deviation (0 for one seed) and count."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    def text(self) -> str:
        """'283 +- 5', '-24.3 +- 0.01', '0.93 +- 0.02': the mean to three significant digits, the sd to the same
        decimals (or to one significant digit where those would round it to 0); the mean alone for one seed."""
        m = abs(self.mean)
        decimals = max(0, 2 - math.floor(math.log10(m))) if m > 0 else 0
        if self.n < 2:
            return f"{self.mean:.{decimals}f}"
        sd = self.sd
        sd_decimals = decimals if sd == 0 or round(sd, decimals) else -math.floor(math.log10(sd))
        return f"{self.mean:.{decimals}f} +- {sd:.{sd_decimals}f}"


@dataclass(frozen=True)
class Ranking:
    """Who wins among the stats: ``kind`` winner (best beats every other beyond the spread), tie (``tied``: the
    fixes within the spread of the best, best first), one-seed (best or runner-up has a single seed) or alone (one
    fix measured)."""

    kind: Literal["winner", "tie", "one-seed", "alone"]
    best: str
    runner_up: str | None
    tied: tuple[str, ...]


def decide(stats: dict[str, Stat], better: Literal["low", "high"] = "low") -> Ranking | None:
    """The winner of ``stats`` (name -> Stat), or None when nothing was measured."""
    if not stats:
        return None
    sign = 1 if better == "low" else -1
    order = sorted(stats, key=lambda k: sign * stats[k].mean)
    best = stats[order[0]]
    if len(order) == 1:
        return Ranking("alone", order[0], None, (order[0],))
    if best.n < 2 or stats[order[1]].n < 2:
        return Ranking("one-seed", order[0], order[1], (order[0],))
    tied = tuple(k for k in order if sign * (stats[k].mean - best.mean) <= best.sd + stats[k].sd)
    return Ranking("winner" if len(tied) == 1 else "tie", order[0], order[1], tied)


# --- reading the study ------------------------------------------------------------------------------------------
def split_label(label: str | None) -> tuple[str, str] | None:
    """'vamp-800' -> ('vamp', '800'); None for a label that is not FIX-SETTING."""
    fix, _, setting = (label or "").partition("-")
    return (fix, setting) if fix in TRAINING and setting else None


def settings(spec) -> list[str]:
    """The study's model settings, in the order its variants list them."""
    out = []
    for v in spec.variants:
        parts = split_label(v.label)
        if parts and parts[1] not in out:
            out.append(parts[1])
    return out


def runs_of(rows: list[dict], setting: str, trained: str) -> list[dict]:
    """The finished runs of variant TRAINED-SETTING, by seed."""
    mine = [r for r in rows if r.get("status") == "finished" and split_label(r.get("variant")) == (trained, setting)]
    return sorted(mine, key=lambda r: r.get("seed", 0))


def collect(rows: list[dict], setting: str, fixes, value: Callable[[dict, Fix], float | None]) -> dict[str, Stat]:
    """name -> Stat of ``value(row, fix)`` over the finished runs each fix is read from (a fix with no value is left
    out)."""
    out = {}
    for fix in fixes:
        vals = [v for v in (value(r, fix) for r in runs_of(rows, setting, fix.trained))
                if isinstance(v, (int, float)) and math.isfinite(v)]
        if vals:
            out[fix.name] = Stat(tuple(float(v) for v in vals))
    return out


def fd_column(sampler: str) -> str:
    """The results column of a sampler's FD (the quality analysis's fd_SAMPLER)."""
    return f"fd_{sampler}"


def fd_of(row: dict, fix: Fix) -> float | None:
    """A fix's FD in a results row."""
    return row.get(fd_column(fix.sampler))


def fd_stats(rows: list[dict], setting: str, fixes=FIXES) -> dict[str, Stat]:
    """name -> Stat of the FD of each of ``fixes`` in a setting."""
    return collect(rows, setting, fixes, fd_of)


def collapsed(rows: list[dict], setting: str) -> list[str]:
    """The fixes of training whose every measured run uses no latent unit (0 active units): their samples are all
    one image, whatever latent is drawn."""
    au = collect(rows, setting, TRAINED, lambda r, f: r.get("active_units"))
    return [k for k, s in au.items() if max(s.values) == 0]


# --- the sentences ----------------------------------------------------------------------------------------------
def words(name: str) -> str:
    """How the sentences name a fix ('the ex-post GMM')."""
    return next(f.words for f in (*FIXES, FLOOR, REAL) if f.name == name)


def short(name: str) -> str:
    """How an axis or a title names a fix ('ex-post GMM')."""
    return words(name).removeprefix("the ")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def verdict(stats: dict[str, Stat], ranking: Ranking, what: str, better: str, note: str = "") -> str:
    """The clause that names the winner (or the tie) of ``what``: 'the ex-post GMM gives the lowest FD (...)'."""
    most = "lowest" if better == "low" else "highest"
    if ranking.kind == "tie":
        if len(ranking.tied) == 2:
            members = _and([f"{words(k)} ({stats[k].text()})" for k in ranking.tied])
        else:  # names, and the range of their means
            lo, hi = (Stat((f(stats[k].mean for k in ranking.tied),)).text() for f in (min, max))
            members = f"{_and([words(k) for k in ranking.tied])} ({lo} to {hi})"
        return f"the {most} {what} is a tie between {members}, closer than their seeds' spread"
    best = stats[ranking.best]
    seeds = f" over {best.n} seeds" if best.n > 1 else ""
    return f"{words(ranking.best)} gives the {most} {what} ({best.text()}{seeds}{'; ' + note if note else ''})"


def runner_up(stats: dict[str, Stat], ranking: Ranking) -> str:
    """What the runner-up says about the verdict ('' for a tie or a single fix)."""
    other = ranking.runner_up
    if ranking.kind == "winner":
        return f"the runner-up, {words(other)} ({stats[other].text()}), is further off than the seeds' spread"
    if ranking.kind == "one-seed":
        return (f"with one seed there is no spread to tell it from the runner-up, {words(other)} "
                f"({stats[other].text()}), so no winner is declared")
    return ""


def fd_sentence(where: str, stats: dict[str, Stat], floor: Stat | None) -> str | None:
    """'At latent 800 the ex-post GMM gives the lowest FD (x +- y over 3 seeds), 52% below the standard prior; ...'."""
    ranking = decide(stats)
    if ranking is None:
        return None
    parts = [f"{where[0].upper()}{where[1:]} {verdict(stats, ranking, 'FD', 'low')}"]
    base = stats.get("standard")
    if base and "standard" not in ranking.tied:
        if ranking.kind == "tie":
            parts[0] += f" (the standard prior: {base.text()})"
        elif base.mean > 0:
            change = 1 - stats[ranking.best].mean / base.mean
            side = "below" if change >= 0 else "above"
            parts[0] += f", {abs(100 * change):.0f}% {side} the standard prior ({base.text()})"
    parts.append(runner_up(stats, ranking))
    if floor is not None:
        parts.append(f"q(z) itself reaches {floor.text()}")
    return "; ".join(p for p in parts if p) + "."


def fd_table_sentence(where: str, stats: dict[str, Stat], floor: Stat | None) -> str | None:
    """'FD at latent 800, mean and 95% interval over 3 seeds: the ex-post GMM 283 [270, 296], ...; q(z) itself ...':
    every fix's FD from the lowest mean up, each with its Student t interval over seeds, which stops at 0 (its value
    alone, marked, for a fix with one seed)."""
    if not stats:
        return None

    def shown(stat: Stat) -> str:
        interval = intervals.mean(stat.values, floor=0.0)  # an FD is never negative
        return interval.text() if interval else f"{stat.mean:.4g} (one seed)"

    seeds = sorted({s.n for s in stats.values()})
    over = f"{seeds[0]} seeds" if len(seeds) == 1 else f"{seeds[0]} to {seeds[-1]} seeds"
    parts = [f"{words(name)} {shown(stat)}" for name, stat in sorted(stats.items(), key=lambda kv: kv[1].mean)]
    text = f"FD {where}, mean and 95% interval over {over}: " + "; ".join(parts)
    return text + (f"; q(z) itself {shown(floor)}." if floor is not None else ".")


def tradeoff_sentence(where: str, ll: dict[str, Stat], prec: dict[str, Stat], rec: dict[str, Stat],
                      dead: list[str]) -> str | None:
    """'At latent 800 the VampPrior gives the highest log-likelihood (...); the ex-post GMM gives the highest recall
    (...); ...'. Neither the floor nor the reference competes, and a collapsed fix (``dead``) is named instead of
    winning precision: samples that are all one image can all sit near the data."""
    parts, competing = [], {f.name for f in FIXES}
    for stats, what in ((ll, "log-likelihood"), (rec, "recall"), (prec, "precision")):
        stats = {k: v for k, v in stats.items() if k in competing and not (what == "precision" and k in dead)}
        ranking = decide(stats, "high")
        if ranking is not None:
            note = "one seed, no winner declared" if ranking.kind == "one-seed" else ""
            parts.append(verdict(stats, ranking, what, "high", note))
    if dead:
        parts.append(f"{_and([words(k) for k in dead])} collapsed (0 active units in every seed: "
                     f"{'its' if len(dead) == 1 else 'their'} samples are all one image, so precision does not count)")
    return f"{where[0].upper()}{where[1:]} " + "; ".join(parts) + "." if parts else None
