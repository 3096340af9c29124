"""``asicbench replay session.toml``: run a session headless (or in the TUI) and write its outputs.

Exit codes: 0 every expectation holds, 1 one fails, 2 bad input, 130 interrupted (nothing written).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..errors import WorkbenchError
from . import fail


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, stderr=stderr)


def _print_outcome(console, outcome) -> None:
    from rich.markup import escape

    st = outcome.step
    if st.name == "note":
        console.print(f"[bold cyan]{st.number:>3} note[/] [italic]{escape(outcome.message)}[/]")
        return
    style = "green" if outcome.ok else "bold red"
    console.print(f"[dim]{st.number:>3}[/] [bold]{st.name}[/] {escape(outcome.message)}",
                  style=None if not outcome.checks else style)
    for _, _, ok, msg in outcome.checks:
        console.print(f"      {'[green]✓' if ok else '[bold red]✗'}[/] {escape(msg)}")


def _print_report(console, result) -> None:
    from rich.table import Table

    from ..session.export import REPORT_METRICS, _fmt

    if result.marks:
        t = Table(title="Marks (figures since the previous mark, in emulated chip time; a project step's are projected)", title_justify="left")
        t.add_column("metric")
        for name in result.marks:
            t.add_column(name, justify="right")
        for key in REPORT_METRICS:
            t.add_row(key, *(_fmt(result.marks[n][key]) for n in result.marks))
        console.print(t)
    checks = sum(len(o.checks) for o in result.outcomes)
    if result.failures:
        console.print(f"[bold red]{len(result.failures)} of {checks} expectation(s) failed:[/]")
        for _, (_, _, _, msg) in result.failures:
            console.print(f"  ✗ {msg}", markup=False)
    else:
        console.print(f"[green]all {checks} expectation(s) hold[/]")


def replay_command(
    session: str = typer.Argument(..., help="A session file, or the name of a bundled session."),
    as_json: bool = typer.Option(False, "--json", help="Print one machine-readable result (identical on every replay)."),
    trace: Path = typer.Option(None, "--trace", help="Write a Chrome/Perfetto trace (JSON) of the first token steps."),
    trace_tokens: int = typer.Option(4, "--trace-tokens", help="Token steps traced op by op (bounds the trace)."),
    csv_dir: Path = typer.Option(None, "--csv", help="Write tokens.csv, tiles.csv and links.csv into this folder."),
    report: Path = typer.Option(None, "--report", help="Write a markdown report."),
    tui: bool = typer.Option(False, "--tui", help="Play the session in the TUI, pausing at each note."),
) -> None:
    """Replay a session: run its steps, check its expectations, export what happened."""
    from ..session import load_session
    from ..session.export import TraceRecorder, result_json, write_csv, write_report, write_trace
    from ..session.runner import Replay

    try:
        spec = load_session(session)
    except WorkbenchError as exc:
        raise fail(str(exc))
    if trace_tokens < 1:
        raise fail(f"--trace-tokens must be at least 1, got {trace_tokens}")
    for target in (trace, report):
        if target is not None and not target.parent.is_dir():
            raise fail(f"{target}: folder {target.parent} does not exist")
        if target is not None and target.is_dir():
            raise fail(f"{target}: is a folder, expected a file path")
    if csv_dir is not None and csv_dir.exists() and not csv_dir.is_dir():
        raise fail(f"{csv_dir}: exists and is not a folder")
    if csv_dir is not None and not csv_dir.exists():
        ancestor = next((p for p in csv_dir.parents if p.exists()), None)
        if ancestor is not None and not ancestor.is_dir():
            raise fail(f"{csv_dir}: cannot create the folder: {ancestor} is a file")
    if tui:
        _open_tui(spec)
        return
    console = _console(stderr=as_json)
    recorder = TraceRecorder(max_tokens=trace_tokens) if trace is not None else None
    runner = Replay(spec, on_outcome=lambda o: _print_outcome(console, o), trace=recorder)
    if spec.title:
        console.print(f"[bold]{spec.title}[/]", highlight=False)
    try:
        result = runner.run()
    except WorkbenchError as exc:
        raise fail(str(exc))
    except KeyboardInterrupt:
        done = len(runner.outcomes)
        raise fail(f"interrupted after {done} of {len(spec.steps)} steps; no output file written", code=130)
    try:
        if trace is not None:
            write_trace(trace, recorder, spec.title)
        if csv_dir is not None:
            write_csv(csv_dir, result)
        if report is not None:
            write_report(report, result)
    except WorkbenchError as exc:
        raise fail(str(exc))
    except OSError as exc:  # e.g. the --csv folder cannot be created (read-only, no space)
        raise fail(f"{exc.filename or csv_dir}: cannot write ({exc.strerror})")
    except KeyboardInterrupt:
        raise fail("interrupted while writing outputs; files already complete are kept, none is partial", code=130)
    if as_json:
        sys.stdout.write(result_json(result))
    else:
        _print_report(console, result)
    for label, target in (("trace", trace), ("csv", csv_dir), ("report", report)):
        if target is not None:
            console.print(f"{label}: {target}", markup=False)
    if not result.ok:
        raise typer.Exit(1)


def tui_session(spec):
    """The options and (command, value) steps the TUI plays for ``spec``: files named relative to the session's
    folder become absolute paths, so the app finds them from any working directory."""
    from dataclasses import replace

    o = spec.options
    base = spec.base or Path(".")
    resolved = {k: str((base / v).resolve()) for k, v in (("chip", o.chip), ("model", o.model), ("tokenizer", o.tokenizer))
                if v and not Path(v).is_absolute() and (base / v).exists()}
    steps = []
    for st in spec.steps:
        value = st.value
        if st.name in ("chip", "model") and isinstance(value, str) and (base / value).exists():
            value = str((base / value).resolve())
        steps.append((st.name, value))
    return replace(o, **resolved), steps


def _open_tui(spec) -> None:
    try:
        from ..tui.app import run_app
    except ModuleNotFoundError as exc:
        raise fail(f"the TUI is not available ({exc.name} is missing)")
    options, steps = tui_session(spec)
    run_app(options, session=steps)


def register(app: typer.Typer) -> None:
    app.command("replay")(replay_command)
