"""The typical set of the latent posterior (document 002, Azmoodeh): do sampled latents have "typical" density?

For z ~ q(z|x) = N(mu, diag(sigma^2)) in n dimensions, the AEP says -1/n log q(z|x) -> h_bar, the average
per-dimension differential entropy h_bar = (1/n) sum_d 1/2 log(2 pi e sigma_d^2). Exactly,
-1/n log q(z|x) - h_bar = (chi^2_n - n) / (2n): the per-dimension density concentrates with spread 1/sqrt(2n).

- Percent gap (the paper's Fig. 3): the per-dimension (geometric-mean) density exp(-1/n log q) against the
  typical-sequence density exp(-h_bar), as a percent: 100 |exp(h_bar + 1/n log q(z|x)) - 1|.
- Norms: ||z|| of samples of the model's prior, posterior samples and posterior means against sqrt(n) (the "soap
  bubble"; sqrt(n) is where N(0, I)'s samples lie).
- Theorem 3 (Monte Carlo): for Z1, Z2 ~ N(mu 1, sigma^2 I_n), P(|f_n(Z1) - f_n(Z2)| < delta) -> 1. It holds when
  h = 1/2 log(2 pi e sigma^2) > 0 (sigma > 0.242); for smaller sigma densities grow like e^{-n h} and the
  difference does not vanish, which the check shows. The per-dimension log-density difference always shrinks,
  with standard deviation exactly 1/sqrt(n).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from vaelab.analysis.framework.common import AnalysisResult, encode_all, generator, subsample
from vaelab.analysis.stats.codes import points_within_budget
from vaelab.errors import NotApplicable
from vaelab.models.posteriors import GaussianPosterior
from vaelab.models.priors import prior_of
from vaelab.plotting import pyplot

HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)
THEOREM3_DIMS = (1, 2, 5, 10, 20, 50, 100, 200, 400, 800, 2000)


def gaussian_entropy_per_dim(logvar: torch.Tensor) -> torch.Tensor:
    """h_bar = mean_d 1/2 log(2 pi e sigma_d^2): (B, D) -> (B,), nats."""
    return HALF_LOG_2PI_E + 0.5 * logvar.mean(-1)


def typical_gap(mu: torch.Tensor, logvar: torch.Tensor, g: torch.Generator, prefixes: list[int] | None = None) -> dict:
    """Per-dimension log density of one z ~ q(z|x) per row against h_bar, on the first m dims for each m in prefixes."""
    eps = torch.randn(mu.shape, generator=g, device=mu.device, dtype=torch.float64)
    logvar = logvar.double()
    log_q_terms = -0.5 * (eps.pow(2) + logvar + math.log(2 * math.pi))  # log q(z_d|x), (B, D)
    n = mu.shape[1]
    out = {}
    for m in prefixes or [n]:
        neg_log_q = -log_q_terms[:, :m].mean(1)  # -1/m log q(z_{1..m}|x)
        h_bar = gaussian_entropy_per_dim(logvar[:, :m])
        pct = 100.0 * (torch.exp(h_bar - neg_log_q) - 1.0).abs()
        out[m] = {"dims": m, "neg_log_q_per_dim": float(neg_log_q.mean()), "entropy_per_dim": float(h_bar.mean()),
                  "abs_gap_nats_per_dim": float((neg_log_q - h_bar).abs().mean()),
                  "percent_gap_mean": float(pct.mean()), "percent_gap_median": float(pct.median()),
                  "percent_gap_se": float(pct.std() / math.sqrt(pct.numel())),
                  "log_density_ratio_sd": float((h_bar - neg_log_q).mul(m).std())}
    return out


def theorem3_check(dims=THEOREM3_DIMS, sigmas=(1.0, 0.1), mean: float = 0.0, pairs: int = 20000,
                   delta: float = 1e-3, seed: int = 0) -> list[dict]:
    """Monte Carlo check of Theorem 3: Z1, Z2 ~ N(mean 1, sigma^2 I_n); f_n their density.

    Returns per (sigma, n): P(|f_n(Z1) - f_n(Z2)| < delta) with its standard error, the median |f_n(Z1) - f_n(Z2)|
    (in log10, as densities under- or overflow), and the spread of the per-dimension log density difference
    (1/n)(log f_n(Z1) - log f_n(Z2)) against its exact value 1/sqrt(n)."""
    rng = np.random.default_rng(seed)
    rows = []
    for sigma in sigmas:
        h = 0.5 * math.log(2 * math.pi * math.e * sigma ** 2)
        for n in dims:
            # log f_n(Z) = -n/2 log(2 pi sigma^2) - chi^2_n / 2 exactly, with chi^2_n = |Z - mean|^2 / sigma^2: drawn
            # from its own law (summing n squared Gaussians per pair took seconds of every typical-set analysis)
            chi1, chi2 = rng.chisquare(n, pairs), rng.chisquare(n, pairs)
            base = -0.5 * n * math.log(2 * math.pi * sigma ** 2)
            lf1, lf2 = base - 0.5 * chi1, base - 0.5 * chi2
            hi, lo = np.maximum(lf1, lf2), np.minimum(lf1, lf2)
            log_abs_diff = hi + np.log1p(-np.exp(lo - hi))  # log |f1 - f2|, stable
            within = log_abs_diff < math.log(delta)
            p = float(within.mean())
            per_dim = (lf1 - lf2) / n
            rows.append({"sigma": sigma, "entropy": h, "n": n, "p_within_delta": p,
                         "p_se": math.sqrt(max(p * (1 - p), 1e-12) / pairs),
                         "median_log10_abs_diff": float(np.median(log_abs_diff) / math.log(10)),
                         "per_dim_diff_sd": float(per_dim.std()), "per_dim_diff_sd_exact": 1 / math.sqrt(n)})
    return rows


def typical_set(subject, *, n_images: int = 2000, prior_samples: int = 2000, seed: int = 0,
                theorem_pairs: int = 20000, delta: float = 1e-3) -> AnalysisResult:
    """Typical-set gap of posterior samples, norms against sqrt(n), and Theorem 3's Monte Carlo check."""
    # float64 temporaries of (images, D) below: hold at most the code budget of them
    idx = subsample(subject.data.x_test.shape[0], points_within_budget(subject.latent_dim, n_images, arrays=10), seed)
    mu, logvar = encode_all(subject.model, subject.data.x_test[idx])
    if logvar is None:
        raise NotApplicable("the typical-set analysis needs a posterior with a variance; this model is deterministic")
    n = mu.shape[1]
    g = generator(seed, mu.device)
    prefixes = sorted({m for m in (1, 2, 5, 10, 20, 50, 100, 200, 400, 800, 2000, 5000) if m < n} | {n})
    gaps = typical_gap(mu, logvar, g, prefixes)
    z_post = GaussianPosterior(mu, logvar).rsample(1, g)[0]
    prior = prior_of(subject.model)
    prior_norms = torch.cat([prior.sample(min(256, prior_samples - i), g, mu.device).norm(dim=1)
                             for i in range(0, prior_samples, 256)])  # in chunks: (S, D) need not be held
    norms = {"prior": prior_norms, "posterior_sample": z_post.norm(dim=1), "posterior_mean": mu.norm(dim=1)}
    data = {
        "latent_dim": n, "sqrt_n": math.sqrt(n), "prior": prior.describe(),
        "gap": gaps[n], "gap_by_prefix": [gaps[m] for m in prefixes],
        "norms": {k: {"mean": float(v.mean()), "sd": float(v.std()), "mean_over_sqrt_n": float(v.mean() / math.sqrt(n))}
                  for k, v in norms.items()},
        "mean_sigma": float(torch.exp(0.5 * logvar).mean()),
        "theorem3": theorem3_check(pairs=theorem_pairs, delta=delta, seed=seed),
    }
    params = {"n_images": int(idx.numel()), "prior_samples": prior_samples, "seed": seed,
              "theorem_pairs": theorem_pairs, "delta": delta, "split": "test"}
    arrays = {f"norm_{k}": v.cpu().numpy() for k, v in norms.items()}
    return AnalysisResult("typical-set", params, data, arrays)


