"""The one token sampler: greedy argmax, or llama2.c's xorshift* coin over a float32 softmax.

Written as plain sequential loops over float32 scalars with no numpy reductions, so that
``numba.njit`` compiles these very functions and reproduces them bit for bit: ``jitted()``
returns the compiled set (tests/test_reference.py holds it equal to the Python one).
Reductions such as ``np.sum`` are pairwise and vectorised ``np.exp`` may differ from libm
by an ulp, which is why they are avoided.

Seed rule: ``rng_state(seed)`` is ``seed`` as uint64, or 0x2545F4914F6CDD1D when seed is 0
(xorshift never leaves the all-zero state). The state is a (1,) uint64 array advanced in place.
"""

from __future__ import annotations

import math
import types
from functools import cache

import numpy as np

XORSHIFT_MULT = np.uint64(0x2545F4914F6CDD1D)
_SH12 = np.uint64(12)
_SH25 = np.uint64(25)
_SH27 = np.uint64(27)
_SH32 = np.uint64(32)
_SH8 = np.uint32(8)
_TWO_POW_24 = np.float32(16777216.0)


def rng_state(seed: int) -> np.ndarray:
    """(1,) uint64 xorshift* state for ``seed`` (seed 0 -> 0x2545F4914F6CDD1D; taken mod 2**64)."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    return np.array([seed if seed != 0 else int(XORSHIFT_MULT)], dtype=np.uint64)


def random_u32(state: np.ndarray) -> np.uint32:
    """llama2.c's xorshift*: advance ``state`` (1,) uint64 in place, return the high 32 bits of state * M."""
    s = state[0]
    s ^= s >> _SH12
    s ^= s << _SH25
    s ^= s >> _SH27
    state[0] = s
    # array multiply: wraps mod 2**64 like C's unsigned long long, without numpy's scalar overflow warning
    product = state * XORSHIFT_MULT
    return np.uint32(product[0] >> _SH32)


def random_f32(state: np.ndarray) -> np.float32:
    """Uniform float32 in [0, 1): the top 24 bits of random_u32 / 2**24."""
    return np.float32(random_u32(state) >> _SH8) / _TWO_POW_24


def argmax(logits: np.ndarray) -> int:
    """Index of the first maximum (llama2.c's strict ``>`` scan)."""
    best_i = 0
    best = logits[0]
    for i in range(1, logits.shape[0]):
        if logits[i] > best:
            best_i = i
            best = logits[i]
    return best_i


def softmax_f32(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(n,) float32 probabilities of softmax(logits / temperature), max subtracted, summed in order.

    Each exp is libm's double exp rounded to float32 (``math.exp`` here and under numba).
    """
    n = logits.shape[0]
    t = np.float32(temperature)
    scaled = np.empty(n, dtype=np.float32)
    for i in range(n):
        scaled[i] = np.float32(logits[i]) / t
    max_val = scaled[0]
    for i in range(1, n):
        if scaled[i] > max_val:
            max_val = scaled[i]
    total = np.float32(0.0)
    for i in range(n):
        e = np.float32(math.exp(np.float64(scaled[i] - max_val)))
        scaled[i] = e
        total = np.float32(total + e)
    for i in range(n):
        scaled[i] = scaled[i] / total
    return scaled


def sample(logits: np.ndarray, temperature: float, state: np.ndarray) -> int:
    """Next token id from (n,) float32 ``logits``.

    temperature <= 0: argmax (the state is not advanced). Otherwise one coin = random_f32(state)
    and the first index whose running float32 sum of the probabilities exceeds the coin
    (the last index if rounding leaves the sum at or below it).
    """
    if temperature <= 0.0:
        return argmax(logits)
    probs = softmax_f32(logits, temperature)
    coin = random_f32(state)
    cdf = np.float32(0.0)
    n = probs.shape[0]
    for i in range(n):
        cdf = np.float32(cdf + probs[i])
        if coin < cdf:
            return i
    return n - 1


@cache
def jitted() -> types.SimpleNamespace:
    """numba.njit(nogil=True) builds of random_u32, random_f32, argmax, softmax_f32, sample from this source.

    Each function is compiled with its module globals rebound to the compiled callees, so a
    kernel can call ``jitted().sample`` (or these functions inline) and get the same bits.
    """
    import numba

    scope = dict(globals())
    out = types.SimpleNamespace()
    for fn in (random_u32, random_f32, argmax, softmax_f32, sample):
        rebound = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
        compiled = numba.njit(nogil=True)(rebound)
        scope[fn.__name__] = compiled
        setattr(out, fn.__name__, compiled)
    return out
