"""Figures of the `fixes` study: the ways to get good samples from a big latent, side by side per model setting, and
the sentences that say which fix wins where.

The study's variants are labelled FIX-SETTING (``standard-200``, ``vamp-800``, ``warmup-spatial``): FIX is how the
model was trained (the standard prior, the VampPrior, KL warm-up), SETTING the model. The fixes fitted after training
(ex-post Gaussian, ex-post GMM, two-stage VAE) are samplers of the `quality` analysis, read from the standard-prior
runs of each setting; q(z) itself (samples of the aggregate posterior) is the floor no sampler of the latent can beat
by much. Each fix's number is its mean over seeds with their standard deviation; a fix wins only when its mean beats
every other fix's by more than the two standard deviations added (their +-1 sd bars do not overlap), else the fixes
within that distance of the best tie, and with one seed no winner is declared at all.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Literal

import yaml

from vaelab.plotting import pyplot
from vaelab.studies.view import Figure, StudyView
from vaelab.studies.view import save_view_figure as _save

TRAINING = ("standard", "vamp", "warmup")  # the FIX part of a variant label


@dataclass(frozen=True)
class Fix:
    name: str
    words: str  # as the sentences and axes name it
    trained: str  # the FIX part of the variants whose runs it is read from
    sampler: str  # its sampler in the quality analysis
    kind: Literal["training", "post-hoc", "floor"]


FIXES = (
    Fix("standard", "the standard prior", "standard", "prior", "training"),
    Fix("vamp", "the VampPrior", "vamp", "prior", "training"),
    Fix("warmup", "KL warm-up", "warmup", "prior", "training"),
    Fix("ex-post-gaussian", "the ex-post Gaussian", "standard", "ex-post-gaussian", "post-hoc"),
    Fix("ex-post-gmm", "the ex-post GMM", "standard", "ex-post-gmm", "post-hoc"),
    Fix("two-stage", "the two-stage VAE", "standard", "two-stage", "post-hoc"),
)
FLOOR = Fix("posterior", "q(z) itself", "standard", "posterior", "floor")
REAL = Fix("real-train", "real training images", "standard", "real-train", "floor")  # a reference in precision/recall
TRAINED = tuple(f for f in FIXES if f.kind == "training")
COLOURS = {"training": "#DD8452", "post-hoc": "#4C72B0", "floor": "#BBBBBB"}
MARKERS = {"standard": "o", "vamp": "s", "warmup": "^", "ex-post-gaussian": "D", "ex-post-gmm": "P", "two-stage": "X",
           "posterior": "h", "real-train": "*"}


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
class Decision:
    """Who wins among the stats: ``kind`` winner (best beats every other beyond the spread), tie (``tied``: the
    fixes within the spread of the best, best first), one-seed (best or runner-up has a single seed) or alone (one
    fix measured)."""

    kind: Literal["winner", "tie", "one-seed", "alone"]
    best: str
    runner_up: str | None
    tied: tuple[str, ...]


def decide(stats: dict[str, Stat], better: Literal["low", "high"] = "low") -> Decision | None:
    """The winner of ``stats`` (name -> Stat), or None when nothing was measured."""
    if not stats:
        return None
    sign = 1 if better == "low" else -1
    order = sorted(stats, key=lambda k: sign * stats[k].mean)
    best = stats[order[0]]
    if len(order) == 1:
        return Decision("alone", order[0], None, (order[0],))
    if best.n < 2 or stats[order[1]].n < 2:
        return Decision("one-seed", order[0], order[1], (order[0],))
    tied = tuple(k for k in order if sign * (stats[k].mean - best.mean) <= best.sd + stats[k].sd)
    return Decision("winner" if len(tied) == 1 else "tie", order[0], order[1], tied)


def split_label(label: str | None) -> tuple[str, str] | None:
    """'vamp-800' -> ('vamp', '800'); None for a label that is not FIX-SETTING."""
    fix, _, setting = (label or "").partition("-")
    return (fix, setting) if fix in TRAINING and setting else None


def settings(view: StudyView) -> list[str]:
    """The study's model settings, in the order its variants list them."""
    out = []
    for v in view.spec.variants:
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


def fd_of(row: dict, fix: Fix) -> float | None:
    """A fix's FD in a results row (the quality analysis's fd_SAMPLER column)."""
    return row.get(f"fd_{fix.sampler}")


def fd_stats(rows: list[dict], setting: str) -> dict[str, Stat]:
    return collect(rows, setting, FIXES, fd_of)


