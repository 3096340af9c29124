"""Run every benchmark in this folder, one after another (they compete for the same cores otherwise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_machine.py", "bench_projection.py", "bench_tui.py", "bench_sweep.py"]

if __name__ == "__main__":
    failed = []
    for name in SCRIPTS:
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)], cwd=HERE.parent).returncode != 0:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
        sys.exit(1)
