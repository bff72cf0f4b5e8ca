"""5. Two processes on one output directory: per-run locks (no run is trained twice at the same time), and an
analysis of a run that is still training reads its last complete checkpoint and says so. (Two whole studies at once
on one folder: tests/test_studies.py::test_two_studies_on_one_output_directory_train_each_run_once.)"""
from __future__ import annotations

import json

from faultkit import TRAIN_ARGS, kill_group, one_line, start, vaelab, wait_for
from vaelab.runs import CheckpointStore


def test_analyze_while_training_reads_the_last_complete_checkpoint_and_says_so(tmp_path):
    proc = start("train", *TRAIN_ARGS, "--epochs", "2000", "--name", "r", "--out", tmp_path)
    run_dir = tmp_path / "r"
    try:
        wait_for(lambda: len(CheckpointStore(run_dir / "checkpoints").epochs()) >= 2, timeout=120)
        # the trainer keeps writing (and rotating) checkpoints while the analysis reads them
        out = vaelab("analyze", run_dir, "--only", "posterior,typical-set", "--set", "typical-set.n_images=100",
                     "--set", "typical-set.theorem_pairs=100")
        assert out.returncode == 0, out.stderr
        assert "warning" not in out.stderr  # a checkpoint rotated away mid-read is not "corrupt"
        assert "run is running; using its last complete checkpoint" in out.stderr
        source = json.loads((run_dir / "analysis" / "posterior.json").read_text())["source"]
        assert source["run_state"] == "running" and source["checkpoint_epoch"] >= 2
        assert f"checkpoint of epoch {source['checkpoint_epoch']}" in out.stderr
        # a second trainer on the same run is refused while the first holds it
        second = vaelab("train", *TRAIN_ARGS, "--epochs", "2000", "--name", "r", "--out", tmp_path, "--resume")
        assert second.returncode == 2
        assert f"is in use by process {proc.pid}" in one_line(second.stderr)
    finally:
        kill_group(proc)
    metrics = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics == list(range(1, len(metrics) + 1))  # one writer only: a clean sequence of epochs
