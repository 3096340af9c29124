"""Energy pane: joules by component for the last token and since reset, J/token, tokens/J, W, sparklines."""

from __future__ import annotations

from ...counters import energy
from ..fmt import pct, si, sparkline
from .base import Lines, Pane


def table_rows(header: tuple[str, ...], rows: list[tuple[str, ...]], left: int = 1) -> list[tuple]:
    """Columns padded to their widest cell (the first ``left`` left-aligned, the rest right-aligned), two spaces
    between columns, the header bold and the first column dim."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def cells(r):
        return [r[i].ljust(w) if i < left else r[i].rjust(w) for i, w in enumerate(widths)]

    out = [(("  ".join(cells(header)), "bold"),)]
    for r in rows:
        c = cells(r)
        out.append(((c[0], "dim"), ("  " + "  ".join(c[1:]), "")))
    return out


class EnergyPane(Pane):
    TITLE = "Energy"
    KEY = "4"

    def compose(self):
        yield Lines(id="energy-text", wrap=True)

    def show(self, frame, ui) -> None:
        chip = frame.bench.chip
        snap = frame.snapshot
        last = frame.last
        last_s = last.cycles / (chip.clock_ghz * 1e9)
        last_pj = energy(chip, last, last_s)
        cum_pj = snap.energy_pj
        total_cum = sum(cum_pj.values())
        table = [(name, si(last_pj[name] * 1e-12, "J"), si(pj * 1e-12, "J"), pct(pj, total_cum))
                 for name, pj in cum_pj.items() if pj != 0 or last_pj.get(name, 0) != 0]
        hist = frame.history
        B = frame.bench.machine.options.batch
        n_decode = frame.decode_count
        if n_decode:
            j_tok = frame.decode_joules / (n_decode * B)
            head = [(f"decode {si(j_tok, 'J')}/token · {1 / j_tok if j_tok else 0:,.0f} tokens/J", "")]
        elif hist:
            head = [(f"prefill {si(hist[0].joules, 'J')} (first token)", "")]
        else:
            head = [("no token yet", "dim")]
        watts = snap.joules / snap.seconds if snap.seconds else 0.0
        head.append((f" · average {si(watts, 'W')} over {si(snap.seconds, 's')}", ""))
        width = max(10, (self.size.width or 60) - 16)
        recent = hist[-width:]  # the sparklines show only what fits
        rows = [tuple(head),
                (("J/token  ", "dim"), (sparkline([h.joules for h in recent], width), "act")),
                (("W/token  ", "dim"),
                 (sparkline([h.joules / h.seconds if h.seconds else 0 for h in recent], width), "staging"))]
        rows += table_rows(("component", "last token" if frame.last_complete else "token so far", "since reset",
                            "share"), table)
        self.part("#energy-text", Lines).set_rows(rows)
