"""Block formats: error bounds, GGUF byte layouts against a scalar transcription of ggml's C reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from workbench.model.quant import (
    FORMATS, block_bytes, block_size, dequantize, error_bound, quantize, quantize_activations_q8,
    round_half_away, storage_bytes,
)

F32 = np.float32


def _f16_bytes(d: float) -> list[int]:
    return list(np.array([d], dtype=F32).astype(np.float16).view(np.uint8))


def _lroundf(v) -> int:  # C lroundf: half away from zero
    v = float(v)
    return int(math.copysign(math.floor(abs(v) + 0.5), v)) if abs(v) % 1 != 0.5 else int(math.copysign(abs(v) + 0.5, v))


# ---- scalar transcriptions of ggml-quants.c quantize_row_*_ref, float32 arithmetic throughout ----

def ref_q8_0(x: np.ndarray) -> bytes:
    out = []
    for b in x.reshape(-1, 32):
        amax = F32(0)
        for v in b:
            amax = max(amax, abs(F32(v)))
        d = F32(amax / F32(127))
        i = F32(1) / d if d else F32(0)
        out += _f16_bytes(d) + [_lroundf(F32(v) * i) & 0xFF for v in b]
    return bytes(out)


def ref_q4_0(x: np.ndarray) -> bytes:
    out = []
    for b in x.reshape(-1, 32):
        amax, mx = F32(0), F32(0)
        for v in b:
            if amax < abs(F32(v)):
                amax, mx = abs(F32(v)), F32(v)
        d = F32(mx / F32(-8))
        i = F32(1) / d if d else F32(0)
        qs = []
        for j in range(16):
            x0, x1 = F32(b[j]) * i, F32(b[16 + j]) * i
            q0, q1 = min(15, int(F32(x0 + F32(8.5)))), min(15, int(F32(x1 + F32(8.5))))
            qs.append(q0 | (q1 << 4))
        out += _f16_bytes(d) + qs
    return bytes(out)


def _ternary(b):
    amax = F32(0)
    for v in b:
        amax = max(amax, abs(F32(v)))
    i = F32(1) / amax if amax else F32(0)
    return amax, [_lroundf(F32(v) * i) + 1 for v in b]


def ref_tq2_0(x: np.ndarray) -> bytes:
    out = []
    for b in x.reshape(-1, 256):
        d, t = _ternary(b)
        qs = [0] * 64
        for j in range(2):
            for m in range(32):
                qs[j * 32 + m] = sum((t[j * 128 + n * 32 + m] & 3) << (2 * n) for n in range(4))
        out += qs + _f16_bytes(d)
    return bytes(out)


def ref_tq1_0(x: np.ndarray) -> bytes:
    out = []
    for b in x.reshape(-1, 256):
        d, t = _ternary(b)
        qs, qh = [], []
        for m in range(32):
            q = 0
            for n in range(5):
                q = q * 3 + t[m + n * 32]
            qs.append((q * 256 + 242) // 243)
        for m in range(16):
            q = 0
            for n in range(5):
                q = q * 3 + t[160 + m + n * 16]
            qs.append((q * 256 + 242) // 243)
        for j in range(4):
            q = 0
            for m in range(4):
                q = q * 3 + t[240 + j + m * 4]
            qh.append((q * 3 * 256 + 242) // 243)
        out += qs + qh + _f16_bytes(d)
    return bytes(out)


# ---- decoders written from the module docstring's layouts ----

def decode_doc(fmt: str, block: bytes) -> list[float]:
    f16 = lambda b: float(np.frombuffer(bytes(b), dtype="<f2")[0])  # noqa: E731
    if fmt == "q8_0":
        d = f16(block[:2])
        return [d * v for v in np.frombuffer(block[2:], np.int8)]
    if fmt == "q4_0":
        d, qs = f16(block[:2]), block[2:]
        return [d * ((qs[j] & 15) - 8) for j in range(16)] + [d * ((qs[j] >> 4) - 8) for j in range(16)]
    if fmt == "tq2_0":
        qs, d = block[:64], f16(block[64:])
        x = [0.0] * 256
        for j in range(2):
            for l in range(4):
                for m in range(32):
                    x[j * 128 + l * 32 + m] = d * (((qs[j * 32 + m] >> (2 * l)) & 3) - 1)
        return x
    if fmt == "tq1_0":
        qs, qh, d = block[:48], block[48:52], f16(block[52:])
        trit = lambda b, n: ((((b * (1, 3, 9, 27, 81)[n]) & 0xFF) * 3) >> 8)  # noqa: E731
        x = [0.0] * 256
        for n in range(5):
            for m in range(32):
                x[n * 32 + m] = d * (trit(qs[m], n) - 1)
            for m in range(16):
                x[160 + n * 16 + m] = d * (trit(qs[32 + m], n) - 1)
        for n in range(4):
            for m in range(4):
                x[240 + n * 4 + m] = d * (trit(qh[m], n) - 1)
        return x
    if fmt == "b1_0":
        d = f16(block[:2])
        return [d if block[2 + j // 8] >> (j % 8) & 1 else -d for j in range(32)]
    raise AssertionError(fmt)


def _tricky(n_blocks: int, block: int, seed: int) -> np.ndarray:
    """Random values plus exact halves (rounding ties) and repeated extremes of both signs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_blocks, block)).astype(F32)
    x[0] = np.arange(block, dtype=F32) - block / 2 + 0.5  # ties after scaling by 1/d when d is 1
    x[0, 0] = 127.0 if block == 32 else 1.0
    x[1, :4] = [3.0, -3.0, 3.0, -3.0]  # first max-abs wins in Q4_0
    x[2] = 0.0
    return x.reshape(-1)


