"""Quantized tensors (GGUF block layouts) and the Model container every loader returns.

Tensor names follow llama.cpp's GGUF names, matrices are (rows=out, cols=in) and blocks
run along the last axis, exactly as GGUF lays them out, so bytes load unchanged:

    token_embd.weight        (vocab, dim)
    output_norm.weight       (dim,)
    output.weight            (vocab, dim)          absent when embeddings are tied
    blk.{i}.attn_norm.weight (dim,)
    blk.{i}.attn_q.weight    (n_heads*head_dim, dim)     RoPE pairs adjacent (GGUF order)
    blk.{i}.attn_k.weight    (n_kv_heads*head_dim, dim)
    blk.{i}.attn_v.weight    (n_kv_heads*head_dim, dim)
    blk.{i}.attn_output.weight (dim, n_heads*head_dim)
    blk.{i}.ffn_norm.weight  (dim,)
    blk.{i}.ffn_gate.weight  (hidden, dim)   W1
    blk.{i}.ffn_up.weight    (hidden, dim)   W3
    blk.{i}.ffn_down.weight  (dim, hidden)   W2
  MoE layers replace the three FFN matrices with
    blk.{i}.ffn_gate_inp.weight  (n_experts, dim)            router
    blk.{i}.ffn_gate_exps.weight (n_experts, hidden, dim)
    blk.{i}.ffn_up_exps.weight   (n_experts, hidden, dim)
    blk.{i}.ffn_down_exps.weight (n_experts, dim, hidden)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import ModelConfig

if TYPE_CHECKING:  # pragma: no cover
    from .tokenizer import Tokenizer


@dataclass(frozen=True)
class QTensor:
    """One tensor in a storage format.

    fmt: 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'tq1_0' | 'tq2_0' | 'b1_0'.
    shape: logical shape in elements (rows..., cols), row-major.
    data: for float formats a typed array of ``shape`` (bf16 as uint16 bits);
          for block formats uint8 of shape (*shape[:-1], ceil(cols / block) * block_bytes), the tail zero-padded.
    """

    fmt: str
    shape: tuple[int, ...]
    data: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def dequantize(self) -> np.ndarray:
        """float32 array of ``shape``."""
        from .quant import dequantize

        return dequantize(self)


@dataclass
class Model:
    """A loaded model: its shape, its tensors by GGUF name, and its tokenizer if any."""

    config: ModelConfig
    tensors: dict[str, QTensor]
    tokenizer: "Tokenizer | None" = None
    source: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def f32(self, name: str) -> np.ndarray:
        return self.tensors[name].dequantize()

    def classifier_name(self) -> str:
        return "token_embd.weight" if self.config.tied_embeddings else "output.weight"

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())
