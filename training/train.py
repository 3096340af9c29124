"""Train the tinytales toy models (dense, 4-expert MoE, ternary QAT) with torch on CPU and export GGUF.

The torch model is the same network as workbench/model/reference.py: RMSNorm (eps 1e-5, weighted),
RoPE on adjacent pairs (theta 10000), GQA, SwiGLU, tied embeddings, no biases, Mixtral top-2 MoE.
Usage: python training/train.py --model tinytales   (writes models/tinytales.gguf)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "training"))

from corpus import generate_stories  # noqa: E402
from evaluate import CORPUS_SEED, DESCRIPTIONS, N_STORIES, N_TOKENIZER_STORIES  # noqa: E402

SCRATCH = Path("/tmp/toys")


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a trained model: shape, corpus, optimiser schedule, seeds."""

    name: str
    dim: int = 256
    hidden_dim: int = 512
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 4
    vocab_size: int = 512
    seq_len: int = 256
    n_experts: int = 0
    n_experts_used: int = 0
    ternary: bool = False
    steps: int = 450
    batch: int = 16
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 50
    weight_decay: float = 0.05
    aux_loss: float = 0.0  # Switch-style load balancing weight (MoE only)
    seed: int = 0
    corpus_seed: int = CORPUS_SEED
    n_stories: int = N_STORIES
    description: str = ""

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


RECIPES = {
    "tinytales": Recipe(
        "tinytales", description=DESCRIPTIONS["tinytales"]),
    "tinytales-moe": Recipe(
        "tinytales-moe", hidden_dim=256, n_experts=4, n_experts_used=2, aux_loss=0.01, steps=300,
        description=DESCRIPTIONS["tinytales-moe"]),
    "tinytales-ternary": Recipe(
        "tinytales-ternary", ternary=True, lr=3e-3, steps=400,
        description=DESCRIPTIONS["tinytales-ternary"]),
}


# ---------------------------------------------------------------------------------------------
# The network


def ternarize(w: torch.Tensor) -> torch.Tensor:
    """BitNet b1.58 absmean ternarization per block of 256 along the last axis; scale rounded to f16.

    Returns q * s with q in {-1, 0, 1} and s = f16(mean |w| of the block): exactly what a TQ2_0 block holds.
    """
    shape = w.shape
    blocks = w.reshape(-1, 256)
    s = blocks.abs().mean(dim=1, keepdim=True).clamp_min(1e-8).half().float()
    q = (blocks / s).round().clamp(-1, 1)
    return (q * s).reshape(shape)


def ste(w: torch.Tensor, on: bool) -> torch.Tensor:
    """Ternary weights in the forward pass, identity gradient (straight-through estimator)."""
    return w + (ternarize(w) - w).detach() if on else w


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim: int, seq_len: int, theta: float = 10000.0):
    """cos, sin of shape (seq_len, head_dim/2): pair k rotates by pos * theta^(-2k/head_dim) (run.c)."""
    freqs = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.arange(seq_len, dtype=torch.float64)[:, None] * freqs[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x, cos, sin):
    """x (B, H, T, hd) with pairs (x[2i], x[2i+1]) adjacent, as GGUF/llama2.c lay them out."""
    B, H, T, hd = x.shape
    xp = x.reshape(B, H, T, hd // 2, 2)
    x0, x1 = xp[..., 0], xp[..., 1]
    c, s = cos[:T], sin[:T]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).reshape(B, H, T, hd)


