"""Projection of a model onto a chip system: the emulator's program and cost model driven by shapes only.

Each chip runs a tensor-parallel slice of the model (1/tp of heads, FFN and vocabulary) for its
pipeline stage's layers. The per-chip time and counts come from a shape-only run of a reduced program
(one layer per residency class of the compiler's own placement, kv-home offsets added by kvroutes.py)
scaled to the full depth; chip-to-chip collectives are costed analytically (collectives.py). See docs/projection.md.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .. import cost
from ..compiler import ACT_BYTES, CompileOptions, fitted_chunk
from ..errors import CompileError, WorkbenchError
from ..model.config import ModelConfig
from ..precision import EMULATED_PRECISIONS
from . import collectives as cc
from .kvroutes import crossing_stats, embed_cycles_by_owner, send_stats
from .placement import (layer_classes, layer_slots, per_col_act_bytes, place_stage, slice_config, stages, topology,
                        valid_tp)
from .segments import Cost, decode_segments, machine_for, prefill_segments, zero_cost

PRECISIONS = (*EMULATED_PRECISIONS, "fp8")   # fp8 is projected with int8 (Q8_0) blocks on the int8/fp8 unit
MAPPINGS = ("auto", "tensor", "pipeline", "hybrid")
PHASES = ("compute", "on-chip memory", "off-chip memory", "on-chip network", "chip-to-chip", "op overhead")
MAX_CHIPS = 10**6
MAX_PREFILL_CHUNK = 4096
RUNNER_UP = 1.25


@dataclass(frozen=True)
class Projection:
    """One model on one chip system. Times in seconds, energy in joules; per token = per decode step of the
    whole batch divided by ``batch`` (J) or its inverse (tokens/s). ``phases_s`` is the time each resource
    needs per decode step on its own (they overlap: the largest is the binding limit ``bound``);
    ``fit`` is bytes per chip: weights, kv, activations, capacity, and chips_needed."""

    chip: str
    model: str
    precision: str
    batch: int
    prompt_len: int
    gen_len: int
    chips: int
    mapping: str
    ttft_s: float
    seconds_per_token: float
    tokens_per_s_per_user: float
    tokens_per_s: float
    joules_per_token: float
    watts: float
    bound: str
    phases_s: dict[str, float]
    fit: dict[str, float]
    fits: bool
    tp: int = 1
    pp: int = 1
    energy_j: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    onchip_groups: int = 1       # on-chip pipeline groups of tiles per chip (the most any stage uses)
    prefill_s: float = math.nan  # the whole batch's prompts prefilled together (= ttft_s at batch 1; NaN = not asked)
    e2e_tokens_per_s: float = math.nan  # batch x gen_len / (prefill_s + (gen_len - 1) decode steps)

    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            return v

        return clean(asdict(self))


def _check(config: ModelConfig, precision, batch, prompt_len, gen_len, n_chips, mapping, chip, prefill_chunk):
    if precision not in PRECISIONS:
        raise WorkbenchError(f"expected a precision in {', '.join(PRECISIONS)}, found {precision!r}", key="precision")
    if mapping not in MAPPINGS:
        raise WorkbenchError(f"expected a mapping in {', '.join(MAPPINGS)}, found {mapping!r}", key="mapping")
    for name, v, lo, hi in (("batch", batch, 1, 4096), ("prompt_len", prompt_len, 1, 10**7), ("gen_len", gen_len, 1, 10**7),
                            ("chips", n_chips, 1, MAX_CHIPS), ("prefill_chunk", prefill_chunk, 1, MAX_PREFILL_CHUNK)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise WorkbenchError(f"expected an integer in [{lo}, {hi}], found {v!r}", key=name)
    if prompt_len + gen_len > config.seq_len:
        raise WorkbenchError(f"expected prompt_len + gen_len within the model's {config.seq_len} tokens of context,"
                             f" found {prompt_len} + {gen_len}", key="gen_len")
    if n_chips > 1 and chip.system.chip_link_gb_per_s <= 0:
        raise WorkbenchError(f"expected a multi-chip system for {n_chips} chips, found {chip.name} with no"
                             f" chip-to-chip links (use a system profile, e.g. one with [system] chips > 1)",
                             key="chips")


def arrangements(config: ModelConfig, n_chips: int, mapping: str) -> list[tuple[int, int]]:
    """(tp, pp) pairs for ``mapping`` on ``n_chips`` (tp * pp == n_chips, pp <= layers)."""
    pairs = [(tp, n_chips // tp) for tp in range(1, n_chips + 1)
             if n_chips % tp == 0 and valid_tp(config, tp) and n_chips // tp <= config.n_layers]
    if mapping == "tensor":
        pairs = [p for p in pairs if p[1] == 1]
    elif mapping == "pipeline":
        pairs = [p for p in pairs if p[0] == 1]
    elif mapping == "hybrid":
        pairs = [p for p in pairs if p[0] > 1 and p[1] > 1]
    if not pairs:
        raise WorkbenchError(f"expected {n_chips} chips to split {config.name} by {mapping} parallelism (heads"
                             f" {config.n_heads}, kv-heads {config.n_kv_heads}, layers {config.n_layers}), found no"
                             f" way that divides evenly", key="mapping")
    return pairs


def _mapping_name(tp: int, pp: int, groups: int = 1) -> str:
    on_chip = f", {groups} tile groups per chip" if groups > 1 else ""
    if tp == 1 and pp == 1:
        return "single" + on_chip
    if pp == 1:
        return f"tensor tp{tp}" + on_chip
    if tp == 1:
        return f"pipeline pp{pp}" + on_chip
    return f"hybrid tp{tp} x pp{pp}" + on_chip


class _Layout:
    """The placement of every stage kind of a (tp, pp) arrangement, and the per-chip fit."""

    def __init__(self, chip, config, run_prec, batch, context, chunk, tp, pp):
        self.tp, self.pp = tp, pp
        self.slice = slice_config(config, tp, 1)
        self.options = CompileOptions(precision=run_prec, mapping="tensor", batch=batch, context=context,
                                      prefill_chunk=1)
        _, slots, tail = layer_slots(chip.n_tiles, chip.mesh.tensor_group_tiles, replace(self.slice, name=""), run_prec)
        out_bytes = float(tail[0].sum() if config.tied_embeddings else tail[1].sum())
        kinds = Counter(stages(config.n_layers, pp, float(slots.sum()), float(tail[0].sum()), out_bytes))
        cols = max(batch, chunk)
        self.placements = [place_stage(chip, self.slice, n, self.options, act_cols=cols, embed=e, output=o)
                           for n, e, o in kinds]
        counts = list(kinds.values())
        # (stages of this kind, its on-chip groups, group size): each pass crosses groups - 1 group boundaries
        self.crossings = [(c, p.groups, p.group_tiles) for c, p in zip(counts, self.placements) if p.groups > 1]
        self.groups = max(p.groups for p in self.placements)
        self.resident_layers = sum(c * p.resident_layers for c, p in zip(counts, self.placements))
        self.classes = layer_classes(self.placements, counts, slots, not chip.has_offchip)
        self.kv_capacity = np.mean([p.kv_capacity for p, k in zip(self.placements, kinds) if k[0]], axis=0)
        self.ok = all(p.ok for p in self.placements)
        self.why = next((p.why for p in self.placements if p.why), "")
        weights = max(p.total_weight_bytes for p in self.placements)
        kv = max(p.total_kv_bytes for p in self.placements)
        act = max(int(p.act_bytes.sum()) for p in self.placements)
        capacity = chip.sram_bytes + chip.offchip_bytes
        self.fits = self.ok and weights + kv + act <= capacity
        if self.ok and not self.fits:
            self.why = f"weights + KV + activations need {weights + kv + act:,} B per chip, capacity {capacity:,} B"
        self.fit = {"weights": float(weights), "kv": float(kv), "activations": float(act), "capacity": float(capacity)}


def _per_chip(passes: list[tuple[float, list[Cost]]], mult: np.ndarray) -> Cost:
    """Full-depth cost of the (weight, segments) passes: head + tail + each class's layer times its layers."""
    total = None
    for w, segs in passes:
        c = segs[0].combine(segs[-1], 1.0)
        for seg, k in zip(segs[1:-1], mult):
            c = c.combine(seg, float(k))
        total = c.scaled(w) if total is None else total.combine(c, w)
    return total


