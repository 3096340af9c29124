"""The emulated chip: state arrays, the compiled program, and step functions (op, layer, token).

``Machine(chip, model, options)`` compiles the model onto the chip, packs the weights into
one byte store in their block formats, and executes the program with the numba executor.
It can stop after one op, one layer or one token; every step updates the Counters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import cost
from ..compiler import CompileOptions, Plan, Program, compile_plan, emit_program
from ..counters import Counters, Snapshot, energy, snapshot
from ..errors import MachineFault, WorkbenchError
from ..model.config import ModelConfig
from ..model.tensor import Model
from . import executor as ex
from . import isa
from .kernels import FMT_F32, T_PAD

_F16 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
_BF16 = (np.arange(65536, dtype=np.uint32) << 16).view(np.float32).copy()
FMT_PREC = np.array([cost.PREC_INDEX[p] for p in ("f32", "fp16", "bf16", "int8", "int4", "ternary", "binary")],
                    dtype=np.int64)


def pack_weights(model: Model, plan: Plan) -> tuple[np.ndarray, dict[str, int]]:
    """All tensors' bytes, 64-byte aligned, in plan order; returns (store, byte offset of each tensor)."""
    offsets, chunks, pos = {}, [], 0
    for name, info in plan.tensors.items():
        qt = model.tensors[name]
        if qt.fmt != info.fmt:
            raise WorkbenchError(f"tensor {name} is {qt.fmt}, the plan expects {info.fmt}")
        raw = np.ascontiguousarray(qt.data).view(np.uint8).ravel()
        if raw.nbytes != info.nbytes:
            raise WorkbenchError(f"tensor {name} has {raw.nbytes} bytes, expected {info.nbytes}")
        offsets[name] = pos
        chunks.append(raw)
        pad = (-raw.nbytes) % 64
        if pad:
            chunks.append(np.zeros(pad, np.uint8))
        pos += raw.nbytes + pad
    store = np.concatenate(chunks) if chunks else np.zeros(64, np.uint8)
    return store, offsets


def layout_offsets(plan: Plan) -> dict[str, int]:
    """The offsets pack_weights would give, from sizes alone (for shape-only runs)."""
    offsets, pos = {}, 0
    for name, info in plan.tensors.items():
        offsets[name] = pos
        pos += info.nbytes + (-info.nbytes) % 64
    return offsets


