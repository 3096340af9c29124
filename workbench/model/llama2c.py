"""Read and write llama2.c float32 checkpoints (the ``run.c`` legacy layout) as f32 Models.

Layout, little-endian: a header of 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
vocab_size, seq_len; a negative vocab_size means the classifier is untied and ``wcls`` is
stored last), then float32 arrays in this order (L = n_layers, hd = dim // n_heads):

    token_embedding (vocab, dim)   rms_att (L, dim)        wq (L, dim, dim)
    wk (L, kv_dim, dim)            wv (L, kv_dim, dim)     wo (L, dim, dim)
    rms_ffn (L, dim)               w1 (L, hidden, dim)     w2 (L, dim, hidden)
    w3 (L, hidden, dim)            rms_final (dim,)
    freq_cis_real, freq_cis_imag (seq_len * hd / 2 each; skipped on read)   [wcls (vocab, dim)]

Matrices are (out, in) and llama2.c's RoPE rotates adjacent pairs, so every array maps onto
its GGUF name unchanged (see workbench/model/tensor.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_open
from ..errors import ModelError
from .config import ModelConfig
from .tensor import Model, QTensor

HEADER_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
HEADER_BYTES = 4 * len(HEADER_FIELDS)

# Bounds far beyond any llama2.c checkpoint; a header outside them is garbage, not a model.
_LIMITS = {
    "dim": 1 << 16,
    "hidden_dim": 1 << 18,
    "n_layers": 1 << 10,
    "n_heads": 1 << 10,
    "n_kv_heads": 1 << 10,
    "vocab_size": 1 << 20,
    "seq_len": 1 << 20,
}


def _layout(h: dict[str, int]) -> list[tuple[str, tuple[int, ...]]]:
    """(llama2.c name, shape) of every float32 array after the header, in file order."""
    d, hid, L, v = h["dim"], h["hidden_dim"], h["n_layers"], h["vocab_size"]
    hd = d // h["n_heads"]
    kv = h["n_kv_heads"] * hd
    freq = h["seq_len"] * hd // 2
    arrays = [
        ("token_embedding", (v, d)),
        ("rms_att", (L, d)),
        ("wq", (L, d, d)),
        ("wk", (L, kv, d)),
        ("wv", (L, kv, d)),
        ("wo", (L, d, d)),
        ("rms_ffn", (L, d)),
        ("w1", (L, hid, d)),
        ("w2", (L, d, hid)),
        ("w3", (L, hid, d)),
        ("rms_final", (d,)),
        ("freq_cis_real", (freq,)),
        ("freq_cis_imag", (freq,)),
    ]
    if not h["tied"]:
        arrays.append(("wcls", (v, d)))
    return arrays


# llama2.c per-layer array -> GGUF name template.
_LAYER_NAMES = {
    "rms_att": "blk.{i}.attn_norm.weight",
    "wq": "blk.{i}.attn_q.weight",
    "wk": "blk.{i}.attn_k.weight",
    "wv": "blk.{i}.attn_v.weight",
    "wo": "blk.{i}.attn_output.weight",
    "rms_ffn": "blk.{i}.ffn_norm.weight",
    "w1": "blk.{i}.ffn_gate.weight",
    "w2": "blk.{i}.ffn_down.weight",
    "w3": "blk.{i}.ffn_up.weight",
}
_GLOBAL_NAMES = {
    "token_embedding": "token_embd.weight",
    "rms_final": "output_norm.weight",
    "wcls": "output.weight",
}


def _n_floats(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _read_header(path: Path, file_bytes: int) -> dict[str, int]:
    if file_bytes < HEADER_BYTES:
        raise ModelError(
            f"file is {file_bytes} bytes, expected at least the {HEADER_BYTES}-byte llama2.c header", source=path
        )
    raw = np.fromfile(path, dtype="<i4", count=len(HEADER_FIELDS))
    h = {name: int(v) for name, v in zip(HEADER_FIELDS, raw)}
    h["tied"] = h["vocab_size"] > 0
    h["vocab_size"] = abs(h["vocab_size"])
    for name in HEADER_FIELDS:
        value, limit = h[name], _LIMITS[name]
        if not 0 < value <= limit:
            raise ModelError(f"expected 1..{limit}, found {value} (not a llama2.c checkpoint?)", source=path, key=name)
    if h["dim"] % h["n_heads"]:
        raise ModelError(f"expected a multiple of n_heads={h['n_heads']}, found {h['dim']}", source=path, key="dim")
    if (h["dim"] // h["n_heads"]) % 2:
        raise ModelError(
            f"expected an even head size (dim / n_heads) for RoPE pairs, found {h['dim'] // h['n_heads']}",
            source=path,
            key="dim",
        )
    if h["n_kv_heads"] > h["n_heads"] or h["n_heads"] % h["n_kv_heads"]:
        raise ModelError(
            f"expected a divisor of n_heads={h['n_heads']}, found {h['n_kv_heads']}", source=path, key="n_kv_heads"
        )
    return h


def read_llama2c(path: str | Path, tokenizer_path: str | Path | None = None) -> Model:
    """Load a llama2.c float32 checkpoint as a Model of f32 QTensors under GGUF names.

    Raises ModelError (one line) for a bad header, a file whose size is not exactly what the
    header implies, or a NaN/inf weight. Nothing is allocated before the size is checked.
    """
    path = Path(path)
    try:
        file_bytes = path.stat().st_size
    except OSError as exc:
        raise ModelError(f"cannot read ({exc.strerror})", source=path) from None
    if not path.is_file():
        raise ModelError("expected a llama2.c checkpoint file, found a directory", source=path)
    h = _read_header(path, file_bytes)
    layout = _layout(h)
    n_floats = sum(_n_floats(shape) for _, shape in layout)
    expected_bytes = HEADER_BYTES + 4 * n_floats
    if file_bytes != expected_bytes:
        what = "truncated" if file_bytes < expected_bytes else "trailing bytes"
        raise ModelError(
            f"{what}: header implies {expected_bytes} bytes "
            f"({'tied' if h['tied'] else 'untied'} classifier), found {file_bytes}",
            source=path,
        )

    flat = np.fromfile(path, dtype="<f4", count=n_floats, offset=HEADER_BYTES).astype(np.float32, copy=False)
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for name, shape in layout:
        n = _n_floats(shape)
        arrays[name] = flat[offset : offset + n].reshape(shape)
        offset += n

    tensors: dict[str, QTensor] = {}
    for name, arr in arrays.items():
        if name in _GLOBAL_NAMES:
            tensors[_GLOBAL_NAMES[name]] = QTensor("f32", arr.shape, arr)
        elif name in _LAYER_NAMES:
            for i in range(h["n_layers"]):
                tensors[_LAYER_NAMES[name].format(i=i)] = QTensor("f32", arr[i].shape, arr[i])
    for gguf_name, t in tensors.items():
        if not np.isfinite(t.data).all():
            bad = int(np.flatnonzero(~np.isfinite(t.data.ravel()))[0])
            raise ModelError(
                f"expected finite float32 weights, found {t.data.ravel()[bad]} at flat index {bad}",
                source=path,
                key=gguf_name,
            )

    config = ModelConfig(
        name=path.stem,
        dim=h["dim"],
        hidden_dim=h["hidden_dim"],
        n_layers=h["n_layers"],
        n_heads=h["n_heads"],
        n_kv_heads=h["n_kv_heads"],
        vocab_size=h["vocab_size"],
        seq_len=h["seq_len"],
        tied_embeddings=h["tied"],
    )
    tokenizer = None
    if tokenizer_path is not None:
        from .tokenizer import Tokenizer

        tokenizer = Tokenizer.from_llama2c(tokenizer_path, h["vocab_size"])
    metadata = {"format": "llama2c", "header": {k: h[k] for k in HEADER_FIELDS}}
    return Model(config=config, tensors=tensors, tokenizer=tokenizer, source=path, metadata=metadata)


def _freq_cis(config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of pos * freq, (seq_len, head_dim/2) float32, as llama2.c's export writes them."""
    hd = config.head_dim
    freqs = np.float32(1.0) / np.power(
        np.float32(config.rope_theta), np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)
    )
    angles = np.outer(np.arange(config.seq_len, dtype=np.float32), freqs).astype(np.float32)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def write_llama2c(path: str | Path, model: Model) -> None:
    """Write an f32, dense, llama2.c-shaped Model as a llama2.c checkpoint (atomically)."""
    cfg = model.config
    path = Path(path)
    if cfg.is_moe:
        raise ModelError("expected a dense FFN (llama2.c has no MoE), found n_experts > 0", source=path)
    if cfg.head_dim * cfg.n_heads != cfg.dim:
        raise ModelError(
            f"expected head_dim * n_heads == dim, found {cfg.head_dim} * {cfg.n_heads} != {cfg.dim}",
            source=path,
            key="head_dim",
        )
    h = {name: getattr(cfg, name) for name in HEADER_FIELDS}
    h["tied"] = cfg.tied_embeddings
    header = np.array([h[name] for name in HEADER_FIELDS], dtype="<i4")
    if not cfg.tied_embeddings:
        header[HEADER_FIELDS.index("vocab_size")] *= -1
    cos, sin = _freq_cis(cfg)

    def tensor(name: str) -> np.ndarray:
        t = model.tensors.get(name)
        if t is None:
            raise ModelError("tensor missing", source=path, key=name)
        if t.fmt != "f32":
            raise ModelError(f"expected an f32 tensor, found {t.fmt}", source=path, key=name)
        return np.asarray(t.data, dtype="<f4")

    with atomic_open(path, "wb") as fh:
        fh.write(header.tobytes())
        for name, shape in _layout(h):
            if name == "freq_cis_real":
                arr = cos.ravel()
            elif name == "freq_cis_imag":
                arr = sin.ravel()
            elif name in _GLOBAL_NAMES:
                arr = tensor(_GLOBAL_NAMES[name])
            else:
                arr = np.stack([tensor(_LAYER_NAMES[name].format(i=i)) for i in range(cfg.n_layers)])
            if arr.shape != shape:
                raise ModelError(f"expected shape {shape}, found {arr.shape}", source=path, key=name)
            fh.write(np.ascontiguousarray(arr, dtype="<f4").tobytes())
