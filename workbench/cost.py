"""The one cost model: turns counts (MACs, bytes, hops) into cycles, seconds and joules.

The executor calls the numba functions below with a parameter vector built by
:func:`cost_params`; projections and reports call :func:`energy_pj` on counter totals.
Nothing else in asicbench computes time or energy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

from .precision import CHIP_PRECISIONS

PREC_INDEX = {p: i for i, p in enumerate(CHIP_PRECISIONS)}
N_PREC = len(CHIP_PRECISIONS)
VEC_PREC = PREC_INDEX["f32"]  # the vector unit (norms, softmax, silu, rope, attention sums) works in fp32

# Layout of the parameter vector handed to numba (float64).
P_CLOCK_HZ = 0
P_MACS = 1                       # N_PREC entries: effective MACs/cycle per tile, after fallback and efficiency
P_VEC_LANES = P_MACS + N_PREC    # fp32 lanes per tile per cycle
P_SRAM_BPC = P_VEC_LANES + 1     # SRAM bytes per cycle per tile
P_DRAM_BPC = P_SRAM_BPC + 1      # off-chip bytes per cycle, whole chip, after efficiency (0 = none)
P_DRAM_LAT = P_DRAM_BPC + 1      # off-chip latency in cycles
P_LINK_BPC = P_DRAM_LAT + 1      # bytes per cycle per directed link, after efficiency
P_HOP_LAT = P_LINK_BPC + 1       # cycles per hop
P_OP_OVERHEAD = P_HOP_LAT + 1    # fixed cycles per op
P_BLOCK_COLS = P_OP_OVERHEAD + 1 # columns streamed through an op as one block (pipelining granularity)
N_PARAMS = P_BLOCK_COLS + 1

ENERGY_COMPONENTS = tuple(f"mac_{p}" for p in CHIP_PRECISIONS) + (
    "vector", "sram_read", "sram_write", "offchip", "noc", "chip_link", "static",
)


def cost_params(chip) -> np.ndarray:
    """The float64 parameter vector of ``chip`` for the numba cost functions."""
    p = np.zeros(N_PARAMS, dtype=np.float64)
    p[P_CLOCK_HZ] = chip.clock_ghz * 1e9
    eff = chip.realism.compute_efficiency
    for prec, i in PREC_INDEX.items():
        p[P_MACS + i] = chip.macs_per_cycle(prec) * eff
    p[P_VEC_LANES] = max(chip.tile.vector_lanes, 1) * eff
    p[P_SRAM_BPC] = chip.tile.sram_bytes_per_cycle
    if chip.has_offchip:
        p[P_DRAM_BPC] = chip.offchip_bytes_per_s * chip.realism.memory_efficiency / p[P_CLOCK_HZ]
        p[P_DRAM_LAT] = chip.memory.latency_ns * chip.clock_ghz
    p[P_LINK_BPC] = chip.noc.link_bytes_per_cycle * chip.realism.noc_efficiency
    p[P_HOP_LAT] = chip.noc.hop_latency_cycles
    p[P_OP_OVERHEAD] = chip.realism.op_overhead_cycles
    p[P_BLOCK_COLS] = chip.realism.block_cols
    return p


@njit(cache=True, nogil=True)
def mac_cycles(macs, prec, params):
    """Cycles one tile needs for ``macs`` multiply-accumulates at precision index ``prec``."""
    rate = params[P_MACS + prec]
    if macs <= 0:
        return 0.0
    if rate <= 0.0:
        rate = params[P_VEC_LANES]  # no MAC array for it at all: the vector unit does it
    return macs / rate


@njit(cache=True, nogil=True)
def vector_cycles(ops, params):
    return ops / params[P_VEC_LANES] if ops > 0 else 0.0


@njit(cache=True, nogil=True)
def sram_cycles(nbytes, params):
    return nbytes / params[P_SRAM_BPC] if nbytes > 0 else 0.0


@njit(cache=True, nogil=True)
def dram_cycles(nbytes, params):
    """Serialization of ``nbytes`` over the chip's off-chip interface (latency added by the caller)."""
    if nbytes <= 0:
        return 0.0
    return nbytes / params[P_DRAM_BPC]


@njit(cache=True, nogil=True)
def link_cycles(nbytes, params):
    return nbytes / params[P_LINK_BPC] if nbytes > 0 else 0.0


@njit(cache=True, nogil=True)
def compute_op_cycles(macs, prec, vec_ops, sram_bytes, params):
    """A compute op: MAC array, vector unit and SRAM port run concurrently; the slowest sets the time."""
    c = mac_cycles(macs, prec, params)
    v = vector_cycles(vec_ops, params)
    s = sram_cycles(sram_bytes, params)
    t = c
    if v > t:
        t = v
    if s > t:
        t = s
    return t + params[P_OP_OVERHEAD]


@lru_cache(maxsize=64)
def mac_pj_vector(chip) -> np.ndarray:
    """pJ per MAC for each precision index (fallbacks applied), computed once per chip."""
    return np.array([mac_energy_pj(chip, p) for p in CHIP_PRECISIONS], dtype=np.float64)


_MAC_KEYS = tuple((f"mac_{prec}", i) for prec, i in PREC_INDEX.items())


@lru_cache(maxsize=64)
def _mac_pj_floats(chip) -> tuple[float, ...]:
    """mac_pj_vector as Python floats (energy_pj runs once per token step)."""
    return tuple(float(x) for x in mac_pj_vector(chip))


def energy_pj(chip, macs_by_prec: np.ndarray, vector_ops: float, sram_read_bytes: float, sram_write_bytes: float,
              offchip_bytes: float, hop_bytes: float, chip_link_bytes: float, seconds: float) -> dict[str, float]:
    """Energy by component in picojoules: every count times its pJ, plus static W times time."""
    e = chip.energy
    out = {}
    pj = _mac_pj_floats(chip)
    for key, i in _MAC_KEYS:
        out[key] = float(macs_by_prec[i]) * pj[i]
    out["vector"] = float(vector_ops) * pj[VEC_PREC]
    out["sram_read"] = float(sram_read_bytes) * e.pj_per_byte_sram_read
    out["sram_write"] = float(sram_write_bytes) * e.pj_per_byte_sram_write
    out["offchip"] = float(offchip_bytes) * e.pj_per_byte_dram
    out["noc"] = float(hop_bytes) * e.pj_per_byte_hop
    out["chip_link"] = float(chip_link_bytes) * e.pj_per_byte_chip_link
    out["static"] = e.static_w * seconds * 1e12
    return out


def mac_energy_pj(chip, prec: str) -> float:
    """pJ per MAC at ``prec``, following the same fallback the MAC rate follows."""
    from .precision import FALLBACK

    p: str | None = prec
    while p is not None:
        if chip.tile.macs_per_cycle.get(p, 0) > 0 and p in chip.energy.pj_per_mac:
            return float(chip.energy.pj_per_mac[p])
        p = FALLBACK[p]
    return float(chip.energy.pj_per_mac.get("f32", 0.0))  # no unit at all: the fp32 vector unit does it
