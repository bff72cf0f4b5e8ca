"""What the training loop (vaelab.trainer) trains: its runs (:class:`Member`) and their step function.

The loop trains M runs at once (M = 1 for an ordinary run, M seeds for vectorised ones, vaelab.ensemble). A step
function owns how their parameters are trained (the model itself, or the members' parameters stacked) and computes
one step's losses; everything else (epochs, batches, precision, optimizer, checkpoints, metrics, stops) is the loop's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from vaelab.config import RunConfig
from vaelab.errors import RunError
from vaelab.objectives import Objective
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
    loop as ``step_function(members, objective)`` once the members are loaded."""

    models: list[nn.Module]  # each member's own module, in the single-run layout
    trained: nn.Module  # the parameters the optimizer updates (the model itself, or the stacked members)

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


class SingleStep:
    """The step function of one run (M = 1): the objective on the model itself, noise drawn by the objective."""

    def __init__(self, members: list[Member], objective: Objective):
        (member,) = members
        self.models, self.trained, self.objective = [member.model], member.model, objective

    def __call__(self, x, generators, progress):
        terms = self.objective(self.trained, x[0], generators[0], progress)
        sums = torch.stack([terms.bound.sum(), terms.recon.sum(), terms.kl.sum()]).detach().double()
        return terms.loss.reshape(1), sums.reshape(1, 3)

    def sync(self) -> None:
        pass

    def member_optimizer_state(self, state: dict, k: int) -> dict:
        return state

    def stack_optimizer_states(self, states: list[dict]) -> dict:
        return states[0]
