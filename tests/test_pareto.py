"""The Pareto k-hat of importance weights: against laws whose shape is known, against scipy's maximum-likelihood fit,
and through the IS estimator on a linear Gaussian VAE whose proposal is narrower or wider than the true posterior by
a known factor (weights' tail shape k = 1 - c for a proposal with c times the posterior's variance, c < 1)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from vaelab.analysis.likelihood import importance_sampled_estimate, tail_summary
from vaelab.analysis.pareto import generalized_pareto_shape, k_threshold, pareto_k, tail_size


def test_tail_size_and_threshold_follow_the_psis_paper():
    assert tail_size(1000) == 95 and tail_size(100) == 20 and tail_size(10) == 2
    assert k_threshold(1000) == pytest.approx(2 / 3) and k_threshold(10**6) == 0.7


@pytest.mark.parametrize("k", [-0.3, 0.0, 0.3, 0.7, 1.0])
def test_the_shape_of_generalized_pareto_samples_is_recovered(k):
    """95 exceedances per row, as for S = 1,000: unbiased to within 0.06 on average over 400 rows (the prior at 1/2
    shrinks each row's estimate by 10/105 of its distance), with a spread of about 0.15 per row."""
    rng = np.random.default_rng(1)
    x = np.sort(stats.genpareto.rvs(k, scale=2.5, size=(400, 95), random_state=rng), axis=1)
    est = generalized_pareto_shape(x)
    shrunk = (95 * k + 10 * 0.5) / 105
    assert abs(est.mean() - shrunk) < 0.06 and 0.05 < est.std() < 0.25, (est.mean(), est.std())


@pytest.mark.parametrize("k", [0.1, 0.5, 0.9])
def test_without_the_prior_the_fit_agrees_with_scipys_maximum_likelihood(k):
    """A different estimator of the same parameter (scipy's MLE, location fixed at 0) on 3,000 exceedances."""
    x = np.sort(stats.genpareto.rvs(k, size=3000, random_state=np.random.default_rng(2)))
    ours = generalized_pareto_shape(x[None, :], prior_weight=0.0)[0]
    mle = stats.genpareto.fit(x, floc=0)[0]
    assert abs(ours - mle) < 0.05 and abs(ours - k) < 0.1, (ours, mle)


@pytest.mark.parametrize("k", [0.2, 0.5, 0.8])
def test_k_hat_of_pareto_weights_from_their_largest_log_weights(k):
    """S = 1,000 weights w = U^-k (a Pareto law, tail shape k) per image, 300 images, shuffled order."""
    rng = np.random.default_rng(3)
    log_w = torch.from_numpy(-k * np.log(rng.random((1000, 300))) + rng.normal(0, 50, size=300))  # any scale
    top = torch.topk(log_w, tail_size(1000) + 1, dim=0).values[torch.randperm(96)]
    k_hat = pareto_k(top)
    assert abs(float(k_hat.median()) - k) < 0.07, float(k_hat.median())


def test_flat_or_short_tails_give_no_estimate():
    assert torch.isnan(pareto_k(torch.zeros(96, 4))).all()  # every weight equal: an exact posterior
    assert torch.isnan(pareto_k(torch.randn(5, 4))).all()  # a tail of 4 weights
    assert tail_summary(torch.full((3,), math.nan), 1000)["se_sampling_reliable"] is None


@pytest.mark.parametrize("c, want_k, reliable", [(0.25, 0.75, False), (0.6, 0.4, True), (2.0, None, True)])
def test_the_estimator_reports_how_heavy_its_weights_tail_is(c, want_k, reliable):
    """A linear Gaussian VAE whose encoder has the exact posterior means and c times its variances: c = 0.25 gives
    weights of tail shape 0.75 (infinite variance: the sampling SE must be flagged), c = 0.6 shape 0.4 (finite
    variance), c = 2 bounded weights (negative shape)."""
    from test_objectives import linear_gaussian_vae

    torch.set_default_dtype(torch.float64)
    try:
        model, x, _ = linear_gaussian_vae(exact_encoder=True, latent=1)
        with torch.no_grad():
            model.head.logvar.bias.add_(math.log(c))
        est = importance_sampled_estimate(model, x.repeat(40, 1, 1, 1), samples=1000,
                                          generator=torch.Generator().manual_seed(0))
    finally:
        torch.set_default_dtype(torch.float32)
    k_hat = float(est.pareto_k.median())
    if want_k is None:
        assert k_hat < 0.2, k_hat
    else:
        assert abs(k_hat - want_k) < 0.12, k_hat
    assert tail_summary(est.pareto_k, 1000)["se_sampling_reliable"] is reliable
