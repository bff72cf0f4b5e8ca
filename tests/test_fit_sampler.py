"""The fix, delivered: vaelab.fit_sampler's FittedSampler (sample, save, load), the fixes `vaelab diagnose` saves,
and `vaelab sample` drawing from them without refitting, decoding with a run's model or with the model a
--model/--diffusers/--pythae diagnosis remembers (model-source.json) or is given again."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vaelab
from conftest import run_cli as _cli
from conftest import tiny_config
from vaelab.analysis import from_model, from_run
from vaelab.analysis.adapters import SOURCE_FILE, ModelSource
from vaelab.analysis.adapters.sources import absolute_where
from vaelab.analysis.samplers import (SAVEABLE, FittedSampler, LatentSource, fit_sampler, fix_folder, training_codes)
from vaelab.analysis.samplers import fitted as fitted_module
from vaelab.analysis.samplers import source as source_module
from vaelab.analysis.samplers import two_stage as two_stage_module
from vaelab.cli import app
from vaelab.data import load_dataset
from vaelab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FIT_POINTS = 600  # codes each fit sees: enough for a 4-d latent, fast


@pytest.fixture(autouse=True)
def _data_root(tmp_path_factory, monkeypatch):
    """The evaluation classifier and the data cache go to this session's folder, never the user's."""
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path_factory.getbasetemp() / "data"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from vaelab.trainer import train

    # beta 0.2: every one of the 4 latent directions carries information after 2 epochs (beta 1 collapses here)
    cfg = tiny_config(model={"arch": "64-32-4"}, objective={"beta": 0.2}, train={"epochs": 2, "batch_size": 64})
    return train(cfg, tmp_path_factory.mktemp("runs"), progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def fits(run):
    """Each fix fitted once on the run (a Subject from the run directory)."""
    subject = from_run(run.path)
    return {name: fit_sampler(subject, None, name, fit_points=FIT_POINTS) for name in SAVEABLE}


def test_the_top_level_package_exports_fit_sampler():
    assert vaelab.fit_sampler is fit_sampler and vaelab.FittedSampler is FittedSampler


@pytest.mark.parametrize("name", SAVEABLE)
def test_a_saved_fix_draws_the_same_latents_after_loading(fits, run, tmp_path, name):
    fitted = fits[name]
    assert fitted.subspace.k >= 1 and fitted.fix is not None
    folder = fitted.save(tmp_path / name)
    assert sorted(p.name for p in folder.iterdir()) == ["sampler.json", "tensors.safetensors"]  # no temporaries left
    meta = json.loads((folder / "sampler.json").read_text())
    assert meta["sampler"] == name and meta["latent_shape"] == [4] and meta["fitted_on"]["codes"] == FIT_POINTS
    assert meta["fitted_on"]["source"]["run"] == str(run.path) and meta["fitted_on"]["source"]["checkpoint_epoch"] == 2
    loaded = FittedSampler.load(folder)
    z = fitted.sample(200, seed=3)
    assert z.shape == (200, 4) and z.dtype == torch.float32
    assert torch.equal(loaded.sample(200, seed=3), z)
    assert torch.equal(fitted.sample(200, seed=3), z)  # drawing does not move any state
    assert not torch.equal(fitted.sample(200, seed=4), z)  # another seed, other latents
    images = FittedSampler.load(folder, model=run.load_model()).images(8, seed=3)
    assert images.shape == (8, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert torch.allclose(images, fitted.images(8, seed=3))


def test_the_fitted_sampler_draws_the_fix_that_the_analyses_draw(fits, run):
    """Same codes, options and seed: the fitted pieces are LatentSource's, so the analyses measure this very fix."""
    subject = from_run(run.path)
    mu, logvar, _ = training_codes(subject, FIT_POINTS, 0)
    source = LatentSource(mu, logvar, seed=0)
    assert torch.equal(source.subspace.basis, fits["ex-post-gmm"].subspace.basis)
    g = torch.Generator().manual_seed(5)
    expected = source.subspace.combine(source.fix("ex-post-gmm").sample(100, seed=5), source.complement().sample(100, g))
    assert torch.equal(fits["ex-post-gmm"].sample(100, seed=5), expected)


