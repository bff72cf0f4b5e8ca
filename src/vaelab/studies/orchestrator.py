"""Execute a study: expand its grid, execute the runs (skipping finished ones, resuming interrupted ones), gather one
results row per run into results.csv, and store the study-level checks with them. The report (figures and
report.html) is drawn by the report layer: :func:`vaelab.report.run_study` executes a study and writes its report.

    OUT/<study>/study.yaml      the spec as run (after --scale)
    OUT/<study>/runs/<run>/     one vaelab run directory per run (the contract of vaelab.runs)
    OUT/<study>/results.csv     one row per run: its grid coordinates, status and headline numbers
    OUT/<study>/theorem3.json   Theorem 3's Monte Carlo check, for a study that draws or claims it (vaelab.studies.theorem)
    OUT/<study>/provenance.json each invocation: command, wall time, peak memory, machine, version
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from tqdm.auto import tqdm

from vaelab.data.registry import is_present
from vaelab.errors import DataError
from vaelab.fileio import atomic_write_text, make_dirs, remove_stale_temporaries
from vaelab.precision import resolve_auto
from vaelab.runs import run_progress
from vaelab.studies import provenance, theorem
from vaelab.studies.pools import LocalExecutor
from vaelab.studies.results import write_results
from vaelab.studies.spec import StudySpec
from vaelab.studies.tasks import RunTask, group_tasks


def study_dir(out: str | Path, spec: StudySpec) -> Path:
    return Path(out) / spec.name


def require_datasets(study: str, names: set[str]) -> None:
    """Refuse a study whose datasets are not all present, with the command that fetches them (DataError, exit 2),
    instead of starting runs that would each fail with the same error."""
    missing = sorted(n for n in names if not is_present(n))
    if missing:
        fetch = " && ".join(f"vaelab data fetch {n}" for n in missing)
        raise DataError(f"study {study} needs {', '.join(missing)}, which is not present; run `{fetch}` first")


def execute_study(spec: StudySpec, out: str | Path = "studies", *, executor=None, progress: bool | None = None,
                  tracking: dict | None = None, retry_failed: bool = False, vectorize: bool = True,
                  log: Callable[[str], None] | None = None, finish: Callable[[Path], Any] | None = None) -> Path:
    """Run every run of ``spec`` (already scaled) with ``executor`` (local by default) and write the study's results;
    return the study folder.

    ``vectorize``: runs that differ only in seed are trained together as one vectorised model (vaelab.ensemble).
    ``finish``: called with the study folder once its results are written, as part of the invocation that
    provenance.json times (the report layer writes the report here)."""
    log = log or (lambda m: print(m, file=sys.stderr))
    planned = spec.expand()
    require_datasets(spec.name, {r.config.data.name for r in planned})  # before any run or folder
    folder = study_dir(out, spec)
    make_dirs(folder / "runs")
    with provenance.Invocation(folder) as invocation:  # an interrupted or killed invocation counts too
        remove_stale_temporaries(folder)  # temporary files of a study that was killed (their writers are gone)
        atomic_write_text(folder / "study.yaml", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        # precision auto is decided here, once per model, so every worker and executor trains a model the same way
        # (not where the runs ask for GPUs: the workers' trainer decides there, on their device)
        configs, probes = (resolve_auto([r.config for r in planned]) if not spec.gpus_per_run
                           else ([r.config for r in planned], [None] * len(planned)))
        tasks = [RunTask(r.name, c.model_dump(mode="json"), str(folder / "runs"), spec.analyses, r.coordinates(),
                         retry_failed, tracking, probe) for r, c, probe in zip(planned, configs, probes)]
        executor = executor or LocalExecutor()
        jobs = group_tasks(tasks) if vectorize else tasks
        with _terminate_as_interrupt():
            rows = _run_all(spec, tasks, jobs, executor, progress, log)
        write_results(folder, rows)
        theorem.save(folder, spec)
        if finish is not None:
            finish(folder)
        invocation.end(complete=True)
    return folder


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While the runs execute, the study's own process takes a SIGTERM (a scheduler's preemption, ``kill PID``) as
    Ctrl-C: the workers stop at a step boundary and checkpoint, the invocation is recorded, the CLI exits 130. A
    second SIGTERM is ignored so the stop can finish. Main thread only (elsewhere signals stay as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def handler(signum, frame):
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_all(spec, tasks, jobs, executor, progress, log) -> list[dict]:
    if not tasks:
        return []
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    state = {"running": 0, "failed": 0, "done": 0}
    eta = TimeLeft(tasks)
    if show:
        bar = tqdm(total=len(tasks), unit="run", desc=spec.name, file=sys.stderr, dynamic_ncols=True)

    def started(task):
        state["running"] += len(task.members)
        if bar is not None:
            bar.set_postfix_str(f"running {state['running']}, failed {state['failed']}")

    rows = {}
    for row in executor.run(jobs, on_start=started):
        state["running"] -= 1
        state["done"] += 1
        state["failed"] += row.get("status") != "finished"
        rows[row["run"]] = row
        left = len(tasks) - state["done"]
        line = (f"[{state['done']}/{len(tasks)}] {row['run']}: {row.get('status')}"
                + (f" ({row['reason']})" if row.get("reason") else "")
                + (f", test loss {row['test_loss']:.3f}" if isinstance(row.get("test_loss"), float) else "")
                + f"; running {state['running']}, left {left}" + eta.after(row["run"]))
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"running {state['running']}, failed {state['failed']}")
            bar.write(line, file=sys.stderr)
        else:
            log(line)
    if bar is not None:
        bar.close()
    return [rows[t.name] for t in tasks if t.name in rows]


class TimeLeft:
    """The study's time to go, from the epochs this invocation has trained so far: each run weighs the epochs it had
    left when the invocation started, so runs finished by an earlier invocation (returned at once) and runs resumed
    near their end do not make the rest look quick. Nothing is promised before a run with epochs to train ends."""

    def __init__(self, tasks: list[RunTask]):
        self.t0 = time.time()
        self.left: dict[str, int] = {}
        for t in tasks:
            cfg = t.run_config()
            done = run_progress(Path(t.runs_dir) / cfg.name, cfg.train.epochs).epochs_done
            self.left[t.name] = cfg.train.epochs - min(cfg.train.epochs, done)
        self.trained = 0

    def after(self, run: str) -> str:
        """``run`` has ended: the end of its log line ("" while the pace is unknown)."""
        self.trained += self.left.pop(run, 0)
        if not self.trained:
            return ""
        seconds = (time.time() - self.t0) / self.trained * sum(self.left.values())
        return f", about {seconds / 60:.1f} min to go"
