"""2. Ctrl-C (SIGINT) and SIGTERM: the run stops at the next step boundary, writes a checkpoint there, says how to
resume (exit 130), and the resumed run is bit-identical to an uninterrupted one."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

from vaelab.runs import RunLock, write_status
from vaelab.studies import pools
from vaelab.studies.tasks import RunTask

from faultkit import (STEPS_PER_EPOCH, TRAIN_ARGS, final_weights, hidden_leftovers, losses, one_line,
                      start, train, vaelab, vaelab_env, wait_for)


@pytest.mark.parametrize("sig", ["SIGINT", pytest.param("SIGTERM", marks=pytest.mark.soak)])
def test_signal_at_a_step_stops_there_checkpoints_and_resumes_bit_identical(tmp_path, reference_run, sig):
    step = STEPS_PER_EPOCH + 11  # inside epoch 2
    stopped = train(tmp_path, env=vaelab_env(VAELAB_FAULT_KILL=f"step@{step}:{sig}"))
    run_dir = tmp_path / "r"
    assert stopped.returncode == 130
    line = one_line(stopped.stderr)
    assert f"step {step - STEPS_PER_EPOCH} of {STEPS_PER_EPOCH} in epoch 2" in line
    assert f"vaelab resume {run_dir}" in line
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted"
    state = torch.load(run_dir / "checkpoints" / "epoch-000001" / "state.pt", weights_only=True)
    assert state["step"] == step and state["partial"]["step_in_epoch"] == step - STEPS_PER_EPOCH
    resumed = vaelab("resume", run_dir, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "step 11 of epoch 2" in resumed.stderr  # "resuming ... from epoch 1, step 11 of epoch 2"
    assert final_weights(run_dir) == final_weights(reference_run)
    assert losses(run_dir) == losses(reference_run)


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.soak), signal.SIGTERM])
def test_a_real_signal_from_outside_is_handled_the_same_way(tmp_path, reference_run, sig):
    proc = start("train", *TRAIN_ARGS, "--epochs", "400", "--name", "r", "--out", tmp_path)  # long enough to catch
    run_dir = tmp_path / "r"
    wait_for(lambda: (run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").read_text().strip())
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert f"vaelab resume {run_dir}" in one_line(stderr)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
    assert hidden_leftovers(run_dir) == []


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigint-to-a-background-study"])
def test_ctrl_c_of_a_study_says_how_to_continue(tmp_path, how):
    """Ctrl-C reaches the whole process group; a SIGTERM (a scheduler's preemption) only the study's own process,
    which takes the same path: its workers stop and checkpoint, the invocation is recorded, exit 130. A study started
    in the background by a script ignores SIGINT itself, but `kill -INT -- -PGID` still stops its trainers: the study
    stops too and starts no further run (the third run here)."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase:\n  data: {name: digits}\n  model: {arch: 64-32-4}\n  train: {epochs: 300, batch_size: 64}\n"
                    "grid:\n  model.latent_dim: [2, 3, 5]\n")
    args = ("study", spec, "--out", tmp_path / "out", "--no-progress", "--workers", "2")
    proc = start(*args) if how != "sigint-to-a-background-study" else start(*args, ignore_sigint=True)
    wait_for(lambda: len(list((tmp_path / "out" / "s" / "runs").glob("*/metrics.jsonl"))) == 2, timeout=180)
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)  # the terminal sends Ctrl-C to the whole process group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "run the same command again to continue" in one_line(stderr)
    states = [json.loads(p.read_text())["state"] for p in (tmp_path / "out" / "s" / "runs").glob("*/status.json")]
    assert states == ["interrupted"] * 2  # the third run never started
    [made] = json.loads((tmp_path / "out" / "s" / "provenance.json").read_text())["invocations"]
    assert made["complete"] is False and made["seconds"] > 0 and made["command"].startswith("vaelab study ")
    for run_dir in (tmp_path / "out" / "s" / "runs").iterdir():
        assert hidden_leftovers(run_dir) == []


def _busy_ignoring_sigterm(started: str) -> None:
    """A worker's task that does not react to SIGTERM for two minutes, as a trainer inside one long step; it touches
    the file ``started`` once it ignores SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(started, "w").close()
    time.sleep(120)


def test_a_worker_that_does_not_stop_is_ended_and_its_run_marked_interrupted(tmp_path, monkeypatch):
    """A worker that does not reach a step boundary within the study's wait after Ctrl-C (a long first compile, a
    stuck data read) is killed; its run's status must not go on saying "running": the study marks it interrupted
    (it resumes from its last checkpoint), and leaves a run that another process holds alone."""
    def task(name):
        run_dir = tmp_path / "runs" / name
        run_dir.mkdir(parents=True)
        write_status(run_dir, "running", epoch=3)
        return RunTask(name=name, config={"name": name, "model": {"arch": "64-32-4"}}, runs_dir=str(tmp_path / "runs"))

    monkeypatch.setattr(pools, "STOP_WAIT_S", 1.0)
    pool = ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn"))
    try:
        stuck, held = task("stuck"), task("held")
        running = {pool.submit(_busy_ignoring_sigterm, str(tmp_path / f"started-{t.name}")): t for t in (stuck, held)}
        wait_for(lambda: len(list(tmp_path.glob("started-*"))) == 2, timeout=120)
        with RunLock(tmp_path / "runs" / "held"):  # another process is training this one
            t0 = time.monotonic()
            pools._stop_workers(pool, running)
            assert time.monotonic() - t0 < 30
        assert all(not p.is_alive() for p in pool._processes.values())
        status = json.loads((tmp_path / "runs" / "stuck" / "status.json").read_text())
        assert status["state"] == "interrupted" and "was ended" in status["at"] and status["epoch"] == 0
        assert json.loads((tmp_path / "runs" / "held" / "status.json").read_text())["state"] == "running"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
