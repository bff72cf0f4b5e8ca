"""Peak resident memory of an MNIST training run and of a study, measured from outside (os.wait4's rusage of the
child process, which counts its waited-for descendants, so a study's worker processes count too).

    python benchmarks/memory.py [--epochs 3] [--study latent-dim --scale small]
"""
from __future__ import annotations

import sys
import tempfile

import harness


def main() -> None:
    ap = harness.parser(__doc__, "memory")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--study", default="latent-dim")
    ap.add_argument("--scale", default="small")
    args = harness.parse(ap)
    vaelab = [sys.executable, "-m", "vaelab"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in {
            "mnist training run (784-512-16, batch 128)": vaelab + ["train", "--dataset", "mnist", "--arch", "784-512-16",
                                                                     "--epochs", str(args.epochs), "--out", tmp, "--name", "m",
                                                                     "--no-progress"],
            f"study {args.study} --scale {args.scale}": vaelab + ["study", args.study, "--scale", args.scale, "--out", tmp,
                                                                  "--no-progress"],
        }.items():
            child = harness.run_child(cmd)
            results[name] = {"peak_rss_mb": round(child.peak_rss_mb, 1), "seconds": round(child.seconds, 1)}
            print(name, results[name], flush=True)
    harness.write_json(args, results)


if __name__ == "__main__":
    main()
