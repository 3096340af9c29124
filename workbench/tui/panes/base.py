"""Pane base class and ``Lines``, the Line API widget every pane draws with (rows of styled runs, diffed per row)."""

from __future__ import annotations

import re
from bisect import bisect_right

import numpy as np
from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.containers import VerticalScroll
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

# Colour levels for heat maps: level 0 = nothing, then cool to hot.
HEAT = ("#3a3a3a", "#2e5d8c", "#2f7fb5", "#3aa0a0", "#5fb85f", "#a8c83c", "#e0c030", "#f08a24", "#e8402c")
CLASS_STYLE = {
    "weights": "#4f8fe6", "kv": "#3fbf6f", "kv_free": "#235c3a", "act": "#e0b040", "staging": "#c060c0",
    "free": "#505050", "text": "", "dim": "#8a8a8a", "sel": "reverse", "bold": "bold", "warn": "#e8402c",
}

Run = tuple[str, str]  # (text, style: a CLASS_STYLE name or a rich style string)


class Pane(VerticalScroll):
    """A titled, maximizable pane. ``show(frame, ui)`` redraws it from a Frame and the app's view state."""

    ALLOW_MAXIMIZE = True
    TITLE = ""
    KEY = ""

    def on_mount(self) -> None:
        self.border_title = f"{self.KEY} {self.TITLE}" if self.KEY else self.TITLE

    def part(self, selector, expect=None):
        """query_one, remembered: panes look their children up at every refresh."""
        parts = self.__dict__.setdefault("_parts", {})
        w = parts.get(selector)
        if w is None:
            w = parts[selector] = self.query_one(selector) if expect is None else self.query_one(selector, expect)
        return w

    def show(self, frame, ui) -> None:  # pragma: no cover - every pane overrides it
        raise NotImplementedError


def row_width(row) -> int:
    return sum(len(t) if t.isascii() else cell_len(t) for t, _ in row)


def wrap(row, width: int) -> list[tuple[Run, ...]]:
    """One row of runs as rows of at most ``width`` cells (unchanged when it fits and has no newline)."""
    if width <= 0 or (row_width(row) <= width and not any("\n" in t for t, _ in row)):
        return [tuple(row)]
    return flow(row, width)


_WORDS = re.compile(r"\S+\s*|\s+")
Span = tuple[int, int, int]  # (run index, first character, end character)


def flow_spans(texts, width: int, start: tuple[int, int] = (0, 0)) -> tuple[list[list[Span]], list[tuple[int, int]]]:
    """Lay texts out as rows of at most ``width`` cells, from ``start`` (run, character) on: a newline starts a
    row, a word that does not fit starts a row (a word longer than the row is cut), trailing spaces stay on their
    row. Returns each row's spans and where each row starts (so a caller can re-flow from the last row only)."""
    rows: list[list[Span]] = []
    starts: list[tuple[int, int]] = [start]
    cur: list[Span] = []
    x = 0

    def new_row(i: int, at: int) -> None:
        nonlocal cur, x
        rows.append(cur)
        starts.append((i, at))
        cur, x = [], 0

    def put(i: int, a: int, b: int) -> None:
        if cur and cur[-1][0] == i and cur[-1][2] == a:
            cur[-1] = (i, cur[-1][1], b)
        else:
            cur.append((i, a, b))

    i0, o0 = start
    for i in range(i0, len(texts)):
        text = texts[i]
        pos = o0 if i == i0 else 0
        for k, para in enumerate(text[pos:].split("\n")):
            if k:
                new_row(i, pos)
            for m in _WORDS.finditer(para):
                word = m.group()
                a = pos + m.start()
                n = len(word) if word.isascii() else cell_len(word)
                body = n - (len(word) - len(word.rstrip()))
                if x and x + body > width:
                    new_row(i, a)
                while n > width > 0:  # longer than a row: cut by characters (ASCII in practice)
                    put(i, a, a + width - x)
                    a, n = a + width - x, n - (width - x)
                    new_row(i, a)
                if n:
                    put(i, a, pos + m.end())
                    x += n
            pos += len(para) + 1
    rows.append(cur)
    return rows, starts


def spans_row(spans, texts, styles) -> tuple[Run, ...]:
    return tuple((texts[i][a:b], styles[i]) for i, a, b in spans)