def kmajor_f32(store: np.ndarray, plan: Plan, offsets: dict[str, int],
               ops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A k-major (transposed) copy of every f32 matrix an f32 MATMUL op reads (each expert's slice its own matrix).

    Returns (wt, table): matrix (rows, cols) at store byte offset o sits at wt[e:e + cols * stride] as
    (cols, stride), stride = rows + T_PAD rounded up to 16 floats (the padding zero); table rows
    (o, e, stride, rows, cols) sorted by o, as kernels.matmul_fp looks them up.
    """
    used = {int(o) for o in ops["w_off"][(ops["opcode"] == isa.MATMUL) & (ops["fmt"] == FMT_F32)]}
    mats = []
    for name, info in plan.tensors.items():
        if info.fmt != "f32" or len(info.shape) < 2:
            continue
        rows, cols = info.shape[-2], info.shape[-1]
        for i in range(info.rows // rows):
            o = offsets[name] + i * rows * info.row_bytes
            if o in used:
                mats.append((o, rows, cols))
    mats.sort()
    table = np.zeros((len(mats), 5), np.int64)
    pos = 0
    for i, (o, rows, cols) in enumerate(mats):
        stride = -(-(rows + T_PAD) // 16) * 16
        table[i] = (o, pos, stride, rows, cols)
        pos += cols * stride
    wt = np.zeros(max(pos, 1), np.float32)
    for o, e, stride, rows, cols in table:
        w = np.frombuffer(store, np.float32, rows * cols, o).reshape(rows, cols)
        wt[e:e + cols * stride].reshape(cols, stride)[:, :rows] = w.T
    return wt, table


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin (seq_len, head_dim/2) in float32, computed as llama2.c does (fp32 pow, cos, sin)."""
    i = np.arange(0, head_dim, 2, dtype=np.float32)
    freq = np.float32(1.0) / np.power(np.float32(theta), i / np.float32(head_dim))
    val = np.arange(seq_len, dtype=np.float32)[:, None] * freq[None, :]
    return np.cos(val).astype(np.float32), np.sin(val).astype(np.float32)


@dataclass
class StepRecord:
    """One token step: the ids produced (one per sequence), its chip time and energy."""

    tokens: list[int]
    cycles: float
    seconds: float
    joules: float
    prefill: bool


@dataclass
class MachineState:
    """Numeric state. act (n_buf, cols, stride) f32; xq/xd quantized activations (n_qbuf, cols, stride[/32]);
    parts (slots, cols, stride) partial sums; kq/vq (L, Hkv, B, ctx, hd) int8 with kd/vd (L, Hkv, B, ctx) scales,
    or kf/vf float K/V on the f32 path; tokens/col_seq/col_pos per column; sel/selw (cols, k) MoE routes."""

    act: np.ndarray
    xq: np.ndarray
    xd: np.ndarray
    parts: np.ndarray
    kq: np.ndarray
    kd: np.ndarray
    vq: np.ndarray
    vd: np.ndarray
    kf: np.ndarray
    vf: np.ndarray
    tokens: np.ndarray
    out_tokens: np.ndarray
    col_seq: np.ndarray
    col_pos: np.ndarray
    sel: np.ndarray
    selw: np.ndarray
    rng: np.ndarray


class Machine:
    """An emulated chip running one model. ``numeric=False`` runs the same program counting only."""

    def __init__(self, chip, model: "Model | ModelConfig", options: CompileOptions | None = None, *,
                 temperature: float = 0.0, seed: int = 0, numeric: bool = True, plan: Plan | None = None):
        self.chip = chip
        options = options or CompileOptions()
        if isinstance(model, ModelConfig):
            if numeric:
                raise WorkbenchError(f"{model.name} is a shape-only spec: it can be projected, not emulated")
            model = Model(model, {})
        cfg = model.config
        self.config = cfg
        if numeric:
            from ..model.load import convert_precision

            model = convert_precision(model, options.precision)
        self.model = model
        self.plan = plan or compile_plan(chip, cfg, options)
        self.options = self.plan.options
        if numeric:
            self.store, offsets = pack_weights(model, self.plan)
        else:
            self.store, offsets = np.zeros(64, np.uint8), layout_offsets(self.plan)
        self.program: Program = emit_program(self.plan, offsets)
        if numeric:
            self._wt32, self._wt_tab = kmajor_f32(self.store, self.plan, offsets, self.program.ops)
        else:
            self._wt32, self._wt_tab = np.zeros(1, np.float32), np.zeros((0, 5), np.int64)
        self.numeric = numeric
        self.temperature = float(temperature)
        self.seed = int(seed)
        self._ops = isa.as_matrix(self.program.ops)
        self._build_static()
        self.reset()

    # -- set-up ------------------------------------------------------------------------------------
    def _build_static(self) -> None:
        plan, cfg, chip = self.plan, self.config, self.chip
        T = plan.n_tiles
        self.params = cost.cost_params(chip)
        self._geometry = plan.topology.geometry
        self._pathbuf = np.zeros(plan.topology.rows * plan.topology.cols + 2, np.int64)
        self._hops = plan.topology.hops
        gmax = max(len(g) for g in plan.groups)
        self._groups = np.full((len(plan.groups), gmax), -1, dtype=np.int64)
        for i, g in enumerate(plan.groups):
            self._groups[i, : len(g)] = g
        n_exp = max(cfg.n_experts, 1)
        per = max((len(t) for eg in plan.expert_groups for t in eg), default=1)
        self._expert_tiles = np.full((len(plan.groups), n_exp, per), -1, dtype=np.int64)
        for gi, eg in enumerate(plan.expert_groups):
            for e, tiles in enumerate(eg):
                self._expert_tiles[gi, e, : len(tiles)] = tiles
        emb = [s for s in plan.shards if s.tensor == "token_embd.weight"]
        self._embed_tab = np.array([(s.tile, s.r0, s.r1) for s in emb], dtype=np.int64).reshape(-1, 3)
        self._cos, self._sin = rope_tables(plan.context, cfg.head_dim, cfg.rope_theta)
        store = self.store
        if store.nbytes % 4:
            store = np.concatenate([store, np.zeros((-store.nbytes) % 4, np.uint8)])
            self.store = store
        self._wi8 = store.view(np.int8)
        self._wf32 = store.view(np.float32)
        self._wu16 = store.view(np.uint16)
        self.max_cols = self.options.batch * self.options.prefill_chunk
        widths = [cfg.dim, cfg.q_dim, cfg.kv_dim, cfg.hidden_dim, cfg.vocab_size, max(cfg.n_experts, 1)]
        self.stride = -(-max(widths) // 256) * 256
        self._scratch = (np.zeros(T * 4, np.float64), np.zeros(T * 4, np.int64), np.zeros(T, np.bool_),
                         np.zeros(plan.context + 1, np.float32), np.zeros(cfg.head_dim, np.int8),
                         np.zeros(2 * cfg.head_dim, np.float32), np.zeros(cfg.vocab_size, np.float32))
        self._gmax = gmax
        src = getattr(self, "_comm_src", None)  # the tables depend only on the program and the mesh: a copy keeps them
        if src is None or src[0] is not self.program or src[1] is not self.plan.topology:
            self._build_comm()
            self._comm_src = (self.program, self.plan.topology)
        self._colmask = np.zeros(self.max_cols, np.bool_)
        self._wv = np.zeros(32, np.int8)
        self._acc = np.zeros(self.max_cols, np.float32)

    def _build_comm(self) -> None:
        """Fold every static transfer set into per-link and per-tile byte counts once (executor.comm_tables):
        one set per SEND/ALL*/LOGITS_GATHER op (row = op index), then one per embedding shard, from its
        owner to the rest of the embedding op's group."""
        ops, transfers, plan = self.program.ops, self.program.transfers, self.plan
        static = np.isin(ops["opcode"], (isa.SEND, isa.ALLREDUCE, isa.ALLGATHER, isa.LOGITS_GATHER))
        set_off = np.where(static, ops["t_off"], 0).astype(np.int64)
        set_cnt = np.where(static, ops["t_cnt"], 0).astype(np.int64)
        embed_groups = {int(g) for g in ops["aux"][ops["opcode"] == isa.EMBED]}
        if len(embed_groups) > 1:
            raise WorkbenchError(f"the program embeds into {len(embed_groups)} tile groups; the machine supports one")
        extra: list[tuple[int, int, int]] = []
        offs, cnts = [], []
        if embed_groups:
            group = [int(t) for t in self._groups[embed_groups.pop()] if t >= 0]
            nbytes = self.config.dim * 4
            for owner in self._embed_tab[:, 0]:
                pairs = [(int(owner), t, nbytes) for t in group if t != owner]
                offs.append(len(transfers) + len(extra))
                cnts.append(len(pairs))
                extra += pairs
        table = np.concatenate([transfers.reshape(-1, 3), np.array(extra, np.int64).reshape(-1, 3)])
        self._embed_set = len(ops)
        self._cset, self._clinks, self._ctiles = ex.comm_tables(
            np.concatenate([set_off, np.array(offs, np.int64)]), np.concatenate([set_cnt, np.array(cnts, np.int64)]),
            np.ascontiguousarray(table, dtype=np.int64), self._geometry, self._hops, plan.n_tiles)

    def reset(self) -> None:
        """Empty KV cache, zero counters, position 0."""
        cfg, o, plan = self.config, self.options, self.plan
        C, S, B = self.max_cols, self.stride, o.batch
        L, H, hd, ctx = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, plan.context
        n_buf, n_qbuf = len(self.program.buffer_names), len(self.program.qbuffer_names)
        num = self.numeric
        kv_shape = (L, H, B, ctx, hd) if num else (0, 0, 0, 0, 0)
        int8 = o.kv_int8
        self.state = MachineState(
            act=np.zeros((n_buf, C, S) if num else (n_buf, 1, 1), np.float32),
            xq=np.zeros((n_qbuf, C, S) if num else (n_qbuf, 1, 1), np.int8),
            xd=np.zeros((n_qbuf, C, S // 32) if num else (n_qbuf, 1, 1), np.float32),
            parts=np.zeros((self._gmax, C, S) if num else (1, 1, 1), np.float32),
            kq=np.zeros(kv_shape if int8 else (0, 0, 0, 0, 0), np.int8),
            kd=np.zeros(kv_shape[:4] if int8 else (0, 0, 0, 0), np.float32),
            vq=np.zeros(kv_shape if int8 else (0, 0, 0, 0, 0), np.int8),
            vd=np.zeros(kv_shape[:4] if int8 else (0, 0, 0, 0), np.float32),
            kf=np.zeros(kv_shape if not int8 else (0, 0, 0, 0, 0), np.float32),
            vf=np.zeros(kv_shape if not int8 else (0, 0, 0, 0, 0), np.float32),
            tokens=np.zeros(C, np.int64), out_tokens=np.zeros(C, np.int64),
            col_seq=np.zeros(C, np.int64), col_pos=np.zeros(C, np.int64),
            sel=np.zeros((C, max(cfg.n_experts_used, 1)), np.int64),
            selw=np.zeros((C, max(cfg.n_experts_used, 1)), np.float32),
            rng=np.array([self.seed if self.seed != 0 else 0x2545F4914F6CDD1D], dtype=np.uint64),
        )
        if not num and cfg.is_moe:  # shape-only: route tokens round-robin, the expected balanced load
            for c in range(C):
                self.state.sel[c] = [(c + j) % cfg.n_experts for j in range(cfg.n_experts_used)]
        self.counters = Counters.zeros(plan.n_tiles)
        # per tile: when the first column of its latest result is ready, when its datapath is free (cycles)
        self._pipe = np.zeros((2, plan.n_tiles), np.float64)
        self._st = np.zeros(ex.N_ST, np.int64)
        self._st[[ex.S_BATCH, ex.S_KV_INT8, ex.S_NREP, ex.S_HD, ex.S_DIM, ex.S_HIDDEN, ex.S_VOCAB, ex.S_NEXP,
                  ex.S_NUSED, ex.S_NUMERIC, ex.S_EOUT0, ex.S_H10]] = [
            B, int(int8), cfg.n_heads // cfg.n_kv_heads, hd, cfg.dim, cfg.hidden_dim, cfg.vocab_size, cfg.n_experts,
            cfg.n_experts_used, int(num), self.program.buffer_names.index("eout.0"), self.program.buffer_names.index("h1.0")]
        self._st[ex.S_EMBED_SET] = self._embed_set
        self._fs = np.zeros(ex.N_FS, np.float64)
        self._fs[ex.FS_EPS] = cfg.norm_eps
        self._fs[ex.FS_TEMP] = self.temperature
        self.pos = 0                    # positions already in the KV cache
        self.pc = 0                     # next op of the pass in flight
        self.in_pass = False
        self.pending: list[int] = []    # prompt tokens not yet prefilled
        self.last_tokens = np.zeros(B, np.int64)
        self.generated: list[list[int]] = [[] for _ in range(B)]
        self.history: list[StepRecord] = []
        self.prompt: list[int] = []
        self.ttft_s: float | None = None
        self._pass_cols = 0
        self._pass_prefill = False
        self._pass_start_cycles = 0.0
        self._pass_start_pj = 0.0
        self._now: tuple[float, float] | None = None  # (cycles, total pJ) of the counters as they are, when known
        self._bind()

    def set_prompt(self, ids: list[int]) -> None:
        """Start over with this prompt (ids, BOS included)."""
        if not ids:
            raise WorkbenchError("the prompt is empty: it needs at least the BOS token")
        bad = [i for i in ids if not 0 <= i < self.config.vocab_size]
        if bad:
            raise WorkbenchError(f"token id {bad[0]} is outside the vocabulary (0..{self.config.vocab_size - 1})")
        if len(ids) >= self.plan.context:
            raise WorkbenchError(f"the prompt has {len(ids)} tokens; the planned context is {self.plan.context}")
        self.reset()
        self.prompt = list(ids)
        self.pending = list(ids)

    # -- execution ---------------------------------------------------------------------------------
    def _begin_pass(self) -> None:
        s, B = self.state, self.options.batch
        if self.pending:
            chunk = self.pending[: self.options.prefill_chunk]
            self.pending = self.pending[len(chunk):]
            T = len(chunk)
            for b in range(B):
                for t in range(T):
                    c = b * T + t
                    s.tokens[c] = chunk[t]
                    s.col_seq[c] = b
                    s.col_pos[c] = self.pos + t
            self._pass_cols, self._pass_prefill, self._pass_advance = B * T, True, T
        else:
            if self.pos >= self.plan.context:
                raise MachineFault(f"the context is full: {self.plan.context} tokens planned"
                                   f" (compile with a larger context, up to the model's {self.config.seq_len})")
            for b in range(B):
                s.tokens[b] = self.last_tokens[b]
                s.col_seq[b] = b
                s.col_pos[b] = self.pos
            self._pass_cols, self._pass_prefill, self._pass_advance = B, False, 1
        self._st[ex.S_NCOL] = self._pass_cols
        self.pc = 0
        self.in_pass = True
        if self._now is None:  # only after a prefill chunk: the end of a token step already measured it
            self._now = self._measure(self.counters.cycles)
        self._pass_start_cycles, self._pass_start_pj = self._now
        self._now = None

    def _measure(self, cycles: float) -> tuple[float, float]:
        """(cycles, total pJ) of the counters as they are; ``cycles`` is counters.cycles."""
        return cycles, sum(energy(self.chip, self.counters, cycles / (self.chip.clock_ghz * 1e9)).values())

    def _bind(self) -> None:
        """The executor's arguments after ``pc, stop``, gathered once per reset (the arrays are updated in place)."""
        s, c = self.state, self.counters
        self._args = (self._ops, self._cset, self._clinks, self._ctiles, self._st, self._fs, self.params, FMT_PREC,
                      self.store, self._wi8, self._wf32, self._wu16, _F16, _BF16, self._wt32, self._wt_tab,
                      s.act, s.xq, s.xd, s.parts, s.kq, s.kd, s.vq, s.vd, s.kf, s.vf,
                      s.tokens, s.out_tokens, s.col_seq, s.col_pos, s.sel, s.selw, s.rng, self._cos, self._sin,
                      self.plan.kv_home, self.plan.kv_capacity, self._groups, self._expert_tiles, self._embed_tab,
                      self._geometry, self._pathbuf, self._hops,
                      c.tile_macs, c.tile_vec, c.sram_rd, c.sram_wr, c.off_rd, c.off_wr, c.link_bytes, c.link_busy,
                      c.kind_bytes, c.hop_bytes, c.sent, c.recv, c.op_cycles, c.op_count, c.clock, c.busy, self._pipe,
                      *self._scratch, self._colmask, self._wv, self._acc)

    def _run(self, stop: int) -> None:
        self.pc = ex.run(self.pc, stop, *self._args)
        if self._st[ex.S_FAULT]:
            self._raise_fault()

    def _raise_fault(self) -> None:
        op = self.program.ops[self._st[ex.S_FAULT_OP]]
        code = self._st[ex.S_FAULT]
        self._st[ex.S_FAULT] = 0
        what = "a NaN or infinity in the activations" if code == ex.FAULT_NAN else "the KV cache is full"
        raise MachineFault(f"{what} at op {self._st[ex.S_FAULT_OP]} ({isa.OPCODE_NAMES[op['opcode']]},"
                           f" layer {op['layer']}, tile {op['tile']})")

    def _end_pass(self) -> list[int] | None:
        self.in_pass = False
        c = self.counters
        cycles = c.cycles
        c.clock.fill(cycles)  # the next step needs this step's token: a barrier
        self._pipe.fill(cycles)
        self.pos += self._pass_advance
        if self.pending:
            return None
        toks = self.state.out_tokens[: self.options.batch].tolist()
        self.last_tokens[:] = toks
        for b, t in enumerate(toks):
            self.generated[b].append(t)
        hz = self.chip.clock_ghz * 1e9
        self._now = self._measure(cycles)
        joules = (self._now[1] - self._pass_start_pj) * 1e-12
        if self.ttft_s is None:
            self.ttft_s = cycles / hz
        self.history.append(StepRecord(toks, cycles - self._pass_start_cycles, (cycles - self._pass_start_cycles) / hz,
                                       joules, self._pass_prefill))
        return toks

    def step_op(self) -> list[int] | None:
        """Execute one op. Returns the new tokens when that op finished a token, else None."""
        self._ensure_started()
        if not self.in_pass:
            self._begin_pass()
        self._run(self.pc + 1)
        if self.pc >= len(self._ops):
            return self._end_pass()
        return None

    def step_layer(self) -> list[int] | None:
        """Execute up to the start of the next layer (or the end of the pass)."""
        self._ensure_started()
        if not self.in_pass:
            self._begin_pass()
        starts = self.program.layer_starts
        nxt = next((int(s) for s in starts if s > self.pc), len(self._ops))
        self._run(nxt)
        if self.pc >= len(self._ops):
            return self._end_pass()
        return None

    def step_token(self) -> list[int]:
        """Run until the next token is produced (the whole prefill for the first one)."""
        self._ensure_started()
        while True:
            if not self.in_pass:
                self._begin_pass()
            self._run(len(self._ops))
            toks = self._end_pass()
            if toks is not None:
                return toks

    def _ensure_started(self) -> None:
        if not self.prompt:
            raise WorkbenchError("no prompt set: call set_prompt([bos, ...]) first")

    def feed(self, token: int) -> np.ndarray:
        """Teacher forcing: run one step with ``token`` as the input at the next position; returns its logits (B, vocab).

        The first call after set_prompt consumes the prompt instead (its logits are those of the prompt's last token).
        """
        self._ensure_started()
        if self.pending or self.in_pass:
            self.step_token()
        else:
            self.last_tokens[:] = token
            self.step_token()
        return self.logits()

    def step_token_cycles(self) -> float:
        """Chip cycles of the last token step."""
        return self.history[-1].cycles if self.history else 0.0

    def generate(self, n: int, callback=None) -> list[list[int]]:
        """Produce ``n`` more tokens per sequence; ``callback(machine, tokens)`` after each."""
        for _ in range(n):
            toks = self.step_token()
            if callback is not None:
                callback(self, toks)
        return self.generated

    # -- reading -----------------------------------------------------------------------------------
    def kv_occupancy(self) -> tuple[np.ndarray, np.ndarray]:
        """(L, Hkv) tokens held in SRAM and spilled off-chip, summed over the batch."""
        cap = self.plan.kv_capacity
        in_sram = np.minimum(self.pos, cap) * self.options.batch
        spilled = np.maximum(self.pos - cap, 0) * self.options.batch
        return in_sram.astype(np.int64), spilled.astype(np.int64)

    def snapshot(self) -> Snapshot:
        kv_s, kv_x = self.kv_occupancy()
        return snapshot(self.chip, self.counters, sum(len(g) for g in self.generated[:1]), kv_s, kv_x)

    def logits(self) -> np.ndarray:
        """(batch, vocab) logits of the last pass."""
        return self.state.act[self.program.buffer_names.index("logits"), : self.options.batch,
                              : self.config.vocab_size].copy()
