"""The fp32 vector-unit numerics: kernels.exp_f32 against its numpy twin and true exp, and f32/fp16 decoding of
stories260K bit-exact between the machine and the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from workbench.chip import load_chip
from workbench.compiler import CompileOptions
from workbench.machine import kernels as K
from workbench.machine.machine import Machine
from workbench.machine.npref import NumpyMachine, exp_f32_poly
from workbench.model.load import load_model

F32 = np.float32
EDGES = np.array([0.0, -0.0, 1.0, -1.0, -np.inf, np.inf, np.nan, -np.nan, 1e-30, -1e-30, 1e-45, -1e-45,
                  K.EXP_X_LO, np.nextafter(K.EXP_X_LO, F32(0)), np.nextafter(K.EXP_X_LO, F32(-1)), -87.3, -103.9,
                  -1e30, 1e30, K.EXP_X_HI, np.nextafter(K.EXP_X_HI, F32(0)), np.nextafter(K.EXP_X_HI, F32(100)),
                  88.7, 88.72, 0.34657359, -0.34657359, 0.5 * np.log(2), np.log(2), -np.log(2)], F32)


@njit(nogil=True)
def _exp_all(x, out):
    for i in range(x.shape[0]):
        out[i] = K.exp_f32(x[i])


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(F32)  # every exponent, NaNs
    uniform = np.concatenate([rng.uniform(-90, 0, 600_000), rng.uniform(-1, 1, 100_000), rng.uniform(0, 89, 100_000)])
    return np.concatenate([uniform.astype(F32), bits, EDGES])


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))


def test_exp_numba_and_numpy_agree_bit_for_bit():
    x = _inputs()
    got = np.empty_like(x)
    _exp_all(x, got)
    want = exp_f32_poly(x)
    diff = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    assert diff.size == 0, f"{diff.size} differ, first exp({x[diff[0]]!r}): numba {got[diff[0]]!r} numpy {want[diff[0]]!r}"


def test_exp_is_within_one_ulp_and_handles_the_edges():
    x = _inputs()
    got = exp_f32_poly(x)
    with np.errstate(over="ignore", invalid="ignore"):
        true = np.exp(x.astype(np.float64)).astype(F32)   # correctly rounded but for double rounding, rare
    inside = (x >= K.EXP_X_LO) & (x <= K.EXP_X_HI) & np.isfinite(true)
    assert inside.sum() > 800_000
    assert _ulps(got[inside], true[inside]).max() <= 1
    assert (got[x < K.EXP_X_LO] == 0).all() and not np.signbit(got[x < K.EXP_X_LO]).any()
    assert (got[x > K.EXP_X_HI] == np.inf).all()
    assert np.isnan(got[np.isnan(x)]).all()
    e = exp_f32_poly(EDGES[:6])
    assert e[0] == 1 and e[1] == 1 and e[4] == 0 and e[5] == np.inf and abs(e[2] - np.e) < 3e-7
    assert (np.diff(exp_f32_poly(np.linspace(-86.5, 0, 100_001, dtype=F32))) >= 0).all()  # monotone on softmax's range


@pytest.fixture(scope="module")
def stories(stories260k):
    return load_model(stories260k)


@pytest.mark.parametrize("precision,mapping,batch", [("f32", "tensor", 1), ("f32", "hybrid", 2), ("fp16", "pipeline", 1)])
def test_float_paths_bit_exact_on_stories260k(stories, precision, mapping, batch):
    chip = load_chip("teaching-4x4")
    machine = Machine(chip, stories, CompileOptions(precision=precision, mapping=mapping, batch=batch,
                                                    prefill_chunk=4 if batch > 1 else 32))
    ref = NumpyMachine(machine)
    prompt = [1, 300, 301, 302]
    machine.set_prompt(prompt)
    ref.set_prompt(prompt)
    for i in range(6):
        got, want = machine.step_token(), ref.step_token()
        assert got == want, f"token {i}: machine {got} vs numpy {want}"
        a, b = machine.logits().view(np.uint32), ref.logits().view(np.uint32)
        assert (a == b).all(), f"token {i}: {(a != b).sum()} logits differ"
