"""The asicbench workbench app: panes over a machine running in a thread worker, keys from workbench.commands.

``run_app(options, session=None)`` opens it; a session (iterable of (command, value) steps) is replayed
step by step, pausing at each ``note`` until space.
"""

from __future__ import annotations

import sys
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.containers import Container
from textual.widgets import Footer, Tab, Tabs

from ..bench import Bench, BenchOptions
from ..commands import BY_NAME, COMMANDS
from ..data import bundled_names
from ..atomic import atomic_write_text
from ..errors import WorkbenchError
from .driver import Driver
from .modals import HelpScreen, ValueScreen
from .palette import CommandsProvider
from .panes import PANES
from .panes.base import Lines, Pane
from .session_io import save_session

REFRESH_HZ = 15        # pane refreshes a second at most: more only takes the GIL from the machine thread
RUNNING_HZ = 10        # while running: each refresh costs ~10-15 ms of UI-thread CPU (at 200x60) the machine may lose
SWITCH_INTERVAL_S = 0.0005
WIDE_MIN = (150, 40)  # columns, rows from which all panes show at once
PANE_IDS = ("sram", "kv", "mesh", "energy", "perf", "output", "program")
WIDE_ORDER = ("sram", "mesh", "program", "kv", "energy", "perf", "output")  # grid placement, see app.tcss


def _bindings() -> list[Binding]:
    out = []
    for c in COMMANDS:
        if c.key:
            out.append(Binding(c.key, f"cmd('{c.name}')", c.title, id=c.name))
        if c.alias:  # non-printable: a focused input never swallows it
            out.append(Binding(c.alias, f"cmd('{c.name}')", c.title, show=False, id=f"{c.name}-alias"))
    return out + [
        Binding("question_mark", "help", "Help"),
        Binding("z", "toggle_maximize", "Maximize"),
        Binding("s", "screenshot", "Screenshot"),
        Binding("ctrl+s", "save_session", "Save session"),
        Binding("v", "sram_view", "SRAM view", show=False),
        Binding("g", "mesh_toggle", "Mesh last/cum", show=False),
        Binding("k", "output_toggle", "Colour by", show=False),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        *[Binding(str(i + 1), f"pane('{pid}')", pid, show=False) for i, pid in enumerate(PANE_IDS)],
    ]


