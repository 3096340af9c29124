"""The float32 numpy oracle: a LLaMA-family forward (dense or MoE) that everything else is checked against.

It follows llama2.c's run.c step for step: RMSNorm, RoPE on adjacent pairs with
freq_i = 1 / theta ** (i / head_dim) for even i < head_dim, GQA (query head h reads kv head
h // (n_heads / n_kv_heads)), SwiGLU w2(silu(w1 x) * w3 x), a tied or untied classifier.
MoE FFN (Mixtral): router logits = ffn_gate_inp @ x, the top-k experts by logit (ties to the
lower index), weights = softmax of those k logits, output = sum_k w_k * expert_k(x).
``Reference`` decodes with a KV cache; ``forward_full`` is an independent matrix-form
forward over a whole sequence with a causal mask, and the tests hold the two equal.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .config import ModelConfig
from .sampling import rng_state, sample
from .tensor import Model

F32 = np.float32


def _f32(model: Model, name: str) -> np.ndarray:
    t = model.tensors.get(name)
    if t is None:
        raise ModelError("tensor missing", source=model.source, key=name)
    if t.fmt == "f32":
        return np.asarray(t.data, dtype=F32).reshape(t.shape)
    return t.dequantize().astype(F32, copy=False)


def load_weights(model: Model) -> dict:
    """Every tensor as float32, dequantized once: {'embd', 'norm', 'cls', 'layers': [dict per layer]}."""
    cfg = model.config
    layers = []
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        layer = {k: _f32(model, p + n + ".weight") for k, n in (
            ("attn_norm", "attn_norm"), ("wq", "attn_q"), ("wk", "attn_k"), ("wv", "attn_v"),
            ("wo", "attn_output"), ("ffn_norm", "ffn_norm"),
        )}
        if cfg.is_moe:
            for k, n in (("router", "ffn_gate_inp"), ("w1", "ffn_gate_exps"), ("w3", "ffn_up_exps"),
                         ("w2", "ffn_down_exps")):
                layer[k] = _f32(model, p + n + ".weight")
        else:
            for k, n in (("w1", "ffn_gate"), ("w3", "ffn_up"), ("w2", "ffn_down")):
                layer[k] = _f32(model, p + n + ".weight")
        layers.append(layer)
    return {
        "embd": _f32(model, "token_embd.weight"),
        "norm": _f32(model, "output_norm.weight"),
        "cls": _f32(model, model.classifier_name()),
        "layers": layers,
    }


def rope_freqs(cfg: ModelConfig) -> np.ndarray:
    """(head_dim/2,) float32 rotation frequencies, computed as run.c does: 1 / theta ** (i / head_dim)."""
    i = np.arange(0, cfg.head_dim, 2, dtype=F32)
    return F32(1.0) / np.power(F32(cfg.rope_theta), i / F32(cfg.head_dim))


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x (..., dim) f32 -> weight * (x / sqrt(mean(x^2) + eps))."""
    ss = np.mean(x * x, axis=-1, keepdims=True, dtype=F32) + F32(eps)
    return weight * (x * (F32(1.0) / np.sqrt(ss)))


