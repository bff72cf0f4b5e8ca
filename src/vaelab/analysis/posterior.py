"""Posterior statistics (documents 000, 003, 004): which latent dimensions carry information, and how.

Over the test set, per latent dimension d:
- mean and variance over the data of mu_d(x); mean of sigma_d^2(x); average KL(q(z_d|x) || N(0, 1)).
- active units (Burda et al. 2016): Var_x[mu_d(x)] > threshold (0.01).
- I(x; z) = E_x E_{q(z|x)} [log q(z|x) - log q(z)], q(z) = (1/N) sum_n q(z|x_n) over the test images (the
  mixture estimator; it is at most log N).
- PCA of the posterior means (document 004, section 2.1): eigenvalues of Cov_x[mu(x)] from the N x D code matrix
  (vaelab.analysis.stats.codes: exact SVD, or the randomised top 256 for big latents), how many exceed 0.01, and how
  closely each informative eigenvector lies on a coordinate axis (max_d v_d^2: 1 = on an axis, 1/D = spread).
  When the per-axis count (active units) and the PCA count disagree, the result says so and why.
Per-dimension moments stream over every test image; nothing D x D is formed, so any latent size works.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from vaelab.analysis.framework.common import AnalysisResult, encode_all, generator, subsample, to_list
from vaelab.analysis.stats.codes import TOP_K, axis_alignment, code_moments, pca, points_within_budget, random_alignment
from vaelab.models.posteriors import GaussianPosterior
from vaelab.models.priors import prior_of
from vaelab.plotting import pyplot

MAX_SAVED_CODE_DIMS = 16  # test codes are kept (posterior.npz) for scatter plots up to this latent size
DENSE_PLOT = 2048  # latent sizes above this draw their per-unit marks as pixels in the SVG figures


def mixture_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, chunk: int = 512,
                        component_chunk: int = 2048) -> torch.Tensor:
    """log (1/N) sum_n N(z; mu_n, diag(exp(logvar_n))) for each row of z: z (M, D), mu/logvar (N, D) -> (M,).

    Float64, with the quadratic expanded into matrix products,
    sum_d (z_d - mu_nd)^2 / v_nd = z^2 @ (1/v)^T - 2 z @ (mu/v)^T + sum_d mu_nd^2 / v_nd,
    over chunks of rows and of components (a running logsumexp), so memory is O((chunk + component_chunk) x D)."""
    n, d = mu.shape
    component_chunk = max(16, min(component_chunk, (1 << 24) // d))  # float64 chunks of at most 128 MB
    out = torch.full((z.shape[0],), -math.inf, dtype=torch.float64, device=z.device)
    for j in range(0, n, component_chunk):
        m, lv = mu[j:j + component_chunk].double(), logvar[j:j + component_chunk].double()
        inv_var = torch.exp(-lv)  # (c, D)
        m_iv = m * inv_var
        const = -0.5 * ((m * m_iv).sum(1) + lv.sum(1) + d * math.log(2 * math.pi))  # (c,)
        for i in range(0, z.shape[0], chunk):
            zc = z[i:i + chunk].double()
            quad = zc.pow(2) @ inv_var.T - 2.0 * zc @ m_iv.T  # (m, c)
            out[i:i + chunk] = torch.logaddexp(out[i:i + chunk], torch.logsumexp(const - 0.5 * quad, dim=1))
    return out - math.log(n)


def pca_spectrum(mu: torch.Tensor, threshold: float = 0.01, top_k: int = TOP_K, seed: int = 0) -> dict:
    """PCA of posterior means mu (N, D) from the N x D matrix: eigenvalues (descending; all of them when the SVD is
    exact, the top ``top_k`` otherwise), the count above ``threshold``, and how closely each eigenvector lies on a
    coordinate axis."""
    spec = pca(mu, top_k, seed)
    evals = spec.eigenvalues
    above, lower_bound = spec.count_above(threshold)
    alignment = axis_alignment(spec.components)
    informative = evals[:alignment.numel()] > threshold  # alignment is known for the components kept
    return {
        "eigenvalues": [float(v) for v in evals],
        "above_threshold": above, "above_threshold_is_lower_bound": lower_bound,
        "threshold": threshold, "exact": spec.exact, "points": spec.n_points,
        "total_variance": spec.total_variance,
        "explained_variance_ratio": [float(v) for v in evals / max(spec.total_variance, 1e-300)],
        "axis_alignment": [float(v) for v in alignment],
        "mean_axis_alignment_informative": float(alignment[informative].mean()) if informative.any() else None,
        "axis_alignment_random_baseline": random_alignment(mu.shape[1]),
    }


def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, seed: int = 0, samples: int = 1) -> dict:
    """I(x; z) by the mixture estimator over the N encoded points (nats), with its Monte Carlo standard error."""
    g = generator(seed, mu.device)
    q = GaussianPosterior(mu, logvar)
    z = q.rsample(samples, g)  # (S, N, D)
    log_q_cond = q.log_prob(z).reshape(-1).double()
    log_q_marg = mixture_log_density(z.reshape(-1, mu.shape[1]), mu, logvar)
    diff = log_q_cond - log_q_marg
    return {"mi_nats": float(diff.mean()), "se": float(diff.std() / math.sqrt(diff.numel())),
            "upper_bound_log_n": math.log(mu.shape[0])}


def count_agreement(active_units: int, pca_above: int, lower_bound: bool, latent_dim: int) -> str | None:
    """A sentence when the per-axis count (active units) and the PCA count disagree, and what that means."""
    if not lower_bound and active_units > 2 * max(pca_above, 1) and active_units - pca_above >= 5:
        return (f"{active_units} axes vary with x but only {pca_above} directions do: a few directions, rotated away "
                "from the coordinate axes, spread their variance over many axes, so per-axis counts overstate how many "
                "dimensions the model uses; the PCA count is the one to read")
    if pca_above > 2 * max(active_units, 1) and pca_above - active_units >= 5:
        return (f"{pca_above} directions vary with x but only {active_units} axes exceed the threshold: those directions "
                "are rotated away from the axes and spread so thinly over many of them that no axis reaches it, so "
                "per-axis counts understate how many dimensions the model uses; the PCA count is the one to read")
    return None


def posterior_statistics(subject, *, threshold: float = 0.01, mi_points: int = 5000, pca_points: int = 10000,
                         seed: int = 0) -> AnalysisResult:
    """Per-dimension posterior statistics (every test image, streamed), active units, I(x; z), and the PCA spectrum
    of the means (up to ``pca_points`` test codes, fewer when the latent is too big to hold them)."""
    x = subject.data.x_test
    mom = code_moments(subject.model, x)
    d = mom.mean_mu.numel()
    var_mu = mom.var_mu
    pca_idx = subsample(x.shape[0], points_within_budget(d, pca_points, arrays=2), seed)
    mu, logvar = encode_all(subject.model, x[pca_idx])
    active = int((var_mu > threshold).sum())
    spectrum = pca_spectrum(mu, threshold, seed=seed)
    data = {
        "latent_dim": d, "n_images": mom.n,
        "mean_mu": to_list(mom.mean_mu), "var_mu": to_list(var_mu),
        "active_units": active, "active_mask": [bool(v) for v in var_mu > threshold],
        "pca": spectrum,
        "count_note": count_agreement(active, spectrum["above_threshold"], spectrum["above_threshold_is_lower_bound"], d),
    }
    if logvar is not None:
        kl = mom.kl
        mi_idx = subsample(mu.shape[0], points_within_budget(d, mi_points, arrays=8), seed)  # (float temporaries)
        data.update({
            "mean_sigma2": to_list(mom.mean_sigma2),
            "kl_per_dim": to_list(kl), "kl_total": float(kl.sum()),
            # per unit against N(0, 1) whatever the model's prior (a mixture prior has no per-unit KL)
            "kl_against": "N(0, 1) per unit" + ("" if prior_of(subject.model).is_standard_normal
                                                 else f" (the model's prior is {prior_of(subject.model).describe()})"),
            "kl_active_units": int((kl > threshold).sum()),
            "mutual_information": {**mutual_information(mu[mi_idx], logvar[mi_idx], seed), "points": int(mi_idx.numel())},
            # document 000: "mu(x) close to 0 and sigma(x) close to 1" -- the share of units that look like the prior
            "prior_like_units": int(((var_mu < threshold) & ((mom.mean_sigma2 - 1).abs() < 0.1)).sum()),
        })
    else:
        data.update({"mean_sigma2": None, "kl_per_dim": None, "kl_total": None, "kl_active_units": None,
                     "mutual_information": None, "prior_like_units": None,
                     "note": "deterministic encoder: no posterior variance, KL or finite I(x; z)"})
    params = {"threshold": threshold, "mi_points": mi_points, "pca_points": int(pca_idx.numel()), "seed": seed,
              "split": "test"}
    y_test = subject.data.y_test  # unlabelled data: -1 for every image
    arrays = {"y_test": y_test.numpy() if y_test is not None else np.full(x.shape[0], -1, dtype=np.int64)}
    if d <= MAX_SAVED_CODE_DIMS:  # the 2-D/3-D scatter figures of studies
        arrays["mu_test"] = encode_all(subject.model, x)[0].cpu().numpy()
    return AnalysisResult("posterior", params, data, arrays)


def plot(result: AnalysisResult, save) -> None:
    """KL per dimension (sorted), Var[mu] against E[sigma^2] per dimension, and the PCA spectrum."""
    plt = pyplot()
    r = result.data
    thr = result.params["threshold"]
    d = r["latent_dim"]
    dense = d > DENSE_PLOT  # one mark per unit: drawn as pixels inside the SVG (65,536 vector marks were 7 MB)
    if r["kl_per_dim"] is not None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        kl = np.sort(np.asarray(r["kl_per_dim"]))[::-1]
        if d > 512:  # a filled curve: tens of thousands of bars would take minutes to draw
            ax.fill_between(np.arange(1, d + 1), kl, color="#4C72B0", step="mid", rasterized=dense)
            ax.set_xscale("log")
        else:
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
        ax.scatter(s2[~active], var_mu[~active], s=12, c="#999999", label="inactive", rasterized=dense)
        ax.scatter(s2[active], var_mu[active], s=12, c="#4C72B0", label="active", rasterized=dense)
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
