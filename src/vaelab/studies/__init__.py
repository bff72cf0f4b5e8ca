"""Studies: a grid of runs plus the analyses that compare them, their results and the claims they decide (see README,
"Studies"). :func:`vaelab.report.run_study` executes a study and writes its report.html."""
import importlib
import warnings

from vaelab.studies.orchestrator import execute_study
from vaelab.studies.pools import LocalExecutor, RayExecutor, make_executor
from vaelab.studies.results import StudyResults, read_results
from vaelab.studies.scorecard import scorecard
from vaelab.studies.spec import StudySpec, builtin_studies, load_study
from vaelab.studies.view import open_study

__all__ = ["LocalExecutor", "RayExecutor", "StudyResults", "StudySpec", "builtin_studies", "execute_study",
           "load_study", "make_executor", "open_study", "read_results", "scorecard"]


def __getattr__(name: str):
    """``vaelab.studies.run_study``, deprecated: it moved to the report layer (it writes report.html)."""
    if name == "run_study":
        warnings.warn("vaelab.studies.run_study moved to vaelab.report.run_study (vaelab.studies.execute_study runs a "
                      "study without writing its report)", DeprecationWarning, stacklevel=2)
        globals()[name] = importlib.import_module("vaelab.report").run_study  # warned once
        return globals()[name]
    raise AttributeError(f"module 'vaelab.studies' has no attribute {name!r}")
