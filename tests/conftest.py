import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from vaelab.analysis.adapters import TorchModelAdapter

os.environ.setdefault("VAELAB_OFFLINE", "1")  # tests never wait on internet mirrors


def pytest_configure(config):
    """Under pytest-xdist each worker gets its share of the cores: torch's own default (every core) in every worker
    oversubscribes the machine (``make test``'s two workers: 145 s against 110 s for tests/test_analysis.py and
    tests/test_diagnosis_page.py on 2 cores). The share also reaches subprocesses (``OMP_NUM_THREADS``) and the
    studies that tests run in-process (their executor splits the cores it is told it has)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1 or not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    from vaelab.studies import pools

    share = max(1, pools.available_cores() // workers)
    os.environ["OMP_NUM_THREADS"] = str(share)
    torch.set_num_threads(share)
    pools.available_cores = lambda: share


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _own_compile_cache(monkeypatch, tmp_path):
    """train.compile: auto caches its choice per machine; each test starts with none (and leaves none behind)."""
    from vaelab import precision
    from vaelab.training_step import COMPILE_CACHE

    original = precision._cache_file
    monkeypatch.setattr(precision, "_cache_file", lambda name="precision": tmp_path / f"{name}.json"
                        if name == COMPILE_CACHE else original(name))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small matrices on a shared 2-core machine: torch's intra-op thread pool costs many times the work itself
    (about 20x here). Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**sections):
    """A small digits config; ``sections`` override whole sections, e.g. model={'arch': '64-32-4'}."""
    from vaelab.config import build_config

    # fp32 pinned: tests compare runs to float tolerance on any machine (auto would pick bf16 where AMX makes it fast)
    base = {"name": "tiny", "model": {"arch": "64-32-4"}, "train": {"epochs": 2, "batch_size": 128, "lr": 3e-3,
                                                                    "precision": "fp32"}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    if "model" in sections and "arch" not in sections["model"] and "arch" in base["model"] and \
            any(k in sections["model"] for k in ("network", "hidden", "latent_dim")):
        base["model"].pop("arch")
    return build_config(base)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """The uninterrupted digits run that every fault scenario of tests/faults must reproduce bit for bit."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "faults"))
    from faultkit import train

    out = tmp_path_factory.mktemp("reference")
    train(out, check=True)
    return out / "r"


def fake_idx_dataset(folder, n_train=6, n_test=3, seed=1):
    """A small random dataset in IDX files standing in for fashion-mnist: (spec with its checksums, source folder of
    the gzipped files, raw IDX bytes by role)."""
    import numpy as np

    from vaelab.data import DATASETS, idx
    from vaelab.data.registry import DatasetSpec, IdxFile
    from vaelab.fileio import sha256_bytes

    rng = np.random.RandomState(seed)
    raws = {"train_x": idx.encode_images(rng.randint(0, 256, (n_train, 28, 28), dtype=np.uint8)),
            "train_y": idx.encode_labels(rng.randint(0, 10, n_train)),
            "test_x": idx.encode_images(rng.randint(0, 256, (n_test, 28, 28), dtype=np.uint8)),
            "test_y": idx.encode_labels(rng.randint(0, 10, n_test))}
    real = DATASETS["fashion-mnist"]
    files = {role: IdxFile(real.files[role].name, sha256_bytes(raw)) for role, raw in raws.items()}
    src = folder / "debian"
    src.mkdir()
    for role, raw in raws.items():
        (src / files[role].name).write_bytes(idx.gzip_bytes(raw))
    return DatasetSpec("fashion-mnist", "fake", (1, 28, 28), n_train, n_test, 10, files, mirrors=()), src, raws


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`vaelab ARGS` through the real entry point (one-line errors, exit statuses), in this process:
    (exit status, stdout, stderr)."""
    from vaelab.cli import main

    monkeypatch.setattr(sys, "argv", ["vaelab", *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        main()
    out = capsys.readouterr()
    return stop.value.code, out.out, out.err


# A user's own conv VAE, as a model file: the encoder returns a Normal over a (4, 4, 4) latent, a tanh decoder
CONV_VAE_MODULE = '''
import torch
from torch import distributions, nn


class ConvVAE(nn.Module):
    """Images (B, 1, 8, 8) in [-1, 1]; the encoder returns a Normal over a (4, 4, 4) latent; a tanh decoder."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 8, 3, 1, 1))
        self.dec = nn.Sequential(nn.ConvTranspose2d(4, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 1, 3, 1, 1), nn.Tanh())

    def encode(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        return distributions.Normal(mu, torch.exp(0.5 * logvar))

    def decode(self, z):
        return self.dec(z)


def make():
    torch.manual_seed(0)
    return ConvVAE()
'''


def memorising_model(data, latent=8, seed=0):
    """Encoder: a fixed random projection of the pixels, standardised, with a constant small posterior variance;
    decoder: the training image whose code is nearest to z."""
    g = torch.Generator().manual_seed(seed)
    pixels = data.x_train.flatten(1)
    proj = torch.randn(pixels.shape[1], latent, generator=g)
    centre = pixels.mean(0)
    scale = ((pixels - centre) @ proj).std(0)
    codes = ((pixels - centre) @ proj) / scale

    def encoder(x):
        return ((x.flatten(1) - centre) @ proj) / scale, torch.full((x.shape[0], latent), math.log(0.01))

    def decoder(z):
        return data.x_train[torch.cdist(z, codes).argmin(1)]

    return TorchModelAdapter(encoder, decoder, latent, data.image_shape, likelihood="gaussian", decoder_output="mean")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                    reason="Debian packages chromium and chromium-driver are not installed")


def headless_chromium(width: int, height: int):
    """A headless Chromium (selenium) with the browser's console log kept; skip when selenium is missing."""
    webdriver = pytest.importorskip("selenium.webdriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=opts)


def keep_screenshot(driver, name: str) -> None:
    """Save the browser's screenshot to tests/out/NAME for a person to look at (and check it is not blank)."""
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(out / name))
    assert (out / name).stat().st_size > 10_000
