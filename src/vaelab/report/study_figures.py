"""Comparison figures of a study, drawn from its runs' analysis files (never by training or re-measuring).

Each figure function takes a :class:`StudyView` and options and returns a list of :class:`Figure` records (the PNG,
its SVG, a title and a caption that says what to look for). A figure whose inputs are missing (a run that failed, an
analysis that was not asked for) is left out with the reason, never drawn from partial data without saying so."""
from __future__ import annotations

import json
import shutil
from typing import Callable

import numpy as np

from vaelab.analysis.framework.registry import column
from vaelab.plotting import pyplot, show_images
from vaelab.studies import theorem
from vaelab.studies.view import Figure, StudyView, latent_panels, mean_sd_by, panel_row
from vaelab.studies.view import save_view_figure as _save


def _variants(view: StudyView) -> list[str | None]:
    return [v.label for v in view.spec.variants] or [None]


# --- figures ----------------------------------------------------------------------------------------
def latent_2d(view: StudyView, **_) -> list[Figure]:
    """Test-set posterior means of every 2-D run, coloured by class (document 002 Fig. 2, document 003)."""
    panels = latent_panels(view, lambda d: d == 2, "latent-2d: no finished run has a 2-D latent", 4.2, 4.0)
    if panels is None:
        return []
    fig, pairs = panels
    for ax, r in pairs:
        a = view.arrays(r, "posterior")
        sc = ax.scatter(a["mu_test"][:, 0], a["mu_test"][:, 1], c=a["y_test"], cmap="tab10", s=4, alpha=0.7, vmin=-0.5, vmax=9.5)
        ax.set_xlabel("z1 (posterior mean)")
        ax.set_ylabel("z2 (posterior mean)")
        ax.set_title(view.label(r))
    fig.colorbar(sc, ax=[ax for ax, _ in pairs], ticks=range(10), label="class")
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
                         "the latent dimension grows, as Theorem 3 predicts. Note that this gap, (chi^2_n - n)/(2n) in "
                         "log density per dimension, does not depend on the trained model at all: it is the same for "
                         "every run with the same n.")


def headline(view: StudyView, **_) -> list[Figure]:
    return metric_vs_key(view, [("active_units", "active units (Var[mu] > 0.01)"),
                                ("fd_prior", "FD of prior samples"), ("fd_ex-post-gmm", "FD of ex-post GMM samples"),
                                ("log_likelihood", "log p(x), importance sampled (nats)")],
                         "headline", "What the paper does not show: usage, sample quality and likelihood",
                         f"Active units, FD ({view.features()}; lower is better) of prior samples and of samples "
                         "from a Gaussian mixture fitted to the codes, and the test log-likelihood.")


def gap_vs_key(view: StudyView, **_) -> list[Figure]:
    return metric_vs_key(view, [("informative_dims", "informative directions (PCA > 0.01)"),
                                ("classifier_auc", "AUC prior vs q(z), informative coords"),
                                ("shell_variance", "complement variance per direction"),
                                ("fd_q-informative", "FD: q(z) informative + prior rest"),
                                ("fd_ex-post-gaussian", "FD: ex-post Gaussian (a fix)")],
                         "gap-vs-dim", "Where the prior and the aggregate posterior part ways",
                         "How many directions carry information; how well a classifier tells prior from q(z) samples "
                         "in those directions (0.5: not at all); the complement's variance per direction (the prior's "
                         "is 1: the soap bubble); FD when only the informative coordinates come from q(z), and with "
                         "the ex-post Gaussian fix.")


def _image_panels(view: StudyView, rows, pick: Callable, stem: str, title: str, caption: str, ncol=8) -> list[Figure]:
    panels = [(r, pick(r)) for r in rows]
    panels = [(r, imgs) for r, imgs in panels if imgs is not None]
    figure = panel_row(view, panels, f"{stem}: no finished run has the images", 2.9, 3.4)
    if figure is None:
        return []
    fig, axes = figure
    for ax, (r, imgs) in zip(axes, panels):
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


