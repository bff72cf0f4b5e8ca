"""7. A loss that becomes NaN or infinite (injected) stops the run with the epoch and step and keeps the last good
checkpoint; in a study that run is marked failed with the reason, the others carry on, and the report shows it."""
from __future__ import annotations

import csv
import json

import pytest

from faultkit import STEPS_PER_EPOCH, one_line, train, vaelab, vaelab_env
from vaelab.runs import CheckpointStore


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_bad_loss_stops_the_run_with_epoch_and_step(tmp_path, value):
    step = STEPS_PER_EPOCH + 7
    out = train(tmp_path, env=vaelab_env(VAELAB_FAULT_LOSS=f"{value}@{step}"))
    assert out.returncode == 3
    line = one_line(out.stderr)
    assert f"loss became {value} at epoch 2, step {step}" in line and "last good checkpoint is kept" in line
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert (status["state"], status["epoch"], status["step"]) == ("failed", 2, step)
    store = CheckpointStore(tmp_path / "r" / "checkpoints")
    assert store.epochs() == [1] and store.verify(1) is None


def test_a_diverging_run_fails_alone_in_a_study_and_the_report_shows_why(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase:\n  data: {name: digits}\n  model: {arch: 64-32-4}\n  train: {epochs: 2, batch_size: 64}\n"
                    "grid:\n  model.latent_dim: [2, 3]\nseeds: [0, 1]\n")
    out = vaelab("study", spec, "--out", tmp_path / "out", "--no-progress",
                 env=vaelab_env(VAELAB_FAULT_LOSS="inf@5", VAELAB_FAULT_RUN="s-z3-s1"))
    assert out.returncode == 1, out.stderr  # the study finished the others and wrote its report, then says so
    assert out.stderr.strip().splitlines()[-1] == ("error: 1 of 4 runs did not finish (s-z3-s1); the report lists why; "
                                                   "--retry-failed trains them again")
    assert (out.stdout + out.stderr).count("report: ") == 1
    with open(tmp_path / "out" / "s" / "results.csv") as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert {name: r["status"] for name, r in rows.items()} == {
        "s-z2-s0": "finished", "s-z2-s1": "finished", "s-z3-s0": "finished", "s-z3-s1": "failed"}
    assert "loss became inf at epoch 1, step 5" in rows["s-z3-s1"]["reason"]
    report = (tmp_path / "out" / "s" / "report.html").read_text()
    assert "s-z3-s1" in report and "loss became inf at epoch 1, step 5" in report
    again = vaelab("study", spec, "--out", tmp_path / "out", "--no-progress")  # failed runs stay failed ...
    with open(tmp_path / "out" / "s" / "results.csv") as fh:
        assert {r["run"]: r["status"] for r in csv.DictReader(fh)}["s-z3-s1"] == "failed"
    retried = vaelab("study", spec, "--out", tmp_path / "out", "--no-progress", "--retry-failed")  # ... until asked
    assert again.returncode == 1 and retried.returncode == 0, retried.stderr
    with open(tmp_path / "out" / "s" / "results.csv") as fh:
        assert {r["status"] for r in csv.DictReader(fh)} == {"finished"}
