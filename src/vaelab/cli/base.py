"""The `vaelab` app, what its commands share (one-line errors, shared options), and the entry point that turns
every error a user can act on into one line on stderr and an exit status, never a traceback.

The commands are listed once, in COMMANDS: a command's module (and with it PyTorch, scikit-learn or matplotlib) is
imported only when that command runs, completes or shows its own help; `vaelab --help` reads the table alone."""
from __future__ import annotations

import difflib
import importlib
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, NoReturn

import typer
from typer import Abort
from typer.core import TyperCommand, TyperGroup

from vaelab.errors import VaelabError

try:  # typer >= 0.22 carries its own copy of click
    from typer._click import Context
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on the real click
    from click import Context
    from click.exceptions import ClickException, UsageError
    NoArgsIsHelpError = ()


@dataclass(frozen=True)
class CommandRow:
    module: str  # the module whose import adds the command to `app`
    help: str  # the first line of the command's docstring (tests/test_cli_lazy.py holds them equal)


# every command, in the order `vaelab --help` lists them
COMMANDS: dict[str, CommandRow] = {
    "train": CommandRow("vaelab.cli.train",
                        "Train a VAE from a YAML config and/or flags; writes OUT/NAME/ (config, metrics, "
                        "checkpoints)."),
    "resume": CommandRow("vaelab.cli.train",
                        "Continue an interrupted run from its newest valid checkpoint."),
    "info": CommandRow("vaelab.cli.analysis",
                        "Summarise a run (status, config, last metrics, checkpoints, analyses), or where a study "
                        "stands."),
    "analyze": CommandRow("vaelab.cli.analysis",
                        "Measure a trained model's latent space with each analysis (--list shows them)."),
    "diagnose": CommandRow("vaelab.cli.analysis",
                        "Why does this model generate badly (or well)? A table of measurements and a verdict."),
    "sample": CommandRow("vaelab.cli.sample",
                        "Sample from a fitted fix without refitting it."),
    "study": CommandRow("vaelab.cli.studies",
                        "Run a study: a grid of runs and the analyses that compare them, ending in "
                        "OUT/NAME/report.html."),
    "report": CommandRow("vaelab.cli.studies",
                        "Write (or rewrite) FOLDER/report.html from the study's runs and analyses."),
    "reproduction": CommandRow("vaelab.cli.studies",
                        "Keep a finished study as a reproduction: a page with its scorecard, findings and figures."),
    "scorecard": CommandRow("vaelab.cli.studies",
                        "Check the document's claims against a study's runs: held, did not hold, or inconclusive."),
    "doctor": CommandRow("vaelab.cli.doctor",
                        "Show this machine and the precision and compile decisions its probes cached here."),
    "data": CommandRow("vaelab.cli.data",
                        "Datasets: list, fetch (with checksums), info, add your own."),
}

_LISTING = "vaelab.listing"  # set in a context's meta while the group's help or command names are being written


@contextmanager
def _listing(ctx: Context) -> Iterator[None]:
    ctx.meta[_LISTING] = True
    try:
        yield
    finally:
        ctx.meta.pop(_LISTING, None)


class CommandTable(TyperGroup):
    """The `vaelab` group: names its commands from COMMANDS and imports a command's module on first use."""

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, name: str) -> Any:
        """The command ``name``, its module imported on first use; while the group's help or command names are being
        written, its row of COMMANDS instead (imported or not: a listing shows the table's one line)."""
        if name in COMMANDS and ctx.meta.get(_LISTING):
            return TyperCommand(name, help=COMMANDS[name].help)
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(COMMANDS[name].module)
            self.commands[name] = typer.main.get_group(app).commands[name]
        return self.commands.get(name)

    def resolve_command(self, ctx: Context, args: list[str]) -> Any:
        """As typer's, but a mistyped name is matched against every command, imported or not."""
        name = args[0] if args else ""
        if name not in COMMANDS and not name.startswith("-") and not ctx.resilient_parsing:
            close = ", ".join(map(repr, difflib.get_close_matches(name, COMMANDS)))
            ctx.fail(f"No such command {name!r}." + (f" Did you mean {close}?" if close else ""))
        return super().resolve_command(ctx, args)

    def format_help(self, ctx: Context, formatter: Any) -> None:
        with _listing(ctx):
            super().format_help(ctx, formatter)

    def shell_complete(self, ctx: Context, incomplete: str) -> list:
        with _listing(ctx):
            return super().shell_complete(ctx, incomplete)


