"""Measurements of a trained model's latent space. Each analysis is a function ``f(subject, **params) ->
AnalysisResult`` (plain data); :func:`run_analysis` also saves it as JSON plus figures in the run directory.

    from vaelab.analysis import from_run, analyze, diagnose
    subject = from_run("runs/my-run")
    results = analyze(subject, only="posterior,likelihood")
"""
# The submodule vaelab.analysis.diagnose is loaded before the function below takes its name: loaded later (by a study
# or the registry), it would rebind vaelab.analysis.diagnose to the module, and `from vaelab.analysis import diagnose`
# would then give a module, not this function.
import vaelab.analysis.diagnose  # noqa: E402, F401
from vaelab.analysis.framework.common import AnalysisResult
from vaelab.analysis.framework.registry import ANALYSES
from vaelab.analysis.framework.runner import analyze, run_analysis
from vaelab.analysis.framework.subject import Subject, from_model, from_run
from vaelab.analysis.moved import install as _install_moved_paths

_install_moved_paths()  # the old module paths (vaelab.analysis.common, ...) still import, with a warning


def diagnose(subject, **params) -> AnalysisResult:
    """Document 000's question for this model; saved as analysis/diagnosis.json (see vaelab.analysis.diagnose)."""
    return run_analysis(subject, "diagnosis", **params)


__all__ = ["ANALYSES", "AnalysisResult", "Subject", "analyze", "diagnose", "from_model", "from_run", "run_analysis"]
