"""Executors run a study's independent runs: locally in parallel processes, or as Ray tasks on a cluster.

Both take the same tasks (:mod:`vaelab.studies.tasks`, run by :func:`vaelab.studies.one_run.execute_task`) and yield result rows as runs
finish, so the study's progress display and results table do not care where a run ran."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Iterator

from pathlib import Path

from vaelab.errors import ConfigError, RunInterrupted, StorageError
from vaelab.session import mark_abandoned
from vaelab.studies.one_run import execute_task
from vaelab.studies.tasks import Task


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class LocalExecutor:
    """Runs tasks in up to ``workers`` processes (spawned, so each has a clean PyTorch), splitting the cores
    between them; with one worker, in this process."""

    name = "local"

    def __init__(self, workers: int | None = None, cores: int | None = None):
        self.cores = cores or available_cores()
        self.workers = max(1, workers or self.cores)

    def run(self, tasks: list[Task], on_start: Callable[[Task], None] | None = None) -> Iterator[dict]:
        workers = min(self.workers, len(tasks)) or 1
        threads = max(1, self.cores // workers)
        for t in tasks:
            t.threads = threads
        if workers == 1:
            for t in tasks:
                if on_start:
                    on_start(t)
                yield from execute_task(t)
            return

        pending = list(tasks)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init)
        running = {}
        try:
            while pending or running:
                while pending and len(running) < workers:
                    t = pending.pop(0)
                    if on_start:
                        on_start(t)
                    running[pool.submit(execute_task, t)] = t
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    t = running.pop(fut)
                    rows = _result(fut, t)
                    yield from rows
                    if any(r["status"] == "interrupted" for r in rows):
                        # a signal reached a worker: the study stops as on Ctrl-C, even where its own process did not
                        # get it (a background job ignores SIGINT; `kill -INT -- -PGID` still reaches the trainers)
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            _stop_workers(pool, running)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Each run is a Ray task with its CPU/GPU request. ``address`` joins an existing cluster ('auto' or
    'ray://host:10001'); without it a local Ray instance starts with this machine's cores."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0,
                 cores: int | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'vaelab[ray]'") from None
        self.address, self.cpus, self.gpus = address, cpus_per_run, gpus_per_run
        self.cores = cores or available_cores()

    def run(self, tasks: list[Task], on_start: Callable[[Task], None] | None = None) -> Iterator[dict]:
        import ray

        started_here = False
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.cores, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith("VAELAB_")}})
            started_here = True
        try:
            remote = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=2)(execute_task)
            refs = {}
            for t in tasks:
                t.threads = max(1, int(self.cpus))
                if on_start:
                    on_start(t)
                refs[remote.remote(t)] = t
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    t = refs.pop(ref)
                    try:
                        yield from ray.get(ref)
                    except StorageError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a worker that died or raised: those runs failed
                        yield from _failed(t, f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        finally:
            if started_here:
                ray.shutdown()


ORPHAN_CHECK_S = 1.0


def _worker_init() -> None:
    """Workers ignore Ctrl-C outside training (the trainer installs its own handler while it trains), so a signal
    meant for the study never kills a worker between two steps of its work. A worker whose study process died
    (SIGKILL, a crash) would otherwise wait for work forever: a watchdog sends it SIGTERM, so a run it is training
    checkpoints at the next step boundary, and then the worker exits."""

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_S)
        while True:  # the first SIGTERM stops a training at a step boundary; a later one ends the idle worker
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(ORPHAN_CHECK_S)

    threading.Thread(target=watch, name="vaelab-orphan-watchdog", daemon=True).start()


STOP_WAIT_S = 60.0


def _stop_workers(pool, running: dict) -> None:
    """Ctrl-C of the study: ask every worker to stop (SIGTERM: training checkpoints at the next step boundary), wait
    for them a while, then end those still busy (their work is atomic; a re-run resumes it from its last checkpoint,
    and their runs are marked interrupted here, since their trainers can no longer say so)."""

    processes = list(getattr(pool, "_processes", {}).values())
    for p in processes:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    wait(list(running), timeout=STOP_WAIT_S)
    unfinished = [task for fut, task in running.items() if not fut.done()]
    killed = [p for p in processes if p.is_alive()]
    for p in killed:
        p.kill()
    for p in killed:
        p.join(timeout=10)
    if killed:
        for member in (m for task in unfinished for m in task.members):
            mark_abandoned(Path(member.runs_dir) / member.run_config().name,
                           f"its last checkpoint (its worker did not stop within {STOP_WAIT_S:.0f} s and was ended)")


def _result(fut, task: Task) -> list[dict]:

    try:
        return fut.result()
    except RunInterrupted:  # a worker was sent SIGINT/SIGTERM: its runs checkpointed and will resume on a re-run
        return [{"run": t.name, "status": "interrupted", "reason": "stopped by a signal; run the study again to "
                 "continue", **t.coordinates} for t in task.members]
    except StorageError:  # the disk is full or read-only: every further run would fail the same way
        raise
    except Exception as exc:  # noqa: BLE001 - a worker process that died: report its runs as failed
        return _failed(task, f"worker failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")


def _failed(task: Task, reason: str) -> list[dict]:
    return [{"run": t.name, "status": "failed", "reason": reason, **t.coordinates} for t in task.members]


def make_executor(kind: str, *, workers: int | None = None, address: str | None = None, cpus_per_run: float = 1.0,
                  gpus_per_run: float = 0.0):
    if kind == "local":
        if address:
            raise ConfigError("--address is for --executor ray")
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(address, cpus_per_run, gpus_per_run)
    raise ConfigError(f"executor {kind!r} is not one of local, ray")
