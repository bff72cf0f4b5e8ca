"""Where document 004's medium Renyi study (`vaelab study renyi --scale medium`) spends its time, and the before and
after paths of what was cut, side by side in one run.

The study trains 15 groups of 3 seeds (MNIST, MLP 784-200-200-z, Renyi bound with K = 5 samples, batch 100, 100
epochs, a snapshot every 10) vectorised, then analyses each of the 45 runs (posterior; likelihood with 2,000
importance samples on 1,000 images; probes on 10,000 + 10,000 codes at every snapshot; interpolation). Measured on
one group (z = 40, alpha = 0.5), in a study worker's setting (one thread by default):

- one epoch's parts: the optimiser steps (a step of the 3 stacked members, x 600 per epoch), the per-epoch test
  evaluation of the 3 members (10,000 test images, K = 5) and their checkpoints and snapshot;
- the analyses of one run (trained --analysis-epochs epochs on --analysis-train images, a snapshot every epoch, so the
  probes see as many snapshots as at the medium scale);
- before against after, in alternating rounds (medians, the ratio before / after and its round-by-round quartiles):
  the stacked step with the decoder reordered member-major once (after) or around every layer (before), and the
  probes reusing the final checkpoint's probes for the identical last snapshot (after) or probing it again (before);
- the tiny Renyi study (`--scale tiny`) before and after: its results.csv must hold the same numbers.

    python benchmarks/renyi_study_time.py [--threads 1] [--rounds 9] [--steps 20] [--skip-tiny]
"""
from __future__ import annotations

import contextlib
import csv
import tempfile
import time
from pathlib import Path

import harness
import torch

import vaelab
from vaelab import ensemble
from vaelab.analysis import from_run, run_analysis
from vaelab.analysis import probes as probes_module
from vaelab.data import PixelSampler, load_dataset
from vaelab.ensemble import StackedStep
from vaelab.models import build_model
from vaelab.objectives import Objective
from vaelab.report import run_study
from vaelab.runs import CheckpointStore, write_snapshot
from vaelab.studies.pools import LocalExecutor
from vaelab.studies.spec import load_study
from vaelab.trainer import evaluate, make_optimizer, train
from vaelab.training_step import Member

MEDIUM_ANALYSES = load_study("renyi").scaled("medium").analyses
TIMING_COLUMNS = {"wall_seconds", "train_seconds", "trained_now", "vectorised"}


def config(seed: int, epochs: int = 100, train_size: int | None = None, snapshot_every: int = 10):
    data = {"name": "mnist", "pixels": "dynamic", **({"train_size": train_size} if train_size else {})}
    return vaelab.build_config({
        "name": f"renyi-z40-a0.5-s{seed}", "data": data,
        "model": {"network": "mlp", "hidden": [200, 200], "activation": "relu", "posterior": "diagonal",
                  "likelihood": "bernoulli", "latent_dim": 40},
        "objective": {"name": "renyi", "samples": 5, "alpha": 0.5},
        "train": {"epochs": epochs, "batch_size": 100, "lr": 1e-3, "seed": seed, "snapshot_every": snapshot_every,
                  "precision": "fp32"}})


@contextlib.contextmanager
def before():
    """Within: the paths as they were (each stacked layer reorders its own rows; the last snapshot probed again)."""
    saved = ensemble._MemberMajor, probes_module._same_weights
    ensemble._MemberMajor = lambda inner, members, rows: inner
    probes_module._same_weights = lambda a, b: False
    try:
        yield
    finally:
        ensemble._MemberMajor, probes_module._same_weights = saved


def group(data, members: int = 3):
    """A fresh stacked step of ``members`` seeds, its Adam, generators and pixel sampler."""
    cfgs = [config(s) for s in range(members)]
    pixels = PixelSampler("dynamic", data.x_train, data.x_test, cfgs[0].data.binarize_seed)
    ms = []
    for c in cfgs:
        torch.manual_seed(c.train.seed)
        model = build_model(c)
        model.likelihood.assume_binary = True
        ms.append(Member(c, Path("unused"), None, model, torch.Generator().manual_seed(c.train.seed)))
    step = StackedStep(ms, Objective(cfgs[0].objective))
    return step, make_optimizer(step.trained, 1e-3), [m.generator for m in ms], pixels


def stepper(data, steps: int):
    """A callable that trains ``steps`` steps of a fresh group on the first batches (the losses of the last)."""
    step, opt, gens, pixels = group(data)
    x_all = pixels.train_epoch(torch.Generator().manual_seed(0))

    def run(_round: int):
        for i in range(steps):
            x = pixels.batches([x_all] * len(gens), [torch.arange(i * 100, (i + 1) * 100)] * len(gens))
            loss, _ = step(x, gens, 0.5)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
        return loss.detach()
    return run


def step_rounds(data, rounds: int, steps: int) -> dict:
    """Before and after, alternating: seconds per stacked step (3 members) and whether both trained the same."""
    with before():
        old = stepper(data, steps)
    new = stepper(data, steps)
    old(0), new(0)  # warm-up (and the same number of steps behind both)
    r = harness.alternate({"before": old, "after": new}, rounds)
    per_step = {k: [s / steps for s in v] for k, v in r.seconds.items()}
    med, q1, q3 = harness.round_ratios(per_step["before"], per_step["after"])
    same = all(torch.equal(a, b) for a, b in zip(r.values["before"], r.values["after"]))
    return {"step_ms": {k: round(1e3 * v, 2) for k, v in harness.medians(per_step).items()},
            "ratio_before_over_after": round(harness.ratio(per_step["before"], per_step["after"]), 4),
            "round_ratio_median_q1_q3": [round(x, 4) for x in (med, q1, q3)],
            "rounds": rounds, "steps_per_round": steps, "same_losses": same}


