"""9. Data: truncated or tampered dataset files are caught by checksum, with the command that fixes them; a fetch
that is interrupted (Ctrl-C or SIGKILL) leaves nothing that could be loaded; an image array of the wrong shape
passed to the Python API gets an error naming what was expected and what was given."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import vaelab
from conftest import fake_idx_dataset
from vaelab.data import Dataset, load_dataset, sources
from vaelab.data.registry import DATASETS
from vaelab.data.sources import fetch_dataset
from vaelab.errors import DataError, RunError


def make_fake(tmp_path, n_train=40, n_test=10):
    spec, src, _ = fake_idx_dataset(tmp_path, n_train, n_test, seed=3)
    return spec, src


@pytest.fixture
def fake(tmp_path, monkeypatch):
    spec, src = make_fake(tmp_path)
    monkeypatch.setitem(DATASETS, "fashion-mnist", spec)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", src)
    root = tmp_path / "data"
    return spec, src, root


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # same size, one byte changed inside the compressed stream
        b = bytearray(data)
        b[len(b) // 2] ^= 0x55
        path.write_bytes(bytes(b))


@pytest.mark.parametrize("how", ["truncated", "tampered"])
def test_a_damaged_file_is_caught_even_behind_a_valid_cache(fake, how):
    spec, _, root = fake
    fetch_dataset("fashion-mnist", root, log=lambda m: None)
    good = load_dataset("fashion-mnist", root)  # builds the array cache
    target = root / "fashion-mnist" / spec.files["train_x"].name
    _damage(target, how)
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", root)
    message = str(err.value)
    assert str(target) in message and "vaelab data fetch fashion-mnist --force" in message
    assert "\n" not in message
    fetch_dataset("fashion-mnist", root, force=True, log=lambda m: None)  # the fix it names
    assert torch.equal(load_dataset("fashion-mnist", root).x_train, good.x_train)


def test_a_tampered_array_cache_is_rebuilt_from_the_verified_files(fake):
    spec, _, root = fake
    fetch_dataset("fashion-mnist", root, log=lambda m: None)
    good = load_dataset("fashion-mnist", root)
    cache = root / "fashion-mnist" / "arrays.npz"
    _damage(cache, "tampered")
    assert torch.equal(load_dataset("fashion-mnist", root).x_train, good.x_train)


def test_a_fetched_dataset_and_its_cache_get_the_permissions_of_any_new_file(fake):
    # A data folder shared by a lab (VAELAB_DATA) must be readable by the others: 0666 less the umask, not 0600.
    _, _, root = fake
    previous = os.umask(0o022)
    try:
        fetch_dataset("fashion-mnist", root, log=lambda m: None)
        load_dataset("fashion-mnist", root)  # writes the array cache
    finally:
        os.umask(previous)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (root / "fashion-mnist").iterdir()}
    assert "arrays.npz" in modes and set(modes.values()) == {"0o644"}, modes


def test_ctrl_c_during_a_fetch_leaves_nothing(fake, monkeypatch):
    spec, _, root = fake
    monkeypatch.setenv("VAELAB_FAULT_KILL", "fetch-copy@2:SIGINT")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever started pytest
    try:
        with pytest.raises(KeyboardInterrupt):
            fetch_dataset("fashion-mnist", root, log=lambda m: None)
    finally:
        signal.signal(signal.SIGINT, previous)
    folder = root / "fashion-mnist"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [spec.files["train_x"].name]  # the one file completed before; no partial copy
    with pytest.raises(DataError, match="vaelab data fetch fashion-mnist"):
        load_dataset("fashion-mnist", root)


def test_sigkill_during_a_fetch_leaves_nothing_loadable_and_the_next_fetch_cleans_up(fake, tmp_path):
    spec, src, root = fake
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(os.path.dirname(__file__))!r}, {str(os.path.dirname(os.path.dirname(__file__)))!r}]
        from test_data_faults import make_fake
        from pathlib import Path
        from vaelab.data import sources
        from vaelab.data.registry import DATASETS
        spec, src = make_fake(Path({str(tmp_path / 'child')!r}))
        DATASETS["fashion-mnist"] = spec
        sources.DEBIAN_FASHION_DIR = src
        sources.fetch_dataset("fashion-mnist", {str(root)!r}, log=lambda m: None)
    """)
    (tmp_path / "child").mkdir()
    env = {**os.environ, "VAELAB_FAULT_KILL": "fetch-copy@2", "VAELAB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    folder = root / "fashion-mnist"
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert leftovers and all(n.endswith(".part") for n in leftovers)  # hidden, never taken for data
    with pytest.raises(DataError, match="vaelab data fetch fashion-mnist"):
        load_dataset("fashion-mnist", root)
    fetch_dataset("fashion-mnist", root, log=lambda m: None)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    assert load_dataset("fashion-mnist", root).x_train.shape == (40, 1, 28, 28)


@pytest.mark.parametrize("x_train,message", [
    (torch.rand(10, 64), "train images: expected shape (N, C, H, W) or (N, H, W), got (10, 64)"),
    (torch.rand(10, 1, 2, 8, 8), "train images: expected shape (N, C, H, W) or (N, H, W), got (10, 1, 2, 8, 8)"),
])
def test_wrong_shaped_arrays_name_expected_and_got(x_train, message):
    with pytest.raises(DataError) as err:
        Dataset.from_arrays("mine", x_train, torch.zeros(10, dtype=torch.long), torch.rand(4, 8, 8),
                            torch.zeros(4, dtype=torch.long))
    assert message in str(err.value)


def test_a_dataset_of_the_wrong_image_size_is_refused_by_train_and_analysis(tmp_path):
    data = Dataset.from_arrays("mine", torch.rand(20, 1, 28, 28), torch.zeros(20, dtype=torch.long),
                               torch.rand(5, 1, 28, 28), torch.zeros(5, dtype=torch.long))
    cfg = vaelab.build_config({"name": "r", "model": {"arch": "64-32-4"}, "train": {"epochs": 1}})
    with pytest.raises(RunError, match=r"dataset images are \(1, 28, 28\) but the model expects \(1, 8, 8\)"):
        vaelab.train(cfg, out=tmp_path, dataset=data, progress=False, log=lambda m: None)
    from vaelab.analysis import from_model
    from vaelab.models import build_model

    with pytest.raises(DataError, match=r"dataset images are \(1, 28, 28\) but the model expects \(1, 8, 8\)"):
        from_model(build_model(cfg), data)
