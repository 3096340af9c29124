"""What ``asicbench`` with no arguments does: open the workbench on the default chip and model."""

from __future__ import annotations


def open_default() -> None:
    from ..bench import BenchOptions

    try:
        from ..tui.app import run_app
    except ModuleNotFoundError:  # no TUI in this build: show the headless default instead
        from ..cli import app

        app(["run"], standalone_mode=True)
        return
    run_app(BenchOptions())
