"""Label-free features (vaelab.analysis.contrastive) and the feature choice (vaelab.analysis.features): the
contrastive network is deterministic and cached; the quality and memorisation analyses run on unlabelled data; the
label-free FD sees known distribution shifts; the external extractors load what they should and refuse, in one
line, what they cannot use."""
import json
import math
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_config, memorising_model

from vaelab.analysis import contrastive, diagnose, from_model
from vaelab.analysis.contrastive import ContrastiveNet, augment, contrastive_network, train_contrastive
from vaelab.analysis.features import feature_space
from vaelab.analysis.framework.runner import _jsonable
from vaelab.analysis.memorisation import memorisation
from vaelab.analysis.quality import RealFeatures, plot, sample_quality
from vaelab.data import Dataset, load_dataset
from vaelab.errors import ConfigError
from vaelab.models import build_model
from vaelab.objectives import elbo

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STEPS = 150  # contrastive steps for the tests (digits: 8x8 images)


@pytest.fixture(autouse=True)
def _data_root(tmp_path_factory, monkeypatch):
    # networks are cached under the data root; keep tests away from the user's cache
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path_factory.getbasetemp() / "data"))
    monkeypatch.setattr(contrastive, "CONTRASTIVE_STEPS", STEPS)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def unlabelled(digits):
    return Dataset.from_arrays("digits-unlabelled", digits.x_train, None, digits.x_test, None)


def test_augmented_views_keep_shape_range_and_differ():
    x = torch.rand(6, 3, 12, 10)
    g = torch.Generator().manual_seed(0)
    a, b = augment(x, g), augment(x, g)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.equal(a, b)
    assert torch.equal(augment(x, torch.Generator().manual_seed(0)), a)  # a seed fixes the views


def test_training_is_deterministic_given_a_seed_and_uses_no_labels(digits, unlabelled):
    one, info = train_contrastive(unlabelled, steps=20, seed=3)
    two, _ = train_contrastive(digits, steps=20, seed=3)  # the labels are there and unused
    other, _ = train_contrastive(unlabelled, steps=20, seed=4)
    s1, s2, s3 = one.state_dict(), two.state_dict(), other.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(s1[k], s3[k]) for k in s1)
    assert info["steps"] == 20 and math.isfinite(info["final_loss"])


def test_the_network_is_trained_once_and_cached(unlabelled, monkeypatch, tmp_path):
    calls = []
    real = contrastive.train_contrastive

    def counted(data, **kwargs):
        calls.append(kwargs)
        return real(data, **kwargs)

    monkeypatch.setattr(contrastive, "train_contrastive", counted)
    model, info = contrastive_network(unlabelled, root=tmp_path, steps=10)
    again, info2 = contrastive_network(unlabelled, root=tmp_path, steps=10)
    assert len(calls) == 1 and info == info2 and isinstance(again, ContrastiveNet)
    x = unlabelled.x_test[:50]
    assert torch.equal(model.embed(x), again.embed(x))
    assert model.embed(x).shape == (50, 128)
    (tmp_path / "contrastive" / f"{next((tmp_path / 'contrastive').glob('*.json')).stem}.safetensors").write_bytes(b"x")
    contrastive_network(unlabelled, root=tmp_path, steps=10)  # a broken cache is retrained
    assert len(calls) == 2


def test_the_default_features_follow_the_labels(digits, unlabelled):
    assert feature_space(unlabelled).kind == "contrastive"
    with pytest.raises(ConfigError, match="features 'classifier' need class labels and dataset 'digits-unlabelled'"):
        feature_space(unlabelled, "classifier")


def test_label_free_fd_sees_known_shifts(digits, unlabelled):
    """Ground truth without the network's help: two halves of the test images are one distribution; the same
    images blurred, or with five of the ten classes left out (the labels choose them, the features never saw
    labels), are another. FD must put the shifts well above the split."""
    space = feature_space(unlabelled)
    x, y = digits.x_train, digits.y_train
    a, b = x[:700], x[700:1400]
    real = RealFeatures(space.extract(a))
    split = real.fd(space.extract(b))
    blurred = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(b, 2), size=b.shape[-2:],
                                              mode="bilinear", align_corners=False)
    dropped = b[y[700:1400] < 5]
    assert real.fd(space.extract(blurred)) > 5 * split
    assert real.fd(space.extract(dropped)) > 3 * split




