"""`vaelab diagnose` at the documents' own scale, timed, with its peak memory, and checked against what the issue
asks of it:

- document 002's model (Fashion-MNIST, MLP 2x256, latent 800, isotropic posterior, batch 256, lr 1e-4, >= 30
  epochs): the verdict must name the mismatch in the informative directions, and the prescribed fix must cut FD by
  at least 30% from the prior's;
- document 000's spatial model (MNIST, conv VAE with an 8x8x256 latent = 16,384 units, >= 5 epochs): a verdict,
  with its time and peak memory.

    python benchmarks/diagnose_at_scale.py --runs-dir /path/to/runs [--epochs-002 30] [--epochs-000 5] [--quick]

Runs missing from --runs-dir are trained first with the commands printed (they take about 2.5 and 12 minutes on a
2-core CPU). Each diagnosis runs in its own process (peak RSS from getrusage of the children); the result goes to
benchmarks/out/diagnose_at_scale.json and is printed as a table. CPU flags and thread count are recorded with it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TRAIN = {
    "002-fashion-mnist-800": ["--dataset", "fashion-mnist", "--hidden", "256,256", "--latent-dim", "800",
                              "--posterior", "isotropic", "--batch-size", "256", "--lr", "1e-4"],
    "000-mnist-8x8x256": ["--dataset", "mnist", "--network", "conv-spatial", "--latent-channels", "256",
                          "--posterior", "diagonal"],
}


def cpu_flags() -> dict:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    return {"model": model, "amx_bf16": "amx_bf16" in flags, "avx512f": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags}


def measured(cmd: list[str]) -> tuple[dict, float, str]:
    """Run cmd in a fresh Python that reports its children's peak RSS: (peak MB, seconds, stdout)."""
    wrapper = [sys.executable, "-c", "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, "
               "text=True); sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
               "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(wrapper, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    lines = proc.stdout.strip().splitlines()
    peak = int(lines[-1].split()[1]) / 1024
    return {"peak_rss_mb": round(peak, 1)}, seconds, "\n".join(lines[:-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", type=Path, default=Path("benchmarks/out/runs"))
    ap.add_argument("--epochs-002", type=int, default=30)
    ap.add_argument("--epochs-000", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="diagnose --quick (fewer samples)")
    ap.add_argument("--only", choices=list(TRAIN), action="append")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/diagnose_at_scale.json"))
    args = ap.parse_args()
    import torch

    vaelab = [sys.executable, "-m", "vaelab"]
    report = {"machine": {**cpu_flags(), "threads": torch.get_num_threads(), "torch": torch.__version__}, "runs": {}}
    epochs = {"002-fashion-mnist-800": args.epochs_002, "000-mnist-8x8x256": args.epochs_000}
    for name in args.only or list(TRAIN):
        run = args.runs_dir / name
        if not (run / "config.yaml").exists() or json.loads((run / "status.json").read_text()).get("state") != "finished":
            cmd = vaelab + ["train", *TRAIN[name], "--epochs", str(epochs[name]), "--out", str(args.runs_dir), "--name",
                            name, "--no-progress", "--resume"]
            print("training:", " ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, check=True)
        cmd = vaelab + ["diagnose", str(run), "--json"] + (["--quick"] if args.quick else [])
        print("diagnosing:", " ".join(cmd[2:]), flush=True)
        mem, seconds, out = measured(cmd)
        d = json.loads(out)["result"]
        t = d["table"]
        fd_prior = t.get("fd_prior")
        row = {"command": "vaelab " + " ".join(cmd[3:]), "seconds": round(seconds, 1), **mem,
               "informative_mismatch": d["informative_mismatch"], "shell_mismatch": d["shell_mismatch"],
               "mismatch_costs": d["mismatch_costs"], "overfitting": d["overfitting_supported"],
               "best_fix": d["best_fix"], "fd_prior": fd_prior, "fd_best_fix": t.get("best_fix_fd"),
               "fd_cut": t.get("best_fix_cut"), "verdict": d["verdict"], "table": t}
        if name.startswith("002"):
            row["checks"] = {"names the informative mismatch": bool(d["informative_mismatch"]),
                             "prescribed fix cuts FD by >= 30%": bool(d["best_fix"]) and (t.get("best_fix_cut") or 0) >= 0.30}
        report["runs"][name] = row
        print(json.dumps({k: v for k, v in row.items() if k not in ("verdict", "table")}, indent=1), flush=True)
        print("\n".join("  " + s for s in d["verdict"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
