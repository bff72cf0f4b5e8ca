"""Likelihoods p(x|z) over pixels. The decoder outputs one parameter per pixel, shape (..., C, H, W);
``log_prob`` sums over pixels and broadcasts x (B, C, H, W) against parameters (K, B, C, H, W)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vaelab.models.posteriors import LOG_2PI


def _sum_pixels(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(-3).sum(-1)


def is_binary(x: torch.Tensor) -> bool:
    """True when every pixel is exactly 0 or 1 (binarized data); one pass over x (B, C, H, W), not over samples."""
    return bool(((x == 0) | (x == 1)).all())


class Bernoulli(nn.Module):
    """p(x|z) = prod Bernoulli(x; sigmoid(logits)); log p = x*l - softplus(l) (= -BCE with logits, also for grey x)."""

    name = "bernoulli"
    description = "Bernoulli over pixels, the decoder outputs logits"

    @classmethod
    def from_config(cls, image_shape: tuple[int, int, int], gaussian_std: float | None) -> nn.Module:
        return cls()
    assume_binary: bool | None = None  # set when the pixel mode is known (no data-dependent check, e.g. under vmap)

    def log_prob(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        binary = self.assume_binary if self.assume_binary is not None else is_binary(x)
        if binary:  # log sigmoid(+-l): two passes over the (K, B, C, H, W) logits instead of three
            return _sum_pixels(F.logsigmoid(logits * (2 * x - 1)))
        return _sum_pixels(x * logits - F.softplus(logits))

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(logits), generator=generator)


def continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) in logits eta:
    C = 2 atanh(1 - 2 lambda) / (1 - 2 lambda) = eta / tanh(eta / 2); near 0, log C = log 2 + eta^2 / 12."""
    small = logits.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = torch.log(safe.abs()) - torch.log(torch.tanh(safe.abs() / 2))
    taylor = math.log(2.0) + logits.pow(2) / 12
    return torch.where(small, taylor, exact)


class ContinuousBernoulli(Bernoulli):
    """The Bernoulli kernel normalised on [0, 1]: a proper density for grey pixels."""

    name = "continuous-bernoulli"
    description = "the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) for grey values in [0, 1]"

    def log_prob(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return _sum_pixels(x * logits - F.softplus(logits) + continuous_bernoulli_log_norm(logits))

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.distributions.ContinuousBernoulli(logits=logits).mean

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        lam = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
        u = torch.rand(lam.shape, generator=generator, device=lam.device, dtype=lam.dtype)
        # inverse CDF: x = log(1 + u (2 lambda - 1) / (1 - lambda)) / log(lambda / (1 - lambda))
        x = torch.log1p(u * (2 * lam - 1) / (1 - lam)) / torch.log(lam / (1 - lam))
        return torch.where((lam - 0.5).abs() < 1e-4, u, x)


class Gaussian(nn.Module):
    """p(x|z) = N(x; mean, sigma^2) per pixel; sigma fixed, or learned per pixel (a parameter of the model)."""

    name = "gaussian"
    description = "Gaussian over pixels, the decoder outputs means; gaussian_std fixed, or learned per pixel if unset"

    @classmethod
    def from_config(cls, image_shape: tuple[int, int, int], gaussian_std: float | None) -> nn.Module:
        return cls(image_shape, gaussian_std)

    def __init__(self, image_shape: tuple[int, int, int], std: float | None = None):
        super().__init__()
        if std is None:
            self.log_std = nn.Parameter(torch.zeros(image_shape))
        else:
            self.register_buffer("log_std", torch.full(image_shape, math.log(std)))

    def log_prob(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        return _sum_pixels(-0.5 * (x - mean).pow(2) * torch.exp(-2 * self.log_std) - self.log_std - 0.5 * LOG_2PI)

    def mean(self, mean: torch.Tensor) -> torch.Tensor:
        return mean

    def sample(self, mean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(self.log_std) * eps


LIKELIHOODS: dict[str, type[nn.Module]] = {c.name: c for c in (Bernoulli, Gaussian, ContinuousBernoulli)}  # config names


def build_likelihood(name: str, image_shape: tuple[int, int, int], gaussian_std: float | None = None) -> nn.Module:
    if name not in LIKELIHOODS:
        raise ValueError(f"likelihood {name!r} is not one of {', '.join(LIKELIHOODS)}")
    return LIKELIHOODS[name].from_config(image_shape, gaussian_std)
