"""The fp32 vector-unit numerics: kernels.exp_f32 against its numpy twin and true exp, and f32/fp16 decoding of
stories260K bit-exact between the machine and the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from workbench.chip import load_chip
from workbench.compiler import CompileOptions
from workbench.machine import isa
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


def _kmajor(mats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Row-major store, k-major copy and table laid out as Machine's kmajor_f32 lays them (stride = rows + pad)."""
    store, offs, pos = [], [], 0
    for w in mats:
        offs.append(pos)
        store.append(w.ravel())
        pos += w.size * 4
    wf32 = np.concatenate(store)
    table, parts, e = [], [], 0
    for w, o in zip(mats, offs):
        rows, cols = w.shape
        stride = -(-(rows + K.T_PAD) // 16) * 16
        t = np.zeros((cols, stride), F32)
        t[:, :rows] = w.T
        parts.append(t.ravel())
        table.append((o, e, stride, rows, cols))
        e += t.size
    return wf32, np.concatenate(parts), np.array(table, np.int64), offs


def test_kmajor_f32_kernel_equals_the_row_kernel_bit_for_bit():
    rng = np.random.default_rng(7)
    shapes = [(1, 5), (3, 64), (7, 33), (32, 64), (45, 172), (172, 64), (70, 9)]
    mats = []
    for rows, cols in shapes:
        w = (rng.standard_normal((rows, cols)) * rng.choice([1e-3, 1.0, 1e3], (rows, cols))).astype(F32)
        w[rng.random((rows, cols)) < 0.05] = F32(-0.0)
        mats.append(w)
    wf32, wt, table, offs = _kmajor(mats)
    u16 = np.zeros(1, np.uint16)
    x = (rng.standard_normal((3, 2, 256)) * 10).astype(F32)
    x[0, 1, :4] = [1e-40, -1e-40, 3e38, -0.0]  # subnormals, near-overflow products, signed zero
    n_fast = 0
    for trial in range(400):
        i = int(rng.integers(len(mats)))
        rows, cols = mats[i].shape
        r0 = int(rng.integers(rows))
        r1 = int(rng.integers(r0 + 1, rows + 1))
        k0 = int(rng.integers(cols)) if trial % 2 else 0
        k1 = int(rng.integers(k0 + 1, cols + 1))
        src, c = int(rng.integers(3)), int(rng.integers(2))
        got = np.full((2, 2, 256), np.nan, F32)
        want = got.copy()
        K.matmul_fp(K.FMT_F32, wf32, u16, wt, table, offs[i], cols * 4, r0, r1, k0, k1, k1, x, src, got, 1, c,
                    np.zeros(1, F32), np.zeros(1, F32))
        K.matmul_float(K.FMT_F32, wf32, u16, offs[i], cols * 4, r0, r1, k0, k1, k1, x, src, want, 1, c,
                       np.zeros(1, F32), np.zeros(1, F32))
        assert (got.view(np.uint32) == want.view(np.uint32)).all(), (i, r0, r1, k0, k1)  # other rows untouched (NaN)
        direct = np.full_like(got, np.nan)
        K.matmul_f32t(wt, table[i, 1], table[i, 2], r0, r1, k0, k1, x, src, direct, 1, c)
        n_fast += (direct.view(np.uint32) == want.view(np.uint32)).all()
    assert n_fast == 400


def test_every_f32_matmul_of_the_machine_reads_the_kmajor_copy(stories):
    machine = Machine(load_chip("teaching-4x4"), stories, CompileOptions(precision="f32", mapping="hybrid"))
    ops = machine.program.ops
    mm = ops[(ops["opcode"] == isa.MATMUL) & (ops["fmt"] == K.FMT_F32)]
    tab = machine._wt_tab
    assert len(mm) > 0 and set(mm["w_off"].tolist()) == set(tab[:, 0].tolist())
    for op in mm:
        row = tab[np.searchsorted(tab[:, 0], op["w_off"])]
        assert op["w_row_bytes"] == 4 * row[4] and op["r1"] <= row[3] and op["k1"] <= row[4]
    int8 = Machine(load_chip("teaching-4x4"), stories, CompileOptions(precision="int8", mapping="tensor"))
    assert int8._wt_tab.shape[0] == 0 and int8._wt32.nbytes <= 4  # no copy unless f32 matrices are multiplied