def _top_level() -> None:
    """Train variational autoencoders and measure what their latent space is doing."""


# A callback makes `vaelab` a group while no command module is imported yet; typer adds --install-completion.
app = typer.Typer(cls=CommandTable, callback=_top_level, help=_top_level.__doc__, no_args_is_help=True,
                  pretty_exceptions_enable=False)


def printable(message: object) -> str:
    """``message`` on one line: control characters (newlines, NEL, NUL, ... from user input) shown escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(message))


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop the command: ``error: MESSAGE`` on stderr, exit status ``code``."""
    typer.echo(f"error: {printable(message)}", err=True)
    raise typer.Exit(code)


def err(message: str) -> None:
    """A progress or context line, on stderr (stdout stays the command's answer)."""
    typer.echo(message, err=True)


# --- options more than one command takes ---------------------------------------------------------------------
def progress_option(help: str = "Progress bar (default: on a terminal).") -> Any:
    return typer.Option(None, "--progress/--no-progress", help=help)


def json_option(what: str) -> Any:
    return typer.Option(False, "--json", help=f"Print {what} as JSON.")


# --- the entry point -----------------------------------------------------------------------------------------
OUT_OF_MEMORY = ("error: out of memory; analyses hold at most VAELAB_CODE_MEMORY_GB (default 1.0) GB of codes at once: "
                 "set it lower, or ask for fewer points or samples (`--quick`, `--set samples=...`)")


def _given_value(param) -> str:
    """' (got VALUE)' for the option ``param`` as it appears on the command line, or ''."""
    for opt in getattr(param, "opts", None) or []:
        for i, arg in enumerate(sys.argv):
            if arg == opt and i + 1 < len(sys.argv):
                return f" (got {sys.argv[i + 1]!r})"
            if arg.startswith(opt + "="):
                return f" (got {arg.split('=', 1)[1]!r})"
    return ""


def _one_line(message: str, code: int) -> NoReturn:
    typer.echo(message, err=True)
    sys.exit(code)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback."""
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"  # one line each
    try:
        code = app(standalone_mode=False, prog_name="vaelab")  # also under `python -m vaelab`
    except NoArgsIsHelpError as exc:  # `vaelab` or `vaelab data` alone: the help text (rich has printed it already)
        if exc.format_message().strip():
            typer.echo(exc.format_message())
        sys.exit(0)
    except UsageError as exc:  # a bad flag or argument value: click's message, on one line, with the value given
        where = exc.ctx.command_path if exc.ctx else "vaelab"
        message = " ".join(exc.format_message().replace("Value error, ", "").split())
        given = _given_value(getattr(exc, "param", None))
        _one_line(printable(f"error: {message}{given} (see `{where} --help`)"), 2)
    except ClickException as exc:
        _one_line(printable(f"error: {' '.join(exc.format_message().split())}"), exc.exit_code)
    except Abort:
        _one_line("error: aborted", 130)
    except VaelabError as exc:
        _one_line(f"error: {printable(exc)}", exc.exit_code)
    except MemoryError:
        _one_line(OUT_OF_MEMORY, 2)
    except RuntimeError as exc:  # PyTorch's allocator reports as RuntimeError
        if "allocate" not in str(exc) and "out of memory" not in str(exc):
            raise
        _one_line(OUT_OF_MEMORY, 2)
    except OSError as exc:  # a file system refusal that no vaelab layer named more precisely
        where = f"{exc.filename}: " if exc.filename else ""
        _one_line(printable(f"error: {where}{exc.strerror or exc}"), 2)
    sys.exit(code if isinstance(code, int) else 0)
