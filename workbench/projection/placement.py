"""Per-chip slices of a big model and where their weights and KV cache live, by the compiler's own rules.

The compiler keeps, per tile, the longest prefix of its shards (in layer order) resident and streams the
rest through one staging buffer; since decoder layers are identical, :func:`place` replays that rule for
every tile at once with numpy for the full depth; :func:`layer_classes` groups the layers by which shards
stay resident and :func:`reduced_plan` builds the Plan with one layer per class, whose shape-only run gives
the cost of each kind of layer. :func:`place_stage` spreads a stage over several groups of tiles when one group
cannot hold it on an SRAM-only chip (on-chip pipeline groups, as on a wafer).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from ..compiler import KV_BLOCK_TOKENS, CompileOptions, Plan, Shard, _groups, _shard, attn_parts, per_col_act_bytes
from ..machine.tensors import tensor_table
from ..machine.topology import Topology, build
from ..model.config import ModelConfig

FULL_TOPOLOGY_TILES = 256   # meshes larger than this are truncated to the rows the tile group uses


def slice_config(config: ModelConfig, tp: int, n_layers: int) -> ModelConfig:
    """What one chip of a ``tp``-way tensor-parallel group holds: 1/tp of the heads, FFN and vocabulary.

    kv-heads are divided too, or replicated when there are fewer kv-heads than chips; ``dim`` is whole.
    """
    return replace(config, name=f"{config.name}/tp{tp}" if tp > 1 else config.name, n_layers=n_layers,
                   n_heads=config.n_heads // tp, n_kv_heads=max(1, config.n_kv_heads // tp),
                   head_dim=config.head_dim, hidden_dim=-(-config.hidden_dim // tp),
                   vocab_size=max(2, -(-config.vocab_size // tp)))


def valid_tp(config: ModelConfig, tp: int) -> bool:
    """Heads divide evenly; kv-heads divide evenly or are replicated a whole number of times."""
    if tp < 1 or config.n_heads % tp:
        return False
    return config.n_kv_heads % tp == 0 or tp % config.n_kv_heads == 0


@lru_cache(maxsize=32)
def topology(rows: int, cols: int, kind: str, used_tiles: int) -> Topology:
    """The chip's topology, built once. A big mesh is cut to the rows the tile group uses: XY routes
    between tiles of those rows never leave them, so the cut is exact (tori and rings are built whole)."""
    if kind == "mesh" and rows * cols > FULL_TOPOLOGY_TILES:
        rows = min(rows, -(-used_tiles // cols))
    return build(rows, cols, kind)


@dataclass(frozen=True)
class Placement:
    """Where one chip's share lives. Arrays are per tile (T,), bytes.

    resident_layers: how many of the chip's layers are resident (fractional at the boundary layer);
    tail_resident: the embedding/classifier shards are resident; kv_capacity: tokens per sequence each
    kv-head keeps in SRAM, averaged over layers (the rest spills off-chip); ok/why: whether the compiler
    would accept it, and the first reason it would not.
    """

    n_layers: int
    resident_layers: float
    tail_resident: bool
    weight_bytes: np.ndarray
    staging_bytes: np.ndarray
    act_bytes: np.ndarray
    kv_bytes: np.ndarray
    kv_capacity: np.ndarray      # (H,) tokens
    total_weight_bytes: int
    total_kv_bytes: int
    ok: bool
    why: str
    layer_masks: np.ndarray      # (n_layers, slots, T) bool: the shard of that slot on that tile is resident
    tail_mask: np.ndarray        # (2, T) bool: embedding / classifier shard resident
    kv_offsets: np.ndarray       # (n_layers,) layer l's kv-heads live on group tiles (offset + h) % G
    groups: int = 1              # on-chip pipeline groups of group_tiles tiles, each holding whole layers
    group_tiles: int = 0
    group_layers: tuple[int, ...] = ()   # layers of each group, in order (the first holds the embedding)


def _layer_slots(shards: list[Shard], n_tiles: int) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray]:
    """Shard bytes of layer 0 per (tensor, expert) slot in the compiler's order: (slots, T) and tail (2, T)."""
    names: list[tuple[str, int]] = []
    rows: dict[tuple[str, int], np.ndarray] = {}
    tail = np.zeros((2, n_tiles), np.int64)
    for s in shards:
        if s.tensor.startswith("blk.0."):
            key = (s.tensor, s.expert)
            if key not in rows:
                names.append(key)
                rows[key] = np.zeros(n_tiles, np.int64)
            rows[key][s.tile] += s.nbytes
        elif s.tensor == "token_embd.weight":
            tail[0, s.tile] += s.nbytes
        elif s.tensor == "output.weight":
            tail[1, s.tile] += s.nbytes
    mat = np.array([rows[k] for k in names], np.int64).reshape(len(names), n_tiles)
    return names, mat, tail


