"""Turn a trained torch TinyLlama into a workbench Model and GGUF file (f16 matrices, f32 norms).

tinytales-ternary is exported with its QAT forward weights: every matrix is q * s with q in {-1, 0, 1}
and s = f16(absmean) per 256-block, so GGUF's TQ2_0 (absmax scale) stores it without loss.
Usage: python training/export.py --model tinytales   (re-export from /tmp/toys/tinytales.pt)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.model import Model, ModelConfig, QTensor  # noqa: E402


def model_config(r) -> ModelConfig:
    return ModelConfig(name=r.name, dim=r.dim, hidden_dim=r.hidden_dim, n_layers=r.n_layers, n_heads=r.n_heads,
                       n_kv_heads=r.n_kv_heads, vocab_size=r.vocab_size, seq_len=r.seq_len, norm_eps=1e-5,
                       rope_theta=10000.0, tied_embeddings=True, n_experts=r.n_experts,
                       n_experts_used=r.n_experts_used)


def gguf_arrays(net, r) -> dict[str, np.ndarray]:
    """float32 arrays by GGUF tensor name, (out, in) matrices; ternary nets give their ternarized weights."""
    from train import ternarize

    def mat(p: torch.Tensor) -> np.ndarray:
        w = ternarize(p) if r.ternary else p
        return w.detach().float().numpy().copy()

    out = {"token_embd.weight": mat(net.tok.weight), "output_norm.weight": net.norm.weight.detach().numpy().copy()}
    for i, blk in enumerate(net.layers):
        b = f"blk.{i}."
        out[b + "attn_norm.weight"] = blk.attn_norm.weight.detach().numpy().copy()
        out[b + "ffn_norm.weight"] = blk.ffn_norm.weight.detach().numpy().copy()
        out[b + "attn_q.weight"] = mat(blk.attn.wq.weight)
        out[b + "attn_k.weight"] = mat(blk.attn.wk.weight)
        out[b + "attn_v.weight"] = mat(blk.attn.wv.weight)
        out[b + "attn_output.weight"] = mat(blk.attn.wo.weight)
        if r.n_experts:
            ex = blk.ffn.experts
            out[b + "ffn_gate_inp.weight"] = blk.ffn.router.weight.detach().numpy().copy()
            out[b + "ffn_gate_exps.weight"] = np.stack([mat(e.w1.weight) for e in ex])
            out[b + "ffn_up_exps.weight"] = np.stack([mat(e.w3.weight) for e in ex])
            out[b + "ffn_down_exps.weight"] = np.stack([mat(e.w2.weight) for e in ex])
        else:
            out[b + "ffn_gate.weight"] = mat(blk.ffn.w1.weight)
            out[b + "ffn_up.weight"] = mat(blk.ffn.w3.weight)
            out[b + "ffn_down.weight"] = mat(blk.ffn.w2.weight)
    return out


def to_workbench(net, r, tok, stats: dict) -> Model:
    """A workbench Model: matrices as f16 QTensors (shipping size), norm vectors as f32."""
    tensors = {}
    for name, a in gguf_arrays(net, r).items():
        if a.ndim >= 2:
            tensors[name] = QTensor("f16", a.shape, a.astype(np.float16))
        else:
            tensors[name] = QTensor("f32", a.shape, a.astype(np.float32))
    meta = {"general.name": r.name, "general.description": r.description,
            "training.recipe_hash": stats.get("recipe_hash", "experiment (steps overridden)")}
    return Model(config=model_config(r), tensors=tensors, tokenizer=tok, metadata=meta)


def load_f16_into(net, r, model: Model) -> None:
    """Copy a workbench Model's (f16-rounded) weights back into the torch net, for export checks."""
    arrays = {n: t.dequantize() for n, t in model.tensors.items()}
    sd = net.state_dict()
    back = {"tok.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}
    for i in range(r.n_layers):
        b = f"blk.{i}."
        back.update({f"layers.{i}.attn_norm.weight": b + "attn_norm.weight",
                     f"layers.{i}.ffn_norm.weight": b + "ffn_norm.weight",
                     f"layers.{i}.attn.wq.weight": b + "attn_q.weight", f"layers.{i}.attn.wk.weight": b + "attn_k.weight",
                     f"layers.{i}.attn.wv.weight": b + "attn_v.weight",
                     f"layers.{i}.attn.wo.weight": b + "attn_output.weight"})
        if not r.n_experts:
            back.update({f"layers.{i}.ffn.w1.weight": b + "ffn_gate.weight", f"layers.{i}.ffn.w3.weight": b + "ffn_up.weight",
                         f"layers.{i}.ffn.w2.weight": b + "ffn_down.weight"})
    with torch.no_grad():
        for k, g in back.items():
            sd[k].copy_(torch.from_numpy(arrays[g]))
        for i in range(r.n_experts and r.n_layers):
            b = f"blk.{i}."
            sd[f"layers.{i}.ffn.router.weight"].copy_(torch.from_numpy(arrays[b + "ffn_gate_inp.weight"]))
            for e in range(r.n_experts):
                for w, g in (("w1", "ffn_gate_exps"), ("w3", "ffn_up_exps"), ("w2", "ffn_down_exps")):
                    sd[f"layers.{i}.ffn.experts.{e}.{w}.weight"].copy_(torch.from_numpy(arrays[f"{b}{g}.weight"][e]))


def check_against_reference(net, r, model: Model, ids: list[int]) -> float:
    """Max |torch logits - workbench forward_full logits| / max |logits| on ``ids`` with the shipped weights."""
    from workbench.model.reference import forward_full

    from dataclasses import replace

    # The shipped weights are already ternary for the QAT model, so the probe must not ternarize again.
    plain = replace(r, ternary=False)
    probe = type(net)(plain)
    load_f16_into(probe, plain, model)
    with torch.no_grad():
        ours = probe(torch.tensor([ids]))[0].numpy()
    ref = forward_full(model, np.asarray(ids))
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def export_gguf(net, r, tok, stats: dict, out: Path) -> Model:
    from workbench.model.gguf_io import read_gguf, write_gguf

    model = to_workbench(net, r, tok, stats)
    ids = tok.encode("Once upon a time, there was a little girl named Lily. She found a red ball.")
    err = check_against_reference(net, r, model, ids)
    print(f"torch vs workbench reference (shipped weights): max rel logit diff {err:.2e}", flush=True)
    if err > 1e-4:
        raise SystemExit(f"export check failed: torch and workbench.reference disagree ({err:.2e})")
    write_gguf(out, model)
    back = read_gguf(out)
    for name, t in model.tensors.items():
        assert np.array_equal(back.tensors[name].dequantize(), t.dequantize()), name
    return model


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT / "training"))
    from train import SCRATCH, Recipe, TinyLlama, corpus_tokens

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    ck = torch.load(a.checkpoint or SCRATCH / f"{a.model}.pt", weights_only=False)
    r = Recipe(**ck["recipe"])
    net = TinyLlama(r)
    net.load_state_dict(ck["state"])
    tok, _ = corpus_tokens(r)
    out = a.out or ROOT / "models" / f"{r.name}.gguf"
    export_gguf(net, r, tok, ck["stats"], out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