class Attention(nn.Module):
    def __init__(self, r: Recipe):
        super().__init__()
        self.r = r
        hd = r.dim // r.n_heads
        self.wq = nn.Linear(r.dim, r.n_heads * hd, bias=False)
        self.wk = nn.Linear(r.dim, r.n_kv_heads * hd, bias=False)
        self.wv = nn.Linear(r.dim, r.n_kv_heads * hd, bias=False)
        self.wo = nn.Linear(r.n_heads * hd, r.dim, bias=False)

    def forward(self, x, cos, sin):
        r, t = self.r, self.r.ternary
        B, T, _ = x.shape
        hd = r.dim // r.n_heads
        q = F.linear(x, ste(self.wq.weight, t)).view(B, T, r.n_heads, hd).transpose(1, 2)
        k = F.linear(x, ste(self.wk.weight, t)).view(B, T, r.n_kv_heads, hd).transpose(1, 2)
        v = F.linear(x, ste(self.wv.weight, t)).view(B, T, r.n_kv_heads, hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rep = r.n_heads // r.n_kv_heads  # query head h reads kv head h // rep
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.linear(y.transpose(1, 2).reshape(B, T, -1), ste(self.wo.weight, t))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, ternary: bool):
        super().__init__()
        self.ternary = ternary
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up

    def forward(self, x):
        t = self.ternary
        return F.linear(F.silu(F.linear(x, ste(self.w1.weight, t))) * F.linear(x, ste(self.w3.weight, t)),
                        ste(self.w2.weight, t))


class MoE(nn.Module):
    """Mixtral FFN: router logits, top-2 by value, softmax over the two, weighted sum of expert outputs."""

    def __init__(self, r: Recipe):
        super().__init__()
        self.r = r
        self.router = nn.Linear(r.dim, r.n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(r.dim, r.hidden_dim, r.ternary) for _ in range(r.n_experts))
        self.aux = torch.zeros(())

    def forward(self, x):
        logits = self.router(x)  # (B, T, E)
        top_v, top_i = logits.topk(self.r.n_experts_used, dim=-1)
        w = torch.softmax(top_v, dim=-1)
        gate = torch.zeros_like(logits).scatter(-1, top_i, w)  # (B, T, E), zero for unselected experts
        # All experts run on all tokens (CPU-friendly; exact since unselected gates are 0).
        out = sum(gate[..., e:e + 1] * expert(x) for e, expert in enumerate(self.experts))
        frac = torch.zeros_like(logits).scatter(-1, top_i, 1.0).mean(dim=(0, 1)) / self.r.n_experts_used
        prob = torch.softmax(logits, dim=-1).mean(dim=(0, 1))
        self.aux = self.r.n_experts * (frac * prob).sum()
        return out


class Block(nn.Module):
    def __init__(self, r: Recipe):
        super().__init__()
        self.attn_norm = RMSNorm(r.dim)
        self.attn = Attention(r)
        self.ffn_norm = RMSNorm(r.dim)
        self.ffn = MoE(r) if r.n_experts else FeedForward(r.dim, r.hidden_dim, r.ternary)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.ffn(self.ffn_norm(x))


