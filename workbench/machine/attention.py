"""Attention on one tile: q.K, the softmax and p.V for the query heads of one kv-head over one column's positions.

The int8 path (an int8 KV cache with a scale per position) does both products on the MAC array, as an inference
chip or FlashAttention does: q.K as int8 dot products, and p.V as an int8 matmul of a Q8_0 row (the softmax
weights times V's scales, quantized per PV_BLOCK positions). The f32 path is llama2.c's, bit for bit. Each is
mirrored operation for operation by the numpy interpreter (npref). The llvmlite intrinsics here run the loops
that LLVM would not vectorise by itself, with the same fp32 operations in the same order.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

from .kernels import exp_f32, quantize_vec

PV_BLOCK = 32             # positions per int8 block of attention weights (_pv_int8; a multiple of 8)
PV_P_MIN = np.float32(2.0 ** -64)  # attention probabilities below this get no weight in p.V


@intrinsic
def _qk_dots(typingctx, qq, keys, hd, npos, out):
    """out[t] = float(sum over j < hd of qq[j] x keys[t, j]) for t < npos: int8 x int8 in <8 x i32> lanes, hd a
    multiple of 8. Integer sums are exact (|sum| < 2^24 for hd <= 1,040), so the float is the scalar loop's."""
    i8a = (isinstance(qq, nbtypes.Array) and qq.dtype == nbtypes.int8 and qq.layout == "C"
           and isinstance(keys, nbtypes.Array) and keys.dtype == nbtypes.int8 and keys.layout == "C")
    if not (i8a and isinstance(out, nbtypes.Array) and out.dtype == nbtypes.float32 and out.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        hd_v, n_v = args[2], args[3]
        qp, kp, op = (context.make_array(signature.args[i])(context, builder, args[i]).data for i in (0, 1, 4))
        i32 = ir.IntType(32)
        ity = ir.VectorType(i32, 8)
        bty = ir.VectorType(ir.IntType(8), 8).as_pointer()
        reduce = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [ity]),
                                                "llvm.vector.reduce.add.v8i32")
        eight = ir.Constant(hd_v.type, 8)
        acc = cgutils.alloca_once_value(builder, ir.Constant(ity, [0] * 8))
        with cgutils.for_range(builder, n_v) as loop:
            t = loop.index
            builder.store(ir.Constant(ity, [0] * 8), acc)
            with cgutils.for_range(builder, builder.udiv(hd_v, eight)) as inner:
                j0 = builder.mul(inner.index, eight)
                krow = builder.gep(kp, [builder.add(builder.mul(t, hd_v), j0)])
                k = builder.load(builder.bitcast(krow, bty), align=1)
                qv = builder.load(builder.bitcast(builder.gep(qp, [j0]), bty), align=1)
                prod = builder.mul(builder.sext(k, ity), builder.sext(qv, ity))
                builder.store(builder.add(builder.load(acc), prod), acc)
            total = builder.call(reduce, [builder.load(acc)])
            builder.store(builder.sitofp(total, ir.FloatType()), builder.gep(op, [t]))
        return context.get_dummy_value()
    return nbtypes.void(qq, keys, nbtypes.int64, nbtypes.int64, out), codegen


