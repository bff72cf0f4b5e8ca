"""3. Corrupt or truncated checkpoints (bytes flipped, file cut short, a file or the manifest missing, a forged
manifest): detected by checksum, reported with the path, resume falls back to the previous good checkpoint with a
warning, and never loads garbage."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from faultkit import final_weights, losses, vaelab
from vaelab.runs import CheckpointStore, Run


def flip(path, offset=-100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def forge_manifest(folder):
    """Bytes changed in the weights and the manifest's checksum changed to match, but not the epoch: still caught."""
    flip(folder / "weights.safetensors")
    manifest = json.loads((folder / "manifest.json").read_text())
    from vaelab.fileio import sha256_file

    manifest["sha256"]["weights.safetensors"] = sha256_file(folder / "weights.safetensors")
    manifest["epoch"] = manifest["epoch"] + 7
    (folder / "manifest.json").write_text(json.dumps(manifest))


DAMAGE = {
    "weights-bytes-flipped": (lambda f: flip(f / "weights.safetensors"), "weights.safetensors does not match its checksum"),
    "state-bytes-flipped": (lambda f: flip(f / "state.pt", 500), "state.pt does not match its checksum"),
    "weights-truncated": (lambda f: truncate(f / "weights.safetensors"), "weights.safetensors does not match"),
    "state-missing": (lambda f: (f / "state.pt").unlink(), "state.pt is missing"),
    "manifest-missing": (lambda f: (f / "manifest.json").unlink(), "manifest.json is missing"),
    "manifest-garbage": (lambda f: (f / "manifest.json").write_bytes(b"\x00\xff{not json"), "unreadable manifest"),
    "manifest-forged": (forge_manifest, "its manifest says epoch 11, not 4"),
    "manifest-drops-a-file": (lambda f: (f / "manifest.json").write_text(json.dumps(
        {"epoch": 4, "sha256": {"state.pt": json.loads((f / "manifest.json").read_text())["sha256"]["state.pt"]}})),
        "its manifest has no checksum for weights.safetensors"),
}


@pytest.fixture(scope="module")
def trained(reference_run):
    """A finished 4-epoch run (the session's reference run, which each test copies before damaging it); the store
    keeps the checkpoints of epochs 3 and 4."""
    assert CheckpointStore(reference_run / "checkpoints").epochs() == [4, 3]
    return reference_run


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_is_detected_and_skipped(tmp_path, trained, damage):
    run_dir = tmp_path / "r"
    shutil.copytree(trained, run_dir)
    newest = run_dir / "checkpoints" / "epoch-000004"
    apply, reason = DAMAGE[damage]
    apply(newest)
    warnings = []
    weights, state, epoch = CheckpointStore(run_dir / "checkpoints").load(warn=warnings.append)
    assert epoch == 3 and state["epoch"] == 3
    assert len(warnings) == 1 and str(newest) in warnings[0] and reason in warnings[0]
    good = CheckpointStore(trained / "checkpoints").load(3)[0]
    assert all(torch.equal(weights[k], v) for k, v in good.items())


RESUMED = ["weights-bytes-flipped", "state-missing"]


@pytest.mark.parametrize("damage", [d if d in RESUMED else pytest.param(d, marks=pytest.mark.soak) for d in DAMAGE])
def test_damaged_newest_checkpoint_is_reported_and_resume_falls_back(tmp_path, trained, reference_run, damage):
    run_dir = tmp_path / "r"
    shutil.copytree(trained, run_dir)
    newest = run_dir / "checkpoints" / "epoch-000004"
    apply, reason = DAMAGE[damage]
    apply(newest)
    resumed = vaelab("resume", run_dir, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    warning = next(line for line in resumed.stderr.splitlines() if line.startswith("warning:"))
    assert str(newest) in warning and reason in warning and "falling back" in warning
    assert "from epoch 3" in resumed.stderr
    # epoch 4 replayed from epoch 3's checkpoint: the same weights and losses as never having been damaged
    assert final_weights(run_dir) == final_weights(reference_run)
    assert losses(run_dir) == losses(reference_run)


def test_every_checkpoint_damaged_starts_again_and_never_loads_garbage(tmp_path, trained, reference_run):
    run_dir = tmp_path / "r"
    shutil.copytree(trained, run_dir)
    for folder in (run_dir / "checkpoints").glob("epoch-*"):
        flip(folder / "weights.safetensors")
    with pytest.warns(UserWarning, match="is corrupt"):
        assert CheckpointStore(run_dir / "checkpoints").load() is None
    resumed = vaelab("resume", run_dir, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("warning: checkpoint") == 2
    assert "no checkpoint of" in resumed.stderr and "starts again from epoch 0" in resumed.stderr
    assert final_weights(run_dir) == final_weights(reference_run)


def test_analysis_of_a_damaged_run_uses_the_previous_checkpoint_and_says_so(tmp_path, trained):
    run_dir = tmp_path / "r"
    shutil.copytree(trained, run_dir)
    flip(run_dir / "checkpoints" / "epoch-000004" / "state.pt", 300)
    with pytest.warns(UserWarning, match="epoch-000004 is corrupt"):
        model = Run(run_dir).load_model()
    good = CheckpointStore(run_dir / "checkpoints").load(3)[0]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in good.items())
    out = vaelab("analyze", run_dir, "--only", "posterior", "--json")
    assert out.returncode == 0, out.stderr
    assert "warning: checkpoint" in out.stderr and "epoch-000004 is corrupt" in out.stderr
    assert json.loads((run_dir / "analysis" / "posterior.json").read_text())["source"]["checkpoint_epoch"] == 3
    assert "Traceback" not in out.stderr


def test_asking_for_a_damaged_epoch_by_number_is_refused(tmp_path, trained):
    run_dir = tmp_path / "r"
    shutil.copytree(trained, run_dir)
    truncate(run_dir / "checkpoints" / "epoch-000003" / "weights.safetensors")
    out = vaelab("analyze", run_dir, "--only", "posterior", "--epoch", "3")
    assert out.returncode == 2
    assert "epoch-000003 is corrupt" in out.stderr and "Traceback" not in out.stderr
