"""Two-sample tests: do codes from the aggregate posterior q(z) differ from prior samples N(0, I)?

Every test returns a :class:`TestResult`: an effect size with a confidence interval, the effect's value under H0
(same distribution) and a p-value against H0. A verdict elsewhere reads those.

- :func:`classifier_test`: held-out ROC AUC of a classifier told to separate the samples (Lopez-Paz & Oquab 2017).
- :func:`mmd_test`: unbiased MMD^2 with a Gaussian kernel (Gretton et al. 2012).
- :func:`energy_test`: the energy distance (Szekely & Rizzo 2004).
- :func:`knn_test`: the share of same-sample nearest neighbours (Schilling 1986, Henze 1988).
- :func:`shell_test`: squared norms of prior-space projections against chi2(dof) (one sample; the "soap bubble").

Samples a (m, D) and b (n, D) may be numpy arrays or torch tensors; everything is computed in float64. The
kernel and distance tests hold one pooled N x N matrix, N = m + n <= 4000 (128 MB); larger inputs are subsampled
to at most 2000 per side (``detail["subsampled"]``). Their p-values are permutation p-values
(1 + #{T_perm >= T}) / (1 + permutations), so the smallest possible p is 1 / (1 + permutations).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vaelab.analysis.framework.common import blas_threads

MAX_POOLED = 4000  # largest pooled kernel/distance matrix: 4000 x 4000 float64 = 128 MB
MAX_BANDWIDTH_POINTS = 2000


@dataclass
class TestResult:
    """One two-sample test: ``effect`` with its ``level`` interval [ci_low, ci_high], its value under H0
    (``null_effect``) and the p-value against H0."""

    __test__ = False  # not a pytest test class

    name: str
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    null_effect: float
    n_a: int
    n_b: int
    dims: int
    level: float = 0.95
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON-able values (numpy scalars and arrays become floats, ints and lists)."""
        return _plain(asdict(self))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return x


# --- inputs -------------------------------------------------------------------------------------------------------

def _as_samples(x, name: str) -> np.ndarray:
    """Samples as a float64 array (n, D); a 1-D input is n samples of one dimension."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be (n, D) samples, got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite values")
    return x


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_samples(a, "a"), _as_samples(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    return a, b


def _cap(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """At most MAX_POOLED samples in all: when m + n is larger, a seeded subset of at most MAX_POOLED / 2 per side."""
    info = {"subsampled": False, "n_given": [len(a), len(b)]}
    if len(a) + len(b) <= MAX_POOLED:
        return a, b, info
    rng = np.random.default_rng([seed, 1])
    per_side = MAX_POOLED // 2
    a, b = (x if len(x) <= per_side else x[np.sort(rng.choice(len(x), per_side, replace=False))] for x in (a, b))
    info["subsampled"] = True
    return a, b, info


def _z(level: float) -> float:
    """Two-sided normal quantile of a ``level`` interval (1.96 for 0.95)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return float(stats.norm.ppf(0.5 + level / 2))


def _permutation_p(observed: float, permuted: np.ndarray) -> float:
    """(1 + #{T_perm >= T}) / (1 + P): exact under H0 (Phipson & Smyth 2010), never 0."""
    return float((1 + np.sum(permuted >= observed)) / (1 + len(permuted)))


def _label_columns(m: int, n: int, count: int, rng: np.random.Generator) -> torch.Tensor:
    """``count`` random relabellings of the pooled sample: (m + n, count) 0/1 columns with m ones (sample a)."""
    labels = np.zeros((count, m + n))
    labels[:, :m] = 1.0
    return torch.from_numpy(rng.permuted(labels, axis=1).T.copy())


def _bootstrap_weights(m: int, count: int, rng: np.random.Generator) -> torch.Tensor:
    """``count`` bootstrap resamples of m points as multiplicities: (m, count), each column sums to m."""
    return torch.from_numpy(rng.multinomial(m, np.full(m, 1.0 / m), size=count).T.astype(np.float64))


# --- MMD and energy distance ---------------------------------------------------------------------------------------

