"""Every action a user can take, defined once.

The same Command objects feed the TUI's key bindings, footer, help overlay and command
palette, and the step vocabulary of session files (``[[steps]] generate = 8``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .compiler import MAPPINGS
from .precision import EMULATED_PRECISIONS


@dataclass(frozen=True)
class Command:
    """name: session-step key and palette id; key/alias: TUI bindings (alias is non-printable);
    arg: the value's kind ('int', 'float', 'str', 'choice', 'projection' (a table), None); choices for 'choice'."""

    name: str
    title: str
    help: str
    key: str | None = None
    alias: str | None = None
    arg: str | None = None
    choices: tuple[str, ...] = ()
    recompiles: bool = False


COMMANDS: tuple[Command, ...] = (
    Command("generate", "Generate tokens", "generate N tokens (a number) or until end of text ('eos')",
            key="n", alias="f5", arg="int"),
    Command("step_layer", "Step one layer", "execute up to the next layer boundary", key="l", alias="f6"),
    Command("step_op", "Step one op", "execute one micro-op of the program", key="o", alias="f7"),
    Command("run", "Run / pause", "generate continuously until paused", key="space", alias="f8"),
    Command("reset", "Reset", "empty the KV cache, zero the counters, start the prompt again", key="r", alias="f9"),
    Command("precision", "Change precision", "weights and MACs in this precision", key="p", arg="choice",
            choices=EMULATED_PRECISIONS, recompiles=True),
    Command("mapping", "Change mapping", "how layers are placed on tiles", key="m", arg="choice", choices=MAPPINGS,
            recompiles=True),
    Command("batch", "Change batch size", "sequences run at once", key="b", arg="int", recompiles=True),
    Command("prompt", "Change prompt", "text the model continues", key="t", arg="str", recompiles=True),
    Command("temperature", "Change temperature", "0 = greedy", key="T", arg="float", recompiles=True),
    Command("seed", "Change seed", "sampling seed", arg="int", recompiles=True),
    Command("context", "Change context", "tokens of context to plan the KV cache for (0 = the model's)", arg="int",
            recompiles=True),
    Command("chip", "Load chip", "a bundled chip profile or a path", key="c", arg="str", recompiles=True),
    Command("model", "Load model", "a bundled model or a path", key="M", arg="str", recompiles=True),
    Command("project", "Project a big model", "a model spec projected onto a chip system, shape only, kept as a mark:"
            " CHIP MODEL [precision= mapping= batch= chips= prompt_len= gen_len= mark=] (a session step takes the"
            " same keys as a table, mark required)", key="P", arg="projection"),
    Command("note", "Note", "text shown to the reader at this point (demos)", arg="str"),
    Command("mark", "Mark", "a named checkpoint of the counters", arg="str"),
)

BY_NAME = {c.name: c for c in COMMANDS}
OPTION_COMMANDS = tuple(c.name for c in COMMANDS if c.recompiles)
