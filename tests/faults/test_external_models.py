"""10. Models from outside: a user's torch module that returns NaN, the wrong shape or the wrong dtype from `encode`
or `decode` gets an error naming which call and what was expected -- through the public analysis path, not a
shape error from deep inside an analysis."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vaelab.analysis import analyze, from_model
from vaelab.analysis.adapters import TorchModelAdapter
from vaelab.data import load_dataset
from vaelab.errors import RunError


class Encoder(nn.Module):
    def __init__(self, fault: str | None = None):
        super().__init__()
        self.net, self.fault = nn.Linear(64, 6), fault

    def forward(self, x):
        h = self.net(x.flatten(1))
        mu, logvar = h[:, :3], h[:, 3:]
        if self.fault == "nan":
            mu = mu * float("nan")
        elif self.fault == "inf-logvar":
            logvar = logvar + float("inf")
        elif self.fault == "shape":
            mu = torch.cat([mu, mu], 1)
        elif self.fault == "dtype":
            mu = mu.to(torch.int32)
        elif self.fault == "not-a-tensor":
            return mu.tolist()
        elif self.fault == "three-values":
            return mu, logvar, mu
        return mu, logvar


class Decoder(nn.Module):
    def __init__(self, fault: str | None = None):
        super().__init__()
        self.net, self.fault = nn.Linear(3, 64), fault

    def forward(self, z):
        out = self.net(z).view(-1, 1, 8, 8)
        if self.fault == "nan":
            out = out * float("nan")
        elif self.fault == "shape":  # (a flat (N, C*H*W) output is fine: the adapter reshapes it)
            out = out[:, :, :4]
        elif self.fault == "dtype":
            out = (out > 0).long()
        return out


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(200, 100)


ENCODER_FAULTS = [
    ("nan", r"encode \(mu\) returned \d+ non-finite values"),
    ("inf-logvar", r"encode \(logvar\) returned \d+ non-finite values"),
    ("shape", r"encode \(mu\) returned shape \(\d+, 6\); expected \(\d+, 3\)"),
    ("dtype", r"encode \(mu\) returned dtype torch.int32; expected a floating-point tensor"),
    ("not-a-tensor", r"encode returned list"),
    ("three-values", r"encode returned 3 values; expected \(mu, logvar\) or mu alone"),
]
DECODER_FAULTS = [
    ("nan", r"decode returned \d+ non-finite values"),
    ("shape", r"decode returned shape \(\d+, 1, 4, 8\); expected \(\d+, 1, 8, 8\)"),
    ("dtype", r"decode returned dtype torch.int64; expected a floating-point tensor"),
]


@pytest.mark.parametrize("fault,message", ENCODER_FAULTS, ids=[f for f, _ in ENCODER_FAULTS])
def test_a_bad_encoder_is_named_by_an_analysis(digits, fault, message):
    model = TorchModelAdapter(Encoder(fault), Decoder(), latent_dim=3, image_shape=(1, 8, 8))
    with pytest.raises(RunError, match=message):
        analyze(from_model(model, digits), only="posterior")


@pytest.mark.parametrize("fault,message", DECODER_FAULTS, ids=[f for f, _ in DECODER_FAULTS])
def test_a_bad_decoder_is_named_by_an_analysis(digits, fault, message):
    model = TorchModelAdapter(Encoder(), Decoder(fault), latent_dim=3, image_shape=(1, 8, 8))
    with pytest.raises(RunError, match=message):
        analyze(from_model(model, digits), only="likelihood", settings={"samples": 5, "n_images": 20})


def test_a_well_behaved_user_model_passes_every_check(digits):
    model = TorchModelAdapter(Encoder(), Decoder(), latent_dim=3, image_shape=(1, 8, 8))
    results = analyze(from_model(model, digits), only="posterior,likelihood",
                      settings={"likelihood.samples": 5, "likelihood.n_images": 20})
    assert results["posterior"].data["latent_dim"] == 3
    assert results["likelihood"].data["log_likelihood"] < 0


def test_an_object_without_the_model_interface_is_refused_with_the_fix(digits):
    with pytest.raises(RunError, match="has no 'encode'; wrap a plain torch module with .*TorchModelAdapter"):
        from_model(nn.Linear(64, 3), digits)
