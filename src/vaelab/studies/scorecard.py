"""The scorecard of a study folder: every claim of its document decided from its runs (vaelab.studies.claims), as
the report opens with and `vaelab scorecard DIR` prints."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from vaelab.studies.claims import Claim, ClaimOutcome, decide_claims
from vaelab.studies.results import StudyResults
from vaelab.studies.spec import StudySpec, builtin_studies, load_study
from vaelab.studies.view import open_study


def claims_of(spec: StudySpec) -> list[Claim]:
    """The spec's claims; for a built-in study run before claims existed, the built-in's claims at its scale."""
    if spec.claims:
        return spec.claims
    base = spec.name.removesuffix(f"-{spec.scale}") if spec.scale != "full" else spec.name
    if base in builtin_studies():
        builtin = load_study(base)
        if spec.scale == "full" or spec.scale in builtin.scales:
            return builtin.scaled(spec.scale).claims
    return []


def scorecard(folder: str | Path, view: Optional[StudyResults] = None) -> list[ClaimOutcome]:
    """Every claim of the study in ``folder`` decided from its runs (``view``: the study as already opened, e.g. the
    view the report draws from; else it is opened here)."""
    view = view if view is not None else open_study(folder)
    return decide_claims(claims_of(view.spec), view)
