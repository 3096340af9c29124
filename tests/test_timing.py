"""The executor's timing: columns streamed in blocks overlap transfers with compute; off-chip requests of one op
go out as one burst. Bounds that must hold whatever the numbers are, and the batch-1 case unchanged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from workbench.chip import load_chip
from workbench.compiler import CompileOptions
from workbench.machine import isa
from workbench.machine.machine import Machine
from workbench.model.config import ModelConfig
from workbench.model.load import random_model

TOY = ModelConfig("toy", dim=64, hidden_dim=96, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128, seq_len=64)
PROMPT = [1, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40]


@pytest.fixture(scope="module")
def toy():
    return random_model(TOY, seed=1, scale=0.2)


def _chip(name: str, block: int):
    chip = load_chip(name)
    return replace(chip, realism=replace(chip.realism, block_cols=block))


def _run(chip, model, batch: int, chunk: int, steps: int = 3) -> Machine:
    m = Machine(chip, model, CompileOptions(precision="int8", mapping="tensor", batch=batch, context=48,
                                            prefill_chunk=chunk))
    m.set_prompt(PROMPT)
    m.generate(steps)
    return m


def _decode_cycles(m: Machine) -> float:
    return float(np.mean([h.cycles for h in m.history if not h.prefill]))


def test_one_column_waits_for_every_op(toy):
    """Batch 1, one prompt token per pass: no column to overlap, so the block size cannot matter."""
    a, b = (_run(_chip("teaching-4x4", blk), toy, batch=1, chunk=1) for blk in (1, 4096))
    assert a.ttft_s == b.ttft_s
    assert [h.cycles for h in a.history] == [h.cycles for h in b.history]
    assert a.generated == b.generated


@pytest.mark.parametrize("batch, chunk", [(8, 1), (1, len(PROMPT))])
def test_streamed_columns_overlap_within_bounds(toy, batch, chunk):
    """Streaming columns makes a pass no slower than op after op, and no faster than the busiest tile's own work
    (compute ops on one tile share its datapath) or the busiest transfer kind on its own."""
    from workbench import compiler

    orig = compiler.attn_parts
    compiler.attn_parts = lambda *a: 1     # a pass uses as many parts as blocks: hold it to compare the same work
    try:
        streamed, whole = (_run(_chip("teaching-4x4", blk), toy, batch=batch, chunk=chunk) for blk in (1, 4096))
    finally:
        compiler.attn_parts = orig
    assert streamed.generated == whole.generated
    assert streamed.counters.busy.tolist() == whole.counters.busy.tolist()      # same work, only its timing moves
    assert streamed.counters.op_cycles.tolist() == whole.counters.op_cycles.tolist()
    if chunk > 1:
        assert streamed.ttft_s < whole.ttft_s
    else:
        assert _decode_cycles(streamed) < _decode_cycles(whole)
    total = streamed.counters.cycles
    assert total < whole.counters.cycles
    assert total >= streamed.counters.busy.max()
    comm = [isa.SEND, isa.ALLREDUCE, isa.ALLGATHER]
    assert total >= max(streamed.counters.op_cycles[c] / max(streamed.counters.op_count[c], 1) for c in comm)


def test_block_cols_sets_the_overlap(toy):
    """A block of all 8 columns is one block: as slow as op after op; smaller blocks overlap more."""
    cycles = {blk: _decode_cycles(_run(_chip("teaching-4x4", blk), toy, batch=8, chunk=1)) for blk in (1, 2, 8, 64)}
    assert cycles[8] == cycles[64]
    assert cycles[1] < cycles[2] < cycles[8]


def test_off_chip_requests_of_one_op_are_one_burst():
    """Every column's KV goes to off-chip memory in one KV_WRITE op: latency once, bandwidth for all the bytes, not
    one latency per column (which made a batch-64 decode step on an HBM chip wait 64 x 600 ns per kv-head)."""
    from workbench.projection.estimate import _Layout
    from workbench.projection.placement import slice_config
    from workbench.projection.segments import decode_segments, machine_for

    chip = load_chip("nvidia-h100-sxm")
    cfg = slice_config(ModelConfig("mid", dim=1024, hidden_dim=2816, n_layers=2, n_heads=16, n_kv_heads=8,
                                   vocab_size=512, seq_len=4096), 1, 1)
    batch, pos = 64, 16
    lay = _Layout(chip, cfg, "int8", batch, pos + 8, 1, 1, 1)
    opts = CompileOptions(precision="int8", mapping="tensor", batch=batch, context=pos + 8, prefill_chunk=1)
    cls = lay.classes
    m = machine_for(chip, lay.slice, opts, np.zeros_like(lay.kv_capacity), cls.masks, cls.offsets, cls.tail_mask)
    decode_segments(m, pos)     # no KV capacity in SRAM: every KV byte is off-chip
    c = m.counters
    bw = chip.offchip_bytes_per_s * chip.realism.memory_efficiency
    latency_s = chip.memory.latency_ns * 1e-9
    per_write_s = c.op_cycles[isa.KV_WRITE] / c.op_count[isa.KV_WRITE] / chip.clock_hz
    # at worst it queues behind every other off-chip byte of the step, plus its own vector work (< 1 us here)
    upper_s = latency_s + float(c.off_rd.sum() + c.off_wr.sum()) / bw + 1e-6
    assert c.kind_bytes[isa.KIND_KV] > 0
    assert latency_s <= per_write_s <= upper_s
    assert upper_s < batch * latency_s / 4


def _prefill(chip, model) -> Machine:
    m = _run(chip, model, batch=1, chunk=len(PROMPT), steps=0)
    m.step_token()   # the prompt in one pass, which emits the first token
    return m


def test_attention_parts_split_the_columns_over_the_group(toy):
    """Each (layer, kv-head)'s attention runs on attn_parts tiles of the group, its home first and every tile
    distinct; a prefill pass gives each part a block of the prompt's positions, and a part off the home tile
    fetches the SRAM-held K and V of its sequence once, up to its last position, over the network."""
    from workbench.compiler import attn_parts

    m = _prefill(load_chip("teaching-4x4"), toy)
    plan, ops = m.plan, m.program.ops
    G, H = len(plan.groups[0]), TOY.n_kv_heads
    P = plan.attn_parts
    assert P == attn_parts(G, H) == G // H > 1 and len(PROMPT) >= P   # teaching-4x4 streams a column per block
    kvb = plan.kv_bytes_per_token
    want = 0
    for l in range(TOY.n_layers):
        attn = ops[(ops["opcode"] == isa.ATTN) & (ops["layer"] == l)]
        assert len(attn) == H * P and len(set(attn["tile"].tolist())) == H * P
        for h in range(H):
            mine = attn[attn["aux"] == h]
            assert mine["tile"][0] == plan.kv_home[l, h] and mine["r0"].tolist() == list(range(P))
            for j in range(1, P):
                lo, hi = isa.part_cols(j, P, len(PROMPT), 1)
                want += min(hi, int(plan.kv_capacity[l, h])) * kvb if hi > lo else 0
    assert want > 0
    assert m.counters.kind_bytes[isa.KIND_KV_FETCH] == want
    # a decode step of one sequence runs on the home tiles alone: no fetch, no part without columns counted
    fetched, count = int(m.counters.kind_bytes[isa.KIND_KV_FETCH]), int(m.counters.op_count[isa.ATTN])
    m.generate(1)
    assert m.counters.kind_bytes[isa.KIND_KV_FETCH] == fetched
    assert m.counters.op_count[isa.ATTN] - count == TOY.n_layers * H


def test_attention_parts_shorten_a_long_prefill(toy):
    """A 40-token prompt prefills faster with each kv-head's attention split over its tiles than on its home tile
    alone (one part); a pass with fewer columns than a block uses one part (Hopper streams 64)."""
    from workbench import compiler

    prompt = list(range(1, 41))

    def ttft(chip, parts=None):
        orig = compiler.attn_parts
        if parts:
            compiler.attn_parts = lambda *a: parts
        try:
            m = Machine(chip, toy, CompileOptions(precision="int8", mapping="tensor", context=48,
                                                  prefill_chunk=len(prompt)))
        finally:
            compiler.attn_parts = orig
        m.set_prompt(prompt)
        m.step_token()
        return m

    split, whole = ttft(load_chip("teaching-4x4")), ttft(load_chip("teaching-4x4"), parts=1)
    assert split.plan.attn_parts > 1 and whole.plan.attn_parts == 1
    assert whole.counters.kind_bytes[isa.KIND_KV_FETCH] == 0 < split.counters.kind_bytes[isa.KIND_KV_FETCH]
    assert split.generated == whole.generated
    assert split.ttft_s < 0.9 * whole.ttft_s
    h100 = ttft(load_chip("nvidia-h100-sxm"))   # 40 columns: less than one block of Hopper's 64, one part runs
    assert h100.plan.attn_parts > 1 and h100.counters.op_count[isa.ATTN] == TOY.n_layers * TOY.n_kv_heads
