"""Sweep throughput in points/s: a generated grid of about ``--points`` points, run at each ``--jobs``.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_sweep.py --points 10000 --jobs 1 2

Uses the real projection engine. ``--overhead`` instead times the sweep machinery alone (chip variants,
point expansion, formatting, process pool, CSV + sidecar writes) with a trivial roofline in place of it.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.precision import BITS_PER_WEIGHT
from workbench.sweep import load_sweep, run_sweep


def roofline(chip, config, *, precision, batch, prompt_len, gen_len, chips, mapping):
    """Machinery-only stand-in (``--overhead``): weights streamed once per step. Not a projection."""
    n = chips or chip.system.chips
    step_s = config.n_params() * BITS_PER_WEIGHT[precision] / 8 / ((chip.offchip_bytes_per_s or chip.sram_bytes_per_s) * n)
    return {"seconds_per_token": step_s, "tokens_per_s_per_user": 1 / step_s, "tokens_per_s": batch / step_s,
            "joules_per_token": chip.energy.static_w * n * step_s / batch, "fits": True, "bound": "memory"}


def sweep_text(points: int) -> str:
    """A Blackhole-based grid of about ``points`` points over SRAM, mesh rows, bandwidth, chips, precision, batch."""
    sram = [256, 512, 1024, 1536, 2048, 3072, 4096, 8192]
    rows = [4, 6, 8, 10, 12]
    systems = [(1, "single"), (2, "ring"), (4, "ring"), (8, "ring"), (16, "torus"), (32, "torus")]
    precisions = ["int8", "int4"]
    batches = [1, 4, 8, 16, 32, 64]
    per_bandwidth = 2 * len(sram) * len(rows) * len(systems) * len(precisions) * len(batches)
    if points < per_bandwidth:  # a small grid: fewer batch sizes, one bandwidth
        batches = batches[:max(1, round(len(batches) * points / per_bandwidth))]
        per_bandwidth = per_bandwidth // 6 * len(batches)
    n_bw = max(1, math.ceil(points / per_bandwidth))
    bandwidths = [round(128 * 1.25 ** i, 3) for i in range(n_bw)]
    system = ", ".join(
        f'{{ chips = {c}, topology = "{t}"' + (", chip_link_gb_per_s = 400, chip_link_latency_us = 1.0 }" if c > 1 else " }")
        for c, t in systems)
    return (f'base_chip = "tenstorrent-blackhole-p150"\nmodels = ["llama-3.1-8b", "llama-3.1-70b"]\n[axes]\n'
            f'"tile.sram_kib" = {sram}\n"mesh.rows" = {rows}\n"memory.bandwidth_gb_per_s" = {bandwidths}\n'
            f"system = [{system}]\nprecision = {precisions}\nbatch = {batches}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--overhead", action="store_true", help="time the machinery with a trivial roofline")
    args = parser.parse_args()
    evaluate = roofline if args.overhead else None
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench.toml"
        spec.write_text(sweep_text(args.points))
        t0 = time.perf_counter()
        sweep = load_sweep(spec)
        load_s = time.perf_counter() - t0
        print(f"grid: {sweep.n_points} points, {len(sweep.variants)} chip variants (validated in {load_s:.2f} s); "
              f"evaluate = {'trivial roofline (machinery only)' if args.overhead else 'workbench.projection.project'}")
        for jobs in args.jobs:
            out = Path(tmp) / f"jobs{jobs}.csv"
            summary = run_sweep(sweep, out, jobs=jobs, evaluate=evaluate)
            print(f"jobs={jobs}: {summary.points} points in {summary.seconds:.2f} s = "
                  f"{summary.points / summary.seconds:.0f} points/s ({summary.errors} rows with errors)")
        files = [(Path(tmp) / f"jobs{j}.csv").read_bytes() for j in args.jobs]
        print("files identical across --jobs:", all(f == files[0] for f in files))


if __name__ == "__main__":
    main()
