"""Where generated latents come from: the training codes, the informative subspace and every sampler drawn
from them (:class:`LatentSource`), the ex-post fixes (Gaussian mixture; the two-stage VAE in
:mod:`vaelab.analysis.samplers.two_stage`), and the quantile grids of document 003.

The samplers themselves (names, what each draws) are declared once in :mod:`vaelab.analysis.samplers.catalogue`.
The informative subspace V (D, k) is the top principal directions of the codes (vaelab.analysis.stats.codes).
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.stats import norm
from sklearn.mixture import GaussianMixture

from vaelab.analysis.framework.common import (blas_threads, encode_all, generator, subsample)
from vaelab.analysis.samplers.catalogue import FIXES, INTERVENTIONS, SAMPLERS
from vaelab.analysis.samplers.two_stage import TwoStageVAE
from vaelab.analysis.stats.codes import Subspace, aggregate_samples, informative_subspace, pca, points_within_budget
from vaelab.errors import ConfigError
from vaelab.models.priors import Prior, StandardNormal, prior_of

GRID_POINTS = {2: 10, 3: 5, 4: 3}  # points per axis: 10x10 in 2-D, 5 slices of 5x5 in 3-D, 3^4 in 4-D


class ExPostGMM:
    """A Gaussian mixture fitted to codes (N, k) after training (Ghosh et al. 2020, "From variational to
    deterministic autoencoders"): full covariances up to 64 dimensions, diagonal above (scikit-learn)."""

    def __init__(self, n_components: int = 10, covariance: str | None = None, seed: int = 0):
        self.n_components, self.covariance, self.seed = n_components, covariance, seed
        self.gmm = None

    def fit(self, codes: torch.Tensor) -> "ExPostGMM":
        x = codes.double().cpu().numpy()
        cov = self.covariance or ("full" if x.shape[1] <= 64 else "diag")
        k = min(self.n_components, x.shape[0])
        with blas_threads(1):  # products of k x k blocks: more threads only wait on each other
            self.gmm = GaussianMixture(k, covariance_type=cov, reg_covar=1e-5, random_state=self.seed,
                                       max_iter=200).fit(x)
        return self

    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n draws (n, k) float32; the same ``seed`` (default: the fit's) gives the same draws on every call."""
        seed = self.seed if seed is None else seed
        self.gmm.random_state = seed  # reproducible draws
        z, _ = self.gmm.sample(n)
        return torch.from_numpy(z[np.random.default_rng(seed).permutation(n)]).float()

    def log_density(self, z: torch.Tensor) -> np.ndarray:
        return self.gmm.score_samples(z.double().cpu().numpy())


class ComplementGaussian:
    """A diagonal Gaussian fitted to the complement part w = z - V V^T z of codes (N, D), sampled and projected back
    onto the complement (so it never adds to the informative coordinates). Streams over rows: memory O(D)."""

    def __init__(self, subspace: Subspace):
        self.subspace = subspace

    def fit(self, z: torch.Tensor) -> "ComplementGaussian":
        v = self.subspace.basis.to(z.device)
        s1 = torch.zeros(z.shape[1], dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        for c in z.split(1024):
            w = (c - (c @ v) @ v.T).double().cpu()
            s1 += w.sum(0)
            s2 += w.pow(2).sum(0)
        n = z.shape[0]
        self.mean = (s1 / n).float()
        self.sd = ((s2 / n - (s1 / n).pow(2)).clamp_min(0) * n / max(n - 1, 1)).sqrt().float()
        return self

    def sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        """(n, D) draws projected onto the complement."""
        w = self.mean + self.sd * torch.randn((n, self.mean.numel()), generator=g)
        v = self.subspace.basis
        return w - (w @ v) @ v.T


class LatentSource:
    """Training codes mu, logvar (N, D) and every sampler drawn from them.

    The informative subspace V (D, k) comes from the PCA of the codes (vaelab.analysis.stats.codes). The interventional
    samplers combine independent draws: the informative coordinates V^T z of one and the complement z - V V^T z of
    another; the fixes model the informative coordinates of q(z)'s samples (a full Gaussian, a mixture, a second
    VAE) and draw the complement from a diagonal Gaussian fitted to q(z)'s complement. Fits are made on first use
    and kept in ``fits`` (pass the dict of an earlier source of the same codes and options to reuse its fits; see
    :func:`latent_source`). ``prior``: the model's prior, N(0, I) when not given."""

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor | None, *, threshold: float = 0.01,
                 max_informative: int = 64, neighbourhood_scale: float = 1.0, gmm_components: int = 10, seed: int = 0,
                 fits: dict | None = None, prior: Prior | None = None):
        self.mu, self.logvar = mu, logvar
        self.prior_distribution = prior if prior is not None else StandardNormal(mu.shape[1])
        self.threshold, self.max_informative = threshold, max_informative
        self.neighbourhood_scale, self.gmm_components, self.seed = neighbourhood_scale, gmm_components, seed
        self._fitted: dict = {} if fits is None else fits  # subspace, fixes, complement: small, shareable
        self._codes: torch.Tensor | None = None  # the (N, D) draws the fits are made on: big, never shared

    @property
    def latent_dim(self) -> int:
        return self.mu.shape[1]

    @property
    def subspace(self) -> Subspace:
        if "subspace" not in self._fitted:
            self._fitted["subspace"] = informative_subspace(pca(self.mu, seed=self.seed), self.threshold,
                                                            self.max_informative)
        return self._fitted["subspace"]

    def aggregate(self, n: int, g: torch.Generator) -> torch.Tensor:
        return aggregate_samples(self.mu, self.logvar, n, g)

    def prior(self, n: int, g: torch.Generator) -> torch.Tensor:
        return self.prior_distribution.sample(n, g, self.mu.device)

    def _fit_codes(self) -> torch.Tensor:
        """One draw of q(z) per training code, the data every fix is fitted to: (N, D)."""
        if self._codes is None:
            self._codes = self.aggregate(self.mu.shape[0], generator(self.seed + 7, self.mu.device))
        return self._codes

    def fix(self, name: str):
        """The fitted model of the informative coordinates for a fix (None when there are none)."""
        if name not in self._fitted:
            u = self.subspace.coordinates(self._fit_codes())
            if self.subspace.k == 0:
                model = None
            elif name == "ex-post-gaussian":
                model = ExPostGMM(1, "full", seed=self.seed).fit(u)
            elif name == "ex-post-gmm":
                model = ExPostGMM(self.gmm_components, seed=self.seed).fit(u)
            else:
                model = TwoStageVAE(seed=self.seed).fit(u)
            self._fitted[name] = model
        return self._fitted[name]

    def complement(self) -> ComplementGaussian:
        """The diagonal Gaussian of q(z)'s complement that the fixes draw the rest of the latent from."""
        if "complement" not in self._fitted:
            self._fitted["complement"] = ComplementGaussian(self.subspace).fit(self._fit_codes())
        return self._fitted["complement"]

    def latents(self, name: str, n: int, seed: int) -> torch.Tensor:
        """n latents (n, D) from the named sampler."""
        g = generator(seed, self.mu.device)
        if name == "prior":
            return self.prior(n, g)
        if name == "neighbourhood":
            pick = torch.randint(0, self.mu.shape[0], (n,), generator=g, device=self.mu.device)
            return self.mu[pick] + self.neighbourhood_scale * torch.randn((n, self.latent_dim), generator=g, device=self.mu.device)
        if name == "posterior":
            return self.aggregate(n, g)
        sub = self.subspace
        if name in INTERVENTIONS:
            z_q, z_p = self.aggregate(n, g), self.prior(n, g)  # independent draws
            inside, outside = (z_q, z_p) if name == "q-informative" else (z_p, z_q)
            return sub.combine(sub.coordinates(inside), outside)
        if name in FIXES:
            model = self.fix(name)
            u = model.sample(n) if model is not None else torch.zeros((n, 0))
            return sub.combine(u, self.complement().sample(n, g))
        raise ConfigError(f"sampler {name!r} is not one of {', '.join(SAMPLERS)}")


def training_codes(subject, fit_points: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Codes of up to ``fit_points`` training images (fewer when the latent is too big to hold them)."""
    n = points_within_budget(subject.latent_dim, fit_points, arrays=3)
    idx = subsample(subject.data.x_train.shape[0], n, seed)
    mu, logvar = encode_all(subject.model, subject.data.x_train[idx])
    return mu.cpu(), (None if logvar is None else logvar.cpu()), int(idx.numel())


def latent_source(subject, *, fit_points: int, seed: int, threshold: float, max_informative: int,
                  neighbourhood_scale: float, gmm_components: int) -> tuple[LatentSource, int]:
    """A LatentSource over the codes of up to ``fit_points`` training images, and how many there are. Its fits
    (subspace, fixes, complement) are kept on the subject, so the analyses of one diagnosis (samples, quality) fit
    the two-stage VAE and the mixtures once; they depend on the codes, the seed and these options only."""
    mu, logvar, used = training_codes(subject, fit_points, seed)
    fits = subject.cache.setdefault(("latent-source", used, seed, threshold, max_informative, gmm_components), {})
    return LatentSource(mu, logvar, threshold=threshold, max_informative=max_informative,
                        neighbourhood_scale=neighbourhood_scale, gmm_components=gmm_components, seed=seed,
                        fits=fits, prior=prior_of(subject.model)), used


def quantile_grid(dims: int, points: int | None = None) -> torch.Tensor:
    """N(0, 1) quantiles at (k - 0.5)/points, k = 1..points, on every axis: (points^dims, dims).

    The last axis varies fastest; in 3-D the first axis indexes the slices (document 003's 5 slices of 25)."""
    if dims not in GRID_POINTS:
        raise ConfigError(f"quantile grids need a latent of 2, 3 or 4 dimensions, got {dims}; use the prior sampler")
    points = points or GRID_POINTS[dims]
    q = norm.ppf((np.arange(points) + 0.5) / points)
    return torch.tensor(list(itertools.product(q, repeat=dims)), dtype=torch.float32)


def sampler_latents(name: str, subject_mu: torch.Tensor, subject_logvar: torch.Tensor | None, n: int, seed: int,
                    neighbourhood_scale: float = 1.0, gmm_components: int = 10, prior: Prior | None = None) -> torch.Tensor:
    """n latents (n, D) from the named sampler, given the training codes (mu, logvar) and the model's prior (N(0, I)
    when not given); see :class:`LatentSource`."""
    source = LatentSource(subject_mu, subject_logvar, neighbourhood_scale=neighbourhood_scale,
                          gmm_components=gmm_components, seed=seed, prior=prior)
    return source.latents(name, n, seed)
