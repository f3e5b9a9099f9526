"""Element arithmetic in LLVM IR, target-independent: the `cast` conversions (bit-exact, as
`ir/numerics.py` defines them), integer wrap-around for sub-byte types, and float math.

Semantics follow the interpreter (`runtime/interpreter.py`), which is the reference:
* floats narrower than f32 (f16, bf16, fp8, fp6, fp4, ...) are computed in f32 and rounded to their
  type after every op; f32 in f32; f64 in f64;
* integers wrap to their width; x / 0 = -1 and x % 0 = x; shifts by an amount outside [0, bits)
  give 0 (shl, unsigned shr) or the sign fill (signed shr); max/min ignore a NaN operand (maxNum);
* casts: floats round to nearest even (one rounding from the exact input: an f64 input goes to a
  small float through f32 rounded *to odd*, which keeps the final rounding correct); float -> int
  rounds half to even and saturates, NaN -> 0; int -> narrower int saturates; x -> bool is x != 0
  (NaN -> 1).

Transcendentals (exp, log, sin, tanh, erf, ...) are computed in f32 (also for f64 operands) from
the target's fast `exp2` plus range reduction and polynomials written here; they are accurate to a
few ulp, not bit-exact with NumPy (no GPU math library is).
"""
from __future__ import annotations

import math

import llvmlite.ir as ir

from ..ir.dtypes import DType, f32 as F32, i32 as I32

from .errors import CompileError
from .llvm_util import (Decls, bf16, f16, f32, f64, i1, i8, i16, i32, i64, is_native_float, is_small_float,
                        reg_type)


def _fc(x: float) -> ir.Constant:
    return ir.Constant(f32, float(x))


def _ic(t, v) -> ir.Constant:
    return ir.Constant(t, int(v))


