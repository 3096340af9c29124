"""Program pane: the disassembly, drawn with the Line API, the next op highlighted while single-stepping."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.containers import Vertical

from .base import Lines, Pane, base_style

WINDOW = 256  # disassemble lazily, this many ops at a time


class Disassembly(ScrollView):
    """One line per op; lines are disassembled on demand and cached per program."""

    can_focus = True

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.program = None
        self.pc = -1
        self._cache: dict[int, list[str]] = {}

    def set_program(self, program, pc: int, follow: bool) -> None:
        if program is not self.program:
            self.program, self._cache = program, {}
            self.virtual_size = Size(72, len(program.ops))
        if pc != self.pc:
            self.pc = pc
            if follow and pc >= 0:
                self.scroll_to(y=max(0, pc - self.size.height // 3), animate=False, immediate=True)
            self.refresh()

    def _line(self, i: int) -> str:
        w = i // WINDOW
        if w not in self._cache:
            self._cache[w] = self.program.disassemble(w * WINDOW, min(len(self.program.ops), (w + 1) * WINDOW))
        return self._cache[w][i - w * WINDOW]

    def render_line(self, y: int) -> Strip:
        base = base_style(self)
        width = self.size.width
        i = y + int(self.scroll_offset.y)
        if self.program is None or i >= len(self.program.ops):
            return Strip([Segment(" " * width, base)])
        text = self._line(i)
        style = base + Style(reverse=True, bold=True) if i == self.pc else base
        marker = "▶ " if i == self.pc else "  "
        return Strip([Segment(marker + text, style)]).extend_cell_length(width, base).crop(0, width)


class ProgramPane(Pane):
    TITLE = "Program"
    KEY = "7"

    def compose(self):
        with Vertical():
            yield Lines(id="program-head", wrap=True)
            yield Disassembly(id="program-list")

    def show(self, frame, ui) -> None:
        program = frame.bench.machine.program
        n = len(program.ops)
        plan = frame.bench.machine.plan
        if frame.in_pass:
            layer = int(program.ops[frame.pc]["layer"]) if frame.pc < n else -1
            where = f"next op {frame.pc} of {n} (layer {layer})" if layer >= 0 else f"next op {frame.pc} of {n}"
        else:
            where = f"{n} ops per pass · between tokens"
        head = self.part("#program-head", Lines)
        line = f"{where} · {plan.mapping} mapping, {len(plan.groups)} group(s) · l = step layer, o = step op"
        head.set_rows([((line, ""),)])
        self.part(Disassembly).set_program(program, frame.pc if frame.in_pass else -1, follow=True)
