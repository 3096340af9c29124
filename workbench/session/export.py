"""Outputs of a replay: the --json result, a Chrome/Perfetto trace, CSV tables and a markdown report.

Everything here reads a ReplayResult (or, for the trace, the machine op by op during the replay);
every file goes through workbench.atomic so an interrupted run leaves no partial file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from .. import cost
from ..atomic import atomic_write_text
from ..counters import energy
from ..machine import isa
from ..machine.topology import PORT_OUT
from .runner import ReplayResult, counter_totals

COMM_OPS = {isa.SEND, isa.ALLREDUCE, isa.ALLGATHER, isa.LOGITS_GATHER, isa.MOE_DISPATCH, isa.MOE_COMBINE, isa.EMBED}
PID_COUNTERS, PID_TILES, PID_LINKS = 0, 1, 2


def _plain(value):
    """numpy scalars/arrays and tuples -> JSON-native values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


# -- --json ----------------------------------------------------------------------------------------
def result_dict(result: ReplayResult) -> dict:
    """Everything a script needs, with no host timings: identical on every replay of the same file."""
    spec = result.spec
    steps = []
    for o in result.outcomes:
        value = [c.describe() for c in o.step.value] if o.step.name == "expect" else o.step.value
        entry = {"step": o.step.number, "command": o.step.name, "value": value, "outcome": o.message}
        if o.checks:
            entry["checks"] = [{"check": c.describe(), "value": v, "ok": ok, "message": msg} for c, v, ok, msg in o.checks]
        steps.append(entry)
    segments = [{"chip": s.chip_name, "options": s.options, "mapping": s.plan_mapping, "prompt": s.prompt,
                 "tokens": s.generated, "text": s.text, "counters": counter_totals(s.plan.chip, s.counters)}
                for s in result.segments]
    return _plain({
        "session": Path(spec.source).name, "title": spec.title, "options": spec.options.__dict__, "steps": steps,
        "marks": result.marks, "segments": segments, "final": result.final, "ok": result.ok,
        "failures": [msg for _, (_, _, _, msg) in result.failures],
    })


def result_json(result: ReplayResult) -> str:
    return json.dumps(result_dict(result), sort_keys=True, indent=1, ensure_ascii=False) + "\n"