def _words(name: str) -> str:
    return next(f.words for f in (*FIXES, FLOOR, REAL) if f.name == name)


def _short(name: str) -> str:
    return _words(name).removeprefix("the ")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def verdict(stats: dict[str, Stat], decision: Decision, what: str, better: str, note: str = "") -> str:
    """The clause that names the winner (or the tie) of ``what``: 'the ex-post GMM gives the lowest FD (...)'."""
    most = "lowest" if better == "low" else "highest"
    if decision.kind == "tie":
        if len(decision.tied) == 2:
            members = _and([f"{_words(k)} ({stats[k].text()})" for k in decision.tied])
        else:  # names, and the range of their means
            lo, hi = (Stat((f(stats[k].mean for k in decision.tied),)).text() for f in (min, max))
            members = f"{_and([_words(k) for k in decision.tied])} ({lo} to {hi})"
        return f"the {most} {what} is a tie between {members}, closer than their seeds' spread"
    best = stats[decision.best]
    seeds = f" over {best.n} seeds" if best.n > 1 else ""
    return f"{_words(decision.best)} gives the {most} {what} ({best.text()}{seeds}{'; ' + note if note else ''})"


def runner_up(stats: dict[str, Stat], decision: Decision) -> str:
    """What the runner-up says about the verdict ('' for a tie or a single fix)."""
    other = decision.runner_up
    if decision.kind == "winner":
        return f"the runner-up, {_words(other)} ({stats[other].text()}), is further off than the seeds' spread"
    if decision.kind == "one-seed":
        return (f"with one seed there is no spread to tell it from the runner-up, {_words(other)} "
                f"({stats[other].text()}), so no winner is declared")
    return ""


def fd_sentence(where: str, stats: dict[str, Stat], floor: Stat | None) -> str | None:
    """'At latent 800 the ex-post GMM gives the lowest FD (x +- y over 3 seeds), 52% below the standard prior; ...'."""
    decision = decide(stats)
    if decision is None:
        return None
    parts = [f"{where[0].upper()}{where[1:]} {verdict(stats, decision, 'FD', 'low')}"]
    base = stats.get("standard")
    if base and "standard" not in decision.tied:
        if decision.kind == "tie":
            parts[0] += f" (the standard prior: {base.text()})"
        elif base.mean > 0:
            change = 1 - stats[decision.best].mean / base.mean
            side = "below" if change >= 0 else "above"
            parts[0] += f", {abs(100 * change):.0f}% {side} the standard prior ({base.text()})"
    parts.append(runner_up(stats, decision))
    if floor is not None:
        parts.append(f"q(z) itself reaches {floor.text()}")
    return "; ".join(p for p in parts if p) + "."


def add_finding(view: StudyView, sentence: str | None) -> None:
    """A sentence for the report's findings (html.findings reads ``view.findings``)."""
    if sentence:
        if not hasattr(view, "findings"):
            view.findings = []  # type: ignore[attr-defined]
        view.findings.append(sentence)


# --- reading the study --------------------------------------------------------------------------------
def _setting_words(view: StudyView, setting: str) -> tuple[str, str]:
    """(sentence words, panel title) of a setting: 'at latent 800' / 'latent 800'; 'on the spatial model (65536
    dims)' / 'spatial (65536 dims)'."""
    dims = None
    for r in runs_of(view.rows, setting, "standard") or [r for t in TRAINING for r in runs_of(view.rows, setting, t)]:
        dims = (view.analysis(r, "posterior") or {}).get("latent_dim")
        if dims:
            break
    if setting.isdigit():
        return f"at latent {setting}", f"latent {setting}"
    extra = f" ({dims} dims)" if dims else ""
    return f"on the {setting} model{extra}", f"{setting}{extra}"


