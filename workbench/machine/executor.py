"""The numba executor: runs a Program op by op, doing the arithmetic and counting every MAC, byte and hop.

``run`` executes ops[start:stop] and returns the index it stopped at, so callers can
single-step an op, a layer or a whole token. All state is arrays (see machine.MachineState
and counters.Counters); nothing in here touches a Python object. With ``numeric`` 0 it only
counts (the shape-only projection drives the very same loop).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

from .. import cost as cm
from . import attention as A
from . import isa
from . import kernels as K
from .topology import route_links

# op field columns as plain ints (numba reads module-level ints as constants)
O_AUX = isa.F["aux"]
O_AUX2 = isa.F["aux2"]
O_DST = isa.F["dst"]
O_FMT = isa.F["fmt"]
O_K0 = isa.F["k0"]
O_K1 = isa.F["k1"]
O_KIND = isa.F["kind"]
O_LAYER = isa.F["layer"]
O_MACS = isa.F["macs"]
O_NBYTES = isa.F["nbytes"]
O_OPCODE = isa.F["opcode"]
O_OUT = isa.F["out"]
O_R0 = isa.F["r0"]
O_R1 = isa.F["r1"]
O_SRC = isa.F["src"]
O_T_CNT = isa.F["t_cnt"]
O_T_OFF = isa.F["t_off"]
O_TILE = isa.F["tile"]
O_W_OFF = isa.F["w_off"]
O_W_ROW_BYTES = isa.F["w_row_bytes"]
N_PARAMS = cm.N_PARAMS
PREC_INT8 = cm.PREC_INDEX["int8"]
PREC_F32 = cm.PREC_INDEX["f32"]
# indices into the int64 state vector ``st``
S_NCOL, S_BATCH, S_KV_INT8, S_NREP, S_HD, S_DIM, S_HIDDEN, S_VOCAB, S_NEXP, S_NUSED, S_NUMERIC, \
    S_EOUT0, S_H10, S_TOKEN_COLS, S_FAULT, S_FAULT_OP, S_NKV, S_EMBED_SET = range(18)
N_ST = 18
# indices into the float64 vector ``fs``
FS_EPS, FS_TEMP, FS_DRAM_FREE, FS_INV_NLAYERS = range(4)
N_FS = 4
# fault codes
FAULT_NONE, FAULT_NAN, FAULT_CONTEXT = 0, 1, 2
# columns of the per-transfer-set table ``cset`` built by comm_tables (bytes are per column)
C_LOFF, C_LCNT, C_TOFF, C_TCNT, C_HOP_BYTES, C_BYTES, C_GMAX = range(7)
N_C = 7


@njit(cache=True, nogil=True, inline="always")
def _routed(sel, c, e, n_used):
    """Does column c go through expert e? Every column goes through a dense op (e < 0)."""
    if e < 0:
        return True
    for j in range(n_used):
        if sel[c, j] == e:
            return True
    return False


@njit(cache=True, nogil=True)
def comm_tables(set_off, set_cnt, transfers, geometry, hops, n_tiles):
    """Fold each transfer set (rows set_off[i]:+set_cnt[i] of ``transfers``) into what the executor adds per column.

    Returns (cset (n_sets, N_C), clinks (M, 2) = link id and bytes, ctiles (K, 3) = tile, bytes sent, bytes
    received). Integer sums only, so a set's counts and link loads are exactly those of routing each transfer.
    """
    n_sets = set_off.shape[0]
    cap = 0
    for i in range(n_sets):
        for j in range(set_off[i], set_off[i] + set_cnt[i]):
            cap += hops[transfers[j, 0], transfers[j, 1]]
    cset = np.zeros((n_sets, N_C), np.int64)
    clinks = np.zeros((cap, 2), np.int64)
    ctiles = np.zeros((2 * set_cnt.sum(), 3), np.int64)
    load = np.zeros(n_tiles * 4, np.int64)
    link_order = np.zeros(n_tiles * 4, np.int64)
    tsent = np.zeros(n_tiles, np.int64)
    trecv = np.zeros(n_tiles, np.int64)
    tseen = np.zeros(n_tiles, np.bool_)
    tile_order = np.zeros(n_tiles, np.int64)
    pathbuf = np.zeros(n_tiles * 4 + 2, np.int64)
    nl_all = 0
    nt_all = 0
    for i in range(n_sets):
        nl = 0
        nt = 0
        hop_bytes = 0
        total = 0
        gmax = 0
        for j in range(set_off[i], set_off[i] + set_cnt[i]):
            a = transfers[j, 0]
            b = transfers[j, 1]
            nb = transfers[j, 2]
            for t in (a, b):
                if not tseen[t]:
                    tseen[t] = True
                    tile_order[nt] = t
                    nt += 1
            tsent[a] += nb
            trecv[b] += nb
            total += nb
            h = route_links(a, b, geometry, pathbuf)
            hop_bytes += nb * h
            for k in range(h):
                lk = pathbuf[k]
                if load[lk] == 0 and nb > 0:
                    link_order[nl] = lk
                    nl += 1
                load[lk] += nb
            if hops[a, b] > gmax:
                gmax = hops[a, b]
        cset[i, C_LOFF] = nl_all
        cset[i, C_LCNT] = nl
        cset[i, C_TOFF] = nt_all
        cset[i, C_TCNT] = nt
        cset[i, C_HOP_BYTES] = hop_bytes
        cset[i, C_BYTES] = total
        cset[i, C_GMAX] = gmax
        for k in range(nl):
            lk = link_order[k]
            clinks[nl_all + k, 0] = lk
            clinks[nl_all + k, 1] = load[lk]
            load[lk] = 0
        for k in range(nt):
            t = tile_order[k]
            ctiles[nt_all + k, 0] = t
            ctiles[nt_all + k, 1] = tsent[t]
            ctiles[nt_all + k, 2] = trecv[t]
            tsent[t] = 0
            trecv[t] = 0
            tseen[t] = False
        nl_all += nl
        nt_all += nt
    return cset, clinks[:nl_all].copy(), ctiles[:nt_all].copy()


@njit(cache=True, nogil=True)
def _comm_begin(scratch_load, touched, n_touched):
    for i in range(n_touched):
        scratch_load[touched[i]] = 0.0
    return 0


@njit(cache=True, nogil=True)
def _route(src, dst, nbytes, kind, geometry, pathbuf, scratch_load, touched, n_touched,
           link_bytes, hop_bytes, sent, recv, kind_bytes, sram_rd, sram_wr):
    """Count one transfer along its dimension-ordered route; returns the new number of touched links."""
    h = route_links(src, dst, geometry, pathbuf)
    for i in range(h):
        lk = pathbuf[i]
        if scratch_load[lk] == 0.0:
            touched[n_touched] = lk
            n_touched += 1
        scratch_load[lk] += nbytes
        link_bytes[lk] += nbytes
    hop_bytes[0] += nbytes * h
    sent[src] += nbytes
    recv[dst] += nbytes
    kind_bytes[kind] += nbytes
    sram_rd[src] += nbytes
    sram_wr[dst] += nbytes
    return n_touched


@njit(cache=True, nogil=True)
def _worst_link(scratch_load, touched, n_touched, link_busy, params):
    """Serialization of a set of concurrent transfers: the most loaded link's cycles."""
    worst = 0.0
    for i in range(n_touched):
        lk = touched[i]
        cyc = cm.link_cycles(scratch_load[lk], params)
        link_busy[lk] += cyc
        if cyc > worst:
            worst = cyc
    return worst


