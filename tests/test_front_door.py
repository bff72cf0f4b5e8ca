"""The front door, end to end from the command line as a user meets it: a plain PyTorch conv VAE (a Normal over a
C x H x W latent, a tanh decoder, images in [-1, 1]) and a diffusers AutoencoderKL, each `vaelab diagnose`d and then
`vaelab sample`d from the diagnosis folder alone; and an unlabelled colour dataset, `vaelab data add`ed, trained on,
diagnosed and sampled. The decoded grids are checked against the user's own decoder, called directly."""
from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from conftest import CONV_VAE_MODULE as CONV_VAE
from conftest import run_cli as cli
from vaelab.analysis.adapters import SOURCE_FILE
from vaelab.analysis.samplers import SAVEABLE, FittedSampler, fix_folder


@pytest.fixture(autouse=True)
def _data_root(tmp_path_factory, monkeypatch):
    """The evaluation classifier and the data cache go to this session's folder, never the user's."""
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path_factory.getbasetemp() / "data"))

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


def grid_size(n: int, h: int, w: int, pad: int = 1) -> tuple[int, int]:
    """(width, height) of the PNG mosaic of n images of h x w: a ceil(sqrt(n))-column grid, 1-pixel gaps."""
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    return cols * (w + pad) + pad, rows * (h + pad) + pad


def import_file(path):
    spec = importlib.util.spec_from_file_location("front_door_user_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sample_and_check(monkeypatch, capsys, out, where, n, shape):
    """`vaelab sample OUT` from another working folder: a PNG grid of the right size whose first tile is the first
    image, and the latents of the ex-post mixture saved in OUT; returns (latents (n, D), images (n, C, H, W))."""
    monkeypatch.chdir(where)
    grid, npz = where / "grid.png", where / "samples.npz"
    code, stdout, stderr = cli(monkeypatch, capsys, "sample", out, "--sampler", "ex-post-gmm", "-n", n, "--out", grid,
                               "--npz", npz)
    assert code == 0, stderr
    assert f"{n} images from ex-post-gmm" in stdout and "fitting it now" not in stderr  # loaded, not refitted
    arrays = np.load(npz)
    expected = FittedSampler.load(fix_folder(out, "ex-post-gmm")).sample(n, seed=0)
    assert np.array_equal(arrays["latents"], expected.numpy()) and arrays["images"].shape == (n, *shape)
    _, h, w = shape
    with Image.open(grid) as png:
        assert png.format == "PNG" and png.size == grid_size(n, h, w)
        first = np.asarray(png.convert("RGB"))[1:1 + h, 1:1 + w] / 255  # the first tile, after a 1-pixel border
    assert np.allclose(first, arrays["images"][0].transpose(1, 2, 0), atol=2 / 255)  # grey: R = G = B; 8 bits
    return torch.from_numpy(arrays["latents"]), torch.from_numpy(arrays["images"])


def test_a_plain_pytorch_conv_vae_is_diagnosed_then_sampled_from_its_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "model.py").write_text(textwrap.dedent(CONV_VAE))
    monkeypatch.chdir(tmp_path)  # a relative FILE.py:FACTORY, remembered as an absolute path
    code, stdout, stderr = cli(monkeypatch, capsys, "diagnose", "--model", "model.py:make", "--data", "digits",
                               "--input-range", "-1,1", "--quick", "--out", "D")
    assert code == 0, stderr
    assert "Conclusion" in stdout and "saved the fitted fixes" in stderr
    assert str(Path("D") / "analysis" / "diagnosis.json") in stdout and "diagnosis.html" in stdout
    diagnosis = json.loads((tmp_path / "D" / "analysis" / "diagnosis.json").read_text())
    assert diagnosis["source"]["latent_shape"] == [4, 4, 4] and diagnosis["source"]["input_range"] == [-1.0, 1.0]
    remembered = json.loads((tmp_path / "D" / SOURCE_FILE).read_text())
    assert remembered["kind"] == "model" and remembered["where"] == f"{tmp_path / 'model.py'}:make"
    assert remembered["data"] == "digits" and remembered["options"]["input_range"] == [-1.0, 1.0]
    assert all((fix_folder(tmp_path / "D", name) / "sampler.json").is_file() for name in SAVEABLE)

    (tmp_path / "elsewhere").mkdir()
    z, images = sample_and_check(monkeypatch, capsys, tmp_path / "D", tmp_path / "elsewhere", 16, (1, 8, 8))
    with torch.no_grad():  # the user's decoder, called directly: tanh output in [-1, 1] mapped to [0, 1]
        direct = (import_file(tmp_path / "model.py").make().decode(z.view(16, 4, 4, 4)) + 1) / 2
    assert torch.allclose(images, direct, atol=1e-5)