REFS = {"q8_0": ref_q8_0, "q4_0": ref_q4_0, "tq2_0": ref_tq2_0, "tq1_0": ref_tq1_0}


@pytest.mark.parametrize("fmt", sorted(REFS))
def test_bytes_match_ggml_reference_transcription(fmt):
    x = _tricky(6, block_size(fmt), seed=1)
    ours = quantize(x.reshape(2, -1), fmt).data.tobytes()
    assert ours == REFS[fmt](x)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "tq2_0", "tq1_0", "b1_0"])
def test_layout_matches_docstring_decoder(fmt):
    x = _tricky(4, block_size(fmt), seed=2).reshape(4, -1)
    qt = quantize(x, fmt)
    raw = qt.data.reshape(-1, block_bytes(fmt))
    decoded = np.array([decode_doc(fmt, bytes(b)) for b in raw], dtype=F32).reshape(x.shape)
    assert np.array_equal(decoded, dequantize(qt))


def test_b1_0_encodes_sign_and_mean():
    x = np.linspace(-2, 1, 32, dtype=F32).reshape(1, 32)
    qt = quantize(x, "b1_0")
    assert qt.data.shape == (1, 6)
    d = np.frombuffer(qt.data[0, :2].tobytes(), "<f2")[0]
    assert d == np.float16(np.abs(x).astype(np.float64).mean())
    assert np.array_equal(dequantize(qt)[0] > 0, x[0] >= 0)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(3, 256), (5, 172), (2, 64), (4, 1), (2, 3, 96)])
def test_round_trip_within_bound(fmt, shape):
    x = np.random.default_rng(3).standard_normal(shape).astype(F32) * 0.3
    qt = quantize(x, fmt)
    assert qt.shape == shape and qt.nbytes == storage_bytes(fmt, shape)
    y = dequantize(qt)
    assert y.shape == shape and y.dtype == F32
    bound = np.repeat(error_bound(fmt, x), block_size(fmt), axis=-1)[..., : shape[-1]]
    assert np.all(np.abs(y - x) <= bound)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "tq2_0", "tq1_0", "b1_0"])
def test_tail_is_zero_padded(fmt):
    x = np.random.default_rng(4).standard_normal((3, 172)).astype(F32)
    padded = np.zeros((3, -(-172 // block_size(fmt)) * block_size(fmt)), F32)
    padded[:, :172] = x
    qt, qp = quantize(x, fmt), quantize(padded, fmt)
    assert np.array_equal(qt.data, qp.data)
    assert np.array_equal(dequantize(qt), dequantize(qp)[:, :172])


def test_bound_is_not_vacuous():
    x = np.random.default_rng(5).standard_normal((8, 256)).astype(F32)
    for fmt in ("q8_0", "q4_0", "tq2_0"):
        err = np.abs(dequantize(quantize(x, fmt)) - x).reshape(8, -1, block_size(fmt)).max(-1)
        assert np.all(err <= error_bound(fmt, x)) and np.max(err / error_bound(fmt, x)) > 0.5


@given(arrays(F32, st.tuples(st.integers(1, 3), st.integers(1, 80)),
              elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False)),
       st.sampled_from(FORMATS))
def test_bound_holds_for_any_values(x, fmt):
    y = dequantize(quantize(x, fmt))
    bound = np.repeat(error_bound(fmt, x), block_size(fmt), axis=-1)[..., : x.shape[-1]]
    assert np.all(np.abs(y.astype(np.float64) - x) <= bound)


def test_round_half_away_is_exact():
    v = np.array([0.49999997, 0.5, -0.5, 1.5, -2.5, 2.4999998, 126.5], dtype=F32)
    assert round_half_away(v).tolist() == [0, 1, -1, 2, -3, 2, 127]


def _act_ref(row: np.ndarray):
    q, ds = [], []
    for b in range(-(-len(row) // 32)):
        blk = row[b * 32:(b + 1) * 32]
        amax = F32(0)
        for v in blk:
            amax = max(amax, abs(F32(v)))
        d = F32(amax / F32(127))
        ds.append(d)
        q += [0 if d == 0 else max(-127, min(127, _lroundf(F32(F32(v) / d)))) for v in blk]
    return q, ds


def test_activation_quantizer_matches_scalar_definition():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 72)).astype(F32)
    x[1] = 0.0
    x[2, :32] = np.arange(32, dtype=F32) - 15.5  # ties
    q, d = quantize_activations_q8(x)
    assert q.dtype == np.int8 and q.shape == (3, 72) and d.dtype == F32 and d.shape == (3, 3)
    for r in range(3):
        qr, dr = _act_ref(x[r])
        assert q[r].tolist() == qr and d[r].tolist() == dr
    assert np.all(np.abs(q.astype(F32) * np.repeat(d, 32, axis=1)[:, :72] - x) <= np.repeat(d, 32, axis=1)[:, :72] / 2 + 1e-6)


def test_unknown_format_and_oversized_scale():
    from workbench.errors import ModelError

    with pytest.raises(ValueError, match="unknown format"):
        quantize(np.zeros((1, 32), F32), "q3_k")
    with pytest.raises(ModelError, match="f16 block scale"):
        quantize(np.full((1, 256), 1e6, F32), "tq2_0")
