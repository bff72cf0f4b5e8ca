"""What the training loop (vaelab.trainer) trains: its runs (:class:`Member`) and their step function.

The loop trains M runs at once (M = 1 for an ordinary run, M seeds for vectorised ones, vaelab.ensemble). A step
function owns how their parameters are trained (the model itself, or the members' parameters stacked) and computes
one step's losses; everything else (epochs, batches, precision, optimizer, checkpoints, metrics, stops) is the loop's.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from vaelab.config import RunConfig
from vaelab.cpu import cpu_signature
from vaelab.errors import RunError
from vaelab.objectives import Objective
from vaelab.precision import (alternating_rounds, contradicts, how_decided, is_decision, read_machine_cache, warm_up,
                              write_machine_cache)
from vaelab.runs import CheckpointStore
from vaelab.timing import when_and_load


class NotVectorisable(RunError):
    """These runs cannot (or can no longer) be trained together; train them one by one."""


@dataclass
class Member:
    """One run the loop trains, as loaded from its newest checkpoint (or fresh)."""

    config: RunConfig
    run_dir: Path
    store: CheckpointStore
    model: nn.Module  # the run's own module; current after StepFunction.sync()
    generator: torch.Generator  # binarization, batch order and reparameterisation noise, in that order each epoch
    start_epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics rows up to start_epoch
    optimizer_state: dict | None = None  # the run's Adam state in a single run's format
    partial: dict | None = None  # set when the run stopped inside epoch start_epoch + 1 (see the loop's checkpoints)
    generator_state: torch.Tensor | None = None  # the checkpoint's generator state (to continue inside an epoch)
    precision: str | None = None  # what the run trained in so far ("fp32" or "bf16"; None when it has not started)

    @property
    def step_in_epoch(self) -> int:
        return int(self.partial["step_in_epoch"]) if self.partial else 0


class StepFunction(Protocol):
    """How the loop trains M members: the parameters its optimizer updates, and one step's losses. Built by the
    loop as ``step_function(members, objective, steps_left)`` once the members are loaded."""

    models: list[nn.Module]  # each member's own module, in the single-run layout
    trained: nn.Module  # the parameters the optimizer updates (the model itself, or the stacked members)
    compiled: bool  # whether the steps run as a torch.compile'd graph (recorded in the metrics)
    compile_probe: dict | None  # what train.compile: auto measured, once it has decided

    def __call__(self, x: torch.Tensor, generators: list[torch.Generator],
                 progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch x (M, B, C, H, W) -> each member's loss (M,) and its batch sums of bound, recon and KL (M, 3),
        float64, detached. Member k's noise comes from generators[k]; progress is the fractional epoch."""

    def sync(self) -> None:
        """Copy the trained parameters into ``models`` (before they are evaluated or saved)."""

    def member_optimizer_state(self, state: dict, k: int) -> dict:
        """Member k's part of the optimizer's state_dict ``state``, in a single run's format."""

    def stack_optimizer_states(self, states: list[dict]) -> dict:
        """The members' single-run optimizer states -> the optimizer's state_dict (the inverse of the above)."""


def noise_shape(config: RunConfig, batch: int, latent_dim: int) -> tuple[int, ...] | None:
    """The standard normal noise one training step draws (None: the deterministic objective draws nothing)."""
    if config.objective.name == "deterministic" or config.model.posterior == "deterministic":
        return None
    return (config.objective.samples, batch, latent_dim)


# train.compile: auto (SingleStep._probe, at the run's first step, on its first batch). It times the eager step
# (forward and backward of the loss, warm-up calls until two successive ones agree, at most PROBE_STEPS); with at
# least AUTO_WORTH_S seconds of such steps left (a 10% faster step then pays back about 10 s of compiling) it
# compiles and times eager against compiled steps in alternating rounds (vaelab.precision.alternating_rounds), for
# at most PROBE_SHARE of those seconds while undecided: compiled is kept when the interval on the median of the
# rounds' ratios eager / compiled lies above COMPILE_MIN_SPEEDUP, eager when below; undecided, the run goes on eagerly
# and nothing is cached. These probe steps train nothing (their gradients are dropped, their noise is their own),
# so the run trains as it would have without them.
# A decision is cached per machine and step (data_root()/compile.json, COMPILE_CACHE) with when, under what load and
# with what interval it was taken: every later run of the same step here makes it from its first step, so reruns
# give the same numbers (compiled and eager steps round differently). Such a run re-checks it first: a cached
# "compiled" with one short alternating round (probed afresh when it finds compiled clearly slower, see
# vaelab.precision.contradicts); a cached "eager" against its own record, since checking it by compiling would cost
# what the choice saves: it is probed afresh when the eager step now runs RECORD_DRIFT times faster than it did then
# (a decision taken under a load since gone).
PROBE_STEPS = 10
SHORTEST_PROBED = 6  # runs with fewer than 6 x PROBE_STEPS = 60 steps left train eagerly, unprobed (as before)
AUTO_WORTH_S = 100.0
COMPILE_CACHE = "compile"
COMPILE_MIN_SPEEDUP = 1.05  # compiled steps must be this much faster to be worth their rounding and compile time
PROBE_SHARE = 0.02  # of the eager steps' time left: the longest the rounds go on while undecided (after the first 8)
RECORD_DRIFT = 2.0


