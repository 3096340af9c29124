"""Hugging Face LLaMA/Mixtral checkpoints (config.json + *.safetensors) to and from :class:`Model`.

HF names map to the GGUF names of tensor.py; q_proj/k_proj rows are permuted from HF's
rotate-half order to GGUF's adjacent-pair order exactly as llama.cpp's converter does
(``reshape(n_head, 2, head_dim // 2, dim).swapaxes(1, 2)``, k with n_kv_heads), and back on write.
Safetensors is parsed here (8-byte header length, JSON header, raw data) so that BF16 loads
as bf16 bits without a float round trip and every offset is checked against the file size.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..atomic import atomic_open, atomic_write_text
from ..errors import ModelError
from .config import ModelConfig
from .gguf_io import check_model
from .quant import dequantize
from .tensor import Model, QTensor

_DTYPES = {"F32": ("<f4", "f32"), "F16": ("<f2", "f16"), "BF16": ("<u2", "bf16")}
_LAYER = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "block_sparse_moe.gate": "ffn_gate_inp",
}
_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
_EXPERT = {"w1": "ffn_gate_exps", "w2": "ffn_down_exps", "w3": "ffn_up_exps"}
_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")
_EXPERT_RE = re.compile(r"block_sparse_moe\.experts\.(\d+)\.(w[123])")


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half row order -> GGUF adjacent-pair order (llama.cpp's ``permute``)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_rows`."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_safetensors(path: Path) -> dict[str, QTensor]:
    """Tensors of one .safetensors file as float QTensors (F32, F16, BF16 only)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read ({exc.strerror})", source=path) from None
    if len(raw) < 8:
        raise ModelError(f"truncated: expected an 8-byte header length, file has {len(raw)} bytes", source=path)
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise ModelError(f"header of {n} bytes runs past the end of the file ({len(raw)} bytes)", source=path)
    try:
        header = json.loads(raw[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"header is not valid JSON ({exc})", source=path) from None
    if not isinstance(header, dict):
        raise ModelError("header is not a JSON object", source=path)
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"expected dtype, shape and data_offsets, found {info!r}"[:200], source=path, key=name) from None
        if not all(type(v) is int for v in (*shape, start, end)):  # JSON floats, bools, Infinity are not sizes
            raise ModelError(f"expected integer shape and data_offsets, found {shape}, {[start, end]}"[:200],
                             source=path, key=name)
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise ModelError(f"expected dtype F32, F16 or BF16, found {dtype}", source=path, key=name)
        np_dtype, fmt = _DTYPES[dtype]
        count = int(np.prod(shape, dtype=object)) if shape else 1
        if any(d < 0 for d in shape) or not 0 <= start <= end <= len(data) or end - start != count * np.dtype(np_dtype).itemsize:
            raise ModelError(f"data_offsets {start}..{end} do not hold shape {shape} of {dtype} within "
                             f"{len(data)} data bytes", source=path, key=name)
        arr = np.frombuffer(data, dtype=np_dtype, count=count, offset=start).reshape(shape)
        arr = arr.astype({"f32": np.float32, "f16": np.float16, "bf16": np.uint16}[fmt])
        finite = (arr & 0x7F80) != 0x7F80 if fmt == "bf16" else np.isfinite(arr)
        if not finite.all():
            raise ModelError("holds NaN or infinite values", source=path, key=name)
        out[name] = QTensor(fmt, shape, arr)
    return out


