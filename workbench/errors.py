"""One exception family for everything a user can get wrong.

The CLI and the TUI catch :class:`WorkbenchError` at the edge and show its message
as one line (exit code 2 on the command line); everything inside trusts validated data.
"""

from __future__ import annotations

from pathlib import Path


class WorkbenchError(Exception):
    """A problem with the user's input: a file, a flag, a session step.

    The message names where (file, key or step), what was expected and what was found.
    """

    def __init__(self, message: str, *, source: str | Path | None = None, key: str | None = None):
        self.source = str(source) if source is not None else None
        self.key = key
        where = []
        if self.source:
            where.append(self.source)
        if key:
            where.append(key)
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ProfileError(WorkbenchError):
    """A chip profile is malformed or out of range."""


class ModelError(WorkbenchError):
    """A model file, model spec or tokenizer cannot be used."""


class CompileError(WorkbenchError):
    """A model cannot be placed on a chip with the given options."""


class SessionError(WorkbenchError):
    """A session file or one of its steps is malformed."""


class MachineFault(WorkbenchError):
    """The emulated chip hit a condition it cannot continue from (NaN, context overflow)."""
