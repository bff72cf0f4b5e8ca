"""Datasets: a registry of names, verified sources, user datasets (`vaelab data add`), in-memory tensors and pixel
modes. Names are imported on first use, so `vaelab data list` (the registry alone) never loads torch."""
from __future__ import annotations

import importlib

_LAZY = {
    "Dataset": "vaelab.data.load", "load_dataset": "vaelab.data.load",
    "PIXEL_MODES": "vaelab.data.pixels", "PixelSampler": "vaelab.data.pixels",
    "DATASETS": "vaelab.data.registry", "DatasetSpec": "vaelab.data.registry", "data_root": "vaelab.data.registry",
    "dataset_spec": "vaelab.data.registry", "is_present": "vaelab.data.registry",
    "known_datasets": "vaelab.data.registry", "user_datasets": "vaelab.data.registry",
    "fetch_dataset": "vaelab.data.sources", "add_dataset": "vaelab.data.user",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vaelab.data' has no attribute {name!r}")


__all__ = list(_LAZY)
