"""Memorisation: are generated images (and reconstructions) closer to the training images than fresh images are?

A train/test ELBO gap says a model fits its training images better; it does not say that what the model
*generates* copies them. Here every image is embedded in a feature space (vaelab.analysis.features: the evaluation
classifier's 128-d features when the data has labels, the label-free contrastive network's when it has none, or
the user's choice) and compared, by distance to the nearest training image L(x) = min_t ||f(x) - f(t)||,
with a held-out test sample P_n drawn from the same distribution as the training sample T.

- Data-copying test C_T (Meehan, Chaudhuri & Dasgupta 2020, "A non-parametric test to detect data-copying in
  generative models", AISTATS): partition feature space into cells pi by k-means on the training features. In each
  cell, the Mann-Whitney U statistic of the generated distances L(Q_m) against the test distances L(P_n),
  U = #{(q, p): L(q) > L(p)} (+ 1/2 per tie), is Z-scored, Z_U = (U - m n / 2) / sqrt(m n (m + n + 1) / 12), and
      C_T = sum_{pi in Pi_tau} P_n(pi) Z_U(pi) / sum_{pi in Pi_tau} P_n(pi),
  over the cells Pi_tau holding at least ``min_cell`` generated samples (the paper's tau; the reference code uses
  tau = 20 / m, i.e. more than 20 generated samples per cell). Z_U < 0 when generated images are nearer the
  training set than held-out images are (copying), > 0 when farther (under-fitting); this is the sign of the
  reference implementation, github.com/casey-meehan/data-copying, data_copying_tests.py, where
  ``mannwhitneyu(LQm, LPn)`` gives U of the generated distances. As there, distances are to the training points of
  the same cell, and its -0.5 shift of the null mean is left out. Under the null (Q = P) each Z_U is ~N(0, 1), so C_T
  has standard deviation sqrt(sum w^2) <= 1. Decision rule: data copying when C_T < -3, a three-sigma cut (the paper
  reads C_T << 0 as copying; its reference code applies no fixed threshold); under-fitting when C_T > +3.
- Authenticity (Alaa et al. 2022, "How faithful is your synthetic data?", ICML): a generated sample g is
  unauthentic when it is closer to its nearest training point t* than t* is to its own nearest other training
  point, ||f(g) - f(t*)|| < min_{t != t*} ||f(t*) - f(t)||. The share of authentic samples is compared with the
  same share for held-out test images, which are not all "authentic" either (often around one half to two thirds).
  (This is the paper's per-generated-sample definition; some public implementations loop over real points instead.)
- Median L of each set against the median L of the test images.

Sets: prior samples, posterior samples z ~ N(mu(x), sigma(x)^2) of training images, reconstructions (decoded
posterior means) of training images and of test images. Posterior samples and training reconstructions start from
training images, so a good autoencoder puts them near the training set by construction; memorisation evidence is
copying by the prior samples or by the reconstructions of *test* images (a test image decoded as a training image).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.cluster import KMeans

from vaelab.analysis.features import feature_space
from vaelab.analysis.framework.common import AnalysisResult, decode_means, encode_all, subsample
from vaelab.analysis.samplers import sampler_latents
from vaelab.analysis.stats.codes import points_within_budget
from vaelab.models.priors import prior_of
from vaelab.plotting import pyplot

THRESHOLD = -3.0
QUERY_CHUNK, REFERENCE_CHUNK = 2000, 10000  # the largest distance block held at once
SETS = ("prior", "posterior", "reconstruction-train", "reconstruction-test")
EVIDENCE_SETS = ("prior", "reconstruction-test")  # copying here is memorisation; the others start at training images
TITLES = {"prior": "prior samples", "posterior": "posterior samples of training images",
          "reconstruction-train": "reconstructions of training images",
          "reconstruction-test": "reconstructions of test images"}


def rule_text(threshold: float = THRESHOLD) -> str:
    return (f"data copying when C_T < {threshold:g}, under-fitting when C_T > {-threshold:g} (C_T: test-mass-weighted "
            "mean of per-cell Mann-Whitney Z-scores of nearest-training-image distances, generated vs held-out; "
            "sd <= 1 when both are equally far from the training set; Meehan et al. 2020)")


def _features(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


# --- nearest neighbours -------------------------------------------------------------------------
def nearest_neighbours(query, reference, *, exclude_self: bool = False, query_chunk: int = QUERY_CHUNK,
                       reference_chunk: int = REFERENCE_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest reference row, and that row's index: (N,), (N,).

    query (N, F), reference (M, F); float64; at most query_chunk x reference_chunk distances are held at once.
    ``exclude_self``: query is reference, and row i may not be its own neighbour (its nearest *other* row)."""
    q, r = _features(query), _features(reference)
    if exclude_self and q.shape[0] != r.shape[0]:
        raise ValueError("exclude_self needs the query to be the reference set")
    dist = torch.full((q.shape[0],), math.inf, dtype=torch.float64)
    index = torch.zeros(q.shape[0], dtype=torch.long)
    for i in range(0, q.shape[0], query_chunk):
        qi = q[i:i + query_chunk]
        best = torch.full((qi.shape[0],), math.inf, dtype=torch.float64)
        arg = torch.zeros(qi.shape[0], dtype=torch.long)
        for j in range(0, r.shape[0], reference_chunk):
            d = torch.cdist(qi, r[j:j + reference_chunk])
            if exclude_self:
                rows = torch.arange(qi.shape[0])
                cols = rows + i - j
                inside = (cols >= 0) & (cols < d.shape[1])
                d[rows[inside], cols[inside]] = math.inf
            m, a = d.min(1)
            better = m < best
            best[better], arg[better] = m[better], a[better] + j
        dist[i:i + query_chunk], index[i:i + query_chunk] = best, arg
    return dist.numpy(), index.numpy()


