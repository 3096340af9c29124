"""TUI cost: time for a full pane refresh (teaching-4x4 and the largest bundled mesh) and tokens/s while
running inside the app vs headless. Prints medians and the ratio (target: TUI >= 80% of headless).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_tui.py [--chip-big cerebras-wse3] [--seconds 2]
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


async def refresh_ms(bench: Bench, size=(200, 60), repeats: int = 20) -> float:
    app = WorkbenchApp(bench)
    async with app.run_test(size=size) as pilot:
        await pilot.press("n", "n", "n")
        while len(bench.machine.generated[0]) < 3 or not app.driver.idle.is_set():
            await asyncio.sleep(0.02)
        await pilot.pause(0.2)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            app._render_frame(force=True)
            await pilot.pause()  # let the compositor draw what changed
            times.append(time.perf_counter() - t0)
        await pilot.press("q")
    return 1e3 * statistics.median(times)


def headless_tps(bench: Bench, seconds: float) -> float:
    m = bench.machine
    m.set_prompt(bench.prompt_ids)
    m.step_token()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        m.step_token()
        n += 1
    return n / (time.perf_counter() - t0)


async def tui_tps(bench: Bench, seconds: float, size=(200, 60)) -> tuple[float, int]:
    app = WorkbenchApp(bench)
    async with app.run_test(size=size) as pilot:
        app.action_cmd("run")
        m = bench.machine
        while len(m.generated[0]) < 2:
            await asyncio.sleep(0.005)
        n0, t0, r0 = len(m.generated[0]), time.perf_counter(), app.renders
        await asyncio.sleep(seconds)  # the app keeps refreshing its panes meanwhile
        n1, t1, r1 = len(m.generated[0]), time.perf_counter(), app.renders
        app.action_cmd("run")
        await pilot.press("q")
    return (n1 - n0) / (t1 - t0), r1 - r0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chip-big", default=None, help="default: the bundled chip with the most tiles")
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.gguf"
        write_gguf(path, random_model(CFG, seed=0, fmt="f32"))
        opts = BenchOptions(model=str(path), prompt="5 6 7")
        small = Bench(opts)
        print(f"full pane refresh, teaching-4x4 ({small.machine.plan.n_tiles} tiles), 200x60: "
              f"{asyncio.run(refresh_ms(small)):.1f} ms median")
        big_name = args.chip_big or largest_chip()
        t0 = time.perf_counter()
        big = Bench(BenchOptions(chip=big_name, model=str(path), prompt="5 6 7"))
        print(f"  ({big_name}: compiled in {time.perf_counter() - t0:.1f} s)")
        print(f"full pane refresh, {big_name} ({big.machine.plan.n_tiles} tiles), 200x60: "
              f"{asyncio.run(refresh_ms(big)):.1f} ms median")
        runs_h, runs_t = [], []
        for _ in range(3):
            runs_h.append(headless_tps(Bench(opts), args.seconds))
            tps, renders = asyncio.run(tui_tps(Bench(opts), args.seconds))
            runs_t.append(tps)
        h, t = statistics.median(runs_h), statistics.median(runs_t)
        print(f"tokens/s headless {h:,.0f}; inside the TUI {t:,.0f} ({renders} refreshes in {args.seconds:g} s);"
              f" ratio {t / h:.2f} (target >= 0.80)")


if __name__ == "__main__":
    main()
