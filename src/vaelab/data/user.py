"""User datasets: `vaelab data add NAME SOURCE` reads a folder of images or an array file, checks it, splits it and
copies it into ``data_root()/NAME/`` with checksums; :func:`load_user_dataset` reads it back, verified.

What is accepted (docs/datasets.md says the same):

- a folder of PNG/JPEG images (``.png``, ``.jpg``, ``.jpeg``, any case), either all at the top level (no labels) or
  all in subfolders, one per class (labels 0..K-1 in the sorted order of the subfolder names); grey (``L``, or
  ``1``), grey + alpha (``LA``), ``RGB`` and ``RGBA`` images (1, 2, 3, 4 channels; palette images become RGB/RGBA);
- an ``.npz`` with ``x`` (and optional ``y``), or with ``x_train``, ``x_test`` (and optional ``y_train``, ``y_test``:
  both or neither); or an ``.npy`` holding ``x``. Images (N, H, W) are grey; (N, A, B, D) are channels-first
  (N, C, H, W) when A <= D and channels-last (N, H, W, C) when A > D (``layout`` overrides the guess). Values uint8
  (any integer type with values in 0..255 counts) or float in [0, 1]; labels non-negative integers, one per image.

Stored as ``train.npz`` and ``test.npz`` (``x`` as (N, C, H, W) uint8 or float32, ``y`` int64 when labelled) and the
manifest ``dataset.json`` with their sha256; written into a temporary folder that is renamed into place, so a failure
leaves nothing in the data folder.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vaelab.data.registry import (DATASETS, USER_MANIFEST, DatasetSpec, data_root, user_spec)
from vaelab.errors import DataError, StorageError
from vaelab.fileio import fsync_dir, make_dirs, sha256_file, write_durable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LAYOUTS = ("auto", "nchw", "nhwc")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MODE_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
ACCEPTED_FILES = "a folder of PNG/JPEG images (optionally in one subfolder per class), an .npz or an .npy"
ACCEPTED_VALUES = "uint8 (0..255) or float in [0, 1]"


@dataclass
class Images:
    """What a source holds: images (N, C, H, W) uint8 or float32, labels (N,) int64 or None, an optional given split
    (``x_test``/``y_test``), and class names when the folders named them."""

    x: np.ndarray
    y: np.ndarray | None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    classes: list[str] | None = None


def parse_fraction(text: str | float) -> float:
    """'1/6', '0.2' or 0.2 -> a fraction strictly between 0 and 1."""
    try:
        value = float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise DataError(f"test fraction {text!r} is not a number; give e.g. 1/6 or 0.2") from None
    if not 0 < value < 1:
        raise DataError(f"test fraction {text!r} must be strictly between 0 and 1, e.g. 1/6 or 0.2")
    return value


def check_name(name: str, root=None, *, force: bool = False) -> None:
    """A user dataset's name: a folder name, not a built-in's, not an existing dataset's (unless ``force``)."""
    if name in DATASETS:
        raise DataError(f"{name!r} is a built-in dataset; choose another name for your data")
    if not NAME_PATTERN.match(name) or ".." in name:
        raise DataError(f"dataset name {name!r} must be 1-64 lower-case letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit")
    if (data_root(root) / name).exists() and not force:
        raise DataError(f"dataset {name!r} already exists in {data_root(root)}; use --force to replace it, "
                        "or choose another name")


# ---------------------------------------------------------------------------------------------------------- reading

