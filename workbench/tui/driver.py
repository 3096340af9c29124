"""The machine side of the TUI: a thread loop that owns the Bench, runs commands, and publishes Frames.

No textual here: the app hands jobs in through :meth:`Driver.submit` and reads ``Driver.latest``
(a "latest snapshot" slot) from a timer, so emulation never floods the event loop.
"""

from __future__ import annotations

import queue
import threading
import time
from bisect import insort
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from ..bench import Bench, parse_projection_text
from ..commands import BY_NAME
from ..counters import Counters, Snapshot
from ..errors import WorkbenchError
from ..session.runner import Ledger

FRAME_INTERVAL_S = 1 / 15     # at most 15 frames a second while running (the UI shows at most 15)
RUN_SLICE_S = 0.02            # while running, the job queue is looked at between slices of tokens this long
REF_STEPS_PER_FRAME = 16      # the f32 reference catches up a few tokens per frame so running stays fast


@dataclass(frozen=True)
class Frame:
    """What the panes show, copied out of the machine at one moment (immutable once published).

    last: counters of the current (or last completed) token only; history: StepRecords so far;
    pieces: decoded text of each generated token of sequence 0; ref_match: per generated token, True/False
    when checked against the f32 reference's argmax, absent when not yet checked. epoch changes when the
    machine is rebuilt or reset (history, pieces and ref_match only grow within one epoch). decode_*: count,
    summed joules and seconds, and median seconds of the decode steps in history (kept up to date incrementally,
    so panes need not walk the whole history at every refresh).
    """

    version: int
    epoch: int
    bench: Bench
    snapshot: Snapshot
    last: Counters
    last_complete: bool
    history: tuple
    pos: int
    pc: int
    in_pass: bool
    prompt_pieces: tuple[str, ...]
    pieces: tuple[str, ...]
    ref_match: tuple[bool, ...]
    spill_step: int | None
    running: bool
    note: str | None = None
    status: str = ""
    decode_count: int = 0
    decode_joules: float = 0.0
    decode_seconds: float = 0.0
    decode_median_s: float = 0.0


class _Tally:
    """Decode-step aggregates over a machine's history, extended by the records added since the last call."""

    def __init__(self) -> None:
        self.seen = 0
        self.count = 0
        self.joules = 0.0
        self.seconds = 0.0
        self.sorted_s: list[float] = []

    def update(self, history: list) -> None:
        if len(history) < self.seen:  # the history was cleared under us: start over
            self.__init__()
        for h in history[self.seen:]:
            if not h.prefill:
                self.count += 1
                self.joules += h.joules
                self.seconds += h.seconds
                insort(self.sorted_s, h.seconds)
        self.seen = len(history)

    def median(self) -> float:
        s, n = self.sorted_s, len(self.sorted_s)
        if not n:
            return 0.0
        return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


@dataclass
class _RefState:
    """Teacher-forced f32 reference: argmax of its logits at each position vs the machine's token."""

    ref: object
    expected: list[int] = field(default_factory=list)
    logits: np.ndarray | None = None