@njit(cache=True, nogil=True, inline="always")
def _pipelined(first, last, ser, lat, k):
    """End of a stage that streams ``k`` columns: it starts on the first column at ``first``, the last column
    arrives at ``last``, and each column takes ser / k (+ ``lat`` once). With k = 1: last + ser + lat."""
    end = first + ser + lat
    tail = last + ser / k + lat
    return end if end > tail else tail


@njit(cache=True, nogil=True)
def _comm_mask(mask, clock, pipe, ser, lat, k):
    """A collective over the tiles in ``mask``: it starts when every participant's first column is ready and
    ends after its last; moves the participants' clocks."""
    first = 0.0
    last = 0.0
    for t in range(clock.shape[0]):
        if mask[t]:
            if pipe[0, t] > first:
                first = pipe[0, t]
            if clock[t] > last:
                last = clock[t]
    end = _pipelined(first, last, ser, lat, k)
    for t in range(clock.shape[0]):
        if mask[t]:
            clock[t] = end
            pipe[0, t] = first + ser / k + lat


@njit(cache=True, nogil=True)
def _dram(tile, nbytes, start, clock, fs, params, offchip):
    """An off-chip transfer from ``tile`` competing for the chip's one off-chip interface; returns its end."""
    if nbytes <= 0:
        return start
    begin = max(start, fs[FS_DRAM_FREE])
    ser = cm.dram_cycles(nbytes, params)
    fs[FS_DRAM_FREE] = begin + ser
    offchip[tile] += nbytes
    return begin + ser + params[cm.P_DRAM_LAT]


