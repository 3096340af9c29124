"""Held-out text, perplexity, ternarization and model cards for the tinytales models (numpy only, no torch).

Usage: python training/evaluate.py --heldout          (writes models/tinytales-heldout.txt)
       python training/evaluate.py --card tinytales   (writes models/tinytales.md from the shipped GGUF)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "training"))

from corpus import generate_stories  # noqa: E402

from workbench.atomic import atomic_write_text  # noqa: E402
from workbench.model import Model, QTensor  # noqa: E402

MODELS = ROOT / "models"
HELDOUT = MODELS / "tinytales-heldout.txt"
HELDOUT_SEED = 9001
SCRATCH = Path("/tmp/toys")  # training notes (loss, seconds) and cached measurements
CORPUS_SEED, N_STORIES = 1, 30000  # the training corpus (training/train.py imports these)
N_TOKENIZER_STORIES = 4000  # train_bpe sees the first 4000 stories
PROMPT = "Once upon a time"
DESCRIPTIONS = {
    "tinytales": "Dense 2.5M-parameter LLaMA-style toy trained on a generated children's-story corpus.",
    "tinytales-moe": "tinytales with a 4-expert top-2 SwiGLU feed-forward (Mixtral routing).",
    "tinytales-ternary": "tinytales trained quantization-aware with BitNet b1.58 ternary weights (absmean per 256-block).",
}
PRECISIONS = ("f32", "fp16", "bf16", "int8", "int4", "ternary", "binary")


def write_heldout(n: int = 80, path: Path = HELDOUT) -> int:
    """Stories from HELDOUT_SEED that are not in the training corpus, one paragraph each; returns bytes."""
    train = set(generate_stories(N_STORIES, CORPUS_SEED))
    stories = [s for s in generate_stories(n, HELDOUT_SEED) if s not in train]
    text = "\n\n".join(stories) + "\n"
    atomic_write_text(path, text)
    return len(text.encode())


def heldout_stories(path: Path = HELDOUT) -> list[str]:
    return [p.strip() for p in path.read_text().split("\n\n") if p.strip()]


def heldout_ids(tok, path: Path = HELDOUT) -> list[int]:
    """The token stream perplexity is measured on: [BOS] + encode(story) + [EOS] for each paragraph."""
    ids: list[int] = []
    for s in heldout_stories(path):
        ids += tok.encode(s, bos=True, eos=True)
    return ids


def perplexity(model: Model, ids: list[int]) -> float:
    """exp(mean teacher-forced NLL) with workbench.model.reference.log_likelihood (windows of seq_len)."""
    from workbench.model.reference import log_likelihood

    nll, n, _ = log_likelihood(model, ids)
    return math.exp(nll / n)


def _with_matrices(model: Model, fn) -> Model:
    tensors = {n: (QTensor("f32", t.shape, fn(t.dequantize())) if len(t.shape) >= 2 else t)
               for n, t in model.tensors.items()}
    return Model(config=model.config, tensors=tensors, tokenizer=model.tokenizer, source=model.source,
                 metadata=dict(model.metadata))


def absmean_ternary(w: np.ndarray) -> np.ndarray:
    """BitNet b1.58 per 256-block along the last axis: q = clip(round(w/s), -1, 1), s = f16(mean|w|); returns q*s."""
    blocks = w.reshape(-1, 256).astype(np.float32)
    s = np.maximum(np.abs(blocks).mean(axis=1, keepdims=True), 1e-8).astype(np.float16).astype(np.float32)
    q = np.clip(np.round(blocks / s), -1, 1)
    return (q * s).reshape(w.shape).astype(np.float32)


def ternarize_absmean(model: Model) -> Model:
    """Every matrix (token_embd and router included) absmean-ternarized, kept as f32 values."""
    return _with_matrices(model, absmean_ternary)


def ternarize_tq2(model: Model) -> Model:
    """What the chip's ternary precision stores: every matrix through GGUF TQ2_0 (absmax scale per 256)."""
    from workbench.model.load import convert_precision

    return convert_precision(model, "ternary")


def greedy(model: Model, n: int | None = None, prompt: str = PROMPT) -> str:
    """Greedy continuation of ``prompt`` until EOS or ``n`` new tokens (default: the rest of the context)."""
    from workbench.model.reference import Reference

    tok = model.tokenizer
    prompt_ids = tok.encode(prompt, bos=True)
    n = n or model.config.seq_len - len(prompt_ids) + 1
    out = Reference(model).generate(prompt_ids, n, stop_at_eos=True)
    # decode drops the dummy-prefix space only right after BOS
    return tok.decode(prompt_ids + [i for i in out if i not in (tok.bos_id, tok.eos_id)])