def theorem3(view: StudyView, **_) -> list[Figure]:
    """The study's Theorem 3 check (vaelab.studies.theorem, with its figure options), drawn."""
    options = theorem.TheoremOptions.of(view.spec)
    rows, sigmas, pairs, delta = theorem.rows(view), options.sigmas, options.pairs, options.delta
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
    return [_save(view, fig, "theorem3", "Theorem 3 by Monte Carlo",
                  f"{pairs} pairs per point. For h > 0 the probability goes to 1; for sigma < 0.242 (h < 0) densities "
                  "grow like exp(-n h) and their difference grows too, so the theorem needs h > 0.")]


# --- document 004 (renyi) ----------------------------------------------------------------------------
def _lines_by(view: StudyView, x_key: str, line_key: str, metric: str, ax, ylabel: str) -> None:
    rows = view.finished()
    for value in sorted({r.get(line_key) for r in rows}, key=lambda v: (v is None, v)):
        xs, mean, sd = mean_sd_by([r for r in rows if r.get(line_key) == value], x_key, metric)
        if xs:
            ax.errorbar(xs, mean, yerr=sd, marker="o", capsize=3, label=f"{line_key.rsplit('.', 1)[-1]} = {value}")
    ax.set_xlabel(x_key.rsplit(".", 1)[-1])
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def pca_spectra(view: StudyView, **_) -> list[Figure]:
    rows = view.first_seed()
    latents = sorted({r.get("model.latent_dim") for r in rows})  # empty exactly when rows is
    panels = panel_row(view, latents, "pca-spectra: no finished runs", 4.4, 3.6)
    if panels is None:
        return []
    fig, axes = panels
    for ax, k in zip(axes, latents):
        for r in sorted((r for r in rows if r.get("model.latent_dim") == k), key=lambda r: r.get("objective.alpha", 0)):
            p = view.analysis(r, "posterior")
            if p:
                ev = np.maximum(np.asarray(p["pca"]["eigenvalues"]), 1e-6)
                ax.semilogy(np.arange(1, len(ev) + 1), ev, marker=".", label=f"alpha = {r.get('objective.alpha')}")
        ax.axhline(0.01, color="#C44E52", ls="--", lw=1)
        ax.set_xlabel("principal component")
        ax.set_ylabel("eigenvalue of Cov[mu(x)]")
        ax.set_title(f"k = {k}")
        ax.legend(fontsize=7)
    return [_save(view, fig, "pca-spectra", "PCA spectra of the posterior means (document 004 Fig. 1)",
                  "Eigenvalues of the covariance of mu(x) over the test set, per alpha; the dashed line is 0.01.")]


def components_vs_alpha(view: StudyView, **_) -> list[Figure]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 3.6))
    params = view.spec.analyses.get("posterior")
    _lines_by(view, "objective.alpha", "model.latent_dim", column("posterior", "pca_above_{threshold:g}", params), ax,
              column("posterior", "components with eigenvalue > {threshold:g}", params))
    return [_save(view, fig, "components-vs-alpha", "Latent components carrying information (document 004 Fig. 2, left)",
                  f"Mean over seeds {view.spec.seeds} with sd; one line per latent size k.")]


def bounds_vs_alpha(view: StudyView, **_) -> list[Figure]:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    _lines_by(view, "objective.alpha", "model.latent_dim", "vr_bound", axes[0], "VR bound, K = 10 (nats)")
    _lines_by(view, "objective.alpha", "model.latent_dim", "log_likelihood", axes[1], "log p(x), importance sampled (nats)")
    samples = view.spec.analyses.get("likelihood", {}).get("samples", 1000)
    return [_save(view, fig, "bounds-vs-alpha", "Bound and log-likelihood against alpha (document 004 Fig. 2, right)",
                  f"Test-set VR bound with 10 samples at the run's alpha and the importance-sampled log-likelihood with {samples} samples.")]


