"""Aggregate posterior against the prior (document 000's "soap bubble" hypothesis).

The aggregate posterior q(z) = (1/N) sum_n q(z|x_n) is the mixture over encoded training images; the decoder only
ever saw codes from it. Measured against the prior p(z) = N(0, I):
- KL(q(z) || p(z)) ~ E_{z~q(z)} [log q(z) - log p(z)], log q(z) by logsumexp over the mixture (nats, with SE).
- MMD^2 (unbiased) with a Gaussian kernel k(a, b) = exp(-||a - b||^2 / (2 l^2)), l = the median pairwise distance
  of the pooled samples (stated in the result).
- A two-sample classifier (a small MLP on z and ||z||, scikit-learn) told to separate prior samples from aggregate
  posterior samples: its held-out ROC AUC (0.5 = indistinguishable).
- Holes: the share of prior samples whose aggregate-posterior log density falls below the 1% quantile of log q
  at the aggregate posterior's own samples. With no gap this is 1% (the quantile); far more means the prior puts
  mass where the decoder never trained.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from vaelab.analysis.common import AnalysisResult, encode_all, generator, subsample
from vaelab.analysis.posterior import mixture_log_density
from vaelab.errors import ConfigError, NotApplicable
from vaelab.models.posteriors import kl_std_normal_per_dim, std_normal_log_prob


def mmd2_rbf(a: torch.Tensor, b: torch.Tensor, bandwidth: float | None = None) -> tuple[float, float]:
    """Unbiased MMD^2 between samples a (M, D) and b (N, D) with a Gaussian kernel; returns (mmd2, bandwidth)."""
    a, b = a.double(), b.double()
    if bandwidth is None:
        pooled = torch.cat([a, b])[:2000]
        d = torch.cdist(pooled, pooled)
        bandwidth = float(d[d > 0].median())
    gamma = 1.0 / (2 * bandwidth ** 2)
    k_aa = torch.exp(-gamma * torch.cdist(a, a).pow(2))
    k_bb = torch.exp(-gamma * torch.cdist(b, b).pow(2))
    k_ab = torch.exp(-gamma * torch.cdist(a, b).pow(2))
    m, n = a.shape[0], b.shape[0]
    mmd2 = ((k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1)) + (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
            - 2 * k_ab.mean())
    return float(mmd2), bandwidth


def classifier_auc(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Held-out ROC AUC of an MLP told to tell samples a (label 0) from b (label 1); features z and ||z||."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([a, b]).astype(np.float64)
    x = np.concatenate([x, np.linalg.norm(x, axis=1, keepdims=True)], axis=1)
    y = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, random_state=seed, stratify=y)
    clf = make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=300, early_stopping=True, random_state=seed))
    clf.fit(x_tr, y_tr)
    return float(roc_auc_score(y_te, clf.predict_proba(x_te)[:, 1]))


def aggregate_posterior_gap(subject, *, mixture_points: int = 10000, samples: int = 2000, quantile: float = 0.01,
                            dims: str = "active", kl_threshold: float = 0.01, seed: int = 0) -> AnalysisResult:
    """KL(q(z) || p(z)), MMD, a classifier two-sample AUC and the share of prior samples that land in holes.

    ``dims='active'`` (default) measures on the dimensions whose average KL(q(z_d|x) || N(0, 1)) or whose variance
    of mu_d(x) over the data exceeds ``kl_threshold``: a dimension with q(z_d|x) = N(0, 1) for every x factors out of q(z) exactly, adds nothing to
    the gap, and its chi-square noise would only drown the signal of the others (an 8x8x1024 latent of which 48
    units are used). ``dims='all'`` uses every dimension."""
    if dims not in ("active", "all"):
        raise ConfigError(f"dims {dims!r} is not one of active, all")
    idx = subsample(subject.data.x_train.shape[0], mixture_points, seed)
    mu, logvar = encode_all(subject.model, subject.data.x_train[idx])
    if logvar is None:
        raise NotApplicable("the aggregate-posterior analysis needs posterior variances; this model is deterministic "
                            "(its aggregate posterior is a set of points; use the samplers analysis instead)")
    d_total = mu.shape[1]
    if dims == "active":
        kl = kl_std_normal_per_dim(mu.double(), logvar.double()).mean(0)
        var_mu = mu.double().var(0) if mu.shape[0] > 1 else torch.zeros_like(kl)
        keep = (kl > kl_threshold) | (var_mu > kl_threshold)  # carries KL, or is an active unit (Burda et al.)
        if keep.any():
            mu, logvar = mu[:, keep], logvar[:, keep]
    g = generator(seed, mu.device)
    n, d = mu.shape
    pick = torch.randint(0, n, (samples,), generator=g, device=mu.device)
    z_q = mu[pick] + torch.exp(0.5 * logvar[pick]) * torch.randn((samples, d), generator=g, device=mu.device)
    z_p = torch.randn((samples, d), generator=g, device=mu.device)
    log_q_at_q = mixture_log_density(z_q, mu, logvar)
    log_q_at_p = mixture_log_density(z_p, mu, logvar)
    log_p_at_q = std_normal_log_prob(z_q.double())
    kl_terms = log_q_at_q - log_p_at_q
    threshold = float(torch.quantile(log_q_at_q, quantile))
    holes = float((log_q_at_p < threshold).double().mean())
    mmd2, bandwidth = mmd2_rbf(z_q[:2000], z_p[:2000])
    data = {
        "latent_dim": d_total, "dims_used": d, "dims": dims, "mixture_points": n,
        "kl_aggregate_prior": float(kl_terms.mean()), "kl_se": float(kl_terms.std() / math.sqrt(samples)),
        "kl_upper_bound_note": "the mixture estimate of log q(z) is biased upward by at most log N; read large values as lower bounds on the gap",
        "mmd2": mmd2, "mmd_bandwidth": bandwidth, "mmd_kernel": "gaussian, bandwidth = median pairwise distance",
        "classifier_auc": classifier_auc(z_p.cpu().numpy(), z_q.cpu().numpy(), seed),
        "holes": holes, "holes_expected_without_gap": quantile,
        "holes_se": math.sqrt(max(holes * (1 - holes), 1e-12) / samples),
        "log_q_threshold": threshold,
        "mean_log_q_at_prior_samples": float(log_q_at_p.mean()), "mean_log_q_at_posterior_samples": float(log_q_at_q.mean()),
    }
    params = {"mixture_points": n, "samples": samples, "quantile": quantile, "dims": dims, "kl_threshold": kl_threshold,
              "seed": seed, "split": "train"}
    arrays = {"log_q_at_prior": log_q_at_p.cpu().numpy(), "log_q_at_aggregate": log_q_at_q.cpu().numpy()}
    return AnalysisResult("prior-gap", params, data, arrays)


def plot(result: AnalysisResult, save) -> None:
    from vaelab.report.figures import pyplot

    plt = pyplot()
    r, a = result.data, result.arrays
    if not a:
        return
    fig, ax = plt.subplots(figsize=(6, 3.4))
    lo = np.percentile(np.concatenate([a["log_q_at_prior"], a["log_q_at_aggregate"]]), 0.5)
    hi = max(a["log_q_at_prior"].max(), a["log_q_at_aggregate"].max())
    bins = np.linspace(lo, hi, 60)
    ax.hist(np.clip(a["log_q_at_aggregate"], lo, None), bins=bins, alpha=0.6, color="#4C72B0", density=True,
            label="z from the aggregate posterior q(z)")
    ax.hist(np.clip(a["log_q_at_prior"], lo, None), bins=bins, alpha=0.6, color="#C44E52", density=True,
            label="z from the prior N(0, I)")
    ax.axvline(r["log_q_threshold"], color="black", ls="--", lw=1,
               label=f"{100 * result.params['quantile']:.0f}% quantile of q's own samples")
    ax.set_xlabel("log q(z) under the aggregate posterior (nats)")
    ax.set_ylabel("density")
    ax.set_title(f"Holes: {100 * r['holes']:.1f}% of prior samples (expected {100 * r['holes_expected_without_gap']:.0f}% "
                 f"without a gap); {r['dims_used']} of {r['latent_dim']} dims")
    ax.legend(fontsize=8)
    save(fig, "aggregate-vs-prior")
