"""Shape-only runs of the reduced program on the emulator's own Machine, cut into per-layer segments.

A pass of the reduced program (one layer per residency class, see placement.layer_classes) splits at its
layer starts into head (embedding), one segment per layer and tail (classifier, sampling); each segment's
counts and cycles come straight from the executor. Machines are built once per program and re-targeted to other chips and options, since the
program (ops and transfers) depends only on the mesh, the slice's shapes, the precision and residency.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from .. import cost
from ..compiler import CompileOptions
from ..machine import isa
from ..machine.machine import Machine
from .placement import reduced_plan, topology

COMM_OPCODES = (isa.EMBED, isa.SEND, isa.ALLREDUCE, isa.ALLGATHER, isa.LOGITS_GATHER, isa.MOE_DISPATCH,
                isa.MOE_COMBINE)
_TEMPLATES: "OrderedDict[tuple, Machine]" = OrderedDict()
_MAX_TEMPLATES = 64


@dataclass(frozen=True)
class Cost:
    """Counts and time of one segment on one chip. Per tile (T,): macs (T, P), vec, sram_rd, sram_wr, ops;
    scalars: cycles elapsed, offchip bytes, hop_bytes, noc_cycles (elapsed inside comm ops)."""

    cycles: float
    macs: np.ndarray
    vec: np.ndarray
    sram_rd: np.ndarray
    sram_wr: np.ndarray
    offchip: float
    hop_bytes: float
    noc_cycles: float
    ops: np.ndarray

    def scaled(self, k: float) -> "Cost":
        return Cost(self.cycles * k, self.macs * k, self.vec * k, self.sram_rd * k, self.sram_wr * k,
                    self.offchip * k, self.hop_bytes * k, self.noc_cycles * k, self.ops * k)

    def combine(self, other: "Cost", k: float) -> "Cost":
        """self + k * other."""
        return Cost(self.cycles + k * other.cycles, self.macs + k * other.macs, self.vec + k * other.vec,
                    self.sram_rd + k * other.sram_rd, self.sram_wr + k * other.sram_wr,
                    self.offchip + k * other.offchip, self.hop_bytes + k * other.hop_bytes,
                    self.noc_cycles + k * other.noc_cycles, self.ops + k * other.ops)

    def energy_pj(self, chip) -> dict[str, float]:
        """Dynamic energy by component (static power is added by the caller for the whole system)."""
        return cost.energy_pj(chip, self.macs.sum(axis=0), float(self.vec.sum()), float(self.sram_rd.sum()),
                              float(self.sram_wr.sum()), self.offchip, self.hop_bytes, 0.0, 0.0)


def zero_cost(n_tiles: int) -> Cost:
    z = np.zeros(n_tiles)
    return Cost(0.0, np.zeros((n_tiles, cost.N_PREC)), z, z, z, 0.0, 0.0, 0.0, z)


def _template(chip, config, precision: str, masks: np.ndarray, offsets: tuple[int, ...],
              tail_mask: np.ndarray) -> Machine:
    """A shape-only Machine for the reduced program, cached by everything the program depends on: the mesh,
    the slice's shapes, the precision, which shards are resident and where each layer's kv-heads live."""
    used = min(chip.n_tiles, chip.mesh.tensor_group_tiles)
    key = (chip.mesh.rows, chip.mesh.cols, chip.mesh.topology, used, config, precision, masks.shape, masks.tobytes(),
           offsets, tail_mask.tobytes())
    m = _TEMPLATES.get(key)
    if m is not None:
        _TEMPLATES.move_to_end(key)
        return m
    topo = topology(chip.mesh.rows, chip.mesh.cols, chip.mesh.topology, used)
    options = CompileOptions(precision=precision, mapping="tensor", batch=1, context=2, prefill_chunk=1)
    plan = reduced_plan(chip, config, options, topo, masks, offsets, tail_mask)
    m = Machine(chip, plan.config, options, numeric=False, plan=plan)
    _TEMPLATES[key] = m
    if len(_TEMPLATES) > _MAX_TEMPLATES:
        _TEMPLATES.popitem(last=False)
    return m


def machine_for(chip, config, options: CompileOptions, kv_capacity: np.ndarray, masks: np.ndarray,
                offsets: tuple[int, ...], tail_mask: np.ndarray) -> Machine:
    """The cached program on ``chip`` with ``options``: a shallow copy whose chip, cost parameters, plan
    options and KV capacity are replaced, then its static tables rebuilt and its state reset."""
    m = copy.copy(_template(chip, config, options.precision, masks, offsets, tail_mask))
    cap = np.broadcast_to(np.minimum(np.asarray(kv_capacity, np.int64), options.context), m.plan.kv_capacity.shape)
    m.plan = replace(m.plan, chip=chip, options=options, context=options.context, kv_capacity=cap.copy())
    m.chip = chip
    m.options = options
    m._build_static()  # re-derives cost params, rope tables and column buffers from chip and options
    m.reset()
    return m


def _delta(m: Machine, before, cycles0: float, comm0: float) -> Cost:
    c = m.counters
    prev = before
    ops = np.zeros(len(c.clock))
    return Cost(c.cycles - cycles0, (c.tile_macs - prev.tile_macs).astype(float), (c.tile_vec - prev.tile_vec).astype(float),
                (c.sram_rd - prev.sram_rd).astype(float), (c.sram_wr - prev.sram_wr).astype(float),
                float((c.off_rd - prev.off_rd).sum() + (c.off_wr - prev.off_wr).sum()),
                float(c.hop_bytes[0] - prev.hop_bytes[0]), float(c.op_cycles[list(COMM_OPCODES)].sum()) - comm0, ops)


def run_pass(m: Machine) -> list[Cost]:
    """Run one pass op-group by op-group; returns its segment costs: head, one per layer, tail."""
    segs = []
    ops_tile = m.program.ops["tile"]
    starts = [0, *[int(s) for s in m.program.layer_starts], len(m.program.ops)]
    while True:
        before = m.counters.copy()
        cyc0 = m.counters.cycles
        comm0 = float(m.counters.op_cycles[list(COMM_OPCODES)].sum())
        pc0 = m.pc if m.in_pass else 0
        m.step_layer()
        pc1 = m.pc if m.in_pass else len(m.program.ops)
        seg = _delta(m, before, cyc0, comm0)
        seg.ops[:] = np.bincount(ops_tile[pc0:pc1], minlength=len(seg.ops))[: len(seg.ops)]
        segs.append(seg)
        if not m.in_pass:
            break
    if len(segs) != len(starts) - 1:
        raise AssertionError(f"expected {len(starts) - 1} segments per pass, ran {len(segs)}")
    return segs


def spread_tokens(n: int, vocab: int) -> list[int]:
    """``n`` token ids spread evenly over the vocabulary: their embedding rows live on every owner tile alike."""
    return [(i * vocab) // n for i in range(n)]


def prompt_tokens(prompt_len: int, chunk: int, vocab: int) -> list[int]:
    """The prompt a projection assumes: each prefill pass's tokens spread evenly over the vocabulary."""
    return [t for i in range(0, prompt_len, chunk) for t in spread_tokens(min(chunk, prompt_len - i), vocab)]


