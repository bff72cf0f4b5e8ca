"""The `vaelab` command: one module per command group, each thin (parse, call the library, print).

    base.py         the app and its table of commands (COMMANDS: name, module, one line of help), one-line errors
                    and exit statuses (main), options several commands share
    run_options.py  `vaelab train`'s flags, checked against the run config's schema
    train.py        train, resume
    analysis.py     analyze, diagnose, info
    studies.py      study, report, reproduction, scorecard
    sample.py       sample (from a fitted fix)
    data.py         data list, data add, data fetch, data info
    doctor.py       doctor (what this machine measured and chose)

Importing this package imports base.py alone: a command's module is imported when that command is used.
"""
from vaelab.cli.base import COMMANDS, app, main, printable

__all__ = ["COMMANDS", "app", "main", "printable"]