# -- --trace ---------------------------------------------------------------------------------------
class TraceRecorder:
    """Collects Chrome trace events while the runner steps the machine op by op.

    One track (thread) per tile that computed or communicated and per link that carried bytes; each op
    is a complete ('X') slice whose ts/dur come from the chip's cycle clocks (µs at the chip's clock),
    with its bytes and MACs in args. Counter tracks at layer boundaries and token ends. Bounded by
    ``max_tokens`` token steps traced op by op and ``max_events``.
    """

    def __init__(self, max_tokens: int = 4, max_events: int = 500_000):
        self.max_tokens, self.max_events = max_tokens, max_events
        self.events: list[dict] = []
        self.tokens = 0
        self.offset_ns = 0.0
        self.tiles: set[int] = set()
        self.links: dict[int, str] = {}
        self._link_end: dict[int, float] = {}
        self._tile_end: dict[int, float] = {}   # cycles: where the last slice on each tile track ends
        self._ns_per_cycle = 1.0
        self._segments = 0

    def wants_more(self) -> bool:
        return self.tokens < self.max_tokens and len(self.events) < self.max_events

    def begin_segment(self, machine) -> None:
        self._ns_per_cycle = 1.0 / machine.chip.clock_ghz
        self._segments += 1
        self._topology = machine.plan.topology
        self._link_dst = self._topology.link_destination()
        self._layer_starts = set(int(s) for s in machine.program.layer_starts)

    def end_segment(self, machine) -> None:
        self.offset_ns += machine.counters.cycles * self._ns_per_cycle
        self._link_end = {}
        self._tile_end = {}

    def _us(self, cycles: float) -> float:
        return round(self.offset_ns + cycles * self._ns_per_cycle) / 1000.0

    def op(self, machine, index: int, before) -> None:
        after = machine.counters
        op = machine.program.ops[index]
        code, tile, layer = int(op["opcode"]), int(op["tile"]), int(op["layer"])
        dur = float((after.op_cycles - before.op_cycles).sum())
        moved = (after.clock != before.clock) | (after.sent != before.sent) | (after.recv != before.recv)
        moved[tile] = True
        if code in COMM_OPS:
            tiles = np.nonzero(moved)[0]
            end = float(after.clock[tiles].max())
        else:
            tiles = np.array([tile])
            end = float(after.clock[tile])
        start = end - dur
        name = isa.OPCODE_NAMES[code]
        macs = (after.tile_macs - before.tile_macs).sum(axis=1)
        sram = (after.sram_rd - before.sram_rd) + (after.sram_wr - before.sram_wr)
        off = (after.off_rd - before.off_rd) + (after.off_wr - before.off_wr)
        sent, recv = after.sent - before.sent, after.recv - before.recv
        text = machine.program.disassemble(index, index + 1)[0]
        for t in tiles:
            t = int(t)
            self.tiles.add(t)
            # streamed columns let an op overlap the one before it: its slice starts where that one's ends
            ts, te = self._us(max(start, self._tile_end.get(t, start))), self._us(end)
            self._tile_end[t] = max(end, self._tile_end.get(t, end))
            self.events.append({"ph": "X", "pid": PID_TILES, "tid": t, "name": name, "ts": ts, "dur": max(te - ts, 0.0),
                                "args": {"op": index, "layer": layer, "cycles": dur, "macs": int(macs[t]), "sram_bytes": int(sram[t]),
                                         "offchip_bytes": int(off[t]), "sent_bytes": int(sent[t]),
                                         "recv_bytes": int(recv[t]), "asm": text}})
        busy = after.link_busy - before.link_busy
        nbytes = after.link_bytes - before.link_bytes
        for lk in np.nonzero(busy > 0)[0]:
            lk = int(lk)
            if lk not in self.links:
                src, nbr = lk // 4, int(self._link_dst[lk])
                dst = f" -> tile {nbr}" if nbr >= 0 and nbr != src else ""   # a crossbar port in leads to its own tile
                self.links[lk] = f"link tile {src} {self._topology.link_label(lk)}{dst}"
            ls = max(start, self._link_end.get(lk, start))  # the cost model does not queue across ops: keep slices disjoint
            le = ls + float(busy[lk])
            self._link_end[lk] = le
            a, b = self._us(ls), self._us(le)
            self.events.append({"ph": "X", "pid": PID_LINKS, "tid": lk, "name": name, "ts": a, "dur": b - a,
                                "args": {"op": index, "layer": layer, "bytes": int(nbytes[lk]),
                                         "busy_cycles": float(busy[lk]), "queued_cycles": ls - start}})
        if index + 1 in self._layer_starts:
            self._counters(machine)

    def _counters(self, machine) -> None:
        c = machine.counters
        ts = self._us(c.cycles)
        seconds = c.cycles / (machine.chip.clock_ghz * 1e9)
        e = energy(machine.chip, c, seconds)
        kv_sram, kv_off = machine.kv_occupancy()
        for name, args in (("energy_uJ", {k: v * 1e-6 for k, v in e.items() if v}),
                           ("offchip_bytes", {"bytes": int(c.off_rd.sum() + c.off_wr.sum())}),
                           ("noc_hop_bytes", {"bytes": int(c.hop_bytes[0])}),
                           ("kv_tokens", {"sram": int(kv_sram.sum()), "spilled": int(kv_off.sum())})):
            self.events.append({"ph": "C", "pid": PID_COUNTERS, "tid": 0, "name": name, "ts": ts, "args": args})

    def token(self, machine) -> None:
        self.tokens += 1
        self._counters(machine)

    def instant(self, machine, name: str, text: str) -> None:
        self.events.append({"ph": "i", "s": "g", "pid": PID_COUNTERS, "tid": 0, "name": name,
                            "ts": self._us(machine.counters.cycles), "args": {"outcome": text}})

    def document(self, title: str = "") -> dict:
        meta = [{"ph": "M", "pid": PID_COUNTERS, "name": "process_name", "args": {"name": "chip counters"}},
                {"ph": "M", "pid": PID_TILES, "name": "process_name", "args": {"name": "tiles"}},
                {"ph": "M", "pid": PID_LINKS, "name": "process_name", "args": {"name": "mesh links (busy ones)"}}]
        for t in sorted(self.tiles):
            meta.append({"ph": "M", "pid": PID_TILES, "tid": t, "name": "thread_name", "args": {"name": f"tile {t:03d}"}})
            meta.append({"ph": "M", "pid": PID_TILES, "tid": t, "name": "thread_sort_index", "args": {"sort_index": t}})
        for lk, label in sorted(self.links.items()):
            meta.append({"ph": "M", "pid": PID_LINKS, "tid": lk, "name": "thread_name", "args": {"name": label}})
            meta.append({"ph": "M", "pid": PID_LINKS, "tid": lk, "name": "thread_sort_index", "args": {"sort_index": lk}})
        return {"traceEvents": meta + self.events, "displayTimeUnit": "ns",
                "otherData": {"session": title, "traced_token_steps": self.tokens,
                              "note": "times are emulated chip time (cycles / clock), not host time"}}