def silu(x: np.ndarray) -> np.ndarray:
    return x * (F32(1.0) / (F32(1.0) + np.exp(-x)))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def swiglu(x: np.ndarray, w1: np.ndarray, w3: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """x (N, dim) -> w2(silu(w1 x) * w3 x), (N, dim)."""
    return (silu(x @ w1.T) * (x @ w3.T)) @ w2.T


def moe_route(router_logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_experts,) logits -> (expert ids (k,), weights (k,) f32): top-k by value, ties to the lower id."""
    order = np.argsort(-router_logits, kind="stable")[:k]
    return order, softmax(router_logits[order])


def ffn(cfg: ModelConfig, layer: dict, x: np.ndarray) -> np.ndarray:
    """The FFN of one layer for rows x (N, dim): SwiGLU, or the mixture of the top-k expert SwiGLUs."""
    if not cfg.is_moe:
        return swiglu(x, layer["w1"], layer["w3"], layer["w2"])
    out = np.zeros_like(x)
    logits = x @ layer["router"].T  # (N, n_experts)
    for n in range(x.shape[0]):
        experts, weights = moe_route(logits[n], cfg.n_experts_used)
        row = x[n : n + 1]
        for e, w in zip(experts, weights):
            out[n] += w * swiglu(row, layer["w1"][e], layer["w3"][e], layer["w2"][e])[0]
    return out


def _check_tokens(cfg: ModelConfig, tokens: np.ndarray) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= cfg.vocab_size):
        bad = tokens[(tokens < 0) | (tokens >= cfg.vocab_size)].ravel()[0]
        raise ModelError(f"expected token ids in 0..{cfg.vocab_size - 1}, found {bad}", key="tokens")
    return tokens.astype(np.int64)


class Reference:
    """Step-by-step decode of B independent sequences with a float32 KV cache.

    k_cache, v_cache: (n_layers, B, max_seq, n_kv_heads, head_dim) f32, RoPE already applied to K.
    pos: the position the next ``step`` writes (all B sequences advance together).
    """

    def __init__(self, model: Model, batch: int = 1, max_seq: int | None = None):
        cfg = model.config
        self.model = model
        self.config = cfg
        self.batch = int(batch)
        self.max_seq = int(max_seq or cfg.seq_len)
        if self.batch < 1 or self.max_seq < 1:
            raise ValueError(f"batch and max_seq must be positive, got {batch}, {max_seq}")
        self.w = load_weights(model)
        freqs = rope_freqs(cfg)
        # (max_seq, head_dim/2): angle = pos * freq in float32, as run.c computes it
        angles = np.arange(self.max_seq, dtype=F32)[:, None] * freqs[None, :]
        self.cos = np.cos(angles).astype(F32)
        self.sin = np.sin(angles).astype(F32)
        shape = (cfg.n_layers, self.batch, self.max_seq, cfg.n_kv_heads, cfg.head_dim)
        self.k_cache = np.zeros(shape, dtype=F32)
        self.v_cache = np.zeros(shape, dtype=F32)
        self.pos = 0

    def reset(self) -> None:
        self.k_cache[...] = 0
        self.v_cache[...] = 0
        self.pos = 0

    def _rope(self, x: np.ndarray) -> np.ndarray:
        """x (B, heads, head_dim) rotated at self.pos: pairs (2j, 2j+1) by angle pos * freq_j."""
        c, s = self.cos[self.pos], self.sin[self.pos]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (B,) at position self.pos -> logits (B, vocab) f32; writes the KV cache; pos += 1."""
        cfg = self.config
        tokens = _check_tokens(cfg, tokens)
        if tokens.shape != (self.batch,):
            raise ValueError(f"expected tokens of shape ({self.batch},), got {tokens.shape}")
        if self.pos >= self.max_seq:
            raise ModelError(f"context full: expected position < {self.max_seq}, found {self.pos}", key="pos")
        B, H, KV, hd, t = self.batch, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, self.pos
        group = H // KV
        x = self.w["embd"][tokens].copy()  # (B, dim)
        for li, layer in enumerate(self.w["layers"]):
            xb = rmsnorm(x, layer["attn_norm"], cfg.norm_eps)
            q = self._rope((xb @ layer["wq"].T).reshape(B, H, hd))
            k = self._rope((xb @ layer["wk"].T).reshape(B, KV, hd))
            v = (xb @ layer["wv"].T).reshape(B, KV, hd)
            self.k_cache[li, :, t] = k
            self.v_cache[li, :, t] = v
            keys = self.k_cache[li, :, : t + 1]  # (B, t+1, KV, hd)
            values = self.v_cache[li, :, : t + 1]
            att = np.empty((B, H, hd), dtype=F32)
            for h in range(H):
                kh = h // group
                scores = np.einsum("bd,btd->bt", q[:, h], keys[:, :, kh]) / np.sqrt(F32(hd))
                att[:, h] = np.einsum("bt,btd->bd", softmax(scores), values[:, :, kh])
            x = x + att.reshape(B, H * hd) @ layer["wo"].T
            x = x + ffn(cfg, layer, rmsnorm(x, layer["ffn_norm"], cfg.norm_eps))
        self.pos += 1
        x = rmsnorm(x, self.w["norm"], cfg.norm_eps)
        return (x @ self.w["cls"].T).astype(F32, copy=False)

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (B, T) fed one position at a time -> logits of the last position (B, vocab)."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[0] != self.batch or tokens.shape[1] == 0:
            raise ValueError(f"expected tokens of shape ({self.batch}, T>0), got {tokens.shape}")
        logits = None
        for t in range(tokens.shape[1]):
            logits = self.step(tokens[:, t])
        return logits

    def generate(
        self, prompt: list[int], n: int, temperature: float = 0.0, seed: int = 0, stop_at_eos: bool = False
    ) -> list[int]:
        """Reset, feed ``prompt`` (its first id is usually BOS = 1), then sample ``n`` new ids.

        Returns only the new ids. Sampling is workbench.model.sampling.sample with one state
        from rng_state(seed). stop_at_eos: stop after BOS (llama2.c's sequence delimiter) or
        EOS (the tokenizer's ids, else 1 and 2); that id is the last one returned. Needs batch 1.
        """
        if self.batch != 1:
            raise ValueError("generate needs a Reference built with batch=1")
        if not prompt:
            raise ValueError("generate needs a non-empty prompt (start with BOS = 1)")
        if n <= 0:
            return []
        if len(prompt) + n - 1 > self.max_seq:
            raise ModelError(
                f"expected prompt + new tokens - 1 <= {self.max_seq} positions, found {len(prompt)} + {n} - 1",
                key="max_seq",
            )
        tok = self.model.tokenizer
        stop_ids = (tok.bos_id, tok.eos_id) if tok is not None else (1, 2)
        self.reset()
        state = rng_state(seed)
        logits = self.prefill(np.asarray([prompt], dtype=np.int64))
        out: list[int] = []
        while True:
            token = sample(logits[0], temperature, state)
            out.append(int(token))
            if len(out) == n or (stop_at_eos and token in stop_ids):
                return out
            logits = self.step(np.array([token]))


def forward_full(model: Model, tokens: np.ndarray, weights: dict | None = None) -> np.ndarray:
    """tokens (T,) -> logits (T, vocab) f32 with full causal attention over the whole sequence, no cache.

    RoPE here multiplies complex numbers (pair (2j, 2j+1) as re + i*im) by exp(i * pos * freq_j).
    ``weights``: load_weights(model), to skip dequantizing again.
    """
    cfg = model.config
    tokens = _check_tokens(cfg, tokens)
    if tokens.ndim != 1 or not 0 < tokens.shape[0] <= cfg.seq_len:
        raise ModelError(f"expected 1..{cfg.seq_len} tokens, found shape {tokens.shape}", key="tokens")
    w = weights if weights is not None else load_weights(model)
    T, H, KV, hd = tokens.shape[0], cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    angles = np.outer(np.arange(T, dtype=F32), rope_freqs(cfg)).astype(F32)
    rot = (np.cos(angles) + 1j * np.sin(angles)).astype(np.complex64)[:, None, :]  # (T, 1, hd/2)

    def rope(m: np.ndarray, heads: int) -> np.ndarray:  # (T, heads*hd) -> (heads, T, hd)
        c = m.reshape(T, heads, hd // 2, 2)
        z = (c[..., 0] + 1j * c[..., 1]).astype(np.complex64) * rot
        out = np.stack([z.real, z.imag], axis=-1).astype(F32).reshape(T, heads, hd)
        return out.transpose(1, 0, 2)

    mask = np.triu(np.full((T, T), -np.inf, dtype=F32), k=1)
    x = w["embd"][tokens].copy()
    for layer in w["layers"]:
        xb = rmsnorm(x, layer["attn_norm"], cfg.norm_eps)
        q = rope(xb @ layer["wq"].T, H)  # (H, T, hd)
        k = np.repeat(rope(xb @ layer["wk"].T, KV), H // KV, axis=0)
        v = np.repeat((xb @ layer["wv"].T).reshape(T, KV, hd).transpose(1, 0, 2), H // KV, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(F32(hd)) + mask  # (H, T, T)
        att = softmax(scores) @ v  # (H, T, hd)
        x = x + att.transpose(1, 0, 2).reshape(T, H * hd) @ layer["wo"].T
        x = x + ffn(cfg, layer, rmsnorm(x, layer["ffn_norm"], cfg.norm_eps))
    x = rmsnorm(x, w["norm"], cfg.norm_eps)
    return (x @ w["cls"].T).astype(F32, copy=False)


def log_likelihood(model: Model, ids: list[int] | np.ndarray) -> tuple[float, int, np.ndarray]:
    """Teacher forcing over ``ids``: (sum of -log p(ids[t+1] | ids[:t+1]) in nats, T-1, top-1 ids (T-1,)).

    Sequences longer than seq_len are scored in consecutive windows of seq_len positions, each
    restarting the context; every id after ids[0] is predicted exactly once.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or ids.shape[0] < 2:
        raise ModelError(f"expected at least 2 token ids, found shape {ids.shape}", key="ids")
    w = load_weights(model)
    nll = 0.0
    top1 = []
    n = model.config.seq_len
    for start in range(0, ids.shape[0] - 1, n):
        window = ids[start : start + n + 1]
        logits = forward_full(model, window[:-1], w).astype(np.float64)
        logz = np.log(np.sum(np.exp(logits - logits.max(axis=1, keepdims=True)), axis=1)) + logits.max(axis=1)
        nll += float(np.sum(logz - logits[np.arange(logits.shape[0]), window[1:]]))
        top1.append(np.argmax(logits, axis=1))
    top1_ids = np.concatenate(top1)
    return nll, int(top1_ids.shape[0]), top1_ids
