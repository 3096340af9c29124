"""Write what a user did (options + a list of (command, value) steps) as a session file, atomically.

The TUI calls :func:`save_session` on ctrl+s; replaying the file gives the same tokens and counters.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import tomli_w

from ..atomic import atomic_write_text
from ..bench import BenchOptions
from ..errors import SessionError
from .spec import Check, parse_session


def _check_table(checks: tuple[Check, ...]) -> dict:
    """The inverse of spec.parse_expect."""
    names = {"<": "below", ">": "above", ">=": "at_least", "<=": "at_most"}
    table: dict[str, object] = {}
    for c in checks:
        if c.kind != "ratio" and c.at:
            table["at"] = c.at
        if c.kind == "text":
            table.setdefault(c.metric, []).append(c.bound)
        elif c.kind == "ratio":
            table.setdefault("ratio", []).append({"metric": c.metric, "mark": c.at, "over": c.over, names[c.op]: c.bound})
        else:
            table[f"{c.metric}_{names[c.op]}"] = c.bound
    return table


def _portable(value: str, folder: Path) -> str:
    """An existing file path becomes relative to the session's folder; bundled names stay names."""
    path = Path(value).expanduser()
    if path.is_file():
        try:
            return os.path.relpath(path.resolve(), folder.resolve())
        except ValueError:  # another drive (Windows)
            return str(path.resolve())
    return value


def session_document(path: str | Path, options: BenchOptions, steps: list[tuple[str, object]], *, title: str = "",
                     description: str = "") -> dict:
    folder = Path(path).parent
    doc: dict[str, object] = {}
    if title:
        doc["title"] = title
    if description:
        doc["description"] = description
    doc["chip"] = _portable(options.chip, folder)
    doc["model"] = _portable(options.model, folder)
    if options.tokenizer:
        doc["tokenizer"] = _portable(options.tokenizer, folder)
    # every option written out, so a later change of defaults cannot change the replay
    doc["options"] = {f.name: getattr(options, f.name) for f in fields(BenchOptions)
                      if f.name not in ("chip", "model", "tokenizer")}
    out = []
    for name, value in steps:
        if name in ("chip", "model") and isinstance(value, str):
            value = _portable(value, folder)
        if name == "expect" and isinstance(value, tuple):
            value = _check_table(value)
        out.append({name: value})
    doc["steps"] = out
    return doc


def save_session(path: str | Path, options: BenchOptions, steps: list[tuple[str, object]], *, title: str = "",
                 description: str = "") -> Path:
    """Validate and write a session file atomically; raises SessionError (and writes nothing) if a step is bad."""
    path = Path(path)
    doc = session_document(path, options, steps, title=title, description=description)
    parse_session(doc, path, base=path.parent)  # never write a file that would not replay
    try:
        text = tomli_w.dumps(doc)
    except TypeError as exc:
        raise SessionError(f"a step value cannot be written as TOML ({exc})", source=path) from None
    atomic_write_text(path, text)
    return path
