"""Pane base class and the Line API grid the SRAM and mesh panes draw with."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.containers import VerticalScroll
from textual.strip import Strip
from textual.widget import Widget

# Colour levels for heat maps: level 0 = nothing, then cool to hot.
HEAT = ("#3a3a3a", "#2e5d8c", "#2f7fb5", "#3aa0a0", "#5fb85f", "#a8c83c", "#e0c030", "#f08a24", "#e8402c")
CLASS_STYLE = {
    "weights": "#4f8fe6", "kv": "#3fbf6f", "kv_free": "#235c3a", "act": "#e0b040", "staging": "#c060c0",
    "free": "#505050", "text": "", "dim": "#8a8a8a", "sel": "reverse", "bold": "bold", "warn": "#e8402c",
}


class Pane(VerticalScroll):
    """A titled, maximizable pane. ``show(frame, ui)`` redraws it from a Frame and the app's view state."""

    ALLOW_MAXIMIZE = True
    TITLE = ""
    KEY = ""

    def on_mount(self) -> None:
        self.border_title = f"{self.KEY} {self.TITLE}" if self.KEY else self.TITLE

    def show(self, frame, ui) -> None:  # pragma: no cover - every pane overrides it
        raise NotImplementedError


class LineGrid(Widget):
    """Rows of (text, style-name) runs drawn with render_line; styled Segments are cached per (text, style)."""

    DEFAULT_CSS = "LineGrid { height: auto; width: 1fr; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._rows: list[list[tuple[str, str]]] = []
        self._strips: list[Strip] | None = None
        self._segments: dict[tuple[str, str], Segment] = {}
        self._base: Style | None = None

    def set_rows(self, rows: list[list[tuple[str, str]]]) -> None:
        height_changed = len(rows) != len(self._rows)
        self._rows = rows
        self._strips = None
        if height_changed:
            self.refresh(layout=True)
        else:
            self.refresh()

    def get_content_width(self, container, viewport) -> int:
        return max((sum(len(t) for t, _ in row) for row in self._rows), default=1)

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self._rows)

    def _segment(self, text: str, style: str) -> Segment:
        key = (text, style)
        seg = self._segments.get(key)
        if seg is None:
            # every segment carries the widget's background (unstyled segments do not get it since Textual 6)
            seg = Segment(text, self._base + Style.parse(CLASS_STYLE.get(style, style) or "none"))
            self._segments[key] = seg
        return seg

    def render_line(self, y: int) -> Strip:
        base = self.rich_style
        if base != self._base:
            self._base, self._segments, self._strips = base, {}, None
        if self._strips is None:
            self._strips = [Strip([self._segment(t, s) for t, s in row]) for row in self._rows]
        width = self.size.width
        if y < len(self._strips):
            return self._strips[y].extend_cell_length(width, base).crop(0, width)
        return Strip([Segment(" " * width, base)])