def _kv_shift(chip, lay: _Layout, ncols: list[int], parts: int) -> Cost:
    """What moving each layer's kv-heads to its own offset adds to the reduced program's layers, over passes
    of ``ncols`` columns (attention on ``parts`` tiles per kv-head): per full-depth layer, its offset's attention
    SENDs minus its class sample's."""
    cls = lay.classes
    weight: dict[int, float] = {}
    for k, layers in enumerate(cls.layers):
        for o, n in layers.items():
            weight[o] = weight.get(o, 0.0) + n
        weight[cls.offsets[k]] = weight.get(cls.offsets[k], 0.0) - sum(layers.values())
    offs = tuple(sorted(o for o, w in weight.items() if w))
    T = topology(chip.mesh.rows, chip.mesh.cols, chip.mesh.topology, min(chip.n_tiles, chip.mesh.tensor_group_tiles)).n_tiles
    if not offs:
        return zero_cost(T)
    st = send_stats(chip.mesh.rows, chip.mesh.cols, chip.mesh.topology, chip.n_tiles,
                    chip.mesh.tensor_group_tiles, replace(lay.slice, name=""),
                    lay.options.precision, offs, parts)
    w = np.array([weight[o] for o in offs])
    params = cost.cost_params(chip)
    cyc = sum(float(w @ st.cycles(params, n)) for n in ncols)
    hb, rd, wr = st.moved(w, ncols, chip.realism.block_cols)
    z = np.zeros(T)
    return Cost(cyc, np.zeros((T, cost.N_PREC)), z, rd, wr, 0.0, hb, cyc, z)


