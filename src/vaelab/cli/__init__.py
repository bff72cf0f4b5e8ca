"""The `vaelab` command: one module per command group, each thin (parse, call the library, print).

    base.py         the app, one-line errors and exit statuses (main), options several commands share
    run_options.py  `vaelab train`'s flags, checked against the run config's schema
    train.py        train, resume, info
    analysis.py     analyze, diagnose
    studies.py      study, report, reproduction, scorecard
    data.py         data list, data fetch, data info
"""
from vaelab.cli import train, analysis, studies, data  # noqa: F401  (in this order: each adds its commands to the app)
from vaelab.cli.base import app, main, printable

__all__ = ["app", "main", "printable"]
