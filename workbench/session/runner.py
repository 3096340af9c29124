"""Replay a SessionSpec on a Bench: run each step, keep counters per mark window, check expectations.

A window is everything between two marks (or the start and the first mark). Window metrics are
sums over the token steps and counter deltas of that interval, across recompiles (see docs/sessions.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .. import cost
from ..bench import Bench
from ..counters import Counters, energy
from ..errors import SessionError, WorkbenchError
from ..machine import isa
from .spec import Check, SessionSpec, Step


@dataclass
class Window:
    """Scalar accumulators of one window. seconds/joules from counter deltas; decode_* from token steps."""

    steps: int = 0                 # token steps (one token per sequence each)
    decode_steps: int = 0
    decode_tokens: int = 0         # decode steps x batch
    decode_seconds: float = 0.0
    decode_joules: float = 0.0
    ttft_s: float | None = None
    seconds: float = 0.0
    joules: float = 0.0
    offchip_bytes: int = 0
    kv_tokens_spilled: int = 0
    noc_hop_bytes: int = 0
    hottest_link_bytes: int = 0
    allreduce_bytes: int = 0
    allgather_bytes: int = 0
    moe_routing_bytes: int = 0
    agree: int = 0
    compared: int = 0
    token_ids: list[int] = field(default_factory=list)   # sequence 0
    text: str = ""

    def metrics(self) -> dict[str, object]:
        """The expectation vocabulary; None where the window has nothing to measure it on."""
        ds, dsec = self.decode_steps, self.decode_seconds
        return {
            "tokens": self.steps,
            "tokens_per_s": self.decode_tokens / dsec if dsec > 0 else None,
            "tokens_per_s_per_user": ds / dsec if dsec > 0 else None,
            "ms_per_token": 1e3 * dsec / ds if ds else None,
            "joules_per_token": self.decode_joules / self.decode_tokens if self.decode_tokens else None,
            "watts": self.decode_joules / dsec if dsec > 0 else None,
            "ttft_s": self.ttft_s,
            "kv_tokens_spilled": self.kv_tokens_spilled,
            "offchip_bytes": self.offchip_bytes,
            "agreement_with_f32": self.agree / self.compared if self.compared else None,
            "seconds": self.seconds,
            "joules": self.joules,
            "noc_hop_bytes": self.noc_hop_bytes,
            "hottest_link_bytes": self.hottest_link_bytes,
            "allreduce_bytes": self.allreduce_bytes,
            "allgather_bytes": self.allgather_bytes,
            "moe_routing_bytes": self.moe_routing_bytes,
            "text": self.text,
        }


@dataclass
class Outcome:
    """What one step did. ``checks``: (Check, value, ok, message) for expect steps."""

    step: Step
    message: str
    checks: list[tuple[Check, object, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c[2] for c in self.checks)


@dataclass
class Segment:
    """One compiled configuration between recompiles/resets: its options, final counters and tokens."""

    options: dict
    plan_mapping: str
    n_tiles: int
    clock_ghz: float
    counters: Counters
    history: list
    generated: list[list[int]]
    prompt: list[int]
    text: str
    link_dst: np.ndarray  # (T*4,) tile each directed link leads to, -1 where there is no link
    chip_name: str
    plan: object


@dataclass
class ReplayResult:
    spec: SessionSpec
    outcomes: list[Outcome]
    marks: dict[str, dict]
    segments: list[Segment]
    final: dict
    token_rows: list[dict] = field(default_factory=list)

    @property
    def failures(self) -> list[tuple[Outcome, tuple]]:
        return [(o, c) for o in self.outcomes for c in o.checks if not c[2]]

    @property
    def ok(self) -> bool:
        return not self.failures


def link_destinations(topology) -> np.ndarray:
    """(T*4,) the tile each directed link leads to (-1 = no such link), read off the one-hop routes."""
    return topology.link_destination()


def counter_totals(chip, c: Counters) -> dict[str, object]:
    """Totals of a Counters for reports and --json: plain ints/floats/lists, stable keys."""
    seconds = c.cycles / (chip.clock_ghz * 1e9)
    e = energy(chip, c, seconds)
    return {
        "cycles": c.cycles,
        "seconds": seconds,
        "energy_pj": {k: v for k, v in e.items() if v},
        "macs": {p: int(c.tile_macs[:, i].sum()) for p, i in cost.PREC_INDEX.items() if c.tile_macs[:, i].any()},
        "vector_ops": int(c.tile_vec.sum()),
        "sram_read_bytes": int(c.sram_rd.sum()),
        "sram_write_bytes": int(c.sram_wr.sum()),
        "offchip_bytes": int(c.off_rd.sum() + c.off_wr.sum()),
        "hop_bytes": int(c.hop_bytes[0]),
        "traffic_bytes": {isa.KIND_NAMES[k]: int(v) for k, v in enumerate(c.kind_bytes) if v},
        "op_count": {isa.OPCODE_NAMES[k]: int(v) for k, v in enumerate(c.op_count) if v},
        "tile_macs": [int(v) for v in c.tile_macs.sum(axis=1)],
        "tile_busy_cycles": [float(v) for v in c.busy],
        "link_bytes_max": int(c.link_bytes.max()) if len(c.link_bytes) else 0,
    }


class Ledger:
    """Windows, marks and expectations over a bench that something else drives: a Replay, or the TUI's driver.

    Call ``start_segment()`` after every recompile or reset and ``commit()`` before one; ``mark``, ``expect``
    and ``project`` read the machine's own history and counters, however its tokens were produced."""

    def __init__(self, bench: Bench | None = None):
        self.bench = bench
        self.marks: dict[str, dict] = {}
        self._window = Window()
        self._refs: dict[int, dict] = {}
        if bench is not None:
            self.start_segment()

    def start_segment(self) -> None:
        m = self.bench.machine
        self._seg_counters = m.counters.copy()
        self._seg_hist = len(m.history)
        self._seg_gen = len(m.generated[0])

    def commit(self) -> None:
        """Fold the current machine's activity into the open window and start counting afresh."""
        self._window = self._fold(self._window)
        self.start_segment()

    def mark(self, name: str) -> str:
        """Close the window since the previous mark under ``name``; one line saying what it measured."""
        self.commit()
        metrics = self._window.metrics()
        metrics["counters"] = counter_totals(self.bench.chip, self.bench.machine.counters)
        self.marks[name] = metrics
        self._window = Window()
        return f"mark {name}: {_summary(metrics)}"

    def project(self, params: dict) -> str:
        """Project a big model (bench.projection_params) and keep the result as mark ``params['mark']``."""
        from ..bench import projection_metrics

        metrics = projection_metrics(self.bench.project(params))
        self.marks[params["mark"]] = metrics
        return f"{params['mark']}: {metrics['text']}; {_summary(metrics)}"

    def _fold(self, base: Window) -> Window:
        """``base`` plus the current machine's activity since the window (or segment) started."""
        b, m = self.bench, self.bench.machine
        w = replace(base, token_ids=list(base.token_ids))
        delta = m.counters.minus(self._seg_counters)
        seconds = (m.counters.cycles - self._seg_counters.cycles) / (m.chip.clock_ghz * 1e9)
        w.seconds += seconds
        w.joules += sum(energy(m.chip, delta, seconds).values()) * 1e-12
        w.offchip_bytes += int(delta.off_rd.sum() + delta.off_wr.sum())
        w.noc_hop_bytes += int(delta.hop_bytes[0])
        w.hottest_link_bytes = max(w.hottest_link_bytes, int(delta.link_bytes.max()) if len(delta.link_bytes) else 0)
        w.allreduce_bytes += int(delta.kind_bytes[isa.KIND_ALLREDUCE])
        w.allgather_bytes += int(delta.kind_bytes[isa.KIND_ALLGATHER])
        w.moe_routing_bytes += int(delta.kind_bytes[isa.KIND_MOE])
        for rec in m.history[self._seg_hist:]:
            w.steps += 1
            if rec.prefill:
                if w.ttft_s is None:
                    w.ttft_s = m.ttft_s
            else:
                w.decode_steps += 1
                w.decode_tokens += len(rec.tokens)
                w.decode_seconds += rec.seconds
                w.decode_joules += rec.joules
        new_ids = m.generated[0][self._seg_gen:]
        w.token_ids += new_ids
        w.text += b.decode(new_ids) if new_ids else ""
        w.kv_tokens_spilled = int(m.kv_occupancy()[1].max()) if m.pos else 0
        if new_ids:
            agree, n = self._agreement(self._seg_gen, len(m.generated[0]))
            w.agree += agree
            w.compared += n
        return w

    def _agreement(self, start: int, stop: int) -> tuple[int, int]:
        """Teacher-forced top-1 agreement of generated tokens start:stop (sequence 0) with the f32 reference."""
        from ..model.reference import forward_full, load_weights

        b, m = self.bench, self.bench.machine
        key = id(b.model)
        if key not in self._refs:
            self._refs = {key: load_weights(b.model)}
        seq = list(m.prompt) + m.generated[0][:stop]
        n_prompt = len(m.prompt)
        logits = forward_full(b.model, np.asarray(seq[:-1], dtype=np.int64), self._refs[key])
        # token generated[i] was predicted from position n_prompt - 1 + i
        pred = np.argmax(logits[n_prompt - 1 + start: n_prompt - 1 + stop], axis=-1)
        got = np.asarray(m.generated[0][start:stop])
        return int((pred == got).sum()), stop - start

    def expect(self, checks) -> tuple[str, list[tuple[Check, object, bool, str]]]:
        """Evaluate an expect step's Checks: a headline ("expect: 2/3 hold") and (check, value, ok, message)."""
        open_window = self._fold(self._window).metrics()
        results = []
        for chk in checks:
            metrics = self.marks[chk.at] if chk.at else open_window
            if chk.kind == "text":
                found = chk.bound in metrics["text"]
                ok = found if chk.metric == "text_contains" else not found
                msg = f"text {'contains' if found else 'does not contain'} {chk.bound!r}"
                results.append((chk, metrics["text"], ok, msg))
                continue
            if chk.kind == "ratio":
                num, den = self.marks[chk.at][chk.metric], self.marks[chk.over][chk.metric]
                value = num / den if num is not None and den else None
            else:
                value = metrics[chk.metric]
            if value is None:
                results.append((chk, None, False, f"{chk.describe()}: undefined in this window"
                                                  f" (no decode step or nothing to compare)"))
                continue
            ok = _compare(value, chk.op, chk.bound)
            margin = value - chk.bound
            rel = f" ({margin / chk.bound:+.1%})" if chk.bound else ""
            msg = f"{chk.describe()}: found {value:.6g}, {'holds' if ok else 'FAILS'} by {abs(margin):.4g}{rel}"
            results.append((chk, value, ok, msg))
        fails = sum(not r[2] for r in results)
        return f"expect: {len(results) - fails}/{len(results)} hold", results