def test_a_diffusers_autoencoder_kl_is_diagnosed_then_sampled_from_its_folder(tmp_path, monkeypatch, capsys):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install 'vaelab[diffusers]')")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                  latent_channels=4, norm_num_groups=8, sample_size=8, shift_factor=0.05).eval()
    vae.save_pretrained(tmp_path / "tinyvae")
    code, stdout, stderr = cli(monkeypatch, capsys, "diagnose", "--diffusers", tmp_path / "tinyvae", "--data", "digits",
                               "--quick", "--out", tmp_path / "D")
    assert code == 0, stderr
    assert "z = (latent - 0.05) * 0.18215" in stdout
    remembered = json.loads((tmp_path / "D" / SOURCE_FILE).read_text())
    assert remembered["kind"] == "diffusers" and remembered["where"] == str(tmp_path / "tinyvae")

    z, images = sample_and_check(monkeypatch, capsys, tmp_path / "D", tmp_path, 16, (1, 8, 8))
    with torch.no_grad():  # diffusers' own decode of the unscaled latent, clipped to [-1, 1] as pipelines do
        direct = (vae.decode(z.view(16, 4, 4, 4) / 0.18215 + 0.05).sample.clamp(-1, 1) + 1) / 2
    assert torch.allclose(images, direct, atol=1e-4)


def colour_patches(n: int = 240, size: int = 32, seed: int = 0) -> np.ndarray:
    """n colour patches (n, size, size, 3) uint8 cut at random from scikit-learn's two sample photographs."""
    rng = np.random.RandomState(seed)
    photos = load_sample_images().images
    out = []
    for k in range(n):
        img = photos[k % len(photos)]
        i, j = rng.randint(0, img.shape[0] - size), rng.randint(0, img.shape[1] - size)
        out.append(img[i:i + size, j:j + size])
    return np.stack(out)


@pytest.mark.timeout(1200)  # four commands; about 10 minutes on a loaded 2-core machine, mostly the diagnosis
def test_unlabelled_colour_patches_are_added_trained_on_diagnosed_and_sampled(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))  # the real data folder is never touched
    folder = tmp_path / "patches"
    folder.mkdir()
    for k, patch in enumerate(colour_patches()):  # PNGs at the top level: no class subfolders, no labels
        Image.fromarray(patch).save(folder / f"{k:03d}.png")
    code, stdout, stderr = cli(monkeypatch, capsys, "data", "add", "patches", folder)
    assert code == 0, stderr
    assert "images 3x32x32, train 200, test 40, no labels" in stdout
    code, _, stderr = cli(monkeypatch, capsys, "train", "--dataset", "patches", "--network", "conv", "--epochs", "2",
                          "--precision", "fp32", "--hidden", "64", "--latent-dim", "8", "--conv-channels", "8,16",
                          "--out", tmp_path / "runs", "--name", "patches")
    assert code == 0, stderr
    run = tmp_path / "runs" / "patches"
    code, stdout, stderr = cli(monkeypatch, capsys, "diagnose", run, "--quick")
    assert code == 0, stderr
    assert "Conclusion" in stdout and (fix_folder(run, "ex-post-gmm") / "sampler.json").is_file()
    sample_and_check(monkeypatch, capsys, run, tmp_path, 16, (3, 32, 32))
