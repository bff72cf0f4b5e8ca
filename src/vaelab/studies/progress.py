"""Where a study stands, while it runs or after it stopped (`vaelab info STUDY_FOLDER`): each planned run's state and
epochs, the runs in training now (their run lock is held), the study's invocations and compute so far, and the
training left at the runs' own recent pace. Everything is read from the study folder; nothing is started."""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from vaelab.errors import RunError
from vaelab.runs import Run, lock_holder, run_progress
from vaelab.studies import provenance
from vaelab.studies.provenance import duration
from vaelab.studies.results import analysis_seconds, setting_label
from vaelab.studies.view import open_study

STATES = ("finished", "training", "interrupted", "failed", "not started", "unreadable")


@dataclass
class RunStanding:
    """One planned run: ``state`` (one of STATES), its epochs, its pace (the median of its epochs' seconds, a
    vectorised run's share of its group's; None before its first epoch), its saved analyses and the time spent."""

    name: str
    setting: str  # the run's place in the grid without its seed: runs of one setting train at one pace
    state: str
    epochs_done: int
    epochs: int
    epoch_seconds: Optional[float]
    analyses: int
    training_seconds: float
    analysis_seconds: float
    vectorised: bool = False  # trained in a group of seeds (its epoch seconds are its share of the group's)


@dataclass
class StudyStanding:
    """A study folder's standing: its runs, its invocations (provenance.json), and the training left, in worker
    seconds at each run's pace (a run not yet started takes the pace of its setting's other seeds, else is counted in
    ``no_pace``)."""

    folder: str
    name: str
    scale: str
    analyses_planned: int
    runs: list[RunStanding] = field(default_factory=list)
    invocations: dict[str, Any] = field(default_factory=dict)
    left_seconds: float = 0.0
    no_pace: list[str] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.runs)

    def compute_seconds(self) -> dict[str, float]:
        """Worker seconds spent so far, from the runs' own records: {"training": s, "analyses": s}."""
        return {"training": round(sum(r.training_seconds for r in self.runs), 1),
                "analyses": round(sum(r.analysis_seconds for r in self.runs), 1)}

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "counts": {s: self.count(s) for s in STATES}, "compute_seconds": self.compute_seconds()}


def _state(run_dir: Path, epochs: int) -> tuple[str, int]:
    progress = run_progress(run_dir, epochs)
    if progress.state == "absent":
        return "not started", 0
    if lock_holder(run_dir):  # before "failed": a failed run retried keeps that status until its trainer starts
        return "training", progress.epochs_done
    if progress.state == "failed":
        return "failed", progress.epochs_done
    return ("finished" if progress.done else "interrupted"), progress.epochs_done


def _standing(run_dir: Path, name: str, setting: str, epochs: int) -> RunStanding:
    """One run's standing; a run whose files cannot be read (a damaged status or metrics file) is "unreadable"."""
    seconds, saved = analysis_seconds(run_dir)
    try:
        state, done = _state(run_dir, epochs)
        metrics = Run(run_dir).metrics if state != "not started" else []
    except (OSError, ValueError, TypeError, AttributeError, RunError):
        state, done, metrics = "unreadable", 0, []
    vectorised = bool(metrics and metrics[-1].get("vectorised"))  # (an interrupted run's status drops it)
    return RunStanding(name, setting, state, done, epochs, _pace(metrics), saved, Run.train_seconds(metrics),
                       round(seconds, 2), vectorised)


def _pace(metrics: list[dict[str, Any]]) -> Optional[float]:
    seconds = [m["seconds"] for m in metrics if m.get("seconds")]
    return statistics.median(seconds) if seconds else None


def study_standing(folder: str | Path) -> StudyStanding:
    """Read where the study in ``folder`` stands (a folder that is not a study is a one-line RunError)."""
    folder = Path(folder)
    spec = open_study(folder).spec
    out = StudyStanding(str(folder), spec.name, spec.scale or "full", len(spec.analyses),
                        invocations=provenance.summary(folder))
    for planned in spec.expand():
        out.runs.append(_standing(folder / "runs" / planned.name, planned.name,
                                  setting_label(planned.variant, planned.values) or "run", planned.config.train.epochs))
    paces: dict[str, list[float]] = {}
    for r in out.runs:
        if r.epoch_seconds:
            paces.setdefault(r.setting, []).append(r.epoch_seconds)
    for r in out.runs:
        if r.epochs_done >= r.epochs or r.state in ("failed", "unreadable"):
            continue
        pace = r.epoch_seconds or (statistics.median(paces[r.setting]) if r.setting in paces else None)
        if pace is None:
            out.no_pace.append(r.name)
        else:
            out.left_seconds += pace * (r.epochs - r.epochs_done)
    return out


def standing_lines(s: StudyStanding) -> list[str]:
    """The standing as `vaelab info` prints it."""
    runs = len(s.runs)
    trained = sum(min(r.epochs_done, r.epochs) for r in s.runs)
    planned = sum(r.epochs for r in s.runs)
    saved = sum(min(r.analyses, s.analyses_planned) for r in s.runs)
    if not runs:
        return [f"study {s.name} (scale {s.scale}) at {s.folder}: no runs (a study of checks only)"]
    lines = [f"study {s.name} (scale {s.scale}) at {s.folder}: {runs} runs",
             "  " + ", ".join(f"{s.count(state)} {state}" for state in STATES if s.count(state)),
             f"  epochs trained {trained:,} of {planned:,}; analyses saved {saved} of {runs * s.analyses_planned}"]
    groups: dict[tuple[str, str, int], list[RunStanding]] = {}  # the seeds of a setting train as one group
    for r in s.runs:
        if r.state in ("training", "interrupted"):
            groups.setdefault((r.state, r.setting, r.epochs_done), []).append(r)
    for (state, setting, done), members in groups.items():
        paced = [m.epoch_seconds for m in members if m.epoch_seconds]
        together = len(members) > 1 and all(m.vectorised for m in members)  # one group: its epoch is their sum
        if not paced:
            pace = ""
        elif together:
            pace = f", {duration(sum(paced))} an epoch"
        else:
            pace = f", {duration(statistics.median(paced))} an epoch" + (" each" if len(members) > 1 else "")
        seeds = ""
        if len(members) > 1:
            seeds = f" ({len(members)} seeds as one vectorised group)" if together else f" ({len(members)} seeds)"
        lines.append(f"  {state}: {setting}{seeds} at epoch {done}/{members[0].epochs}{pace}")
    made = s.invocations
    compute = s.compute_seconds()
    wall = (f"{made['invocations']} invocation(s) recorded, {duration(made['seconds'])} of wall time"
            if made.get("seconds") is not None else "no invocation recorded yet")
    lines.append(f"  {wall}; compute so far {duration(compute['training'])} of training and "
                 f"{duration(compute['analyses'])} of analyses (worker time, from the runs' own records)")
    if s.left_seconds or s.no_pace:
        left = f"about {duration(s.left_seconds)} of worker time of training left at the runs' own (median) pace"
        unknown = (f" and {len(s.no_pace)} run(s) whose setting has not trained an epoch yet" if s.no_pace else "")
        lines.append(f"  {left}{unknown}, then their analyses (run the study's command again to continue)")
    elif s.count("finished") == runs:
        lines.append("  every run has trained; `vaelab reproduction` keeps it as a page once the study has ended")
    return lines
