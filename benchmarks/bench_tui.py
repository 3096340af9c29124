"""TUI cost: a full pane refresh (teaching-4x4 and the largest bundled mesh), and tokens/s running inside the app
vs headless, the same workload in the same run. Prints medians (target: TUI >= 80% of headless tokens/s).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_tui.py [--chip-big cerebras-cs3-x4] [--seconds 1.5] [--runs 8]

Workload: a random model shaped like tinytales (dim 256, 4 layers, 8 heads / 4 KV heads, FFN 512, vocab 512) at
int8 on teaching-4x4, with a 4096-token context so a run does not reach the end (tinytales' own 256 positions last
half a second). The ratio is measured in cycles of three segments of --seconds each, rotating their order, in one
process with one app open at 200x60 with all seven panes visible (headless Textual, App.run_test):
H the bare machine (step_token in a loop, in a thread) while the app is paused with its refresh timer stopped;
D the app's machine thread running, refresh timer stopped (what the machine thread itself adds per token);
T the app running with every pane refreshing at its own rate. Each segment starts from the prompt, so all do the
same work, and the three segments of a cycle see the same load on the (shared) machine; the ratio of a cycle is
T / H, and the median over cycles is printed.

A refresh is timed as UI-thread CPU (time.thread_time: building the panes + Textual compositing the dirty lines;
what competes with the machine thread for the GIL and the cores) from a forced redraw with new data (the frame of
the next token) until the screen has painted it. Wall time is not used: Pilot.pause sleeps >= 20 ms waiting for
idle. Headless Textual writes nothing to a terminal: a real one adds the cost of encoding the changed lines.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

from workbench.bench import Bench, BenchOptions
from workbench.chip import load_chip
from workbench.data import bundled_names
from workbench.model.config import ModelConfig
from workbench.model.gguf_io import write_gguf
from workbench.model.load import random_model
from workbench.tui.app import WorkbenchApp

CFG = ModelConfig("bench", dim=256, hidden_dim=512, n_layers=4, n_heads=8, n_kv_heads=4, vocab_size=512,
                  seq_len=4096)
SIZE = (200, 60)


def largest_chip() -> str:
    return max(bundled_names("chips", (".toml",)), key=lambda n: load_chip(n).n_tiles)


async def _settle(app, n_tokens: int) -> None:
    m = app.driver.bench.machine
    while len(m.generated[0]) < n_tokens or not (app.driver.idle.is_set() and app.driver.jobs.empty()):
        await asyncio.sleep(0.01)


class TerminalEncoding:
    """Times what headless Textual skips: encoding each screen update as the escape sequences a terminal gets
    (Textual-private Compositor.render_update wrapped while in use; textual is pinned)."""

    def __init__(self, app) -> None:
        self.app, self.seconds = app, []

    def __enter__(self):
        from textual._compositor import Compositor

        self._orig = orig = Compositor.render_update

        def render_update(comp, *a, **kw):
            update = orig(comp, *a, **kw)
            if update is not None:
                t0 = time.thread_time()
                update.render_segments(self.app.console)
                self.seconds.append(time.thread_time() - t0)
            return update

        Compositor.render_update = render_update
        return self

    def __exit__(self, *exc) -> None:
        from textual._compositor import Compositor

        Compositor.render_update = self._orig


async def refresh_ms(bench: Bench, repeats: int = 12) -> tuple[float, float, float]:
    """Median UI-thread CPU ms per refresh with new data, the same when nothing changed (all panes visible), and
    the ms a real terminal would add to encode a refresh with new data."""
    app = WorkbenchApp(bench, refresh_hz=1)  # the app's own timer stays out of the way
    changed, same, encode = [], [], []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await _settle(app, 1)
        await pilot.pause(0.2)
        for i in range(repeats):
            app.driver.submit("generate", 1)  # new counters, as while running
            await _settle(app, 2 * i + 2)
            t0 = time.thread_time()
            app._render_frame(force=True)
            await pilot.pause()
            changed.append(time.thread_time() - t0)
            app.driver.submit("generate", 1)
            await _settle(app, 2 * i + 3)
            with TerminalEncoding(app) as enc:  # a separate refresh, so the timing above does not include it
                app._render_frame(force=True)
                await pilot.pause()
            encode.append(sum(enc.seconds))
            t0 = time.thread_time()
            app._render_frame(force=True)  # same frame again: what a redraw costs when data did not change
            await pilot.pause()
            same.append(time.thread_time() - t0)
        await pilot.press("q")
    return 1e3 * statistics.median(changed), 1e3 * statistics.median(same), 1e3 * statistics.median(encode)


class Headless:
    """The same workload stepped by a bare machine (no Driver, no app) in a plain thread."""

    def __init__(self, bench: Bench):
        self.bench = bench
        self.m = bench.machine
        self.m.set_prompt(bench.prompt_ids)
        self.m.step_token()

    def run(self, seconds: float) -> float:
        out = []

        def go() -> None:
            m = self.m
            m.set_prompt(self.bench.prompt_ids)  # every segment starts from the prompt (see paired_runs)
            m.step_token()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                m.step_token()
                n += 1
            out.append(n / (time.perf_counter() - t0))

        t = threading.Thread(target=go, name="headless")
        t.start()
        t.join()
        return out[0]


async def _wait(cond, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError("the machine thread did not get there")
        await asyncio.sleep(0.002)


async def paired_runs(opts: BenchOptions, seconds: float, cycles: int, warmup: float = 2.0) -> list[dict]:
    """Cycles of three segments of ``seconds`` each, in rotating order, in one process and one open app:
    H, the bare machine stepping in a thread while the app is paused and its refresh timer stopped (the app is
    idle: its UI-thread CPU is recorded as ``idle_ui_cpu``); D, the app's machine thread running with the
    refresh timer stopped (what the TUI adds per token without drawing); T, the app running with all panes
    refreshing. Every segment starts from the prompt (a token costs more at later positions), so all three do the
