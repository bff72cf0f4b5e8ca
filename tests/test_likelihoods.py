"""Likelihoods and the posterior density against torch.distributions (an independent implementation)."""
import torch

from vaelab.models.likelihoods import Bernoulli, ContinuousBernoulli, Gaussian, continuous_bernoulli_log_norm
from vaelab.models.posteriors import GaussianPosterior, kl_std_normal_per_dim

D = torch.distributions


def test_bernoulli_matches_torch():
    logits = torch.randn(3, 2, 1, 4, 4) * 4
    x = torch.rand(2, 1, 4, 4).round()
    ref = D.Bernoulli(logits=logits).log_prob(x.expand_as(logits)).flatten(-3).sum(-1)
    assert torch.allclose(Bernoulli().log_prob(x, logits), ref, atol=1e-5)
    # grey pixels take the general path x l - softplus(l) (the negative BCE); both paths agree on binary x
    grey = x * 0.999 + 0.0005
    assert torch.allclose(Bernoulli().log_prob(grey, logits), -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, grey.expand_as(logits), reduction="none").flatten(-3).sum(-1), atol=1e-4)
    general = (x * logits - torch.nn.functional.softplus(logits)).flatten(-3).sum(-1)
    assert torch.allclose(Bernoulli().log_prob(x, logits), general, atol=1e-5)


def test_continuous_bernoulli_matches_torch_including_near_half():
    # float64: torch's own float32 path is the less precise of the two for large |logits|
    logits = torch.cat([torch.randn(200) * 6, torch.linspace(-0.02, 0.02, 41)]).view(-1, 1, 1, 1).double()
    x = torch.rand(logits.shape, dtype=torch.float64)
    ours = ContinuousBernoulli().log_prob(x, logits)
    ref = D.ContinuousBernoulli(logits=logits).log_prob(x).flatten(-3).sum(-1)
    assert torch.allclose(ours, ref, atol=1e-7)
    # normaliser: C(lambda) integrates the kernel to 1; check log C(0) = log 2 and continuity across the switch
    assert torch.allclose(continuous_bernoulli_log_norm(torch.tensor([0.0])), torch.log(torch.tensor([2.0])))
    a, b = continuous_bernoulli_log_norm(torch.tensor([0.00999, 0.01001], dtype=torch.float64))
    assert abs(a - b) < 1e-6


def test_continuous_bernoulli_normaliser_integrates_to_one():
    eta = torch.tensor([-5.0, -0.5, 0.003, 1.0, 7.0], dtype=torch.float64)
    xs = torch.linspace(0, 1, 20001, dtype=torch.float64)
    lam = torch.sigmoid(eta)[:, None]
    kernel = lam**xs * (1 - lam) ** (1 - xs)
    integral = torch.trapezoid(kernel, xs, dim=1)
    assert torch.allclose(continuous_bernoulli_log_norm(eta), -torch.log(integral), atol=1e-6)


def test_gaussian_fixed_and_learned_match_torch():
    mean = torch.randn(2, 3, 1, 4, 4)
    x = torch.randn(3, 1, 4, 4)
    fixed = Gaussian((1, 4, 4), std=0.3)
    ref = D.Normal(mean, 0.3).log_prob(x).flatten(-3).sum(-1)
    assert torch.allclose(fixed.log_prob(x, mean), ref, atol=1e-4)
    learned = Gaussian((1, 4, 4))
    assert learned.log_std.requires_grad and not fixed.log_std.requires_grad
    with torch.no_grad():
        learned.log_std.copy_(torch.randn(1, 4, 4) * 0.2)
    ref = D.Normal(mean, learned.log_std.exp()).log_prob(x).flatten(-3).sum(-1)
    assert torch.allclose(learned.log_prob(x, mean), ref, atol=1e-4)


def test_posterior_density_and_kl_match_torch():
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5)
    q = GaussianPosterior(mu, logvar)
    z = q.rsample(3)
    ref_q = D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1)
    assert torch.allclose(q.log_prob(z), ref_q.log_prob(z), atol=1e-5)
    eps = torch.randn(3, 4, 5)  # the same density read off the noise
    assert torch.allclose(q.log_prob_of_noise(eps), ref_q.log_prob(q.rsample(3, eps)), atol=1e-4)
    ref_kl = D.kl_divergence(D.Normal(mu, (0.5 * logvar).exp()), D.Normal(0.0, 1.0))
    assert torch.allclose(kl_std_normal_per_dim(mu, logvar), ref_kl, atol=1e-5)