def test_the_ex_post_gaussian_is_the_mean_and_covariance_of_the_informative_coordinates(run, tmp_path):
    """Ground truth by numpy on the same codes (N draws of q(z)), projected on the top principal directions of mu
    (numpy's SVD); a one-component mixture's ML fit is their mean and (biased) covariance, plus reg_covar."""
    model, data = run.load_model(), load_dataset("digits")
    fitted = fit_sampler(model, data, "ex-post-gaussian", fit_points=FIT_POINTS, seed=2)  # an adapter-style subject
    mu, logvar, _ = training_codes(from_model(model, data), FIT_POINTS, 2)
    codes = LatentSource(mu, logvar, seed=2)._fit_codes()  # the draws of q(z) the fixes are fitted to: (N, D)
    centred = mu.double().numpy() - mu.double().numpy().mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    v = fitted.subspace.basis.double().numpy()
    k = v.shape[1]
    assert k >= 1 and np.allclose(np.abs(vt[:k] @ v), np.eye(k), atol=1e-4)  # the same directions (up to sign)
    u = codes.double().numpy() @ v
    loaded = FittedSampler.load(fitted.save(tmp_path / "g"))
    for f in (fitted, loaded):
        gmm = f.fix.gmm
        assert np.allclose(gmm.means_[0], u.mean(0), atol=1e-6)
        assert np.allclose(gmm.covariances_[0], np.cov(u.T, bias=True).reshape(k, k) + 1e-5 * np.eye(k), atol=1e-6)


def test_the_mixture_samples_have_the_moments_of_its_parameters(fits):
    f = fits["ex-post-gmm"]
    gmm = f.fix.gmm
    w, m, s = gmm.weights_, gmm.means_, gmm.covariances_
    mean = w @ m
    cov = np.einsum("k,kij->ij", w, s + np.einsum("ki,kj->kij", m, m)) - np.outer(mean, mean)
    z = f.sample(40000, seed=1).double()
    u = f.subspace.coordinates(z).numpy()
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(u.mean(0) - mean) < 4 * sd / np.sqrt(len(u)) + 1e-6)
    assert np.allclose(np.cov(u.T).reshape(cov.shape), cov, atol=0.05 * sd.max() ** 2)
    # the rest of the latent is the complement's Gaussian, off the informative directions
    assert torch.allclose(f.subspace.coordinates(f.complement.sample(1000, torch.Generator().manual_seed(0))),
                          torch.zeros(1000, f.subspace.k), atol=1e-5)


def test_only_the_fitted_samplers_can_be_saved():
    for name, said in (("prior", "is not fitted"), ("gmm", "is not a sampler")):
        with pytest.raises(ConfigError, match=f"{said}.*ex-post-gaussian, ex-post-gmm, two-stage"):
            fit_sampler("unused", None, name)


def test_diagnose_saves_the_fixes_and_sample_reads_them_without_refitting(run, tmp_path, monkeypatch, capsys):
    diag = CliRunner().invoke(app, ["diagnose", str(run.path), "--quick"])
    assert diag.exit_code == 0, diag.output
    assert "saved the fitted fixes" in diag.output
    saved = json.loads((run.path / "analysis" / "diagnosis.json").read_text())["result"]["fixes"]
    assert saved == {name: f"fixes/{name}" for name in SAVEABLE}
    for name in SAVEABLE:
        assert (fix_folder(run.path, name) / "sampler.json").is_file()

    def no_fit(*args, **kwargs):
        raise AssertionError("refitted")

    for owner, attr in ((fitted_module, "fit_sampler"), (source_module.ExPostGMM, "fit"),
                        (two_stage_module.TwoStageVAE, "fit"), (source_module.ComplementGaussian, "fit")):
        monkeypatch.setattr(owner, attr, no_fit)
    grid, npz = tmp_path / "grid.png", tmp_path / "s.npz"
    code, out, err = _cli(monkeypatch, capsys, "sample", run.path, "--sampler", "two-stage", "-n", 16, "--out", grid,
                          "--npz", npz, "--seed", 7)
    assert code == 0, err
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "16 images from two-stage" in out
    arrays = np.load(npz)
    expected = FittedSampler.load(fix_folder(run.path, "two-stage")).sample(16, seed=7)
    assert np.array_equal(arrays["latents"], expected.numpy()) and arrays["images"].shape == (16, 1, 8, 8)
    # a saved fix's folder alone gives the latents (no model to decode with)
    code, out, err = _cli(monkeypatch, capsys, "sample", fix_folder(run.path, "ex-post-gmm"), "--sampler", "ex-post-gmm",
                          "-n", 5, "--npz", npz)
    assert code == 0 and np.load(npz)["latents"].shape == (5, 4) and "images" not in np.load(npz)


