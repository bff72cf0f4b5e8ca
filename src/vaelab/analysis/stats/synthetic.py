"""Models whose aggregate posterior is known, for checking the diagnosis (tests, the power benchmark, users who want
to calibrate vaelab's tests on their own latent size).

Each case is a code distribution: the encoder of image n returns (mu_n, logvar_n) drawn once from it, looked up by
the index written into the image's first pixel; the decoder is linear in the latent. The population's aggregate
posterior q(z) is then known in closed form:

- ``prior-isotropic``: mu ~ N(0, 0.75 I), sigma^2 = 0.25: q(z) = N(0, I) exactly (the null).
- ``prior-collapsed``: a used units with mu ~ N(0, 0.9), sigma^2 = 0.1, the rest mu = 0, sigma = 1: q(z) = N(0, I).
- ``anisotropic``: min(8, D / 8) rotated directions with aggregate variance 4 (code variance + sigma^2), sigma^2 set so that
  E||z||^2 = D, i.e. the norms match the prior's and only the shape differs (document 002's 800-d model).
- ``shell``: a used units as in ``prior-collapsed``, the collapsed ones narrower than the prior (sigma^2 = 0.5).
- ``clusters``: the used units hold 10 tight clusters (sigma^2 = 0.05) whose centres have covariance 0.95 I:
  second moments match the prior, the density has holes between the clusters.
``gaussian_kl(case, D)`` is the closed-form KL(q(z) || N(0, I)) of the Gaussian cases. ``model_from_codes`` builds
the same kind of model from any codes and prior.
"""
from __future__ import annotations

import math

import torch

from vaelab.analysis.adapters import TorchModelAdapter
from vaelab.data import Dataset
from vaelab.models.priors import Prior

CASES = ("prior-isotropic", "prior-collapsed", "anisotropic", "shell", "clusters")
NULL_CASES = ("prior-isotropic", "prior-collapsed")
IMAGE_SHAPE = (1, 8, 8)


def used_units(latent_dim: int) -> int:
    """How many units carry information in the synthetic cases: 8, or half of a smaller latent."""
    return min(8, max(1, latent_dim // 2))


def wide_directions(latent_dim: int) -> int:
    """How many directions the ``anisotropic`` case widens: 8, or D / 8 for a smaller latent."""
    return max(1, min(8, latent_dim // 8))


def anisotropic_sigma2(latent_dim: int, wide: float = 4.0) -> float:
    """sigma^2 such that a directions of aggregate variance ``wide`` and D - a of variance sigma^2 sum to D."""
    a = wide_directions(latent_dim)
    return (latent_dim - a * wide) / (latent_dim - a)


def codes(case: str, latent_dim: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """mu, logvar (n, D) of ``case`` (see the module docstring)."""
    if case not in CASES:
        raise ValueError(f"case {case!r} is not one of {', '.join(CASES)}")
    g = torch.Generator().manual_seed(seed)
    d, a = latent_dim, used_units(latent_dim)
    mu = torch.zeros(n, d)
    s2 = torch.ones(d)
    if case == "prior-isotropic":
        mu, s2 = math.sqrt(0.75) * torch.randn(n, d, generator=g), torch.full((d,), 0.25)
    elif case in ("prior-collapsed", "shell"):
        mu[:, :a] = math.sqrt(0.9) * torch.randn(n, a, generator=g)
        s2[:a] = 0.1
        if case == "shell":
            s2[a:] = 0.5
    elif case == "anisotropic":
        a, sigma2 = wide_directions(d), anisotropic_sigma2(d)
        basis, _ = torch.linalg.qr(torch.randn(d, a, generator=g))
        mu = (math.sqrt(4.0 - sigma2) * torch.randn(n, a, generator=g)) @ basis.T
        s2 = torch.full((d,), sigma2)
    else:  # clusters
        centres = torch.randn(10, a, generator=g).double()
        centres = centres - centres.mean(0)
        evals, evecs = torch.linalg.eigh(centres.T @ centres / 10)  # whitened: the centres' covariance is 0.95 I
        centres = (centres @ evecs / evals.sqrt() @ evecs.T * math.sqrt(0.95)).float()
        mu[:, :a] = centres[torch.randint(0, 10, (n,), generator=g)]
        s2[:a] = 0.05
    return mu, s2.log().expand(n, d).clone()


def gaussian_kl(case: str, latent_dim: int) -> float | None:
    """Closed-form KL(q(z) || N(0, I)) = 0.5 sum_i (lam_i - 1 - log lam_i) over q's covariance eigenvalues, for the
    cases whose aggregate posterior is Gaussian (None for ``clusters``)."""
    d, a = latent_dim, used_units(latent_dim)
    f = lambda lam: lam - 1 - math.log(lam)  # noqa: E731
    if case in NULL_CASES:
        return 0.0
    if case == "shell":
        return 0.5 * (d - a) * f(0.5)
    if case == "anisotropic":
        a, sigma2 = wide_directions(d), anisotropic_sigma2(d)
        return 0.5 * (a * f(4.0) + (d - a) * f(sigma2))
    return None


def model_and_data(case: str, latent_dim: int, n_train: int = 4000, n_test: int = 1000,
                   seed: int = 0) -> tuple[TorchModelAdapter, Dataset]:
    """A TorchModelAdapter over plain functions and a dataset whose images index their codes."""
    mu, logvar = codes(case, latent_dim, n_train + n_test, seed)
    return model_from_codes(mu, logvar, n_train, f"synthetic-{case}", seed)


def model_from_codes(mu: torch.Tensor, logvar: torch.Tensor, n_train: int, name: str = "synthetic", seed: int = 0,
                     prior: Prior | None = None) -> tuple[TorchModelAdapter, Dataset]:
    """The model whose encoder returns the given codes (N, D) for image n (the first n_train are the training set),
    with a linear decoder and ``prior`` (N(0, I) by default), and the dataset of those images."""
    n, latent_dim = mu.shape
    g = torch.Generator().manual_seed(seed + 1)
    images = torch.rand(n, *IMAGE_SHAPE, generator=g) * 0.5
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32) / n  # the index, exact in float32 for n < 2^24
    labels = torch.randint(0, 10, (n,), generator=g)
    w = torch.randn(latent_dim, math.prod(IMAGE_SHAPE), generator=g) / math.sqrt(latent_dim)

    def encoder(x):
        i = torch.round(x[:, 0, 0, 0] * n).long().clamp(0, n - 1)
        return mu[i], logvar[i]

    def decoder(z):
        return z @ w

    model = TorchModelAdapter(encoder, decoder, latent_dim, IMAGE_SHAPE, prior=prior)
    data = Dataset(name, images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])
    return model, data
