"""Evaluate a sweep's grid: inline, on every local core (process pool) or on a Dask cluster, resumably.

Work goes out as chunks of point ids; rows come back as formatted cells and are written sorted
by point id, so the files never depend on the number of workers or the order they finish in.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WorkbenchError
from .spec import Sweep
from .store import ResultStore, cell

# result columns first in the table, in this order; anything else a projection reports follows, sorted
RESULT_ORDER = ["fits", "bound", "chips_used", "mapping_used", "ttft_s", "seconds_per_token", "tokens_per_s_per_user",
                "tokens_per_s", "joules_per_token", "watts"]
_ECHOED = {"precision", "batch", "prompt_len", "gen_len"}   # inputs a projection reports back unchanged
_RENAMED = {"chips": "chips_used", "mapping": "mapping_used"}  # inputs it resolves ("auto", None)
_SKIPPED = {"chip", "model"}

Evaluate = Callable[..., Any]  # (chip, config, *, precision, batch, prompt_len, gen_len, chips, mapping) -> result


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep, after the completed rows were written."""

    def __init__(self, done: int, total: int, path: Path):
        super().__init__(f"{done} of {total} points written to {path}")
        self.done, self.total, self.path = done, total, path


@dataclass
class SweepSummary:
    path: Path
    points: int
    evaluated: int     # this run
    resumed: int       # found on disk from an earlier run
    errors: int        # rows whose evaluation raised a WorkbenchError
    seconds: float
    parquet: Path | None


@dataclass
class _Job:
    """What a worker needs: the sweep (chips and models, already validated) and the evaluate function."""

    sweep: Sweep
    evaluate: Evaluate | None


def default_evaluate() -> Evaluate:
    """The real projection engine (workbench.projection.project)."""
    try:
        from ..projection import project
    except ModuleNotFoundError as exc:
        if exc.name == "workbench.projection":
            raise WorkbenchError("the projection engine (workbench/projection.py) is not installed") from None
        raise
    return project


def _flat_result(result: Any) -> dict[str, Any]:
    data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SKIPPED or key in _ECHOED:
            continue
        key = _RENAMED.get(key, key)
        if isinstance(value, Mapping):
            for sub, v in value.items():
                if not isinstance(v, (Mapping, list, tuple)):
                    out[f"{key}.{sub}"] = v
        elif isinstance(value, (list, tuple)):
            if all(not isinstance(v, (Mapping, list, tuple)) for v in value):
                out[key] = "; ".join(str(v) for v in value)  # e.g. the projection's notes
        else:
            out[key] = value
    return out


def evaluate_points(job: _Job, ids: list[int]) -> list[tuple[int, dict[str, str]]]:
    """Rows (formatted cells) for ``ids``; a WorkbenchError at one point becomes that row's ``error``."""
    evaluate = job.evaluate or default_evaluate()
    sweep = job.sweep
    rows = []
    for pid in ids:
        model_index, chip, options, cells = sweep.point(pid)
        row = {k: cell(v) for k, v in cells.items()}
        try:
            result = evaluate(chip, sweep.models[model_index][1], **options)
            row.update({k: cell(v) for k, v in _flat_result(result).items()})
        except WorkbenchError as exc:
            row["error"] = str(exc).replace("\n", " ")
        rows.append((pid, row))
    return rows


_WORKER_JOB: _Job | None = None
CHUNK_TARGET_S = 0.5   # work per chunk: long enough to hide dispatch, short enough that Ctrl-C is prompt
MAX_CHUNK_POINTS = 1024


def timed_points(job: _Job, ids: list[int]) -> tuple[list[tuple[int, dict[str, str]]], float]:
    """``evaluate_points`` and the seconds it took where it ran (for sizing the next chunks)."""
    t0 = time.perf_counter()
    rows = evaluate_points(job, ids)
    return rows, time.perf_counter() - t0


def _init_worker(job: _Job) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it writes what finished
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent around the fork


def _worker_chunk(ids: list[int]) -> tuple[list[tuple[int, dict[str, str]]], float]:
    assert _WORKER_JOB is not None
    return timed_points(_WORKER_JOB, ids)


