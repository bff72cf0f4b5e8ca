"""Priors (vaelab.models.priors) against computations that do not share their code: torch.distributions, explicit
loops over the mixture's components, moments of the mixture in closed form, a linear-Gaussian model whose log p(x)
is a closed-form mixture of Gaussians; and runs trained, resumed and analysed with each prior."""
import copy
import json
import math
import subprocess
import sys

import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Independent, MixtureSameFamily, MultivariateNormal, Normal
from typer.testing import CliRunner

from conftest import tiny_config
from vaelab.analysis import from_model
from vaelab.analysis.adapters import TorchModelAdapter
from vaelab.analysis.likelihood import importance_sampled_log_likelihood
from vaelab.analysis.prior_gap import aggregate_posterior_gap
from vaelab.analysis.stats.synthetic import model_from_codes
from vaelab.models import build_model
from vaelab.models.posteriors import GaussianPosterior
from vaelab.models.priors import MixturePrior, StandardNormal, VampPrior
from vaelab.objectives import elbo

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def vamp_model(k: int = 5, spread: float = 3.0, latent: int = 3):
    """A tiny float64 VampPrior VAE whose pseudo-inputs differ enough for the components to be distinct."""
    model = build_model(tiny_config(model={"arch": f"64-32-{latent}", "prior": "vamp", "prior_components": k})).double()
    with torch.no_grad():
        model.prior.pseudo_logits.copy_(spread * torch.randn_like(model.prior.pseudo_logits))
    return model


def vamp_components_by_loop(model):
    """The VampPrior's components one pseudo-input at a time: [(mu_k (D,), std_k (D,))]."""
    out = []
    for logits in model.prior.pseudo_logits:
        q = model.encode(torch.sigmoid(logits)[None])
        out.append((q.mu[0], torch.exp(0.5 * q.logvar[0])))
    return out


def reference_mixture(means, stds, weights=None) -> MixtureSameFamily:
    weights = torch.ones(means.shape[0]) if weights is None else weights
    return MixtureSameFamily(Categorical(probs=weights), Independent(Normal(means, stds), 1))


# --- the standard normal ----------------------------------------------------------------------------------
def test_standard_normal_log_prob_and_closed_form_kl(float64):
    prior = StandardNormal(6)
    z = torch.randn(3, 4, 6)
    assert torch.allclose(prior.log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))
    g = torch.Generator().manual_seed(1)
    q = GaussianPosterior(torch.randn(4, 6, generator=g), 0.5 * torch.randn(4, 6, generator=g))
    zs = q.rsample(200_000, g)
    ratio = Independent(Normal(q.mu, torch.exp(0.5 * q.logvar)), 1).log_prob(zs) - Normal(0.0, 1.0).log_prob(zs).sum(-1)
    mc, se = ratio.mean(0), ratio.std(0) / math.sqrt(zs.shape[0])
    assert torch.all((prior.kl(q) - mc).abs() < 5 * se)
    assert torch.equal(prior.kl(q, zs), prior.kl(q))  # closed form whatever samples are passed
    assert prior.kl_per_dim(q).shape == (4, 6)


def test_standard_prior_changes_neither_the_state_dict_nor_generation():
    """Checkpoints of standard-prior runs keep loading: the keys of a model saved before priors existed."""
    model = build_model(tiny_config(model={"arch": "64-32-4"}))
    shapes = {"encoder.net.0.weight": (32, 64), "encoder.net.0.bias": (32,), "head.mu.weight": (4, 32),
              "head.mu.bias": (4,), "head.logvar.weight": (4, 32), "head.logvar.bias": (4,),
              "decoder.net.0.weight": (32, 4), "decoder.net.0.bias": (32,), "decoder.net.2.weight": (64, 32),
              "decoder.net.2.bias": (64,)}
    old = {k: torch.randn(s) for k, s in shapes.items()}
    model.load_state_dict(old)  # strict
    assert set(model.state_dict()) == set(shapes)
    assert torch.equal(model.head.mu.weight, old["head.mu.weight"])
    z = torch.randn((6, 4), generator=torch.Generator().manual_seed(3))
    expected = torch.sigmoid(model.decode(z))
    assert torch.equal(model.generate(6, generator=torch.Generator().manual_seed(3)), expected)


