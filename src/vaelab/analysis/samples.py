"""The ``samples`` analysis: a grid of decoded samples from every sampler (see
:mod:`vaelab.analysis.samplers.catalogue`), the quantile grid for 2-4 latent dimensions, and test images with their
reconstructions for reference."""
from __future__ import annotations

from vaelab.analysis.framework.common import AnalysisResult, decode_means, encode_all
from vaelab.analysis.samplers import GRID_POINTS, SAMPLERS, TITLES, latent_source, quantile_grid
from vaelab.models.priors import prior_label
from vaelab.plotting import pyplot, show_images

PANEL_TITLES = {"data": "test images", "reconstruction": "reconstructions"}


def samples(subject, *, n: int = 100, neighbourhood_scale: float = 1.0, gmm_components: int = 10,
            fit_points: int = 10000, threshold: float = 0.01, max_informative: int = 64, seed: int = 0) -> AnalysisResult:
    """Decoded samples from each sampler (and the quantile grid for 2-4 dims), plus reconstructions for reference."""
    source, used = latent_source(subject, fit_points=fit_points, seed=seed, threshold=threshold,
                                 max_informative=max_informative, neighbourhood_scale=neighbourhood_scale,
                                 gmm_components=gmm_components)
    d = source.latent_dim
    arrays, data = {}, {"latent_dim": d, "samplers": [], "informative_dims": source.subspace.k,
                        "prior": source.prior_distribution.describe()}
    for name in SAMPLERS:
        arrays[f"images_{name}"] = decode_means(subject.model, source.latents(name, n, seed)).numpy()
        data["samplers"].append(name)
    if d in GRID_POINTS:
        grid = quantile_grid(d)
        arrays["images_grid"] = decode_means(subject.model, grid).numpy()
        data["grid"] = {"dims": d, "points_per_axis": GRID_POINTS[d], "n": grid.shape[0]}
    x = subject.data.x_test[:min(n, subject.data.x_test.shape[0])]
    mu_x, _ = encode_all(subject.model, x)
    arrays["images_data"] = x.numpy()
    arrays["images_reconstruction"] = decode_means(subject.model, mu_x).numpy()
    params = {"n": n, "neighbourhood_scale": neighbourhood_scale, "gmm_components": gmm_components,
              "fit_points": used, "threshold": threshold, "max_informative": max_informative, "seed": seed}
    return AnalysisResult("samples", params, data, arrays)


def plot(result: AnalysisResult, save) -> None:
    plt = pyplot()
    a = result.arrays
    if not a:
        return
    names = ["data", "reconstruction", *[s for s in SAMPLERS if f"images_{s}" in a]]
    fig, axes = plt.subplots(2, (len(names) + 1) // 2, figsize=(3.5 * ((len(names) + 1) // 2), 7.4))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        title = PANEL_TITLES.get(name) or TITLES[name]
        if name == "neighbourhood":
            title = f"N(mu(x), {result.params['neighbourhood_scale']:g}^2 I)"
        if name == "prior":
            title = prior_label(result.data.get("prior", "N(0, I)"))
        show_images(ax, a[f"images_{name}"][:100], ncol=10, title=title)
    fig.suptitle(f"Samples by sampler (latent dimension {result.data['latent_dim']}, "
                 f"{result.data.get('informative_dims', '?')} informative directions)")
    save(fig, "by-sampler")
    if "images_grid" in a:
        grid = result.data["grid"]
        d, k = grid["dims"], grid["points_per_axis"]
        imgs = a["images_grid"]
        if d == 2:
            fig, ax = plt.subplots(figsize=(6, 6))
            show_images(ax, imgs, ncol=k, title="2-D quantile grid (rows: z1, columns: z2)")
        elif d == 3:
            fig, axes = plt.subplots(1, k, figsize=(3 * k, 3.3))
            for s, ax in enumerate(axes):
                show_images(ax, imgs[s * k * k:(s + 1) * k * k], ncol=k, title=f"slice {s + 1} of {k} (z1 fixed)")
        else:
            fig, ax = plt.subplots(figsize=(9, 9))
            show_images(ax, imgs, ncol=k * k, title="4-D grid: 3^4 = 81 points (z1, z2 by row; z3, z4 by column)")
        save(fig, "quantile-grid")