def _group_sends(chip, lay: _Layout, ncols: list[int], like: Cost) -> Cost:
    """The activation SENDs between a stage's on-chip pipeline groups, over passes of ``ncols`` columns, every
    stage of the pass: cycles (NoC time), byte-hops and SRAM bytes (first group's tile numbering), one op each."""
    T = len(like.vec)
    out = zero_cost(T)
    if not lay.crossings:
        return out
    params = cost.cost_params(chip)
    for count, groups, S in lay.crossings:
        st = crossing_stats(chip.mesh.rows, chip.mesh.cols, chip.mesh.topology, S, groups, lay.slice.dim)
        cyc = count * sum(float(st.cycles(params, n).sum()) for n in ncols)
        cols = float(count * sum(ncols))
        rd, wr, ops = np.zeros(T), np.zeros(T), np.zeros(T)
        rd[:S] = st.sram_rd.sum(axis=0)
        wr[:S] = st.sram_wr.sum(axis=0)
        ops[0] = count * len(ncols) * (groups - 1)
        out = out.combine(Cost(cyc, np.zeros_like(like.macs), np.zeros(T), cols * rd, cols * wr, 0.0,
                               cols * float(st.hop_bytes.sum()), cyc, ops), 1.0)
    return out


def _embed_mean(chip, lay: _Layout, like: Cost) -> Cost:
    """A decode step of one sequence embeds token 0; on average a token's row lives on any owner tile alike:
    the mean EMBED over the vocabulary minus token 0's (cycles, NoC byte-hops)."""
    p = cost.cost_params(chip)
    cyc, hb = embed_cycles_by_owner(chip.mesh.rows, chip.mesh.cols, chip.mesh.topology, chip.n_tiles,
                                    chip.mesh.tensor_group_tiles,
                                    replace(lay.slice, name=""), lay.options.precision, float(p[cost.P_LINK_BPC]),
                                    float(p[cost.P_HOP_LAT]), float(p[cost.P_OP_OVERHEAD]))
    z = np.zeros_like(like.vec)
    dc = float(cyc.mean() - cyc[0])
    return Cost(dc, np.zeros_like(like.macs), z, z, z, 0.0, float(hb.mean() - hb[0]), dc, z)