def place(chip, config1: ModelConfig, n_layers: int, options: CompileOptions, *, act_cols: int = 0,
          embed: bool = True, output: bool = True) -> Placement:
    """Replay compiler._place for ``n_layers`` identical layers of ``config1`` on ``chip`` (one tile group).

    ``act_cols``: columns of activations to hold (0 = batch x prefill_chunk, as the compiler does)."""
    return _place(int(chip.sram_bytes_per_tile), chip.n_tiles, chip.mesh.tensor_group_tiles, bool(chip.has_offchip),
                  replace(config1, name=""),
                  n_layers, options, act_cols, embed, output)


def max_groups(n_tiles: int, group_max: int) -> int:
    """How many disjoint groups of the tensor group's size (min(T, group_max) tiles) the chip has."""
    return max(1, n_tiles // min(n_tiles, group_max))


def place_stage(chip, config1: ModelConfig, n_layers: int, options: CompileOptions, *, act_cols: int = 0,
                embed: bool = True, output: bool = True) -> Placement:
    """A chip's stage on the fewest on-chip pipeline groups whose placement the compiler would accept.

    One group is the compiler's tensor placement. A chip with room for k > 1 groups of that size
    (``max_groups``) may split the stage over k consecutive groups as the compiler's pipeline mapping lays
    them out (consecutive tile runs; kv-homes by the global layer index; activations sent from a group's
    first tile to every tile of the next), with [embedding, layers, classifier] cut into k contiguous parts
    balanced by bytes as :func:`stages` cuts them across chips (the compiler's layer-count split would put
    the whole embedding table on top of the first group's layers). On a chip with off-chip memory one group
    is always accepted (what does not fit streams), so only an SRAM-only chip, whose SRAM is the only place
    weights can live, spreads a stage over more of its tiles. When no k is accepted, the most groups are
    used and the verdict says why."""
    return _place_stage(int(chip.sram_bytes_per_tile), chip.n_tiles, chip.mesh.tensor_group_tiles, bool(chip.has_offchip),
                        replace(config1, name=""), n_layers, options, act_cols, embed, output)


@lru_cache(maxsize=256)
def _place_stage(cap: int, T: int, gmax: int, has_offchip: bool, config1: ModelConfig, n_layers: int, options: CompileOptions,
                 act_cols: int, embed: bool, output: bool) -> Placement:
    one = _place(cap, T, gmax, has_offchip, config1, n_layers, options, act_cols, embed, output)
    k_max = min(max_groups(T, gmax), max(1, n_layers + int(embed) + int(output)))   # a group holds at least one item
    if one.ok or k_max == 1:
        return one
    lo, hi = 1, k_max                       # lo is refused; bisect for the fewest accepted (fit grows with k)
    best = _grouped(cap, T, gmax, has_offchip, config1, n_layers, options, act_cols, embed, output, hi)
    if not best.ok:
        return best
    while hi - lo > 1:
        mid = (lo + hi) // 2
        p = _grouped(cap, T, gmax, has_offchip, config1, n_layers, options, act_cols, embed, output, mid)
        lo, hi, best = (lo, mid, p) if p.ok else (mid, hi, best)
    return best


def _grouped(cap: int, T: int, gmax: int, has_offchip: bool, config1: ModelConfig, n_layers: int, options: CompileOptions,
             act_cols: int, embed: bool, output: bool, k: int) -> Placement:
    """The stage on ``k`` groups: each group placed as the compiler places it, its arrays moved to its tiles;
    layer masks, kv offsets and the tail mask stay in the first group's tile numbering (the reduced program
    runs every layer there: groups are the same shape)."""
    S = min(T, gmax)
    _, slots, tail = layer_slots(T, gmax, replace(config1, n_layers=1), options.precision)
    tied_once = config1.tied_embeddings and output   # the compiler keeps a tied table only in the last group
    embed_bytes = float(tail[0].sum()) if embed and not tied_once else 0.0
    out_bytes = float(tail[0].sum() if config1.tied_embeddings else tail[1].sum()) if output else 0.0
    cut = stages(n_layers, k, float(slots.sum()), embed_bytes, out_bytes)
    counts = [c for c, _, _ in cut]
    firsts = [sum(counts[:g]) for g in range(len(cut))]
    parts = [_place(cap, T, gmax, has_offchip, config1, c, options, act_cols, e and embed_bytes > 0, o and output, f)
             for (c, e, o), f in zip(cut, firsts)]
    k = len(parts)
    per_tile = [np.zeros(T, np.int64) for _ in range(4)]
    for g, p in enumerate(parts):
        for acc, a in zip(per_tile, (p.weight_bytes, p.staging_bytes, p.act_bytes, p.kv_bytes)):
            acc += np.roll(a, g * S)
    with_layers = [p for p in parts if p.n_layers]
    kv_cap = np.average([p.kv_capacity for p in with_layers], axis=0, weights=[p.n_layers for p in with_layers])
    masks = np.concatenate([p.layer_masks for p in parts], axis=0)
    tail_mask = np.logical_or.reduce([p.tail_mask for p in parts])
    offsets = np.concatenate([p.kv_offsets for p in parts])
    arrays = [*per_tile, kv_cap, masks, tail_mask, offsets]
    for a in arrays:
        a.setflags(write=False)
    weight, staging, act, kv_bytes, kv_cap, masks, tail_mask, offsets = arrays
    return Placement(n_layers, sum(p.resident_layers for p in parts), all(p.tail_resident for p in parts), weight,
                     staging, act, kv_bytes, kv_cap, sum(p.total_weight_bytes for p in parts),
                     sum(p.total_kv_bytes for p in parts), all(p.ok for p in parts),
                     next((p.why for p in parts if p.why), ""), masks, tail_mask, offsets, k, S, tuple(counts))


@lru_cache(maxsize=256)
def _place(cap: int, T: int, gmax: int, has_offchip: bool, config1: ModelConfig, n_layers: int, options: CompileOptions,
           act_cols: int, embed: bool, output: bool, first_layer: int = 0) -> Placement:
    """place(), keyed by everything of the chip it reads (arrays returned read-only). ``first_layer``: the global
    index of the first layer (the compiler homes layer l's kv-heads from tile (l * H) % G of its group)."""
    group, slots, tail0 = layer_slots(T, gmax, replace(config1, n_layers=1), options.precision)
    G = len(group)
    gidx = np.asarray(group, np.int64)
    cols = act_cols or options.batch * max(1, options.prefill_chunk)
    act = np.zeros(T, np.int64)
    act[gidx] = per_col_act_bytes(config1, G) * cols

    H = config1.n_kv_heads
    kv_per_tok = 2 * (config1.head_dim + 4) if options.kv_int8 else 2 * config1.head_dim * 4
    homes = gidx[((first_layer * H + np.arange(n_layers * H)) % G)]   # kv_home[l, h] = g[(l*H + h) % G], raveled
    heads_on = np.bincount(homes, minlength=T)
    kv_want = heads_on.astype(np.int64) * kv_per_tok * options.context * options.batch
    kv_reserve = np.minimum(kv_want, cap // 4)

    tail = tail0.copy()
    if not embed:
        tail[0] = 0
    if not output or config1.tied_embeddings:
        tail[1] = 0
    if config1.tied_embeddings and output and not embed:
        tail[1] = tail0[0]  # the last stage holds the tied table for the classifier
    layer_total = int(slots.sum())
    total_weights = layer_total * n_layers + int(tail.sum())
    budget = cap - act - kv_reserve
    why = ""
    if np.any(budget < 0):
        why = f"activations and KV reserve overflow a tile's SRAM by {int(-budget.min()):,} B"
        budget = np.maximum(budget, 0)

    weight, staging, resident, tail_res, ok_staging, keep = _residency(slots, tail, n_layers, budget)
    tail_resident = tail_res * 2 >= int(tail.sum())
    S = len(slots)
    idx = np.arange(n_layers * S + 2).reshape(-1, 1)
    res = idx < keep                                                  # (N, T) shard entry kept resident
    masks = res[: n_layers * S].reshape(n_layers, S, T) & (slots > 0)
    tail_mask = res[n_layers * S:] & (tail > 0)

    streamed_any = int(weight.sum()) < total_weights
    free = cap - weight - staging - act
    kv_bytes = np.where(kv_want > 0, np.minimum(np.maximum(free, 0), kv_want), 0)
    per_slot = kv_bytes // np.maximum(heads_on, 1)
    tokens = per_slot // (kv_per_tok * options.batch)
    cap_tok = np.where(tokens >= options.context, options.context, tokens // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS)
    kv_cap = cap_tok[homes].reshape(n_layers, H).mean(axis=0) if n_layers else np.full(H, float(options.context))

    ok = True
    if not has_offchip:
        if streamed_any:
            ok, why = False, why or "weights overflow SRAM and the chip has no off-chip memory"
        elif kv_cap.min() < options.context:
            ok, why = False, why or f"SRAM holds only {int(kv_cap.min())} of {options.context} tokens of KV cache"
        elif why:
            ok = False
    elif not ok_staging:
        why = why or "a tile cannot hold the staging buffer of a streamed shard"
    arrays = [weight, staging, act, kv_bytes.astype(np.int64), kv_cap, masks, tail_mask,
              ((first_layer + np.arange(n_layers)) * H) % G]
    for a in arrays:
        a.setflags(write=False)
    weight, staging, act, kv_bytes, kv_cap, masks, tail_mask, offsets = arrays
    return Placement(n_layers, resident, tail_resident, weight, staging, act, kv_bytes, kv_cap,
                     total_weights, int(kv_want.sum()), ok, why, masks, tail_mask, offsets, 1, G, (n_layers,))


def _residency(slots: np.ndarray, tail: np.ndarray, n_layers: int, budget: np.ndarray):
    """compiler._residency for every tile at once: each tile's shards in layer order (then the embedding and
    classifier) keep the longest prefix resident such that the rest fit through one staging buffer as large as
    the largest streamed shard. Returns weight and staging bytes per tile, the resident layers (fractional,
    by bytes), the resident tail bytes, whether every tile could hold its staging buffer, and each tile's
    number of resident entries (T,) in that order."""
    seq = np.concatenate([np.tile(slots, (n_layers, 1)), tail], axis=0)           # (N, T) in compiler order
    N, T = seq.shape
    prefix = np.zeros((N + 1, T), np.int64)
    np.cumsum(seq, axis=0, out=prefix[1:])
    tail_max = np.zeros((N + 1, T), np.int64)
    tail_max[:N] = np.maximum.accumulate(seq[::-1], axis=0)[::-1]
    fits = prefix + tail_max <= budget
    keep = np.where(fits.any(axis=0), N - np.argmax(fits[::-1], axis=0), 0)      # longest fitting prefix
    cols = np.arange(T)
    weight = prefix[keep, cols]
    staging = tail_max[keep, cols]
    layer_bytes = prefix[n_layers * len(slots), cols]
    layer_total = int(slots.sum())
    resident = float(np.minimum(weight, layer_bytes).sum()) / max(layer_total, 1)
    tail_res = int(np.maximum(weight - layer_bytes, 0).sum())
    return weight, staging, resident, tail_res, bool(fits.any(axis=0).all()), keep


@lru_cache(maxsize=256)
def layer_slots(n_tiles: int, group_max: int, config: ModelConfig, precision: str) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """The tensor mapping's group and the shard bytes of one layer per slot and tile (slots, T), plus the
    embedding and classifier shard bytes (2, T), from the compiler's _shard of a one-layer model."""
    cfg1 = replace(config, n_layers=1)
    groups = _groups(n_tiles, 1, "tensor", group_max)
    shards, _ = _shard(cfg1, tensor_table(cfg1, precision), groups, [0])
    _, slots, tail = _layer_slots(shards, n_tiles)
    slots.setflags(write=False)
    tail.setflags(write=False)
    return tuple(groups[0]), slots, tail


@lru_cache(maxsize=256)
def layer_slot_keys(n_tiles: int, group_max: int, config: ModelConfig, precision: str) -> tuple[tuple[str, int], ...]:
    """(tensor of layer 0, expert) of each slot, in the order of layer_slots' rows."""
    cfg1 = replace(config, n_layers=1)
    shards, _ = _shard(cfg1, tensor_table(cfg1, precision), _groups(n_tiles, 1, "tensor", group_max), [0])
    return tuple(_layer_slots(shards, n_tiles)[0])


def reduced_plan(chip, config: ModelConfig, options: CompileOptions, topo: Topology, masks: np.ndarray,
                 offsets: tuple[int, ...], tail_mask: np.ndarray) -> Plan:
    """A len(masks)-deep Plan with the tensor mapping: layer k's shard of slot s on tile t is resident when
    ``masks[k, s, t]`` and its kv-heads live on group tiles (offsets[k] + h) % G; the embedding and classifier
    shards are resident where ``tail_mask`` (2, T) says. KV capacity is set per run."""
    K = len(masks)
    cfg = replace(config, n_layers=K)
    T = topo.n_tiles
    groups = _groups(T, K, "tensor", chip.mesh.tensor_group_tiles)
    tensors = tensor_table(cfg, options.precision)
    shards, expert_groups = _shard(cfg, tensors, groups, [0] * K)
    keys = layer_slot_keys(chip.n_tiles, chip.mesh.tensor_group_tiles, replace(config, n_layers=1, name=""), options.precision)
    slot_of = {k: i for i, k in enumerate(keys)}
    out = []
    for s in shards:
        if s.tensor.startswith("blk."):
            layer, rest = s.tensor[4:].split(".", 1)
            res = bool(masks[int(layer), slot_of[("blk.0." + rest, s.expert)], s.tile])
        else:  # a tied table is read by the classifier: its residency there decides
            row = 1 if s.tensor == "output.weight" or (cfg.tied_embeddings and tail_mask[1].any()) else 0
            res = bool(tail_mask[row, s.tile])
        out.append(s if s.resident == res else replace(s, resident=res))
    g = groups[0]
    H = cfg.n_kv_heads
    kv_home = np.array([[g[(o + h) % len(g)] for h in range(H)] for o in offsets], np.int64).reshape(K, H)
    zeros = np.zeros(T, np.int64)
    weight = zeros.copy()
    for s in out:
        if s.resident:
            weight[s.tile] += s.nbytes
    kv_cap = np.full((K, H), options.context, np.int64)
    return Plan(chip, cfg, options, "tensor", topo, groups, [0] * K, tensors, out, weight, zeros.copy(),
                zeros.copy(), zeros.copy(), kv_home, kv_cap, options.context, expert_groups,
                attn_parts(len(g), H))


def kv_bytes_per_token(config: ModelConfig, options: CompileOptions) -> int:
    """K and V of one token, all layers and kv-heads of ``config``, in the compiler's KV format."""
    per = 2 * (config.head_dim + 4) if options.kv_int8 else 2 * config.head_dim * 4
    return per * config.n_layers * config.n_kv_heads


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@lru_cache(maxsize=1024)
def stages(n_layers: int, pp: int, layer_bytes: float, embed_bytes: float, output_bytes: float) -> tuple[tuple[int, bool, bool], ...]:
    """Split [embedding, layers..., classifier] into ``pp`` contiguous stages with the smallest largest stage
    (by bytes); returns (layers, holds embedding, holds classifier) per stage."""
    items = [embed_bytes] + [layer_bytes] * n_layers + [output_bytes]

    def cut(limit: float) -> list[list[int]] | None:
        out, cur, load = [], [], 0.0
        for i, b in enumerate(items):
            if cur and load + b > limit:
                out.append(cur)
                cur, load = [], 0.0
            cur.append(i)
            load += b
        out.append(cur)
        return out if len(out) <= pp else None

    lo, hi = max(items), sum(items)
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if cut(mid) else (mid, hi)
    parts = cut(hi)
    while len(parts) < pp:  # split the largest stage until every chip has a stage
        k = max(range(len(parts)), key=lambda j: len(parts[j]))
        if len(parts[k]) < 2:
            break
        half = len(parts[k]) // 2
        parts[k:k + 1] = [parts[k][:half], parts[k][half:]]
    last = n_layers + 1
    return tuple((sum(1 for i in p if 0 < i < last), 0 in p, last in p) for p in parts)


@dataclass(frozen=True)
class LayerClasses:
    """The layers of a chip's stages grouped by residency pattern. The reduced program runs one layer per class:
    ``masks`` (K, slots, T) and ``offsets`` (K,) its kv-head offset; ``layers[k]`` maps the kv offset of every
    full-depth layer of class k to how many such layers there are (stage counts included)."""

    masks: np.ndarray
    offsets: tuple[int, ...]
    layers: tuple[dict[int, int], ...]
    tail_mask: np.ndarray

    @property
    def multiplicity(self) -> np.ndarray:
        return np.array([sum(d.values()) for d in self.layers], np.float64)


def layer_classes(placements: list[Placement], counts: list[int], slots: np.ndarray, all_resident: bool,
                  max_classes: int = 6) -> LayerClasses:
    """Group every layer of every stage kind (``counts[i]`` stages use ``placements[i]``) by which of its shards
    are resident. Resident and streamed layers are one class each; a boundary layer (some tiles ran out of SRAM
    inside it) is its own class. Beyond ``max_classes`` classes, the surplus boundary layers join the class
    whose resident share of bytes is nearest. ``all_resident``: no off-chip memory, everything in SRAM."""
    exists = slots > 0
    order: list[bytes] = []
    found: dict[bytes, tuple[np.ndarray, dict[int, int]]] = {}
    for p, c in zip(placements, counts):
        for l in range(p.n_layers):
            mask = exists if all_resident else p.layer_masks[l]
            key = mask.tobytes()
            if key not in found:
                order.append(key)
                found[key] = (mask, {})
            d = found[key][1]
            o = int(p.kv_offsets[l])
            d[o] = d.get(o, 0) + c
    total = max(int(slots.sum()), 1)
    share = {k: float((slots * found[k][0]).sum()) / total for k in order}
    if len(order) > max_classes:
        by_size = sorted(order, key=lambda k: -sum(found[k][1].values()))
        keep = [k for k in order if k in set(by_size[:max_classes])]
        for k in order:
            if k not in keep:
                near = min(keep, key=lambda j: abs(share[j] - share[k]))
                for o, n in found[k][1].items():
                    found[near][1][o] = found[near][1].get(o, 0) + n
        order = keep
    tail = np.zeros((2, slots.shape[1]), bool)
    for p in placements:  # the embedding from the stage that holds it, the classifier from the last stage
        tail |= True if all_resident else p.tail_mask
    masks = np.stack([found[k][0] for k in order])
    offsets = tuple(next(iter(found[k][1])) for k in order)      # each class is run at its first layer's offset
    return LayerClasses(masks, offsets, tuple(found[k][1] for k in order), tail)
