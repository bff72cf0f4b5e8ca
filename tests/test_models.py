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


@pytest.mark.parametrize("network", ["mlp", "conv", "conv-spatial"])
@pytest.mark.parametrize("prior", ["vamp", "mog"])
def test_every_network_takes_a_learned_prior(network, prior):
    model_cfg = {"network": network, "latent_dim": 5, "conv_channels": [8], "latent_channels": 3, "hidden": [16],
                 "prior": prior, "prior_components": 4}
    model = build_model(tiny_config(model=model_cfg))
    assert isinstance(model, LatentModel) and model.prior.name == prior
    d = model.latent_dim
    z = model.encode(torch.rand(4, 1, 8, 8)).rsample(3)
    log_p = model.log_prior(z)
    assert log_p.shape == (3, 4) and torch.isfinite(log_p).all()
    assert model.prior.sample(6).shape == (6, d) and model.generate(6).shape == (6, 1, 8, 8)
    expected = {"vamp": {"prior.pseudo_logits": (4, 1, 8, 8)},
                "mog": {"prior.means": (4, d), "prior.logvars": (4, d), "prior.logits": (4,)}}[prior]
    assert {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("prior.")} == expected


def test_a_vamp_prior_at_the_questions_latent_size_fits_in_memory():
    """D = 65,536 and K = 500: log p(z) never forms a (rows, K, D) tensor (that would be 4 GiB per 32 rows)."""
    cfg = tiny_config(data={"name": "mnist"}, model={"network": "conv-spatial", "latent_channels": 1024,
                                                     "conv_channels": [32, 64], "prior": "vamp", "prior_components": 500})
    from vaelab.models.priors import mixture_log_prob

    d, k = 65536, 500
    g = torch.Generator().manual_seed(0)
    means, logvars = torch.randn(k, d, generator=g), 0.1 * torch.randn(k, d, generator=g)
    z = means[:3] + torch.exp(0.5 * logvars[:3]) * torch.randn(3, d, generator=g)
    log_p = mixture_log_prob(z, means, logvars, torch.full((k,), -math.log(k)))
    # z_i was drawn from component i, which dominates: log p(z_i) ~ log N(z_i; m_i, v_i) - log K
    own = -0.5 * ((z - means[:3]).pow(2) * torch.exp(-logvars[:3]) + logvars[:3] + math.log(2 * math.pi)).double().sum(-1)
    # to the float32 output's rounding (the expanded quadratic in float32 would be off by tenths of a nat)
    assert torch.allclose(log_p.double(), own - math.log(k), atol=0.02)
    with torch.device("meta"):
        assert build_model(cfg).prior.pseudo_logits.shape == (500, 1, 28, 28)