def load(name: str) -> Model:
    from workbench.model.gguf_io import read_gguf

    return read_gguf(MODELS / f"{name}.gguf")


def _stats(name: str) -> dict:
    path = SCRATCH / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def measure(name: str) -> dict:
    """Everything the card shows that comes from the shipped file."""
    m = load(name)
    ids = heldout_ids(m.tokenizer)
    t = time.time()
    res = {"n_params": m.config.n_params(), "heldout_tokens": len(ids), "ppl_f32": perplexity(m, ids),
           "sample_f32": greedy(m)}
    res["eval_seconds"] = round(time.time() - t, 1)
    if name in ("tinytales", "tinytales-ternary"):
        tq = ternarize_tq2(m)
        res["ppl_tq2_0"] = perplexity(tq, ids)
        res["sample_tq2_0"] = greedy(tq)
        am = ternarize_absmean(m)
        res["ppl_absmean"] = perplexity(am, ids)
        res["sample_absmean"] = greedy(am)
    return res


def cached_measure(name: str) -> dict:
    """measure(name), reused from SCRATCH while it is newer than the GGUF file it measured."""
    cached = SCRATCH / f"{name}-measure.json"
    if cached.is_file() and cached.stat().st_mtime > (MODELS / f"{name}.gguf").stat().st_mtime:
        return json.loads(cached.read_text())
    res = measure(name)
    atomic_write_text(cached, json.dumps(res, indent=1))
    return res


def _fmt(x: float) -> str:
    return f"{x:.3f}" if x < 1000 else f"{x:.4g}"


def emulated_rows(path: Path | None) -> list[str]:
    """The per-precision table from ``asicbench models eval --json`` output (the emulated chip's arithmetic)."""
    if path is None or not path.is_file():
        return [f"| {p} | pending: models eval | | |" for p in PRECISIONS]
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [f"| {r['precision']} | {_fmt(r['perplexity'])} | {_fmt(r['reference_perplexity'])} | "
            f"{100 * r['top1_agreement']:.1f} % |" for r in rows]


