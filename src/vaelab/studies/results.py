"""A study's results table: results.csv (one row per run, for people and spreadsheets) and results.json (the same
rows, for the report and the claims), written atomically; and :class:`StudyResults`, a study folder's results opened
for reading."""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from vaelab.analysis.framework.runner import saved_results
from vaelab.fileio import atomic_write_text
from vaelab.runs import Run

FIRST_COLUMNS = ["run", "status", "reason"]


def write_results(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """results.csv (one row per run, the union of columns) and results.json, atomically."""
    columns = list(FIRST_COLUMNS)
    for row in rows:
        for key in row:
            if key not in columns and key not in ("trained_now", "wall_seconds"):
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(folder / "results.csv", buf.getvalue())
    atomic_write_text(folder / "results.json", json.dumps(rows, indent=1, default=str) + "\n")
    return folder / "results.csv"


def read_results(folder: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((Path(folder) / "results.json").read_text())
    except (OSError, ValueError):
        return []


TRAINING_COLUMNS = [  # (column, label, better): the numbers of a run's last metrics row
    ("epochs", "epochs trained", None), ("train_loss", "train loss (nats)", "low"),
    ("test_loss", "test loss (nats)", "low"), ("test_recon", "test reconstruction loss (nats)", "low"),
    ("test_kl", "test KL (nats)", None), ("train_seconds", "training time (s)", None)]


def run_numbers(run_dir: Path) -> dict[str, Any]:
    """The numbers a results table shows for one run: its last metrics row, then each saved analysis's headline
    numbers as its declaration names them (vaelab.analysis.framework.registry), formatted with the parameters it ran with."""
    out: dict[str, Any] = {}
    try:
        metrics = Run(run_dir).metrics
    except Exception:  # noqa: BLE001 - a run that never started has no metrics
        metrics = []
    if metrics:
        last = metrics[-1]
        out.update({"epochs": last["epoch"], "train_loss": last["train_loss"], "test_loss": last["test_loss"],
                    "test_recon": -last["test_recon"], "test_kl": last["test_kl"],
                    "train_seconds": Run.train_seconds(metrics)})
    for decl, result, params in saved_results(run_dir):
        out.update(decl.numbers(result, params))
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in out.items()}


def setting_label(variant: Optional[str], values: dict[str, Any]) -> str:
    """'variant, latent_dim = 20': a place in a study's grid, without its seed ('' for a study of one setting)."""
    parts = [str(variant)] if variant else []
    return ", ".join(parts + [f"{k.rsplit('.', 1)[-1]} = {v}" for k, v in values.items()])


def analysis_seconds(run_dir: Path) -> tuple[float, int]:
    """(the seconds the run's saved analyses took, summed over their parts: compute and figures; how many there are)."""
    seconds, saved = 0.0, 0
    for path in (Path(run_dir) / "analysis").glob("*.json"):
        try:
            parts = json.loads(path.read_text()).get("seconds") or {}  # {"compute": s, "figures": s}
            seconds += sum(float(v) for v in parts.values())
            saved += 1
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return seconds, saved


@dataclass
class StudyResults:
    """A study folder's results, read: its spec as run, one row per run (results.json: the run's name, status, grid
    coordinates and headline numbers), each run's saved analyses, and the study's Theorem 3 check where it has one
    (``theorem``: the rows of :mod:`vaelab.studies.theorem`, stored with the results). The claims decide from this;
    the report's figures read it through :class:`vaelab.studies.view.StudyView`."""

    folder: Path
    spec: Any  # the StudySpec as run (vaelab.studies.spec, which builds on the claims, which read this)
    rows: list[dict[str, Any]]
    theorem: Optional[list[dict[str, Any]]] = None

    def run_dir(self, row) -> Path:
        return self.folder / "runs" / row["run"]

    def analysis(self, row, name: str) -> dict | None:
        """The run's saved result of analysis ``name`` (None where it has none)."""
        try:
            return json.loads((self.run_dir(row) / "analysis" / f"{name}.json").read_text()).get("result")
        except (OSError, ValueError):
            return None

    def arrays(self, row, name: str) -> dict[str, np.ndarray] | None:
        """The arrays analysis ``name`` saved for the run (None where it saved none)."""
        path = self.run_dir(row) / "analysis" / f"{name}.npz"
        if not path.exists():
            return None
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}

    def finished(self) -> list[dict]:
        return [r for r in self.rows if r.get("status") == "finished"]

    def compute_seconds(self) -> dict[str, float]:
        """The study's compute from the runs' own records, summed over runs: ``training`` (each run's epochs; a run
        trained in a vectorised group counts its share of the group's time) and ``analyses`` (each saved analysis's
        time). Runs trained side by side each count, so this is worker-seconds, and it survives invocations that
        were killed before they could record their wall time."""
        training = sum(float(r.get("train_seconds") or 0) for r in self.rows)
        analyses = sum(analysis_seconds(self.run_dir(row))[0] for row in self.rows)
        return {"training": round(training, 1), "analyses": round(analyses, 1)}

    def label(self, row) -> str:
        """'variant, latent_dim = 20': the run's place in the study (its name where it has none)."""
        return setting_label(row.get("variant"), {k: row.get(k) for k in self.spec.grid}) or row["run"]
