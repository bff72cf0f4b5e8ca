"""Fisher-Rao geometry of diagonal Gaussians: the closed form against an independent numerical geodesic."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.analysis.stats.geodesic import fisher_rao_distance, fisher_rao_geodesic, numerical_geodesic, path_length

finite = st.floats(-3, 3)
positive = st.floats(0.05, 3)


def test_univariate_limits():
    # equal means: sqrt(2) |log(s2 / s1)| (the vertical geodesic of the half-plane)
    assert float(fisher_rao_distance([0.3], [0.5], [0.3], [2.0])) == pytest.approx(math.sqrt(2) * math.log(4), rel=1e-12)
    # equal sigmas, small mean change: the metric itself, |dmu| / sigma
    assert float(fisher_rao_distance([0.0], [2.0], [1e-4], [2.0])) == pytest.approx(1e-4 / 2.0, rel=1e-6)
    assert float(fisher_rao_distance([1.0, -2.0], [0.7, 0.2], [1.0, -2.0], [0.7, 0.2])) == 0.0


@settings(max_examples=60, deadline=None)
@given(finite, positive, finite, positive, finite, positive)
def test_distance_is_symmetric_and_a_metric(m1, s1, m2, s2, m3, s3):
    d12 = float(fisher_rao_distance([m1], [s1], [m2], [s2]))
    d21 = float(fisher_rao_distance([m2], [s2], [m1], [s1]))
    d13 = float(fisher_rao_distance([m1], [s1], [m3], [s3]))
    d32 = float(fisher_rao_distance([m3], [s3], [m2], [s2]))
    assert d12 == pytest.approx(d21, rel=1e-9, abs=1e-12)
    assert d12 <= d13 + d32 + 1e-9


@pytest.mark.parametrize("case", [
    ([0.0, 1.0, -0.5], [1.0, 0.3, 0.8], [2.0, 1.0, 0.5], [0.5, 1.5, 0.8]),  # mixed, incl. one vertical dimension
    ([-1.5], [0.2], [1.5], [0.2]),  # equal sigmas: the half-circle bulges up
])
def test_closed_form_geodesic_matches_energy_minimisation(case):
    m1, s1, m2, s2 = (torch.tensor(v, dtype=torch.float64) for v in case)
    steps = 64
    t = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    mu, sigma = fisher_rao_geodesic(m1, s1, m2, s2, t)
    assert torch.allclose(mu[0], m1) and torch.allclose(sigma[0], s1)
    assert torch.allclose(mu[-1], m2) and torch.allclose(sigma[-1], s2)
    distance = float(fisher_rao_distance(m1, s1, m2, s2))
    assert float(path_length(mu, sigma)) == pytest.approx(distance, rel=1e-3)
    num_mu, num_sigma = numerical_geodesic(m1, s1, m2, s2, steps=steps)
    assert float(path_length(num_mu, num_sigma)) == pytest.approx(distance, rel=2e-3)
    # the same curve, point by point (both are constant-speed parametrisations)
    assert torch.allclose(num_mu, mu, atol=2e-2) and torch.allclose(num_sigma, sigma, atol=2e-2)
    # shorter than the straight line in (mu, sigma), and sigma grows along it when the means differ (Fig. 4)
    fine = torch.linspace(0, 1, 2001, dtype=torch.float64)[:, None]
    straight = float(path_length((1 - fine) * m1 + fine * m2, (1 - fine) * s1 + fine * s2))
    assert distance <= straight + 1e-9


def test_geodesic_sigma_rises_between_distant_means():
    mu, sigma = fisher_rao_geodesic(torch.tensor([-2.0]), torch.tensor([0.3]), torch.tensor([2.0]), torch.tensor([0.3]),
                                    torch.linspace(0, 1, 11))
    assert float(sigma[5, 0]) > 1.0  # the half-circle peaks far above both endpoints
