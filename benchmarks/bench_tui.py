"""TUI cost: a full pane refresh (teaching-4x4 and the largest bundled mesh) and tokens/s while running inside
the app vs headless, measured in the same run. Prints medians over --runs runs (target: TUI >= 80% of headless).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_tui.py [--chip-big cerebras-cs3-x4] [--seconds 2] [--runs 3]

A refresh is timed as UI-thread CPU (time.thread_time: building the panes + Textual compositing the dirty lines;
what competes with the machine thread for the GIL) from a forced redraw with new data (the frame of the next
token) until the screen has painted it. Wall time is not used: Pilot.pause sleeps >= 20 ms waiting for idle.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from workbench.bench import Bench, BenchOptions
from workbench.chip import load_chip
from workbench.data import bundled_names
from workbench.model.config import ModelConfig
from workbench.model.gguf_io import write_gguf
from workbench.model.load import random_model
from workbench.tui.app import WorkbenchApp

# dim 128: big enough that a token is real work, seq_len 4096 so a run never reaches the end
CFG = ModelConfig("bench", dim=128, hidden_dim=344, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=256, seq_len=4096)


def largest_chip() -> str:
    return max(bundled_names("chips", (".toml",)), key=lambda n: load_chip(n).n_tiles)


async def _settle(app, n_tokens: int) -> None:
    m = app.driver.bench.machine
    while len(m.generated[0]) < n_tokens or not (app.driver.idle.is_set() and app.driver.jobs.empty()):
        await asyncio.sleep(0.01)


async def refresh_ms(bench: Bench, size=(200, 60), repeats: int = 12) -> tuple[float, float]:
    """(median UI-thread CPU ms, median UI-thread CPU ms when nothing changed) per refresh, all panes visible."""
    app = WorkbenchApp(bench, refresh_hz=1)  # the app's own timer stays out of the way
    changed, same = [], []
    async with app.run_test(size=size) as pilot:
        await pilot.press("n")
        await _settle(app, 1)
        await pilot.pause(0.2)
        for i in range(repeats):
            app.driver.submit("generate", 1)  # new counters, as while running
            await _settle(app, i + 2)
            t0 = time.thread_time()
            app._render_frame(force=True)
            await pilot.pause()
            changed.append(time.thread_time() - t0)
            t0 = time.thread_time()
            app._render_frame(force=True)  # same frame again: what a redraw costs when data did not change
            await pilot.pause()
            same.append(time.thread_time() - t0)
        await pilot.press("q")
    return 1e3 * statistics.median(changed), 1e3 * statistics.median(same)


def headless_tps(bench: Bench, seconds: float) -> float:
    m = bench.machine
    m.set_prompt(bench.prompt_ids)
    m.step_token()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        m.step_token()
        n += 1
    return n / (time.perf_counter() - t0)


async def tui_tps(bench: Bench, seconds: float, size=(200, 60), warmup: float = 2.0) -> tuple[float, float]:
    """(tokens/s, pane refreshes/s) while running continuously with all panes visible."""
    app = WorkbenchApp(bench)
    async with app.run_test(size=size) as pilot:
        app.action_cmd("run")
        m = bench.machine
        while len(m.generated[0]) < 2:
            await asyncio.sleep(0.005)
        await asyncio.sleep(warmup)  # app start-up (footer, first layouts) is not the steady state measured
        n0, t0, r0 = len(m.generated[0]), time.perf_counter(), app.renders
        await asyncio.sleep(seconds)  # the app keeps refreshing its panes meanwhile
        n1, t1, r1 = len(m.generated[0]), time.perf_counter(), app.renders
        app.action_cmd("run")
        await pilot.press("q")
    return (n1 - n0) / (t1 - t0), (r1 - r0) / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chip-big", default=None, help="default: the bundled chip with the most tiles")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.gguf"
        write_gguf(path, random_model(CFG, seed=0, fmt="f32"))
        opts = BenchOptions(model=str(path), prompt="5 6 7")
        big_name = args.chip_big or largest_chip()
        big_opts = BenchOptions(chip=big_name, model=str(path), prompt="5 6 7")
        for label, o in (("teaching-4x4", opts), (big_name, big_opts)):
            runs = [asyncio.run(refresh_ms(Bench(o))) for _ in range(args.runs)]
            n_tiles = load_chip(o.chip).n_tiles
            print(f"full pane refresh, {label} ({n_tiles} tiles), 200x60, UI-thread CPU: "
                  f"{statistics.median(r[0] for r in runs):.1f} ms median with new data "
                  f"(runs: {', '.join(f'{r[0]:.1f}' for r in runs)}); "
                  f"{statistics.median(r[1] for r in runs):.1f} ms when unchanged")
        runs_h, runs_t, rates = [], [], []
        for _ in range(args.runs):  # interleaved, so drift in the machine's load hits both alike
            runs_h.append(headless_tps(Bench(opts), args.seconds))
            tps, hz = asyncio.run(tui_tps(Bench(opts), args.seconds))
            runs_t.append(tps)
            rates.append(hz)
        h, t = statistics.median(runs_h), statistics.median(runs_t)
        ratios = [b / a for a, b in zip(runs_h, runs_t)]
        print(f"tokens/s headless {h:,.0f}; inside the TUI (200x60, all panes) {t:,.0f} with "
              f"{statistics.median(rates):.1f} pane refreshes/s; ratio {t / h:.2f} "
              f"(per run: {', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.80)")


if __name__ == "__main__":
    main()
