"""Comparison figures of a study, drawn from its runs' analysis files (never by training or re-measuring).

Each figure function takes a :class:`StudyView` and options and returns a list of :class:`Figure` records (the PNG,
its SVG, a title and a caption that says what to look for). A figure whose inputs are missing (a run that failed, an
analysis that was not asked for) is left out with the reason, never drawn from partial data without saying so."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vaelab.report.figures import pyplot, save_figure, show_images


@dataclass
class Figure:
    id: str
    title: str
    caption: str
    files: list[str]
    kind: str = "image"  # image | animation

    @property
    def png(self) -> str:
        return next(f for f in self.files if f.endswith((".png", ".gif")))


@dataclass
class StudyView:
    """A study folder opened for reading: its spec, rows, and each run's analysis JSON/NPZ."""

    folder: Path
    spec: Any
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @property
    def fig_dir(self) -> Path:
        return self.folder / "figures"

    def run_dir(self, row) -> Path:
        return self.folder / "runs" / row["run"]

    def analysis(self, row, name: str) -> dict | None:
        try:
            return json.loads((self.run_dir(row) / "analysis" / f"{name}.json").read_text()).get("result")
        except (OSError, ValueError):
            return None

    def arrays(self, row, name: str) -> dict[str, np.ndarray] | None:
        path = self.run_dir(row) / "analysis" / f"{name}.npz"
        if not path.exists():
            return None
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}

    def finished(self) -> list[dict]:
        return [r for r in self.rows if r.get("status") == "finished"]

    def grid_key(self) -> str | None:
        return next(iter(self.spec.grid), None)

    def first_seed(self) -> list[dict]:
        """One finished run per grid point and variant (the lowest seed)."""
        seen, out = set(), []
        for r in sorted(self.finished(), key=lambda r: r.get("seed", 0)):
            key = (r.get("variant"), *(str(r.get(k)) for k in self.spec.grid))
            if key not in seen:
                seen.add(key)
                out.append(r)
        return out

    def label(self, row) -> str:
        parts = [str(row["variant"])] if row.get("variant") else []
        parts += [f"{k.rsplit('.', 1)[-1]} = {row.get(k)}" for k in self.spec.grid]
        return ", ".join(parts) or row["run"]


def _save(view: StudyView, fig, stem: str, title: str, caption: str) -> Figure:
    return Figure(stem, title, caption, save_figure(fig, view.fig_dir, stem))


def mean_sd_by(rows: list[dict], key: str, metric: str, variant: str | None = None) -> tuple[list, list, list]:
    """x values (sorted), mean and sd over seeds of ``metric`` for rows grouped by ``key``."""
    groups: dict[Any, list[float]] = {}
    for r in rows:
        if variant is not None and r.get("variant") != variant:
            continue
        v = r.get(metric)
        if isinstance(v, (int, float)) and v == v:
            groups.setdefault(r.get(key), []).append(float(v))
    xs = sorted(groups, key=lambda x: (isinstance(x, str), x))
    return xs, [statistics.mean(groups[x]) for x in xs], [statistics.stdev(groups[x]) if len(groups[x]) > 1 else 0.0 for x in xs]


def _variants(view: StudyView) -> list[str | None]:
    return [v.label for v in view.spec.variants] or [None]


# --- figures ----------------------------------------------------------------------------------------
def latent_2d(view: StudyView, **_) -> list[Figure]:
    """Test-set posterior means of every 2-D run, coloured by class (document 002 Fig. 2, document 003)."""
    rows = [r for r in view.first_seed() if (view.analysis(r, "posterior") or {}).get("latent_dim") == 2]
    if not rows:
        view.notes.append("latent-2d: no finished run has a 2-D latent")
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 4.0), squeeze=False)
    for ax, r in zip(axes[0], rows):
        a = view.arrays(r, "posterior")
        sc = ax.scatter(a["mu_test"][:, 0], a["mu_test"][:, 1], c=a["y_test"], cmap="tab10", s=4, alpha=0.7, vmin=-0.5, vmax=9.5)
        ax.set_xlabel("z1 (posterior mean)")
        ax.set_ylabel("z2 (posterior mean)")
        ax.set_title(view.label(r))
    fig.colorbar(sc, ax=axes[0].tolist(), ticks=range(10), label="class")
    return [_save(view, fig, "latent-2d", "The 2-D latent space by class",
                  "Posterior means of the test images; similar classes sit together, with gradients between them.")]


def metric_vs_key(view: StudyView, metrics: list[tuple[str, str]], stem: str, title: str, caption: str,
                  log_x: bool = True) -> list[Figure]:
    key = view.grid_key()
    rows = view.finished()
    if key is None or not rows:
        view.notes.append(f"{stem}: no finished runs")
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.3 * len(metrics), 3.5), squeeze=False)
    for ax, (metric, ylabel) in zip(axes[0], metrics):
        for variant in _variants(view):
            xs, mean, sd = mean_sd_by(rows, key, metric, variant)
            if xs:
                ax.errorbar(xs, mean, yerr=sd, marker="o", capsize=3, label=variant or None)
        if log_x and all(isinstance(x, (int, float)) and x > 0 for x in (r.get(key) for r in rows)):
            ax.set_xscale("log")
        ax.set_xlabel(key.rsplit(".", 1)[-1].replace("_", " "))
        ax.set_ylabel(ylabel)
        if view.spec.variants:
            ax.legend(fontsize=8)
    return [_save(view, fig, stem, title, caption + f" Error bars: sd over seeds {view.spec.seeds}.")]


