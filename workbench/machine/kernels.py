"""numba kernels: the arithmetic of the emulated chip, exactly as the hardware would do it.

Integer formats multiply int8 activations by packed weights with int32 accumulation per
32-element block, then scale by (weight scale x activation scale) and accumulate blocks in
fp32 in column order. Norms, softmax, SiLU and RoPE run in fp32 on the vector unit. Softmax and
SiLU take exp from ``exp_f32``: a range reduction and polynomial in fp32 operations only, written
once more in numpy (npref.exp_f32_poly) so that the two match bit for bit; LLVM vectorises it.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

FMT_F32, FMT_F16, FMT_BF16, FMT_Q8_0, FMT_Q4_0, FMT_TQ2_0, FMT_B1_0 = range(7)

# exp_f32 constants (Cephes expf): ln 2 split in two so n * EXP_C1 is exact; below EXP_X_LO the result is
# flushed to +0 (true exp < 3.2e-38), above EXP_X_HI (ln of the largest fp32) it is +inf
EXP_LOG2E = np.float32(1.44269504088896341)
EXP_C1 = np.float32(0.693359375)
EXP_C2 = np.float32(-2.12194440e-4)
EXP_P = tuple(np.float32(v) for v in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                      1.6666665459e-1, 5.0000001201e-1))
PV_BLOCK = 32             # positions per int8 block of attention weights (_pv_int8; a multiple of 8)
PV_P_MIN = np.float32(2.0 ** -64)  # attention probabilities below this get no weight in p.V
EXP_X_LO = np.float32(-86.5)
EXP_X_HI = np.float32(88.72283)
_P0, _P1, _P2, _P3, _P4, _P5 = EXP_P
_F0 = np.float32(0.0)
_F05 = np.float32(0.5)
_F1 = np.float32(1.0)
_F2 = np.float32(2.0)
_FINF = np.float32(np.inf)


@intrinsic
def _bits_to_f32(typingctx, v):
    """The fp32 whose bit pattern is the int32 ``v`` (a register bitcast; numba has no scalar view)."""
    if v != nbtypes.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return nbtypes.float32(nbtypes.int32), codegen


@njit(cache=True, nogil=True, inline="always")
def exp_f32(x):
    """exp of an fp32 in fp32 operations only, within 1 ulp of the correctly rounded value for x >= -86.5.

    n = floor(x log2 e + 1/2), r = x - n ln 2 (two parts), e^r by a degree-7 polynomial, times 2^(n-1) built
    from bits, times 2 (so n = 128 still overflows to inf rather than wrapping). Branch-free, so a loop of it
    vectorises; NaN stays NaN, -inf gives 0, +inf gives inf. npref.exp_f32_poly is the same sequence in numpy.
    """
    xc = x if x > EXP_X_LO else EXP_X_LO  # NaN -> EXP_X_LO here; restored below
    xc = xc if xc < EXP_X_HI else EXP_X_HI
    nf = np.floor(xc * EXP_LOG2E + _F05)
    r = (xc - nf * EXP_C1) - nf * EXP_C2
    z = r * r
    p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * z + r + _F1
    y = (p * _bits_to_f32(np.int32((np.int64(nf) + 126) << 23))) * _F2
    y = _F0 if x < EXP_X_LO else y
    y = _FINF if x > EXP_X_HI else y
    return x if x != x else y


@njit(cache=True, nogil=True, inline="always")
def round_away(v):
    """Round half away from zero without the floor(v + 0.5) trap (0.49999997 + 0.5 rounds up in fp32)."""
    a = abs(v)
    f = math.floor(a)
    if a - f >= np.float32(0.5):
        f += 1.0
    return f if v >= 0 else -f


@njit(cache=True, nogil=True)
def quantize_q8(x, c, k0, k1, q, d):
    """Quantize x[c, k0:k1] in blocks of 32: d = max|x| / 127, q = round(x / d), clipped to +-127.

    Returns False (nothing written) when the input holds a NaN or infinity: the machine stops with a fault.
    """
    for b in range(k0 // 32, (k1 + 31) // 32):
        amax = np.float32(0.0)
        for j in range(32):
            a = abs(x[c, b * 32 + j])
            if not a <= np.float32(np.inf) or a == np.float32(np.inf):
                return False
            if a > amax:
                amax = a
        dd = np.float32(amax / np.float32(127.0))
        d[c, b] = dd
        for j in range(32):
            if dd == 0:
                q[c, b * 32 + j] = 0
            else:
                v = round_away(np.float32(x[c, b * 32 + j] / dd))
                if v > 127:
                    v = 127
                elif v < -127:
                    v = -127
                q[c, b * 32 + j] = np.int8(v)
    return True


@njit(cache=True, nogil=True, inline="always")
def _decode_block(fmt, w, base, b, wv):
    """Unpack the 32 weights of column block b of one row into wv (int8); returns the byte offset of its scale.

    Ternary codes become -1/0/+1 and binary bits -1/+1, so the dot products below are additions and
    subtractions only for those formats, as in a ternary/binary MAC array.
    """
    if fmt == FMT_Q4_0:
        bo = base + b * 18
        packed = w[bo + 2: bo + 18]
        for j in range(16):
            byte = np.int32(packed[j])
            wv[j] = (byte & 15) - 8
            wv[j + 16] = (byte >> 4) - 8
        return bo
    if fmt == FMT_TQ2_0:
        sub = b % 8
        bo = base + (b // 8) * 66
        shift = 2 * (sub % 4)
        codes = w[bo + (sub // 4) * 32: bo + (sub // 4) * 32 + 32]
        for m in range(32):
            wv[m] = ((np.int32(codes[m]) >> shift) & 3) - 1
        return bo + 64
    bo = base + b * 6  # FMT_B1_0: sign bits
    bits = w[bo + 2: bo + 6]
    for j in range(32):
        wv[j] = 1 if (np.int32(bits[j >> 3]) >> (j & 7)) & 1 else -1
    return bo


@intrinsic
def _dot32(typingctx, a, ao, b, bo):
    """int32 sum of a[ao + j] x b[bo + j] over j < 32, flat indices into C-contiguous int8 arrays.

    Two 32-byte vector loads, int16 products (any int8 x int8 fits), then an int32 sum: integers, so the order
    of the reduction changes nothing. An intrinsic because the loop form reached LLVM as slices (a view, so a
    reference count, per block) and a runtime trip count; this is one load, multiply and add tree.
    """
    for t in (a, b):
        if not (isinstance(t, nbtypes.Array) and t.dtype == nbtypes.int8 and t.layout == "C"):
            return None
    sig = nbtypes.int32(a, nbtypes.int64, b, nbtypes.int64)

    def codegen(context, builder, signature, args):
        v8 = ir.VectorType(ir.IntType(8), 32)
        v16 = ir.VectorType(ir.IntType(16), 32)
        v32 = ir.VectorType(ir.IntType(32), 32)
        vals = []
        for arr_t, arr, off in ((signature.args[0], args[0], args[1]), (signature.args[2], args[2], args[3])):
            ptr = builder.gep(context.make_array(arr_t)(context, builder, arr).data, [off])
            vals.append(builder.sext(builder.load(builder.bitcast(ptr, v8.as_pointer()), align=1), v16))
        total = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), [v32]),
                                               "llvm.vector.reduce.add.v32i32")
        return builder.call(total, [builder.sext(builder.mul(vals[0], vals[1]), v32)])
    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def _q8_term(w, wi8, so, xq, xo, db, f16):
    """One q8_0 block at byte ``so`` against the activation block at flat xq[xo:] (scale db):
    (weight scale x db) x int32 sum."""
    return (f16[np.int64(w[so]) | (np.int64(w[so + 1]) << 8)] * db) * np.float32(_dot32(wi8, so + 2, xq, xo))


@njit(cache=True, nogil=True)
def matmul_q8_col(w, wi8, off, rb, r0, r1, b0, b1, xq, xd, src, y, yi, f16):
    """y[yi, 0, r0:r1] = W[r0:r1, 32*b0:32*b1] @ x for column 0 of xq[src] (scales xd[src]), q8_0 weights.

    Per block: int32 sum of 32 products, times (weight scale x activation scale), accumulated in fp32 in
    block order. Four rows at a time give the CPU four independent fp32 chains; each row's order is unchanged.
    Whole arrays and indices rather than views: each view the caller made would cost atomic reference counts.
    """
    xo = src * xq.shape[1] * xq.shape[2]  # flat index of xq[src, 0, 0]
    r = r0
    while r + 4 <= r1:
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        base = off + r * rb
        for b in range(b0, b1):
            xb = xo + b * 32
            db = xd[src, 0, b]
            so = base + b * 34
            a0 += _q8_term(w, wi8, so, xq, xb, db, f16)
            a1 += _q8_term(w, wi8, so + 1 * rb, xq, xb, db, f16)
            a2 += _q8_term(w, wi8, so + 2 * rb, xq, xb, db, f16)
            a3 += _q8_term(w, wi8, so + 3 * rb, xq, xb, db, f16)
        y[yi, 0, r] = a0
        y[yi, 0, r + 1] = a1
        y[yi, 0, r + 2] = a2
        y[yi, 0, r + 3] = a3
        r += 4
    while r < r1:
        base = off + r * rb
        a = np.float32(0.0)
        for b in range(b0, b1):
            a += _q8_term(w, wi8, base + b * 34, xq, xo + b * 32, xd[src, 0, b], f16)
        y[yi, 0, r] = a
        r += 1


@njit(cache=True, nogil=True)
def matmul_int(fmt, w, wi8, off, rb, r0, r1, k0, k1, xq, xd, y, colmask, ncol, f16, wv, acc):
    """y[c, r0:r1] = W[r0:r1, k0:k1] @ x[c, k0:k1] for every column c with colmask[c], integer formats.

    Each weight block is unpacked once and used by all columns (weights are read once per batch);
    per column: int32 sum over the block, times (weight scale x activation scale), accumulated in fp32.
    (One column of q8_0, the decode case, takes matmul_q8_col.)
    """
    b0 = k0 // 32
    b1 = k1 // 32
    stride = xq.shape[1]
    for r in range(r0, r1):
        base = off + r * rb
        for c in range(ncol):
            acc[c] = np.float32(0.0)
        for b in range(b0, b1):
            if fmt == FMT_Q8_0:
                so = base + b * 34
                wb = wi8
                wo = so + 2
            else:
                so = _decode_block(fmt, w, base, b, wv)
                wb = wv
                wo = 0
            dw = f16[np.int64(w[so]) | (np.int64(w[so + 1]) << 8)]
            xb0 = b * 32
            for c in range(ncol):
                if colmask[c]:
                    s = _dot32(wb, wo, xq, c * stride + xb0)
                    acc[c] += (dw * xd[c, b]) * np.float32(s)
        for c in range(ncol):
            if colmask[c]:
                y[c, r] = acc[c]


@njit(cache=True, nogil=True)
def matmul_float(fmt, wf32, wu16, off, rb, r0, r1, k0, k1, kmax, x, src, y, yi, c, f16, bf16):
    """y[yi, c, r0:r1] = W[r0:r1, k0:k1] @ x[src, c, k0:k1], float formats: fp32 multiply-accumulate in column
    order (f16/bf16 weights widened exactly). Whole arrays and indices, as in matmul_q8_col."""
    kend = min(k1, kmax)
    xrow = x[src, c, k0:kend]
    n = kend - k0
    r = r0
    if fmt == FMT_F32:  # four (then two) rows at a time: independent fp32 chains, each row in column order
        step = rb // 4
        while r + 4 <= r1:
            base = (off + r * rb) // 4 + k0
            w0 = wf32[base: base + n]
            w1 = wf32[base + step: base + step + n]
            w2 = wf32[base + 2 * step: base + 2 * step + n]
            w3 = wf32[base + 3 * step: base + 3 * step + n]
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            a3 = np.float32(0.0)
            for k in range(n):
                xk = xrow[k]
                a0 += w0[k] * xk
                a1 += w1[k] * xk
                a2 += w2[k] * xk
                a3 += w3[k] * xk
            y[yi, c, r] = a0
            y[yi, c, r + 1] = a1
            y[yi, c, r + 2] = a2
            y[yi, c, r + 3] = a3
            r += 4
        if r + 2 <= r1:
            base = (off + r * rb) // 4 + k0
            w0 = wf32[base: base + n]
            w1 = wf32[base + step: base + step + n]
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            for k in range(n):
                xk = xrow[k]
                a0 += w0[k] * xk
                a1 += w1[k] * xk
            y[yi, c, r] = a0
            y[yi, c, r + 1] = a1
            r += 2
    r_tail = r
    for r in range(r_tail, r1):
        acc = np.float32(0.0)
        if fmt == FMT_F32:
            base = (off + r * rb) // 4 + k0
            wrow = wf32[base: base + n]
            for k in range(n):
                acc += wrow[k] * xrow[k]
        elif fmt == FMT_F16:
            base = (off + r * rb) // 2 + k0
            hrow = wu16[base: base + n]
            for k in range(n):
                acc += f16[hrow[k]] * xrow[k]
        else:
            base = (off + r * rb) // 2 + k0
            hrow = wu16[base: base + n]
            for k in range(n):
                acc += bf16[hrow[k]] * xrow[k]
        y[yi, c, r] = acc


# the k-major copy of an f32 matrix (rows, cols) is (cols, stride) with stride >= rows + T_PAD: a shard's last
# row block may read up to T_PAD - 1 rows past the matrix (zeros) and discards them
T_PAD = 16


def _make_colsums(width):
    """An intrinsic summing ``width`` adjacent rows of a k-major matrix against x, each row its own fp32 chain.

    colsums(wt, wb, stride, x, xb, n, y, yb, m): for j < width, acc_j = sum over k = 0..n-1 in order, from +0.0,
    of wt[wb + k stride + j] * x[xb + k] (fp32 multiply, then fp32 add: no fast-math flags, so LLVM neither
    reorders nor contracts to FMA, and each lane rounds exactly as the scalar loop does); y[yb + j] = acc_j for
    j < m. One <width x float> register chain per k: numba runs no SLP vectorizer, so the lanes are spelled out.
    Flat element indices into C-contiguous float32 arrays of any rank.
    """
    @intrinsic
    def colsums(typingctx, wt, wb, stride, x, xb, n, y, yb, m):
        for a in (wt, x, y):
            if not (isinstance(a, nbtypes.Array) and a.dtype == nbtypes.float32 and a.layout == "C"):
                return None
        i64 = nbtypes.int64
        sig = nbtypes.void(wt, i64, i64, x, i64, i64, y, i64, i64)

        def codegen(context, builder, signature, args):
            wt_v, wb_v, stride_v, x_v, xb_v, n_v, y_v, yb_v, m_v = args
            wptr = context.make_array(signature.args[0])(context, builder, wt_v).data
            xptr = context.make_array(signature.args[3])(context, builder, x_v).data
            yptr = context.make_array(signature.args[6])(context, builder, y_v).data
            i32 = ir.IntType(32)
            vty = ir.VectorType(ir.FloatType(), width)
            acc = cgutils.alloca_once_value(builder, ir.Constant(vty, [0.0] * width))
            splat = ir.Constant(ir.VectorType(i32, width), [0] * width)
            with cgutils.for_range(builder, n_v) as loop:
                k = loop.index
                wp = builder.gep(wptr, [builder.add(wb_v, builder.mul(k, stride_v))])
                wv = builder.load(builder.bitcast(wp, vty.as_pointer()), align=4)
                xk = builder.load(builder.gep(xptr, [builder.add(xb_v, k)]))
                xv = builder.shuffle_vector(builder.insert_element(ir.Constant(vty, ir.Undefined), xk,
                                                                   ir.Constant(i32, 0)),
                                            ir.Constant(vty, ir.Undefined), splat)
                builder.store(builder.fadd(builder.load(acc), builder.fmul(wv, xv)), acc)
            v = builder.load(acc)
            for j in range(width):
                with builder.if_then(builder.icmp_signed(">", m_v, ir.Constant(m_v.type, j)), likely=j == 0):
                    builder.store(builder.extract_element(v, ir.Constant(i32, j)),
                                  builder.gep(yptr, [builder.add(yb_v, ir.Constant(yb_v.type, j))]))
            return context.get_dummy_value()
        return sig, codegen
    return colsums


_colsums8 = _make_colsums(8)
_colsums16 = _make_colsums(16)
_colsums32 = _make_colsums(32)


@njit(cache=True, nogil=True)
def matmul_f32t(wt, tb, stride, r0, r1, k0, k1, x, src, y, yi, c):
    """y[yi, c, r0:r1] = W[r0:r1, k0:k1] @ x[src, c, k0:k1] from the k-major copy of W at wt[tb:] (row stride
    ``stride``): the same fp32 chains as matmul_float (each row from +0.0 in column order), bit for bit, but 8 to
    32 rows side by side in vector registers instead of four scalar chains."""
    xb = (src * x.shape[1] + c) * x.shape[2] + k0
    yb = (yi * y.shape[1] + c) * y.shape[2]
    n = k1 - k0
    r = r0
    while r < r1:
        m = r1 - r
        wb = tb + k0 * stride + r
        if m > 16:
            _colsums32(wt, wb, stride, x, xb, n, y, yb + r, m)
            r += 32
        elif m > 8:
            _colsums16(wt, wb, stride, x, xb, n, y, yb + r, m)
            r += 16
        else:
            _colsums8(wt, wb, stride, x, xb, n, y, yb + r, m)
            r += 8


@njit(cache=True, nogil=True)
def matmul_fp(fmt, wf32, wu16, wt, wt_tab, off, rb, r0, r1, k0, k1, kmax, x, src, y, yi, c, f16, bf16):
    """matmul_float, through the k-major copy when the f32 matrix at byte ``off`` has one: wt_tab rows are
    (byte offset in the store, element offset in wt, stride, rows, cols), sorted by offset."""
    kend = min(k1, kmax)
    if fmt == FMT_F32 and wt_tab.shape[0] > 0:
        lo = 0
        hi = wt_tab.shape[0]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if wt_tab[mid, 0] <= off:
                lo = mid
            else:
                hi = mid
        if wt_tab[lo, 0] == off and rb == 4 * wt_tab[lo, 4] and r1 <= wt_tab[lo, 3] and kend <= wt_tab[lo, 4]:
            if kend > k0:
                matmul_f32t(wt, wt_tab[lo, 1], wt_tab[lo, 2], r0, r1, k0, kend, x, src, y, yi, c)
            else:
                for r in range(r0, r1):
                    y[yi, c, r] = np.float32(0.0)
            return
    matmul_float(fmt, wf32, wu16, off, rb, r0, r1, k0, k1, kmax, x, src, y, yi, c, f16, bf16)


@njit(cache=True, nogil=True)
def dequant_row(fmt, w, wi8, wf32, wu16, off, rb, row, cols, out, c, f16, bf16):
    """out[c, :cols] = row ``row`` of a tensor, dequantized (the embedding lookup)."""
    base = off + row * rb
    for k in range(cols):
        if fmt == FMT_F32:
            v = wf32[base // 4 + k]
        elif fmt == FMT_F16:
            v = f16[wu16[base // 2 + k]]
        elif fmt == FMT_BF16:
            v = bf16[wu16[base // 2 + k]]
        elif fmt == FMT_Q8_0:
            bo = base + (k // 32) * 34
            v = f16[np.int64(w[bo]) | (np.int64(w[bo + 1]) << 8)] * np.float32(wi8[bo + 2 + k % 32])
        elif fmt == FMT_Q4_0:
            bo = base + (k // 32) * 18
            j = k % 32
            byte = np.int32(w[bo + 2 + (j % 16)])
            nib = (byte & 15) if j < 16 else (byte >> 4)
            v = f16[np.int64(w[bo]) | (np.int64(w[bo + 1]) << 8)] * np.float32(nib - 8)
        elif fmt == FMT_TQ2_0:
            bo = base + (k // 256) * 66
            i = k % 256
            code = (np.int32(w[bo + (i // 128) * 32 + i % 32]) >> (2 * ((i % 128) // 32))) & 3
            v = f16[np.int64(w[bo + 64]) | (np.int64(w[bo + 65]) << 8)] * np.float32(code - 1)
        else:
            bo = base + (k // 32) * 6
            j = k % 32
            bit = (np.int32(w[bo + 2 + (j >> 3)]) >> (j & 7)) & 1
            v = f16[np.int64(w[bo]) | (np.int64(w[bo + 1]) << 8)] * np.float32(1.0 if bit else -1.0)
        out[c, k] = v


@njit(cache=True, nogil=True)
def sum_squares(x, c, r0, r1):
    """The fp32 sum of x[c, r0:r1]^2 in index order: one tile's share of an RMSNORM."""
    acc = np.float32(0.0)
    for j in range(r0, r1):
        acc += x[c, j] * x[c, j]
    return acc


