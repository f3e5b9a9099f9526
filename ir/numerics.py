"""Bit-exact conversions between NumPy values and the codes (raw bit patterns) of every element type.

Pure NumPy. The value sets and the rounding / overflow / NaN rules are the ones documented in
`tile.ir.dtypes`; this module is their executable form:

* `encode(x, t)`   -- NumPy values (any float or integer dtype) -> codes of `t`, in `code_dtype(t)`.
* `decode(c, t)`   -- codes of `t` -> float64 (floats; NaN and inf kept) or int64 (integers; uint64
  for u64, whose values do not all fit in int64).
* `quantize(x, t)` -- `decode(encode(x, t), t)`: the nearest value of `t`.
* `pack(codes, bits)` / `unpack(packed, bits, count)` -- dense storage of codes in bytes.
* `to_bits(x, t)` / `from_bits(packed, t, shape)` -- encode+pack / unpack+decode.

Rounding is always done once, from the exact input value: a float64 input goes straight to the
target (never through float32, which would round twice), float32/float16 inputs are widened to
float64 exactly first, and integer inputs (including int64/uint64 beyond 2^53) are rounded from their
exact integer value. Floats are rounded to nearest, ties to even, by integer arithmetic on the
significand; integers are rounded half-to-even (`np.rint`) and saturated.

Bit order of packed data (LSB-first, "little-endian bit stream"):
  the codes form one bit stream; element ``i`` occupies stream bits ``[i*bits, (i+1)*bits)``, its
  least significant bit first; stream bit ``k`` is bit ``k % 8`` (value ``1 << (k % 8)``) of byte
  ``k // 8``. The stream is padded with zero bits to a whole number of bytes, so ``n`` codes take
  ``ceil(n*bits/8)`` bytes. Example: 3-bit codes ``[1, 2, 3]`` are the stream
  ``1,0,0, 0,1,0, 1,1,0`` -> bytes ``[0b11010001, 0b00000000] == [0xD1, 0x00]``. For widths 8, 16,
  32 and 64 this is the same as storing the codes as little-endian unsigned integers.
"""
from __future__ import annotations

import math

import numpy as np

from .dtypes import DType, dtype as _dtype

__all__ = ["code_dtype", "encode", "decode", "quantize", "pack", "unpack", "to_bits", "from_bits"]

_U64 = np.uint64


def code_dtype(t: DType | str) -> np.dtype:
    """The NumPy unsigned integer dtype that holds one code of `t`: uint8 for widths up to 8 bits,
    then uint16, uint32, uint64."""
    t = _dtype(t)
    return _code_dtype_for_bits(t.bits)


def _code_dtype_for_bits(bits: int) -> np.dtype:
    if not 1 <= bits <= 64:
        raise ValueError(f"code width must be 1..64 bits, got {bits}")
    for w, dt in ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64)):
        if bits <= w:
            return np.dtype(dt)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------
# Helpers


def _bit_length(u: np.ndarray) -> np.ndarray:
    """Elementwise bit length of a uint64 array (0 for 0), as int64."""
    u = u.astype(_U64, copy=True)
    n = np.zeros(u.shape, np.int64)
    for s in (32, 16, 8, 4, 2, 1):
        big = u >= (_U64(1) << _U64(s))
        n += np.where(big, s, 0)
        u = np.where(big, u >> _U64(s), u)
    return n + (u != 0)


def _split(x: np.ndarray):
    """Exact decomposition of numeric values: (neg, sig, exp2, isnan, isinf) with
    |x| = sig * 2**exp2 (sig uint64, exp2 int64) for finite x."""
    if x.dtype.kind in "biu":
        if x.dtype.kind == "u" or x.dtype.kind == "b":
            sig = x.astype(_U64)
            neg = np.zeros(x.shape, bool)
        else:
            xi = x.astype(np.int64)
            neg = xi < 0
            u = xi.view(_U64)
            sig = np.where(neg, ~u + _U64(1), u)       # |x|, exact even for -2**63
        z = np.zeros(x.shape, bool)
        return neg, sig, np.zeros(x.shape, np.int64), z, z
    if x.dtype.kind != "f" or x.dtype.itemsize > 8:
        x = x.astype(np.float64)                        # e.g. ml_dtypes arrays, long double
    with np.errstate(invalid="ignore"):
        bits = x.astype(np.float64).view(_U64)
    neg = (bits >> _U64(63)) != 0
    e = ((bits >> _U64(52)) & _U64(0x7FF)).astype(np.int64)
    m = bits & _U64((1 << 52) - 1)
    sig = np.where(e > 0, m | _U64(1 << 52), m)
    exp2 = np.maximum(e, 1) - 1075
    special = e == 0x7FF
    return neg, sig, exp2, special & (m != 0), special & (m == 0)