# --- the VampPrior ---------------------------------------------------------------------------------------
def test_vamp_log_prob_matches_a_loop_over_its_components(float64, monkeypatch):
    model = vamp_model(k=5)
    comps = vamp_components_by_loop(model)
    z = torch.randn(7, 2, 3)
    with torch.no_grad():
        per_k = torch.stack([Independent(Normal(m, s), 1).log_prob(z) for m, s in comps])  # (K, 7, 2)
        expected = torch.logsumexp(per_k, 0) - math.log(5)
        assert torch.allclose(model.prior.log_prob(z), expected, atol=1e-10)
        assert torch.allclose(model.log_prior(z), expected, atol=1e-10)
        monkeypatch.setattr("vaelab.models.priors.MIXTURE_CHUNK", 9)  # one row of z per chunk
        assert torch.allclose(model.prior.log_prob(z), expected, atol=1e-10)


@pytest.mark.parametrize("d, k, offset", [(200, 500, 0.0), (800, 500, 30.0), (16384, 100, 5.0), (65536, 20, 0.0)])
def test_mixture_log_prob_in_float32_is_within_hundredths_of_a_nat_of_float64(d, k, offset):
    """Training computes log p(z) of a mixture in float32 (under bf16 autocast too); against the direct sum
    sum_d (z_d - m_kd)^2 / v_kd in float64, for codes drawn from the mixture, posterior variances down to e^-6 and
    everything shifted ``offset`` away from the origin (where the uncentred expansion would cancel)."""
    from vaelab.models.priors import mixture_log_prob

    g = torch.Generator().manual_seed(d)
    means = offset + torch.randn(k, d, generator=g)
    logvars = -6 * torch.rand(k, d, generator=g)
    pick = torch.randint(k, (32,), generator=g)
    z = means[pick] + torch.exp(0.5 * logvars[pick]) * torch.randn(32, d, generator=g)
    log_w = torch.full((k,), -math.log(k))
    m64, v64, z64 = means.double(), logvars.double(), z.double()
    per_k = torch.stack([-0.5 * ((z64 - m64[j]).pow(2) * torch.exp(-v64[j]) + v64[j] + math.log(2 * math.pi)).sum(-1)
                         for j in range(k)])  # (K, 32)
    expected = torch.logsumexp(per_k - math.log(k), 0)
    got = mixture_log_prob(z, means, logvars, log_w)
    assert got.dtype == torch.float32
    assert (got.double() - expected).abs().max() < 0.01 + 1e-6 * expected.abs().max()  # float32's own rounding
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(mixture_log_prob(z, means, logvars, log_w), got)
    assert (mixture_log_prob(z64, m64, v64, log_w.double()) - expected).abs().max() < 1e-6


def test_vamp_samples_have_the_mixtures_mean_and_covariance(float64):
    model = vamp_model(k=4, spread=4.0)
    with torch.no_grad():
        comps = vamp_components_by_loop(model)
        means = torch.stack([m for m, _ in comps])
        var = torch.stack([s ** 2 for _, s in comps])
        mean = means.mean(0)
        cov = torch.diag(var.mean(0)) + (means.T @ means) / 4 - torch.outer(mean, mean)
        n = 200_000
        z = model.prior.sample(n, torch.Generator().manual_seed(0))
    assert z.shape == (n, 3) and not z.requires_grad
    assert torch.all((z.mean(0) - mean).abs() < 5 * torch.sqrt(torch.diagonal(cov) / n))
    emp = torch.cov(z.T)
    se = torch.sqrt((torch.outer(torch.diagonal(cov), torch.diagonal(cov)) + cov ** 2) / n)
    assert torch.all((emp - cov).abs() < 6 * se), (emp, cov)


