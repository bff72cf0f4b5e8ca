"""The code matrix at any latent size: PCA, the informative subspace, and the shape of the aggregate posterior.

Codes are the posterior parameters of N encoded images, mu (N, D) and logvar (N, D). D runs from 2 to 8x8x1024 =
65,536, so nothing D x D or N x N is ever formed:

- Per-dimension moments (mean and variance of mu_d(x), mean sigma_d^2(x), average KL to N(0, 1)) are streamed
  over batches in float64, for any number of images.
- PCA of the posterior means from the centred code matrix M = mu - mean(mu): Cov_x[mu] = M^T M / (N - 1) has
  eigenvalues s_i^2 / (N - 1) and eigenvectors v_i from the singular values and right singular vectors of M.
  Exact when min(N, D) <= EXACT_SVD (the SVD of M, or the eigen-decomposition of the N x N Gram matrix when N is
  that small and D is not); otherwise the top k by a randomised SVD (Halko et al. 2011, ``torch.svd_lowrank``),
  with the trace giving the variance the top k leave out.
- The informative subspace: the top directions V (D, k) of Cov_x[mu] whose eigenvalue exceeds a threshold (at most
  ``max_dims`` of them). The decoder reads the code through these; the complement is what the "soap bubble" is
  made of.
- The aggregate posterior q(z) = (1/N) sum_n q(z|x_n) has covariance Cov_q = Cov_x[mu] + E_x[diag sigma^2(x)]; the
  prior's is I. In the informative subspace, C = V^T Cov_q V (k x k); in the complement, the mean variance per
  direction r = (tr Cov_q - tr C) / (D - k).
- Gaussian KL: because log p(z) is quadratic, KL(q || N(0, I)) = KL(q || q_G) + KL(q_G || N(0, I)) >= KL(q_G || p),
  q_G the Gaussian with q's mean and covariance; and by Fischer's inequality the block-diagonal part (subspace,
  complement) bounds it from below again. So 0.5 [tr C + |m|^2 - k - log det C] + 0.5 (D - k)(r - 1 - log r)
  is a lower bound on the population's KL(q(z) || p(z)), estimated with the Wishart bias of log det removed.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import digamma
from scipy.stats import norm

from vaelab.analysis.framework.common import DEFAULT_BATCH, model_device
from vaelab.errors import ConfigError
from vaelab.models.posteriors import GaussianPosterior, kl_std_normal_per_dim

EXACT_SVD = 2048  # exact spectrum when min(N, D) is at most this (SVD or a Gram matrix); randomised top-k above
TOP_K = 256  # components the randomised SVD returns
CODE_MEMORY = int(float(os.environ.get("VAELAB_CODE_MEMORY_GB", "1.0")) * 2 ** 30)  # bytes of codes held at once


def points_within_budget(latent_dim: int, requested: int, arrays: int = 2, budget: int | None = None) -> int:
    """How many codes fit the memory budget: ``arrays`` float32 matrices (N, D) (mu and logvar by default)."""
    budget = CODE_MEMORY if budget is None else budget
    return max(2, min(int(requested), budget // (4 * arrays * max(1, latent_dim))))


# --- streaming per-dimension moments -------------------------------------------------------------------
@dataclass
class CodeMoments:
    """Per-dimension moments over N images (float64, (D,) each); ``mean_sigma2`` and ``kl`` are None for a
    deterministic encoder."""

    n: int
    mean_mu: torch.Tensor
    var_mu: torch.Tensor  # unbiased
    mean_sigma2: torch.Tensor | None
    kl: torch.Tensor | None  # E_x KL(q(z_d|x) || N(0, 1))


@torch.no_grad()
def code_moments(model, x: torch.Tensor, batch_size: int = DEFAULT_BATCH) -> CodeMoments:
    """Stream the encoder over x (N, C, H, W) and accumulate per-dimension moments; memory O(batch x D)."""
    device = model_device(model)
    # float64 temporaries of (batch, D): keep each batch near 2^22 values for a big latent
    batch_size = max(16, min(batch_size, (1 << 22) // math.prod(model.latent_shape)))
    n, s1, s2, sig, kl = 0, None, None, None, None
    shift = None  # the first batch's mean: sums of (mu - shift) keep the variance accurate
    for i in range(0, x.shape[0], batch_size):
        q = model.encode(x[i:i + batch_size].to(device))
        mu = q.mu.double()
        if shift is None:
            shift = mu.mean(0)
            s1, s2 = torch.zeros_like(shift), torch.zeros_like(shift)
        c = mu - shift
        s1 += c.sum(0)
        s2 += c.pow(2).sum(0)
        if q.logvar is not None:
            lv = q.logvar.double()
            sig = lv.exp().sum(0) if sig is None else sig + lv.exp().sum(0)
            k = kl_std_normal_per_dim(mu, lv).sum(0)
            kl = k if kl is None else kl + k
        n += mu.shape[0]
    mean_c = s1 / n
    var = (s2 - n * mean_c.pow(2)) / max(n - 1, 1)
    return CodeMoments(n, (shift + mean_c).cpu(), var.clamp_min(0).cpu(),
                       None if sig is None else (sig / n).cpu(), None if kl is None else (kl / n).cpu())


# --- PCA from the code matrix -------------------------------------------------------------------------
@dataclass
class Spectrum:
    """PCA of codes mu (N, D): eigenvalues of Cov_x[mu] (k,), descending, their directions (D, k) and the mean (D,).

    ``exact`` says whether every nonzero eigenvalue is here (exact SVD) or only the top k (randomised);
    ``total_variance`` is tr Cov_x[mu], exact either way."""

    eigenvalues: torch.Tensor
    components: torch.Tensor
    mean: torch.Tensor
    total_variance: float
    n_points: int
    latent_dim: int
    exact: bool

    def count_above(self, threshold: float) -> tuple[int, bool]:
        """(number of eigenvalues above threshold, whether that is only a lower bound: the randomised top-k all
        exceed it)."""
        above = int((self.eigenvalues > threshold).sum())
        return above, (not self.exact and above == self.eigenvalues.numel())


def pca(mu: torch.Tensor, top_k: int = TOP_K, seed: int = 0) -> Spectrum:
    """PCA of posterior means mu (N, D) from the centred N x D matrix M, by whichever route is exact and cheap:

    - D <= EXACT_SVD: the SVD of M (all D eigenvalues);
    - N <= EXACT_SVD < D: the eigen-decomposition of the small Gram matrix M M^T / (N - 1) (at most 2048 x 2048),
      whose nonzero eigenvalues are those of Cov_x[mu]; directions v_i = M^T u_i / s_i for the top ``top_k``;
    - both larger: a randomised SVD for the top ``top_k`` (Halko et al. 2011)."""
    n, d = mu.shape
    mean = sum(c.double().sum(0) for c in mu.split(1024)) / n  # (no float64 copy of the whole matrix)
    if n < 2:
        return Spectrum(torch.zeros(0, dtype=torch.float64), torch.zeros(d, 0), mean, 0.0, n, d, True)
    dtype = torch.float64 if n * d <= 2 ** 25 else torch.float32
    m = mu.to(dtype) - mean.to(dtype)  # a centred copy
    total = float(sum(float(c.double().pow(2).sum()) for c in m.split(1024)) / (n - 1))
    exact = min(n, d) <= EXACT_SVD
    if d <= EXACT_SVD:
        _, s, vh = torch.linalg.svd(m, full_matrices=False)
        evals, v = s.double().pow(2) / (n - 1), vh.T
    elif n <= EXACT_SVD:
        gram_evals, u = torch.linalg.eigh((m @ m.T).double())  # ascending; (N, N) with N <= EXACT_SVD
        evals = gram_evals.flip(0).clamp_min(0) / (n - 1)
        k = min(top_k, n - 1)
        s = gram_evals.flip(0)[:k].clamp_min(1e-30).sqrt()
        v = (m.T @ u.flip(1)[:, :k].to(dtype)) / s.to(dtype)  # (D, k), unit columns
    else:
        k = min(top_k, n - 1, d)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, s, v = torch.svd_lowrank(m, q=min(k + 10, n, d), niter=4)
        evals, v = s[:k].double().pow(2) / (n - 1), v[:, :k]
    del m
    return Spectrum(evals, v.float(), mean, total, n, d, exact)  # every route gives descending eigenvalues


def axis_alignment(components: torch.Tensor) -> torch.Tensor:
    """Per component, the largest squared loading on one coordinate axis: (D, k) -> (k,); 1 = on an axis."""
    return components.double().pow(2).max(0).values if components.numel() else torch.zeros(0, dtype=torch.float64)


def random_alignment(d: int, seed: int = 0) -> float:
    """E[max_i v_i^2] for a uniformly random unit vector in d dimensions (Monte Carlo, fixed seed, bounded memory)."""
    n = max(50, min(2000, 20_000_000 // max(d, 1)))
    v = torch.randn((n, d), generator=torch.Generator().manual_seed(seed))
    return float((v.pow(2).max(1).values / v.pow(2).sum(1)).double().mean())


# --- the informative subspace and the aggregate posterior's shape --------------------------------------
@dataclass
class Subspace:
    """The informative directions V (D, k) of the codes (orthonormal columns) and the threshold that chose them."""

    basis: torch.Tensor
    eigenvalues: torch.Tensor  # of Cov_x[mu] along each direction (k,)
    threshold: float
    above_threshold: int  # how many eigenvalues exceeded it (k is at most max_dims of them)
    capped: bool  # more directions than max_dims exceeded the threshold

    @property
    def k(self) -> int:
        return self.basis.shape[1]

    @property
    def latent_dim(self) -> int:
        return self.basis.shape[0]

    def coordinates(self, z: torch.Tensor) -> torch.Tensor:
        """u = V^T z: (n, D) -> (n, k)."""
        return z @ self.basis.to(z.device, z.dtype)

    def complement_sq_norm(self, z: torch.Tensor) -> torch.Tensor:
        """||z - V V^T z||^2 = ||z||^2 - ||V^T z||^2: (n, D) -> (n,), float64 (in chunks of rows)."""
        out = [(c.double().pow(2).sum(1) - self.coordinates(c).double().pow(2).sum(1)).clamp_min(0)
               for c in z.split(256)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def combine(self, u: torch.Tensor, z_other: torch.Tensor) -> torch.Tensor:
        """The latent whose informative coordinates are u (n, k) and whose complement is that of z_other (n, D)."""
        v = self.basis.to(z_other.device, z_other.dtype)
        return z_other - (z_other @ v) @ v.T + u.to(z_other.dtype) @ v.T


def informative_subspace(spectrum: Spectrum, threshold: float = 0.01, max_dims: int = 64) -> Subspace:
    """The top eigen-directions of Cov_x[mu] with eigenvalue above ``threshold``, at most ``max_dims``."""
    if threshold <= 0:
        raise ConfigError(f"informative threshold {threshold} must be positive")
    above, _ = spectrum.count_above(threshold)
    k = min(above, max_dims)
    return Subspace(spectrum.components[:, :k].contiguous(), spectrum.eigenvalues[:k], threshold, above,
                    above > max_dims)


def aggregate_covariance(subspace: Subspace, mu: torch.Tensor, mean_sigma2: torch.Tensor | None) -> dict:
    """The aggregate posterior's covariance in the subspace, C = V^T (Cov_x[mu] + diag E[sigma^2]) V (k x k), its
    eigenvalues against the prior's 1, and the mean variance per complement direction r.

    mu (N, D) are codes independent of those that chose V (or the same, with the selection bias that brings)."""
    n, d = mu.shape
    k = subspace.k
    u = subspace.coordinates(mu.float()).double()  # (N, k)
    cov_mu_v = torch.cov(u.T).reshape(k, k) if k else torch.zeros(0, 0, dtype=torch.float64)
    v = subspace.basis.double()
    s2 = torch.zeros(d, dtype=torch.float64) if mean_sigma2 is None else mean_sigma2.double()
    c = cov_mu_v + (v * s2[:, None]).T @ v  # (k, k)
    total_mu = float(sum(float(torch.var(mu[:, j:j + 4096].double(), 0).sum()) for j in range(0, d, 4096)))
    total = total_mu + float(s2.sum())
    r = (total - float(torch.trace(c))) / (d - k) if d > k else float("nan")
    evals = torch.linalg.eigvalsh(c).flip(0) if k else torch.zeros(0, dtype=torch.float64)
    return {"covariance": c, "eigenvalues": evals, "code_variance": torch.diagonal(cov_mu_v).clone(),
            "posterior_variance": torch.diagonal((v * s2[:, None]).T @ v).clone(),
            "complement_variance": r, "total_variance": total, "latent_dim": d}


def wishart_log_det_bias(k: int, n: int) -> float:
    """E[log det S] - log det Sigma for the unbiased sample covariance S of n Gaussian points in k dimensions:
    (n - 1) S ~ W_k(Sigma, n - 1), so the bias is sum_{i=0}^{k-1} psi((n - 1 - i) / 2) + k log(2 / (n - 1))."""
    m = n - 1
    return float(sum(digamma((m - i) / 2) for i in range(k)) + k * math.log(2 / m))


def gaussian_kl_estimate(u: torch.Tensor) -> float:
    """KL(N(m, C) || N(0, I_k)) from n points u (n, k) of the distribution, with the bias of a Gaussian sample's
    log det S and |mean|^2 removed: 0.5 [tr S + |m|^2 - tr S / n - k - (log det S - bias)]."""
    n, k = u.shape
    if k == 0:
        return 0.0
    u = u.double()
    m = u.mean(0)
    s = torch.cov(u.T).reshape(k, k)
    sign, logdet = torch.linalg.slogdet(s)
    if sign <= 0:
        return float("inf")
    tr = float(torch.trace(s))
    return 0.5 * (tr + float(m.pow(2).sum()) - tr / n - k - (float(logdet) - wishart_log_det_bias(k, n)))


def complement_kl_lower_bound(r: float, dims: int) -> float:
    """0.5 (D - k)(r - 1 - log r): the least KL the complement adds when its mean variance per direction is r (the
    bound is attained when the variance is spread evenly; f(c) = c - 1 - log c is convex)."""
    if dims <= 0 or not math.isfinite(r) or r <= 0:
        return 0.0 if dims <= 0 else float("inf")
    return 0.5 * dims * (r - 1 - math.log(r))


def bootstrap(statistic, u: torch.Tensor, rounds: int = 200, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A normal interval from the bootstrap standard error of ``statistic(u)`` over rows of u: (low, high)."""
    g = torch.Generator().manual_seed(seed)
    est = statistic(u)
    vals = [statistic(u[torch.randint(0, u.shape[0], (u.shape[0],), generator=g)]) for _ in range(rounds)]
    vals = np.asarray([v for v in vals if math.isfinite(v)])
    if not math.isfinite(est) or vals.size < 2:
        return est, est

    half = float(norm.ppf(0.5 + level / 2)) * float(vals.std(ddof=1))
    return est - half, est + half


# --- samples of the aggregate posterior -----------------------------------------------------------------
def aggregate_samples(mu: torch.Tensor, logvar: torch.Tensor | None, n: int, g: torch.Generator,
                      pick: torch.Tensor | None = None) -> torch.Tensor:
    """n draws of q(z) = (1/N) sum_n q(z|x_n): a random code, then z ~ N(mu, diag sigma^2): (n, D) float32."""
    if pick is None:
        pick = torch.randint(0, mu.shape[0], (n,), generator=g, device=mu.device)
    q = GaussianPosterior(mu[pick].float(), None if logvar is None else logvar[pick].float())
    return q.rsample(1, g)[0]