# --- the data-copying test ----------------------------------------------------------------------------
def _partition(train: torch.Tensor, cells: int, seed: int):
    """k-means cells of the training features: the fitted model and the training labels."""
    k = max(1, min(int(cells), train.shape[0]))
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(train.numpy())
    return km, km.labels_


def _z_u(l_gen: np.ndarray, l_test: np.ndarray) -> float:
    """Z-scored Mann-Whitney U of generated (m,) against test (n,) distances; < 0 when generated are smaller."""
    m, n = len(l_gen), len(l_test)
    ranks = rankdata(np.concatenate([l_gen, l_test]))  # average ranks for ties
    u = ranks[:m].sum() - m * (m + 1) / 2  # #{(q, p): L(q) > L(p)} + ties / 2
    return float((u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12))


def _c_t(train, train_cells, test, test_cells, generated, gen_cells, k: int, min_cell: int,
         threshold: float) -> dict:
    """C_T from features (float64 tensors) already assigned to k cells."""
    n, m = test.shape[0], generated.shape[0]
    train_cells, test_cells, gen_cells = (torch.as_tensor(np.asarray(c)) for c in (train_cells, test_cells, gen_cells))
    rows, z_used, w_used = [], [], []
    for c in range(k):
        t, p, q = train[train_cells == c], test[test_cells == c], generated[gen_cells == c]
        row = {"cell": c, "train": int(t.shape[0]), "test": int(p.shape[0]), "generated": int(q.shape[0]),
               "z_u": None, "used": False}
        if p.shape[0] and q.shape[0] and t.shape[0]:
            row["z_u"] = _z_u(nearest_neighbours(q, t)[0], nearest_neighbours(p, t)[0])
            row["used"] = q.shape[0] >= min_cell
            if row["used"]:
                z_used.append(row["z_u"])
                w_used.append(p.shape[0] / n)
        rows.append(row)
    c_t = float(np.dot(w_used, z_used) / np.sum(w_used)) if w_used and np.sum(w_used) > 0 else math.nan
    verdict = ("no cell holds enough generated samples" if math.isnan(c_t) else "data copying" if c_t < threshold
               else "under-fitting" if c_t > -threshold else "like held-out data")
    excluded = [r for r in rows if not r["used"]]
    return {
        "c_t": c_t, "flagged": bool(c_t < threshold), "verdict": verdict, "threshold": threshold,
        "rule": rule_text(threshold),
        "cells": k, "cells_used": len(z_used), "min_cell": min_cell,
        "test_share_excluded": float(sum(r["test"] for r in excluded) / n) if n else math.nan,
        "generated_share_excluded": float(sum(r["generated"] for r in excluded) / m) if m else math.nan,
        "z_u_min": float(min(z_used)) if z_used else math.nan, "z_u_max": float(max(z_used)) if z_used else math.nan,
        "cells_copying": int(sum(z < threshold for z in z_used)),
        "cells_underfitting": int(sum(z > -threshold for z in z_used)),
        "n_train": int(train.shape[0]), "n_test": int(n), "n_generated": int(m),
        "per_cell": rows,
    }