class TinyLlama(nn.Module):
    def __init__(self, r: Recipe):
        super().__init__()
        self.r = r
        self.tok = nn.Embedding(r.vocab_size, r.dim)
        self.layers = nn.ModuleList(Block(r) for _ in range(r.n_layers))
        self.norm = RMSNorm(r.dim)
        cos, sin = rope_tables(r.dim // r.n_heads, r.seq_len)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2 style scaled init of residual projections
            if name.endswith("wo.weight") or name.endswith("w2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * r.n_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, ids):
        emb = ste(self.tok.weight, self.r.ternary)  # tied: lookup table and classifier
        x = F.embedding(ids, emb)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin)
        return F.linear(self.norm(x), emb)

    def aux_loss(self):
        return sum(l.ffn.aux for l in self.layers) / len(self.layers) if self.r.n_experts else 0.0


# ---------------------------------------------------------------------------------------------
# Data


def build_tokenizer(stories: list[str]):
    from workbench.model.tokenizer import train_bpe

    return train_bpe(stories[:N_TOKENIZER_STORIES], vocab_size=512, seed=0)


def encode_stories(tok, stories: list[str]) -> list[list[int]]:
    """Each story -> [BOS] + ids + [EOS]. Words are encoded once and cached; checked against tok.encode."""
    cache: dict[str, list[int]] = {}

    def enc(story: str) -> list[int]:
        ids = [tok.bos_id]
        for w in story.split(" "):
            if w not in cache:
                cache[w] = tok.encode(w, bos=False, eos=False)
            ids += cache[w]
        return ids + [tok.eos_id]

    out = [enc(s) for s in stories]
    for s, ids in zip(stories[:200], out[:200]):  # the per-word shortcut must equal the real encoder
        if tok.encode(s, bos=True, eos=True) != ids:
            return [tok.encode(s, bos=True, eos=True) for s in stories]
    return out


def corpus_tokens(r: Recipe):
    """(tokenizer, uint16 token stream of the training corpus)."""
    stories = generate_stories(r.n_stories, r.corpus_seed)
    tok = build_tokenizer(stories)
    ids = np.concatenate([np.asarray(x, dtype=np.uint16) for x in encode_stories(tok, stories)])
    return tok, ids


# ---------------------------------------------------------------------------------------------
# Training


def lr_at(r: Recipe, step: int) -> float:
    if step < r.warmup:
        return r.lr * (step + 1) / r.warmup
    frac = (step - r.warmup) / max(1, r.steps - r.warmup)
    return r.min_lr + 0.5 * (r.lr - r.min_lr) * (1 + math.cos(math.pi * frac))


def train(r: Recipe, ids: np.ndarray, log=print, steps: int | None = None) -> tuple[TinyLlama, dict]:
    torch.manual_seed(r.seed)
    torch.set_num_threads(2)
    model = TinyLlama(r)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=r.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(r.seed)
    data = torch.from_numpy(ids.astype(np.int64))
    n_steps = steps or r.steps
    t0 = time.time()
    history = []
    ema = None
    for step in range(n_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(r, step)
        starts = torch.randint(0, len(data) - r.seq_len - 1, (r.batch,), generator=gen)
        batch = torch.stack([data[s:s + r.seq_len + 1] for s in starts.tolist()])
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, r.vocab_size), batch[:, 1:].reshape(-1))
        total = loss + r.aux_loss * model.aux_loss() if r.aux_loss else loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 50 == 0 or step == n_steps - 1:
            el = time.time() - t0
            tps = (step + 1) * r.batch * r.seq_len / el
            log(f"step {step:5d} loss {loss.item():.4f} ema {ema:.4f} lr {lr_at(r, step):.2e} "
                f"{el:7.1f}s {tps:7.0f} tok/s")
            history.append((step, round(ema, 4)))
    stats = {"steps": n_steps, "seconds": round(time.time() - t0, 1), "final_loss_ema": round(ema, 4),
             "tokens_seen": n_steps * r.batch * r.seq_len, "history": history,
             "torch": torch.__version__, "threads": torch.get_num_threads()}
    return model, stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", choices=sorted(RECIPES), required=True)
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's step count (experiments only)")
    ap.add_argument("--out", type=Path, default=None, help="GGUF path (default models/<name>.gguf)")
    ap.add_argument("--bench", action="store_true", help="measure tokens/s on 20 steps and exit")
    a = ap.parse_args(argv)
    r = RECIPES[a.model]
    SCRATCH.mkdir(parents=True, exist_ok=True)
    if a.bench:
        ids = np.random.default_rng(0).integers(3, r.vocab_size, 200000).astype(np.uint16)
        train(r, ids, steps=21)
        return 0
    t = time.time()
    tok, ids = corpus_tokens(r)
    print(f"corpus: {r.n_stories} stories, {len(ids)} tokens, tokenizer+encode {time.time() - t:.1f}s", flush=True)
    model, stats = train(r, ids, log=lambda s: print(s, flush=True), steps=a.steps)
    stats["corpus_tokens"] = int(len(ids))
    if a.steps is None:
        stats["recipe_hash"] = r.hash()
    torch.save({"recipe": asdict(r), "state": model.state_dict(), "stats": stats}, SCRATCH / f"{r.name}.pt")
    from export import export_gguf

    out = a.out or ROOT / "models" / f"{r.name}.gguf"
    export_gguf(model, r, tok, stats, out)
    if r.ternary:  # what the latent f32 masters score, for the card's QAT-vs-PTQ table
        from dataclasses import replace

        from evaluate import heldout_ids, perplexity
        from export import to_workbench

        latent = to_workbench(model, replace(r, ternary=False), tok, stats)
        stats["ppl_latent_f32"] = perplexity(latent, heldout_ids(tok))
    (SCRATCH / f"{r.name}.json").write_text(json.dumps(stats, indent=1))
    print(f"wrote {out}", json.dumps({k: v for k, v in stats.items() if k != "history"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