def write_trace(path: str | Path, recorder: TraceRecorder, title: str = "") -> None:
    atomic_write_text(path, json.dumps(_plain(recorder.document(title)), separators=(",", ":")) + "\n")


# -- --csv -----------------------------------------------------------------------------------------
def _csv(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _plain(r.get(k, "")) for k in columns})
    return out.getvalue()


def csv_tables(result: ReplayResult) -> dict[str, str]:
    """tokens.csv (one row per token step), tiles.csv and links.csv (one row per tile / link per segment)."""
    token_cols = ["segment", "pos", "prefill", "token", "text", "cycles", "seconds", "joules", "macs", "vector_ops",
                  "sram_read_bytes", "sram_write_bytes", "offchip_bytes", "hop_bytes", "kv_tokens_spilled"]
    precs = list(cost.PREC_INDEX)
    tile_cols = (["segment", "chip", "precision", "mapping", "tile", "row", "col"] + [f"macs_{p}" for p in precs]
                 + ["vector_ops", "sram_read_bytes", "sram_write_bytes", "offchip_bytes", "sent_bytes", "recv_bytes",
                    "busy_cycles", "utilization", "weight_bytes", "staging_bytes", "act_bytes", "kv_bytes"])
    link_cols = ["segment", "chip", "link", "tile", "direction", "to_tile", "bytes", "busy_cycles", "utilization"]
    tiles, links = [], []
    for si, s in enumerate(result.segments):
        c, plan, cycles = s.counters, s.plan, s.counters.cycles
        cols = plan.topology.cols
        for t in range(s.n_tiles):
            row = {"segment": si, "chip": s.chip_name, "precision": s.options["precision"], "mapping": s.plan_mapping,
                   "tile": t, "row": t // cols, "col": t % cols, "vector_ops": c.tile_vec[t],
                   "sram_read_bytes": c.sram_rd[t], "sram_write_bytes": c.sram_wr[t],
                   "offchip_bytes": c.off_rd[t] + c.off_wr[t], "sent_bytes": c.sent[t], "recv_bytes": c.recv[t],
                   "busy_cycles": c.busy[t], "utilization": c.busy[t] / cycles if cycles else 0.0,
                   "weight_bytes": plan.weight_bytes[t], "staging_bytes": plan.staging_bytes[t],
                   "act_bytes": plan.act_bytes[t], "kv_bytes": plan.kv_bytes[t]}
            row.update({f"macs_{p}": c.tile_macs[t, i] for p, i in cost.PREC_INDEX.items()})
            tiles.append(row)
        xbar = s.plan.topology.kind == "crossbar"   # a tile's port out (slot N) leads into the crossbar, not a tile
        for lk in range(s.n_tiles * 4):
            if s.link_dst[lk] < 0 and not (xbar and lk % 4 == PORT_OUT):
                continue
            links.append({"segment": si, "chip": s.chip_name, "link": lk, "tile": lk // 4,
                          "direction": s.plan.topology.link_label(lk), "to_tile": s.link_dst[lk], "bytes": c.link_bytes[lk],
                          "busy_cycles": c.link_busy[lk], "utilization": c.link_busy[lk] / cycles if cycles else 0.0})
    return {"tokens.csv": _csv(result.token_rows, token_cols), "tiles.csv": _csv(tiles, tile_cols),
            "links.csv": _csv(links, link_cols)}


