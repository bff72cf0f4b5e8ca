"""The diagnosis page (analysis/diagnosis.html): written for a trained vaelab run and for a plain PyTorch model, with
the verdict, one grid of real decoded samples per sampler whose FD is the diagnosis' own, the spectrum and the
memorisation figure, nothing fetched from outside; the sections of analyses that did not apply say so; and headless
Chromium opens it from file:// without errors (screenshot in tests/out/diagnosis.png)."""
import base64
import functools
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from markupsafe import escape
from PIL import Image
from torch import nn

import vaelab
from conftest import tiny_config, headless_chromium, keep_screenshot, needs_chromium
from vaelab.analysis import from_model, memorisation, prior_gap, quality
from vaelab.analysis.adapters import from_torch
from vaelab.analysis.framework.common import AnalysisResult
from vaelab.analysis.samplers import SAMPLERS
from vaelab.data import load_dataset
from vaelab.errors import ConfigError, NotApplicable
from vaelab.report import diagnose, write_diagnosis_page
from vaelab.report.diagnosis_page import grid_uri

pytestmark = pytest.mark.usefixtures("one_torch_thread")
D = 3  # the plain model's latent size


@pytest.fixture(scope="module", autouse=True)
def _data_root(tmp_path_factory):
    # the evaluation classifier is cached under the data root: one per test session, away from the user's cache
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAELAB_DATA", str(tmp_path_factory.getbasetemp() / "data"))
        yield


class PlainVAE(nn.Module):
    """A VAE in plain PyTorch, as a user writes one: encode(x) -> (mu, logvar) (B, 3), decode(z) -> logits."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2 * D))
        self.dec = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, 64), nn.Unflatten(1, (1, 8, 8)))

    def encode(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        return mu, logvar.clamp(-6, 3)

    def decode(self, z):
        return self.dec(z)


def train_plain(x: torch.Tensor, steps: int = 400) -> PlainVAE:
    """A few hundred Adam steps of the negative ELBO (Bernoulli likelihood, N(0, I) prior), written out by hand."""
    torch.manual_seed(0)
    model = PlainVAE()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        xb = x[torch.randint(0, x.shape[0], (128,))]
        mu, logvar = model.encode(xb)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = nn.functional.binary_cross_entropy_with_logits(model.decode(z), xb, reduction="sum") / xb.shape[0]
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1).mean()
        opt.zero_grad()
        (rec + kl).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def run_page(tmp_path_factory):
    """A tiny trained digits run, diagnosed (quick) through vaelab.report.diagnose: (run folder, page path)."""
    from vaelab.trainer import train

    cfg = tiny_config(model={"arch": "64-32-4"}, objective={"beta": 0.2}, train={"epochs": 20, "batch_size": 64})
    run = train(cfg, tmp_path_factory.mktemp("runs"), progress=False, log=lambda m: None)
    said = []
    diagnose(run.path, quick=True, progress=said.append)
    page = run.path / "analysis" / "diagnosis.html"
    assert said[-1] == f"wrote the diagnosis page {page}"
    return run.path, page


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def plain(digits):
    return from_torch(train_plain(digits.x_train), image_shape=(1, 8, 8))


@pytest.fixture(scope="module")
def adapter_page(plain, digits, tmp_path_factory):
    """The plain PyTorch model diagnosed through the top-level vaelab.diagnose: (output folder, page path)."""
    out = tmp_path_factory.mktemp("plain")
    vaelab.diagnose(from_model(plain, digits, name="plain", out_dir=out), quick=True)
    return out, out / "analysis" / "diagnosis.html"


def _grids(text: str) -> dict[str, float | None]:
    """{sampler: FD written on its card, or None} for each grid card on the page."""
    cards = re.findall(r'<figure class="card[^"]*" id="grid-([^"]+)" data-sampler="[^"]+"(?: data-fd="([^"]+)")?>'
                       r'(.*?)</figure>', text, re.DOTALL)
    out = {}
    for name, fd, body in cards:
        assert 'src="data:image/png;base64,' in body, name
        shown = re.search(r'<span class="fd-value">([^<]+)</span>', body)
        assert (fd == "") == (shown is None), name
        if shown:
            assert float(shown.group(1)) == pytest.approx(float(fd), abs=0.051)  # printed to one decimal
        out[name] = float(fd) if fd else None
    return out


def _external(text: str) -> list[str]:
    """Every src/href that leaves the page (a URL with a scheme other than data:, or a protocol-relative one)."""
    return [v for v in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text)
            if not v.startswith(("data:", "#"))] + re.findall(r"url\(\s*['\"]?(?!data:)[^)]*\)", text) \
        + re.findall(r"https?://", text)


def _check_page(out: Path, page: Path) -> str:
    """What every diagnosis page with a quality result holds; returns the page's text."""
    text = page.read_text()
    saved = json.loads((out / "analysis" / "diagnosis.json").read_text())["result"]
    assert text.index('id="verdict"') < text.index('id="table"') < text.index('id="samples"')
    for sentence in saved["verdict"]:
        assert str(escape(sentence)) in text
    grids = _grids(text)
    assert list(grids) == [*SAMPLERS, "reconstruction", "real-train"]  # one grid per sampler, then the two floors
    for name, fd in grids.items():
        assert fd == saved["table"][f"fd_{name}"], name  # the very number the diagnosis JSON holds
    quality = np.load(out / "analysis" / "quality.npz")
    assert grid_uri(quality["images_prior"]) in text  # the measured images themselves, not a new draw
    assert 'id="spectrum"' in text and 'id="memorisation"' in text and "Did not apply" not in text
    assert (out / "figures" / "diagnosis-spectrum.png").exists()
    assert _external(text) == []
    return text