@intrinsic
def _scale_max(typingctx, scores, kscale, dq, inv, npos):
    """scores[t] <- ((dq x kscale[t]) x scores[t]) x inv for t < npos, eight at a time, and returns their maximum
    (-inf for none). The same fp32 operations per element as the scalar loop; the maximum does not depend on the
    order it is taken in (only the sign of a zero maximum could, and exp(score - max) does not see it)."""
    f32 = nbtypes.float32
    arrays = all(isinstance(a, nbtypes.Array) and a.dtype == f32 and a.layout == "C" for a in (scores, kscale))
    if not (arrays and dq == f32 and inv == f32):
        return None

    def codegen(context, builder, signature, args):
        ft = ir.FloatType()
        vty = ir.VectorType(ft, 8)
        sp, kp = (context.make_array(signature.args[i])(context, builder, args[i]).data for i in (0, 1))
        dq_v, inv_v, n = args[2], args[3], args[4]

        def splat(x):
            one = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                          ir.Constant(ir.VectorType(ir.IntType(32), 8), [0] * 8))
        ninf = float("-inf")
        top = cgutils.alloca_once_value(builder, ir.Constant(vty, [ninf] * 8))
        eight = ir.Constant(n.type, 8)
        full = builder.sdiv(n, eight)
        dqs, invs = splat(dq_v), splat(inv_v)
        with cgutils.for_range(builder, full) as loop:
            off = builder.mul(loop.index, eight)
            sptr = builder.bitcast(builder.gep(sp, [off]), vty.as_pointer())
            ks = builder.load(builder.bitcast(builder.gep(kp, [off]), vty.as_pointer()), align=4)
            sc = builder.fmul(builder.fmul(builder.fmul(dqs, ks), builder.load(sptr, align=4)), invs)
            builder.store(sc, sptr, align=4)
            m = builder.load(top)
            builder.store(builder.select(builder.fcmp_ordered(">", sc, m), sc, m), top)
        best = cgutils.alloca_once_value(builder, ir.Constant(ft, ninf))
        lanes = builder.load(top)
        for k in range(8):
            e = builder.extract_element(lanes, ir.Constant(ir.IntType(32), k))
            b = builder.load(best)
            builder.store(builder.select(builder.fcmp_ordered(">", e, b), e, b), best)
        base = builder.mul(full, eight)
        with cgutils.for_range(builder, builder.sub(n, base)) as loop:
            t = builder.add(base, loop.index)
            ptr = builder.gep(sp, [t])
            sc = builder.fmul(builder.fmul(builder.fmul(dq_v, builder.load(builder.gep(kp, [t]))), builder.load(ptr)),
                              inv_v)
            builder.store(sc, ptr)
            b = builder.load(best)
            builder.store(builder.select(builder.fcmp_ordered(">", sc, b), sc, b), best)
        return builder.load(best)
    return f32(scores, kscale, f32, f32, nbtypes.int64), codegen


@njit(cache=True, nogil=True, error_model="numpy")  # IEEE division: no zero check to block vectorising
def attention_int8(q, att, c, h, n_rep, hd, npos, kq, kd, vq, vd, l, seq, scores, qq, out):
    """Attention of the n_rep query heads of kv-head h over positions 0..npos-1 of an int8 KV cache."""
    inv = np.float32(1.0 / math.sqrt(hd))
    keys = kq[l, h, seq]
    kscale = kd[l, h, seq]
    for hq in range(h * n_rep, (h + 1) * n_rep):
        lo = hq * hd
        dq = quantize_vec(q, c, lo, hd, qq)
        if hd % 8 == 0:  # the integer dot products, eight lanes at a time
            _qk_dots(qq, keys, hd, npos, scores)
        else:
            for t in range(npos):
                s = np.int32(0)
                krow = keys[t]
                for j in range(hd):
                    s += np.int32(qq[j]) * np.int32(krow[j])
                scores[t] = np.float32(s)
        mx = _scale_max(scores, kscale, dq, inv, npos)
        _softmax_probs(scores, npos, mx, True)
        _pv_int8(scores, vq[l, h, seq], vd[l, h, seq], npos, hd, out)
        for j in range(hd):
            att[c, lo + j] = out[j]


