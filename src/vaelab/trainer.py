"""The training loop: in-memory batches, Adam, checkpoints every epoch, exact resume, metrics.jsonl.

Randomness comes from one torch.Generator per run (batch order, binarization, reparameterisation noise) whose state
is saved in every checkpoint, so a resumed run ends with the same weights as an uninterrupted one.

One loop (:func:`fit`) trains M runs at once through a step function (vaelab.training_step): M = 1 with
:class:`~vaelab.training_step.SingleStep` for :func:`train`, M seeds stacked for vaelab.ensemble.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from vaelab import faults
from vaelab.allocator import release_freed_memory
from vaelab.config import RunConfig
from vaelab.data import Dataset, PixelSampler, load_dataset
from vaelab.errors import RunError, TrainingDiverged
from vaelab.fileio import remove_stale_temporaries
from vaelab.models import build_model
from vaelab.objectives import Objective
from vaelab.precision import choose_for_batch
from vaelab.runs import CheckpointStore, Run, write_metrics, write_snapshot, write_status
from vaelab.session import StopRequest, training_session
from vaelab.trace import Tracer
from vaelab.training_step import Member, NotVectorisable, SingleStep, StepFunction

KL_ACTIVE_THRESHOLD = 0.01  # nats; a latent dimension whose average KL exceeds this carries information
KL_VALUES_MAX_DIMS = 256  # the per-dimension KL vector is stored in full up to this many dimensions

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

    return tqdm(total=total, initial=done, unit="step", desc=desc, file=sys.stderr, dynamic_ncols=True)


def kl_summary(kl_per_dim: torch.Tensor) -> dict:
    """Summary of the test-set average KL per latent dimension (D,)."""
    kl = kl_per_dim.double().cpu()
    out = {
        "active": int((kl > KL_ACTIVE_THRESHOLD).sum()),
        "threshold": KL_ACTIVE_THRESHOLD,
        "against": "N(0, 1) per unit",  # whatever the model's prior (a mixture prior has no per-unit KL)
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


def train(config: RunConfig, out: str | os.PathLike = "runs", *, resume: bool = False, overwrite: bool = False,
          dataset: Dataset | None = None, progress: bool | None = None, log: Callable[[str], None] | None = None,
          precision_probe: dict | None = None) -> Run:
    """Train the model ``config`` describes into ``out/config.name`` and return the :class:`Run`.

    ``resume`` continues from the newest valid checkpoint (starting fresh if there is none). ``dataset``
    replaces the registry's data (same image shape). ``progress``: a bar (default: when stderr is a terminal).
    ``precision_probe``: what a study's ``auto`` probe measured when it chose ``config``'s precision (recorded in the
    run's first metrics row, as when the trainer probes itself).
    """
    run_dir = Path(out) / config.name
    with training_session([config], [run_dir], resume=resume, overwrite=overwrite) as stop:
        fit([config], [run_dir], dataset, progress, log, stop, SingleStep, precision_probe)
    return Run(run_dir)


def log_to_stderr(message: str) -> None:
    """The trainers' default ``log``."""
    print(message, file=sys.stderr)


def recover_run(run_dir: Path, log: Callable[[str], None]) -> None:
    """Finish or remove what a killed writer left in ``run_dir`` (hidden checkpoint folders, stale temporary files),
    each action logged; call under the run's lock, before its checkpoints are read."""
    for line in CheckpointStore(run_dir / "checkpoints").recover():
        log(f"{run_dir}: {line}")
    remove_stale_temporaries(run_dir)


def fit(configs: list[RunConfig], run_dirs: list[Path], dataset: Dataset | None, progress: bool | None, log,
        stop: StopRequest | None, step_function: Callable[[list[Member], Objective, int], StepFunction],
        precision_probe: dict | None = None, at_epoch: int | None = None) -> None:
    """Train the runs ``configs`` (equal but for their seeds; one for an ordinary run) into ``run_dirs``, each from
    its newest valid checkpoint (or from its checkpoint of ``at_epoch``; 0: from the start), with the step function
    ``step_function(members, objective, steps_left)`` builds (steps_left: the optimizer steps still to train).
    ``log``: where the lines go (default: stderr)."""
    log = log or log_to_stderr
    cfg0 = configs[0]
    device = resolve_device(cfg0.train.device)
    data = dataset if dataset is not None else load_dataset(cfg0.data.name, train_size=cfg0.data.train_size,
                                                            test_size=cfg0.data.test_size)
    members = [_load_member(c, d, device, tuple(data.image_shape), log, at_epoch) for c, d in zip(configs, run_dirs)]
    pixels = PixelSampler(cfg0.data.pixels, data.x_train.to(device), data.x_test.to(device), cfg0.data.binarize_seed)
    for member in members:
        if hasattr(member.model.likelihood, "assume_binary"):  # the pixel mode says it: no per-step check of the batch
            member.model.likelihood.assume_binary = pixels.binary
    objective = Objective(cfg0.objective)
    steps_left = (cfg0.train.epochs - members[0].start_epoch) * math.ceil(len(pixels.x_train) / cfg0.train.batch_size)
    step_fn = step_function(members, objective, steps_left)
    optimizer = make_optimizer(step_fn.trained, cfg0.train.lr)  # in the single-run parameter order
    if members[0].optimizer_state is not None:
        optimizer.load_state_dict(step_fn.stack_optimizer_states([m.optimizer_state for m in members]))
    precision, probe = resolve_precision(members, objective, pixels, log, precision_probe)
    y_test = None if data.y_test is None else data.y_test.to(device)  # (unlabelled data: no classes to trace by)
    _Loop(members, step_fn, optimizer, objective, pixels, y_test, progress, log, stop, precision, probe).run()


def resolve_precision(members: list[Member], objective: Objective, pixels: PixelSampler, log,
                      given_probe: dict | None = None) -> tuple[str, dict | None]:
    """The precision the runs train in, and the probe's numbers when ``auto`` measured it (now, or in the study that
    chose the config's precision: ``given_probe``). A run keeps the precision it started in, whatever the config
    says now (so a resumed run continues exactly); ``auto`` probes this machine once per model shape
    (vaelab.precision, cached) and checks that bf16 keeps the loss of one batch."""
    started = {m.precision for m in members if m.precision is not None}
    if len(started) > 1:
        raise NotVectorisable(f"the runs started in different precisions {sorted(started)}")
    if started:
        return started.pop(), None
    asked = members[0].config.train.precision
    if asked != "auto":
        return asked, given_probe

    choice = choose_for_batch(members[0].model, objective, pixels.test[:members[0].config.train.batch_size])
    if not choice.cached:  # (a cached choice is in the metrics only)
        log(f"precision auto: {choice.precision} ({choice.reason})")
    return choice.precision, choice.as_metrics()


def _load_member(config: RunConfig, run_dir: Path, device: torch.device, image_shape: tuple, log,
                 at_epoch: int | None = None) -> Member:
    """The run's model (initialised from its seed) and generator, continued from its newest valid checkpoint (or
    from that of ``at_epoch``, which the caller has verified)."""
    torch.manual_seed(config.train.seed)
    model = build_model(config).to(device)
    if image_shape != model.image_shape:
        raise RunError(f"dataset images are {image_shape} but the model expects {model.image_shape}")
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    member = Member(config, run_dir, CheckpointStore(run_dir / "checkpoints"), model, generator)
    recover_run(run_dir, log)
    if at_epoch == 0:  # (vaelab.ensemble.common_checkpoint: another member of its group has no checkpoint yet)
        log(f"{run_dir}: starts again from epoch 0 with its group (another member has no checkpoint yet)")
        return member
    had_checkpoints = bool(member.store.epochs())
    loaded = member.store.load(at_epoch, map_location=device, warn=lambda m: log(f"warning: {m}"))
    if loaded is None:
        if had_checkpoints:
            log(f"warning: no checkpoint of {run_dir} is intact; training starts again from epoch 0")
        return member
    weights, state, member.start_epoch = loaded
    model.load_state_dict(weights)
    member.generator_state = state["generator"].cpu()  # set_state takes a CPU ByteTensor on every device
    generator.set_state(member.generator_state)
    member.step, member.optimizer_state = int(state["step"]), state["optimizer"]
    member.history = json.loads(state["metrics_json"])  # the rows that match these weights, whatever metrics.jsonl says
    member.partial = state.get("partial")
    member.precision = state.get("precision", "bf16" if config.train.precision == "bf16" else "fp32")
    where = f"epoch {member.start_epoch}"
    if member.partial:
        where += f", step {member.step_in_epoch} of epoch {member.start_epoch + 1}"
    log(f"resuming {run_dir} from {where}")
    return member


class _Loop:
    """The training loop of M runs at one point of training: epochs of steps of ``step_fn``, under bf16 autocast
    when the config says so; after each epoch every run is evaluated, checkpointed and its metrics and status
    written. A stop (Ctrl-C, SIGTERM) checkpoints every run at the next step boundary and raises KeyboardInterrupt."""

    def __init__(self, members: list[Member], step_fn: StepFunction, optimizer: torch.optim.Optimizer,
                 objective: Objective, pixels: PixelSampler, y_test: torch.Tensor | None, progress: bool | None, log,
                 stop, precision: str = "fp32", probe: dict | None = None):
        self.members, self.step_fn, self.optimizer, self.objective = members, step_fn, optimizer, objective
        self.compile_recorded = False  # whether the metrics hold the compile probe (train.compile: auto)
        self.precision, self.probe = precision, probe  # probe: what auto measured, for the first metrics row
        self.pixels, self.log, self.stop = pixels, log, stop
        self.t_cfg, self.device = members[0].config.train, pixels.x_train.device
        self.m, self.step = len(members), members[0].step
        self.tag = {"vectorised": self.m} if self.m > 1 else {}  # vectorised runs say so in their status and metrics
        self.n_train = pixels.x_train.shape[0]
        self.batch = min(self.t_cfg.batch_size, self.n_train)
        self.steps_per_epoch = math.ceil(self.n_train / self.batch)
        name = members[0].config.name
        self.bar = step_bar(progress, self.t_cfg.epochs * self.steps_per_epoch, members[0].start_epoch *
                            self.steps_per_epoch, name if self.m == 1 else f"{self.m} runs of {name}")
        faulty = [k for k, member in enumerate(members) if faults.loss_fault(member.config.name)]
        # fault injection (tests/faults): (run, loss value, step) for the first run the fault applies to
        self.loss_fault = (faulty[0], *faults.loss_fault(members[faulty[0]].config.name)) if faulty else None
        self.tracer = None
        if self.t_cfg.trace_every:  # single runs only (vaelab.ensemble does not vectorise traced runs)

            self.tracer = Tracer(members[0].run_dir, pixels.test, y_test, self.t_cfg.trace_per_class, self.step)
            if self.step == 0:
                self.tracer.record(step_fn.models[0], 0, 0.0)

    def run(self) -> None:
        start_epoch = self.members[0].start_epoch
        for member in self.members:
            write_status(member.run_dir, "running", epoch=start_epoch, **self.tag)
            write_metrics(member.run_dir, member.history)
        for model in self.step_fn.models:
            model.train()
        for epoch in range(start_epoch + 1, self.t_cfg.epochs + 1):
            t0 = time.perf_counter()
            sums = self._train_epoch(epoch)
            self._end_epoch(epoch, sums, t0, time.perf_counter() - t0)
            if self.stop and epoch < self.t_cfg.epochs:  # stopped at an epoch boundary: this epoch's checkpoint
                raise KeyboardInterrupt
        if self.bar is not None:
            self.bar.close()
        for member in self.members:
            write_status(member.run_dir, "finished", epoch=self.t_cfg.epochs)

    def _train_epoch(self, epoch: int) -> torch.Tensor:
        """The steps of ``epoch`` (from where a run resumed inside it); returns each run's sums of bound, recon and
        KL over the epoch's examples (M, 3)."""
        members, steps, bf16 = self.members, self.steps_per_epoch, self.precision == "bf16"
        epoch_states, x_epochs, orders = _draw_epoch(members, self.pixels)
        generators = [member.generator for member in members]
        first_step = members[0].step_in_epoch  # above 0 when resumed inside this epoch
        sums = torch.zeros(self.m, 3, dtype=torch.float64, device=self.device)  # bound, recon, kl of each run
        if first_step:
            sums = torch.stack([member.partial["sums"] for member in members]).to(self.device)
        for member in members:
            member.partial = None
        for i in range(first_step, steps):
            x = _batch(self.pixels, x_epochs, orders, i, self.batch)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                losses, batch_sums = self.step_fn(x, generators, epoch - 1 + i / steps)
            self.step += 1
            if self.loss_fault is not None and self.step == self.loss_fault[2]:  # fault injection: a loss turns bad
                bad = torch.arange(self.m, device=self.device) == self.loss_fault[0]
                losses = torch.where(bad, losses * 0 + self.loss_fault[1], losses)
            if not torch.isfinite(losses).all():
                _diverged(members, losses, epoch, self.step)
            self.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # the runs are independent: each gets exactly its own gradient
            self.optimizer.step()
            faults.reached("step")
            if self.tracer is not None and self.step % self.t_cfg.trace_every == 0 and (
                    not self.t_cfg.trace_epochs or epoch <= self.t_cfg.trace_epochs):
                self.tracer.record(self.step_fn.models[0], self.step, epoch - 1 + (i + 1) / steps)
            sums += batch_sums
            if self.bar is not None:
                self.bar.update(1)
            if self.stop and i + 1 < steps:  # Ctrl-C / SIGTERM: checkpoint this step and stop
                self.step_fn.sync()
                self._save_checkpoints(epoch - 1, [{"step_in_epoch": i + 1, "epoch_generator": epoch_states[k],
                                                    "sums": sums[k].cpu().clone()} for k in range(self.m)])
                if isinstance(self.stop, StopRequest):
                    self.stop.where = f"step {i + 1} of {steps} in epoch {epoch}"
                raise KeyboardInterrupt
        return sums

    def _end_epoch(self, epoch: int, sums: torch.Tensor, t0: float, train_seconds: float) -> None:
        """Evaluate every run, append its metrics row and write its checkpoint, snapshot, metrics and status."""
        sums = sums.cpu() / self.n_train
        self.step_fn.sync()
        release_freed_memory()  # the steps' kept memory, before the evaluation's batches need theirs
        for k, member in enumerate(self.members):
            seed = member.config.train.seed * 1_000_003 + epoch
            eval_gen = torch.Generator(device=self.device).manual_seed(seed)
            member.history.append({
                "epoch": epoch, "step": self.step,
                "train_loss": -float(sums[k, 0]), "train_recon": float(sums[k, 1]), "train_kl": float(sums[k, 2]),
                "beta": self.objective.beta_at(epoch) if self.objective.weighs_kl else None,
                **evaluate(member.model, self.objective, self.pixels.test, self.t_cfg.eval_batch_size, eval_gen),
                "seconds": round((time.perf_counter() - t0) / self.m, 4),  # a vectorised run's share of the epoch
                "train_examples_per_s": round(self.m * self.n_train / train_seconds, 1),
                "precision": self.precision, **({"precision_probe": self.probe} if self.probe else {}),
                "compiled": self.step_fn.compiled,
                **({"compile_probe": self.step_fn.compile_probe}
                   if self.step_fn.compile_probe and not self.compile_recorded else {}),
                **self.tag,
            })
        release_freed_memory()
        self.probe = None  # recorded once, in the first row trained after it
        self.compile_recorded = self.compile_recorded or self.step_fn.compile_probe is not None
        self._save_checkpoints(epoch)
        for member in self.members:
            if self.t_cfg.snapshot_every and epoch % self.t_cfg.snapshot_every == 0:
                write_snapshot(member.run_dir, member.model.state_dict(), epoch)
            write_metrics(member.run_dir, member.history)
            write_status(member.run_dir, "running", epoch=epoch, **self.tag)
        if self.bar is not None:
            self.bar.set_postfix_str("test " + " ".join(f"{m.history[-1]['test_loss']:.2f}" for m in self.members))
        else:
            self.log(_epoch_line(self.members, self.t_cfg.epochs, time.perf_counter() - t0))

    def _save_checkpoints(self, epoch: int, partials: list[dict] | None = None) -> None:
        """Every run's checkpoint of ``epoch`` finished epochs (after step_fn.sync()); with its partial when it
        stopped inside epoch + 1: the step there, the epoch's generator state at its start and the sums so far."""
        state = self.optimizer.state_dict()
        for k, member in enumerate(self.members):
            checkpoint = {"optimizer": self.step_fn.member_optimizer_state(state, k),
                          "generator": member.generator.get_state(), "epoch": epoch, "step": self.step,
                          "metrics_json": json.dumps(member.history), "precision": self.precision}
            if partials is not None:
                checkpoint["partial"] = partials[k]
            member.store.save(member.model.state_dict(), checkpoint, epoch)
        if self.tracer is not None:
            self.tracer.save()


def _draw_epoch(members: list[Member], pixels: PixelSampler) -> tuple[list, list, list]:
    """Each run's generator state at the epoch start, training images (N, C, H, W) and batch order (N,), drawn from
    its generator as a run trained alone draws them. A run resumed inside this epoch redraws them from the epoch's
    saved state, then its generator continues from the checkpoint's state."""
    states, x_epochs, orders = [], [], []
    for member in members:
        g = member.generator
        if member.partial:
            g.set_state(member.partial["epoch_generator"].cpu())
        states.append(g.get_state())  # kept in a mid-epoch checkpoint, to redraw this epoch's batches
        x_epochs.append(pixels.train_epoch(g))
        orders.append(torch.randperm(pixels.x_train.shape[0], generator=g, device=pixels.x_train.device))
        if member.partial:
            g.set_state(member.generator_state)
    return states, x_epochs, orders


def _batch(pixels: PixelSampler, x_epochs: list[torch.Tensor], orders: list[torch.Tensor], i: int,
           batch: int) -> torch.Tensor:
    """Batch i of every run: (M, B, C, H, W)."""
    return pixels.batches(x_epochs, [order[i * batch:(i + 1) * batch] for order in orders])


def _diverged(members: list[Member], losses: torch.Tensor, epoch: int, step: int):
    """Mark the first run whose loss (of losses (M,)) is not finite failed and raise its TrainingDiverged, which
    names that run's directory in ``run_dir``."""
    k = int((~torch.isfinite(losses)).nonzero()[0])
    exc = TrainingDiverged(epoch, step, float(losses[k].detach()))
    write_status(members[k].run_dir, "failed", epoch=epoch, step=step, reason=str(exc))
    exc.run_dir = members[k].run_dir
    raise exc


def _epoch_line(members: list[Member], epochs: int, seconds: float) -> str:
    """The log line of a finished epoch: the run's numbers, or the test loss of each of M runs."""
    row = members[0].history[-1]
    if len(members) > 1:
        losses = " ".join(f"{member.history[-1]['test_loss']:.3f}" for member in members)
        return f"epoch {row['epoch']}/{epochs}  {len(members)} runs  test {losses}  ({seconds:.2f}s)"
    return (f"epoch {row['epoch']}/{epochs}  train {row['train_loss']:.3f}  test {row['test_loss']:.3f}  "
            f"recon {row['test_recon']:.3f}  kl {row['test_kl']:.3f}  ({row['seconds']:.2f}s)")


def resume(path: str | os.PathLike, epochs: int | None = None, **kwargs) -> Run:
    """Continue the run at ``path`` from its newest valid checkpoint (optionally to more ``epochs``)."""
    run = Run(path)
    config = run.config
    if epochs is not None:
        config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": epochs})})
    return train(config, out=run.path.parent, resume=True, **kwargs)
