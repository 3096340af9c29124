"""Mesh pane: bytes per directed link drawn on the grid (last token or cumulative), hottest links, traffic by kind."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from textual.widgets import Static

from ...machine.isa import KIND_NAMES
from ..fmt import level, nbytes, pct
from .base import HEAT, LineGrid, Pane

DIRS = "NESW"
ARROW = {0: "▴", 1: "▸", 2: "▾", 3: "◂"}
CELL_W = 4          # tile glyph, east arrow, west arrow, gap


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

    def compose(self):
        yield LineGrid(id="mesh-grid")
        yield Static(id="mesh-text")

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
        cross, intra, wrap = block_links(c.link_bytes, rows, cols, topo.kind, b)
        top = float(cross.max()) if cross.size else 0.0
        top_tile = float(intra.max()) if intra.size else 0.0
        head = f"{rows}×{cols} {topo.kind}, {what} (g toggles)"
        if b > 1:
            head += f" — {b}×{b} blocks"
        out = [[(head, "bold")],
               [("▸◂▴▾", HEAT[-1]), (f" bytes per directed link, max {nbytes(top)}  ", "dim"),
                ("■", HEAT[-1]), (" within " + ("block" if b > 1 else "tile") if b > 1 else " tile", "dim")]]
        br, bc = cross.shape[:2]
        for i in range(br):
            line_a, line_b = [], []
            for j in range(bc):
                line_a.append(("■", HEAT[level(intra[i, j], top_tile, len(HEAT))] if b > 1 else "bold"))
                if j + 1 < bc:
                    line_a.append((ARROW[1], HEAT[level(cross[i, j, 1], top, len(HEAT))]))
                    line_a.append((ARROW[3], HEAT[level(cross[i, j + 1, 3], top, len(HEAT))]))
                    line_a.append((" ", "dim"))
                if i + 1 < br:
                    line_b.append((ARROW[2], HEAT[level(cross[i, j, 2], top, len(HEAT))]))
                    line_b.append((ARROW[0], HEAT[level(cross[i + 1, j, 0], top, len(HEAT))]))
                    line_b.append(("  ", "dim"))
            out.append(line_a)
            if line_b:
                out.append(line_b)
        self.query_one(LineGrid).set_rows(out)
        self.query_one("#mesh-text", Static).update(self._text(frame, c, wrap))

    def _text(self, frame, c, wrap: float) -> str:
        plan = frame.bench.machine.plan
        nb = neighbours(plan.topology.rows, plan.topology.cols, plan.topology.kind)
        lb = c.link_bytes
        cycles = max(c.cycles, 1.0) if self.cumulative else max(float(c.clock.max()), 1.0)
        lines = [f"total {nbytes(lb.sum())} over links, {nbytes(c.hop_bytes[0])}·hops"
                 + (f"; {nbytes(wrap)} on wrap-around links (not drawn)" if wrap else "")]
        order = np.argsort(lb)[::-1][:5]
        lines.append("[b]hottest links[/b]")
        for lid in order:
            if lb[lid] <= 0:
                break
            t, d = divmod(int(lid), 4)
            lines.append(f" t{t}→t{nb[t, d]} {DIRS[d]}  {nbytes(lb[lid]):>10}  busy {pct(c.link_busy[lid], cycles)}")
        if lb.max(initial=0) <= 0:
            lines.append(" (no link traffic yet)")
        lines.append("[b]traffic by kind[/b]")
        kb = c.kind_bytes
        total = float(kb[1:].sum())
        for k in range(1, len(KIND_NAMES)):
            bar = "█" * int(round(20 * kb[k] / total)) if total else ""
            lines.append(f" {KIND_NAMES[k]:<13} {nbytes(kb[k]):>10} {pct(kb[k], total):>6} {bar}")
        return "\n".join(lines)
