"""The shape of a LLaMA-family decoder (RMSNorm, RoPE, GQA, SwiGLU, optional MoE FFN)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a decoder-only transformer.

    dim: model width d_model; hidden_dim: FFN width (per expert for MoE);
    n_layers; n_heads query heads; n_kv_heads key/value heads (GQA when fewer);
    head_dim (dim // n_heads unless a spec says otherwise); vocab_size;
    seq_len: the longest context the model was built for;
    tied_embeddings: the classifier reuses token_embd;
    n_experts / n_experts_used: 0 / 0 for a dense FFN, else top-k routing.
    """

    name: str
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    head_dim: int = 0
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tied_embeddings: bool = True
    n_experts: int = 0
    n_experts_used: int = 0

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    def n_params(self) -> int:
        """Parameter count, embeddings included (and the classifier when untied)."""
        d, h, L = self.dim, self.hidden_dim, self.n_layers
        attn = d * self.q_dim + 2 * d * self.kv_dim + self.q_dim * d
        ffn = 3 * d * h * max(self.n_experts, 1) + (d * self.n_experts if self.is_moe else 0)
        per_layer = attn + ffn + 2 * d
        emb = self.vocab_size * d * (1 if self.tied_embeddings else 2)
        return L * per_layer + emb + d

    def kv_bytes_per_token(self, bytes_per_value: float) -> float:
        """K and V for one token across all layers."""
        return 2 * self.n_layers * self.kv_dim * bytes_per_value