def test_quality_and_memorisation_run_on_unlabelled_data(unlabelled):
    subject = from_model(memorising_model(unlabelled), unlabelled)
    q = sample_quality(subject, n=300, fit_points=1000)
    assert q["feature_kind"] == "contrastive" and q["classifier"] is None and q.params["features"] == "contrastive"
    assert "class_histogram" not in q["samplers"]["prior"]
    assert q["fd"]["real-train"] < q["fd"]["prior"] * 10 and all(math.isfinite(v) for v in q["fd"].values())
    json.dumps(_jsonable(q.to_json()))
    labels = []

    def save(fig, stem):
        import matplotlib.pyplot as plt

        labels.append(fig.axes[0].get_xlabel())
        plt.close(fig)

    plot(q, save)
    assert labels == ["FD to test images (contrastive features; lower is better)"]
    m = memorisation(subject, n=300)
    assert m["feature_kind"] == "contrastive" and m.params["features"] == "contrastive"
    assert m["copying"]["memorisation"], m["c_t"]  # it returns training images: copying, seen without labels


def test_diagnose_runs_on_unlabelled_data_and_says_which_features(unlabelled):
    torch.manual_seed(0)
    model = build_model(tiny_config(model={"arch": "64-32-4"}, data={"pixels": "continuous"}))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = elbo(model, unlabelled.x_train[torch.randint(0, unlabelled.x_train.shape[0], (128,))]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    r = diagnose(from_model(model.eval(), unlabelled), quick=True, features="contrastive")
    assert r.params["features"] == "contrastive" and r["features"].startswith("vaelab contrastive network")
    assert math.isfinite(r["table"]["fd_prior"]) and "copying_ct_prior" in r["table"]
    assert any(line.startswith("Fixes (FD, contrastive features)") for line in r["verdict"]), r["verdict"]


# --- the user's extractors ------------------------------------------------------------------------------------
def test_a_module_function_extractor_is_used(unlabelled, tmp_path, monkeypatch):
    (tmp_path / "myfeats.py").write_text("def pixels(x):\n    return x.flatten(1)[:, :16]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    space = feature_space(unlabelled, "myfeats:pixels")
    assert space.kind == "user" and space.extract(unlabelled.x_test[:5]).shape == (5, 16)
    sys.modules.pop("myfeats", None)


@pytest.mark.parametrize("spec, message", [
    ("nosuchmodule_xyz:f", "cannot load feature extractor 'nosuchmodule_xyz:f'"),
    ("math:nosuchfunction", "cannot load feature extractor 'math:nosuchfunction'"),
    ("math:pi", "feature extractor 'math:pi' is a float, not a function"),
    ("imagenet", "features 'imagenet' is not one of 'classifier', 'contrastive'"),
    ("inception:/no/such/inception.pt", "inception weights '/no/such/inception.pt': no such file"),
    ("dinov2:/no/such/folder", "dinov2 model '/no/such/folder': no config.json there"),
])
def test_bad_feature_choices_are_one_line_errors(unlabelled, spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        feature_space(unlabelled, spec)
    assert "\n" not in str(err.value)


def test_a_file_that_is_not_torchscript_is_refused(unlabelled, tmp_path):
    bad = tmp_path / "inception.pt"
    bad.write_text("not a model")
    with pytest.raises(ConfigError, match="are not a TorchScript file") as err:
        feature_space(unlabelled, f"inception:{bad}")
    assert "\n" not in str(err.value)


def test_dinov2_without_transformers_says_so(unlabelled, tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ConfigError, match="dinov2 features need the transformers package: pip install transformers"):
        feature_space(unlabelled, f"dinov2:{tmp_path}")


class FakeInception(torch.nn.Module):
    """NVIDIA's Inception call interface, net(images, return_features=True) -> (N, 2048); its features record what it
    was given: the per-channel means, the maximum, the height and the width."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        n = x.shape[0]
        stats = torch.cat([x.mean((2, 3)), x.amax((1, 2, 3)).unsqueeze(1),
                           torch.full((n, 1), float(x.shape[2])), torch.full((n, 1), float(x.shape[3]))], 1)
        out = torch.cat([stats, torch.zeros(n, 2048 - stats.shape[1])], 1)
        return out if return_features else out[:, :1008]


def test_a_torchscript_inception_gets_299_pixel_rgb_images_in_0_255(unlabelled, tmp_path):
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(FakeInception()).save(str(path))
    space = feature_space(unlabelled, f"inception:{path}")
    x = unlabelled.x_test[:7]
    f = space.extract(x)
    assert space.kind == "inception" and f.shape == (7, 2048)
    np.testing.assert_allclose(f[:, 0], f[:, 1])  # grey repeated over three channels
    np.testing.assert_allclose(f[:, 4:6], 299)
    np.testing.assert_allclose(f[:, 3], 255 * x.amax((1, 2, 3)).numpy(), rtol=0.01)  # 0..255, bilinear upsampling
    np.testing.assert_allclose(f[:, 0], 255 * x.mean((1, 2, 3)).numpy(), rtol=0.05)
    with pytest.raises(ConfigError, match="need grey or RGB images, got 2 channels"):
        space.extract(torch.rand(3, 2, 8, 8))
