"""Memorisation measures with known answers: brute-force nearest neighbours, scipy's Mann-Whitney test, a hand-made
authenticity example, synthetic copies / fresh draws / wider draws, and, on digits, a model whose decoder returns
training images (it must be flagged) against a small VAE trained briefly (it must not be)."""
import json

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu, norm

from conftest import tiny_config, memorising_model
from vaelab.analysis import from_model
from vaelab.analysis.memorisation import (authenticity, data_copying_test, memorisation, nearest_neighbours,
                                          plot)
from vaelab.analysis.framework.runner import _jsonable
from vaelab.data import load_dataset
from vaelab.models import build_model
from vaelab.objectives import elbo


@pytest.fixture(autouse=True)
def _data_root(tmp_path_factory, monkeypatch):
    # the evaluation classifier is cached under the data root; keep tests away from the user's cache
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path_factory.getbasetemp() / "data"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- pure functions on features ----------------------------------------------------------------------
def test_chunked_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 5)), rng.standard_normal((170, 5))
    d, i = nearest_neighbours(x, y, query_chunk=64, reference_chunk=50)
    full = np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1))
    assert np.allclose(d, full.min(1)) and (i == full.argmin(1)).all()
    d, i = nearest_neighbours(x, x, exclude_self=True, query_chunk=64, reference_chunk=50)
    full = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(full, np.inf)
    assert np.allclose(d, full.min(1)) and (i == full.argmin(1)).all()


def test_one_cell_c_t_is_scipys_mann_whitney_z_score():
    rng = np.random.default_rng(1)
    train, test, gen = rng.standard_normal((400, 3)), rng.standard_normal((150, 3)), 1.1 * rng.standard_normal((90, 3))

    def dist_to_train(a):
        return np.sqrt(((a[:, None] - train[None]) ** 2).sum(-1)).min(1)

    # alternative 'less': p = Phi(z) with z the Z-score of U(generated) (no ties: no tie correction)
    p = mannwhitneyu(dist_to_train(gen), dist_to_train(test), alternative="less", method="asymptotic",
                     use_continuity=False).pvalue
    r = data_copying_test(train, test, gen, cells=1, min_cell=1)
    assert r["c_t"] == pytest.approx(norm.ppf(p), abs=1e-8)


def test_authenticity_of_a_hand_made_example():
    # training points 0, 1, 3: their nearest other training points lie 1, 1 and 2 away
    train = np.array([[0.0], [1.0], [3.0]])
    generated = np.array([[0.4], [3.5], [6.0], [-1.5]])  # 0.4 < 1 and 0.5 < 2: unauthentic; 3 > 2, 1.5 > 1: authentic
    test = np.array([[2.5], [10.0]])  # 0.5 from 3 (< 2), 7 from 3: one of two
    assert authenticity(train, generated, test) == {"authentic_share": 0.5, "test_authentic_share": 0.5}


@pytest.fixture(scope="module")
def gaussian_features():
    rng = np.random.default_rng(0)
    return rng, rng.standard_normal((2000, 8)), rng.standard_normal((800, 8))


def test_copies_of_training_points_are_flagged_and_unauthentic(gaussian_features):
    rng, train, test = gaussian_features
    copies = train[rng.choice(len(train), 800)] + 1e-3 * rng.standard_normal((800, 8))
    r = data_copying_test(train, test, copies)
    assert r["c_t"] < -8 and r["flagged"] and r["verdict"] == "data copying", r["c_t"]
    assert r["cells_used"] == r["cells"] == 10 and r["test_share_excluded"] == 0.0
    auth = authenticity(train, copies, test)
    assert auth["authentic_share"] < 0.02 and auth["test_authentic_share"] > 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fresh_draws_from_the_training_distribution_are_not_flagged(gaussian_features, seed):
    _, train, test = gaussian_features
    fresh = np.random.default_rng(100 + seed).standard_normal((800, 8))
    r = data_copying_test(train, test, fresh, seed=seed)
    assert abs(r["c_t"]) < 3 and not r["flagged"] and r["verdict"] == "like held-out data", r["c_t"]
    auth = authenticity(train, fresh, test)
    assert abs(auth["authentic_share"] - auth["test_authentic_share"]) < 0.15, auth


def test_draws_from_a_wider_distribution_read_as_under_fitting(gaussian_features):
    _, train, test = gaussian_features
    wide = 1.5 * np.random.default_rng(7).standard_normal((800, 8))
    r = data_copying_test(train, test, wide)
    assert r["c_t"] > 3 and not r["flagged"] and r["verdict"] == "under-fitting", r["c_t"]


def test_cells_short_of_generated_samples_are_left_out_and_reported(gaussian_features):
    _, train, test = gaussian_features
    one_side = np.random.default_rng(3).standard_normal((800, 8))
    one_side[:, 0] = np.abs(one_side[:, 0]) + 1.5  # nothing where x0 < 1.5
    r = data_copying_test(train, test, one_side, min_cell=20)
    skipped = [c for c in r["per_cell"] if not c["used"]]
    assert skipped and all(c["generated"] < 20 for c in skipped)
    assert r["test_share_excluded"] == pytest.approx(sum(c["test"] for c in skipped) / len(test))
    assert 0 < r["test_share_excluded"] < 1


# --- the analysis on digits --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")




def briefly_trained_vae(data, steps=600):
    torch.manual_seed(0)
    model = build_model(tiny_config(model={"arch": "64-64-4"}, data={"pixels": "continuous"}))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = elbo(model, data.x_train[torch.randint(0, data.x_train.shape[0], (128,))]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_a_model_that_returns_training_images_is_flagged(digits, tmp_path):
    r = memorisation(from_model(memorising_model(digits), digits), n=600)
    copying = r["copying"]
    assert copying["memorisation"] and copying["evidence"] == ["prior", "reconstruction-test"], copying
    assert set(copying["flagged"]) == {"prior", "posterior", "reconstruction-train", "reconstruction-test"}
    for name, row in r["sets"].items():
        assert row["c_t"] < -5 and row["authentic_share"] < 0.05 and row["median_nn_ratio"] < 0.05, (name, row)
    assert r["n_train"] == digits.x_train.shape[0] and r["n_test"] == digits.x_test.shape[0]
    assert 0.2 < r["test_baseline"]["authentic_share"] < 0.9
    json.dumps(_jsonable(r.to_json()))  # saved as JSON by the runner
    saved = []

    def save(fig, stem):
        import matplotlib.pyplot as plt

        saved.append(stem)
        plt.close(fig)

    plot(r, save)
    assert saved == ["nn-distances"]


def test_a_briefly_trained_vae_is_not_flagged(digits):
    r = memorisation(from_model(briefly_trained_vae(digits), digits), n=600)
    assert r["copying"]["flagged"] == [] and not r["copying"]["memorisation"], r["c_t"]
    assert r["c_t"]["prior"] > 0  # blurry samples: farther from the training images than test images are
    assert r["copying"]["sentence"].startswith("No sign of data copying")
