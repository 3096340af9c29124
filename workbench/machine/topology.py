"""Mesh, torus and ring topologies: directed links and precomputed routes between every tile pair.

A tile is an index ``r * cols + c``. Each tile owns four outgoing links (N, E, S, W);
link id = ``tile * 4 + direction``. Routes are dimension-ordered (X then Y) on a mesh,
the shorter way round on a torus or ring (ties go the positive way), and precomputed
as link-id lists so the executor only adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N, E, S, W = range(4)
DIRECTIONS = "NESW"


@dataclass(frozen=True)
class Topology:
    """rows x cols tiles; routes[src, dst, :hops[src, dst]] are the link ids a transfer crosses."""

    rows: int
    cols: int
    kind: str
    hops: np.ndarray    # (T, T) int32
    routes: np.ndarray  # (T, T, max_hops) int32, -1 padded

    @property
    def n_tiles(self) -> int:
        return self.rows * self.cols

    @property
    def n_links(self) -> int:
        return self.n_tiles * 4

    def link_exists(self) -> np.ndarray:
        """(T, 4) bool: which directed links are physically present."""
        exists = np.zeros((self.n_tiles, 4), dtype=bool)
        for t in range(self.n_tiles):
            r, c = divmod(t, self.cols)
            wrap = self.kind == "torus"
            if self.kind == "ring":
                exists[t, E] = exists[t, W] = self.n_tiles > 1
                continue
            exists[t, N] = r > 0 or (wrap and self.rows > 1)
            exists[t, S] = r < self.rows - 1 or (wrap and self.rows > 1)
            exists[t, W] = c > 0 or (wrap and self.cols > 1)
            exists[t, E] = c < self.cols - 1 or (wrap and self.cols > 1)
        return exists


def _steps(a: int, b: int, n: int, wrap: bool) -> tuple[int, int]:
    """(direction sign, count) to go from a to b on a line of n (or a ring of n when wrap)."""
    if a == b:
        return 0, 0
    fwd = (b - a) % n
    if wrap:
        back = n - fwd
        return (1, fwd) if fwd <= back else (-1, back)
    return (1, b - a) if b > a else (-1, a - b)


def build(rows: int, cols: int, kind: str) -> Topology:
    n = rows * cols
    if kind == "ring":
        # a ring threads all tiles in index order; only E/W links are used
        coords = [(0, t) for t in range(n)]
        line_rows, line_cols, wrap_r, wrap_c = 1, n, False, True
    else:
        coords = [divmod(t, cols) for t in range(n)]
        line_rows, line_cols = rows, cols
        wrap_r = wrap_c = kind == "torus"
    max_hops = (line_rows + line_cols) if n > 1 else 1
    hops = np.zeros((n, n), dtype=np.int32)
    routes = np.full((n, n, max_hops), -1, dtype=np.int32)
    for s in range(n):
        sr, sc = coords[s]
        for d in range(n):
            dr, dc = coords[d]
            path = []
            r, c = sr, sc
            sign, count = _steps(sc, dc, line_cols, wrap_c)
            for _ in range(count):
                tile = r * line_cols + c
                path.append(tile * 4 + (E if sign > 0 else W))
                c = (c + sign) % line_cols
            sign, count = _steps(sr, dr, line_rows, wrap_r)
            for _ in range(count):
                tile = r * line_cols + c
                path.append(tile * 4 + (S if sign > 0 else N))
                r = (r + sign) % line_rows
            hops[s, d] = len(path)
            routes[s, d, : len(path)] = path
    return Topology(rows, cols, kind, hops, routes)
