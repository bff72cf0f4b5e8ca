"""Document 002's analysis set per run, timed with this tree and with an older vaelab side by side (speed issue,
target 5: at least 3x faster at equal estimates).

The set is the latent-dim study's, with its parameters: posterior, typical-set (2,000 theorem pairs), samples (64),
likelihood (S = 1,000 on 1,000 test images), quality (2,000 images per sampler) and prior-gap (2,000 samples,
10,000 mixture points). The run (Fashion-MNIST, MLP 2x256, isotropic posterior, batch 256, lr 1e-4) is trained by
the baseline code, so both versions can read it. Each repeat runs the set with the baseline and with this tree,
alternating, as a study runs it: ``--workers`` processes side by side (a study's workers; 2 on a 2-core machine),
each on its own fresh copy of the run with one torch thread. The evaluation classifier is cached beforehand by
each version (the study trains it once too). Reports seconds per analysis (medians over repeats and workers), the
ratio, and the estimates of both with their standard errors where the analysis gives them.

    python benchmarks/analysis_time.py [--baseline 9979586] [--latent 200] [--epochs 30] [--repeats 2] [--workers 2]
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import harness

ROOT = harness.ROOT
PARAMS = {"posterior": {}, "typical-set": {"theorem_pairs": 2000}, "samples": {"n": 64},
          "likelihood": {"samples": 1000, "n_images": 1000}, "quality": {"n": 2000},
          "prior-gap": {"samples": 2000, "mixture_points": 10000}}
# (analysis, path into its result, path of its standard error or None)
ESTIMATES = [("likelihood", "log_likelihood", "log_likelihood_se_sampling"), ("likelihood", "vr_bound", "vr_bound_se"),
             ("quality", "fd.prior", None), ("quality", "fd.ex-post-gmm", None), ("quality", "fd.posterior", None),
             ("prior-gap", "classifier_auc", None), ("prior-gap", "kl_aggregate_prior", None),
             ("typical-set", "gap.percent_gap_mean", "gap.percent_gap_se"), ("posterior", "active_units", None),
             ("posterior", "mutual_information.mi_nats", "mutual_information.se")]

RUNNER = """
import json, sys, time
import torch
torch.set_num_threads(1)
from vaelab.analysis import from_run, run_analysis
params = json.loads(sys.argv[2])
subject = from_run(sys.argv[1])
out = {}
for name, p in params.items():
    t0 = time.perf_counter()
    run_analysis(subject, name, **p)
    out[name] = time.perf_counter() - t0
print(json.dumps(out))
"""


CLASSIFIER = """
import sys
from vaelab.analysis import from_run
from vaelab.analysis.quality import evaluation_classifier
evaluation_classifier(from_run(sys.argv[1]).reference)
"""


def tree_env(src: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}


def baseline_tree(commit: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"vaelab-baseline-{commit}"
    if not (path / "src" / "vaelab").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True,
                       capture_output=True)
    return path


def dig(data: dict, path: str):
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def run_set(src: Path, run: Path, work: Path, workers: int) -> tuple[list[dict], dict]:
    """Seconds per analysis of each of ``workers`` processes run side by side, each on a fresh copy of ``run``,
    and the estimates (of the first copy)."""
    copies = []
    for w in range(workers):
        copy = work / f"run{w}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("analysis", "figures"))
        copies.append(copy)
    children = [harness.spawn(harness.python(RUNNER, copy, json.dumps(PARAMS)), env=tree_env(src)) for copy in copies]
    seconds = [json.loads(child.wait().stdout.strip().splitlines()[-1]) for child in children]
    estimates = {}
    for analysis, path, se in ESTIMATES:
        result = json.loads((copies[0] / "analysis" / f"{analysis}.json").read_text())["result"]
        estimates[f"{analysis}:{path}"] = (dig(result, path), dig(result, se) if se else None)
    return seconds, estimates


def main() -> None:
    ap = harness.parser(__doc__, "analysis_time", repeats=2)
    ap.add_argument("--baseline", default="9979586", help="the git commit to compare against (default: the code "
                    "when the speed issue was opened)")
    ap.add_argument("--latent", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2, help="analysis processes side by side, as a study's workers")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vaelab-analysis-time")
    args = harness.parse(ap)

    old = baseline_tree(args.baseline) / "src"
    new = ROOT / "src"
    args.work.mkdir(parents=True, exist_ok=True)
    run = args.work / f"z{args.latent}"
    if not (run / "status.json").exists() or json.loads((run / "status.json").read_text()).get("state") != "finished":
        cmd = [sys.executable, "-m", "vaelab", "train", "--dataset", "fashion-mnist", "--hidden", "256,256",
               "--latent-dim", str(args.latent), "--posterior", "isotropic", "--batch-size", "256", "--lr", "1e-4",
               "--epochs", str(args.epochs), "--out", str(args.work), "--name", run.name, "--no-progress", "--resume"]
        print("training with the baseline:", " ".join(cmd[3:]), flush=True)
        subprocess.run(cmd, env=tree_env(old), check=True)
    trees = {"baseline": old, "this tree": new}
    for src in trees.values():  # each version trains and caches its classifier
        subprocess.run(harness.python(CLASSIFIER, run), env=tree_env(src), check=True)

    def show(r: int, label: str, _: float, measured: tuple[list[dict], dict]) -> None:
        print(f"repeat {r + 1}, {label}: " + "; ".join(
            f"{sum(sec.values()):.1f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in sec.items()) + ")"
            for sec in measured[0]), flush=True)

    contenders = {label: lambda r, label=label, src=src: run_set(src, run, args.work / label.replace(" ", "-"),
                                                                 args.workers) for label, src in trees.items()}
    rounds = harness.alternate(contenders, args.repeats, each=show).values  # per label: (per worker, estimates)
    times = {label: {name: [sec[name] for per_worker, _ in measured for sec in per_worker] for name in PARAMS}
             for label, measured in rounds.items()}
    estimates = {label: measured[-1][1] for label, measured in rounds.items()}
    med = {label: harness.medians(t) for label, t in times.items()}
    print(f"\n{harness.machine()['cpu']}; {args.workers} analysis processes side by side, 1 torch thread each; "
          f"baseline {args.baseline}; run {run}")
    print(f"{'analysis':<14}{'baseline s':>12}{'this tree s':>13}{'speed-up':>10}")
    for name in PARAMS:
        b, n = med["baseline"][name], med["this tree"][name]
        print(f"{name:<14}{b:>12.2f}{n:>13.2f}{b / n:>9.2f}x")
    tb, tn = sum(med["baseline"].values()), sum(med["this tree"].values())
    print(f"{'all':<14}{tb:>12.2f}{tn:>13.2f}{tb / tn:>9.2f}x")
    print("\nestimates (baseline | this tree; +- standard error where given)")
    for key in estimates["baseline"]:
        (b, bse), (n, nse) = estimates["baseline"][key], estimates["this tree"][key]
        fmt = lambda v, se: "-" if v is None else f"{v:.4g}" + (f" +- {se:.2g}" if se is not None else "")  # noqa: E731
        print(f"  {key:<40} {fmt(b, bse):>22} | {fmt(n, nse)}")
    harness.write_json(args, {"baseline": args.baseline, "latent": args.latent, "workers": args.workers,
                              "epochs": args.epochs, "seconds": times, "median": med, "estimates": estimates})


if __name__ == "__main__":
    main()
