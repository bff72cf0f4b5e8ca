"""Posterior trajectories during training (document 003's animations): the encodings of a fixed set of test images,
``trace_per_class`` per class (unlabelled data: the first 10 x ``trace_per_class``, labels -1), recorded every
``trace_every`` optimiser steps into RUN/trace.npz.

    step (T,), epoch (T,) fractional epochs, mu (T, M, D), logvar (T, M, D) (absent for deterministic encoders),
    labels (M,), indices (M,) into the test set.
Written atomically at each epoch end; on resume, entries after the checkpoint's step are dropped, so a resumed
run's trace equals an uninterrupted one's."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from vaelab.fileio import atomic_write_bytes

UNLABELLED_CLASSES = 10  # unlabelled data is traced on as many images as ten classes would give


class Tracer:
    def __init__(self, run_dir: Path, x_test: torch.Tensor, y_test: torch.Tensor | None, per_class: int,
                 resume_step: int):
        self.path = Path(run_dir) / "trace.npz"
        if y_test is None:  # unlabelled data: the first UNLABELLED_CLASSES x per_class test images, labelled -1
            self.indices = torch.arange(min(UNLABELLED_CLASSES * per_class, x_test.shape[0]))
            self.labels = torch.full((self.indices.numel(),), -1, dtype=torch.int64)
        else:
            idx = []
            for c in sorted(set(y_test.tolist())):
                idx += torch.nonzero(y_test == c).flatten()[:per_class].tolist()
            self.indices = torch.tensor(sorted(idx))
            self.labels = y_test[self.indices].cpu()
        self.x = x_test[self.indices.to(x_test.device)]
        self.steps, self.epochs, self.mu, self.logvar = [], [], [], []
        if self.path.exists() and resume_step > 0:
            with np.load(self.path) as old:
                keep = old["step"] <= resume_step
                self.steps, self.epochs = list(old["step"][keep]), list(old["epoch"][keep])
                self.mu = list(old["mu"][keep])
                self.logvar = list(old["logvar"][keep]) if "logvar" in old.files else []

    @torch.no_grad()
    def record(self, model, step: int, epoch: float) -> None:
        q = model.encode(self.x)
        self.steps.append(step)
        self.epochs.append(epoch)
        self.mu.append(q.mu.float().cpu().numpy())
        if q.logvar is not None:
            self.logvar.append(q.logvar.float().cpu().numpy())

    def save(self) -> None:
        arrays = {"step": np.asarray(self.steps, dtype=np.int64), "epoch": np.asarray(self.epochs, dtype=np.float64),
                  "mu": np.stack(self.mu), "labels": self.labels.numpy(), "indices": self.indices.numpy()}
        if self.logvar:
            arrays["logvar"] = np.stack(self.logvar)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(self.path, buf.getvalue())
