"""Drop numba's on-disk compiled code when the core's sources change.

numba checks only the timestamp of the file a cached function is defined in, so a cached executor keeps running
the kernels, opcodes and constants it was compiled with after kernels.py or isa.py change, and silently computes
the old way. The stamp below hashes every core source file's size and time (all but the cli and tui faces); when it
differs from the one beside the cache, every cached ``.nbi``/``.nbc`` of this package is removed first.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
FACES = ("cli", "tui")
STAMP = "asicbench-sources.sha256"


def sources_digest(package: Path = PACKAGE) -> str:
    """sha256 over the core's .py files: path, size and modification time (what numba itself checks, for every
    file instead of one), in sorted order. A stat per file: no source is read at start-up."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.parts[0] in FACES:
            continue
        st = path.stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_root(package: Path = PACKAGE) -> Path:
    """Where numba keeps this package's cache: NUMBA_CACHE_DIR (which mirrors source paths) or the package."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    return Path(env) if env else package


def refresh(root: Path, digest: str) -> int:
    """Remove the cached compiled code under ``root`` unless its stamp says ``digest``; returns files removed.
    Best effort: a read-only install keeps its cache (the doctor command reports an unwritable cache)."""
    stamp = root / STAMP
    try:
        if stamp.read_text().strip() == digest:
            return 0
    except OSError:
        pass
    removed = 0
    for pattern in ("*.nbi", "*.nbc"):
        for f in root.rglob(pattern):
            if root != PACKAGE and "workbench" not in f.parts:
                continue  # a shared NUMBA_CACHE_DIR: only this package's entries
            try:
                f.unlink()
                removed += 1
            except OSError:
                pass
    try:
        from .atomic import atomic_write_text

        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stamp, digest + "\n")
    except Exception:  # noqa: BLE001 - an unwritable cache only costs recompiling next time
        pass
    return removed


def ensure_fresh() -> None:
    refresh(cache_root(), sources_digest())