def _config(cfg_path: Path) -> ModelConfig:
    try:
        c = json.loads(cfg_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read ({exc.strerror})", source=cfg_path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"not valid JSON ({exc})", source=cfg_path) from None
    if not isinstance(c, dict):
        raise ModelError("expected a JSON object", source=cfg_path)

    def need(key, default=None, kind=int):
        v = c.get(key, default)
        if v is None:
            raise ModelError(f"missing required key (expected {kind.__name__})", source=cfg_path, key=key)
        if isinstance(v, bool) and kind is not bool or not isinstance(v, (int, float) if kind is float else kind):
            raise ModelError(f"expected {kind.__name__}, found {v!r}", source=cfg_path, key=key)
        if kind is int and not 0 <= v < 2**40 or kind is float and not (np.isfinite(v) and v > 0):
            raise ModelError(f"out of range: {v!r}", source=cfg_path, key=key)
        return v

    dim, n_heads = need("hidden_size"), need("num_attention_heads")
    if dim < 1 or n_heads < 1:
        raise ModelError(f"expected hidden_size and num_attention_heads >= 1, found {dim}, {n_heads}", source=cfg_path)
    name = c.get("_name_or_path") or cfg_path.parent.name
    return ModelConfig(
        name=str(name).rstrip("/").split("/")[-1] or cfg_path.parent.name,
        dim=dim, hidden_dim=need("intermediate_size"), n_layers=need("num_hidden_layers"),
        n_heads=n_heads, n_kv_heads=need("num_key_value_heads", n_heads), vocab_size=need("vocab_size"),
        seq_len=need("max_position_embeddings"), head_dim=need("head_dim", None) if c.get("head_dim") else 0,
        norm_eps=float(need("rms_norm_eps", 1e-5, float)), rope_theta=float(need("rope_theta", 10000.0, float)),
        tied_embeddings=bool(need("tie_word_embeddings", False, bool)),
        n_experts=need("num_local_experts", 0), n_experts_used=need("num_experts_per_tok", 0) if c.get("num_local_experts") else 0,
    )


def read_hf(path: str | Path) -> Model:
    """A folder with config.json and *.safetensors, or one .safetensors with config.json beside it."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    files = sorted(folder.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise ModelError("no *.safetensors files in the folder", source=path)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ModelError("expected config.json beside the weights", source=cfg_path)
    cfg = _config(cfg_path)
    if cfg.n_heads % max(cfg.n_kv_heads, 1) or cfg.n_kv_heads < 1 or cfg.head_dim % 2:
        raise ModelError(f"expected kv heads dividing {cfg.n_heads} and an even head_dim, found "
                         f"{cfg.n_kv_heads}, {cfg.head_dim}", source=cfg_path)
    tensors: dict[str, QTensor] = {}
    experts: dict[tuple[int, str], dict[int, QTensor]] = {}
    for f in files:
        for hf_name, qt in read_safetensors(f).items():
            name = _gguf_name(hf_name, f, experts, qt)
            if name is None:
                continue
            if name in tensors:
                raise ModelError("tensor appears twice", source=f, key=hf_name)
            if name.endswith(("attn_q.weight", "attn_k.weight")) and len(qt.shape) == 2:
                heads = cfg.n_heads if name.endswith("attn_q.weight") else cfg.n_kv_heads
                if qt.shape[0] % (2 * heads):
                    raise ModelError(f"expected rows divisible by {2 * heads}, found {qt.shape}", source=f, key=hf_name)
                qt = QTensor(qt.fmt, qt.shape, permute_rows(qt.data, heads))
            tensors[name] = qt
    for (layer, kind), by_expert in experts.items():
        if sorted(by_expert) != list(range(cfg.n_experts)):
            raise ModelError(f"expected experts 0..{cfg.n_experts - 1}, found {sorted(by_expert)}",
                             source=folder, key=f"model.layers.{layer}.block_sparse_moe.experts.*.{kind}")
        parts = [by_expert[e] for e in range(cfg.n_experts)]
        if len({(p.fmt, p.shape) for p in parts}) != 1:
            raise ModelError("experts differ in dtype or shape", source=folder, key=f"model.layers.{layer}.{kind}")
        stacked = np.stack([p.data for p in parts])
        tensors[f"blk.{layer}.{_EXPERT[kind]}.weight"] = QTensor(parts[0].fmt, tuple(stacked.shape), stacked)
    tied = "output.weight" not in tensors  # as in GGUF: the file, not the flag, decides
    if tied != cfg.tied_embeddings:
        cfg = ModelConfig(**{**cfg.__dict__, "tied_embeddings": tied})
    check_model(cfg, tensors, folder)
    return Model(config=cfg, tensors=tensors, source=path)


def _gguf_name(hf_name: str, f: Path, experts, qt: QTensor) -> str | None:
    if hf_name in _GLOBAL:
        return _GLOBAL[hf_name]
    if _IGNORED.fullmatch(hf_name):
        return None
    m = _LAYER_RE.fullmatch(hf_name)
    if m:
        layer, rest = int(m.group(1)), m.group(2)
        if rest in _LAYER:
            return f"blk.{layer}.{_LAYER[rest]}.weight"
        e = _EXPERT_RE.fullmatch(rest)
        if e:
            experts.setdefault((layer, e.group(2)), {})[int(e.group(1))] = qt
            return None
    raise ModelError("not a LLaMA/Mixtral tensor name this loader maps", source=f, key=hf_name)


def write_hf(dirpath: str | Path, model: Model) -> None:
    """Write config.json + model.safetensors (block formats dequantized to F32; float formats kept)."""
    folder = Path(dirpath)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    hf: dict[str, tuple[str, np.ndarray]] = {}
    inverse_global = {v: k for k, v in _GLOBAL.items()}
    inverse_layer = {v: k for k, v in _LAYER.items()}
    inverse_expert = {v: k for k, v in _EXPERT.items()}
    for name, qt in model.tensors.items():
        if qt.fmt in ("f32", "f16", "bf16"):
            dtype = {"f32": "F32", "f16": "F16", "bf16": "BF16"}[qt.fmt]
            arr = np.asarray(qt.data)
        else:
            dtype, arr = "F32", dequantize(qt)
        if name in inverse_global:
            hf[inverse_global[name]] = (dtype, arr)
            continue
        m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
        if not m:
            raise ModelError("no Hugging Face name for this tensor", key=name)
        layer, kind = m.group(1), m.group(2)
        if kind in inverse_expert:
            for e in range(arr.shape[0]):
                hf[f"model.layers.{layer}.block_sparse_moe.experts.{e}.{inverse_expert[kind]}.weight"] = (dtype, arr[e])
            continue
        if kind == "attn_q":
            arr = unpermute_rows(arr, cfg.n_heads)
        elif kind == "attn_k":
            arr = unpermute_rows(arr, cfg.n_kv_heads)
        hf[f"model.layers.{layer}.{inverse_layer[kind]}.weight"] = (dtype, arr)
    header, offset = {}, 0
    for key, (dtype, arr) in hf.items():
        header[key] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with atomic_open(folder / "model.safetensors", "wb") as fh:
        fh.write(len(head).to_bytes(8, "little"))
        fh.write(head)
        for dtype, arr in hf.values():
            fh.write(np.ascontiguousarray(arr, dtype=_DTYPES[dtype][0]).tobytes())
    config = {
        "architectures": ["MixtralForCausalLM" if cfg.is_moe else "LlamaForCausalLM"],
        "model_type": "mixtral" if cfg.is_moe else "llama", "_name_or_path": cfg.name,
        "hidden_size": cfg.dim, "intermediate_size": cfg.hidden_dim, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size, "max_position_embeddings": cfg.seq_len, "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta, "tie_word_embeddings": cfg.tied_embeddings, "hidden_act": "silu",
    }
    if cfg.is_moe:
        config.update(num_local_experts=cfg.n_experts, num_experts_per_tok=cfg.n_experts_used)
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2) + "\n")