def _float_layout(t: DType):
    """(max finite magnitude code, overflow code or None for saturation, NaN code magnitude or None)."""
    E, M = t.exp, t.man
    if t.is_ieee_like:
        inf = ((1 << E) - 1) << M
        return inf - 1, inf, inf | (1 << (M - 1))
    if t.name == "f8e4m3fn":
        return 0x7E, 0x7F, 0x7F
    return (1 << (t.bits - 1)) - 1, None, None


# --------------------------------------------------------------------------------------------------
# Encoding


def _encode_float(x: np.ndarray, t: DType) -> np.ndarray:
    E, M, bits = t.exp, t.man, t.bits
    emin = 1 - t.bias
    max_mag, over_code, nan_code = _float_layout(t)
    neg, sig, exp2, isnan, isinf = _split(x)

    # Unbiased exponent of the leading bit, clamped below at the smallest normal exponent.
    ue = _bit_length(sig) - 1 + exp2
    et = np.maximum(ue, emin)
    # Round sig * 2**exp2 to a multiple of the target's quantum 2**(et - M), ties to even.
    shift = et - M - exp2
    sh = np.clip(shift, 1, 63).astype(_U64)
    q = sig >> sh
    rem = sig & ((_U64(1) << sh) - _U64(1))
    half = _U64(1) << (sh - _U64(1))
    # One formula covers subnormals, normals and the carry into the next binade:
    # code magnitude = ((et - emin) << M) + r, where r counts quanta (it includes the implicit bit).
    base = (et - emin).astype(_U64) << _U64(M)
    # Ties go to the even *code*: the mantissa LSB, or for M == 0 formats the exponent LSB.
    odd = ((base + q) & _U64(1)) != 0
    up = (rem > half) | ((rem == half) & odd)
    r_right = q + up.astype(_U64)
    r_left = sig << np.clip(-shift, 0, 63).astype(_U64)   # shift <= 0: exact, no rounding needed
    r = np.where(shift > 63, _U64(0), np.where(shift > 0, r_right, r_left))
    mag = base + r
    mag = np.where(sig == 0, _U64(0), mag)

    over = (mag > _U64(max_mag)) | isinf
    if over_code is None:                               # finite-only: saturate
        mag = np.where(over, _U64(max_mag), mag)
    else:
        mag = np.where(over, _U64(over_code), mag)
    sign = neg.astype(_U64) << _U64(bits - 1)
    if nan_code is None:
        # ml_dtypes' behaviour for finite-only formats: NaN becomes a zero of the *opposite* sign.
        mag = np.where(isnan, _U64(0), mag)
        sign = np.where(isnan, (~neg).astype(_U64) << _U64(bits - 1), sign)
    else:
        mag = np.where(isnan, _U64(nan_code), mag)
    return (sign | mag).astype(code_dtype(t))


def _encode_e8m0(x: np.ndarray) -> np.ndarray:
    """Codes of f8e8m0fnu (2^(c-127), 255 = NaN): the nearest power of two in linear distance, ties
    up -- x in [2^k, 2^(k+1)) goes up iff x >= 1.5 * 2^k, i.e. iff the bit after the leading one is
    set -- clamped below at 2^-127; NaN for zero, negatives, inf, NaN and anything rounding past
    2^127 (ml_dtypes' float8_e8m0fnu, bit for bit)."""
    neg, sig, exp2, isnan, isinf = _split(x)
    bl = _bit_length(sig)
    ue = bl - 1 + exp2                                  # exponent of the leading bit
    second = np.where(bl >= 2, (sig >> np.maximum(bl - 2, 0).astype(_U64)) & _U64(1), _U64(0))
    code = np.maximum(ue + second.astype(np.int64) + 127, 0)
    bad = isnan | isinf | neg | (sig == 0) | (code > 254)
    return np.where(bad, 255, np.minimum(code, 255)).astype(np.uint8)


