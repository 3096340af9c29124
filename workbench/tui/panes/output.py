"""Output pane: the prompt and generated text, each token coloured by its latency or by agreement with f32."""

from __future__ import annotations

import numpy as np

from .base import HEAT, Lines, Pane, ScrollLines

LATENCY_STYLES = (HEAT[4], HEAT[6], HEAT[8], "underline")  # ≤1.1× the median decode time, ≤1.5×, more; prefill
MATCH_STYLES = ("kv", "bold warn", "dim")                  # agrees with the f32 reference, differs, not checked


class OutputPane(Pane):
    TITLE = "Output"
    KEY = "6"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.color_by = "latency"
        self._key = None
        self._shown = None                # (epoch, colour mode) of the text shown
        self._codes = np.zeros(0, dtype=np.int8)  # style index of each token shown
        self._secs: list[float] = []      # chip seconds of each generated token's step, -1 for prefill

    def compose(self):
        yield Lines(id="output-legend", wrap=True)
        yield ScrollLines(id="output-text")

    def _latency_codes(self, frame, n: int) -> np.ndarray:
        if self._shown is None or self._shown[0] != frame.epoch:
            self._secs = []
        for h in frame.history[len(self._secs):]:
            self._secs.append(-1.0 if h.prefill else h.seconds)
        secs = np.full(n, -1.0)
        m = min(n, len(self._secs))
        secs[:m] = self._secs[:m]
        mid = frame.decode_median_s
        ratio = secs / mid if mid else np.ones(n)
        return np.where(secs < 0, 3, np.where(ratio <= 1.1, 0, np.where(ratio <= 1.5, 1, 2))).astype(np.int8)

    def show(self, frame, ui) -> None:
        # history, pieces and ref_match only grow within an epoch, so their lengths say whether anything changed
        key = (frame.epoch, len(frame.pieces), len(frame.history), len(frame.ref_match), frame.decode_median_s,
               self.color_by)
        if key == self._key:  # no new token, nothing to redo
            return
        self._key = key
        n = len(frame.pieces)
        if self.color_by == "latency":
            codes, table = self._latency_codes(frame, n), LATENCY_STYLES
            legend = [("colour = chip time of each token vs the median (k toggles): ", "dim")]
            legend += [(name + " ", HEAT[idx]) for name, idx in (("≤1.1×", 4), ("≤1.5×", 6), (">1.5×", 8))]
            legend.append(("prefill", "underline"))
        else:
            match = np.asarray(frame.ref_match[:n], dtype=bool)
            codes = np.full(n, 2, dtype=np.int8)
            codes[:len(match)] = np.where(match, 0, 1)
            table = MATCH_STYLES
            legend = [("colour = agrees with the f32 reference's argmax (k toggles): ", "dim"),
                      ("match ", "kv"), ("differs ", "warn"), ("not checked yet", "dim")]
            if len(match):
                legend.append((f"  {int(match.sum())}/{len(match)} match", ""))
        self.part("#output-legend", Lines).set_rows([tuple(legend)])
        text = self.part("#output-text", ScrollLines)
        # follow the end while running, or when the reader was already at the end (as a log does)
        follow = frame.running or text.scroll_y >= text.max_scroll_y
        shown = (frame.epoch, self.color_by)
        k = len(self._codes)
        if shown == self._shown and 0 < k <= n:  # the same text, longer: new tokens and changed colours only
            changed = np.flatnonzero(codes[:k] != self._codes)
            restyle = {int(i) + 1: table[codes[i]] for i in changed}  # run 0 is the prompt
            text.append_runs([(p, table[c]) for p, c in zip(frame.pieces[k:], codes[k:].tolist())], restyle, follow)
        else:
            runs = [("".join(frame.prompt_pieces), "bold dim"),
                    *[(p, table[c]) for p, c in zip(frame.pieces, codes.tolist())]]
            if not n:
                runs.append(("  (press n to step a token, space to run)", "dim"))
            text.set_runs(runs, follow)
        self._shown, self._codes = shown, codes
