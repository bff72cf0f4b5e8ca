"""1. SIGKILL a training process at many points, including inside checkpoint writes; resuming ends with weights
bit-identical to an uninterrupted run with the same seed."""
from __future__ import annotations

import random
import signal
import time

import pytest

from faultkit import (STEPS_PER_EPOCH, final_weights, hidden_leftovers, kill_group, losses, start, train, vaelab,
                      vaelab_env, wait_for)

# (kill point, why it matters). Each checkpoint writes 3 files, so checkpoint-write@4 is inside the second checkpoint.
SOAK = pytest.mark.soak  # the long version (make soak); CI runs the rest
INJECTED = [
    pytest.param("step@7", "inside the first epoch, before any checkpoint", marks=SOAK),
    pytest.param(f"step@{STEPS_PER_EPOCH * 2 + 5}", "inside the third epoch", marks=SOAK),
    pytest.param("checkpoint-write@1", "the first checkpoint half-written (weights only)", marks=SOAK),
    ("checkpoint-write@5", "the second checkpoint with weights and state but no manifest"),
    ("checkpoint-write@9", "the third checkpoint complete in its temporary folder, not yet renamed"),
    ("atomic-write@4", "metrics.jsonl or status.json written to a temporary file, not renamed"),
    (f"step@{STEPS_PER_EPOCH + 9}:SIGINT,checkpoint-swap@1", "between the renames that replace a checkpoint in place"),
]


def _resume_and_compare(out, reference_run, killed):
    run_dir = out / "r"
    assert killed.returncode in (-signal.SIGKILL, 137, 130), killed.stderr[-2000:]
    resumed = vaelab("resume", run_dir, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert final_weights(run_dir) == final_weights(reference_run)
    assert losses(run_dir) == losses(reference_run)
    assert hidden_leftovers(run_dir) == []


@pytest.mark.parametrize("point,why", INJECTED, ids=[p.values[0] if hasattr(p, "values") else p[0] for p in INJECTED])
def test_sigkill_at_an_injected_point_then_resume_is_bit_identical(tmp_path, reference_run, point, why):
    killed = train(tmp_path, env=vaelab_env(VAELAB_FAULT_KILL=point))
    _resume_and_compare(tmp_path, reference_run, killed)


@pytest.mark.soak
def test_sigkill_at_random_steps_then_resume_is_bit_identical(tmp_path, reference_run):
    """Three kills at seeded random steps of one run, each resumed by the next attempt."""
    rng = random.Random(20261121)
    points = sorted(rng.sample(range(1, STEPS_PER_EPOCH * 4), 3))
    run_dir = tmp_path / "r"
    first = train(tmp_path, env=vaelab_env(VAELAB_FAULT_KILL=f"step@{points[0]}"))
    assert first.returncode == -signal.SIGKILL
    for p in points[1:]:  # a resumed process counts its own steps from 1
        done = losses(run_dir)[-1][1] if (run_dir / "metrics.jsonl").exists() and losses(run_dir) else 0
        if p - done <= 0:
            continue
        again = vaelab("resume", run_dir, "--no-progress", env=vaelab_env(VAELAB_FAULT_KILL=f"step@{p - done}"))
        assert again.returncode == -signal.SIGKILL, again.stderr[-2000:]
    _resume_and_compare(tmp_path, reference_run, first)


def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(tmp_path, reference_run):
    """A real kill from outside, at a seeded random time after training has started (no hook involved)."""
    proc = start("train", "--dataset", "digits", "--arch", "64-32-4", "--epochs", "4", "--batch-size", "64",
                 "--lr", "3e-3", "--no-progress", "--name", "r", "--out", tmp_path)
    wait_for(lambda: (tmp_path / "r" / "status.json").exists())
    time.sleep(random.Random(7).uniform(0.0, 1.0))
    kill_group(proc)
    _resume_and_compare(tmp_path, reference_run, proc)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(20))
def test_soak_sigkill_at_random_moments(tmp_path, reference_run, seed):
    """Soak: 20 random kill times, some inside checkpoint writes by chance (make soak)."""
    proc = start("train", "--dataset", "digits", "--arch", "64-32-4", "--epochs", "4", "--batch-size", "64",
                 "--lr", "3e-3", "--no-progress", "--name", "r", "--out", tmp_path)
    wait_for(lambda: (tmp_path / "r" / "status.json").exists())
    time.sleep(random.Random(seed).uniform(0.0, 2.0))
    kill_group(proc)
    if proc.returncode == 0:  # finished before the kill: nothing to resume
        assert final_weights(tmp_path / "r") == final_weights(reference_run)
        return
    _resume_and_compare(tmp_path, reference_run, proc)


@pytest.mark.soak
@pytest.mark.parametrize("n", range(1, 13))
def test_soak_sigkill_inside_every_checkpoint_file(tmp_path, reference_run, n):
    killed = train(tmp_path, env=vaelab_env(VAELAB_FAULT_KILL=f"checkpoint-write@{n}"))
    _resume_and_compare(tmp_path, reference_run, killed)
