"""The workbench TUI driven with Pilot: panes show what the counters say; commands, errors, run/pause, sessions."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("textual")

from textual.widgets import Input, OptionList  # noqa: E402

from workbench.bench import Bench, BenchOptions  # noqa: E402
from workbench.commands import COMMANDS  # noqa: E402
from workbench.tui.app import WorkbenchApp  # noqa: E402
from workbench.tui.fmt import nbytes  # noqa: E402
from workbench.tui.panes.base import Lines, ScrollLines  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(stories260k) -> Bench:
    return Bench(BenchOptions(model=str(stories260k), prompt="1 2 3"))


async def settle(pilot, app, timeout: float = 20.0) -> None:
    """Wait until the machine thread has drained its queue, then let the refresh timer draw."""
    await pilot.pause(0.05)
    end = time.monotonic() + timeout
    while not (app.driver.jobs.empty() and app.driver.idle.is_set() and not app.driver.running.is_set()):
        assert time.monotonic() < end, "the machine thread did not settle"
        await asyncio.sleep(0.02)
    await pilot.pause(0.15)
    app._render_frame(force=True)
    await pilot.pause()


async def answer(pilot, app, text: str) -> None:
    """Type ``text`` into the open value dialog and press enter, then let the machine thread act on it."""
    inp = app.screen.query_one(Input)
    inp.value = text
    inp.focus()
    await pilot.press("enter")
    await settle(pilot, app)


async def save_session(pilot, path) -> None:
    """ctrl+s and the file name: what the user did so far, written as a session file."""
    await pilot.press("ctrl+s")
    await pilot.pause()
    app = pilot.app
    app.screen.query_one(Input).value = str(path)
    await pilot.press("enter")
    await pilot.pause()


def text_of(app, selector: str) -> str:
    w = app.screen.query_one(selector)
    return w.plain if isinstance(w, (Lines, ScrollLines)) else str(w.render())


def test_step_tokens_panes_follow_counters(bench):
    async def go():
        app = WorkbenchApp(bench)
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("n", "n", "n")
            await settle(pilot, app)
            m = app.driver.bench.machine
            assert len(m.generated[0]) == 3
            c = m.counters
            status = text_of(app, "#status")
            assert f"pos {m.pos}/{m.plan.context}" in status
            detail = text_of(app, "#sram-detail")
            assert f"MACs {int(c.tile_macs[0].sum()):,} / " in detail
            assert f"sent {nbytes(c.sent[0])} recv {nbytes(c.recv[0])}" in detail
            out = text_of(app, "#output-text")
            assert " ".join(str(t) for t in m.generated[0]) in out
            kv = text_of(app, "#kv-text")
            assert f"{m.pos} of {m.plan.context} positions" in kv
            # the mesh pane's hottest link for the last token is the largest per-link delta of the counters
            frame = app.driver.latest
            lid = int(frame.last.link_bytes.argmax())
            t, d = divmod(lid, 4)
            assert f"t{t}→" in text_of(app, "#mesh-text")
            assert nbytes(frame.last.link_bytes[lid]) in text_of(app, "#mesh-text")
            assert frame.last.link_bytes.sum() < c.link_bytes.sum()  # last token, not cumulative
            # select another tile with the arrows: the detail follows
            app.screen.query_one("#sram-grid").focus()
            await pilot.press("right", "down")
            await pilot.pause()
            cols = m.plan.topology.cols
            assert f"tile {cols + 1} (row 1, col 1)" in text_of(app, "#sram-detail")
            # single-stepping ops highlights the next op in the program pane
            await pilot.press("o", "o")
            await settle(pilot, app)
            assert m.in_pass and m.pc == 2
            assert "next op 2 of" in text_of(app, "#program-head")
            await pilot.press("q")

    asyncio.run(go())


def test_change_chip_precision_and_bad_model(bench, tmp_path):
    async def go():
        app = WorkbenchApp(bench)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await pilot.press("n")
            await settle(pilot, app)
            await pilot.press("c")
            await pilot.pause()
            assert "groq-lpu" in [o.id for o in app.screen.query_one(OptionList).options]
            await answer(pilot, app, "groq-lpu")
            assert app.driver.bench.chip.name == app.driver.bench.machine.chip.name
            assert "teaching-4x4 -> groq-lpu" in text_of(app, "#status")
            assert app.driver.bench.machine.pos == 0
            # precision through the picker: highlight int4 and choose it
            await pilot.press("p")
            await pilot.pause()
            ol = app.screen.query_one(OptionList)
            ol.highlighted = [o.id for o in ol.options].index("int4")
            await pilot.press("enter")
            await settle(pilot, app)
            assert app.driver.bench.machine.options.precision == "int4"
            assert "· int4 ·" in text_of(app, "#status")
            # a bad model path: a notification with one line, the old model stays and keeps working
            await pilot.press("M")
            await pilot.pause()
            await answer(pilot, app, str(tmp_path / "missing.gguf"))
            errors = [n for n in app._notifications if n.severity == "error"]
            assert errors and "missing.gguf" in errors[-1].message and "\n" not in errors[-1].message
            await pilot.press("n", "n")
            await settle(pilot, app)
            assert len(app.driver.bench.machine.generated[0]) == 2
            assert app.driver.bench.machine.options.precision == "int4"
            # the session records what was done, in the session format
            await save_session(pilot, tmp_path / "s.toml")
            doc = tomllib.loads((tmp_path / "s.toml").read_text())
            assert doc["chip"] == "teaching-4x4" and doc["options"]["precision"] == "int8"
            assert doc["steps"] == [{"generate": 1}, {"chip": "groq-lpu"}, {"precision": "int4"}, {"generate": 2}]
            await pilot.press("q")

    asyncio.run(go())


@pytest.fixture
def long_bench(tmp_path) -> Bench:
    """A random model with a 65536-token context, so a run never hits the end while the test watches
    (4096 tokens take the emulator about a second, less than a slow first frame can keep a test waiting)."""
    from workbench.model.config import ModelConfig
    from workbench.model.gguf_io import write_gguf
    from workbench.model.load import random_model

    cfg = ModelConfig("long", dim=64, hidden_dim=172, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, seq_len=65536)
    write_gguf(tmp_path / "long.gguf", random_model(cfg, seed=3, fmt="f32"))
    return Bench(BenchOptions(model=str(tmp_path / "long.gguf"), prompt="5 6 7"))


def test_run_and_pause_within_100ms(long_bench):
    bench = long_bench

    async def go():
        app = WorkbenchApp(bench)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("space")
            m = app.driver.bench.machine
            while len(m.generated[0]) < 20:
                await asyncio.sleep(0.005)
            assert app.driver.running.is_set()
            t0 = time.perf_counter()
            app.action_cmd("run")  # what space and its alias f8 do
            while app.driver._run_tokens or app.driver.running.is_set():
                await asyncio.sleep(0.002)
            n_paused = len(m.generated[0])
            assert time.perf_counter() - t0 < 0.1
            await asyncio.sleep(0.1)
            assert len(m.generated[0]) == n_paused
            await pilot.press("f8")  # the non-printable alias runs again
            while len(m.generated[0]) < n_paused + 5:
                await asyncio.sleep(0.005)
            await pilot.press("f8")
            await settle(pilot, app)
            assert "paused" in text_of(app, "#status")
            n = len(m.generated[0])
            assert app.driver.steps == [("generate", n_paused), ("generate", n - n_paused)] or \
                app.driver.steps == [("generate", n)]
            await pilot.press("q")

    asyncio.run(go())


def test_palette_help_and_maximize(bench):
    async def go():
        app = WorkbenchApp(bench)
        async with app.run_test(size=(80, 24)) as pilot:
            from workbench.tui.palette import CommandsProvider

            provider = CommandsProvider(app.screen)
            titles = [str(hit.text) async for hit in provider.discover()]
            assert len(titles) == len(COMMANDS)
            assert all(any(c.title in t for t in titles) for c in COMMANDS)
            await pilot.press("question_mark")
            await pilot.pause()
            assert type(app.screen).__name__ == "HelpScreen"
            await pilot.press("escape")
            await pilot.press("3")
            await pilot.pause()
            assert app.screen.query_one("#mesh").display and not app.screen.query_one("#sram").display
            await pilot.press("z")
            await pilot.pause()
            assert app.screen.maximized is app.screen.query_one("#mesh")
            await pilot.press("z")
            await pilot.pause()
            assert app.screen.maximized is None
            await pilot.press("q")

    asyncio.run(go())


def test_session_replay_pauses_at_notes(bench):
    async def go():
        steps = [("generate", 2), ("note", "look at the KV cache"), ("generate", 3)]
        app = WorkbenchApp(bench, session=steps)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            m = app.driver.bench.machine
            assert len(m.generated[0]) == 2
            assert "look at the KV cache" in text_of(app, "#status")
            await pilot.press("space")
            await settle(pilot, app)
            await pilot.pause(0.2)
            await settle(pilot, app)
            assert len(m.generated[0]) == 5
            await pilot.press("q")

    asyncio.run(go())


def test_output_match_with_f32_reference(bench):
    async def go():
        app = WorkbenchApp(bench)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("k", "n", "n", "n", "n")
            await settle(pilot, app)
            app.driver.publish(force=True)
            frame = app.driver.latest
            assert len(frame.ref_match) == 4
            from workbench.model.reference import Reference

            ref = Reference(app.driver.bench.model).generate(app.driver.bench.machine.prompt, 1)
            assert frame.ref_match[0] == (ref[0] == app.driver.bench.machine.generated[0][0])
            await pilot.press("q")

    asyncio.run(go())


def test_core_does_not_import_textual():
    code = ("import sys, workbench.bench, workbench.tui.driver, workbench.cli.tui_cmd; "
            "print('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not (ROOT / "models" / "tinytales.gguf").exists(), reason="models/tinytales.gguf not built yet")
def test_default_bench_opens():
    async def go():
        app = WorkbenchApp(Bench(BenchOptions()))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("n")
            await settle(pilot, app)
            assert len(app.driver.bench.machine.generated[0]) == 1
            await pilot.press("q")

    asyncio.run(go())


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is absent")
def test_end_to_end_in_tmux(stories260k, tmp_path):
    name = f"asicbench-e2e-{os.getpid()}"
    cmd = [sys.executable, "-c", "from workbench.cli import main; main()", "tui", "--model", str(stories260k),
           "--prompt", "1 2 3"]
    env = f"PYTHONPATH={ROOT} TERM=xterm-256color"
    shell = env + " " + " ".join(f"'{c}'" for c in cmd)
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "100", "-y", "30", "-c", str(tmp_path), shell],
                   check=True)
    try:
        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", name], capture_output=True, text=True).stdout

        def wait_for(text: str, timeout: float = 60) -> str:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                s = screen()
                if text in s:
                    return s
                time.sleep(0.2)
            raise AssertionError(f"{text!r} never appeared:\n{screen()}")

        wait_for("teaching-4x4")
        subprocess.run(["tmux", "send-keys", "-t", name, "n"], check=True)
        subprocess.run(["tmux", "send-keys", "-t", name, "n"], check=True)
        wait_for("pos 5/512")  # 4 prompt ids (BOS + 1 2 3) + 2 tokens - 1
        subprocess.run(["tmux", "send-keys", "-t", name, "6"], check=True)
        wait_for("465 465")  # stories260K's greedy continuation of '1 2 3', in the output pane
        subprocess.run(["tmux", "send-keys", "-t", name, "q"], check=True)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if subprocess.run(["tmux", "has-session", "-t", name], capture_output=True).returncode != 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the app did not quit on q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def test_flow_wraps_words_and_reflows_from_the_last_row():
    from workbench.tui.panes.base import flow, flow_spans, wrap

    rows = flow([("hello world this is a ", "a"), ("test\nof", "b"), (" wrapping xxxxxxxxxxxxxx", "c")], 10)
    assert ["".join(t for t, _ in r) for r in rows] == \
        ["hello ", "world this ", "is a test", "of ", "wrapping ", "xxxxxxxxxx", "xxxx"]
    assert rows[2] == (("is a ", "a"), ("test", "b"))
    assert wrap((("short", "x"),), 10) == [(("short", "x"),)]
    # appending text and re-flowing from the last row's start gives the rows a full flow gives
    texts = [f" w{i % 37}" + ("\n" if i % 53 == 0 else "") for i in range(600)]
    full, _ = flow_spans(texts, 40)
    head, starts = flow_spans(texts[:350], 40)
    tail, _ = flow_spans(texts, 40, starts[-1])
    assert head[:-1] + tail == full


def test_driver_frame_aggregates_match_history(long_bench):
    import statistics

    from workbench.tui.driver import Driver

    d = Driver(long_bench)
    m = long_bench.machine
    d._execute("generate", 5)
    before = m.counters.copy()
    d._execute("generate", 1)
    d.publish(force=True)
    f = d.latest
    decode = [h for h in m.history if not h.prefill]
    assert f.decode_count == len(decode) == 5
    assert f.decode_joules == pytest.approx(sum(h.joules for h in decode))
    assert f.decode_median_s == statistics.median(h.seconds for h in decode)
    assert len(f.pieces) == len(m.generated[0]) == 6
    # "last" is exactly the counters of the last token
    assert (f.last.link_bytes == m.counters.link_bytes - before.link_bytes).all()
    assert (f.last.tile_macs == m.counters.tile_macs - before.tile_macs).all()
    epoch = f.epoch
    d._execute("reset", None)
    d.publish(force=True)
    assert d.latest.epoch != epoch and d.latest.decode_count == 0 and d.latest.pieces == ()


def test_output_view_appends_restyles_and_jumps_half_a_view():
    from textual.app import App

    from workbench.tui.panes.base import flow_spans

    class Host(App):
        def compose(self):
            yield ScrollLines(id="v")

    words = [f"w{i} " for i in range(400)]

    async def go():
        app = Host()
        async with app.run_test(size=(40, 10)) as pilot:
            v = app.query_one(ScrollLines)
            v.set_runs([(w, "dim") for w in words[:50]], follow=True)
            await pilot.pause()
            view_h, width = v.scrollable_content_region.height, v.scrollable_content_region.width
            for k in range(50, 400, 37):  # appended a little at a time, an early run recoloured each time
                v.append_runs([(w, "kv") for w in words[k:k + 37]], {k // 37: "warn"}, follow=True)
                await pilot.pause()
                n_rows = len(v._spans)
                # the virtual height grows in steps of half a view and the view is at its end
                if n_rows > view_h:
                    assert (v.virtual_size.height - view_h) % max(1, view_h // 2) == 0
                    assert 0 <= v.virtual_size.height - n_rows < max(1, view_h // 2)
                assert v.scroll_y == v.max_scroll_y
            spans, _ = flow_spans(words, width)
            assert v._spans == spans  # incremental flow == flowing everything at once
            assert v.plain == "\n".join("".join(words[i][a:b] for i, a, b in row) for row in spans)
            assert v._run_styles[3] == "warn" and v._run_styles[60] == "kv" and v._run_styles[0] == "dim"
            # what is drawn at the bottom of the view is the last row of text
            last = len(v._spans) - 1 - int(v.scroll_offset.y)
            assert "w399" in "".join(seg.text for seg in v.render_line(last))

    asyncio.run(go())


SESSION_WITH_MARKS = """
chip = "teaching-4x4"
model = "{model}"
[options]
prompt = "1 2 3"
[[steps]]
generate = 4
[[steps]]
mark = "four"
[[steps]]
generate = 3
[[steps]]
expect = {{ at = "four", tokens_per_s_above = 1, ms_per_token_below = 1e9 }}
[[steps]]
project = {{ mark = "h100", chip = "nvidia-h100-sxm", model = "llama-3.1-8b", precision = "fp8" }}
[[steps]]
expect = {{ at = "h100", text_contains = "bound by", ratio = {{ metric = "tokens_per_s", mark = "h100", over = "four", at_least = 1e9 }} }}
"""


def test_session_marks_expectations_and_projections_match_the_headless_replay(stories260k, tmp_path):
    """The TUI keeps windows, marks, expectations and projections exactly as `asicbench replay` does."""
    from workbench.session.runner import replay
    from workbench.session.spec import parse_session

    path = tmp_path / "s.toml"
    path.write_text(SESSION_WITH_MARKS.format(model=stories260k))
    spec = parse_session(tomllib.loads(path.read_text()), path, base=tmp_path)
    headless = replay(spec)

    async def go():
        app = WorkbenchApp(Bench(spec.options, base=tmp_path), session=[(s.name, s.value) for s in spec.steps])
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            await settle(pilot, app)
            marks = app.driver.ledger.marks
            assert set(marks) == set(headless.marks) == {"four", "h100"}
            for name in marks:
                for key in ("tokens", "tokens_per_s", "joules_per_token", "ttft_s", "text", "seconds", "joules"):
                    assert marks[name].get(key) == headless.marks[name].get(key), (name, key)
            titles = [n.title for n in app._notifications]
            assert "projection (kept as a mark)" in titles
            expectations = [n for n in app._notifications if n.title == "expectations"]
            assert [n.severity for n in expectations] == ["information", "warning"]  # the second has an impossible ratio
            assert "✗ tokens_per_s[h100] / tokens_per_s[four]" in expectations[-1].message
            assert "expect: 1/2 hold" in text_of(app, "#status")
            await pilot.press("q")

    asyncio.run(go())
    assert [o.message for o in headless.outcomes][-1] == "expect: 1/2 hold"


def test_project_key_projects_a_big_model_and_the_session_saves_it(bench, tmp_path):
    async def go():
        app = WorkbenchApp(bench)
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            await pilot.press("ctrl+p")  # the palette shows the command's help, brackets and all, as plain text
            await pilot.press(*"project")
            await pilot.pause(0.3)
            await pilot.press("escape")
            await pilot.press("P")
            await pilot.pause()
            assert "llama-3.1-70b" in app.screen.query_one(Input).value  # a filled-in example of the one-line form
            await answer(pilot, app, "groq-lpu-x576 llama-3.1-70b precision=int4 chips=288")
            shown = [n for n in app._notifications if n.title == "projection (kept as a mark)"]
            assert shown and "288 x groq-lpu-x576" in shown[-1].message and "tok/s" in shown[-1].message
            assert "projection-1" in app.driver.ledger.marks
            # bad input: one line naming what is wrong; the workbench keeps running
            await pilot.press("P")
            await pilot.pause()
            await answer(pilot, app, "groq-lpu-x576 llama-3.1-70b precision=int3")
            errors = [n for n in app._notifications if n.severity == "error"]
            assert errors and "int3" in errors[-1].message and "\n" not in errors[-1].message
            await pilot.press("n")
            await settle(pilot, app)
            assert len(app.driver.bench.machine.generated[0]) == 1
            await save_session(pilot, tmp_path / "p.toml")
            await pilot.press("q")

    asyncio.run(go())
    doc = tomllib.loads((tmp_path / "p.toml").read_text())
    assert doc["steps"][0] == {"project": {"mark": "projection-1", "chip": "groq-lpu-x576", "model": "llama-3.1-70b",
                                           "precision": "int4", "chips": 288}}
    from workbench.session.runner import replay
    from workbench.session.spec import parse_session

    again = replay(parse_session(doc, tmp_path / "p.toml", base=tmp_path))
    assert "288 x groq-lpu-x576" in again.marks["projection-1"]["text"]


def test_crossbar_chip_draws_ports_not_links(stories260k):
    """A GPU profile is a crossbar: the mesh pane draws each tile's port traffic and names ports, not N/E/S/W links."""
    async def go():
        app = WorkbenchApp(Bench(BenchOptions(chip="nvidia-h100-sxm", model=str(stories260k), prompt="1 2 3",
                                              mapping="tensor")))
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("n", "n")
            await settle(pilot, app)
            assert app.driver.bench.machine.plan.topology.kind == "crossbar"
            grid = text_of(app, "#mesh-grid")
            assert "crossbar" in grid and "ports out + in" in grid and "▸" not in grid
            frame = app.driver.latest
            lid = int(frame.last.link_bytes.argmax())
            t, d = divmod(lid, 4)
            assert f"t{t} port {'out' if d == 0 else 'in'}" in text_of(app, "#mesh-text")
            await pilot.press("q")

    asyncio.run(go())
