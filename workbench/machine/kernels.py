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
