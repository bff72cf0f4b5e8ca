"""Any model: what real encoders and decoders return, latents of any shape, images in [0, 1] or [-1, 1], the plain
PyTorch, diffusers and pythae adapters, and the command line's --model / --diffusers / --pythae with its one-line
refusals."""
from __future__ import annotations

import json
import math
import re
import textwrap
from types import SimpleNamespace

import pytest
import torch
from torch import distributions, nn

from conftest import run_cli as cli, CONV_VAE_MODULE
from vaelab.analysis import analyze, from_model
from vaelab.analysis.adapters import (SOURCE_FILE, ModelSource, TorchModelAdapter, from_diffusers, from_torch,
                                     load_diffusers)
from vaelab.data import load_dataset
from vaelab.errors import RunError


@pytest.fixture(autouse=True)
def _data_root(tmp_path_factory, monkeypatch):
    """The evaluation classifier and the data cache go to this session's folder, never the user's."""
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path_factory.getbasetemp() / "data"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")
D = 3


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(200, 100)


class Linear(nn.Module):
    """mu, logvar (B, 3) from 8x8 images; a linear decoder to logits."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(64, 2 * D, generator=g) * 0.3)
        self.dec = nn.Parameter(torch.randn(D, 64, generator=g))

    def params(self, x):
        h = x.flatten(1) @ self.w
        return h[:, :D], h[:, D:].clamp(-4, 2)

    def forward(self, z):
        return (z @ self.dec).view(-1, 1, 8, 8)


def returning(kind: str, net: Linear):
    """The same posterior, returned the ways real code returns it."""
    def encoder(x):
        mu, logvar = net.params(x)
        std = torch.exp(0.5 * logvar)
        return {"tuple": lambda: (mu, logvar),
                "normal": lambda: distributions.Normal(mu, std),
                "independent": lambda: distributions.Independent(distributions.Normal(mu, std), 1),
                "mean-logvar": lambda: SimpleNamespace(mean=mu, logvar=logvar),
                "mean-std": lambda: SimpleNamespace(mean=mu, std=std),
                "mean-stddev": lambda: SimpleNamespace(mean=mu, stddev=std),
                "latent-dist": lambda: SimpleNamespace(latent_dist=SimpleNamespace(mean=mu, logvar=logvar, std=std)),
                }[kind]()
    return encoder


KINDS = ("tuple", "normal", "independent", "mean-logvar", "mean-std", "mean-stddev", "latent-dist")


def test_every_accepted_encoder_return_gives_the_same_analysis(digits):
    net = Linear()
    x = digits.x_test[:16]
    truth = returning("tuple", net)(x)
    numbers = {}
    for kind in KINDS:
        model = TorchModelAdapter(returning(kind, net), net, D, (1, 8, 8))
        q = model.encode(x)
        torch.testing.assert_close(q.mu, truth[0])
        torch.testing.assert_close(q.logvar, truth[1], atol=1e-5, rtol=1e-5)
        r = analyze(from_model(model, digits), only="posterior")["posterior"].data
        numbers[kind] = (r["active_units"], r["pca"]["above_threshold"], round(r["kl_total"], 4))
    assert len(set(numbers.values())) == 1, numbers


def test_a_decoder_output_with_sample_or_in_a_one_tuple_is_read():
    net = Linear()
    z = torch.randn(5, D)
    plain = TorchModelAdapter(returning("tuple", net), net, D, (1, 8, 8)).decode(z)
    for wrap in (lambda t: SimpleNamespace(sample=t), lambda t: (t,), lambda t: t.flatten(1)):
        model = TorchModelAdapter(returning("tuple", net), lambda z, w=wrap: w(net(z)), D, (1, 8, 8))
        torch.testing.assert_close(model.decode(z), plain)


class Spatial(nn.Module):
    """A conv encoder to a Normal over a (4, 7, 7) latent of 14x14 images; a conv decoder back."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(1, 8, 3, 2, 1)
        self.dec = nn.ConvTranspose2d(4, 1, 4, 2, 1)
        self.seen = None

    def encode(self, x):
        mu, logvar = self.enc(x).chunk(2, 1)
        return distributions.Normal(mu, torch.exp(0.5 * logvar))

    def decode(self, z):
        self.seen = z
        return self.dec(z)


def test_a_spatial_latent_is_flat_for_the_analyses_and_reshaped_for_the_decoder():
    net = Spatial()
    model = from_torch(net, image_shape=(1, 14, 14))
    assert model.latent_shape == (4, 7, 7) and model.latent_dim == 196
    x = torch.rand(6, 1, 14, 14)
    q = model.encode(x)
    assert q.mu.shape == (6, 196) and q.logvar.shape == (6, 196)
    own = net.encode(x)
    torch.testing.assert_close(q.mu, own.loc.reshape(6, 196))
    z = q.rsample(2)  # (2, 6, 196)
    out = model.decode(z)
    assert out.shape == (2, 6, 1, 14, 14)
    torch.testing.assert_close(net.seen, z.reshape(12, 4, 7, 7))  # the decoder got the latent in its own shape
    torch.testing.assert_close(out.reshape(12, 1, 14, 14), net.dec(z.reshape(12, 4, 7, 7)))
    assert model.source["latent_shape"] == [4, 7, 7]