def _read_image(path: Path) -> np.ndarray:
    """One image file -> (C, H, W) uint8, or a DataError naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "1":
                img = img.convert("L")
            elif img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(img, dtype=np.float64) / 65535.0
                return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)[None]
            if img.mode not in MODE_CHANNELS:
                raise DataError(f"{path}: image mode {img.mode!r} is not supported; accepted: grey, grey+alpha, RGB, RGBA")
            a = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable PNG/JPEG image ({exc.__class__.__name__}); fix or remove the file") from None
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def read_folder(folder: Path) -> Images:
    """A folder of images: all at the top level (unlabelled) or all in class subfolders (labelled)."""
    top = _image_files(folder)
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = [p for p in subfolders if _image_files(p)]
    if top and classes:
        raise DataError(f"{folder} has images both at its top level and in subfolders ({classes[0].name}/); put all "
                        "images in class subfolders, or all at the top level for unlabelled data")
    files = [(path, None) for path in top] or [(path, k) for k, sub in enumerate(classes) for path in _image_files(sub)]
    if not files:
        raise DataError(f"{folder} holds no images; accepted: .png, .jpg or .jpeg files, at the top level or in one "
                        "subfolder per class")
    images, first = [], None
    for path, _ in files:
        a = _read_image(path)
        if first is None:
            first = (path, a.shape)
        elif a.shape != first[1]:
            raise DataError(f"{path} is {_describe(a.shape)} but {first[0]} is {_describe(first[1])}; all images must "
                            "have one size and channel count (resize or convert them first)")
        images.append(a)
    labels = np.array([k for _, k in files], dtype=np.int64) if classes else None
    return Images(np.stack(images), labels, classes=[p.name for p in classes] if classes else None)


def _describe(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{w}x{h} with {c} channel{'s' if c != 1 else ''}"


def to_nchw(x: np.ndarray, what: str, layout: str = "auto") -> np.ndarray:
    """Images (N, H, W) or (N, A, B, D) -> (N, C, H, W): channels-first when A <= D (or ``layout='nchw'``),
    channels-last when A > D (or ``layout='nhwc'``)."""
    if layout not in LAYOUTS:
        raise DataError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise DataError(f"{what} has shape {x.shape}; accepted: (N, H, W), (N, C, H, W) or (N, H, W, C)")
    channels_last = layout == "nhwc" or (layout == "auto" and x.shape[1] > x.shape[3])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if channels_last else x


def check_values(x: np.ndarray, what: str) -> np.ndarray:
    """uint8 kept; other integers in 0..255 -> uint8; floats finite in [0, 1] -> float32; anything else refused."""
    if x.dtype == np.uint8:
        return x
    if x.size == 0:
        raise DataError(f"{what} holds no images")
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        if x.dtype != np.bool_ and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{what}: integer values range over [{x.min()}, {x.max()}]; accepted: {ACCEPTED_VALUES}")
        return (x.astype(np.uint8) * (255 if x.dtype == np.bool_ else 1)).astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DataError(f"{what}: {int((~np.isfinite(x)).sum())} values are NaN or infinite; accepted: {ACCEPTED_VALUES}")
        if x.min() < 0 or x.max() > 1:
            raise DataError(f"{what}: float values range over [{x.min():.4g}, {x.max():.4g}]; accepted: {ACCEPTED_VALUES}")
        return x.astype(np.float32)
    raise DataError(f"{what} has dtype {x.dtype}; accepted: {ACCEPTED_VALUES}")


def check_labels(y: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if y is None:
        return None
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{what} has shape {y.shape} but there are {n} images; accepted: one integer label per image, "
                        f"shape ({n},)")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all()
                                                   and np.array_equal(y, np.round(y)))):
        raise DataError(f"{what} has dtype {y.dtype}; accepted: non-negative integer labels")
    if n and y.min() < 0:
        raise DataError(f"{what} has the negative label {int(y.min())}; accepted: non-negative integer labels")
    return y.astype(np.int64)


def read_arrays(path: Path) -> Images:
    """An .npy (the images) or an .npz (x [y], or x_train x_test [y_train y_test])."""
    try:
        if path.suffix.lower() == ".npy":
            return Images(np.load(path, allow_pickle=False), None)
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            if "x" in keys:
                return Images(npz["x"], npz["y"] if "y" in keys else None)
            if {"x_train", "x_test"} <= keys:
                if ("y_train" in keys) != ("y_test" in keys):
                    raise DataError(f"{path} has only one of y_train and y_test; give both (labelled) or neither")
                return Images(npz["x_train"], npz["y_train"] if "y_train" in keys else None,
                              npz["x_test"], npz["y_test"] if "y_test" in keys else None)
            raise DataError(f"{path} holds {', '.join(sorted(keys)) or 'no arrays'}; accepted: x (and optional y), or "
                            "x_train and x_test (and optional y_train and y_test)")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npy/.npz file ({exc}); save it with numpy.save or numpy.savez") from None


def read_source(source: str | os.PathLike, layout: str = "auto") -> Images:
    """Read and check a source: a folder of images, an .npz or an .npy."""
    path = Path(source).expanduser()
    if path.is_dir():
        return read_folder(path)  # (uint8, one shape: checked image by image)
    if path.is_file() and path.suffix.lower() in (".npz", ".npy"):
        images = read_arrays(path)
    elif not path.exists():
        raise DataError(f"{path} does not exist; accepted: {ACCEPTED_FILES}")
    else:
        raise DataError(f"{path} is not a folder, .npz or .npy; accepted: {ACCEPTED_FILES}")
    split = images.x_test is not None
    x = check_values(to_nchw(np.asarray(images.x), "x_train" if split else "x", layout), "x_train" if split else "x")
    if x.shape[0] == 0:
        raise DataError(f"{path} holds no images")
    y = check_labels(images.y, x.shape[0], "y_train" if split else "y")
    if not split:
        return Images(x, y)
    x_test = check_values(to_nchw(np.asarray(images.x_test), "x_test", layout), "x_test")
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"x_test images are {x_test.shape[1:]} (C, H, W) but x_train images are {x.shape[1:]}; "
                        "both must have one size and channel count")
    if x_test.shape[0] == 0:
        raise DataError(f"{path}: x_test holds no images")
    return Images(x, y, x_test, check_labels(images.y_test, x_test.shape[0], "y_test"))


# ---------------------------------------------------------------------------------------------------------- split

def split_indices(n: int, labels: np.ndarray | None, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic split of round(test_fraction x n) test images, chosen at random with ``seed``. With labels it is
    stratified: each class gives floor or ceil of test_fraction x its count (largest remainders first, ties to the
    lower label), so the classes keep their shares. Both sets are then shuffled with ``seed``."""
    rng = np.random.RandomState(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    quota = np.round(test_fraction * np.array([len(g) for g in groups], dtype=np.float64), 9)
    counts = np.floor(quota).astype(np.int64)
    extra = round(test_fraction * n) - int(counts.sum())
    counts[np.argsort(-(quota - counts), kind="stable")[:max(extra, 0)]] += 1
    train, test = [], []
    for idx, k in zip(groups, counts):
        idx = idx[rng.permutation(len(idx))]
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(f"a test fraction of {test_fraction:.3g} of {n} images leaves "
                        f"{len(train_idx)} to train on and {len(test_idx)} to test on; add images or change --test-fraction")
    return train_idx[rng.permutation(len(train_idx))], test_idx[rng.permutation(len(test_idx))]


# ---------------------------------------------------------------------------------------------------------- writing

def _npz_bytes(x: np.ndarray, y: np.ndarray | None) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **({"x": x, "y": y} if y is not None else {"x": x}))
    return buf.getvalue()