def _comm(config: ModelConfig, tp: int, pp: int, cols: int, link: cc.Link, passes: int = 1,
          logit_cols: int = 1) -> cc.CommCost:
    """Chip-to-chip traffic of ``passes`` passes of ``cols`` columns: per layer two all-reduces of the
    hidden state (attention output, FFN down) in the tp group, the embedding broadcast, the logits gather,
    and pp - 1 stage-to-stage sends. Activations travel as the compiler's ACT_BYTES per value."""
    act = config.dim * cols * ACT_BYTES
    one = cc.CommCost()
    if tp > 1:
        one = one.plus(cc.all_reduce(tp, act, link), 2 * config.n_layers)
        one = one.plus(cc.all_gather(tp, act, link))
        one = one.plus(cc.all_gather(tp, config.vocab_size * logit_cols * ACT_BYTES, link))
    if pp > 1:
        one = one.plus(cc.send(act, link), pp - 1)
    return cc.CommCost().plus(one, passes)


def _phases(chip, d: Cost, comm: cc.CommCost) -> dict[str, float]:
    p = cost.cost_params(chip)
    hz = chip.clock_hz
    rates = np.array([p[cost.P_MACS + i] if p[cost.P_MACS + i] > 0 else p[cost.P_VEC_LANES] for i in range(cost.N_PREC)])
    compute = float(((d.macs / rates).sum(axis=1) + d.vec / p[cost.P_VEC_LANES]).max()) / hz
    onchip = float(((d.sram_rd + d.sram_wr) / p[cost.P_SRAM_BPC]).max()) / hz
    offchip = d.offchip / p[cost.P_DRAM_BPC] / hz if p[cost.P_DRAM_BPC] > 0 else 0.0
    return {"compute": compute, "on-chip memory": onchip, "off-chip memory": offchip,
            "on-chip network": d.noc_cycles / hz, "chip-to-chip": comm.seconds,
            "op overhead": float(d.ops.max()) * p[cost.P_OP_OVERHEAD] / hz}


def _bound(phases: dict[str, float], comm: cc.CommCost) -> str:
    name = max(phases, key=phases.get)
    if name == "chip-to-chip":
        return "interconnect latency" if comm.latency_s >= comm.bandwidth_s else "interconnect bandwidth"
    return {"compute": "compute", "on-chip memory": "on-chip memory bandwidth", "off-chip memory": "memory bandwidth",
            "on-chip network": "on-chip network", "op overhead": "op overhead"}[name]


def _ttft(chip, config: ModelConfig, lay: _Layout, prompt_len: int, chunk: int, batch: int = 1) -> float:
    """The prefill of ``batch`` sequences together in passes of ``chunk`` tokens each (batch x chunk columns; on an
    SRAM-only chip the chunk is halved as the compiler halves it), chip-to-chip collectives included."""
    cls = lay.classes
    if batch > 1 and not chip.has_offchip:
        chunk = fitted_chunk(chunk, batch, _per_col(chip, config), chip.sram_bytes_per_tile)
    opts = CompileOptions(precision=lay.options.precision, mapping="tensor", batch=batch, context=lay.options.context,
                          prefill_chunk=chunk)
    m = machine_for(chip, lay.slice, opts, _kv_cap(chip, lay), cls.masks, cls.offsets, cls.tail_mask)
    passes = prefill_segments(m, prompt_len)
    cols = [batch * min(chunk, prompt_len - i) for i in range(0, prompt_len, chunk)]
    pf = _per_chip(passes, cls.multiplicity).combine(_kv_shift(chip, lay, cols, m.plan.attn_parts), 1.0)
    pf = pf.combine(_group_sends(chip, lay, cols, pf), 1.0)
    comm = _comm(config, lay.tp, lay.pp, batch * chunk, cc.link_of(chip), len(cols), batch)
    return pf.cycles / chip.clock_hz + comm.seconds


def _kv_cap(chip, lay: _Layout) -> np.ndarray:
    # SRAM-only: no spill path
    return lay.kv_capacity if chip.has_offchip else np.full_like(lay.kv_capacity, lay.options.context)