def typical_gap(view: StudyView, **_) -> list[Figure]:
    return metric_vs_key(view, [("typical_gap_percent", "gap to typical density (% per dim)"),
                                ("norm_posterior_over_sqrt_n", "||z|| / sqrt(n), posterior samples")],
                         "typical-gap", "Typical-set gap per latent dimension (document 002 Fig. 3)",
                         "The per-dimension density of posterior samples approaches the typical-sequence density as "
                         "the latent dimension grows, as Theorem 3 predicts.")


def headline(view: StudyView, **_) -> list[Figure]:
    return metric_vs_key(view, [("active_units", "active units (Var[mu] > 0.01)"),
                                ("fd_prior", "FD of prior samples"), ("fd_ex-post-gmm", "FD of ex-post GMM samples"),
                                ("log_likelihood", "log p(x), importance sampled (nats)")],
                         "headline", "What the paper does not show: usage, sample quality and likelihood",
                         "Active units, FD (evaluation-classifier features; lower is better) of prior samples and of "
                         "samples from a Gaussian mixture fitted to the codes, and the test log-likelihood.")


def _image_panels(view: StudyView, rows, pick: Callable, stem: str, title: str, caption: str, ncol=8) -> list[Figure]:
    panels = [(r, pick(r)) for r in rows]
    panels = [(r, imgs) for r, imgs in panels if imgs is not None]
    if not panels:
        view.notes.append(f"{stem}: no finished run has the images")
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.9 * len(panels), 3.4), squeeze=False)
    for ax, (r, imgs) in zip(axes[0], panels):
        show_images(ax, imgs, ncol=ncol, title=view.label(r))
    return [_save(view, fig, stem, title, caption)]


def samples_grid(view: StudyView, **_) -> list[Figure]:
    def pick(r):
        a = view.arrays(r, "samples")
        return a["images_prior"][:64] if a else None
    return _image_panels(view, view.first_seed(), pick, "samples-grid", "Prior samples per run (document 002 Fig. 4)",
                         "Decoded means of z ~ N(0, I), one panel per run (first seed).")


def reconstructions_grid(view: StudyView, **_) -> list[Figure]:
    def pick(r):
        a = view.arrays(r, "samples")
        if not a:
            return None
        return np.concatenate([a["images_data"][:24], a["images_reconstruction"][:24]])
    return _image_panels(view, view.first_seed(), pick, "reconstructions-grid", "Reconstructions per run (document 002 Fig. 5)",
                         "Top three rows: test images; bottom three: their reconstructions from the posterior mean.")


def theorem3(view: StudyView, dims=(1, 10, 100, 1000), sigmas=(1.0, 0.1), pairs=20000, delta=1e-3, **_) -> list[Figure]:
    from vaelab.analysis.typical import theorem3_check

    rows = theorem3_check(dims=tuple(dims), sigmas=tuple(sigmas), pairs=pairs, delta=delta)
    view.notes.append("theorem3: " + json.dumps([{k: r[k] for k in ("sigma", "n", "p_within_delta", "per_dim_diff_sd")} for r in rows]))
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for sigma in sigmas:
        rs = [r for r in rows if r["sigma"] == sigma]
        axes[0].plot([r["n"] for r in rs], [r["p_within_delta"] for r in rs], marker="o",
                     label=f"sigma = {sigma} (h = {rs[0]['entropy']:+.2f} nats)")
        axes[1].plot([r["n"] for r in rs], [r["median_log10_abs_diff"] for r in rs], marker="o", label=f"sigma = {sigma}")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("dimension n")
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"P(|f_n(Z1) - f_n(Z2)| < {delta})")
    axes[1].set_ylabel("median log10 |f_n(Z1) - f_n(Z2)|")
    view.theorem = rows  # type: ignore[attr-defined]
    return [_save(view, fig, "theorem3", "Theorem 3 by Monte Carlo",
                  f"{pairs} pairs per point. For h > 0 the probability goes to 1; for sigma < 0.242 (h < 0) densities "
                  "grow like exp(-n h) and their difference grows too, so the theorem needs h > 0.")]


FIGURES: dict[str, Callable[..., list[Figure]]] = {
    "latent-2d": latent_2d, "typical-gap": typical_gap, "headline": headline, "samples-grid": samples_grid,
    "reconstructions-grid": reconstructions_grid, "theorem3": theorem3,
}


def draw(view: StudyView) -> list[Figure]:
    """Every figure the spec lists, in order; a failure to draw one is a note in the report, not a crash."""
    out = []
    for name in view.spec.figures:
        fn = FIGURES.get(name)
        if fn is None:
            view.notes.append(f"{name}: no such figure (known: {', '.join(FIGURES)})")
            continue
        try:
            out += fn(view, **view.spec.figure_options.get(name, {}))
        except Exception as exc:  # noqa: BLE001 - one broken figure must not lose the report
            view.notes.append(f"{name}: could not be drawn ({type(exc).__name__}: {exc})")
    return out
