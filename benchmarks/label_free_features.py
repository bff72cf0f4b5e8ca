"""Do the label-free (contrastive) features rank samplers as the evaluation classifier's features do?

On MNIST and on Fashion-MNIST: train a few vaelab VAEs briefly (MLP 784-256-d, continuous pixels; latent size and
epochs vary so that sample quality differs), draw images from several samplers of each (the prior, latents around
training codes, the aggregate posterior q(z), the ex-post Gaussian and the ex-post mixture:
vaelab.analysis.samplers), and compute the FD of every (model, sampler) pair to real test images twice: in the
evaluation classifier's features (trained with labels) and in the contrastive network's (trained without). The
agreement is Spearman's rank correlation of the two FD columns per dataset (scipy.stats.spearmanr), target >= 0.9;
Pearson's r of log FD is reported beside it. Every pair counts: none is chosen after the fact.

    python benchmarks/label_free_features.py [--datasets mnist fashion-mnist] [--n 2000] [--small]

``--small``: two models and 1,000 images, a smoke run. The runs are kept under --runs-dir and reused; the
classifier and the contrastive network are trained on first use and cached under the data folder (their training
seconds are recorded with them).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

import harness
import vaelab
from vaelab.analysis import from_run
from vaelab.analysis.classifier import CLASSIFIER_VERSION, EvalClassifier, train_classifier
from vaelab.analysis.features import Features, feature_space
from vaelab.analysis.framework.common import decode_means
from vaelab.analysis.netcache import cached_network, dataset_key
from vaelab.analysis.quality import RealFeatures
from vaelab.analysis.samplers import latent_source
from vaelab.data import load_dataset

MODELS = {"z2-e1": (2, 1), "z8-e1": (8, 1), "z16-e4": (16, 4), "z32-e2": (32, 2), "z64-e1": (64, 1)}
SAMPLERS = ("prior", "neighbourhood", "posterior", "ex-post-gaussian", "ex-post-gmm")
SMALL_MODELS = ("z2-e1", "z8-e1")


def trained_run(dataset: str, name: str, runs_dir: Path):
    latent, epochs = MODELS[name]
    folder = runs_dir / dataset
    status = folder / name / "status.json"
    if status.exists() and json.loads(status.read_text()).get("state") == "finished":
        return folder / name, 0.0
    cfg = vaelab.build_config({"name": name, "data": {"name": dataset, "pixels": "continuous"},
                               "model": {"hidden": [256], "latent_dim": latent, "posterior": "diagonal"},
                               "train": {"epochs": epochs, "batch_size": 128, "lr": 1e-3, "seed": 0}})
    seconds, _ = harness.timed(lambda: vaelab.train(cfg, out=folder, progress=False, log=lambda m: None,
                                                    overwrite=True))
    return folder / name, seconds


def short_classifier(data, epochs: int, runs_dir: Path) -> Features:
    """The evaluation classifier trained for ``epochs`` epochs instead of its own number, cached under runs_dir (for
    a machine too busy to train the full one in time; its test accuracy is recorded)."""
    model, info = cached_network("classifiers", f"{dataset_key(data)}-e{epochs}-v{CLASSIFIER_VERSION}",
                                 lambda i: EvalClassifier(tuple(i["image_shape"]), i["n_classes"]),
                                 lambda: train_classifier(data, epochs=epochs, log=print), root=runs_dir)
    return Features("classifier", f"evaluation classifier, {epochs} epochs ({info['test_accuracy']:.4f} test accuracy)",
                    lambda x: model.embed(x.float().cpu())[0].numpy(), info)


def one_dataset(dataset: str, models: list[str], n: int, runs_dir: Path, classifier_epochs: int | None) -> dict:
    data = load_dataset(dataset)
    spaces = {}
    makers = {"classifier": (lambda: short_classifier(data, classifier_epochs, runs_dir)) if classifier_epochs
              else (lambda: feature_space(data, "classifier", log=print)),
              "contrastive": lambda: feature_space(data, "contrastive", log=print)}
    for kind, make in makers.items():
        seconds, space = harness.timed(make)
        spaces[kind] = space
        print(f"{dataset}: {kind} features ready in {seconds:.0f} s ({space.name})", flush=True)
    real_idx = torch.randperm(data.x_test.shape[0], generator=torch.Generator().manual_seed(0))[:n]
    real = {k: RealFeatures(s.extract(data.x_test[real_idx])) for k, s in spaces.items()}
    pairs, train_seconds = [], {}
    for name in models:
        path, train_seconds[name] = trained_run(dataset, name, runs_dir)
        subject = from_run(path)
        source, _ = latent_source(subject, fit_points=10000, seed=0, threshold=0.01, max_informative=64,
                                  neighbourhood_scale=1.0, gmm_components=10)
        for sampler in SAMPLERS:
            images = decode_means(subject.model, source.latents(sampler, n, 1))
            row = {"model": name, "sampler": sampler}
            row.update({f"fd_{k}": real[k].fd(s.extract(images)) for k, s in spaces.items()})
            pairs.append(row)
            print(f"{dataset} {name:7s} {sampler:17s} FD classifier {row['fd_classifier']:8.2f}  "
                  f"contrastive {row['fd_contrastive']:8.2f}", flush=True)
    fc = np.array([p["fd_classifier"] for p in pairs])
    fl = np.array([p["fd_contrastive"] for p in pairs])
    rho, p_rho = spearmanr(fc, fl)
    r_log, _ = pearsonr(np.log(fc), np.log(fl))
    return {"pairs": pairs, "n_pairs": len(pairs), "spearman": float(rho), "spearman_p": float(p_rho),
            "pearson_log_fd": float(r_log), "n_images": n, "train_seconds": train_seconds,
            "features": {k: s.describe() for k, s in spaces.items()}}


def main() -> None:
    ap = harness.parser(__doc__, "label_free_features", threads=0)
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    ap.add_argument("--n", type=int, default=2000, help="real and generated images per FD (default 2000)")
    ap.add_argument("--runs-dir", type=Path, default=harness.OUT / "label_free_runs")
    ap.add_argument("--small", action="store_true", help="a smoke run: two models, 1,000 images")
    ap.add_argument("--classifier-epochs", nargs="*", default=[], metavar="DATASET=EPOCHS",
                    help="train that dataset's classifier for EPOCHS epochs instead of using the cached one")
    args = harness.parse(ap)
    models = list(SMALL_MODELS) if args.small else list(MODELS)
    n = min(args.n, 1000) if args.small else args.n
    t0 = time.perf_counter()
    report = {"datasets": {}}
    short = {k: int(v) for k, _, v in (item.partition("=") for item in args.classifier_epochs)}
    for dataset in args.datasets:
        report["datasets"][dataset] = one_dataset(dataset, models, n, args.runs_dir, short.get(dataset))
        d = report["datasets"][dataset]
        print(f"{dataset}: {d['n_pairs']} pairs, Spearman {d['spearman']:.3f} (p = {d['spearman_p']:.1g}), "
              f"Pearson of log FD {d['pearson_log_fd']:.3f}", flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["target"] = {"spearman_at_least": 0.9,
                        "met": all(d["spearman"] >= 0.9 for d in report["datasets"].values())}
    print(f"written {harness.write_json(args, report)}")


if __name__ == "__main__":
    main()
