"""Networks vaelab trains once per dataset for its measurements (the evaluation classifier, the contrastive feature
network), cached under the data folder: weights (safetensors) and an info JSON, written atomically, trained once
when several processes ask at once (the first holds a file lock while it trains; the others wait, then load)."""
from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Callable

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import nn

from vaelab.data.registry import data_root
from vaelab.fileio import atomic_write_bytes, atomic_write_json, make_dirs, sha256_bytes
from vaelab.runs import weights_bytes


def dataset_key(data, labels: bool = True) -> str:
    """The cache key of a dataset: its name and a hash of its first 2,000 training images (and labels)."""
    blob = data.x_train[:2000].numpy().tobytes()
    if labels and data.y_train is not None:
        blob += data.y_train[:2000].numpy().tobytes()
    return f"{data.name}-{sha256_bytes(blob)[:12]}"


def cached_network(kind: str, key: str, build: Callable[[dict], nn.Module],
                   train: Callable[[], tuple[nn.Module, dict]], *, root=None) -> tuple[nn.Module, dict]:
    """The network cached as DATA_ROOT/kind/key.{safetensors,json}, or ``train()``'s (then cached).
    ``build(info)`` makes an untrained network of the cached shape; a broken cache is retrained."""
    folder = data_root(root) / kind
    wpath, ipath = folder / f"{key}.safetensors", folder / f"{key}.json"
    cached = _load(wpath, ipath, build)
    if cached is not None:
        return cached
    lock = None
    try:
        make_dirs(folder)
        lock = open(folder / f"{key}.lock", "a+")
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process training this network: wait for it
    except OSError:  # no lock file can be made here (a read-only data folder): train without the lock
        pass
    try:
        cached = _load(wpath, ipath, build)  # written by the process we waited for
        if cached is not None:
            return cached
        model, info = train()
        atomic_write_bytes(wpath, weights_bytes(model.state_dict()))
        atomic_write_json(ipath, info)
        return model.eval(), info
    finally:
        if lock is not None:
            lock.close()  # (releases the lock)


def _load(wpath: Path, ipath: Path, build) -> tuple[nn.Module, dict] | None:
    if not (wpath.exists() and ipath.exists()):
        return None
    try:
        info = json.loads(ipath.read_text())
        model = build(info)
        model.load_state_dict(st_load(wpath.read_bytes()))
        return model.eval(), info
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
        return None