def flow(runs, width: int) -> list[tuple[Run, ...]]:
    """Runs laid out as rows of at most ``width`` cells (see flow_spans)."""
    texts = [t for t, _ in runs]
    styles = [s for _, s in runs]
    return [spans_row(r, texts, styles) for r in flow_spans(texts, width)[0]]


def grid_row(text: str, level_ids: np.ndarray, palette) -> tuple[Run, ...]:
    """One grid row from per-cell palette indices: consecutive cells of one colour become one run."""
    n = len(text)
    if n == 0:
        return ()
    cut = np.flatnonzero(np.diff(level_ids)) + 1
    edges = [0, *cut.tolist(), n]
    return tuple((text[a:b], palette[int(level_ids[a])]) for a, b in zip(edges, edges[1:]))


def base_style(widget: Widget) -> Style:
    """The widget's rich_style, recomputed only when its or an ancestor's styles changed (rich_style walks every
    ancestor and blends their colours: too slow to do for every widget at every refresh). Reads the
    Textual-private ``Styles._cache_key`` (textual is pinned), which changes with any style update."""
    key = tuple(node.styles._cache_key for node in widget.ancestors_with_self)
    hit = widget.__dict__.get("_base_style")
    if hit is not None and hit[0] == key:
        return hit[1]
    style = widget.rich_style
    widget.__dict__["_base_style"] = (key, style)
    return style


class Paint:
    """Rows of runs to Strips: rich Styles resolved once per style name over the widget's base style."""

    def __init__(self) -> None:
        self.base: Style | None = None
        self._styles: dict[str, Style] = {}

    def rebase(self, base: Style) -> bool:
        """Use ``base`` (the widget's rich_style); True when it changed (cached strips are stale)."""
        if base == self.base:
            return False
        self.base, self._styles = base, {}
        return True

    def style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            # every segment carries the widget's background (unstyled segments do not get it since Textual 6)
            parsed = " ".join(CLASS_STYLE.get(word, word) for word in name.split())  # "bold warn" works too
            style = self.base + Style.parse(parsed or "none")
            self._styles[name] = style
        return style

    def strip(self, row, width: int) -> Strip:
        segments = [Segment(t, self.style(s)) for t, s in row]
        n = sum(len(t) if t.isascii() else cell_len(t) for t, _ in row)
        if n < width:  # pad to the width with the base style: one Strip, not three
            segments.append(Segment(" " * (width - n), self.base))
            return Strip(segments, width)
        return Strip(segments, n).crop(0, width) if n > width else Strip(segments, n)

    def blank(self, width: int) -> Strip:
        return Strip([Segment(" " * width, self.base)])


