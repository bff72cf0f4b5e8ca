"""Training objectives, all in log space. Each returns per-example terms; the loss is the negative mean bound.

With log importance weights  log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x),  z_k ~ q(z|x), k = 1..K:
- ELBO (Kingma & Welling 2014):  E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)), KL in closed form.
- IWAE (Burda et al. 2016):      log (1/K) sum_k w_k.
- VR_alpha (Li & Turner 2016):   1/(1 - alpha) log (1/K) sum_k w_k^(1 - alpha); alpha = 1 is the (Monte Carlo) ELBO,
                                 alpha = 0 the IWAE bound. Its gradient, by autograd on this estimator, is
                                 sum_k w_hat_k grad log w_k with w_hat = softmax((1 - alpha) log w): the paper's.
- VR-max (alpha -> -inf):        max_k log w_k.
- Deterministic AE + quadratic penalty (document 003): z = mu; -log p(x|mu) + penalty * 0.5 ||mu||^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaelab.errors import ConfigError
from vaelab.models.posteriors import GaussianPosterior


@dataclass
class Terms:
    """Per-example quantities of one batch, each (B,), plus the posterior for diagnostics."""

    bound: torch.Tensor  # the objective's lower bound on log p(x) (or the negative penalised loss)
    recon: torch.Tensor  # E_q log p(x|z) (Monte Carlo over the K samples)
    kl: torch.Tensor  # closed-form KL(q(z|x) || p(z)); the quadratic penalty for the deterministic AE
    posterior: GaussianPosterior

    @property
    def loss(self) -> torch.Tensor:
        return -self.bound.mean()


def log_weights(model, x: torch.Tensor, n_samples: int, generator: torch.Generator | None = None):
    """log w (K, B), log p(x|z) (K, B) and q(z|x) for K reparameterised samples per input."""
    q = model.encode(x)
    z = q.rsample(n_samples, generator)  # (K, B, D)
    log_px_z = model.log_likelihood(x, model.decode(z))  # (K, B)
    log_w = log_px_z + model.log_prior(z) - q.log_prob(z)
    return log_w, log_px_z, q


def renyi_from_log_weights(log_w: torch.Tensor, alpha: float) -> torch.Tensor:
    """VR_alpha estimate from log weights (K, B) -> (B,). alpha = 1 gives mean log w, alpha = -inf max log w."""
    k = log_w.shape[0]
    if alpha == 1.0:
        return log_w.mean(0)
    if alpha == -math.inf:
        return log_w.max(0).values
    return (torch.logsumexp((1.0 - alpha) * log_w, dim=0) - math.log(k)) / (1.0 - alpha)


def elbo(model, x, *, samples: int = 1, beta: float = 1.0, generator=None) -> Terms:
    q = model.encode(x)
    z = q.rsample(samples, generator)
    recon = model.log_likelihood(x, model.decode(z)).mean(0)
    kl = q.kl_per_dim().sum(-1)
    return Terms(recon - beta * kl, recon, kl, q)


def renyi(model, x, *, alpha: float, samples: int, generator=None) -> Terms:
    log_w, log_px_z, q = log_weights(model, x, samples, generator)
    return Terms(renyi_from_log_weights(log_w, alpha), log_px_z.mean(0), q.kl_per_dim().sum(-1).detach(), q)


def iwae(model, x, *, samples: int, generator=None) -> Terms:
    return renyi(model, x, alpha=0.0, samples=samples, generator=generator)


def vr_max(model, x, *, samples: int, generator=None) -> Terms:
    return renyi(model, x, alpha=-math.inf, samples=samples, generator=generator)


def deterministic(model, x, *, penalty: float = 1.0, generator=None) -> Terms:
    q = model.encode(x)
    recon = model.log_likelihood(x, model.decode(q.mu))
    quad = 0.5 * q.mu.pow(2).sum(-1)
    return Terms(recon - penalty * quad, recon, quad, q)


class Objective:
    """The configured objective as a callable: ``objective(model, x, generator, epoch_progress) -> Terms``.

    ``epoch_progress`` (epochs done, fractional) drives the ELBO's linear KL warm-up."""

    def __init__(self, config):
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    def beta_at(self, epoch_progress: float) -> float:
        c = self.config
        if c.warmup_epochs <= 0:
            return c.beta
        return c.beta * min(1.0, epoch_progress / c.warmup_epochs)

    def __call__(self, model, x, generator=None, epoch_progress: float = math.inf) -> Terms:
        c = self.config
        if c.name == "elbo":
            return elbo(model, x, samples=c.samples, beta=self.beta_at(epoch_progress), generator=generator)
        if c.name == "iwae":
            return iwae(model, x, samples=c.samples, generator=generator)
        if c.name == "renyi":
            return renyi(model, x, alpha=c.alpha, samples=c.samples, generator=generator)
        if c.name == "vr-max":
            return vr_max(model, x, samples=c.samples, generator=generator)
        if c.name == "deterministic":
            return deterministic(model, x, penalty=c.penalty, generator=generator)
        raise ConfigError(f"objective {c.name!r} is not one of elbo, iwae, renyi, vr-max, deterministic")