def _encode_int(x: np.ndarray, t: DType) -> np.ndarray:
    lo, hi = int(t.min_value), int(t.max_value)
    out_dt = np.uint64 if hi > (1 << 63) - 1 else np.int64
    if x.dtype.kind == "b":
        x = x.astype(np.uint8)
    if x.dtype.kind == "u":
        xu = x.astype(np.uint64)
        v = np.where(xu > np.uint64(hi), np.uint64(hi), xu).astype(out_dt)
    elif x.dtype.kind == "i":
        xi = x.astype(np.int64)
        v = np.clip(xi, max(lo, -(1 << 63)), min(hi, (1 << 63) - 1))
        v = v.astype(out_dt)
    else:
        r = np.rint(x.astype(np.float64))              # exact widening, then round half to even
        nan = np.isnan(r)
        hi_f = float(hi)                                # may round up to 2**63 / 2**64
        too_big = r >= hi_f if hi_f > hi else r > hi_f
        too_small = r < float(lo)
        ok = ~(nan | too_big | too_small)
        v = np.zeros(x.shape, out_dt)
        v[ok] = r[ok].astype(out_dt)
        v[too_big] = hi
        v[too_small] = lo
    u = v.view(_U64) if v.dtype == np.int64 else v.astype(_U64)   # two's complement bits
    return (u & _U64((1 << t.bits) - 1) if t.bits < 64 else u).astype(code_dtype(t))


def encode(x, t: DType | str) -> np.ndarray:
    """Convert NumPy values (any float, integer or bool dtype; any shape) to codes of `t`.

    The result has `x`'s shape and dtype `code_dtype(t)`; each element is the raw bit pattern of the
    value of `t` nearest to the input (ties to even), with the overflow and NaN rules of
    `tile.ir.dtypes`:

    * floats: one correct rounding from the exact input; overflow -> +-inf (f16/bf16/f32/f64,
      f8e5m2), NaN (f8e4m3fn) or the largest finite value (all other small floats, which also
      saturate infinities). NaN -> the canonical quiet NaN with the input's sign (f8e4m3fn:
      S.1111.111); finite-only small floats cannot hold NaN and give a zero of the opposite sign.
    * integers (int{b}, uint{b}, i*, u*): round half to even, saturate to the range, NaN -> 0; the
      code is the two's complement pattern masked to `t.bits` bits.
    * bool: 1 for any nonzero (or NaN) input, else 0.
    """
    t = _dtype(t)
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        x = x.astype(np.float64)
    if t.kind == "bool":
        return (x != 0).astype(np.uint8) if x.dtype.kind != "f" else \
            ((x != 0) | np.isnan(x)).astype(np.uint8)
    if t.is_float:
        if t.bits == 64 and x.dtype.kind == "f" and x.dtype.itemsize <= 8:
            b = x.astype(np.float64).view(_U64)        # exact; canonicalize NaN payloads
            nan = np.isnan(x)
            return np.where(nan, (b & _U64(1 << 63)) | _U64(0x7FF8 << 48), b).astype(np.uint64)
        if t.is_e8m0:
            return _encode_e8m0(x)
        return _encode_float(x, t)
    return _encode_int(x, t)


# --------------------------------------------------------------------------------------------------
# Decoding


