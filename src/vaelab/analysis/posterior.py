"""Posterior statistics (documents 000, 003, 004): which latent dimensions carry information, and how.

Over the test set, per latent dimension d:
- mean and variance over the data of mu_d(x); mean of sigma_d^2(x); average KL(q(z_d|x) || N(0, 1)).
- active units (Burda et al. 2016): Var_x[mu_d(x)] > threshold (0.01).
- I(x; z) = E_x E_{q(z|x)} [log q(z|x) - log q(z)], q(z) = (1/N) sum_n q(z|x_n) over the test images (the
  mixture estimator; it is at most log N).
- PCA of the posterior means (document 004, section 2.1): eigenvalues of Cov_x[mu(x)], how many exceed 0.01, and
  how closely each informative eigenvector lies on a coordinate axis (max_d v_d^2: 1 = on an axis, 1/D = spread).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from vaelab.analysis.common import AnalysisResult, encode_all, generator, subsample, to_list
from vaelab.models.posteriors import kl_std_normal_per_dim


def mixture_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """log (1/N) sum_n N(z; mu_n, diag(exp(logvar_n))) for each row of z: z (M, D), mu/logvar (N, D) -> (M,).

    Computed in float64 with the quadratic expanded into matrix products:
    sum_d (z_d - mu_nd)^2 / v_nd = z^2 @ (1/v)^T - 2 z @ (mu/v)^T + sum_d mu_nd^2 / v_nd."""
    z, mu, logvar = z.double(), mu.double(), logvar.double()
    inv_var = torch.exp(-logvar)  # (N, D)
    const = -0.5 * ((mu.pow(2) * inv_var).sum(1) + logvar.sum(1) + mu.shape[1] * math.log(2 * math.pi))  # (N,)
    out = []
    for i in range(0, z.shape[0], chunk):
        zc = z[i:i + chunk]
        quad = zc.pow(2) @ inv_var.T - 2.0 * zc @ (mu * inv_var).T  # (m, N)
        out.append(torch.logsumexp(const - 0.5 * quad, dim=1) - math.log(mu.shape[0]))
    return torch.cat(out)


def pca_spectrum(mu: torch.Tensor, threshold: float = 0.01) -> dict:
    """PCA of posterior means mu (N, D): eigenvalues (descending), count above ``threshold``, axis alignment."""
    x = mu.double().cpu().numpy()
    cov = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
    informative = evals > threshold
    alignment = (evecs ** 2).max(axis=0)  # per component: the largest squared loading on one axis
    return {
        "eigenvalues": [float(v) for v in evals],
        "above_threshold": int(informative.sum()),
        "threshold": threshold,
        "explained_variance_ratio": [float(v) for v in evals / max(evals.sum(), 1e-300)],
        "axis_alignment": [float(v) for v in alignment],
        "mean_axis_alignment_informative": float(alignment[informative].mean()) if informative.any() else None,
        "axis_alignment_random_baseline": float(_random_alignment(x.shape[1])),
    }


def _random_alignment(d: int, n: int = 2000) -> float:
    """E[max_i v_i^2] for a uniformly random unit vector in d dimensions (Monte Carlo, fixed seed)."""
    v = np.random.default_rng(0).standard_normal((n, d))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return float((v ** 2).max(axis=1).mean())


def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, seed: int = 0, samples: int = 1) -> dict:
    """I(x; z) by the mixture estimator over the N encoded points (nats), with its Monte Carlo standard error."""
    g = generator(seed, mu.device)
    eps = torch.randn((samples, *mu.shape), generator=g, device=mu.device)
    z = (mu + torch.exp(0.5 * logvar) * eps).reshape(-1, mu.shape[1])  # (S*N, D)
    log_q_cond = (-0.5 * (eps.pow(2) + logvar + math.log(2 * math.pi))).sum(-1).reshape(-1).double()
    log_q_marg = mixture_log_density(z, mu, logvar)
    diff = log_q_cond - log_q_marg
    return {"mi_nats": float(diff.mean()), "se": float(diff.std() / math.sqrt(diff.numel())),
            "upper_bound_log_n": math.log(mu.shape[0])}


def posterior_statistics(subject, *, threshold: float = 0.01, mi_points: int = 5000, seed: int = 0) -> AnalysisResult:
    """Per-dimension posterior statistics, active units, I(x; z) and the PCA spectrum of the means (test set)."""
    mu, logvar = encode_all(subject.model, subject.data.x_test)
    d = mu.shape[1]
    var_mu = mu.double().var(0, unbiased=True) if mu.shape[0] > 1 else torch.zeros(d, dtype=torch.float64)
    data = {
        "latent_dim": d, "n_images": mu.shape[0],
        "mean_mu": to_list(mu.double().mean(0)), "var_mu": to_list(var_mu),
        "active_units": int((var_mu > threshold).sum()), "active_mask": [bool(v) for v in var_mu > threshold],
        "pca": pca_spectrum(mu, threshold),
    }
    if logvar is not None:
        kl = kl_std_normal_per_dim(mu.double(), logvar.double()).mean(0)
        idx = subsample(mu.shape[0], mi_points, seed)
        data.update({
            "mean_sigma2": to_list(logvar.double().exp().mean(0)),
            "kl_per_dim": to_list(kl), "kl_total": float(kl.sum()),
            "kl_active_units": int((kl > threshold).sum()),
            "mutual_information": {**mutual_information(mu[idx], logvar[idx], seed), "points": int(idx.numel())},
            # document 000: "mu(x) close to 0 and sigma(x) close to 1" -- the share of units that look like the prior
            "prior_like_units": int(((var_mu < threshold) & ((logvar.double().exp().mean(0) - 1).abs() < 0.1)).sum()),
        })
    else:
        data.update({"mean_sigma2": None, "kl_per_dim": None, "kl_total": None, "kl_active_units": None,
                     "mutual_information": None, "prior_like_units": None,
                     "note": "deterministic encoder: no posterior variance, KL or finite I(x; z)"})
    params = {"threshold": threshold, "mi_points": mi_points, "seed": seed, "split": "test"}
    return AnalysisResult("posterior", params, data, {"mu_test": mu.cpu().numpy(), "y_test": subject.data.y_test.numpy()})


def plot(result: AnalysisResult, save) -> None:
    """KL per dimension (sorted), Var[mu] against E[sigma^2] per dimension, and the PCA spectrum."""
    from vaelab.report.figures import pyplot

    plt = pyplot()
    r = result.data
    thr = result.params["threshold"]
    d = r["latent_dim"]
    if r["kl_per_dim"] is not None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        kl = np.sort(np.asarray(r["kl_per_dim"]))[::-1]
        ax.bar(np.arange(1, d + 1), kl, width=1.0 if d > 60 else 0.8, color="#4C72B0")
        ax.axhline(thr, color="#C44E52", ls="--", lw=1, label=f"threshold {thr} nats")
        ax.set_xlabel("latent dimension (sorted by KL)")
        ax.set_ylabel("average KL to N(0, 1) (nats)")
        ax.set_title(f"KL per dimension: {r['kl_active_units']} of {d} above {thr}")
        ax.legend()
        save(fig, "kl-per-dim")

        fig, ax = plt.subplots(figsize=(4.6, 4))
        var_mu, s2 = np.asarray(r["var_mu"]), np.asarray(r["mean_sigma2"])
        active = np.asarray(r["active_mask"])
        ax.scatter(s2[~active], var_mu[~active], s=12, c="#999999", label="inactive")
        ax.scatter(s2[active], var_mu[active], s=12, c="#4C72B0", label="active")
        ax.axhline(thr, color="#C44E52", ls="--", lw=1)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("E_x[sigma^2(x)] (mean posterior variance)")
        ax.set_ylabel("Var_x[mu(x)] (spread of posterior means)")
        ax.set_title(f"{r['active_units']} active units of {d}")
        ax.legend()
        save(fig, "mu-sigma")

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ev = np.asarray(r["pca"]["eigenvalues"])
    ax.semilogy(np.arange(1, len(ev) + 1), np.maximum(ev, 1e-8), marker="o", ms=3)
    ax.axhline(thr, color="#C44E52", ls="--", lw=1, label=f"{thr}")
    ax.set_xlabel("principal component")
    ax.set_ylabel("eigenvalue of Cov[mu(x)]")
    ax.set_title(f"PCA of posterior means: {r['pca']['above_threshold']} eigenvalues > {thr}")
    ax.legend()
    save(fig, "pca-spectrum")
