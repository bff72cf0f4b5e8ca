"""Peak resident memory of an MNIST training run and of a study, measured from outside (getrusage of the child
processes, so a study's worker processes count too).

    python benchmarks/memory.py [--epochs 3] [--study latent-dim --scale small]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--study", default="latent-dim")
    ap.add_argument("--scale", default="small")
    ap.add_argument("--out", default="benchmarks/out/memory.json")
    args = ap.parse_args()
    vaelab = [sys.executable, "-m", "vaelab"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        # each measurement in its own Python so RUSAGE_CHILDREN starts from zero
        for name, cmd in {
            "mnist training run (784-512-16, batch 128)": vaelab + ["train", "--dataset", "mnist", "--arch", "784-512-16",
                                                                     "--epochs", str(args.epochs), "--out", tmp, "--name", "m",
                                                                     "--no-progress"],
            f"study {args.study} --scale {args.scale}": vaelab + ["study", args.study, "--scale", args.scale, "--out", tmp,
                                                                  "--no-progress"],
        }.items():
            wrapper = [sys.executable, "-c", "import resource, subprocess, sys, json; subprocess.run(sys.argv[1:], check=True, "
                       "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
                       *cmd]
            t0 = time.perf_counter()
            out = subprocess.run(wrapper, check=True, capture_output=True, text=True).stdout
            results[name] = {"peak_rss_mb": round(int(out.strip()) / 1024, 1), "seconds": round(time.perf_counter() - t0, 1)}
            print(name, results[name], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
