"""Theorem 3 of document 002 as a study checks it: :func:`vaelab.analysis.typical.theorem3_check` (Monte Carlo,
seeded) run once per study with the options the study gives its ``theorem3`` figure, and stored with the study's
results (theorem3.json, written atomically) where the study draws that figure or states a ``theorem3`` claim. The
figure and the claim both read these rows, so neither depends on the other having run first.

A study folder without the file (written before it was kept, or made by hand) gets the same rows computed when they
are first read: the check is deterministic.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

from vaelab.analysis.typical import theorem3_check
from vaelab.fileio import atomic_write_json
from vaelab.studies.results import StudyResults

NAME = "theorem3"  # the figure, its key in figure_options, and the claim rule's kind
FILE = "theorem3.json"


@dataclass(frozen=True)
class TheoremOptions:
    """The check's options: the dimensions n, the sigmas, the Monte Carlo pairs per point and the delta of
    P(|f_n(Z1) - f_n(Z2)| < delta)."""

    dims: tuple[int, ...] = (1, 10, 100, 1000)
    sigmas: tuple[float, ...] = (1.0, 0.1)
    pairs: int = 20000
    delta: float = 1e-3

    @classmethod
    def of(cls, spec) -> "TheoremOptions":
        """The study's options (its ``figure_options.theorem3``), the defaults filled in."""
        given = spec.figure_options.get(NAME, {})
        chosen = {f.name: given[f.name] for f in fields(cls) if f.name in given}
        return cls(**{k: tuple(v) if k in ("dims", "sigmas") else v for k, v in chosen.items()})


def needed(spec) -> bool:
    """Whether the study draws the theorem3 figure or states a theorem3 claim."""
    return NAME in spec.figures or any(c.rule.kind == NAME for c in spec.claims)


def check(options: TheoremOptions) -> list[dict[str, Any]]:
    """The Monte Carlo rows, one per (sigma, n)."""
    return theorem3_check(dims=options.dims, sigmas=options.sigmas, pairs=options.pairs, delta=options.delta)


def _stored_options(options: TheoremOptions) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(options)))


def save(folder: Path, spec) -> None:
    """Compute the study's check and store it in ``folder`` (nothing for a study that needs none)."""
    if needed(spec):
        options = TheoremOptions.of(spec)
        atomic_write_json(Path(folder) / FILE, {"options": _stored_options(options), "rows": check(options)})


def load(folder: Path, spec) -> Optional[list[dict[str, Any]]]:
    """The stored rows, if ``folder`` has them for the spec's options; else None."""
    try:
        stored = json.loads((Path(folder) / FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("options") != _stored_options(TheoremOptions.of(spec)):
        return None
    return stored.get("rows")


def rows(results: StudyResults) -> list[dict[str, Any]]:
    """The study's rows: those stored with its results, else computed now (and kept with them for the next reader)."""
    if not results.theorem:
        results.theorem = check(TheoremOptions.of(results.spec))
    return results.theorem
