"""What a study asks an executor to do: train and analyse one run (:class:`RunTask`), or a group of runs that differ
only in seed, trained together as one vectorised model (:class:`GroupTask`). Both are plain dataclasses of plain
data, so a process pool or Ray can ship them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Union

from vaelab.config import RunConfig, build_config
from vaelab.ensemble import vectorise_reason


@dataclass
class RunTask:
    """One run of a study, start to finish."""

    name: str
    config: dict[str, Any]  # the run's RunConfig, as JSON
    runs_dir: str  # the study's runs/ folder
    analyses: dict[str, dict[str, Any]] = field(default_factory=dict)  # analysis name -> its parameters
    coordinates: dict[str, Any] = field(default_factory=dict)  # the run's place in the grid (results columns)
    retry_failed: bool = False  # train a run that failed before again
    tracking: dict[str, Any] | None = None  # where to send the run's metrics (vaelab.studies.tracking)
    precision_probe: dict[str, Any] | None = None  # the study's precision decision for this model
    threads: int = 1  # torch threads, set by the executor

    @classmethod
    def of(cls, task: "RunTask | dict[str, Any]") -> "RunTask":
        """A RunTask from itself or from a dict with its fields."""
        return task if isinstance(task, RunTask) else cls(**task)

    def run_config(self) -> RunConfig:
        return build_config(self.config)

    @property
    def members(self) -> list["RunTask"]:
        return [self]


@dataclass
class GroupTask:
    """Runs that differ only in seed, trained together (vaelab.ensemble), then finished one by one."""

    members: list[RunTask]
    threads: int = 1

    @property
    def name(self) -> str:
        return "+".join(m.name for m in self.members)


Task = Union[RunTask, GroupTask]


def group_tasks(tasks: list[RunTask]) -> list[Task]:
    """Tasks whose configs differ only in seed (and that vaelab.ensemble can train together) become group tasks."""
    groups: dict[str, list[RunTask]] = {}
    for t in tasks:
        key = dict(t.config, name=None, train=dict(t.config["train"], seed=None))
        groups.setdefault(json.dumps(key, sort_keys=True), []).append(t)
    out: list[Task] = []
    for members in groups.values():
        if len(members) >= 2 and vectorise_reason([m.run_config() for m in members]) is None:
            out.append(GroupTask(members))
        else:
            out.extend(members)
    return out
