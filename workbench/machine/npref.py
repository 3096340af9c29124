"""A plain numpy interpreter of the machine's Program: the same numerics as the numba kernels, no counting.

``NumpyMachine(machine)`` shares the machine's plan, program and packed weight store but keeps its
own state arrays, and decodes weights from the GGUF block bytes itself (layouts in
workbench.model.quant). It vectorises over rows and columns but keeps every fp32 sum in the
kernels' order: ``np.add.accumulate`` is strictly left to right (``np.sum`` is pairwise, so it is
never used on floats here), integer block sums are exact in any order, softmax and SiLU take exp from
``exp_f32_poly`` (the kernels' fp32 polynomial, op for op) and the MoE router's from libm's double ``exp``
rounded to fp32, as the executor's. Tests hold its logits bit-equal to the machine's.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import MachineFault, WorkbenchError
from ..model.quant import quantize_activations_q8, round_half_away
from ..model.sampling import rng_state, sample
from . import attention as A
from . import isa
from . import kernels as K
from .machine import rope_tables

F32 = np.float32
_F16_BYTES = {"f32": 4, "f16": 2, "bf16": 2}
_BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "b1_0": 6}


def seq_sum(terms: np.ndarray, axis: int = -1) -> np.ndarray:
    """fp32 sum along ``axis`` in index order starting from +0.0, as a scalar loop ``acc += t`` would give it."""
    if terms.shape[axis] == 0:
        return np.zeros(np.delete(terms.shape, axis), F32)
    acc = np.add.accumulate(terms.astype(F32, copy=False), axis=axis, dtype=F32)
    # +0.0 start: a loop never ends at -0.0, accumulate does when every term is -0.0
    return np.take(acc, -1, axis=axis) + F32(0.0)


def lane_total8(terms: np.ndarray) -> np.ndarray:
    """attention._lane_total8 along the last axis: eight lanes, lane k summing the terms at k mod 8 in order (zeros
    pad the last group: +0.0 changes no lane), then the lanes in order."""
    pad = -terms.shape[-1] % 8
    lanes = np.pad(terms, [(0, 0)] * (terms.ndim - 1) + [(0, pad)]).reshape(*terms.shape[:-1], -1, 8)
    return seq_sum(seq_sum(lanes, axis=-2), axis=-1)


def exp_f32(x: np.ndarray) -> np.ndarray:
    """f32(exp(f64(x))) with libm's exp, element by element (vectorised np.exp may differ by an ulp)."""
    flat = np.asarray(x, dtype=np.float64).ravel().tolist()
    return np.array([math.exp(v) for v in flat], dtype=np.float64).astype(F32).reshape(np.shape(x))


