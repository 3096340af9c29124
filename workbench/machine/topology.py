"""Mesh, torus, ring and crossbar topologies: directed links and the route between every tile pair.

A tile is an index ``r * cols + c``. Each tile owns four outgoing links (N, E, S, W);
link id = ``tile * 4 + direction``. Routes are dimension-ordered (X then Y) on a mesh,
the shorter way round on a torus or ring (ties go the positive way). A crossbar (a GPU's SMs
reaching each other through L2) gives each tile one port out (its N link id) and one port in
(its S link id): every transfer crosses the sender's port out and the receiver's port in.
Hop counts are a (T, T) table; the links of a route are computed on the fly by
:func:`route_links` (numba), so a 900-tile wafer needs no T x T x hops table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit

N, E, S, W = range(4)
DIRECTIONS = "NESW"
PORT_OUT, PORT_IN = N, S   # a crossbar tile's two links


@dataclass(frozen=True)
class Topology:
    """rows x cols tiles laid out as ``kind``; ``hops[src, dst]`` is the route length in links.

    ``geometry`` is the int64 vector the numba router takes: (line_rows, line_cols, wrap_rows, wrap_cols,
    crossbar).
    """

    rows: int
    cols: int
    kind: str
    hops: np.ndarray      # (T, T) int32
    geometry: np.ndarray  # (4,) int64

    @property
    def n_tiles(self) -> int:
        return self.rows * self.cols

    @property
    def n_links(self) -> int:
        return self.n_tiles * 4

    def path(self, src: int, dst: int) -> list[int]:
        """Link ids a transfer from ``src`` to ``dst`` crosses, in order."""
        out = np.zeros(int(self.hops[src, dst]), dtype=np.int64)
        route_links(src, dst, self.geometry, out)
        return [int(x) for x in out]

    def link_label(self, link: int) -> str:
        """What a link id is called: its direction N/E/S/W on a grid, 'port out' / 'port in' on a crossbar."""
        d = link % 4
        if self.kind == "crossbar":
            return {PORT_OUT: "port out", PORT_IN: "port in"}.get(d, "?")
        return DIRECTIONS[d]

    def link_destination(self) -> np.ndarray:
        """(T*4,) the tile each directed link leads to, -1 where the link does not exist (or, on a crossbar,
        for a tile's port out: it leads into the crossbar; a port in leads to its own tile)."""
        if self.kind == "crossbar":
            dst = np.full(self.n_links, -1, dtype=np.int64)
            dst[PORT_IN::4] = np.arange(self.n_tiles)
            return dst
        exists = self.link_exists().ravel()
        dst = np.full(self.n_links, -1, dtype=np.int64)
        for lk in np.nonzero(exists)[0]:
            dst[lk] = _neighbour(int(lk) // 4, int(lk) % 4, self.geometry)
        return dst

    def link_exists(self) -> np.ndarray:
        """(T, 4) bool: which directed links are physically present."""
        exists = np.zeros((self.n_tiles, 4), dtype=bool)
        if self.kind == "crossbar":
            exists[:, PORT_OUT] = exists[:, PORT_IN] = self.n_tiles > 1
            return exists
        if self.kind == "ring":
            exists[:, E] = exists[:, W] = self.n_tiles > 1
            return exists
        wrap = self.kind == "torus"
        r, c = np.divmod(np.arange(self.n_tiles), self.cols)
        exists[:, N] = (r > 0) | (wrap and self.rows > 1)
        exists[:, S] = (r < self.rows - 1) | (wrap and self.rows > 1)
        exists[:, W] = (c > 0) | (wrap and self.cols > 1)
        exists[:, E] = (c < self.cols - 1) | (wrap and self.cols > 1)
        return exists


def _geometry(rows: int, cols: int, kind: str) -> tuple[int, int, bool, bool]:
    if kind == "ring":  # a ring threads all tiles in index order; only E/W links are used
        return 1, rows * cols, False, True
    wrap = kind == "torus"
    return rows, cols, wrap, wrap


def _axis_steps(a: np.ndarray, b: np.ndarray, n: int, wrap: bool) -> tuple[np.ndarray, np.ndarray]:
    """(sign, count) arrays to go from a to b on a line of n, or a ring of n when wrap."""
    if wrap:
        fwd = (b - a) % n
        back = n - fwd
        take_fwd = fwd <= back
        count = np.where(fwd == 0, 0, np.where(take_fwd, fwd, back))
        sign = np.where(take_fwd, 1, -1)
        return sign, count
    return np.where(b >= a, 1, -1), np.abs(b - a)


@lru_cache(maxsize=32)
def build(rows: int, cols: int, kind: str) -> Topology:
    """The topology of a rows x cols grid (cached: it depends on nothing else)."""
    lr, lc, wr, wc = _geometry(rows, cols, kind)
    t = np.arange(rows * cols)
    if kind == "crossbar":  # port out, port in
        hops = np.where(t[:, None] == t[None, :], 0, 2).astype(np.int32)
    else:
        r, c = np.divmod(t, lc)
        _, cx = _axis_steps(c[:, None], c[None, :], lc, wc)
        _, cy = _axis_steps(r[:, None], r[None, :], lr, wr)
        hops = (cx + cy).astype(np.int32)
    hops.setflags(write=False)
    geometry = np.array([lr, lc, int(wr), int(wc), int(kind == "crossbar")], dtype=np.int64)
    geometry.setflags(write=False)
    return Topology(rows, cols, kind, hops, geometry)


@njit(cache=True, nogil=True)
def _line_step(a, b, n, wrap):
    if a == b:
        return 0, 0
    fwd = (b - a) % n
    if wrap:
        back = n - fwd
        if fwd <= back:
            return 1, fwd
        return -1, back
    if b > a:
        return 1, b - a
    return -1, a - b


@njit(cache=True, nogil=True)
def route_links(src, dst, geometry, out):
    """Write the link ids of the route src -> dst into out[:hops]; returns hops."""
    if geometry[4] == 1:  # crossbar: the sender's port out, the receiver's port in
        if src == dst:
            return 0
        out[0] = src * 4 + 0
        out[1] = dst * 4 + 2
        return 2
    lr = geometry[0]
    lc = geometry[1]
    r, c = src // lc, src % lc
    dr, dc = dst // lc, dst % lc
    k = 0
    sign, count = _line_step(c, dc, lc, geometry[3] == 1)
    for _ in range(count):
        out[k] = (r * lc + c) * 4 + (1 if sign > 0 else 3)
        c = (c + sign) % lc
        k += 1
    sign, count = _line_step(r, dr, lr, geometry[2] == 1)
    for _ in range(count):
        out[k] = (r * lc + c) * 4 + (2 if sign > 0 else 0)
        r = (r + sign) % lr
        k += 1
    return k


@njit(cache=True, nogil=True)
def _neighbour(tile, direction, geometry):
    lr = geometry[0]
    lc = geometry[1]
    r, c = tile // lc, tile % lc
    if direction == 0:
        r = (r - 1) % lr
    elif direction == 2:
        r = (r + 1) % lr
    elif direction == 1:
        c = (c + 1) % lc
    else:
        c = (c - 1) % lc
    return r * lc + c
