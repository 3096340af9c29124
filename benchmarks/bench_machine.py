"""Steady-state emulated tokens/s on teaching-4x4 with every counter on, peak RSS, and llama2.c's run.c for scale.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_machine.py [--llama2c /tmp/llama2c-ref/run.c] [--profile]

Each figure is the median of >= 5 runs of ``--tokens`` decode steps after a warm-up (numba compiled,
prefill done). ``--profile`` splits one run's wall time by op type (stepping op by op).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.chip import load_chip  # noqa: E402
from workbench.compiler import CompileOptions  # noqa: E402
from workbench.machine import isa  # noqa: E402
from workbench.machine.machine import Machine  # noqa: E402
from workbench.model.load import load_model  # noqa: E402

SHARED = Path(os.environ.get("ASICBENCH_SHARED", ROOT.parent / "shared"))  # as tests/conftest.py finds it
STORIES = SHARED / "fixtures" / "stories260K.bin"
TOKENIZER = SHARED / "fixtures" / "llama2c-tokenizer.bin"


def machine_tokens_per_s(chip, model, precision: str, tokens: int, runs: int) -> tuple[float, Machine, int]:
    """Median decode tok/s; ``tokens`` is clamped to what the planned context holds after the prompt."""
    rates = []
    for _ in range(runs):
        m = Machine(chip, model, CompileOptions(precision=precision, mapping="tensor"))
        m.set_prompt([1])
        m.step_token()  # prefill (and numba's first call) out of the timing
        n = min(tokens, m.plan.context - len(m.prompt))
        t0 = time.perf_counter()
        m.generate(n)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), m, n


def per_op_profile(chip, model, precision: str, tokens: int) -> list[tuple[str, float, int]]:
    """Wall seconds per opcode over ``tokens`` decode steps, one op at a time (adds Python overhead per op)."""
    m = Machine(chip, model, CompileOptions(precision=precision, mapping="tensor"))
    m.set_prompt([1])
    m.step_token()
    wall = [0.0] * isa.N_OPCODES
    count = [0] * isa.N_OPCODES
    done = 0
    while done < tokens:
        code = int(m.program.ops[m.pc]["opcode"]) if m.in_pass else int(m.program.ops[0]["opcode"])
        t0 = time.perf_counter()
        out = m.step_op()
        wall[code] += time.perf_counter() - t0
        count[code] += 1
        done += out is not None
    return sorted(((isa.OPCODE_NAMES[i], wall[i], count[i]) for i in range(isa.N_OPCODES) if count[i]),
                  key=lambda r: -r[1])


def llama2c_tokens_per_s(run_c: Path, model: Path, steps: int, runs: int) -> float | None:
    """Compile run.c with gcc -O3 and time greedy generation of ``steps`` tokens (median of runs)."""
    exe = Path(tempfile.mkdtemp()) / "run"
    subprocess.run(["gcc", "-O3", "-o", str(exe), str(run_c), "-lm"], check=True)
    rates = []
    for _ in range(runs):
        cmd = [str(exe), str(model), "-t", "0", "-n", str(steps), "-z", str(TOKENIZER)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        rates.append(steps / (time.perf_counter() - t0))  # process start-up included, as a user sees it
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--llama2c", type=Path, help="llama2.c run.c to compile and time on stories260K")
    ap.add_argument("--profile", action="store_true", help="per-op-type breakdown of the int8 decode step")
    args = ap.parse_args()
    chip = load_chip("teaching-4x4")
    targets = [("stories260K", STORIES, ["f32", "int8"])]
    tinytales = ROOT / "models" / "tinytales.gguf"
    if tinytales.is_file():
        targets.append(("tinytales", tinytales, ["int8"]))
    ours = {}
    for name, path, precisions in targets:
        model = load_model(path)
        size = path.stat().st_size
        for prec in precisions:
            rate, m, n = machine_tokens_per_s(chip, model, prec, args.tokens, args.runs)
            ours[(name, prec)] = rate
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            print(f"{name:12s} {prec:5s} {rate:8.0f} emulated tok/s  ({len(m.program.ops)} ops/token,"
                  f" median of {args.runs} x {n}{' (context-limited)' if n < args.tokens else ''});  peak RSS so far {rss / 2**20:.0f} MiB"
                  f" = {rss / size:.0f}x the {size / 2**20:.2f} MiB model file")
    if args.llama2c:
        rate = llama2c_tokens_per_s(args.llama2c, STORIES, args.tokens, args.runs)
        print(f"llama2.c run.c -O3 stories260K  {rate:8.0f} tok/s")
        for prec in ("f32", "int8"):
            print(f"  machine {prec} / llama2.c = {ours[('stories260K', prec)] / rate:.2f}")
    if args.profile:
        model = load_model(STORIES)
        rows = per_op_profile(chip, model, "int8", 32)
        total = sum(r[1] for r in rows)
        print("int8 decode, wall time by op type (op-by-op stepping, 32 tokens):")
        for name, sec, n in rows:
            print(f"  {name:14s} {100 * sec / total:5.1f}%  {1e6 * sec / n:7.1f} us/op  {n // 32:5d} ops/token")


if __name__ == "__main__":
    main()