@njit(cache=True, nogil=True, inline="always")
def _softmax_probs(scores, npos, mx, lanes):
    """scores[t] <- exp_f32(scores[t] - mx) / (their fp32 sum). The sum runs in t order (llama2.c's, for the f32
    path), or with ``lanes`` as a vector unit adds: eight lanes, lane k summing t = k mod 8 in order, then the
    lanes in order (_lane_total8). Three loops: the exp and the division vectorise, an in-order sum cannot."""
    for t in range(npos):
        scores[t] = exp_f32(scores[t] - mx)
    if lanes:
        tot = _lane_total8(scores, npos)
    else:
        tot = np.float32(0.0)
        for t in range(npos):
            tot += scores[t]
    for t in range(npos):
        scores[t] = scores[t] / tot


@intrinsic
def _lane_total8(typingctx, x, n):
    """The fp32 sum of x[:n] in eight lanes: lane k adds x[t] for t = k mod 8 in t order from +0.0, then the lanes
    are added in lane order from +0.0 (npref.lane_total8 is the same order in numpy)."""
    if not (isinstance(x, nbtypes.Array) and x.dtype == nbtypes.float32 and x.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        vty = ir.VectorType(f32, 8)
        xp = context.make_array(signature.args[0])(context, builder, args[0]).data
        n = args[1]
        eight = ir.Constant(n.type, 8)
        full = builder.sdiv(n, eight)
        acc = cgutils.alloca_once_value(builder, ir.Constant(vty, [0.0] * 8))
        with cgutils.for_range(builder, full) as loop:
            v = builder.load(builder.bitcast(builder.gep(xp, [builder.mul(loop.index, eight)]), vty.as_pointer()),
                             align=4)
            builder.store(builder.fadd(builder.load(acc), v), acc)
        base = builder.mul(full, eight)
        with cgutils.for_range(builder, builder.sub(n, base)) as loop:
            k = loop.index
            lanes = builder.load(acc)
            tail = builder.load(builder.gep(xp, [builder.add(base, k)]))
            lane = builder.fadd(builder.extract_element(lanes, k), tail)
            builder.store(builder.insert_element(lanes, lane, k), acc)
        lanes = builder.load(acc)
        tot = ir.Constant(f32, 0.0)
        for k in range(8):
            tot = builder.fadd(tot, builder.extract_element(lanes, ir.Constant(ir.IntType(32), k)))
        return tot
    return nbtypes.float32(x, nbtypes.int64), codegen


def _lane_sum(p, values, out, exact):
    """Signature and code for out[j0 + i] = sum over t0 <= t < t1 of p[t] x values[vo + t hd + i], i < 8, one
    vector lane each (flat indices into C-contiguous arrays). exact: int8 values and integer-valued weights,
    summed in <8 x i32> (exact, so in any order, with no fp add chain to wait on); else f32 values, fp32 in t
    order from +0.0 without fast-math flags (bit for bit the scalar loop)."""
    f32 = nbtypes.float32
    for a in (p, out):
        if not (isinstance(a, nbtypes.Array) and a.dtype == f32 and a.layout == "C"):
            return None
    if not (isinstance(values, nbtypes.Array) and values.dtype == (nbtypes.int8 if exact else f32)
            and values.layout == "C"):
        return None
    i64 = nbtypes.int64

    def codegen(context, builder, signature, args):
        vo_v, hd_v, t0_v, t1_v, j0_v = args[2], args[3], args[4], args[5], args[7]
        pp, vp, op = (context.make_array(signature.args[i])(context, builder, args[i]).data for i in (0, 1, 6))
        i32 = ir.IntType(32)
        vty = ir.VectorType(ir.FloatType(), 8)
        ity = ir.VectorType(i32, 8)

        def bcast(x, ty):
            one = builder.insert_element(ir.Constant(ty, ir.Undefined), x, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, ir.Constant(ty, ir.Undefined), ir.Constant(ity, [0] * 8))
        acc = cgutils.alloca_once_value(builder, ir.Constant(ity, [0] * 8) if exact else ir.Constant(vty, [0.0] * 8))
        with cgutils.for_range(builder, builder.sub(t1_v, t0_v)) as loop:
            t = builder.add(t0_v, loop.index)
            src = builder.gep(vp, [builder.add(vo_v, builder.mul(t, hd_v))])
            w = builder.load(builder.gep(pp, [t]))
            if exact:
                raw = builder.load(builder.bitcast(src, ir.VectorType(ir.IntType(8), 8).as_pointer()), align=1)
                term = builder.mul(bcast(builder.fptosi(w, i32), ity), builder.sext(raw, ity))
                builder.store(builder.add(builder.load(acc), term), acc)
            else:
                v = builder.load(builder.bitcast(src, vty.as_pointer()), align=4)
                builder.store(builder.fadd(builder.load(acc), builder.fmul(bcast(w, vty), v)), acc)
        total = builder.sitofp(builder.load(acc), vty) if exact else builder.load(acc)
        builder.store(total, builder.bitcast(builder.gep(op, [j0_v]), vty.as_pointer()), align=4)
        return context.get_dummy_value()
    return nbtypes.void(p, values, i64, i64, i64, i64, out, i64), codegen


@intrinsic
def _wsum8(typingctx, p, values, vo, hd, t0, t1, out, j0):
    """out[j0 + i] = sum over t0 <= t < t1 in order, from +0.0, of p[t] x values[vo + t hd + i] (f32), i < 8."""
    return _lane_sum(p, values, out, exact=False)


@intrinsic
def _isum8(typingctx, w, values, vo, hd, t0, t1, out, j0):
    """As _wsum8 for integer-valued weights w (|w| <= 127) and int8 values, summed exactly in int32 lanes (the
    float result is the same whatever the order; |sum| < 2^24 for up to 1,040 positions)."""
    return _lane_sum(w, values, out, exact=True)


@njit(cache=True, nogil=True, inline="always")
def _weighted_sum(p, values, npos, hd, out):
    """out[j] = sum over t in order of p[t] x values[t, j] (f32 values).

    Eight j at a time in one vector register (_wsum8); each out[j] is still one chain in t order from +0.0.
    """
    j0 = 0
    while j0 + 8 <= hd:
        _wsum8(p, values, j0, hd, 0, npos, out, j0)
        j0 += 8
    for j in range(j0, hd):
        a = np.float32(0.0)
        for t in range(npos):
            a += p[t] * values[t, j]
        out[j] = a


@intrinsic
def _quant_block(typingctx, w, b0):
    """Quantize w[b0:b0 + PV_BLOCK] (fp32, >= 0) in place as _pv_int8's blocks: d = max / 127; unless d is 0,
    each w <- min(round half away(w / d), 127) as an integer-valued float. Returns d. The same fp32 operations as
    the scalar loop on PV_BLOCK / 8 <8 x float> registers (a 32-trip loop is too short for LLVM to vectorise)."""
    if not (isinstance(w, nbtypes.Array) and w.dtype == nbtypes.float32 and w.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        vty = ir.VectorType(f32, 8)
        base = builder.gep(context.make_array(signature.args[0])(context, builder, args[0]).data, [args[1]])
        ptrs = [builder.gep(builder.bitcast(base, vty.as_pointer()), [ir.Constant(ir.IntType(32), i)])
                for i in range(PV_BLOCK // 8)]
        xs = [builder.load(q, align=4) for q in ptrs]
        m = xs[0]
        for x in xs[1:]:
            m = builder.select(builder.fcmp_ordered(">", x, m), x, m)
        top = builder.extract_element(m, ir.Constant(ir.IntType(32), 0))
        for i in range(1, 8):
            e = builder.extract_element(m, ir.Constant(ir.IntType(32), i))
            top = builder.select(builder.fcmp_ordered(">", e, top), e, top)
        d = builder.fdiv(top, ir.Constant(f32, 127.0))

        def splat(x):
            one = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                          ir.Constant(ir.VectorType(ir.IntType(32), 8), [0] * 8))
        floor = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]), "llvm.floor.v8f32")
        half, one, cap = (ir.Constant(vty, [v] * 8) for v in (0.5, 1.0, 127.0))
        with cgutils.if_likely(builder, builder.fcmp_ordered("!=", d, ir.Constant(f32, 0.0))):
            dv = splat(d)
            for x, q in zip(xs, ptrs):
                a = builder.fdiv(x, dv)
                f = builder.call(floor, [a])
                r = builder.select(builder.fcmp_ordered(">=", builder.fsub(a, f), half), builder.fadd(f, one), f)
                builder.store(builder.select(builder.fcmp_ordered("<", r, cap), r, cap), q, align=4)
        return d
    return nbtypes.float32(w, nbtypes.int64), codegen


