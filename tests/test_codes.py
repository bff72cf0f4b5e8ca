"""The code matrix (vaelab.analysis.stats.codes) against references that do not share its code: numpy's eigh of the
covariance, closed-form Gaussian KLs, the chi-square law, direct double loops."""
import math

import numpy as np
import pytest
import torch

from vaelab.analysis.stats.codes import (aggregate_covariance, code_moments, complement_kl_lower_bound,
                                         gaussian_kl_estimate, informative_subspace, pca, points_within_budget,
                                         wishart_log_det_bias)
from vaelab.analysis.posterior import count_agreement, mixture_log_density
from vaelab.models.posteriors import GaussianPosterior


def codes_with_spectrum(n, d, top, rest, seed=0):
    """Codes mu (n, D) = rotated Gaussian with eigenvalues ``top`` then ``rest`` for the other directions."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    evals = torch.tensor(list(top) + [rest] * (d - len(top)), dtype=torch.float64)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * evals.sqrt()) @ q.T, evals, q


def test_exact_pca_matches_numpy_eigh_of_the_covariance():
    mu, _, _ = codes_with_spectrum(500, 40, [6.4, 5.8, 4.2], 0.05)
    spec = pca(mu.float())
    ref = np.sort(np.linalg.eigvalsh(np.cov(mu.numpy(), rowvar=False)))[::-1]
    assert spec.exact
    np.testing.assert_allclose(spec.eigenvalues.numpy(), ref[:spec.eigenvalues.numel()], rtol=1e-4, atol=1e-6)
    assert spec.total_variance == pytest.approx(float(np.trace(np.cov(mu.numpy(), rowvar=False))), rel=1e-6)
    # the directions are eigenvectors: C v = lambda v
    c = torch.from_numpy(np.cov(mu.numpy(), rowvar=False))
    v = spec.components[:, :3].double()
    np.testing.assert_allclose((c @ v).numpy(), (v * spec.eigenvalues[:3]).numpy(), atol=1e-3)


def test_randomised_top_k_matches_the_exact_spectrum_on_a_big_latent(monkeypatch):
    """min(N, D) above EXACT_SVD: the randomised SVD finds the top eigenvalues of a spiked covariance."""
    import vaelab.analysis.stats.codes as codes

    monkeypatch.setattr(codes, "EXACT_SVD", 200)
    g = torch.Generator().manual_seed(1)
    n, d, top = 600, 900, torch.tensor([9.0, 7.0, 5.0, 3.0, 2.0])
    basis, _ = torch.linalg.qr(torch.randn(d, 5, generator=g))
    mu = (torch.randn(n, 5, generator=g) * top.sqrt()) @ basis.T + 0.01 * torch.randn(n, d, generator=g)
    spec = pca(mu, top_k=20)
    assert not spec.exact and spec.eigenvalues.numel() == 20
    # reference: the eigenvalues of the n x n Gram matrix of the centred codes (a different route, same spectrum)
    m = mu.double() - mu.double().mean(0)
    ref = np.sort(np.linalg.eigvalsh((m @ m.T).numpy() / (n - 1)))[::-1][:5]
    np.testing.assert_allclose(spec.eigenvalues[:5].numpy(), ref, rtol=1e-3)
    above, lower_bound = spec.count_above(1e-5)
    assert lower_bound and above == 20  # the top 20 all exceed 1e-5: only a lower bound is known
    assert spec.count_above(0.5) == (5, False)


def test_code_moments_stream_equals_the_direct_computation():
    class Enc:
        latent_shape = (6,)

        def encode(self, x):
            return GaussianPosterior(x.flatten(1)[:, :6] * 3 + 100.0, x.flatten(1)[:, 6:12] - 1)  # a large offset

    x = torch.rand(2345, 1, 4, 4)
    mom = code_moments(Enc(), x, batch_size=500)
    mu, lv = (x.flatten(1)[:, :6] * 3 + 100.0).double(), (x.flatten(1)[:, 6:12] - 1).double()  # as encoded (float32)
    np.testing.assert_allclose(mom.mean_mu.numpy(), mu.mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(mom.var_mu.numpy(), mu.var(0).numpy(), rtol=1e-9)
    np.testing.assert_allclose(mom.mean_sigma2.numpy(), lv.exp().mean(0).numpy(), rtol=1e-12)
    kl = 0.5 * (mu.pow(2) + lv.exp() - lv - 1).mean(0)
    np.testing.assert_allclose(mom.kl.numpy(), kl.numpy(), rtol=1e-12)


def test_gaussian_kl_estimate_recovers_the_closed_form_within_its_error():
    """KL(N(m, C) || N(0, I)) = 0.5 (tr C + |m|^2 - k - log det C); the estimator is unbiased for Gaussian data."""
    rng = np.random.default_rng(0)
    k, n = 20, 2000
    lam = np.concatenate([[6.0, 3.0, 0.3], np.ones(k - 3)])
    m = np.zeros(k)
    m[0] = 0.5
    truth = 0.5 * (lam.sum() + (m ** 2).sum() - k - np.log(lam).sum())
    ests = [gaussian_kl_estimate(torch.from_numpy(rng.standard_normal((n, k)) * np.sqrt(lam) + m)) for _ in range(40)]
    assert abs(np.mean(ests) - truth) < 3 * np.std(ests) / math.sqrt(len(ests)) + 0.01
    # on the prior itself the estimate is centred on 0 (without the Wishart correction it would be ~k^2 / 4n above)
    null = [gaussian_kl_estimate(torch.from_numpy(rng.standard_normal((500, 64)))) for _ in range(20)]
    assert abs(np.mean(null)) < 0.1 and wishart_log_det_bias(64, 500) < -4


def test_complement_bound_is_the_closed_form_for_an_even_spread_and_below_it_otherwise():
    assert complement_kl_lower_bound(1.0, 1000) == 0.0
    assert complement_kl_lower_bound(0.5, 10) == pytest.approx(0.5 * 10 * (0.5 - 1 - math.log(0.5)))
    spread = np.array([0.25, 0.75] * 5)  # mean 0.5, uneven
    exact = 0.5 * (spread - 1 - np.log(spread)).sum()
    assert complement_kl_lower_bound(spread.mean(), 10) < exact


def test_subspace_coordinates_complement_and_combine():
    mu, _, q = codes_with_spectrum(3000, 30, [5.0, 4.0], 0.001)
    sub = informative_subspace(pca(mu.float()), threshold=0.01, max_dims=64)
    assert sub.k == 2 and sub.above_threshold == 2 and not sub.capped
    # the subspace is the true one: projecting the true directions onto it keeps them
    assert torch.linalg.norm(sub.basis.double().T @ q[:, :2]).item() == pytest.approx(math.sqrt(2), rel=1e-3)
    z = torch.randn(100, 30)
    u = sub.coordinates(z)
    np.testing.assert_allclose(sub.complement_sq_norm(z).numpy(), (z.pow(2).sum(1) - u.pow(2).sum(1)).double().numpy(),
                               rtol=1e-5)
    other = torch.randn(100, 30)
    mixed = sub.combine(u, other)
    np.testing.assert_allclose(sub.coordinates(mixed).numpy(), u.numpy(), atol=1e-5)
    np.testing.assert_allclose(sub.complement_sq_norm(mixed).numpy(), sub.complement_sq_norm(other).numpy(), rtol=1e-4)
    capped = informative_subspace(pca(mu.float()), threshold=1e-6, max_dims=5)
    assert capped.k == 5 and capped.capped


def test_aggregate_covariance_is_code_variance_plus_posterior_variance():
    mu, evals, q = codes_with_spectrum(20000, 12, [3.0, 2.0], 0.2)
    s2 = torch.full((12,), 0.8, dtype=torch.float64)
    sub = informative_subspace(pca(mu.float()), threshold=1.0)
    shape = aggregate_covariance(sub, mu.float(), s2)
    np.testing.assert_allclose(shape["eigenvalues"].numpy(), [3.8, 2.8], rtol=0.05)
    assert shape["complement_variance"] == pytest.approx(1.0, rel=0.03)


def test_mixture_density_chunked_over_components_equals_the_direct_sum():
    g = torch.Generator().manual_seed(0)
    mu, lv, z = torch.randn(300, 5, generator=g), torch.randn(300, 5, generator=g) * 0.3, torch.randn(40, 5, generator=g)
    direct = torch.stack([torch.logsumexp(GaussianPosterior(mu.double(), lv.double()).log_prob(zi.double()), 0)
                          for zi in z]) - math.log(300)
    np.testing.assert_allclose(mixture_log_density(z, mu, lv, chunk=7, component_chunk=64).numpy(), direct.numpy(),
                               rtol=1e-10)


def test_count_agreement_names_rotated_codes():
    assert "rotated" in count_agreement(798, 21, False, 800)
    assert count_agreement(10, 9, False, 800) is None
    assert "understate" in count_agreement(3, 40, False, 800)


def test_points_within_budget():
    assert points_within_budget(65536, 10000, arrays=2, budget=2 ** 30) == 2 ** 30 // (8 * 65536)
    assert points_within_budget(16, 10000) == 10000


def test_gram_route_for_few_points_in_a_big_latent_matches_the_covariance(monkeypatch):
    """N <= EXACT_SVD < D: the N x N Gram matrix gives every nonzero eigenvalue of the D x D covariance."""
    import vaelab.analysis.stats.codes as codes

    monkeypatch.setattr(codes, "EXACT_SVD", 200)
    mu, _, _ = codes_with_spectrum(150, 600, [8.0, 4.0, 2.0], 0.1, seed=3)
    spec = pca(mu.float(), top_k=10)
    assert spec.exact and spec.eigenvalues.numel() == 150 and spec.components.shape == (600, 10)
    c = np.cov(mu.numpy(), rowvar=False)
    ref = np.sort(np.linalg.eigvalsh(c))[::-1][:149]
    np.testing.assert_allclose(spec.eigenvalues[:149].numpy(), ref, rtol=1e-4, atol=1e-8)
    v = spec.components.double().numpy()
    np.testing.assert_allclose(v.T @ v, np.eye(10), atol=1e-4)
    np.testing.assert_allclose(c @ v[:, :3], v[:, :3] * ref[:3], atol=1e-3)
