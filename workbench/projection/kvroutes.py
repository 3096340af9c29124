"""How a layer's cost moves with where its kv-heads live: the attention transfers at every kv-home offset.

The compiler puts layer l's kv-head h on group tile g[(l * H + h) % G], so successive layers send q, k, v rows
to, and attention outputs from, different tiles. Everything else in a layer is the same at every offset, and
each of those transfers is one SEND op that synchronises its tiles, so a layer at offset o costs what the
reduced program's layer costs plus the difference in these SENDs' durations (and counts). The transfer pairs
follow compiler.emit_program's gather_rows; durations follow the executor's comm ops: the most loaded link,
plus the longest route's hops, plus the per-op overhead (cost.py parameters). The same replay costs the
activation SEND between consecutive on-chip pipeline groups (placement.place_stage) on the chip's whole mesh.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from numba import njit

from .. import cost
from ..compiler import ACT_BYTES, _groups, _shard, attn_tiles, crossing_pairs, hidden_slices
from ..machine import isa
from ..machine.tensors import tensor_table
from ..machine.topology import route_links
from ..model.config import ModelConfig
from .placement import topology


@dataclass(frozen=True)
class SendStats:
    """The attention SENDs of a layer (in program order: q rows to each part's tiles, k and v rows to the kv homes,
    attention outputs from each part's tiles to the tiles owning their slice). Per offset (O,) and SEND (N): worst
    link load and longest route (bytes per column, hops), whether the op exists, byte-hops per column; per offset,
    SEND and tile (O, N, T): SRAM bytes read and written per column. ``parts`` (N, 2): the (part, parts) whose columns a SEND
    carries (isa.part_cols; parts 0: every column)."""

    offsets: tuple[int, ...]
    worst_bytes: np.ndarray
    max_hops: np.ndarray
    present: np.ndarray
    hop_bytes: np.ndarray
    sram_rd: np.ndarray
    sram_wr: np.ndarray
    parts: np.ndarray

    def columns(self, ncol: int, block_cols: int) -> np.ndarray:
        """(N,) columns each SEND carries in a pass of ``ncol`` columns streamed in blocks of ``block_cols``."""
        return _columns(tuple(map(tuple, self.parts.tolist())), ncol, block_cols)

    def cycles(self, params: np.ndarray, ncol: int) -> np.ndarray:
        """(O,) cycles the SENDs take at each offset with ``ncol`` columns (a SEND without columns does not run)."""
        cols = self.columns(ncol, int(params[cost.P_BLOCK_COLS]))
        per = (self.worst_bytes * cols / params[cost.P_LINK_BPC] + self.max_hops * params[cost.P_HOP_LAT]
               + params[cost.P_OP_OVERHEAD])
        return (per * self.present * (cols > 0)).sum(axis=1)

    def moved(self, weight: np.ndarray, ncols: list[int], block_cols: int) -> tuple[float, np.ndarray, np.ndarray]:
        """Byte-hops, SRAM bytes read (T,) and written (T,) of the SENDs over passes of ``ncols`` columns, offset o
        counted ``weight[o]`` times. The (O, N, T) tables are contracted over the offsets first: one pass over them
        (they are the bulk of a projection's memory traffic on a 132-tile chip), then per pass over N only."""
        rd = np.tensordot(weight, self.sram_rd, axes=(0, 0))   # (N, T)
        wr = np.tensordot(weight, self.sram_wr, axes=(0, 0))
        hops = weight @ self.hop_bytes                           # (N,)
        hb, r, x = 0.0, np.zeros(rd.shape[1]), np.zeros(rd.shape[1])
        for n in ncols:
            cols = self.columns(n, block_cols)
            hb, r, x = hb + float(hops @ cols), r + cols @ rd, x + cols @ wr
        return hb, r, x


@lru_cache(maxsize=256)
def _columns(parts: tuple[tuple[int, int], ...], ncol: int, block_cols: int) -> np.ndarray:
    """isa.part_cols' width for each (part, parts), read-only (a projection asks for the same few passes)."""
    out = np.array([hi - lo for lo, hi in (isa.part_cols(j, n, ncol, block_cols) for j, n in parts)], float)
    out.setflags(write=False)
    return out


def _pairs(src_tiles, src_lo, src_hi, dst_tiles, dst_lo, dst_hi):
    """gather_rows: every (source range, destination range) overlap becomes src -> dst of overlap x ACT_BYTES.
    Returns (src, dst, bytes, source index, destination index) of the overlaps."""
    src_tiles, dst_tiles = np.asarray(src_tiles), np.asarray(dst_tiles)
    ov = (np.minimum(np.asarray(src_hi)[:, None], np.asarray(dst_hi)[None, :])
          - np.maximum(np.asarray(src_lo)[:, None], np.asarray(dst_lo)[None, :]))
    si, di = np.nonzero((ov > 0) & (src_tiles[:, None] != dst_tiles[None, :]))
    return src_tiles[si], dst_tiles[di], ov[si, di] * ACT_BYTES, si, di


@njit(cache=True, nogil=True)
def _stats(src, dst, nbytes, op, n_ops, geometry, hops, n_tiles, n_links, buf):
    """Per op (n_ops,): worst link load, longest route, present, byte-hops; SRAM bytes read/written (n_ops, T)."""
    load = np.zeros((n_ops, n_links))
    hmax = np.zeros(n_ops)
    present = np.zeros(n_ops)
    hop_bytes = np.zeros(n_ops)
    rd = np.zeros((n_ops, n_tiles))
    wr = np.zeros((n_ops, n_tiles))
    for i in range(len(src)):
        k = op[i]
        h = route_links(src[i], dst[i], geometry, buf)
        for j in range(h):
            load[k, buf[j]] += nbytes[i]
        hop_bytes[k] += nbytes[i] * h
        rd[k, src[i]] += nbytes[i]
        wr[k, dst[i]] += nbytes[i]
        present[k] = 1.0
        if hops[src[i], dst[i]] > hmax[k]:
            hmax[k] = hops[src[i], dst[i]]
    worst = np.zeros(n_ops)
    for k in range(n_ops):
        worst[k] = load[k].max()
    return worst, hmax, present, hop_bytes, rd, wr


@lru_cache(maxsize=64)
def _attention_shards(n_tiles: int, group_max: int, config: ModelConfig, precision: str):
    cfg1 = replace(config, n_layers=1, name="")
    groups = _groups(n_tiles, 1, "tensor", group_max)
    shards, _ = _shard(cfg1, tensor_table(cfg1, precision), groups, [0])
    own: dict[str, list] = {}
    for s in shards:
        own.setdefault(s.tensor, []).append(s)
    return list(groups[0]), tuple(tuple(own[f"blk.0.{n}.weight"]) for n in ("attn_q", "attn_k", "attn_v"))


def _send_arrays(n_tiles: int, group_max: int, config: ModelConfig, precision: str, offset: int, parts: int):
    """Every transfer of a layer's attention SENDs as arrays (src, dst, bytes per column, op), ops numbered in
    program order (q rows to part j's tiles: j; k and v rows to the homes: parts; outputs from part j's tiles:
    parts + 1 + j), and each op's (part, parts) (N, 2)."""
    g, (q, k, v) = _attention_shards(n_tiles, group_max, replace(config, n_layers=1, name=""), precision)
    H, hd = config.n_kv_heads, config.head_dim
    n_rep = config.n_heads // H
    hq = np.arange(H) * n_rep * hd
    hk = np.arange(H) * hd
    G = len(g)
    tiles = np.array([attn_tiles(g, g[(offset + h) % G], H, parts) for h in range(H)])   # (H, parts)
    by_part = tiles.T.ravel()                                                              # part-major
    hq_p = np.tile(hq, parts)
    kv = k + v
    qs = _pairs([s.tile for s in q], [s.r0 for s in q], [s.r1 for s in q], by_part, hq_p, hq_p + n_rep * hd)
    kvs = _pairs([s.tile for s in kv], [s.r0 for s in kv], [s.r1 for s in kv], tiles[:, 0], hk, hk + hd)
    att = [(t, lo, hi) for t, (lo, hi) in zip(g, hidden_slices(config.q_dim, G)) if hi > lo]
    outs = _pairs(by_part, hq_p, hq_p + n_rep * hd, [t for t, _, _ in att], [lo for _, lo, _ in att],
                  [hi for _, _, hi in att])
    ops = [qs[4] // H, np.full(len(kvs[0]), parts), parts + 1 + outs[3] // H]
    src, dst, nb = (np.concatenate([qs[j], kvs[j], outs[j]]).astype(np.int64) for j in range(3))
    op = np.concatenate(ops).astype(np.int64)
    part_of = np.array([(j, parts) for j in range(parts)] + [(0, 0)] + [(j, parts) for j in range(parts)], np.int64)
    return src, dst, nb, op, part_of


def send_pairs(n_tiles: int, group_max: int, config: ModelConfig, precision: str, offset: int,
               parts: int = 1) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]]:
    """(src, dst, bytes per column, (part, parts)) of a layer's attention SENDs, in program order, when its kv-heads
    sit at ``offset`` (home of head h: group tile (offset + h) % G) and each runs on ``parts`` tiles
    (compiler.attn_tiles)."""
    src, dst, nb, op, part_of = _send_arrays(n_tiles, group_max, config, precision, offset, parts)
    return [(src[op == i], dst[op == i], nb[op == i], (int(j), int(n))) for i, (j, n) in enumerate(part_of)]


@lru_cache(maxsize=64)
def send_stats(rows: int, cols: int, kind: str, n_tiles: int, group_max: int, config: ModelConfig, precision: str,
               offsets: tuple[int, ...], parts: int = 1) -> SendStats:
    """SendStats of one layer of ``config`` (a chip's slice) on the chip's tensor group at each kv offset, each
    kv-head's attention on ``parts`` tiles."""
    topo = topology(rows, cols, kind, min(n_tiles, group_max))
    buf = np.zeros(topo.rows + topo.cols + 2, np.int64)
    O = len(offsets)
    out = None
    part_of = None
    for i, o in enumerate(offsets):
        src, dst, nb, op, part_of = _send_arrays(n_tiles, group_max, config, precision, o, parts)
        N = len(part_of)
        if out is None:
            out = [np.zeros((O, N)), np.zeros((O, N)), np.zeros((O, N)), np.zeros((O, N)),
                   np.zeros((O, N, topo.n_tiles)), np.zeros((O, N, topo.n_tiles))]
        res = _stats(src, dst, nb.astype(np.float64), op, N, topo.geometry, topo.hops, topo.n_tiles, topo.n_links, buf)
        for arr, val in zip(out, res):
            arr[i] = val
    for a in (*out, part_of):
        a.setflags(write=False)
    return SendStats(offsets, *out, part_of)


@lru_cache(maxsize=64)
def embed_cycles_by_owner(rows: int, cols: int, kind: str, n_tiles: int, group_max: int, config: ModelConfig,
                          precision: str,
                          link_bpc: float, hop_lat: float, overhead: float) -> tuple[np.ndarray, np.ndarray]:
    """A one-token EMBED (executor: the owner of the token's row sends ``dim`` fp32 values to every other group
    tile) for each token id's owner: (cycles per token id (V,), byte-hops per token id (V,))."""
    cfg1 = replace(config, n_layers=1, name="")
    groups = _groups(n_tiles, 1, "tensor", group_max)
    g = np.asarray(groups[0])
    shards, _ = _shard(cfg1, tensor_table(cfg1, precision), groups, [0])
    emb = [s for s in shards if s.tensor == "token_embd.weight"]
    topo = topology(rows, cols, kind, min(n_tiles, group_max))
    buf = np.zeros(topo.rows + topo.cols + 2, np.int64)
    V = cfg1.vocab_size
    cyc, hb = np.zeros(V), np.zeros(V)
    nb = float(cfg1.dim * 4)
    for s in emb:
        dst = g[g != s.tile]
        src = np.full(len(dst), s.tile)
        w, h, _, hop_bytes, _, _ = _stats(src.astype(np.int64), dst.astype(np.int64), np.full(len(dst), nb),
                                          np.zeros(len(dst), np.int64), 1, topo.geometry, topo.hops, topo.n_tiles,
                                          topo.n_links, buf)
        cyc[s.r0:s.r1] = w[0] / link_bpc + h[0] * hop_lat + overhead
        hb[s.r0:s.r1] = hop_bytes[0]
    return cyc, hb


@dataclass(frozen=True)
class CrossingStats:
    """The activation SENDs between consecutive on-chip pipeline groups (crossing c: group c to c + 1), per
    column: worst link load and longest route (C,), byte-hops (C,), SRAM bytes read/written per tile in the
    first group's numbering (C, S)."""

    worst_bytes: np.ndarray
    max_hops: np.ndarray
    hop_bytes: np.ndarray
    sram_rd: np.ndarray
    sram_wr: np.ndarray

    def cycles(self, params: np.ndarray, ncol: int) -> np.ndarray:
        """(C,) cycles each crossing's SEND takes with ``ncol`` columns (the executor's comm-op timing)."""
        return (self.worst_bytes * ncol / params[cost.P_LINK_BPC] + self.max_hops * params[cost.P_HOP_LAT]
                + params[cost.P_OP_OVERHEAD])


@lru_cache(maxsize=64)
def crossing_stats(rows: int, cols: int, kind: str, group_tiles: int, n_groups: int, dim: int) -> CrossingStats:
    """compiler.emit_program's group change, routed on the chip's real mesh (groups are consecutive runs of
    ``group_tiles`` tile ids, as compiler._groups lays them out): each tile's slice of the hidden state goes to
    the next group's tiles that hold it (compiler.crossing_pairs)."""
    S = group_tiles
    topo = topology(rows, cols, kind, n_groups * S)
    buf = np.zeros(topo.rows + topo.cols + 2, np.int64)
    C = n_groups - 1
    worst, hmax, hb = np.zeros(C), np.zeros(C), np.zeros(C)
    rd, wr = np.zeros((C, S)), np.zeros((C, S))
    for c in range(C):
        prev, nxt = list(range(c * S, (c + 1) * S)), list(range((c + 1) * S, (c + 2) * S))
        pairs = [p for p in crossing_pairs(prev, nxt, dim) if p[0] != p[1]]
        src, dst, nb = (np.array([p[j] for p in pairs], np.int64) for j in range(3))
        w, h, _, hop_bytes, r, x = _stats(src, dst, nb.astype(np.float64), np.zeros(len(pairs), np.int64), 1,
                                          topo.geometry, topo.hops, topo.n_tiles, topo.n_links, buf)
        worst[c], hmax[c], hb[c] = w[0], h[0], hop_bytes[0]
        rd[c] = r[0, c * S:(c + 1) * S]
        wr[c] = x[0, (c + 1) * S:(c + 2) * S]
    out = CrossingStats(worst, hmax, hb, rd, wr)
    for a in (worst, hmax, hb, rd, wr):
        a.setflags(write=False)
    return out