# _nrt=False: no reference counting in the op loop. It allocates nothing, and each view it takes (act[buf], ...)
# would otherwise cost an atomic incref/decref pair per op. (numba's private flag, as its own tests use it.)
@njit(cache=True, nogil=True, _nrt=False)
def run(start, stop, ops, cset, clinks, ctiles, st, fs, params_arr, fmt_prec,
        w, wi8, wf32, wu16, f16, bf16, wt32, wt_tab,
        act, xq, xd, parts, kq, kd, vq, vd, kf, vf,
        tokens, out_tokens, col_seq, col_pos, sel, selw, rng, cos_t, sin_t,
        kv_home, kv_cap, groups, expert_tiles, embed_tab,
        geometry, pathbuf, hops,
        tile_macs, tile_vec, sram_rd, sram_wr, off_rd, off_wr, link_bytes, link_busy, kind_bytes, hop_bytes,
        sent, recv, op_cycles, op_count, clock, busy, pipe,
        scratch_load, touched, mask, scores, qq, headout, probs, colmask, wv, accbuf):
    """Execute ops[start:stop]; stop early at a fault (st[S_FAULT] != 0). Returns the next op index.

    Timing: a tile streams an op's columns in blocks of the profile's block_cols, so an op starts on its first
    block as soon as the previous result's first block is ready (pipe[0, tile]) and the tile's datapath is free
    (pipe[1, tile]), and ends no sooner than the previous result's last block (clock[tile]) plus one block's share
    of its own time. Compute ops on one tile share its datapath and follow each other; a transfer overlaps the
    compute before and after it; a layer's first ops wait for the previous layer's whole result. With one block
    (a batch-1 decode step) every op waits for the one before it."""
    # the cost parameters as a tuple: an array argument would be reference-counted (two atomic ops) in every
    # cost-model call, once per op
    params = to_fixed_tuple(params_arr, N_PARAMS)
    numeric = st[S_NUMERIC] == 1
    block = max(int(params[cm.P_BLOCK_COLS]), 1)
    hd = st[S_HD]
    n_rep = st[S_NREP]
    n_tiles = clock.shape[0]
    i = start
    while i < stop:
        code = ops[i, O_OPCODE]
        tile = ops[i, O_TILE]
        ncol = st[S_NCOL]
        if i > 0 and ops[i, O_LAYER] != ops[i - 1, O_LAYER]:
            # columns stream within a layer; a layer's first ops wait for the whole of the previous layer's results
            for t in range(n_tiles):
                pipe[0, t] = clock[t]
        k_cols = isa.blocks(ncol, block)
        t0 = pipe[0, tile] if pipe[0, tile] > pipe[1, tile] else pipe[1, tile]
        dur = 0.0
        if code == isa.MATMUL:
            e = ops[i, O_AUX]
            prec = fmt_prec[ops[i, O_FMT]]
            r0 = ops[i, O_R0]
            r1 = ops[i, O_R1]
            k0 = ops[i, O_K0]
            k1 = ops[i, O_K1]
            fmt = ops[i, O_FMT]
            slot = ops[i, O_DST]
            if e < 0:  # dense: every column
                active = ncol
                for c in range(ncol):
                    colmask[c] = True
            else:
                active = 0
                for c in range(ncol):
                    colmask[c] = _routed(sel, c, e, st[S_NUSED])
                    if colmask[c]:
                        active += 1
            if numeric and active > 0 and fmt == K.FMT_Q8_0 and ncol == 1:  # decode: one column of int8 blocks
                if slot >= 0:
                    K.matmul_q8_col(w, wi8, ops[i, O_W_OFF], ops[i, O_W_ROW_BYTES], r0, r1, k0 // 32, k1 // 32,
                                    xq, xd, ops[i, O_SRC], parts, slot, f16)
                else:
                    K.matmul_q8_col(w, wi8, ops[i, O_W_OFF], ops[i, O_W_ROW_BYTES], r0, r1, k0 // 32, k1 // 32,
                                    xq, xd, ops[i, O_SRC], act, ops[i, O_OUT], f16)
            elif numeric and active > 0 and fmt <= K.FMT_BF16:
                y_buf = slot if slot >= 0 else ops[i, O_OUT]
                for c in range(ncol):
                    if colmask[c]:
                        if slot >= 0:
                            K.matmul_fp(fmt, wf32, wu16, wt32, wt_tab, ops[i, O_W_OFF], ops[i, O_W_ROW_BYTES], r0, r1,
                                        k0, k1, k1, act, ops[i, O_SRC], parts, y_buf, c, f16, bf16)
                        else:
                            K.matmul_fp(fmt, wf32, wu16, wt32, wt_tab, ops[i, O_W_OFF], ops[i, O_W_ROW_BYTES], r0, r1,
                                        k0, k1, k1, act, ops[i, O_SRC], act, y_buf, c, f16, bf16)
            elif numeric and active > 0:
                y = parts[slot] if slot >= 0 else act[ops[i, O_OUT]]
                K.matmul_int(fmt, w, wi8, ops[i, O_W_OFF], ops[i, O_W_ROW_BYTES], r0, r1, k0, k1,
                             xq[ops[i, O_SRC]], xd[ops[i, O_SRC]], y, colmask, ncol, f16, wv, accbuf)
            if active > 0:
                macs = ops[i, O_MACS] * active
                tile_macs[tile, prec] += macs
                act_bytes = active * (k1 - k0) * (4 if fmt <= K.FMT_BF16 else 1) + active * (r1 - r0) * 4
                sram_rd[tile] += ops[i, O_NBYTES] + active * (k1 - k0) * (4 if fmt <= K.FMT_BF16 else 1)
                sram_wr[tile] += active * (r1 - r0) * 4
                dur = cm.compute_op_cycles(macs, prec, 0, ops[i, O_NBYTES] + act_bytes, params)
        elif code == isa.STREAM:
            e = ops[i, O_AUX]
            routed = False
            for c in range(ncol):
                if _routed(sel, c, e, st[S_NUSED]):
                    routed = True
            if routed:
                nb = ops[i, O_NBYTES]
                end = _dram(tile, nb, t0, clock, fs, params, off_rd)
                sram_wr[tile] += nb
                kind_bytes[isa.KIND_STREAM] += nb
                dur = end - t0
            # weights do not wait for the data: the stream only holds the datapath (the matmul needs it done)
            if t0 + dur > clock[tile]:
                clock[tile] = t0 + dur
            pipe[1, tile] = t0 + dur
            busy[tile] += dur
            op_cycles[code] += dur
            op_count[code] += 1
            i += 1
            continue
        elif code == isa.RMSNORM:
            r0 = ops[i, O_R0]
            r1 = ops[i, O_R1]
            n = r1 - r0
            n_parts = ops[i, O_AUX]   # the row is split over tiles: their partial sums of squares are in act[aux2]
            if numeric:
                for c in range(ncol):
                    if not K.rmsnorm_slice(act[ops[i, O_SRC]], act[ops[i, O_OUT]], act[ops[i, O_AUX2]], c, r0, r1,
                                           n_parts, st[S_DIM], wf32, ops[i, O_W_OFF] // 4, fs[FS_EPS]):
                        st[S_FAULT] = FAULT_NAN
                        st[S_FAULT_OP] = i
                        return i
            tile_vec[tile] += ncol * (3 * n + n_parts)
            sram_rd[tile] += ncol * (n + n_parts) * 4 + n * 4
            sram_wr[tile] += ncol * n * 4
            dur = cm.compute_op_cycles(0, 0, ncol * (3 * n + n_parts), ncol * (2 * n + n_parts) * 4 + n * 4, params)
        elif code == isa.SUMSQ:
            r0 = ops[i, O_R0]
            r1 = ops[i, O_R1]
            n = r1 - r0
            if numeric:
                ss = act[ops[i, O_OUT]]
                for c in range(ncol):
                    ss[c, ops[i, O_AUX]] = K.sum_squares(act[ops[i, O_SRC]], c, r0, r1)
            tile_vec[tile] += ncol * 2 * n
            sram_rd[tile] += ncol * n * 4
            sram_wr[tile] += ncol * 4
            dur = cm.compute_op_cycles(0, 0, ncol * 2 * n, ncol * (n + 1) * 4, params)
        elif code == isa.QUANT:
            r0 = ops[i, O_R0]
            r1 = ops[i, O_R1]
            e = ops[i, O_AUX]
            n = r1 - r0
            active = 0
            for c in range(ncol):
                if not _routed(sel, c, e, st[S_NUSED]):
                    continue
                active += 1
                if numeric and not K.quantize_q8(act[ops[i, O_SRC]], c, r0, r1, xq[ops[i, O_OUT]], xd[ops[i, O_OUT]]):
                    st[S_FAULT] = FAULT_NAN
                    st[S_FAULT_OP] = i
                    return i
            tile_vec[tile] += active * 2 * n
            sram_rd[tile] += active * n * 4
            sram_wr[tile] += active * (n + (n + 31) // 32 * 4)
            dur = cm.compute_op_cycles(0, 0, active * 2 * n, active * n * 5, params)
        elif code == isa.ROPE:
            r0 = ops[i, O_R0]
            r1 = ops[i, O_R1]
            if numeric:
                for c in range(ncol):
                    K.rope(act[ops[i, O_OUT]], c, r0, r1, hd, col_pos[c], cos_t, sin_t)
            n = r1 - r0
            tile_vec[tile] += ncol * 3 * n
            sram_rd[tile] += ncol * n * 4
            sram_wr[tile] += ncol * n * 4
            dur = cm.compute_op_cycles(0, 0, ncol * 3 * n, ncol * n * 8, params)
        elif code == isa.KV_WRITE:
            l = ops[i, O_LAYER]
            h = ops[i, O_AUX]
            cap = kv_cap[l, h]
            kvb = 2 * (hd + 4) if st[S_KV_INT8] == 1 else 2 * hd * 4
            spill = 0  # the op's off-chip bytes go out as one burst: requests pipeline, latency is paid once
            for c in range(ncol):
                seq = col_seq[c]
                pos = col_pos[c]
                if numeric and pos >= kq.shape[3] and pos >= kf.shape[3]:
                    st[S_FAULT] = FAULT_CONTEXT
                    st[S_FAULT_OP] = i
                    return i
                if numeric:
                    if st[S_KV_INT8] == 1:
                        kd[l, h, seq, pos] = K.quantize_vec(act[3], c, h * hd, hd, kq[l, h, seq, pos])
                        vd[l, h, seq, pos] = K.quantize_vec(act[4], c, h * hd, hd, vq[l, h, seq, pos])
                    else:
                        for j in range(hd):
                            kf[l, h, seq, pos, j] = act[3, c, h * hd + j]
                            vf[l, h, seq, pos, j] = act[4, c, h * hd + j]
                if pos < cap:
                    sram_wr[tile] += kvb
                else:
                    spill += kvb
            end = _dram(tile, spill, t0, clock, fs, params, off_wr)
            kind_bytes[isa.KIND_KV] += spill
            tile_vec[tile] += ncol * 4 * hd
            sram_rd[tile] += ncol * 2 * hd * 4
            dur = max(cm.compute_op_cycles(0, 0, ncol * 4 * hd, ncol * 2 * hd * 4, params), end - t0)
        elif code == isa.ATTN:
            # one part of a kv-head's attention: its share of the columns, on its tile. Each sequence's K and V are
            # read once for all the part's columns of that sequence (as FlashAttention streams K/V blocks once per
            # query block): the positions held in SRAM from the home tile (over the network when this is another
            # tile), the spilled ones from off-chip memory
            l = ops[i, O_LAYER]
            h = ops[i, O_AUX]
            c_lo, c_hi = isa.part_cols(ops[i, O_R0], ops[i, O_R1], ncol, block)
            if c_hi <= c_lo:  # no columns for this part (one sequence decoding): it does not run
                i += 1
                continue
            k_cols = isa.blocks(c_hi - c_lo, block)
            home = kv_home[l, h]
            if tile != home and clock[home] > t0:
                t0 = clock[home]  # the home tile has written this step's K and V
            cap = kv_cap[l, h]
            kvb = 2 * (hd + 4) if st[S_KV_INT8] == 1 else 2 * hd * 4
            spill = 0
            macs = 0
            vec = 0
            sbytes = 0
            run_seq = col_seq[c_lo]
            run_pos = 0
            for c in range(c_lo, c_hi):
                seq = col_seq[c]
                if seq != run_seq:  # a run of one sequence's columns ends: its K and V were read once
                    sbytes += min(run_pos, cap) * kvb
                    spill += (run_pos - min(run_pos, cap)) * kvb
                    run_seq = seq
                    run_pos = 0
                npos = col_pos[c] + 1
                if npos > run_pos:
                    run_pos = npos
                if numeric:
                    if st[S_KV_INT8] == 1:
                        A.attention_int8(act[2], act[ops[i, O_OUT]], c, h, n_rep, hd, npos, kq, kd, vq, vd, l, seq,
                                         scores, qq, headout)
                    else:
                        A.attention_f32(act[2], act[ops[i, O_OUT]], c, h, n_rep, hd, npos, kf, vf, l, seq, scores,
                                        headout)
                if st[S_KV_INT8] == 1:  # q.K and the int8 p.V on the MAC array; scales, softmax, quantizing w
                    macs += 2 * n_rep * npos * hd
                    vec += n_rep * (10 * npos + hd * ((npos + A.PV_BLOCK - 1) // A.PV_BLOCK) + 2 * hd)
                else:  # q.K on the MAC array (f32), p.V and the softmax on the vector unit
                    macs += n_rep * npos * hd
                    vec += n_rep * npos * (hd + 4)
            sbytes += min(run_pos, cap) * kvb
            spill += (run_pos - min(run_pos, cap)) * kvb
            fetch = 0.0
            if tile != home and sbytes > 0:  # the SRAM-held positions come over the network from the home tile
                n_touched = _route(home, tile, sbytes, isa.KIND_KV_FETCH, geometry, pathbuf, scratch_load, touched,
                                   0, link_bytes, hop_bytes, sent, recv, kind_bytes, sram_rd, sram_wr)
                fetch = _worst_link(scratch_load, touched, n_touched, link_busy, params) \
                    + hops[home, tile] * params[cm.P_HOP_LAT]
                _comm_begin(scratch_load, touched, n_touched)
            end = _dram(tile, spill, t0, clock, fs, params, off_rd)
            kind_bytes[isa.KIND_KV] += spill
            prec = PREC_INT8 if st[S_KV_INT8] == 1 else PREC_F32
            tile_macs[tile, prec] += macs
            tile_vec[tile] += vec
            sram_rd[tile] += sbytes
            sram_wr[tile] += (c_hi - c_lo) * n_rep * hd * 4
            dur = max(cm.compute_op_cycles(macs, prec, vec, sbytes, params), end - t0, fetch)
        elif code == isa.REDUCE:
            r0 = ops[i, O_R0]
            r1 = ops[i, O_R1]
            ns = ops[i, O_AUX]
            e = ops[i, O_AUX2]
            active = 0
            for c in range(ncol):
                if not _routed(sel, c, e, st[S_NUSED]):
                    continue
                active += 1
                if numeric:
                    out = act[ops[i, O_OUT]]
                    for r in range(r0, r1):
                        acc = parts[0, c, r]
                        for s in range(1, ns):
                            acc += parts[s, c, r]
                        out[c, r] = acc
            n = (r1 - r0) * active
            tile_vec[tile] += n * ns
            sram_rd[tile] += n * ns * 4
            sram_wr[tile] += n * 4
            dur = cm.compute_op_cycles(0, 0, n * ns, n * (ns + 1) * 4, params)
        elif code == isa.SILU_MUL:
            r0 = ops[i, O_R0]
            r1 = ops[i, O_R1]
            e = ops[i, O_AUX]
            active = 0
            for c in range(ncol):
                if not _routed(sel, c, e, st[S_NUSED]):
                    continue
                active += 1
                if numeric:
                    K.silu_mul(act[ops[i, O_OUT]], act[ops[i, O_SRC]], c, r0, r1)
            n = (r1 - r0) * active
            tile_vec[tile] += n * 4
            sram_rd[tile] += n * 8
            sram_wr[tile] += n * 4
            dur = cm.compute_op_cycles(0, 0, n * 4, n * 12, params)
        elif code == isa.RESADD:
            r0 = ops[i, O_R0]
            r1 = ops[i, O_R1]
            if numeric:
                src = act[ops[i, O_SRC]]
                out = act[ops[i, O_OUT]]
                for c in range(ncol):
                    for r in range(r0, r1):
                        out[c, r] = out[c, r] + src[c, r]
            n = (r1 - r0) * ncol
            tile_vec[tile] += n
            sram_rd[tile] += n * 8
            sram_wr[tile] += n * 4
            dur = cm.compute_op_cycles(0, 0, n, n * 12, params)
        elif code == isa.EMBED:
            fmt = ops[i, O_FMT]
            n_touched = 0
            for t in range(n_tiles):
                mask[t] = False
            gmax = 0
            for c in range(ncol):
                tok = tokens[c]
                si = 0
                for s in range(embed_tab.shape[0]):
                    if embed_tab[s, 1] <= tok < embed_tab[s, 2]:
                        si = s
                owner = embed_tab[si, 0]
                if numeric:
                    K.dequant_row(fmt, w, wi8, wf32, wu16, ops[i, O_W_OFF], ops[i, O_W_ROW_BYTES], tok, st[S_DIM],
                                  act[ops[i, O_OUT]], c, f16, bf16)
                sram_rd[owner] += ops[i, O_W_ROW_BYTES]
                mask[owner] = True
                # the row goes from its owner to every other tile of the group: one precomputed transfer set
                row = st[S_EMBED_SET] + si
                for j in range(cset[row, C_LOFF], cset[row, C_LOFF] + cset[row, C_LCNT]):
                    lk = clinks[j, 0]
                    if scratch_load[lk] == 0.0:
                        touched[n_touched] = lk
                        n_touched += 1
                    scratch_load[lk] += clinks[j, 1]
                    link_bytes[lk] += clinks[j, 1]
                for j in range(cset[row, C_TOFF], cset[row, C_TOFF] + cset[row, C_TCNT]):
                    t = ctiles[j, 0]
                    mask[t] = True
                    sent[t] += ctiles[j, 1]
                    recv[t] += ctiles[j, 2]
                    sram_rd[t] += ctiles[j, 1]
                    sram_wr[t] += ctiles[j, 2]
                hop_bytes[0] += cset[row, C_HOP_BYTES]
                kind_bytes[isa.KIND_SEND] += cset[row, C_BYTES]
                if cset[row, C_GMAX] > gmax:
                    gmax = cset[row, C_GMAX]
            ser = _worst_link(scratch_load, touched, n_touched, link_busy, params)
            lat = gmax * params[cm.P_HOP_LAT] + params[cm.P_OP_OVERHEAD]
            _comm_mask(mask, clock, pipe, ser, lat, k_cols)
            _comm_begin(scratch_load, touched, n_touched)
            op_cycles[code] += ser + lat
            op_count[code] += 1
            i += 1
            continue
        elif code == isa.SEND or code == isa.ALLREDUCE or code == isa.ALLGATHER or code == isa.LOGITS_GATHER:
            # a static set of transfers, folded once per program by comm_tables (bytes scale with the columns; a
            # SEND for an attention part carries that part's columns only, an expert's transfers its columns)
            if ops[i, O_R1] > 0 or ops[i, O_AUX] >= 0:
                if ops[i, O_R1] > 0:
                    c_lo, c_hi = isa.part_cols(ops[i, O_R0], ops[i, O_R1], ncol, block)
                    ncol = c_hi - c_lo
                else:  # an expert's transfers: the columns routed to it
                    routed = 0
                    for c in range(ncol):
                        if _routed(sel, c, ops[i, O_AUX], st[S_NUSED]):
                            routed += 1
                    ncol = routed
                if ncol == 0:  # an attention part or an expert without columns this pass
                    i += 1
                    continue
                k_cols = isa.blocks(ncol, block)
            kind = ops[i, O_KIND]
            t_lo = cset[i, C_TOFF]
            t_hi = t_lo + cset[i, C_TCNT]
            first = 0.0
            last = 0.0
            for j in range(t_lo, t_hi):
                t = ctiles[j, 0]
                if pipe[0, t] > first:
                    first = pipe[0, t]
                if clock[t] > last:
                    last = clock[t]
                sb = ctiles[j, 1] * ncol
                rb = ctiles[j, 2] * ncol
                sent[t] += sb
                recv[t] += rb
                sram_rd[t] += sb
                sram_wr[t] += rb
            kind_bytes[kind] += cset[i, C_BYTES] * ncol
            hop_bytes[0] += cset[i, C_HOP_BYTES] * ncol
            if t_hi > t_lo:
                worst = 0.0
                for j in range(cset[i, C_LOFF], cset[i, C_LOFF] + cset[i, C_LCNT]):
                    lk = clinks[j, 0]
                    nb = clinks[j, 1] * ncol
                    link_bytes[lk] += nb
                    cyc = cm.link_cycles(nb, params)
                    link_busy[lk] += cyc
                    if cyc > worst:
                        worst = cyc
                lat = cset[i, C_GMAX] * params[cm.P_HOP_LAT] + params[cm.P_OP_OVERHEAD]
            else:
                worst = 0.0
                lat = 0.0
            end = _pipelined(first, last, worst, lat, k_cols)
            for j in range(t_lo, t_hi):
                clock[ctiles[j, 0]] = end
                pipe[0, ctiles[j, 0]] = first + worst / k_cols + lat
            op_cycles[code] += worst + lat
            op_count[code] += 1
            i += 1
            continue
        elif code == isa.MOE_DISPATCH or code == isa.MOE_COMBINE:
            kind = ops[i, O_KIND]
            for t in range(n_tiles):
                mask[t] = False
            n_touched = 0
            gmax = 0
            # routes depend on this step's expert choice: computed here
            g = ops[i, O_AUX2]
            home = groups[g, 0]
            mask[home] = True
            if numeric and code == isa.MOE_COMBINE:
                out = act[ops[i, O_OUT]]
                for c in range(ncol):
                    for r in range(st[S_DIM]):
                        acc = np.float32(0.0)
                        for j in range(st[S_NUSED]):
                            acc += selw[c, j] * act[st[S_EOUT0] + 3 * sel[c, j], c, r]
                        out[c, r] = acc
            if code == isa.MOE_COMBINE:
                tile_vec[home] += ncol * st[S_NUSED] * st[S_DIM]
            for c in range(ncol):
                for j in range(st[S_NUSED]):
                    e = sel[c, j]
                    for k in range(expert_tiles.shape[2]):
                        et = expert_tiles[g, e, k]
                        if et < 0 or et == home:
                            continue
                        if code == isa.MOE_COMBINE and k > 0:
                            continue  # the expert's reduced output leaves from its first tile only
                        mask[et] = True
                        a, b = (home, et) if code == isa.MOE_DISPATCH else (et, home)
                        n_touched = _route(a, b, ops[i, O_NBYTES], kind, geometry, pathbuf, scratch_load, touched,
                                           n_touched, link_bytes, hop_bytes, sent, recv, kind_bytes, sram_rd, sram_wr)
                        if hops[a, b] > gmax:
                            gmax = hops[a, b]
            ser = 0.0
            lat = 0.0
            if n_touched > 0:
                ser = _worst_link(scratch_load, touched, n_touched, link_busy, params)
                lat = gmax * params[cm.P_HOP_LAT] + params[cm.P_OP_OVERHEAD]
            _comm_mask(mask, clock, pipe, ser, lat, k_cols)
            _comm_begin(scratch_load, touched, n_touched)
            op_cycles[code] += ser + lat
            op_count[code] += 1
            i += 1
            continue
        elif code == isa.MOE_ROUTE:
            n_e = ops[i, O_R1]
            kdim = ops[i, O_K1]
            woff = ops[i, O_W_OFF] // 4
            for c in range(ncol):
                if numeric:
                    rl = act[ops[i, O_OUT]]
                    x = act[ops[i, O_SRC]]
                    for e in range(n_e):
                        acc = np.float32(0.0)
                        for k in range(kdim):
                            acc += wf32[woff + e * kdim + k] * x[c, k]
                        rl[c, e] = acc
                    _topk(rl, c, n_e, st[S_NUSED], sel, selw)
            macs = ncol * n_e * kdim
            tile_macs[tile, PREC_F32] += macs
            sram_rd[tile] += ops[i, O_NBYTES] + ncol * kdim * 4
            dur = cm.compute_op_cycles(macs, PREC_F32, ncol * n_e * 4, ops[i, O_NBYTES], params)
        elif code == isa.COPY:
            batch = st[S_BATCH]
            if ncol != batch:
                per = ncol // batch
                for b in range(batch):
                    last = b * per + per - 1
                    if numeric:
                        for r in range(act.shape[2]):
                            act[0, b, r] = act[0, last, r]
                    col_seq[b] = col_seq[last]
                    col_pos[b] = col_pos[last]
                st[S_NCOL] = batch
        elif code == isa.SAMPLE:
            n = ops[i, O_R1]
            for c in range(ncol):
                if numeric:
                    for r in range(n):
                        v = act[ops[i, O_SRC], c, r]
                        if v != v or v - v != 0:
                            st[S_FAULT] = FAULT_NAN
                            st[S_FAULT_OP] = i
                            return i
                    out_tokens[c] = K.sample_row(act[ops[i, O_SRC]], c, n, fs[FS_TEMP], rng, probs)
            tile_vec[tile] += ncol * n * 2
            sram_rd[tile] += ncol * n * 4
            dur = cm.compute_op_cycles(0, 0, ncol * n * 2, ncol * n * 4, params)
        end = _pipelined(t0, clock[tile], dur, 0.0, k_cols)
        clock[tile] = end
        pipe[0, tile] = t0 + dur / k_cols
        pipe[1, tile] = end
        busy[tile] += dur
        op_cycles[code] += dur
        op_count[code] += 1
        i += 1
    return i


@njit(cache=True, nogil=True)
def _topk(logits, c, n, k, sel, selw):
    """Top-k experts by router logit (ties to the lower index); weights = softmax over the k chosen."""
    for j in range(k):
        best = -1
        for e in range(n):
            taken = False
            for jj in range(j):
                if sel[c, jj] == e:
                    taken = True
            if taken:
                continue
            if best < 0 or logits[c, e] > logits[c, best]:
                best = e
        sel[c, j] = best
    mx = logits[c, sel[c, 0]]
    tot = np.float32(0.0)
    for j in range(k):
        ex = np.float32(np.exp(np.float64(logits[c, sel[c, j]] - mx)))
        selw[c, j] = ex
        tot += ex
    for j in range(k):
        selw[c, j] = selw[c, j] / tot
