"""How heavy the tail of the importance weights is: the Pareto k-hat diagnostic of PSIS (Vehtari, Simpson, Gelman,
Yao & Gabry 2024, "Pareto smoothed importance sampling", JMLR 25(72)).

The largest M = min(ceil(S / 5), ceil(3 sqrt(S))) of S weights, less the (M+1)-th largest, are fitted with a generalized
Pareto law, whose shape k says how many finite moments the weights have (1 / k of them):

- k < 1/2: finite variance, so the delta-method standard error of log mean(w) is consistent;
- 1/2 <= k < 0.7: infinite variance, but the estimate still converges at a practical rate for S in the thousands;
- k >= min(1 - 1 / log10 S, 0.7) (:func:`k_threshold`): the estimate is unreliable at this S and its reported standard
  error under-states its spread (1.8-4.8x on documents 002's and 000's models, measured against independent
  replicates in benchmarks/README.md).

k-hat from M tail weights is itself noisy (sd about 0.15 at M = 40, S = 200), so light tails pass the threshold now
and then; :func:`chance_share` simulates how often, for tails of shape 1/4 (four finite moments, so the variance
the delta-method SE is read from converges), which is what a model's share is tested against.

The fit is Zhang & Stephens' (2009) empirical-Bayes estimate, with the weakly informative prior that pulls k towards
1/2 (weight 10 samples) as the reference implementations (loo, ArviZ) do; vectorised over images here.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy.special import softmax

MIN_TAIL = 5  # fewer tail weights than this give no estimate (NaN)
LIGHT_K = 0.25  # weights with k <= 1/4 have four finite moments: the variance estimate the SE is read from converges
CHANCE_ROWS = 10000  # simulated images behind chance_share (fewer past S of about 4,000, where the share is ~0)
CHANCE_WORK = 10**8  # the most log1p evaluations chance_share spends (about 1 s)


def tail_size(samples: int) -> int:
    """M, the number of largest weights the fit uses for S = ``samples``."""
    return min(math.ceil(samples / 5), math.ceil(3 * math.sqrt(samples)))


def k_threshold(samples: int) -> float:
    """The k above which an IS estimate from S = ``samples`` draws is unreliable: min(1 - 1/log10 S, 0.7)."""
    return min(1 - 1 / math.log10(samples), 0.7) if samples > 10 else 0.0


def generalized_pareto_shape(x: np.ndarray, prior_weight: float = 10.0) -> np.ndarray:
    """Zhang-Stephens estimate of the generalized Pareto shape k of each row of exceedances x (N, M) >= 0, sorted
    ascending: (N,). ``prior_weight``: samples' worth of the prior at k = 1/2 (0 for the plain estimate)."""
    x = np.asarray(x, dtype=np.float64)
    n_rows, n = x.shape
    m = 30 + int(math.sqrt(n))
    j = np.arange(1, m + 1, dtype=np.float64)
    quartile = x[:, int(n / 4 + 0.5) - 1]
    # grid of theta (called b here), (N, m): theta = 1/x_max + (1 - sqrt(m / (j - 1/2))) / (3 x_quartile)
    b = 1 / x[:, -1:] + (1 - np.sqrt(m / (j - 0.5)))[None, :] / (3 * quartile[:, None])
    k = np.log1p(-b[:, :, None] * x[:, None, :]).mean(axis=2)  # (N, m): the profile's k for each theta
    log_lik = n * (np.log(-b / k) - k - 1)
    weights = softmax(log_lik, axis=1)  # posterior weight of each theta on the grid
    b_post = (b * weights).sum(axis=1)
    k_post = np.log1p(-b_post[:, None] * x).mean(axis=1)
    return (n * k_post + prior_weight * 0.5) / (n + prior_weight)


def pareto_k(largest_log_w: torch.Tensor) -> torch.Tensor:
    """k-hat per image from its M + 1 largest log weights (M + 1, B), any order: (B,) float64; NaN when M < MIN_TAIL
    or when the tail is flat (all M weights equal the cut-off, as for an exact posterior)."""
    top = torch.sort(largest_log_w.double().cpu(), dim=0).values.numpy().T  # (B, M + 1) ascending
    out = np.full(top.shape[0], np.nan)
    if top.shape[1] - 1 < MIN_TAIL:
        return torch.from_numpy(out)
    scaled = np.exp(top - top[:, -1:])  # w / max(w), so the largest is 1
    exceed = scaled[:, 1:] - scaled[:, :1]  # (B, M) above the cut-off
    ok = exceed[:, -1] > 1e-12 * scaled[:, -1]
    if ok.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            out[ok] = generalized_pareto_shape(exceed[ok] / exceed[ok, -1:])
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=64)
def chance_share(samples: int, k: float = LIGHT_K, seed: int = 0) -> float:
    """The share of images whose k-hat reaches k_threshold(S) by chance alone when their weights' true tail shape
    is k (default 1/4): simulated tails of M = tail_size(S) generalized Pareto exceedances, fitted as :func:`pareto_k`
    fits them (CHANCE_ROWS of them, or as many as CHANCE_WORK allows), counted with one added hit and row so that
    the share is never 0. k-hat from M = 40 weights (S = 200) has an sd of about 0.15, so even light tails pass the
    threshold now and then (5.4% of them at S = 200, 0.05% at S = 1,000); this is the rate to compare a model's
    share with."""
    m = tail_size(samples)
    if m < MIN_TAIL:
        return math.nan
    grid = 30 + int(math.sqrt(m))  # generalized_pareto_shape's (rows, grid, M) array
    total = max(100, min(CHANCE_ROWS, CHANCE_WORK // (m * grid)))
    step = max(1, 2_000_000 // (m * grid))  # about 16 MB at a time
    rng, hits = np.random.default_rng(seed), 0
    for start in range(0, total, step):
        u = rng.random((min(step, total - start), m))
        x = np.sort((u ** -k - 1) / k if k else -np.log(u), axis=1)  # generalized Pareto exceedances, scale 1
        hits += int((generalized_pareto_shape(x / x[:, -1:]) >= k_threshold(samples)).sum())
    return (hits + 1) / (total + 1)
