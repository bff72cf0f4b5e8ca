"""6. Disk full (ENOSPC) and read-only or forbidden output folders (EROFS, EACCES): a one-line error naming the file,
nothing half-written left behind, the previous checkpoint intact, and the same command finishes once there is room."""
from __future__ import annotations

import os
import stat

import pytest

from faultkit import TRAIN_ARGS, final_weights, hidden_leftovers, losses, one_line, train, vaelab, vaelab_env
from vaelab.runs import CheckpointStore

# Writes of a run, in order: config.yaml, status.json, metrics.jsonl (start); then per epoch the checkpoint's
# weights, state and manifest, metrics.jsonl and status.json. So write 4 is the first checkpoint's weights, 10 the
# second checkpoint's state.pt, 12 the metrics.jsonl of epoch 2.
DISK_FULL_AT = [pytest.param(4, id="the very first checkpoint", marks=pytest.mark.soak),
                pytest.param(10, id="inside the second checkpoint"),
                pytest.param(12, id="metrics after a checkpoint", marks=pytest.mark.soak)]


@pytest.mark.parametrize("nth", DISK_FULL_AT)
def test_disk_full_stops_with_one_line_keeps_the_last_checkpoint_and_resumes(tmp_path, reference_run, nth):
    run_dir = tmp_path / "r"
    full = train(tmp_path, env=vaelab_env(VAELAB_FAULT_WRITE_ERROR=f"ENOSPC@{nth}"))
    assert full.returncode == 2
    line = one_line(full.stderr)
    assert "No space left on device" in line and "free some space and run the same command again" in line
    assert str(tmp_path) in line  # names the file or folder it could not write
    assert hidden_leftovers(run_dir) == []  # no temporary file or folder left
    store = CheckpointStore(run_dir / "checkpoints")
    assert all(store.verify(e) is None for e in store.epochs())  # what exists is intact
    resumed = vaelab("resume", run_dir, "--no-progress")  # room again
    assert resumed.returncode == 0, resumed.stderr
    assert final_weights(run_dir) == final_weights(reference_run)
    assert losses(run_dir) == losses(reference_run)


@pytest.mark.parametrize("errno_name,message", [("EROFS", "Read-only file system"), ("EACCES", "Permission denied")])
def test_read_only_output_folder_is_one_line_and_writes_nothing(tmp_path, errno_name, message):
    out = vaelab("train", *TRAIN_ARGS, "--name", "r", "--out", tmp_path, env=vaelab_env(
        VAELAB_FAULT_WRITE_ERROR=f"{errno_name}@1"))
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert message in line and "choose a writable --out" in line
    assert hidden_leftovers(tmp_path) == []


def test_read_only_study_folder_is_one_line(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase:\n  data: {name: digits}\n  model: {arch: 64-32-4}\n  train: {epochs: 1}\n"
                    "grid:\n  model.latent_dim: [2]\n")
    out = vaelab("study", spec, "--out", tmp_path / "out", env=vaelab_env(VAELAB_FAULT_WRITE_ERROR="EROFS@1"))
    assert out.returncode == 2
    assert "Read-only file system" in one_line(out.stderr)
    assert hidden_leftovers(tmp_path / "out") == []


def test_disk_full_in_the_middle_of_a_study_stops_it_with_one_line(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase:\n  data: {name: digits}\n  model: {arch: 64-32-4}\n  train: {epochs: 2}\n"
                    "grid:\n  model.latent_dim: [2, 3]\n")
    out = vaelab("study", spec, "--out", tmp_path / "out", "--workers", "1",
                 env=vaelab_env(VAELAB_FAULT_WRITE_ERROR="ENOSPC@8"))
    assert out.returncode == 2
    assert "No space left on device" in one_line(out.stderr)
    assert hidden_leftovers(tmp_path / "out") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the injected EROFS/EACCES cover it")
def test_a_really_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        out = vaelab("train", *TRAIN_ARGS, "--name", "r", "--out", folder)
        assert out.returncode == 2
        assert "Permission denied" in one_line(out.stderr)
    finally:
        folder.chmod(stat.S_IRWXU)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=["umask-022", "umask-027", "umask-077"])
def test_written_files_get_the_permissions_of_any_new_file(tmp_path, umask):
    # An atomic write goes through a temporary file; the file it leaves must be as readable as `open` would make it
    # (0666 less the umask), not mkstemp's 0600, or a report or page is unreadable to everyone else.
    from vaelab.fileio import atomic_write_text

    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "page.md", "new")
        atomic_write_text(tmp_path / "page.md", "replaced")  # a rewrite too
        (tmp_path / "reference").write_text("x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "page.md").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "reference").stat().st_mode)
    assert (tmp_path / "page.md").read_text() == "replaced"
    assert hidden_leftovers(tmp_path) == []
