"""Sweep results on disk: a CSV sorted by point id plus a sidecar of completed ids, both replaced atomically.

The CSV on disk is always whole and sorted; the sidecar (``<results>.done.json``) names the sweep
(its fingerprint) and the completed ids, so a rerun of the same sweep skips them.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import WorkbenchError

MAX_SIDECAR_BYTES = 64 * 1024 * 1024


def cell(value: Any) -> str:
    """One CSV cell, formatted the same way on every machine (floats round-trip exactly)."""
    if value is None:
        return ""
    if not isinstance(value, (str, bytes)) and hasattr(value, "item"):
        value = value.item()  # numpy scalar -> Python (repr(np.float64(x)) is "np.float64(x)")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")
    return str(value)


def sidecar_path(results: Path) -> Path:
    return results.with_name(results.name + ".done.json")


def _ranges(ids: Iterable[int]) -> list[list[int]]:
    """Sorted ids as [start, stop) runs: a finished 10^6-point sweep is one pair."""
    out: list[list[int]] = []
    for i in sorted(ids):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


class ResultStore:
    """The rows completed so far (point id -> {column: cell}); ``flush`` rewrites the CSV and sidecar."""

    def __init__(self, path: Path, fingerprint: str, n_points: int, input_columns: list[str], result_order: list[str]):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.n_points = n_points
        self.input_columns = input_columns
        self.result_order = result_order
        self.rows: dict[int, dict[str, str]] = {}

    # -- resume --------------------------------------------------------------------------------
    def resume(self, *, restart: bool = False) -> int:
        """Load rows a previous run of the same sweep completed; returns how many. Refuses another sweep's files."""
        side = sidecar_path(self.path)
        if restart or not side.is_file():
            return 0
        try:
            if side.stat().st_size > MAX_SIDECAR_BYTES:
                raise WorkbenchError(f"expected a sidecar of at most {MAX_SIDECAR_BYTES} bytes, found a larger one", source=side)
            meta = json.loads(side.read_text(encoding="utf-8"))
            fingerprint, total, ranges = meta["fingerprint"], meta["points"], meta["done"]
            done = {i for a, b in ranges for i in range(int(a), min(int(b), self.n_points))}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WorkbenchError(f"expected a sweep sidecar (fingerprint, points, done), found an unreadable one "
                                 f"({type(exc).__name__}); delete it or pass --restart", source=side) from None
        if fingerprint != self.fingerprint or total != self.n_points:
            raise WorkbenchError(f"expected results of this sweep (fingerprint {self.fingerprint}), found another "
                                 f"sweep's ({fingerprint}); choose another -o or pass --restart", source=side)
        if not self.path.is_file():
            return 0
        try:
            with open(self.path, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    pid = int(row["point_id"])
                    if pid in done:
                        self.rows[pid] = {k: v for k, v in row.items() if k is not None}
        except (OSError, ValueError, KeyError, csv.Error) as exc:
            raise WorkbenchError(f"expected the CSV this sweep wrote, found an unreadable one ({type(exc).__name__}); "
                                 f"pass --restart to start over", source=self.path) from None
        return len(self.rows)

    # -- write ---------------------------------------------------------------------------------
    def add(self, rows: Iterable[tuple[int, dict[str, str]]]) -> None:
        for pid, row in rows:
            self.rows[pid] = row

    def columns(self) -> list[str]:
        """Inputs, then results in the preferred order, then any other result columns sorted, then error."""
        seen = set().union(*(r.keys() for r in self.rows.values())) if self.rows else set()
        cols = list(self.input_columns)
        known = set(cols) | {"error"}
        cols += [c for c in self.result_order if c in seen and c not in known]
        known |= set(cols)
        cols += sorted(c for c in seen if c not in known)
        return cols + ["error"]

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        cols = self.columns()
        writer.writerow(cols)
        for pid in sorted(self.rows):
            row = self.rows[pid]
            writer.writerow([row.get(c, "") for c in cols])
        return out.getvalue()

    def flush(self) -> None:
        """Results first, then the sidecar: a crash between the two only forgets finished work."""
        atomic_write_text(self.path, self.csv_text())
        meta = {"fingerprint": self.fingerprint, "points": self.n_points, "done": _ranges(self.rows)}
        atomic_write_text(sidecar_path(self.path), json.dumps(meta, separators=(",", ":")) + "\n")

    def write_parquet(self) -> Path | None:
        """``<results>.parquet`` beside the CSV when pyarrow is importable; numeric columns typed as numbers."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            return None
        cols = self.columns()
        ordered = [self.rows[pid] for pid in sorted(self.rows)]
        arrays = {}
        for c in cols:
            raw = [r.get(c, "") for r in ordered]
            arrays[c] = _typed(raw)
        table = pa.table(arrays)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        target = self.path.with_suffix(".parquet")
        atomic_write_bytes(target, sink.getvalue().to_pybytes())
        return target


def _typed(raw: list[str]) -> list:
    """A column of cells as ints, floats or bools when every non-empty cell is one; else the strings."""
    present = [v for v in raw if v != ""]
    if present and all(v in ("true", "false") for v in present):
        return [None if v == "" else v == "true" for v in raw]
    for kind in (int, float):
        try:
            return [None if v == "" else kind(v) for v in raw]
        except ValueError:
            continue
    return raw


def read_results(path: str | Path) -> list[dict[str, str]]:
    """The rows of a results CSV, as cells (strings), in file order."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [{k: v for k, v in row.items() if k is not None} for row in csv.DictReader(fh)]
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise WorkbenchError(f"expected a results CSV, found an unreadable file ({type(exc).__name__})", source=path) from None
