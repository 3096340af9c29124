"""Performance pane: TTFT, time per token, tokens/s, MAC and bandwidth utilization, and what bound the step."""

from __future__ import annotations

from ... import cost
from ...machine.isa import OPCODE_NAMES
from ..fmt import nbytes, si, sparkline
from .base import Lines, Pane


def utilization(chip, c) -> dict[str, float]:
    """Cycles each resource needed for the counts in ``c`` over the cycles that elapsed (0..1)."""
    p = cost.cost_params(chip)
    T = len(c.clock)
    cycles = c.cycles
    if cycles <= 0:
        return {"mac": 0.0, "sram": 0.0, "offchip": 0.0, "noc": 0.0}
    mac_need = 0.0
    macs = c.tile_macs.sum(axis=0)
    for i in range(cost.N_PREC):
        rate = p[cost.P_MACS + i]
        if macs[i] and rate > 0:
            mac_need += macs[i] / (rate * T)
    sram_need = (c.sram_rd.sum() + c.sram_wr.sum()) / (p[cost.P_SRAM_BPC] * T) if p[cost.P_SRAM_BPC] else 0.0
    off = float(c.off_rd.sum() + c.off_wr.sum())
    off_need = off / p[cost.P_DRAM_BPC] if p[cost.P_DRAM_BPC] else 0.0
    noc_need = float(c.link_busy.max(initial=0.0))
    return {"mac": mac_need / cycles, "sram": sram_need / cycles, "offchip": off_need / cycles,
            "noc": noc_need / cycles}


class PerfPane(Pane):
    TITLE = "Performance"
    KEY = "5"

    def compose(self):
        yield Lines(id="perf-text", wrap=True)

    def show(self, frame, ui) -> None:
        m = frame.bench.machine
        chip = frame.bench.chip
        B = m.options.batch
        hist = frame.history
        width = max(10, (self.size.width or 60) - 12)
        # the last `width` decode steps are all the sparkline shows: walk back only that far
        decode = []
        for h in reversed(hist):
            if not h.prefill:
                decode.append(h.seconds)
                if len(decode) == width:
                    break
        decode.reverse()
        ttft = m.ttft_s if hist else None
        first = [("TTFT ", "dim"), (si(ttft, "s") if ttft else "—", "")]
        rows = []
        if decode:
            last_s = decode[-1]
            mean_s = frame.decode_seconds / frame.decode_count
            first.append((f"   decode {si(last_s, 's')}/token (mean {si(mean_s, 's')})", ""))
            rows += [tuple(first),
                     ((f"{1 / last_s:,.1f} tok/s per user · {B / last_s:,.1f} tok/s aggregate (batch {B})", ""),)]
        else:
            first.append(("   decode —", ""))
            rows += [tuple(first), ()]
        c = frame.last
        u = utilization(chip, c)
        label = "last token" if frame.last_complete else "token so far"
        rows.append(((f"utilization, {label}:", "bold"),))
        for name, key in (("MAC", "mac"), ("SRAM bw", "sram"), ("off-chip bw", "offchip"), ("busiest link", "noc")):
            frac = min(u[key], 1.0)
            rows.append(((f" {name:<12} {100 * u[key]:5.1f}% ", ""), ("█" * int(round(20 * frac)), "weights")))
        macs = float(c.tile_macs.sum())
        streamed = float(c.off_rd.sum() + c.off_wr.sum())
        mem_bytes = streamed if chip.has_offchip and streamed else float(c.sram_rd.sum())
        intensity = 2 * macs / mem_bytes if mem_bytes else 0.0
        ridge = chip.ridge_ops_per_byte(m.options.precision)
        bound = max(u, key=u.get)
        verdict = {"mac": "compute-bound", "sram": "memory-bound (SRAM)", "offchip": "memory-bound (off-chip)",
                   "noc": "network-bound"}[bound] if any(u.values()) else "—"
        src = "off-chip" if chip.has_offchip and streamed else "SRAM"
        rows.append(((f"roofline: {intensity:,.2f} ops/B from {src} vs ridge {ridge:,.1f} → ", ""), (verdict, "bold")))
        order = sorted(range(len(OPCODE_NAMES)), key=lambda i: -c.op_cycles[i])[:4]
        tot = float(c.op_cycles.sum())
        if tot:
            rows.append((("op time: " + ", ".join(f"{OPCODE_NAMES[i]} {100 * c.op_cycles[i] / tot:.0f}%"
                                                  for i in order if c.op_cycles[i]), "dim"),))
        rows.append(((f"MACs {macs:,.0f} · SRAM {nbytes(c.sram_rd.sum() + c.sram_wr.sum())} · "
                      f"off-chip {nbytes(streamed)}", ""),))
        rows.append((("ms/token ", "dim"), (sparkline(decode, width), "kv")))
        out = self.part("#perf-text", Lines)
        out.set_rows(rows)
