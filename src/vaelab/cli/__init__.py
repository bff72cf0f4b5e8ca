"""The `vaelab` command: one module per command group, each thin (parse, call the library, print).

    base.py         the app, one-line errors and exit statuses (main), options several commands share
    run_options.py  `vaelab train`'s flags, checked against the run config's schema
    train.py        train, resume, info
    analysis.py     analyze, diagnose
    studies.py      study, report, reproduction, scorecard
    sample.py       sample (from a fitted fix)
    data.py         data list, data add, data fetch, data info
    doctor.py       doctor (what this machine measured and chose)
"""
# In this order, each adds its commands to the app (the order `vaelab --help` lists them in).
from vaelab.cli import train, analysis, sample, studies, data, doctor  # noqa: F401  # isort: skip
from vaelab.cli.base import app, main, printable

__all__ = ["app", "main", "printable"]
