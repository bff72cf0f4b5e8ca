"""The training loop: in-memory batches, Adam, checkpoints every epoch, exact resume, metrics.jsonl.

Randomness comes from one torch.Generator (batch order, binarization, reparameterisation noise) whose state is
saved in every checkpoint, so a resumed run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from vaelab import faults
from vaelab.config import RunConfig
from vaelab.data import Dataset, PixelSampler, load_dataset
from vaelab.errors import RunError, RunInterrupted, TrainingDiverged
from vaelab.fileio import atomic_write_text, remove_stale_temporaries
from vaelab.models import build_model
from vaelab.objectives import Objective
from vaelab.runs import CheckpointStore, Run, RunLock, write_metrics, write_snapshot, write_status

KL_ACTIVE_THRESHOLD = 0.01  # nats; a latent dimension whose average KL exceeds this carries information
KL_VALUES_MAX_DIMS = 256  # the per-dimension KL vector is stored in full up to this many dimensions

# Config fields that may change when a run is resumed (more epochs, another device); anything else may not.
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "device"), ("train", "eval_batch_size"), ("train", "snapshot_every"),
                     ("train", "trace_epochs")}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("device 'cuda' was asked for but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam with PyTorch's fused kernel (one pass over all parameters; ~20% faster per MNIST epoch on CPU than
    the per-parameter loop, see benchmarks/README.md), falling back to the plain loop where it is unsupported."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def step_bar(progress: bool | None, total: int, done: int, desc: str):
    """A tqdm bar over optimiser steps on stderr (default: when stderr is a terminal), or None."""
    if not (sys.stderr.isatty() if progress is None else progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="step", desc=desc, file=sys.stderr, dynamic_ncols=True)


def kl_summary(kl_per_dim: torch.Tensor) -> dict:
    """Summary of the test-set average KL per latent dimension (D,)."""
    kl = kl_per_dim.double().cpu()
    out = {
        "active": int((kl > KL_ACTIVE_THRESHOLD).sum()),
        "threshold": KL_ACTIVE_THRESHOLD,
        "dims": kl.numel(),
        "min": float(kl.min()),
        "median": float(kl.median()),
        "max": float(kl.max()),
        "total": float(kl.sum()),
    }
    if kl.numel() <= KL_VALUES_MAX_DIMS:
        out["values"] = [round(float(v), 6) for v in kl]
    return out


@torch.no_grad()
def evaluate(model, objective: Objective, x: torch.Tensor, batch_size: int, generator: torch.Generator) -> dict:
    """Test-set averages of the objective's bound, reconstruction term, KL and KL per dimension."""
    model.eval()
    sums = {"bound": 0.0, "recon": 0.0, "kl": 0.0}
    kl_dims = None
    for i in range(0, x.shape[0], batch_size):
        terms = objective(model, x[i:i + batch_size], generator)
        sums["bound"] += float(terms.bound.sum())
        sums["recon"] += float(terms.recon.sum())
        sums["kl"] += float(terms.kl.sum())
        if not terms.posterior.deterministic:
            batch_kl = terms.posterior.kl_per_dim().sum(0)
            kl_dims = batch_kl if kl_dims is None else kl_dims + batch_kl
    model.train()
    n = x.shape[0]
    out = {"test_loss": -sums["bound"] / n, "test_recon": sums["recon"] / n, "test_kl": sums["kl"] / n}
    if kl_dims is not None:
        out["kl_per_dim"] = kl_summary(kl_dims / n)
    return out


def _config_changes(old: RunConfig, new: RunConfig) -> list[str]:
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
def _stop_on_signals():
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


def _prepare_run_dir(config: RunConfig, run_dir: Path, resume: bool, overwrite: bool) -> None:
    existing = run_dir / "config.yaml"
    if existing.exists() and not resume:
        if not overwrite:
            state = Run(run_dir).status.get("state", "unknown")
            raise RunError(f"run {run_dir} already exists ({state}); use --resume to continue it, --overwrite to start "
                           "again, or choose another --name")
        for child in run_dir.iterdir():
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    if existing.exists() and resume:
        done = CheckpointStore(run_dir / "checkpoints").epochs()
        if done and done[0] > config.train.epochs:
            raise RunError(f"cannot resume {run_dir} to {config.train.epochs} epochs: {done[0]} are already done; "
                           f"give --epochs above {done[0]} to train further")
        changes = _config_changes(RunConfig.load(existing), config)
        if changes:
            raise RunError(f"cannot resume {run_dir} with a different config ({changes[0]}); only train.epochs, "
                           "train.device, train.eval_batch_size and train.snapshot_every may change")
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())


