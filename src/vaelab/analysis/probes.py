"""Linear probes (document 004, section 2.2): how linearly separable are the classes in the latent space?

Logistic regression (scikit-learn, standardised features) trained on training-set codes and scored on the test
set, with three feature sets: the posterior means mu; [mu, sigma^2] (the diagonal of the covariance); and one
sampled z ~ q(z|x). Over training: the same probes on every snapshot of the run (``snapshot_every``), plus the
final checkpoint.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vaelab.analysis.framework.common import AnalysisResult, encode_all, generator, subsample
from vaelab.analysis.stats.codes import pca, points_within_budget
from vaelab.models.posteriors import GaussianPosterior
from vaelab.plotting import pyplot

FEATURE_SETS = ("mu", "mu+sigma2", "z")


PROBE_MAX_FEATURES = 4096  # wider feature sets are probed on their top principal coordinates
PROBE_COMPONENTS = 256


def probe_accuracy(train_feats: np.ndarray, y_train: np.ndarray, test_feats: np.ndarray, y_test: np.ndarray,
                   max_iter: int = 500, seed: int = 0) -> float:
    """Test accuracy of a standardised multinomial logistic regression."""

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    clf.fit(train_feats, y_train)
    return float(clf.score(test_feats, y_test))


def _features(model, x: torch.Tensor, seed: int) -> dict[str, np.ndarray]:
    mu, logvar = encode_all(model, x)
    out = {"mu": mu.cpu().numpy()}
    if logvar is not None:
        g = generator(seed, mu.device)
        out["mu+sigma2"] = torch.cat([mu, logvar.exp()], 1).cpu().numpy()
        out["z"] = GaussianPosterior(mu, logvar).rsample(1, g)[0].cpu().numpy()
    return out


def _reduce(train: np.ndarray, test: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features wider than PROBE_MAX_FEATURES -> their top PROBE_COMPONENTS principal coordinates (fitted on the
    training features; a linear map, so the probe stays linear)."""
    if train.shape[1] <= PROBE_MAX_FEATURES:
        return train, test

    spec = pca(torch.from_numpy(train), PROBE_COMPONENTS, seed)
    mean, v = spec.mean.float().numpy(), spec.components.numpy()
    return (train - mean) @ v, (test - mean) @ v


def probes_at(model, data, train_idx, test_idx, seed: int) -> dict[str, float]:
    tr = _features(model, data.x_train[train_idx], seed)
    te = _features(model, data.x_test[test_idx], seed + 1)
    for name in tr:
        tr[name], te[name] = _reduce(tr[name], te[name], seed)
    y_tr, y_te = data.y_train[train_idx].numpy(), data.y_test[test_idx].numpy()
    return {name: probe_accuracy(tr[name], y_tr, te[name], y_te, seed=seed) for name in tr}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two models hold exactly the same parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)


def linear_probes(subject, *, train_points: int = 10000, test_points: int = 10000, over_training: bool = True,
                  seed: int = 0) -> AnalysisResult:
    """Probe accuracy on mu, [mu, sigma^2] and z, for the model and (from a run) every snapshot over training."""
    data = subject.data
    data.require_labels("the linear probes")
    d = subject.latent_dim
    train_idx = subsample(data.x_train.shape[0], points_within_budget(d, train_points, arrays=4), seed)
    test_idx = subsample(data.x_test.shape[0], points_within_budget(d, test_points, arrays=4), seed)
    final = probes_at(subject.model, data, train_idx, test_idx, seed)
    epochs = []
    run = subject.run
    final_epoch = subject.source.get("checkpoint_epoch")
    if over_training and run is not None:
        for epoch in run.snapshots():
            model = run.load_model(subject.device, snapshot=epoch)
            # the last snapshot is usually the final checkpoint's weights: the same probes, already measured
            same = epoch == final_epoch and _same_weights(model, subject.model)
            epochs.append({"epoch": epoch, **(final if same else probes_at(model, data, train_idx, test_idx, seed))})
    if final_epoch is not None and all(e["epoch"] != final_epoch for e in epochs):
        epochs.append({"epoch": final_epoch, **final})
    # a linear probe on the raw pixels, the baseline document 004 quotes (0.88-0.92 on MNIST)
    pixels = probe_accuracy(data.x_train[train_idx].flatten(1).numpy(), data.y_train[train_idx].numpy(),
                            data.x_test[test_idx].flatten(1).numpy(), data.y_test[test_idx].numpy(), seed=seed)
    result = {"final": final, "over_training": sorted(epochs, key=lambda e: e["epoch"]), "pixels_baseline": pixels,
              "chance": float(1.0 / data.n_classes)}
    params = {"train_points": int(train_idx.numel()), "test_points": int(test_idx.numel()),
              "over_training": over_training, "seed": seed, "classifier": "standardised logistic regression (lbfgs)",
              "features": (f"top {PROBE_COMPONENTS} principal coordinates of each feature set (latent of {d} dims)"
                           if 2 * d > PROBE_MAX_FEATURES else "as encoded")}
    return AnalysisResult("probes", params, result)


def plot(result: AnalysisResult, save) -> None:
    plt = pyplot()
    r = result.data
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    rows = r["over_training"]
    if len(rows) > 1:
        for name in FEATURE_SETS:
            if name in rows[0]:
                ax.plot([e["epoch"] for e in rows], [e[name] for e in rows], marker="o", label=f"features: {name}")
        ax.set_xlabel("training epoch")
    else:
        names = list(r["final"])
        ax.bar(names, [r["final"][n] for n in names], color="#4C72B0")
        ax.set_xlabel("probe features")
    ax.axhline(r["pixels_baseline"], color="#999999", ls="--", lw=1, label="pixels")
    ax.set_ylabel("test accuracy of a logistic regression")
    ax.set_title("Linear probes")
    ax.legend(fontsize=8)
    save(fig, "accuracy")
