"""Snapshot tests of the workbench main screen at 80x24 (tabs) and 160x48 (all panes), fixed model and seed."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("pytest_textual_snapshot")

from workbench.bench import Bench, BenchOptions  # noqa: E402
from workbench.tui.app import WorkbenchApp  # noqa: E402


def _app(stories260k) -> WorkbenchApp:
    return WorkbenchApp(Bench(BenchOptions(model=str(stories260k), prompt="1 2 3", seed=1)))


async def _three_tokens(pilot) -> None:
    app = pilot.app
    await pilot.press("n", "n", "n")
    end = time.monotonic() + 30
    while not (len(app.driver.bench.machine.generated[0]) == 3 and app.driver.jobs.empty() and app.driver.idle.is_set()):
        assert time.monotonic() < end
        await asyncio.sleep(0.02)
    app._render_frame(force=True)
    await pilot.pause()


def test_main_screen_80x24(snap_compare, stories260k):
    assert snap_compare(_app(stories260k), terminal_size=(80, 24), run_before=_three_tokens)


def test_main_screen_160x48(snap_compare, stories260k):
    assert snap_compare(_app(stories260k), terminal_size=(160, 48), run_before=_three_tokens)