def probes_over_epochs(view: StudyView, **_) -> list[Figure]:
    rows = view.first_seed()
    alphas = sorted({r.get("objective.alpha") for r in rows if r.get("objective.alpha") is not None})
    chosen = min(alphas, key=lambda a: abs(a - 1.0)) if alphas else None  # the KL bound, as the paper's Fig. 3
    rows = [r for r in rows if r.get("objective.alpha") == chosen] if chosen is not None else rows
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
    drawn = False
    for r in rows:
        pr = view.analysis(r, "probes")
        if not pr or not pr["over_training"]:
            continue
        drawn = True
        for ax, feat in zip(axes, ("mu", "mu+sigma2", "z")):
            pts = [e for e in pr["over_training"] if feat in e]
            ax.plot([e["epoch"] for e in pts], [e[feat] for e in pts], marker="o", label=f"k = {r.get('model.latent_dim')}")
    if not drawn:
        view.notes.append("probes-over-epochs: no run has probes over snapshots")
        plt.close(fig)
        return []
    for ax, feat in zip(axes, ("mu", "[mu, sigma^2]", "sampled z")):
        ax.set_xlabel("training epoch")
        ax.set_title(f"features: {feat}")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("test accuracy, logistic regression")
    return [_save(view, fig, "probes-over-epochs", "Linear probes over training (document 004 Fig. 3)",
                  f"Runs with alpha = {chosen} (alpha = 1 is the KL bound); one line per latent size k.")]


def copy_run_figure(view: StudyView, analysis: str, stem: str, title: str, caption: str, prefer: Callable | None = None) -> list[Figure]:
    rows = view.first_seed()
    if prefer:
        rows = sorted(rows, key=prefer)
    for r in rows:
        src = view.run_dir(r) / "figures" / f"{analysis}-{stem}.png"
        if src.exists():
            view.fig_dir.mkdir(parents=True, exist_ok=True)
            files = []
            for ext in ("png", "svg"):
                dst = view.fig_dir / f"{analysis}-{stem}.{ext}"
                shutil.copyfile(src.with_suffix(f".{ext}"), dst)
                files.append(str(dst))
            return [Figure(f"{analysis}-{stem}", title, f"{caption} Run: {r['run']}.", files)]
    view.notes.append(f"{analysis}-{stem}: no run has this figure")
    return []


def interpolation(view: StudyView, **_) -> list[Figure]:
    return (copy_run_figure(view, "interpolation", "0", "Interpolations (document 004 Fig. 5)",
                            "Rows: input space; latent means; sampled latents; Fisher-Rao geodesic with sampling; "
                            "the geodesic without sampling.", prefer=lambda r: abs(r.get("objective.alpha", 1.0) - 1.0))
            + copy_run_figure(view, "interpolation", "geodesic-curves", "Geodesics against straight lines (document 004 Fig. 4)",
                              "Along the Fisher-Rao geodesic sigma rises between distant means.",
                              prefer=lambda r: abs(r.get("objective.alpha", 1.0) - 1.0)))


# --- document 000 (bubble) ----------------------------------------------------------------------------
def unit_statistics(view: StudyView, **_) -> list[Figure]:
    rows = [r for r in view.first_seed() if view.analysis(r, "posterior")]
    if not rows:
        view.notes.append("unit-statistics: no run has posterior statistics")
        return []
    plt = pyplot()
    fig, axes = plt.subplots(2, len(rows), figsize=(4.2 * len(rows), 6), squeeze=False)
    for k, r in enumerate(rows):
        p = view.analysis(r, "posterior")
        mean_mu, s2 = np.asarray(p["mean_mu"]), np.asarray(p["mean_sigma2"] or [np.nan])
        axes[0, k].hist(mean_mu, bins=50, color="#4C72B0")
        axes[0, k].set_xlabel("E_x[mu(x)] per latent unit")
        axes[0, k].set_title(f"{view.label(r)}: {p['latent_dim']} units")
        axes[1, k].hist(np.sqrt(s2), bins=50, color="#DD8452")
        axes[1, k].set_xlabel("sqrt(E_x[sigma^2(x)]) per latent unit")
        for ax in axes[:, k]:
            ax.set_ylabel("units")
    return [_save(view, fig, "unit-statistics", "Posterior means near 0 and deviations near 1 (document 000)",
                  "Per latent unit: the average posterior mean and deviation over test images. A unit with mean 0 and "
                  "deviation 1 for every input carries nothing: it is the prior.")]


