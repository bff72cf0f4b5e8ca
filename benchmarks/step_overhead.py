"""A training step against its own matrix products (speed issue, target 2: the step costs at most 1.5x them).

For each model, at the precision `train.precision: auto` picks on this machine (or --precision):

- pythae's default VAE: MLP 784-512-16, Bernoulli, batch 128, MNIST, dynamic binarization;
- document 002's model: MLP 784-256-256-200, isotropic posterior, Bernoulli, batch 256, Fashion-MNIST.

it measures, alternating in one process so that both see the same load:

- the step's matrix products alone at the same shapes and dtype (step_floor.py): forward x W^T of every Linear
  layer, backward dY^T x of every layer and dY W of every layer but the first (the images need no gradient); and
  what else every step must do, timed alone: the fused Adam update and (bf16) autocast's casts of the parameters.
  Products + Adam + casts is the step's floor: its ratio to the products says how much of the 1.5x budget is left
  for everything else;
- vaelab's step: the trainer's own loop (vaelab.trainer), seconds of training per step from each epoch's
  train_examples_per_s (evaluation, checkpoint and metrics excluded), median over epochs after the first; eager
  (train.compile: off) and compiled (on), alternating, --repeats times each. The compiled run's first epoch, which
  includes compiling, is reported apart (it is shorter when inductor's on-disk cache already holds the graphs).

It prints the ratios, the GEMM rates, and a per-op table of one profiled epoch of each (self CPU time, top ops).

    python benchmarks/step_overhead.py [--epochs 4] [--repeats 2] [--threads 2] [--precision auto]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from step_floor import floor_parts

import vaelab
from vaelab import trainer

MODELS = {
    "pythae-default": {"data": {"name": "mnist", "pixels": "dynamic", "train_size": 25600},
                       "model": {"hidden": [512], "latent_dim": 16, "posterior": "diagonal"},
                       "train": {"batch_size": 128, "lr": 1e-3}},
    "doc002-200": {"data": {"name": "fashion-mnist", "pixels": "dynamic", "train_size": 25600},
                   "model": {"hidden": [256, 256], "latent_dim": 200, "posterior": "isotropic"},
                   "train": {"batch_size": 256, "lr": 1e-4}},
    # document 000's big latent (no products-alone floor: its convolutions are not timed apart); not run by default
    "doc000-8x8x1024": {"data": {"name": "mnist", "pixels": "dynamic", "train_size": 7680},
                        "model": {"network": "conv-spatial", "conv_channels": [32, 64], "posterior": "diagonal",
                                  "latent_channels": 1024},
                        "train": {"batch_size": 128, "lr": 1e-3}},
}
DEFAULT_MODELS = "pythae-default,doc002-200"


def train_step_seconds(cfg: dict, precision: str, compile: str, epochs: int,
                       profile: bool) -> tuple[list[float], float, str, str | None]:
    """Seconds of training per step in each epoch after the first, those of the first epoch, the precision used, and
    (``profile``) the per-op table of the last epoch, recorded by torch.profiler around the loop's own epoch."""
    config = vaelab.build_config({**cfg, "name": "bench", "train": {**cfg["train"], "epochs": epochs,
                                                                    "precision": precision, "compile": compile}})
    table: dict[str, str] = {}
    original = trainer._Loop._train_epoch

    def profiled(self, epoch):
        if not (profile and epoch == epochs):
            return original(self, epoch)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            out = original(self, epoch)
        table["ops"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=40)
        return out

    trainer._Loop._train_epoch = profiled
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = vaelab.train(config, out=tmp, progress=False, log=lambda m: None)
            rows = run.metrics
    finally:
        trainer._Loop._train_epoch = original
    n, batch = config.data.train_size, config.train.batch_size
    steps = -(-n // batch)
    last = len(rows) - (1 if profile else 0)  # the profiled epoch is not timed
    per_step = [n / r["train_examples_per_s"] / steps for r in rows]
    return per_step[1:last], per_step[0], rows[0]["precision"], table.get("ops")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"some of {', '.join(MODELS)}")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--out", default="benchmarks/out/step_overhead.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from vaelab.models.build import build_model
    from vaelab.precision import cpu_signature

    results = {"cpu": cpu_signature(), "threads": args.threads, "models": {}}
    print(results["cpu"])
    for name in args.models.split(","):
        cfg = MODELS[name]
        timed = {"off": [], "on": []}
        first, ops, precision = {}, {}, args.precision
        for rep in range(args.repeats):
            for mode in ("off", "on"):
                steps, first_step, precision, table = train_step_seconds(cfg, args.precision, mode, args.epochs,
                                                                         rep == 0 and not args.no_profile)
                timed[mode] += steps
                first.setdefault(mode, first_step)
                ops.setdefault(mode, table)
        model = build_model(vaelab.build_config({**cfg, "name": "x"}))
        convolutional = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
        floor = None if convolutional else floor_parts(model, cfg["train"]["batch_size"], precision)
        gemm, gflop = (floor["products_ms"] / 1e3, floor["gflop"]) if floor else (None, None)
        r = results["models"][name] = {"precision": precision, "gemm_ms": gemm and 1e3 * gemm,
                                       "gemm_gflops": gemm and gflop / gemm, "floor": floor}
        if floor:
            print(f"{name}: the step's unavoidable parts alone: products {floor['products_ms']:.2f} ms, fused Adam "
                  f"{floor['adam_ms']:.2f} ms, autocast casts {floor['casts_ms']:.2f} ms; floor "
                  f"{floor['floor_ms']:.2f} ms = {floor['floor_ms'] / floor['products_ms']:.2f}x the products "
                  f"(target 1.5x)")
        for mode, label in (("off", "eager"), ("on", "compiled")):
            step = statistics.median(timed[mode])
            r[label] = {"step_ms": 1e3 * step, "steps_ms": [1e3 * s for s in timed[mode]],
                        "first_epoch_step_ms": 1e3 * first[mode], "step_gflops": gemm and gflop / step,
                        "ratio": gemm and step / gemm}
            e = r[label]
            floor = (f", its matrix products alone {r['gemm_ms']:.2f} ms ({r['gemm_gflops']:.0f} GFLOP/s); step / "
                     f"products {e['ratio']:.2f}x; the step runs at {e['step_gflops']:.0f} GFLOP/s") if gemm else ""
            print(f"{name} {label}: {precision}, step {e['step_ms']:.2f} ms (per epoch "
                  f"{', '.join(f'{s:.2f}' for s in e['steps_ms'])}; first epoch {e['first_epoch_step_ms']:.2f}){floor}")
            if ops.get(mode):
                print(ops[mode])
        r["compiled_speedup"] = r["eager"]["step_ms"] / r["compiled"]["step_ms"]
        print(f"{name}: compiled step {r['compiled_speedup']:.2f}x the eager one")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
