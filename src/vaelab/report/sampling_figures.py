"""Figures of document 003 (the `sampling` study): trajectory animations, variational vs no-sampling latents,
3-D views and slices, 4-D grids, samples of 8- and 16-dimensional models, loss spread and collapsed variables."""
from __future__ import annotations

import numpy as np

from vaelab.plotting import pyplot, show_images
from vaelab.report.animations import figure_to_rgb, save_gif
from vaelab.studies.view import Figure, StudyView, latent_panels
from vaelab.studies.view import save_view_figure as _save

COLLAPSE_THRESHOLD = 0.01  # a latent variable whose posterior mean barely moves over the data: Var_x[mu] < 0.01


def _runs_of(view: StudyView, variant: str) -> list[dict]:
    return sorted((r for r in view.finished() if r.get("variant") == variant), key=lambda r: r.get("seed", 0))


def _trace(view: StudyView, row) -> dict | None:
    path = view.run_dir(row) / "trace.npz"
    if not path.exists():
        return None
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _frame_axes(ax, lo: float, hi: float, title: str) -> None:
    """One animation frame's square latent plane, the same limits in every frame."""
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(title)


def _limits(mu: np.ndarray, pad: float = 0.5) -> tuple[float, float]:
    lo, hi = np.percentile(mu, 1), np.percentile(mu, 99)
    return float(min(lo, -3) - pad), float(max(hi, 3) + pad)


def trajectories(view: StudyView, variant: str = "256-2-vae", epochs: float = 5, **_) -> list[Figure]:
    """Ten test digits, one per class, over the first ``epochs`` epochs; circle radius r with r^2 = sqrt(s1^2 s2^2)."""
    runs = _runs_of(view, variant)
    trace = _trace(view, runs[0]) if runs else None
    if trace is None or "logvar" not in trace:
        view.notes.append(f"trajectories: no finished {variant} run with a trace")
        return []
    labels = trace["labels"]
    first = np.array([np.flatnonzero(labels == c)[0] for c in np.unique(labels)])
    keep = trace["epoch"] <= epochs
    mu, logvar, ep = trace["mu"][keep][:, first], trace["logvar"][keep][:, first], trace["epoch"][keep]
    radius = np.exp(0.25 * logvar.sum(-1))  # r^2 = geometric mean of the two variances = exp(mean logvar)
    plt = pyplot()
    lo, hi = _limits(mu)
    colors = plt.get_cmap("tab10")
    frames = []
    for t in range(len(ep)):
        fig, ax = plt.subplots(figsize=(5, 5))
        for k, c in enumerate(labels[first]):
            ax.plot(mu[: t + 1, k, 0], mu[: t + 1, k, 1], color=colors(int(c)), lw=0.8, alpha=0.5)
            ax.add_patch(plt.Circle(tuple(mu[t, k]), radius[t, k], color=colors(int(c)), alpha=0.25))
            ax.text(mu[t, k, 0], mu[t, k, 1], str(int(c)), ha="center", va="center", fontsize=9, weight="bold")
        _frame_axes(ax, lo, hi, f"{variant}, epoch {ep[t]:.2f}")
        frames.append(figure_to_rgb(fig))
        plt.close(fig)
    view.fig_dir.mkdir(parents=True, exist_ok=True)
    gif = save_gif(frames, view.fig_dir / "trajectories.gif")
    return [Figure("trajectories", "Trajectories of ten digits during training (document 003, first video)",
                   f"One test digit per class, {runs[0]['run']}, every {int(trace['step'][1] - trace['step'][0])} steps over "
                   f"the first {epochs:g} epochs. Circle radius r with r^2 = the geometric mean of the two posterior "
                   "variances: it starts near 1 and shrinks fast.", [gif], kind="animation")]


