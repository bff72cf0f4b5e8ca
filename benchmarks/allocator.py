"""Training with and without one of the allocator settings vaelab makes at import (vaelab.allocator), side by side:
the same run in fresh processes, alternating, one setting each.

- ``--setting thp``: PyTorch's transparent-huge-page allocations (THP_MEM_ALLOC_ENABLE). At document 000's scale
  (conv-spatial, 8x8x1024 = 65,536 latent units, batch 128) a step allocates hundreds of MB of fresh activations;
  on 4 KB pages each of them is a page fault.
- ``--setting keep``: glibc keeping freed memory for reuse (VAELAB_KEEP_FREED_MEMORY), where by default it returns
  the heap's top to the kernel and page-faults it back in the next step.

The script reports, per setting, the median training step (seconds of training per step from each epoch's
metrics, epochs after the first), the whole run's wall time, its minor page faults and its peak resident memory
(os.wait4's rusage of the child), the kernel's THP mode and the CPU's flags.

    python benchmarks/allocator.py [--setting thp|keep] [--model doc000-8x8x1024] [--images 1280] [--epochs 3]
                                   [--repeats 2] [--compile off] [--threads 2]
"""
from __future__ import annotations

import json
import os

import harness

CHILD = """
import json, sys, tempfile
import vaelab
import torch
torch.set_num_threads(int(sys.argv[5]))
cfg = json.loads(sys.argv[1])
config = vaelab.build_config({**cfg, "name": "bench", "data": {**cfg["data"], "train_size": int(sys.argv[2])},
                              "train": {**cfg["train"], "epochs": int(sys.argv[3]), "compile": sys.argv[4]}})
with tempfile.TemporaryDirectory() as tmp:
    rows = vaelab.train(config, out=tmp, progress=False, log=lambda m: None).metrics
n, b = config.data.train_size, config.train.batch_size
print(json.dumps([n / r["train_examples_per_s"] / -(-n // b) for r in rows]))
"""


SETTINGS = {"thp": "THP_MEM_ALLOC_ENABLE", "keep": "VAELAB_KEEP_FREED_MEMORY"}  # --setting -> its variable


def run_child(setting: str, args) -> dict:
    """One training run in a fresh process with the setting's variable = setting: step seconds per epoch, wall,
    and the child's own minor page faults and peak resident memory (os.wait4's rusage of that child)."""
    child = harness.run_child(harness.python(CHILD, json.dumps(harness.MODELS[args.model]), args.images, args.epochs,
                                             args.compile, args.threads),
                              env={**os.environ, SETTINGS[args.setting]: setting})
    steps = json.loads(child.stdout.strip().splitlines()[-1])
    return {"steps": steps, "wall": child.seconds, "minor_faults": child.minor_faults,
            "peak_rss_mb": child.peak_rss_mb}


def main() -> None:
    ap = harness.parser(__doc__, "allocator-{setting}", repeats=2, threads=2)
    ap.add_argument("--setting", default="thp", choices=sorted(SETTINGS))
    ap.add_argument("--model", default="doc000-8x8x1024", choices=list(harness.MODELS),
                    help="a model of benchmarks/harness.py's MODELS")
    ap.add_argument("--images", type=int, default=1280)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--compile", default="off", choices=["off", "on"])
    args = harness.parse(ap)
    variable = SETTINGS[args.setting]
    machine = harness.machine()

    def show(r: int, setting: str, _: float, res: dict) -> None:
        print(f"repeat {r + 1}, {variable}={setting}: steps "
              + ", ".join(f"{s * 1e3:.1f}" for s in res["steps"]) + f" ms; wall {res['wall']:.1f} s; "
              f"{res['minor_faults']:,} minor faults; peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)

    results = harness.alternate({s: lambda r, s=s: run_child(s, args) for s in ("0", "1")}, args.repeats,
                                each=show).values
    print(f"\n{machine['cpu']}; kernel THP mode: {machine['thp_mode']}; {args.model}, {args.images} images, "
          f"{args.epochs} epochs, compile {args.compile}, {args.threads} threads")
    med = {}
    for setting, runs in results.items():
        m = harness.medians({"steps": [s for res in runs for s in res["steps"][1:]],
                             "wall": [r["wall"] for r in runs], "faults": [r["minor_faults"] for r in runs]})
        med[setting] = {"step_ms": m["steps"] * 1e3, "wall_s": m["wall"], "minor_faults": m["faults"],
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
        print(f"{variable}={setting}: median step {med[setting]['step_ms']:.1f} ms, median wall "
              f"{med[setting]['wall_s']:.1f} s, median minor faults {med[setting]['minor_faults']:,.0f}, "
              f"peak RSS {med[setting]['peak_rss_mb']:.0f} MB")
    print(f"{variable}=1 against 0: step {med['0']['step_ms'] / med['1']['step_ms']:.2f}x, "
          f"wall {med['0']['wall_s'] / med['1']['wall_s']:.2f}x faster")
    harness.write_json(args, {"runs": results, "median": med})


if __name__ == "__main__":
    main()