class _Chunker:
    """Hands out point ids in chunks sized from the measured seconds per point (or a fixed size)."""

    def __init__(self, ids: list[int], fixed: int | None):
        self.ids, self.pos, self.fixed = ids, 0, fixed
        self.points, self.seconds = 0, 0.0

    def next(self) -> list[int] | None:
        if self.pos >= len(self.ids):
            return None
        if self.fixed:
            size = self.fixed
        elif self.points == 0:
            size = 2
        else:
            per_point_s = max(self.seconds / self.points, 1e-7)
            size = max(1, min(MAX_CHUNK_POINTS, int(CHUNK_TARGET_S / per_point_s)))
        chunk = self.ids[self.pos:self.pos + size]
        self.pos += len(chunk)
        return chunk

    def record(self, n_points: int, seconds: float) -> None:
        self.points += n_points
        self.seconds += seconds


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    jobs: int | None = None,
    scheduler: Any = None,
    evaluate: Evaluate | None = None,
    restart: bool = False,
    progress: Callable[[int, int], None] | None = None,
    flush_s: float = 2.0,
    chunk_points: int | None = None,
    scheduler_timeout_s: float = 15.0,
) -> SweepSummary:
    """Evaluate every point of ``sweep`` not already in ``out``; write ``out`` (CSV), its sidecar and Parquet.

    jobs: local worker processes (None = every core; 1 = in this process). scheduler: a Dask
    scheduler address or a ``distributed.Client``. evaluate: the projection function (None = the
    real one). progress(done, total) is called from this thread after every chunk. chunk_points:
    a fixed chunk size (None = sized to about half a second of work).
    """
    if jobs is not None and jobs < 1:
        raise WorkbenchError(f"expected --jobs of at least 1, found {jobs}", key="--jobs")
    if Path(out).suffix.lower() == ".parquet":
        raise WorkbenchError("expected a .csv path (the Parquet file is written beside it), found a .parquet one",
                             source=out, key="-o")
    if evaluate is None:
        default_evaluate()  # fail before any work when the engine is missing
    started = time.perf_counter()
    store = ResultStore(Path(out), sweep.fingerprint, sweep.n_points, sweep.columns(), RESULT_ORDER)
    resumed = store.resume(restart=restart)
    store.flush()  # an unwritable path fails now, not after the first minutes of work
    todo = [i for i in range(sweep.n_points) if i not in store.rows]
    job = _Job(sweep, evaluate)
    workers = jobs or available_cores()
    chunker = _Chunker(todo, chunk_points)
    state = {"last": -math.inf, "cost": 0.0}  # the first finished chunk is written at once, then every flush_s

    def collect(result) -> None:
        rows, seconds = result
        chunker.record(len(rows), seconds)
        store.add(rows)
        if progress:
            progress(len(store.rows), sweep.n_points)
        now = time.perf_counter()
        # rewriting the whole file is O(rows): space flushes so it stays a small share of the run
        if now - state["last"] >= max(flush_s, 10 * state["cost"]):
            store.flush()
            state["cost"] = time.perf_counter() - now
            state["last"] = time.perf_counter()

    if progress:
        progress(len(store.rows), sweep.n_points)
    try:
        if not todo:
            pass
        elif scheduler is not None:
            _run_dask(job, chunker, scheduler, collect, scheduler_timeout_s)
        elif workers == 1:
            while (chunk := chunker.next()) is not None:
                collect(timed_points(job, chunk))
        else:
            _run_pool(job, chunker, workers, collect)
    except KeyboardInterrupt:
        store.flush()
        raise SweepInterrupted(len(store.rows), sweep.n_points, store.path) from None
    store.flush()
    parquet = store.write_parquet()
    errors = sum(1 for r in store.rows.values() if r.get("error"))
    return SweepSummary(store.path, sweep.n_points, len(store.rows) - resumed, resumed, errors,
                        time.perf_counter() - started, parquet)


def _run_pool(job: _Job, chunker: _Chunker, workers: int, collect) -> None:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(max_workers=min(workers, len(chunker.ids)), initializer=_init_worker, initargs=(job,))
    try:
        pending = set()
        # The workers fork at the first submit. A Ctrl-C landing inside os.fork() is swallowed by Python's
        # at-fork hooks, and a child could get one before it ignores SIGINT: hold it until the fork is done.
        mask = hasattr(signal, "pthread_sigmask")
        saved = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if mask else None
        try:
            # two chunks per worker in flight: none idles, and an interrupt leaves little unfinished work
            while len(pending) < 2 * workers and (chunk := chunker.next()) is not None:
                pending.add(pool.submit(_worker_chunk, chunk))
        finally:
            if mask:
                signal.pthread_sigmask(signal.SIG_SETMASK, saved)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                collect(fut.result())
                if (chunk := chunker.next()) is not None:
                    pending.add(pool.submit(_worker_chunk, chunk))
    except BrokenProcessPool:
        raise WorkbenchError("a sweep worker process died (out of memory?); rerun to resume") from None
    except KeyboardInterrupt:
        # What finished is already collected; chunks still running are rerun on resume. Stop the workers
        # outright: a graceful shutdown after Ctrl-C can lose its stop sentinels in the call queue and
        # leave the exit waiting forever on idle workers (seen on CPython 3.11).
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(job: _Job, chunker: _Chunker, scheduler: Any, collect, timeout_s: float) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise WorkbenchError("--scheduler needs dask.distributed, which is not installed "
                             "(pip install 'dask[distributed]')", key="--scheduler") from None
    own = not isinstance(scheduler, Client)
    if own:
        try:
            client = Client(str(scheduler), timeout=f"{timeout_s}s")
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise WorkbenchError(f"cannot reach the Dask scheduler ({exc})", source=str(scheduler),
                                 key="--scheduler") from None
    else:
        client = scheduler
    try:
        shared = client.scatter(job, broadcast=True)
        slots = 2 * max(1, sum(client.nthreads().values()))
        futures = []
        while len(futures) < slots and (chunk := chunker.next()) is not None:
            futures.append(client.submit(timed_points, shared, chunk, pure=False))
        queue = as_completed(futures)
        try:
            for fut in queue:
                collect(fut.result())
                if (chunk := chunker.next()) is not None:
                    nxt = client.submit(timed_points, shared, chunk, pure=False)
                    futures.append(nxt)
                    queue.add(nxt)
        except KeyboardInterrupt:
            client.cancel(futures)
            raise
    finally:
        if own:
            client.close()
