"""KV cache pane: tokens per layer × kv-head in SRAM and spilled, the SRAM capacity line, the step it spilled."""

from __future__ import annotations

from ..fmt import nbytes
from .base import Lines, Pane


def _cells(tokens: int, scale: float) -> int:
    """Bar cells for a token count: at least one when there is any."""
    return 0 if tokens <= 0 else max(1, round(tokens * scale))


class KvPane(Pane):
    TITLE = "KV cache"
    KEY = "2"

    def compose(self):
        yield Lines(id="kv-text", wrap=True)

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
        rows = [((f"{frame.pos} of {plan.context} positions · {B} seq · K+V {fmt}, {per_tok} B/token/head", ""),)]
        spill = (("  spilled at step " + str(frame.spill_step), "bold warn") if frame.spill_step is not None
                 else ("  no spill yet", "dim"))
        rows.append(((f"in SRAM {nbytes(total_sram)}", "kv"), ("  spilled ", ""),
                     (nbytes(total_spill), "warn" if total_spill else ""), spill))
        width = max(8, (self.size.width or 60) - 8)
        bar_w = max(4, min(40, width // H - 1))
        scale = bar_w / plan.context
        rows.append((("     ", ""), ("".join(f"h{h}".ljust(bar_w + 1) for h in range(H)), "dim")))
        for l in range(L):
            row = [(f"L{l:<3} ", "dim")]
            for h in range(H):
                cap = int(plan.kv_capacity[l, h])
                s, x = int(sram_tok[l, h]), int(spill_tok[l, h])
                n_s, n_x = min(bar_w, _cells(s, scale)), _cells(x, scale)
                cap_at = min(bar_w - 1, int(cap * scale))
                free = max(0, cap_at - n_s - n_x)
                row += [("█" * n_s, "kv"), ("█" * n_x, "warn"), ("░" * free, "kv_free")]
                if n_s + n_x <= cap_at:
                    row.append(("│", "bold"))
                row += [("·" * (bar_w - max(n_s + n_x, cap_at + 1)), "dim"), (" ", "")]
            rows.append(tuple(r for r in row if r[0]))
        rows.append((("█ SRAM ", "kv"), ("█ spilled ", "warn"),
                     ("░ free SRAM │ capacity · beyond SRAM (off-chip)", "dim")))
        rows.append(((f"capacity {int(plan.kv_capacity.min())}–{int(plan.kv_capacity.max())} tokens/seq/head in SRAM",
                      ""),))
        out = self.part("#kv-text", Lines)
        out.set_rows(rows)