same work; segments of one cycle see the same load on the machine, so their ratio is what the TUI costs."""
    head = Headless(Bench(opts))
    app = WorkbenchApp(Bench(opts))
    out = []
    async with app.run_test(size=SIZE) as pilot:
        d = app.driver
        m = d.bench.machine

        def stopped() -> bool:
            return not d.running.is_set() and not d._run_tokens and d.idle.is_set()

        async def app_segment(draw: bool) -> dict:
            d.submit("reset")  # every segment starts from the prompt: token cost grows with the position
            await _wait(lambda: m.pos == 0 and d.jobs.empty() and stopped())
            if not draw:
                app._timer.pause()
            app.action_cmd("run")
            await _wait(d.running.is_set)
            n_start = len(m.generated[0])
            await _wait(lambda: len(m.generated[0]) >= n_start + 2)
            await asyncio.sleep(0.2)  # first refreshes after a resume are not the steady state
            n0, t0, r0, c0 = len(m.generated[0]), time.perf_counter(), app.renders, time.thread_time()
            await asyncio.sleep(seconds)
            n1, t1, r1, c1 = len(m.generated[0]), time.perf_counter(), app.renders, time.thread_time()
            p0 = time.perf_counter()
            app.action_cmd("run")  # pause
            await _wait(lambda: not d._run_tokens and not d.running.is_set())
            pause_ms = 1e3 * (time.perf_counter() - p0)
            await _wait(stopped)
            if not draw:
                app._timer.resume()
            await pilot.pause(0.1)
            return {"tps": (n1 - n0) / (t1 - t0), "hz": (r1 - r0) / (t1 - t0), "ui_cpu": (c1 - c0) / (t1 - t0),
                    "pause_ms": pause_ms}

        async def head_segment() -> dict:
            app._timer.pause()
            await pilot.pause(0.1)
            c0, t0 = time.thread_time(), time.perf_counter()
            tps = await asyncio.to_thread(head.run, seconds)
            c1, t1 = time.thread_time(), time.perf_counter()
            app._timer.resume()
            return {"tps": tps, "ui_cpu": (c1 - c0) / (t1 - t0)}

        app.action_cmd("run")  # warm-up: compile, first layouts, footer
        await _wait(lambda: len(m.generated[0]) >= 2)
        await asyncio.sleep(warmup)
        app.action_cmd("run")
        await _wait(stopped)
        head.run(0.5)
        order = ("H", "D", "T")
        for i in range(cycles):
            res = {}
            for k in order[i % 3:] + order[:i % 3]:
                res[k] = await head_segment() if k == "H" else await app_segment(draw=k == "T")
            out.append(res)
        await pilot.press("q")
    return out


def _runs(values, fmt: str = "{:.0f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chip-big", default=None, help="default: the bundled chip with the most tiles")
    ap.add_argument("--seconds", type=float, default=1.5, help="measured seconds per segment")
    ap.add_argument("--runs", type=int, default=8, help="cycles of headless / machine thread / TUI (>= 3)")
    ap.add_argument("--skip-refresh", action="store_true", help="only the tokens/s ratio")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.gguf"
        write_gguf(path, random_model(CFG, seed=0, fmt="f32"))
        opts = BenchOptions(model=str(path), prompt="5 6 7")
        if not args.skip_refresh:
            big_name = args.chip_big or largest_chip()
            big_opts = BenchOptions(chip=big_name, model=str(path), prompt="5 6 7")
            for label, o in (("teaching-4x4", opts), (big_name, big_opts)):
                runs = [asyncio.run(refresh_ms(Bench(o))) for _ in range(3)]
                n_tiles = load_chip(o.chip).n_tiles
                print(f"full pane refresh, {label} ({n_tiles} tiles), {SIZE[0]}x{SIZE[1]}, UI-thread CPU: "
                      f"{statistics.median(r[0] for r in runs):.1f} ms median with new data "
                      f"(runs: {_runs((r[0] for r in runs), '{:.1f}')}); "
                      f"{statistics.median(r[1] for r in runs):.1f} ms when unchanged; a real terminal would add "
                      f"{statistics.median(r[2] for r in runs):.1f} ms to encode the update", flush=True)
        cycles = paired_runs_sync(opts, args.seconds, max(3, args.runs))
        head = [c["H"]["tps"] for c in cycles]
        drv = [c["D"]["tps"] for c in cycles]
        tui = [c["T"]["tps"] for c in cycles]
        ratios = [c["T"]["tps"] / c["H"]["tps"] for c in cycles]
        d_ratios = [c["D"]["tps"] / c["H"]["tps"] for c in cycles]
        med = statistics.median
        print(f"tokens/s headless {med(head):,.0f} (runs: {_runs(head)}); app's machine thread, panes not drawn "
              f"{med(drv):,.0f} (runs: {_runs(drv)}); inside the TUI ({SIZE[0]}x{SIZE[1]}, all panes) "
              f"{med(tui):,.0f} (runs: {_runs(tui)})")
        print(f"TUI / headless: median ratio {med(ratios):.2f} (per cycle: {_runs(ratios, '{:.2f}')}; target >= 0.80); "
              f"machine thread without drawing / headless {med(d_ratios):.2f} (UI thread meanwhile "
              f"{100 * med(c['D']['ui_cpu'] for c in cycles):.1f}% of a core)")
        print(f"while running: {med(c['T']['hz'] for c in cycles):.1f} pane refreshes/s, UI thread "
              f"{100 * med(c['T']['ui_cpu'] for c in cycles):.0f}% of a core (idle app during headless segments: "
              f"{100 * med(c['H']['ui_cpu'] for c in cycles):.1f}%); pause took "
              f"{med(c['T']['pause_ms'] for c in cycles):.0f} ms median "
              f"(max {max(c['T']['pause_ms'] for c in cycles):.0f} ms)")


def paired_runs_sync(opts: BenchOptions, seconds: float, cycles: int) -> list[dict]:
    return asyncio.run(paired_runs(opts, seconds, cycles))


if __name__ == "__main__":
    main()