def test_the_page_of_a_trained_run_shows_the_verdict_the_grids_and_their_fd(run_page):
    out, page = run_page
    text = _check_page(out, page)
    assert "Diagnosis of tiny" in text


def test_the_page_of_a_plain_pytorch_model(adapter_page):
    out, page = adapter_page
    text = _check_page(out, page)
    assert "Diagnosis of plain" in text and "TorchModelAdapter" in text  # where the model came from


def test_a_grid_is_the_images_decoded_in_rows_of_eight():
    images = np.random.default_rng(0).random((64, 1, 8, 8)).astype(np.float32)
    uri = grid_uri(images)
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    scale = picture.shape[1] // (8 * 9 + 1)  # 8 images of 8 pixels and 9 one-pixel gaps, upscaled by whole pixels
    assert scale >= 1 and picture.shape == ((8 * 9 + 1) * scale,) * 2
    first = picture[scale:9 * scale:scale, scale:9 * scale:scale]  # the first image, one value per pixel
    np.testing.assert_allclose(first, np.round((1 - images[0, 0]) * 255), atol=1)  # grey: black ink on white
    third_row = picture[(1 + 2 * 9) * scale::scale][:8, (1 + 9) * scale::scale][:, :8]  # image 17 (row 3, column 2)
    np.testing.assert_allclose(third_row, np.round((1 - images[17, 0]) * 255), atol=1)


def _not_applicable(fn):
    """``fn`` (an analysis) refusing every model, as an analysis does one it does not apply to."""
    @functools.wraps(fn)  # (the same parameters, which the registry reads)
    def refuse(subject, **params):
        raise NotApplicable(f"{fn.__name__} does not apply to this model")
    return refuse


def test_analyses_that_did_not_apply_are_named_on_the_page(plain, digits, tmp_path, monkeypatch):
    """Sample quality, memorisation and the prior gap refuse the model (NotApplicable): the page names them, shows
    the samples analysis' grids without FD, draws the spectrum from the codes, and does not read an older quality
    result left in the folder."""
    for module, name in ((quality, "sample_quality"), (memorisation, "memorisation"),
                         (prior_gap, "aggregate_posterior_gap")):
        monkeypatch.setattr(module, name, _not_applicable(getattr(module, name)))
    out = tmp_path / "refused"
    (out / "analysis").mkdir(parents=True)
    (out / "analysis" / "quality.json").write_text(json.dumps(  # a result from some earlier model
        {"requested": {"n": 1000, "seed": 0}, "params": {}, "result": {"fd": {"prior": 1.0}}, "figures": []}))
    subject = from_model(plain, digits, name="refused", out_dir=out)
    result = vaelab.analysis.diagnose(subject, quick=True)
    assert "fd_prior" not in result.data["table"] and "classifier_auc" not in result.data["table"]
    text = write_diagnosis_page(subject, result).read_text()
    assert "Did not apply to this model" in text
    assert all(f"<b>{title}</b>" in text for title in ("prior gap", "sample quality", "memorisation"))
    assert "The quality analysis did not apply to this model" in text
    assert "The memorisation analysis did not apply to this model" in text
    assert "The prior-gap analysis did not apply" in text
    for sentence in result.data["verdict"]:
        assert str(escape(sentence)) in text
    grids = _grids(text)
    assert list(grids) == list(SAMPLERS) and set(grids.values()) == {None}  # no FD was measured, none is shown
    samples = np.load(out / "analysis" / "samples.npz")
    assert grid_uri(samples["images_ex-post-gmm"]) in text
    assert _external(text) == []


def test_a_subject_without_an_output_folder_gets_no_page(plain, digits):
    subject = from_model(plain, digits)
    with pytest.raises(ConfigError, match="needs an output folder"):
        write_diagnosis_page(subject, AnalysisResult("diagnosis", {}, {}))


@pytest.mark.slow
@needs_chromium
def test_the_page_loads_in_headless_chromium_from_file_without_errors(run_page):
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    _, page = run_page
    driver = headless_chromium(1300, 3000)
    try:
        driver.get(page.resolve().as_uri())
        assert driver.title == "Diagnosis of tiny - vaelab"
        assert driver.get_log("browser") == []  # no error, no warning, no blocked request
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) >= len(SAMPLERS) + 4  # the grids, the floors, the spectrum, the memorisation figure
        assert all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                   for img in images)  # every embedded image decoded
        conclusion = driver.find_element(By.CSS_SELECTOR, "#verdict .conclusion")
        assert conclusion.text.startswith("Conclusion:") and conclusion.location["y"] < 400  # the first thing seen
        resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert [r for r in resources if not r.startswith("data:")] == []  # nothing fetched
        keep_screenshot(driver, "diagnosis.png")
    finally:
        driver.quit()