def decode(codes, t: DType | str) -> np.ndarray:
    """Convert codes of `t` (any unsigned or non-negative integer array; only the low `t.bits` bits
    are read) to values: float64 for floats (infinities and NaNs kept, with their sign), int64 for
    integers and bool (uint64 for u64)."""
    t = _dtype(t)
    c = np.asarray(codes)
    if c.dtype.kind not in "biu":
        raise TypeError(f"codes must be an integer array, got {c.dtype}")
    c = (c.astype(np.int64).view(_U64) if c.dtype.kind == "i" else c.astype(_U64))
    if t.bits < 64:
        c = c & _U64((1 << t.bits) - 1)
    if not t.is_float:
        if t.kind == "uint" and t.bits == 64:
            return c
        if t.kind == "int":
            if t.bits == 64:
                return c.view(np.int64)
            v = c.astype(np.int64)
            return np.where(v >= (1 << (t.bits - 1)), v - (1 << t.bits), v)
        return c.astype(np.int64)
    if t.name == "f64":
        return c.view(np.float64)
    with np.errstate(invalid="ignore"):                 # signalling NaNs are quieted, sign kept
        if t.name == "f32":
            return c.astype(np.uint32).view(np.float32).astype(np.float64)
        if t.name == "f16":
            return c.astype(np.uint16).view(np.float16).astype(np.float64)
        if t.name == "bf16":
            return (c.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
    if t.is_e8m0:                                       # 2^(c-127); 255 is NaN
        e = c.astype(np.int64)
        return np.where(e == 255, np.nan, np.ldexp(1.0, e - t.bias))
    E, M, bits = t.exp, t.man, t.bits
    neg = ((c >> _U64(bits - 1)) & _U64(1)) != 0
    e = ((c >> _U64(M)) & _U64((1 << E) - 1)).astype(np.int64)
    m = (c & _U64((1 << M) - 1)).astype(np.int64)
    emin = 1 - t.bias
    sub = np.ldexp(m.astype(np.float64), emin - M)
    nrm = np.ldexp((m + (1 << M)).astype(np.float64), e - t.bias - M)
    v = np.where(e == 0, sub, nrm)
    if t.is_ieee_like:
        top = e == (1 << E) - 1
        v = np.where(top, np.where(m == 0, np.inf, np.nan), v)
    elif t.name == "f8e4m3fn":
        v = np.where((e == (1 << E) - 1) & (m == (1 << M) - 1), np.nan, v)
    return np.where(neg, -v, v)


def quantize(x, t: DType | str) -> np.ndarray:
    """The value of `t` nearest to each element of `x` (`decode(encode(x, t), t)`)."""
    return decode(encode(x, t), t)


# --------------------------------------------------------------------------------------------------
# Packing


def pack(codes, bits: int) -> np.ndarray:
    """Pack codes (any shape, flattened in C order; each in [0, 2**bits)) densely into bytes,
    LSB-first (see the module docstring). Returns a 1-D uint8 array of ceil(n*bits/8) bytes whose
    padding bits are zero. Raises ValueError for codes that do not fit in `bits` bits."""
    bits = int(bits)
    cdt = _code_dtype_for_bits(bits)
    c = np.asarray(codes).reshape(-1)
    if c.dtype.kind not in "biu":
        raise TypeError(f"codes must be an integer array, got {c.dtype}")
    if c.size and (c.dtype.kind == "i" and c.min() < 0):
        raise ValueError("codes must be non-negative")
    c = c.astype(_U64)
    if c.size and bits < 64 and c.max() >> _U64(bits):
        raise ValueError(f"a code does not fit in {bits} bits")
    if bits in (8, 16, 32, 64):
        return np.ascontiguousarray(c.astype(cdt.newbyteorder("<"))).view(np.uint8).copy()
    w = cdt.itemsize
    le = np.ascontiguousarray(c.astype(cdt.newbyteorder("<"))).view(np.uint8).reshape(-1, w)
    stream = np.unpackbits(le, axis=1, bitorder="little")[:, :bits]
    return np.packbits(stream.reshape(-1), bitorder="little")


def unpack(packed, bits: int, count: int) -> np.ndarray:
    """Inverse of `pack`: read `count` codes of `bits` bits from the bytes `packed` (LSB-first).
    Returns a 1-D array of dtype uint8 (bits <= 8), uint16, uint32 or uint64. Extra trailing bytes
    are ignored; too few raise ValueError."""
    bits, count = int(bits), int(count)
    cdt = _code_dtype_for_bits(bits)
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        if p.dtype.kind not in "biu":
            raise TypeError(f"packed data must be bytes (uint8), got {p.dtype}")
        p = p.astype(np.uint8)
    p = p.reshape(-1)
    need = (count * bits + 7) // 8
    if count < 0 or p.size < need:
        raise ValueError(f"{count} codes of {bits} bits need {need} bytes, got {p.size}")
    if bits in (8, 16, 32, 64):
        return p[:need].copy().view(cdt.newbyteorder("<")).astype(cdt)
    w = cdt.itemsize
    stream = np.unpackbits(p[:need], bitorder="little")[: count * bits].reshape(count, bits)
    full = np.zeros((count, 8 * w), np.uint8)
    full[:, :bits] = stream
    le = np.packbits(full, axis=1, bitorder="little")
    return le.reshape(-1).view(cdt.newbyteorder("<")).astype(cdt)


def to_bits(x, t: DType | str) -> np.ndarray:
    """Encode `x` as `t` and pack the codes: `pack(encode(x, t), t.bits)`."""
    t = _dtype(t)
    return pack(encode(x, t), t.bits)


def from_bits(packed, t: DType | str, shape) -> np.ndarray:
    """Unpack `prod(shape)` codes of `t` from `packed` and decode them, shaped `shape`."""
    t = _dtype(t)
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    return decode(unpack(packed, t.bits, math.prod(shape)), t).reshape(shape)
