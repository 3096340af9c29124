"""Mesh pane: bytes per directed link drawn on the grid (last token or cumulative), hottest links, traffic by kind.
A crossbar chip (a GPU) has no links between tiles: each tile is drawn with the bytes through its two ports."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ...machine.isa import KIND_NAMES
from ...machine.topology import PORT_IN, PORT_OUT
from ..fmt import nbytes, pct
from .base import HEAT, Lines, Pane, grid_row

ARROW = {0: "▴", 1: "▸", 2: "▾", 3: "◂"}
CELL_W = 4          # tile glyph, east arrow, west arrow, gap
PALETTE = (*HEAT, "dim", "bold")
DIM, BOLD = len(HEAT), len(HEAT) + 1


def levels(values: np.ndarray, top: float) -> np.ndarray:
    """Heat level per value: 0 for nothing, else 1..len(HEAT)-1 by the fraction of ``top`` (as fmt.level)."""
    n = len(HEAT)
    if top <= 0:
        return np.zeros(values.shape, dtype=np.int64)
    lv = np.clip(np.ceil((n - 1) * values / top), 1, n - 1).astype(np.int64)
    return np.where(values > 0, lv, 0)


@lru_cache(maxsize=8)
def neighbours(rows: int, cols: int, kind: str) -> np.ndarray:
    """(T, 4) tile at the far end of each directed link N/E/S/W (-1 when absent); ring = linear order."""
    T = rows * cols
    out = np.full((T, 4), -1, dtype=np.int64)
    for t in range(T):
        r, c = divmod(t, cols)
        if kind == "ring":
            if T > 1:
                out[t, 1], out[t, 3] = (t + 1) % T, (t - 1) % T
            continue
        wrap = kind == "torus"
        for d, (dr, dc) in enumerate(((-1, 0), (0, 1), (1, 0), (0, -1))):
            rr, cc = r + dr, c + dc
            if wrap:
                rr, cc = rr % rows, cc % cols
            if 0 <= rr < rows and 0 <= cc < cols and (rr, cc) != (r, c):
                out[t, d] = rr * cols + cc
    return out


def block_links(link_bytes: np.ndarray, rows: int, cols: int, kind: str, b: int):
    """Sum link bytes into blocks of b×b tiles: (br, bc, 4) bytes crossing into the adjacent block in each
    direction, (br, bc) bytes staying inside a block, and bytes on wrap-around links that are not drawn."""
    nb = neighbours(rows, cols, kind)
    T = rows * cols
    br, bc = math.ceil(rows / b), math.ceil(cols / b)
    src = np.repeat(np.arange(T), 4)
    dst = nb.ravel()
    d = np.tile(np.arange(4), T)
    v = link_bytes.astype(float)
    ok = (dst >= 0) & (v > 0)
    src, dst, d, v = src[ok], dst[ok], d[ok], v[ok]
    sr, sc = np.divmod(src, cols)
    tr, tc = np.divmod(dst, cols)
    sbr, sbc, tbr, tbc = sr // b, sc // b, tr // b, tc // b
    step_r = np.array([-1, 0, 1, 0])[d]
    step_c = np.array([0, 1, 0, -1])[d]
    inside = (sbr == tbr) & (sbc == tbc)
    adjacent = (tbr == sbr + step_r) & (tbc == sbc + step_c)
    cross = np.zeros((br, bc, 4))
    np.add.at(cross, (sbr[adjacent], sbc[adjacent], d[adjacent]), v[adjacent])
    intra = np.zeros((br, bc))
    np.add.at(intra, (sbr[inside], sbc[inside]), v[inside])
    wrap = float(v[~inside & ~adjacent].sum())
    return cross, intra, wrap


class MeshPane(Pane):
    TITLE = "Mesh traffic"
    KEY = "3"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.cumulative = False
        self._frame = None
        self._grid_key = None
        self._wrap_bytes = 0.0

    def compose(self):
        yield Lines(id="mesh-grid")
        yield Lines(id="mesh-text", wrap=True)

    def toggle(self) -> bool:
        self.cumulative = not self.cumulative
        if self._frame is not None:
            self.show(self._frame, None)
        return self.cumulative

    def on_resize(self) -> None:
        if self._frame is not None:
            self.show(self._frame, None)

    def show(self, frame, ui) -> None:
        self._frame = frame
        plan = frame.bench.machine.plan
        topo = plan.topology
        c = frame.snapshot.counters if self.cumulative else frame.last
        what = "cumulative" if self.cumulative else ("last token" if frame.last_complete else "this token so far")
        rows, cols = topo.rows, topo.cols
        avail_w = max(8, (self.size.width or 60) - 3)
        avail_h = max(4, (self.size.height or 24) - 4)  # the lists below scroll
        b = 1
        while math.ceil(cols / b) * CELL_W > avail_w or math.ceil(rows / b) * 2 > avail_h:
            b += 1
        # per-token traffic repeats from token to token: the grid is redrawn only when the bytes differ
        key = (c.link_bytes.tobytes(), rows, cols, topo.kind, b, what)
        if key == self._grid_key:
            self.part("#mesh-text", Lines).set_rows(self._text(frame, c, self._wrap_bytes))
            return
        self._grid_key = key
        if topo.kind == "crossbar":
            self._wrap_bytes = 0.0
            self.part("#mesh-grid", Lines).set_rows(self._crossbar_grid(c.link_bytes, rows, cols, b, what))
            self.part("#mesh-text", Lines).set_rows(self._text(frame, c, 0.0))
            return
        cross, intra, wrap_bytes = block_links(c.link_bytes, rows, cols, topo.kind, b)
        self._wrap_bytes = wrap_bytes
        top = float(cross.max()) if cross.size else 0.0
        top_tile = float(intra.max()) if intra.size else 0.0
        head = f"{rows}×{cols} {topo.kind}, {what} (g toggles)"
        if b > 1:
            head += f" — {b}×{b} blocks"
        out = [[(head, "bold")],
               [("▸◂▴▾", HEAT[-1]), (f" bytes per directed link, max {nbytes(top)}  ", "dim"),
                ("■", HEAT[-1]), (" within " + ("block" if b > 1 else "tile") if b > 1 else " tile", "dim")]]
        br, bc = cross.shape[:2]
        lv = levels(cross, top)
        tile_lv = levels(intra, top_tile) if b > 1 else np.full((br, bc), BOLD)
        text_a = "■▸◂ " * (bc - 1) + "■"
        text_b = "▾▴  " * bc
        for i in range(br):
            # tile, its east link, the west link of the tile to its right, gap
            codes = np.stack([tile_lv[i], lv[i, :, 1], np.roll(lv[i, :, 3], -1), np.full(bc, DIM)], axis=1)
            out.append(grid_row(text_a, codes.ravel()[:len(text_a)], PALETTE))
            if i + 1 < br:  # south link, north link of the tile below, gap
                codes = np.stack([lv[i, :, 2], lv[i + 1, :, 0], np.full(bc, DIM), np.full(bc, DIM)], axis=1)
                out.append(grid_row(text_b, codes.ravel(), PALETTE))
        self.part("#mesh-grid", Lines).set_rows(out)
        text = self.part("#mesh-text", Lines)
        text.set_rows(self._text(frame, c, wrap_bytes))

    @staticmethod
    def _crossbar_grid(link_bytes: np.ndarray, rows: int, cols: int, b: int, what: str) -> list:
        """One cell per tile (or b×b block): bytes through its ports out and in."""
        per_tile = link_bytes[PORT_OUT::4].astype(float) + link_bytes[PORT_IN::4].astype(float)
        br, bc = math.ceil(rows / b), math.ceil(cols / b)
        grid = np.zeros((br * b, bc * b))
        grid[:rows, :cols] = per_tile.reshape(rows, cols)
        blocks = grid.reshape(br, b, bc, b).sum(axis=(1, 3))
        top = float(blocks.max()) if blocks.size else 0.0
        head = f"{rows}×{cols} crossbar, {what} (g toggles)" + (f" — {b}×{b} blocks" if b > 1 else "")
        out = [[(head, "bold")], [("■", HEAT[-1]), (f" bytes through a tile's ports out + in, max {nbytes(top)}", "dim")]]
        lv = levels(blocks, top)
        text = "■   " * (bc - 1) + "■"
        for i in range(br):
            codes = np.stack([lv[i], np.full(bc, DIM), np.full(bc, DIM), np.full(bc, DIM)], axis=1)
            out.append(grid_row(text, codes.ravel()[:len(text)], PALETTE))
        return out

    def _text(self, frame, c, wrap: float) -> list:
        plan = frame.bench.machine.plan
        nb = neighbours(plan.topology.rows, plan.topology.cols, plan.topology.kind)
        lb = c.link_bytes
        cycles = max(c.cycles, 1.0) if self.cumulative else max(float(c.clock.max()), 1.0)
        lines = [f"total {nbytes(lb.sum())} over links, {nbytes(c.hop_bytes[0])}·hops"
                 + (f"; {nbytes(wrap)} on wrap-around links (not drawn)" if wrap else "")]
        order = np.argsort(lb)[::-1][:5]
        lines.append((("hottest links", "bold"),))
        for lid in order:
            if lb[lid] <= 0:
                break
            t, d = divmod(int(lid), 4)
            label = plan.topology.link_label(int(lid))
            where = f"t{t} {label}" if plan.topology.kind == "crossbar" else f"t{t}→t{nb[t, d]} {label}"
            lines.append(f" {where}  {nbytes(lb[lid]):>10}  busy {pct(c.link_busy[lid], cycles)}")
        if lb.max(initial=0) <= 0:
            lines.append(" (no link traffic yet)")
        lines.append((("traffic by kind", "bold"),))
        kb = c.kind_bytes
        total = float(kb[1:].sum())
        for k in range(1, len(KIND_NAMES)):
            bar = "█" * int(round(20 * kb[k] / total)) if total else ""
            lines.append(f" {KIND_NAMES[k]:<13} {nbytes(kb[k]):>10} {pct(kb[k], total):>6} {bar}")
        return [row if isinstance(row, tuple) else ((row, ""),) for row in lines]
