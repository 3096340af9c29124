"""Saving what the user did as a session file (the sessions format: chip, model, [options], [[steps]])."""

from __future__ import annotations

import importlib
from pathlib import Path

import tomli_w

from ..atomic import atomic_write_text
from ..bench import BenchOptions

OPTION_KEYS = ("precision", "mapping", "batch", "prompt", "temperature", "seed", "context")


def session_document(options: BenchOptions, steps) -> dict:
    """The TOML document of a session that starts from ``options`` and replays ``steps``."""
    doc = {"chip": options.chip, "model": options.model}
    if options.tokenizer:
        doc["tokenizer"] = options.tokenizer
    doc["options"] = {k: getattr(options, k) for k in OPTION_KEYS}
    doc["steps"] = [{name: value} for name, value in steps]
    return doc


def save_session(path: str | Path, options: BenchOptions, steps) -> Path:
    """Use the sessions module's writer when it exists; else write the same format here, atomically."""
    try:
        record = importlib.import_module("workbench.session.record")
    except ModuleNotFoundError:
        record = None
    if record is not None and hasattr(record, "save_session"):
        record.save_session(path, options, list(steps))
    else:
        atomic_write_text(path, tomli_w.dumps(session_document(options, steps)))
    return Path(path)
