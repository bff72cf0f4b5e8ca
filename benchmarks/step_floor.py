"""What a training step of an MLP VAE cannot avoid, each part timed alone at the model's shapes (used by
step_overhead.py and ensemble.py):

- its matrix products: forward x W^T of every Linear layer, backward dY^T x of every layer and dY W of every layer
  but the first (the images need no gradient), in the training precision; for M stacked members, batched products;
- Adam's update: PyTorch's fused Adam over the model's parameters (float32 master weights, grads and two moments:
  it reads and writes 28 bytes per parameter, whatever the products cost);
- bf16 autocast's casts of the parameters: the weights to bf16 for the products and their bf16 gradients back to
  float32 for Adam (12 bytes per parameter), only when training in bf16.

Their sum is the floor of a step: no implementation with float32 Adam under autocast beats it on this machine, since
everything else (the reparameterisation, the likelihood, the activations, autograd and the dispatch of every op)
comes on top.
"""
from __future__ import annotations

import statistics
import time

import torch


def _median_seconds(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def linear_layers(model: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


def gemm_seconds(model: torch.nn.Module, batch: int, dtype: torch.dtype, members: int = 1,
                 repeats: int = 30) -> tuple[float, float]:
    """(median seconds, GFLOP) of one step's matrix products at the model's Linear shapes in ``dtype``, for
    ``members`` stacked copies (batched products when more than one)."""
    layers = linear_layers(model)
    ops, flop = [], 0
    for i, m in enumerate(layers):
        x = torch.randn(members, batch, m.in_features, dtype=dtype)
        w = torch.randn(members, m.in_features, m.out_features, dtype=dtype)
        dy = torch.randn(members, batch, m.out_features, dtype=dtype)
        if members == 1:
            x, w, dy = x[0], w[0], dy[0]
        ops.append((x, w, dy, i > 0))
        flop += 2 * members * batch * m.in_features * m.out_features * (3 if i > 0 else 2)

    def step() -> None:
        for x, w, dy, input_grad in ops:
            x @ w  # forward
            x.transpose(-1, -2) @ dy  # the weight's gradient
            if input_grad:
                dy @ w.transpose(-1, -2)  # the input's gradient

    return _median_seconds(step, repeats), flop / 1e9


def _stacked_parameters(model: torch.nn.Module, members: int) -> list[torch.nn.Parameter]:
    params = [torch.nn.Parameter(torch.randn(members, *p.shape)) for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def adam_seconds(model: torch.nn.Module, members: int = 1, repeats: int = 30) -> float:
    """Median seconds of one fused Adam step over ``members`` stacked copies of the model's parameters."""
    from vaelab.trainer import make_optimizer

    holder = torch.nn.ParameterList(_stacked_parameters(model, members))
    optimizer = make_optimizer(holder, 1e-3)
    return _median_seconds(optimizer.step, repeats)


def cast_seconds(model: torch.nn.Module, members: int = 1, repeats: int = 30) -> float:
    """Median seconds of bf16 autocast's casts of one step: every parameter to bf16, and a bf16 gradient of each
    back to float32."""
    params = _stacked_parameters(model, members)
    grads = [p.grad.to(torch.bfloat16) for p in params]

    def casts() -> None:
        for p, g in zip(params, grads):
            p.detach().to(torch.bfloat16)
            g.float()

    return _median_seconds(casts, repeats)


def floor_parts(model: torch.nn.Module, batch: int, precision: str, members: int = 1) -> dict:
    """Milliseconds of each unavoidable part of a step of ``members`` stacked copies, their sum and the GFLOP."""
    bf16 = precision == "bf16"
    gemm, gflop = gemm_seconds(model, batch, torch.bfloat16 if bf16 else torch.float32, members)
    parts = {"products_ms": 1e3 * gemm, "adam_ms": 1e3 * adam_seconds(model, members),
             "casts_ms": 1e3 * cast_seconds(model, members) if bf16 else 0.0}
    return {**parts, "floor_ms": sum(parts.values()), "gflop": gflop}