class Driver:
    """Owns the Bench; executes commands from a queue in :meth:`loop` (run it in a thread worker)."""

    def __init__(self, bench: Bench):
        self.bench = bench
        self.start_options = bench.options           # a saved session starts here and replays self.steps
        self.jobs: queue.Queue = queue.Queue()
        self.running = threading.Event()
        self.stopping = threading.Event()
        self.waiting_note = threading.Event()
        self.idle = threading.Event()
        self.events: queue.SimpleQueue = queue.SimpleQueue()  # ("error" | "status" | "note", one line) for the UI
        self.steps: list[tuple[str, object]] = []   # executed (command, value), the session being recorded
        self.script: deque = deque()                 # session steps still to replay
        self.match_reference = False
        self.latest: Frame | None = None
        self._version = 0
        self._epoch = 0
        self._last_publish = 0.0
        self._run_tokens = 0
        self.status = ""
        self.note: str | None = None
        self._after_rebuild()
        self.ledger = Ledger(bench)                  # marks, expectations and projections, as a replay keeps them
        self.checked: list[list] = []                # each expect step's (check, value, ok, message) rows
        self._projections = 0

    # -- called from the UI thread --------------------------------------------------------------
    def submit(self, name: str, value=None) -> None:
        if name not in BY_NAME:
            raise WorkbenchError(f"unknown command '{name}'")
        if name == "run":
            self.toggle_run()
            return
        self.jobs.put((name, value))

    def toggle_run(self) -> None:
        if self.waiting_note.is_set():
            self.waiting_note.clear()
            self.note = None
            return
        if self.running.is_set():
            self.running.clear()
        else:
            self.jobs.put(("run", None))

    def pause(self) -> None:
        self.running.clear()

    def load_script(self, steps) -> None:
        self.script.extend((str(k), v) for k, v in steps)

    def stop(self) -> None:
        self.running.clear()
        self.stopping.set()

    # -- the worker loop ------------------------------------------------------------------------
    def loop(self) -> None:
        self.publish(force=True)
        while not self.stopping.is_set():
            if self.running.is_set():
                if self.jobs.empty():
                    self._guard(self._run_slice)
                    continue
                self._guard(self._execute, *self.jobs.get_nowait())
                continue
            self._finish_run()
            if not self.waiting_note.is_set() and self.jobs.empty() and self.script:
                self.jobs.put(self.script.popleft())
            try:
                job = self.jobs.get(timeout=0.02)
            except queue.Empty:
                self.idle.set()
                continue
            self.idle.clear()
            self._guard(self._execute, *job)
            self.publish(force=True)

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except WorkbenchError as exc:  # MachineFault included: one line to the UI, the loop lives on
            self.running.clear()
            self.script.clear()
            self._finish_run()
            self.events.put(("error", str(exc)))
            self.publish(force=True)

    def _execute(self, name: str, value) -> None:
        m = self.bench.machine
        if name == "generate":
            if value == "eos":
                self._generate(m.plan.context, until_eos=True)
                self._record("generate", "eos")
            else:
                n = 1 if value is None else int(value)
                if n < 1:
                    raise WorkbenchError(f"generate expects a positive number of tokens, got {value!r}", key="generate")
                done = self._generate(n)
                self._record("generate", done)
        elif name == "run":
            self._finish_run()
            self.running.set()
        elif name in ("step_layer", "step_op"):
            toks = m.step_layer() if name == "step_layer" else m.step_op()
            if toks is not None:
                self._token_done()
            self._record(name, 1)
            where = f"pc {m.pc}/{len(m.program.ops)}" if m.in_pass else "token done"
            self._set_status(f"{name.replace('_', ' ')}: {where}")
        elif name == "reset":
            self._rebuild(lambda: m.set_prompt(self.bench.prompt_ids))
            self._record("reset", True)
            self._set_status("reset: KV cache emptied, counters zeroed, prompt queued")
        elif name == "note":
            self.note = str(value)
            self.waiting_note.set()
            self.events.put(("note", self.note))
        elif name == "mark":
            self._set_status(self.ledger.mark(str(value)))
            self._record("mark", str(value))
        elif name == "expect":
            head, results = self.ledger.expect(value)
            self.checked.append(results)
            lines = [("✓ " if ok else "✗ ") + msg for _, _, ok, msg in results]
            self.events.put(("expect" if all(r[2] for r in results) else "expect-failed", "\n".join([head, *lines])))
            self._set_status(head)
            self._record("expect", value)
        elif name == "project":
            if isinstance(value, dict):
                params = value
            else:
                self._projections += 1
                params = parse_projection_text(str(value or ""), default_mark=f"projection-{self._projections}")
            line = self.ledger.project(params)
            self.events.put(("projection", line))
            self._set_status(line)
            self._record("project", params)
        else:  # an option: recompile and reset
            msg = self._rebuild(lambda: self.bench.set(name, value))
            self._record(name, getattr(self.bench.options, name))
            self._set_status(msg)

    def _rebuild(self, change):
        """Recompile or reset through ``change()``: the open window keeps what the old machine did. On an
        error the bench has already restored its old options on a fresh machine, so counting restarts either way."""
        self.ledger.commit()
        try:
            return change()
        finally:
            self._after_rebuild()
            self.ledger.start_segment()

    def _generate(self, n: int, until_eos: bool = False) -> int:
        done = 0
        while done < n and not self.stopping.is_set():
            toks = self._token()
            done += 1
            if until_eos and toks[0] in (self.bench.eos_id, 1):
                break
            if self.bench.machine.pos >= self.bench.machine.plan.context:
                break
        return done

    def _run_slice(self) -> None:
        """Tokens for about RUN_SLICE_S, or until a pause (checked before every token) or a queued job."""
        end = time.perf_counter() + RUN_SLICE_S
        running, jobs = self.running, self.jobs
        while True:
            self._token(True)
            if not running.is_set() or time.perf_counter() >= end or not jobs.empty():
                return

    def _token(self, running: bool = False) -> list[int]:
        toks = self.bench.machine.step_token()
        if running:  # counted even when the pause arrived during this token: it was produced
            self._run_tokens += 1
        self._token_done()
        return toks

    def _finish_run(self) -> None:
        if self._run_tokens:
            self._record("generate", self._run_tokens)
            self._run_tokens = 0
            self.publish(force=True)  # the panes must see "paused" and the last tokens

    def _record(self, name: str, value) -> None:
        if name == "generate" and self.steps and self.steps[-1][0] == "generate" and value != "eos" \
                and self.steps[-1][1] != "eos":
            self.steps[-1] = ("generate", self.steps[-1][1] + value)
        else:
            self.steps.append((name, value))

    def _set_status(self, msg: str) -> None:
        self.status = msg
        self.events.put(("status", msg))

    # -- bookkeeping per token ------------------------------------------------------------------
    def _after_rebuild(self) -> None:
        m = self.bench.machine
        # counters at the start of the current token (_mark) and of the last completed one (_prev_mark):
        # two buffers swapped per token, the difference taken only when a frame is published
        self._mark = m.counters.copy()
        self._prev_mark = m.counters.copy()
        self._last_complete = False
        self._spill_step: int | None = None
        self._min_cap = int(m.plan.kv_capacity.min()) if m.plan.kv_capacity.size else 0
        tok = self.bench.model.tokenizer
        self._prompt_pieces = tuple(self._piece(a, b) for a, b in zip([None] + m.prompt[:-1], m.prompt))[1:] \
            if tok else tuple(f"{i} " for i in m.prompt)
        self._pieces: list[str] = []
        self._ref: _RefState | None = None
        self._tally = _Tally()
        self._epoch += 1
        self._machine_id = id(m)

    def _piece(self, prev, token: int) -> str:
        tok = self.bench.model.tokenizer
        if tok is None:
            return f"{token} "
        return tok.decode_piece(prev if prev is not None else tok.bos_id, token)

    def _token_done(self) -> None:
        m = self.bench.machine
        c = m.counters
        self._prev_mark, self._mark = self._mark, self._prev_mark
        for dst, src in zip(self._mark.arrays(), c.arrays()):
            np.copyto(dst, src)
        self._last_complete = True
        if self._spill_step is None and m.pos > self._min_cap:
            self._spill_step = len(m.history)
        if time.perf_counter() - self._last_publish >= FRAME_INTERVAL_S:
            self.publish()

    def _decode_new(self) -> None:
        """Text of the tokens generated since the last frame."""
        m = self.bench.machine
        gen = m.generated[0]
        while len(self._pieces) < len(gen):
            i = len(self._pieces)
            prev = gen[i - 1] if i else (m.prompt[-1] if m.prompt else None)
            self._pieces.append(self._piece(prev, gen[i]))

    def _reference_catch_up(self) -> tuple[bool, ...]:
        m = self.bench.machine
        gen = m.generated[0]
        if self._ref is None:
            from ..model.reference import Reference

            self._ref = _RefState(Reference(self.bench.model, batch=1, max_seq=m.plan.context))
            self._ref.logits = self._ref.ref.prefill(np.asarray([m.prompt], dtype=np.int64))
        r = self._ref
        budget = REF_STEPS_PER_FRAME
        while len(r.expected) < len(gen) and budget and r.logits is not None:
            r.expected.append(int(np.argmax(r.logits[0])))
            fed = gen[len(r.expected) - 1]
            r.logits = r.ref.step(np.array([fed], dtype=np.int64)) if r.ref.pos < r.ref.max_seq else None
            budget -= 1
        return tuple(e == g for e, g in zip(r.expected, gen))

    def publish(self, force: bool = False) -> None:
        """Overwrite the latest-frame slot (at most every FRAME_INTERVAL_S unless forced)."""
        now = time.perf_counter()
        if not force and now - self._last_publish < FRAME_INTERVAL_S:
            return
        self._last_publish = now
        m = self.bench.machine
        if id(m) != self._machine_id:
            self._after_rebuild()
        last = self._mark.minus(self._prev_mark) if self._last_complete and not m.in_pass \
            else m.counters.minus(self._mark)
        match = self._reference_catch_up() if self.match_reference else ()
        self._decode_new()
        t = self._tally
        t.update(m.history)
        self._version += 1
        self.latest = Frame(self._version, self._epoch, self.bench, m.snapshot(), last, not m.in_pass,
                            tuple(m.history), m.pos, m.pc, m.in_pass, self._prompt_pieces, tuple(self._pieces), match,
                            self._spill_step, self.running.is_set(), self.note, self.status, t.count, t.joules,
                            t.seconds, t.median())

    def options_with(self, name: str, value):
        return replace(self.bench.options, **{name: value})
