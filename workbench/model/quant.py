"""Weight storage formats the chip executes: quantize float32 to GGUF block bytes and back.

Where GGUF defines a format the bytes are exactly GGUF's, produced by gguf-py's numpy
quantizers (``gguf.quants``), which reproduce ggml's reference quantizers
(``quantize_row_*_ref``): max-abs scale in float32, reciprocal ``id = 1/d``, round half away
from zero (``lroundf``) or Q4_0's ``trunc(x*id + 8.5)`` clipped to 15, scale stored as f16
rounded to nearest even. tests/test_quant.py holds them equal to a scalar transcription of
the C reference. Per block, little-endian:

  Q8_0   32 values, 34 bytes: f16 d, int8 q[32];                      x[j] = d*q[j]
  Q4_0   32 values, 18 bytes: f16 d, uint8 qs[16];
         x[j] = d*((qs[j] & 15) - 8),  x[j+16] = d*((qs[j] >> 4) - 8)          (j < 16)
  TQ2_0  256 values, 66 bytes: uint8 qs[64], f16 d;
         x[j*128 + l*32 + m] = d*(((qs[j*32+m] >> 2l) & 3) - 1)           (j<2, l<4, m<32)
  TQ1_0  256 values, 54 bytes: uint8 qs[48], uint8 qh[4], f16 d; trits packed 5 per byte
         (4 in qh) as a base-3 fraction: byte = ceil(t * 256 / 243) with t = sum of trits*3^k,
         most significant trit first. With pow3 = (1,3,9,27,81), trit n of byte b is
         ((uint8)(b * pow3[n]) * 3) >> 8 (uint8 multiply wraps), and
         x[n*32 + m]       = d*(trit n of qs[m] - 1)        (m < 32, n < 5)
         x[160 + n*16 + m] = d*(trit n of qs[32+m] - 1)     (m < 16, n < 5)
         x[240 + n*4 + m]  = d*(trit n of qh[m] - 1)        (m < 4,  n < 4)
  B1_0   (ours; binary, not in GGUF) 32 values, 6 bytes: f16 d, uint8 s[4];
         d = f16(mean |x| over the block, summed in float64); bit (j % 8) of s[j // 8] set
         means x[j] = +d, clear means -d; x >= 0 (zero included) encodes as set.

Rows whose length is not a multiple of the block size are zero-padded to ceil(cols/block)
blocks before quantizing (what a tile does: pad to the MAC array width); ``dequantize``
drops the padding and returns exactly ``shape``. The padding takes part in B1_0's mean.
f32/f16 are numpy arrays of ``shape``; bf16 is uint16 bits (ggml's round-to-nearest-even).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as _T
from gguf import quants as _gq

from ..errors import ModelError
from .tensor import QTensor

FLOAT_FORMATS = ("f32", "f16", "bf16")
BLOCK_FORMATS = ("q8_0", "q4_0", "tq2_0", "tq1_0", "b1_0")
FORMATS = FLOAT_FORMATS + BLOCK_FORMATS

# GGUF type of each format GGUF defines (b1_0 has none: see gguf_io for how it is stored).
GGML_TYPE = {
    "f32": _T.F32, "f16": _T.F16, "bf16": _T.BF16,
    "q8_0": _T.Q8_0, "q4_0": _T.Q4_0, "tq2_0": _T.TQ2_0, "tq1_0": _T.TQ1_0,
}
_BLOCK = {"f32": (1, 4), "f16": (1, 2), "bf16": (1, 2), "q8_0": (32, 34), "q4_0": (32, 18),
          "tq2_0": (256, 66), "tq1_0": (256, 54), "b1_0": (32, 6)}
_F16_MAX = 65504.0


def _check_fmt(fmt: str) -> None:
    if fmt not in _BLOCK:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def block_size(fmt: str) -> int:
    """Values per block (1 for float formats)."""
    _check_fmt(fmt)
    return _BLOCK[fmt][0]


def block_bytes(fmt: str) -> int:
    """Bytes per block (bytes per value for float formats)."""
    _check_fmt(fmt)
    return _BLOCK[fmt][1]


def blocks_per_row(fmt: str, cols: int) -> int:
    return -(-cols // block_size(fmt))


def row_bytes(fmt: str, cols: int) -> int:
    """Bytes one row of ``cols`` values takes, padding included."""
    return blocks_per_row(fmt, cols) * block_bytes(fmt)


def storage_bytes(fmt: str, shape: tuple[int, ...]) -> int:
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    return rows * row_bytes(fmt, int(shape[-1]))


def _pad_blocks(x: np.ndarray, block: int) -> np.ndarray:
    cols = x.shape[-1]
    padded = -(-cols // block) * block
    if padded == cols:
        return x
    out = np.zeros((*x.shape[:-1], padded), dtype=np.float32)
    out[..., :cols] = x
    return out


def quantize(x: np.ndarray, fmt: str) -> QTensor:
    """Store float values ``x`` (..., cols) in ``fmt``; blocks run along the last axis."""
    _check_fmt(fmt)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 0:
        raise ValueError("cannot quantize a scalar")
    shape = tuple(int(n) for n in x.shape)
    if fmt == "f32":
        return QTensor(fmt, shape, x.copy())
    if fmt == "f16":
        return QTensor(fmt, shape, x.astype(np.float16))
    if fmt == "bf16":
        bits = _gq.quantize(x, _T.BF16).view(np.uint16).reshape(shape)
        return QTensor(fmt, shape, bits)
    if x.size:
        amax = float(np.abs(x).max())
        limit = _F16_MAX * (127 if fmt == "q8_0" else 8 if fmt == "q4_0" else 1)
        if not amax <= limit:
            raise ModelError(f"values up to {amax:g} do not fit {fmt}'s f16 block scale (max {limit:g})")
    padded = _pad_blocks(x, block_size(fmt))
    if fmt == "b1_0":
        data = _quantize_b1_0(padded)
    elif padded.shape[-1] == 0:
        data = np.zeros((*shape[:-1], 0), dtype=np.uint8)
    else:
        data = _gq.quantize(padded, GGML_TYPE[fmt])
    return QTensor(fmt, shape, np.ascontiguousarray(data, dtype=np.uint8))


def _quantize_b1_0(padded: np.ndarray) -> np.ndarray:
    lead = padded.shape[:-1]
    blocks = padded.reshape(-1, 32)
    d = np.abs(blocks).astype(np.float64).mean(axis=1).astype(np.float16)
    signs = np.packbits(blocks >= 0, axis=1, bitorder="little")  # (n_blocks, 4)
    out = np.concatenate([d.reshape(-1, 1).view(np.uint8), signs], axis=1)
    return out.reshape(*lead, -1)


def _dequantize_b1_0(blocks: np.ndarray) -> np.ndarray:
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1)
    bits = np.unpackbits(blocks[:, 2:], axis=1, bitorder="little").astype(np.float32)
    return d * (2.0 * bits - 1.0)


def dequantize(qt: QTensor) -> np.ndarray:
    """float32 array of ``qt.shape`` (block padding dropped)."""
    fmt, shape = qt.fmt, tuple(qt.shape)
    _check_fmt(fmt)
    if fmt in ("f32", "f16"):
        return np.asarray(qt.data, dtype=np.float32).reshape(shape)
    if fmt == "bf16":
        bits = np.ascontiguousarray(qt.data, dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    cols = shape[-1]
    nb, bb = blocks_per_row(fmt, cols), block_bytes(fmt)
    raw = np.ascontiguousarray(qt.data, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(shape, dtype=np.float32)
    blocks = raw.reshape(-1, bb)
    if fmt == "b1_0":
        values = _dequantize_b1_0(blocks)
    else:
        values = _gq.dequantize(blocks, GGML_TYPE[fmt])
    values = values.reshape(*shape[:-1], nb * block_size(fmt))
    return np.ascontiguousarray(values[..., :cols], dtype=np.float32)


def error_bound(fmt: str, x: np.ndarray) -> np.ndarray:
    """Documented max abs error of ``dequantize(quantize(x, fmt))`` for each block of ``x``.

    Shape (..., blocks per row); for float formats a block is one value. With amax the
    block's max |x|, d = the f32 scale before its f16 rounding (rel. error 2^-11, abs 2^-25
    when subnormal), and a 1e-6*amax allowance for float32 arithmetic:
      f32 0;  f16 max(|x|*2^-11, 2^-25);  bf16 |x|*2^-8 + 2^-134
      q8_0   d/2 + 127*(d*2^-11 + 2^-25)        (d = amax/127; rounding to the nearest step)
      q4_0   d + 8*(d*2^-11 + 2^-25)            (d = amax/8; the +amax end clips to 7*d)
      tq*_0  amax/2 + amax*2^-11 + 2^-25        (values round to -amax, 0, +amax)
      b1_0   max(amax - m, m) + m*2^-11 + 2^-25 (m = mean |x|, padding included)
    """
    _check_fmt(fmt)
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    a = np.abs(x)
    if fmt == "f32":
        return np.zeros_like(a)
    if fmt == "f16":
        return np.maximum(a * 2.0**-11, 2.0**-25)
    if fmt == "bf16":
        return a * 2.0**-8 + 2.0**-134
    blocks = _pad_blocks(a.astype(np.float32), block_size(fmt)).astype(np.float64)
    blocks = blocks.reshape(*a.shape[:-1], -1, block_size(fmt))
    amax = blocks.max(axis=-1)
    slop = amax * 1e-6
    if fmt == "q8_0":
        d = amax / 127
        return d / 2 + 127 * (d * 2.0**-11 + 2.0**-25) + slop
    if fmt == "q4_0":
        d = amax / 8
        return d + 8 * (d * 2.0**-11 + 2.0**-25) + slop
    if fmt in ("tq2_0", "tq1_0"):
        return amax / 2 + amax * 2.0**-11 + 2.0**-25 + slop
    m = blocks.mean(axis=-1)
    return np.maximum(amax - m, m) + m * 2.0**-11 + 2.0**-25 + slop


def round_half_away(v: np.ndarray) -> np.ndarray:
    """Round to nearest, ties away from zero, exactly: f = floor(|v|); f + (|v| - f >= 0.5).

    (floor(|v| + 0.5) is wrong in float32: 0.49999997 + 0.5 rounds up to 1.0.)
    """
    a = np.abs(v)
    f = np.floor(a)
    return np.sign(v) * (f + (a - f >= 0.5))


def quantize_activations_q8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The on-chip quantize engine: per-token int8 blocks of 32 with float32 scales.

    x (B, n) float32 -> q int8 (B, n), d float32 (B, ceil(n/32)). For each block of 32
    (the tail zero-padded): amax = max |x| (f32); d = amax / 127 (one f32 division);
    q = clip(round_half_away(x / d), -127, 127) with x / d one f32 division and
    round_half_away as above; where d == 0, q = 0. Reconstruction: x ~ d * q.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected (B, n) activations, got shape {x.shape}")
    n = x.shape[1]
    padded = _pad_blocks(x, 32)
    blocks = padded.reshape(x.shape[0], -1, 32)
    d = (np.abs(blocks).max(axis=-1) / np.float32(127)).astype(np.float32)
    safe = np.where(d == 0, np.float32(1), d)[..., None]
    with np.errstate(invalid="ignore", over="ignore"):
        v = (blocks / safe).astype(np.float32)
    q = np.clip(round_half_away(v), -127, 127)
    q = np.where(d[..., None] == 0, 0, q).astype(np.int8)
    return q.reshape(x.shape[0], -1)[:, :n].copy(), d
