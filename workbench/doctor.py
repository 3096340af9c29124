"""Health checks for ``asicbench doctor``: numba compiles and caches, bundled data is found, the terminal fits."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_checks() -> list[Check]:
    checks = []
    from . import __version__

    versions = [f"asicbench {__version__}", f"python {sys.version.split()[0]}"]
    from importlib import metadata

    for mod in ("numpy", "numba", "textual", "rich", "typer", "gguf", "safetensors", "tomli-w"):
        try:
            __import__(mod.replace("-", "_"))
            versions.append(f"{mod} {metadata.version(mod)}")
        except Exception as exc:  # a missing or broken package is exactly what doctor reports
            checks.append(Check(f"import {mod}", False, str(exc)))
    checks.append(Check("versions", True, ", ".join(versions)))

    try:
        from numba import njit

        @njit(cache=False, nogil=True)
        def _probe(n):
            s = 0
            for i in range(n):
                s += i
            return s

        ok = _probe(10) == 45
        checks.append(Check("numba compiles", ok, "a nogil kernel compiled and ran" if ok else "wrong result"))
    except Exception as exc:
        checks.append(Check("numba compiles", False, str(exc)))

    cache_dir = os.environ.get("NUMBA_CACHE_DIR") or str(Path(__file__).resolve().parent / "machine" / "__pycache__")
    folder = Path(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
        checks.append(Check("numba cache writable", True, str(folder)))
    except OSError as exc:
        checks.append(Check("numba cache writable", False, f"{folder}: {exc.strerror}; set NUMBA_CACHE_DIR to a writable folder"))

    from .data import bundled_names

    chips = bundled_names("chips", (".toml",))
    models = bundled_names("models", (".gguf", ".toml"))
    sessions = bundled_names("sessions", (".toml",))
    checks.append(Check("bundled chips", "teaching-4x4" in chips, f"{len(chips)} found"))
    checks.append(Check("bundled models", "tinytales" in models, f"{len(models)} found (tinytales {'present' if 'tinytales' in models else 'MISSING'})"))
    checks.append(Check("bundled sessions", True, f"{len(sessions)} found"))
    try:
        from .chip import load_chip

        load_chip("teaching-4x4")
        checks.append(Check("default chip loads", True, "teaching-4x4"))
    except Exception as exc:
        checks.append(Check("default chip loads", False, str(exc)))

    size = shutil.get_terminal_size((0, 0))
    term = os.environ.get("TERM", "")
    if not sys.stdout.isatty():
        checks.append(Check("terminal", True, "not a terminal (fine for headless commands; the TUI needs one)"))
    else:
        ok = size.columns >= 80 and size.lines >= 24 and term not in ("", "dumb")
        checks.append(Check("terminal", ok, f"{size.columns}x{size.lines}, TERM={term or 'unset'}"
                            + ("" if ok else "; the TUI needs at least 80x24 and a real TERM")))
    colour = "NO_COLOR set: panes use no colour" if os.environ.get("NO_COLOR") else "colour on"
    checks.append(Check("colour", True, colour))
    return checks