def test_elbo_with_a_vamp_prior_matches_a_separate_monte_carlo_estimate(float64):
    model = vamp_model(k=6)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)).round()
    n = 20_000
    with torch.no_grad():
        ours = elbo(model, x, samples=n, generator=torch.Generator().manual_seed(0))
        q = model.encode(x)
        qd = Independent(Normal(q.mu, torch.exp(0.5 * q.logvar)), 1)
        z = qd.sample((n,))  # torch's own draws, (n, B, D)
        comps = vamp_components_by_loop(model)
        prior = reference_mixture(torch.stack([m for m, _ in comps]), torch.stack([s for _, s in comps]))
        log_px_z = Bernoulli(logits=model.decode(z)).log_prob(x.expand(n, *x.shape)).flatten(2).sum(-1)
        bound = log_px_z + prior.log_prob(z) - qd.log_prob(z)  # (n, B)
    ref, se = bound.mean(0), bound.std(0) / math.sqrt(n)
    assert torch.all((ours.bound - ref).abs() < 5 * math.sqrt(2) * se), (ours.bound, ref, se)
    assert torch.allclose(ours.bound, ours.recon - ours.kl)
    assert torch.all(ours.kl > 0)


def test_vamp_kl_is_the_monte_carlo_average_over_the_reconstructions_samples(float64):
    model = vamp_model(k=3)
    x = torch.rand(2, 1, 8, 8).round()
    eps = torch.randn(5, 2, 3)
    terms = elbo(model, x, samples=5, generator=eps)  # the noise the vectorised trainer passes in
    q = model.encode(x)
    z = q.mu + torch.exp(0.5 * q.logvar) * eps
    assert torch.allclose(terms.kl, (q.log_prob(z) - model.log_prior(z)).mean(0))
    with pytest.raises(ValueError, match="no closed-form KL"):
        model.prior.kl(q)


def test_vamp_prior_is_one_parameter_of_the_model_and_follows_copies():
    model = build_model(tiny_config(model={"arch": "64-32-4", "prior": "vamp", "prior_components": 7}))
    keys = list(model.state_dict())
    assert [k for k in keys if k.startswith("prior.")] == ["prior.pseudo_logits"]
    assert model.state_dict()["prior.pseudo_logits"].shape == (7, 1, 8, 8)
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in model.state_dict().values())
    twin = copy.deepcopy(model)
    assert twin.prior._encode.__self__ is twin
    with torch.no_grad():
        twin.head.mu.bias.add_(1.0)
    assert not torch.allclose(twin.prior.components()[0], model.prior.components()[0])
    assert model.generate(5).shape == (5, 1, 8, 8)


# --- the learned mixture -----------------------------------------------------------------------------------
def test_mixture_prior_log_prob_matches_mixture_same_family(float64):
    prior = MixturePrior(4, 3)
    with torch.no_grad():
        prior.logvars.copy_(0.5 * torch.randn(4, 3))
        prior.logits.copy_(torch.randn(4))
    z = torch.randn(6, 5, 3) * 2
    ref = MixtureSameFamily(Categorical(logits=prior.logits), Independent(Normal(prior.means, torch.exp(0.5 * prior.logvars)), 1))
    assert torch.allclose(prior.log_prob(z), ref.log_prob(z), atol=1e-10)
    n = 100_000
    s = prior.sample(n, torch.Generator().manual_seed(0))
    assert torch.all((s.mean(0) - ref.mean).abs() < 5 * torch.sqrt(ref.variance / n))
    axes = torch.tensor([2, 0])
    assert torch.allclose(prior.marginal(axes).log_prob(z[..., axes]),
                          MixtureSameFamily(Categorical(logits=prior.logits),
                                            Independent(Normal(prior.means[:, axes], torch.exp(0.5 * prior.logvars[:, axes])), 1)
                                            ).log_prob(z[..., axes]), atol=1e-10)


