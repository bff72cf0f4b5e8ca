"""What every analysis shares: the result type, batched encoding and decoding, seeded generators."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

DEFAULT_BATCH = 1000


@dataclass
class AnalysisResult:
    """One analysis's output: JSON-able ``data``, the ``params`` it ran with, and arrays (images, codes) kept out
    of the JSON (saved beside it as .npz) for figures and reports."""

    name: str
    params: dict[str, Any]
    data: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    requested: dict[str, Any] = field(default_factory=dict)  # the parameters the caller passed (for re-use checks)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time: {"compute": s, "figures": s}

    def to_json(self) -> dict[str, Any]:
        return {"analysis": self.name, "params": self.params, "requested": self.requested, "source": self.source,
                "result": self.data, "figures": self.figures, "arrays": sorted(self.arrays), "seconds": self.seconds}

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


def blas_threads(limit: int | None = None):
    """A context that holds NumPy's and SciPy's BLAS to ``limit`` threads (default: torch's thread count).

    Their OpenBLAS otherwise starts one thread per core whatever torch was told: in a study's worker (one torch
    thread beside other workers) its threads fight for the busy cores, and a mixture fit's small products ran
    hundreds of times slower (3.2 s against 4 ms for one M-step of 10 components on 10,000 x 20 codes)."""
    return threadpool_limits(limits=limit or torch.get_num_threads(), user_api="blas")


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


@torch.no_grad()
def encode_all(model, x: torch.Tensor, batch_size: int = DEFAULT_BATCH) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Posterior parameters of every image: x (N, C, H, W) -> mu (N, D), logvar (N, D) or None (deterministic).

    The outputs are filled in place batch by batch (float32), so the peak is the result itself, not twice it."""
    device = model_device(model)
    mu = logvar = None
    for i in range(0, x.shape[0], batch_size):
        q = model.encode(x[i:i + batch_size].to(device))
        if mu is None:
            mu = torch.empty((x.shape[0], q.mu.shape[1]), dtype=torch.float32, device=q.mu.device)
            if q.logvar is not None:
                logvar = torch.empty_like(mu)
        mu[i:i + q.mu.shape[0]] = q.mu
        if logvar is not None:
            logvar[i:i + q.mu.shape[0]] = q.logvar
    if mu is None:
        raise ValueError("encode_all needs at least one image")
    return mu, logvar


@torch.no_grad()
def decode_means(model, z: torch.Tensor, batch_size: int = DEFAULT_BATCH) -> torch.Tensor:
    """Likelihood means (images in [0, 1]) of latents z (N, D): (N, C, H, W) on the CPU."""
    device = model_device(model)
    out = [model.likelihood.mean(model.decode(z[i:i + batch_size].to(device))).float().cpu()
           for i in range(0, z.shape[0], batch_size)]
    return torch.cat(out).clamp(0, 1)


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def subsample(n_total: int, n: int | None, seed: int) -> torch.Tensor:
    """Indices of a seeded random subset of size min(n, n_total) (all, in order, when n is None or too big)."""
    if n is None or n >= n_total:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=generator(seed))[:n].sort().values


def to_list(t, digits: int = 6) -> list:
    """A tensor/array as a JSON list of rounded floats."""
    a = np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=np.float64)
    return [round(float(v), digits) for v in a.ravel()]
