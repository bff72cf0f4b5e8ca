"""A training step against its own matrix products, captured from the step and replayed alone (speed issue, target
2: the step costs at most 1.5x its products).

step_overhead.py times products at the model's Linear shapes in one layout (harness.floor_parts); this script
records the products a real step makes (every aten mm / addmm / bmm / baddbmm with its shapes and strides, through a
TorchDispatchMode), then times that list replayed on fresh tensors of the same shapes and strides, alternating with
the step itself in one process so both see the same load. The step is vaelab's: the model's ELBO on a batch of binarized images (the
likelihood told that the pixels are binary, as the trainer tells it), zero_grad, backward, PyTorch's fused Adam.
The trainer's data handling and bookkeeping are left out. Reports medians over --repeats rounds of --steps each,
the ratio, the median and quartiles of each round's ratio (its step against the products timed next to it), and the
CPU's flags.

    python benchmarks/step_replay.py [--threads 2] [--models pythae-default,doc002-200] [--repeats 5] [--steps 100]
"""
from __future__ import annotations

import harness
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import vaelab
from vaelab.models.build import build_model
from vaelab.objectives import elbo
from vaelab.precision import gemm_rates, linear_shapes
from vaelab.trainer import make_optimizer

PRODUCTS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
            torch.ops.aten.baddbmm.default}


class CaptureProducts(TorchDispatchMode):
    """Records each matrix product as (op, args): tensors replaced by fresh ones of the same shape and strides."""

    def __init__(self):
        super().__init__()
        self.calls: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in PRODUCTS:
            fresh = [torch.empty_strided(a.shape, a.stride(), dtype=a.dtype).normal_() if isinstance(a, torch.Tensor)
                     else a for a in args]
            self.calls.append((func, fresh, dict(kwargs)))
        return func(*args, **kwargs)


def main() -> None:
    ap = harness.parser(__doc__, "step_replay", repeats=5, threads=2)
    ap.add_argument("--models", default=harness.DEFAULT_MODELS, help=f"some of {', '.join(harness.MODELS)}")
    ap.add_argument("--steps", type=int, default=100)
    args = harness.parse(ap)
    results = {"threads": args.threads, "precision": "fp32", "models": {}}
    print(harness.machine()["cpu"])
    for name in args.models.split(","):
        cfg = vaelab.build_config({**harness.MODELS[name], "name": "bench"})
        model = build_model(cfg)
        model.likelihood.assume_binary = True
        opt = make_optimizer(model, cfg.train.lr)
        x = (torch.rand(cfg.train.batch_size, *model.image_shape, generator=torch.Generator().manual_seed(0))
             < 0.3).float()

        def step() -> None:
            loss = -elbo(model, x).bound.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(20):
            step()
        capture = CaptureProducts()
        with capture:
            step()
        calls = capture.calls

        def products() -> None:
            for func, a, kw in calls:
                func(*a, **kw)

        for _ in range(20):
            products()
        rounds = harness.alternate({"step": lambda r: harness.per_call(step, args.steps),
                                    "products": lambda r: harness.per_call(products, args.steps)}, args.repeats)
        step_s, prod_s = rounds.values["step"], rounds.values["products"]
        med = harness.medians(rounds.values)
        s, p = med["step"], med["products"]
        # each round's step against the products timed next to it: on a host whose speed drifts this is the steadier
        per_round, q1, q3 = harness.round_ratios(step_s, prod_s)
        gflop = sum(2 * a[-2].shape[-2] * a[-2].shape[-1] * a[-1].shape[-1] * (a[-1].shape[0] if a[-1].ndim == 3
                    else 1) for _, a, _ in calls) / 1e9
        # the other reading of target 2: the step's rate against the GEMM rate `precision: auto` measures at
        # the model's Linear shapes (forward and both backward products, timed alone), at least 65% of it
        probe_rate = gemm_rates(linear_shapes(model, cfg.train.batch_size))[0]
        results["models"][name] = {"probe_gflops": probe_rate, "step_share_of_probe": gflop / s / probe_rate,
                                   "products": len(calls), "gflop": gflop, "step_ms": 1e3 * s, "products_ms": 1e3 * p,
                                   "ratio": s / p, "round_ratio_median": per_round,
                                   "round_ratio_quartiles": [q1, q3], "steps_ms": [1e3 * v for v in step_s],
                                   "products_ms_each": [1e3 * v for v in prod_s]}
        print(f"{name}: step {1e3 * s:.2f} ms, its {len(calls)} products replayed alone {1e3 * p:.2f} ms "
              f"({gflop / p:.0f} GFLOP/s); step / products {s / p:.2f}x (target 1.5x); per round "
              f"{per_round:.2f}x (quartiles {q1:.2f}-{q3:.2f}); the step's {gflop / s:.0f} GFLOP/s are "
              f"{gflop / s / probe_rate:.0%} of the {probe_rate:.0f} GFLOP/s the precision probe measures at its "
              f"Linear shapes (target 65%)")
    harness.write_json(args, results)


if __name__ == "__main__":
    main()