@njit(cache=True, nogil=True)
def rmsnorm_slice(x, out, ss, c, r0, r1, n_parts, dim, wf32, w_idx, eps):
    """RMSNORM of x[c, r0:r1] (a row of ``dim``) from the ``n_parts`` partial sums of squares in ss[c, :], added in
    slot order. Returns False when they hold a NaN or infinity (the machine stops with a fault)."""
    tot = ss[c, 0]
    for p in range(1, n_parts):
        tot += ss[c, p]
    if not np.isfinite(tot):
        return False
    tot = tot / np.float32(dim) + np.float32(eps)
    scale = np.float32(1.0) / np.float32(math.sqrt(tot))
    for j in range(r0, r1):
        out[c, j] = wf32[w_idx + j] * (scale * x[c, j])
    return True


@njit(cache=True, nogil=True)
def rope(buf, c, r0, r1, head_dim, pos, cos_t, sin_t):
    for r in range(r0 - r0 % 2, r1, 2):
        i = (r % head_dim) // 2
        fcr = cos_t[pos, i]
        fci = sin_t[pos, i]
        v0 = buf[c, r]
        v1 = buf[c, r + 1]
        buf[c, r] = v0 * fcr - v1 * fci
        buf[c, r + 1] = v0 * fci + v1 * fcr


