"""4. A study killed mid-way (the whole process group like a crashed machine, only its main process, its workers at
an injected step, or a Ray worker): re-running it finishes the interrupted runs, skips the finished ones, and the
final results table equals an uninterrupted study's."""
from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest

from faultkit import hidden_leftovers, kill_group, start, vaelab, vaelab_env, wait_for

STUDY = """name: crash
base:
  data: {name: digits}
  model: {arch: 64-32-4}
  train: {epochs: 5, batch_size: 64, lr: 3.0e-3}
grid:
  model.latent_dim: [2, 3]
seeds: [0, 1]
analyses:
  posterior: {}
  typical-set: {n_images: 200, theorem_pairs: 200}
"""
TIMING_COLUMNS = {"train_seconds", "vectorised"}  # wall-clock facts, not results


def table(folder: Path) -> list[dict]:
    with open(folder / "results.csv") as fh:
        return sorted(({k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(fh)),
                      key=lambda r: r["run"])


def run_study(tmp_path: Path, *extra, env=None):
    spec = tmp_path / "crash.yaml"
    spec.write_text(STUDY)
    return vaelab("study", spec, "--out", tmp_path / "out", "--no-progress", *extra, env=env)


@pytest.fixture(scope="module")
def reference_table(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study-ref")
    done = run_study(tmp)
    assert done.returncode == 0, done.stderr
    rows = table(tmp / "out" / "crash")
    assert [r["status"] for r in rows] == ["finished"] * 4
    return rows


def _epochs_done(runs: Path) -> list[int]:
    out = []
    for status in runs.glob("*/status.json"):
        try:
            out.append(json.loads(status.read_text()).get("epoch", 0))
        except ValueError:
            pass
    return out


def differences(got: list[dict], want: list[dict]) -> list[tuple]:
    """Cells that differ. A killed vectorised group resumes together (vaelab.ensemble.common_checkpoint: from the
    members' common checkpoint, or from the start when one had none yet), so its numbers come out bit-identical; the
    relative 1e-5 left for numbers covers a member trained one by one after all (one that diverged), which equals a
    vectorised member to float precision, not bit for bit. Everything else must be equal."""
    out = [("rows", [g["run"] for g in got], [w["run"] for w in want])] if len(got) != len(want) else []
    for g, w in zip(got, want):
        for key in sorted(set(g) | set(w)):
            a, b = g.get(key), w.get(key)
            if a == b:
                continue
            try:
                if abs(float(a) - float(b)) <= 1e-5 * max(abs(float(b)), 1e-12):
                    continue
            except (TypeError, ValueError):
                pass
            out.append((g["run"], key, a, b))
    return out


def _rerun_equals_reference(tmp_path, reference_table):
    again = run_study(tmp_path)
    assert again.returncode == 0, again.stderr
    folder = tmp_path / "out" / "crash"
    assert not differences(table(folder), reference_table)
    assert hidden_leftovers(folder) == []
    return again


def _start_and_wait(tmp_path: Path, epochs: int, *extra, until=lambda: True):
    """Start the study in the background; return once some run has finished ``epochs`` epochs (and ``until``)."""
    spec = tmp_path / "crash.yaml"
    spec.write_text(STUDY)
    proc = start("study", spec, "--out", tmp_path / "out", "--no-progress", *extra)
    runs = tmp_path / "out" / "crash" / "runs"
    wait_for(lambda: any(e >= epochs for e in _epochs_done(runs)) and until(), timeout=240)
    return proc


def test_sigkill_of_the_whole_study_then_rerun_equals_an_uninterrupted_study(tmp_path, reference_table):
    proc = _start_and_wait(tmp_path, 2)
    kill_group(proc)  # main process and workers at once
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "out" / "crash" / "results.csv").exists()
    _rerun_equals_reference(tmp_path, reference_table)


def _children_of(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(proc.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigkill_of_the_main_process_only(tmp_path, reference_table):
    """Orphaned workers notice (a watchdog), checkpoint their runs at a step boundary and exit; the re-run resumes."""
    proc = _start_and_wait(tmp_path, 1)
    workers = _children_of(proc.pid)
    assert workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    wait_for(lambda: not any(_alive(w) for w in workers), timeout=60)  # no orphan lingers
    proc.stdout.close(), proc.stderr.close()
    _rerun_equals_reference(tmp_path, reference_table)


@pytest.mark.soak
def test_workers_killed_at_a_step_become_failed_rows_then_a_rerun_finishes(tmp_path, reference_table):
    crashed = run_study(tmp_path, env=vaelab_env(VAELAB_FAULT_KILL="step@30"))
    assert crashed.returncode == 1, crashed.stderr  # the study survives its workers, writes its report, says so
    rows = table(tmp_path / "out" / "crash")
    assert {r["status"] for r in rows} == {"failed"} and all("worker failed" in r["reason"] for r in rows)
    report = (tmp_path / "out" / "crash" / "report.html").read_text()
    assert "worker failed" in report
    _rerun_equals_reference(tmp_path, reference_table)


def _ray_worker_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if cmd.startswith(b"ray::execute_task"):
                pids.append(int(proc.name))
    return pids


@pytest.mark.xdist_group("ray")  # one local Ray at a time (the crash test kills a Ray worker by its name)
def test_a_ray_worker_killed_mid_run_is_retried_and_resumes(tmp_path, reference_table):
    pytest.importorskip("ray")
    proc = _start_and_wait(tmp_path, 2, "--executor", "ray", until=lambda: bool(_ray_worker_pids()))
    victim = _ray_worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    folder = tmp_path / "out" / "crash"
    assert not differences(table(folder), reference_table)  # Ray retried the task; it resumed from its checkpoint