def test_input_range_minus_one_to_one_maps_images_in_and_means_out():
    seen = []

    def encoder(x):
        seen.append(x)
        return x.flatten(1)[:, :D], torch.zeros(x.shape[0], D)

    def decoder(z):  # z[:, 0] (within the model's range [-1, 1]) as the image
        return torch.stack([torch.full((1, 8, 8), float(v)) for v in z[:, 0].clamp(-1, 1)])

    model = from_torch(encoder, decoder, image_shape=(1, 8, 8), input_range=(-1, 1), likelihood="gaussian")
    x = torch.rand(4, 1, 8, 8)
    model.encode(x)
    torch.testing.assert_close(seen[-1], 2 * x - 1)
    means = model.decode(torch.tensor([[-1.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0]]))
    assert means[:, 0, 0, 0].tolist() == [0.0, 0.5, 1.0]


def test_decoder_means_outside_the_declared_range_are_named_or_clipped():
    enc = lambda x: (x.flatten(1)[:, :D], torch.zeros(x.shape[0], D))  # noqa: E731
    bad = lambda z: torch.full((z.shape[0], 1, 8, 8), -1.0)  # a [-1, 1] model declared as [0, 1]  # noqa: E731
    with pytest.raises(RunError, match=r"decode returned means in \[-1, -1\], outside the declared range \[0, 1\].*"
                                       r"--input-range"):
        from_torch(enc, bad, image_shape=(1, 8, 8), likelihood="gaussian")
    clipped = from_torch(enc, bad, image_shape=(1, 8, 8), likelihood="gaussian", clamp_output=True)
    assert clipped.decode(torch.zeros(2, D)).max() == 0
    probs = lambda z: torch.full((z.shape[0], 1, 8, 8), 3.0)  # noqa: E731
    with pytest.raises(RunError, match=r"decode returned probabilities in \[3, 3\].*decoder_output='logits'"):
        from_torch(enc, probs, image_shape=(1, 8, 8), decoder_output="probs")


@pytest.mark.parametrize("returned,named", [
    (lambda x: {"mu": x}, "dict"),
    (lambda x: "codes", "str"),
    (lambda x: distributions.Bernoulli(logits=x.flatten(1)), "Bernoulli"),
    (lambda x: distributions.Independent(distributions.Laplace(x.flatten(1), 1.0), 1), r"Independent\(Laplace\)"),
    (lambda x: SimpleNamespace(mean=x.flatten(1)), "SimpleNamespace"),
])
def test_an_encoder_output_that_is_not_understood_is_named_with_what_is_accepted(returned, named):
    with pytest.raises(RunError, match=rf"^encode returned {named}; expected a tensor mu, a pair \(mu, logvar\), a "
                                       r"torch.distributions.Normal or Independent\(Normal\), or an object with .mean"):
        from_torch(returned, lambda z: z, image_shape=(1, 8, 8))


def test_a_decoder_output_that_is_not_understood_is_named():
    enc = lambda x: x.flatten(1)[:, :D]  # noqa: E731
    with pytest.raises(RunError, match=r"^decode returned dict; expected a tensor \(N, C, H, W\) or \(N, C\*H\*W\), "
                                       r"or an object with a .sample tensor"):
        from_torch(enc, lambda z: {"x": z}, image_shape=(1, 8, 8))


def test_a_module_without_encode_and_decode_is_refused():
    with pytest.raises(RunError, match="^Linear has no encode/decode methods; expected a module with encode"):
        from_torch(nn.Linear(64, 3), image_shape=(1, 8, 8))


# --- diffusers ---------------------------------------------------------------------------------------------------
def tiny_autoencoder_kl(**config):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install 'vaelab[diffusers]')")
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                                   up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                   latent_channels=4, norm_num_groups=8, sample_size=8, **config).eval()


def test_from_diffusers_sees_the_scaled_latent_and_decodes_back():
    scale, shift = 0.5, 0.1
    vae = tiny_autoencoder_kl(scaling_factor=scale, shift_factor=shift)
    model = from_diffusers(vae)
    assert model.latent_shape == (4, 4, 4) and model.image_shape == (1, 8, 8)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        dist = vae.encode(2 * x - 1).latent_dist
        q = model.encode(x)
        torch.testing.assert_close(q.mu, ((dist.mean - shift) * scale).reshape(3, 64))
        torch.testing.assert_close(q.logvar, (dist.logvar + 2 * math.log(scale)).reshape(3, 64))
        z = torch.randn(5, 64)
        own = vae.decode(z.view(5, 4, 4, 4) / scale + shift).sample
        torch.testing.assert_close(model.decode(z), (own.clamp(-1, 1) + 1) / 2)
    assert "z = (latent - 0.1) * 0.5" in model.source["latent"]
    assert model.source["scaling_factor"] == scale and model.source["shift_factor"] == shift


