"""The compiler: split(), plan invariants (every tensor covered exactly once, SRAM within capacity), program contents."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workbench.chip import load_chip
from workbench.compiler import CompileOptions, compile_plan, emit_program, split
from workbench.errors import CompileError
from workbench.machine import isa
from workbench.machine.machine import layout_offsets
from workbench.machine.tensors import padded_cols
from workbench.model.config import ModelConfig

DENSE = ModelConfig("dense", dim=64, hidden_dim=172, n_layers=3, n_heads=8, n_kv_heads=4, vocab_size=512, seq_len=128)
MOE = ModelConfig("moe", dim=64, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128, seq_len=64,
                  n_experts=4, n_experts_used=2)
# a dense model's matrices are split by output rows: no partial sums to reduce (an MoE expert's down projection
# has them, test_moe_program_routes_dispatches_and_combines)
DENSE_OPS = ("embed", "rmsnorm", "quant", "matmul", "rope", "kv_write", "attn", "send", "allgather", "silu_mul",
             "resadd", "logits_gather", "sample")


@pytest.fixture(scope="module")
def teaching():
    return load_chip("teaching-4x4")


@given(n=st.integers(0, 5000), parts=st.integers(1, 70), unit=st.sampled_from([1, 2, 32, 256]))
def test_split_covers_the_range_in_aligned_balanced_pieces(n, parts, unit):
    pieces = split(n, parts, unit)
    assert len(pieces) == parts
    nonempty = [(lo, hi) for lo, hi in pieces if hi > lo]
    assert [p for p in pieces if p[1] > p[0]] == pieces[: len(nonempty)]  # empty pieces only at the end
    assert (nonempty[0][0] if nonempty else 0) == 0 and (nonempty[-1][1] if nonempty else n) == n
    for (_, hi), (lo2, _) in zip(nonempty, nonempty[1:]):
        assert hi == lo2
    for lo, hi in pieces:
        assert lo <= hi <= n and (lo % unit == 0 or lo == n) and (hi % unit == 0 or hi == n)
    units = [-(-(hi - lo) // unit) for lo, hi in pieces]
    assert max(units) - min(units) <= 1


def _coverage_ok(plan):
    """Every tensor's (expert, row, 32-column block) grid is covered by exactly one shard."""
    for name, info in plan.tensors.items():
        if len(info.shape) == 1:
            continue
        experts = info.shape[0] if len(info.shape) == 3 else 1
        rows = info.shape[-2]
        blocks = padded_cols(info.fmt, info.cols) // 32
        grid = np.zeros((experts, rows, blocks), np.int64)
        for s in plan.shards:
            if s.tensor == name:
                grid[max(s.expert, 0), s.r0:s.r1, s.k0 // 32: -(-s.k1 // 32)] += 1
        assert np.all(grid == 1), f"{name}: coverage {np.unique(grid)}"


@pytest.mark.parametrize("mapping", ["tensor", "pipeline", "hybrid", "auto"])
@pytest.mark.parametrize("precision", ["f32", "int8", "int4", "ternary", "binary"])
@pytest.mark.parametrize("cfg", [DENSE, MOE], ids=["dense", "moe"])
def test_plan_invariants(teaching, cfg, precision, mapping):
    try:
        plan = compile_plan(teaching, cfg, CompileOptions(precision=precision, mapping=mapping, prefill_chunk=8))
    except CompileError as exc:  # only f32 may fail to fit this chip, and it says so in one line
        assert precision == "f32" and "\n" not in str(exc)
        return
    _coverage_ok(plan)
    used = plan.weight_bytes + plan.staging_bytes + plan.act_bytes + plan.kv_bytes
    assert np.all(used <= plan.sram_capacity())
    assert np.all((plan.kv_capacity % 16 == 0) | (plan.kv_capacity == plan.context))
    for l, g in enumerate(plan.layer_group):
        assert set(plan.kv_home[l]) <= set(plan.groups[g])
    shard_bytes = sum(s.nbytes for s in plan.shards)
    tensor_bytes = sum(i.nbytes for i in plan.tensors.values() if len(i.shape) > 1)
    if precision in ("int8", "int4", "binary"):  # 32-blocks: shards hold exactly the tensor's bytes
        assert shard_bytes == tensor_bytes
    else:  # a TQ2_0 scale is copied to every tile touching its 256-block; f32 counts the 32-padding
        assert shard_bytes >= tensor_bytes
    assert len(plan.describe()) == plan.n_tiles + 2


def _program(chip, cfg, **kw):
    plan = compile_plan(chip, cfg, CompileOptions(**kw))
    return plan, emit_program(plan, layout_offsets(plan))


@pytest.mark.parametrize("mapping", ["tensor", "pipeline", "hybrid"])
def test_dense_program_has_every_op_kind(teaching, mapping):
    plan, prog = _program(teaching, DENSE, mapping=mapping)
    names = {isa.OPCODE_NAMES[c] for c in prog.ops["opcode"]}
    missing = set(DENSE_OPS) - names
    if mapping == "pipeline":
        missing -= {"allgather"} if min(len(g) for g in plan.groups) == 1 else set()
    assert not missing
    assert not names & {"moe_route", "moe_dispatch", "moe_combine", "stream"}
    assert len(prog.layer_starts) == DENSE.n_layers + 1 and np.all(np.diff(prog.layer_starts) > 0)
    t = prog.transfers
    assert np.all(t[:, 0] != t[:, 1]) and np.all(t[:, 2] > 0) and np.all((t[:, :2] >= 0) & (t[:, :2] < plan.n_tiles))
    assert prog.ops["t_cnt"].sum() == len(t)


def test_moe_program_routes_dispatches_and_combines(teaching):
    _, prog = _program(teaching, MOE, mapping="tensor")
    names = {isa.OPCODE_NAMES[c] for c in prog.ops["opcode"]}
    assert {"moe_route", "moe_dispatch", "moe_combine", "allreduce", "reduce"} <= names
    assert (prog.ops["opcode"] == isa.MOE_ROUTE).sum() == MOE.n_layers


def test_weights_that_do_not_fit_are_streamed(teaching):
    big = ModelConfig("big", dim=256, hidden_dim=768, n_layers=4, n_heads=8, n_kv_heads=8, vocab_size=256, seq_len=256)
    plan, prog = _program(teaching, big, precision="int8", mapping="tensor", prefill_chunk=4)
    assert plan.streamed_bytes > 0
    assert (prog.ops["opcode"] == isa.STREAM).any()
    assert (prog.ops["resident"] == 0).any()


def test_disassembly_is_one_readable_line_per_op(teaching):
    _, prog = _program(teaching, DENSE, mapping="hybrid", prefill_chunk=4)
    lines = prog.disassemble()
    assert len(lines) == len(prog.ops)
    first_q = next(line for line in lines if "blk.0.attn_q " in line)
    assert " L0 " in first_q and "matmul" in first_q and "q8_0" in first_q and "rows 0:" in first_q and "k 0:64" in first_q
    assert first_q.endswith("->q")
    assert any("all-gather" in line and "transfers" in line for line in lines)
    assert any(" attn " in line and "part 1/" in line for line in lines)          # a 4-token chunk: 4 parts
    # a dense model's hidden state is split over the group: each tile norms its slice from exchanged partial sums
    assert any(" sumsq " in line for line in lines) and any("partial sums" in line for line in lines)
    assert prog.disassemble(3, 5) == lines[3:5]


def test_sram_only_chip_overflow_and_short_context_errors():
    groq = load_chip("groq-lpu")
    big = ModelConfig("big", dim=8192, hidden_dim=28672, n_layers=80, n_heads=64, n_kv_heads=8, vocab_size=128256,
                      seq_len=8192)
    with pytest.raises(CompileError, match=r"does not fit on groq-lpu: .* overflow SRAM by [\d,]+ B"):
        compile_plan(groq, big, CompileOptions(precision="int8", mapping="tensor"))


def test_bad_options_are_one_line_compile_errors(teaching):
    for kw, key in ((dict(precision="int3"), "precision"), (dict(mapping="diagonal"), "mapping"), (dict(batch=0), "batch"),
                    (dict(context=DENSE.seq_len + 1), "context")):
        with pytest.raises(CompileError) as info:
            compile_plan(teaching, DENSE, CompileOptions(**kw))
        assert key in str(info.value) and "\n" not in str(info.value)