def test_sample_fits_and_saves_the_fix_when_the_run_has_none(run, tmp_path, monkeypatch, capsys):
    import shutil

    other = tmp_path / "copy"
    shutil.copytree(run.path, other, ignore=shutil.ignore_patterns("analysis", "figures", "fixes"))
    code, _, err = _cli(monkeypatch, capsys, "sample", other, "--sampler", "ex-post-gaussian", "-n", 4, "--out",
                        tmp_path / "g.png")
    assert code == 0 and "fitting it now" in err
    assert (fix_folder(other, "ex-post-gaussian") / "sampler.json").is_file()


@pytest.mark.parametrize("args, said", [
    (["--sampler", "ex-post-gm"], ("--sampler 'ex-post-gm' is not a fitted sampler; choose one of ex-post-gaussian, "
                                   "ex-post-gmm, two-stage")),
    (["--sampler", "prior"], "is not a fitted sampler"),
    (["-n", "0"], "-n"),
    (["--sampler", "ex-post-gmm", "--npz", "x.npz", "--not-a-run"], "No such option"),
])
def test_bad_input_is_one_line_and_exit_2(run, monkeypatch, capsys, args, said, tmp_path):
    code, _, err = _cli(monkeypatch, capsys, "sample", run.path, "--out", tmp_path / "g.png", *args)
    assert code == 2 and said in err and len(err.strip().splitlines()) == 1


def test_a_folder_that_is_not_a_run_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    code, _, err = _cli(monkeypatch, capsys, "sample", tmp_path, "--sampler", "ex-post-gmm", "--out", tmp_path / "g.png")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {tmp_path} is not a vaelab run, a diagnosis folder")
    assert not (tmp_path / "g.png").exists()


# --- a model vaelab did not train: the diagnosis folder remembers how it was opened (model-source.json) -----------
LINEAR_VAE = '''
import torch
from torch import nn


def make(latent=4):
    torch.manual_seed(0)
    enc, dec = nn.Linear(64, 2 * latent), nn.Linear(latent, 64)
    return (lambda x: enc(x.flatten(1)).chunk(2, dim=1)), (lambda z: dec(z).view(-1, 1, 8, 8))


def wider():
    return make(6)
'''


@pytest.fixture
def model_out(tmp_path):
    """OUT as a --model diagnosis leaves it: OUT/model-source.json and a fitted OUT/fixes/ex-post-gaussian."""
    (tmp_path / "vae.py").write_text(LINEAR_VAE)
    source = ModelSource("model", absolute_where("model", f"{tmp_path / 'vae.py'}:make"), "digits")
    model, name, data = source.open()
    out = tmp_path / "D"
    source.save(out)
    fit_sampler(from_model(model, data.subset(300, 100)), None, "ex-post-gaussian",
                fit_points=300).save(fix_folder(out, "ex-post-gaussian"))
    return out


def direct_decode(path, z, factory="make"):
    """The user's decoder called directly, outside vaelab: Bernoulli logits -> probabilities (n, 1, 8, 8)."""
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    with torch.no_grad():
        return torch.sigmoid(namespace[factory]()[1](z))


def test_sample_opens_the_model_the_folder_remembers_from_any_working_folder(model_out, tmp_path, monkeypatch, capsys):
    assert json.loads((model_out / SOURCE_FILE).read_text())["where"] == f"{tmp_path / 'vae.py'}:make"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for path in (model_out, fix_folder(model_out, "ex-post-gaussian")):  # the folder, or the saved fix inside it
        code, out, err = _cli(monkeypatch, capsys, "sample", path, "--sampler", "ex-post-gaussian", "-n", 9, "--out",
                              "g.png", "--npz", "s.npz", "--seed", 3)
        assert code == 0, err
        arrays = np.load("s.npz")
        z = torch.from_numpy(arrays["latents"])
        assert torch.equal(z, FittedSampler.load(fix_folder(model_out, "ex-post-gaussian")).sample(9, seed=3))
        assert torch.allclose(torch.from_numpy(arrays["images"]), direct_decode(tmp_path / "vae.py", z), atol=1e-6)


