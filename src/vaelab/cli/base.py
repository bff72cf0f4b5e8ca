"""The `vaelab` app, what its commands share (one-line errors, shared options), and the entry point that turns
every error a user can act on into one line on stderr and an exit status, never a traceback."""
from __future__ import annotations

import sys
import warnings
from typing import Any, NoReturn

import typer
from typer import Abort

from vaelab.errors import VaelabError

try:  # typer >= 0.22 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on the real click
    from click.exceptions import ClickException, UsageError
    NoArgsIsHelpError = ()

app = typer.Typer(help="Train variational autoencoders and measure what their latent space is doing.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


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
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `vaelab` or `vaelab data` alone: the help text
        typer.echo(exc.ctx.get_help())
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
