"""The run directory, the contract between training, analyses and reports:

    runs/<name>/
      config.yaml      everything needed to rebuild the model and data
      status.json      running | finished | failed | interrupted, with the epoch and a reason
      metrics.jsonl    one JSON object per epoch
      checkpoints/     epoch-NNNNNN/ {weights.safetensors, state.pt, manifest.json}; the newest two are kept
      snapshots/       epoch-NNNNNN.safetensors every N epochs (optional), for analyses over training
      analysis/, figures/

Everything is written atomically; checkpoints carry SHA-256 checksums and a corrupt one is never loaded.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vaelab import faults
from vaelab.config import RunConfig
from vaelab.errors import RunError, StorageError
from vaelab.fileio import (atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_dir, make_dirs,
                           sha256_bytes, write_durable)
from vaelab.models import build_model


def weights_bytes(weights: dict[str, torch.Tensor]) -> bytes:
    """A state dict as safetensors bytes (contiguous CPU copies, as safetensors requires)."""
    return st_save({k: v.detach().contiguous().cpu() for k, v in weights.items()})


class CheckpointStore:
    """Checkpoints in ``folder/epoch-NNNNNN/``, each written to a hidden temporary folder and renamed into place."""

    def __init__(self, folder: str | os.PathLike, keep: int = 2):
        self.folder = Path(folder)
        self.keep = keep

    def epochs(self) -> list[int]:
        """Epochs that have a checkpoint folder, newest first (validity is checked on load)."""
        if not self.folder.is_dir():
            return []
        found = [int(p.name[6:]) for p in self.folder.glob("epoch-*") if p.name[6:].isdigit()]
        return sorted(found, reverse=True)

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:06d}"

    def save(self, weights: dict[str, torch.Tensor], state: dict[str, Any], epoch: int) -> Path:
        """Write the checkpoint of ``epoch`` (replacing one of the same epoch) and drop all but the newest ``keep``.

        A failed write (disk full, read-only) removes the temporary folder and raises StorageError; the previous
        checkpoints are untouched."""
        make_dirs(self.folder)
        files = {"weights.safetensors": weights_bytes(weights)}
        buf = io.BytesIO()
        torch.save(state, buf)
        files["state.pt"] = buf.getvalue()
        manifest = {"epoch": epoch, "sha256": {name: sha256_bytes(data) for name, data in files.items()}}
        files["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()  # last: its presence = complete
        tmp = self.folder / f".tmp-epoch-{epoch:06d}-{os.getpid()}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for name, data in files.items():
                write_durable(tmp / name, data)
                faults.reached("checkpoint-write")
            fsync_dir(tmp)
            final = self.path(epoch)
            if final.exists():  # the same epoch written again (a mid-epoch stop, a resume): swap, drop the old one
                old = self.folder / f".old-epoch-{epoch:06d}-{os.getpid()}"
                os.rename(final, old)
                faults.reached("checkpoint-swap")
                os.rename(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, final)
            fsync_dir(self.folder)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StorageError.from_os_error(exc, tmp.parent / f"epoch-{epoch:06d}") from None
        for stale in self.epochs()[self.keep:]:
            shutil.rmtree(self.path(stale), ignore_errors=True)
        return final

    def recover(self) -> list[str]:
        """Finish or remove what a killed writer left (hidden ``.tmp-`` / ``.old-`` folders); call under the run lock.

        A complete temporary folder whose epoch has no checkpoint is renamed into place (it was killed between its
        last fsync and the rename); a replaced checkpoint killed mid-swap is put back; anything else is deleted.
        Returns what was done, one line each."""
        if not self.folder.is_dir():
            return []
        done = []
        leftovers = sorted(self.folder.glob(".tmp-epoch-*")) + sorted(self.folder.glob(".old-epoch-*"))
        for folder in leftovers:  # newer data (.tmp) first, then the replaced (.old) one
            parts = folder.name.split("-")
            epoch = int(parts[2]) if len(parts) >= 3 and parts[2].isdigit() else None
            if epoch is not None and not self.path(epoch).exists() and self._read_verified(folder, epoch)[1] is None:
                os.rename(folder, self.path(epoch))
                done.append(f"completed the checkpoint of epoch {epoch} from {folder.name}")
            else:
                shutil.rmtree(folder, ignore_errors=True)
                done.append(f"removed the unfinished {folder.name}")
        if done:
            fsync_dir(self.folder)
        return done

    REQUIRED = ("weights.safetensors", "state.pt")

    def verify(self, epoch: int) -> str | None:
        """None if the checkpoint of ``epoch`` is complete and matches its checksums, else why not."""
        return self._read_verified(self.path(epoch), epoch)[1]

    def _read_verified(self, folder: Path, epoch: int) -> tuple[dict[str, bytes] | None, str | None]:
        """({file name: bytes}, None) when every file matches the manifest, else (None, why not). Each file is read
        once and the same bytes are checked and later deserialised, so nothing can change in between."""
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
            if manifest.get("epoch") != epoch:
                return None, f"its manifest says epoch {manifest.get('epoch')!r}, not {epoch}"
            for name in self.REQUIRED:
                if name not in manifest["sha256"]:
                    return None, f"its manifest has no checksum for {name}"
            files = {}
            for name, expected in manifest["sha256"].items():
                files[name] = (folder / name).read_bytes()
                if sha256_bytes(files[name]) != expected:
                    return None, f"{name} does not match its checksum"
        except FileNotFoundError as exc:
            return None, f"{Path(exc.filename).name} is missing"
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return None, f"unreadable manifest ({exc})"
        return files, None

    def load(self, epoch: int | None = None, map_location="cpu", warn=None) -> tuple[dict, dict, int] | None:
        """(weights, state, epoch) of the newest valid checkpoint (or of ``epoch``); None if there is none.

        A corrupt checkpoint is reported with its path (through ``warn``, default ``warnings.warn``) and skipped,
        falling back to the previous one; nothing is loaded that does not match its checksum. A checkpoint that a
        training process removes while it is being read (it keeps the newest ``keep``) is skipped without a warning."""
        warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
        for candidate in ([epoch] if epoch is not None else self.epochs()):
            folder = self.path(candidate)
            files, reason = self._read_verified(folder, candidate)
            if reason:
                if not folder.exists() and epoch is None:
                    continue  # rotated away by the trainer meanwhile, not damaged
                warn(f"checkpoint {folder} is corrupt ({reason}); "
                     + ("not loaded" if epoch is not None else "falling back to an earlier one"))
                continue
            weights = st_load(files["weights.safetensors"])
            state = torch.load(io.BytesIO(files["state.pt"]), map_location=map_location, weights_only=True)
            return {k: v.to(map_location) for k, v in weights.items()}, state, candidate
        return None


LOCK_TRIES = 25  # 0.5 s: RunLock waits out a reader's brief shared lock, never a trainer's


def _holder(fh) -> str:
    """Who a lock file names ("process 123")."""
    fh.seek(0)
    return fh.read().strip() or "another process"


class RunLock:
    """An exclusive lock on a run directory (``.lock``), so two processes never train one run at once."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.fh = None

    def __enter__(self) -> "RunLock":
        make_dirs(self.path.parent)
        try:
            self.fh = open(self.path, "a+")
        except OSError as exc:
            raise StorageError.from_os_error(exc, self.path) from None
        for attempt in range(LOCK_TRIES):  # a reader (lock_holder) may hold a shared lock for a moment
            try:
                fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == LOCK_TRIES - 1:
                    holder = _holder(self.fh)
                    self.fh.close()
                    raise RunError(f"run {self.path.parent} is in use by {holder}; wait for it to finish or choose "
                                   "another --name") from None
                time.sleep(0.02)
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"process {os.getpid()}")
        self.fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.fh:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()


