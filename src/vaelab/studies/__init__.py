"""Studies: a grid of runs plus the analyses that compare them, ending in report.html (see README, "Studies")."""
from vaelab.studies.pools import LocalExecutor, RayExecutor, make_executor
from vaelab.studies.orchestrator import run_study
from vaelab.studies.results import read_results
from vaelab.studies.spec import StudySpec, builtin_studies, load_study

__all__ = ["LocalExecutor", "RayExecutor", "StudySpec", "builtin_studies", "load_study", "make_executor", "read_results",
           "run_study"]
