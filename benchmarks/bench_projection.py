"""Projections per second: warm (programs cached) and cold-chip (a new chip profile each time, same mesh).

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_projection.py
"""

from __future__ import annotations

import time
from dataclasses import replace

from workbench.chip import load_chip
from workbench.model.specs import load_spec
from workbench.projection import project


def rate(label: str, calls) -> None:
    calls[0]()
    t = time.perf_counter()
    for c in calls:
        c()
    dt = (time.perf_counter() - t) / len(calls)
    print(f"{label:55s} {1 / dt:8.1f} projections/s ({1e3 * dt:.1f} ms each)")


def main() -> None:
    cfg = load_spec("llama-3.1-70b")
    for name in ("nvidia-h100-sxm", "nvidia-h100-x8", "tenstorrent-wormhole-galaxy", "groq-lpu-x576"):
        chip = load_chip(name)
        prec = "int4" if name.startswith("groq") else "int8"
        rate(f"warm  {name} 70B {prec}", [lambda: project(chip, cfg, precision=prec)] * 20)
    base = load_chip("nvidia-h100-sxm")
    chips = [replace(base, memory=replace(base.memory, bandwidth_gb_per_s=1000 + 50 * i)) for i in range(20)]
    rate("cold chip (new HBM bandwidth each) h100 70B int8", [lambda c=c: project(c, cfg) for c in chips])


if __name__ == "__main__":
    main()
