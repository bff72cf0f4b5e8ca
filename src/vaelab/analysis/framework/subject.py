"""The thing an analysis measures: a model that encodes and decodes, the images it sees, and where results go.

A :class:`Subject` comes from a vaelab run directory (:func:`from_run`) or from any model that follows
:class:`vaelab.models.vae.LatentModel` (:func:`from_model`; plain torch modules and pythae models go through
:mod:`vaelab.analysis.adapters` first)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaelab.analysis.framework.common import model_device
from vaelab.data import Dataset, PixelSampler, load_dataset
from vaelab.errors import DataError, RunError
from vaelab.runs import Run

DYNAMIC_TRAIN_DRAW_OFFSET = 1  # the fixed binarized draw of the training set used to analyse dynamic-pixel runs


@dataclass
class Subject:
    """A model, the data as the model sees it (binarized where the run binarizes), labels, and an output folder.

    - ``model``: encode(x (B, C, H, W)) -> GaussianPosterior with mu/logvar (B, D); decode(z (..., D)) -> params.
    - ``data``: train and test images (N, C, H, W) and labels (N,).
    - ``out_dir``: results go to out_dir/analysis/*.json and out_dir/figures/*; None keeps them in memory.
    - ``source``: where the model came from (run path, checkpoint epoch, run state), copied into every result.
    """

    model: Any
    data: Dataset
    name: str = "model"
    out_dir: Path | None = None
    source: dict[str, Any] = field(default_factory=dict)
    run: Any = None  # the vaelab.runs.Run, when there is one (snapshots for probes over training)
    seed: int = 0
    grey: Dataset | None = None  # the images before binarization (sample quality compares against these)
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # fits that analyses of this model share

    @property
    def reference(self) -> Dataset:
        """Grey-level images for sample-quality metrics (the model's view when there is no binarization)."""
        return self.grey if self.grey is not None else self.data

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @property
    def latent_dim(self) -> int:
        d = 1
        for s in self.model.latent_shape:
            d *= int(s)
        return d

    def with_model(self, model, **source) -> "Subject":
        """The same data and output folder with another model (a snapshot of the same run)."""
        return Subject(model, self.data, self.name, self.out_dir, {**self.source, **source}, self.run, self.seed,
                       self.grey)


def model_view(data: Dataset, pixels: str, binarize_seed: int) -> Dataset:
    """The images as a model trained in pixel mode ``pixels`` sees them: grey values, or a fixed seeded binarized
    draw (the training set of a dynamic run is analysed through one seeded draw, documented in the JSON)."""
    if pixels == "continuous":
        return data
    sampler = PixelSampler(pixels, data.x_train, data.x_test, binarize_seed)
    if pixels == "fixed":
        x_train = sampler.train_fixed
    else:
        g = torch.Generator().manual_seed(binarize_seed + DYNAMIC_TRAIN_DRAW_OFFSET)
        x_train = torch.bernoulli(data.x_train, generator=g)
    return Dataset(data.name, x_train, data.y_train, sampler.test, data.y_test)


def from_run(path, *, device: str = "cpu", epoch: int | None = None, snapshot: int | None = None,
             dataset: Dataset | None = None) -> Subject:
    """Open a run directory for analysis: its newest valid checkpoint (or ``epoch`` / ``snapshot``) and its data.

    A run that is still training is analysed at its last complete checkpoint; ``source`` says which one."""
    run = Run(path)
    cfg = run.config
    if snapshot is None and epoch is None and not run.checkpoints.epochs():
        raise RunError(f"{run.path} has no checkpoint yet; analyse it once its first epoch is done")
    model, used = run.load_model_and_source(device, epoch=epoch, snapshot=snapshot)
    if dataset is None:
        dataset = load_dataset(cfg.data.name, train_size=cfg.data.train_size, test_size=cfg.data.test_size)
    if tuple(dataset.image_shape) != tuple(model.image_shape):
        raise DataError(f"dataset images are {tuple(dataset.image_shape)} but the run's model expects {tuple(model.image_shape)}")
    status = run.status
    source = {"run": str(run.path), **used, "run_state": status.get("state"), "epochs_planned": cfg.train.epochs,
              "pixels": cfg.data.pixels, "dataset": cfg.data.name}
    data = model_view(dataset, cfg.data.pixels, cfg.data.binarize_seed)
    return Subject(model, data, cfg.name, run.path, source, run, cfg.train.seed, dataset)


def from_model(model, data: Dataset, *, name: str = "model", out_dir: str | Path | None = None, seed: int = 0) -> Subject:
    """Analyse any model that follows the LatentModel protocol (see :mod:`vaelab.analysis.adapters`)."""
    for attr in ("encode", "decode", "log_likelihood", "latent_shape", "image_shape"):
        if not hasattr(model, attr):
            raise RunError(f"model {type(model).__name__} has no {attr!r}; wrap a plain torch module with "
                           "vaelab.analysis.adapters.TorchModelAdapter (or from_torch), a pythae model with "
                           "from_pythae, a diffusers AutoencoderKL with from_diffusers")
    if tuple(data.image_shape) != tuple(model.image_shape):
        raise DataError(f"dataset images are {tuple(data.image_shape)} but the model expects {tuple(model.image_shape)}")
    told = getattr(model, "source", None)  # adapters say what they read (which latent, which pixel range)
    source = {"model": type(model).__name__, **(told if isinstance(told, dict) else {})}
    return Subject(model, data, name, Path(out_dir) if out_dir else None, source, None, seed)