def train(config: RunConfig, out: str | os.PathLike = "runs", *, resume: bool = False, overwrite: bool = False,
          dataset: Dataset | None = None, progress: bool | None = None, log: Callable[[str], None] | None = None) -> Run:
    """Train the model ``config`` describes into ``out/config.name`` and return the :class:`Run`.

    ``resume`` continues from the newest valid checkpoint (starting fresh if there is none). ``dataset``
    replaces the registry's data (same image shape). ``progress``: a bar (default: when stderr is a terminal).
    """
    run_dir = Path(out) / config.name
    log = log or (lambda msg: print(msg, file=sys.stderr))
    with RunLock(run_dir), _stop_on_signals() as stop:
        _prepare_run_dir(config, run_dir, resume, overwrite)
        try:
            _train_locked(config, run_dir, dataset, progress, log, stop)
        except KeyboardInterrupt:
            last = CheckpointStore(run_dir / "checkpoints").epochs()
            write_status(run_dir, "interrupted", epoch=last[0] if last else 0, at=stop.where)
            raise RunInterrupted(run_dir, last[0] if last else 0, stop.where) from None
        except TrainingDiverged as exc:
            write_status(run_dir, "failed", epoch=exc.epoch, step=exc.step, reason=str(exc))
            raise
    return Run(run_dir)


