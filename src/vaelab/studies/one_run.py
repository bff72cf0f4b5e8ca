"""One run of a study, start to finish: train (or resume, or skip when finished), then the study's analyses (each
skipped when its saved result was made with the same parameters on the same checkpoint), then one results row.

``execute_run`` takes and returns plain dicts so that both executors (a local process pool, Ray tasks) can ship it."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vaelab.studies.results import run_numbers

LOCK_WAIT_S = 2.0


def execute_run(task: dict[str, Any]) -> dict[str, Any]:
    """task: name, config (dict), runs_dir, analyses {name: params}, threads, retry_failed, tracking (or None)."""
    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(task.get("threads", 1))))
    try:
        return _execute(task)
    finally:
        torch.set_num_threads(threads_before)  # matters when a run executes in the caller's own process


def execute_task(task: dict[str, Any]) -> list[dict[str, Any]]:
    """A task is one run, or a group of runs that differ only in seed ({"group": [run tasks]}): the group is trained
    as one vectorised model (vaelab.ensemble), then each member is finished, analysed and reported like a single run;
    whatever cannot be vectorised (or is already trained) goes through the single-run path."""
    if "group" not in task:
        return [execute_run(task)]
    import torch

    from vaelab.config import build_config
    from vaelab.ensemble import NotVectorisable, train_ensemble
    from vaelab.errors import RunError
    from vaelab.runs import Run

    members = task["group"]
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(task.get("threads", 1))))
    vectorised = set()
    try:
        configs = [build_config(t["config"]) for t in members]
        runs_dir = Path(members[0]["runs_dir"])
        pending = [c for c in configs if not (Run(runs_dir / c.name).status.get("state") in ("finished", "failed")
                                              if (runs_dir / c.name / "config.yaml").exists() else False)]
        if len(pending) >= 2:
            try:
                train_ensemble(pending, runs_dir, progress=False, log=lambda m: None,
                               precision_probe=members[0].get("precision_probe"))
                vectorised = {c.name for c in pending}
            except NotVectorisable:
                pass  # e.g. members at different epochs, or one diverged: the rest go one by one below
            except RunError as exc:
                if "is in use by" not in str(exc):
                    raise
    finally:
        torch.set_num_threads(threads_before)
    rows = []
    for t in members:
        row = execute_run({**t, "threads": task.get("threads", 1)})
        if t["name"] in vectorised:
            row["trained_now"], row["vectorised"] = True, len(vectorised)
        rows.append(row)
    return rows


def group_tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks whose configs differ only in seed (and that vaelab.ensemble can train together) become group tasks."""
    from vaelab.config import build_config
    from vaelab.ensemble import vectorise_reason

    groups: dict[str, list[dict]] = {}
    for t in tasks:
        key = dict(t["config"], name=None, train=dict(t["config"]["train"], seed=None))
        groups.setdefault(json.dumps(key, sort_keys=True), []).append(t)
    out = []
    for members in groups.values():
        if len(members) >= 2 and vectorise_reason([build_config(m["config"]) for m in members]) is None:
            out.append({"name": "+".join(m["name"] for m in members), "group": members})
        else:
            out.extend(members)
    return out


def _execute(task: dict[str, Any]) -> dict[str, Any]:
    from vaelab.config import build_config
    from vaelab.errors import RunError, RunInterrupted, StorageError, TrainingDiverged, VaelabError
    from vaelab.runs import Run
    from vaelab.trainer import train

    cfg = build_config(task["config"])
    runs_dir = Path(task["runs_dir"])
    run_dir = runs_dir / cfg.name
    t0 = time.time()
    trained = False
    try:
        while True:
            state = Run(run_dir).status.get("state") if (run_dir / "config.yaml").exists() else None
            done = _epochs_done(run_dir)
            if state == "finished" and done >= cfg.train.epochs:
                break
            if state == "failed" and not task.get("retry_failed"):
                return _row(task, run_dir, "failed", Run(run_dir).status.get("reason", "failed earlier"), t0, trained)
            try:
                train(cfg, runs_dir, resume=True, progress=False, log=lambda m: None,
                      precision_probe=task.get("precision_probe"))
                trained = True
                break
            except RunError as exc:
                if "is in use by" not in str(exc):
                    raise
                time.sleep(LOCK_WAIT_S)  # another study is training this run: wait, then look again
        if task.get("tracking"):
            from vaelab.studies.tracking import log_run

            log_run(Run(run_dir), task["tracking"])
        _analyse(run_dir, task.get("analyses", {}))
    except TrainingDiverged as exc:
        return _row(task, run_dir, "failed", str(exc), t0, trained)
    except (RunInterrupted, StorageError):  # Ctrl-C, or a disk that cannot take more: the study stops here
        raise
    except VaelabError as exc:
        return _row(task, run_dir, "failed", str(exc), t0, trained)
    return _row(task, run_dir, "finished", "", t0, trained)


def _epochs_done(run_dir: Path) -> int:
    from vaelab.runs import CheckpointStore

    epochs = CheckpointStore(run_dir / "checkpoints").epochs()
    return epochs[0] if epochs else 0


def _analyse(run_dir: Path, analyses: dict[str, dict[str, Any]]) -> None:
    from vaelab.analysis import from_run, run_analysis
    from vaelab.analysis.framework.registry import declaration
    from vaelab.errors import NotApplicable

    if not analyses:
        return
    subject = None
    for name, params in analyses.items():
        name = declaration(name).name  # (a study may say diagnose)
        saved = run_dir / "analysis" / f"{name}.json"
        if subject is None:
            subject = from_run(run_dir)
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
            from vaelab.fileio import atomic_write_json

            atomic_write_json(saved, {"analysis": name, "requested": params, "source": subject.source,
                                      "skipped": str(exc)})


def _row(task, run_dir: Path, status: str, reason: str, t0: float, trained: bool) -> dict[str, Any]:
    return {"run": task["name"], "status": status, "reason": reason, **task.get("coordinates", {}),
            **run_numbers(run_dir), "wall_seconds": round(time.time() - t0, 2), "trained_now": trained}