def exp_f32_poly(x: np.ndarray) -> np.ndarray:
    """kernels.exp_f32 elementwise: the same fp32 operations in the same order, so the same bits."""
    x = np.asarray(x, dtype=F32)
    p0, p1, p2, p3, p4, p5 = K.EXP_P
    with np.errstate(invalid="ignore", over="ignore"):
        xc = np.where(x > K.EXP_X_LO, x, K.EXP_X_LO).astype(F32)
        xc = np.where(xc < K.EXP_X_HI, xc, K.EXP_X_HI).astype(F32)
        nf = np.floor(xc * K.EXP_LOG2E + F32(0.5))
        r = (xc - nf * K.EXP_C1) - nf * K.EXP_C2
        z = r * r
        p = (((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * z + r + F32(1.0)
        y = (p * ((nf.astype(np.int32) + np.int32(126)) << np.int32(23)).view(F32)) * F32(2.0)
        y = np.where(x < K.EXP_X_LO, F32(0.0), y)
        y = np.where(x > K.EXP_X_HI, F32(np.inf), y)
        return np.where(x != x, x, y).astype(F32)


def _f16(raw: np.ndarray) -> np.ndarray:
    """(..., 2) uint8 little-endian IEEE half -> (...) f32 (exact)."""
    return np.ascontiguousarray(raw).view("<f2")[..., 0].astype(F32)


def decode_int_rows(store: np.ndarray, fmt: str, off: int, row_bytes: int, r0: int, r1: int,
                    b0: int, b1: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows r0:r1, 32-blocks b0:b1 of a block-format tensor -> (q (R, nb, 32) int32 in -8..8, d (R, nb) f32)."""
    rows = store[off + r0 * row_bytes: off + r1 * row_bytes].reshape(r1 - r0, row_bytes)
    if fmt == "tq2_0":
        # 256-value super-blocks of 66 bytes: qs[64], f16 d; value j*128 + l*32 + m is bits 2l of qs[j*32+m]
        sb = rows[:, : row_bytes // 66 * 66].reshape(r1 - r0, -1, 66)
        d_super = _f16(sb[:, :, 64:66])
        qs = sb[:, :, :64].reshape(r1 - r0, -1, 2, 1, 32).astype(np.int32)
        codes = (qs >> (2 * np.arange(4, dtype=np.int32)).reshape(1, 1, 1, 4, 1)) & 3  # (R, S, j, l, m)
        q = codes.reshape(r1 - r0, -1, 32) - 1
        d = np.repeat(d_super, 8, axis=1)
        return q[:, b0:b1], d[:, b0:b1]
    bb = _BLOCK_BYTES[fmt]
    blocks = rows[:, b0 * bb: b1 * bb].reshape(r1 - r0, b1 - b0, bb)
    d = _f16(blocks[:, :, 0:2])
    if fmt == "q8_0":
        q = blocks[:, :, 2:].view(np.int8).astype(np.int32)
    elif fmt == "q4_0":
        qs = blocks[:, :, 2:].astype(np.int32)
        q = np.concatenate([(qs & 15) - 8, (qs >> 4) - 8], axis=2)
    elif fmt == "b1_0":
        bits = np.unpackbits(blocks[:, :, 2:], axis=2, bitorder="little").astype(np.int32)
        q = 2 * bits - 1
    else:
        raise WorkbenchError(f"no integer decoding for weight format {fmt}")
    return q, d


def decode_float_rows(store: np.ndarray, fmt: str, off: int, row_bytes: int, r0: int, r1: int, cols: int) -> np.ndarray:
    """Rows r0:r1 of an f32/f16/bf16 tensor -> (R, cols) f32 (f16 and bf16 widened exactly)."""
    rows = store[off + r0 * row_bytes: off + r1 * row_bytes].reshape(r1 - r0, row_bytes)
    if fmt == "f32":
        return np.ascontiguousarray(rows[:, : cols * 4]).view("<f4").astype(F32)
    bits = np.ascontiguousarray(rows[:, : cols * 2]).view("<u2")
    if fmt == "f16":
        return bits.view("<f2").astype(F32)
    return (bits.astype(np.uint32) << 16).view(F32)


def decode_row_values(store: np.ndarray, fmt: str, off: int, row_bytes: int, row: int, cols: int) -> np.ndarray:
    """One row dequantized to f32 (cols,), value = f32(d) * f32(q), as the embedding lookup reads it."""
    if fmt in _F16_BYTES:
        return decode_float_rows(store, fmt, off, row_bytes, row, row + 1, cols)[0]
    if fmt == "tq2_0":
        nb = row_bytes // 66 * 8
    else:
        nb = row_bytes // _BLOCK_BYTES[fmt]
    q, d = decode_int_rows(store, fmt, off, row_bytes, row, row + 1, 0, nb)
    return (d[0][:, None] * q[0].astype(F32)).reshape(-1)[:cols]


class NumpyMachine:
    """The machine's numerics in numpy: ``set_prompt``, ``step_token``, ``generated``, ``logits()``."""

    def __init__(self, machine):
        self.machine = machine
        self.plan = machine.plan
        self.program = machine.program
        self.config = machine.config
        self.options = machine.options
        self.store = np.ascontiguousarray(machine.store).view(np.uint8)
        self.temperature = machine.temperature
        self.seed = machine.seed
        self.ops = self.program.ops
        self.names = self.program.buffer_names
        self.infos = {self.program.tensor_ids[n]: info for n, info in self.plan.tensors.items()}
        self.cos, self.sin = rope_tables(self.plan.context, self.config.head_dim, self.config.rope_theta)
        self.reset()

    def reset(self) -> None:
        cfg, o = self.config, self.options
        C = o.batch * o.prefill_chunk
        S = -(-max(cfg.dim, cfg.q_dim, cfg.kv_dim, cfg.hidden_dim, cfg.vocab_size, max(cfg.n_experts, 1)) // 256) * 256
        n_buf, n_q = len(self.names), len(self.program.qbuffer_names)
        L, H, B, ctx, hd = cfg.n_layers, cfg.n_kv_heads, o.batch, self.plan.context, cfg.head_dim
        self.act = np.zeros((n_buf, C, S), F32)            # fp32 activations, column = (sequence, position)
        self.xq = np.zeros((n_q, C, S), np.int8)           # quantized activations
        self.xd = np.zeros((n_q, C, S // 32), F32)         # their per-32 scales
        self.parts = np.zeros((max(len(g) for g in self.plan.groups), C, S), F32)  # partial sums per slot
        if o.kv_int8:
            self.kq = np.zeros((L, H, B, ctx, hd), np.int8)
            self.vq = np.zeros((L, H, B, ctx, hd), np.int8)
            self.kd = np.zeros((L, H, B, ctx), F32)
            self.vd = np.zeros((L, H, B, ctx), F32)
        else:
            self.kf = np.zeros((L, H, B, ctx, hd), F32)
            self.vf = np.zeros((L, H, B, ctx, hd), F32)
        k = max(cfg.n_experts_used, 1)
        self.sel = np.zeros((C, k), np.int64)
        self.selw = np.zeros((C, k), F32)
        self.rng = rng_state(self.seed)
        self.pos = 0
        self.pending: list[int] = []
        self.last_tokens = np.zeros(B, np.int64)
        self.generated: list[list[int]] = [[] for _ in range(B)]
        self.prompt: list[int] = []

    def set_prompt(self, ids: list[int]) -> None:
        if not ids or len(ids) >= self.plan.context:
            raise WorkbenchError(f"the prompt needs 1..{self.plan.context - 1} tokens, got {len(ids)}")
        self.reset()
        self.prompt = list(ids)
        self.pending = list(ids)

    def step_token(self) -> list[int]:
        """Run passes (prefill chunks first) until a token per sequence comes out."""
        B = self.options.batch
        while True:
            if self.pending:
                chunk = self.pending[: self.options.prefill_chunk]
                self.pending = self.pending[len(chunk):]
                T = len(chunk)
                tokens = np.array([chunk[t] for b in range(B) for t in range(T)], np.int64)
                seqs = np.repeat(np.arange(B), T)
                positions = np.tile(self.pos + np.arange(T), B)
            else:
                if self.pos >= self.plan.context:
                    raise MachineFault(f"the context is full: {self.plan.context} tokens planned")
                T = 1
                tokens, seqs, positions = self.last_tokens.copy(), np.arange(B), np.full(B, self.pos)
            out = self._pass(tokens, seqs, positions)
            self.pos += T
            if not self.pending:
                toks = [int(t) for t in out[:B]]
                self.last_tokens[:] = toks
                for b, t in enumerate(toks):
                    self.generated[b].append(t)
                return toks

    def generate(self, n: int) -> list[list[int]]:
        for _ in range(n):
            self.step_token()
        return self.generated

    def logits(self) -> np.ndarray:
        return self.act[self.names.index("logits"), : self.options.batch, : self.config.vocab_size].copy()

    # -- one pass of the program -------------------------------------------------------------------
    def _pass(self, tokens: np.ndarray, seqs: np.ndarray, positions: np.ndarray) -> np.ndarray:
        self.tokens, self.seqs, self.positions = tokens, seqs.copy(), positions.copy()
        self.ncol = len(tokens)
        self.out_tokens = np.zeros(self.ncol, np.int64)
        for op in self.ops:
            self._op(op)
        return self.out_tokens

    def _cols(self, expert: int) -> np.ndarray:
        """Columns an op applies to: all, or those routed to ``expert``."""
        cols = np.arange(self.ncol)
        if expert < 0:
            return cols
        return cols[(self.sel[: self.ncol] == expert).any(axis=1)]

    def _op(self, op) -> None:
        code = int(op["opcode"])
        cfg = self.config
        r0, r1 = int(op["r0"]), int(op["r1"])
        if code == isa.EMBED:
            info = self.infos[int(op["aux2"])]
            for c in range(self.ncol):
                self.act[op["out"], c, : cfg.dim] = decode_row_values(
                    self.store, info.fmt, int(op["w_off"]), info.row_bytes, int(self.tokens[c]), cfg.dim)
        elif code == isa.MATMUL:
            self._matmul(op)
        elif code == isa.SUMSQ:
            x = self.act[op["src"], : self.ncol, r0:r1]
            self.act[op["out"], : self.ncol, int(op["aux"])] = seq_sum(x * x, axis=1)
        elif code == isa.RMSNORM:  # the row is split over tiles: add their partial sums of squares in slot order
            ss = seq_sum(self.act[int(op["aux2"]), : self.ncol, : int(op["aux"])], axis=1)
            x = self.act[op["src"], : self.ncol, r0:r1]
            ss = ss / F32(cfg.dim) + F32(cfg.norm_eps)
            scale = F32(1.0) / np.sqrt(ss.astype(np.float64)).astype(F32)
            w = self.store[int(op["w_off"]) + 4 * r0: int(op["w_off"]) + 4 * r1].view("<f4")
            self.act[op["out"], : self.ncol, r0:r1] = w[None, :] * (scale[:, None] * x)
        elif code == isa.QUANT:
            cols = self._cols(int(op["aux"]))
            if len(cols) == 0:
                return
            lo, hi = r0 // 32 * 32, -(-r1 // 32) * 32  # whole 32-blocks, as the quantize engine reads them
            q, d = quantize_activations_q8(self.act[op["src"]][np.ix_(cols, np.arange(lo, hi))])
            self.xq[op["out"]][np.ix_(cols, np.arange(lo, hi))] = q
            self.xd[op["out"]][np.ix_(cols, np.arange(lo // 32, hi // 32))] = d
        elif code == isa.ROPE:
            hd = cfg.head_dim
            r = np.arange(r0 - r0 % 2, r1, 2)
            i = (r % hd) // 2
            fcr = self.cos[self.positions[:, None], i[None, :]]
            fci = self.sin[self.positions[:, None], i[None, :]]
            buf = self.act[op["out"]]
            v0, v1 = buf[: self.ncol, r].copy(), buf[: self.ncol, r + 1].copy()
            buf[: self.ncol, r] = v0 * fcr - v1 * fci
            buf[: self.ncol, r + 1] = v0 * fci + v1 * fcr
        elif code == isa.KV_WRITE:
            self._kv_write(op)
        elif code == isa.ATTN:
            self._attention(op)
        elif code == isa.REDUCE:
            cols = self._cols(int(op["aux2"]))
            ns = int(op["aux"])
            parts = self.parts[:ns][:, cols, r0:r1]          # (ns, cols, rows)
            # the reduce starts from slot 0 itself, not from +0.0
            self.act[op["out"]][np.ix_(cols, np.arange(r0, r1))] = np.add.accumulate(parts, axis=0, dtype=F32)[-1]
        elif code == isa.SILU_MUL:
            cols = self._cols(int(op["aux"]))
            idx = np.ix_(cols, np.arange(r0, r1))
            v = self.act[op["out"]][idx]
            sig = F32(1.0) / (F32(1.0) + exp_f32_poly(-v))
            self.act[op["out"]][idx] = v * sig * self.act[op["src"]][idx]
        elif code == isa.RESADD:
            self.act[op["out"], : self.ncol, r0:r1] += self.act[op["src"], : self.ncol, r0:r1]
        elif code == isa.MOE_ROUTE:
            self._moe_route(op)
        elif code == isa.MOE_COMBINE:
            e0 = self.names.index("eout.0")
            n = self.ncol
            terms = np.stack([self.selw[:n, j, None] * self.act[e0 + 3 * self.sel[:n, j], np.arange(n), : cfg.dim]
                              for j in range(cfg.n_experts_used)])
            self.act[op["out"], :n, : cfg.dim] = seq_sum(terms, axis=0)
        elif code == isa.COPY:
            B = self.options.batch
            if self.ncol != B:
                per = self.ncol // B
                last = np.arange(B) * per + per - 1
                self.act[0, :B] = self.act[0, last]
                self.seqs, self.positions = self.seqs[last], self.positions[last]
                self.ncol = B
        elif code == isa.SAMPLE:
            logits = self.act[op["src"], : self.ncol, :r1]
            if not np.isfinite(logits).all():
                raise MachineFault("a NaN or infinity in the logits (numpy reference)")
            for c in range(self.ncol):
                self.out_tokens[c] = sample(logits[c], self.temperature, self.rng)
        # SEND, ALLREDUCE, ALLGATHER, LOGITS_GATHER, MOE_DISPATCH, STREAM only move bytes

    def _matmul(self, op) -> None:
        info = self.infos[int(op["aux2"])]
        cols = self._cols(int(op["aux"]))
        if len(cols) == 0:
            return
        r0, r1, k0, k1 = (int(op[f]) for f in ("r0", "r1", "k0", "k1"))
        off, rb = int(op["w_off"]), int(op["w_row_bytes"])
        slot = int(op["dst"])
        y = self.parts[slot] if slot >= 0 else self.act[op["out"]]
        if info.fmt in _F16_BYTES:
            kend = min(k1, info.cols)
            w = decode_float_rows(self.store, info.fmt, off, rb, r0, r1, info.cols)[:, k0:kend]   # (R, K)
            x = self.act[op["src"]][cols, k0:kend]                                                # (C, K)
            acc = seq_sum(w[None, :, :] * x[:, None, :], axis=2)
        else:
            b0, b1 = k0 // 32, k1 // 32
            q, dw = decode_int_rows(self.store, info.fmt, off, rb, r0, r1, b0, b1)       # (R, nb, 32), (R, nb)
            xq = self.xq[op["src"]][cols, b0 * 32: b1 * 32].astype(np.int32).reshape(len(cols), b1 - b0, 32)
            xd = self.xd[op["src"]][cols, b0:b1]                                          # (C, nb)
            s = np.einsum("cbj,rbj->crb", xq, q)                                          # exact int32 block sums
            acc = seq_sum((dw[None, :, :] * xd[:, None, :]) * s.astype(F32), axis=2)
        y[np.ix_(cols, np.arange(r0, r1))] = acc

    def _kv_write(self, op) -> None:
        cfg = self.config
        hd, h, l = cfg.head_dim, int(op["aux"]), int(op["layer"])
        k = self.act[self.names.index("k"), : self.ncol, h * hd:(h + 1) * hd]
        v = self.act[self.names.index("v"), : self.ncol, h * hd:(h + 1) * hd]
        if (self.positions >= self.plan.context).any():
            raise MachineFault("the KV cache is full (numpy reference)")
        if self.options.kv_int8:
            kq, kd = _quantize_head(k)
            vq, vd = _quantize_head(v)
            self.kq[l, h, self.seqs, self.positions] = kq
            self.kd[l, h, self.seqs, self.positions] = kd
            self.vq[l, h, self.seqs, self.positions] = vq
            self.vd[l, h, self.seqs, self.positions] = vd
        else:
            self.kf[l, h, self.seqs, self.positions] = k
            self.vf[l, h, self.seqs, self.positions] = v

    def _attention(self, op) -> None:
        """One part's columns (isa.part_cols) and the n_rep query heads of one kv-head at once; positions beyond a
        column's own are masked."""
        cfg = self.config
        hd, h, l = cfg.head_dim, int(op["aux"]), int(op["layer"])
        n_rep = cfg.n_heads // cfg.n_kv_heads
        lo, hi = isa.part_cols(int(op["r0"]), int(op["r1"]), self.ncol, self.plan.chip.realism.block_cols)
        if hi <= lo:
            return
        n = hi - lo
        seqs = self.seqs[lo:hi]
        npos = self.positions[lo:hi] + 1                             # (C,)
        T = int(npos.max())
        live = np.arange(T)[None, :] < npos[:, None]                 # (C, T)
        q = self.act[self.names.index("q"), lo:hi, h * n_rep * hd:(h + 1) * n_rep * hd].reshape(n, n_rep, hd)
        inv = F32(1.0 / math.sqrt(hd))
        if self.options.kv_int8:
            qq, dq = _quantize_head(q.reshape(n * n_rep, hd))
            qq, dq = qq.reshape(n, n_rep, hd).astype(np.int32), dq.reshape(n, n_rep)
            kq = self.kq[l, h, seqs, :T].astype(np.int32)       # (C, T, hd)
            kd = self.kd[l, h, seqs, :T]                        # (C, T)
            s = np.einsum("crj,ctj->crt", qq, kq)
            scores = (dq[:, :, None] * kd[:, None, :]) * s.astype(F32) * inv
        else:
            k = self.kf[l, h, seqs, :T]                         # (C, T, hd)
            scores = seq_sum(q[:, :, None, :] * k[:, None, :, :], axis=3) * inv
            values = self.vf[l, h, seqs, :T]
        scores = np.where(live[:, None, :], scores, F32(-np.inf))
        mx = scores.max(axis=2, keepdims=True)
        with np.errstate(invalid="ignore"):                          # -inf - (-inf) in fully masked rows
            e = np.where(live[:, None, :], exp_f32_poly(scores - mx), F32(0.0))
        tot = lane_total8(e) if self.options.kv_int8 else seq_sum(e, axis=2)   # (C, n_rep)
        p = e / tot[:, :, None]                                      # masked positions: exactly 0
        if self.options.kv_int8:
            w = np.where(p >= A.PV_P_MIN, p * self.vd[l, h, seqs, :T][:, None, :], F32(0.0))
            out = _pv_int8(w, self.vq[l, h, seqs, :T])
        else:
            out = seq_sum(p[:, :, :, None] * values[:, None, :, :], axis=2)   # (C, n_rep, hd)
        self.act[op["out"], lo:hi, h * n_rep * hd:(h + 1) * n_rep * hd] = out.reshape(n, n_rep * hd)

    def _moe_route(self, op) -> None:
        n_e, kdim, k = int(op["r1"]), int(op["k1"]), self.config.n_experts_used
        woff = int(op["w_off"])
        w = self.store[woff: woff + 4 * n_e * kdim].view("<f4").reshape(n_e, kdim)
        x = self.act[op["src"], : self.ncol, :kdim]
        logits = seq_sum(w[None, :, :] * x[:, None, :], axis=2)     # (C, n_e)
        self.act[op["out"], : self.ncol, :n_e] = logits
        for c in range(self.ncol):
            order = np.argsort(-logits[c], kind="stable")[:k]       # ties to the lower expert id
            self.sel[c, :k] = order
            ex_ = exp_f32((logits[c, order] - logits[c, order[0]]).astype(np.float64))
            self.selw[c, :k] = ex_ / seq_sum(ex_)


def _pv_int8(w: np.ndarray, vq: np.ndarray) -> np.ndarray:
    """attention._pv_int8 for (C, n_rep, T) weights w = p x v-scale (0 at masked positions and where p < PV_P_MIN)
    and (C, T, hd) int8 values: w quantized per block of PV_BLOCK positions, exact integer sums per block, fp32
    sum of d x block sum over the blocks in order. All-zero blocks past a column's own positions add +0.0, which
    changes nothing."""
    C, R, T = w.shape
    nb = -(-T // A.PV_BLOCK)
    pad = nb * A.PV_BLOCK - T
    wb = np.pad(w, ((0, 0), (0, 0), (0, pad))).reshape(C * R * nb, A.PV_BLOCK)
    wq, d = _quantize_head(wb)
    wq = wq.reshape(C, R, nb, A.PV_BLOCK).astype(np.int64)
    vb = np.pad(vq, ((0, 0), (0, pad), (0, 0))).reshape(C, nb, A.PV_BLOCK, -1).astype(np.int64)
    sums = np.einsum("crbt,cbtj->crbj", wq, vb).astype(F32)       # |sum| < 2^24: exact in fp32
    return seq_sum(d.reshape(C, R, nb)[..., None] * sums, axis=2)   # (C, n_rep, hd)


def _quantize_head(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, hd) f32 -> int8 (N, hd) and one f32 scale per row: d = max|x| / 127, q = round(x / d), |q| <= 127."""
    d = (np.abs(x).max(axis=1) / F32(127.0)).astype(F32)
    safe = np.where(d == 0, F32(1.0), d)[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.clip(round_half_away((x / safe).astype(F32)), -127, 127)
    return np.where(d[:, None] == 0, 0, q).astype(np.int8), d