def epoch_parts(data, step_ms: float) -> dict:
    """One epoch of a group: 600 steps (at ``step_ms``), evaluation of 3 members, 3 checkpoints and snapshots."""
    step, opt, gens, pixels = group(data)
    step.sync()
    t_eval, _ = harness.timed(lambda: [evaluate(m, step.objective, pixels.test, 1000, torch.Generator().manual_seed(1))
                                       for m in step.models])
    with tempfile.TemporaryDirectory() as tmp:
        def save():
            state = opt.state_dict()
            for k, m in enumerate(step.models):
                folder = Path(tmp) / f"m{k}"
                CheckpointStore(folder / "checkpoints").save(m.state_dict(), {
                    "optimizer": step.member_optimizer_state(state, k), "generator": gens[k].get_state(),
                    "epoch": 1, "step": 600, "metrics_json": "[]", "precision": "fp32"}, 1)
                write_snapshot(folder, m.state_dict(), 1)
        opt.zero_grad()
        t_save, _ = harness.timed(save)
    steps_s = 600 * step_ms / 1e3
    total = steps_s + t_eval + t_save
    return {"steps_s": round(steps_s, 2), "evaluation_s": round(t_eval, 2), "checkpoints_snapshots_s": round(t_save, 2),
            "shares": {k: round(v / total, 3) for k, v in
                       (("steps", steps_s), ("evaluation", t_eval), ("checkpoints", t_save))}}


def analyses(data, tmp: Path, epochs: int, train_size: int, rounds: int) -> dict:
    """Seconds of each of the study's analyses on one run (trained on a subset, analysed with the whole set, as a
    study's run is); the probes before and after, alternating."""
    train(config(0, epochs=epochs, train_size=train_size, snapshot_every=1), tmp, progress=False, log=lambda m: None)
    subject = from_run(tmp / config(0).name, dataset=data)
    seconds = {}
    for name, params in MEDIUM_ANALYSES.items():
        seconds[name] = round(harness.timed(lambda n=name, p=params: run_analysis(subject, n, **p))[0], 2)

    def probes(_round: int):
        return run_analysis(subject, "probes", **MEDIUM_ANALYSES["probes"]).data["over_training"]

    def old(r: int):
        with before():
            return probes(r)
    r = harness.alternate({"before": old, "after": probes}, rounds)
    return {"seconds": seconds, "snapshots": epochs,
            "probes": {"seconds": {k: round(v, 2) for k, v in harness.medians(r.seconds).items()},
                       "ratio_before_over_after": round(harness.ratio(r.seconds["before"], r.seconds["after"]), 4),
                       "same_numbers": all(a == b for a, b in zip(r.values["before"], r.values["after"]))}}


def tiny_study(tmp: Path) -> dict:
    """The tiny Renyi study before and after (one worker): whether results.csv holds the same numbers."""
    rows, seconds = {}, {}
    for label in ("before", "after"):
        spec = load_study("renyi").scaled("tiny")
        with before() if label == "before" else contextlib.nullcontext():
            t0 = time.perf_counter()
            folder = run_study(spec, tmp / label, executor=LocalExecutor(workers=1), progress=False,
                               log=lambda m: None)
            seconds[label] = round(time.perf_counter() - t0, 2)
        with open(folder / "results.csv", newline="") as f:
            rows[label] = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]
    differ = sorted({k for a, b in zip(rows["before"], rows["after"]) for k in a if a[k] != b.get(k)})
    return {"seconds": seconds, "runs": len(rows["after"]), "same_numbers": not differ, "columns_differing": differ}


def main() -> None:
    ap = harness.parser(__doc__, "renyi_study_time", repeats=None, threads=1)
    ap.add_argument("--rounds", type=int, default=9, help="alternating rounds of the step (default 9)")
    ap.add_argument("--steps", type=int, default=20, help="stacked steps per round (default 20)")
    ap.add_argument("--probe-rounds", type=int, default=2, help="alternating rounds of the probes (default 2)")
    ap.add_argument("--analysis-epochs", type=int, default=10, help="epochs (= snapshots) of the analysed run")
    ap.add_argument("--analysis-train", type=int, default=2000, help="training images of the analysed run")
    ap.add_argument("--skip-tiny", action="store_true", help="leave out the tiny study's before/after check")
    args = harness.parse(ap)
    print(harness.machine()["cpu"], flush=True)
    data = load_dataset("mnist")
    out = {"threads": torch.get_num_threads()}
    out["step"] = step_rounds(data, args.rounds, args.steps)
    print("step", out["step"], flush=True)
    out["epoch"] = epoch_parts(data, out["step"]["step_ms"]["after"])
    print("epoch", out["epoch"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out["analyses"] = analyses(data, Path(tmp) / "analysed", args.analysis_epochs, args.analysis_train,
                                   args.probe_rounds)
        print("analyses", out["analyses"], flush=True)
        if not args.skip_tiny:
            out["tiny_study"] = tiny_study(Path(tmp) / "tiny")
            print("tiny study", out["tiny_study"], flush=True)
    e, a = out["epoch"], out["analyses"]["seconds"]
    # the study's work on one worker: 15 groups x 100 epochs, then 45 runs' analyses
    training = 15 * 100 * (e["steps_s"] + e["evaluation_s"] + e["checkpoints_snapshots_s"])
    out["study_estimate_worker_hours"] = {"training": round(training / 3600, 2),
                                          "analyses": round(45 * sum(a.values()) / 3600, 2)}
    print(harness.write_json(args, out))


if __name__ == "__main__":
    main()