def latent_frames(view: StudyView, variant: str = "256-2-vae", from_epoch: float = 1, to_epoch: float = 10, **_) -> list[Figure]:
    """Six digits per class, from the start of epoch 2 to the end of epoch 10 (document 003, second video)."""
    runs = _runs_of(view, variant)
    trace = _trace(view, runs[0]) if runs else None
    if trace is None:
        view.notes.append(f"latent-frames: no finished {variant} run with a trace")
        return []
    keep = (trace["epoch"] >= from_epoch) & (trace["epoch"] <= to_epoch)
    mu, ep, labels = trace["mu"][keep], trace["epoch"][keep], trace["labels"]
    if not len(ep):
        view.notes.append("latent-frames: the trace has no steps in the requested epochs")
        return []
    plt = pyplot()
    lo, hi = _limits(mu)
    frames = []
    for t in range(len(ep)):
        fig, ax = plt.subplots(figsize=(5, 5))
        sc = ax.scatter(mu[t, :, 0], mu[t, :, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=22)
        _frame_axes(ax, lo, hi, f"{variant}, epoch {ep[t]:.2f}")
        fig.colorbar(sc, ax=ax, ticks=range(10), label="class", shrink=0.8)
        frames.append(figure_to_rgb(fig))
        plt.close(fig)
    gif = save_gif(frames, view.fig_dir / "latent-frames.gif", ms_per_frame=90)
    return [Figure("latent-frames", "The latent distribution epoch by epoch (document 003, second video)",
                   f"{len(labels) // len(np.unique(labels))} test digits per class from epoch {from_epoch:g} to {to_epoch:g}: "
                   "the codes spread around the centre in a Gaussian-like cloud.", [gif], kind="animation")]


def vae_vs_ae(view: StudyView, **_) -> list[Figure]:
    """For each 2-D architecture: the test codes and a 10x10 quantile grid, variational against no sampling."""
    pairs = [(v.label, v.label[:-4] + "-ae") for v in view.spec.variants
             if v.label.endswith("-vae") and any(w.label == v.label[:-4] + "-ae" for w in view.spec.variants)]
    pairs = [(a, b) for a, b in pairs if _runs_of(view, a) and _runs_of(view, b)
             and (view.analysis(_runs_of(view, a)[0], "posterior") or {}).get("latent_dim") == 2]
    if not pairs:
        view.notes.append("vae-vs-ae: no finished 2-D variational / no-sampling pair")
        return []
    plt = pyplot()
    fig, axes = plt.subplots(len(pairs) * 2, 2, figsize=(9, 8.6 * len(pairs)), squeeze=False)
    for i, pair in enumerate(pairs):
        for j, label in enumerate(pair):
            row = _runs_of(view, label)[0]
            post, samp = view.arrays(row, "posterior"), view.arrays(row, "samples")
            ax = axes[2 * i + j, 0]
            ax.scatter(post["mu_test"][:, 0], post["mu_test"][:, 1], c=post["y_test"], cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
            ax.set_title(f"{label}: test codes (test loss {row.get('test_loss', float('nan')):.2f})")
            ax.set_xlabel("z1")
            ax.set_ylabel("z2")
            show_images(axes[2 * i + j, 1], samp["images_grid"], ncol=10, title=f"{label}: N(0, 1) quantile grid")
    return [_save(view, fig, "vae-vs-ae", "Variational against no sampling (document 003)",
                  "Rows in pairs: the variational model (-vae) and the same network trained without sampling, with only "
                  "the quadratic penalty on the codes (-ae). Left: test codes by class; right: decoded 10x10 grids of "
                  "N(0, 1) quantiles.")]


def views_3d(view: StudyView, **_) -> list[Figure]:
    rows = view.first_seed_with_latent(lambda d: d == 3)
    if not rows:
        view.notes.append("views-3d: no finished 3-D run")
        return []
    plt = pyplot()
    out = []
    for r in rows:
        post, samp = view.arrays(r, "posterior"), view.arrays(r, "samples")
        fig = plt.figure(figsize=(14, 3.6))
        ax = fig.add_subplot(1, 6, 1, projection="3d")
        ax.scatter(*post["mu_test"].T, c=post["y_test"], cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
        ax.set_zlabel("z3")
        ax.set_title(r.get("variant") or r["run"])
        for s in range(5):
            show_images(fig.add_subplot(1, 6, s + 2), samp["images_grid"][25 * s: 25 * (s + 1)], ncol=5, title=f"slice {s + 1}")
        out += [_save(view, fig, f"views-3d-{r.get('variant') or r['run']}", f"3-D latent: {r.get('variant') or r['run']} (document 003)",
                      "Left: test codes in 3-D by class. Right: five slices (first coordinate fixed at the 10/30/50/70/90% "
                      "N(0, 1) quantiles) of 25 decoded grid points each.")]
    return out


def grids_4d(view: StudyView, **_) -> list[Figure]:
    panels = latent_panels(view, lambda d: d == 4, "grids-4d: no finished 4-D run", 5.4, 5.6)
    if panels is None:
        return []
    fig, pairs = panels
    for ax, r in pairs:
        show_images(ax, view.arrays(r, "samples")["images_grid"], ncol=9, title=f"{r.get('variant')}: 3^4 = 81 points")
    return [_save(view, fig, "grids-4d", "4-D latent grids (document 003)",
                  "Three N(0, 1) quantiles per dimension (1/6, 1/2, 5/6): rows run over (z1, z2), columns over (z3, z4).")]


def samples_high_dim(view: StudyView, **_) -> list[Figure]:
    panels = latent_panels(view, lambda d: d >= 8, "samples-high-dim: no finished run with 8 or more latent dimensions",
                           3.6, 4)
    if panels is None:
        return []
    fig, pairs = panels
    for ax, r in pairs:
        show_images(ax, view.arrays(r, "samples")["images_prior"][:100], ncol=10, title=str(r.get("variant")))
    return [_save(view, fig, "samples-high-dim", "100 prior samples of 8- and 16-dimensional models (document 003)",
                  "Decoded means of z ~ N(0, I), one panel per architecture (first seed).")]


def loss_spread(view: StudyView, **_) -> list[Figure]:
    variants = [v.label for v in view.spec.variants]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(variants)), 3.8))
    for i, v in enumerate(variants):
        vals = [r["test_loss"] for r in _runs_of(view, v) if isinstance(r.get("test_loss"), (int, float))]
        ax.scatter([i] * len(vals), vals, color="#4C72B0", s=20)
        if vals:
            ax.plot([i - 0.25, i + 0.25], [np.mean(vals)] * 2, color="black", lw=1)
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels(variants, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("final test loss (nats; -ELBO, or the penalised loss without sampling)")
    return [_save(view, fig, "loss-spread", "Spread of final losses over seeds (document 003)",
                  f"Each dot is a seed ({view.spec.seeds}); the bar is the mean. A wide spread is the unstable training "
                  "the document reports for deeper 4-D models.")]


def collapse(view: StudyView, **_) -> list[Figure]:
    variants = [v.label for v in view.spec.variants]
    counts, totals = [], []
    for v in variants:
        collapsed = [(view.analysis(r, "posterior") or {}) for r in _runs_of(view, v)]
        per = [p["latent_dim"] - p["active_units"] for p in collapsed if p]
        counts.append(float(np.mean(per)) if per else np.nan)
        totals.append(collapsed[0]["latent_dim"] if collapsed and collapsed[0] else np.nan)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(variants)), 3.8))
    ax.bar(range(len(variants)), totals, color="#DDDDDD", label="latent dimensions")
    ax.bar(range(len(variants)), counts, color="#C44E52", label=f"collapsed (Var_x[mu] < {COLLAPSE_THRESHOLD})")
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels(variants, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("latent variables (mean over seeds)")
    ax.legend(fontsize=8)
    return [_save(view, fig, "collapse", "Collapsed latent variables (document 003)",
                  "A variable is collapsed when its posterior mean barely varies over the test set (variance below "
                  f"{COLLAPSE_THRESHOLD}, the active-unit criterion); the document sees more collapse in deeper networks.")]


FIGURES = {"trajectories": trajectories, "latent-frames": latent_frames, "vae-vs-ae": vae_vs_ae, "views-3d": views_3d,
           "grids-4d": grids_4d, "samples-high-dim": samples_high_dim, "loss-spread": loss_spread, "collapse": collapse}
