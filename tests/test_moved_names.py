"""Names the README used before the redesign still work, each with a DeprecationWarning that names its new home."""
import importlib
import sys

import pytest

from vaelab.analysis.moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_analysis_module_path_imports_the_new_module_and_warns(old):
    sys.modules.pop(f"vaelab.analysis.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"vaelab.analysis.{old} moved to vaelab.analysis.{MOVED[old]}"):
        module = importlib.import_module(f"vaelab.analysis.{old}")
    assert module is importlib.import_module(f"vaelab.analysis.{MOVED[old]}")


def test_the_old_readme_example_imports():
    sys.modules.pop("vaelab.analysis.common", None)
    with pytest.warns(DeprecationWarning):
        from vaelab.analysis.common import AnalysisResult, encode_all  # noqa: F401
    from vaelab.analysis.framework.common import AnalysisResult as new
    assert AnalysisResult is new


def test_run_study_from_studies_points_to_the_report_layer():
    import vaelab.report
    import vaelab.studies

    vaelab.studies.__dict__.pop("run_study", None)
    with pytest.warns(DeprecationWarning, match="vaelab.report.run_study"):
        old = vaelab.studies.run_study
    assert old is vaelab.report.run_study


def test_an_unknown_module_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("vaelab.analysis.no_such_module")
