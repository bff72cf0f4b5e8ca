"""A training step against its own matrix products (speed issue, target 2: the step costs at most 1.5x them).

For each model, at the precision `train.precision: auto` picks on this machine (or --precision):

- pythae's default VAE: MLP 784-512-16, Bernoulli, batch 128, MNIST, dynamic binarization;
- document 002's model: MLP 784-256-256-200, isotropic posterior, Bernoulli, batch 256, Fashion-MNIST.

it measures, alternating in one process so that both see the same load:

- the step's matrix products alone at the same shapes and dtype (harness.floor_parts): forward x W^T of every Linear
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

import statistics
import tempfile

import harness
import torch

import vaelab
from vaelab import trainer
from vaelab.models.build import build_model


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
    ap = harness.parser(__doc__, "step_overhead", repeats=2, threads=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--models", default=harness.DEFAULT_MODELS, help=f"some of {', '.join(harness.MODELS)}")
    ap.add_argument("--no-profile", action="store_true")
    args = harness.parse(ap)

    results = {"threads": args.threads, "models": {}}
    print(harness.machine()["cpu"])
    for name in args.models.split(","):
        cfg = harness.MODELS[name]
        rounds = harness.alternate({mode: lambda r, mode=mode: train_step_seconds(
            cfg, args.precision, mode, args.epochs, r == 0 and not args.no_profile) for mode in ("off", "on")},
            args.repeats).values
        timed = {mode: [s for steps, *_ in runs for s in steps] for mode, runs in rounds.items()}
        first = {mode: runs[0][1] for mode, runs in rounds.items()}
        ops = {mode: runs[0][3] for mode, runs in rounds.items()}
        precision = rounds["on"][-1][2]
        model = build_model(vaelab.build_config({**cfg, "name": "x"}))
        convolutional = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
        floor = None if convolutional else harness.floor_parts(model, cfg["train"]["batch_size"], precision)
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
    harness.write_json(args, results)


if __name__ == "__main__":
    main()