@njit(cache=True, nogil=True, inline="always")
def _pv_int8(p, values, vscale, npos, hd, buf):
    """The probability-weighted sum of int8 values on the MAC array, as an int8 matmul of a Q8_0 row:
    w[t] = p[t] x vscale[t] (0 where p[t] < PV_P_MIN) is quantized to int8 in blocks of PV_BLOCK positions (one
    scale d each, as quantize_vec), each block's w x v summed exactly in int32 lanes (_isum8), and out[j] = the
    sum over blocks in order, from +0.0, of d x that block's sum. p is overwritten with the int8 weights (as
    floats). buf is (2 hd,): out in [:hd], a block's sums in [hd:]."""
    for j in range(hd):
        buf[j] = np.float32(0.0)
    for t in range(npos):  # no subnormal weights (slow on x86): a probability under 2^-64 adds nothing
        p[t] = p[t] * vscale[t] if p[t] >= PV_P_MIN else np.float32(0.0)
    for b0 in range(0, npos, PV_BLOCK):
        b1 = min(b0 + PV_BLOCK, npos)
        if b1 - b0 == PV_BLOCK:
            d = _quant_block(p, b0)
        else:  # the last, partial block: the same operations one position at a time
            top = np.float32(0.0)  # w >= 0 (probabilities times scales)
            for t in range(b0, b1):
                top = p[t] if p[t] > top else top
            d = np.float32(top / np.float32(127.0))
            if d != 0:
                for t in range(b0, b1):
                    a = np.float32(p[t] / d)
                    f = np.floor(a)
                    r = f + np.float32(1.0) if a - f >= np.float32(0.5) else f
                    p[t] = r if r < np.float32(127.0) else np.float32(127.0)
        if d == 0:  # every weight rounds to 0: the block adds +0.0
            continue
        j0 = 0
        while j0 + 8 <= hd:
            _isum8(p, values, j0, hd, b0, b1, buf, hd + j0)
            j0 += 8
        for j in range(j0, hd):
            a = np.float32(0.0)
            for t in range(b0, b1):
                a += p[t] * np.float32(values[t, j])
            buf[hd + j] = a
        for j in range(hd):
            buf[j] += d * buf[hd + j]


@njit(cache=True, nogil=True, error_model="numpy")  # IEEE division: no zero check to block vectorising
def attention_f32(q, att, c, h, n_rep, hd, npos, kf, vf, l, seq, scores, out):
    """The f32 reference path: float K and V."""
    inv = np.float32(1.0 / math.sqrt(hd))
    keys = kf[l, h, seq]
    for hq in range(h * n_rep, (h + 1) * n_rep):
        lo = hq * hd
        qv = q[c, lo: lo + hd]
        mx = np.float32(-np.inf)
        for t in range(npos):
            s = np.float32(0.0)
            krow = keys[t]
            for j in range(hd):
                s += qv[j] * krow[j]
            s = s * inv
            scores[t] = s
            if s > mx:
                mx = s
        _softmax_probs(scores, npos, mx, False)
        _weighted_sum(scores, vf[l, h, seq], npos, hd, out)
        for j in range(hd):
            att[c, lo + j] = out[j]