def data_copying_test(train, test, generated, *, cells: int = 10, min_cell: int = 20, seed: int = 0,
                      threshold: float = THRESHOLD) -> dict:
    """The three-sample data-copying test of Meehan et al. (2020) on feature arrays.

    train (L, F), test (N, F), generated (M, F): numpy arrays or tensors. Cells: k-means with ``cells`` centres on
    the training features (seeded); a cell enters C_T when it holds at least ``min_cell`` generated samples.
    Returns C_T ("c_t"; << 0 copying, >> 0 under-fitting), "flagged" (C_T < threshold), the rule, the share of
    test (and generated) mass in excluded cells, and per-cell counts and Z_U."""
    t, p, q = _features(train), _features(test), _features(generated)
    km, train_cells = _partition(t, cells, seed)
    return _c_t(t, train_cells, p, km.predict(p.numpy()), q, km.predict(q.numpy()), km.n_clusters, min_cell,
                threshold)


# --- authenticity ------------------------------------------------------------------------------------
def authentic_share(dist: np.ndarray, index: np.ndarray, train_radius: np.ndarray) -> float:
    """Share of samples whose distance to their nearest training point, dist (N,) at index (N,), is at least that
    training point's distance to its own nearest other training point, train_radius (L,)."""
    return float(np.mean(dist >= train_radius[index])) if len(dist) else math.nan


def authenticity(train, generated, test=None) -> dict:
    """Authenticity of Alaa et al. (2022): the share of generated samples (M, F) that are not closer to their
    nearest training point (train (L, F)) than that point's nearest other training point is; with ``test``
    (N, F), the same share for held-out images as the baseline (not 1: real images can be unauthentic too)."""
    radius, _ = nearest_neighbours(train, train, exclude_self=True)
    out = {"authentic_share": authentic_share(*nearest_neighbours(generated, train), radius)}
    if test is not None:
        out["test_authentic_share"] = authentic_share(*nearest_neighbours(test, train), radius)
    return out


# --- the analysis -------------------------------------------------------------------------------------
def _summary_sentence(rows: dict, threshold: float) -> str:
    """One sentence: memorisation evidence first, then copying that is expected, then the under-fitting side."""
    def listing(names):
        parts = [f"{TITLES[k]} (C_T = {rows[k]['c_t']:+.1f})" for k in names]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]

    evidence = [k for k in EVIDENCE_SETS if k in rows and rows[k]["flagged"]]
    expected = [k for k in rows if rows[k]["flagged"] and k not in EVIDENCE_SETS]
    under = [k for k in rows if rows[k]["c_t"] > -threshold]
    if evidence:
        return (f"The model copies its training images: {listing(evidence)} are closer to them than fresh test images "
                f"are (C_T < {threshold:g}).")
    checked = [k for k in EVIDENCE_SETS if k in rows]
    if expected:
        return (f"No sign of memorisation: {listing(checked)} are not closer to the training images than fresh test "
                f"images are; only {listing(expected)} are, which is expected of a good autoencoder as they start "
                "from training images.")
    text = ("No sign of data copying: no set is closer to the training images than fresh test images are "
            f"(C_T >= {threshold:g})")
    if under:
        text += f"; {listing(under)} are farther from them (C_T > {-threshold:g}, the under-fitting side)"
    return text + "."


