"""Helpers of the fault-injection suite (tests/faults): vaelab as a separate process (so it can be killed), a reference run trained
without faults, and byte-level comparisons of what survives."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# A small digits run: 23 steps per epoch, 4 epochs, a few seconds including PyTorch's import.
TRAIN_ARGS = ["--dataset", "digits", "--arch", "64-32-4", "--epochs", "4", "--batch-size", "64", "--lr", "3e-3",
              "--no-progress"]
STEPS_PER_EPOCH = 23


def vaelab_env(**faults: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAELAB_FAULT")}
    env.update({"VAELAB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **faults})
    return env


def vaelab(*args, env: dict | None = None, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m vaelab ARGS`` to the end; stdout and stderr as text."""
    proc = subprocess.run([sys.executable, "-m", "vaelab", *map(str, args)], env=env or vaelab_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"vaelab {' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def _interactive_signals() -> None:
    """In the child: Ctrl-C as in a terminal, even when the test runner itself was started with SIGINT ignored (a
    background job of a non-interactive shell is)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _background_signals() -> None:
    """In the child: SIGINT ignored, as a non-interactive shell starts a background job (``vaelab study ... &``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start(*args, env: dict | None = None, ignore_sigint: bool = False) -> subprocess.Popen:
    """Start ``python -m vaelab ARGS`` in its own process group (so the group can be killed like a crashed machine);
    ``ignore_sigint``: as a script's background job, else as a terminal's foreground command."""
    return subprocess.Popen([sys.executable, "-m", "vaelab", *map(str, args)], env=env or vaelab_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_background_signals if ignore_sigint else _interactive_signals)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=120)


def wait_for(predicate, timeout: float = 120, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for a condition")
        time.sleep(interval)


def train(out: Path, name: str = "r", *extra, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    return vaelab("train", *TRAIN_ARGS, "--name", name, "--out", out, *extra, env=env, check=check)


def newest_checkpoint(run_dir: Path) -> Path:
    folders = sorted((run_dir / "checkpoints").glob("epoch-*"))
    assert folders, f"{run_dir} has no checkpoint"
    return folders[-1]


def final_weights(run_dir: Path) -> bytes:
    """The safetensors bytes of the newest checkpoint (safetensors serialises deterministically)."""
    return (newest_checkpoint(run_dir) / "weights.safetensors").read_bytes()


def losses(run_dir: Path) -> list[tuple]:
    """Per-epoch (epoch, step, train loss, test loss) from metrics.jsonl: everything but wall-clock times."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["step"], r["train_loss"], r["test_loss"]) for r in rows]


def hidden_leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a writer left behind (names starting with '.', except the run lock)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name != ".lock")


def one_line(stderr: str) -> str:
    """The error line of a failed command; asserts there is no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]
