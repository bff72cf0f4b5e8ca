"""Vectorised multi-model training: M runs that differ in seed, trained as one vectorised model (folded, the
default for these MLPs; and through vmap, as before folding), against the same M runs trained one after another by
the ordinary trainer, side by side in one run.

Architectures: document 003's 784-256-2 and 784-256-32-8-2 (batch 100) and document 002's 2x256 MLP with a 20-dim
isotropic latent (batch 256), Bernoulli, MNIST with dynamic binarization, Adam 1e-3. Wall time covers training,
each run's per-epoch test evaluation and checkpoints, i.e. everything a study pays for. The first epoch is a warm-up
and is excluded by timing epochs 2..E from the runs' own per-epoch records.

Beside the epochs, each model's stacked floor (harness.floor_parts: the M members' batched matrix products, the
stacked fused Adam and autocast's casts, each timed alone) bounds what vectorising can gain: M separate steps over
that floor (``speedup_bound``) is the speed-up if everything else in the stacked step were free.

Both sides train at the precision ``auto`` picks for the model on this machine (the runs' metrics say which). A
study's worker trains with one thread beside the other workers: ``--threads 1`` measures that setting.

    python benchmarks/ensemble.py [--members 8] [--epochs 3] [--threads N] [--only 'doc 002']
"""
from __future__ import annotations

import contextlib
import statistics
import tempfile
from pathlib import Path

import harness

import vaelab
from vaelab import ensemble
from vaelab.ensemble import train_ensemble
from vaelab.models.build import build_model
from vaelab.trainer import train

SETTINGS = {
    "784-256-2 (doc 003)": ({"hidden": [256], "latent_dim": 2}, 100),
    "784-256-32-8-2 (doc 003)": ({"hidden": [256, 32, 8], "latent_dim": 2}, 100),
    "784-256-256-20 isotropic (doc 002)": ({"hidden": [256, 256], "latent_dim": 20, "posterior": "isotropic"}, 256),
}


def configs(model: dict, batch: int, members: int, epochs: int):
    return [vaelab.build_config({"name": f"m{s}", "data": {"name": "mnist", "pixels": "dynamic"}, "model": model,
                                 "train": {"epochs": epochs, "batch_size": batch, "lr": 1e-3, "seed": s}})
            for s in range(members)]


def timed_epochs(runs) -> float:
    """Seconds of epochs 2..E summed over runs, from the runs' own records (a vectorised row holds 1/M of its epoch)."""
    return sum(sum(r["seconds"] for r in run.metrics[1:]) for run in runs)


@contextlib.contextmanager
def vmapped():
    """Within: vectorised members step through vmap (as before folding), whatever their model."""
    original = ensemble.fold_reason
    ensemble.fold_reason = lambda models: "vmap, for comparison"
    try:
        yield
    finally:
        ensemble.fold_reason = original


def step_ms(runs, batch: int, stacked: int) -> float:
    """Median milliseconds of training per step, epochs 2..E (a step of ``stacked`` members at once)."""
    return statistics.median(1e3 * stacked * batch / r["train_examples_per_s"] for run in runs
                             for r in run.metrics[1:])


def main() -> None:
    ap = harness.parser(__doc__, "ensemble", threads=0)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--only", default="", help="only the architectures whose label contains this (e.g. 'doc 002')")
    args = harness.parse(ap)
    print(harness.machine()["cpu"], flush=True)
    results = {}
    for label, (model, batch) in SETTINGS.items():
        if args.only not in label:
            continue
        cfgs = configs(model, batch, args.members, args.epochs)
        with tempfile.TemporaryDirectory() as tmp:
            separate = [train(c, out=Path(tmp) / "separate", progress=False, log=lambda m: None) for c in cfgs]
            together = train_ensemble(cfgs, Path(tmp) / "vectorised", progress=False, log=lambda m: None)
            with vmapped():  # the same members through vmap, the step folding replaced
                by_vmap = train_ensemble(cfgs, Path(tmp) / "vmap", progress=False, log=lambda m: None)
            t_sep, t_vec, t_vmap = timed_epochs(separate), timed_epochs(together), timed_epochs(by_vmap)
            gap = max(abs(a.metrics[-1]["test_loss"] - b.metrics[-1]["test_loss"]) for a, b in zip(separate, together))
            precision = together[0].metrics[-1].get("precision")
            sep_step, vec_step = step_ms(separate, batch, 1), step_ms(together, batch, args.members)
            together_folded = ensemble.fold_reason([r.load_model() for r in together]) is None
        # the stacked step's floor: its batched products, the stacked Adam and casts, each alone
        floor = harness.floor_parts(build_model(cfgs[0]), batch, precision, args.members)
        results[label] = {"separate_seconds": round(t_sep, 2), "vectorised_seconds": round(t_vec, 2),
                          "speedup": round(t_sep / t_vec, 2), "max_test_loss_difference": gap,
                          "folded": together_folded, "vmap_seconds": round(t_vmap, 2),
                          "vmap_speedup": round(t_sep / t_vmap, 2),
                          "precision": precision, "separate_step_ms": round(sep_step, 3),
                          "vectorised_step_ms": round(vec_step, 3), "stacked_floor": floor,
                          # the most vectorising could gain if all but the floor's parts were free
                          "speedup_bound": round(args.members * sep_step / floor["floor_ms"], 2)}
        print(label, results[label], flush=True)
    harness.write_json(args, {"members": args.members, "epochs": args.epochs, "results": results})


if __name__ == "__main__":
    main()