def memorisation(subject, *, n: int = 2000, train_points: int = 10000, cells: int = 10, min_cell: int = 20,
                 threshold: float = THRESHOLD, features: str | Callable | None = None, seed: int = 0,
                 log=None) -> AnalysisResult:
    """Data-copying test, authenticity and nearest-training-image distances of prior samples, posterior samples,
    and reconstructions of training and test images, in a feature space (``features``, vaelab.analysis.features;
    default: the classifier's with labels, the contrastive network's without), against ``train_points`` training
    images (the reference set) and ``n`` held-out test images (the baseline)."""
    ref, model = subject.reference, subject.model
    space = feature_space(ref, features, log=log)

    def embed(images: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(space.extract(images), dtype=torch.float64)

    train_idx = subsample(ref.x_train.shape[0], train_points, seed)
    test_idx = subsample(ref.x_test.shape[0], n, seed)

    code_idx = train_idx[subsample(train_idx.numel(), points_within_budget(subject.latent_dim, train_points, 3), seed)]
    mu, logvar = encode_all(model, subject.data.x_train[code_idx])  # (fewer codes than images for a huge latent)
    rec_idx = subsample(code_idx.numel(), n, seed + 3)
    mu_test, _ = encode_all(model, subject.data.x_test[test_idx])
    images = {
        "prior": decode_means(model, sampler_latents("prior", mu, logvar, n, seed + 1, prior=prior_of(model))),
        "posterior": decode_means(model, sampler_latents("posterior", mu, logvar, n, seed + 2)),
        "reconstruction-train": decode_means(model, mu[rec_idx]),
        "reconstruction-test": decode_means(model, mu_test),
    }
    if log:
        log(f"memorisation: features of {train_idx.numel()} training, {test_idx.numel()} test and "
            f"{sum(v.shape[0] for v in images.values())} generated images")
    train_f, test_f = embed(ref.x_train[train_idx]), embed(ref.x_test[test_idx])
    km, train_cells = _partition(train_f, cells, seed)
    test_cells = km.predict(test_f.numpy())
    radius, _ = nearest_neighbours(train_f, train_f, exclude_self=True)
    d_test, i_test = nearest_neighbours(test_f, train_f)
    baseline = {"median_nn_distance": float(np.median(d_test)),
                "authentic_share": authentic_share(d_test, i_test, radius),
                "median_train_nn_distance": float(np.median(radius))}
    rows, arrays = {}, {"nn_test": d_test.astype(np.float32)}
    for name, imgs in images.items():
        f = embed(imgs)
        d, i = nearest_neighbours(f, train_f)
        ct = _c_t(train_f, train_cells, test_f, test_cells, f, km.predict(f.numpy()), km.n_clusters, min_cell,
                  threshold)
        median = float(np.median(d))
        rows[name] = {**ct, "authentic_share": authentic_share(d, i, radius), "median_nn_distance": median,
                      "median_nn_ratio": median / baseline["median_nn_distance"] if baseline["median_nn_distance"] > 0
                      else math.nan, "n": int(f.shape[0])}
        arrays[f"nn_{name}"] = d.astype(np.float32)
    flagged = [k for k, r in rows.items() if r["flagged"]]
    copying = {"flagged": flagged, "memorisation": any(k in flagged for k in EVIDENCE_SETS),
               "evidence": [k for k in EVIDENCE_SETS if k in flagged], "evidence_sets": list(EVIDENCE_SETS),
               "threshold": threshold, "rule": rule_text(threshold),
               "sentence": _summary_sentence(rows, threshold)}
    data = {"features": space.name, "feature_kind": space.kind, "feature_space": space.describe(),
            "n_train": int(train_idx.numel()), "n_test": int(test_idx.numel()),
            "test_baseline": baseline, "sets": rows, "c_t": {k: r["c_t"] for k, r in rows.items()},
            "copying": copying}
    params = {"n": n, "train_points": int(train_idx.numel()), "cells": int(km.n_clusters), "min_cell": min_cell,
              "threshold": threshold,
              "features": space.kind if space.kind in ("classifier", "contrastive") else space.name, "seed": seed}
    return AnalysisResult("memorisation", params, data, arrays)


def plot(result: AnalysisResult, save) -> None:
    """Histograms of the distance to the nearest training image: test images against each set."""
    plt = pyplot()
    a, rows = result.arrays, result.data["sets"]
    names = [k for k in SETS if f"nn_{k}" in a]
    if "nn_test" not in a or not names:
        return
    top = max(float(np.quantile(np.concatenate([a["nn_test"], *(a[f"nn_{k}"] for k in names)]), 0.99)), 1e-6)
    bins = np.linspace(0, top, 41)
    ncol = 2
    fig, axes = plt.subplots(math.ceil(len(names) / ncol), ncol, figsize=(10, 3.3 * math.ceil(len(names) / ncol)),
                             squeeze=False)
    base = result.data["test_baseline"]
    for ax, name in zip(axes.ravel(), names):
        r = rows[name]
        ax.hist(np.clip(a["nn_test"], 0, top), bins=bins, density=True, color="#999999", alpha=0.6,
                label=f"test images (authentic {base['authentic_share']:.0%})")
        ax.hist(np.clip(a[f"nn_{name}"], 0, top), bins=bins, density=True, histtype="step", lw=1.8,
                color="#C44E52" if r["flagged"] else "#4C72B0", label=f"{name} (authentic {r['authentic_share']:.0%})")
        ax.set_title(f"{TITLES[name]}: C_T = {r['c_t']:+.1f}" + (" (copying)" if r["flagged"] else ""))
        ax.set_xlabel(f"distance to the nearest training image ({result.data.get('feature_kind', 'classifier')} "
                      "features)")
        ax.legend(fontsize=8)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle("Memorisation: " + result.data["copying"]["sentence"], fontsize=9, wrap=True)
    save(fig, "nn-distances")
