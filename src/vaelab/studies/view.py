"""A study folder opened for drawing its report (:class:`StudyView`, :func:`open_study`) and the :class:`Figure`
records its comparison figures return; the helpers every figure module shares."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import ValidationError

from vaelab.analysis.quality import feature_label
from vaelab.errors import ConfigError, RunError
from vaelab.plotting import pyplot, save_figure
from vaelab.studies import theorem
from vaelab.studies.results import StudyResults, read_results
from vaelab.studies.spec import StudySpec, study_error


@dataclass
class Figure:
    id: str
    title: str
    caption: str
    files: list[str]
    kind: str = "image"  # image | animation

    @property
    def png(self) -> str:
        return next(f for f in self.files if f.endswith((".png", ".gif")))


@dataclass
class StudyView(StudyResults):
    """A study's results (:class:`StudyResults`) as the report draws them: with the notes its figures leave (a
    figure left out and why) and the sentences they compute for the findings (which fix wins where)."""

    notes: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    @property
    def fig_dir(self) -> Path:
        return self.folder / "figures"

    def grid_key(self) -> str | None:
        return next(iter(self.spec.grid), None)

    def first_seed(self) -> list[dict]:
        """One finished run per grid point and variant (the lowest seed)."""
        seen, out = set(), []
        for r in sorted(self.finished(), key=lambda r: r.get("seed", 0)):
            key = (r.get("variant"), *(str(r.get(k)) for k in self.spec.grid))
            if key not in seen:
                seen.add(key)
                out.append(r)
        return out

    def features(self) -> str:
        """What the runs' FDs were measured in, for captions ("classifier features", "contrastive features"; joined
        with "or" where the runs differ), read from their quality results."""
        labels = sorted({feature_label(self.analysis(r, "quality") or {}) for r in self.finished()})
        return " or ".join(labels) or feature_label({})

    def first_seed_with_latent(self, accept: Callable[[int], bool]) -> list[dict]:
        """first_seed() runs whose latent dimension (from their posterior analysis) passes ``accept``."""
        return [r for r in self.first_seed() if accept((self.analysis(r, "posterior") or {}).get("latent_dim", 0))]


def open_study(folder: str | Path) -> StudyView:
    """A study folder opened for reading: its spec as run, its results and its stored Theorem 3 check; a folder that
    is not a study is a one-line error."""
    folder = Path(folder)
    spec_path = folder / "study.yaml"
    if not spec_path.is_file():
        raise RunError(f"{folder} is not a vaelab study folder (no study.yaml); run `vaelab study NAME` first")
    try:
        raw = yaml.safe_load(spec_path.read_text())
        spec = StudySpec(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{spec_path}: {study_error(exc, raw)}") from None
    except (OSError, yaml.YAMLError, TypeError) as exc:
        raise RunError(f"cannot read {spec_path}: {exc}") from None
    return StudyView(folder, spec, read_results(folder), theorem.load(folder, spec))


def save_view_figure(view: StudyView, fig, stem: str, title: str, caption: str) -> Figure:
    return Figure(stem, title, caption, save_figure(fig, view.fig_dir, stem))


def panel_row(view: StudyView, items: list, note: str, width: float, height: float):
    """A figure with one panel per item, side by side: (fig, axes), or None (and ``note`` for the report) when there
    are no items."""
    if not items:
        view.notes.append(note)
        return None
    fig, axes = pyplot().subplots(1, len(items), figsize=(width * len(items), height), squeeze=False)
    return fig, axes[0]


def latent_panels(view: StudyView, accept: Callable[[int], bool], note: str, width: float, height: float):
    """One panel per finished run (first seed) whose latent dimension passes ``accept``: (fig, [(ax, row)]), or None
    (and ``note`` for the report) when there is none."""
    rows = view.first_seed_with_latent(accept)
    panels = panel_row(view, rows, note, width, height)
    return None if panels is None else (panels[0], list(zip(panels[1], rows)))


def mean_sd_by(rows: list[dict], key: str, metric: str, variant: str | None = None) -> tuple[list, list, list]:
    """x values (sorted), mean and sd over seeds of ``metric`` for rows grouped by ``key``."""
    groups: dict[Any, list[float]] = {}
    for r in rows:
        if variant is not None and r.get("variant") != variant:
            continue
        v = r.get(metric)
        if isinstance(v, (int, float)) and v == v:
            groups.setdefault(r.get(key), []).append(float(v))
    xs = sorted(groups, key=lambda x: (isinstance(x, str), x))
    return xs, [statistics.mean(groups[x]) for x in xs], [statistics.stdev(groups[x]) if len(groups[x]) > 1 else 0.0 for x in xs]
