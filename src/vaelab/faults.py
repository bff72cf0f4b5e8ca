"""Fault-injection hooks for the fault suite (tests/faults/), read from the environment; all off unless set.

VAELAB_FAULT_LOSS=nan@N          the training loss becomes NaN (or ``inf``, ``-inf``) at global step N (1-based)
VAELAB_FAULT_NAN_STEP=N          shorthand for VAELAB_FAULT_LOSS=nan@N
VAELAB_FAULT_RUN=NAME            the loss fault applies only to the run of that name (default: every run)
VAELAB_FAULT_KILL=POINT@N[:SIG]  the process sends itself SIGKILL (or SIG, e.g. SIGINT) the N-th time it reaches POINT;
                                 several, comma-separated, e.g. ``step@30:SIGINT,checkpoint-swap@1``. Points:
                                   step              after an optimiser step
                                   checkpoint-write  inside a checkpoint write, after each file in the temporary folder
                                   checkpoint-swap   between the two renames that replace a checkpoint of the same epoch
                                   atomic-write      inside an atomic file write, after the temporary file is written
                                   fetch-copy        inside a dataset fetch, after a file is copied, before it is checked
VAELAB_FAULT_WRITE_ERROR=ERR@N   from the N-th file write on, every write fails with ERR (ENOSPC: disk full,
                                   EROFS: read-only file system, EACCES: permission denied)

Counters are per process, so a resumed run (a new process) starts counting again.
"""
from __future__ import annotations

import errno
import math
import os
import signal
from collections import Counter

_reached: Counter = Counter()


def _point(variable: str) -> tuple[str, int] | None:
    value = os.environ.get(variable)
    if not value:
        return None
    what, _, n = value.rpartition("@")
    return what, int(n)


def loss_fault(run_name: str | None = None) -> tuple[float, int] | None:
    """(value, step) the loss of run ``run_name`` is replaced with, or None."""
    only = os.environ.get("VAELAB_FAULT_RUN")
    if only and run_name is not None and run_name != only:
        return None
    if os.environ.get("VAELAB_FAULT_NAN_STEP"):
        return math.nan, int(os.environ["VAELAB_FAULT_NAN_STEP"])
    point = _point("VAELAB_FAULT_LOSS")
    return (float(point[0]), point[1]) if point else None


def reached(point: str) -> None:
    """Count one arrival at ``point``; send this process a signal if VAELAB_FAULT_KILL names this arrival."""
    specs = os.environ.get("VAELAB_FAULT_KILL")
    if not specs:
        return
    _reached[point] += 1
    for spec in specs.split(","):
        where, _, sig = spec.partition(":")
        what, _, n = where.rpartition("@")
        if what == point and _reached[point] == int(n):
            os.kill(os.getpid(), getattr(signal, sig or "SIGKILL"))


def before_write(path: os.PathLike | str) -> None:
    """Raise the configured OSError for this write, if VAELAB_FAULT_WRITE_ERROR says so."""
    target = _point("VAELAB_FAULT_WRITE_ERROR")
    if target is None:
        return
    _reached["write"] += 1
    if _reached["write"] >= target[1]:
        code = getattr(errno, target[0])
        raise OSError(code, os.strerror(code), str(path))
