"""The Pareto front of a sweep: points no other point beats on both tokens/s per user (higher) and J/token (lower)."""

from __future__ import annotations

import math
from collections.abc import Sequence

X_COLUMN = "tokens_per_s_per_user"
Y_COLUMN = "joules_per_token"


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points not dominated (maximise x, minimise y), ordered by x descending.

    q dominates p when q.x >= p.x and q.y <= p.y with one of them strict; equal points are all kept.
    """
    order = sorted(range(len(xs)), key=lambda i: (-xs[i], ys[i], i))
    front: list[int] = []
    best_y = math.inf
    i = 0
    while i < len(order):
        # a run of equal x: only its lowest y (and ties of it) can be on the front
        j = i
        while j < len(order) and xs[order[j]] == xs[order[i]]:
            j += 1
        y0 = ys[order[i]]
        if y0 < best_y:
            front += [k for k in order[i:j] if ys[k] == y0]
            best_y = y0
        i = j
    return front


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def front_rows(rows: Sequence[dict[str, str]], *, by: str = "model") -> dict[str, list[dict[str, str]]]:
    """The front of every group of rows (one per model by default), from rows that fit and have no error."""
    groups: dict[str, list[tuple[float, float, dict[str, str]]]] = {}
    for row in rows:
        if row.get("error") or row.get("fits", "true") == "false":
            continue
        x, y = _number(row.get(X_COLUMN, "")), _number(row.get(Y_COLUMN, ""))
        if x is None or y is None or x <= 0 or y <= 0:
            continue
        groups.setdefault(row.get(by, ""), []).append((x, y, row))
    out = {}
    for key, items in groups.items():
        idx = pareto_front([x for x, _, _ in items], [y for _, y, _ in items])
        out[key] = [items[i][2] for i in idx]
    return out
