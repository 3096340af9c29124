"""Number formatting for the panes: bytes, SI units, percentages and sparklines (plain strings)."""

from __future__ import annotations

import math

SPARK = " ▁▂▃▄▅▆▇█"


def nbytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units: SRAM sizes are powers of two)."""
    n = float(n)
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def si(value: float, unit: str, digits: int = 3) -> str:
    """3.2e-6, 'J' -> '3.2 µJ'; 4.1e9, 'B/s' -> '4.1 GB/s'."""
    if value == 0 or not math.isfinite(value):
        return f"0 {unit}" if value == 0 else f"{value} {unit}"
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0), ("m", 1e-3),
                          ("µ", 1e-6), ("n", 1e-9), ("p", 1e-12), ("f", 1e-15)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}"


def pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "—"


def sparkline(values, width: int) -> str:
    """The last ``width`` values as block characters scaled to their max (blank when all zero)."""
    vals = list(values)[-width:]
    top = max(vals, default=0.0)
    if top <= 0:
        return " " * len(vals)
    return "".join(SPARK[min(8, max(1, round(8 * v / top)))] if v > 0 else SPARK[0] for v in vals)


def level(value: float, top: float, n_levels: int) -> int:
    """0 for nothing, else 1..n_levels-1 by the fraction of ``top``."""
    if value <= 0 or top <= 0:
        return 0
    return max(1, min(n_levels - 1, math.ceil((n_levels - 1) * value / top)))