def _config(view: StudyView, row) -> dict:
    try:
        return yaml.safe_load((view.run_dir(row) / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _axis_label(view: StudyView, setting: str, fix: Fix) -> str:
    """The fix's name on an axis, with what it was trained or fitted with."""
    runs = runs_of(view.rows, setting, fix.trained)
    cfg = _config(view, runs[0]) if runs else {}
    label = _short(fix.name)
    if fix.name == "vamp" and cfg:
        label += f" (K = {cfg['model'].get('prior_components')})"
    elif fix.name == "warmup" and cfg:
        label += f" ({cfg['objective'].get('warmup_epochs')} of {cfg['train'].get('epochs')} epochs)"
    elif fix.kind == "post-hoc":
        label += " *"
    elif fix is REAL:
        label += " (reference)"
    elif fix.kind == "floor":
        label += " (floor)"
    return label


def _quality_metric(view: StudyView, metric: str) -> Callable[[dict, Fix], float | None]:
    """value(row, fix): ``metric`` of the fix's sampler in the row's quality analysis."""
    cache: dict[str, dict | None] = {}

    def value(row: dict, fix: Fix) -> float | None:
        if row["run"] not in cache:
            cache[row["run"]] = view.analysis(row, "quality")
        return ((cache[row["run"]] or {}).get("samplers", {}).get(fix.sampler) or {}).get(metric)
    return value


def _missing(notes: list[str], stem: str, setting: str, stats: dict[str, Stat], fixes, what: str) -> None:
    """A note for the fixes of ``fixes`` that have no ``what`` in a setting (the figure keeps the notes only when it
    draws anything; otherwise it leaves one note of its own)."""
    absent = [f.words for f in fixes if f.name not in stats]
    if absent:
        notes.append(f"{stem}: {setting}: no {what} for {', '.join(absent)} (no finished run of it, or the analysis "
                     "was not asked for)")


def _usable(view: StudyView, stem: str) -> list[str]:
    found = settings(view)
    if not found:
        view.notes.append(f"{stem}: no variant is labelled FIX-SETTING with FIX one of {', '.join(TRAINING)}")
    elif not view.finished():
        view.notes.append(f"{stem}: no finished runs")
        return []
    return found


def collapsed(rows: list[dict], setting: str) -> list[str]:
    """The fixes of training whose every measured run uses no latent unit (0 active units): their samples are all
    one image, whatever latent is drawn."""
    au = collect(rows, setting, TRAINED, lambda r, f: r.get("active_units"))
    return [k for k, s in au.items() if max(s.values) == 0]


def tradeoff_sentence(where: str, ll: dict[str, Stat], prec: dict[str, Stat], rec: dict[str, Stat],
                      dead: list[str]) -> str | None:
    """'At latent 800 the VampPrior gives the highest log-likelihood (...); the ex-post GMM gives the highest recall
    (...); ...'. Neither the floor nor the reference competes, and a collapsed fix (``dead``) is named instead of
    winning precision: samples that are all one image can all sit near the data."""
    parts, competing = [], {f.name for f in FIXES}
    for stats, what in ((ll, "log-likelihood"), (rec, "recall"), (prec, "precision")):
        stats = {k: v for k, v in stats.items() if k in competing and not (what == "precision" and k in dead)}
        decision = decide(stats, "high")
        if decision is not None:
            note = "one seed, no winner declared" if decision.kind == "one-seed" else ""
            parts.append(verdict(stats, decision, what, "high", note))
    if dead:
        parts.append(f"{_and([_words(k) for k in dead])} collapsed (0 active units in every seed: "
                     f"{'its' if len(dead) == 1 else 'their'} samples are all one image, so precision does not count)")
    return f"{where[0].upper()}{where[1:]} " + "; ".join(parts) + "." if parts else None


# --- figures ----------------------------------------------------------------------------------------------
GREEN = "#2a7a2a"


def _bars(ax, view: StudyView, setting: str, stats: dict[str, Stat], decision: Decision | None,
          dead: list[str]) -> None:
    """Horizontal bars of mean +- sd per fix and the floor, top to bottom, each seed a dot, the winner outlined."""
    shown = (*FIXES, FLOOR)
    for i, fix in enumerate(shown):
        s = stats.get(fix.name)
        if s is None:
            ax.text(0, i, "  not measured", va="center", fontsize=8, color="#999999")
            continue
        win = decision is not None and fix.name in decision.tied
        ax.barh(i, s.mean, xerr=s.sd, color=COLOURS[fix.kind], hatch="//" if fix.kind == "floor" else None,
                edgecolor=GREEN if win else "white", linewidth=2.5 if win else 0.5, capsize=3)
        ax.plot(s.values, [i] * s.n, "k.", ms=4)
        mark = {"winner": "  winner", "tie": "  tie", "one-seed": "  lowest (1 seed)"}.get(decision.kind, "") \
            if win else ""
        mark += "  (collapsed)" if fix.name in dead else ""
        ax.text(s.mean + s.sd, i, f" {s.text()}{mark}", va="center", fontsize=8, color=GREEN if win else "black",
                weight="bold" if win else "normal")
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([_axis_label(view, setting, f) for f in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, ax.get_xlim()[1] * 1.3)  # room for the value labels


def _finish(view: StudyView, fig, drawn: bool, notes: list[str], stem: str, empty: str, title: str,
            caption: str) -> list[Figure]:
    """The figure with its notes, or, when no panel had anything to draw, one note instead."""
    if not drawn:
        pyplot().close(fig)
        view.notes.append(f"{stem}: {empty}")
        return []
    view.notes.extend(notes)
    return [_save(view, fig, stem, title, caption)]


def fixes(view: StudyView, **_) -> list[Figure]:
    """FD of every fix per model setting, mean and spread over seeds, the winner marked; findings say who wins where."""
    found = _usable(view, "fixes")
    if not found:
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, len(found), figsize=(5.4 * len(found), 3.9), squeeze=False)
    drawn, notes = False, []
    for ax, setting in zip(axes[0], found):
        where, title = _setting_words(view, setting)
        stats = fd_stats(view.rows, setting)
        floor = collect(view.rows, setting, (FLOOR,), fd_of).get(FLOOR.name)
        _missing(notes, "fixes", title, stats, FIXES, "FD")
        decision = decide(stats)
        add_finding(view, fd_sentence(where, stats, floor))
        drawn |= bool(stats)
        _bars(ax, view, setting, {**stats, **({FLOOR.name: floor} if floor else {})}, decision,
              collapsed(view.rows, setting))
        short = "" if decision is None else {
            "winner": f"winner: {_short(decision.best)}", "tie": "tie: " + ", ".join(_short(k) for k in decision.tied),
            "one-seed": f"lowest, one seed: {_short(decision.best)}", "alone": ""}[decision.kind]
        ax.set_title(f"{title}\n{short}", fontsize=10)
        ax.set_xlabel("FD to test images (lower is better)")
    return _finish(view, fig, drawn, notes, "fixes", "no run has FD numbers (the quality analysis)",
                   "Which fix gives the best samples, per model",
                   "FD (evaluation-classifier features; lower is better) of each fix's samples, one panel per model "
                   "setting: the bar is the mean over seeds, the whisker one standard deviation, the dots the seeds. "
                   "Orange: fixes of training (the standard prior is the baseline, then the VampPrior and KL warm-up, "
                   "each sampled from its own prior); blue, marked *: fixes fitted after training to the standard-prior "
                   "runs' codes; grey: q(z) itself, the floor. Look for the green outline: the fix with the lowest mean, "
                   "declared the winner only when its mean beats every other's by more than their two standard "
                   "deviations added (otherwise all within that distance are outlined as a tie). A fix of training "
                   "marked collapsed uses no latent unit and decodes every sample to the same image. How far the "
                   "orange bars sit from the grey one is what a fix has left to gain.")


def _precision_recall(ax, view: StudyView, setting: str, title: str, prec: dict[str, Stat], rec: dict[str, Stat],
                      legend: bool) -> None:
    """Precision against recall per fix (mean +- sd both ways), zoomed on the fixes; real training images (the
    reference) as a star when in range, else in words."""
    pts = [(f, prec[f.name], rec[f.name]) for f in (*FIXES, FLOOR, REAL) if f.name in prec and f.name in rec]
    inside = [(f, p, r) for f, p, r in pts if f is not REAL]
    if not inside:
        ax.text(0.5, 0.5, "no precision/recall", transform=ax.transAxes, ha="center", color="#999999")
        return
    lo_x, hi_x = min(r.mean - r.sd for _, _, r in inside), max(r.mean + r.sd for _, _, r in inside)
    lo_y, hi_y = min(p.mean - p.sd for _, p, _ in inside), max(p.mean + p.sd for _, p, _ in inside)
    pad_x, pad_y = max(0.03, 0.1 * (hi_x - lo_x)), max(0.03, 0.1 * (hi_y - lo_y))
    box = (max(-0.02, lo_x - pad_x), min(1.02, hi_x + pad_x), max(-0.02, lo_y - pad_y), min(1.02, hi_y + pad_y))
    reference = ""
    for fix, p, r in pts:
        if fix is REAL and not (box[0] <= r.mean <= box[1] and box[2] <= p.mean <= box[3]):
            reference = f"\n(real training images: precision {p.mean:.2f}, recall {r.mean:.2f})"
            continue
        ax.errorbar(r.mean, p.mean, xerr=r.sd, yerr=p.sd, fmt=MARKERS[fix.name], ms=7, capsize=2, mec="black", mew=0.5,
                    color="black" if fix is REAL else COLOURS[fix.kind], label=_axis_label(view, setting, fix))
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ax.set_xlabel("recall (share of test images covered)")
    ax.set_ylabel("precision (share of samples\nnear test images)")
    ax.set_title(f"{title}: precision and recall{reference}", fontsize=10)
    if legend:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))


