"""Objectives against independent computations: closed forms, Monte Carlo, known limits, and a linear-Gaussian
VAE whose marginal likelihood log p(x) = log N(x; b, W W^T + s^2 I) is exact."""
import math

import pytest
import torch

from conftest import tiny_config
from vaelab.models import build_model
from vaelab.models.posteriors import GaussianPosterior, std_normal_log_prob
from vaelab.objectives import Objective, deterministic, elbo, iwae, log_weights, renyi, renyi_from_log_weights, vr_max


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("family", ["diagonal", "isotropic"])
def test_closed_form_kl_matches_monte_carlo(family):
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(4, 6, generator=g)
    logvar = torch.randn(4, 6, generator=g) * 0.5
    if family == "isotropic":
        logvar = logvar[:, :1].expand(4, 6)
    q = GaussianPosterior(mu, logvar)
    z = q.rsample(200_000, g)
    log_ratio = q.log_prob(z) - std_normal_log_prob(z)  # (K, B)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(z.shape[0])
    closed = q.kl_per_dim().sum(-1)
    assert torch.all((mc - closed).abs() < 5 * se), (mc, closed, se)


def linear_gaussian_vae(exact_encoder: bool, sigma: float = 0.5, latent: int = 3):
    """VAE with decoder mean W z + b (no hidden layers) and fixed Gaussian noise sigma.

    W has orthogonal columns, so the true posterior is diagonal: cov = s^2 (W^T W + s^2 I)^-1 and
    mean = (W^T W + s^2 I)^-1 W^T (x - b). With ``exact_encoder`` the encoder computes exactly that."""
    cfg = tiny_config(model={"network": "mlp", "hidden": [], "latent_dim": latent, "likelihood": "gaussian",
                             "gaussian_std": sigma})
    model = build_model(cfg).double()
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(64, latent, generator=g, dtype=torch.float64))
    W = q * torch.tensor([2.0, 1.0, 0.5][:latent])
    b = torch.randn(64, generator=g, dtype=torch.float64) * 0.1
    lin = model.decoder.net[0]
    with torch.no_grad():
        lin.weight.copy_(W), lin.bias.copy_(b)
        if exact_encoder:
            M = W.T @ W + sigma**2 * torch.eye(latent, dtype=torch.float64)
            A = torch.linalg.solve(M, W.T)  # (latent, 64)
            model.head.mu.weight.copy_(A), model.head.mu.bias.copy_(-A @ b)
            model.head.logvar.weight.zero_()
            model.head.logvar.bias.copy_(torch.log(sigma**2 / torch.diagonal(M)))
    cov = W @ W.T + sigma**2 * torch.eye(64, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(b, covariance_matrix=cov)
    x = exact.sample((5,)).view(5, 1, 8, 8)
    return model, x, exact.log_prob(x.view(5, 64))


def test_exact_posterior_makes_every_bound_equal_log_px():
    model, x, log_px = linear_gaussian_vae(exact_encoder=True)
    g = torch.Generator().manual_seed(0)
    log_w, _, _ = log_weights(model, x, 50, g)
    assert torch.allclose(log_w, log_px.expand_as(log_w), atol=1e-8)  # log w is constant = log p(x)
    with torch.no_grad():
        for terms in (iwae(model, x, samples=50, generator=g), renyi(model, x, alpha=0.5, samples=50, generator=g),
                      renyi(model, x, alpha=1.0, samples=50, generator=g), vr_max(model, x, samples=50, generator=g)):
            assert torch.allclose(terms.bound, log_px, atol=1e-6)
        # the closed-form-KL ELBO is exact in expectation: E log p(x|z) - KL = log p(x), up to Monte Carlo error
        recon = torch.stack([elbo(model, x, samples=1, generator=g).recon for _ in range(4000)])
        kl = model.encode(x).kl_per_dim().sum(-1)
        se = recon.std(0) / math.sqrt(recon.shape[0])
        assert torch.all((recon.mean(0) - kl - log_px).abs() < 5 * se)


def test_bounds_are_ordered_and_iwae_grows_with_k_to_log_px():
    model, x, log_px = linear_gaussian_vae(exact_encoder=False)
    g = torch.Generator().manual_seed(0)
    reps = 200
    with torch.no_grad():
        means = {}
        for k in (1, 10, 100):
            means[k] = torch.stack([iwae(model, x, samples=k, generator=g).bound for _ in range(reps)]).mean(0)
        big = iwae(model, x, samples=20000, generator=g).bound
        analytic_elbo = elbo(model, x, samples=20000, generator=g).bound
    assert torch.all(means[1] < means[10]) and torch.all(means[10] < means[100])
    assert torch.all(means[100] < log_px + 1e-6)
    assert torch.all(analytic_elbo < log_px)
    assert torch.allclose(big, log_px, atol=0.05 * log_px.abs().max().item() + 0.5)


def test_vr_limits_and_monotonicity_in_alpha():
    g = torch.Generator().manual_seed(0)
    log_w = torch.randn(7, 4, generator=g) * 3
    elbo_mc = log_w.mean(0)
    assert torch.allclose(renyi_from_log_weights(log_w, 1.0 - 1e-7), elbo_mc, atol=1e-4)
    assert torch.allclose(renyi_from_log_weights(log_w, 1.0 + 1e-7), elbo_mc, atol=1e-4)
    assert torch.allclose(renyi_from_log_weights(log_w, 0.0), torch.logsumexp(log_w, 0) - math.log(7))
    assert torch.allclose(renyi_from_log_weights(log_w, -1e6), log_w.max(0).values, atol=1e-4)
    alphas = [-math.inf, -5, -1, 0, 0.3, 0.99, 1.0, 2.0, 10.0]
    values = torch.stack([renyi_from_log_weights(log_w, a) for a in alphas])
    assert torch.all(values[:-1] >= values[1:] - 1e-10)  # VR_alpha is non-increasing in alpha


@pytest.mark.parametrize("alpha", [0.0, 0.5, -2.0, 3.0, -math.inf])
def test_vr_gradient_is_the_papers_weighted_score(alpha):
    """Li & Turner (2016): grad VR_alpha = sum_k w_hat_k grad log w_k, w_hat = softmax((1 - alpha) log w)."""
    model, x, _ = linear_gaussian_vae(exact_encoder=False)
    x = x[:1]
    params = [p for p in model.parameters() if p.requires_grad]
    seed = 11
    bound = (vr_max(model, x, samples=6, generator=torch.Generator().manual_seed(seed)) if alpha == -math.inf else
             renyi(model, x, alpha=alpha, samples=6, generator=torch.Generator().manual_seed(seed))).bound.sum()
    auto = torch.autograd.grad(bound, params)
    log_w, _, _ = log_weights(model, x, 6, torch.Generator().manual_seed(seed))
    log_w = log_w[:, 0]
    if alpha == -math.inf:
        w_hat = torch.nn.functional.one_hot(log_w.argmax(), 6).double()
    else:
        w_hat = torch.softmax((1 - alpha) * log_w.detach(), 0)
    manual = [torch.zeros_like(p) for p in params]
    for k in range(6):
        grads = torch.autograd.grad(log_w[k], params, retain_graph=True)
        for m, gk in zip(manual, grads):
            m += w_hat[k] * gk
    for a, m in zip(auto, manual):
        assert torch.allclose(a, m, atol=1e-8)


def test_deterministic_objective_is_reconstruction_plus_quadratic_penalty():
    cfg = tiny_config(model={"posterior": "deterministic"}, objective={"name": "deterministic", "penalty": 0.3})
    model = build_model(cfg).double()
    x = torch.rand(5, 1, 8, 8).round()
    terms = deterministic(model, x, penalty=0.3)
    mu = model.encode(x).mu
    logits = model.decode(mu)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    assert torch.allclose(terms.loss, (bce + 0.3 * 0.5 * (mu**2).sum(1)).mean())
    assert model.encode(x).logvar is None


def test_kl_warmup_ramps_beta_linearly():
    cfg = tiny_config(objective={"name": "elbo", "beta": 2.0, "warmup_epochs": 4})
    obj = Objective(cfg.objective)
    assert [obj.beta_at(e) for e in (0, 1, 2, 4, 10)] == [0.0, 0.5, 1.0, 2.0, 2.0]


def test_an_unknown_objective_is_refused_not_trained_as_another():
    from types import SimpleNamespace

    from vaelab.errors import ConfigError

    with pytest.raises(ConfigError, match="objective 'elbo2' is not one of"):
        Objective(SimpleNamespace(name="elbo2", penalty=1.0))(None, None)


@pytest.mark.parametrize("objective", ["elbo", "iwae", "renyi"])
def test_every_bound_and_its_kl_term_use_the_models_prior(objective):
    """Swap a mixture prior into a model: log w carries its log p(z), and the reported KL is its Monte Carlo
    estimate over the very samples of the bound (no closed form, no N(0, I) left anywhere)."""
    from vaelab.models.priors import MixturePrior

    model = build_model(tiny_config(model={"arch": "64-32-3"})).double()
    model.prior = MixturePrior(4, 3)
    with torch.no_grad():
        model.prior.means.mul_(2.0)
    x = torch.rand(5, 1, 8, 8).round()
    eps = torch.randn(6, 5, 3)
    terms = {"elbo": lambda: elbo(model, x, samples=6, generator=eps),
             "iwae": lambda: iwae(model, x, samples=6, generator=eps),
             "renyi": lambda: renyi(model, x, alpha=0.5, samples=6, generator=eps)}[objective]()
    q = model.encode(x)
    z = q.mu + torch.exp(0.5 * q.logvar) * eps
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=model.prior.logits),
        torch.distributions.Independent(torch.distributions.Normal(model.prior.means, torch.exp(0.5 * model.prior.logvars)), 1))
    log_ratio = q.log_prob(z) - ref.log_prob(z)  # (K, B)
    assert torch.allclose(terms.kl, log_ratio.mean(0))
    log_px_z = model.log_likelihood(x, model.decode(z))
    expected = {"elbo": (log_px_z - log_ratio).mean(0), "iwae": torch.logsumexp(log_px_z - log_ratio, 0) - math.log(6),
                "renyi": 2 * (torch.logsumexp(0.5 * (log_px_z - log_ratio), 0) - math.log(6))}[objective]
    assert torch.allclose(terms.bound, expected)