def lock_holder(run_dir: str | os.PathLike) -> str | None:
    """Who holds the run's lock now ("process 123"), i.e. is training it; None when nobody does (or it has no lock
    file). Takes the lock for a moment and gives it back."""
    path = Path(run_dir) / ".lock"
    try:
        fh = open(path)
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fh)
        fcntl.flock(fh, fcntl.LOCK_UN)
        return None


class Run:
    """A run directory opened for reading: its config, status, metrics and model."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        cfg = self.path / "config.yaml"
        if not cfg.exists():
            raise RunError(f"{self.path} is not a vaelab run (no config.yaml); train one with `vaelab train`")
        self.config = RunConfig.load(cfg)
        self.checkpoints = CheckpointStore(self.path / "checkpoints")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status.get('state')!r})"

    @property
    def status(self) -> dict[str, Any]:
        return read_status(self.path)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @staticmethod
    def train_seconds(metrics: list[dict[str, Any]]) -> float:
        """The training time of a run's metrics rows: its epochs' seconds summed (a vectorised run's are its share of
        its group's)."""
        return round(sum(m.get("seconds", 0.0) for m in metrics), 2)

    def load_model(self, device: str | torch.device = "cpu", epoch: int | None = None, snapshot: int | None = None):
        """The trained VAE (eval mode) from the newest valid checkpoint, a given checkpoint epoch, or a snapshot."""
        return self.load_model_and_source(device, epoch, snapshot)[0]

    def load_model_and_source(self, device: str | torch.device = "cpu", epoch: int | None = None,
                              snapshot: int | None = None) -> tuple[torch.nn.Module, dict[str, int]]:
        """(model, {"checkpoint_epoch": E} or {"snapshot": N}): the weights and where they came from, read once."""
        model = build_model(self.config)
        if snapshot is not None:
            path = self.path / "snapshots" / f"epoch-{snapshot:06d}.safetensors"
            if not path.exists():
                raise RunError(f"{path} does not exist; snapshots: {self.snapshots()}")
            weights = st_load(path.read_bytes())
        else:
            loaded = self.checkpoints.load(epoch)
            if loaded is None:
                raise RunError(f"{self.path} has no valid checkpoint yet" if epoch is None else
                               f"{self.path} has no valid checkpoint of epoch {epoch}; checkpoints: {self.checkpoints.epochs()}")
            weights = loaded[0]
        model.load_state_dict(weights)
        return model.to(device).eval(), ({"snapshot": snapshot} if snapshot is not None else {"checkpoint_epoch": loaded[2]})

    def snapshots(self) -> list[int]:
        folder = self.path / "snapshots"
        return sorted(int(p.stem[6:]) for p in folder.glob("epoch-*.safetensors")) if folder.is_dir() else []

    def summary(self) -> dict[str, Any]:
        metrics = self.metrics
        last = metrics[-1] if metrics else {}
        return {
            "path": str(self.path),
            "status": self.status,
            "epochs_done": last.get("epoch", 0),
            "epochs_planned": self.config.train.epochs,
            "last": {k: v for k, v in last.items() if k != "kl_per_dim"},
            "kl_per_dim": last.get("kl_per_dim"),
            "seconds": self.train_seconds(metrics),
            "checkpoints": self.checkpoints.epochs(),
            "snapshots": self.snapshots(),
        }


# --- writers used by the trainer -----------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """Where a run directory stands against a number of epochs: the one answer to "is this run done?".

    ``state``: "absent" (nothing trained yet), "finished", "failed", or the status file's own word for a run that
    stopped part-way ("running", "interrupted", "unknown"); ``epochs_done``: the newest checkpoint's epoch."""

    state: str
    epochs_done: int
    epochs: int

    @property
    def done(self) -> bool:
        """Finished, with at least the epochs asked for."""
        return self.state == "finished" and self.epochs_done >= self.epochs

    @property
    def settled(self) -> bool:
        """Nothing to train without being asked: done, or failed (a retry is a decision of its own)."""
        return self.done or self.state == "failed"


def run_progress(run_dir: str | os.PathLike, epochs: int) -> Progress:
    """Where the run at ``run_dir`` stands against ``epochs`` (see :class:`Progress`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        return Progress("absent", 0, epochs)
    done = CheckpointStore(run_dir / "checkpoints").epochs()
    return Progress(Run(run_dir).status.get("state", "unknown"), done[0] if done else 0, epochs)


def read_status(run_dir: Path) -> dict[str, Any]:
    """status.json of ``run_dir``; {"state": "unknown"} when it is missing or unreadable."""
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {"state": "unknown"}


def write_status(run_dir: Path, state: str, **fields: Any) -> None:
    atomic_write_json(run_dir / "status.json", {"state": state, "updated": time.time(), **fields})


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def write_snapshot(run_dir: Path, weights: dict[str, torch.Tensor], epoch: int) -> None:
    data = weights_bytes(weights)
    atomic_write_bytes(run_dir / "snapshots" / f"epoch-{epoch:06d}.safetensors", data)


def load_run(path: str | os.PathLike) -> Run:
    """Open a run directory."""
    return Run(path)
