"""Chip-to-chip collectives, costed analytically from a profile's [system]: latency + size / bandwidth.

Ring, tree and (on a 2D mesh or torus of chips) 2D-ring all-reduce and all-gather (the cheapest is used), and
point-to-point sends between pipeline stages. ``chip_link_gb_per_s`` is per chip per direction over all its links;
``chip_link_latency_us`` is paid per hop of each algorithm step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """latency_s per hop, bytes_per_s per chip per direction (after efficiency), overhead_s per collective."""

    latency_s: float
    bytes_per_s: float
    overhead_s: float
    topology: str


@dataclass(frozen=True)
class CommCost:
    """Seconds split into the latency part and the bandwidth part, and bytes sent by all chips."""

    latency_s: float = 0.0
    bandwidth_s: float = 0.0
    bytes: float = 0.0

    @property
    def seconds(self) -> float:
        return self.latency_s + self.bandwidth_s

    def plus(self, other: "CommCost", k: float = 1.0) -> "CommCost":
        return CommCost(self.latency_s + k * other.latency_s, self.bandwidth_s + k * other.bandwidth_s,
                        self.bytes + k * other.bytes)


def link_of(chip) -> Link:
    s, r = chip.system, chip.realism
    return Link(s.chip_link_latency_us * 1e-6, s.chip_link_gb_per_s * 1e9 * r.chip_link_efficiency,
                r.collective_overhead_us * 1e-6, s.topology)


def _grid(n: int) -> tuple[int, int]:
    a = int(math.isqrt(n))
    while n % a:
        a -= 1
    return a, n // a


def tree_hops(n: int, topology: str) -> list[int]:
    """Hops of each recursive-doubling step (partner at distance 1, 2, 4, ...) among ``n`` chips."""
    out = []
    d = 1
    while d < n:
        if topology == "ring":
            h = min(d, n - d)
        elif topology in ("mesh", "torus"):
            rows, cols = _grid(n)
            if d < cols:
                h = min(d, cols - d) if topology == "torus" else d
            else:
                r = d // cols
                h = min(r, rows - r) if topology == "torus" else r
        else:  # switch, fully_connected, dragonfly: every partner is one (switched) step away
            h = 1
        out.append(max(h, 1))
        d *= 2
    return out


def _grid_of(n: int, topology: str) -> tuple[int, int] | None:
    """(rows, cols) of a 2D mesh or torus of ``n`` chips, None when it is one row (or not a grid)."""
    if topology not in ("mesh", "torus"):
        return None
    rows, cols = _grid(n)
    return (rows, cols) if rows > 1 else None


def all_reduce(n: int, nbytes: float, link: Link) -> CommCost:
    """Ring (2(n-1) neighbour steps, 2(n-1)/n of the data per chip), tree (reduce + broadcast, log2 n steps each
    way carrying all of it) or, on a 2D mesh or torus of rows x cols chips, 2D ring (reduce-scatter along each row,
    all-reduce of the row's 1/cols share down each column, all-gather along the row: 2(rows + cols - 2)
    neighbour steps), whichever is cheapest."""
    if n <= 1 or nbytes <= 0:
        return CommCost()
    ring = CommCost(2 * (n - 1) * link.latency_s + link.overhead_s, 2 * (n - 1) / n * nbytes / link.bytes_per_s,
                    2 * (n - 1) * nbytes)
    hops = tree_hops(n, link.topology)
    tree = CommCost(2 * sum(hops) * link.latency_s + link.overhead_s, 2 * len(hops) * nbytes / link.bytes_per_s,
                    2 * (n - 1) * nbytes)
    best = ring if ring.seconds <= tree.seconds else tree
    grid = _grid_of(n, link.topology)
    if grid:
        rows, cols = grid
        per_chip = (2 * (cols - 1) / cols + 2 * (rows - 1) / rows / cols) * nbytes
        two_d = CommCost(2 * (rows + cols - 2) * link.latency_s + link.overhead_s, per_chip / link.bytes_per_s,
                         n * per_chip)
        best = two_d if two_d.seconds < best.seconds else best
    return best


def all_gather(n: int, nbytes: float, link: Link) -> CommCost:
    """Every chip ends with all ``nbytes``: ring (n-1 steps), recursive doubling (log2 n steps) or, on a 2D mesh
    or torus, along the rows then down the columns (rows + cols - 2 steps), whichever is cheapest."""
    if n <= 1 or nbytes <= 0:
        return CommCost()
    bw = (n - 1) / n * nbytes / link.bytes_per_s
    ring = CommCost((n - 1) * link.latency_s + link.overhead_s, bw, (n - 1) * nbytes)
    tree = CommCost(sum(tree_hops(n, link.topology)) * link.latency_s + link.overhead_s, bw, (n - 1) * nbytes)
    best = ring if ring.seconds <= tree.seconds else tree
    grid = _grid_of(n, link.topology)
    if grid:
        rows, cols = grid
        two_d = CommCost((rows + cols - 2) * link.latency_s + link.overhead_s, bw, (n - 1) * nbytes)
        best = two_d if two_d.seconds < best.seconds else best
    return best


def send(nbytes: float, link: Link) -> CommCost:
    """One stage hands its activations to the next (neighbours: one hop)."""
    if nbytes <= 0:
        return CommCost()
    return CommCost(link.latency_s + link.overhead_s, nbytes / link.bytes_per_s, nbytes)