def add_dataset(name: str, source: str | os.PathLike, *, test_fraction: str | float = "1/6", seed: int = 0,
                layout: str = "auto", force: bool = False, root=None) -> DatasetSpec:
    """Check ``source``, split it and copy it into ``data_root(root)/name``; returns the new dataset's spec."""
    check_name(name, root, force=force)
    fraction = parse_fraction(test_fraction)
    if layout not in LAYOUTS:
        raise DataError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    images = read_source(source, layout)
    if images.x_test is None:
        train_idx, test_idx = split_indices(images.x.shape[0], images.y, fraction, seed)
        x_train, x_test = images.x[train_idx], images.x[test_idx]
        y_train = None if images.y is None else images.y[train_idx]
        y_test = None if images.y is None else images.y[test_idx]
        split = f"seeded {'stratified ' if images.y is not None else ''}split, test fraction {fraction:.4g}, seed {seed}"
    else:
        x_train, y_train, x_test, y_test = images.x, images.y, images.x_test, images.y_test
        split = "as given (x_train / x_test)"
    labelled = y_train is not None
    n_classes = int(max(y_train.max(), y_test.max() if len(y_test) else 0)) + 1 if labelled else None
    c, h, w = x_train.shape[1:]
    manifest = {
        "name": name, "source": str(Path(source).expanduser().resolve()),
        "description": f"your data from {Path(source).name}: {w}x{h}, {c} channel{'s' if c != 1 else ''}, "
                       f"{f'{n_classes} classes' if labelled else 'no labels'}",
        "image_shape": [int(c), int(h), int(w)], "n_train": int(x_train.shape[0]), "n_test": int(x_test.shape[0]),
        "n_classes": n_classes, "classes": images.classes, "dtype": str(x_train.dtype), "split": split,
        "test_fraction": fraction if images.x_test is None else None, "seed": seed,
    }
    _write_atomically(data_root(root), name, {"train.npz": _npz_bytes(x_train, y_train),
                                              "test.npz": _npz_bytes(x_test, y_test)}, manifest)
    spec = user_spec(name, root)
    assert spec is not None
    return spec


def _write_atomically(root: Path, name: str, files: dict[str, bytes], manifest: dict) -> None:
    """Write ``files`` and the manifest (with their sha256) into a temporary folder of ``root``, then rename it to
    ``root/name`` (replacing an old one only once the new one is complete). Any failure removes the temporary folder."""
    make_dirs(root)
    tmp = root / f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"  # a plain mkdir: the umask's permissions
    old = None
    try:
        tmp.mkdir()
        for fname, data in files.items():
            write_durable(tmp / fname, data)
        manifest = {**manifest, "sha256": {fname: sha256_file(tmp / fname) for fname in files}}
        write_durable(tmp / USER_MANIFEST, json.dumps(manifest, indent=2).encode())
        fsync_dir(tmp)
        dest = root / name
        if dest.exists():
            old = root / f".{name}.old-{os.getpid()}"
            os.replace(dest, old)
        os.replace(tmp, dest)
        fsync_dir(root)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not (root / name).exists():
            os.replace(old, root / name)  # put the previous dataset back
        if isinstance(exc, OSError):  # disk full, read-only folder: one line, nothing left behind
            raise StorageError.from_os_error(exc, root / name) from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------- loading

def load_user_arrays(spec: DatasetSpec, root=None) -> dict[str, np.ndarray | None]:
    """The stored arrays of a user dataset, each file verified against its manifest's sha256."""
    folder = data_root(root) / spec.name
    out: dict[str, np.ndarray | None] = {}
    for part in ("train", "test"):
        path = folder / f"{part}.npz"
        expected = spec.checksums.get(path.name)
        if not path.exists():
            raise DataError(f"{path} is missing; add the dataset again with `vaelab data add {spec.name} SOURCE --force`")
        got = sha256_file(path)
        if got != expected:
            raise DataError(f"{path} has sha256 {got[:12]}..., its manifest says {str(expected)[:12]}...: the file "
                            f"changed; add the dataset again with `vaelab data add {spec.name} SOURCE --force`")
        with np.load(path, allow_pickle=False) as npz:
            out[f"x_{part}"] = npz["x"]
            out[f"y_{part}"] = npz["y"] if "y" in npz.files else None
    return out
