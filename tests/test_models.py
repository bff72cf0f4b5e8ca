"""Networks, posterior families and the model interface."""
import math

import pytest
import torch

from conftest import tiny_config
from vaelab.config import parse_arch
from vaelab.models import LatentModel, build_model


def test_parse_arch_reads_the_documents_notation():
    assert parse_arch("784-256-32-8-2") == (784, [256, 32, 8], 2)
    assert parse_arch("784-2") == (784, [], 2)
    for bad in ("784", "784-0-2", "a-b", "784--2"):
        with pytest.raises(ValueError):
            parse_arch(bad)


def test_mlp_layers_follow_the_arch_string():
    model = build_model(tiny_config(model={"arch": "64-32-8-2"}))
    enc = [m.out_features for m in model.encoder.net if isinstance(m, torch.nn.Linear)]
    dec = [m.out_features for m in model.decoder.net if isinstance(m, torch.nn.Linear)]
    assert enc == [32, 8] and model.head.mu.out_features == 2 and dec == [8, 32, 64]


@pytest.mark.parametrize("network", ["mlp", "conv", "conv-spatial"])
@pytest.mark.parametrize("posterior", ["diagonal", "isotropic", "deterministic"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "continuous-bernoulli"])
def test_every_combination_encodes_decodes_and_scores(network, posterior, likelihood):
    model_cfg = {"network": network, "posterior": posterior, "likelihood": likelihood, "latent_dim": 5,
                 "conv_channels": [8], "latent_channels": 3, "hidden": [16]}
    objective = {"name": "deterministic"} if posterior == "deterministic" else {"name": "elbo"}
    model = build_model(tiny_config(model=model_cfg, objective=objective))
    assert isinstance(model, LatentModel)
    x = torch.rand(4, 1, 8, 8)
    q = model.encode(x)
    d = model.latent_dim
    assert q.mu.shape == (4, d) and d == math.prod(model.latent_shape)
    if network == "conv-spatial":
        assert model.latent_shape == (3, 4, 4)
    if posterior == "deterministic":
        assert q.logvar is None and torch.equal(q.rsample(2)[1], q.mu)
    else:
        assert q.logvar.shape == (4, d)
        if posterior == "isotropic":  # one scalar variance per input
            assert torch.all(q.logvar == q.logvar[:, :1])
    z = q.rsample(3)
    params = model.decode(z)
    assert params.shape == (3, 4, 1, 8, 8)
    ll = model.log_likelihood(x, params)
    assert ll.shape == (3, 4) and torch.isfinite(ll).all()
    assert model.log_prior(z).shape == (3, 4)
    assert model.generate(6).shape == (6, 1, 8, 8) and model.reconstruct(x).shape == x.shape


def test_spatial_latent_of_the_question_is_8x8xC_on_28x28():
    cfg = tiny_config(data={"name": "mnist"}, model={"network": "conv-spatial", "latent_channels": 1024, "conv_channels": [32, 64]})
    with torch.device("meta"):
        model = build_model(cfg)
    assert model.latent_shape == (1024, 8, 8) and model.latent_dim == 65536
