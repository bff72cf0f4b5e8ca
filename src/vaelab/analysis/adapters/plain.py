"""A model written in plain PyTorch, as the analyses see it.

:class:`TorchModelAdapter`: any pair of callables, ``encoder(x) -> (mu, logvar)`` (or ``mu`` alone for a
deterministic autoencoder) and ``decoder(z) -> likelihood parameters`` (logits, probabilities or means).

Every call is checked: a NaN, a wrong shape or a wrong dtype from ``encode`` or ``decode`` raises a
:class:`vaelab.errors.RunError` that names the call and what was expected.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from vaelab.errors import RunError
from vaelab.models.likelihoods import build_likelihood
from vaelab.models.posteriors import GaussianPosterior, full_precision
from vaelab.models.priors import Prior, StandardNormal

DECODER_OUTPUTS = ("logits", "probs", "mean")


def _check(name: str, t, expected_shape: tuple, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise RunError(f"{name} returned {type(t).__name__}; expected a tensor of shape {expected_shape} ({what})")
    if not t.is_floating_point():
        raise RunError(f"{name} returned dtype {t.dtype}; expected a floating-point tensor ({what})")
    if tuple(t.shape) != tuple(expected_shape):
        raise RunError(f"{name} returned shape {tuple(t.shape)}; expected {tuple(expected_shape)} ({what})")
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise RunError(f"{name} returned {bad} non-finite values (NaN or inf) in a tensor of shape {tuple(t.shape)}")
    return t


class TorchModelAdapter(nn.Module):
    """Wrap user callables as a :class:`vaelab.models.vae.LatentModel`.

    encoder: x (B, C, H, W) -> (mu, logvar) each (B, D), or mu (B, D) for a deterministic model.
    decoder: z (N, D) -> (N, C, H, W) (or (N, C*H*W)) parameters: ``decoder_output`` says whether they are
    Bernoulli logits, Bernoulli probabilities, or Gaussian means (with ``gaussian_std``). ``prior``: a
    :class:`vaelab.models.priors.Prior` over (N, D) latents, N(0, I) by default."""

    def __init__(self, encoder: Callable, decoder: Callable, latent_dim: int, image_shape: tuple[int, int, int],
                 likelihood: str = "bernoulli", decoder_output: str = "logits", gaussian_std: float = 1.0,
                 prior: Prior | None = None):
        super().__init__()
        if decoder_output not in DECODER_OUTPUTS:
            raise RunError(f"decoder_output {decoder_output!r} is not one of {', '.join(DECODER_OUTPUTS)}")
        if likelihood == "gaussian" and decoder_output != "mean":
            raise RunError("a gaussian likelihood needs decoder_output='mean'")
        self.encoder_fn, self.decoder_fn = encoder, decoder
        for i, part in enumerate((encoder, decoder)):
            if isinstance(part, nn.Module):
                self.add_module(("encoder", "decoder")[i], part)
        self.latent_shape = (int(latent_dim),)
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.decoder_output = decoder_output
        self.likelihood = build_likelihood(likelihood, self.image_shape, gaussian_std if likelihood == "gaussian" else None)
        self.prior = prior if prior is not None else StandardNormal(self.latent_dim)
        self.prior.bind(self.encode)

    def encode(self, x: torch.Tensor) -> GaussianPosterior:
        out = self.encoder_fn(x)
        b, d = x.shape[0], self.latent_dim
        if isinstance(out, tuple) or (isinstance(out, list) and all(isinstance(o, torch.Tensor) for o in out)):
            if len(out) != 2:
                raise RunError(f"encode returned {len(out)} values; expected (mu, logvar) or mu alone")
            mu = _check("encode (mu)", out[0], (b, d), "posterior means")
            logvar = _check("encode (logvar)", out[1], (b, d), "posterior log-variances")
            return GaussianPosterior(mu, logvar)
        return GaussianPosterior(_check("encode", out, (b, d), "posterior means of a deterministic encoder"), None)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        flat = z.reshape(-1, self.latent_dim)
        out = self.decoder_fn(flat)
        n = flat.shape[0]
        if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] == math.prod(self.image_shape):
            out = out.view(n, *self.image_shape)
        out = full_precision(_check("decode", out, (n, *self.image_shape), "likelihood parameters per pixel"))
        if self.decoder_output == "probs":  # (in float32 also under autocast, as vaelab's own decoders)
            p = out.clamp(1e-6, 1 - 1e-6)
            out = torch.log(p) - torch.log1p(-p)  # probabilities -> logits
        return out.view(*lead, *self.image_shape)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior.log_prob(z)

    def log_likelihood(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.likelihood.log_prob(x, params)
