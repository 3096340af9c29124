"""Sizes and byte layouts of every weight tensor at a precision, from a config alone or a loaded model.

The compiler places tensors by these sizes; the machine packs real bytes in the same layout,
so a shape-only projection and an emulation see identical byte counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.config import ModelConfig
from ..precision import WEIGHT_FORMAT

# (elements per block, bytes per block) of each storage format
BLOCK = {
    "f32": (1, 4), "f16": (1, 2), "bf16": (1, 2),
    "q8_0": (32, 34), "q4_0": (32, 18), "tq2_0": (256, 66), "b1_0": (32, 6),
}


def row_bytes(fmt: str, cols: int) -> int:
    per, nbytes = BLOCK[fmt]
    return -(-cols // per) * nbytes


def padded_cols(fmt: str, cols: int) -> int:
    per, _ = BLOCK[fmt]
    per = max(per, 32)
    return -(-cols // per) * per


@dataclass(frozen=True)
class TensorInfo:
    """name, storage format, logical shape (rows..., cols), bytes per row, total bytes."""

    name: str
    fmt: str
    shape: tuple[int, ...]
    row_bytes: int

    @property
    def rows(self) -> int:
        n = 1
        for s in self.shape[:-1]:
            n *= s
        return n

    @property
    def cols(self) -> int:
        return self.shape[-1]

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes


def tensor_table(config: ModelConfig, precision: str) -> dict[str, TensorInfo]:
    """Every tensor the model has, in the format ``precision`` stores matrices in (norms stay f32)."""
    fmt = WEIGHT_FORMAT.get(precision, "q8_0")
    c = config
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (c.vocab_size, c.dim), "output_norm.weight": (c.dim,)}
    if not c.tied_embeddings:
        shapes["output.weight"] = (c.vocab_size, c.dim)
    for i in range(c.n_layers):
        p = f"blk.{i}."
        shapes[p + "attn_norm.weight"] = (c.dim,)
        shapes[p + "attn_q.weight"] = (c.q_dim, c.dim)
        shapes[p + "attn_k.weight"] = (c.kv_dim, c.dim)
        shapes[p + "attn_v.weight"] = (c.kv_dim, c.dim)
        shapes[p + "attn_output.weight"] = (c.dim, c.q_dim)
        shapes[p + "ffn_norm.weight"] = (c.dim,)
        if c.is_moe:
            shapes[p + "ffn_gate_inp.weight"] = (c.n_experts, c.dim)
            shapes[p + "ffn_gate_exps.weight"] = (c.n_experts, c.hidden_dim, c.dim)
            shapes[p + "ffn_up_exps.weight"] = (c.n_experts, c.hidden_dim, c.dim)
            shapes[p + "ffn_down_exps.weight"] = (c.n_experts, c.dim, c.hidden_dim)
        else:
            shapes[p + "ffn_gate.weight"] = (c.hidden_dim, c.dim)
            shapes[p + "ffn_up.weight"] = (c.hidden_dim, c.dim)
            shapes[p + "ffn_down.weight"] = (c.dim, c.hidden_dim)
    out = {}
    for name, shape in shapes.items():
        f = "f32" if len(shape) == 1 or name.endswith("ffn_gate_inp.weight") else fmt
        out[name] = TensorInfo(name, f, shape, row_bytes(f, shape[-1]))
    return out
