"""``asicbench sweep``: evaluate a design-space grid in parallel, write a resumable CSV, plot the Pareto front."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import typer

from ..errors import WorkbenchError
from . import fail

MARKERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
COLOURS = ("cyan", "magenta", "yellow", "green", "blue", "red")


def scatter(rows: list[dict[str, str]], fronts: dict[str, list[dict[str, str]]], *, width: int = 64,
            height: int = 16) -> tuple[list[list[tuple[str, int]]], tuple[float, float, float, float]]:
    """A log-log character grid: (char, group) per cell, group -1 for ordinary points, i for front i's points.

    x = tokens/s per user, y = J/token (low at the bottom). Returns the grid and (x0, x1, y0, y1) in log10.
    """
    from ..sweep import X_COLUMN, Y_COLUMN

    def pairs(items):
        for row in items:
            try:
                x, y = float(row[X_COLUMN]), float(row[Y_COLUMN])
            except (KeyError, ValueError):
                continue
            if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y) and not row.get("error") \
                    and row.get("fits", "true") != "false":
                yield math.log10(x), math.log10(y)

    every = list(pairs(rows))
    grid = [[(" ", -1)] * width for _ in range(height)]
    if not every:
        return grid, (0.0, 1.0, 0.0, 1.0)
    x0, x1 = min(p[0] for p in every), max(p[0] for p in every)
    y0, y1 = min(p[1] for p in every), max(p[1] for p in every)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def put(x, y, char, group):
        col = min(width - 1, int((x - x0) / (x1 - x0) * (width - 1) + 0.5))
        line = height - 1 - min(height - 1, int((y - y0) / (y1 - y0) * (height - 1) + 0.5))
        if group >= 0 or grid[line][col][1] < 0:
            grid[line][col] = (char, group)

    for x, y in every:
        put(x, y, "·", -1)
    for g, items in enumerate(fronts.values()):
        for x, y in pairs(items):
            put(x, y, MARKERS[g % len(MARKERS)], g)
    return grid, (x0, x1, y0, y1)


def _plot(console, rows, fronts) -> None:
    from rich.text import Text

    width = max(32, min(96, console.width - 14))
    grid, (x0, x1, y0, y1) = scatter(rows, fronts, width=width)
    console.print(Text("J/token (log) vs tokens/s per user (log); letters: Pareto front, ·: other points", style="bold"))
    for i, line in enumerate(grid):
        label = f"{10 ** y1:9.3g} ┤" if i == 0 else f"{10 ** y0:9.3g} ┤" if i == len(grid) - 1 else " " * 10 + "│"
        text = Text(label, style="dim")
        for char, group in line:
            text.append(char, style=COLOURS[group % len(COLOURS)] if group >= 0 else "bright_black")
        console.print(text)
    console.print(Text(" " * 10 + "└" + "─" * len(grid[0]), style="dim"))
    left, right = f"{10 ** x0:.3g}", f"{10 ** x1:.3g} tok/s/user"
    console.print(Text(" " * 11 + left + " " * max(1, len(grid[0]) - len(left) - len(right)) + right, style="dim"))
    legend = Text("  ")
    for g, model in enumerate(fronts):
        legend.append(f"{MARKERS[g % len(MARKERS)]} {model}  ", style=COLOURS[g % len(COLOURS)])
    console.print(legend)


def _table(console, sweep, fronts, top: int) -> None:
    """Front rows per model (evenly spaced when there are more than ``top``), with the swept values that differ."""
    from rich.table import Table

    from ..sweep import X_COLUMN, Y_COLUMN

    shown, ties = {}, {}
    for model, items in fronts.items():
        distinct: list[dict[str, str]] = []
        for row in items:  # equal points are adjacent on the front: show the first, count the rest
            if distinct and (row[X_COLUMN], row[Y_COLUMN]) == (distinct[-1][X_COLUMN], distinct[-1][Y_COLUMN]):
                ties[distinct[-1]["point_id"]] = ties.get(distinct[-1]["point_id"], 0) + 1
            else:
                distinct.append(row)
        shown[model] = distinct if len(distinct) <= top else \
            [distinct[round(i * (len(distinct) - 1) / (top - 1))] for i in range(top)]
    every = [row for items in shown.values() for row in items]
    swept = [c for c in sweep.columns()[2:] if any(c == a.name or c.startswith(a.name + ".") for a in sweep.axes)]
    kept: list[str] = []
    for c in swept:
        values = [row.get(c, "") for row in every]
        if len(set(values)) < 2:
            continue  # constant on the front: not news
        # a column fixed by one already shown (chip_link_gb_per_s by chips in a system axis) adds nothing
        if any(len({(row.get(k, ""), v) for row, v in zip(every, values)}) == len({row.get(k, "") for row in every})
               for k in kept):
            continue
        kept.append(c)
    swept = kept
    short = [c.rsplit(".", 1)[-1] for c in swept]
    short = [s if short.count(s) == 1 else c for s, c in zip(short, swept)]
    table = Table(title=f"Pareto front ({', '.join(f'{len(v)} points for {k}' for k, v in fronts.items())})",
                  title_justify="left")
    for name in ("", "point", *short, "tok/s/user", "tok/s", "J/token", "bound"):
        table.add_column(name, justify="left" if name in ("bound", "") else "right", no_wrap=name != "bound",
                         min_width=None if name == "bound" else max(1, min(len(name), 10)))
    for g, items in enumerate(shown.values()):
        for row in items:
            pid = row["point_id"] + (f" (+{ties[row['point_id']]} equal)" if row["point_id"] in ties else "")
            table.add_row(MARKERS[g % len(MARKERS)], pid, *(row.get(c, "") for c in swept),
                          _g(row.get(X_COLUMN)), _g(row.get("tokens_per_s")), _g(row.get(Y_COLUMN)),
                          row.get("bound", ""), style=COLOURS[g % len(COLOURS)])
    console.print(table)


def _g(text) -> str:
    try:
        return f"{float(text):.4g}"
    except (TypeError, ValueError):
        return text or ""


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep_command(
        file: Path = typer.Argument(..., help="A sweep file (see docs/sweeps.md and sweeps/*.toml)."),
        output: Path = typer.Option(None, "-o", "--output", help="Results CSV (default: NAME.csv here, NAME from the sweep file)."),
        jobs: int = typer.Option(None, "-j", "--jobs", help="Local worker processes (default: every core)."),
        scheduler: str = typer.Option(None, "--scheduler", help="Run on a Dask cluster at this scheduler address."),
        restart: bool = typer.Option(False, "--restart", help="Ignore results already written and start over."),
        top: int = typer.Option(12, "--top", help="Front rows shown per model in the table."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (with the front) instead of the plot."),
    ) -> None:
        """Evaluate a grid of chip variants x models x run options; write CSV (+ Parquet) and show the Pareto front."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from ..sweep import SweepInterrupted, front_rows, load_sweep, run_sweep
        from ..sweep.store import read_results

        if top < 1:
            raise fail(f"--top must be at least 1, got {top}")
        out = output or Path(file.stem + ".csv")
        err = Console(stderr=True, highlight=False)
        try:
            sweep = load_sweep(file)
            # no auto-refresh thread: the worker pool forks from this process, and a fork should not copy a thread
            bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("points"),
                           TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=err,
                           auto_refresh=False, transient=as_json)
            task = bar.add_task("sweep", total=sweep.n_points)
            shown = [0.0]

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done)
                now = time.monotonic()
                if now - shown[0] > 0.1 or done == total:
                    bar.refresh()
                    shown[0] = now

            with bar:
                summary = run_sweep(sweep, out, jobs=jobs, scheduler=scheduler, restart=restart, progress=progress)
            rows = read_results(summary.path)
        except SweepInterrupted as stop:
            print(f"asicbench: interrupted; {stop.done} of {stop.total} points are in {stop.path} "
                  f"(rerun the same command to resume)", file=sys.stderr)
            raise typer.Exit(130)
        except WorkbenchError as exc:
            raise fail(str(exc))
        fronts = front_rows(rows)
        rate = summary.evaluated / summary.seconds if summary.seconds > 0 else 0.0
        if as_json:
            print(json.dumps({
                "sweep": str(file), "output": str(summary.path), "parquet": str(summary.parquet or ""),
                "points": summary.points, "evaluated": summary.evaluated, "resumed": summary.resumed,
                "errors": summary.errors, "seconds": round(summary.seconds, 3), "points_per_s": round(rate, 1),
                "pareto": fronts,
            }, indent=2))
            return
        console = Console(highlight=False)
        _plot(console, rows, fronts)
        _table(console, sweep, fronts, top)
        console.print(f"{summary.points} points ({summary.evaluated} evaluated now at {rate:.0f}/s, "
                      f"{summary.resumed} from an earlier run, {summary.errors} with errors) -> {summary.path}"
                      + (f" and {summary.parquet}" if summary.parquet else ""))