def plot(result: AnalysisResult, save) -> None:
    plt = pyplot()
    r, a = result.data, result.arrays
    n = r["latent_dim"]
    if a:
        fig, ax = plt.subplots(figsize=(6, 3.4))
        colors = {"prior": "#C44E52", "posterior_sample": "#4C72B0", "posterior_mean": "#55A868"}
        for k, c in colors.items():
            ax.hist(a[f"norm_{k}"], bins=60, alpha=0.55, color=c, label=k.replace("_", " "), density=True)
        ax.axvline(math.sqrt(n), color="black", ls="--", lw=1, label="sqrt(n)")
        ax.set_xlabel("||z|| (Euclidean norm of the latent)")
        ax.set_ylabel("density")
        ax.set_title(f"Latent norms, n = {n}")
        ax.legend()
        save(fig, "norms")

    fig, ax = plt.subplots(figsize=(5.4, 3.4))
    rows = r["gap_by_prefix"]
    ax.plot([x["dims"] for x in rows], [x["percent_gap_mean"] for x in rows], marker="o")
    ax.set_xscale("log")
    ax.set_xlabel("number of latent dimensions m (first m of the code)")
    ax.set_ylabel("gap to typical density (% per dim)")
    ax.set_title("Sampled-latent density vs typical-sequence density")
    save(fig, "typical-gap")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for sigma in sorted({row["sigma"] for row in r["theorem3"]}, reverse=True):
        rows = [row for row in r["theorem3"] if row["sigma"] == sigma]
        ns = [row["n"] for row in rows]
        axes[0].plot(ns, [row["p_within_delta"] for row in rows], marker="o",
                     label=f"sigma = {sigma} (h = {rows[0]['entropy']:.2f} nats)")
        axes[1].plot(ns, [row["per_dim_diff_sd"] for row in rows], marker="o", label=f"sigma = {sigma}, Monte Carlo")
    axes[1].plot(ns, [row["per_dim_diff_sd_exact"] for row in rows], ls="--", color="black", label="exact 1/sqrt(n)")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("dimension n")
    axes[0].set_ylabel(f"P(|f_n(Z1) - f_n(Z2)| < {result.params['delta']})")
    axes[0].set_title("Theorem 3: densities of two samples")
    axes[0].legend()
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("dimension n")
    axes[1].set_ylabel("sd of (log f_n(Z1) - log f_n(Z2)) / n")
    axes[1].set_title("Per-dimension log density difference")
    axes[1].legend()
    save(fig, "theorem3")
