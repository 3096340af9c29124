"""Output pane: the prompt and generated text, each token coloured by its latency or by agreement with f32."""

from __future__ import annotations

from statistics import median

from .base import HEAT, Lines, Pane, ScrollLines


class OutputPane(Pane):
    TITLE = "Output"
    KEY = "6"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.color_by = "latency"
        self._key = None
        self._machine = None

    def compose(self):
        yield Lines(id="output-legend", wrap=True)
        yield ScrollLines(id="output-text")

    def show(self, frame, ui) -> None:
        text = self.query_one("#output-text", ScrollLines)
        legend_w = self.query_one("#output-legend", Lines)
        key = (id(frame.bench.machine), frame.prompt_pieces, frame.pieces, len(frame.history), frame.ref_match,
               self.color_by)
        if key == self._key and frame.bench.machine is self._machine:  # no new token, nothing to redo
            return
        self._key, self._machine = key, frame.bench.machine
        legend = []
        runs = [("".join(frame.prompt_pieces), "bold dim")]
        hist = frame.history
        if self.color_by == "latency":
            decode = [h.seconds for h in hist if not h.prefill]
            mid = median(decode) if decode else 0.0
            legend.append(("colour = chip time of each token vs the median (k toggles): ", "dim"))
            for name, idx in (("≤1.1×", 4), ("≤1.5×", 6), (">1.5×", 8)):
                legend.append((name + " ", HEAT[idx]))
            legend.append(("prefill", "underline"))
            for i, piece in enumerate(frame.pieces):
                h = hist[i] if i < len(hist) else None
                if h is None or h.prefill:
                    runs.append((piece, "underline"))
                    continue
                ratio = h.seconds / mid if mid else 1.0
                runs.append((piece, HEAT[4] if ratio <= 1.1 else HEAT[6] if ratio <= 1.5 else HEAT[8]))
        else:
            legend.append(("colour = agrees with the f32 reference's argmax (k toggles): ", "dim"))
            legend += [("match ", "kv"), ("differs ", "warn"), ("not checked yet", "dim")]
            n_ok = sum(frame.ref_match)
            for i, piece in enumerate(frame.pieces):
                if i < len(frame.ref_match):
                    runs.append((piece, "kv" if frame.ref_match[i] else "bold warn"))
                else:
                    runs.append((piece, "dim"))
            if frame.ref_match:
                legend.append((f"  {n_ok}/{len(frame.ref_match)} match", ""))
        if not frame.pieces:
            runs.append(("  (press n to step a token, space to run)", "dim"))
        legend_w.set_rows([tuple(legend)])
        # follow the end while running, or when the reader was already at the end (as a log does)
        text.set_runs(runs, follow=frame.running or text.scroll_y >= text.max_scroll_y)
