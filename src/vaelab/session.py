"""A training session on run directories: each directory locked, SIGINT/SIGTERM turned into a stop at the next step
boundary, and the resume policy (what a resumed run may change, and when a directory may be started again)."""
from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from pathlib import Path

from vaelab.config import RunConfig
from vaelab.errors import RunError, RunInterrupted
from vaelab.fileio import atomic_write_text
from vaelab.runs import CheckpointStore, RunLock, lock_holder, read_status, run_progress, write_status

# Config fields that may change when a run is resumed (more epochs, another device); anything else may not.
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "device"), ("train", "eval_batch_size"), ("train", "snapshot_every"),
                     ("train", "trace_epochs"), ("train", "precision"), ("train", "compile")}



def config_changes(old: RunConfig, new: RunConfig) -> list[str]:
    """The changes from ``old`` to ``new`` that a resume may not make, as 'section.key: old -> new'."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    changes = []
    for section in a:
        if isinstance(a[section], dict):
            for key in a[section]:
                if a[section][key] != b[section].get(key) and (section, key) not in RESUMABLE_CHANGES:
                    changes.append(f"{section}.{key}: {a[section][key]!r} -> {b[section].get(key)!r}")
        elif a[section] != b[section]:
            changes.append(f"{section}: {a[section]!r} -> {b[section]!r}")
    return changes


class StopRequest:
    """Set by SIGINT/SIGTERM while training; the loop stops at the next step boundary and writes a checkpoint.
    A second SIGINT (Ctrl-C pressed again) interrupts at once (the previous checkpoint stays valid); a SIGTERM after
    a SIGINT does not (a study forwards SIGTERM to workers that may have had the terminal's SIGINT already)."""

    def __init__(self):
        self.signal: int | None = None
        self.where: str | None = None  # where the checkpoint was written, e.g. "step 6 of epoch 2"

    def __bool__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals():
    """Install the SIGINT/SIGTERM handlers (main thread only; elsewhere Ctrl-C keeps Python's behaviour)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.signal is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        stop.signal = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def mark_interrupted(run_dir: Path, where: str | None) -> int:
    """Record that training of ``run_dir`` stopped (``where``: the checkpoint written at the stop, if any); returns the
    epoch of its newest checkpoint, from which a resume continues."""
    epochs = CheckpointStore(Path(run_dir) / "checkpoints").epochs()
    write_status(Path(run_dir), "interrupted", epoch=epochs[0] if epochs else 0, at=where)
    return epochs[0] if epochs else 0


def mark_abandoned(run_dir: Path, why: str) -> bool:
    """A run whose status still says "running" although no process holds its lock (its trainer was killed) is marked
    interrupted, so that nothing reports it as training; ``why``: what ended it. True when it was marked."""
    if read_status(run_dir).get("state") != "running" or lock_holder(run_dir) is not None:
        return False
    mark_interrupted(run_dir, why)
    return True


def prepare_run_dir(config: RunConfig, run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Make ``run_dir`` ready for ``config``: refuse to overwrite a run unasked, refuse a resume that would change
    what may not change (or go back in epochs), and write config.yaml."""
    existing = run_dir / "config.yaml"
    where = run_progress(run_dir, config.train.epochs)
    if where.state != "absent" and not resume:
        if not overwrite:
            raise RunError(f"run {run_dir} already exists ({where.state}); use --resume to continue it, --overwrite to "
                           "start again, or choose another --name")
        for child in run_dir.iterdir():
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    if where.state != "absent" and resume:
        if where.epochs_done > config.train.epochs:
            raise RunError(f"cannot resume {run_dir} to {config.train.epochs} epochs: {where.epochs_done} are already "
                           f"done; give --epochs above {where.epochs_done} to train further")
        changes = config_changes(RunConfig.load(existing), config)
        if changes:
            may = sorted(f"{section}.{key}" for section, key in RESUMABLE_CHANGES)
            raise RunError(f"cannot resume {run_dir} with a different config ({changes[0]}); only "
                           f"{', '.join(may[:-1])} and {may[-1]} may change")
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())


@contextlib.contextmanager
def training_session(configs: list[RunConfig], run_dirs: list[Path], *, resume: bool, overwrite: bool):
    """Lock the run directories, install the stop handlers (yields the StopRequest) and prepare each directory.

    A KeyboardInterrupt inside (a stop, or a second Ctrl-C) marks every run interrupted and becomes RunInterrupted."""
    with contextlib.ExitStack() as stack:
        for d in run_dirs:
            stack.enter_context(RunLock(d))
        stop = stack.enter_context(stop_on_signals())
        for c, d in zip(configs, run_dirs):
            prepare_run_dir(c, d, resume, overwrite)
        try:
            yield stop
        except KeyboardInterrupt:
            last = [mark_interrupted(d, stop.where) for d in run_dirs]
            if len(run_dirs) == 1:
                raise RunInterrupted(run_dirs[0], last[0], stop.where) from None
            raise RunInterrupted(run_dirs[0].parent, 0, stop.where or "the last finished epoch of each run") from None
