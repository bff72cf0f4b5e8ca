"""Figures of the `fixes` study: the ways to get good samples from a big latent, side by side per model setting.
The numbers, the decision of which fix wins where and the sentences that say so are the study's
(:mod:`vaelab.studies.fixes`); this module draws them."""
from __future__ import annotations

from typing import Callable

import yaml
from matplotlib.ticker import MaxNLocator

from vaelab.plotting import pyplot
from vaelab.studies.fixes import (FIXES, FLOOR, REAL, TRAINED, TRAINING, Fix, Ranking, Stat, collapsed, collect,
                                  decide, fd_of, fd_sentence, fd_stats, fd_table_sentence, runs_of, settings, short,
                                  tradeoff_sentence)
from vaelab.studies.view import Figure, StudyView
from vaelab.studies.view import save_view_figure as _save

COLOURS = {"training": "#DD8452", "post-hoc": "#4C72B0", "floor": "#BBBBBB"}
MARKERS = {"standard": "o", "vamp": "s", "warmup": "^", "ex-post-gaussian": "D", "ex-post-gmm": "P", "two-stage": "X",
           "posterior": "h", "real-train": "*"}


def add_finding(view: StudyView, sentence: str | None) -> None:
    """A sentence for the report's findings."""
    if sentence:
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
    label = short(fix.name)
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
    found = settings(view.spec)
    if not found:
        view.notes.append(f"{stem}: no variant is labelled FIX-SETTING with FIX one of {', '.join(TRAINING)}")
    elif not view.finished():
        view.notes.append(f"{stem}: no finished runs")
        return []
    return found


# --- figures ----------------------------------------------------------------------------------------------
GREEN = "#2a7a2a"


def _bars(ax, view: StudyView, setting: str, stats: dict[str, Stat], decision: Ranking | None,
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
        add_finding(view, fd_table_sentence(where, stats, floor))
        drawn |= bool(stats)
        _bars(ax, view, setting, {**stats, **({FLOOR.name: floor} if floor else {})}, decision,
              collapsed(view.rows, setting))
        outcome = "" if decision is None else {
            "winner": f"winner: {short(decision.best)}", "tie": "tie: " + ", ".join(short(k) for k in decision.tied),
            "one-seed": f"lowest, one seed: {short(decision.best)}", "alone": ""}[decision.kind]
        ax.set_title(f"{title}\n{outcome}", fontsize=10)
        ax.set_xlabel("FD to test images (lower is better)")
    return _finish(view, fig, drawn, notes, "fixes", "no run has FD numbers (the quality analysis)",
                   "Which fix gives the best samples, per model",
                   f"FD ({view.features()}; lower is better) of each fix's samples, one panel per model "
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


def _dots(ax, view: StudyView, setting: str, stats: dict[str, Stat], decision: Ranking | None, xlabel: str) -> None:
    """Mean +- sd per fix of training, top to bottom, each seed a dot; the winner (or the tie) a green star."""
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
                   f"test images with a sample near them), in {view.features()}, mean and sd over "
                   "seeds; up and right is better, and the real training images (the star, or in words when off the "
                   "zoomed axes) show what real data reaches. A fix that moves right covers more of the data, one that "
                   "moves up makes fewer strange samples; a collapsed model sits top left: one image, near the data, "
                   "covering none of it. Middle and right, for the fixes of training only (the fixes after training "
                   "leave the model as it is): the importance-sampled test log-likelihood, where a better prior may "
                   "also fit the data better (the winner by the FD figure's spread rule as a green star), and the "
                   "active units, which warm-up and the VampPrior are meant to keep in use.")


FIGURES: dict[str, Callable[..., list[Figure]]] = {"fixes": fixes, "fixes-tradeoffs": fixes_tradeoffs}
