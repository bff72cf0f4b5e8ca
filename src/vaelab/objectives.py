"""Training objectives, all in log space. Each returns per-example terms; the loss is the negative mean bound.

With log importance weights  log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x),  z_k ~ q(z|x), k = 1..K:
- ELBO (Kingma & Welling 2014):  E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)), the KL from the model's prior:
                                 closed form for N(0, I), else Monte Carlo over the reconstruction's K samples.
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
from typing import Callable

import torch

from vaelab.errors import ConfigError
from vaelab.models.posteriors import GaussianPosterior


@dataclass
class Terms:
    """Per-example quantities of one batch, each (B,), plus the posterior for diagnostics."""

    bound: torch.Tensor  # the objective's lower bound on log p(x) (or the negative penalised loss)
    recon: torch.Tensor  # E_q log p(x|z) (Monte Carlo over the K samples)
    kl: torch.Tensor  # KL(q(z|x) || p(z)) by the model's prior (see Prior.kl); the quadratic penalty for the deterministic AE
    posterior: GaussianPosterior

    @property
    def loss(self) -> torch.Tensor:
        return -self.bound.mean()


def _samples(model, x: torch.Tensor, n_samples: int, generator):
    """q(z|x), K reparameterised samples z (K, B, D) and log p(x|z) (K, B)."""
    q = model.encode(x)
    z = q.rsample(n_samples, generator)
    return q, z, model.log_likelihood(x, model.decode(z))


def _log_weights(model, x: torch.Tensor, n_samples: int, generator):
    """log w (K, B), log p(x|z) (K, B), q(z|x) and the samples z (K, B, D)."""
    q, z, log_px_z = _samples(model, x, n_samples, generator)
    return log_px_z + model.log_prior(z) - q.log_prob(z), log_px_z, q, z


def log_weights(model, x: torch.Tensor, n_samples: int, generator: torch.Generator | None = None):
    """log w (K, B), log p(x|z) (K, B) and q(z|x) for K reparameterised samples per input."""
    return _log_weights(model, x, n_samples, generator)[:3]


def renyi_from_log_weights(log_w: torch.Tensor, alpha: float) -> torch.Tensor:
    """VR_alpha estimate from log weights (K, B) -> (B,). alpha = 1 gives mean log w, alpha = -inf max log w."""
    k = log_w.shape[0]
    if alpha == 1.0:
        return log_w.mean(0)
    if alpha == -math.inf:
        return log_w.max(0).values
    return (torch.logsumexp((1.0 - alpha) * log_w, dim=0) - math.log(k)) / (1.0 - alpha)


def elbo(model, x, *, samples: int = 1, beta: float = 1.0, generator=None) -> Terms:
    q, z, log_px_z = _samples(model, x, samples, generator)
    recon = log_px_z.mean(0)
    kl = model.prior.kl(q, z)  # the same samples as the reconstruction term
    return Terms(recon - beta * kl, recon, kl, q)


def renyi(model, x, *, alpha: float, samples: int, generator=None) -> Terms:
    log_w, log_px_z, q, z = _log_weights(model, x, samples, generator)
    return Terms(renyi_from_log_weights(log_w, alpha), log_px_z.mean(0), model.prior.kl(q, z).detach(), q)


def iwae(model, x, *, samples: int, generator=None) -> Terms:
    return renyi(model, x, alpha=0.0, samples=samples, generator=generator)


def vr_max(model, x, *, samples: int, generator=None) -> Terms:
    return renyi(model, x, alpha=-math.inf, samples=samples, generator=generator)


def deterministic(model, x, *, penalty: float = 1.0, generator=None) -> Terms:
    q = model.encode(x)
    recon = model.log_likelihood(x, model.decode(q.mu))
    quad = 0.5 * q.mu.pow(2).sum(-1)
    return Terms(recon - penalty * quad, recon, quad, q)


Bound = Callable[..., Terms]  # (model, x, config, beta, generator) -> Terms; config is the run's ObjectiveConfig


@dataclass(frozen=True)
class ObjectiveKind:
    """One objective, declared once: the config, the CLI's choices and the trainer read it.

    ``options``: the ObjectiveConfig fields it reads besides ``samples`` (any other that is set is an error);
    ``samples``: whether it draws K latent samples (a deterministic objective takes exactly one)."""

    name: str
    description: str
    bound: Bound
    options: tuple[str, ...] = ()
    samples: bool = True


OBJECTIVES: dict[str, ObjectiveKind] = {o.name: o for o in (
    ObjectiveKind("elbo", "the ELBO, E_q[log p(x|z)] - beta KL(q || p), with an optional linear KL warm-up",
                  lambda m, x, c, beta, g: elbo(m, x, samples=c.samples, beta=beta, generator=g),
                  options=("beta", "warmup_epochs")),
    ObjectiveKind("iwae", "the IWAE bound, log (1/K) sum_k w_k",
                  lambda m, x, c, beta, g: iwae(m, x, samples=c.samples, generator=g)),
    ObjectiveKind("renyi", "the Renyi VR_alpha bound (needs alpha; 1 = ELBO, 0 = IWAE)",
                  lambda m, x, c, beta, g: renyi(m, x, alpha=c.alpha, samples=c.samples, generator=g),
                  options=("alpha",)),
    ObjectiveKind("vr-max", "VR-max, max_k log w_k (alpha -> -inf)",
                  lambda m, x, c, beta, g: vr_max(m, x, samples=c.samples, generator=g)),
    ObjectiveKind("deterministic", "a deterministic autoencoder, z = mu, with the quadratic penalty 0.5 ||mu||^2",
                  lambda m, x, c, beta, g: deterministic(m, x, penalty=c.penalty, generator=g),
                  options=("penalty",), samples=False),
)}


class Objective:
    """The configured objective as a callable: ``objective(model, x, generator, epoch_progress) -> Terms``.

    ``epoch_progress`` (epochs done, fractional) drives the ELBO's linear KL warm-up."""

    def __init__(self, config):
        if config.name not in OBJECTIVES:
            raise ConfigError(f"objective {config.name!r} is not one of {', '.join(OBJECTIVES)}")
        self.config = config
        self.kind = OBJECTIVES[config.name]
        self.bound = self.kind.bound

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def weighs_kl(self) -> bool:
        """Whether beta means anything to this objective (the ELBO's KL weight)."""
        return "beta" in self.kind.options

    def beta_at(self, epoch_progress: float) -> float:
        c = self.config
        if c.warmup_epochs <= 0:
            return c.beta
        return c.beta * min(1.0, epoch_progress / c.warmup_epochs)

    def __call__(self, model, x, generator=None, epoch_progress: float = math.inf) -> Terms:
        return self.bound(model, x, self.config, self.beta_at(epoch_progress), generator)
