"""Posterior families q(z|x) and the Gaussian algebra the objectives use.

Latents are flat: mu and logvar are (B, D) whatever the latent shape; the decoder reshapes.
- diagonal:      N(mu, diag(sigma^2)), the encoder gives mu (B, D) and logvar (B, D)
- isotropic:     N(mu, sigma^2 I), a vector mean and one scalar variance per input (document 002)
- deterministic: z = mu, no sampling (document 003's "no sampling" autoencoder)
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 (from autocast) -> float32; float32 and float64 pass through unchanged."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def std_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dim: (..., D) -> (...)."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dim; broadcasts (K, B, D) against (B, D)."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def kl_std_normal_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per dimension, closed form: 0.5 (mu^2 + sigma^2 - log sigma^2 - 1). (B, D)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


@dataclass
class GaussianPosterior:
    """q(z|x) for a batch: mu (B, D); logvar (B, D), or None for the deterministic family."""

    mu: torch.Tensor
    logvar: torch.Tensor | None

    @property
    def deterministic(self) -> bool:
        return self.logvar is None

    def rsample(self, n_samples: int = 1, generator: "torch.Generator | torch.Tensor | None" = None) -> torch.Tensor:
        """Reparameterised samples z = mu + sigma * eps: (K, B, D). ``generator`` may instead be the standard normal
        noise itself, a (K, B, D) tensor drawn beforehand (every training step draws it so; the vectorised trainer
        draws each member's from that member's own generator, outside the stacked step)."""
        if self.logvar is None:
            return self.mu.unsqueeze(0).expand(n_samples, *self.mu.shape)
        if isinstance(generator, torch.Tensor):
            eps = generator
        else:
            eps = torch.randn((n_samples, *self.mu.shape), generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + torch.exp(0.5 * self.logvar) * eps

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x): (K, B, D) -> (K, B)."""
        if self.logvar is None:
            raise ValueError("a deterministic posterior has no density")
        return gaussian_log_prob(z, self.mu, self.logvar)

    def log_prob_of_noise(self, eps: torch.Tensor) -> torch.Tensor:
        """log q(z|x) at z = mu + sigma * eps, read off the noise: (K, B, D) -> (K, B).
        -(sum log sigma^2 + D log 2 pi + |eps|^2) / 2: one pass over eps, where :meth:`log_prob` makes several over z
        (and loses bits to z - mu where sigma << |mu|)."""
        return self._noise_log_normaliser - 0.5 * torch.linalg.vector_norm(eps, dim=-1).square()

    @functools.cached_property
    def _noise_log_normaliser(self) -> torch.Tensor:
        """-(sum log sigma^2 + D log 2 pi) / 2: (B,), computed once for all the chunks of noise one batch meets."""
        if self.logvar is None:
            raise ValueError("a deterministic posterior has no density")
        return -0.5 * (self.logvar.sum(-1) + self.mu.shape[-1] * LOG_2PI)

    def kl_per_dim(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per latent dimension: (B, D)."""
        if self.logvar is None:
            raise ValueError("a deterministic posterior has no KL to the prior")
        return kl_std_normal_per_dim(self.mu, self.logvar)


POSTERIORS = {  # the posterior families a config names, and what each is
    "diagonal": "N(mu, diag sigma^2), one variance per latent unit",
    "isotropic": "N(mu, sigma^2 I), a vector mean and one scalar variance per input (document 002)",
    "deterministic": "z = mu, no sampling (an autoencoder; document 003's quadratic penalty)",
}


class PosteriorHead(nn.Module):
    """Features -> GaussianPosterior. Vector features (B, F) use linear layers; spatial feature maps
    (B, F, s, s) use 1x1 convolutions to C latent channels, giving D = C*s*s."""

    def __init__(self, family: str, n_features: int, latent_dim: int, latent_channels: int | None = None):
        super().__init__()
        self.family = family
        self.spatial = latent_channels is not None
        out = latent_channels if self.spatial else latent_dim
        layer = (lambda f, o: nn.Conv2d(f, o, 1)) if self.spatial else nn.Linear
        self.mu = layer(n_features, out)
        if family == "diagonal":
            self.logvar = layer(n_features, out)
        elif family == "isotropic":
            self.logvar = nn.Linear(n_features, 1)  # one scalar log-variance per input
        elif family not in POSTERIORS:
            raise ValueError(f"posterior family {family!r} is not one of {', '.join(POSTERIORS)}")

    def forward(self, h: torch.Tensor) -> GaussianPosterior:
        # full precision out whatever the layers ran in (bf16 autocast): sampling, densities and KL stay exact
        mu = full_precision(self.mu(h).flatten(1))
        if self.family == "deterministic":
            return GaussianPosterior(mu, None)
        if self.family == "isotropic":
            pooled = h.mean(dim=(2, 3)) if self.spatial else h
            return GaussianPosterior(mu, full_precision(self.logvar(pooled)).expand_as(mu))
        return GaussianPosterior(mu, full_precision(self.logvar(h).flatten(1)))