class WorkbenchApp(App):
    """Reads the driver's latest Frame on a timer; sends commands to the driver's queue."""

    CSS_PATH = "app.tcss"
    TITLE = "asicbench"
    COMMANDS = App.COMMANDS | {CommandsProvider}
    BINDINGS = _bindings()

    def __init__(self, bench: Bench, session=None, *, refresh_hz: float = REFRESH_HZ) -> None:
        super().__init__()
        self.driver = Driver(bench)
        if session is not None:
            self.driver.load_script(session)
        self.refresh_hz = min(float(REFRESH_HZ), max(1.0, refresh_hz))
        self.active = "sram"
        self.wide = False
        self._shown = -1
        self.renders = 0  # pane refreshes done, for tests and the benchmark
        self._timer = None
        self._timer_hz = 0.0
        self._panes: list[Pane] = []
        self._status_w: Lines | None = None

    def notify(self, message: str, *, markup: bool = False, **kw) -> None:
        """Every message here is plain text (paths, checks like ``x[a] / x[b]``): never read as markup."""
        super().notify(message, markup=markup, **kw)

    # -- layout -----------------------------------------------------------------------------------
    def compose(self):
        yield Lines(id="status")
        yield Tabs(*[Tab(f"{i + 1} {P.TITLE}", id=f"tab-{pid}") for i, (pid, P) in enumerate(zip(PANE_IDS, PANES))],
                   id="tabs")
        by_id = dict(zip(PANE_IDS, PANES))
        with Container(id="panes"):
            for pid in WIDE_ORDER:
                yield by_id[pid](id=pid)
        yield Footer()

    def on_mount(self) -> None:
        # The machine thread re-takes the GIL after every nogil kernel; with the default 5 ms switch
        # interval it waits behind each UI refresh. 0.5 ms keeps emulation close to headless speed.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.main = self.screen  # panes live here; modals may sit on top of it
        self._layout(self.size.width, self.size.height)
        self.run_worker(self.driver.loop, name="machine", group="machine", thread=True, exclusive=True)
        self._set_rate(self.refresh_hz)
        self.screen.query_one("#sram-grid").focus()

    def on_resize(self, event) -> None:
        self._layout(event.size.width, event.size.height)

    def _layout(self, width: int, height: int) -> None:
        if not hasattr(self, "main"):
            return
        self.wide = width >= WIDE_MIN[0] and height >= WIDE_MIN[1]
        self.main.set_class(self.wide, "-wide")
        for pane in self.screen.query(Pane):
            pane.display = self.wide or pane.id == self.active
        self._render_frame(force=True)

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tab is not None and event.tab.id:
            self.action_pane(event.tab.id.removeprefix("tab-"))

    def action_pane(self, pid: str) -> None:
        self.active = pid
        tabs = self.screen.query_one(Tabs)
        if tabs.active != f"tab-{pid}":
            tabs.active = f"tab-{pid}"
        for pane in self.screen.query(Pane):
            pane.display = self.wide or pane.id == pid
        if self.screen.maximized is not None:
            self.screen.minimize()
        self.screen.query_one(f"#{pid}").focus()
        self._render_frame(force=True)

    def action_toggle_maximize(self) -> None:
        if self.screen.maximized is not None:
            self.screen.minimize()
        else:
            pane = self._focused_pane() or self.screen.query_one(f"#{self.active}", Pane)
            self.screen.maximize(pane, container=False)
        self._render_frame(force=True)

    def _focused_pane(self) -> Pane | None:
        w = self.screen.focused
        while w is not None and not isinstance(w, Pane):
            w = w.parent
        return w if isinstance(w, Pane) else None

    # -- refresh ----------------------------------------------------------------------------------
    def _set_rate(self, hz: float) -> None:
        if hz != self._timer_hz:
            if self._timer is not None:
                self._timer.stop()
            self._timer, self._timer_hz = self.set_interval(1 / hz, self._tick, name="refresh"), hz

    def _tick(self) -> None:
        while True:
            try:
                kind, msg = self.driver.events.get_nowait()
            except Exception:
                break
            if kind == "error":
                self.notify(msg, title="error", severity="error", timeout=8)
            elif kind == "note":
                self.notify(msg + "\n(space continues)", title="note", timeout=30)
            elif kind == "projection":
                self.notify(msg, title="projection (kept as a mark)", timeout=20)
            elif kind in ("expect", "expect-failed"):
                self.notify(msg, title="expectations", severity="information" if kind == "expect" else "warning",
                            timeout=20)
        frame = self.driver.latest
        self._set_rate(min(RUNNING_HZ, self.refresh_hz) if frame is not None and frame.running else self.refresh_hz)
        self._render_frame()

    def visible_panes(self) -> list[Pane]:
        maxed = self.main.maximized
        if isinstance(maxed, Pane):
            return [maxed]
        if not self._panes:
            self._panes = list(self.main.query(Pane))
        return [p for p in self._panes if p.display]

    def _render_frame(self, force: bool = False) -> None:
        frame = self.driver.latest
        if frame is None or not hasattr(self, "main") or not self.main.is_attached:
            return
        if frame.version == self._shown and not force:
            return
        self._shown = frame.version
        for pane in self.visible_panes():
            pane.show(frame, self)
        self.renders += 1
        self._status(frame)

    def _status(self, frame) -> None:
        b = frame.bench
        o = b.options
        state = "▶ running" if frame.running else "❚❚ paused"
        row = [(f"{state} · ", ""), (b.chip.name, "bold"),
               (f" · {b.model.config.name} · {o.precision} · {b.machine.plan.mapping} · batch {o.batch}"
                f" · pos {frame.pos}/{b.machine.plan.context}", "")]
        if frame.note:
            row += [(" │ ", ""), (f" note: {frame.note} ", "reverse"), (" (space)", "")]
        elif frame.status:
            row.append((f" │ {frame.status}", ""))
        if self._status_w is None:
            self._status_w = self.main.query_one("#status", Lines)
        self._status_w.set_rows([row])

    # -- commands ---------------------------------------------------------------------------------
    def action_cmd(self, name: str) -> None:
        c = BY_NAME[name]
        if name == "run" and self.driver.waiting_note.is_set():
            self.clear_notifications()  # the reader moves on: what the last section showed has been read
        if c.arg is None or name == "generate":
            self.driver.submit(name, 1 if name == "generate" else None)
            return
        current = getattr(self.driver.bench.options, name, "")
        choices = c.choices
        if name == "project":  # a filled-in example of the one-line form
            current = "nvidia-h100-x8 llama-3.1-70b precision=fp8 batch=1"
        if name == "chip":
            choices = tuple(bundled_names("chips", (".toml",)))
        elif name == "model":
            choices = tuple(bundled_names("models", (".gguf", ".bin")))

        def done(value: str | None) -> None:
            if value is not None:
                self.driver.submit(name, value)

        self.push_screen(ValueScreen(c.title, c.help, "" if current is None else str(current), choices), done)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_sram_view(self) -> None:
        view = self.main.query_one("#sram").cycle_view()
        self.notify(f"SRAM view: {view}", timeout=2)

    def action_mesh_toggle(self) -> None:
        self.main.query_one("#mesh").toggle()

    def action_output_toggle(self) -> None:
        pane = self.main.query_one("#output")
        pane.color_by = "match" if pane.color_by == "latency" else "latency"
        self.driver.match_reference = pane.color_by == "match"
        self.driver.publish(force=True) if not self.driver.running.is_set() and self.driver.idle.is_set() else None
        self._render_frame(force=True)

    def action_screenshot(self) -> None:
        i = 1
        while Path(f"asicbench-screenshot-{i}.svg").exists():
            i += 1
        path = Path(f"asicbench-screenshot-{i}.svg")
        atomic_write_text(path, self.export_screenshot())
        self.notify(f"screenshot saved to {path}", timeout=4)

    def action_save_session(self) -> None:
        def done(value: str | None) -> None:
            if not value:
                return
            try:
                path = save_session(value, self.driver.start_options, list(self.driver.steps))
            except (OSError, WorkbenchError) as exc:
                self.notify(f"cannot save the session: {exc}", severity="error")
                return
            self.notify(f"session saved to {path} ({len(self.driver.steps)} steps)", timeout=4)

        self.push_screen(ValueScreen("Save session", "a TOML session file (replay with asicbench replay)",
                                     "session.toml"), done)

    async def action_quit(self) -> None:
        self.driver.stop()
        self.exit()

    def on_unmount(self) -> None:
        self.driver.stop()
        sys.setswitchinterval(getattr(self, "_switch_interval", 0.005))


def run_app(options: BenchOptions, session=None, *, base: Path | None = None) -> None:
    """Build the bench (errors raise WorkbenchError before the screen opens) and run the app."""
    bench = Bench(options, base=base)
    WorkbenchApp(bench, session=session).run()