def write_csv(folder: str | Path, result: ReplayResult) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in csv_tables(result).items():
        atomic_write_text(folder / name, text)
        written.append(folder / name)
    return written


# -- --report --------------------------------------------------------------------------------------
def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


REPORT_METRICS = ("tokens", "ms_per_token", "tokens_per_s", "tokens_per_s_per_user", "joules_per_token", "watts",
                  "ttft_s", "kv_tokens_spilled", "offchip_bytes", "agreement_with_f32")


def report_markdown(result: ReplayResult) -> str:
    spec, o = result.spec, result.spec.options
    lines = [f"# {spec.title or Path(spec.source).stem}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [f"Session `{Path(spec.source).name}`: chip `{o.chip}`, model `{o.model}`, precision {o.precision},"
              f" mapping {o.mapping}, batch {o.batch}, prompt {o.prompt!r}.", "",
              "All times and energies are emulated chip figures from the cost model, not host timings.", "",
              "## Steps", ""]
    for out in result.outcomes:
        st = out.step
        if st.name == "note":
            lines += [f"> {line}" for line in out.message.splitlines()] + [""]
            continue
        lines.append(f"{st.number}. **{st.name}** — {out.message}")
        for chk, _, ok, msg in out.checks:
            lines.append(f"   - {'✓' if ok else '✗'} {msg}")
    lines.append("")
    if result.marks:
        names = list(result.marks)
        lines += ["## Marks", "", "Each mark's figures cover the steps since the previous mark (or the start).", "",
                  "| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for key in REPORT_METRICS:
            lines.append(f"| {key} | " + " | ".join(_fmt(result.marks[n][key]) for n in names) + " |")
        lines.append("")
    lines += ["## Configurations", "", "| # | chip | precision | mapping | batch | token steps | chip s | J |",
              "|---|---|---|---|---:|---:|---:|---:|"]
    for i, s in enumerate(result.segments):
        tot = counter_totals(s.plan.chip, s.counters)
        lines.append(f"| {i} | {s.chip_name} | {s.options['precision']} | {s.plan_mapping} | {s.options['batch']} |"
                     f" {len(s.history)} | {tot['seconds']:.4g} | {sum(tot['energy_pj'].values()) * 1e-12:.4g} |")
    lines += ["", "## Result", "", f"Final text: {result.final['text']!r}", ""]
    if result.failures:
        lines += [f"**{len(result.failures)} expectation(s) failed:**", ""]
        lines += [f"- {msg}" for _, (_, _, _, msg) in result.failures]
    else:
        checks = sum(len(o.checks) for o in result.outcomes)
        lines.append(f"All {checks} expectation(s) hold.")
    return "\n".join(lines) + "\n"


def write_report(path: str | Path, result: ReplayResult) -> None:
    atomic_write_text(path, report_markdown(result))