class Replay(Ledger):
    """Drives one session. ``on_outcome(outcome)`` is called after every step; ``trace`` (export.TraceRecorder)
    makes token steps run op by op while it wants more (the same ops, so the same results)."""

    def __init__(self, spec: SessionSpec, *, on_outcome: Callable[[Outcome], None] | None = None, trace=None):
        self.spec = spec
        self.on_outcome = on_outcome
        self.trace = trace
        super().__init__()
        self.outcomes: list[Outcome] = []
        self.segments: list[Segment] = []
        self.token_rows: list[dict] = []   # one per token step: chip time/energy and counter deltas
        self._row_counters: Counters | None = None

    def start_segment(self) -> None:
        super().start_segment()
        m = self.bench.machine
        self._row_counters = m.counters.copy()
        if self.trace is not None:
            self.trace.begin_segment(m)

    def _after_token(self, toks) -> None:
        m = self.bench.machine
        rec, d = m.history[-1], m.counters.minus(self._row_counters)
        self._row_counters = m.counters.copy()
        self.token_rows.append({
            "segment": len(self.segments), "pos": m.pos, "prefill": rec.prefill, "token": toks[0],
            "text": self.bench.decode([toks[0]]), "cycles": rec.cycles, "seconds": rec.seconds, "joules": rec.joules,
            "macs": int(d.tile_macs.sum()), "vector_ops": int(d.tile_vec.sum()), "sram_read_bytes": int(d.sram_rd.sum()),
            "sram_write_bytes": int(d.sram_wr.sum()), "offchip_bytes": int(d.off_rd.sum() + d.off_wr.sum()),
            "hop_bytes": int(d.hop_bytes[0]), "kv_tokens_spilled": int(m.kv_occupancy()[1].max())})

    def _close_segment(self) -> None:
        b, m = self.bench, self.bench.machine
        self.segments.append(Segment(
            {k: v for k, v in b.options.__dict__.items()}, m.plan.mapping, m.plan.n_tiles, m.chip.clock_ghz,
            m.counters.copy(), list(m.history), [list(g) for g in m.generated], list(m.prompt), b.text(),
            link_destinations(m.plan.topology), m.chip.name, m.plan))
        if self.trace is not None:
            self.trace.end_segment(m)

    # -- steps -------------------------------------------------------------------------------------
    def run(self) -> ReplayResult:
        try:
            self.bench = Bench(self.spec.options, base=self.spec.base)
        except WorkbenchError as exc:
            raise SessionError(f"cannot set up the bench: {exc}", source=self.spec.source) from None
        self.start_segment()
        for step in self.spec.steps:
            try:
                outcome = self._do(step)
            except SessionError:
                raise
            except WorkbenchError as exc:
                raise SessionError(f"{step.name}: {exc}", source=self.spec.source, key=f"step {step.number}") from None
            self.outcomes.append(outcome)
            if self.trace is not None:
                self.trace.instant(self.bench.machine, f"{step.number} {step.name}", outcome.message)
            if self.on_outcome is not None:
                self.on_outcome(outcome)
        self.commit()
        self._close_segment()
        return ReplayResult(self.spec, self.outcomes, self.marks, self.segments, self._final(), self.token_rows)

    def _final(self) -> dict:
        m = self.bench.machine
        return {"tokens": [list(g) for g in m.generated], "text": self.bench.text(), "pos": m.pos,
                "counters": counter_totals(m.chip, m.counters)}

    def _token(self) -> list[int]:
        m = self.bench.machine
        if self.trace is None or not self.trace.wants_more():
            toks = m.step_token()
            self._after_token(toks)
            return toks
        while True:
            toks = self._op()
            if toks is not None:
                return toks

    def _op(self) -> list[int] | None:
        m = self.bench.machine
        if self.trace is None or not self.trace.wants_more():
            toks = m.step_op()
        else:
            index = m.pc if m.in_pass else 0
            before = m.counters.copy()
            toks = m.step_op()
            self.trace.op(m, index, before)
            if toks is not None:
                self.trace.token(m)
        if toks is not None:
            self._after_token(toks)
        return toks

    def _do(self, step: Step) -> Outcome:
        b, name, value = self.bench, step.name, step.value
        if name in ("generate", "run"):
            return Outcome(step, self._generate(value))
        if name in ("step_op", "step_layer"):
            m = b.machine
            done = None
            for _ in range(value):
                if name == "step_op":
                    done = self._op()
                else:  # a layer is a run of ops up to the next layer start
                    if self.trace is not None and self.trace.wants_more():
                        if not m.in_pass:
                            done = self._op()
                        starts = m.program.layer_starts
                        stop = next((int(s) for s in starts if s > m.pc), len(m.program.ops))
                        while done is None and m.in_pass and m.pc < stop:
                            done = self._op()
                    else:
                        done = m.step_layer()
                        if done is not None:
                            self._after_token(done)
            where = f"op {m.pc} of {len(m.program.ops)}" if m.in_pass else "end of a pass"
            made = f"; token {b.decode(done[:1])!r}" if done else ""
            return Outcome(step, f"{name.replace('_', ' ')} x{value}: at {where}{made}")
        if name == "reset":
            self.commit()
            self._close_segment()
            b.machine.set_prompt(b.prompt_ids)
            self.start_segment()
            return Outcome(step, "reset: KV cache emptied, counters zeroed, prompt queued")
        if name == "note":
            return Outcome(step, value)
        if name == "mark":
            return Outcome(step, self.mark(value))
        if name == "expect":
            return Outcome(step, *self.expect(step.value))
        if name == "project":
            return Outcome(step, self.project(value))
        # an option: recompile (the old machine's activity stays in the window)
        self.commit()
        self._close_segment()
        status = b.set(name, value)
        self.start_segment()
        return Outcome(step, status)

    def _generate(self, value) -> str:
        b = self.bench
        m = b.machine
        start = len(m.generated[0])
        if value == "eos":
            seen = [False] * m.options.batch
            while not all(seen) and m.pos < m.plan.context:
                for i, t in enumerate(self._token()):
                    seen[i] = seen[i] or t == b.eos_id
            why = "end of text" if all(seen) else f"the context is full ({m.plan.context} tokens)"
        else:
            for _ in range(value):
                self._token()
            why = None
        made = m.generated[0][start:]
        ms = [r.seconds for r in m.history[-len(made):] if not r.prefill] if made else []
        speed = f", {1e3 * sum(ms) / len(ms):.4g} ms/token" if ms else ""
        text = b.decode(made) if made else ""
        return (f"generated {len(made)} token(s){' until ' + why if why else ''}{speed}: {text!r}")

def _compare(value: float, op: str, bound: float) -> bool:
    return {"<": value < bound, ">": value > bound, ">=": value >= bound, "<=": value <= bound}[op]


def _summary(metrics: dict) -> str:
    parts = [] if metrics["tokens"] is None else [f"{metrics['tokens']} token steps"]
    for key, fmt, unit in (("ms_per_token", "{:.4g}", " ms/token"), ("tokens_per_s", "{:.4g}", " tok/s"),
                           ("joules_per_token", "{:.3g}", " J/token"), ("ttft_s", "{:.3g}", " s to first token"),
                           ("agreement_with_f32", "{:.0%}", " agree f32")):
        if metrics.get(key) is not None:
            parts.append(fmt.format(metrics[key]) + unit)
    return ", ".join(parts)


def replay(spec: SessionSpec, **kw) -> ReplayResult:
    return Replay(spec, **kw).run()
