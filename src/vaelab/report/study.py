"""Run a study and write its report: :func:`vaelab.studies.orchestrator.execute_study` (the runs and their results),
then the figures and report.html (:func:`vaelab.report.html.write_report`), within the one invocation that
provenance.json records.

    OUT/<study>/figures/        the study's comparison figures
    OUT/<study>/report.html     everything in the study folder, self-contained
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from vaelab.report.html import write_report
from vaelab.studies.orchestrator import execute_study
from vaelab.studies.spec import StudySpec


def run_study(spec: StudySpec, out: str | Path = "studies", *, executor=None, progress: bool | None = None,
              tracking: dict | None = None, retry_failed: bool = False, report: bool = True, vectorize: bool = True,
              log: Callable[[str], None] | None = None) -> Path:
    """Run every run of ``spec`` (already scaled) with ``executor`` (local by default), write its results and, with
    ``report``, its report.html; return the study folder.

    ``vectorize``: runs that differ only in seed are trained together as one vectorised model (vaelab.ensemble)."""
    # (the caller says where the report is: the CLI prints the path once)
    return execute_study(spec, out, executor=executor, progress=progress, tracking=tracking, retry_failed=retry_failed,
                         vectorize=vectorize, log=log, finish=write_report if report else None)
