"""Vectorised training: M runs that differ only in their seed, trained as one model.

The members' parameters are stacked along a new leading dimension and one step runs every member at once through
``torch.func.vmap`` over ``torch.func.functional_call`` (so linear layers become batched matrix products). Each
member keeps its own random generator and draws exactly what a separate run draws, in the same order: the epoch's
binarization and batch order, then the reparameterisation noise of every step (drawn outside vmap and passed in).
One fused Adam over the stacked tensors is M independent Adams, since Adam is element-wise. So a member follows the
same trajectory as a separate run, up to floating-point rounding of batched against single matrix products.

Every member writes an ordinary run directory (config, metrics, checkpoints with its own unstacked weights and Adam
state, snapshots, status); any of them can later be resumed, analysed or reported like a run trained alone.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vaelab import faults
from vaelab.config import RunConfig
from vaelab.data import Dataset, PixelSampler, load_dataset
from vaelab.errors import RunError, RunInterrupted, TrainingDiverged
from vaelab.models import build_model
from vaelab.objectives import Objective
from vaelab.runs import CheckpointStore, Run, RunLock, write_metrics, write_snapshot, write_status


class NotVectorisable(RunError):
    """These runs cannot (or can no longer) be trained together; train them one by one."""


def vectorise_reason(configs: list[RunConfig]) -> str | None:
    """None when ``configs`` can be trained as one vectorised model, else why not."""
    if len(configs) < 2:
        return "fewer than two runs"
    ref = configs[0].model_dump(mode="json")
    ref["name"] = None
    ref["train"]["seed"] = None
    for c in configs[1:]:
        d = c.model_dump(mode="json")
        d["name"] = None
        d["train"]["seed"] = None
        if d != ref:
            return "the runs differ in more than their seed"
    c = configs[0]
    if c.model.network != "mlp":
        return "only MLP networks are vectorised"
    if c.train.trace_every:
        return "traced runs are trained one by one"
    if c.train.precision != "fp32":
        return f"{c.train.precision} runs are trained one by one (the vectorised step has no autocast)"
    return None


class _ObjectiveOf(nn.Module):
    """model + objective as one module, so functional_call can swap in each member's parameters."""

    def __init__(self, model: nn.Module, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: torch.Tensor, eps: torch.Tensor, progress: float):
        terms = self.objective(self.model, x, eps, progress)
        return terms.bound, terms.recon, terms.kl


def _noise_shape(config: RunConfig, batch: int, latent_dim: int) -> tuple[int, ...] | None:
    """The standard normal noise one training step draws (None: the deterministic objective draws nothing)."""
    if config.objective.name == "deterministic" or config.model.posterior == "deterministic":
        return None
    return (config.objective.samples, batch, latent_dim)


def train_ensemble(configs: list[RunConfig], out: str | Path = "runs", *, dataset: Dataset | None = None,
                   progress: bool | None = None, log: Callable[[str], None] | None = None) -> list[Run]:
    """Train ``configs`` (equal but for their seeds) together; returns their Runs.

    Raises NotVectorisable when they cannot be (different configs, or members at different points of training);
    the caller then trains them one by one with :func:`vaelab.trainer.train`, which resumes each from its checkpoint."""
    from vaelab.trainer import _prepare_run_dir, _stop_on_signals

    reason = vectorise_reason(configs)
    if reason:
        raise NotVectorisable(reason)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    run_dirs = [Path(out) / c.name for c in configs]
    with contextlib.ExitStack() as stack:
        for d in run_dirs:
            stack.enter_context(RunLock(d))
        stop = stack.enter_context(_stop_on_signals())
        for c, d in zip(configs, run_dirs):
            _prepare_run_dir(c, d, resume=True, overwrite=False)
        try:
            _train_locked(configs, run_dirs, dataset, progress, log, stop)
        except KeyboardInterrupt:
            for d in run_dirs:
                last = CheckpointStore(d / "checkpoints").epochs()
                write_status(d, "interrupted", epoch=last[0] if last else 0)
            raise RunInterrupted(run_dirs[0].parent, 0, "the last finished epoch of each run") from None
    return [Run(d) for d in run_dirs]