@njit(cache=True, nogil=True)
def silu_mul(h1, h3, c, r0, r1):
    for r in range(r0, r1):
        v = h1[c, r]
        sig = np.float32(1.0) / (np.float32(1.0) + exp_f32(-v))
        h1[c, r] = v * sig * h3[c, r]


@njit(cache=True, nogil=True)
def quantize_vec(src, c, lo, hd, qout):
    """One head vector src[c, lo:lo+hd] -> qout[:hd] int8 with a single scale, returned and stored."""
    amax = np.float32(0.0)
    for j in range(hd):
        a = abs(src[c, lo + j])
        if a > amax:
            amax = a
    d = np.float32(amax / np.float32(127.0))
    for j in range(hd):
        if d == 0:
            qout[j] = 0
        else:
            v = round_away(np.float32(src[c, lo + j] / d))
            if v > 127:
                v = 127
            elif v < -127:
                v = -127
            qout[j] = np.int8(v)
    return d


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


@njit(cache=True, nogil=True)
def random_u32(state):
    s = state[0]
    s ^= s >> np.uint64(12)
    s ^= s << np.uint64(25)
    s ^= s >> np.uint64(27)
    state[0] = s
    return (s * np.uint64(0x2545F4914F6CDD1D)) >> np.uint64(32)


@njit(cache=True, nogil=True)
def sample_row(logits, c, n, temperature, state, probs):
    """Greedy (first index of the max) at temperature 0, else llama2.c's xorshift* multinomial draw."""
    best = 0
    mx = logits[c, 0]
    for i in range(1, n):
        if logits[c, i] > mx:
            mx = logits[c, i]
            best = i
    if temperature <= 0.0:
        return best
    t = np.float32(temperature)
    m2 = np.float32(mx / t)
    tot = np.float32(0.0)
    for i in range(n):
        e = np.float32(math.exp(np.float64(np.float32(logits[c, i] / t) - m2)))
        probs[i] = e
        tot += e
    coin = np.float32(np.float32(random_u32(state) >> np.uint64(8)) / np.float32(16777216.0))
    cdf = np.float32(0.0)
    for i in range(n):
        cdf += probs[i] / tot
        if coin < cdf:
            return i
    return n - 1