def _train_locked(config: RunConfig, run_dir: Path, dataset: Dataset | None, progress: bool | None, log,
                  stop: StopRequest | None = None) -> None:
    t_cfg = config.train
    device = resolve_device(t_cfg.device)
    data = dataset if dataset is not None else load_dataset(config.data.name, train_size=config.data.train_size,
                                                            test_size=config.data.test_size)
    torch.manual_seed(t_cfg.seed)
    model = build_model(config).to(device)
    if tuple(data.image_shape) != model.image_shape:
        raise RunError(f"dataset images are {tuple(data.image_shape)} but the model expects {model.image_shape}")
    pixels = PixelSampler(config.data.pixels, data.x_train.to(device), data.x_test.to(device), config.data.binarize_seed)
    if hasattr(model.likelihood, "assume_binary"):  # the pixel mode says it: no per-step check of the batch
        model.likelihood.assume_binary = pixels.binary
    objective = Objective(config.objective)
    optimizer = make_optimizer(model, t_cfg.lr)
    generator = torch.Generator(device=device).manual_seed(t_cfg.seed)
    store = CheckpointStore(run_dir / "checkpoints")

    for line in store.recover():  # what a killed writer left behind
        log(f"{run_dir}: {line}")
    remove_stale_temporaries(run_dir)
    start_epoch, step, history, partial = 0, 0, [], None
    had_checkpoints = bool(store.epochs())
    loaded = store.load(map_location=device, warn=lambda m: log(f"warning: {m}"))
    if loaded is None and had_checkpoints:
        log(f"warning: no checkpoint of {run_dir} is intact; training starts again from epoch 0")
    if loaded is not None:
        weights, state, start_epoch = loaded
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())  # set_state takes a CPU ByteTensor on every device
        step = int(state["step"])
        history = json.loads(state["metrics_json"])  # the rows that match these weights, whatever metrics.jsonl says
        partial = state.get("partial")  # set when the run stopped inside epoch start_epoch + 1
        where = f"epoch {start_epoch}" + (f", step {partial['step_in_epoch']} of epoch {start_epoch + 1}" if partial else "")
        log(f"resuming {run_dir} from {where}")
    write_status(run_dir, "running", epoch=start_epoch)
    write_metrics(run_dir, history)

    n_train = pixels.x_train.shape[0]
    batch = min(t_cfg.batch_size, n_train)
    steps_per_epoch = math.ceil(n_train / batch)
    bar = step_bar(progress, t_cfg.epochs * steps_per_epoch, start_epoch * steps_per_epoch, config.name)
    loss_fault = faults.loss_fault(config.name)
    bf16 = t_cfg.precision == "bf16"
    tracer = None
    if t_cfg.trace_every:
        from vaelab.trace import Tracer

        tracer = Tracer(run_dir, pixels.test, data.y_test.to(device), t_cfg.trace_per_class, step)
        if step == 0:
            tracer.record(model, 0, 0.0)
    model.train()
    for epoch in range(start_epoch + 1, t_cfg.epochs + 1):
        t0 = time.perf_counter()
        epoch_generator = generator.get_state()  # kept in a mid-epoch checkpoint, to redraw this epoch's batches
        first_step = 0
        if partial is not None:  # continue inside the epoch: same binarization and order, then the saved RNG
            generator.set_state(partial["epoch_generator"].cpu())
            epoch_generator = generator.get_state()
        x_epoch = pixels.train_epoch(generator)
        order = torch.randperm(n_train, generator=generator, device=device)
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # bound, recon, kl
        if partial is not None:
            generator.set_state(state["generator"].cpu())
            first_step, sums = int(partial["step_in_epoch"]), partial["sums"].to(device)
            partial = None
        for i in range(first_step, steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            x = x_epoch[idx]
            progress_epochs = epoch - 1 + i / steps_per_epoch
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                terms = objective(model, x, generator, progress_epochs)
            loss = terms.loss
            step += 1
            if loss_fault is not None and step == loss_fault[1]:
                loss = loss * 0 + loss_fault[0]
            if not torch.isfinite(loss):
                raise TrainingDiverged(epoch, step, float(loss.detach()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            faults.reached("step")
            if tracer is not None and step % t_cfg.trace_every == 0 and (not t_cfg.trace_epochs or epoch <= t_cfg.trace_epochs):
                tracer.record(model, step, epoch - 1 + (i + 1) / steps_per_epoch)
            with torch.no_grad():
                sums += torch.stack([terms.bound.sum(), terms.recon.sum(), terms.kl.sum()]).double()
            if bar is not None:
                bar.update(1)
            if stop and i + 1 < steps_per_epoch:  # Ctrl-C / SIGTERM: checkpoint this step and stop
                mid = {"optimizer": optimizer.state_dict(), "generator": generator.get_state(), "epoch": epoch - 1,
                       "step": step, "metrics_json": json.dumps(history),
                       "partial": {"step_in_epoch": i + 1, "epoch_generator": epoch_generator, "sums": sums.cpu()}}
                store.save(model.state_dict(), mid, epoch - 1)
                if tracer is not None:
                    tracer.save()
                if isinstance(stop, StopRequest):
                    stop.where = f"step {i + 1} of {steps_per_epoch} in epoch {epoch}"
                raise KeyboardInterrupt
        train_seconds = time.perf_counter() - t0
        sums = sums.cpu() / n_train
        eval_gen = torch.Generator(device=device).manual_seed(t_cfg.seed * 1_000_003 + epoch)
        row = {
            "epoch": epoch, "step": step,
            "train_loss": -float(sums[0]), "train_recon": float(sums[1]), "train_kl": float(sums[2]),
            "beta": objective.beta_at(epoch) if objective.name == "elbo" else None,
            **evaluate(model, objective, pixels.test, t_cfg.eval_batch_size, eval_gen),
            "seconds": round(time.perf_counter() - t0, 4),
            "train_examples_per_s": round(n_train / train_seconds, 1),
        }
        history.append(row)
        state = {"optimizer": optimizer.state_dict(), "generator": generator.get_state(), "epoch": epoch, "step": step,
                 "metrics_json": json.dumps(history)}
        store.save(model.state_dict(), state, epoch)
        if tracer is not None:
            tracer.save()
        if t_cfg.snapshot_every and epoch % t_cfg.snapshot_every == 0:
            write_snapshot(run_dir, model.state_dict(), epoch)
        write_metrics(run_dir, history)
        write_status(run_dir, "running", epoch=epoch)
        line = (f"epoch {epoch}/{t_cfg.epochs}  train {row['train_loss']:.3f}  test {row['test_loss']:.3f}  "
                f"recon {row['test_recon']:.3f}  kl {row['test_kl']:.3f}  ({row['seconds']:.2f}s)")
        if bar is not None:
            bar.set_postfix_str(f"test {row['test_loss']:.2f}")
        else:
            log(line)
        if stop and epoch < t_cfg.epochs:  # stopped at an epoch boundary: this epoch's checkpoint is the one
            raise KeyboardInterrupt
    if bar is not None:
        bar.close()
    write_status(run_dir, "finished", epoch=t_cfg.epochs)


def resume(path: str | os.PathLike, epochs: int | None = None, **kwargs) -> Run:
    """Continue the run at ``path`` from its newest valid checkpoint (optionally to more ``epochs``)."""
    run = Run(path)
    config = run.config
    if epochs is not None:
        config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": epochs})})
    return train(config, out=run.path.parent, resume=True, **kwargs)
