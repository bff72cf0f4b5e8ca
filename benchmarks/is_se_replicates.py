"""Is the IS estimate's sampling standard error right? R independent estimates of log p(x) on the same test images
(vaelab.analysis.likelihood.importance_sampled_estimate, fp32, each with its own noise): the spread of their means
against the delta-method SE each reports, next to the weights' Pareto k-hat and the flag the likelihood analysis
raises from it (vaelab.analysis.stats.pareto). No peer: this checks an estimator against its own replicates.

``--proposal-scale c`` multiplies the encoder's standard deviations by c: below 1 the proposal is narrower and the
weights' tails heavier, above 1 wider, so that one trained model gives a range of tails to calibrate the flag on.

    python benchmarks/is_se_replicates.py RUN [--images 200] [--samples 1000] [--replicates 8] [--threads 1]
        [--proposal-scale 1.0]
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics

import harness
import torch

from vaelab.analysis import from_run
from vaelab.analysis.likelihood import importance_sampled_estimate, tail_summary


def replicate(model, x: torch.Tensor, samples: int, seed: int) -> dict:
    """One estimate on its own noise: its mean, its delta-method sampling SE and its weights' tails."""
    est = importance_sampled_estimate(model, x, samples, generator=torch.Generator().manual_seed(100 + seed))
    return {"mean": float(est.log_p.mean()), "se_sampling": float(est.se.pow(2).sum().sqrt() / x.shape[0]),
            **tail_summary(est.pareto_k, samples)}


def main() -> None:
    ap = harness.parser(__doc__, "is_se_replicates", threads=1)
    ap.add_argument("run", help="a trained run's directory")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--replicates", type=int, default=8)
    ap.add_argument("--proposal-scale", type=float, default=1.0, help="multiply the encoder's sigma by this")
    args = harness.parse(ap)
    subject = from_run(args.run)
    if args.proposal_scale != 1.0:
        encode, shift = subject.model.encode, 2 * math.log(args.proposal_scale)
        subject.model.encode = lambda xb: (lambda q: dataclasses.replace(q, logvar=q.logvar + shift))(encode(xb))
    x = subject.data.x_test[:args.images]
    rows = []
    for seed in range(args.replicates):
        seconds, row = harness.timed(lambda: replicate(subject.model, x, args.samples, seed))
        rows.append({**row, "seconds": round(seconds, 2)})
    sd = statistics.stdev(r["mean"] for r in rows)
    se = statistics.median(r["se_sampling"] for r in rows)
    shares = [r["pareto_k_share_unreliable"] for r in rows]
    out = {"run": args.run, "proposal_scale": args.proposal_scale, "images": x.shape[0],
           "samples": args.samples, "replicates": args.replicates, "sd_of_means": sd, "reported_se_median": se,
           "sd_over_se": sd / se, "pareto_k_median": statistics.median(r["pareto_k_median"] for r in rows),
           "share_unreliable_median": statistics.median(shares), "share_unreliable_range": [min(shares), max(shares)],
           "share_by_chance": rows[0]["pareto_k_share_by_chance"],
           "replicates_flagged": sum(not r["se_sampling_reliable"] for r in rows), "rows": rows}
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=2))
    harness.write_json(args, out)


if __name__ == "__main__":
    main()
