"""Read and write LLaMA-family GGUF files (llama.cpp's format) as :class:`Model` objects.

Reading uses our own bounds-checked parser rather than gguf.GGUFReader: every count and
size in the header is checked against the file's length before anything is read or
allocated (GGUFReader loops over an array count taken on trust and hangs on a hostile one).
Writing uses gguf.GGUFWriter through :func:`workbench.atomic.atomic_open`.

Conventions beyond GGUF's:
- B1_0 (binary, no GGUF type) is stored as raw bytes of GGUF type I8 with numpy shape
  (*shape[:-1], bytes_per_row), plus ``asicbench.format.<tensor> = "b1_0"`` and the logical
  numpy shape in ``asicbench.shape.<tensor>`` (array of uint64); the reader restores it.
- A block-format tensor whose rows are not a multiple of the block size (stories260K's
  hidden 172) cannot be held in that GGUF type. ``write_gguf`` stores that one tensor as
  its dequantized values, F16 when they are exact in f16, else F32 (no loss either way),
  records nothing special, and returns one note per such tensor.
GGUF lists dims fastest-first (ne0 = cols); QTensor shapes are numpy order (rows, cols).
"""

from __future__ import annotations

import mmap
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_open
from ..errors import ModelError
from .config import ModelConfig
from .quant import GGML_TYPE, block_bytes, block_size, dequantize, storage_bytes
from .tensor import Model, QTensor

GGUF_MAGIC = b"GGUF"
_MAX_DIMS = 4
_SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
            10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9
_FMT_OF_TYPE = {int(t): fmt for fmt, t in GGML_TYPE.items()}
_I8 = 24
_SCALE_OFFSET = {"q8_0": 0, "q4_0": 0, "tq2_0": 64, "tq1_0": 52, "b1_0": 0}  # f16 d in each block


