"""Priors p(z) over flat latents z (..., D): the standard normal, the VampPrior and a learned Gaussian mixture.

A prior is a module of the model: its parameters (pseudo-inputs, mixture weights) train with the model, live in its
state dict and are swapped in by ``torch.func.functional_call`` like any other. Every prior has
- ``sample(n, generator) -> (n, D)`` (no gradient: a mixture's component pick is discrete);
- ``log_prob(z) -> (...)`` for z (..., D);
- ``kl(q, z) -> (B,)``: KL(q(z|x) || p(z)), in closed form where there is one (the standard normal), otherwise the
  Monte Carlo estimate (1/K) sum_k [log q(z_k|x) - log p(z_k)] over the samples z (K, B, D) that the objective
  drew for its reconstruction term (so the prior itself draws nothing);
- ``marginal(axes)``: the prior of z[..., axes], and ``describe()``: how results name it.

Mixtures (VampPrior, MixturePrior) share :class:`GaussianMixturePrior`:
    p(z) = sum_k pi_k N(z; m_k, diag v_k),   log p(z) = logsumexp_k [log pi_k + log N(z; m_k, diag v_k)].
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from vaelab.models.posteriors import LOG_2PI, GaussianPosterior, std_normal_log_prob

MIXTURE_CHUNK = 1 << 22  # values of z (and of the (rows, K) log densities) per chunk of log_prob


def _device(generator: torch.Generator | None, device, fallback: torch.device) -> torch.device:
    """Where samples are drawn: ``device``, else the generator's, else ``fallback``."""
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else fallback


