"""Every study figure by name (the spec's ``figures`` list names them) and :func:`draw`, which draws a spec's."""
from __future__ import annotations

from vaelab.report import fixes_figures, sampling_figures, study_figures
from vaelab.studies.view import Figure, StudyView

FIGURES = {**study_figures.FIGURES, **sampling_figures.FIGURES, **fixes_figures.FIGURES}


def draw(view: StudyView) -> list[Figure]:
    """Every figure the spec lists, in order; a failure to draw one is a note in the report, not a crash."""
    out = []
    for name in view.spec.figures:
        fn = FIGURES.get(name)
        if fn is None:
            view.notes.append(f"{name}: no such figure (known: {', '.join(FIGURES)})")
            continue
        try:
            out += fn(view, **view.spec.figure_options.get(name, {}))
        except Exception as exc:  # noqa: BLE001 - one broken figure must not lose the report
            view.notes.append(f"{name}: could not be drawn ({type(exc).__name__}: {exc})")
    return out
