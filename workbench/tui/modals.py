"""Small screens over the workbench: a value prompt, a picker (choices or bundled files plus any path), help."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from ..commands import COMMANDS

UI_KEYS = (
    ("?", "this help"), ("1-7", "show / focus a pane"), ("z", "maximize or restore the focused pane"),
    ("v", "SRAM: cycle class view"), ("arrows / click", "SRAM: select a tile"), ("g", "mesh: last token / cumulative"),
    ("k", "output: colour by latency / f32 match"), ("s", "save an SVG screenshot"), ("ctrl+s", "save the session"),
    ("ctrl+p", "command palette"), ("q / ctrl+q", "quit"),
)


class ValueScreen(ModalScreen[str | None]):
    """Ask for one value; Enter accepts, Escape cancels. ``choices`` shows a picker above the input."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, help: str, value: str = "", choices: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.title_text, self.help_text, self.value, self.choices = title, help, value, choices

    def compose(self):
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title", markup=False)
            yield Label(self.help_text, classes="dim", markup=False)
            if self.choices:
                yield OptionList(*[Option(c, id=c) for c in self.choices], id="dialog-choices")
            yield Input(value=self.value, id="dialog-input",
                        placeholder="or type a path / value and press Enter" if self.choices else "")

    def on_mount(self) -> None:
        if self.choices:
            ol = self.query_one(OptionList)
            if self.value in self.choices:
                ol.highlighted = self.choices.index(self.value)
            ol.focus()
        else:
            self.query_one(Input).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every command with its keys (from workbench.commands) and the view keys."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "close")]

    def compose(self):
        table = Table(box=None, padding=(0, 2), title="asicbench — keys", title_style="bold")
        table.add_column("key", style="bold")
        table.add_column("alias")
        table.add_column("command")
        table.add_column("what it does", style="dim")
        for c in COMMANDS:
            if c.key or c.alias:
                table.add_row(c.key or "", c.alias or "", c.title, Text(c.help))
            else:
                table.add_row("", "", c.title, Text(c.help + " (palette)"))
        for key, what in UI_KEYS:
            table.add_row(key, "", "", what)
        with Vertical(id="dialog"):
            yield Static(table)
            yield Label("Escape closes. Every command is also in the palette (ctrl+p).", classes="dim")

    def action_close(self) -> None:
        self.dismiss(None)
