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
from vaelab.errors import RunError
from vaelab.objectives import Objective
from vaelab.precision import cpu_signature, read_machine_cache, write_machine_cache
from vaelab.runs import CheckpointStore


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


# train.compile: auto. It times PROBE_STEPS eager steps (after PROBE_STEPS of warm-up); with at least AUTO_WORTH_S
# seconds of such steps left (a 10% faster step then pays back about 10 s of compiling) it compiles, times
# PROBE_STEPS compiled steps and keeps the faster step for the rest of the run. The choice is cached per machine
# and step (data_root()/compile.json, COMPILE_CACHE): every later run of the same step here makes it from its first
# step, so reruns give the same numbers (compiled and eager steps round differently, and a fresh probe can tip
# either way under another load; the probing run itself mixed both).
PROBE_STEPS = 30
AUTO_WORTH_S = 100.0
COMPILE_CACHE = "compile"


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
        self.calls, self.last_call, self.intervals = 0, None, {"eager": [], "compiled": []}
        self.probe_key: str | None = None  # where auto's choice is cached (see COMPILE_CACHE)

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
            self._probe(x)
        shape = noise_shape(self.config, x.shape[1], self.latent_dim)
        eps = torch.randn(shape, generator=generators[0], device=x.device) if shape else None
        beta = self.objective.beta_at(progress)
        if self.graph is None:
            loss, sums = self._terms(x[0], eps, beta)
        else:
            try:  # beta as a tensor: a changing Python float would recompile the graph every step of a warm-up
                loss, sums = self.graph(x[0], eps, torch.tensor(beta, device=x.device))
            except Exception as exc:  # torch.compile's own failures fall back to eager; any other error is re-raised
                if not type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
                    raise
                warnings.warn(f"{self.config.name}: torch.compile failed ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0][:200]}); training on without it", stacklevel=2)
                self.graph, self.mode = None, "off"
                loss, sums = self._terms(x[0], eps, beta)
        return loss.reshape(1), sums.detach().double().reshape(1, 3)

    def _cache_key(self, x: torch.Tensor) -> str:
        """What a step's speed depends on: the machine, device, precision, batch shape, model, objective, pixels."""
        device = x.device.type
        precision = str(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else "fp32"
        machine = torch.cuda.get_device_name(x.device) if device == "cuda" else cpu_signature()
        parts = [machine, device, precision, list(x.shape[1:]), self.config.model.model_dump(mode="json"),
                 self.config.objective.model_dump(mode="json"), self.config.data.pixels]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def _probe(self, x: torch.Tensor) -> None:
        """train.compile: auto, called at the start of every step until it has decided (see PROBE_STEPS)."""
        if self.calls == 0:
            self.probe_key = self._cache_key(x)
            cached = read_machine_cache(COMPILE_CACHE).get(self.probe_key)
            if isinstance(cached, dict) and isinstance(cached.get("eager_step_ms"), (int, float)) \
                    and cached.get("choice") in ("compiled", "eager"):  # decided here before: the same choice
                self._decide(cached["eager_step_ms"] / 1e3, cached, cached=True)
                return
        now = time.perf_counter()
        if self.last_call is not None and self.calls > PROBE_STEPS:
            self.intervals["compiled" if self.graph is not None else "eager"].append(now - self.last_call)
        self.calls, self.last_call = self.calls + 1, now
        eager, compiled = self.intervals["eager"], self.intervals["compiled"]
        if len(eager) == PROBE_STEPS and self.graph is None:
            self._decide(statistics.median(eager), None)
        elif len(compiled) == PROBE_STEPS + 1:  # the first compiled interval includes compiling
            e, c = statistics.median(eager), statistics.median(compiled[1:])
            measured = {"eager_step_ms": round(1e3 * e, 3), "compiled_step_ms": round(1e3 * c, 3),
                        "compile_s": round(compiled[0] - c, 2), "choice": "compiled" if c < e else "eager"}
            write_machine_cache(COMPILE_CACHE, {**read_machine_cache(COMPILE_CACHE), self.probe_key: measured})
            self._decide(e, measured)

    def _decide(self, eager_step: float, measured: dict | None, cached: bool = False) -> None:
        """Settle auto's choice from the eager step's seconds and the timed compiled steps (``measured``: now, or
        on an earlier run here when ``cached``). Before compiling, too little training left to repay it means eager."""
        tag = {"cached": True} if cached else {}
        if measured is None or cached:
            left = eager_step * (self.steps_left - self.calls)
            if left < AUTO_WORTH_S:
                self.compile_probe = {"eager_step_ms": round(1e3 * eager_step, 3), "choice": "eager",
                                      "reason": f"{left:.0f} s of steps left, under {AUTO_WORTH_S:.0f} s", **tag}
                return
        if measured is None:  # worth trying: compile, then time the compiled steps
            self.graph = self._compile()
            return
        self.compile_probe = {**measured, **tag}
        if measured["choice"] == "compiled":
            self.graph = self.graph or self._compile()
        else:
            self.graph = None

    def sync(self) -> None:
        pass

    def member_optimizer_state(self, state: dict, k: int) -> dict:
        return state

    def stack_optimizer_states(self, states: list[dict]) -> dict:
        return states[0]
