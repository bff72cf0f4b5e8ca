"""The report layer: a study's figures, report.html and reproduction pages, and :func:`run_study`, which executes a
study (vaelab.studies) and writes its report; :func:`diagnose`, which diagnoses one model and writes its page
(analysis/diagnosis.html, :func:`write_diagnosis_page`)."""
from vaelab.report.diagnosis_page import diagnose, write_diagnosis_page
from vaelab.report.html import write_report
from vaelab.report.reproduction import write_reproduction
from vaelab.report.study import run_study

__all__ = ["diagnose", "run_study", "write_diagnosis_page", "write_report", "write_reproduction"]
