"""The ``asicbench`` command line: thin typer commands over the core.

Every command catches :class:`~workbench.errors.WorkbenchError` here, at the edge,
and prints its one line with exit code 2. The TUI is imported only inside the
command that opens it.
"""

from __future__ import annotations

import sys

import typer

from .. import __version__
from ..errors import WorkbenchError

app = typer.Typer(
    name="asicbench",
    help="A terminal workbench for LLM-inference hardware: emulate chips token by token, watch them, project big models.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"asicbench {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """asicbench: emulate LLM-inference chips token by token, watch them, project big models."""
    if ctx.invoked_subcommand is None:
        from .default import open_default

        open_default()


_registered = False


def _register() -> None:
    """Attach every sub-app and command to :data:`app` (once; tests and ``main`` may both call it)."""
    global _registered
    if _registered:
        return
    _registered = True
    from . import chips, models

    app.add_typer(chips.app, name="chips")
    app.add_typer(models.app, name="models")
    for module_name in ("run", "tui_cmd", "session_cmds", "project_cmds", "sweep_cmd", "doctor"):
        try:
            module = __import__(f"{__name__}.{module_name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module_name}":
                continue
            raise
        module.register(app)


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print one line to stderr and return the Exit to raise."""
    print(f"asicbench: {message}", file=sys.stderr)
    return typer.Exit(code)


def _usage_line(exc) -> str:
    """Click's usage error as one line: command, problem, where to look (its default is a boxed block)."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "asicbench"
    where = path.partition(" ")[2]
    return f"{where + ': ' if where else ''}{exc.format_message()} (see '{path} --help')"


def main(argv: list[str] | None = None) -> None:
    """The console entry point: run the command, turn every kind of bad input into one line and exit 2."""
    from typer.exceptions import Abort

    try:
        from typer._click import exceptions as click_exc  # typer >= 0.20 vendors click
    except ImportError:  # pragma: no cover - older typer depends on click itself
        from click import exceptions as click_exc

    _register()
    try:
        rv = app(args=argv, prog_name="asicbench", standalone_mode=False)
    except click_exc.NoArgsIsHelpError:  # the help text is already printed
        sys.exit(2)
    except click_exc.ClickException as exc:
        message = _usage_line(exc) if isinstance(exc, click_exc.UsageError) else exc.format_message()
        print(f"asicbench: {message}", file=sys.stderr)
        sys.exit(2)
    except Abort:
        print("asicbench: aborted", file=sys.stderr)
        sys.exit(1)
    except WorkbenchError as exc:
        print(f"asicbench: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("asicbench: interrupted", file=sys.stderr)
        sys.exit(130)
    # without standalone mode a typer.Exit comes back as its code; a normal return is None
    sys.exit(rv if isinstance(rv, int) else 0)
