"""The evaluation classifiers meet the accuracy the quality metrics rely on: >= 99% on MNIST, >= 90% on Fashion-MNIST.

They are trained once per dataset (about 2 and 3 minutes on 2 CPU cores) and cached under the data root, so these
tests are slow only the first time on a machine."""
import pytest

from vaelab.analysis.quality import evaluation_classifier
from vaelab.data import fetch_dataset, is_present, load_dataset, sources

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


def test_processes_asking_at_once_train_the_classifier_once(tmp_path, monkeypatch):
    """A study's workers that need the classifier at the same time: one trains it, the others wait for its lock and
    load what it wrote (flock locks are per open file, so two threads stand in for two processes)."""
    import threading
    import time

    from vaelab.analysis import classifier

    trained = []
    real_train = classifier.train_classifier

    def slow_train(data, **kwargs):
        trained.append(threading.get_ident())
        time.sleep(0.5)  # long enough for the other caller to arrive while it trains
        return real_train(data, epochs=1)

    monkeypatch.setattr(classifier, "train_classifier", slow_train)
    data = load_dataset("digits")
    got = []
    callers = [threading.Thread(target=lambda: got.append(evaluation_classifier(data, root=tmp_path)[1]))
               for _ in range(2)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert len(trained) == 1 and len(got) == 2 and got[0] == got[1]
    assert evaluation_classifier(data, root=tmp_path)[1] == got[0] and len(trained) == 1  # cached from now on