class _Cursor:
    """Bounds-checked little-endian reads from a byte buffer; errors name the file."""

    def __init__(self, buf, path: Path):
        self.buf, self.path, self.pos, self.size = buf, path, 0, len(buf)

    def fail(self, message: str, key: str | None = None) -> ModelError:
        return ModelError(message, source=self.path, key=key)

    def take(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"truncated: {what} needs {n} bytes at offset {self.pos}, file has {self.size}")
        start = self.pos
        self.pos += n
        return start

    def scalar(self, dtype: str, what: str):
        itemsize = np.dtype(dtype).itemsize
        start = self.take(itemsize, what)
        v = np.frombuffer(self.buf, dtype=dtype, count=1, offset=start)[0]
        # an f32 reads back as the shortest decimal that round-trips (1e-05, not 9.99999974e-06)
        return float(str(v)) if dtype == "<f4" else v.item()

    def string(self, what: str) -> str:
        n = self.scalar("<u8", what)
        start = self.take(n, what)
        try:
            return bytes(self.buf[start:start + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def value(self, vtype: int, key: str, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            v = self.scalar(_SCALARS[vtype], key)
            return bool(v) if vtype == 7 else v
        if vtype == _STRING:
            return self.string(key)
        if vtype == _ARRAY and depth == 0:
            itype = self.scalar("<u4", key)
            count = self.scalar("<u8", key)
            if itype in _SCALARS:
                itemsize = np.dtype(_SCALARS[itype]).itemsize
                if count > (self.size - self.pos) // itemsize:
                    raise self.fail(f"array of {count} items runs past the end of the file", key)
                start = self.take(count * itemsize, key)
                arr = np.frombuffer(self.buf, dtype=_SCALARS[itype], count=count, offset=start).copy()
                return arr.astype(bool) if itype == 7 else arr
            if itype == _STRING:
                if count > (self.size - self.pos) // 8:
                    raise self.fail(f"array of {count} strings runs past the end of the file", key)
                return [self.string(key) for _ in range(count)]
            raise self.fail(f"unsupported array item type {itype}", key)
        raise self.fail(f"unknown value type {vtype}", key)


def _parse(buf, path: Path) -> tuple[dict[str, Any], list[tuple[str, tuple[int, ...], int, int]], int]:
    """Header -> (metadata, [(name, numpy shape, ggml type, absolute offset)], data start)."""
    cur = _Cursor(buf, path)
    if cur.size < 24 or bytes(buf[:4]) != GGUF_MAGIC:
        found = bytes(buf[:4]) if cur.size >= 4 else f"{cur.size}-byte file"
        raise cur.fail(f"not a GGUF file: expected magic b'GGUF', found {found!r}")
    cur.pos = 4
    version = cur.scalar("<u4", "version")
    if version not in (2, 3):
        raise cur.fail(f"expected GGUF version 2 or 3 (little-endian), found {version}", "version")
    n_tensors = cur.scalar("<u8", "tensor_count")
    n_kv = cur.scalar("<u8", "kv_count")
    if n_kv > (cur.size - cur.pos) // 13:  # a key/value takes at least 13 bytes
        raise cur.fail(f"{n_kv} key/value pairs cannot fit in the file", "kv_count")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string("metadata key")
        vtype = cur.scalar("<u4", key)
        if key in meta:
            raise cur.fail("duplicate metadata key", key)
        meta[key] = cur.value(vtype, key)
    if n_tensors > (cur.size - cur.pos) // 32:  # a tensor info takes at least 32 bytes
        raise cur.fail(f"{n_tensors} tensors cannot fit in the file", "tensor_count")
    infos = []
    for _ in range(n_tensors):
        name = cur.string("tensor name")
        n_dims = cur.scalar("<u4", name)
        if not 1 <= n_dims <= _MAX_DIMS:
            raise cur.fail(f"expected 1..{_MAX_DIMS} dims, found {n_dims}", name)
        ne = [cur.scalar("<u8", name) for _ in range(n_dims)]
        ggml_type = cur.scalar("<u4", name)
        offset = cur.scalar("<u8", name)
        if any(n < 1 for n in ne):
            raise cur.fail(f"expected dims >= 1, found {ne}", name)
        infos.append((name, tuple(reversed(ne)), ggml_type, offset))
    alignment = meta.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
        raise cur.fail(f"expected a power of two, found {alignment!r}", "general.alignment")
    data_start = -(-cur.pos // alignment) * alignment
    located, seen = [], set()
    for name, shape, ggml_type, offset in infos:
        if name in seen:
            raise cur.fail("duplicate tensor", name)
        seen.add(name)
        if offset % alignment:
            raise cur.fail(f"offset {offset} is not a multiple of the alignment {alignment}", name)
        located.append((name, shape, ggml_type, data_start + offset))
    return meta, located, data_start


def _tensor(meta, path: Path, name: str, shape: tuple[int, ...], ggml_type: int, start: int, buf) -> QTensor:
    fail = lambda msg: ModelError(msg, source=path, key=name)  # noqa: E731
    fmt = _FMT_OF_TYPE.get(ggml_type)
    raw_shape = shape
    if meta.get(f"asicbench.format.{name}") == "b1_0" and ggml_type == _I8:
        fmt = "b1_0"
        logical = meta.get(f"asicbench.shape.{name}")
        if not isinstance(logical, np.ndarray) or logical.ndim != 1 or not 1 <= logical.size <= _MAX_DIMS:
            raise fail(f"expected asicbench.shape.{name} as an array of dims, found {logical!r}")
        shape = tuple(int(n) for n in logical)
        if any(n < 1 for n in shape) or shape[:-1] != raw_shape[:-1]:
            raise fail(f"logical shape {shape} does not match stored shape {raw_shape}")
    if fmt is None:
        raise fail(f"unsupported GGUF tensor type {ggml_type}; expected F32, F16, BF16, Q8_0, Q4_0, TQ1_0, TQ2_0 or b1_0")
    if fmt != "b1_0" and fmt in _SCALE_OFFSET and shape[-1] % block_size(fmt):
        raise fail(f"row of {shape[-1]} values is not a multiple of {fmt}'s block of {block_size(fmt)}")
    nbytes = storage_bytes(fmt, shape)
    if fmt == "b1_0" and nbytes != int(np.prod(raw_shape, dtype=object)):
        raise fail(f"b1_0 shape {shape} needs {nbytes} bytes, stored tensor has {raw_shape}")
    if start + nbytes > len(buf):
        raise fail(f"data ({nbytes} bytes at offset {start}) runs past the end of the file ({len(buf)} bytes)")
    if fmt in ("f32", "f16"):
        dtype = "<f4" if fmt == "f32" else "<f2"
        data = np.frombuffer(buf, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=start)
        data = data.reshape(shape).astype(np.float32 if fmt == "f32" else np.float16)
        finite = np.isfinite(data)
    elif fmt == "bf16":
        data = np.frombuffer(buf, dtype="<u2", count=nbytes // 2, offset=start).reshape(shape).astype(np.uint16)
        finite = (data & 0x7F80) != 0x7F80
    else:
        data = np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=start).copy()
        blocks = data.reshape(-1, block_bytes(fmt))
        o = _SCALE_OFFSET[fmt]
        finite = np.isfinite(blocks[:, o:o + 2].copy().view("<f2"))
        data = data.reshape(*shape[:-1], -1)
    if not finite.all():
        raise fail("holds NaN or infinite values")
    return QTensor(fmt, shape, data)


def _int(meta, path, key, default=None) -> int:
    v = meta.get(key, default)
    if v is None:
        raise ModelError("missing required key (expected an integer)", source=path, key=key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**40:
        raise ModelError(f"expected a non-negative integer, found {v!r}", source=path, key=key)
    return v


def _float(meta, path, key, default: float) -> float:
    v = meta.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
        raise ModelError(f"expected a positive number, found {v!r}", source=path, key=key)
    return float(v)


def _config(meta, path: Path, shapes: dict[str, tuple[int, ...]]) -> ModelConfig:
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ModelError(f"expected architecture 'llama', found {arch!r}", source=path, key="general.architecture")
    p = "llama."
    n_heads = _int(meta, path, p + "attention.head_count")
    dim = _int(meta, path, p + "embedding_length")
    if n_heads < 1 or dim < 1:
        raise ModelError(f"expected dim and head_count >= 1, found {dim}, {n_heads}", source=path)
    n_kv = _int(meta, path, p + "attention.head_count_kv", n_heads)
    if n_kv < 1 or n_heads % n_kv:
        raise ModelError(f"expected a divisor of head_count {n_heads}, found {n_kv}", source=path,
                         key=p + "attention.head_count_kv")
    emb = shapes.get("token_embd.weight")
    vocab = _int(meta, path, p + "vocab_size", emb[0] if emb is not None else None)
    name = meta.get("general.name")
    return ModelConfig(
        name=name if isinstance(name, str) and name else path.stem,
        dim=dim,
        hidden_dim=_int(meta, path, p + "feed_forward_length"),
        n_layers=_int(meta, path, p + "block_count"),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        vocab_size=vocab,
        seq_len=_int(meta, path, p + "context_length"),
        head_dim=_int(meta, path, p + "attention.key_length", dim // n_heads),
        norm_eps=_float(meta, path, p + "attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta=_float(meta, path, p + "rope.freq_base", 10000.0),
        tied_embeddings="output.weight" not in shapes,
        n_experts=_int(meta, path, p + "expert_count", 0),
        n_experts_used=_int(meta, path, p + "expert_used_count", 0),
    )


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor the contract in tensor.py requires for ``cfg``, with its numpy shape."""
    d, h, v, E = cfg.dim, cfg.hidden_dim, cfg.vocab_size, cfg.n_experts
    out = {"token_embd.weight": (v, d), "output_norm.weight": (d,)}
    if not cfg.tied_embeddings:
        out["output.weight"] = (v, d)
    for i in range(cfg.n_layers):
        b = f"blk.{i}."
        out.update({b + "attn_norm.weight": (d,), b + "attn_q.weight": (cfg.q_dim, d),
                    b + "attn_k.weight": (cfg.kv_dim, d), b + "attn_v.weight": (cfg.kv_dim, d),
                    b + "attn_output.weight": (d, cfg.q_dim), b + "ffn_norm.weight": (d,)})
        if E:
            out.update({b + "ffn_gate_inp.weight": (E, d), b + "ffn_gate_exps.weight": (E, h, d),
                        b + "ffn_up_exps.weight": (E, h, d), b + "ffn_down_exps.weight": (E, d, h)})
        else:
            out.update({b + "ffn_gate.weight": (h, d), b + "ffn_up.weight": (h, d), b + "ffn_down.weight": (d, h)})
    return out


def check_model(cfg: ModelConfig, tensors: dict[str, QTensor], source: Path | str) -> None:
    """ModelError unless every required tensor is present with the shape ``cfg`` implies."""
    if cfg.n_layers > len(tensors):
        raise ModelError(f"{cfg.n_layers} layers cannot be held by {len(tensors)} tensors", source=source)
    if cfg.n_experts and not 1 <= cfg.n_experts_used <= cfg.n_experts:
        raise ModelError(f"expected 1..{cfg.n_experts} experts used, found {cfg.n_experts_used}", source=source)
    for name, shape in expected_shapes(cfg).items():
        t = tensors.get(name)
        if t is None:
            raise ModelError(f"missing tensor (expected shape {shape})", source=source, key=name)
        if tuple(t.shape) != shape:
            raise ModelError(f"expected shape {shape}, found {tuple(t.shape)}", source=source, key=name)


def _tokenizer(meta, path: Path):
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is None:
        return None
    try:
        from .tokenizer import Tokenizer
    except ImportError:  # tokenizer.py not available: the model runs on token ids
        return None
    n = len(tokens)
    scores = meta.get("tokenizer.ggml.scores", np.zeros(n, np.float32))
    types = meta.get("tokenizer.ggml.token_type", np.ones(n, np.int32))
    if not isinstance(tokens, list) or len(scores) != n or len(types) != n:
        raise ModelError(f"expected {n} scores and token types, found {len(scores)} and {len(types)}",
                         source=path, key="tokenizer.ggml.scores")
    bos = _int(meta, path, "tokenizer.ggml.bos_token_id", 1)
    eos = _int(meta, path, "tokenizer.ggml.eos_token_id", 2)
    unk = _int(meta, path, "tokenizer.ggml.unknown_token_id", 0)
    for key, tid in (("bos_token_id", bos), ("eos_token_id", eos), ("unknown_token_id", unk)):
        if tid >= n:
            raise ModelError(f"expected a token id below {n}, found {tid}", source=path, key=f"tokenizer.ggml.{key}")
    try:
        return Tokenizer.from_gguf_fields(tokens, np.asarray(scores, np.float32), np.asarray(types, np.int32),
                                          bos, eos, unk)
    except ModelError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ModelError(f"tokenizer fields are inconsistent ({exc})", source=path, key="tokenizer.ggml") from None


@contextmanager
def _mapped(path: Path):
    """The file's bytes, memory-mapped read-only (b"" for an empty file)."""
    try:
        with open(path, "rb") as fh:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if os.path.getsize(path) else b""
    except OSError as exc:
        raise ModelError(f"cannot read ({exc.strerror})", source=path) from None
    try:
        yield buf
    finally:
        if isinstance(buf, mmap.mmap):
            try:
                buf.close()
            except BufferError:  # a view is still alive; the mapping closes when it is collected
                pass


def read_gguf(path: str | Path) -> Model:
    """Load a LLaMA-architecture GGUF file; any defect raises one-line ModelError."""
    path = Path(path)
    with _mapped(path) as buf:
        meta, infos, _ = _parse(buf, path)
        tensors = {name: _tensor(meta, path, name, shape, t, start, buf) for name, shape, t, start in infos}
    cfg = _config(meta, path, {name: t.shape for name, t in tensors.items()})
    check_model(cfg, tensors, path)
    tokenizer = _tokenizer(meta, path)
    scalars = {k: v for k, v in meta.items()
               if not isinstance(v, (list, np.ndarray)) and not k.startswith("asicbench.")}
    return Model(config=cfg, tensors=tensors, tokenizer=tokenizer, source=path, metadata=scalars)


def read_gguf_config(path: str | Path) -> ModelConfig:
    """The config of a GGUF file from its header alone (cheap for a 40 GB file)."""
    path = Path(path)
    with _mapped(path) as buf:
        meta, infos, _ = _parse(buf, path)
    return _config(meta, path, {name: shape for name, shape, _, _ in infos})


def _f16_exact(values: np.ndarray) -> bool:
    return bool(np.array_equal(values.astype(np.float16).astype(np.float32), values))


def write_gguf(path: str | Path, model: Model) -> list[str]:
    """Write ``model`` atomically as GGUF; returns one note per tensor stored in a fallback type."""
    import gguf

    cfg = model.config
    notes: list[str] = []
    with atomic_open(path, "wb") as fh:
        w = gguf.GGUFWriter(None, "llama")
        w.add_name(cfg.name)
        w.add_context_length(cfg.seq_len)
        w.add_embedding_length(cfg.dim)
        w.add_block_count(cfg.n_layers)
        w.add_feed_forward_length(cfg.hidden_dim)
        w.add_head_count(cfg.n_heads)
        w.add_head_count_kv(cfg.n_kv_heads)
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_rope_freq_base(float(cfg.rope_theta))
        w.add_layer_norm_rms_eps(float(cfg.norm_eps))
        w.add_vocab_size(cfg.vocab_size)
        if cfg.is_moe:
            w.add_expert_count(cfg.n_experts)
            w.add_expert_used_count(cfg.n_experts_used)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if model.tokenizer is not None:
            fields = model.tokenizer.to_gguf_fields()
            w.add_tokenizer_model("llama")
            w.add_token_list(list(fields["tokens"]))
            w.add_token_scores([float(s) for s in fields["scores"]])
            w.add_token_types([int(t) for t in fields["token_types"]])
            for key, add in (("bos_id", w.add_bos_token_id), ("eos_id", w.add_eos_token_id),
                             ("unk_id", w.add_unk_token_id)):
                if fields.get(key) is not None and int(fields[key]) >= 0:
                    add(int(fields[key]))
        for name, qt in model.tensors.items():
            fmt, shape = qt.fmt, tuple(qt.shape)
            if fmt == "f32":
                w.add_tensor(name, np.ascontiguousarray(qt.data, np.float32))
            elif fmt == "f16":
                w.add_tensor(name, np.ascontiguousarray(qt.data, np.float16))
            elif fmt == "bf16":
                raw = np.ascontiguousarray(qt.data, np.uint16).view(np.uint8)
                w.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType.BF16)
            elif fmt == "b1_0":
                w.add_tensor(name, np.ascontiguousarray(qt.data, np.uint8).view(np.int8))
                w.add_string(f"asicbench.format.{name}", "b1_0")
                w.add_key_value(f"asicbench.shape.{name}", [int(n) for n in shape],
                                gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT64)
            elif shape[-1] % block_size(fmt) == 0:
                w.add_tensor(name, np.ascontiguousarray(qt.data, np.uint8), raw_dtype=GGML_TYPE[fmt])
            else:
                values = dequantize(qt)
                stored = "F16" if _f16_exact(values) else "F32"
                w.add_tensor(name, values.astype(np.float16) if stored == "F16" else values)
                notes.append(f"{name}: row of {shape[-1]} is not a multiple of {fmt}'s block of "
                             f"{block_size(fmt)}; stored as {stored} (dequantized, exact)")
        w.fout = [fh]  # write into the atomic temp file (GGUFWriter then skips opening a path)
        w.state = gguf.gguf_writer.WriterState.EMPTY
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    return notes