# --- importance-sampled log p(x) where it is known -----------------------------------------------------------
@pytest.mark.parametrize("kind", ["mog", "vamp"])
def test_importance_sampling_matches_the_closed_form_mixture_marginal(kind, float64):
    """p(z) = sum_k pi_k N(m_k, diag v_k), p(x|z) = N(W z + b, s^2 I): p(x) = sum_k pi_k N(W m_k + b, W V_k W^T + s^2 I).
    The VampPrior's components are known because the encoder is linear: m_k = A u_k + c, v_k = the encoder's."""
    g = torch.Generator().manual_seed(4)
    d, s, pixels = 2, 0.3, 64
    w = torch.randn(pixels, d, generator=g) * 0.5
    b = torch.randn(pixels, generator=g) * 0.1
    a = torch.linalg.pinv(w)
    c = -a @ b
    logvar = math.log(0.1)

    def encoder(x):
        mu = x.flatten(1) @ a.T + c
        return mu, torch.full_like(mu, logvar)

    def decoder(z):
        return z @ w.T + b

    if kind == "mog":
        prior = MixturePrior.from_components(torch.randn(3, d, generator=g), 0.3 * torch.randn(3, d, generator=g),
                                             torch.log_softmax(torch.randn(3, generator=g), 0))
        means, logvars, log_pi = prior.means, prior.logvars, prior.logits
    else:
        prior = VampPrior(4, (1, 8, 8), d)
        with torch.no_grad():
            prior.pseudo_logits.copy_(2 * torch.randn(4, 1, 8, 8, generator=g))
        means = torch.sigmoid(prior.pseudo_logits).flatten(1) @ a.T + c
        logvars, log_pi = torch.full_like(means, logvar), torch.full((4,), -math.log(4))
    model = TorchModelAdapter(encoder, decoder, d, (1, 8, 8), likelihood="gaussian", decoder_output="mean",
                              gaussian_std=s, prior=prior)
    with torch.no_grad():
        covs = torch.stack([w @ torch.diag(lv.exp()) @ w.T + s ** 2 * torch.eye(pixels) for lv in logvars])
        exact = MixtureSameFamily(Categorical(logits=log_pi.detach()),
                                  MultivariateNormal(means.detach() @ w.T + b, covariance_matrix=covs.detach()))
        x = exact.sample((4,)).view(4, 1, 8, 8)
        lp, se = importance_sampled_log_likelihood(model, x, samples=20000, batch_images=2,
                                                   generator=torch.Generator().manual_seed(0))
        truth = exact.log_prob(x.view(4, pixels))
    assert torch.all((lp - truth).abs() < 5 * se + 1e-3), (lp, truth, se)
    assert float(se.max()) < 0.2  # the check has teeth