def _dots(ax, view: StudyView, setting: str, stats: dict[str, Stat], decision: Decision | None, xlabel: str) -> None:
    """Mean +- sd per fix of training, top to bottom, each seed a dot; the winner (or the tie) a green star."""
    from matplotlib.ticker import MaxNLocator

    for i, fix in enumerate(TRAINED):
        s = stats.get(fix.name)
        if s is None:
            ax.text(0.02, i, "not measured", transform=ax.get_yaxis_transform(), va="center", fontsize=8,
                    color="#999999")
            continue
        win = decision is not None and decision.kind in ("winner", "tie") and fix.name in decision.tied
        ax.errorbar(s.mean, i, xerr=s.sd, fmt="*" if win else "o", ms=11 if win else 6, capsize=3,
                    color=GREEN if win else COLOURS["training"])
        ax.plot(s.values, [i] * s.n, "k.", ms=3)
        ax.annotate(s.text(), (s.mean, i), xytext=(0, 8), textcoords="offset points", ha="center", fontsize=7)
    ax.set_yticks(range(len(TRAINED)))
    ax.set_yticklabels([_axis_label(view, setting, f) for f in TRAINED], fontsize=8)
    ax.set_ylim(len(TRAINED) - 0.5, -0.7)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel(xlabel)


def fixes_tradeoffs(view: StudyView, **_) -> list[Figure]:
    """Precision against recall per fix, and log-likelihood and active units of the fixes of training, per setting."""
    found = _usable(view, "fixes-tradeoffs")
    if not found:
        return []
    rows = view.rows
    precision, recall = _quality_metric(view, "precision"), _quality_metric(view, "recall")
    plt = pyplot()
    fig, axes = plt.subplots(len(found), 3, figsize=(15.5, 3.5 * len(found)), squeeze=False)
    drawn, notes = False, []
    for k, ((ax_pr, ax_ll, ax_au), setting) in enumerate(zip(axes, found)):
        where, title = _setting_words(view, setting)
        prec, rec = (collect(rows, setting, (*FIXES, FLOOR, REAL), m) for m in (precision, recall))
        ll = collect(rows, setting, TRAINED, lambda r, f: r.get("log_likelihood"))
        au = collect(rows, setting, TRAINED, lambda r, f: r.get("active_units"))
        _missing(notes, "fixes-tradeoffs", title, prec, FIXES, "precision/recall")
        _missing(notes, "fixes-tradeoffs", title, ll, TRAINED, "log-likelihood")
        _missing(notes, "fixes-tradeoffs", title, au, TRAINED, "active units")
        drawn |= bool(prec or ll or au)
        _precision_recall(ax_pr, view, setting, title, prec, rec, legend=k == 0)
        _dots(ax_ll, view, setting, ll, decide(ll, "high"),
              "test log p(x), importance sampled (nats; higher is better)")
        ax_ll.set_title(f"{title}: log-likelihood", fontsize=10)
        latent = max([(view.analysis(r, "posterior") or {}).get("latent_dim") or 0
                      for r in runs_of(rows, setting, "standard")], default=0)
        _dots(ax_au, view, setting, au, None, f"active units (Var[mu] > 0.01){f' of {latent}' if latent else ''}")
        ax_au.set_title(f"{title}: active units", fontsize=10)
        if latent:
            ax_au.set_xlim(0, latent * 1.05)
        add_finding(view, tradeoff_sentence(where, ll, prec, rec, collapsed(rows, setting)))
    return _finish(view, fig, drawn, notes, "fixes-tradeoffs", "no run has precision/recall, log-likelihood or active "
                   "units", "What each fix trades: precision, recall, likelihood, usage",
                   "Left: precision (the share of samples that fall near real test images) against recall (the share of "
                   "test images with a sample near them), in the evaluation classifier's features, mean and sd over "
                   "seeds; up and right is better, and the real training images (the star, or in words when off the "
                   "zoomed axes) show what real data reaches. A fix that moves right covers more of the data, one that "
                   "moves up makes fewer strange samples; a collapsed model sits top left: one image, near the data, "
                   "covering none of it. Middle and right, for the fixes of training only (the fixes after training "
                   "leave the model as it is): the importance-sampled test log-likelihood, where a better prior may "
                   "also fit the data better (the winner by the FD figure's spread rule as a green star), and the "
                   "active units, which warm-up and the VampPrior are meant to keep in use.")


FIGURES: dict[str, Callable[..., list[Figure]]] = {"fixes": fixes, "fixes-tradeoffs": fixes_tradeoffs}
