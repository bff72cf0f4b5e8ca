"""The dataset registry: what each dataset is, which files make it, their checksums, where to get them."""
from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from vaelab.errors import DataError


@dataclass(frozen=True)
class IdxFile:
    """One IDX file. ``raw_sha256`` is the checksum of its uncompressed content: the authority, since any
    gzip wrapper of the same content is fine. ``gz_sha256`` is the checksum of the canonical .gz, if known."""

    name: str
    raw_sha256: str
    gz_sha256: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    image_shape: tuple[int, int, int]  # (C, H, W)
    n_train: int
    n_test: int
    n_classes: int | None  # None: a user dataset without labels
    files: dict[str, IdxFile] = field(default_factory=dict)  # role -> file; roles: train_x, train_y, test_x, test_y
    mirrors: tuple[str, ...] = ()
    embedded: bool = False
    user: bool = False  # added with `vaelab data add`: lives in data_root()/NAME with its manifest
    checksums: dict[str, str] = field(default_factory=dict)  # user datasets: file name -> sha256

    @property
    def labelled(self) -> bool:
        return self.n_classes is not None

    @property
    def n_pixels(self) -> int:
        c, h, w = self.image_shape
        return c * h * w


MNIST = DatasetSpec(
    name="mnist",
    description="MNIST handwritten digits, 28x28 grey, 60k train / 10k test (LeCun et al. 1998)",
    image_shape=(1, 28, 28),
    n_train=60000,
    n_test=10000,
    n_classes=10,
    files={
        "train_x": IdxFile("train-images-idx3-ubyte.gz", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train_y": IdxFile("train-labels-idx1-ubyte.gz", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "test_x": IdxFile("t10k-images-idx3-ubyte.gz", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "test_y": IdxFile("t10k-labels-idx1-ubyte.gz", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    description="Fashion-MNIST clothing images, 28x28 grey, 60k train / 10k test (Xiao et al. 2017)",
    image_shape=(1, 28, 28),
    n_train=60000,
    n_test=10000,
    n_classes=10,
    files={
        "train_x": IdxFile(
            "train-images-idx3-ubyte.gz",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        ),
        "train_y": IdxFile(
            "train-labels-idx1-ubyte.gz",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        ),
        "test_x": IdxFile(
            "t10k-images-idx3-ubyte.gz",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        ),
        "test_y": IdxFile(
            "t10k-labels-idx1-ubyte.gz",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        ),
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
)

DIGITS = DatasetSpec(
    name="digits",
    description="scikit-learn's bundled 8x8 digits (UCI), 17 grey levels scaled to [0, 1]; a fixed 80/20 split",
    image_shape=(1, 8, 8),
    n_train=1437,
    n_test=360,
    n_classes=10,
    embedded=True,
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (DIGITS, MNIST, FASHION_MNIST)}


USER_MANIFEST = "dataset.json"  # the manifest of a user dataset, in data_root()/NAME/


def user_spec(name: str, root: str | os.PathLike | None = None) -> DatasetSpec | None:
    """The spec of the user dataset ``name`` from its manifest, or None when there is none (or it is unreadable)."""
    if name in DATASETS or not name or "/" in name or name.startswith("."):
        return None
    try:
        meta = json.loads((data_root(root) / name / USER_MANIFEST).read_text())
        return DatasetSpec(name=name, description=meta["description"], image_shape=tuple(meta["image_shape"]),
                           n_train=int(meta["n_train"]), n_test=int(meta["n_test"]), n_classes=meta["n_classes"],
                           user=True, checksums=dict(meta["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def user_datasets(root: str | os.PathLike | None = None) -> dict[str, DatasetSpec]:
    """Every user dataset in the data folder (added with `vaelab data add`), by name."""
    folder = data_root(root)
    if not folder.is_dir():
        return {}
    specs = (user_spec(p.name, root) for p in sorted(folder.iterdir()) if (p / USER_MANIFEST).is_file())
    return {spec.name: spec for spec in specs if spec is not None}


def known_datasets(root: str | os.PathLike | None = None) -> dict[str, DatasetSpec]:
    """The built-in datasets, then the user datasets of the data folder."""
    return {**DATASETS, **user_datasets(root)}


def dataset_spec(name: str, root: str | os.PathLike | None = None) -> DatasetSpec:
    """The spec of a built-in or user dataset, or a one-line error that suggests the closest name."""
    if name in DATASETS:
        return DATASETS[name]
    spec = user_spec(name, root)
    if spec is not None:
        return spec
    known = list(known_datasets(root))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(f"unknown dataset {name!r}{hint}; known datasets: {', '.join(known)} "
                    f"(add your own with `vaelab data add NAME SOURCE`)")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``root``, else ``$VAELAB_DATA``, else ``~/.cache/vaelab``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("VAELAB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vaelab"


def is_present(name: str, root=None) -> bool:
    """Whether dataset ``name``'s files are in the data folder (an embedded one always is)."""
    spec = dataset_spec(name, root)
    if spec.embedded:
        return True
    if spec.user:
        return all((data_root(root) / spec.name / f).exists() for f in spec.checksums)
    folder = data_root(root) / spec.name
    return all((folder / f.name).exists() for f in spec.files.values())
