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


def _register() -> None:
    from . import chips, models

    app.add_typer(chips.app, name="chips")
    app.add_typer(models.app, name="models")
    for module_name in ("run", "tui_cmd", "session_cmds", "project_cmds", "doctor"):
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


def main() -> None:
    _register()
    try:
        app()
    except WorkbenchError as exc:
        print(f"asicbench: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("asicbench: interrupted", file=sys.stderr)
        sys.exit(130)
