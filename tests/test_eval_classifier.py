"""The evaluation classifiers meet the accuracy the quality metrics rely on: >= 99% on MNIST, >= 90% on Fashion-MNIST.

They are trained once per dataset (about 2 and 3 minutes on 2 CPU cores) and cached under the data root, so these
tests are slow only the first time on a machine."""
import pytest

from vaelab.analysis.quality import evaluation_classifier
from vaelab.data import fetch_dataset, is_present, load_dataset
from vaelab.data import sources

REQUIRED = {"mnist": 0.99, "fashion-mnist": 0.90}


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_evaluation_classifier_accuracy(name):
    if not is_present(name):
        if name == "fashion-mnist" and not sources.DEBIAN_FASHION_DIR.is_dir():
            pytest.skip("Fashion-MNIST is not on this machine (Debian package dataset-fashion-mnist)")
        fetch_dataset(name, offline=True, log=lambda m: None)
    data = load_dataset(name)
    model, info = evaluation_classifier(data)
    assert info["test_accuracy"] >= REQUIRED[name], info
    _, probs = model.embed(data.x_test[:2000])  # the cached weights reproduce the recorded accuracy
    assert float((probs.argmax(1) == data.y_test[:2000]).double().mean()) >= REQUIRED[name] - 0.01
