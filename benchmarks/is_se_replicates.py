"""Is the IS estimate's sampling standard error right? R independent estimates of log p(x) on the same test images
(vaelab.analysis.likelihood.importance_sampled_estimate, fp32, each with its own noise): the spread of their means
against the delta-method SE each reports, next to the weights' Pareto k-hat and the flag the likelihood analysis
raises from it (vaelab.analysis.pareto). No peer: this checks an estimator against its own replicates.

    python benchmarks/is_se_replicates.py RUN [--images 200] [--samples 1000] [--replicates 8] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vaelab.analysis import from_run
from vaelab.analysis.likelihood import importance_sampled_estimate, tail_summary
from vaelab.precision import cpu_signature


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a trained run's directory")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--replicates", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/out/is_se_replicates.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    subject = from_run(args.run)
    x = subject.data.x_test[:args.images]
    rows = []
    for seed in range(args.replicates):
        t0 = time.perf_counter()
        est = importance_sampled_estimate(subject.model, x, args.samples,
                                          generator=torch.Generator().manual_seed(100 + seed))
        rows.append({"mean": float(est.log_p.mean()), "se_sampling": float(est.se.pow(2).sum().sqrt() / x.shape[0]),
                     **tail_summary(est.pareto_k, args.samples), "seconds": round(time.perf_counter() - t0, 2)})
    sd = statistics.stdev(r["mean"] for r in rows)
    se = statistics.median(r["se_sampling"] for r in rows)
    out = {"cpu": cpu_signature(), "run": args.run, "images": args.images, "samples": args.samples,
           "replicates": args.replicates, "sd_of_means": sd, "reported_se_median": se, "sd_over_se": sd / se,
           "pareto_k_median": rows[0]["pareto_k_median"], "share_unreliable": rows[0]["pareto_k_share_unreliable"],
           "se_sampling_reliable": rows[0]["se_sampling_reliable"], "rows": rows}
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=2))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
