"""Atomic file writes: write a temporary file in the same folder, fsync, rename into place.

A reader sees either the old file or the new one, never a half-written one, whatever kills the writer. A write that
fails (disk full, read-only folder) removes its temporary file and raises :class:`vaelab.errors.StorageError`. A
written file gets the permissions of any new file (0666 less the process's umask), as ``open`` would give it.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from vaelab import faults
from vaelab.errors import StorageError


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (a new temporary file) and fsync it; the one place every vaelab file write goes."""
    faults.before_write(path)
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def make_dirs(path: Path) -> None:
    """mkdir -p, with a failure (read-only, forbidden) as a StorageError naming the folder."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError.from_os_error(exc, path) from None


def new_temporary(path: Path, suffix: str = ".tmp") -> Path:
    """Create ``.NAME.PID.XXXXXXXX.tmp`` (or ``suffix``) beside ``path``, empty, with mode 0666 less the umask
    (mkstemp's 0600 would make every report, page and fetched dataset unreadable to anyone else)."""
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    make_dirs(path.parent)
    tmp = None
    try:
        tmp = new_temporary(path)
        write_durable(tmp, data)
        faults.reached("atomic-write")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise StorageError.from_os_error(exc, path) from None
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.NAME.PID.XXXX.tmp``) that killed writers left anywhere under ``folder``;
    files of writers still running are kept. Returns what was removed."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        parts = tmp.name.rsplit(".", 3)  # ['.NAME', 'PID', 'XXXX', 'tmp']
        if len(parts) == 4 and parts[1].isdigit() and not _alive(int(parts[1])):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
