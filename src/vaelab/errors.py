"""Errors a user can act on. The CLI prints them as one line and exits with status 2."""
import errno


class VaelabError(Exception):
    """A problem with the user's input or environment, described in one actionable line."""

    exit_code = 2


class ConfigError(VaelabError):
    """An invalid configuration value."""


class DataError(VaelabError):
    """A dataset that is missing, unknown or corrupt."""


class RunError(VaelabError):
    """A run directory that cannot be used as asked (exists, missing, locked, corrupt)."""


class StorageError(VaelabError):
    """A file could not be written (disk full, read-only or forbidden folder); nothing half-written is left."""

    @classmethod
    def from_os_error(cls, exc: OSError, path) -> "StorageError":
        reason = exc.strerror or str(exc)
        hint = {"ENOSPC": "free some space", "EROFS": "choose a writable --out", "EACCES": "choose a writable --out",
                "EPERM": "choose a writable --out", "EDQUOT": "free some space"}
        name = errno.errorcode.get(exc.errno or 0, "")
        fix = f"; {hint[name]} and run the same command again" if name in hint else ""
        return cls(f"cannot write {path}: {reason}{fix}")


class NotApplicable(RunError):
    """An analysis that does not apply to this model (e.g. geodesics of a deterministic encoder)."""


class TrainingDiverged(VaelabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3

    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(
            f"loss became {value} at epoch {epoch}, step {step}; training stopped "
            f"and the last good checkpoint is kept (lower --lr or check the data)"
        )

    def __reduce__(self):  # rebuilt from its own arguments when it crosses a process boundary (a study worker)
        return type(self), (self.epoch, self.step, self.value)


class RunInterrupted(VaelabError):
    """Ctrl-C or SIGTERM stopped training at a step boundary, after writing a checkpoint there."""

    exit_code = 130

    def __init__(self, run_dir, epoch: int, where: str | None = None):
        self.run_dir, self.epoch = run_dir, epoch
        at = where or f"epoch {epoch}"
        self.where = where
        super().__init__(f"interrupted; checkpoint written at {at}; continue with `vaelab resume {run_dir}`")

    def __reduce__(self):
        return type(self), (self.run_dir, self.epoch, self.where)
