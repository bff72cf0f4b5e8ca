"""User datasets: `vaelab data add` from folders of images and array files, the split, checksums, bad input, training
on them, and unlabelled data through the data layer, the trainer and the analyses that need labels."""
import errno
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from vaelab.cli import main
from vaelab.data import Dataset, add_dataset, dataset_spec, known_datasets, load_dataset
from vaelab.data.user import split_indices, to_nchw
from vaelab.errors import DataError, NotApplicable

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def data_folder(tmp_path, monkeypatch):
    """Every test has its own data folder: the real one is never touched."""
    folder = tmp_path / "data"
    monkeypatch.setenv("VAELAB_DATA", str(folder))
    return folder


@pytest.fixture(scope="module")
def patches():
    """120 colour 32x32 patches (uint8, (N, H, W, 3)) cut from scikit-learn's two sample photographs."""
    rng = np.random.RandomState(0)
    out = []
    for img in load_sample_images().images:
        for _ in range(60):
            i, j = rng.randint(0, img.shape[0] - 32), rng.randint(0, img.shape[1] - 32)
            out.append(img[i:i + 32, j:j + 32])
    return np.stack(out)


def cli(args, capsys) -> tuple[int, str, str]:
    """Run `vaelab ARGS` in this process through the real entry point: (exit status, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["vaelab", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


def save_pngs(folder, images, classes=None):
    folder.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(images):
        sub = folder / classes[k] if classes else folder
        sub.mkdir(exist_ok=True)
        Image.fromarray(img).save(sub / f"{k:03d}.png")


def assert_refused(capsys, data_folder, args, *needles):
    code, _, err = cli(["data", "add", *args], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    left = [p.name for p in data_folder.iterdir()] if data_folder.exists() else []
    assert left == [], left  # nothing half-written in the data folder
    return err


# ---------------------------------------------------------------------------------------------- formats

def test_colour_folder_with_class_subfolders(tmp_path, patches, capsys, data_folder):
    save_pngs(tmp_path / "src", patches[:24], ["cats" if k % 3 else "dogs" for k in range(24)])
    code, out, err = cli(["data", "add", "pets", tmp_path / "src", "--test-fraction", "1/4"], capsys)
    assert code == 0, err
    assert "3x32x32" in out and "2 classes" in out
    d = load_dataset("pets")
    assert d.x_train.shape == (18, 3, 32, 32) and d.x_test.shape == (6, 3, 32, 32)
    assert d.n_classes == 2 and d.labelled
    # stratified: each class gives round(1/4 of its count) to the test set (16 cats -> 4, 8 dogs -> 2)
    assert torch.bincount(d.y_test).tolist() == [4, 2]  # classes in sorted folder order: cats 0, dogs 1
    # the images are the pixels of the files, scaled to [0, 1]
    all_x = torch.cat([d.x_train, d.x_test])
    expected = torch.from_numpy(patches[:24].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert sorted(map(float, all_x.sum((1, 2, 3)))) == pytest.approx(sorted(map(float, expected.sum((1, 2, 3)))))
    manifest = json.loads((data_folder / "pets" / "dataset.json").read_text())
    assert manifest["classes"] == ["cats", "dogs"] and set(manifest["sha256"]) == {"train.npz", "test.npz"}


def test_grey_folder_without_labels(tmp_path, patches, capsys):
    grey = patches[:12].mean(-1).astype(np.uint8)
    save_pngs(tmp_path / "src", grey)
    Image.fromarray(grey[0]).save(tmp_path / "src" / "extra.JPG", format="JPEG")  # JPEG, any case of suffix
    (tmp_path / "src" / "notes.txt").write_text("not an image: ignored")
    code, out, err = cli(["data", "add", "greys", tmp_path / "src"], capsys)
    assert code == 0, err
    d = load_dataset("greys")
    assert d.image_shape == (1, 32, 32) and d.y_train is None and d.y_test is None and d.n_classes is None
    assert (d.x_train.shape[0], d.x_test.shape[0]) == (11, 2)  # round(13 / 6) = 2 test images
    code, out, _ = cli(["data", "list"], capsys)
    row = next(line for line in out.splitlines() if line.startswith("greys"))
    assert "1x32x32" in row and " 11 " in row and "none" in row and "yes" in row


def test_npz_with_and_without_labels_and_layouts(tmp_path, patches):
    labels = np.arange(len(patches)) % 4
    np.savez(tmp_path / "labelled.npz", x=patches, y=labels)  # (N, H, W, C): channels-last, guessed
    spec = add_dataset("labelled", tmp_path / "labelled.npz", test_fraction="0.25")
    assert spec.image_shape == (3, 32, 32) and spec.n_classes == 4 and (spec.n_train, spec.n_test) == (90, 30)
    floats = patches.transpose(0, 3, 1, 2).astype(np.float32) / 255  # (N, C, H, W) floats in [0, 1]
    np.savez(tmp_path / "given.npz", x_train=floats[:100], x_test=floats[100:])
    spec = add_dataset("given", tmp_path / "given.npz")
    assert spec.n_classes is None and (spec.n_train, spec.n_test) == (100, 20)
    d = load_dataset("given")
    assert torch.equal(d.x_test, torch.from_numpy(floats[100:]))  # a given split is kept as it is, in order
    np.save(tmp_path / "plain.npy", patches[:30, :, :, 0])  # (N, H, W): grey
    assert add_dataset("plain", tmp_path / "plain.npy").image_shape == (1, 32, 32)
    assert {"labelled", "given", "plain", "digits"} <= set(known_datasets())
    # the layout rule: channels-first when axis 1 <= axis 3, else channels-last; --layout overrides
    assert to_nchw(np.zeros((2, 5, 8, 8)), "x").shape == (2, 5, 8, 8)
    assert to_nchw(np.zeros((2, 8, 8, 5)), "x").shape == (2, 5, 8, 8)
    assert to_nchw(np.zeros((2, 8, 8, 5)), "x", "nchw").shape == (2, 8, 8, 5)


def test_split_is_deterministic_and_stratified():
    labels = np.repeat([0, 1, 2], [60, 30, 6])
    a = split_indices(96, labels, 1 / 6, seed=3)
    b = split_indices(96, labels, 1 / 6, seed=3)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[1], split_indices(96, labels, 1 / 6, seed=4)[1])
    train, test = a
    assert np.bincount(labels[test]).tolist() == [10, 5, 1]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(96))
    train, test = split_indices(100, None, 0.2, seed=0)
    assert (len(train), len(test)) == (80, 20)
    # classes whose shares do not divide evenly: round(fraction x n) in all, each class floor or ceil of its share
    train, test = split_indices(120, np.arange(120) % 4, 0.25, seed=0)
    assert len(test) == 30 and sorted(np.bincount((np.arange(120) % 4)[test]).tolist()) == [7, 7, 8, 8]


def test_tampered_file_is_refused_on_load(tmp_path, patches):
    np.savez(tmp_path / "p.npz", x=patches[:30])
    add_dataset("tamper", tmp_path / "p.npz")
    assert load_dataset("tamper").x_train.shape[0] == 25
    path = dataset_spec("tamper") and (tmp_path / "data" / "tamper" / "train.npz")
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="train.npz has sha256 .* the file changed"):
        load_dataset("tamper")


# ---------------------------------------------------------------------------------------------- bad input

def test_corrupt_image_is_named(tmp_path, patches, capsys, data_folder):
    save_pngs(tmp_path / "src", patches[:4])
    (tmp_path / "src" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert_refused(capsys, data_folder, ["bad", tmp_path / "src"], "002.png", "not a readable PNG/JPEG")


def test_mixed_sizes_and_channels_are_named(tmp_path, patches, capsys, data_folder):
    save_pngs(tmp_path / "src", patches[:3])
    Image.fromarray(patches[3][:16]).save(tmp_path / "src" / "001b.png")
    assert_refused(capsys, data_folder, ["bad", tmp_path / "src"], "001b.png", "32x16", "000.png", "one size")
    save_pngs(tmp_path / "grey", patches[:3])
    Image.fromarray(patches[3][..., 0]).save(tmp_path / "grey" / "003.png")
    assert_refused(capsys, data_folder, ["bad", tmp_path / "grey"], "003.png", "1 channel", "3 channels")


def test_empty_folder_and_missing_source(tmp_path, capsys, data_folder):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert_refused(capsys, data_folder, ["bad", tmp_path / "empty"], "holds no images", ".png")
    assert_refused(capsys, data_folder, ["bad", tmp_path / "nowhere"], "does not exist", "accepted")


def test_bad_arrays_are_refused(tmp_path, patches, capsys, data_folder):
    np.savez(tmp_path / "count.npz", x=patches[:10], y=np.zeros(9, dtype=np.int64))
    assert_refused(capsys, data_folder, ["bad", tmp_path / "count.npz"], "y has shape (9,)", "10 images")
    x = patches[:10].astype(np.float32) / 255
    x[0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    assert_refused(capsys, data_folder, ["bad", tmp_path / "nan.npz"], "NaN or infinite", "float in [0, 1]")
    np.savez(tmp_path / "range.npz", x=patches[:10].astype(np.float32))
    assert_refused(capsys, data_folder, ["bad", tmp_path / "range.npz"], "[0, 255]", "float in [0, 1]")
    np.savez(tmp_path / "keys.npz", images=patches[:10])
    assert_refused(capsys, data_folder, ["bad", tmp_path / "keys.npz"], "holds images", "x_train")
    np.savez(tmp_path / "ok.npz", x=patches[:10])
    assert_refused(capsys, data_folder, ["mnist", tmp_path / "ok.npz"], "built-in")
    assert_refused(capsys, data_folder, ["ok", tmp_path / "ok.npz", "--test-fraction", "1.5"], "between 0 and 1")
    assert_refused(capsys, data_folder, ["ok", tmp_path / "ok.npz", "--test-fraction", "1/100"], "0 to test on")


def test_existing_name_needs_force(tmp_path, patches, capsys, data_folder):
    np.savez(tmp_path / "a.npz", x=patches[:12])
    np.savez(tmp_path / "b.npz", x=patches[:24])
    assert cli(["data", "add", "mine", tmp_path / "a.npz"], capsys)[0] == 0
    code, _, err = cli(["data", "add", "mine", tmp_path / "b.npz"], capsys)
    assert code == 2 and "already exists" in err and "--force" in err
    assert load_dataset("mine").x_train.shape[0] == 10
    assert cli(["data", "add", "mine", tmp_path / "b.npz", "--force"], capsys)[0] == 0
    assert load_dataset("mine").x_train.shape[0] == 20
    assert sorted(p.name for p in data_folder.iterdir()) == ["mine"]  # no temporary or old folder left


def test_a_failed_write_leaves_nothing(tmp_path, patches, monkeypatch, data_folder):
    from vaelab.data import user
    from vaelab.errors import StorageError

    np.savez(tmp_path / "p.npz", x=patches[:12])
    real, calls = user.write_durable, []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(user, "write_durable", full_disk)
    with pytest.raises(StorageError, match="No space left on device; free some space"):
        add_dataset("full", tmp_path / "p.npz")
    assert list(data_folder.iterdir()) == []


# ---------------------------------------------------------------------------------------------- using it

@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_train_one_epoch_on_unlabelled_colour_images(tmp_path, patches, capsys, network):
    np.savez(tmp_path / "p.npz", x=patches)
    assert cli(["data", "add", "patches", tmp_path / "p.npz"], capsys)[0] == 0
    (tmp_path / "trace.yaml").write_text("train:\n  trace_every: 2\n")  # traced: the tracer runs without labels
    code, _, err = cli(["train", tmp_path / "trace.yaml", "--dataset", "patches", "--network", network, "--epochs", "1",
                        "--precision", "fp32", "--hidden", "64", "--latent-dim", "4", "--conv-channels", "8,16",
                        "--out", tmp_path / "runs", "--name", network], capsys)
    assert code == 0, err
    metrics = [json.loads(line) for line in (tmp_path / "runs" / network / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and np.isfinite(metrics[0]["test_loss"]) and metrics[0]["train_loss"] > 0
    with np.load(tmp_path / "runs" / network / "trace.npz") as trace:  # traced without labels: labels -1
        assert (trace["labels"] == -1).all() and trace["mu"].shape[-1] == 4


def test_unlabelled_dataset_in_memory_and_label_analyses():
    x = torch.rand(20, 3, 8, 8)
    d = Dataset.from_arrays("mine", x[:15], None, x[15:], None)
    assert d.y_train is None and d.n_classes is None and not d.labelled
    assert d.subset(5, 2).x_train.shape[0] == 5 and d.subset(5, 2).y_test is None
    with pytest.raises(NotApplicable, match="the linear probes needs class labels and dataset 'mine' has none"):
        d.require_labels("the linear probes")
    with pytest.raises(DataError, match="both y_train and y_test"):
        Dataset.from_arrays("mine", x[:15], np.zeros(15), x[15:], None)
    u8 = Dataset.from_arrays("u8", np.full((4, 1, 2, 2), 255, np.uint8), None, np.zeros((2, 1, 2, 2), np.uint8), None)
    assert float(u8.x_train.max()) == 1.0


def test_analyses_that_need_labels_raise_not_applicable():
    from vaelab.analysis.probes import linear_probes
    from vaelab.analysis.quality import evaluation_classifier

    x = torch.rand(20, 1, 8, 8)
    d = Dataset.from_arrays("mine", x[:15], None, x[15:], None)
    with pytest.raises(NotApplicable, match="evaluation classifier"):
        evaluation_classifier(d)

    class Subject:
        data = d
        latent_dim = 2

    with pytest.raises(NotApplicable, match="linear probes"):
        linear_probes(Subject())


def test_config_accepts_user_dataset_names(tmp_path, patches):
    from vaelab.config import build_config
    from vaelab.errors import ConfigError

    np.savez(tmp_path / "p.npz", x=patches[:30])
    add_dataset("cfgdata", tmp_path / "p.npz")
    config = build_config({"name": "r", "data": {"name": "cfgdata"}, "model": {"network": "conv"}})
    assert config.data.name == "cfgdata"
    with pytest.raises(ConfigError, match="unknown dataset 'cfgdat'.*did you mean 'cfgdata'"):
        build_config({"name": "r", "data": {"name": "cfgdat"}})


def test_study_grid_can_name_a_user_dataset(tmp_path, patches):
    from vaelab.studies.orchestrator import require_datasets
    from vaelab.studies.spec import StudySpec

    np.savez(tmp_path / "p.npz", x=patches[:30])
    add_dataset("gridded", tmp_path / "p.npz")
    spec = StudySpec(name="mine", base={"model": {"network": "conv"}, "train": {"epochs": 1}},
                     grid={"data.name": ["gridded", "digits"]})
    planned = spec.expand()
    assert {r.config.data.name for r in planned} == {"gridded", "digits"}
    require_datasets("mine", {r.config.data.name for r in planned})  # present: no error
