"""SRAM pane: the tile grid as occupancy bars split by class, per-tile percent, and the selected tile's contents."""

from __future__ import annotations

import math

import numpy as np
from textual.binding import Binding
from textual.containers import Horizontal

from ..fmt import nbytes, pct, si
from .base import HEAT, Lines, Pane, grid_row

CLASSES = ("weights", "kv", "kv_free", "act", "staging")
GLYPH = {"weights": "█", "kv": "▓", "kv_free": "░", "act": "▒", "staging": "▚", "free": "·"}
SPLIT_PALETTE = (*CLASSES, "free", "dim")            # code 5: free, 6: the gap between cells
SPLIT_GLYPHS = np.array([GLYPH[c] for c in SPLIT_PALETTE[:6]] + [" "])
VIEWS = ("all", "weights", "kv", "act", "staging")
HEADER_LINES = 3


def class_bytes(frame) -> dict[str, np.ndarray]:
    """(T,) bytes of each SRAM class per tile; KV split into tokens held now and space reserved but empty."""
    plan = frame.bench.machine.plan
    snap = frame.snapshot
    T = plan.n_tiles
    kv_used = np.bincount(plan.kv_home.ravel(), weights=(snap.kv_tokens_sram.ravel() * plan.kv_bytes_per_token),
                          minlength=T)[:T] if snap.kv_tokens_sram.size else np.zeros(T)
    kv_used = np.minimum(kv_used, plan.kv_bytes)
    return {"weights": plan.weight_bytes.astype(float), "kv": kv_used, "kv_free": plan.kv_bytes - kv_used,
            "act": plan.act_bytes.astype(float), "staging": plan.staging_bytes.astype(float)}


_CONTENTS: dict[int, tuple] = {}


def _tile_contents(plan) -> tuple[dict, dict]:
    """(tile -> shards, tile -> [(layer, kv-head)]) for one plan, cached while that plan lives."""
    hit = _CONTENTS.get(id(plan))
    if hit is not None and hit[0] is plan:
        return hit[1], hit[2]
    shards: dict[int, list] = {}
    for s in plan.shards:
        shards.setdefault(s.tile, []).append(s)
    heads: dict[int, list] = {}
    for (l, h), t in np.ndenumerate(plan.kv_home):
        heads.setdefault(int(t), []).append((l, h))
    _CONTENTS.clear()
    _CONTENTS[id(plan)] = (plan, shards, heads)
    return shards, heads