def _estimate(chip, config: ModelConfig, lay: _Layout, precision: str, batch: int, prompt_len: int, gen_len: int,
              n_chips: int) -> Projection:
    """Everything but ``ttft_s`` (NaN here: see _ttft)."""
    run_prec = lay.options.precision
    context = lay.options.context
    link = cc.link_of(chip)
    hz = chip.clock_hz
    kv_cap = _kv_cap(chip, lay)
    cls = lay.classes
    ttft = math.nan

    dec_opts = CompileOptions(precision=run_prec, mapping="tensor", batch=batch, context=context, prefill_chunk=1)
    m = machine_for(chip, lay.slice, dec_opts, kv_cap, cls.masks, cls.offsets, cls.tail_mask)
    # decode steps see positions prompt_len .. prompt_len + gen_len - 1: cost them at the middle one
    d = _per_chip([(1.0, decode_segments(m, prompt_len + (gen_len - 1) // 2))], cls.multiplicity)
    d = d.combine(_kv_shift(chip, lay, [batch], m.plan.attn_parts), 1.0)
    d = d.combine(_group_sends(chip, lay, [batch], d), 1.0)
    if batch == 1:
        d = d.combine(_embed_mean(chip, lay, d), 1.0)
    comm = _comm(config, lay.tp, lay.pp, batch, link, 1, batch)
    step_s = d.cycles / hz + comm.seconds

    dyn = d.energy_pj(chip)
    energy = {k: v * lay.tp * 1e-12 for k, v in dyn.items() if k not in ("chip_link", "static")}
    energy["chip_link"] = comm.bytes * chip.energy.pj_per_byte_chip_link * 1e-12
    energy["static"] = chip.energy.static_w * n_chips * step_s
    step_j = sum(energy.values())
    phases = _phases(chip, d, comm)
    bound = _bound(phases, comm) if lay.fits else "capacity"
    notes = [] if lay.fits else [f"does not fit: {lay.why}"]
    if lay.ok and lay.why:
        notes.append(f"the compiler would refuse this on one chip ({lay.why}); projected as if activations"
                     f" lived beside the weights")
    if precision == "fp8":
        notes.append("fp8 projected with int8 (Q8_0) weight blocks on the chip's int8/fp8 MAC rate")
    return Projection(
        chip=chip.name, model=config.name, precision=precision, batch=batch, prompt_len=prompt_len, gen_len=gen_len,
        chips=n_chips, mapping=_mapping_name(lay.tp, lay.pp, lay.groups), ttft_s=ttft, seconds_per_token=step_s,
        tokens_per_s_per_user=1.0 / step_s, tokens_per_s=batch / step_s, joules_per_token=step_j / batch,
        watts=step_j / step_s, bound=bound, phases_s=phases, fit={**lay.fit, "chips_needed": float(n_chips)},
        fits=lay.fits, tp=lay.tp, pp=lay.pp, energy_j={k: v / batch for k, v in energy.items()}, notes=tuple(notes),
        onchip_groups=lay.groups)


def _rough_s(chip, config: ModelConfig, lay: _Layout, batch: int) -> float:
    """A roofline guess of the decode step, only to rank arrangements: weights of one tp slice over the
    memory they stream from, plus the chip-to-chip collectives."""
    bw = chip.offchip_bytes_per_s if chip.has_offchip else chip.sram_bytes_per_s
    weights = lay.fit["weights"] * lay.pp
    return weights / max(bw, 1.0) + _comm(config, lay.tp, lay.pp, batch, cc.link_of(chip), 1, batch).seconds


def _per_col(chip, config: ModelConfig) -> int:
    """compiler.per_col_act_bytes for the chip's tensor group."""
    return per_col_act_bytes(config, min(chip.n_tiles, chip.mesh.tensor_group_tiles))


def _default_chunk(chip, config: ModelConfig, batch: int, prompt_len: int) -> int:
    """The whole prompt in one pass; on an SRAM-only chip, halved until its activations take at most a
    quarter of a tile (an HBM chip is taken to keep what does not fit beside the weights)."""
    chunk = min(prompt_len, MAX_PREFILL_CHUNK)
    if not chip.has_offchip:
        per_col = _per_col(chip, config)
        while chunk > 1 and per_col * max(batch, chunk) > chip.sram_bytes_per_tile // 4:
            chunk //= 2
    return chunk


def chips_needed(chip, config: ModelConfig, run_prec: str, batch: int, context: int, chunk: int, start: int) -> int:
    """The fewest chips (at least ``start``) that hold the model by the same placement, over every tp x pp
    arrangement. Bisects the sorted chip counts, then looks again at the counts down to half the answer: with
    whole layers per tile group fit is not quite monotonic (4 wafers can hold what 5 cannot). 0 = none holds it."""
    tps = [t for t in range(1, config.n_heads + 1) if valid_tp(config, t)]
    counts = sorted({t * p: None for t in tps for p in range(1, config.n_layers + 1) if t * p >= start})

    def fits(n: int) -> bool:
        return any(_Layout(chip, config, run_prec, batch, context, chunk, t, n // t).fits
                   for t in tps if n % t == 0 and n // t <= config.n_layers)

    if not counts or not fits(counts[-1]):
        return 0
    lo, hi = -1, len(counts) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(counts[mid]) else (mid, hi)
    best = counts[hi]
    for n in counts[:hi]:
        if 2 * n >= counts[hi] and fits(n):
            return n
    return best


def project(chip, config: ModelConfig, *, precision: str = "int8", batch: int = 1, prompt_len: int = 128,
            gen_len: int = 128, chips: int | None = None, mapping: str = "auto",
            prefill_chunk: int | None = None, end_to_end: bool = False) -> Projection:
    """Project ``config`` on ``chips`` chips of ``chip`` (default: the profile's system). ``mapping`` splits the
    model across chips: tensor, pipeline, hybrid, or auto (the fastest arrangement that fits). Prefill runs one
    sequence at a time in chunks of ``prefill_chunk`` tokens (default: the whole prompt, up to 4096; a chunk given
    here is halved as the compiler halves it, until its activations take at most a quarter of a tile).
    ``end_to_end``: also project the whole batch's prefill (``prefill_s``, ``e2e_tokens_per_s``; at batch 1 they
    come with the TTFT anyway), a pass of batch x chunk columns that costs as much as the rest together."""
    n_chips = chip.system.chips if chips is None else chips
    chunk = _default_chunk(chip, config, batch, prompt_len) if prefill_chunk is None else prefill_chunk
    _check(config, precision, batch, prompt_len, gen_len, n_chips, mapping, chip, chunk)
    if prefill_chunk is not None:  # as CompileOptions.prefill_chunk: halved until its activations fit
        chunk = fitted_chunk(chunk, batch, _per_col(chip, config), chip.sram_bytes_per_tile)
    run_prec = "int8" if precision == "fp8" else precision
    context = prompt_len + gen_len
    best = None
    layouts = [_Layout(chip, config, run_prec, batch, context, chunk, tp, pp)
               for tp, pp in arrangements(config, n_chips, mapping)]
    fitting = sorted((lay for lay in layouts if lay.fits), key=lambda lay: _rough_s(chip, config, lay, batch))
    best_lay = None
    # the runner-up by the roofline guess is projected too when the guess puts it within RUNNER_UP of the best
    close = [lay for lay in fitting[:2] if _rough_s(chip, config, lay, batch)
             <= RUNNER_UP * _rough_s(chip, config, fitting[0], batch)]
    for lay in close or [max(layouts, key=lambda x: (x.tp, x.pp))]:
        try:
            p = _estimate(chip, config, lay, precision, batch, prompt_len, gen_len, n_chips)
        except CompileError:
            continue
        if best is None or (p.seconds_per_token, -p.tokens_per_s) < (best.seconds_per_token, -best.tokens_per_s):
            best, best_lay = p, lay
    if best is None:
        raise WorkbenchError(f"{config.name} cannot be placed on {chip.name} with {mapping} mapping", key="mapping")
    ttft = _ttft(chip, config, best_lay, prompt_len, chunk)  # only the arrangement kept
    best = replace(best, ttft_s=ttft)
    if batch == 1 or end_to_end:
        prefill = ttft if batch == 1 else _ttft(chip, config, best_lay, prompt_len, chunk, batch)
        best = replace(best, prefill_s=prefill,
                       e2e_tokens_per_s=batch * gen_len / (prefill + (gen_len - 1) * best.seconds_per_token))
    if not best.fits:
        need = chips_needed(chip, config, run_prec, batch, context, chunk, n_chips + 1)
        best = _replace_fit(best, need)
    return best


def _replace_fit(p: Projection, need: int) -> Projection:
    return replace(p, fit={**p.fit, "chips_needed": float(need)})