class Prior(nn.Module):
    """The interface every prior follows (see the module docstring)."""

    name = "prior"
    description = ""  # how the config's help and the docs describe it
    is_standard_normal = False
    mixture = False  # takes K components (model.prior_components)

    @classmethod
    def from_config(cls, latent_dim: int, image_shape: tuple[int, int, int], n_components: int) -> "Prior":
        """The prior a config names, over D = ``latent_dim`` (``n_components``: K of a mixture)."""
        return cls(latent_dim)

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = int(latent_dim)

    def bind(self, encode: Callable[[torch.Tensor], GaussianPosterior]) -> None:
        """Called by the VAE with its own ``encode`` (the VampPrior reads its components through it)."""

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def kl(self, q: GaussianPosterior, z: torch.Tensor | None = None) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per input (B,): (1/K) sum_k log q(z_k|x) - log p(z_k) over z (K, B, D)."""
        if z is None:
            raise ValueError(f"the {self.name!r} prior has no closed-form KL; pass the samples z (K, B, D)")
        return (q.log_prob(z) - self.log_prob(z)).mean(0)

    def marginal(self, axes: torch.Tensor) -> "Prior":
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class StandardNormal(Prior):
    """p(z) = N(0, I): no parameters (the state dict of a standard-prior model is what it always was)."""

    name = "standard"
    description = "N(0, I)"
    is_standard_normal = True

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        device = _device(generator, device, torch.device("cpu"))
        return torch.randn((n, self.latent_dim), generator=generator, device=device)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return std_normal_log_prob(z)

    def kl_per_dim(self, q: GaussianPosterior) -> torch.Tensor:
        """KL(q(z_d|x) || N(0, 1)) per dimension, closed form: (B, D)."""
        return q.kl_per_dim()

    def kl(self, q: GaussianPosterior, z: torch.Tensor | None = None) -> torch.Tensor:
        """Closed form, whatever samples z are given: (B,)."""
        return self.kl_per_dim(q).sum(-1)

    def marginal(self, axes: torch.Tensor) -> "StandardNormal":
        return StandardNormal(len(axes))

    def describe(self) -> str:
        return "N(0, I)"


def mixture_log_prob(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor,
                     log_weights: torch.Tensor) -> torch.Tensor:
    """log sum_k pi_k N(z; m_k, diag v_k): z (..., D), means and logvars (K, D), log_weights (K,) -> (...).

    The quadratics q_k = sum_d (z_d - m_kd)^2 / v_kd = y^2 . (1/v_k) - 2 y . (n_k / v_k) + n_k^2 . (1/v_k), with
    y = z - c and n_k = m_k - c centred on the components' mean c, are matrix products, so no (rows, K, D) tensor is
    ever formed (D runs to 65,536); they are taken in float32 (float64 for float64 z; never in autocast's bf16): a
    VampPrior training step runs 1.3x (latent 200) to 1.8x (latent 800) faster than in float64
    (benchmarks/vamp_step.py). The expansion's terms are much larger than q_k, so its
    float32 rounding is tenths of a nat at D = 16,384: each row's dominant component is therefore summed directly,
    sum_d (y_d - n_kd)^2 / v_kd, and only the others (which weigh less) keep the expansion's rounding
    (tests/test_priors.py, against float64). Rows of z go in chunks of about MIXTURE_CHUNK values."""
    lead, d = z.shape[:-1], z.shape[-1]
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    with torch.autocast(z.device.type, enabled=False):
        m, logv = means.to(dtype), logvars.to(dtype)
        centre = m.mean(0).detach()
        n = m - centre
        prec = torch.exp(-logv)  # (K, D)
        norm = log_weights.to(dtype) - 0.5 * (logv.sum(-1) + d * LOG_2PI)  # (K,)
        const = norm - 0.5 * (n.pow(2) * prec).sum(-1)
        rows = max(1, MIXTURE_CHUNK // (d + m.shape[0]))
        out = []
        for y in (chunk.to(dtype) - centre for chunk in z.reshape(-1, d).split(rows)):
            a = const - 0.5 * (y.pow(2) @ prec.T - 2 * y @ (n * prec).T)  # (rows, K)
            top = a.detach().argmax(-1)  # (rows,)
            direct = norm[top] - 0.5 * ((y - n[top]).pow(2) * prec[top]).sum(-1)
            out.append(torch.logsumexp(a.scatter(-1, top[:, None], direct[:, None]), dim=-1))
    return torch.cat(out).view(lead).to(z.dtype)


class GaussianMixturePrior(Prior):
    """A prior whose ``components()`` are K diagonal Gaussians: means (K, D), logvars (K, D), log weights (K,)."""

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def n_components(self) -> int:
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return mixture_log_prob(z, *self.components())

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """k ~ Categorical(pi), then z ~ N(m_k, diag v_k): (n, D), on ``device`` (default: the generator's)."""
        means, logvars, log_weights = self.components()
        device = _device(generator, device, means.device)
        pick = torch.multinomial(torch.softmax(log_weights.double(), 0).to(device), n, replacement=True,
                                 generator=generator)
        q = GaussianPosterior(means.to(device)[pick], logvars.to(device)[pick])
        return q.rsample(1, generator)[0]

    def marginal(self, axes: torch.Tensor) -> "MixturePrior":
        """The mixture of the components' marginals on ``axes`` (a frozen copy: its parameters do not train)."""
        means, logvars, log_weights = (t.detach() for t in self.components())
        axes = axes.to(means.device)
        return MixturePrior.from_components(means[:, axes], logvars[:, axes], log_weights)

    def describe(self) -> str:
        return f"model prior ({self.name}, K={self.n_components})"


class VampPrior(GaussianMixturePrior):
    """The VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z | u_k), the model's own posterior at K learned
    pseudo-inputs u_k (K, C, H, W).

    u = sigmoid(a) keeps the pseudo-inputs in the pixel range [0, 1]; the parameters a start at N(-0.05, 0.01^2),
    the paper code's default (so u ~ 0.49 at first: the components start together and separate as they learn).
    The encoder is not a submodule of the prior: the VAE hands over its ``encode`` by :meth:`bind`, so the encoder's
    weights are registered (and swapped by functional_call) once, as the model's."""

    name = "vamp"
    description = "VampPrior: a mixture of the posteriors of K learned pseudo-inputs"
    mixture = True

    @classmethod
    def from_config(cls, latent_dim: int, image_shape: tuple[int, int, int], n_components: int) -> "VampPrior":
        return cls(n_components, image_shape, latent_dim)

    def __init__(self, n_components: int, image_shape: tuple[int, int, int], latent_dim: int,
                 init_mean: float = -0.05, init_std: float = 0.01):
        super().__init__(latent_dim)
        self.pseudo_logits = nn.Parameter(init_mean + init_std * torch.randn(n_components, *image_shape))
        self._encode: Callable[[torch.Tensor], GaussianPosterior] | None = None

    def bind(self, encode: Callable[[torch.Tensor], GaussianPosterior]) -> None:
        self._encode = encode  # a bound method, not a module: nothing is registered twice

    @property
    def n_components(self) -> int:
        return self.pseudo_logits.shape[0]

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """u (K, C, H, W), pixels in [0, 1]."""
        return torch.sigmoid(self.pseudo_logits)

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._encode is None:
            raise RuntimeError("the VampPrior is not bound to an encoder; build it with its VAE")
        q = self._encode(self.pseudo_inputs)
        if q.logvar is None:
            raise ValueError("the VampPrior needs an encoder with a variance (not a deterministic posterior)")
        k = self.n_components
        return q.mu, q.logvar, torch.full((k,), -math.log(k), dtype=q.mu.dtype, device=q.mu.device)


class MixturePrior(GaussianMixturePrior):
    """A learned mixture of K diagonal Gaussians: means (K, D) from N(0, I), log-variances 0, equal weights at first;
    pi = softmax(logits)."""

    name = "mog"
    description = "a learned mixture of K diagonal Gaussians"
    mixture = True

    @classmethod
    def from_config(cls, latent_dim: int, image_shape: tuple[int, int, int], n_components: int) -> "MixturePrior":
        return cls(n_components, latent_dim)

    def __init__(self, n_components: int, latent_dim: int, init: tuple[torch.Tensor, ...] | None = None):
        super().__init__(latent_dim)
        if init is None:
            init = (torch.randn(n_components, latent_dim), torch.zeros(n_components, latent_dim), torch.zeros(n_components))
        self.means, self.logvars, self.logits = (nn.Parameter(t) for t in init)

    @classmethod
    def from_components(cls, means: torch.Tensor, logvars: torch.Tensor, log_weights: torch.Tensor) -> "MixturePrior":
        """A frozen mixture with these components (K, D), (K, D), (K,) (nothing is drawn)."""
        return cls(*means.shape, init=(means, logvars, log_weights)).requires_grad_(False)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.means, self.logvars, torch.log_softmax(self.logits, 0)


PRIORS: dict[str, type[Prior]] = {p.name: p for p in (StandardNormal, VampPrior, MixturePrior)}  # config names


def build_prior(name: str, latent_dim: int, image_shape: tuple[int, int, int], n_components: int = 500) -> Prior:
    """The prior a config's ``model.prior`` names."""
    if name not in PRIORS:
        raise ValueError(f"prior {name!r} is not one of {', '.join(PRIORS)}")
    return PRIORS[name].from_config(latent_dim, image_shape, n_components)


def prior_label(description: str) -> str:
    """A result's prior description ('N(0, I)', 'model prior (vamp, K=500)') as figures and sentences name it."""
    return description if description.startswith("model prior") else f"prior {description}"


def prior_of(model) -> Prior:
    """The model's prior; N(0, I) for a model that names none (a user model predating priors)."""
    prior = getattr(model, "prior", None)
    if prior is not None:
        return prior
    return StandardNormal(math.prod(model.latent_shape))