class SingleStep:
    """The step function of one run (M = 1): the objective on the model itself, its noise drawn before it from the
    run's generator (what the objective would draw itself, so runs continue exactly across versions).

    Compiled (``train.compile``: on, or auto where it measures faster), the objective and, through AOTAutograd, its
    backward run as torch.compile'd graphs in which inductor fuses the element-wise work around the matrix products
    (casts, activations, the reparameterisation, the log densities and their gradients). A step's time is the interval
    between successive calls (backward and optimizer included). If compiling fails (no C++ compiler, an operation
    inductor cannot lower) the run warns once and goes on eagerly."""

    def __init__(self, members: list[Member], objective: Objective, steps_left: int = 0):
        (member,) = members
        self.models, self.trained, self.objective = [member.model], member.model, objective
        self.config, self.latent_dim = member.config, member.model.latent_dim
        self.mode, self.steps_left = member.config.train.compile, steps_left
        self.graph = self._compile() if self.mode == "on" else None
        self.compile_probe: dict | None = None  # what auto measured (recorded in the next metrics row)

    @property
    def compiled(self) -> bool:
        return self.graph is not None

    def _compile(self):
        return torch.compile(self._terms, dynamic=False)

    def _terms(self, x: torch.Tensor, eps: torch.Tensor | None, beta):
        """x (B, C, H, W), noise (K, B, D), beta -> the loss and the batch sums of bound, recon and KL (3,)."""
        terms = self.objective.bound(self.trained, x, self.objective.config, beta, eps)
        return terms.loss, torch.stack([terms.bound.sum(), terms.recon.sum(), terms.kl.sum()])

    def __call__(self, x, generators, progress):
        if self.mode == "auto" and self.compile_probe is None:
            self._probe(x, self.objective.beta_at(progress))
        shape = noise_shape(self.config, x.shape[1], self.latent_dim)
        eps = torch.randn(shape, generator=generators[0], device=x.device) if shape else None
        beta = self.objective.beta_at(progress)
        if self.graph is None:
            loss, sums = self._terms(x[0], eps, beta)
        else:
            try:  # beta as a tensor: a changing Python float would recompile the graph every step of a warm-up
                loss, sums = self.graph(x[0], eps, torch.tensor(beta, device=x.device))
            except Exception as exc:  # torch.compile's own failures fall back to eager; any other error is re-raised
                self._compile_failed(exc)
                loss, sums = self._terms(x[0], eps, beta)
        return loss.reshape(1), sums.detach().double().reshape(1, 3)

    def _compile_failed(self, exc: Exception) -> None:
        """After ``exc`` from the compiled graph: torch.compile's own failures warn and leave the run eager; any
        other error is re-raised."""
        if not type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise exc
        warnings.warn(f"{self.config.name}: torch.compile failed ({type(exc).__name__}: "
                      f"{str(exc).strip().splitlines()[0][:200]}); training on without it", stacklevel=3)
        self.graph, self.mode = None, "off"

    def _cache_key(self, x: torch.Tensor) -> tuple[str, dict]:
        """What a step's speed depends on (the machine, device, precision, batch shape, model, objective, pixels):
        its hash, the cache's key, and a description of the step for ``vaelab doctor``."""
        device = x.device.type
        precision = str(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else "fp32"
        machine = torch.cuda.get_device_name(x.device) if device == "cuda" else cpu_signature()
        parts = [machine, device, precision, list(x.shape[1:]), self.config.model.model_dump(mode="json"),
                 self.config.objective.model_dump(mode="json"), self.config.data.pixels]
        m = self.config.model
        step = {"model": m.arch or f"{m.network} {m.hidden if m.network == 'mlp' else m.conv_channels}",
                "objective": self.config.objective.name, "batch": list(x.shape[1:]), "device": device,
                "precision": precision.replace("torch.bfloat16", "bf16")}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16], {"cpu": machine, **step}

    def _side_step(self, graph, x: torch.Tensor, eps: torch.Tensor | None, beta: float) -> float:
        """Seconds of one forward and backward pass of the loss on ``x``, eager (``graph`` None) or compiled. It
        trains nothing: its gradients are dropped and its noise ``eps`` is the probe's own. On a GPU the device is
        synchronised before and after (its kernels run asynchronously)."""
        sync = torch.cuda.synchronize if x.is_cuda else (lambda device: None)
        sync(x.device)
        t0 = time.perf_counter()
        terms = graph(x, eps, torch.tensor(beta, device=x.device)) if graph is not None else self._terms(x, eps, beta)
        terms[0].backward()
        sync(x.device)
        seconds = time.perf_counter() - t0
        for p in self.trained.parameters():
            p.grad = None
        return seconds

    def _probe(self, x: torch.Tensor, beta: float) -> None:
        """train.compile: auto, at the run's first step (see PROBE_STEPS): sets ``compile_probe`` and ``graph``."""
        if self.steps_left < SHORTEST_PROBED * PROBE_STEPS:  # the probe's own side steps would outweigh the run
            self.compile_probe = {}  # decided (eager), nothing measured, nothing to record
            return
        key, step = self._cache_key(x)
        cached = read_machine_cache(COMPILE_CACHE).get(key)
        cached = cached if is_decision(cached) and cached.get("choice") in ("compiled", "eager") else None
        shape = noise_shape(self.config, x.shape[1], self.latent_dim)
        eps = torch.randn(shape, generator=torch.Generator(device=x.device).manual_seed(0), device=x.device) \
            if shape else None
        eager = lambda: self._side_step(None, x[0], eps, beta)  # noqa: E731
        eager_s = min(warm_up([eager], PROBE_STEPS)[-2:])[0]
        left, tag = eager_s * self.steps_left, ({"cached": True} if cached else {})
        if left < AUTO_WORTH_S:
            self.compile_probe = {"eager_step_ms": round(1e3 * eager_s, 3), "choice": "eager",
                                  "reason": f"{left:.0f} s of steps left, under {AUTO_WORTH_S:.0f} s", **tag}
            return
        note: dict = {}
        if cached and cached["choice"] == "eager":
            drift = cached["eager_step_ms"] / (1e3 * eager_s)
            note = {"rechecked": True, "eager_step_now_ms": round(1e3 * eager_s, 3)}
            if drift < RECORD_DRIFT:
                self.compile_probe = {**cached, **tag, **note}
                return
            note["reprobed"] = True
        self.graph = self._compile()
        compiled = lambda: self._side_step(self.graph, x[0], eps, beta)  # noqa: E731
        try:
            if cached and cached["choice"] == "compiled":
                check = alternating_rounds(eager, compiled, COMPILE_MIN_SPEEDUP, recheck=True)
                note = {"rechecked": True, "recheck_ratio": round(check.ratio, 4)}
                if not contradicts(True, check.ratio, COMPILE_MIN_SPEEDUP):
                    self.compile_probe = {**cached, **tag, **note}
                    return
                note["reprobed"] = True
            rounds = alternating_rounds(eager, compiled, COMPILE_MIN_SPEEDUP, budget_s=PROBE_SHARE * left)
        except Exception as exc:
            self._compile_failed(exc)
            self.compile_probe = {"eager_step_ms": round(1e3 * eager_s, 3), "choice": "eager",
                                  "reason": "torch.compile failed", **note}
            return
        e, c = statistics.median(rounds.base), statistics.median(rounds.cand)
        measured = {"eager_step_ms": round(1e3 * e, 3), "compiled_step_ms": round(1e3 * c, 3),
                    "compile_s": round(max(rounds.first[1] - c, 0.0), 2),
                    "choice": "compiled" if rounds.verdict == "faster" else "eager",
                    **rounds.record(), **when_and_load(), **step}
        measured["reason"] = f"compiled steps run at {rounds.ratio:.2f}x the eager speed" + how_decided(measured)
        if rounds.verdict is not None:
            write_machine_cache(COMPILE_CACHE, {**read_machine_cache(COMPILE_CACHE), key: measured})
        else:
            measured["decided"] = False
            measured["reason"] += f": undecided against {COMPILE_MIN_SPEEDUP}x, so eager (not cached)"
        self.compile_probe = {**measured, **note}
        if measured["choice"] == "eager":
            self.graph = None

    def sync(self) -> None:
        pass

    def member_optimizer_state(self, state: dict, k: int) -> dict:
        return state

    def stack_optimizer_states(self, states: list[dict]) -> dict:
        return states[0]