class Numerics:
    """Per-module element arithmetic. `math` is the target's provider of `exp2_approx(b, x)` on f32
    (NVPTX: ex2.approx.f32; AMD: v_exp_f32)."""

    def __init__(self, decls: Decls, math_provider):
        self.d = decls
        self.tm = math_provider

    # ------------------------------------------------------------------ small helpers
    def intr(self, b, name, ret, vals):
        return self.d.call(b, name, ret, [v.type for v in vals], vals)

    def fintr(self, b, base, x):
        """llvm.<base>.<f32|f64>(x)."""
        sfx = "f64" if x.type == f64 else ("f32" if x.type == f32 else ("f16" if x.type == f16 else "bf16"))
        return self.d.call(b, f"llvm.{base}.{sfx}", x.type, [x.type], [x])

    def fintr2(self, b, base, x, y):
        sfx = "f64" if x.type == f64 else "f32"
        return self.d.call(b, f"llvm.{base}.{sfx}", x.type, [x.type, x.type], [x, y])

    def work_type(self, dt: DType):
        return f64 if dt.name == "f64" else f32

    # ------------------------------------------------------------------ ints
    def norm_int(self, b, v, dt: DType):
        """Wrap a sub-byte integer held in an i8 to its width (sign- or zero-extended)."""
        if dt.kind == "bool" or dt.bits >= 8 or not dt.is_int:
            return v
        sh = 8 - dt.bits
        if dt.kind == "int":
            return b.ashr(b.shl(v, _ic(i8, sh)), _ic(i8, sh))
        return b.and_(v, _ic(i8, (1 << dt.bits) - 1))

    def int_const(self, dt: DType, value: int):
        t = reg_type(dt)
        if dt.kind == "bool":
            return ir.Constant(i1, 1 if value else 0)
        return ir.Constant(t, int(value) & ((1 << t.width) - 1))

    # ------------------------------------------------------------------ float <-> working float
    def to_work(self, b, v, dt: DType):
        """A float value as f32 (f64 for f64)."""
        if dt.name in ("f32", "f64"):
            return v
        if dt.name in ("f16", "bf16"):
            return b.fpext(v, f32)
        if is_small_float(dt):
            return self.decode_small(b, v, dt)
        raise CompileError(f"internal: to_work on {dt}")

    def from_work(self, b, x, dt: DType):
        """Round an f32 (or f64) working value to `dt` (once)."""
        if dt.name == "f32":
            return b.fptrunc(x, f32) if x.type == f64 else x
        if dt.name == "f64":
            return b.fpext(x, f64) if x.type == f32 else x
        if x.type == f64 and not dt.is_e8m0:
            x = self.f64_to_f32_odd(b, x)
        if dt.name in ("f16", "bf16"):
            # a NaN stays a NaN, with the hardware's bits (its payload is not part of the semantics,
            # docs/language.md): one cvt.rn, not a NaN test and a rebuild per value
            return b.fptrunc(x, f16 if dt.name == "f16" else bf16)
        return self.encode_small(b, x, dt)

    def f64_to_f32_odd(self, b, x):
        """f64 -> f32 rounded to odd (truncate, then set the lowest bit if anything was dropped).
        Values beyond f32's normal range keep a magnitude that rounds the same way in any type
        narrower than f32."""
        u = b.bitcast(x, i64)
        sign = b.trunc(b.lshr(u, _ic(i64, 63)), i32)
        e = b.trunc(b.and_(b.lshr(u, _ic(i64, 52)), _ic(i64, 0x7FF)), i32)
        m = b.and_(u, _ic(i64, (1 << 52) - 1))
        top = b.trunc(b.lshr(m, _ic(i64, 29)), i32)
        sticky = b.zext(b.icmp_unsigned("!=", b.and_(m, _ic(i64, (1 << 29) - 1)), _ic(i64, 0)), i32)
        e32 = b.sub(e, _ic(i32, 1023 - 127))
        normal = b.or_(b.or_(b.shl(e32, _ic(i32, 23)), top), sticky)
        big = b.icmp_signed(">", e32, _ic(i32, 254))
        small = b.icmp_signed("<", e32, _ic(i32, 1))
        iszero = b.and_(b.icmp_unsigned("==", e, _ic(i32, 0)), b.icmp_unsigned("==", m, _ic(i64, 0)))
        special = b.icmp_unsigned("==", e, _ic(i32, 0x7FF))
        # beyond f32: 2^127-ish stays huge (overflows any narrower type); tiny: smallest normal odd
        r = b.select(big, _ic(i32, 0x7F000001), normal)
        r = b.select(small, _ic(i32, 0x00000001), r)
        r = b.select(iszero, _ic(i32, 0), r)
        nan_or_inf = b.select(b.icmp_unsigned("==", m, _ic(i64, 0)), _ic(i32, 0x7F800000), _ic(i32, 0x7FC00000))
        r = b.select(special, nan_or_inf, r)
        r = b.or_(r, b.shl(sign, _ic(i32, 31)))
        return b.bitcast(r, f32)

    # ------------------------------------------------------------------ small floats
    def _small_layout(self, dt: DType):
        E, M = dt.exp, dt.man
        if dt.is_ieee_like:
            inf = ((1 << E) - 1) << M
            return inf - 1, inf, inf | (1 << (M - 1)) if M >= 1 else inf
        if dt.name == "f8e4m3fn":
            return 0x7E, 0x7F, 0x7F
        return (1 << (dt.bits - 1)) - 1, None, None

    def encode_e8m0(self, b, x):
        """f32 or f64 -> f8e8m0fnu code (i8), as ir/numerics.py `_encode_e8m0`: the leading bit's
        exponent, plus one where the next bit is set (the nearest power of two, ties up), clamped
        below at code 0 (2^-127); 255 (NaN) for zero, negatives, inf, NaN and codes past 254. An f64
        is read in its own bits (no f32 step: its range is wider than e8m0's on both sides)."""
        wide = x.type == f64
        it = i64 if wide else i32
        E, M = (11, 52) if wide else (8, 23)
        bias = (1 << (E - 1)) - 1
        C = lambda v: _ic(it, v)
        u = b.bitcast(x, it)
        e = b.and_(b.lshr(u, C(M)), C((1 << E) - 1))
        next_bit = b.and_(b.lshr(u, C(M - 1)), C(1))
        normal = b.add(b.sub(e, C(bias - 127)), next_bit)
        if wide:                                         # f64 subnormals are far below 2^-127
            sub_code = C(0)
        else:                                            # f32 subnormals m * 2^-149: 1.5 * 2^-127 and up is 2^-126
            sub_code = b.zext(b.icmp_unsigned(">=", b.and_(u, C((1 << M) - 1)), C(0x600000)), it)
        code = b.select(b.icmp_unsigned("==", e, C(0)), sub_code, normal)
        code = self.smax(b, code, C(0))
        nan = b.or_(b.icmp_signed(">", code, C(254)), b.icmp_unsigned("==", e, C((1 << E) - 1)))
        nan = b.or_(nan, b.icmp_signed("<=", u, C(0)))  # negatives (sign bit set) and +0
        return b.trunc(b.select(nan, C(255), code), i8)

    def decode_e8m0(self, b, c8):
        """f8e8m0fnu code (i8) -> f32 (exact): the code is f32's exponent field, except 0 (2^-127,
        an f32 subnormal: 0x00400000) and 255 (NaN: the canonical quiet NaN)."""
        C = lambda v: _ic(i32, v)
        c = b.zext(c8, i32)
        v = b.select(b.icmp_unsigned("==", c, C(0)), C(0x00400000), b.shl(c, C(23)))
        v = b.select(b.icmp_unsigned("==", c, C(255)), C(0x7FC00000), v)
        return b.bitcast(v, f32)

    def encode_small(self, b, x, dt: DType):
        """f32 -> code of a small float (i8), rounding to nearest even with the type's overflow and
        NaN rules (ir/numerics.py `_encode_float`, in i32 arithmetic)."""
        if dt.is_e8m0:
            return self.encode_e8m0(b, x)
        if x.type == f64:
            x = self.f64_to_f32_odd(b, x)
        E, M, bits = dt.exp, dt.man, dt.bits
        emin = 1 - dt.bias
        max_mag, over_code, nan_code = self._small_layout(dt)
        C = lambda v: _ic(i32, v)
        u = b.bitcast(x, i32)
        neg = b.lshr(u, C(31))
        e = b.and_(b.lshr(u, C(23)), C(0xFF))
        m = b.and_(u, C(0x7FFFFF))
        e_is_max = b.icmp_unsigned("==", e, C(255))
        m_zero = b.icmp_unsigned("==", m, C(0))
        isnan = b.and_(e_is_max, b.not_(m_zero))
        isinf = b.and_(e_is_max, m_zero)
        sig = b.select(b.icmp_unsigned(">", e, C(0)), b.or_(m, C(0x800000)), m)
        exp2 = b.sub(self.smax(b, e, C(1)), C(150))
        clz = self.d.call(b, "llvm.ctlz.i32", i32, [i32, i1], [sig, ir.Constant(i1, 0)])
        ue = b.add(b.sub(C(31), clz), exp2)            # bitlen - 1 + exp2
        et = self.smax(b, ue, C(emin))
        shift = b.sub(b.sub(et, C(M)), exp2)
        sh = self.smin(b, self.smax(b, shift, C(1)), C(31))
        q = b.lshr(sig, sh)
        rem = b.and_(sig, b.sub(b.shl(C(1), sh), C(1)))
        half = b.shl(C(1), b.sub(sh, C(1)))
        base = b.shl(b.sub(et, C(emin)), C(M))
        odd = b.icmp_unsigned("!=", b.and_(b.add(base, q), C(1)), C(0))
        up = b.or_(b.icmp_unsigned(">", rem, half), b.and_(b.icmp_unsigned("==", rem, half), odd))
        r = b.add(q, b.zext(up, i32))
        mag = b.add(base, r)
        mag = b.select(b.icmp_unsigned("==", sig, C(0)), C(0), mag)
        over = b.or_(b.icmp_unsigned(">", mag, C(max_mag)), isinf)
        mag = b.select(over, C(max_mag if over_code is None else over_code), mag)
        sign = b.shl(neg, C(bits - 1))
        if nan_code is None:
            mag = b.select(isnan, C(0), mag)
            sign = b.select(isnan, b.shl(b.xor(neg, C(1)), C(bits - 1)), sign)
        else:
            mag = b.select(isnan, C(nan_code), mag)
        return b.trunc(b.or_(sign, mag), i8)

    def decode_small(self, b, c8, dt: DType):
        """code (i8) of a small float -> f32 (exact)."""
        if dt.is_e8m0:
            return self.decode_e8m0(b, c8)
        E, M, bits = dt.exp, dt.man, dt.bits
        emin = 1 - dt.bias
        C = lambda v: _ic(i32, v)
        c = b.and_(b.zext(c8, i32), C((1 << bits) - 1))
        neg = b.and_(b.lshr(c, C(bits - 1)), C(1))
        e = b.and_(b.lshr(c, C(M)), C((1 << E) - 1))
        m = b.and_(c, C((1 << M) - 1))
        normal = b.or_(b.shl(b.add(e, C(127 - dt.bias)), C(23)), b.shl(m, C(23 - M)))
        subf = b.fmul(b.uitofp(m, f32), _fc(2.0 ** (emin - M)))
        v = b.select(b.icmp_unsigned("==", e, C(0)), b.bitcast(subf, i32), normal)
        if dt.is_ieee_like:
            top = b.icmp_unsigned("==", e, C((1 << E) - 1))
            special = b.select(b.icmp_unsigned("==", m, C(0)), C(0x7F800000), C(0x7FC00000))
            v = b.select(top, special, v)
        elif dt.name == "f8e4m3fn":
            isn = b.and_(b.icmp_unsigned("==", e, C(15)), b.icmp_unsigned("==", m, C(7)))
            v = b.select(isn, C(0x7FC00000), v)
        v = b.or_(v, b.shl(neg, C(31)))
        return b.bitcast(v, f32)

    # ------------------------------------------------------------------ min/max helpers
    def smax(self, b, x, y):
        return b.select(b.icmp_signed(">", x, y), x, y)

    def smin(self, b, x, y):
        return b.select(b.icmp_signed("<", x, y), x, y)

    # ------------------------------------------------------------------ casts
    def int_range(self, dt: DType):
        if dt.kind == "bool":
            return 0, 1
        return int(dt.min_value), int(dt.max_value)

    def convert(self, b, v, src: DType, dst: DType):
        """The `cast` op on one value (see the module docstring)."""
        if src == dst:
            return v
        if dst.kind == "bool":
            if src.is_float:
                x = self.to_work(b, v, src)
                return b.fcmp_unordered("une", x, ir.Constant(x.type, 0.0))
            return b.icmp_unsigned("!=", v, ir.Constant(v.type, 0))
        if src.kind == "bool":
            v = b.zext(v, i32)
            src = I32
        if src.is_int and dst.is_int:
            return self._int_to_int(b, v, src, dst)
        if src.is_float and dst.is_float:
            if is_small_float(src):
                x = self.decode_small(b, v, src)
                return self.from_work(b, x, dst)
            x = v if src.name in ("f32", "f64") else b.fpext(v, f32)
            return self.from_work(b, x, dst)
        if src.is_float:                               # float -> int
            x = self.to_work(b, v, src)
            x = self.fintr(b, "roundeven", x)
            wide = i64 if dst.bits == 64 else i32
            if dst.kind == "uint":
                n = self.d.call(b, f"llvm.fptoui.sat.{'i64' if wide == i64 else 'i32'}.{'f64' if x.type == f64 else 'f32'}",
                                wide, [x.type], [x])
                if dst.bits < 32:
                    n = b.select(b.icmp_unsigned(">", n, ir.Constant(wide, dst.max_value)),
                                 ir.Constant(wide, dst.max_value), n)
            else:
                n = self.d.call(b, f"llvm.fptosi.sat.{'i64' if wide == i64 else 'i32'}.{'f64' if x.type == f64 else 'f32'}",
                                wide, [x.type], [x])
                if dst.bits < 32:
                    n = self.smin(b, self.smax(b, n, ir.Constant(wide, dst.min_value)), ir.Constant(wide, dst.max_value))
            t = reg_type(dst)
            return b.trunc(n, t) if t.width < wide.width else n
        # int -> float
        signed = src.kind == "int"
        if src.bits <= 16 and dst.name != "f64":
            # narrow ints are exact in f32: the magic-number conversion (logic ops + one float sub, all
            # full rate) instead of a conversion instruction. From the code c (the value's low `bits`
            # bits; signed: offset binary, c ^ 2^(bits-1) = x + 2^(bits-1)), bits(1.5 * 2^23) | c is the
            # float 1.5 * 2^23 + c; subtracting 1.5 * 2^23 (+ 2^(bits-1)) leaves x exactly. Working
            # from the code lets LLVM drop the sign extension of sub-byte values (and ptxas fuse the
            # mask, xor and or into one LOP3).
            w = src.bits
            c = b.zext(v, i32) if v.type.width < 32 else v
            if w < 32:
                c = b.and_(c, _ic(i32, (1 << w) - 1))
            off = 12582912.0
            if signed:
                c = b.xor(c, _ic(i32, 1 << (w - 1)))
                off += float(1 << (w - 1))
            f = b.fsub(b.bitcast(b.or_(c, _ic(i32, 0x4B400000)), f32), _fc(off))
            return self.from_work(b, f, dst)
        if is_native_float(dst) and dst.name in ("f32", "f64", "f16"):
            return b.sitofp(v, reg_type(dst)) if signed else b.uitofp(v, reg_type(dst))
        # bf16 and small floats: through f64 (exact for every int up to 2^53) rounded to odd f32
        wide = b.sitofp(v, f64) if signed else b.uitofp(v, f64)
        return self.from_work(b, wide, dst)

    def _int_to_int(self, b, v, src: DType, dst: DType):
        st, dt_ = reg_type(src), reg_type(dst)
        lo_s, hi_s = self.int_range(src)
        lo_d, hi_d = self.int_range(dst)
        signed = src.kind == "int"
        w = max(st.width, dt_.width, 32)
        W = ir.IntType(w)
        x = (b.sext(v, W) if signed else b.zext(v, W)) if st.width < w else v
        if lo_d > lo_s:          # clamp below (only signed sources go below 0)
            if signed:
                x = self.smax(b, x, ir.Constant(W, lo_d))
        if hi_d < hi_s:
            if signed:
                x = self.smin(b, x, ir.Constant(W, hi_d))
            else:
                x = b.select(b.icmp_unsigned(">", x, ir.Constant(W, hi_d)), ir.Constant(W, hi_d), x)
        if dt_.width < w:
            x = b.trunc(x, dt_)
        return x

    # ------------------------------------------------------------------ elementwise
    def binary(self, b, name: str, x, y, dt: DType):
        if dt.is_float:
            if name in ("max", "min"):
                if dt.name in ("f32", "f64"):
                    return self.fminmax(b, name, x, y)
                # exact in the narrow type: compare decoded values, keep the original codes
                xa, ya = self.to_work(b, x, dt), self.to_work(b, y, dt)
                return self.from_work(b, self.fminmax(b, name, xa, ya), dt)
            xa, ya = self.to_work(b, x, dt), self.to_work(b, y, dt)
            r = self.float_binary(b, name, xa, ya)
            return self.from_work(b, r, dt)
        return self.int_binary(b, name, x, y, dt)

    def float_binary(self, b, name, x, y):
        if name == "add":
            return b.fadd(x, y)
        if name == "sub":
            return b.fsub(x, y)
        if name == "mul":
            return b.fmul(x, y)
        if name == "div":
            return b.fdiv(x, y)
        if name == "rem":
            return self.fmod(b, x, y)
        if name in ("max", "min"):
            return self.fminmax(b, name, x, y)
        if name == "pow":
            return self.pow(b, x, y)
        if name == "atan2":
            return self.atan2(b, x, y)
        raise CompileError(f"float op '{name}' is not supported")

    def fminmax(self, b, name, x, y):
        """IEEE 754-2019 maximumNumber / minimumNumber: a NaN operand is ignored (NaN only if both
        are), and max(-0, +0) = +0, min(-0, +0) = -0 in either order (llvm.maxnum leaves the sign of
        an equal pair unspecified: fixed up with the AND / OR of the two bit patterns)."""
        if getattr(self.tm, "minmax_orders_zeros", False):
            # one max.f32 / min.f32: the target's instruction is maximumNumber itself (LLVM's NVPTX
            # back end maps llvm.maximumnum to it, and llvm.maximum to max.NaN, with no zero fix-up)
            return self.fintr2(b, "maximumnum" if name == "max" else "minimumnum", x, y)
        r = self.fintr2(b, "maxnum" if name == "max" else "minnum", x, y)
        it = i64 if x.type == f64 else i32
        bx, by = b.bitcast(x, it), b.bitcast(y, it)
        z = b.bitcast(b.and_(bx, by) if name == "max" else b.or_(bx, by), x.type)
        return b.select(b.fcmp_ordered("==", x, y), z, r)

    def fmod(self, b, x, y):
        """C fmod, exact (LLVM's NVPTX `frem` is x - trunc(x/y)*y: wrong for large quotients and for
        the sign of a zero result). f32: from the integer significands, (mx * 2^d) mod my by 32-bit
        steps of a 64-bit remainder; f64: llvm's frem (see docs/language.md)."""
        if x.type == f64:
            return b.frem(x, y)
        C = lambda v: _ic(i32, v)
        ux, uy = b.bitcast(x, i32), b.bitcast(y, i32)
        ax, ay = b.and_(ux, C(0x7FFFFFFF)), b.and_(uy, C(0x7FFFFFFF))
        ex, ey = b.lshr(ax, C(23)), b.lshr(ay, C(23))
        mx = b.select(b.icmp_unsigned("==", ex, C(0)), ax, b.or_(b.and_(ax, C(0x7FFFFF)), C(0x800000)))
        my = b.select(b.icmp_unsigned("==", ey, C(0)), ay, b.or_(b.and_(ay, C(0x7FFFFF)), C(0x800000)))
        ex1, ey1 = self.smax(b, ex, C(1)), self.smax(b, ey, C(1))      # ulp exponents (biased, subnormal = 1)
        d = b.sub(ex1, ey1)
        my64 = b.zext(b.select(b.icmp_unsigned("==", my, C(0)), C(1), my), i64)
        r = b.zext(mx, i64)
        left = self.smax(b, d, C(0))
        for _ in range(9):                                  # exponent difference <= 253 + 23 < 9 * 32
            sh = self.smin(b, left, C(32))
            r = b.urem(b.shl(r, b.zext(sh, i64)), my64)
            left = b.sub(left, sh)
        # r * 2^(ey1 - 150): exact (r < my); 2^(ey1-150) in two factors to stay representable
        rf = b.uitofp(b.trunc(r, i32), f32)
        scale = b.bitcast(b.shl(ey1, C(23)), f32)                       # 2^(ey1 - 127), a normal
        res = b.fmul(b.fmul(rf, _fc(2.0 ** -23)), scale)
        res = b.select(b.icmp_unsigned("<", ax, ay), self.fintr(b, "fabs", x), res)   # |x| < |y|: x
        res = self.d.call(b, "llvm.copysign.f32", f32, [f32, f32], [res, x])
        bad = b.or_(b.or_(b.icmp_unsigned(">=", ax, C(0x7F800000)), b.icmp_unsigned("==", ay, C(0))),
                    b.icmp_unsigned(">", ay, C(0x7F800000)))      # x inf/NaN, y 0 or NaN -> NaN
        res = b.select(bad, _fc(float("nan")), res)
        yinf = b.and_(b.icmp_unsigned("==", ay, C(0x7F800000)), b.icmp_unsigned("<", ax, C(0x7F800000)))
        return b.select(yinf, x, res)                          # finite x mod inf = x

    def int_binary(self, b, name, x, y, dt: DType):
        t = x.type
        signed = dt.kind == "int"
        Z, ONE, M1 = ir.Constant(t, 0), ir.Constant(t, 1), ir.Constant(t, -1 & ((1 << t.width) - 1))
        if name == "add":
            r = b.add(x, y)
        elif name == "sub":
            r = b.sub(x, y)
        elif name == "mul":
            r = b.mul(x, y)
        elif name in ("div", "rem"):
            if dt.kind == "bool":
                # i1: x / 1 = x, x / 0 = -1 -> 1 (mod 2); x % 1 = 0, x % 0 = x
                return b.select(y, x, ir.Constant(i1, 1)) if name == "div" else b.select(y, ir.Constant(i1, 0), x)
            zero = b.icmp_unsigned("==", y, Z)
            if signed:
                minus1 = b.icmp_signed("==", y, M1)
                safe = b.select(b.or_(zero, minus1), ONE, y)
                if name == "div":
                    q = b.sdiv(x, safe)
                    q = b.select(minus1, b.sub(Z, x), q)
                    r = b.select(zero, M1, q)
                else:
                    q = b.srem(x, safe)
                    q = b.select(minus1, Z, q)
                    r = b.select(zero, x, q)
            else:
                safe = b.select(zero, ONE, y)
                if name == "div":
                    r = b.select(zero, M1, b.udiv(x, safe))
                else:
                    r = b.select(zero, x, b.urem(x, safe))
        elif name == "max":
            c = b.icmp_signed(">", x, y) if signed else b.icmp_unsigned(">", x, y)
            return b.select(c, x, y)
        elif name == "min":
            c = b.icmp_signed("<", x, y) if signed else b.icmp_unsigned("<", x, y)
            return b.select(c, x, y)
        elif name == "and":
            return b.and_(x, y)
        elif name == "or":
            return b.or_(x, y)
        elif name == "xor":
            return b.xor(x, y)
        elif name in ("shl", "shr"):
            bits = dt.bits
            if dt.kind == "bool":
                # shift of a 1-bit value by 0 keeps it, by anything else gives 0
                return b.select(b.icmp_unsigned("==", y, Z), x, Z)
            big = b.icmp_unsigned(">=", y, ir.Constant(t, bits))
            amt = b.select(big, Z, y)
            if name == "shl":
                r = b.select(big, Z, b.shl(x, amt))
            elif signed:
                r = b.ashr(x, b.select(big, ir.Constant(t, bits - 1), y))
            else:
                r = b.select(big, Z, b.lshr(x, amt))
        else:
            raise CompileError(f"integer op '{name}' is not supported")
        return self.norm_int(b, r, dt)

    def unary(self, b, name: str, x, dt: DType, ftz: bool = False):
        """`ftz` (exp2 only): results below 2^-126 are +0 (the ir op's attribute)."""
        if dt.is_float:
            if dt.is_e8m0 and name in ("neg", "abs"):     # no sign bit: -x is NaN (255), |x| is x
                return _ic(i8, 255) if name == "neg" else x
            if name == "neg":
                if dt.name in ("f32", "f64", "f16", "bf16"):
                    return b.fneg(x)
                return b.xor(x, _ic(i8, 1 << (dt.bits - 1)))           # flip the sign bit of the code
            if name == "abs":
                if dt.name in ("f32", "f64", "f16", "bf16"):
                    return self.fintr(b, "fabs", x)
                return b.and_(x, _ic(i8, (1 << (dt.bits - 1)) - 1))
            w = self.to_work(b, x, dt)
            r = self.float_unary(b, name, w, ftz)
            return self.from_work(b, r, dt)
        t = x.type
        if name == "neg":
            return self.norm_int(b, b.sub(ir.Constant(t, 0), x), dt)
        if name == "abs":
            if dt.kind != "int":
                return x
            return self.norm_int(b, b.select(b.icmp_signed("<", x, ir.Constant(t, 0)), b.sub(ir.Constant(t, 0), x), x), dt)
        if name == "not":
            return self.norm_int(b, b.not_(x), dt)
        raise CompileError(f"op '{name}' needs float operands, got {dt}")

    def cmp(self, b, pred: str, x, y, dt: DType):
        if dt.is_float:
            if is_small_float(dt):
                x, y = self.to_work(b, x, dt), self.to_work(b, y, dt)
            ops = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
            if pred == "ne":
                return b.fcmp_unordered("!=", x, y)
            return b.fcmp_ordered(ops[pred], x, y)
        ops = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
        if dt.kind == "int":
            return b.icmp_signed(ops[pred], x, y)
        return b.icmp_unsigned(ops[pred], x, y)

    # ------------------------------------------------------------------ float math (f32 working values)
    def _as32(self, b, x):
        return (b.fptrunc(x, f32), True) if x.type == f64 else (x, False)

    def _back(self, b, r, was64):
        return b.fpext(r, f64) if was64 else r

    def float_unary(self, b, name, x, ftz: bool = False):
        if name in ("floor", "ceil"):
            return self.fintr(b, name, x)
        if name == "round":
            return self.fintr(b, "roundeven", x)
        if name == "sqrt":
            return self.fintr(b, "sqrt", x)
        if name == "rsqrt":
            return b.fdiv(ir.Constant(x.type, 1.0), self.fintr(b, "sqrt", x))
        x32, w = self._as32(b, x)
        if name == "exp2" and ftz:
            return self._back(b, self.tm.exp2_approx_ftz(b, x32), w)
        f = {"exp": self.exp, "exp2": self.exp2, "log": self.log, "log2": self.log2, "sin": self.sin,
             "cos": self.cos, "tanh": self.tanh, "erf": self.erf, "sigmoid": self.sigmoid}.get(name)
        if f is None:
            raise CompileError(f"float op '{name}' is not supported")
        return self._back(b, f(b, x32), w)

    def poly(self, b, x, coeffs):
        """c0 + c1 x + c2 x^2 + ... by Horner with fma."""
        acc = _fc(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.fma(b, acc, x, _fc(c))
        return acc

    def fma_op(self, b, xs, dt: DType):
        """The `fma` op: in the working type (f32, f64 for f64), one rounding, then to dt."""
        w = [self.to_work(b, x, dt) for x in xs]
        t = w[0].type
        sfx = "f64" if t == f64 else "f32"
        return self.from_work(b, self.d.call(b, f"llvm.fma.{sfx}", t, [t, t, t], w), dt)

    def fma(self, b, a, x, c):
        return self.d.call(b, "llvm.fma.f32", f32, [f32, f32, f32], [a, x, c])

    def exp2(self, b, x):
        return self.tm.exp2_approx(b, x)

    def exp(self, b, x):
        """2^hi * (1 + lo*ln2) with x*log2(e) = hi + lo (lo: the rounding error of hi, by fma), so that
        large |x| keeps its accuracy. Where hi is not finite (x = +-inf, NaN, or |x| > ~2.4e38) lo is
        inf - inf = NaN: it is zeroed there, so exp(-inf) = 0; where 2^hi overflows the result is that
        inf (the fma would make inf * 0 = NaN of it); exp2 takes care of the rest (hi < -150: 0,
        NaN stays NaN)."""
        L = 1.4426950408889634
        hi = b.fmul(x, _fc(L))
        lo = self.fma(b, x, _fc(L), b.fneg(hi))                     # exact rounding error of x*L
        lo = self.fma(b, x, _fc(L - _f32(L)), lo)
        finite = b.fcmp_ordered("<", self.fintr(b, "fabs", hi), _fc(float("inf")))
        lo = b.select(finite, lo, _fc(0.0))
        r = self.tm.exp2_approx(b, hi)
        res = self.fma(b, r, b.fmul(lo, _fc(math.log(2.0))), r)
        return b.select(b.fcmp_ordered("==", r, _fc(float("inf"))), r, res)      # inf * 0 in the fma

    def log(self, b, x):
        return self._log(b, x, natural=True)

    def log2(self, b, x):
        return self._log(b, x, natural=False)

    def _log(self, b, x, natural: bool):
        """x = 2^e * m, m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh((m-1)/(m+1)) by its series."""
        C = lambda v: _ic(i32, v)
        sub = b.fcmp_ordered("<", x, _fc(1.17549435e-38))
        xs = b.select(sub, b.fmul(x, _fc(2.0 ** 23)), x)
        eadj = b.select(sub, C(-23), C(0))
        u = b.bitcast(xs, i32)
        # bias so that the mantissa lands in [sqrt(1/2), sqrt(2))
        u2 = b.sub(u, C(0x3F3504F3))
        e = b.add(b.ashr(u2, C(23)), eadj)
        mbits = b.add(b.and_(u2, C(0x7FFFFF)), C(0x3F3504F3))
        m = b.bitcast(mbits, f32)
        s = b.fdiv(b.fsub(m, _fc(1.0)), b.fadd(m, _fc(1.0)))
        s2 = b.fmul(s, s)
        # 2*(s + s^3/3 + s^5/5 + ...)
        p = self.poly(b, s2, [2.0, 2.0 / 3, 2.0 / 5, 2.0 / 7, 2.0 / 9, 2.0 / 11])
        lnm = b.fmul(s, p)
        ef = b.sitofp(e, f32)
        if natural:
            r = self.fma(b, ef, _fc(0.693145751953125), self.fma(b, ef, _fc(1.4286068203094172321e-6), lnm))
        else:
            r = self.fma(b, lnm, _fc(1.4426950408889634), ef)
        # specials: x < 0 or NaN -> NaN, 0 -> -inf, +inf -> +inf
        r = b.select(b.fcmp_ordered("==", x, _fc(0.0)), _fc(float("-inf")), r)
        r = b.select(b.fcmp_ordered("==", x, _fc(float("inf"))), _fc(float("inf")), r)
        r = b.select(b.fcmp_unordered("<", x, _fc(0.0)), _fc(float("nan")), r)
        return r

    def _reduce_pio2(self, b, x):
        """x = k*pi/2 + r, |r| <= pi/4. Returns (r, k mod 4 as i32). |x| < 105615: Cody-Waite with a
        3-part pi/2 (exact products by fma); beyond, Payne-Hanek (`_reduce_pio2_big`)."""
        k = self.fintr(b, "roundeven", b.fmul(x, _fc(0.6366197723675814)))
        p1, p2, p3 = 1.57079601e+00, 3.13916473e-07, 5.39030253e-15
        r = self.fma(b, k, _fc(-p1), x)
        r = self.fma(b, k, _fc(-p2), r)
        r = self.fma(b, k, _fc(-p3), r)
        # saturating: NaN and huge k would be poison with fptosi
        ki = self.d.call(b, "llvm.fptosi.sat.i32.f32", i32, [f32], [k])
        rb, kb = self._reduce_pio2_big(b, x)
        big = b.fcmp_ordered(">=", self.fintr(b, "fabs", x), _fc(105615.0))
        return b.select(big, rb, r), b.select(big, kb, ki)

    def _reduce_pio2_big(self, b, x):
        """Payne-Hanek: x = M * 2^e (M: the 24-bit significand, e >= -7 here); (x * 2/pi) mod 4 in
        fixed point with 90 fraction bits from a 92-bit window of the bits of 2/pi (256 of them;
        the bits dropped below the window err by < 2^-66), rounded to the nearest quadrant k;
        r = (the signed fraction) * pi/2 in f64, then f32."""
        C = lambda v: _ic(i32, v)
        u = b.bitcast(x, i32)
        E = b.and_(b.lshr(u, C(23)), C(0xFF))
        M = b.or_(b.and_(u, C(0x7FFFFF)), C(0x800000))
        # V * 2^90 = M * floor(P / 2^s) (mod 2^92), P = floor(2/pi * 2^256), s = 256 - e - 90, e = E - 150
        s = b.sub(C(256 - 90 + 150), E)                                  # in [62, 173] for |x| >= 2^16
        s = self.smin(b, self.smax(b, s, C(32)), C(191))                 # keep the words in range
        a = b.lshr(s, C(5))
        c = b.and_(s, C(31))
        words = [(_TWO_OVER_PI >> (32 * j)) & 0xFFFFFFFF for j in range(8)]   # words[j]: bits 32j..
        i128 = ir.IntType(128)
        W = ir.Constant(i128, 0)
        for t in range(4):                     # the 4 words from index a upwards (a in [1, 5])
            wv = _ic(i32, 0)
            for j in range(1, 6):
                idx = j + t
                wv = b.select(b.icmp_unsigned("==", a, C(j)), _ic(i32, words[idx] if idx < 8 else 0), wv)
            W = b.or_(W, b.shl(b.zext(wv, i128), ir.Constant(i128, 32 * t)))
        W = b.lshr(W, b.zext(c, i128))
        mask92 = ir.Constant(i128, (1 << 92) - 1)
        Z = b.and_(b.mul(b.and_(W, mask92), b.zext(M, i128)), mask92)
        q = b.trunc(b.lshr(Z, ir.Constant(i128, 90)), i32)
        f = b.and_(Z, ir.Constant(i128, (1 << 90) - 1))
        up = b.icmp_unsigned(">=", f, ir.Constant(i128, 1 << 89))
        q = b.add(q, b.zext(up, i32))
        f = b.select(up, b.sub(f, ir.Constant(i128, 1 << 90)), f)     # signed, in [-2^89, 2^89)
        f64v = b.sitofp(b.trunc(b.ashr(f, ir.Constant(i128, 27)), i64), f64)   # f * 2^63
        r = b.fptrunc(b.fmul(f64v, ir.Constant(f64, math.pi / 2 * 2.0 ** -63)), f32)
        neg = b.icmp_signed("<", u, C(0))
        r = b.select(neg, b.fneg(r), r)
        q = b.select(neg, b.sub(C(0), q), q)
        return r, q

    def _sincos_poly(self, b, r):
        r2 = b.fmul(r, r)
        s = b.fmul(r, self.poly(b, r2, [1.0, -1 / 6, 1 / 120, -1 / 5040, 1 / 362880, -1 / 39916800]))
        c = self.poly(b, r2, [1.0, -1 / 2, 1 / 24, -1 / 720, 1 / 40320, -1 / 3628800, 1 / 479001600])
        return s, c

    def _sincos(self, b, x, want_sin: bool):
        r, k = self._reduce_pio2(b, x)
        s, c = self._sincos_poly(b, r)
        q = b.and_(b.add(k, _ic(i32, 0 if want_sin else 1)), _ic(i32, 3))
        # quadrant q: sin -> s, c, -s, -c
        use_c = b.icmp_unsigned("!=", b.and_(q, _ic(i32, 1)), _ic(i32, 0))
        v = b.select(use_c, c, s)
        neg = b.icmp_unsigned("!=", b.and_(q, _ic(i32, 2)), _ic(i32, 0))
        v = b.select(neg, b.fneg(v), v)
        if want_sin:                                         # sin(-0) = -0 (k = -0 loses the sign)
            v = b.select(b.fcmp_ordered("==", x, _fc(0.0)), x, v)
        inf = b.fcmp_ordered("==", self.fintr(b, "fabs", x), _fc(float("inf")))
        return b.select(inf, _fc(float("nan")), v)

    def sin(self, b, x):
        return self._sincos(b, x, True)

    def cos(self, b, x):
        return self._sincos(b, x, False)

    def tanh(self, b, x):
        a = self.fintr(b, "fabs", x)
        x2 = b.fmul(x, x)
        small = b.fmul(x, self.poly(b, x2, [1.0, -1 / 3, 2 / 15, -17 / 315, 62 / 2835, -1382 / 155925,
                                            21844 / 6081075, -929569 / 638512875]))
        e = self.exp(b, b.fmul(a, _fc(2.0)))
        big = b.fsub(_fc(1.0), b.fdiv(_fc(2.0), b.fadd(e, _fc(1.0))))
        big = self.d.call(b, "llvm.copysign.f32", f32, [f32, f32], [big, x])
        return b.select(b.fcmp_ordered("<", a, _fc(0.4)), small, big)

    def erf(self, b, x):
        a = self.fintr(b, "fabs", x)
        x2 = b.fmul(x, x)
        k = 2 / math.sqrt(math.pi)
        small = b.fmul(x, self.poly(b, x2, [k, -k / 3, k / 10, -k / 42, k / 216, -k / 1320, k / 9360]))
        # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7) for |x| >= 0.5
        t = b.fdiv(_fc(1.0), self.fma(b, a, _fc(0.3275911), _fc(1.0)))
        p = b.fmul(t, self.poly(b, t, [0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429]))
        big = b.fsub(_fc(1.0), b.fmul(p, self.exp(b, b.fneg(b.fmul(a, a)))))
        big = self.d.call(b, "llvm.copysign.f32", f32, [f32, f32], [big, x])
        return b.select(b.fcmp_ordered("<", a, _fc(0.5)), small, big)

    def sigmoid(self, b, x):
        """e = exp(-|x|): 1/(1+e) for x >= 0, e/(1+e) below (keeps the tiny tail for x << 0, where
        1/(1+exp(-x)) would be 1/inf = 0)."""
        e = self.exp(b, b.fneg(self.fintr(b, "fabs", x)))
        s = b.fdiv(_fc(1.0), b.fadd(_fc(1.0), e))
        return b.select(b.fcmp_ordered(">=", x, _fc(0.0)), s, b.fmul(e, s))

    def _log2_f64(self, b, xd):
        """log2 of a positive finite f64 (to ~2^-50 relative): 2^e * m, m in [sqrt(1/2), sqrt(2)),
        log(m) = 2 atanh((m-1)/(m+1)) by its series."""
        D = lambda v: ir.Constant(f64, float(v))
        K = 0x3FE6A09E667F3BCD                                       # bits of sqrt(1/2)
        u2 = b.sub(b.bitcast(xd, i64), _ic(i64, K))
        e = b.ashr(u2, _ic(i64, 52))
        m = b.bitcast(b.add(b.and_(u2, _ic(i64, (1 << 52) - 1)), _ic(i64, K)), f64)
        s = b.fdiv(b.fsub(m, D(1.0)), b.fadd(m, D(1.0)))
        s2 = b.fmul(s, s)
        acc = D(2.0 / 17)
        for k in range(7, -1, -1):
            acc = self.d.call(b, "llvm.fma.f64", f64, [f64] * 3, [acc, s2, D(2.0 / (2 * k + 1))])
        lnm = b.fmul(s, acc)
        return self.d.call(b, "llvm.fma.f64", f64, [f64] * 3, [lnm, D(1.4426950408889634), b.sitofp(e, f64)])

    def pow(self, b, x, y):
        """C99 / NumPy pow: 2^(y * log2|x|) with log2 and the product in f64 (an f32 log2 would cost
        |y log2 x| * 2^-24 of relative accuracy: tens of ulp for large results), the exponent split
        into an integer n and a fraction f (exp2 of f, then * 2^n in two exact steps); then the
        special cases: pow(x, +-0) = 1 and pow(1, y) = 1 even for NaN, pow(-1, +-inf) = 1, a negative
        base (-0 and -inf included) with an odd integer exponent gives the sign, a finite negative
        base with a non-integer finite exponent gives NaN; 0 and inf bases and infinite exponents
        come out of the formula (log2 0 = -inf, log2 inf = inf)."""
        x32, w = self._as32(b, x)
        y32, _ = self._as32(b, y)
        ax = self.fintr(b, "fabs", x32)
        xd = b.fpext(ax, f64)
        l2 = self._log2_f64(b, xd)
        l2 = b.select(b.fcmp_ordered("==", ax, _fc(0.0)), ir.Constant(f64, float("-inf")), l2)
        l2 = b.select(b.fcmp_ordered("==", ax, _fc(float("inf"))), ir.Constant(f64, float("inf")), l2)
        l2 = b.select(b.fcmp_unordered("uno", ax, ax), ir.Constant(f64, float("nan")), l2)
        t0 = b.fmul(b.fpext(y32, f64), l2)
        t = self.d.call(b, "llvm.minnum.f64", f64, [f64, f64], [t0, ir.Constant(f64, 200.0)])
        t = self.d.call(b, "llvm.maxnum.f64", f64, [f64, f64], [t, ir.Constant(f64, -200.0)])
        n = self.d.call(b, "llvm.roundeven.f64", f64, [f64], [t])
        f = b.fptrunc(b.fsub(t, n), f32)
        ni = self.d.call(b, "llvm.fptosi.sat.i32.f64", i32, [f64], [n])        # in [-200, 200]
        n1 = b.ashr(ni, _ic(i32, 1))
        n2 = b.sub(ni, n1)                                                      # both in [-100, 100]
        p2 = lambda k: b.bitcast(b.shl(b.add(k, _ic(i32, 127)), _ic(i32, 23)), f32)
        r = b.fmul(b.fmul(self.tm.exp2_approx(b, f), p2(n1)), p2(n2))
        r = b.select(b.fcmp_unordered("uno", t0, t0), _fc(float("nan")), r)
        # negative base: odd integer exponents give the sign; finite non-integer exponents NaN
        yint = b.fcmp_ordered("==", self.fintr(b, "trunc", y32), y32)          # +-inf count as even integers
        half = b.fmul(y32, _fc(0.5))
        yodd = b.and_(yint, b.fcmp_ordered("!=", self.fintr(b, "trunc", half), half))
        xsign = b.icmp_signed("<", b.bitcast(x32, i32), _ic(i32, 0))
        r = b.select(b.and_(xsign, yodd), b.fneg(r), r)
        negfin = b.fcmp_ordered("<", x32, _fc(0.0))
        negfin = b.and_(negfin, b.fcmp_ordered(">", x32, _fc(float("-inf"))))
        yfin = b.fcmp_ordered("<", self.fintr(b, "fabs", y32), _fc(float("inf")))
        r = b.select(b.and_(negfin, b.and_(yfin, b.not_(yint))), _fc(float("nan")), r)
        one = b.or_(b.fcmp_ordered("==", y32, _fc(0.0)), b.fcmp_ordered("==", x32, _fc(1.0)))
        one = b.or_(one, b.and_(b.fcmp_ordered("==", x32, _fc(-1.0)),
                                b.fcmp_ordered("==", self.fintr(b, "fabs", y32), _fc(float("inf")))))
        r = b.select(one, _fc(1.0), r)
        return self._back(b, r, w)

    def atan(self, b, t):
        """atan on [0, 1]: above tan(pi/8) use pi/4 + atan((t-1)/(t+1)); Taylor series."""
        hi = b.fcmp_ordered(">", t, _fc(0.41421356237309503))
        red = b.fdiv(b.fsub(t, _fc(1.0)), b.fadd(t, _fc(1.0)))
        y = b.select(hi, red, t)
        y2 = b.fmul(y, y)
        coeffs = [(-1) ** k / (2 * k + 1) for k in range(12)]
        a = b.fmul(y, self.poly(b, y2, coeffs))
        return b.select(hi, b.fadd(a, _fc(math.pi / 4)), a)

    def atan2(self, b, y, x):
        y32, w = self._as32(b, y)
        x32, _ = self._as32(b, x)
        ax, ay = self.fintr(b, "fabs", x32), self.fintr(b, "fabs", y32)
        mx = self.fintr2(b, "maxnum", ax, ay)
        mn = self.fintr2(b, "minnum", ax, ay)
        t = b.fdiv(mn, mx)
        t = b.select(b.fcmp_ordered("==", ax, ay), _fc(1.0), t)               # inf / inf: pi/4
        t = b.select(b.fcmp_ordered("==", mx, _fc(0.0)), _fc(0.0), t)
        a = self.atan(b, t)
        a = b.select(b.fcmp_ordered(">", ay, ax), b.fsub(_fc(math.pi / 2), a), a)
        xneg = b.icmp_signed("<", b.bitcast(x32, i32), _ic(i32, 0))       # x < 0 or x == -0
        a = b.select(xneg, b.fsub(_fc(math.pi), a), a)
        a = self.d.call(b, "llvm.copysign.f32", f32, [f32, f32], [a, y32])
        nan = b.or_(b.fcmp_unordered("uno", x32, x32), b.fcmp_unordered("uno", y32, y32))
        a = b.select(nan, _fc(float("nan")), a)
        return self._back(b, a, w)


_TWO_OVER_PI = 0xa2f9836e4e441529fc2757d1f534ddc0db6295993c439041fe5163abdebbc561   # floor(2/pi * 2^256)


def _f32(x: float) -> float:
    import struct
    return struct.unpack("<f", struct.pack("<f", x))[0]
