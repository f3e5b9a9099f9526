"""Fast dequantization: narrow codes (int1..int8, uint1..uint8, the small floats f4e2m1, f6e3m2,
f6e2m3, fp8, ...) to bf16 / f16 / f32 by bit tricks, in plain LLVM IR.

The `cast` op's general lowering (`llvm_numerics.Numerics.convert`) decodes every value to f32 and
rounds it to the destination with NaN handling: a dozen instructions per element. Converting a code
of at most 8 bits to bf16/f16/f32 never rounds (every such value is exact in the destination), so
it can be done with integer logic on the code's bits and at most one full-rate float instruction,
and two values at a time in one 32-bit register for the 16-bit destinations:

``magic``  -- integers. ``c | bits(2^p)`` is the float ``2^p + c`` while ``c < 2^mant``; subtracting
              ``2^p`` (plus ``2^(b-1)`` for a signed code, first made offset-binary by ``xor 2^(b-1)``)
              leaves the value exactly. f16 pairs use ``2^10`` (``0x6400``, any code up to 10 bits),
              bf16 pairs ``2^7`` (``0x4300``, codes up to 7 bits), f32 ``1.5 * 2^23``.
``magic32hi`` -- 8-bit integers to bf16 (bf16 has 7 mantissa bits: 256 + c is not exact): the f32
              magic conversion, then the upper half of each f32 (exact: every 8-bit integer is a bf16),
              two upper halves joined into one register (one `prmt`/`lop3`).
``shift``  -- small floats whose exponent width fits the destination's: the code's exponent and
              mantissa are shifted so that its mantissa's top bit meets the destination's, its sign
              moved to bit 15 (31 for f32), and the result -- a float 2^(dst bias - src bias) too small
              (a subnormal for the code's own subnormals) -- multiplied by that power of two. One
              exact `mul` (`mul.bf16x2` / `mul.f16x2`: two values per instruction). f8e5m2 -> f16 needs
              no multiply (f16 starts with f8e5m2's bits). Inf/NaN codes (f8e5m2: S.11111.xx,
              f8e4m3fn: S.1111.111) are selected afterwards: infinities as such, NaNs as the
              canonical quiet NaN with the code's sign (what `ir/numerics.py` gives).

The trick is a function of (source dtype, destination dtype) alone -- `choose()` is the one table --
so it is not recorded in the IR: there is no choice to edit. Everything here is target-independent
LLVM IR (and/or/xor/shl/lshr/bitcast and fsub/fmul on <2 x bfloat>/<2 x half>/float): the NVPTX
backend (and ptxas) fuse the logic into `lop3`/`prmt`, and the same IR JIT-compiled for the host by
llvmlite is what `tests/test_fast_convert.py` checks, every code of every type, bit for bit, against
ml_dtypes.

Register representation of the codes (`lower_tile.from_code`): an i8 holding the code in its low
bits (sub-byte signed integers sign-extended); the functions here mask what they need. Codes that a
vector load left packed (`values.WordCode`: the word and the code's offset in it) are decoded from
the words (`convert_pair_words`): the pair register is cut from the word with one shift (shared by
the pairs of a word where it can be) and one mask -- fused by ptxas with the magic number and the
signed codes' xor into one `lop3` (an `and_xor` the target gives: ptxas leaves an and and an xor
with two immediates as two instructions) -- then one `sub`/`fma` on the pair. The cost per weight then
depends on where the two codes of a pair sit in the word: 16 bits apart, one shift serves both (the
pre-laid-out weights put them there: `tile/prelayout.py`).
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..ir.dtypes import DType

from .llvm_util import bf16, f16, f32, i32

_DST = {"bf16": (bf16, 8, 7, 127), "f16": (f16, 5, 10, 15), "f32": (f32, 8, 23, 127)}   # type, E, M, bias


def _c(v):
    return ir.Constant(i32, int(v) & 0xFFFFFFFF)


def choose(src: DType, dst: DType) -> "str | None":
    """The trick converting `src` codes to `dst`, or None where the general conversion is used."""
    if dst.name not in _DST or src.bits > 8:
        return None
    _, dE, dM, _ = _DST[dst.name]
    if src.kind in ("int", "uint"):
        if dst.name == "f32":
            return None                       # Numerics.convert already uses the f32 magic number
        if dst.name == "bf16" and src.bits == 8:
            return "magic32hi"
        return "magic"
    if src.is_float:
        if src.exp > dE or src.man > dM or (src.exp == dE and src.name != "f8e5m2"):
            return None
        return "shift"
    return None


def _mask(bits):
    return (1 << bits) - 1


def _code32(b, c, src: DType):
    """The code of `src` (an i8 register value) as the low bits of an i32, higher bits 0."""
    x = b.zext(c, i32) if c.type.width < 32 else c
    return b.and_(x, _c(_mask(src.bits)))


def _special(b, c, src: DType, dst: DType):
    """(is_special i1, replacement bits in the destination's integer type) for inf/NaN codes of
    f8e5m2 and f8e4m3fn; None for finite-only formats."""
    E, M, bits = src.exp, src.man, src.bits
    it = ir.IntType(32 if dst.name == "f32" else 16)
    sign = b.lshr(c, _c(bits - 1))
    mag = b.and_(c, _c(_mask(bits - 1)))
    if src.name == "f8e4m3fn":
        is_sp = b.icmp_unsigned("==", mag, _c(0x7F))
        qnan = {"bf16": 0x7FC0, "f16": 0x7E00, "f32": 0x7FC00000}[dst.name]
        rep = b.or_(b.shl(sign, _c(it.width - 1)), _c(qnan))
        return is_sp, b.trunc(rep, it) if it.width < 32 else rep
    if src.is_float and src.has_inf:          # f8e5m2 (the only IEEE-like small float)
        expmask = _mask(E) << M
        is_sp = b.icmp_unsigned("==", b.and_(mag, _c(expmask)), _c(expmask))
        inf, qnan = {"bf16": (0x7F80, 0x7FC0), "f16": (0x7C00, 0x7E00), "f32": (0x7F800000, 0x7FC00000)}[dst.name]
        isinf = b.icmp_unsigned("==", b.and_(mag, _c(_mask(M))), _c(0))
        rep = b.or_(b.shl(sign, _c(it.width - 1)), b.select(isinf, _c(inf), _c(qnan)))
        return is_sp, b.trunc(rep, it) if it.width < 32 else rep
    return None


def _shift_bits(b, c, src: DType, dst: DType, width: int):
    """Destination bits (in the low `width` bits) of a finite small-float code before the multiply."""
    _, dE, dM, _ = _DST[dst.name]
    bits, M = src.bits, src.man
    sign = b.shl(b.lshr(c, _c(bits - 1)), _c(width - 1))
    mag = b.shl(b.and_(c, _c(_mask(bits - 1))), _c(dM - M))
    return b.or_(sign, mag)


def convert_scalar(b, c, src: DType, dst: DType):
    """One code -> one value of `dst` (f32, or bf16/f16 through the pair form)."""
    how = choose(src, dst)
    if how is None:
        raise ValueError(f"no fast conversion {src} -> {dst}")
    if dst.name != "f32":
        return convert_pair(b, c, c, src, dst)[0]
    _, _, _, dbias = _DST["f32"]
    x = _code32(b, c, src)
    v = _shift_bits(b, x, src, dst, 32)
    scale = 2.0 ** (dbias - src.bias)
    r = b.fmul(b.bitcast(v, f32), ir.Constant(f32, scale)) if scale != 1.0 else b.bitcast(v, f32)
    sp = _special(b, x, src, dst)
    if sp is not None:
        r = b.select(sp[0], b.bitcast(sp[1], f32), r)
    return r


def convert_pair(b, c0, c1, src: DType, dst: DType):
    """Two codes (i8 register values) -> two values of `dst` (bf16 or f16), converted together in
    one 32-bit register. Returns (v0, v1)."""
    _check_pair(src, dst)
    x0, x1 = _code32(b, c0, src), _code32(b, c1, src)
    return _pair_tail(b, b.or_(x0, b.shl(x1, _c(16))), 0, 0, x0, x1, src, dst)


def plain_and_xor(b, x, mask: int, c: int):
    """(x & mask) ^ c in plain LLVM IR: the default `and_xor` (a target's intrinsics object may give
    one instruction for it, see convert_pair_words)."""
    return b.xor(b.and_(x, _c(mask)), _c(c))


def convert_pair_words(b, o0, o1, src: DType, dst: DType, shifts=None, and_xor=None):
    """Two codes given by where they sit in packed words (`values.WordCode`: an integer register
    value and the bit offset of the code) -> two values of `dst` (bf16 or f16), without unpacking
    the codes one per byte: the pair register is made from the words directly -- one shift of the
    word shared by both codes where their offsets are 16 apart (within the half's free mantissa
    bits: the mask, magic number and bias of the trick are moved to where the codes already are,
    and the lane's power of two folded into the bias `fma`), else one shift per code. `shifts`
    (a dict, word -> set of shift amounts already made) lets pairs of one word share shifts.
    `and_xor(b, x, mask, c)` = (x & mask) ^ c: the mask that cuts the pair from the shifted word and
    the magic number's xor in one call -- ptxas keeps an `and` and an `xor` with two immediates as
    two `LOP3`s, so NVPTX gives one `lop3.b32` here (NVPTXIntrinsics.and_xor); default: plain IR."""
    _check_pair(src, dst)
    bits = src.bits
    shifts = {} if shifts is None else shifts
    w0, s0 = _word32(b, o0, bits, shifts)
    w1, s1 = _word32(b, o1, bits, shifts)
    how = choose(src, dst)
    # where each code may sit in its half: below the magic number's exponent for integers, anywhere
    # in the half for small floats (their fields are shifted into place anyway), the low byte for
    # the f32-magic path (which shifts each code itself)
    room = {"magic": _DST[dst.name][2], "shift": 16, "magic32hi": 0}[how] - bits
    r = None
    if w0 is w1 and room >= 0:
        lo, hi = max(s0 - room, s1 - 16 - room), min(s0, s1 - 16)
        if how == "shift":                   # one shift for both lanes: the same offset in each half
            lo, hi = (lo, hi) if s1 - s0 == 16 else (1, 0)
        if lo <= hi:
            done = sorted(x for x in shifts.get(id(w0), ()) if lo <= x <= hi)
            r = 0 if lo <= 0 <= hi else (done[0] if done else hi)
    if r is not None:
        x = _shr(b, w0, r)
        shifts.setdefault(id(w0), set()).add(r)
        p0, p1 = s0 - r, s1 - 16 - r
        m = _mask(bits)
        w, mask = x, (m << p0) | (m << (16 + p1))           # masked in _pair_tail (with the magic xor)
    else:
        p0 = p1 = 0
        m = _mask(bits)
        w, mask = b.or_(b.and_(_shr(b, w0, s0), _c(m)), b.and_(_shr(b, w1, s1 - 16), _c(m << 16))), None
    x0 = x1 = None
    if how == "magic32hi" or _special_codes(src):
        x0 = b.and_(_shr(b, w0, s0), _c(_mask(bits)))
        x1 = b.and_(_shr(b, w1, s1), _c(_mask(bits)))
    return _pair_tail(b, w, p0, p1, x0, x1, src, dst, mask, and_xor)


def _check_pair(src, dst):
    if choose(src, dst) is None or dst.name == "f32":
        raise ValueError(f"no fast pair conversion {src} -> {dst}")


def _special_codes(src: DType):
    return src.name == "f8e4m3fn" or (src.is_float and src.has_inf)


def _shr(b, w, r):
    """w >> r (r < 0: w << -r), logical, i32."""
    if r > 0:
        return b.lshr(w, _c(r))
    if r < 0:
        return b.shl(w, _c(-r))
    return w


def _word32(b, o, bits, cache):
    """(i32 word, offset) holding the code of WordCode `o` whole: the 32-bit word of a wider integer
    that contains it, or the 32 bits starting at the code where it straddles two words (made once
    per word: `cache`)."""
    w, s = o.word, o.shift
    width = w.type.width
    if width == 32:
        return w, s
    base = 0 if width < 32 else (s // 32) * 32 if (s + bits - 1) // 32 == s // 32 else s
    key = ("word", id(w), base)
    if key not in cache:
        if width < 32:
            cache[key] = b.zext(w, i32)
        else:
            cache[key] = b.trunc(b.lshr(w, ir.Constant(w.type, base)) if base else w, i32)
    return cache[key], s - base


def _pair_tail(b, w, p0, p1, x0, x1, src: DType, dst: DType, mask=None, and_xor=None):
    """The pair register `w` (code 0 at bits p0.., code 1 at bits 16 + p1.., other bits 0 -- or, where
    `mask` is given, the bits of `w & mask`; for "magic32hi" and the inf/NaN codes also the codes
    x0, x1 as i32) -> (v0, v1)."""
    how = choose(src, dst)
    t, dE, dM, dbias = _DST[dst.name]
    vt = ir.VectorType(t, 2)
    if mask is not None and how != "magic":
        w = b.and_(w, _c(mask))
    if how == "magic32hi":
        halves = []
        for x in (x0, x1):
            off = 12582912.0
            if src.kind == "int":
                x = b.xor(x, _c(1 << (src.bits - 1)))
                off += float(1 << (src.bits - 1))
            f = b.fsub(b.bitcast(b.or_(x, _c(0x4B400000)), f32), ir.Constant(f32, off))
            halves.append(b.bitcast(f, i32))
        w = b.or_(b.lshr(halves[0], _c(16)), b.and_(halves[1], _c(0xFFFF0000)))
        v = b.bitcast(w, vt)
        return b.extract_element(v, _c(0)), b.extract_element(v, _c(1))
    if how == "magic":
        # code | bits(2^e) is the float 2^e + code * 2^p (p: the code's offset in its half); a signed
        # code is made offset-binary by xor 2^(b-1) first: mask, xor and or are one lop3
        e = 10 if dst.name == "f16" else 7
        pm = (0x6400 if dst.name == "f16" else 0x4300)
        h = (1 << (src.bits - 1)) if src.kind == "int" else 0
        c = pm | (pm << 16) | (h << p0) | (h << (16 + p1))
        w = (and_xor or plain_and_xor)(b, w, mask, c) if mask is not None else b.xor(w, _c(c))
        v = b.bitcast(w, vt)
        if p0 == p1 == 0:
            off = float(2 ** e + h)
            v = b.fsub(v, ir.Constant(vt, [off, off]))
        else:                                 # (x - 2^e) * 2^-p - h, exact: one fma per pair
            mul = [2.0 ** -p for p in (p0, p1)]
            add = [-(2.0 ** (e - p) + h) for p in (p0, p1)]
            name = f"llvm.fma.v2{'f16' if dst.name == 'f16' else 'bf16'}"
            fma = b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(vt, [vt, vt, vt]), name)
            v = b.call(fma, [v, ir.Constant(vt, mul), ir.Constant(vt, add)])
        return b.extract_element(v, _c(0)), b.extract_element(v, _c(1))
    # shift (p0 == p1 == p)
    bits, M, p = src.bits, src.man, p0
    sign = b.shl(b.and_(b.lshr(w, _c(bits - 1 + p)), _c(0x00010001)), _c(15))
    mm = _mask(bits - 1)
    mag = _shr(b, b.and_(w, _c((mm << p) | (mm << (16 + p)))), p - (dM - M))
    v = b.bitcast(b.or_(sign, mag), vt)
    scale = 2.0 ** (dbias - src.bias)
    if scale != 1.0:
        v = b.fmul(v, ir.Constant(vt, [scale, scale]))
    outs = [b.extract_element(v, _c(0)), b.extract_element(v, _c(1))]
    if _special_codes(src):
        for k, x in enumerate((x0, x1)):
            sp = _special(b, x, src, dst)
            outs[k] = b.select(sp[0], b.bitcast(sp[1], t), outs[k])
    return outs[0], outs[1]


def convert_values(b, vals, src: DType, dst: DType, origin=None, and_xor=None):
    """A thread's list of code values -> converted values, pairwise for 16-bit destinations (an odd
    last value converts alone). `origin(value)`: its `values.WordCode` or None -- pairs whose codes
    both have one are decoded from the packed words (`convert_pair_words`, with the target's
    `and_xor`)."""
    if dst.name == "f32":
        return [convert_scalar(b, v, src, dst) for v in vals]
    out = []
    shifts = {}
    for k in range(0, len(vals) - 1, 2):
        o0, o1 = (origin(vals[k]), origin(vals[k + 1])) if origin else (None, None)
        if o0 is not None and o1 is not None:
            out.extend(convert_pair_words(b, o0, o1, src, dst, shifts, and_xor))
            continue
        out.extend(convert_pair(b, vals[k], vals[k + 1], src, dst))
    if len(vals) % 2:
        out.append(convert_pair(b, vals[-1], vals[-1], src, dst)[0])
    return out