def samplers_by_run(view: StudyView, **_) -> list[Figure]:
    rows = [r for r in view.first_seed() if view.arrays(r, "samples")]
    if not rows:
        view.notes.append("samplers-by-run: no run has samples")
        return []
    plt = pyplot()
    names = [("images_prior", "prior N(0, I)"), ("images_neighbourhood", "N(mu(x), I)"),
             ("images_q-informative", "q(z) informative + prior rest"), ("images_ex-post-gaussian", "ex-post Gaussian")]
    fig, axes = plt.subplots(len(rows), len(names), figsize=(3 * len(names), 3.1 * len(rows)), squeeze=False)
    for i, r in enumerate(rows):
        a = view.arrays(r, "samples")
        for j, (key, title) in enumerate(names):
            show_images(axes[i, j], a[key][:36], ncol=6, title=f"{view.label(r)}:\n{title}")
    return [_save(view, fig, "samplers-by-run", "Prior samples against N(mu(x), I), the intervention and a fix",
                  "Document 000's observation: prior samples are strokes while N(mu(x), I) gives digits. The third "
                  "column keeps the prior's complement and takes only the informative coordinates from q(z): when it "
                  "looks like the data, the few directions the decoder reads are what the prior gets wrong. The "
                  "fourth is the ex-post Gaussian fitted to those coordinates, a fix that needs no training images.")]


def gap_by_run(view: StudyView, **_) -> list[Figure]:
    rows = view.first_seed()
    if not rows:
        return []
    plt = pyplot()
    cols = [("classifier_auc", "AUC prior vs q(z), informative"), ("shell_variance", "complement variance (prior 1)"),
            ("overfit_gap", "test - train -ELBO (nats)"), ("fd_prior", "FD: prior"),
            ("fd_q-informative", "FD: q(z) informative + prior rest"), ("fd_q-complement", "FD: prior informative + q(z) rest"),
            ("fd_ex-post-gaussian", "FD: ex-post Gaussian"), ("fd_two-stage", "FD: two-stage VAE")]
    fig, axes = plt.subplots(2, len(cols) // 2, figsize=(3.0 * len(cols) // 2, 6.8))
    labels = [r.get("variant") or r["run"] for r in rows]
    for ax, (col, title) in zip(axes.ravel(), cols):
        ax.bar(range(len(rows)), [r.get(col) if isinstance(r.get(col), (int, float)) else 0 for r in rows], color="#4C72B0")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
    return [_save(view, fig, "gap-by-run", "Both explanations, measured",
                  "The classifier AUC tests q(z) against the prior in the informative coordinates; the complement's "
                  "variance per direction (1 for the prior) is the soap bubble; the train/test gap measures "
                  "over-fitting; FD of the two interventions says which part costs sample quality, and FD per fix "
                  "what each fix buys.")]


FIGURES: dict[str, Callable[..., list[Figure]]] = {
    "latent-2d": latent_2d, "typical-gap": typical_gap, "headline": headline, "gap-vs-dim": gap_vs_key,
    "samples-grid": samples_grid,
    "reconstructions-grid": reconstructions_grid, "theorem3": theorem3,
    "pca-spectra": pca_spectra, "components-vs-alpha": components_vs_alpha, "bounds-vs-alpha": bounds_vs_alpha,
    "probes-over-epochs": probes_over_epochs, "interpolation": interpolation,
    "unit-statistics": unit_statistics, "samplers-by-run": samplers_by_run, "gap-by-run": gap_by_run,
}
