"""The emulated chip's instruction set: opcodes, traffic kinds, the op record, and disassembly.

A Program is a numpy structured array of ``OP_DTYPE`` records — the static schedule one
decode step (or one prefill chunk) executes, like the compiled schedule of a Groq-style chip.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Opcodes. Compute ops run on ``tile``; COMM ops move bytes along mesh paths.
EMBED, RMSNORM, QUANT, MATMUL, ROPE, KV_WRITE, ATTN, SEND, REDUCE, SILU_MUL, RESADD, \
    MOE_ROUTE, MOE_DISPATCH, MOE_COMBINE, LOGITS_GATHER, SAMPLE, STREAM, ALLREDUCE, ALLGATHER, \
    COPY, SUMSQ = range(21)

OPCODE_NAMES = (
    "embed", "rmsnorm", "quant", "matmul", "rope", "kv_write", "attn", "send", "reduce", "silu_mul",
    "resadd", "moe_route", "moe_dispatch", "moe_combine", "logits_gather", "sample", "stream",
    "allreduce", "allgather", "copy", "sumsq",
)
N_OPCODES = len(OPCODE_NAMES)

# Kinds of mesh traffic, for the traffic-by-kind counters.
KIND_NONE, KIND_ALLREDUCE, KIND_ALLGATHER, KIND_SEND, KIND_STREAM, KIND_MOE, KIND_KV, KIND_KV_FETCH = range(8)
KIND_NAMES = ("none", "all-reduce", "all-gather", "send", "weight-stream", "moe-routing", "kv-spill", "kv-fetch")
N_KINDS = len(KIND_NAMES)

# Weight storage formats as small integers for the kernels.
FMT_CODES = {"f32": 0, "f16": 1, "bf16": 2, "q8_0": 3, "q4_0": 4, "tq2_0": 5, "b1_0": 6}
FMT_NAMES = {v: k for k, v in FMT_CODES.items()}

# Column meanings of the int64 view handed to numba (same order as OP_DTYPE).
OP_FIELDS = (
    ("opcode", "the operation"),
    ("layer", "layer index, -1 outside layers"),
    ("tile", "tile that executes it (source tile for transfers)"),
    ("dst", "destination tile, or -1"),
    ("fmt", "weight format code (FMT_CODES) or precision index"),
    ("w_off", "byte offset of the weight shard in the weight store"),
    ("w_row_bytes", "bytes per full weight row in its format"),
    ("r0", "first output row (ATTN and a SEND of its columns: the part)"),
    ("r1", "one past the last output row (ATTN and a SEND of its columns: the number of parts)"),
    ("k0", "first input column (multiple of 32)"),
    ("k1", "one past the last input column"),
    ("src", "input buffer id"),
    ("out", "output buffer id"),
    ("aux", "head / expert / partial slot / pattern"),
    ("kind", "traffic kind"),
    ("nbytes", "bytes the op moves or reads (static part)"),
    ("macs", "multiply-accumulates per column (static part)"),
    ("t_off", "first row in the transfers table"),
    ("t_cnt", "number of transfers"),
    ("aux2", "second auxiliary operand"),
    ("resident", "1 = weights in SRAM, 0 = streamed from off-chip memory"),
)
OP_DTYPE = np.dtype([(name, np.int64) for name, _ in OP_FIELDS])
F = {name: i for i, (name, _) in enumerate(OP_FIELDS)}


@njit(cache=True, nogil=True, inline="always")
def blocks(ncol, block):
    """How many blocks of ``block`` columns an op streams ``ncol`` columns in (at least one)."""
    return (ncol + block - 1) // block if ncol > block else 1


@njit(cache=True, nogil=True, inline="always")
def part_cols(part, n_parts, ncol, block_cols):
    """Columns [lo, hi) of ``part`` of an op split ``n_parts`` ways (an ATTN part and its SENDs). A pass uses no
    more parts than it has blocks of ``block_cols`` columns, so that a part is worth its transfers; part 0 takes
    the first columns (one column runs on part 0 alone), parts beyond those used get none. ``n_parts`` 0: every
    column. One definition for the executor (compiled into it), the numpy interpreter and the projection."""
    if n_parts <= 0:
        return 0, ncol
    used = min(n_parts, blocks(ncol, block_cols))
    if part >= used:
        return ncol, ncol
    return (part * ncol + used - 1) // used, ((part + 1) * ncol + used - 1) // used


def as_matrix(program: np.ndarray) -> np.ndarray:
    """(n_ops, n_fields) int64 view for numba."""
    return np.ascontiguousarray(program.view(np.int64).reshape(len(program), len(OP_FIELDS)))


def disassemble(program: np.ndarray, buffer_names: list[str], tensor_names: dict[int, str] | None = None,
                start: int = 0, stop: int | None = None, qbuffer_names: list[str] | None = None) -> list[str]:
    """One readable line per op: ``0042 L1 t05 matmul  q8_0 blk.1.attn_q rows 32:64 k 0:256 xq->q``."""
    lines = []
    stop = len(program) if stop is None else stop
    for i in range(start, stop):
        op = program[i]
        name = OPCODE_NAMES[op["opcode"]]
        layer = f"L{op['layer']}" if op["layer"] >= 0 else "--"
        where = f"t{op['tile']:02d}"
        parts = [f"{i:05d}", f"{layer:>3}", where, f"{name:<13}"]
        code = int(op["opcode"])
        if code == MATMUL:
            tname = (tensor_names or {}).get(int(op["aux2"]), "?")
            fmt = FMT_NAMES.get(int(op["fmt"]), "?")
            src_names = buffer_names if fmt in ("f32", "f16", "bf16") or not qbuffer_names else qbuffer_names
            out = f"part{op['dst']}" if op["dst"] >= 0 else buffer_names[op["out"]]
            parts.append(f"{fmt:<5} {tname} rows {op['r0']}:{op['r1']} k {op['k0']}:{op['k1']}"
                         f" {src_names[op['src']]}->{out}"
                         + ("" if op["resident"] else " (streamed)"))
        elif code in (SEND, ALLREDUCE, ALLGATHER, LOGITS_GATHER, MOE_DISPATCH, MOE_COMBINE, STREAM):
            parts.append(f"{KIND_NAMES[op['kind']]} {op['t_cnt']} transfers {op['nbytes']} B"
                         + (f" (columns of part {op['r0']}/{op['r1']})" if code == SEND and op["r1"] > 1 else ""))
        elif code == KV_WRITE:
            parts.append(f"kv-head {op['aux']}")
        elif code == ATTN:
            parts.append(f"kv-head {op['aux']}" + (f" part {op['r0']}/{op['r1']}" if op["r1"] > 1 else ""))
        elif code == QUANT and qbuffer_names:
            parts.append(f"{buffer_names[op['src']]}->{qbuffer_names[op['out']]} [{op['r0']}:{op['r1']}]")
        elif code == REDUCE:
            parts.append(f"{op['aux']} partials->{buffer_names[op['out']]} [{op['r0']}:{op['r1']}]")
        elif code == SUMSQ:
            parts.append(f"{buffer_names[op['src']]}[{op['r0']}:{op['r1']}]^2->{buffer_names[op['out']]}[{op['aux']}]")
        elif code == RMSNORM:
            parts.append(f"{buffer_names[op['src']]}->{buffer_names[op['out']]} [{op['r0']}:{op['r1']}]"
                         f" by {op['aux']} partial sums")
        elif code in (RMSNORM, ROPE, SILU_MUL, RESADD, EMBED, SAMPLE, MOE_ROUTE):
            parts.append(f"{buffer_names[op['src']]}->{buffer_names[op['out']]} [{op['r0']}:{op['r1']}]")
        lines.append(" ".join(parts))
    return lines
