"""The compiler: places a model on a chip (a Plan) and emits the static Program one step executes.

Placement splits every matrix across a group of tiles by output rows (the output and down projections as the
hidden state is split, in whole 32-value blocks), so each tile computes whole rows and its input is
all-gathered; only an MoE expert's down projection is split by input columns and reduced. Each kv-head's
attention runs on its home tile (which holds its KV cache) and up to G/H others. ``tensor`` maps all layers on one group,
``pipeline`` gives consecutive layers to successive groups, ``hybrid`` uses two stages, ``auto``
picks the fastest one that fits. Weights that do not fit in SRAM stay off-chip and are streamed
into a staging buffer each step. Everything here is shapes and bytes: no numerics.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .errors import CompileError
from .machine import isa
from .machine.tensors import TensorInfo, padded_cols, tensor_table
from .machine.topology import Topology, build
from .model.config import ModelConfig
from .precision import EMULATED_PRECISIONS


MAPPINGS = ("tensor", "pipeline", "hybrid", "auto")
MAX_GROUP_TILES = 64      # default group cap (mesh.tensor_group_tiles): on a mesh a larger tensor group spends more on all-gathers than it saves
KV_BLOCK_TOKENS = 16      # the KV cache spills to off-chip memory in pages of 16 tokens
ACT_BYTES = 4             # activations travel as fp32 between tiles


@dataclass(frozen=True)
class CompileOptions:
    """precision: weight/MAC precision; mapping: tensor|pipeline|hybrid|auto; batch: sequences at once;
    context: tokens of context to plan KV for (0 = the model's seq_len); prefill_chunk: prompt tokens per pass."""

    precision: str = "int8"
    mapping: str = "auto"
    batch: int = 1
    context: int = 0
    prefill_chunk: int = 16

    def validated(self, config: ModelConfig) -> "CompileOptions":
        self.check_flags()
        if self.context < 0 or self.context > config.seq_len:
            raise CompileError(f"context must be between 1 and the model's {config.seq_len} tokens, got {self.context}",
                               key="context")
        return self

    def check_flags(self) -> "CompileOptions":
        """Everything that can be checked without the model."""
        if self.precision not in EMULATED_PRECISIONS:
            raise CompileError(f"unknown precision '{self.precision}' (choose from {', '.join(EMULATED_PRECISIONS)})",
                               key="precision")
        if self.mapping not in MAPPINGS:
            raise CompileError(f"unknown mapping '{self.mapping}' (choose from {', '.join(MAPPINGS)})", key="mapping")
        if not 1 <= self.batch <= 4096:
            raise CompileError(f"batch must be between 1 and 4096, got {self.batch}", key="batch")
        if self.context < 0:
            raise CompileError(f"context must be 0 (the model's) or more, got {self.context}", key="context")
        if not 1 <= self.prefill_chunk <= 4096:
            raise CompileError(f"prefill_chunk must be between 1 and 4096, got {self.prefill_chunk}", key="prefill_chunk")
        return self

    @property
    def kv_int8(self) -> bool:
        """The KV cache is int8 with per-token, per-head scales, except on the f32 reference path."""
        return self.precision != "f32"


@dataclass(frozen=True)
class Shard:
    """Part of one tensor held by one tile: rows r0:r1 and columns k0:k1 (k1 padded to 32)."""

    tensor: str
    tile: int
    r0: int
    r1: int
    k0: int
    k1: int
    nbytes: int
    resident: bool
    expert: int = -1


@dataclass
class Plan:
    """Where everything lives. Arrays are indexed by tile; bytes are per tile unless named otherwise."""

    chip: object
    config: ModelConfig
    options: CompileOptions
    mapping: str
    topology: Topology
    groups: list[list[int]]          # tiles of each layer group
    layer_group: list[int]           # group of each layer
    tensors: dict[str, TensorInfo]
    shards: list[Shard]
    weight_bytes: np.ndarray         # (T,) resident weight bytes
    staging_bytes: np.ndarray        # (T,) staging buffer for streamed weights
    act_bytes: np.ndarray            # (T,) activation working set
    kv_bytes: np.ndarray             # (T,) SRAM given to the KV cache
    kv_home: np.ndarray              # (L, Hkv) tile holding that layer's kv-head cache
    kv_capacity: np.ndarray          # (L, Hkv) tokens per sequence held in SRAM (multiple of 16)
    context: int
    expert_groups: list[list[list[int]]] = field(default_factory=list)  # [group][expert] -> tiles
    attn_parts: int = 1              # tiles that can run each kv-head's attention (attn_parts)

    @property
    def n_tiles(self) -> int:
        return self.topology.n_tiles

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token for one kv-head: values plus a fp32 scale each."""
        hd = self.config.head_dim
        return 2 * (hd + 4) if self.options.kv_int8 else 2 * hd * 4

    @property
    def streamed_bytes(self) -> int:
        return sum(s.nbytes for s in self.shards if not s.resident)

    def sram_capacity(self) -> int:
        return int(self.chip.sram_bytes_per_tile)

    def accumulator_bounds(self) -> list[str]:
        """Why no integer accumulator can overflow: every int32 sum runs over one 32-element block
        (matmuls) or one head vector (attention scores), so its largest magnitude is fixed by the formats."""
        hd = self.config.head_dim
        wmax = {"q8_0": 127, "q4_0": 8, "tq2_0": 2, "b1_0": 1}
        lines = []
        for fmt in sorted({t.fmt for t in self.tensors.values()} & set(wmax)):
            bound = 32 * wmax[fmt] * 127
            lines.append(f"{fmt} x int8 activations: int32 per 32-element block, |sum| <= 32 x {wmax[fmt]} x 127"
                         f" = {bound:,} < 2^31; blocks accumulate in fp32 after scaling")
        if self.options.kv_int8:
            bound = hd * 127 * 127
            if bound >= 2**31:
                raise CompileError(f"head_dim {hd} is too large for int32 attention accumulators", key="head_dim")
            ok = "<" if bound < 2**31 else ">="
            lines.append(f"attention scores: int8 q x int8 k over head_dim {hd}: |sum| <= {bound:,} {ok} 2^31")
        return lines

    def describe(self) -> list[str]:
        """What each tile's SRAM holds, one line per tile."""
        cap = self.sram_capacity()
        lines = [f"mapping {self.mapping}: {len(self.groups)} group(s) of {', '.join(str(len(g)) for g in self.groups)} tiles;"
                 f" precision {self.options.precision}; batch {self.options.batch}; context {self.context}",
                 f"weights {sum(s.nbytes for s in self.shards if s.resident):,} B resident, {self.streamed_bytes:,} B streamed"
                 f" per step; SRAM {cap:,} B per tile"]
        by_tile: dict[int, list[Shard]] = {}
        for s in self.shards:
            by_tile.setdefault(s.tile, []).append(s)
        for t in range(self.n_tiles):
            kv = [(l, h) for l in range(self.kv_home.shape[0]) for h in range(self.kv_home.shape[1]) if self.kv_home[l, h] == t]
            used = self.weight_bytes[t] + self.staging_bytes[t] + self.act_bytes[t] + self.kv_bytes[t]
            names = sorted({s.tensor.replace(".weight", "") + ("*" if not s.resident else "") for s in by_tile.get(t, [])})
            short = ", ".join(names[:4]) + (f" +{len(names) - 4} more" if len(names) > 4 else "")
            lines.append(f"tile {t:3d}: {100 * used / cap:5.1f}% | weights {self.weight_bytes[t]:>9,} staging {self.staging_bytes[t]:>8,}"
                         f" act {self.act_bytes[t]:>7,} kv {self.kv_bytes[t]:>8,} ({len(kv)} heads) | {short}")
        return lines


def split(n: int, parts: int, unit: int) -> list[tuple[int, int]]:
    """Split range(n) into ``parts`` contiguous ranges whose bounds are multiples of ``unit`` (last may be short)."""
    units = -(-n // unit)
    out, start = [], 0
    for p in range(parts):
        take = units // parts + (1 if p < units % parts else 0)
        lo, hi = min(start * unit, n), min((start + take) * unit, n)
        out.append((lo, max(lo, hi)))
        start += take
    return out


def hidden_slices(dim: int, group_tiles: int) -> list[tuple[int, int]]:
    """The slice of the hidden state each tile of a group holds between layers: whole 32-value quant blocks."""
    return split(dim, group_tiles, 32)


def crossing_pairs(prev: list[int], nxt: list[int], dim: int) -> list[tuple[int, int, int]]:
    """(src, dst, bytes per column) moving a split hidden state from one group's tiles to the next group's."""
    out = []
    for s, (a0, a1) in zip(prev, hidden_slices(dim, len(prev))):
        for d, (b0, b1) in zip(nxt, hidden_slices(dim, len(nxt))):
            ov = min(a1, b1) - max(a0, b0)
            if ov > 0:
                out.append((s, d, ov * ACT_BYTES))
    return out


def per_col_act_bytes(config: ModelConfig, group_tiles: int) -> int:
    """Activation bytes one tile holds per column: the input vector (fp32 and its int8 copy), the gathered
    int8 inputs of the output and (dense) down projections, and its share of the q/k/v, classifier and FFN
    outputs."""
    share = config.q_dim + 2 * config.kv_dim + config.vocab_size + 3 * config.hidden_dim * max(config.n_experts_used, 1)
    gathered = config.q_dim + (0 if config.is_moe else config.hidden_dim)
    return 5 * config.dim + gathered * 9 // 8 + ACT_BYTES * (-(-share // group_tiles))


def fitted_chunk(chunk: int, batch: int, per_col_bytes: int, tile_bytes: int) -> int:
    """The prefill chunk halved until the activations of its batch x chunk columns take at most a quarter of a
    tile."""
    while chunk > 1 and per_col_bytes * batch * chunk > tile_bytes // 4:
        chunk //= 2
    return chunk


def _groups(n_tiles: int, n_layers: int, mapping: str, max_tiles: int = MAX_GROUP_TILES) -> list[list[int]]:
    if mapping == "tensor":
        n_groups = 1
    elif mapping == "pipeline":
        n_groups = min(n_layers, n_tiles)
    else:  # hybrid
        n_groups = min(2, n_layers, n_tiles)
    size = min(n_tiles // n_groups, max_tiles)
    return [list(range(g * size, (g + 1) * size)) for g in range(n_groups)]


def compile_plan(chip, config: ModelConfig, options: CompileOptions) -> Plan:
    """Place ``config`` on ``chip``; ``auto`` tries every mapping and keeps the fastest that fits."""
    options = options.validated(config)
    if options.mapping != "auto":
        return _place(chip, config, options, options.mapping)
    from .projection_core import decode_cycles  # the same executor, driven by shapes only

    best, best_cycles, errors = None, None, []
    for mapping in ("tensor", "hybrid", "pipeline"):
        try:
            plan = _place(chip, config, options, mapping)
        except CompileError as exc:
            errors.append(exc)
            continue
        cycles = decode_cycles(plan)
        if best_cycles is None or cycles < best_cycles:
            best, best_cycles = plan, cycles
    if best is None:
        raise errors[0]
    return best


def _place(chip, config: ModelConfig, options: CompileOptions, mapping: str) -> Plan:
    T = chip.n_tiles
    topo = build(chip.mesh.rows, chip.mesh.cols, chip.mesh.topology)
    tensors = tensor_table(config, options.precision)
    context = options.context or config.seq_len
    groups = _groups(T, config.n_layers, mapping, chip.mesh.tensor_group_tiles)
    G = len(groups)
    layer_group = [min(l * G // config.n_layers, G - 1) for l in range(config.n_layers)]
    cap = int(chip.sram_bytes_per_tile)

    # activation working set per tile: the input vector (fp32 + its int8 copy) and this tile's share of the
    # outputs, per column; a prefill chunk that does not fit is halved (the chunk is a schedule choice)
    per_col = per_col_act_bytes(config, max(len(g) for g in groups))
    options = replace(options, prefill_chunk=fitted_chunk(options.prefill_chunk, options.batch, per_col, cap))
    cols = options.batch * options.prefill_chunk
    act = np.zeros(T, dtype=np.int64)
    for g in groups:
        act[g] = per_col * cols

    # KV: each (layer, kv-head) gets a home tile in its layer's group
    L, H = config.n_layers, config.n_kv_heads
    kv_home = np.zeros((L, H), dtype=np.int64)
    for l in range(L):
        g = groups[layer_group[l]]
        for h in range(H):
            kv_home[l, h] = g[(l * H + h) % len(g)]
    kv_per_tok = 2 * (config.head_dim + 4) if options.kv_int8 else 2 * config.head_dim * 4
    kv_want = np.zeros(T, dtype=np.int64)
    np.add.at(kv_want, kv_home.ravel(), kv_per_tok * context * options.batch)
    # reserve up to a quarter of each tile for the KV cache before weights go in
    kv_reserve = np.minimum(kv_want, cap // 4)

    shards, expert_groups = _shard(config, tensors, groups, layer_group)
    budget = cap - act - kv_reserve
    if np.any(budget < 0):
        raise CompileError(_overflow_message(chip, config, options, int(-budget.min()), "activations and KV reserve"))
    weight, staging, placed = _residency(chip, config, options, shards, budget, act, kv_reserve, cap)
    # whatever SRAM is left on a KV home tile holds KV; the rest of the cache spills off-chip
    free = cap - weight - staging - act
    kv_bytes = np.where(kv_want > 0, np.minimum(np.maximum(free, 0), kv_want), 0)
    kv_capacity = np.zeros((L, H), dtype=np.int64)
    heads_on = np.bincount(kv_home.ravel(), minlength=T)
    for l in range(L):
        for h in range(H):
            t = kv_home[l, h]
            per_slot = kv_bytes[t] // max(heads_on[t], 1)
            tokens = per_slot // (kv_per_tok * options.batch)
            kv_capacity[l, h] = min(context, tokens // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS if tokens < context else context)
    if not chip.has_offchip and kv_capacity.min() < context:
        short = int(kv_capacity.min())
        raise CompileError(f"{chip.name} has no off-chip memory and its SRAM holds only {short} of the {context} tokens"
                           f" of context asked for (batch {options.batch}); use a shorter --context, a smaller batch,"
                           f" a lower precision or a larger chip", key="context")
    parts = attn_parts(min(len(g) for g in groups), H)
    return Plan(chip, config, options, mapping, topo, groups, layer_group, tensors, placed, weight, staging, act,
                kv_bytes.astype(np.int64), kv_home, kv_capacity, context, expert_groups, parts)


def _residency(chip, config, options, shards, budget, act, kv_reserve, cap):
    """Per tile, keep the longest prefix of its shards (in layer order) resident such that the rest fit through
    one staging buffer as large as the largest streamed shard; the rest stream from off-chip memory each step."""
    T = len(budget)
    by_tile: dict[int, list[int]] = {}
    for i, s in enumerate(shards):
        by_tile.setdefault(s.tile, []).append(i)
    weight = np.zeros(T, dtype=np.int64)
    staging = np.zeros(T, dtype=np.int64)
    resident = [True] * len(shards)
    for t, idx in by_tile.items():
        sizes = [shards[i].nbytes for i in idx]
        total = sum(sizes)
        if total <= budget[t]:
            weight[t] = total
            continue
        if not chip.has_offchip:
            need = sum(x.nbytes for x in shards) + int(act.sum() + kv_reserve.sum()) - cap * T
            raise CompileError(_overflow_message(chip, config, options, max(need, total - int(budget[t])), "weights"))
        tail_max = [0] * (len(sizes) + 1)
        for k in range(len(sizes) - 1, -1, -1):
            tail_max[k] = max(tail_max[k + 1], sizes[k])
        prefix, keep = 0, -1
        for k in range(len(sizes) + 1):
            if prefix + tail_max[k] <= budget[t]:
                keep = k
            if k < len(sizes):
                prefix += sizes[k]
        if keep < 0:
            raise CompileError(f"tile {t} cannot hold a staging buffer of {tail_max[0]:,} B for its largest weight"
                               f" shard (SRAM {cap:,} B per tile); use a lower precision or a larger chip",
                               key="placement")
        weight[t] = sum(sizes[:keep])
        staging[t] = tail_max[keep]
        for i in idx[keep:]:
            resident[i] = False
    placed = [s if resident[i] else Shard(**{**s.__dict__, "resident": False}) for i, s in enumerate(shards)]
    return weight, staging, placed


def _overflow_message(chip, config: ModelConfig, options: CompileOptions, overflow: int, what: str) -> str:
    from .precision import BITS_PER_WEIGHT

    sram = chip.sram_bytes
    fits = [p for p in ("int8", "int4", "ternary", "binary")
            if config.n_params() * BITS_PER_WEIGHT[p] / 8 < 0.8 * sram]
    hint = f"; at {fits[0]} the weights would fit" if fits and fits[0] != options.precision else ""
    chips_needed = -(-int(config.n_params() * BITS_PER_WEIGHT[options.precision] / 8 * 1.25) // max(sram, 1))
    if chip.has_offchip:
        return (f"{config.name} at {options.precision} does not fit on {chip.name}: {what} overflow a tile's SRAM by"
                f" {overflow:,} B (batch {options.batch}, prefill chunk {options.prefill_chunk}); use a smaller batch or"
                f" chunk, a shorter context, or a chip with more SRAM per tile")
    return (f"{config.name} at {options.precision} does not fit on {chip.name}: {what} overflow SRAM by {overflow:,} B"
            f" and the chip has no off-chip memory{hint}; about {chips_needed} such chips would hold it")


def _shard(config: ModelConfig, tensors: dict[str, TensorInfo], groups, layer_group):
    """Cut every tensor into per-tile shards within each group: every dense matrix by output rows (each tile holds
    whole rows, so no partial sums cross the mesh); an MoE expert's down projection by input columns."""
    shards: list[Shard] = []
    expert_groups: list[list[list[int]]] = []
    for g in groups:
        if config.is_moe:
            per = max(1, len(g) // config.n_experts)
            expert_groups.append([[g[(e * per + i) % len(g)] for i in range(per)] for e in range(config.n_experts)])
        else:
            expert_groups.append([])

    def add(name: str, tiles: list[int], how: str, expert: int = -1, unit: int = 2):
        info = tensors[name]
        rows = info.shape[-2]
        kp = padded_cols(info.fmt, info.cols)
        row_bytes = info.row_bytes
        if how == "col":
            k_end = info.cols if info.fmt in ("f32", "f16", "bf16") else kp
            for t, (r0, r1) in zip(tiles, split(rows, len(tiles), unit)):
                if r1 > r0:
                    shards.append(Shard(name, t, r0, r1, 0, k_end, (r1 - r0) * row_bytes, True, expert))
        else:  # row split over 32-element column blocks (float formats stop at the real row end)
            for t, (k0, k1) in zip(tiles, split(kp, len(tiles), 32)):
                if info.fmt in ("f32", "f16", "bf16"):
                    k1 = min(k1, info.cols)
                if k1 > k0:
                    nbytes = rows * _col_bytes(info.fmt, k0, k1, row_bytes, kp)
                    shards.append(Shard(name, t, 0, rows, k0, k1, nbytes, True, expert))

    first, last = groups[layer_group[0]], groups[layer_group[-1]]
    for l in range(config.n_layers):
        g = groups[layer_group[l]]
        p = f"blk.{l}."
        for name in ("attn_q", "attn_k", "attn_v"):
            add(p + name + ".weight", g, "col")
        # the output and down projections split their output rows as the hidden state is split (hidden_slices)
        add(p + "attn_output.weight", g, "col", unit=32)
        if config.is_moe:
            add(p + "ffn_gate_inp.weight", g[:1], "col")
            for e, tiles in enumerate(expert_groups[layer_group[l]]):
                for name in ("ffn_gate_exps", "ffn_up_exps"):
                    add(p + name + ".weight", tiles, "col", e)
                add(p + "ffn_down_exps.weight", tiles, "row", e)
        else:
            add(p + "ffn_gate.weight", g, "col")
            add(p + "ffn_up.weight", g, "col")
            add(p + "ffn_down.weight", g, "col", unit=32)
    add("token_embd.weight", first if not config.tied_embeddings else last, "col")
    if not config.tied_embeddings:
        add("output.weight", last, "col")
    return shards, expert_groups


def _col_bytes(fmt: str, k0: int, k1: int, row_bytes: int, kp: int) -> int:
    """Bytes of columns k0:k1 of one row (a 32-column slice of a 256-block carries its share plus the scale)."""
    from .machine.tensors import BLOCK

    per, nbytes = BLOCK[fmt]
    if per == 1:
        return (k1 - k0) * nbytes
    if per == 32:
        return (k1 - k0) // 32 * nbytes
    # tq2_0: 8 bytes of codes per 32 columns, plus the block's 2-byte scale once per block touched
    blocks = (k1 - 1) // per - k0 // per + 1
    return (k1 - k0) // 4 + 2 * blocks


# ----------------------------------------------------------------------------------------------------------------
# Program emission


@dataclass
class Program:
    """The static schedule: ``ops`` (OP_DTYPE records) plus the tables they index."""

    ops: np.ndarray                 # OP_DTYPE
    transfers: np.ndarray           # (n, 3) int64: src tile, dst tile, bytes per column
    buffer_names: list[str]
    qbuffer_names: list[str]
    tensor_ids: dict[str, int]
    layer_starts: np.ndarray        # index of each layer's first op; len L + 1 (last = tail start)

    def disassemble(self, start: int = 0, stop: int | None = None) -> list[str]:
        names = {v: k.replace(".weight", "") for k, v in self.tensor_ids.items()}
        return isa.disassemble(self.ops, self.buffer_names, names, start, stop, self.qbuffer_names)


class _Emitter:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.ops: list[tuple] = []
        self.transfers: list[np.ndarray] = []   # (k, 3) blocks: src, dst, bytes per column
        self.n_transfers = 0
        cfg = plan.config
        self.buffers = ["x", "xb", "q", "k", "v", "att", "o", "logits", "router", "ss"]
        n_exp = max(cfg.n_experts, 1)
        for e in range(n_exp):
            self.buffers += [f"h1.{e}", f"h3.{e}", f"eout.{e}"]
        self.qbuffers = ["xq", "aq"] + [f"hq.{e}" for e in range(n_exp)]
        self.tensor_ids = {name: i for i, name in enumerate(plan.tensors)}
        self.layer_starts: list[int] = []

    def b(self, name: str) -> int:
        return self.buffers.index(name)

    def qb(self, name: str) -> int:
        return self.qbuffers.index(name)

    def op(self, opcode, *, layer=-1, tile=0, dst=-1, fmt=0, w_off=0, w_row_bytes=0, r0=0, r1=0, k0=0, k1=0, src=0,
           out=0, aux=-1, kind=0, nbytes=0, macs=0, t_off=0, t_cnt=0, aux2=-1, resident=1):
        self.ops.append((opcode, layer, tile, dst, fmt, w_off, w_row_bytes, r0, r1, k0, k1, src, out, aux,
                         kind, nbytes, macs, t_off, t_cnt, aux2, resident))

    def comm(self, opcode, kind, pairs, layer=-1, tile=0, aux2=-1, part=(0, 0), expert=-1):
        """One collective/transfer op over ``pairs`` of (src, dst, bytes per column); local pairs are dropped.
        ``part`` (j, n): it carries the columns of part j of n only; ``expert`` >= 0: the columns routed to it."""
        t = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
        t = t[(t[:, 0] != t[:, 1]) & (t[:, 2] > 0)]
        if not len(t):
            return
        off = self.n_transfers
        self.transfers.append(t)
        self.n_transfers += len(t)
        self.op(opcode, layer=layer, tile=tile, kind=kind, t_off=off, t_cnt=len(t),
                nbytes=int(t[:, 2].sum()), aux2=aux2, r0=part[0], r1=part[1], aux=expert)


def all_to(srcs: list[int], dsts: list[int], nbytes: list[int]) -> np.ndarray:
    """(src, dst, bytes) rows of an all-gather: source i sends nbytes[i] to every destination, sources in order."""
    n = len(dsts)
    return np.stack([np.repeat(srcs, n), np.tile(dsts, len(srcs)), np.repeat(nbytes, n)], axis=1).astype(np.int64)


def attn_parts(group_tiles: int, n_kv_heads: int) -> int:
    """How many tiles can run each kv-head's attention, a share of a pass's columns each (query blocks of a prompt,
    sequences of a batch): the group's tiles shared among the layer's kv-heads. A pass uses fewer when it has
    fewer blocks of block_cols columns (isa.part_cols)."""
    return max(1, group_tiles // n_kv_heads)


def attn_tiles(g: list[int], home: int, n_kv_heads: int, parts: int) -> list[int]:
    """The tiles that run the attention of the kv-head whose cache lives on ``home``: the home first, then every
    n_kv_heads-th tile of the group after it, so that the layer's kv-heads (on consecutive group tiles) get
    distinct tiles."""
    i0, G = g.index(home), len(g)
    return [g[(i0 + j * n_kv_heads) % G] for j in range(parts)]


def emit_program(plan: Plan, w_offsets: dict[str, int]) -> Program:
    """The program one step executes: every layer, then the classifier and sampling.

    ``w_offsets`` gives each tensor's byte offset in the weight store (the machine's packing).
    The same program serves decode (one column per sequence) and prefill (chunk x batch columns).
    """
    em = _Emitter(plan)
    cfg, groups = plan.config, plan.groups
    shards_of: dict[str, list[Shard]] = {}
    for s in plan.shards:
        shards_of.setdefault(s.tensor, []).append(s)

    def matmul(name, src_q, src_f, out, layer, expert=-1, part=False):
        info = plan.tensors[name]
        fmt = isa.FMT_CODES[info.fmt]
        is_float = info.fmt in ("f32", "f16", "bf16")
        rows_per_expert = info.shape[-2]
        for slot, s in enumerate(x for x in shards_of[name] if x.expert == expert):
            base = w_offsets[name] + (expert * rows_per_expert * info.row_bytes if expert >= 0 else 0)
            if not s.resident:
                em.op(isa.STREAM, layer=layer, tile=s.tile, nbytes=s.nbytes, kind=isa.KIND_STREAM, aux2=em.tensor_ids[name])
            em.op(isa.MATMUL, layer=layer, tile=s.tile, dst=slot if part else -1, fmt=fmt, w_off=base,
                  w_row_bytes=info.row_bytes, r0=s.r0, r1=s.r1, k0=s.k0, k1=s.k1, src=src_f if is_float else src_q,
                  out=out, aux=expert, nbytes=s.nbytes, macs=(s.r1 - s.r0) * (min(s.k1, info.cols) - s.k0),
                  aux2=em.tensor_ids[name], resident=int(s.resident))

    def owners(name, expert=-1):
        return [s for s in shards_of[name] if s.expert == expert]

    def spread(tiles, slices, layer, buf, qbuf, to, quantize, fp32, int8):
        """Each of ``tiles`` quantizes its slice of ``buf`` (whole 32-value blocks) into ``qbuf`` when ``quantize``,
        and the slices are all-gathered to the tiles ``to``: the fp32 values and/or the int8 blocks with their
        scales."""
        own = [(t, lo, hi) for t, (lo, hi) in zip(tiles, slices) if hi > lo]
        if quantize:
            for t, lo, hi in own:
                em.op(isa.QUANT, layer=layer, tile=t, src=em.b(buf), out=em.qb(qbuf), r0=lo, r1=hi)
        size = lambda n: n * ACT_BYTES * fp32 + (n + -(-n // 32) * 4) * int8  # noqa: E731
        em.comm(isa.ALLGATHER, isa.KIND_ALLGATHER, all_to([t for t, _, _ in own], to, [size(hi - lo) for _, lo, hi in own]),
                layer=layer, tile=tiles[0])

    def norm(tiles, layer, w_off, float_input, to=None):
        """RMSNORM and QUANT of x with the hidden state split over ``tiles``: each sums the squares of its slice,
        the partial sums are exchanged, each normalizes and quantizes its slice, and the matmuls' input (the
        int8 blocks with their scales, or fp32 for a float model) is all-gathered. ``to``: only these tiles need
        the input (an MoE router's home), and they get the fp32 values too (the router reads them)."""
        slices = hidden_slices(cfg.dim, len(tiles))
        own = [(t, lo, hi) for t, (lo, hi) in zip(tiles, slices) if hi > lo]
        for i, (t, lo, hi) in enumerate(own):
            em.op(isa.SUMSQ, layer=layer, tile=t, src=em.b("x"), out=em.b("ss"), r0=lo, r1=hi, aux=i)
        mine = [t for t, _, _ in own]
        em.comm(isa.ALLGATHER, isa.KIND_ALLGATHER, all_to(mine, mine, [4] * len(mine)), layer=layer, tile=tiles[0])
        for t, lo, hi in own:
            em.op(isa.RMSNORM, layer=layer, tile=t, src=em.b("x"), out=em.b("xb"), r0=lo, r1=hi, w_off=w_off,
                  aux=len(own), aux2=em.b("ss"))
        spread(tiles, slices, layer, "xb", "xq", to or tiles, True, float_input or to is not None, not float_input)

    def is_float(name):
        return plan.tensors[name].fmt in ("f32", "f16", "bf16")

    def resadd_split(tiles, layer):
        for t, (lo, hi) in zip(tiles, hidden_slices(cfg.dim, len(tiles))):
            if hi > lo:
                em.op(isa.RESADD, layer=layer, tile=t, src=em.b("o"), out=em.b("x"), r0=lo, r1=hi)

    # between layers the hidden state stays split over the group's tiles: each tile adds, norms and quantizes its
    # slice, and the next matrices' input is all-gathered

    def gather_rows(src_shards, dst_ranges, layer, kind=isa.KIND_SEND, row_mult=1, part=(0, 0)):
        """Send rows from the tiles that produced them to the tiles that need them (overlap of ranges); ``part``
        (j, n): only the columns of part j of n travel (isa.part_cols)."""
        pairs = []
        for s in src_shards:
            for t, lo, hi in dst_ranges:
                ov = min(s.r1, hi) - max(s.r0, lo)
                if ov > 0:
                    pairs.append((s.tile, t, ov * ACT_BYTES * row_mult))
        em.comm(isa.SEND, kind, pairs, layer=layer, tile=src_shards[0].tile if src_shards else 0, part=part)

    hd = cfg.head_dim
    n_rep = cfg.n_heads // cfg.n_kv_heads
    em.op(isa.EMBED, tile=groups[plan.layer_group[0]][0], out=em.b("x"), r0=0, r1=cfg.dim,
          aux2=em.tensor_ids["token_embd.weight"], w_off=w_offsets["token_embd.weight"],
          w_row_bytes=plan.tensors["token_embd.weight"].row_bytes, fmt=isa.FMT_CODES[plan.tensors["token_embd.weight"].fmt],
          aux=plan.layer_group[0], kind=isa.KIND_SEND)
    for l in range(cfg.n_layers):
        g = groups[plan.layer_group[l]]
        if l > 0 and plan.layer_group[l] != plan.layer_group[l - 1]:
            prev = groups[plan.layer_group[l - 1]]
            # each slice of the hidden state goes to the next group's tiles that hold it
            em.comm(isa.SEND, isa.KIND_SEND, crossing_pairs(prev, g, cfg.dim), layer=l, tile=prev[0])
        em.layer_starts.append(len(em.ops))
        p = f"blk.{l}."
        nw = w_offsets[p + "attn_norm.weight"]
        norm(g, l, nw, is_float(p + "attn_q.weight"))
        for name, buf in (("attn_q", "q"), ("attn_k", "k"), ("attn_v", "v")):
            matmul(p + name + ".weight", em.qb("xq"), em.b("xb"), em.b(buf), l)
        for name, buf in (("attn_q", "q"), ("attn_k", "k")):
            for s in owners(p + name + ".weight"):
                em.op(isa.ROPE, layer=l, tile=s.tile, out=em.b(buf), r0=s.r0, r1=s.r1)
        # each kv-head's attention runs on `parts` tiles of the group, a share of the columns each (query blocks in a
        # prefill, sequences in a batch); the first is the head's home, which holds its cache and writes it
        homes = [(int(plan.kv_home[l, h]), h) for h in range(cfg.n_kv_heads)]
        parts = plan.attn_parts
        tiles = [attn_tiles(g, t, cfg.n_kv_heads, parts) for t, _ in homes]
        for j in range(parts):  # q rows travel to the tiles that run each part
            gather_rows(owners(p + "attn_q.weight"),
                        [(tiles[h][j], h * n_rep * hd, (h + 1) * n_rep * hd) for h in range(cfg.n_kv_heads)], l,
                        part=(j, parts))
        gather_rows(owners(p + "attn_k.weight") + owners(p + "attn_v.weight"),
                    [(t, h * hd, (h + 1) * hd) for t, h in homes], l)
        for t, h in homes:
            em.op(isa.KV_WRITE, layer=l, tile=t, aux=h)
        for h in range(cfg.n_kv_heads):
            for j in range(parts):
                em.op(isa.ATTN, layer=l, tile=tiles[h][j], aux=h, out=em.b("att"), r0=j, r1=parts)
        # attention outputs travel to the tiles that own their slice (whole 32-value blocks), which quantize it;
        # every tile then gathers the whole output projection input and computes its rows of the hidden state
        att = hidden_slices(cfg.q_dim, len(g))
        for j in range(parts):
            head_shards = [Shard("att", tiles[h][j], h * n_rep * hd, (h + 1) * n_rep * hd, 0, 0, 0, True)
                           for h in range(cfg.n_kv_heads)]
            gather_rows(head_shards, [(t, lo, hi) for t, (lo, hi) in zip(g, att) if hi > lo], l, part=(j, parts))
        f = is_float(p + "attn_output.weight")
        spread(g, att, l, "att", "aq", g, not f, f, not f)
        matmul(p + "attn_output.weight", em.qb("aq"), em.b("att"), em.b("o"), l)
        resadd_split(g, l)
        if cfg.is_moe:
            # the router and the dispatch sit on the group's first tile: the normed input gathers there, and
            # the combined output is scattered back to the slices' tiles
            norm(g, l, w_offsets[p + "ffn_norm.weight"], is_float(p + "ffn_gate_exps.weight"), to=[g[0]])
            _emit_moe(em, plan, l, g, matmul, w_offsets)
            em.comm(isa.SEND, isa.KIND_SEND, [(g[0], t, (hi - lo) * ACT_BYTES)
                                              for t, (lo, hi) in zip(g, hidden_slices(cfg.dim, len(g)))], layer=l,
                    tile=g[0])
        else:
            norm(g, l, w_offsets[p + "ffn_norm.weight"], is_float(p + "ffn_gate.weight"))
            matmul(p + "ffn_gate.weight", em.qb("xq"), em.b("xb"), em.b("h1.0"), l)
            matmul(p + "ffn_up.weight", em.qb("xq"), em.b("xb"), em.b("h3.0"), l)
            ups = owners(p + "ffn_gate.weight")
            for s in ups:
                em.op(isa.SILU_MUL, layer=l, tile=s.tile, src=em.b("h3.0"), out=em.b("h1.0"), r0=s.r0, r1=s.r1)
            # the down projection's input is quantized in whole 32-value blocks: each block's tile gathers it first
            h_slices = hidden_slices(cfg.hidden_dim, len(g))
            gather_rows(ups, [(t, lo, hi) for t, (lo, hi) in zip(g, h_slices) if hi > lo], l)
            f = is_float(p + "ffn_down.weight")
            spread(g, h_slices, l, "h1.0", "hq.0", g, not f, f, not f)
            matmul(p + "ffn_down.weight", em.qb("hq.0"), em.b("h1.0"), em.b("o"), l)
        resadd_split(g, l)
    em.layer_starts.append(len(em.ops))
    last = groups[plan.layer_group[-1]]
    em.op(isa.COPY, tile=last[0])  # prefill: keep only each sequence's last position from here on
    cls = "token_embd.weight" if cfg.tied_embeddings else "output.weight"
    norm(last, -1, w_offsets["output_norm.weight"], is_float(cls))
    matmul(cls, em.qb("xq"), em.b("xb"), em.b("logits"), -1)
    cls_shards = owners(cls)
    em.comm(isa.LOGITS_GATHER, isa.KIND_ALLGATHER, [(s.tile, last[0], (s.r1 - s.r0) * ACT_BYTES) for s in cls_shards],
            tile=last[0])
    em.op(isa.SAMPLE, tile=last[0], src=em.b("logits"), r0=0, r1=cfg.vocab_size)
    ops = np.array(em.ops, dtype=isa.OP_DTYPE)
    transfers = np.concatenate(em.transfers) if em.transfers else np.zeros((0, 3), np.int64)
    return Program(ops, transfers, em.buffers, em.qbuffers, em.tensor_ids, np.array(em.layer_starts, dtype=np.int64))


def _emit_moe(em: _Emitter, plan: Plan, l: int, g: list[int], matmul, w_offsets):
    """Router on the group's first tile, tokens dispatched to the tiles of their top-k experts, then combined."""
    cfg = plan.config
    p = f"blk.{l}."
    router = p + "ffn_gate_inp.weight"
    em.op(isa.MOE_ROUTE, layer=l, tile=g[0], src=em.b("xb"), out=em.b("router"), w_off=w_offsets[router],
          w_row_bytes=plan.tensors[router].row_bytes, r0=0, r1=cfg.n_experts, k0=0, k1=cfg.dim,
          macs=cfg.n_experts * cfg.dim, nbytes=plan.tensors[router].nbytes, aux2=em.tensor_ids[router])
    gi = plan.layer_group[l]
    em.op(isa.MOE_DISPATCH, layer=l, tile=g[0], kind=isa.KIND_MOE, aux2=gi, nbytes=cfg.dim + cfg.dim // 32 * 4)
    for e, tiles in enumerate(plan.expert_groups[gi]):
        matmul(p + "ffn_gate_exps.weight", em.qb("xq"), em.b("xb"), em.b(f"h1.{e}"), l, expert=e)
        matmul(p + "ffn_up_exps.weight", em.qb("xq"), em.b("xb"), em.b(f"h3.{e}"), l, expert=e)
        downs = [s for s in plan.shards if s.tensor == p + "ffn_down_exps.weight" and s.expert == e]
        for s in downs:
            lo, hi = s.k0, min(s.k1, cfg.hidden_dim)
            em.op(isa.SILU_MUL, layer=l, tile=s.tile, src=em.b(f"h3.{e}"), out=em.b(f"h1.{e}"), r0=lo, r1=hi, aux=e)
            em.op(isa.QUANT, layer=l, tile=s.tile, src=em.b(f"h1.{e}"), out=em.qb(f"hq.{e}"), r0=lo, r1=hi, aux=e)
        matmul(p + "ffn_down_exps.weight", em.qb(f"hq.{e}"), em.b(f"h1.{e}"), em.b(f"eout.{e}"), l, expert=e, part=True)
        # the expert's partial sums are reduced on its first tile, whence the combine takes its output
        tiles_d = [s.tile for s in downs]
        em.comm(isa.ALLREDUCE, isa.KIND_ALLREDUCE, [(t, tiles_d[0], cfg.dim * ACT_BYTES) for t in tiles_d[1:]], layer=l,
                tile=tiles_d[0], expert=e)
        em.op(isa.REDUCE, layer=l, tile=tiles_d[0], out=em.b(f"eout.{e}"), r0=0, r1=cfg.dim, aux=len(tiles_d), aux2=e)
    em.op(isa.MOE_COMBINE, layer=l, tile=g[0], out=em.b("o"), r0=0, r1=cfg.dim, kind=isa.KIND_MOE, aux2=gi,
          nbytes=cfg.dim * ACT_BYTES)