def _train_locked(configs, run_dirs, dataset, progress, log, stop) -> None:
    from vaelab.trainer import evaluate, make_optimizer, resolve_device, step_bar

    cfg0, m = configs[0], len(configs)
    t_cfg = cfg0.train
    device = resolve_device(t_cfg.device)
    data = dataset if dataset is not None else load_dataset(cfg0.data.name, train_size=cfg0.data.train_size,
                                                            test_size=cfg0.data.test_size)
    pixels = PixelSampler(cfg0.data.pixels, data.x_train.to(device), data.x_test.to(device), cfg0.data.binarize_seed)
    models, generators, stores, histories, starts, steps = [], [], [], [], [], []
    for c, d in zip(configs, run_dirs):
        torch.manual_seed(c.train.seed)
        model = build_model(c).to(device)
        g = torch.Generator(device=device).manual_seed(c.train.seed)
        store = CheckpointStore(d / "checkpoints")
        for line in store.recover():  # what a killed writer left behind
            log(f"{d}: {line}")
        loaded = store.load(map_location=device, warn=lambda msg: log(f"warning: {msg}"))
        history, start, step, opt_state = [], 0, 0, None
        if loaded is not None:
            weights, state, start = loaded
            if state.get("partial"):
                raise NotVectorisable(f"{d} stopped inside an epoch")
            model.load_state_dict(weights)
            g.set_state(state["generator"].cpu())
            step, history, opt_state = int(state["step"]), json.loads(state["metrics_json"]), state["optimizer"]
        models.append((model, opt_state))
        generators.append(g)
        stores.append(store)
        histories.append(history)
        starts.append(start)
        steps.append(step)
    if len(set(starts)) != 1:
        raise NotVectorisable(f"the runs are at different epochs {sorted(set(starts))}")
    start_epoch, step = starts[0], steps[0]

    template = models[0][0]
    likelihood = template.likelihood
    if hasattr(likelihood, "assume_binary"):
        likelihood.assume_binary = pixels.binary
    objective = Objective(cfg0.objective)
    wrapper = _ObjectiveOf(template, objective)
    # each member's parameters by the wrapper's names, looked up once (also the targets of unstacking each epoch)
    member_params = [dict(_ObjectiveOf(mm, objective).named_parameters()) for mm, _ in models]
    member_buffers = [dict(_ObjectiveOf(mm, objective).named_buffers()) for mm, _ in models]
    names = list(member_params[0])
    # Linear weights (out, in) are stored transposed, (M, in, out): the batched matrix products then write their
    # weight gradients straight into the parameter's layout (stored as (M, out, in), every step paid two strided
    # copies of the gradient, about a third of the step). Adam is element-wise, so the layout changes nothing else.
    flip = [member_params[0][n].dim() == 2 for n in names]
    stacked = nn.ParameterList([nn.Parameter(torch.stack([_layout(mp[n].detach(), f) for mp in member_params]).contiguous())
                                for n, f in zip(names, flip)])
    buffers = {n: torch.stack([mb[n] for mb in member_buffers]) for n in member_buffers[0]}
    optimizer = make_optimizer(stacked, t_cfg.lr)  # in the single-run parameter order
    if models[0][1] is not None:
        optimizer.load_state_dict(_stack_optimizer_states([s for _, s in models], flip))
    for d, h in zip(run_dirs, histories):
        write_status(d, "running", epoch=start_epoch, vectorised=m)
        write_metrics(d, h)

    def member_terms(p, b, x, eps, progress_epochs):
        return torch.func.functional_call(wrapper, (p, b), (x, eps, progress_epochs))

    batched = torch.func.vmap(member_terms, in_dims=(0, 0, 0, 0, None), randomness="error")
    n_train = pixels.x_train.shape[0]
    batch = min(t_cfg.batch_size, n_train)
    steps_per_epoch = math.ceil(n_train / batch)
    bar = step_bar(progress, t_cfg.epochs * steps_per_epoch, start_epoch * steps_per_epoch, f"{m} runs of {cfg0.name}")
    latent_dim = template.latent_dim
    faulty = [i for i, c in enumerate(configs) if faults.loss_fault(c.name)]
    loss_fault = faults.loss_fault(configs[faulty[0]].name) if faulty else None
    for epoch in range(start_epoch + 1, t_cfg.epochs + 1):
        t0 = time.perf_counter()
        x_epochs, orders = [], []
        for g in generators:  # each member's binarization and order, drawn as a separate run draws them
            x_epochs.append(pixels.train_epoch(g))
            orders.append(torch.randperm(n_train, generator=g, device=device))
        sums = torch.zeros(m, 3, dtype=torch.float64, device=device)
        for i in range(steps_per_epoch):
            x = torch.stack([xe[o[i * batch:(i + 1) * batch]] for xe, o in zip(x_epochs, orders)])  # (M, B, C, H, W)
            shape = _noise_shape(cfg0, x.shape[1], latent_dim)
            eps = (torch.stack([torch.randn(shape, generator=g, device=device) for g in generators]) if shape
                   else torch.zeros(m, 1, device=device))
            params = {n: (p.transpose(1, 2) if f else p) for n, p, f in zip(names, stacked, flip)}  # views
            bound, recon, kl = batched(params, buffers, x, eps, epoch - 1 + i / steps_per_epoch)
            losses = -bound.mean(-1)  # (M,)
            step += 1
            if loss_fault is not None and step == loss_fault[1]:  # fault injection: one member's loss turns bad
                losses = losses + torch.tensor([loss_fault[0] if i == faulty[0] else 0.0 for i in range(m)], device=device)
            if not torch.isfinite(losses).all():
                bad = int((~torch.isfinite(losses)).nonzero()[0])
                exc = TrainingDiverged(epoch, step, float(losses[bad].detach()))
                write_status(run_dirs[bad], "failed", epoch=epoch, step=step, reason=str(exc))
                raise NotVectorisable(f"{run_dirs[bad].name} diverged ({exc}); train the others one by one")
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # members are independent: each gets exactly its own gradient
            optimizer.step()
            faults.reached("step")
            with torch.no_grad():
                sums += torch.stack([bound.sum(-1), recon.sum(-1), kl.sum(-1)], 1).double()
            if bar is not None:
                bar.update(1)
        train_seconds = time.perf_counter() - t0
        sums = sums.cpu() / n_train
        opt_sd = optimizer.state_dict()
        for k, (c, d) in enumerate(zip(configs, run_dirs)):
            model = models[k][0]
            with torch.no_grad():
                for n, p, f in zip(names, stacked, flip):
                    member_params[k][n].copy_(_layout(p[k], f))
            eval_gen = torch.Generator(device=device).manual_seed(c.train.seed * 1_000_003 + epoch)
            row = {"epoch": epoch, "step": step, "train_loss": -float(sums[k, 0]), "train_recon": float(sums[k, 1]),
                   "train_kl": float(sums[k, 2]), "beta": objective.beta_at(epoch) if objective.name == "elbo" else None,
                   **evaluate(model, objective, pixels.test, t_cfg.eval_batch_size, eval_gen),
                   "seconds": round((time.perf_counter() - t0) / m, 4),
                   "train_examples_per_s": round(m * n_train / train_seconds, 1), "vectorised": m}
            histories[k].append(row)
            state = {"optimizer": _member_optimizer_state(opt_sd, k, flip), "generator": generators[k].get_state(),
                     "epoch": epoch, "step": step, "metrics_json": json.dumps(histories[k])}
            stores[k].save(model.state_dict(), state, epoch)
            if t_cfg.snapshot_every and epoch % t_cfg.snapshot_every == 0:
                write_snapshot(d, model.state_dict(), epoch)
            write_metrics(d, histories[k])
            write_status(d, "running", epoch=epoch, vectorised=m)
        if bar is None:
            log(f"epoch {epoch}/{t_cfg.epochs}  {m} runs  test " + " ".join(f"{h[-1]['test_loss']:.3f}" for h in histories)
                + f"  ({time.perf_counter() - t0:.2f}s)")
        if stop and epoch < t_cfg.epochs:
            raise KeyboardInterrupt
    if bar is not None:
        bar.close()
    for d in run_dirs:
        write_status(d, "finished", epoch=t_cfg.epochs)


def _layout(t: torch.Tensor, flip: bool) -> torch.Tensor:
    """A member's weight (out, in) <-> its slice of the stacked parameter (in, out); other tensors as they are."""
    return t.T if flip else t


def _member_optimizer_state(stacked_state: dict, k: int, flip: list[bool]) -> dict:
    """The Adam state of member k, in the format a single run's optimizer has (same parameter order and layout)."""
    state = {}
    for p, st in stacked_state["state"].items():
        state[p] = {key: (v.clone() if key == "step" else _layout(v[k], flip[p]).contiguous().clone())
                    for key, v in st.items()}
    return {"state": state, "param_groups": [dict(g) for g in stacked_state["param_groups"]]}


def _stack_optimizer_states(states: list[dict], flip: list[bool]) -> dict:
    """Members' single-run Adam states -> the stacked optimizer's state (their step counts are equal)."""
    stacked = {}
    for p, st in states[0]["state"].items():
        stacked[p] = {key: (v if key == "step" else torch.stack([_layout(s["state"][p][key], flip[p])
                                                                 for s in states]).contiguous())
                      for key, v in st.items()}
    return {"state": stacked, "param_groups": states[0]["param_groups"]}
