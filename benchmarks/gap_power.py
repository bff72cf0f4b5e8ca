"""Power and false-alarm rate of `aggregate_posterior_gap` on models whose aggregate posterior is known
(vaelab.analysis.stats.synthetic), against the same tests run on all D coordinates at once.

For each case, latent size D and seed, the model is built with that seed and `aggregate_posterior_gap` runs with it;
the script records, per test, whether p < 0.01 (classifier, MMD, energy and kNN on the informative coordinates; the
shell test on the complement), and the two decisions (`informative_mismatch`, `shell_mismatch`). The baseline shows
why vaelab tests in the informative subspace: the same classifier test and MMD test on all D coordinates of
aggregate-posterior samples (random training codes, z = mu + exp(logvar / 2) * eps, drawn here) against prior
samples N(0, I_D), with the same number of samples.

    python benchmarks/gap_power.py [--dims 16,64,256,1024,4096] [--seeds 10] [--samples 1000]
        [--mixture-points 4000] [--permutations 100] [--baseline-max-dim 4096]

Output: rejection rates (share of seeds) per (case, D, test) and per decision in --json (JSON, with every run's
p-values), a markdown table on stdout, and the figure --figure (one panel per case). CPU model, flags and torch's
thread count are recorded with the rates. Runs on one thread (torch and BLAS).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import harness
import torch

from vaelab.analysis import from_model
from vaelab.analysis.framework.common import encode_all, generator
from vaelab.analysis.prior_gap import ALPHA, aggregate_posterior_gap
from vaelab.analysis.stats.synthetic import CASES, NULL_CASES, model_and_data, used_units, wide_directions
from vaelab.analysis.stats.two_sample import classifier_test, mmd_test

SUBSPACE_TESTS = ("classifier", "mmd", "energy", "knn")
BASELINES = ("all_axes_classifier", "all_axes_mmd")
TESTS = SUBSPACE_TESTS + ("shell",) + BASELINES
DECISIONS = ("informative_mismatch", "shell_mismatch")
LABELS = {
    "classifier": "classifier (informative)", "mmd": "MMD (informative)", "energy": "energy (informative)",
    "knn": "kNN (informative)", "shell": "shell (complement)",
    "all_axes_classifier": "classifier, all D axes", "all_axes_mmd": "MMD, all D axes",
    "informative_mismatch": "decision: informative mismatch", "shell_mismatch": "decision: shell mismatch",
}
TITLES = {
    "prior-isotropic": "prior-isotropic (null): q(z) = N(0, I),\nevery unit informative",
    "prior-collapsed": "prior-collapsed (null): q(z) = N(0, I),\n8 used units, the rest collapsed to the prior",
    "anisotropic": "anisotropic: 8 directions of variance 4,\nnorms matched to the prior's",
    "shell": "shell: 8 used units, collapsed units\nnarrower than the prior (variance 0.5)",
    "clusters": "clusters: 10 tight clusters in 8 used units\n(prior's moments, holes between them)",
}

NOTES = {  # what a reader of one panel needs to know (drawn in the panel)
    "anisotropic": "shell test: the complement really is a little narrower,\n(D - 32) / (D - 8) per direction; the shell "
                   "decision\nignores that from D = 256 (inside 0.8..1.25)",
    "shell": "the informative coordinates are the prior's here\n(the same draws as prior-collapsed, seed for seed)",
}


def all_axes_baseline(model, data, samples: int, permutations: int, seed: int) -> dict:
    """The classifier and MMD tests on all D coordinates: aggregate-posterior samples (random training codes, one
    draw each, without replacement as vaelab does) against prior samples, ``samples`` of each."""
    g = generator(seed + 1000)
    n_train = data.x_train.shape[0]
    pick = torch.randperm(n_train, generator=g)[:samples]
    mu, logvar = encode_all(model, data.x_train[pick])
    z_q = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=g)
    z_p = torch.randn(z_q.shape, generator=g)
    a, b = z_p.double().numpy(), z_q.double().numpy()
    s_clf, clf = harness.timed(lambda: classifier_test(a, b, seed=seed).to_dict())
    s_mmd, mmd = harness.timed(lambda: mmd_test(a, b, permutations=permutations, seed=seed).to_dict())
    return {"all_axes_classifier": clf, "all_axes_mmd": mmd}, {"all_axes_classifier": s_clf, "all_axes_mmd": s_mmd}


def one_run(case: str, d: int, seed: int, args) -> dict:
    model, data = model_and_data(case, d, n_train=args.mixture_points, n_test=200, seed=seed)
    gap_seconds, r = harness.timed(lambda: aggregate_posterior_gap(
        from_model(model, data), mixture_points=args.mixture_points, samples=args.samples,
        permutations=args.permutations, seed=seed).data)
    seconds = {"aggregate_posterior_gap": gap_seconds}
    tests = {name: r["tests"][name] for name in SUBSPACE_TESTS + ("shell",) if name in r["tests"]}
    if d <= args.baseline_max_dim:
        base, t = all_axes_baseline(model, data, args.samples, args.permutations, seed)
        tests.update(base)
        seconds.update(t)
    return {
        "case": case, "latent_dim": d, "seed": seed, "informative_dims": r["informative"]["dims"],
        "complement_dims": r["complement"]["dims"],
        "p_values": {name: t["p_value"] for name, t in tests.items()},
        "effects": {name: [t["effect"], t["ci_low"], t["ci_high"]] for name, t in tests.items()},
        "rejected": {name: t["p_value"] < ALPHA for name, t in tests.items()},
        "informative_mismatch": bool(r["informative_mismatch"]), "shell_mismatch": bool(r["shell_mismatch"]),
        "seconds": seconds,
    }


def rates(runs: list[dict], cases, dims) -> dict:
    """{case: {D: {test or decision: {"rate", "count", "n"}}}}; a test that ran in no seed (no complement when
    k = D; baseline skipped) gets rate None."""
    out = {}
    for case in cases:
        out[case] = {}
        for d in dims:
            rs = [r for r in runs if r["case"] == case and r["latent_dim"] == d]
            cell = {}
            for name in TESTS:
                hits = [r["rejected"][name] for r in rs if name in r["rejected"]]
                cell[name] = {"rate": (sum(hits) / len(hits)) if hits else None, "count": int(sum(hits)),
                              "n": len(hits)}
            for name in DECISIONS:
                hits = [r[name] for r in rs]
                cell[name] = {"rate": (sum(hits) / len(hits)) if hits else None, "count": int(sum(hits)),
                              "n": len(hits)}
            cell["informative_dims"] = sorted({r["informative_dims"] for r in rs})
            out[case][str(d)] = cell
    return out


def pooled_null(runs: list[dict]) -> dict:
    """False alarms per test and decision pooled over the null cases, latent sizes and seeds: {name: {"rate",
    "count", "n", "ci95"}} (Clopper-Pearson interval): the resolution one cell of 10 seeds lacks."""
    from scipy.stats import beta

    out = {}
    nulls = [r for r in runs if r["case"] in NULL_CASES]
    for name in TESTS + DECISIONS:
        hits = [r["rejected"][name] for r in nulls if name in r["rejected"]] if name in TESTS else \
            [r[name] for r in nulls]
        n, c = len(hits), int(sum(hits))
        lo = float(beta.ppf(0.025, c, n - c + 1)) if c else 0.0
        hi = float(beta.ppf(0.975, c + 1, n - c)) if c < n else 1.0
        out[name] = {"rate": c / n if n else None, "count": c, "n": n, "ci95": [lo, hi]}
    return out


def markdown(table: dict, cases, dims) -> str:
    cols = TESTS + DECISIONS
    head = ["case", "D", "k"] + [{"classifier": "clf", "mmd": "MMD", "energy": "energy", "knn": "kNN",
                                  "shell": "shell", "all_axes_classifier": "clf, all D", "all_axes_mmd": "MMD, all D",
                                  "informative_mismatch": "**informative mismatch**",
                                  "shell_mismatch": "**shell mismatch**"}[c] for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + "---:|" * len(cols)]
    for case in cases:
        for d in dims:
            cell = table[case][str(d)]
            k = cell["informative_dims"]
            k_text = str(k[0]) if len(k) == 1 else f"{min(k)}-{max(k)}"
            vals = []
            for c in cols:
                rate = cell[c]["rate"]
                text = "—" if rate is None else f"{rate:.2f}"
                vals.append(f"**{text}**" if c in DECISIONS and rate is not None else text)
            lines.append(f"| {case} | {d} | {k_text} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def null_markdown(pooled: dict) -> str:
    lines = ["| false alarms on the null cases (all D, all seeds) | rate | count / runs | 95% interval |",
             "|---|---:|---:|---|"]
    for name, v in pooled.items():
        if v["n"]:
            lines.append(f"| {LABELS[name]} | {v['rate']:.3f} | {v['count']} / {v['n']} | "
                         f"{v['ci95'][0]:.3f}-{v['ci95'][1]:.3f} |")
    return "\n".join(lines)


def figure(table: dict, cases, dims, seeds: int, path: Path) -> None:
    from vaelab.plotting import pyplot

    plt = pyplot()
    style = {
        "classifier": dict(color="#4C72B0", marker="o"), "mmd": dict(color="#DD8452", marker="s"),
        "energy": dict(color="#55A868", marker="^"), "knn": dict(color="#8172B3", marker="v"),
        "shell": dict(color="#C44E52", marker="D"),
        "all_axes_classifier": dict(color="#4C72B0", marker="o", ls="--", mfc="white"),
        "all_axes_mmd": dict(color="#DD8452", marker="s", ls="--", mfc="white"),
        "informative_mismatch": dict(color="black", marker="*", lw=3.5, alpha=0.35, ms=11),
        "shell_mismatch": dict(color="#7f3b08", marker="P", lw=3.5, alpha=0.35, ms=10),
    }
    names = list(TESTS + DECISIONS)
    # lines that coincide (all at 0 or 1) are dodged sideways a little so that each stays visible
    dodge = {name: 1.0 + 0.05 * (i - (len(names) - 1) / 2) for i, name in enumerate(names)}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.6), sharey=True)
    flat = axes.ravel()
    for ax, case in zip(flat, cases):
        for name in names:
            xs, ys = [], []
            for d in dims:
                rate = table[case][str(d)][name]["rate"]
                if rate is not None:
                    xs.append(d * dodge[name])
                    ys.append(rate)
            if xs:
                kw = {"lw": 1.6, "ms": 6, **style[name]}
                ax.plot(xs, ys, label=LABELS[name], **kw)
        if case in NULL_CASES:
            ax.axhline(0.01, color="grey", ls=":", lw=1.2)
            ax.axhline(0.05, color="grey", ls=":", lw=1.2)
            ax.text(dims[0] * 0.8, 0.07, "0.01 (test level) / 0.05", fontsize=8, color="grey", va="bottom")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(dims))
        ax.set_xticklabels([str(d) for d in dims])
        ax.set_xlim(dims[0] / 1.5, dims[-1] * 1.5)
        ax.set_ylim(-0.04, 1.04)
        ax.set_title(TITLES.get(case, case), fontsize=10)
        if case in NOTES:
            ax.text(0.5, 0.5, NOTES[case], transform=ax.transAxes, ha="center", va="center", fontsize=8.5,
                    color="#444444", style="italic", bbox=dict(fc="white", ec="#cccccc", alpha=0.9))
        ax.set_xlabel("latent dimension D (log scale)")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"rejection rate (p < {ALPHA}) /\n'mismatch found' rate, over {seeds} seeds")
    legend_ax = flat[len(cases)] if len(cases) < len(flat) else None
    handles, labels = flat[0].get_legend_handles_labels()
    for ax in flat[1:len(cases)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if legend_ax is not None:
        legend_ax.axis("off")
        legend_ax.legend(handles, labels, loc="center", fontsize=10, title="test (solid: informative subspace, as "
                         "vaelab does;\ndashed: baseline on all D axes)", title_fontsize=9)
    else:
        fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=9)
    for ax in flat[len(cases) + 1:]:
        ax.axis("off")
    fig.suptitle("aggregate_posterior_gap: how often each test rejects q(z) = N(0, I) at p < 0.01, by latent size "
                 "(top-left two: q(z) equals the prior, so every rejection is a false alarm)", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    ap = harness.parser(__doc__, "gap_power")
    ap.add_argument("--dims", default="16,64,256,1024,4096", help="latent sizes, comma-separated")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--samples", type=int, default=1000, help="samples per side in every two-sample test")
    ap.add_argument("--mixture-points", type=int, default=4000, help="training codes (= training images)")
    ap.add_argument("--permutations", type=int, default=100)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--baseline-max-dim", type=int, default=4096,
                    help="run the all-axes baseline only up to this latent size (it is skipped above)")
    ap.add_argument("--figure", type=Path, default=Path("docs/figures/gap-power.png"))
    ap.add_argument("--replot", action="store_true",
                    help="run nothing: read --json, print the tables and draw the figure again")
    args = harness.parse(ap)
    if args.replot:
        report = json.loads(args.json.read_text())
        p = report["params"]
        report["pooled_null"] = pooled_null(report["runs"])
        harness.save(args.json, report)
        print(markdown(report["rates"], p["cases"], p["dims"]))
        print()
        print(null_markdown(report["pooled_null"]))
        figure(report["rates"], p["cases"], p["dims"], p["seeds"], args.figure)
        return
    dims = [int(d) for d in args.dims.split(",")]
    cases = [c.strip() for c in args.cases.split(",")]
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    runs = []
    with threadpool_limits(limits=1):
        for case in cases:
            for d in dims:
                t0 = time.perf_counter()
                for seed in range(args.seeds):
                    runs.append(one_run(case, d, seed, args))
                got = rates(runs, [case], [d])[case][str(d)]
                print(f"{case:16s} D={d:5d}  {time.perf_counter() - t0:6.1f} s  " + "  ".join(
                    f"{n}={got[n]['rate']:.2f}" for n in TESTS + DECISIONS if got[n]["rate"] is not None), flush=True)
    wall = time.perf_counter() - start
    table = rates(runs, cases, dims)
    report = {
        "params": {"dims": dims, "seeds": args.seeds, "samples": args.samples, "mixture_points": args.mixture_points,
                   "permutations": args.permutations, "alpha": ALPHA, "cases": cases,
                   "baseline_max_dim": args.baseline_max_dim, "n_test_images": 200},
        "design": {
            "informative_tests": "vaelab.analysis.prior_gap.aggregate_posterior_gap(seed=seed), model built with "
                                 "vaelab.analysis.stats.synthetic.model_and_data(case, D, seed=seed)",
            "baseline": "classifier_test and mmd_test on all D coordinates: `samples` random training codes (without "
                        "replacement), z = mu + exp(logvar/2) eps, against `samples` draws of N(0, I_D)",
            "rate": f"share of seeds with p < {ALPHA} (tests) or with the decision True (decisions)",
            "used_units": {str(d): used_units(d) for d in dims},
            "wide_directions": {str(d): wide_directions(d) for d in dims},
            "null_cases": list(NULL_CASES),
        },
        "wall_seconds": wall,
        "rates": table,
        "pooled_null": pooled_null(runs),
        "runs": runs,
    }
    harness.write_json(args, report)
    print()
    print(markdown(table, cases, dims))
    print()
    print(null_markdown(report["pooled_null"]))
    print()
    figure(table, cases, dims, args.seeds, args.figure)
    print(f"wall time {wall:.0f} s ({wall / 60:.1f} min); results: {args.json}; figure: {args.figure}")
    if any(math.isnan(p) for r in runs for p in r["p_values"].values()):
        print("warning: some p-values are NaN", file=sys.stderr)


if __name__ == "__main__":
    main()
