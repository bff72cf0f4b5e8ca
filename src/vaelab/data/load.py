"""Load a registered dataset into memory as float tensors in [0, 1], with an array cache for speed."""
from __future__ import annotations

import importlib.util
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.data import idx
from vaelab.data.registry import DIGITS, DatasetSpec, data_root, dataset_spec
from vaelab.data.sources import verify_content
from vaelab.data.user import load_user_arrays
from vaelab.errors import DataError, NotApplicable
from vaelab.fileio import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file
from vaelab.numerics import value_range

DIGITS_SPLIT_SEED = 0
# sha256 of scikit-learn's digits (uint8 images then uint8 labels), so a changed copy is caught
DIGITS_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"


@dataclass
class Dataset:
    """Images as float32 tensors in [0, 1] of shape (N, C, H, W); labels as int64 (N,), or None for unlabelled data
    (both or neither)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def labelled(self) -> bool:
        return self.y_train is not None and self.y_test is not None

    def require_labels(self, what: str) -> None:
        """Refuse unlabelled data, in one line, for ``what`` (an analysis that needs class labels)."""
        if not self.labelled:
            raise NotApplicable(f"{what} needs class labels and dataset {self.name!r} has none; add the images in one "
                                "subfolder per class (or an .npz with y) to run it")

    @property
    def n_classes(self) -> int | None:
        """The number of classes (the largest label + 1); None for unlabelled data."""
        if not self.labelled:
            return None
        return int(max(self.y_train.max(), self.y_test.max() if len(self.y_test) else 0)) + 1

    @classmethod
    def from_arrays(cls, name, x_train, y_train=None, x_test=None, y_test=None) -> "Dataset":
        """Wrap user arrays. Images: (N, C, H, W) or (N, H, W), values in [0, 1] (or uint8 0..255); labels (N,) or
        None (unlabelled: both None)."""
        if x_test is None:
            raise DataError("test images: x_test is required")
        if (y_train is None) != (y_test is None):
            raise DataError("labels: give both y_train and y_test (labelled data) or neither (unlabelled)")
        out = []
        for what, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            x = np.asarray(x)
            x = torch.as_tensor(x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x, dtype=torch.float32)
            y = None if y is None else torch.as_tensor(np.asarray(y), dtype=torch.int64)
            if x.ndim == 3:
                x = x.unsqueeze(1)
            if x.ndim != 4:
                raise DataError(f"{what} images: expected shape (N, C, H, W) or (N, H, W), got {tuple(x.shape)}")
            if y is not None and y.shape != (x.shape[0],):
                raise DataError(f"{what} labels: expected shape ({x.shape[0]},), got {tuple(y.shape)}")
            if x.shape[0] == 0:
                raise DataError(f"{what} images: none (an empty array); expected at least one image")
            lo, hi = value_range(x)
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi > 1:
                raise DataError(f"{what} images: expected finite values in [0, 1], got range [{lo:.3g}, {hi:.3g}]")
            out += [x.contiguous(), y]
        if out[0].shape[1:] != out[2].shape[1:]:
            raise DataError(f"train images are {tuple(out[0].shape[1:])} but test images are {tuple(out[2].shape[1:])}")
        return cls(name, *out)

    def subset(self, train_size: int | None = None, test_size: int | None = None) -> "Dataset":
        """The first ``train_size`` / ``test_size`` images (a slice for quick runs)."""
        return Dataset(self.name, self.x_train[:train_size], None if self.y_train is None else self.y_train[:train_size],
                       self.x_test[:test_size], None if self.y_test is None else self.y_test[:test_size])


def _digits_file() -> Path:
    """scikit-learn's copy of the 8x8 digits (datasets/data/digits.csv.gz), found without importing scikit-learn:
    ``sklearn.datasets.load_digits`` reads the same file but costs every vaelab process 1.2 s of imports."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits dataset ships with scikit-learn, which is not installed; pip install scikit-learn")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def _load_digits() -> Dataset:
    table = np.loadtxt(_digits_file(), delimiter=",")  # (1797, 65): 64 pixels in 0..16, then the label
    images = np.round(table[:, :-1]).astype(np.uint8).reshape(-1, 8, 8)
    labels = table[:, -1].astype(np.uint8)
    got = sha256_bytes(images.tobytes() + labels.tobytes())
    if got != DIGITS_SHA256:
        raise DataError(f"scikit-learn's digits data has sha256 {got[:12]}..., expected {DIGITS_SHA256[:12]}...; reinstall scikit-learn")
    order = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(labels))
    x = torch.from_numpy(images[order].astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(labels[order].astype(np.int64))
    n = DIGITS.n_train
    return Dataset("digits", x[:n].contiguous(), y[:n], x[n:].contiguous(), y[n:])


def _file_stamps(spec: DatasetSpec, folder: Path) -> dict[str, list[int]] | None:
    """(size, mtime in ns) of each source file, or None when one is missing."""
    try:
        return {f.name: [(folder / f.name).stat().st_size, (folder / f.name).stat().st_mtime_ns] for f in spec.files.values()}
    except OSError:
        return None


def _read_idx_files(spec: DatasetSpec, folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for role, f in spec.files.items():
        path = folder / f.name
        if not path.exists():
            raise DataError(f"dataset {spec.name!r} is not in {folder} ({f.name} is missing); run `vaelab data fetch {spec.name}`")
        reason = verify_content(path, f)
        if reason:
            raise DataError(f"{path}: {reason}; run `vaelab data fetch {spec.name} --force`")
        arrays[role] = idx.decode(idx.read_gz(path), str(path))
    return arrays


def _load_idx_dataset(spec: DatasetSpec, root) -> Dataset:
    folder = data_root(root) / spec.name
    cache, meta_path = folder / "arrays.npz", folder / "arrays.json"
    sources = {role: f.raw_sha256 for role, f in spec.files.items()}
    stamps = _file_stamps(spec, folder)  # a source file changed since the cache was built is verified again
    arrays = None
    if cache.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("sources") == sources and meta.get("stamps") == stamps and meta.get("sha256") == sha256_file(cache):
                with np.load(cache) as npz:
                    arrays = {role: npz[role] for role in spec.files}
        except (OSError, ValueError, KeyError):
            arrays = None  # a stale or broken cache is rebuilt from the verified IDX files
    if arrays is None:
        arrays = _read_idx_files(spec, folder)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(cache, buf.getvalue())
        atomic_write_json(meta_path, {"sources": sources, "stamps": stamps, "sha256": sha256_file(cache)})
    c, h, w = spec.image_shape

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).reshape(-1, c, h, w)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Dataset(spec.name, images(arrays["train_x"]), labels(arrays["train_y"]),
                   images(arrays["test_x"]), labels(arrays["test_y"]))


def _load_user_dataset(spec: DatasetSpec, root) -> Dataset:
    """A dataset added with `vaelab data add`, its files verified against the manifest's checksums."""
    arrays = load_user_arrays(spec, root)

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32))

    def labels(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(a.astype(np.int64))

    return Dataset(spec.name, images(arrays["x_train"]), labels(arrays["y_train"]),
                   images(arrays["x_test"]), labels(arrays["y_test"]))


def load_dataset(name: str, root=None, train_size: int | None = None, test_size: int | None = None) -> Dataset:
    """A registered dataset in memory: images (N, C, H, W) float32 in [0, 1], labels (N,) int64 (None for a user
    dataset without labels)."""
    spec = dataset_spec(name, root)
    if spec.user:
        data = _load_user_dataset(spec, root)
    else:
        data = _load_digits() if spec.name == "digits" else _load_idx_dataset(spec, root)
    if train_size is not None or test_size is not None:
        data = data.subset(train_size, test_size)
    return data
