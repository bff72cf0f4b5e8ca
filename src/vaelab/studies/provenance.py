"""Where a study's numbers came from: each invocation of a study (the command, when, how long, the peak memory) and
the machine and vaelab version it ran on, kept in OUT/<study>/provenance.json so that a report or a reproduction
(vaelab.report.reproduction) can say how it was made.

    {"invocations": [{"command": "vaelab study latent-dim --scale full", "started": "2026-11-22T01:58:30+00:00",
                      "seconds": 1830.2, "peak_rss_gb": 2.1, "runs_trained": 12, "machine": {...},
                      "vaelab": "0.1.0"}, ...]}

A study resumed after a crash has one invocation per command; its wall time is their sum. A running invocation
(:class:`Invocation`) rewrites its entry every minute, so one that is killed outright (SIGKILL, a machine that goes
away) still counts up to its last minute, and its runs trained so far.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch

import vaelab
from vaelab.cpu import cpu_signature
from vaelab.fileio import atomic_write_text

PROVENANCE = "provenance.json"
HEARTBEAT_S = 60.0  # a running invocation rewrites its entry this often


def machine() -> dict[str, Any]:
    """The CPU (model, the flags that decide bf16 speed), cores, torch threads and version, and the GPU if any."""
    out: dict[str, Any] = {"cpu": cpu_signature(), "cores": os.cpu_count(), "torch": torch.__version__}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def version() -> str:
    """vaelab's version, with the git commit of the source tree when it is a checkout (``0.1.0+g37e56d9``, and
    ``-dirty`` when the tree had uncommitted changes)."""
    text = getattr(vaelab, "__version__", "unknown")
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=Path(vaelab.__file__).parent,
                                capture_output=True, text=True, timeout=5)
        if commit.returncode == 0 and commit.stdout.strip():
            text += f"+g{commit.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return text


def peak_rss_gb() -> float:
    """The largest resident set of this process or of any of its finished children (the study's workers), in GB."""
    peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(peak_kb / 2**20, 2)


def command_line() -> str:
    """The command as typed: ``vaelab study ...`` from the CLI, else the Python entry point."""
    prog = Path(sys.argv[0]).name if sys.argv else ""
    if prog in ("vaelab", "__main__.py"):
        return " ".join(["vaelab", *sys.argv[1:]])
    return "vaelab.report.run_study(...) from " + (" ".join(sys.argv) or "python")


def duration(seconds: float | None) -> str:
    """'0.6 s', '45 s', '12 min', '3.2 h' ('not recorded' for None)."""
    if seconds is None:
        return "not recorded"
    minutes = seconds / 60
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if minutes < 2 else f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def read(folder: str | Path) -> dict[str, Any]:
    """The study's provenance ({"invocations": [...]}); empty when none was recorded."""
    try:
        data = json.loads((Path(folder) / PROVENANCE).read_text())
    except (OSError, ValueError):
        return {"invocations": []}
    return data if isinstance(data, dict) and isinstance(data.get("invocations"), list) else {"invocations": []}


def trained_runs(folder: str | Path) -> dict[str, Any]:
    """The study's runs whose training has ended (finished or failed), by their status files: {name: when its status
    was written}. Taken when an invocation starts and when it ends, the runs that are new or changed are what it
    trained (also when it was interrupted or crashed before a run's results came back; also a failed run retried)."""
    out = {}
    for status in (Path(folder) / "runs").glob("*/status.json"):
        try:
            data = json.loads(status.read_text())
        except (OSError, ValueError):
            continue
        if data.get("state") in ("finished", "failed"):
            out[status.parent.name] = (data.get("state"), data.get("updated"))
    return out


def newly_trained(before: dict[str, Any], after: dict[str, Any]) -> int:
    """How many runs' training ended between two :func:`trained_runs` snapshots."""
    return sum(before.get(name) != when for name, when in after.items())


def _entry(started: dt.datetime, seconds: float, runs_trained: int, complete: bool, code: str | None) -> dict[str, Any]:
    return {"command": command_line(), "started": started.isoformat(timespec="seconds"), "seconds": round(seconds, 1),
            "peak_rss_gb": peak_rss_gb(), "runs_trained": runs_trained, "counted_from": "run status",
            "complete": complete, "machine": machine(), "vaelab": code or version()}


def _write(folder: str | Path, entry: dict[str, Any], replace: str | None = None) -> None:
    """Append ``entry`` to provenance.json, or put it in place of the entry whose id is ``replace`` (atomically, and
    under a lock on the study folder, so that two invocations of one study never write over each other's entries)."""
    lock = os.open(folder, os.O_RDONLY)  # the study folder itself is the lock: nothing is left behind
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read(folder)
        at = next((i for i, e in enumerate(data["invocations"]) if replace and e.get("id") == replace), None)
        if at is None:
            data["invocations"].append(entry)
        else:
            data["invocations"][at] = entry
        atomic_write_text(Path(folder) / PROVENANCE, json.dumps(data, indent=2) + "\n")
    finally:
        os.close(lock)  # (closing releases the lock)


def record(folder: str | Path, started: dt.datetime, seconds: float, runs_trained: int, complete: bool = True,
           code: str | None = None) -> dict[str, Any]:
    """Append this invocation to OUT/<study>/provenance.json (atomically) and return it. ``runs_trained``: how many
    runs' training ended during it (:func:`newly_trained`); ``complete``: the invocation ran to its
    end, results and report written (False for an interrupted one); ``code``: :func:`version` taken when the
    invocation started (the source may change while a long study runs)."""
    entry = _entry(started, seconds, runs_trained, complete, code)
    _write(folder, entry)
    return entry


class Invocation:
    """This invocation's entry in provenance.json while it runs: written at the start, rewritten every
    ``heartbeat`` seconds by a daemon thread (wall time, peak memory, runs trained so far, ``"running": true``) and
    by :meth:`end`. An invocation killed without a chance to record still leaves its last heartbeat."""

    def __init__(self, folder: str | Path, heartbeat: float | None = None):
        self.folder, self.heartbeat = Path(folder), heartbeat or HEARTBEAT_S
        self.started, self.t0, self.code = dt.datetime.now(dt.timezone.utc), time.perf_counter(), version()
        self.trained_before = trained_runs(self.folder)
        self.id = uuid.uuid4().hex
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ended = False  # the final entry is written

    def __enter__(self) -> "Invocation":
        self._save(complete=False, running=True)
        self._thread = threading.Thread(target=self._beat, name="vaelab-provenance", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.end(complete=False)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self._save(complete=False, running=True)
            except Exception as exc:  # noqa: BLE001 - a failed heartbeat (a full disk) must not end the study
                warnings.warn(f"provenance.json not updated ({exc}); the study goes on", stacklevel=1)

    def _save(self, complete: bool, running: bool) -> dict[str, Any]:
        with self._lock:
            entry = _entry(self.started, time.perf_counter() - self.t0,
                           newly_trained(self.trained_before, trained_runs(self.folder)), complete, self.code)
            entry = {"id": self.id, **entry, **({"running": True} if running else {})}
            _write(self.folder, entry, replace=self.id)
            return entry

    def end(self, complete: bool) -> dict[str, Any] | None:
        """Stop the heartbeat and write the final entry (once: None after it is written; ``complete``: results and
        report written). A failed write leaves it unwritten, so the exit of the ``with`` block tries again."""
        if self._ended:
            return None
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        entry = self._save(complete=complete, running=False)
        self._ended = True
        return entry


def summary(folder: str | Path) -> dict[str, Any]:
    """What a reader needs: the commands, total wall time, the largest peak memory, the machine of the last
    invocation, every vaelab version that ran the study (in order, comma-separated: a study resumed after an upgrade
    says so), and how many runs the recorded invocations trained (None values when nothing was recorded;
    runs_trained None when it is unknown: an interrupted invocation recorded before counts came from the runs'
    status files counted only the runs whose results had come back)."""
    inv = read(folder)["invocations"]
    if not inv:
        return {"commands": [], "seconds": None, "peak_rss_gb": None, "machine": None, "vaelab": None, "started": None}
    known = all(i.get("complete", True) or i.get("counted_from") for i in inv)
    return {"commands": list(dict.fromkeys(i["command"] for i in inv)), "seconds": sum(i["seconds"] for i in inv),
            "peak_rss_gb": max(i.get("peak_rss_gb") or 0 for i in inv), "machine": inv[-1].get("machine"),
            "vaelab": ", ".join(dict.fromkeys(i["vaelab"] for i in inv if i.get("vaelab"))) or None,
            "started": inv[0].get("started"), "invocations": len(inv),
            "runs_trained": sum(i.get("runs_trained") or 0 for i in inv) if known else None}
