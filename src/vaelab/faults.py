"""Fault-injection hooks for the fault suite (tests/faults/), read from the environment; all off unless set.

VAELAB_FAULT_LOSS=nan@N          the training loss becomes NaN (or ``inf``, ``-inf``) at global step N (1-based)
VAELAB_FAULT_NAN_STEP=N          shorthand for VAELAB_FAULT_LOSS=nan@N
VAELAB_FAULT_KILL=POINT@N        the process SIGKILLs itself the N-th time it reaches POINT:
                                   step              after an optimiser step
                                   checkpoint-write  inside a checkpoint write: one file in the temporary folder
                                   checkpoint-swap   between the two renames that replace a checkpoint of the same epoch
                                   atomic-write      inside an atomic file write, after the temporary file is written
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


def loss_fault() -> tuple[float, int] | None:
    """(value, step) the loss is replaced with, or None."""
    if os.environ.get("VAELAB_FAULT_NAN_STEP"):
        return math.nan, int(os.environ["VAELAB_FAULT_NAN_STEP"])
    point = _point("VAELAB_FAULT_LOSS")
    return (float(point[0]), point[1]) if point else None


def reached(point: str) -> None:
    """Count one arrival at ``point``; SIGKILL this process if VAELAB_FAULT_KILL names this arrival."""
    target = _point("VAELAB_FAULT_KILL")
    if target is None or target[0] != point:
        return
    _reached[point] += 1
    if _reached[point] == target[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def before_write(path: os.PathLike | str) -> None:
    """Raise the configured OSError for this write, if VAELAB_FAULT_WRITE_ERROR says so."""
    target = _point("VAELAB_FAULT_WRITE_ERROR")
    if target is None:
        return
    _reached["write"] += 1
    if _reached["write"] >= target[1]:
        code = getattr(errno, target[0])
        raise OSError(code, os.strerror(code), str(path))
