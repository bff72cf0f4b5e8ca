"""Sample quality without Inception weights: an evaluation classifier per dataset and metrics in its feature space.

- The classifier (a small CNN, trained by vaelab once per dataset and cached under the data folder) gives 128-d
  penultimate features and class probabilities. Its test accuracy is recorded with it.
- FD: the Frechet distance between Gaussians fitted to the features of real and generated images,
  ||m1 - m2||^2 + Tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2). It is FID only with Inception features; vaelab calls it FD.
- KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (a.b / d + 1)^3, averaged over subsets.
- Precision / recall (Kynkaanniemi et al. 2019, k = 3) and density / coverage (Naeem et al. 2020, k = 5), from
  k-nearest-neighbour balls around real (and generated) features.
- The class histogram of generated images and the classifier's mean confidence.
Any other feature extractor can be plugged in: a callable images (N, C, H, W) in [0, 1] -> features (N, F),
or a "module:function" string (e.g. Inception weights the user has on disk, for true FID).
"""
from __future__ import annotations

import fcntl
import functools
import importlib
import json
import math
import time
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load as st_load
from torch import nn

from vaelab.analysis.framework.common import AnalysisResult, decode_means, encode_all, subsample
from vaelab.analysis.samplers import SAMPLERS, latent_source
from vaelab.analysis.stats.two_sample import mmd2_unbiased
from vaelab.data.registry import data_root
from vaelab.errors import ConfigError
from vaelab.fileio import atomic_write_bytes, atomic_write_json, make_dirs, sha256_bytes
from vaelab.plotting import pyplot
from vaelab.runs import weights_bytes

CLASSIFIER_VERSION = 1
CLASSIFIER_EPOCHS = {"digits": 40, "mnist": 6, "fashion-mnist": 10}
EMBED_BATCH = 100  # images per batch of the classifier's features on the CPU