def test_a_model_given_again_on_the_command_line_replaces_the_remembered_one(model_out, tmp_path, monkeypatch, capsys):
    (tmp_path / "vae.py").rename(tmp_path / "moved.py")
    code, _, err = _cli(monkeypatch, capsys, "sample", model_out, "--sampler", "ex-post-gaussian", "--out",
                        tmp_path / "g.png")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    gone = tmp_path / "vae.py"
    assert err.startswith(f"error: {model_out / SOURCE_FILE} remembers --model {gone}:make, but {gone} is no longer "
                          "there; give the model again with --model FILE.py:FACTORY")
    code, _, err = _cli(monkeypatch, capsys, "sample", model_out, "--sampler", "ex-post-gaussian", "-n", 4, "--model",
                        f"{tmp_path / 'moved.py'}:make", "--npz", tmp_path / "s.npz")
    assert code == 0, err
    arrays = np.load(tmp_path / "s.npz")
    assert np.allclose(arrays["images"], direct_decode(tmp_path / "moved.py", torch.from_numpy(arrays["latents"])))
    code, _, err = _cli(monkeypatch, capsys, "sample", model_out, "--sampler", "ex-post-gaussian", "--model",
                        f"{tmp_path / 'moved.py'}:wider", "--out", tmp_path / "g.png")
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "g.png").exists()
    assert "has a latent of 6 dimensions (6,), but the ex-post-gaussian fix was fitted on 4" in err


def test_a_folder_with_a_model_but_without_the_fix_fits_and_saves_it(model_out, monkeypatch, capsys, tmp_path):
    code, _, err = _cli(monkeypatch, capsys, "sample", model_out, "--sampler", "ex-post-gmm", "-n", 4, "--out",
                        tmp_path / "g.png")
    assert code == 0 and "has no saved ex-post-gmm; fitting it now" in err
    assert (fix_folder(model_out, "ex-post-gmm") / "sampler.json").is_file()
    code, _, err = _cli(monkeypatch, capsys, "sample", model_out, "--sampler", "ex-post-gmm", "-n", 4, "--out",
                        tmp_path / "g.png")
    assert code == 0 and "fitting it now" not in err


@pytest.mark.parametrize("case, said", [
    ("diffusers-gone", "remembers --diffusers {tmp}/gone, but {tmp}/gone is no longer there; give the model again "
                       "with --diffusers DIR"),
    ("corrupt", "is not a model source vaelab wrote (JSONDecodeError"),
    ("run-and-model", "is a vaelab run, which decodes with its own model; --model goes with the output folder"),
    ("model-without-data", "--model needs --data NAME"),
    ("option-without-model", "--input-range change how a remembered model is opened, but"),
    ("no-model", "has no model to decode with (not a run directory, and no model-source.json); give the model"),
    ("two-models", "give one model, not --model and --diffusers"),
    ("bad-likelihood", "--likelihood 'gauss' is not one of"),
])
def test_bad_model_input_on_sample_is_one_line_and_exit_2(model_out, tmp_path, monkeypatch, capsys, case, said):
    bare = tmp_path / "bare"  # a saved fix without a model
    FittedSampler.load(fix_folder(model_out, "ex-post-gaussian")).save(bare)
    model = ["--model", f"{tmp_path / 'vae.py'}:make"]
    path, extra = {"diffusers-gone": (model_out, []), "corrupt": (model_out, []),
                   "run-and-model": (tmp_path / "run", model), "model-without-data": (bare, model),
                   "option-without-model": (bare, ["--input-range", "-1,1"]), "no-model": (bare, []),
                   "two-models": (model_out, [*model, "--diffusers", tmp_path]),
                   "bad-likelihood": (model_out, ["--likelihood", "gauss"])}[case]
    if case == "diffusers-gone":
        ModelSource("diffusers", str(tmp_path / "gone"), "digits").save(model_out)
    if case == "corrupt":
        (model_out / SOURCE_FILE).write_text("{not json")
    if case == "run-and-model":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "config.yaml").write_text("name: x\n")
    code, _, err = _cli(monkeypatch, capsys, "sample", path, "--sampler", "ex-post-gaussian", "--out",
                        tmp_path / "g.png", *extra)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert said.format(tmp=tmp_path) in err, err
    assert not (tmp_path / "g.png").exists()
