"""Training with and without PyTorch's transparent-huge-page allocations (THP_MEM_ALLOC_ENABLE, which vaelab turns
on at import), side by side: the same run in fresh processes, alternating, one setting each.

At document 000's scale (conv-spatial, 8x8x1024 = 65,536 latent units, batch 128) a step allocates hundreds of MB
of fresh activations; on 4 KB pages each of them is a page fault. The script reports, per setting, the median
training step (seconds of training per step from each epoch's metrics, epochs after the first), the whole run's
wall time, its minor page faults and its peak resident memory (getrusage of the child), and the kernel's THP mode.

    python benchmarks/huge_pages.py [--model doc000-8x8x1024] [--images 1280] [--epochs 3] [--repeats 2]
                                    [--compile off]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, tempfile
sys.path.insert(0, {bench!r})
import vaelab
from step_overhead import MODELS
cfg = MODELS[sys.argv[1]]
config = vaelab.build_config({{**cfg, "name": "bench", "data": {{**cfg["data"], "train_size": int(sys.argv[2])}},
                              "train": {{**cfg["train"], "epochs": int(sys.argv[3]), "compile": sys.argv[4]}}}})
with tempfile.TemporaryDirectory() as tmp:
    rows = vaelab.train(config, out=tmp, progress=False, log=lambda m: None).metrics
n, b = config.data.train_size, config.train.batch_size
print(json.dumps([n / r["train_examples_per_s"] / -(-n // b) for r in rows]))
"""


def run_child(setting: str, args) -> dict:
    """One training run in a fresh process with THP_MEM_ALLOC_ENABLE=setting: step seconds per epoch, wall, faults,
    peak RSS (this child's, from the difference of RUSAGE_CHILDREN around it; ru_maxrss is the largest child's)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD.format(bench=str(ROOT / "benchmarks")), args.model,
                          str(args.images), str(args.epochs), args.compile],
                         env={**os.environ, "THP_MEM_ALLOC_ENABLE": setting}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    steps = json.loads(out.stdout.strip().splitlines()[-1])
    return {"steps": steps, "wall": wall, "minor_faults": after.ru_minflt - before.ru_minflt,
            "peak_rss_mb": after.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="doc000-8x8x1024", help="a model of benchmarks/step_overhead.py")
    ap.add_argument("--images", type=int, default=1280)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compile", default="off", choices=["off", "on"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/huge_pages.json")
    args = ap.parse_args()
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
            print(f"repeat {r + 1}, THP_MEM_ALLOC_ENABLE={setting}: steps "
                  + ", ".join(f"{s * 1e3:.1f}" for s in res["steps"]) + f" ms; wall {res['wall']:.1f} s; "
                  f"{res['minor_faults']:,} minor faults; peak RSS so far {res['peak_rss_mb']:.0f} MB", flush=True)
    print(f"\n{cpu_signature()}; kernel THP mode: {thp_mode}; {args.model}, {args.images} images, {args.epochs} "
          f"epochs, compile {args.compile}")
    med = {}
    for setting, runs in results.items():
        steps = [s for res in runs for s in res["steps"][1:]]
        med[setting] = {"step_ms": statistics.median(steps) * 1e3, "wall_s": statistics.median(r["wall"] for r in runs),
                        "minor_faults": statistics.median(r["minor_faults"] for r in runs)}
        print(f"THP_MEM_ALLOC_ENABLE={setting}: median step {med[setting]['step_ms']:.1f} ms, median wall "
              f"{med[setting]['wall_s']:.1f} s, median minor faults {med[setting]['minor_faults']:,.0f}")
    print(f"huge pages: step {med['0']['step_ms'] / med['1']['step_ms']:.2f}x, "
          f"wall {med['0']['wall_s'] / med['1']['wall_s']:.2f}x faster")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu": cpu_signature(), "thp_mode": thp_mode, "args": {k: str(v) for k, v in
                                    vars(args).items()}, "runs": results, "median": med}, indent=1))


if __name__ == "__main__":
    main()