class Lines(Widget):
    """Rows of (text, style) runs drawn with render_line.

    ``set_rows`` compares each row with the one shown: only changed rows are re-rendered (a refresh of just
    their regions), and the screen is re-laid out only when the row count (or an auto width) changes. A
    finished Strip is cached per row; styles are resolved once per style name. With ``wrap=True`` each row
    is wrapped (and newlines honoured) at whatever width layout gives the widget, as Static does.
    """

    DEFAULT_CSS = "Lines { height: auto; width: 1fr; }"

    def __init__(self, *, wrap: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.wrap = wrap
        self._logical: list[tuple[Run, ...]] = []   # as given to set_rows
        self._rows: list[tuple[Run, ...]] = []      # as shown: wrapped at self._rows_width
        self._rows_width = -1
        self._content_width = 1
        self._strips: dict[int, Strip] = {}
        self._paint = Paint()
        self._width = -1
        self._layout_pending = False
        self._wrapped: dict = {}
        self._wrapped_width = -1
        self._row_widths: dict = {}
        self._checked = False

    @property
    def plain(self) -> str:
        """The text shown, rows joined by newlines (for tests)."""
        return "\n".join("".join(t for t, _ in row) for row in self._rows)

    def _laid_out(self, width: int) -> list[tuple[Run, ...]]:
        if not self.wrap or width <= 0:
            return self._logical
        # rows repeat from one refresh to the next: wrap only the new ones
        cache = self._wrapped if self._wrapped_width == width else {}
        fresh, out = {}, []
        for row in self._logical:
            w = cache.get(row)
            if w is None:
                w = wrap(row, width)
            fresh[row] = w
            out += w
        self._wrapped, self._wrapped_width = fresh, width
        return out

    def _relayout(self, width: int) -> None:
        if self.wrap and width != self._rows_width:
            self._rows, self._rows_width = self._laid_out(width), width
            self._strips.clear()

    def set_rows(self, rows) -> None:
        logical = [r if isinstance(r, tuple) else tuple(r) for r in rows]
        if logical == self._logical:
            return
        self._logical = logical
        old = self._rows
        self._rows_width = self.size.width
        rows = self._laid_out(self._rows_width)
        auto_width = self.styles.width is not None and self.styles.width.is_auto
        if auto_width:  # rows repeat from one refresh to the next: measure only the new ones
            known, widths = self._row_widths, {}
            for r in rows:
                widths[r] = known[r] if r in known else row_width(r)
            self._row_widths = widths
            width = max(widths.values(), default=1)
        else:
            width = self._content_width
        changed = [y for y, r in enumerate(rows) if y >= len(old) or old[y] != r]
        self._rows = rows
        layout = self._height_stale() or (auto_width and width != self._content_width)
        self._content_width = width
        if layout:
            self._strips.clear()
            self.refresh(layout=True)
            return
        for y in changed:
            self._strips.pop(y, None)
        w = max(1, self.size.width)
        regions, start = [], None
        for i, y in enumerate(changed):  # consecutive changed rows refresh as one region
            if start is None:
                start = y
            if i + 1 == len(changed) or changed[i + 1] != y + 1:
                regions.append(Region(0, start, w, y - start + 1))
                start = None
        if regions:
            self.refresh(*regions)

    def _height_stale(self) -> bool:
        """True when an auto-height widget was laid out for another row count than it now has."""
        h = self.styles.height
        return h is not None and h.is_auto and len(self._rows) != self.size.height

    def get_content_width(self, container, viewport) -> int:
        self._content_width = max((row_width(r) for r in self._rows), default=1)
        return self._content_width

    def get_content_height(self, container, viewport, width: int) -> int:
        self._relayout(width)
        self._layout_pending = False
        return len(self._rows)

    def render_lines(self, crop: Region) -> list[Strip]:
        # rich_style walks every ancestor and size recomputes regions: once per render, not once per line
        width = self.size.width
        if self._paint.rebase(base_style(self)) or width != self._width:
            self._width, self._strips = width, {}
        self._checked = False
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self._width
        if not self._checked:  # once per render that draws a line, not once per line
            self._checked = True
            self._relayout(width)
            if not self._layout_pending and self._height_stale():  # e.g. a scrollbar came or went since layout
                self._layout_pending = True
                self.call_after_refresh(self.refresh, layout=True)
        strip = self._strips.get(y)
        if strip is None:
            strip = self._paint.strip(self._rows[y], width) if y < len(self._rows) else self._paint.blank(width)
            self._strips[y] = strip
        return strip


class ScrollLines(ScrollView):
    """Text that grows (the Output pane) in a scrolling view of fixed size: appending runs re-flows only from
    the last row on, a restyled run repaints only its rows, and growing changes only the view's virtual size, so
    the screen is not laid out again. The virtual height grows in steps of half a view: a view that follows the
    end (while running) moves, and repaints whole with its scrollbar, once per half page rather than at every
    new row; in between only the rows at the end repaint."""

    DEFAULT_CSS = "ScrollLines { height: 1fr; scrollbar-gutter: stable; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._texts: list[str] = []
        self._run_styles: list[str] = []
        self._spans: list[list[Span]] = []
        self._starts: list[tuple[int, int]] = [(0, 0)]
        self._flow_width = -1
        self._strips: dict[int, Strip] = {}
        self._paint = Paint()
        self._width = -1
        self._top = 0

    @property
    def plain(self) -> str:
        return "\n".join("".join(t for t, _ in spans_row(r, self._texts, self._run_styles)) for r in self._spans)

    def _row_of(self, run: int, char: int) -> int:
        return max(0, bisect_right(self._starts, (run, char)) - 1)

    def set_runs(self, runs, follow: bool = False) -> None:
        """Show these runs; when they extend what is shown, only what changed is re-flowed and repainted."""
        texts = [t for t, _ in runs]
        styles = [s for _, s in runs]
        n_old = len(self._texts)
        width = self.scrollable_content_region.width
        if width == self._flow_width and texts == self._texts and styles == self._run_styles:
            return
        if width == self._flow_width and self._spans and len(texts) >= n_old and texts[:n_old] == self._texts:
            restyle = {i: s for i, (s, o) in enumerate(zip(styles, self._run_styles)) if s != o}
            self.append_runs(runs[n_old:], restyle, follow)
            return
        self._spans, self._starts = flow_spans(texts, width) if width > 0 else ([], [(0, 0)])
        self._texts, self._run_styles, self._flow_width = texts, styles, width
        self._strips.clear()
        self._show_rows(None, follow)

    def append_runs(self, runs, restyle: dict[int, str] | None = None, follow: bool = False) -> None:
        """Add runs at the end and give runs already shown new styles (run index -> style): re-flows from the
        last row on, and a restyled run dirties only the rows it is on (the flow does not depend on style)."""
        restyle = restyle or {}
        width = self.scrollable_content_region.width
        if width != self._flow_width or not self._spans:
            styles = [restyle.get(i, s) for i, s in enumerate(self._run_styles)]
            self.set_runs([*zip(self._texts, styles), *runs], follow)
            return
        for i, s in restyle.items():
            self._run_styles[i] = s
        dirty = set()
        if runs:
            keep = len(self._spans) - 1  # the last row may take more words, the rows before it stand
            self._texts += [t for t, _ in runs]
            self._run_styles += [s for _, s in runs]
            spans, starts = flow_spans(self._texts, width, self._starts[keep])
            del self._spans[keep:], self._starts[keep:]
            self._spans += spans
            self._starts += starts
            dirty.update(range(keep, len(self._spans)))
        for i in restyle:
            dirty.update(range(self._row_of(i, 0), self._row_of(i, max(0, len(self._texts[i]) - 1)) + 1))
        for y in dirty:
            self._strips.pop(y, None)
        self._show_rows(dirty, follow)

    def _show_rows(self, dirty: set[int] | None, follow: bool) -> None:
        """Resize the virtual height (in half-view steps), follow the end if asked, repaint dirty rows in view."""
        view_h = self.scrollable_content_region.height
        n = len(self._spans)
        step = max(1, view_h // 2)
        virtual_h = n if n <= view_h else view_h + -(-(n - view_h) // step) * step
        size = Size(self._flow_width, virtual_h)
        if size != self.virtual_size:
            # only the scrollbars follow; Textual-private, as its own Widget._size_updated does (pinned textual)
            self.set_reactive(Widget.virtual_size, size)
            self._scroll_update(size)
        if follow and self.scroll_y != self.max_scroll_y:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)  # repaints the view
            return
        top = int(self.scroll_offset.y)
        rows = range(top, top + self.size.height)
        vis = list(rows) if dirty is None else sorted(y for y in dirty if y in rows)
        regions, start = [], None
        for k, y in enumerate(vis):  # consecutive rows refresh as one region
            if start is None:
                start = y
            if k + 1 == len(vis) or vis[k + 1] != y + 1:
                regions.append(Region(0, start - top, self.size.width, y - start + 1))
                start = None
        if regions:
            self.refresh(*regions)

    def on_resize(self) -> None:  # a new width re-flows; a new height changes the virtual height's step
        runs = list(zip(self._texts, self._run_styles))
        self._texts, self._run_styles, self._flow_width = [], [], -1
        self.set_runs(runs)

    def render_lines(self, crop: Region) -> list[Strip]:
        width = self.size.width  # once per render (see Lines.render_lines)
        if self._paint.rebase(base_style(self)) or width != self._width:
            self._width, self._strips = width, {}
        self._top = int(self.scroll_offset.y)
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self._width
        i = y + self._top
        strip = self._strips.get(i)
        if strip is None:
            if i < len(self._spans):
                strip = self._paint.strip(spans_row(self._spans[i], self._texts, self._run_styles), width)
            else:
                strip = self._paint.blank(width)
            self._strips[i] = strip
        return strip