def gaussian_kernel(x, y, bandwidth: float) -> torch.Tensor:
    """k(x_i, y_j) = exp(-||x_i - y_j||^2 / (2 l^2)) for x (m, D), y (n, D) and l = ``bandwidth``: (m, n) float64."""
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    return torch.cdist(x, y).square_().mul_(-0.5 / bandwidth ** 2).exp_()


def median_distance(z, *, max_points: int = MAX_BANDWIDTH_POINTS, seed: int = 0) -> float:
    """The median pairwise distance ||z_i - z_j||, i < j, among at most ``max_points`` seeded rows of z (N, D)."""
    z = torch.as_tensor(z, dtype=torch.float64)
    if z.shape[0] > max_points:
        pick = np.sort(np.random.default_rng([seed, 2]).choice(z.shape[0], max_points, replace=False))
        z = z[torch.from_numpy(pick)]
    i, j = torch.triu_indices(z.shape[0], z.shape[0], offset=1)
    return float(torch.cdist(z, z)[i, j].median())


def mmd2_unbiased(k_aa, k_bb, k_ab, w_a=None, w_b=None):
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) from kernel matrices k_aa (m, m), k_bb (n, n), k_ab (m, n):

        MMD^2_u = 1/(m(m-1)) sum_{i!=j} k(a_i, a_j) + 1/(n(n-1)) sum_{i!=j} k(b_i, b_j) - 2/(mn) sum_{i,j} k(a_i, b_j)

    With weights w_a (m,) or (m, B) and w_b (n,) or (n, B), the weighted U-statistic of each column: point i
    counts w_i times, and pairs of copies of one point are left out as i = j is above (the denominators become
    (sum w)^2 - sum w^2 and sum w_a sum w_b). Multiplicities give a bootstrap resample, 0/1 columns over a pooled
    matrix (k_aa = k_bb = k_ab = K, w_b = 1 - w_a) a relabelling; unit weights give the formula above.
    Returns a float, or an array (B,) for weight columns. The energy distance is this with k = -||x - y||.
    """
    k_aa, k_bb, k_ab = (torch.as_tensor(k, dtype=torch.float64) for k in (k_aa, k_bb, k_ab))
    m, n = k_ab.shape
    if k_aa.shape != (m, m) or k_bb.shape != (n, n):
        raise ValueError(f"kernel shapes do not fit: k_aa {tuple(k_aa.shape)}, k_bb {tuple(k_bb.shape)}, "
                         f"k_ab {tuple(k_ab.shape)}")
    columns = w_a is not None and np.ndim(w_a) == 2
    w_a = torch.ones(m, 1, dtype=torch.float64) if w_a is None else torch.as_tensor(w_a, dtype=torch.float64)
    w_b = torch.ones(n, 1, dtype=torch.float64) if w_b is None else torch.as_tensor(w_b, dtype=torch.float64)
    w_a, w_b = w_a.reshape(m, -1), w_b.reshape(n, -1)

    k_aa_w_a = k_aa @ w_a
    if k_aa is k_ab and k_bb is k_ab and bool(((w_a + w_b) == 1).all()):
        k_ab_w_b = k_ab.sum(1, keepdim=True) - k_aa_w_a  # relabellings of a pooled matrix: K (1 - u) = K 1 - K u
    else:
        k_ab_w_b = k_ab @ w_b
    k_bb_w_b = k_ab_w_b if k_bb is k_ab else k_bb @ w_b  # a pooled matrix passed three times: one product
    s_aa = (w_a * k_aa_w_a).sum(0) - (w_a.square() * k_aa.diagonal()[:, None]).sum(0)
    s_bb = (w_b * k_bb_w_b).sum(0) - (w_b.square() * k_bb.diagonal()[:, None]).sum(0)
    s_ab = (w_a * k_ab_w_b).sum(0)
    pairs_aa = w_a.sum(0).square() - w_a.square().sum(0)
    pairs_bb = w_b.sum(0).square() - w_b.square().sum(0)
    pairs_ab = w_a.sum(0) * w_b.sum(0)
    mmd2 = s_aa / pairs_aa + s_bb / pairs_bb - 2 * s_ab / pairs_ab
    return mmd2.numpy() if columns else float(mmd2[0])


def _kernel_two_sample(kernel: torch.Tensor, m: int, permutations: int, bootstrap: int, seed: int,
                       level: float) -> tuple[float, float, float, float, dict]:
    """MMD^2_u of a pooled kernel matrix (a first, then b) with its permutation p-value and bootstrap interval.

    Bootstrap: each side resampled with replacement (multiplicities over the same matrix); the interval is
    T +/- z * sd(T*). Under H0, where the U-statistic is degenerate, the bootstrap sd is about twice T's true
    spread, so the interval is conservative there; away from H0 it is about right."""
    _check_counts(permutations, bootstrap)
    n = kernel.shape[0] - m
    k_aa, k_bb, k_ab = kernel[:m, :m], kernel[m:, m:], kernel[:m, m:]
    observed = mmd2_unbiased(k_aa, k_bb, k_ab)
    rng = np.random.default_rng(seed)
    u = _label_columns(m, n, permutations, rng)
    permuted = mmd2_unbiased(kernel, kernel, kernel, u, 1 - u)
    boot = mmd2_unbiased(k_aa, k_bb, k_ab, _bootstrap_weights(m, bootstrap, rng), _bootstrap_weights(n, bootstrap, rng))
    boot_sd = float(np.std(boot, ddof=1))
    half = _z(level) * boot_sd
    detail = {"permutations": permutations, "bootstrap": bootstrap, "bootstrap_sd": boot_sd,
              "ci_method": "normal, bootstrap sd", "permutation_mean": float(permuted.mean()),
              "permutation_sd": float(permuted.std(ddof=1)) if permutations > 1 else float("nan")}
    return observed, observed - half, observed + half, _permutation_p(observed, permuted), detail


def _check_counts(permutations: int, bootstrap: int = 2) -> None:
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    if bootstrap < 2:
        raise ValueError(f"bootstrap must be >= 2, got {bootstrap}")


def mmd_test(a, b, *, bandwidth: float | None = None, permutations: int = 200, seed: int = 0, level: float = 0.95,
             bootstrap: int = 200) -> TestResult:
    """Kernel two-sample test (Gretton et al. 2012) of samples a (m, D) and b (n, D).

    effect = MMD^2_u (:func:`mmd2_unbiased`) with k(x, y) = exp(-||x - y||^2 / (2 l^2)), l = ``bandwidth`` or the
    median pairwise distance of (at most 2000 of) the pooled samples; null_effect 0 (the estimate is unbiased, so
    it may come out negative). p-value by permuting the pooled labels; CI: T +/- z * bootstrap sd."""
    a, b = _pair(a, b)
    a, b, info = _cap(a, b, seed)
    pooled = torch.from_numpy(np.concatenate([a, b]))
    if bandwidth is None:
        bandwidth = median_distance(pooled, seed=seed)
    if not bandwidth > 0:
        raise ValueError(f"the bandwidth must be positive, got {bandwidth} (are all samples identical?)")
    kernel = gaussian_kernel(pooled, pooled, bandwidth)
    effect, low, high, p, detail = _kernel_two_sample(kernel, len(a), permutations, bootstrap, seed, level)
    return TestResult("mmd", effect, low, high, p, 0.0, len(a), len(b), a.shape[1], level,
                      {"bandwidth": float(bandwidth), "kernel": "gaussian exp(-||x-y||^2 / (2 l^2))", **detail, **info})


def energy_test(a, b, *, permutations: int = 200, seed: int = 0, level: float = 0.95,
                bootstrap: int = 200) -> TestResult:
    """Energy-distance test (Szekely & Rizzo 2004) of samples a (m, D) and b (n, D).

    effect = 2 E|X - Y| - E|X - X'| - E|Y - Y'| in U-statistic form (i != j within a sample), which is
    :func:`mmd2_unbiased` with the kernel k(x, y) = -||x - y||; null_effect 0 (it is >= 0 in population, the
    estimate may come out negative). p-value by permutation; CI: T +/- z * bootstrap sd."""
    a, b = _pair(a, b)
    a, b, info = _cap(a, b, seed)
    pooled = torch.from_numpy(np.concatenate([a, b]))
    kernel = torch.cdist(pooled, pooled).fill_diagonal_(0.0).neg_()
    effect, low, high, p, detail = _kernel_two_sample(kernel, len(a), permutations, bootstrap, seed, level)
    return TestResult("energy", effect, low, high, p, 0.0, len(a), len(b), a.shape[1], level, {**detail, **info})


# --- nearest neighbours ----------------------------------------------------------------------------------------------

def knn_test(a, b, *, k: int = 5, permutations: int = 200, seed: int = 0, level: float = 0.95) -> TestResult:
    """Nearest-neighbour test (Schilling 1986; Henze 1988) of samples a (m, D) and b (n, D).

    effect T = 1/(N k) sum_i sum_{r<=k} 1[z_i and its r-th nearest neighbour in the pooled sample (self excluded)
    come from the same sample], N = m + n. Under H0 the labels are exchangeable, so
    null_effect = E T = (m(m-1) + n(n-1)) / (N(N-1)); T above it means the samples keep apart. p-value by permuting
    labels over the fixed neighbour graph; CI: T +/- z * sd of the permuted T (the exact null spread, which
    includes Henze's mutual-neighbour terms; an approximation away from H0)."""
    a, b = _pair(a, b)
    a, b, info = _cap(a, b, seed)
    m, n = len(a), len(b)
    big_n = m + n
    if not 1 <= k < big_n:
        raise ValueError(f"k must lie in [1, {big_n - 1}], got {k}")
    _check_counts(permutations)
    pooled = torch.from_numpy(np.concatenate([a, b]))
    distances = torch.cdist(pooled, pooled).fill_diagonal_(float("inf"))
    neighbours = torch.topk(distances, k, dim=1, largest=False).indices.numpy()  # (N, k)
    del distances

    def same_share(labels: np.ndarray) -> np.ndarray:  # labels (..., N) -> T (...)
        return (labels[..., :, None] == labels[..., neighbours]).mean(axis=(-2, -1))

    labels = np.r_[np.zeros(m, dtype=np.int8), np.ones(n, dtype=np.int8)]
    observed = float(same_share(labels))
    null_effect = (m * (m - 1) + n * (n - 1)) / (big_n * (big_n - 1))
    rng = np.random.default_rng(seed)
    permuted = np.concatenate([same_share(rng.permuted(np.tile(labels, (c, 1)), axis=1))
                               for c in _chunks(permutations, 50)])
    sd = float(permuted.std(ddof=1)) if permutations > 1 else float("nan")
    half = _z(level) * sd
    detail = {"k": k, "permutations": permutations, "permutation_mean": float(permuted.mean()),
              "permutation_sd": sd, "ci_method": "normal, permutation sd", **info}
    return TestResult("knn", observed, observed - half, observed + half, _permutation_p(observed, permuted),
                      null_effect, m, n, a.shape[1], level, detail)


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


# --- classifier -------------------------------------------------------------------------------------------------------

def _delong_auc(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """ROC AUC = P(score_pos > score_neg) + 1/2 P(tie) and its DeLong et al. (1988) variance, by midranks:
    V10_i = P(pos_i > neg), V01_j = P(pos > neg_j), var = var(V10) / n_pos + var(V01) / n_neg."""
    n_pos, n_neg = len(pos), len(neg)
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    v10 = (ranks[:n_pos] - stats.rankdata(pos)) / n_neg
    v01 = 1.0 - (ranks[n_pos:] - stats.rankdata(neg)) / n_pos
    auc = float(v10.mean())
    return auc, float(np.var(v10, ddof=1) / n_pos + np.var(v01, ddof=1) / n_neg)


def classifier_test(a, b, *, seed: int = 0, hidden: tuple[int, ...] = (64,), level: float = 0.95,
                    alpha: float = 3.0, learning_rate: float = 3e-3, patience: int = 30,
                    max_iter: int = 300) -> TestResult:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017) of samples a (m, D) and b (n, D).

    An MLP (StandardScaler -> MLPClassifier(hidden), early stopping) learns to tell b (label 1) from a (label 0)
    on a stratified half of the pooled samples, with features (z, ||z||) (the norm makes a shell mismatch
    easy to learn). effect = ROC AUC on the held-out half, null_effect 0.5; CI: AUC +/- z * DeLong sd (clipped to
    [0, 1]); p-value: one-sided Mann-Whitney U on the held-out scores (valid: the held-out half is independent of
    the fitted classifier, so under H0 its scores of a and b are exchangeable).

    Training: Adam at ``learning_rate``, L2 penalty ``alpha``; early stopping keeps the weights with the best
    accuracy on a 10% validation split and stops after ``patience`` epochs without a gain. (scikit-learn's
    defaults, alpha 1e-4 and 10 epochs of patience, stop on the noisy validation accuracy before the net has
    learnt anything: at 1000 samples per side it missed 3 of 64 coordinates with variance 4 most of the time.)"""

    a, b = _pair(a, b)
    x = np.concatenate([a, b])
    x = np.concatenate([x, np.linalg.norm(x, axis=1, keepdims=True)], axis=1)
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, random_state=seed, stratify=y)
    mlp = MLPClassifier(tuple(hidden), alpha=alpha, learning_rate_init=learning_rate, early_stopping=True,
                        n_iter_no_change=patience, max_iter=max_iter, random_state=seed)
    model = make_pipeline(StandardScaler(), mlp)
    # The MLP's matrices are small (batches of 200): BLAS threads only add overhead, many times the work itself
    # when the cores are busy.
    with warnings.catch_warnings(), blas_threads(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
        scores = model.predict_proba(x_test)[:, 1]
    pos, neg = scores[y_test == 1], scores[y_test == 0]
    auc, var = _delong_auc(pos, neg)
    half = _z(level) * math.sqrt(var)
    p_value = float(stats.mannwhitneyu(pos, neg, alternative="greater").pvalue)
    detail = {"hidden": list(hidden), "alpha": alpha, "learning_rate": learning_rate, "patience": patience,
              "n_train": len(y_train), "n_test": len(y_test), "epochs": int(mlp.n_iter_), "auc_se": math.sqrt(var),
              "ci_method": "normal, DeLong variance", "features": "z and ||z||"}
    return TestResult("classifier", auc, max(0.0, auc - half), min(1.0, auc + half), p_value, 0.5, len(a), len(b),
                      a.shape[1], level, detail)


# --- shell ---------------------------------------------------------------------------------------------------------

def shell_test(sq_norms, dof: int, *, level: float = 0.95) -> TestResult:
    """Shell test of squared norms ||P z||^2 (n,) of codes projected on a dof-dimensional subspace.

    Under H0 (z ~ N(0, I)) they follow chi2(dof) exactly. effect = mean(sq_norms) / dof, the variance per
    direction against the prior's 1 (below 1: a thinner shell than the prior, above: a wider one), null_effect 1;
    CI: effect +/- z * sd(sq_norms) / (dof sqrt(n)) (normal approximation; fine for n >= 100); p-value: the
    Kolmogorov-Smirnov test against chi2(dof). detail: radius_ratio = sqrt(effect), dof, n."""
    if isinstance(sq_norms, torch.Tensor):
        sq_norms = sq_norms.detach().cpu().numpy()
    s = np.asarray(sq_norms, dtype=np.float64).ravel()
    dof = int(dof)
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    if len(s) < 2 or not np.isfinite(s).all() or (s < 0).any():
        raise ValueError("sq_norms needs at least 2 finite, non-negative values")
    n = len(s)
    effect = float(s.mean() / dof)
    se = float(s.std(ddof=1) / (dof * math.sqrt(n)))
    half = _z(level) * se
    ks = stats.kstest(s, stats.chi2(dof).cdf)
    detail = {"radius_ratio": math.sqrt(effect), "dof": dof, "n": n, "effect_se": se,
              "ks_statistic": float(ks.statistic), "ci_method": "normal, sample variance"}
    return TestResult("shell", effect, effect - half, effect + half, float(ks.pvalue), 1.0, n, 0, dof, level, detail)
