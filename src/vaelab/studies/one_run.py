"""One run of a study, start to finish: train (or resume, or skip when done), then the study's analyses (each
skipped when its saved result was made with the same parameters on the same checkpoint), then one results row.

A group of runs that differ only in seed is trained as one vectorised model (vaelab.ensemble) first; each member is
then finished, analysed and reported like a single run."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from vaelab.analysis import from_run, run_analysis
from vaelab.analysis.framework.registry import declaration
from vaelab.ensemble import NotVectorisable, train_ensemble
from vaelab.errors import NotApplicable, RunError, RunInterrupted, StorageError, TrainingDiverged, VaelabError
from vaelab.fileio import atomic_write_json
from vaelab.runs import Run, run_progress
from vaelab.studies.results import run_numbers
from vaelab.studies.tasks import RunTask, Task
from vaelab.studies.tracking import log_run
from vaelab.trainer import train

LOCK_WAIT_S = 2.0


def execute_run(task: RunTask | dict[str, Any]) -> dict[str, Any]:
    """Train and analyse one run; its results row."""
    task = RunTask.of(task)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, task.threads))
    try:
        return _execute(task)
    finally:
        torch.set_num_threads(threads_before)  # matters when a run executes in the caller's own process


def execute_task(task: Task) -> list[dict[str, Any]]:
    """A run task, or a group task: the group is trained as one vectorised model, then each member is finished,
    analysed and reported like a single run; whatever cannot be vectorised (or is already trained) goes through the
    single-run path. The results rows, one per run."""
    if isinstance(task, RunTask):
        return [execute_run(task)]
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, task.threads))
    vectorised = set()
    try:
        configs = [m.run_config() for m in task.members]
        runs_dir = Path(task.members[0].runs_dir)
        pending = [c for c in configs if not run_progress(runs_dir / c.name, c.train.epochs).settled]
        if len(pending) >= 2:
            try:
                train_ensemble(pending, runs_dir, progress=False, log=lambda m: None,
                               precision_probe=task.members[0].precision_probe)
                vectorised = {c.name for c in pending}
            except NotVectorisable:
                pass  # e.g. members at different epochs, or one diverged: the rest go one by one below
            except RunError as exc:
                if "is in use by" not in str(exc):
                    raise
    finally:
        torch.set_num_threads(threads_before)
    rows = []
    for member in task.members:
        member.threads = task.threads
        row = execute_run(member)
        if member.name in vectorised:
            row["trained_now"], row["vectorised"] = True, len(vectorised)
        rows.append(row)
    return rows


def _execute(task: RunTask) -> dict[str, Any]:
    cfg = task.run_config()
    runs_dir = Path(task.runs_dir)
    run_dir = runs_dir / cfg.name
    t0 = time.time()
    trained = False
    try:
        while True:
            where = run_progress(run_dir, cfg.train.epochs)
            if where.done:
                break
            if where.state == "failed" and not task.retry_failed:
                return _row(task, run_dir, "failed", Run(run_dir).status.get("reason", "failed earlier"), t0, trained)
            try:
                train(cfg, runs_dir, resume=True, progress=False, log=lambda m: None,
                      precision_probe=task.precision_probe)
                trained = True
                break
            except RunError as exc:
                if "is in use by" not in str(exc):
                    raise
                time.sleep(LOCK_WAIT_S)  # another study is training this run: wait, then look again
        if task.tracking:
            log_run(Run(run_dir), task.tracking)
        _analyse(run_dir, task.analyses, "cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    except TrainingDiverged as exc:
        return _row(task, run_dir, "failed", str(exc), t0, trained)
    except (RunInterrupted, StorageError):  # Ctrl-C, or a disk that cannot take more: the study stops here
        raise
    except VaelabError as exc:
        return _row(task, run_dir, "failed", str(exc), t0, trained)
    return _row(task, run_dir, "finished", "", t0, trained)


def _analyse(run_dir: Path, analyses: dict[str, dict[str, Any]], device: str = "cpu") -> None:
    """The study's analyses of one run, on ``device`` (a study on a GPU analyses its runs there too)."""
    if not analyses:
        return
    subject = None
    for name, params in analyses.items():
        name = declaration(name).name  # (a study may say diagnose)
        saved = run_dir / "analysis" / f"{name}.json"
        if subject is None:
            subject = from_run(run_dir, device=device)
        if saved.exists():
            try:
                old = json.loads(saved.read_text())
                if old.get("requested") == params and old["source"].get("checkpoint_epoch") == subject.source.get("checkpoint_epoch"):
                    continue
            except (OSError, ValueError, KeyError):
                pass  # unreadable: run it again
        try:
            run_analysis(subject, name, **params)
        except NotApplicable as exc:
            atomic_write_json(saved, {"analysis": name, "requested": params, "source": subject.source,
                                      "skipped": str(exc)})


def _row(task: RunTask, run_dir: Path, status: str, reason: str, t0: float, trained: bool) -> dict[str, Any]:
    return {"run": task.name, "status": status, "reason": reason, **task.coordinates,
            **run_numbers(run_dir), "wall_seconds": round(time.time() - t0, 2), "trained_now": trained}