def card(name: str, res: dict, stats: dict, extra: dict | None = None, eval_json: Path | None = None) -> str:
    m = load(name)
    c = m.config
    size_mb = (MODELS / f"{name}.gguf").stat().st_size / 1e6
    ffn = (f"MoE FFN: {c.n_experts} experts of hidden {c.hidden_dim}, top-{c.n_experts_used} (Mixtral routing: "
           "softmax over the two selected router logits)" if c.is_moe else f"SwiGLU FFN hidden {c.hidden_dim}")
    lines = [
        f"# {name}",
        "",
        m.metadata.get("general.description") or DESCRIPTIONS.get(name, ""),
        "",
        "## Recipe",
        f"`python training/train.py --model {name}` (torch {stats.get('torch', '?')}, {stats.get('threads', 2)} threads, "
        f"seed 0; recipe hash `{stats.get('recipe_hash', '?')}`). Same recipe, same seed: re-running gives the same "
        "corpus and tokenizer; weights are expected to match only for the same torch build and thread count.",
        "",
        "## Corpus",
        f"{N_STORIES} stories from `training/corpus.py` (seed {CORPUS_SEED}): a story grammar with 28 names (she/he "
        "agreement), animal and child characters, 10 places, 18 objects with colours and sizes (a/an agreement), six "
        "plots (find and give, lost and found, rain and baking, sharing, a scary noise, helping an animal), dialogue and "
        "causal links (so, because, that). "
        f"{stats.get('corpus_tokens', '?')} tokens with a 512-piece BPE (`workbench.model.tokenizer.train_bpe`, seed 0, "
        "trained on the first 4000 stories); each story is `<s>` + text + `</s>`.",
        "",
        "## Architecture",
        f"LLaMA-style: dim {c.dim}, {c.n_layers} layers, {c.n_heads} heads (head_dim {c.head_dim}), {c.n_kv_heads} KV "
        f"heads (GQA), {ffn}, vocab {c.vocab_size}, seq_len {c.seq_len}, RMSNorm eps {c.norm_eps:g}, RoPE theta "
        f"{c.rope_theta:g} on adjacent pairs, tied embeddings, no biases. **{res['n_params']:,} parameters**; "
        f"GGUF {size_mb:.2f} MB (matrices F16, norms F32).",
        "",
        "## Training",
        f"{stats.get('steps', '?')} steps of batch 16 x 256 tokens ({stats.get('tokens_seen', 0):,} tokens), AdamW "
        f"(betas 0.9/0.95, wd 0.05), cosine LR with warmup; {stats.get('seconds', '?')} s on 2 CPU threads; "
        f"final training loss (EMA) {stats.get('final_loss_ema', '?')} nats/token.",
        "",
        "## Greedy sample (f32, workbench.model.reference.Reference, prompt \"Once upon a time\")",
        "",
        "> " + res["sample_f32"],
        "",
        "## Perplexity per precision",
        f"Held-out: `models/tinytales-heldout.txt` (stories from seed {HELDOUT_SEED}, none in the training corpus), "
        f"{res['heldout_tokens']} tokens as `<s>` + story + `</s>` per paragraph. The f32 reference "
        f"(`workbench.model.reference.log_likelihood`, windows of {c.seq_len}) gives perplexity "
        f"{_fmt(res['ppl_f32'])} on all of them. The stories come from a grammar, so most next tokens are "
        "determined by what came before: a perplexity near 1 says the model learned the grammar, not that it is a "
        "general language model.",
        "",
        "On the emulated chip (teaching-4x4; weights in each format, int8 activations and KV cache for the integer "
        "formats), teacher-forced over the first 4096 of those tokens in windows of the context length, next to the "
        "f32 reference on the same tokens and the share of positions where both pick the same top-1 token:",
        "",
        f"    asicbench models eval {name} --max-tokens 4096 --precision f32 --precision fp16 --precision bf16 "
        "--precision int8 --precision int4 --precision ternary --precision binary",
        "",
        "| precision | perplexity | f32 reference | top-1 agreement |",
        "| --- | --- | --- | --- |",
        *emulated_rows(eval_json),
    ]
    if extra:
        lines += ["", *extra]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--heldout", action="store_true")
    ap.add_argument("--card", default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    ap.add_argument("--eval-json", type=Path, default=None, help="`asicbench models eval --json` output for the card")
    a = ap.parse_args(argv)
    if a.heldout:
        print(f"wrote {HELDOUT} ({write_heldout()} bytes)")
    if a.card:
        res = cached_measure(a.card)
        extra = None
        if a.card == "tinytales-ternary":
            dense = cached_measure("tinytales")
            extra = ternary_section(res, dense, _stats("tinytales-ternary"))
        text = card(a.card, res, _stats(a.card), extra, a.eval_json)
        atomic_write_text(MODELS / f"{a.card}.md", text)
        if a.json:
            atomic_write_text(a.json, json.dumps(res, indent=1))
        print(text)
    return 0


def ternary_section(tern: dict, dense: dict, stats: dict) -> list[str]:
    latent = stats.get("ppl_latent_f32")
    return [
        "## The ternary pair: quantization-aware vs post-training ternary",
        "The shipped matrices of tinytales-ternary are its QAT forward weights: q * s with q in {-1, 0, 1} and "
        "s = f16(mean |w|) per 256-block of its latent f32 weights (BitNet b1.58 absmean, token_embd included). "
        "GGUF's TQ2_0 quantizer (gguf.quants / ggml: scale = max |w| per block) stores such values exactly; applied to "
        "ordinary weights it zeroes every weight below half the block maximum. Rows below: f32 reference on held-out.",
        "",
        "| model | weights | perplexity |",
        "| --- | --- | --- |",
        f"| tinytales | f32 (as shipped, f16-stored) | {_fmt(dense['ppl_f32'])} |",
        f"| tinytales | post-training absmean ternary per 256-block | {_fmt(dense['ppl_absmean'])} |",
        f"| tinytales | post-training TQ2_0 (convert_precision 'ternary') | {_fmt(dense['ppl_tq2_0'])} |",
        f"| tinytales-ternary | latent f32 masters (not shipped) | {_fmt(latent) if latent else 'n/a'} |",
        f"| tinytales-ternary | as shipped (ternary values, f32 compute) | {_fmt(tern['ppl_f32'])} |",
        f"| tinytales-ternary | TQ2_0 (convert_precision 'ternary') | {_fmt(tern['ppl_tq2_0'])} |",
        "",
        "Greedy from \"Once upon a time\", tinytales post-training absmean ternary:",
        "",
        "> " + dense["sample_absmean"],
        "",
        "tinytales post-training TQ2_0:",
        "",
        "> " + dense["sample_tq2_0"],
        "",
        "tinytales-ternary through TQ2_0:",
        "",
        "> " + tern["sample_tq2_0"],
    ]


if __name__ == "__main__":
    sys.exit(main())
