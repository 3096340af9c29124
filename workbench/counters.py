"""Counters: the single source every pane, report and export reads.

Counters are a few arrays updated in place by the executor; a Snapshot is an immutable
copy with the derived figures (seconds, joules) computed by the cost model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from . import cost
from .machine import isa


@dataclass
class Counters:
    """Cumulative counts since reset. T = tiles, P = chip precisions (cost.PREC_INDEX order).

    tile_macs (T, P) MACs; tile_vec (T,) fp32 vector ops; sram_rd / sram_wr (T,) bytes;
    off_rd / off_wr (T,) off-chip bytes requested by each tile; link_bytes (T*4,) bytes per directed
    link (tile*4 + N/E/S/W); link_busy (T*4,) cycles; kind_bytes (K,) bytes by traffic kind;
    hop_bytes (1,) sum of bytes x hops; sent / recv (T,) bytes; op_cycles / op_count (n_opcodes,);
    clock (T,) cycle each tile has reached; busy (T,) cycles each tile computed.
    """

    tile_macs: np.ndarray
    tile_vec: np.ndarray
    sram_rd: np.ndarray
    sram_wr: np.ndarray
    off_rd: np.ndarray
    off_wr: np.ndarray
    link_bytes: np.ndarray
    link_busy: np.ndarray
    kind_bytes: np.ndarray
    hop_bytes: np.ndarray
    sent: np.ndarray
    recv: np.ndarray
    op_cycles: np.ndarray
    op_count: np.ndarray
    clock: np.ndarray
    busy: np.ndarray

    @classmethod
    def zeros(cls, n_tiles: int) -> "Counters":
        i8 = lambda *s: np.zeros(s, dtype=np.int64)  # noqa: E731
        f8 = lambda *s: np.zeros(s, dtype=np.float64)  # noqa: E731
        return cls(i8(n_tiles, cost.N_PREC), i8(n_tiles), i8(n_tiles), i8(n_tiles), i8(n_tiles), i8(n_tiles),
                   i8(n_tiles * 4), f8(n_tiles * 4), i8(isa.N_KINDS), i8(1), i8(n_tiles), i8(n_tiles),
                   f8(isa.N_OPCODES), i8(isa.N_OPCODES), f8(n_tiles), f8(n_tiles))

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.tile_macs, self.tile_vec, self.sram_rd, self.sram_wr, self.off_rd, self.off_wr, self.link_bytes,
                self.link_busy, self.kind_bytes, self.hop_bytes, self.sent, self.recv, self.op_cycles, self.op_count,
                self.clock, self.busy)

    def copy(self) -> "Counters":
        return Counters(*(a.copy() for a in self.arrays()))

    def minus(self, earlier: "Counters") -> "Counters":
        return Counters(*(a - b for a, b in zip(self.arrays(), earlier.arrays())))

    @property
    def cycles(self) -> float:
        """Elapsed chip time in cycles (the slowest tile's clock)."""
        return float(self.clock.max()) if len(self.clock) else 0.0


@dataclass(frozen=True)
class Snapshot:
    """Immutable view of the counters at one moment, with time and energy derived by the cost model."""

    counters: Counters
    seconds: float
    energy_pj: dict[str, float]
    tokens: int
    kv_tokens_sram: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    kv_tokens_spilled: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))

    @property
    def joules(self) -> float:
        return sum(self.energy_pj.values()) * 1e-12


def snapshot(chip, counters: Counters, tokens: int, kv_sram=None, kv_spilled=None) -> Snapshot:
    c = counters.copy()
    seconds = c.cycles / (chip.clock_ghz * 1e9)
    return Snapshot(c, seconds, energy(chip, c, seconds), tokens,
                    kv_sram if kv_sram is not None else np.zeros((0, 0), np.int64),
                    kv_spilled if kv_spilled is not None else np.zeros((0, 0), np.int64))


def energy(chip, c: Counters, seconds: float) -> dict[str, float]:
    """Energy by component (pJ): the cost model applied to the counts."""
    macs = np.zeros(c.tile_macs.shape[1], np.int64)
    vec, rd, wr, off = _totals(c.tile_macs, c.tile_vec, c.sram_rd, c.sram_wr, c.off_rd, c.off_wr, macs)
    return cost.energy_pj(chip, macs, float(vec), float(rd), float(wr), float(off), float(c.hop_bytes[0]), 0.0, seconds)


@njit(cache=True, nogil=True)
def _totals(tile_macs, tile_vec, sram_rd, sram_wr, off_rd, off_wr, macs_out):
    """Chip-wide sums in one pass (integers, so exactly numpy's): MACs per precision into macs_out, and
    (vector ops, SRAM bytes read, SRAM bytes written, off-chip bytes)."""
    for t in range(tile_macs.shape[0]):
        for p in range(tile_macs.shape[1]):
            macs_out[p] += tile_macs[t, p]
    return tile_vec.sum(), sram_rd.sum(), sram_wr.sum(), off_rd.sum() + off_wr.sum()