def test_a_diffusers_folder_loads_and_a_folder_of_another_model_is_refused(tmp_path):
    vae = tiny_autoencoder_kl()
    vae.save_pretrained(tmp_path / "vae")
    loaded = from_diffusers(load_diffusers(tmp_path / "vae"))
    assert loaded.source["shift_factor"] == 0.0 and loaded.source["scaling_factor"] == pytest.approx(0.18215)
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(RunError, match=r"holds UNet2DModel, not an AutoencoderKL; expected a folder written by "
                                       r"AutoencoderKL.save_pretrained"):
        load_diffusers(tmp_path / "unet")


# --- the command line --------------------------------------------------------------------------------------------
CONV_VAE = CONV_VAE_MODULE + '''

def pair():
    vae = make()
    return vae.encode, vae.decode


def raises():
    raise RuntimeError("no weights here")


def number():
    return 3


def wrong_shape():
    vae = make()
    return vae.encode, lambda z: vae.decode(z)[:, :, :4]


def unit_range():
    vae = make()
    return vae.encode, lambda z: 5 + vae.decode(z)
'''


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(textwrap.dedent(CONV_VAE))
    return path


@pytest.mark.slow
def test_cli_analyzes_a_pair_factory_and_a_diffusers_folder(monkeypatch, capsys, model_file, tmp_path):
    code, stdout, stderr = cli(monkeypatch, capsys, "analyze", "--model", f"{model_file}:pair", "--data", "digits",
                               "--input-range", "-1,1", "--only", "posterior", "--out", tmp_path / "pair")
    assert code == 0, stderr
    assert json.loads((tmp_path / "pair" / "analysis" / "posterior.json").read_text())["result"]["latent_dim"] == 64
    remembered = json.loads((tmp_path / "pair" / SOURCE_FILE).read_text())  # for `vaelab sample OUT`
    assert remembered["where"] == f"{model_file.resolve()}:pair" and remembered["data"] == "digits"
    assert remembered["options"]["input_range"] == [-1.0, 1.0] and remembered["options"]["likelihood"] is None
    tiny_autoencoder_kl(shift_factor=0.05).save_pretrained(tmp_path / "tinyvae")
    monkeypatch.chdir(tmp_path)  # the default --out: ./tinyvae-analysis
    code, stdout, stderr = cli(monkeypatch, capsys, "analyze", "--diffusers", tmp_path / "tinyvae", "--data", "digits",
                               "--only", "posterior")
    assert code == 0, stderr
    result = json.loads((tmp_path / "tinyvae-analysis" / "analysis" / "posterior.json").read_text())
    assert "z = (latent - 0.05) * 0.18215" in result["source"]["latent"]
    assert ModelSource.load(tmp_path / "tinyvae-analysis") == ModelSource("diffusers", str(tmp_path / "tinyvae"),
                                                                          "digits")


BAD = [
    (["--model", "{dir}/missing.py:make"], r"missing.py does not exist; expected FILE.py:FACTORY"),
    (["--model", "{model}"], r"is not FILE.py:FACTORY; expected e.g. --model my_vae.py:make"),
    (["--model", "{model}:nothing"], r"defines no function nothing\(\); it defines ConvVAE, make, .*expected"),
    (["--model", "{model}:raises"], r"raises\(\) raised RuntimeError \(no weights here\); expected raises\(\) to "
                                    r"return a module with encode\(x\) and decode\(z\)"),
    (["--model", "{model}:number"], r"returned int, which has no encode/decode; expected a module with encode"),
    (["--model", "{model}:wrong_shape", "--input-range", "-1,1"],
     r"decode returned shape \(\d+, 1, 4, 8\); expected \(\d+, 1, 8, 8\)"),
    (["--model", "{model}:unit_range", "--likelihood", "gaussian"],
     r"decode returned means in \[4.*\], outside the declared range \[0, 1\]; expected means in that range"),
    (["--model", "{model}:make", "--input-range", "1,-1"], r"--input-range '1,-1' is not LOW,HIGH"),
    (["--diffusers", "{dir}/unet"], r"holds UNet2DModel, not an AutoencoderKL; expected a folder written by"),
    (["--diffusers", "{dir}/nothing-here"], r"no such folder; expected a folder written by AutoencoderKL"),
    (["--pythae", "{dir}"], r"has no model_config.json; expected a folder written by a pythae model's save\(\)"),
    (["--model", "{model}:make", "NODATA"], r"--model needs --data NAME"),
    (["runs/x", "--model", "{model}:make"], r"give a run directory or --model, not both"),
    (["--model", "{model}:make", "--diffusers", "{dir}"], r"give one model, not --model and --diffusers"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[f"{i}-{a[0].strip('-')}" for i, (a, _) in enumerate(BAD)])
def test_cli_bad_models_are_one_line_and_exit_2(monkeypatch, capsys, model_file, tmp_path, args, message):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    argv = [a.format(dir=tmp_path, model=model_file) for a in args if a != "NODATA"]
    if "NODATA" not in args:
        argv += ["--data", "digits"]
    code, stdout, stderr = cli(monkeypatch, capsys, "diagnose", *argv, "--quick")
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    assert re.search(message, lines[0]), lines[0]
