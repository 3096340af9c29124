"""Write docs/screenshot.svg with the app's own save_screenshot: 160x48, ~20 tokens stepped on the default chip.

    PYTHONPATH=. .venv/bin/python benchmarks/screenshot.py [--out docs/screenshot.svg] [--tokens 20]

Uses the bundled tinytales model when models/tinytales.gguf loads; otherwise stories260K from
../shared/fixtures (token-id prompt), and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from workbench.bench import Bench, BenchOptions
from workbench.errors import WorkbenchError
from workbench.tui.app import WorkbenchApp

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "stories260K.bin"


def default_bench() -> tuple[Bench, str]:
    try:
        return Bench(BenchOptions(seed=1)), "tinytales (bundled)"
    except WorkbenchError as exc:
        print(f"the default model does not load ({exc}); using {FIXTURE}")
        return Bench(BenchOptions(model=str(FIXTURE), prompt="1 2 3", seed=1)), "stories260K (fixture)"


async def shoot(bench: Bench, out: Path, tokens: int) -> None:
    app = WorkbenchApp(bench)
    async with app.run_test(size=(160, 48)) as pilot:
        app.driver.submit("generate", tokens)
        end = time.monotonic() + 120
        m = bench.machine
        while not (len(m.generated[0]) >= tokens and app.driver.jobs.empty() and app.driver.idle.is_set()):
            if time.monotonic() > end:
                raise SystemExit("the machine did not finish stepping in 120 s")
            await asyncio.sleep(0.05)
        app._render_frame(force=True)
        await pilot.pause(0.3)
        app.save_screenshot(filename=out.name, path=str(out.parent))
        await pilot.press("q")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.svg")
    ap.add_argument("--tokens", type=int, default=20)
    args = ap.parse_args()
    bench, what = default_bench()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot(bench, args.out, args.tokens))
    print(f"wrote {args.out} ({what}, {bench.chip.name}, {args.tokens} tokens, 160x48)")


if __name__ == "__main__":
    main()
