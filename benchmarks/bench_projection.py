"""Projections per second: warm (programs cached) and cold-chip (a new chip profile each time, same mesh).

Each call is timed on its own; the line gives the median (and the fastest call, which shows the cost on an
idle machine when other processes share the cores). Target: a single projection under 20 ms.
Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_projection.py [--calls N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

from workbench.chip import load_chip
from workbench.model.specs import load_spec
from workbench.projection import project


def rate(label: str, calls) -> None:
    calls[0]()
    dts = []
    for c in calls:
        t = time.perf_counter()
        c()
        dts.append(time.perf_counter() - t)
    med = statistics.median(dts)
    print(f"{label:52s} {1 / med:7.1f} projections/s (median {1e3 * med:5.1f} ms, fastest {1e3 * min(dts):5.1f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=30)
    n = ap.parse_args().calls
    cfg = load_spec("llama-3.1-70b")
    for name in ("nvidia-h100-sxm", "nvidia-h100-x8", "tenstorrent-wormhole-galaxy", "groq-lpu-x576",
                 "cerebras-cs3-x4"):
        chip = load_chip(name)
        prec = "int4" if name.startswith("groq") else "int8"
        rate(f"warm  {name} 70B {prec}", [lambda: project(chip, cfg, precision=prec)] * n)
    base = load_chip("nvidia-h100-sxm")
    chips = [replace(base, memory=replace(base.memory, bandwidth_gb_per_s=1000 + 50 * i)) for i in range(n)]
    rate("cold chip (new HBM bandwidth each) h100 70B int8", [lambda c=c: project(c, cfg) for c in chips])


if __name__ == "__main__":
    main()
