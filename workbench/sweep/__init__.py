"""Design-space sweeps: a grid of chip variants x models x run options, projected in parallel, with a Pareto front.

``load_sweep(path)`` validates a sweep.toml; ``run_sweep(sweep, out)`` evaluates it (resumably) into a CSV.
"""

from __future__ import annotations

from .pareto import X_COLUMN, Y_COLUMN, front_rows, pareto_front
from .run import (
    SweepInterrupted,
    SweepSummary,
    available_cores,
    evaluate_points,
    run_sweep,
)
from .spec import MAX_POINTS, RUN_OPTIONS, Axis, Sweep, load_sweep
from .store import ResultStore, sidecar_path

__all__ = [
    "MAX_POINTS",
    "RUN_OPTIONS",
    "X_COLUMN",
    "Y_COLUMN",
    "Axis",
    "ResultStore",
    "Sweep",
    "SweepInterrupted",
    "SweepSummary",
    "available_cores",
    "evaluate_points",
    "front_rows",
    "load_sweep",
    "pareto_front",
    "run_sweep",
    "sidecar_path",
]