# --- the prior-gap analysis against a prior that is not N(0, I) -----------------------------------------------
def mixture_codes(n: int, d: int, complement_sigma2: float, seed: int = 0):
    """Codes whose aggregate posterior is the 4-component prior on the first 2 axes (means (+-2, +-2), variance 1)
    and N(0, complement_sigma2) on the others: the prior itself when complement_sigma2 = 1."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[2.0, 2.0], [2.0, -2.0], [-2.0, 2.0], [-2.0, -2.0]])
    mu = torch.zeros(n, d)
    mu[:, :2] = centres[torch.randint(0, 4, (n,), generator=g)] + math.sqrt(0.75) * torch.randn(n, 2, generator=g)
    s2 = torch.full((d,), complement_sigma2)
    s2[:2] = 0.25
    means = torch.zeros(4, d)
    means[:, :2] = centres
    prior = MixturePrior.from_components(means, torch.zeros(4, d), torch.full((4,), -math.log(4)))
    return mu, s2.log().expand(n, d).clone(), prior


@pytest.mark.parametrize("complement_sigma2, shell_gap", [(1.0, False), (0.5, True)])
def test_prior_gap_compares_codes_with_the_models_own_prior(complement_sigma2, shell_gap):
    mu, logvar, prior = mixture_codes(4200, 32, complement_sigma2)
    model, data = model_from_codes(mu, logvar, 4000, "mixture", prior=prior)
    r = aggregate_posterior_gap(from_model(model, data), mixture_points=4000, samples=1000, permutations=50).data
    assert r["reference"] == "model prior (mog, K=4)"
    assert r["informative"]["dims"] == 2
    assert not r["informative_mismatch"]
    assert r["informative"]["aggregate_variance"] == pytest.approx([1.0, 1.0], rel=0.2)
    assert r["shell_mismatch"] is shell_gap
    shell = r["tests"]["shell"]
    assert shell["ci_low"] <= complement_sigma2 <= shell["ci_high"]
    assert r["complement"]["prior_variance_per_direction"] == pytest.approx(1.0, rel=0.05)
    if not shell_gap:  # against N(0, I) the same codes differ: the reference is what decides
        standard, _ = model_from_codes(mu, logvar, 4000, "mixture")
        s = aggregate_posterior_gap(from_model(standard, data), mixture_points=4000, samples=1000, permutations=50).data
        assert s["reference"] == "N(0, I)" and s["informative_mismatch"]


# --- runs: train, resume, analyse ------------------------------------------------------------------------------
@pytest.mark.parametrize("prior", ["vamp", "mog"])
def test_a_run_with_a_learned_prior_trains_resumes_and_is_analysed(prior, tmp_path):
    from vaelab.cli import app
    from vaelab.runs import Run

    runner = CliRunner()
    out = runner.invoke(app, ["train", "--dataset", "digits", "--arch", "64-64-4", "--prior", prior,
                              "--prior-components", "10", "--epochs", "1", "--batch-size", "64", "--lr", "3e-3",
                              "--name", "r", "--out", str(tmp_path), "--no-progress"])
    assert out.exit_code == 0, out.output
    run_dir = tmp_path / "r"
    out = runner.invoke(app, ["resume", str(run_dir), "--epochs", "2", "--no-progress"])
    assert out.exit_code == 0, out.output
    run = Run(run_dir)
    assert run.summary()["epochs_done"] == 2 and run.config.model.prior == prior
    first, last = run.load_model(epoch=1), run.load_model()
    name = "prior.pseudo_logits" if prior == "vamp" else "prior.means"
    assert not torch.equal(first.state_dict()[name], last.state_dict()[name])  # the prior trained on after resuming
    assert all(math.isfinite(m["test_loss"]) and m["test_kl"] > 0 for m in run.metrics)

    out = runner.invoke(app, ["analyze", str(run_dir), "--only", "prior-gap,samples,likelihood,typical-set",
                              "--set", "likelihood.samples=50", "--set", "likelihood.n_images=100",
                              "--set", "prior-gap.permutations=20", "--set", "samples.n=20"])
    assert out.exit_code == 0, out.output
    read = lambda name: json.loads((run_dir / "analysis" / f"{name}.json").read_text())["result"]  # noqa: E731
    assert read("prior-gap")["reference"] == f"model prior ({prior}, K=10)"
    assert read("samples")["prior"] == f"model prior ({prior}, K=10)"
    lik = read("likelihood")
    assert math.isfinite(lik["log_likelihood"]) and lik["test"]["kl"] > 0
    assert read("typical-set")["prior"] == f"model prior ({prior}, K=10)"


def test_a_learned_prior_trains_the_same_vectorised_as_alone(tmp_path):
    from test_ensemble import assert_same, quiet, seeds
    from vaelab.ensemble import train_ensemble
    from vaelab.trainer import train

    configs = seeds(2, model={"arch": "64-32-4", "prior": "vamp", "prior_components": 6},
                    train={"epochs": 1, "batch_size": 100, "lr": 3e-3})
    together = train_ensemble(configs, tmp_path / "v", progress=False, log=quiet)
    for cfg, run in zip(configs, together):
        assert_same(run, train(cfg, tmp_path / "s", progress=False, log=quiet))


def test_a_learned_prior_with_a_deterministic_posterior_is_refused_in_one_line(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "vaelab", "train", "--prior", "vamp", "--posterior", "deterministic",
                          "--objective", "deterministic", "--print-config"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
    assert "prior 'vamp' needs a posterior with a variance" in bad.stderr


@pytest.mark.parametrize("model, message", [
    ({"prior": "vamp", "prior_components": 0}, "model.prior_components: Input should be greater than or equal to 1"),
    ({"prior_components": 10}, "prior_components is only used by priors 'vamp' and 'mog', not 'standard'"),
    ({"prior": "vampprior"}, "model.prior: Input should be 'standard', 'vamp' or 'mog'"),
])
def test_bad_prior_settings_are_one_line_errors(model, message):
    from vaelab.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        tiny_config(model={"arch": "64-32-4", **model})
    assert message in str(err.value) and "\n" not in str(err.value)
