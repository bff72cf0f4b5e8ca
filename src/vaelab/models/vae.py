"""The VAE: an encoder body + posterior head, a decoder, a likelihood, and a prior (N(0, I) unless the config
names another; vaelab.models.priors).

This is the model interface every analysis uses (see :class:`LatentModel`): ``encode``, ``decode``, the three
log densities, the prior, and the latent shape.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from vaelab.models.posteriors import GaussianPosterior, PosteriorHead, full_precision
from vaelab.models.priors import Prior, StandardNormal


@runtime_checkable
class LatentModel(Protocol):
    """What an analysis needs from any model, vaelab's or not."""

    latent_shape: tuple[int, ...]
    image_shape: tuple[int, int, int]
    prior: Prior

    def encode(self, x: torch.Tensor) -> GaussianPosterior: ...
    def decode(self, z: torch.Tensor) -> torch.Tensor: ...
    def log_prior(self, z: torch.Tensor) -> torch.Tensor: ...
    def log_likelihood(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor: ...


class VAE(nn.Module):
    def __init__(self, encoder: nn.Module, head: PosteriorHead, decoder: nn.Module, likelihood: nn.Module,
                 image_shape: tuple[int, int, int], latent_shape: tuple[int, ...], prior: Prior | None = None):
        super().__init__()
        self.encoder, self.head, self.decoder, self.likelihood = encoder, head, decoder, likelihood
        self.image_shape = tuple(image_shape)
        self.latent_shape = tuple(latent_shape)
        self.latent_dim = math.prod(latent_shape)
        self.prior = prior if prior is not None else StandardNormal(self.latent_dim)
        self.prior.bind(self.encode)

    @property
    def posterior_family(self) -> str:
        return self.head.family

    def encode(self, x: torch.Tensor) -> GaussianPosterior:
        """x (B, C, H, W) -> q(z|x) with mu, logvar of shape (B, D)."""
        return self.head(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., D) -> likelihood parameters (..., C, H, W) (logits for Bernoulli families, means for Gaussian)."""
        lead = z.shape[:-1]
        # full precision out (a no-op without autocast): the log-likelihood sums hundreds of pixels
        return full_precision(self.decoder(z.reshape(-1, self.latent_dim)).view(*lead, *self.image_shape))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) under the model's prior: (..., D) -> (...)."""
        return self.prior.log_prob(z)

    def log_likelihood(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x|z) from decoder parameters: x (B, C, H, W), params (..., B, C, H, W) -> (..., B)."""
        return self.likelihood.log_prob(x, params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean reconstruction from the posterior mean: (B, C, H, W)."""
        return self.reconstruct(x)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decode(self.encode(x).mu))

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Likelihood means of n prior samples: (n, C, H, W)."""
        device = next(self.parameters()).device
        return self.likelihood.mean(self.decode(self.prior.sample(n, generator, device)))