def prefill_segments(m: Machine, prompt_len: int) -> list[tuple[float, list[Cost]]]:
    """(weight, segments) of the prefill passes of one sequence of ``prompt_len`` tokens (prompt_tokens); the
    last pass emits the first token. With more than two whole chunks only the first and the last whole chunk
    (and a short remainder) are run: the passes between differ only in how many positions their attention
    reads, linearly, so they count as the mean of the two, (n - 2) times."""
    chunk = m.options.prefill_chunk
    ids = prompt_tokens(prompt_len, chunk, m.config.vocab_size)
    n_full = prompt_len // chunk
    m.set_prompt(ids)
    out = [(1.0, run_pass(m))]
    if n_full > 2:
        m.pending = ids[(n_full - 1) * chunk:]
        m.pos = (n_full - 1) * chunk
        last = run_pass(m)
        out += [((n_full - 2) / 2, out[0][1]), ((n_full - 2) / 2, last), (1.0, last)]
    while m.pending:
        out.append((1.0, run_pass(m)))
    return out


def decode_segments(m: Machine, position: int) -> list[Cost]:
    """Segments of one decode pass with ``position`` tokens already in the KV cache; the batch's input tokens are
    spread over the vocabulary (token 0 for a batch of one: the caller averages its embedding over the owners)."""
    m.set_prompt([1])
    m.pending = []     # skip the prefill: shape-only state has nothing to fill
    m.pos = position
    m.last_tokens[:] = spread_tokens(len(m.last_tokens), m.config.vocab_size)
    return run_pass(m)
