"""Steady-state emulated tokens/s on teaching-4x4 with every counter on, peak RSS, and llama2.c's run.c for scale.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_machine.py [--llama2c /tmp/llama2c-ref/run.c] [--profile]

Each figure is the median of >= 5 runs of ``--tokens`` decode steps (clamped to what the planned context
holds after the prompt: tinytales plans 256 tokens) after a warm-up (numba compiled, prefill done).
``--profile`` splits a decode pass's time inside the numba loop by op type. With ``--llama2c`` the paired ratios
are given twice: by wall clock (what a user sees) and by CPU time (this process's, or the llama2.c child's user +
system time), which a neighbour's load on these shared cores disturbs far less.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.chip import load_chip  # noqa: E402
from workbench.compiler import CompileOptions  # noqa: E402
from workbench.machine import executor as ex  # noqa: E402
from workbench.machine import isa  # noqa: E402
from workbench.machine.machine import Machine  # noqa: E402
from workbench.model.load import load_model  # noqa: E402

SHARED = Path(os.environ.get("ASICBENCH_SHARED", ROOT.parent / "shared"))  # as tests/conftest.py finds it
STORIES = SHARED / "fixtures" / "stories260K.bin"
TOKENIZER = SHARED / "fixtures" / "llama2c-tokenizer.bin"


def machine_tokens_per_s(chip, model, precision: str, tokens: int, runs: int,
                         clock=time.perf_counter) -> tuple[float, Machine, int]:
    """Median decode tok/s by ``clock``; ``tokens`` is clamped to what the planned context holds after the prompt."""
    rates = []
    for _ in range(runs):
        m = Machine(chip, model, CompileOptions(precision=precision, mapping="tensor"))
        m.set_prompt([1])
        m.step_token()  # prefill (and numba's first call) out of the timing
        n = min(tokens, m.plan.context - len(m.prompt))
        t0 = clock()
        m.generate(n)
        rates.append(n / (clock() - t0))
    return statistics.median(rates), m, n


def per_op_profile(chip, model, precision: str, position: int, reps: int = 200) -> tuple[float, float, float, list]:
    """Where a decode pass's time goes inside the numba loop, at ``position`` tokens of context.

    Returns (call overhead, whole pass, count-only pass) in seconds and rows (opcode, ops per pass, seconds
    numeric, seconds counting): each opcode's ops run alone on a copy of the mid-pass state (best of ``reps``,
    call overhead subtracted). Isolated runs see warmer caches than the real interleaving, so the rows are a
    guide, not an exact split.
    """
    m = Machine(chip, model, CompileOptions(precision=precision, mapping="tensor"))
    m.set_prompt([1])
    m.step_token()
    m.generate(min(position, m.plan.context - 3))
    m._begin_pass()
    s = m.state
    saved = {k: getattr(s, k).copy() for k in ("act", "xq", "xd", "parts")}
    full_ops = m._ops

    def best(ops, numeric: int) -> float:
        m._ops = ops
        m._bind()
        m._st[ex.S_NUMERIC] = numeric
        t_best = float("inf")
        for _ in range(reps):
            for k, v in saved.items():
                getattr(s, k)[...] = v
            m.pc = 0
            t0 = time.perf_counter()
            m._run(len(ops))
            t_best = min(t_best, time.perf_counter() - t0)
        return t_best

    call = best(full_ops[:0], 1)
    whole, counting = best(full_ops, 1) - call, best(full_ops, 0) - call
    rows = []
    for code in np.unique(full_ops[:, 0]):
        sub = np.ascontiguousarray(full_ops[full_ops[:, 0] == code])
        rows.append((isa.OPCODE_NAMES[code], len(sub), best(sub, 1) - call, best(sub, 0) - call))
    m._ops = full_ops
    m._bind()
    return call, whole, counting, sorted(rows, key=lambda r: -r[2])


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), else the peak so far."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build_llama2c(run_c: Path) -> Path:
    exe = Path(tempfile.mkdtemp()) / "run"
    subprocess.run(["gcc", "-O3", "-o", str(exe), str(run_c), "-lm"], check=True)
    return exe


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def llama2c_tokens_per_s(exe: Path, model: Path, steps: int) -> tuple[float, float]:
    """One greedy generation of ``steps`` tokens by llama2.c's run.c, process start-up included (as a user sees it):
    (tok/s by wall clock, tok/s by the child's CPU time)."""
    cmd = [str(exe), str(model), "-t", "0", "-n", str(steps), "-z", str(TOKENIZER)]
    t0, c0 = time.perf_counter(), _children_cpu_s()
    subprocess.run(cmd, check=True, capture_output=True)
    return steps / (time.perf_counter() - t0), steps / max(_children_cpu_s() - c0, 1e-9)


def paired_ratios(exe: Path, chip, model, steps: int, rounds: int) -> dict[str, list[float]]:
    """Rounds of (llama2.c, machine f32, machine int8) back to back; each ratio is taken within one round, so a
    neighbour's load on these shared cores falls on both sides of it. Keys "f32"/"int8" are wall-clock ratios,
    "f32 cpu"/"int8 cpu" CPU-time ratios (the machine timed by time.process_time, in a second run)."""
    ratios: dict[str, list[float]] = {"f32": [], "int8": [], "f32 cpu": [], "int8 cpu": []}
    c_rates = []
    for _ in range(rounds):
        ref, ref_cpu = llama2c_tokens_per_s(exe, STORIES, steps)
        c_rates.append(ref)
        for prec in ("f32", "int8"):
            rate, _, _ = machine_tokens_per_s(chip, model, prec, steps, 1)
            ratios[prec].append(rate / ref)
            rate, _, _ = machine_tokens_per_s(chip, model, prec, steps, 1, clock=time.process_time)
            ratios[prec + " cpu"].append(rate / ref_cpu)
    ratios["llama2c"] = c_rates
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--llama2c", type=Path, help="llama2.c run.c to compile and time on stories260K")
    ap.add_argument("--profile", action="store_true", help="where the int8 and f32 decode passes spend their time")
    args = ap.parse_args()
    chip = load_chip("teaching-4x4")
    targets = [("stories260K", STORIES, ["f32", "int8"])]
    tinytales = ROOT / "models" / "tinytales.gguf"
    if tinytales.is_file():
        targets.append(("tinytales", tinytales, ["int8"]))
    # the fixed part of the footprint: interpreter, numpy, numba and the executor's machine code, measured after
    # a shape-only run (no weights, no KV cache) of the first model
    warm = Machine(chip, load_model(STORIES).config, CompileOptions(precision="int8", mapping="tensor"), numeric=False)
    warm.set_prompt([1])
    warm.step_token()
    fixed = rss_bytes()
    print(f"fixed footprint (Python, numpy, numba/LLVM, executor code): {fixed / 2**20:.0f} MiB")
    ours = {}
    for name, path, precisions in targets:
        model = load_model(path)
        size = path.stat().st_size
        for prec in precisions:
            rate, m, n = machine_tokens_per_s(chip, model, prec, args.tokens, args.runs)
            ours[(name, prec)] = rate
            grown = rss_bytes() - fixed
            limited = " (context-limited)" if n < args.tokens else ""
            print(f"{name:12s} {prec:5s} {rate:8.0f} emulated tok/s  ({len(m.program.ops)} ops/token, median of"
                  f" {args.runs} x {n}{limited});  RSS {(fixed + grown) / 2**20:.0f} MiB: fixed +"
                  f" {grown / 2**20:.1f} MiB = {grown / size:.1f}x the {size / 2**20:.2f} MiB model file")
        del model
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    if args.llama2c:
        r = paired_ratios(build_llama2c(args.llama2c), chip, load_model(STORIES), args.tokens, max(args.runs, 5))
        print(f"llama2.c run.c -O3 stories260K  {statistics.median(r['llama2c']):8.0f} tok/s (median; process start-up"
              f" included)")
        for prec in ("f32", "int8", "f32 cpu", "int8 cpu"):
            vals = sorted(r[prec])
            print(f"  machine {prec:8s} / llama2.c = {statistics.median(vals):.2f} (median of {len(vals)} paired rounds;"
                  f" range {vals[0]:.2f}-{vals[-1]:.2f})")
    if args.profile:
        model = load_model(STORIES)
        for prec in ("int8", "f32"):
            call, whole, counting, rows = per_op_profile(chip, model, prec, 128)
            print(f"stories260K {prec} decode pass at 128 tokens of context, inside numba: {1e6 * whole:.0f} us"
                  f" ({1e6 * counting:.0f} us counting only) + {1e6 * call:.1f} us to call in; by op type, alone:")
            for op_name, n, sec, sec_count in rows:
                print(f"  {op_name:14s} {n:5d} ops {1e6 * sec:7.1f} us ({1e6 * sec_count:6.1f} us counting)"
                      f"  {1e9 * sec / n:7.0f} ns/op")


if __name__ == "__main__":
    main()