class SramGrid(Lines):
    """Tiles (or blocks of tiles) as split bars; arrows or a click select a tile."""

    can_focus = True
    BINDINGS = [Binding("up", "move(0,-1)", "tile up", show=False), Binding("down", "move(0,1)", "tile down", show=False),
                Binding("left", "move(-1,0)", "tile left", show=False),
                Binding("right", "move(1,0)", "tile right", show=False)]

    def __init__(self, pane: "SramPane", **kw) -> None:
        super().__init__(**kw)
        self.pane = pane
        self.block = 1
        self.cell_w = 7

    def action_move(self, dx: int, dy: int) -> None:
        plan = self.pane.plan
        if plan is None:
            return
        rows, cols = plan.topology.rows, plan.topology.cols
        r, c = divmod(self.pane.selected, cols)
        r = min(rows - 1, max(0, (r // self.block + dy) * self.block))
        c = min(cols - 1, max(0, (c // self.block + dx) * self.block))
        self.pane.select(r * cols + c)

    def on_click(self, event) -> None:
        plan = self.pane.plan
        if plan is None or event.y < HEADER_LINES:
            return
        br, bc = (event.y - HEADER_LINES) // 2, event.x // self.cell_w
        r, c = br * self.block, bc * self.block
        if r < plan.topology.rows and c < plan.topology.cols:
            self.pane.select(r * plan.topology.cols + c)


class SramPane(Pane):
    TITLE = "SRAM"
    KEY = "1"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.selected = 0
        self.view = "all"
        self.plan = None
        self._frame = None
        self._grid_key = None

    def compose(self):
        with Horizontal(classes="pane-row"):
            yield SramGrid(self, id="sram-grid")
            yield Lines(id="sram-detail", classes="detail", wrap=True)

    def select(self, tile: int) -> None:
        self.selected = tile
        if self._frame is not None:
            self.show(self._frame, None)

    def cycle_view(self) -> str:
        self.view = VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)]
        if self._frame is not None:
            self.show(self._frame, None)
        return self.view

    def on_resize(self) -> None:
        if self._frame is not None:
            self.show(self._frame, None)

    def show(self, frame, ui) -> None:
        self._frame = frame
        plan = frame.bench.machine.plan
        if plan is not self.plan:
            self.plan = plan
            self.selected = min(self.selected, plan.n_tiles - 1)
        grid = self.part(SramGrid)
        detail = self.part("#sram-detail", Lines)
        cls = class_bytes(frame)
        # the grid depends on placement and KV fill only, not on the counters that change every token
        key = (id(plan), frame.pos, self.selected, self.view, self.size)  # self.plan keeps that id alive
        if key != self._grid_key:
            self._grid_key = key
            self._draw_grid(grid, plan, cls)
        detail.set_rows(self._detail(frame, plan, cls))

    def _draw_grid(self, grid: SramGrid, plan, cls) -> None:
        rows, cols = plan.topology.rows, plan.topology.cols
        cap = float(plan.sram_capacity())
        width = self.size.width or 80
        beside = width >= 72
        self.part(".pane-row").styles.layout = "horizontal" if beside else "vertical"
        avail_w = max(10, width - (36 if beside else 3))
        avail_h = max(4, (self.size.height or 20) - 2 - HEADER_LINES)
        cw = 7 if cols * 7 <= avail_w else 5
        b = 1
        while math.ceil(cols / b) * cw > avail_w or math.ceil(rows / b) * 2 > avail_h:
            b += 1
        grid.block, grid.cell_w = b, cw
        br, bc = math.ceil(rows / b), math.ceil(cols / b)
        # (br, bc, class) mean bytes per tile over each block
        r_of, c_of = np.divmod(np.arange(rows * cols), cols)
        block = (r_of // b) * bc + c_of // b
        count = np.bincount(block, minlength=br * bc)
        blk = np.stack([np.bincount(block, weights=cls[name], minlength=br * bc) for name in CLASSES], axis=1)
        blk = (blk / (np.maximum(count, 1)[:, None] * cap)).reshape(br, bc, len(CLASSES))
        sel_r, sel_c = divmod(self.selected, cols)
        sel_b = (sel_r // b, sel_c // b)
        head = f"{rows}×{cols} tiles × {nbytes(cap)}"
        if b > 1:
            head += f", as {br}×{bc} blocks of {b}×{b} (mean)"
        view = "" if self.view == "all" else f" · view: {self.view} (v)"
        legend_a = [("█", "weights"), (" weights  ", "dim"), ("▓", "kv"), (" KV  ", "dim"), ("░", "kv_free"),
                    (" KV free", "dim")]
        legend_b = [("▒", "act"), (" act  ", "dim"), ("▚", "staging"), (" staging  ", "dim"), ("·", "free"),
                    (" free (%)", "dim")]
        out = [[(head + view, "bold")], legend_a, legend_b]
        bw = cw - 1
        if self.view == "all":
            # (br, bc, bw) class index covering each cell's centre, 5 = free; then the gap column (6)
            edges = np.cumsum(blk, axis=2) * bw
            centres = np.arange(bw) + 0.5
            codes = (edges[:, :, None, :] <= centres[None, None, :, None]).sum(axis=3)
            used_frac = blk.sum(axis=2)
            palette, glyphs = SPLIT_PALETTE, SPLIT_GLYPHS
        else:
            k = CLASSES.index(self.view)
            used_frac = blk[:, :, k]
            levels = np.where(used_frac > 0, np.clip(np.ceil((len(HEAT) - 1) * used_frac), 1, len(HEAT) - 1), 0)
            codes = np.repeat(levels.astype(np.int64)[:, :, None], bw, axis=2)
            palette, glyphs = (*HEAT, "dim"), np.array([GLYPH[self.view]] * len(HEAT) + [" "])
        gap = len(palette) - 1
        codes = np.concatenate([codes, np.full((br, bc, 1), gap)], axis=2).reshape(br, bc * (bw + 1))
        for i in range(br):
            out.append(grid_row("".join(glyphs[codes[i]]), codes[i], palette))
            cells = [f"{100 * u:>{bw - 1}.0f}% " for u in used_frac[i]]
            if i == sel_b[0]:
                j = sel_b[1]
                out.append((("".join(cells[:j]), "dim"), (cells[j][:-1], "sel"), (" " + "".join(cells[j + 1:]), "dim")))
            else:
                out.append((("".join(cells), "dim"),))
        grid.set_rows(out)

    def _detail(self, frame, plan, cls) -> list:
        t = self.selected
        cols = plan.topology.cols
        cap = plan.sram_capacity()
        c = frame.snapshot.counters
        last = frame.last
        shards, heads = _tile_contents(plan)
        used = sum(float(v[t]) for k, v in cls.items() if k != "kv_free") + float(cls["kv_free"][t])
        lines = [((f"tile {t}", "bold"), (f" (row {t // cols}, col {t % cols})", "")),
                 f"used {nbytes(used)} of {nbytes(cap)} ({pct(used, cap)})",
                 f" weights {nbytes(cls['weights'][t])}  act {nbytes(cls['act'][t])}",
                 f" KV {nbytes(cls['kv'][t])} of {nbytes(cls['kv'][t] + cls['kv_free'][t])}"
                 f"  staging {nbytes(cls['staging'][t])}"]
        kv = heads.get(t, [])
        if kv:
            B = plan.options.batch
            toks = frame.snapshot.kv_tokens_sram
            desc = ", ".join(f"L{l}h{h}:{int(toks[l, h]) // B if toks.size else 0}" for l, h in kv[:6])
            lines.append(f"KV heads ({len(kv)}): {desc}{' …' if len(kv) > 6 else ''} tok/seq")
        sh = shards.get(t, [])
        if sh:
            names = [f"{s.tensor.replace('.weight', '')}[{s.r0}:{s.r1}]" + ("" if s.resident else "*") for s in sh[:5]]
            lines.append(f"shards ({len(sh)}): " + ", ".join(names) + (" …" if len(sh) > 5 else ""))
            if any(not s.resident for s in sh):
                lines.append("  * streamed from off-chip memory")
        busy = float(c.busy[t])
        cyc = c.cycles
        lines += [(("counters", "bold"), (" (cumulative / last token)", "")),
                  f" MACs {int(c.tile_macs[t].sum()):,} / {int(last.tile_macs[t].sum()):,}",
                  f" SRAM rd {nbytes(c.sram_rd[t])} wr {nbytes(c.sram_wr[t])}",
                  f" off-chip {nbytes(c.off_rd[t] + c.off_wr[t])}  vec {int(c.tile_vec[t]):,}",
                  f" sent {nbytes(c.sent[t])} recv {nbytes(c.recv[t])}",
                  f" busy {pct(busy, cyc)} of {si(cyc, 'cycles')}"]
        return [row if isinstance(row, tuple) else ((row, ""),) for row in lines]
