"""The report layer: a study's figures, report.html and reproduction pages, and :func:`run_study`, which executes a
study (vaelab.studies) and writes its report."""
from vaelab.report.html import write_report
from vaelab.report.reproduction import write_reproduction
from vaelab.report.study import run_study

__all__ = ["run_study", "write_report", "write_reproduction"]
