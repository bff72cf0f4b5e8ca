"""Aggregate posterior against the prior (document 000's "soap bubble" hypothesis), at any latent size.

The aggregate posterior q(z) = (1/N) sum_n q(z|x_n) is what the decoder was trained on; the model's prior p(z)
(N(0, I) unless it was trained with another) is what generation draws from. In hundreds to tens of thousands of
dimensions a test on all axes at once has no power, and the finite mixture over N codes is always a set of disjoint
blobs, so vaelab splits the question in two (vaelab.analysis.stats.codes has the linear algebra):

- The informative subspace: the top directions V (D, k) of Cov_x[mu(x)] (eigenvalue above ``threshold``, at most
  ``max_informative``), chosen on one half of the codes and tested on the other. Its shape: the aggregate variance
  per direction (code variance + mean posterior variance) against the prior's 1. Two-sample tests of u = V^T z
  under q against the prior's samples (N(0, I_k) for the standard prior): a classifier's held-out AUC, MMD,
  energy distance and a kNN test (vaelab.analysis.stats.two_sample), each with an effect size, an interval and a p-value.
- The complement ("the bubble"): ||z - V V^T z||^2 under N(0, I) is chi-square with D - k degrees of freedom
  exactly; the shell test compares the codes' squared norms there with that law (effect: variance per direction,
  1 under the prior) and gives the share of prior samples whose complement norm falls inside the codes' shell.
- A lower bound on the population's KL(q(z) || N(0, I)): the Gaussian KL in the subspace (bias-corrected) plus the
  complement's least KL given its variance (see vaelab.analysis.stats.codes).
- The finite mixture, as what it is: log of (1/N) sum_n q(z|x_n) at prior and posterior samples, on the axes that
  carry KL (at most ``mixture_dims``); "holes" = the share of prior samples below the 1% quantile of the codes' own
  log density, and the mixture's KL estimate. These describe the N-point mixture, not the population: in high
  dimensions they read "all holes" even when q(z) equals the prior in distribution.

A prior other than N(0, I) (a VampPrior, a learned mixture) has no such closed forms; its samples stand in for them
(``reference`` in the result says which was used). Variances are then measured in the prior's own units: the
informative coordinates are whitened by the mean and covariance of the prior's samples there (so the aggregate
variances are generalised eigenvalues against the prior's covariance, and the Gaussian KL compares q's moments
with the prior's), the complement's variance is divided by the prior samples', and the shell test becomes a
two-sample test of the codes' complement norms against the prior samples'. The KL "bound" is then a comparison
of moments, a bound only for a Gaussian prior.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from scipy.stats import chi2

from vaelab.analysis.framework.common import AnalysisResult, encode_all, generator, subsample
from vaelab.analysis.posterior import mixture_log_density
from vaelab.analysis.stats.codes import (aggregate_covariance, aggregate_samples, bootstrap, complement_kl_lower_bound,
                                         gaussian_kl_estimate, informative_subspace, pca, points_within_budget)
from vaelab.analysis.stats.two_sample import TestResult, classifier_test, energy_test, knn_test, mmd_test, shell_test
from vaelab.errors import NotApplicable
from vaelab.models.posteriors import kl_std_normal_per_dim
from vaelab.models.priors import Prior, prior_label, prior_of
from vaelab.plotting import pyplot

# Decision rules, stated in the result so that a reader can disagree with them.
AUC_GAP = 0.6  # the informative coordinates differ when the classifier's AUC interval lies above this ...
KL_GAP = 1.0  # ... or the Gaussian KL interval lies above 1 nat with MMD p < ALPHA
ALPHA = 0.01
SHELL_RATIO = (0.8, 1.25)  # the complement differs when its variance interval lies outside this range and p < ALPHA,
SHELL_OVERLAP = 0.5  # or when fewer than half of the prior's samples fall inside the codes' shell (with p < ALPHA)
WIDE, NARROW = 1.5, 1 / 1.5  # aggregate variance per direction read as "wider" / "narrower" than the prior


def _split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint halves of range(n) (seeded): one chooses the subspace, the other is tested in it."""
    order = torch.randperm(n, generator=generator(seed + 17))
    return order[: n // 2].sort().values, order[n // 2:].sort().values


def shape_reading(aggregate_variance: list[float], complement_variance: float) -> str:
    """What the aggregate posterior's spectrum means for samples from the prior."""
    wide = [v for v in aggregate_variance if v > WIDE]
    narrow = [v for v in aggregate_variance if v < NARROW]
    parts = []
    if wide:
        parts.append(f"along {len(wide)} informative direction(s) the codes spread wider than the prior (aggregate "
                     f"variance up to {max(wide):.2f} against 1): prior samples are under-dispersed there and decode "
                     "towards the average image (blurry, little variety)")
    if narrow:
        parts.append(f"along {len(narrow)} informative direction(s) the codes are narrower than the prior (variance "
                     f"down to {min(narrow):.2f}): prior samples there fall outside the codes")
    if not parts:
        parts.append("the aggregate variance of every informative direction is within a factor 1.5 of the prior's")
    if math.isfinite(complement_variance):
        parts.append(f"the complement has {complement_variance:.3f} variance per direction against the prior's 1")
    return "; ".join(parts)


class Reference:
    """What the codes are compared with: the model's prior, through its samples in the informative coordinates
    u_p (S, k) and, for a prior other than N(0, I), their squared complement norms (S,) and the whitening
    u -> L^-1 (u - m) by the samples' mean m and covariance L L^T (the identity for N(0, I), whose u_p are drawn
    directly: V^T z ~ N(0, I_k) for orthonormal V)."""

    def __init__(self, prior: Prior, sub, samples: int, g: torch.Generator, device):
        self.standard = prior.is_standard_normal
        self.name = prior.describe()
        if self.standard:
            self.u = torch.randn((samples, sub.k), generator=g, dtype=torch.float64, device=g.device).cpu()
            self.sq = None
            return
        u, sq, total = [], [], 0.0
        for i in range(0, samples, 256):  # in chunks: (S, D) need not be held
            z = prior.sample(min(256, samples - i), g, device)
            u.append(sub.coordinates(z).double().cpu())
            sq.append(sub.complement_sq_norm(z).cpu())
            total = total + z.double().sum(0)
        self.u, self.sq = torch.cat(u), torch.cat(sq)
        # the complement's variance (centred, as the codes' is): E||P z||^2 - ||P E z||^2
        mean_z = (total / samples).to(z.dtype).unsqueeze(0)
        self.centred_sq = float(self.sq.double().mean()) - float(sub.complement_sq_norm(mean_z).double().cpu()[0])
        self.mean = self.u.mean(0)
        self.chol = torch.linalg.cholesky(torch.cov(self.u.T).reshape(sub.k, sub.k)) if sub.k else None

    def whiten(self, u: torch.Tensor) -> torch.Tensor:
        """u (n, k) in the prior's units: L^-1 (u - m)."""
        if self.standard or not u.shape[1]:
            return u
        return torch.linalg.solve_triangular(self.chol, (u.double() - self.mean).T, upper=False).T

    def relative_covariance(self, c: torch.Tensor) -> torch.Tensor:
        """The aggregate covariance C (k, k) in the prior's units, L^-1 C L^-T."""
        if self.standard or not c.shape[0]:
            return c
        left = torch.linalg.solve_triangular(self.chol, c.double(), upper=False)
        return torch.linalg.solve_triangular(self.chol, left.T, upper=False).T

    def complement_variance(self, dof: int) -> float:
        """The prior's variance per complement direction: 1 for N(0, I), its samples' (centred) otherwise."""
        return 1.0 if self.standard else self.centred_sq / dof

    def shell(self, sq_q: torch.Tensor, dof: int, quantile: float) -> dict:
        """The shell test of the codes' complement norms (n,) against the prior's, and the share of the prior's
        mass inside the codes' shell (their quantile .. 1 - quantile range)."""
        lo, hi = np.quantile(sq_q.numpy(), [quantile, 1 - quantile])
        if self.standard:
            shell = shell_test(sq_q.numpy(), dof).to_dict()
            shell["overlap"] = float(chi2.cdf(hi, dof) - chi2.cdf(lo, dof))
        else:
            shell = shell_two_sample_test(sq_q.numpy(), self.sq.numpy(), dof).to_dict()
            shell["overlap"] = float(((self.sq >= lo) & (self.sq <= hi)).double().mean())
        shell["overlap_without_gap"] = 1 - 2 * quantile
        return shell


def shell_two_sample_test(sq_q, sq_p, dof: int, *, level: float = 0.95) -> TestResult:
    """The shell test against a prior's samples instead of the chi-square law: squared complement norms of codes
    sq_q (n,) and of prior samples sq_p (m,). effect = mean(sq_q) / mean(sq_p), the variance per direction in the
    prior's units (null 1), with a delta-method interval; p-value: the two-sample Kolmogorov-Smirnov test."""
    a, b = np.asarray(sq_q, dtype=np.float64), np.asarray(sq_p, dtype=np.float64)
    effect = float(a.mean() / b.mean())
    se = effect * math.sqrt(a.var(ddof=1) / (len(a) * a.mean() ** 2) + b.var(ddof=1) / (len(b) * b.mean() ** 2))
    half = float(stats.norm.ppf(0.5 + level / 2)) * se
    ks = stats.ks_2samp(a, b)
    detail = {"radius_ratio": math.sqrt(effect), "dof": int(dof), "n": len(a), "effect_se": se,
              "ks_statistic": float(ks.statistic), "ci_method": "normal, delta method on the two means"}
    return TestResult("shell", effect, effect - half, effect + half, float(ks.pvalue), 1.0, len(a), len(b), int(dof),
                      level, detail)


def _informative_axes(mu, logvar, prior: Prior) -> torch.Tensor:
    """Per axis, how much it carries: the mean KL to N(0, 1) for the standard prior, Var_x[mu_d(x)] otherwise (D,)."""
    if prior.is_standard_normal:
        kl = sum(kl_std_normal_per_dim(m.double(), lv.double()).sum(0) for m, lv in zip(mu.split(512), logvar.split(512)))
        return kl / mu.shape[0]
    return torch.cat([mu[:, j:j + 4096].double().var(0) for j in range(0, mu.shape[1], 4096)])


def finite_mixture(mu, logvar, z_q, g: torch.Generator, quantile: float, max_dims: int,
                   prior: Prior) -> tuple[dict, dict]:
    """Holes and the KL estimate of the N-point mixture on the axes that carry KL (at most ``max_dims``), against
    the prior's marginal on those axes."""
    score = _informative_axes(mu, logvar, prior)
    keep = torch.argsort(score, descending=True)[:max_dims]
    keep = keep[score[keep] > 1e-3] if (score[keep] > 1e-3).any() else keep[:1]
    m, lv = mu[:, keep], logvar[:, keep]
    marginal = prior.marginal(keep)
    z_p = marginal.sample(z_q.shape[0], g)  # prior samples on the kept axes
    log_q_at_q = mixture_log_density(z_q[:, keep], m, lv)
    log_q_at_p = mixture_log_density(z_p, m, lv)
    terms = log_q_at_q - marginal.log_prob(z_q[:, keep].double())
    cut = float(torch.quantile(log_q_at_q, quantile))
    holes = float((log_q_at_p < cut).double().mean())
    return {
        "dims_used": int(keep.numel()), "points": int(mu.shape[0]),
        "kl": float(terms.mean()), "kl_se": float(terms.std() / math.sqrt(terms.numel())),
        "holes": holes, "holes_expected_without_gap": quantile,
        "holes_se": math.sqrt(max(holes * (1 - holes), 1e-12) / z_p.shape[0]), "log_q_threshold": cut,
        "note": ("these describe the finite mixture (1/N) sum_n q(z|x_n) over the encoded images, which in many "
                 "dimensions is a set of disjoint blobs: they read 'holes' and tens to hundreds of nats even when "
                 "q(z) equals the prior in distribution; the verdict reads the tests above, not these"),
    }, {"log_q_at_prior": log_q_at_p.cpu().numpy(), "log_q_at_aggregate": log_q_at_q.cpu().numpy()}


def aggregate_posterior_gap(subject, *, mixture_points: int = 10000, samples: int = 2000, threshold: float = 0.01,
                            max_informative: int = 64, permutations: int = 200, quantile: float = 0.01,
                            mixture_dims: int = 256, seed: int = 0) -> AnalysisResult:
    """The aggregate posterior's shape against the prior, two-sample tests in its informative subspace, the shell
    test on the complement, a lower bound on KL(q(z) || p(z)), and the finite mixture's holes (training codes)."""
    x_train = subject.data.x_train
    idx = subsample(x_train.shape[0], points_within_budget(subject.latent_dim, mixture_points, arrays=2), seed)
    fit, test = _split(idx.numel(), seed)
    if encode_all(subject.model, x_train[idx[:1]])[1] is None:
        raise NotApplicable("the aggregate-posterior analysis needs posterior variances; this model is deterministic "
                            "(its aggregate posterior is a set of points; use the samples and quality analyses)")
    # the half that chooses the subspace is needed only for its PCA: encode it, take V, let it go
    spectrum = pca(encode_all(subject.model, x_train[idx[fit]])[0], seed=seed)
    sub = informative_subspace(spectrum, threshold, max_informative)
    del spectrum
    mu, logvar = encode_all(subject.model, x_train[idx[test]])  # the tested half: (n, D) each
    n_fit, (n, d) = fit.numel(), mu.shape
    k = sub.k
    shape = aggregate_covariance(sub, mu, torch.stack([lv.exp().sum(0) for lv in logvar.split(512)]).sum(0) / n)
    g = generator(seed, mu.device)
    # each tested code once (no replacement): the samples are then iid draws of the population's q(z), so the
    # intervals below hold for the population and not for the finite mixture of these codes
    samples = min(samples, n)
    pick = torch.randperm(n, generator=g, device=mu.device)[:samples]
    z_q = aggregate_samples(mu, logvar, samples, g, pick)  # (S, D)
    u_q = sub.coordinates(z_q).double()
    prior = prior_of(subject.model)
    with torch.no_grad():
        ref = Reference(prior, sub, samples, g, mu.device)
    u_p = ref.u
    tests = {}
    if k:
        tests["classifier"] = classifier_test(u_p.numpy(), u_q.numpy(), seed=seed).to_dict()
        tests["mmd"] = mmd_test(u_p.numpy(), u_q.numpy(), permutations=permutations, seed=seed).to_dict()
        tests["energy"] = energy_test(u_p.numpy(), u_q.numpy(), permutations=permutations, seed=seed).to_dict()
        tests["knn"] = knn_test(u_p.numpy(), u_q.numpy(), permutations=permutations, seed=seed).to_dict()
    dof = d - k
    if dof > 0:
        tests["shell"] = ref.shell(sub.complement_sq_norm(z_q).cpu(), dof, quantile)
    u_white = ref.whiten(u_q.cpu())
    kl_inf = gaussian_kl_estimate(u_white)
    kl_inf_ci = bootstrap(gaussian_kl_estimate, u_white, seed=seed) if k else (0.0, 0.0)
    if dof > 0:
        r, (r_lo, r_hi) = tests["shell"]["effect"], (tests["shell"]["ci_low"], tests["shell"]["ci_high"])
        kl_c = complement_kl_lower_bound(r, dof)
        kl_c_lo = 0.0 if r_lo <= 1 <= r_hi else min(complement_kl_lower_bound(r_lo, dof), complement_kl_lower_bound(r_hi, dof))
        kl_c_hi = max(complement_kl_lower_bound(r_lo, dof), complement_kl_lower_bound(r_hi, dof))
    else:
        kl_c = kl_c_lo = kl_c_hi = 0.0
    gaussian_kl = {
        "informative": kl_inf, "informative_ci": list(kl_inf_ci),
        "complement_lower_bound": kl_c, "complement_ci": [kl_c_lo, kl_c_hi],
        "total_lower_bound": kl_inf + kl_c, "total_ci": [max(kl_inf_ci[0], 0.0) + kl_c_lo, kl_inf_ci[1] + kl_c_hi],
        "note": ("KL(q(z) || p(z)) >= KL(q_G || p) >= this sum, q_G the Gaussian with q's moments (subspace and "
                 "complement blocks; the complement's variance taken as spread evenly); Wishart bias removed"
                 if ref.standard else
                 "the same sum with q's moments against the prior samples' moments (the informative coordinates "
                 "whitened by the prior's, the complement's variance divided by the prior's): it compares the "
                 "shapes, and bounds KL(q(z) || p(z)) only for a Gaussian prior"),
    }
    with torch.no_grad():
        mixture, arrays = finite_mixture(mu, logvar, z_q, g, quantile, mixture_dims, prior)
    agg = [float(v) for v in torch.linalg.eigvalsh(ref.relative_covariance(shape["covariance"])).flip(0)]
    complement_variance = shape["complement_variance"] / ref.complement_variance(dof) if dof > 0 else float("nan")
    informative_mismatch = bool(k and (tests["classifier"]["ci_low"] >= AUC_GAP or
                                       (kl_inf_ci[0] >= KL_GAP and tests["mmd"]["p_value"] < ALPHA)))
    shell_mismatch = bool(dof > 0 and tests["shell"]["p_value"] < ALPHA and (
        tests["shell"]["ci_high"] < SHELL_RATIO[0] or tests["shell"]["ci_low"] > SHELL_RATIO[1]
        or tests["shell"]["overlap"] < SHELL_OVERLAP))
    data = {
        "latent_dim": d, "points": {"subspace": n_fit, "tested": n},
        "reference": ref.name,
        "informative": {
            "threshold": threshold, "dims": k, "above_threshold": sub.above_threshold, "capped": sub.capped,
            "code_eigenvalues": [float(v) for v in sub.eigenvalues],
            "aggregate_variance": agg, "code_variance": [float(v) for v in shape["code_variance"]],
            "posterior_variance": [float(v) for v in shape["posterior_variance"]],
            "max_aggregate_variance": max(agg) if agg else None, "min_aggregate_variance": min(agg) if agg else None,
        },
        "complement": {"dims": dof, "variance_per_direction": shape["complement_variance"],
                       "prior_variance_per_direction": ref.complement_variance(dof) if dof > 0 else None},
        "reading": shape_reading(agg, complement_variance) + ("" if ref.standard else
                                                              " (variances in the units of the prior's samples)"),
        "tests": tests, "gaussian_kl": gaussian_kl, "finite_mixture": mixture,
        "informative_mismatch": informative_mismatch, "shell_mismatch": shell_mismatch,
        # the headline numbers (results tables, `vaelab analyze`)
        "classifier_auc": tests["classifier"]["effect"] if k else None,
        "mmd2": tests["mmd"]["effect"] if k else None,
        "shell_variance": tests["shell"]["effect"] if dof > 0 else None,
        "kl_aggregate_prior": gaussian_kl["total_lower_bound"],
        "holes": mixture["holes"],
    }
    params = {"mixture_points": n_fit + n, "samples": samples, "threshold": threshold, "max_informative": max_informative,
              "permutations": permutations, "quantile": quantile, "mixture_dims": mixture_dims, "seed": seed,
              "split": "train",
              "rules": {"informative": f"classifier AUC interval above {AUC_GAP}, or Gaussian KL interval above "
                                       f"{KL_GAP} nat with MMD p < {ALPHA}",
                        "shell": f"shell p < {ALPHA} and (variance interval outside {SHELL_RATIO[0]}..{SHELL_RATIO[1]} "
                                 f"or under {SHELL_OVERLAP:.0%} of prior samples inside the codes' shell)"}}
    arrays["informative_prior"] = u_p[:1000].float().numpy()
    arrays["informative_aggregate"] = u_q[:1000].float().numpy()
    return AnalysisResult("prior-gap", params, data, arrays)


def plot(result: AnalysisResult, save) -> None:
    plt = pyplot()
    r, a = result.data, result.arrays
    if not a:
        return
    info = r["informative"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    agg = info["aggregate_variance"]
    if agg:
        axes[0].bar(np.arange(1, len(agg) + 1), agg, color="#4C72B0", label="aggregate posterior")
        axes[0].axhline(1.0, color="#C44E52", ls="--", lw=1, label="prior (1)")
        axes[0].set_yscale("log")
        axes[0].legend(fontsize=8)
    axes[0].set_xlabel("informative direction (eigenvalues of the aggregate covariance)")
    axes[0].set_ylabel("variance")
    axes[0].set_title(f"Shape: {info['dims']} informative directions; complement "
                      f"{r['complement']['variance_per_direction']:.3f} per direction", fontsize=9)
    if a["informative_prior"].shape[1] >= 1:
        up, uq = a["informative_prior"], a["informative_aggregate"]
        y = (lambda u: u[:, 1]) if up.shape[1] >= 2 else (lambda u: np.zeros(len(u)))
        axes[1].scatter(up[:, 0], y(up), s=3, alpha=0.4, c="#C44E52", label=prior_label(r.get("reference", "N(0, I)")))
        axes[1].scatter(uq[:, 0], y(uq), s=3, alpha=0.4, c="#4C72B0", label="aggregate posterior q(z)")
        axes[1].set_xlabel("first informative coordinate")
        axes[1].set_ylabel("second informative coordinate")
        auc = r["tests"]["classifier"]
        axes[1].set_title(f"Classifier AUC {auc['effect']:.2f} [{auc['ci_low']:.2f}, {auc['ci_high']:.2f}] on "
                          f"{info['dims']} coordinates", fontsize=9)
        axes[1].legend(fontsize=8, markerscale=3)
    save(fig, "shape")

    m = r["finite_mixture"]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    lo = np.percentile(np.concatenate([a["log_q_at_prior"], a["log_q_at_aggregate"]]), 0.5)
    hi = max(a["log_q_at_prior"].max(), a["log_q_at_aggregate"].max())
    bins = np.linspace(lo, hi, 60)
    ax.hist(np.clip(a["log_q_at_aggregate"], lo, None), bins=bins, alpha=0.6, color="#4C72B0", density=True,
            label="z from the aggregate posterior q(z)")
    ax.hist(np.clip(a["log_q_at_prior"], lo, None), bins=bins, alpha=0.6, color="#C44E52", density=True,
            label=f"z from the {prior_label(r.get('reference', 'N(0, I)'))}")
    ax.axvline(m["log_q_threshold"], color="black", ls="--", lw=1,
               label=f"{100 * result.params['quantile']:.0f}% quantile of q's own samples")
    ax.set_xlabel(f"log density under the {m['points']}-point mixture (nats)")
    ax.set_ylabel("density")
    ax.set_title(f"Finite mixture: {100 * m['holes']:.1f}% of prior samples below the quantile "
                 f"({m['dims_used']} of {r['latent_dim']} dims)", fontsize=9)
    ax.legend(fontsize=8)
    save(fig, "finite-mixture")
