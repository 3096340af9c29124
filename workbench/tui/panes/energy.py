"""Energy pane: joules by component for the last token and since reset, J/token, tokens/J, W, sparklines."""

from __future__ import annotations

from rich.table import Table
from rich.console import Group
from rich.text import Text
from textual.widgets import Static

from ...counters import energy
from ..fmt import pct, si, sparkline
from .base import CLASS_STYLE, Pane


class EnergyPane(Pane):
    TITLE = "Energy"
    KEY = "4"

    def compose(self):
        yield Static(id="energy-text")

    def show(self, frame, ui) -> None:
        chip = frame.bench.chip
        snap = frame.snapshot
        last = frame.last
        last_s = last.cycles / (chip.clock_ghz * 1e9)
        last_pj = energy(chip, last, last_s)
        cum_pj = snap.energy_pj
        total_cum = sum(cum_pj.values())
        table = Table(box=None, pad_edge=False, show_edge=False, expand=False, padding=(0, 1))
        table.add_column("component", style=CLASS_STYLE["dim"])
        table.add_column("last token" if frame.last_complete else "token so far", justify="right")
        table.add_column("since reset", justify="right")
        table.add_column("share", justify="right")
        for name, pj in cum_pj.items():
            if pj == 0 and last_pj.get(name, 0) == 0:
                continue
            table.add_row(name, si(last_pj[name] * 1e-12, "J"), si(pj * 1e-12, "J"), pct(pj, total_cum))
        hist = frame.history
        decode = [h for h in hist if not h.prefill]
        B = frame.bench.machine.options.batch
        t = Text()
        if decode:
            j_tok = sum(h.joules for h in decode) / (len(decode) * B)
            t.append(f"decode {si(j_tok, 'J')}/token · {1 / j_tok if j_tok else 0:,.0f} tokens/J")
        elif hist:
            t.append(f"prefill {si(hist[0].joules, 'J')} (first token)")
        else:
            t.append("no token yet", CLASS_STYLE["dim"])
        watts = snap.joules / snap.seconds if snap.seconds else 0.0
        t.append(f" · average {si(watts, 'W')} over {si(snap.seconds, 's')}\n")
        width = max(10, (self.size.width or 60) - 16)
        t.append("J/token  ", CLASS_STYLE["dim"])
        t.append(sparkline([h.joules for h in hist], width), CLASS_STYLE["act"])
        t.append("\nW/token  ", CLASS_STYLE["dim"])
        t.append(sparkline([h.joules / h.seconds if h.seconds else 0 for h in hist], width), CLASS_STYLE["staging"])
        self.query_one("#energy-text", Static).update(Group(t, table))
