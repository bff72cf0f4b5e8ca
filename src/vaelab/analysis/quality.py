"""Sample quality without Inception weights: FD, KID and precision/recall/density/coverage of generated images
against real ones, in a feature space chosen by vaelab.analysis.features (the evaluation classifier's when the data
has labels, the contrastive network's when it has none, or the user's: Inception for true FID, DINOv2, any function).

- FD: the Frechet distance between Gaussians fitted to the features of real and generated images,
  ||m1 - m2||^2 + Tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2). It is FID only with Inception features; vaelab calls it FD.
- KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (a.b / d + 1)^3, averaged over subsets.
- Precision / recall (Kynkaanniemi et al. 2019, k = 3) and density / coverage (Naeem et al. 2020, k = 5), from
  k-nearest-neighbour balls around real (and generated) features.
- With labels: the class histogram of generated images and the evaluation classifier's mean confidence.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch

from vaelab.analysis.classifier import evaluation_classifier
from vaelab.analysis.features import feature_space
from vaelab.analysis.framework.common import AnalysisResult, decode_means, encode_all, subsample
from vaelab.analysis.samplers import SAMPLERS, latent_source
from vaelab.analysis.stats.two_sample import mmd2_unbiased
from vaelab.plotting import pyplot


# --- metrics -------------------------------------------------------------------------------------
class RealFeatures:
    """Features of real images (N, F) and what every comparison against them reuses: their mean, covariance and
    its square root (FD), each point's k-th neighbour distances (precision, recall, density, coverage) and the real
    halves of KID's kernel subsets, each computed on first use. Comparing many sample sets against one real set
    computes these once."""

    def __init__(self, real: np.ndarray, k_pr: int = 3, k_dc: int = 5, kid_subsets: int = 10,
                 kid_subset_size: int = 1000, seed: int = 0):
        self.x = np.asarray(real, np.float64)
        self.k_pr, self.k_dc = k_pr, k_dc
        self.kid_subsets, self.kid_subset_size, self.seed = kid_subsets, kid_subset_size, seed
        self._kid_draws: dict[int, list] = {}  # number of fake points -> [(real indices, fake indices, k_xx)]

    @functools.cached_property
    def _gaussian(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The real features' mean (F,), covariance C (F, F) and C^1/2 (F, F)."""
        cov = np.atleast_2d(np.cov(self.x, rowvar=False))
        w, v = np.linalg.eigh(cov)
        return self.x.mean(0), cov, (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    def fd(self, fake: np.ndarray) -> float:
        """Frechet distance between Gaussians fitted to the real and the fake features (M, F)."""
        mean, cov, cov_sqrt = self._gaussian
        b = np.asarray(fake, np.float64)
        c2 = np.atleast_2d(np.cov(b, rowvar=False))
        cross = np.linalg.eigvalsh(cov_sqrt @ c2 @ cov_sqrt)
        return float(((mean - b.mean(0)) ** 2).sum() + np.trace(cov) + np.trace(c2)
                     - 2 * np.sqrt(np.clip(cross, 0, None)).sum())

    def kid(self, fake: np.ndarray) -> tuple[float, float]:
        """KID: unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, mean and sd over random subsets."""
        b = np.asarray(fake, np.float64)
        vals = []
        for ix, iy, k_xx in self._kid_subsets(len(b)):
            y = b[iy]
            vals.append(mmd2_unbiased(k_xx, _cubic_kernel(y, y), _cubic_kernel(self.x[ix], y)))
        return float(np.mean(vals)), float(np.std(vals))

    def _kid_subsets(self, n_fake: int) -> list:
        if n_fake not in self._kid_draws:
            rng = np.random.default_rng(self.seed)
            m = min(self.kid_subset_size, len(self.x), n_fake)
            draws = []
            for _ in range(self.kid_subsets):
                ix, iy = rng.choice(len(self.x), m, replace=False), rng.choice(n_fake, m, replace=False)
                draws.append((ix, iy, _cubic_kernel(self.x[ix], self.x[ix])))
            self._kid_draws[n_fake] = draws
        return self._kid_draws[n_fake]

    @functools.cached_property
    def _radii(self) -> dict[int, torch.Tensor]:
        """Each real point's distance to its k-th nearest real neighbour, k = k_pr and k_dc: {k: (N,)}."""
        return _knn_radii(torch.from_numpy(self.x), (self.k_pr, self.k_dc))

    def prdc(self, fake: np.ndarray) -> dict:
        """Precision, recall (k = 3, Kynkaanniemi et al. 2019), density and coverage (k = 5, Naeem et al. 2020)."""
        y = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
        d_xy = torch.cdist(torch.from_numpy(self.x), y)  # (N real, M fake)
        r_y, r_pr, r_dc = _knn_radii(y, (self.k_pr,))[self.k_pr], self._radii[self.k_pr], self._radii[self.k_dc]
        return {
            "precision": float((d_xy <= r_pr[:, None]).any(0).double().mean()),
            "recall": float((d_xy <= r_y[None, :]).any(1).double().mean()),
            "density": float((d_xy <= r_dc[:, None]).double().sum() / (self.k_dc * y.shape[0])),
            "coverage": float((d_xy.min(1).values <= r_dc).double().mean()),
        }

    def compare(self, fake: np.ndarray) -> dict:
        kid, kid_sd = self.kid(fake)
        return {"fd": self.fd(fake), "kid": kid, "kid_sd": kid_sd, **self.prdc(fake)}


def _cubic_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's kernel k(a_i, b_j) = (a_i . b_j / F + 1)^3 for a (m, F), b (n, F): (m, n), in place after the product
    (``** 3`` calls pow per element and took half of KID's time)."""
    k = a @ b.T
    k /= a.shape[1]
    k += 1
    cube = np.square(k)
    cube *= k
    return cube


def _knn_radii(x: torch.Tensor, ks: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """Distance from each row of x (N, F) to its k-th nearest other row, for each k: {k: (N,)}."""
    near = torch.cdist(x, x).topk(max(ks) + 1, dim=1, largest=False).values  # column 0 is the point itself
    return {k: near[:, k] for k in ks}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a (N, F) and b (M, F)."""
    return RealFeatures(a).fd(b)


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int = 10, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID of feature sets a (N, F) and b (M, F): mean and sd over ``subsets`` random subsets."""
    return RealFeatures(a, kid_subsets=subsets, kid_subset_size=subset_size, seed=seed).kid(b)


def prdc(real: np.ndarray, fake: np.ndarray, k_pr: int = 3, k_dc: int = 5) -> dict:
    """Precision, recall, density and coverage of fake features against real ones (see RealFeatures.prdc)."""
    return RealFeatures(real, k_pr, k_dc).prdc(fake)


# --- the analysis --------------------------------------------------------------------------------
def sample_quality(subject, *, n: int = 2000, neighbourhood_scale: float = 1.0, gmm_components: int = 10,
                   fit_points: int = 10000, threshold: float = 0.01, max_informative: int = 64,
                   features: str | Callable | None = None, seed: int = 0, log=None) -> AnalysisResult:
    """FD, KID, precision/recall, density/coverage (and, with labels, class statistics) of each sampler's images
    (vaelab.analysis.samplers: the prior, q(z), the two interventions, the fixes) against real test images; with two
    floors: reconstructions of test images, and real training images. ``features``: see vaelab.analysis.features
    (default: the classifier's with labels, the contrastive network's without)."""
    ref = subject.reference
    space = feature_space(ref, features, log=log)
    classifier, clf_info = evaluation_classifier(ref, log=log) if ref.labelled else (None, None)
    real_idx = subsample(ref.x_test.shape[0], n, seed)
    real_images = ref.x_test[real_idx]
    real = RealFeatures(space.extract(real_images), seed=seed)
    source, used = latent_source(subject, fit_points=fit_points, seed=seed, threshold=threshold,
                                 max_informative=max_informative, neighbourhood_scale=neighbourhood_scale,
                                 gmm_components=gmm_components)
    rows = {}
    sets = {name: decode_means(subject.model, source.latents(name, len(real_idx), seed + 1)) for name in SAMPLERS}
    mu_test, _ = encode_all(subject.model, subject.data.x_test[real_idx])
    sets["reconstruction"] = decode_means(subject.model, mu_test)
    train_idx = subsample(ref.x_train.shape[0], len(real_idx), seed + 2)
    sets["real-train"] = ref.x_train[train_idx]
    for name, images in sets.items():
        rows[name] = real.compare(space.extract(images))
        if classifier is not None:
            rows[name].update(class_statistics(classifier.embed(images.float().cpu())[1]))
    data = {"features": space.name, "feature_kind": space.kind, "feature_space": space.describe(),
            "classifier": clf_info, "n_real": len(real_idx), "samplers": rows,
            "fd": {k: v["fd"] for k, v in rows.items()}, "informative_dims": source.subspace.k}
    two_stage = source.fix("two-stage") if source.subspace.k else None
    if two_stage is not None:
        data["two_stage"] = dict(getattr(two_stage, "history", {}))
    params = {"n": n, "neighbourhood_scale": neighbourhood_scale, "gmm_components": gmm_components,
              "fit_points": used, "threshold": threshold, "max_informative": max_informative,
              "features": space.kind if space.kind in ("classifier", "contrastive") else space.name, "seed": seed}
    arrays = {f"images_{k}": v[:64].numpy() for k, v in sets.items()}
    return AnalysisResult("quality", params, data, arrays)


def class_statistics(probs: torch.Tensor) -> dict:
    """The class histogram of the predicted classes of class probabilities (N, K), its entropy, and the mean
    confidence."""
    hist = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double() / probs.shape[0]
    entropy = float(-(hist[hist > 0] * hist[hist > 0].log()).sum())
    return {"class_histogram": [round(float(h), 4) for h in hist], "class_entropy": entropy,
            "class_entropy_max": math.log(probs.shape[1]), "mean_confidence": float(probs.max(1).values.mean())}


def feature_label(data: dict) -> str:
    """"contrastive features" for figure labels (results written before the choice existed: the classifier's)."""
    return f"{data.get('feature_kind', 'classifier')} features"


def plot(result: AnalysisResult, save) -> None:
    plt = pyplot()
    rows = result.data["samplers"]
    names = list(rows)
    labelled = "class_histogram" in rows[names[0]]
    fig, axes = plt.subplots(1, 3 if labelled else 2, figsize=(12 if labelled else 8.5, 3.6))
    colors = ["#C44E52" if n == "prior" else "#999999" if n in ("reconstruction", "real-train") else "#4C72B0"
              for n in names]
    axes[0].barh(names, [rows[n]["fd"] for n in names], color=colors)
    axes[0].set_xlabel(f"FD to test images ({feature_label(result.data)}; lower is better)")
    axes[0].invert_yaxis()
    for metric, marker in (("precision", "o"), ("recall", "s"), ("density", "^"), ("coverage", "D")):
        axes[1].plot([rows[n][metric] for n in names], names, marker=marker, ls="", label=metric)
    axes[1].set_xlabel("value (1 = like the real test images)")
    axes[1].invert_yaxis()
    axes[1].legend(fontsize=8)
    if labelled:
        k = len(rows[names[0]]["class_histogram"])
        for n in names:
            if n in ("prior", "ex-post-gmm", "real-train"):
                axes[2].plot(range(k), rows[n]["class_histogram"], marker="o", label=n)
        axes[2].set_xlabel("class predicted by the evaluation classifier")
        axes[2].set_ylabel("share of samples")
        axes[2].set_xticks(range(k))
        axes[2].legend(fontsize=8)
    fig.suptitle(f"Sample quality by sampler ({result.data['features']})")
    save(fig, "metrics")
