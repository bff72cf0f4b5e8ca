"""Ways to draw latents for generation, and the analysis that decodes a grid from each.

- prior:                 z ~ N(0, I)
- neighbourhood:         z ~ N(mu(x), s^2 I) around the code of a random training image (document 000: s = 1)
- posterior:             z ~ N(mu(x), diag(sigma(x)^2)) (the encoder's own posterior)
- ex-post mixture:       a Gaussian mixture fitted to the training codes mu(x) after training (Ghosh et al. 2020)
- quantile grids:        for 2 to 4 latent dimensions, N(0, 1) quantiles on a grid (document 003: 5 slices of 25
                         points in 3-D, 3^4 = 81 points in 4-D)
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.stats import norm

from vaelab.analysis.common import AnalysisResult, decode_means, encode_all, generator, subsample
from vaelab.errors import ConfigError

SAMPLERS = ("prior", "neighbourhood", "posterior", "ex-post-gmm")
GRID_POINTS = {2: 10, 3: 5, 4: 3}  # points per axis: 10x10 in 2-D, 5 slices of 5x5 in 3-D, 3^4 in 4-D


def prior_latents(n: int, d: int, g: torch.Generator, device="cpu") -> torch.Tensor:
    return torch.randn((n, d), generator=g, device=device)


def neighbourhood_latents(mu: torch.Tensor, n: int, scale: float, g: torch.Generator) -> torch.Tensor:
    """z ~ N(mu(x), scale^2 I) for n random rows of mu (N, D)."""
    pick = torch.randint(0, mu.shape[0], (n,), generator=g, device=mu.device)
    return mu[pick] + scale * torch.randn((n, mu.shape[1]), generator=g, device=mu.device)


def posterior_latents(mu: torch.Tensor, logvar: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """z ~ N(mu(x), diag(sigma(x)^2)) for n random rows."""
    pick = torch.randint(0, mu.shape[0], (n,), generator=g, device=mu.device)
    return mu[pick] + torch.exp(0.5 * logvar[pick]) * torch.randn((n, mu.shape[1]), generator=g, device=mu.device)


class ExPostGMM:
    """A Gaussian mixture fitted to training codes (Ghosh et al. 2020, "From variational to deterministic
    autoencoders"): full covariances up to 64 latent dimensions, diagonal above (scikit-learn GaussianMixture)."""

    def __init__(self, n_components: int = 10, covariance: str | None = None, seed: int = 0):
        self.n_components, self.covariance, self.seed = n_components, covariance, seed
        self.gmm = None

    def fit(self, codes: torch.Tensor) -> "ExPostGMM":
        from sklearn.mixture import GaussianMixture

        x = codes.double().cpu().numpy()
        cov = self.covariance or ("full" if x.shape[1] <= 64 else "diag")
        k = min(self.n_components, x.shape[0])
        self.gmm = GaussianMixture(k, covariance_type=cov, reg_covar=1e-5, random_state=self.seed, max_iter=200).fit(x)
        return self

    def sample(self, n: int) -> torch.Tensor:
        self.gmm.random_state = self.seed  # reproducible draws
        z, _ = self.gmm.sample(n)
        return torch.from_numpy(z[np.random.default_rng(self.seed).permutation(n)]).float()

    def log_density(self, z: torch.Tensor) -> np.ndarray:
        return self.gmm.score_samples(z.double().cpu().numpy())


def quantile_grid(dims: int, points: int | None = None) -> torch.Tensor:
    """N(0, 1) quantiles at (k - 0.5)/points, k = 1..points, on every axis: (points^dims, dims).

    The last axis varies fastest; in 3-D the first axis indexes the slices (document 003's 5 slices of 25)."""
    if dims not in GRID_POINTS:
        raise ConfigError(f"quantile grids need a latent of 2, 3 or 4 dimensions, got {dims}; use the prior sampler")
    points = points or GRID_POINTS[dims]
    q = norm.ppf((np.arange(points) + 0.5) / points)
    return torch.tensor(list(itertools.product(q, repeat=dims)), dtype=torch.float32)


def sampler_latents(name: str, subject_mu: torch.Tensor, subject_logvar: torch.Tensor | None, n: int, seed: int,
                    neighbourhood_scale: float = 1.0, gmm_components: int = 10) -> torch.Tensor:
    """n latents (n, D) from the named sampler, given the training codes (mu, logvar)."""
    g = generator(seed, subject_mu.device)
    if name == "prior":
        return prior_latents(n, subject_mu.shape[1], g, subject_mu.device)
    if name == "neighbourhood":
        return neighbourhood_latents(subject_mu, n, neighbourhood_scale, g)
    if name == "posterior":
        if subject_logvar is None:
            return subject_mu[torch.randint(0, subject_mu.shape[0], (n,), generator=g, device=subject_mu.device)]
        return posterior_latents(subject_mu, subject_logvar, n, g)
    if name == "ex-post-gmm":
        return ExPostGMM(gmm_components, seed=seed).fit(subject_mu).sample(n).to(subject_mu.device)
    raise ConfigError(f"sampler {name!r} is not one of {', '.join(SAMPLERS)}")


def samples(subject, *, n: int = 100, neighbourhood_scale: float = 1.0, gmm_components: int = 10,
            fit_points: int = 10000, seed: int = 0) -> AnalysisResult:
    """Decoded samples from each sampler (and the quantile grid for 2-4 dims), plus reconstructions for reference."""
    idx = subsample(subject.data.x_train.shape[0], fit_points, seed)
    mu, logvar = encode_all(subject.model, subject.data.x_train[idx])
    d = mu.shape[1]
    arrays, data = {}, {"latent_dim": d, "samplers": []}
    for name in SAMPLERS:
        z = sampler_latents(name, mu, logvar, n, seed, neighbourhood_scale, gmm_components)
        arrays[f"images_{name}"] = decode_means(subject.model, z).numpy()
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
              "fit_points": int(idx.numel()), "seed": seed}
    return AnalysisResult("samples", params, data, arrays)


TITLES = {"prior": "prior N(0, I)", "neighbourhood": "N(mu(x), s^2 I)", "posterior": "N(mu(x), sigma(x)^2)",
          "ex-post-gmm": "ex-post Gaussian mixture", "data": "test images", "reconstruction": "reconstructions"}


def plot(result: AnalysisResult, save) -> None:
    from vaelab.report.figures import pyplot, show_images

    plt = pyplot()
    a = result.arrays
    if not a:
        return
    names = ["data", "reconstruction", *SAMPLERS]
    fig, axes = plt.subplots(2, 3, figsize=(10.5, 7.4))
    for ax, name in zip(axes.ravel(), names):
        title = TITLES[name]
        if name == "neighbourhood":
            title = f"N(mu(x), {result.params['neighbourhood_scale']:g}^2 I)"
        show_images(ax, a[f"images_{name}"][:100], ncol=10, title=title)
    fig.suptitle(f"Samples by sampler (latent dimension {result.data['latent_dim']})")
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