# --- the evaluation classifier ----------------------------------------------------------------------
class EvalClassifier(nn.Module):
    """Conv(w)-Conv(w)-pool-Conv(2w)-Conv(2w)-pool-Linear(128) features, then a linear head over classes."""

    def __init__(self, image_shape: tuple[int, int, int], n_classes: int = 10, width: int = 16, n_features: int = 128):
        super().__init__()
        c, h, w = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), n_features), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(n_features, n_classes))
        # channels-last convolutions and pooling run 1.6x faster on the CPU (the same features up to rounding, 4e-8)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.contiguous(memory_format=torch.channels_last)))

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, 128) and class probabilities (N, K) of images in [0, 1]. ``batch_size`` defaults to
        EMBED_BATCH on the CPU, where a batch's feature maps then stay in cache (2,000 MNIST images, one thread:
        132 ms against 215 ms in batches of 1,000, the same features), and to 1,000 on other devices."""
        batch_size = batch_size or (EMBED_BATCH if x.device.type == "cpu" else 1000)
        self.eval()
        feats, probs = [], []
        for i in range(0, x.shape[0], batch_size):
            f = self.features(x[i:i + batch_size].contiguous(memory_format=torch.channels_last))
            feats.append(f)
            probs.append(torch.softmax(self.head(f), -1))
        return torch.cat(feats), torch.cat(probs)


def _cache_key(data) -> str:
    return f"{data.name}-{sha256_bytes(data.x_train[:2000].numpy().tobytes() + data.y_train[:2000].numpy().tobytes())[:12]}"


def train_classifier(data, *, epochs: int | None = None, seed: int = 0, log=None) -> tuple[EvalClassifier, dict]:
    """Train the evaluation classifier on grey images (Adam 1e-3, batch 128); returns it and its test accuracy."""
    data.require_labels("the evaluation classifier")
    epochs = epochs or CLASSIFIER_EPOCHS.get(data.name, 10)
    torch.manual_seed(seed)
    model = EvalClassifier(data.image_shape, data.n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * math.ceil(len(data.y_train) / 128))
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(data.y_train), generator=g)
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if log:
            log(f"evaluation classifier for {data.name}: epoch {epoch + 1}/{epochs}")
    _, probs = model.embed(data.x_test)
    acc = float((probs.argmax(1) == data.y_test).double().mean())
    info = {"dataset": data.name, "test_accuracy": acc, "epochs": epochs, "seed": seed, "version": CLASSIFIER_VERSION,
            "train_seconds": round(time.perf_counter() - t0, 1), "n_classes": data.n_classes,
            "image_shape": list(data.image_shape)}
    return model.eval(), info


def evaluation_classifier(data, *, root=None, log=None) -> tuple[EvalClassifier, dict]:
    """The cached evaluation classifier for this dataset, trained and cached on first use. Processes that ask for
    it at once (a study's workers) train it once: the first holds a lock while it trains, the others wait and load
    what it wrote. Unlabelled data has no classifier: :class:`NotApplicable`."""
    data.require_labels("the evaluation classifier (sample quality and memorisation)")

    folder = data_root(root) / "classifiers"
    key = f"{_cache_key(data)}-v{CLASSIFIER_VERSION}"
    wpath, ipath = folder / f"{key}.safetensors", folder / f"{key}.json"
    cached = _load_classifier(wpath, ipath)
    if cached is not None:
        return cached
    lock = None
    try:
        make_dirs(folder)
        lock = open(folder / f"{key}.lock", "a+")
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process training this classifier: wait for it
    except OSError:  # no lock file can be made here (a read-only data folder): train without the lock
        pass
    try:
        cached = _load_classifier(wpath, ipath)  # written by the process we waited for
        if cached is not None:
            return cached
        model, info = train_classifier(data, log=log)
        atomic_write_bytes(wpath, weights_bytes(model.state_dict()))
        atomic_write_json(ipath, info)
        return model, info
    finally:
        if lock is not None:
            lock.close()  # (releases the lock)


def _load_classifier(wpath, ipath) -> tuple[EvalClassifier, dict] | None:
    """The classifier cached at wpath (weights) and ipath (its info), or None when absent or broken (retrained)."""
    if not (wpath.exists() and ipath.exists()):
        return None
    try:
        info = json.loads(ipath.read_text())
        model = EvalClassifier(tuple(info["image_shape"]), info["n_classes"])
        model.load_state_dict(st_load(wpath.read_bytes()))
        return model.eval(), info
    except (OSError, ValueError, KeyError, RuntimeError):
        return None


def load_feature_extractor(spec: str) -> Callable:
    """'package.module:function' -> the callable (images (N, C, H, W) in [0, 1] -> features (N, F))."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"feature extractor {spec!r} is not of the form 'module:function'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load feature extractor {spec!r}: {exc}") from None


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
    """FD, KID, precision/recall, density/coverage and class statistics of each sampler's images (vaelab.analysis.
    samplers: the prior, q(z), the two interventions, the fixes) against real test images; with two floors:
    reconstructions of test images, and real training images."""
    ref = subject.reference
    classifier, clf_info = evaluation_classifier(ref, log=log)
    if features is None:
        extract = lambda imgs: classifier.embed(imgs)[0].numpy()  # noqa: E731
        feature_name = f"vaelab evaluation classifier ({clf_info['test_accuracy']:.4f} test accuracy)"
    else:
        extract = load_feature_extractor(features) if isinstance(features, str) else features
        feature_name = features if isinstance(features, str) else getattr(features, "__name__", "user features")
    real_idx = subsample(ref.x_test.shape[0], n, seed)
    real_images = ref.x_test[real_idx]
    real = RealFeatures(np.asarray(extract(real_images)), seed=seed)
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
        own_feats, probs = classifier.embed(images)
        feats = own_feats.numpy() if features is None else np.asarray(extract(images))
        metrics = real.compare(feats)
        hist = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double() / probs.shape[0]
        entropy = float(-(hist[hist > 0] * hist[hist > 0].log()).sum())
        rows[name] = {**metrics, "class_histogram": [round(float(h), 4) for h in hist],
                      "class_entropy": entropy, "class_entropy_max": math.log(probs.shape[1]),
                      "mean_confidence": float(probs.max(1).values.mean())}
    data = {"features": feature_name, "classifier": clf_info, "n_real": len(real_idx), "samplers": rows,
            "fd": {k: v["fd"] for k, v in rows.items()}, "informative_dims": source.subspace.k}
    two_stage = source.fix("two-stage") if source.subspace.k else None
    if two_stage is not None:
        data["two_stage"] = dict(getattr(two_stage, "history", {}))
    params = {"n": n, "neighbourhood_scale": neighbourhood_scale, "gmm_components": gmm_components,
              "fit_points": used, "threshold": threshold, "max_informative": max_informative,
              "features": feature_name, "seed": seed}
    arrays = {f"images_{k}": v[:64].numpy() for k, v in sets.items()}
    return AnalysisResult("quality", params, data, arrays)


def plot(result: AnalysisResult, save) -> None:
    plt = pyplot()
    rows = result.data["samplers"]
    names = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    colors = ["#C44E52" if n == "prior" else "#999999" if n in ("reconstruction", "real-train") else "#4C72B0"
              for n in names]
    axes[0].barh(names, [rows[n]["fd"] for n in names], color=colors)
    axes[0].set_xlabel("FD to test images (classifier features; lower is better)")
    axes[0].invert_yaxis()
    for metric, marker in (("precision", "o"), ("recall", "s"), ("density", "^"), ("coverage", "D")):
        axes[1].plot([rows[n][metric] for n in names], names, marker=marker, ls="", label=metric)
    axes[1].set_xlabel("value (1 = like the real test images)")
    axes[1].invert_yaxis()
    axes[1].legend(fontsize=8)
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
