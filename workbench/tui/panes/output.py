"""Output pane: the prompt and generated text, each token coloured by its latency or by agreement with f32."""

from __future__ import annotations

from statistics import median

from rich.text import Text
from textual.widgets import Static

from .base import CLASS_STYLE, HEAT, Pane


class OutputPane(Pane):
    TITLE = "Output"
    KEY = "6"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.color_by = "latency"

    def compose(self):
        yield Static(id="output-legend")
        yield Static(id="output-text")

    def show(self, frame, ui) -> None:
        legend = Text()
        t = Text()
        t.append("".join(frame.prompt_pieces), "bold " + CLASS_STYLE["dim"])
        hist = frame.history
        if self.color_by == "latency":
            decode = [h.seconds for h in hist if not h.prefill]
            mid = median(decode) if decode else 0.0
            legend.append("colour = chip time of each token vs the median (k toggles): ", CLASS_STYLE["dim"])
            for name, idx in (("≤1.1×", 4), ("≤1.5×", 6), (">1.5×", 8)):
                legend.append(name + " ", HEAT[idx])
            legend.append("prefill", "underline")
            for i, piece in enumerate(frame.pieces):
                h = hist[i] if i < len(hist) else None
                if h is None or h.prefill:
                    t.append(piece, "underline")
                    continue
                ratio = h.seconds / mid if mid else 1.0
                t.append(piece, HEAT[4] if ratio <= 1.1 else HEAT[6] if ratio <= 1.5 else HEAT[8])
        else:
            legend.append("colour = agrees with the f32 reference's argmax (k toggles): ", CLASS_STYLE["dim"])
            legend.append("match ", CLASS_STYLE["kv"])
            legend.append("differs ", CLASS_STYLE["warn"])
            legend.append("not checked yet", CLASS_STYLE["dim"])
            n_ok = sum(frame.ref_match)
            for i, piece in enumerate(frame.pieces):
                if i < len(frame.ref_match):
                    t.append(piece, CLASS_STYLE["kv"] if frame.ref_match[i] else "bold " + CLASS_STYLE["warn"])
                else:
                    t.append(piece, CLASS_STYLE["dim"])
            if frame.ref_match:
                legend.append(f"  {n_ok}/{len(frame.ref_match)} match")
        if not frame.pieces:
            t.append("  (press n to step a token, space to run)", CLASS_STYLE["dim"])
        self.query_one("#output-legend", Static).update(legend)
        self.query_one("#output-text", Static).update(t)
        if frame.running:
            self.scroll_end(animate=False)
