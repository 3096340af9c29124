"""Every shipped session played in the TUI, notes continued as a reader would: the marks and expectations the
TUI keeps are the headless replay's (tests/golden/), number for number."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")

from workbench.bench import Bench  # noqa: E402
from workbench.cli.session_cmds import tui_session  # noqa: E402
from workbench.session.spec import load_session  # noqa: E402
from workbench.tui.app import WorkbenchApp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = sorted((ROOT / "sessions").glob("*.toml"))
COMPARED = ("tokens", "tokens_per_s", "tokens_per_s_per_user", "ms_per_token", "joules_per_token", "ttft_s",
            "kv_tokens_spilled", "offchip_bytes", "text")


def golden_marks(path: Path) -> dict:
    """The marks of the headless replay as kept in tests/golden (JSON, so floats as the replay's --json)."""
    return json.loads((ROOT / "tests" / "golden" / f"{path.stem}.json").read_text())["marks"]


async def play(pilot, app, timeout_s: float = 240.0) -> int:
    """Drive the script to its end, pressing space at every note; returns how many notes were passed."""
    d = app.driver
    notes = 0
    end = time.monotonic() + timeout_s
    while True:
        assert time.monotonic() < end, "the session did not finish"
        await asyncio.sleep(0.02)
        if d.waiting_note.is_set():
            notes += 1
            await pilot.press("space")
            continue
        if not d.script and d.jobs.empty() and d.idle.is_set() and not d.running.is_set():
            return notes


@pytest.mark.parametrize("path", SESSIONS, ids=[p.stem for p in SESSIONS])
def test_shipped_session_plays_in_the_tui_like_the_headless_replay(path):
    spec = load_session(path)
    options, steps = tui_session(spec)
    golden = golden_marks(path)

    async def go():
        app = WorkbenchApp(Bench(options), session=steps)
        async with app.run_test(size=(120, 36), notifications=True) as pilot:
            notes = await play(pilot, app)
            assert notes == sum(1 for name, _ in steps if name == "note")
            errors = [n.message for n in app._notifications if n.severity == "error"]
            assert not errors
            checked = app.driver.checked
            assert len(checked) == sum(1 for name, _ in steps if name == "expect")
            assert all(ok for rows in checked for _, _, ok, _ in rows)
            marks = app.driver.ledger.marks
            assert set(marks) == set(golden)
            for name, want in golden.items():
                got = json.loads(json.dumps({k: marks[name].get(k) for k in COMPARED}))
                assert got == {k: want.get(k) for k in COMPARED}, name
            await pilot.press("q")

    asyncio.run(go())
