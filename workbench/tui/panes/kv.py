"""KV cache pane: tokens per layer × kv-head in SRAM and spilled, the SRAM capacity line, the step it spilled."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..fmt import nbytes
from .base import CLASS_STYLE, Pane


def _cells(tokens: int, scale: float) -> int:
    """Bar cells for a token count: at least one when there is any."""
    return 0 if tokens <= 0 else max(1, round(tokens * scale))


class KvPane(Pane):
    TITLE = "KV cache"
    KEY = "2"

    def compose(self):
        yield Static(id="kv-text")

    def show(self, frame, ui) -> None:
        plan = frame.bench.machine.plan
        snap = frame.snapshot
        B = plan.options.batch
        L, H = plan.kv_capacity.shape
        per_tok = plan.kv_bytes_per_token
        fmt = "int8 + fp32 scale" if plan.options.kv_int8 else "f32"
        sram_tok = snap.kv_tokens_sram // max(B, 1)
        spill_tok = snap.kv_tokens_spilled // max(B, 1)
        total_sram = int(snap.kv_tokens_sram.sum()) * per_tok
        total_spill = int(snap.kv_tokens_spilled.sum()) * per_tok
        t = Text()
        t.append(f"{frame.pos} of {plan.context} positions · {B} seq · K+V {fmt}, {per_tok} B/token/head\n")
        t.append(f"in SRAM {nbytes(total_sram)}", CLASS_STYLE["kv"])
        t.append("  spilled ")
        t.append(nbytes(total_spill), CLASS_STYLE["warn"] if total_spill else "")
        if frame.spill_step is not None:
            t.append(f"  spilled at step {frame.spill_step}", "bold " + CLASS_STYLE["warn"])
        else:
            t.append("  no spill yet", CLASS_STYLE["dim"])
        t.append("\n")
        width = max(8, (self.size.width or 60) - 8)
        bar_w = max(4, min(40, width // H - 1))
        scale = bar_w / plan.context
        t.append("     ")
        for h in range(H):
            t.append(f"h{h}".ljust(bar_w + 1), CLASS_STYLE["dim"])
        t.append("\n")
        for l in range(L):
            t.append(f"L{l:<3} ", CLASS_STYLE["dim"])
            for h in range(H):
                cap = int(plan.kv_capacity[l, h])
                s, x = int(sram_tok[l, h]), int(spill_tok[l, h])
                n_s, n_x = min(bar_w, _cells(s, scale)), _cells(x, scale)
                cap_at = min(bar_w - 1, int(cap * scale))
                free = max(0, cap_at - n_s - n_x)
                t.append("█" * n_s, CLASS_STYLE["kv"])
                t.append("█" * n_x, CLASS_STYLE["warn"])
                t.append("░" * free, CLASS_STYLE["kv_free"])
                if n_s + n_x <= cap_at:
                    t.append("│", "bold")
                t.append("·" * (bar_w - max(n_s + n_x, cap_at + 1)), CLASS_STYLE["dim"])
                t.append(" ")
            t.append("\n")
        t.append("█ SRAM ", CLASS_STYLE["kv"])
        t.append("█ spilled ", CLASS_STYLE["warn"])
        t.append("░ free SRAM │ capacity · beyond SRAM (off-chip)", CLASS_STYLE["dim"])
        t.append(f"\ncapacity {int(plan.kv_capacity.min())}–{int(plan.kv_capacity.max())} tokens/seq/head in SRAM")
        self.query_one("#kv-text", Static).update(t)
