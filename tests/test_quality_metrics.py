"""Sample-quality metrics against closed forms and the published identities of Naeem et al. (2020)."""
import math

import numpy as np
import pytest

from vaelab.analysis.quality import frechet_distance, kernel_inception_distance, prdc


def test_frechet_distance_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(0)
    n, d = 200_000, 4
    a_var, b_var = np.array([1.0, 2.0, 0.5, 1.5]), np.array([0.25, 2.0, 2.0, 1.0])
    m1, m2 = np.zeros(d), np.array([1.0, -1.0, 0.0, 0.5])
    a = m1 + rng.standard_normal((n, d)) * np.sqrt(a_var)
    b = m2 + rng.standard_normal((n, d)) * np.sqrt(b_var)
    exact = ((m1 - m2) ** 2).sum() + ((np.sqrt(a_var) - np.sqrt(b_var)) ** 2).sum()  # commuting covariances
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.02)
    assert abs(frechet_distance(a, a)) < 1e-6


def test_kid_is_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2000, 16)), rng.standard_normal((2000, 16))
    same, sd = kernel_inception_distance(a, b)
    assert abs(same) < 3 * sd + 1e-3
    shifted, _ = kernel_inception_distance(a, b + 0.5)
    assert shifted > 10 * abs(same) + 0.01


def test_density_and_coverage_of_two_samples_of_one_distribution():
    """Naeem et al. 2020: for real and fake from one distribution, E[density] = 1 and
    E[coverage] = 1 - (N-1)...(N-k) / ((N+M-1)...(N+M-k)) ~ 1 - 2^-k = 0.969 for k = 5, N = M."""
    rng = np.random.default_rng(2)
    n = 2000
    real, fake = rng.standard_normal((n, 64)), rng.standard_normal((n, 64))
    r = prdc(real, fake)
    expected_coverage = 1 - math.prod((n - 1 - i) / (2 * n - 1 - i) for i in range(5))
    assert r["density"] == pytest.approx(1.0, abs=0.08)
    assert r["coverage"] == pytest.approx(expected_coverage, abs=0.02)
    # same distribution, same sizes: precision and recall are exchangeable (k = 3 balls shrink in 64-D, so not ~1)
    assert r["precision"] > 0.5 and r["recall"] > 0.5 and abs(r["precision"] - r["recall"]) < 0.05
    far = prdc(real, fake + 3.0)
    assert far["coverage"] < 0.1 and far["precision"] < 0.1


def test_one_real_reference_compares_many_sets_as_fresh_ones_do():
    """quality.py compares every sampler's features against one RealFeatures (its statistics computed once): the
    numbers must be those of a fresh comparison, whatever was compared before and whatever its size."""
    from vaelab.analysis.quality import RealFeatures

    rng = np.random.default_rng(3)
    real = rng.standard_normal((600, 8))
    shared = RealFeatures(real, kid_subset_size=200)
    for n, shift in ((500, 0.0), (300, 0.7), (500, 1.5)):
        fake = rng.standard_normal((n, 8)) + shift
        assert shared.compare(fake) == RealFeatures(real, kid_subset_size=200).compare(fake)
