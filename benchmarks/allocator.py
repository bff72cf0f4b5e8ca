"""Training with and without one of the allocator settings vaelab makes at import (vaelab.allocator), side by side:
the same run in fresh processes, alternating, one setting each.

- ``--setting thp``: PyTorch's transparent-huge-page allocations (THP_MEM_ALLOC_ENABLE). At document 000's scale
  (conv-spatial, 8x8x1024 = 65,536 latent units, batch 128) a step allocates hundreds of MB of fresh activations;
  on 4 KB pages each of them is a page fault.
- ``--setting keep``: glibc keeping freed memory for reuse (VAELAB_KEEP_FREED_MEMORY), where by default it returns
  the heap's top to the kernel and page-faults it back in the next step.

The script reports, per setting, the median training step (seconds of training per step from each epoch's
metrics, epochs after the first), the whole run's wall time, its minor page faults and its peak resident memory
(getrusage of the child), the kernel's THP mode and the CPU's flags.

    python benchmarks/allocator.py [--setting thp|keep] [--model doc000-8x8x1024] [--images 1280] [--epochs 3]
                                   [--repeats 2] [--compile off] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, tempfile
sys.path.insert(0, {bench!r})
import vaelab
from step_overhead import MODELS
import torch
torch.set_num_threads(int(sys.argv[5]))
cfg = MODELS[sys.argv[1]]
config = vaelab.build_config({{**cfg, "name": "bench", "data": {{**cfg["data"], "train_size": int(sys.argv[2])}},
                              "train": {{**cfg["train"], "epochs": int(sys.argv[3]), "compile": sys.argv[4]}}}})
with tempfile.TemporaryDirectory() as tmp:
    rows = vaelab.train(config, out=tmp, progress=False, log=lambda m: None).metrics
n, b = config.data.train_size, config.train.batch_size
print(json.dumps([n / r["train_examples_per_s"] / -(-n // b) for r in rows]))
"""


SETTINGS = {"thp": "THP_MEM_ALLOC_ENABLE", "keep": "VAELAB_KEEP_FREED_MEMORY"}  # --setting -> its variable


def run_child(setting: str, args) -> dict:
    """One training run in a fresh process with the setting's variable = setting: step seconds per epoch, wall,
    and the child's own minor page faults and peak resident memory (os.wait4's rusage of that child)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", CHILD.format(bench=str(ROOT / "benchmarks")), args.model,
                                 str(args.images), str(args.epochs), args.compile, str(args.threads)],
                                env={**os.environ, SETTINGS[args.setting]: setting}, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(stderr[-3000:])
    steps = json.loads(stdout.strip().splitlines()[-1])
    return {"steps": steps, "wall": wall, "minor_faults": usage.ru_minflt, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", default="thp", choices=sorted(SETTINGS))
    ap.add_argument("--model", default="doc000-8x8x1024", help="a model of benchmarks/step_overhead.py")
    ap.add_argument("--images", type=int, default=1280)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compile", default="off", choices=["off", "on"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/out/allocator-SETTING.json")
    args = ap.parse_args()
    variable = SETTINGS[args.setting]
    args.out = args.out or ROOT / f"benchmarks/out/allocator-{args.setting}.json"
    from vaelab.precision import cpu_signature

    try:
        thp_mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        thp_mode = "unknown"
    results: dict[str, list[dict]] = {"0": [], "1": []}
    for r in range(args.repeats):
        for setting in ("0", "1"):
            res = run_child(setting, args)
            results[setting].append(res)
            print(f"repeat {r + 1}, {variable}={setting}: steps "
                  + ", ".join(f"{s * 1e3:.1f}" for s in res["steps"]) + f" ms; wall {res['wall']:.1f} s; "
                  f"{res['minor_faults']:,} minor faults; peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    print(f"\n{cpu_signature()}; kernel THP mode: {thp_mode}; {args.model}, {args.images} images, {args.epochs} "
          f"epochs, compile {args.compile}, {args.threads} threads")
    med = {}
    for setting, runs in results.items():
        steps = [s for res in runs for s in res["steps"][1:]]
        med[setting] = {"step_ms": statistics.median(steps) * 1e3, "wall_s": statistics.median(r["wall"] for r in runs),
                        "minor_faults": statistics.median(r["minor_faults"] for r in runs),
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
        print(f"{variable}={setting}: median step {med[setting]['step_ms']:.1f} ms, median wall "
              f"{med[setting]['wall_s']:.1f} s, median minor faults {med[setting]['minor_faults']:,.0f}, "
              f"peak RSS {med[setting]['peak_rss_mb']:.0f} MB")
    print(f"{variable}=1 against 0: step {med['0']['step_ms'] / med['1']['step_ms']:.2f}x, "
          f"wall {med['0']['wall_s'] / med['1']['wall_s']:.2f}x faster")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu": cpu_signature(), "thp_mode": thp_mode, "args": {k: str(v) for k, v in
                                    vars(args).items()}, "runs": results, "median": med}, indent=1))


if __name__ == "__main__":
    main()
