"""The `vaelab` command table (cli/base.py COMMANDS): every command is in it, with its module and the first line of
its docstring, so the table cannot drift from the commands; `vaelab --help` and `vaelab data list` start without
the libraries they do not use; completion and mistyped names still see every command."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
import typer

from conftest import run_cli
from vaelab.cli import COMMANDS, app
from vaelab.cli.analysis import MEASURED_FLAGS

HEAVY = ("torch", "sklearn", "matplotlib")


def all_commands() -> dict:
    """Every command `app` has once each module of the table is imported: {name: click command}."""
    for entry in COMMANDS.values():
        importlib.import_module(entry.module)
    return typer.main.get_group(app).commands


def declared_in(name: str) -> set[str]:
    """The modules that declare command ``name`` (a group: its subcommands' modules)."""
    infos = [c for c in app.registered_commands if (c.name or c.callback.__name__.replace("_", "-")) == name]
    for group in app.registered_groups:
        if group.name == name:
            infos += group.typer_instance.registered_commands
    return {info.callback.__module__ for info in infos}


def test_every_command_is_in_the_table_once_with_its_module():
    commands = all_commands()
    assert list(commands) and set(commands) == set(COMMANDS)
    for name, entry in COMMANDS.items():
        assert declared_in(name) == {entry.module}, name


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_tables_help_is_the_first_line_of_the_commands_own(name):
    own = all_commands()[name].help
    assert own and own.strip().splitlines()[0].strip() == COMMANDS[name].help


def started(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`vaelab ARGS` in a fresh interpreter: the process, and which of HEAVY and vaelab.cli.* modules it imported."""
    script = ("import json, sys\nfrom vaelab.cli import main\nsys.argv = ['vaelab', *sys.argv[1:]]\ntry:\n    main()\n"
              "except SystemExit:\n    pass\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
              f"{HEAVY!r} and '.' not in m or m.startswith('vaelab.cli.'))), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    return proc, json.loads(proc.stderr.strip().splitlines()[-1])


def test_top_level_help_reads_the_table_alone():
    proc, imported = started("--help")
    assert imported == ["vaelab.cli.base"], imported
    listed = [line.strip("│ ").split(" ")[0] for line in proc.stdout.splitlines()]
    assert [n for n in listed if n in COMMANDS] == list(COMMANDS)  # every command, in the table's order
    text = " ".join(proc.stdout.replace("│", " ").split())
    assert all(" ".join(entry.help.split()) in text for entry in COMMANDS.values())


@pytest.mark.parametrize("args, loaded, absent", [(["train", "--help"], {"torch", "vaelab.cli.train"}, set()),
                                                  (["data", "list"], {"vaelab.cli.data"}, {"torch"})])
def test_a_command_imports_its_own_module_and_not_the_analyses(args, loaded, absent):
    proc, imported = started(*args)
    assert proc.stdout and not ({"sklearn", "matplotlib"} | absent) & set(imported), imported
    assert loaded <= set(imported) and {"vaelab.cli.analysis", "vaelab.cli.studies"}.isdisjoint(imported)


def completions(words: str) -> tuple[list[str], list[str]]:
    proc, imported = started(env={"_VAELAB_COMPLETE": "complete_bash", "COMP_WORDS": words,
                                  "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))})
    return proc.stdout.split(), imported


def test_completion_names_commands_from_the_table_and_options_from_the_command():
    names, imported = completions("vaelab ")
    assert names == list(COMMANDS) and not set(HEAVY) & set(imported)
    assert completions("vaelab dia")[0] == ["diagnose"]
    options, imported = completions("vaelab train --ep")
    assert options == ["--epochs"] and "vaelab.cli.train" in imported


def test_a_mistyped_command_is_matched_against_every_command(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "diagnoze")
    assert code == 2 and err == "error: No such command 'diagnoze'. Did you mean 'diagnose'? (see `vaelab --help`)\n"


@pytest.mark.parametrize("command", ["analyze", "diagnose"])
def test_analyze_and_diagnose_take_the_model_flags_declared_once(command, monkeypatch, capsys):
    params = [p.name for p in all_commands()[command].params]
    assert params[:len(MEASURED_FLAGS)] == list(MEASURED_FLAGS)
    code, _, err = run_cli(monkeypatch, capsys, command, "--model", "m.py:f", "--data", "digits",
                           "--input-range", "1,0")
    assert code == 2 and err.startswith("error: --input-range '1,0' is not LOW,HIGH"), err
