"""Element types: every width from 1 to 8 bits is first-class; sizes are counted in bits.

The value sets, in one place (conversions in `ir/numerics.py` implement exactly this, bit for bit;
it is tested against ml_dtypes, NumPy and brute-force references in `tests/test_numerics.py`):

* Integers ``int{b}`` / ``uint{b}`` for b in 1..8, and i16/i32/i64, u16/u32/u64 (``int8`` is ``i8``,
  ``uint8`` is ``u8``). Two's complement; ``int{b}`` holds [-2^(b-1), 2^(b-1)-1], ``uint{b}`` holds
  [0, 2^b-1]. A float converts to an integer by rounding to nearest, ties to even, then saturating to
  that range; NaN converts to 0. An integer converts to a narrower integer by saturation too.
  (ml_dtypes' float -> int4/int2/... casts truncate toward zero and wrap modulo 2^b; we do not.)
* ``bool`` (printed ``i1``): 0 or 1. Any nonzero input, and NaN, converts to 1 (as NumPy's
  ``astype(bool)``).
* IEEE floats f16, f32, f64 and bf16 (8 exponent bits, 7 mantissa bits, f32's range): round to
  nearest even; overflow gives +-inf; NaN stays NaN (the canonical quiet NaN, with the input's
  sign; bf16's is S.11111111.1000000 as in ml_dtypes).
* ``f8e4m3fn`` (OCP FP8 E4M3): bias 7, no infinities, one NaN pattern per sign (S.1111.111),
  largest finite 448. Overflow of a finite input (beyond the rounding boundary of 448: above 464,
  while 464 itself ties to the even 448) and +-inf become NaN with the input's sign, as in ml_dtypes.
* ``f8e5m2`` (OCP FP8 E5M2): IEEE-like, bias 15, infinities and NaNs; overflow (from 61440 up) gives
  +-inf; NaN gives the quiet NaN S.11111.10.
* Every other small float ``f{bits}e{E}m{M}`` (bits = 1 + E + M <= 8, E >= 1), e.g. f6e3m2, f6e2m3,
  f5e2m2, f4e2m1, f3e1m1: bias 2^(E-1)-1, subnormals, *no* infinities or NaNs (every code is a
  finite number, as in the OCP MX formats). Rounding is to nearest even; values beyond the largest
  finite magnitude saturate to it, as do infinities (keeping their sign). The format cannot hold
  NaN: NaN converts to a zero of the *opposite* sign -- a NaN with a clear sign bit (NumPy's
  ``np.nan``) gives -0 (code 100..0), a negative NaN gives +0 -- bit-exactly what ml_dtypes does
  for float6_e3m2fn, float6_e2m3fn and float4_e2m1fn (its "NaN" for them is the -0 pattern, negated
  for a negative NaN). The value is 0 either way. The suffix ``fn`` is accepted and ignored
  (``f6e3m2fn`` is ``f6e3m2``). Note ``f8e3m4`` here is finite-only, unlike ml_dtypes' IEEE-like
  float8_e3m4, and ``f8e4m3`` names ``f8e4m3fn``.
* ``f8e8m0fnu`` (``tile.e8m0``; also spelled ``e8m0``, ``f8e8m0``, ``float8_e8m0fnu``): the OCP MX
  scale type, ml_dtypes' float8_e8m0fnu. Eight exponent bits and nothing else: code c is 2^(c-127)
  for c in 0..254 (2^-127 .. 2^127) and 255 is NaN; no sign, no zero, no infinity. A conversion to
  it rounds to the nearest power of two *in linear distance*, ties up (1.5 -> 2, 3 -> 4, 0.75 -> 1:
  ml_dtypes' rule, not ties-to-even); values below 2^-127 (f32 subnormals included) become 2^-127;
  rounding beyond 2^127 (from 1.5 * 2^127 up), +-inf, NaN, zero and every negative value become
  NaN (255), bit-exactly as ml_dtypes.

"Nearest even" means: ties go to the neighbour whose code is even (its mantissa LSB is 0; for M = 0
formats, where only the exponent varies, its exponent LSB is 0). Every conversion rounds exactly
once, from the exact input value: a float64 (or int64 beyond 2^53) input is rounded straight to the
target. ml_dtypes 0.6 casts float64 to its small types *through float32*, rounding twice, so for
float64 inputs within 2^-24 relative of a tie it can differ from us; for float32 inputs, and for
float64 inputs that float32 holds exactly, we agree with it bit for bit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DType", "dtype", "ALL_NAMED", "bool_", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64",
           "f16", "bf16", "f32", "f64", "f8e4m3fn", "f8e5m2", "f8e8m0fnu", "e8m0"]


@dataclass(frozen=True)
class DType:
    """One element type. `kind` is 'float', 'int', 'uint' or 'bool'; `bits` is the storage width."""
    name: str
    kind: str
    bits: int
    exp: int = 0    # exponent bits (floats)
    man: int = 0    # mantissa bits (floats)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"tile.{self.name}"

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_int(self) -> bool:
        """True for signed and unsigned integers and bool."""
        return self.kind in ("int", "uint", "bool")

    @property
    def is_signed(self) -> bool:
        return self.kind in ("int", "float") and self.has_sign

    @property
    def has_sign(self) -> bool:
        """False for the unsigned float f8e8m0fnu (its 8 bits are all exponent) and unsigned ints."""
        if self.kind == "float":
            return self.bits > self.exp + self.man
        return self.kind == "int"

    @property
    def is_e8m0(self) -> bool:
        """The MX scale type f8e8m0fnu: its conversions have rules of their own (see the module doc)."""
        return self.kind == "float" and not self.has_sign

    @property
    def is_subbyte(self) -> bool:
        return self.bits < 8

    @property
    def nbytes(self) -> int:
        """Size in bytes; an error for sub-byte types, whose sizes must be counted in bits."""
        if self.bits % 8:
            raise TypeError(f"{self.name} is {self.bits} bits wide: count its size in bits, not bytes")
        return self.bits // 8

    @property
    def bias(self) -> int:
        return (1 << (self.exp - 1)) - 1 if self.is_float else 0

    @property
    def has_inf(self) -> bool:
        return self.name in ("f16", "bf16", "f32", "f64", "f8e5m2")

    @property
    def has_nan(self) -> bool:
        return self.has_inf or self.name in ("f8e4m3fn", "f8e8m0fnu")

    @property
    def is_ieee_like(self) -> bool:
        """f16/bf16/f32/f64/f8e5m2: the top exponent code is inf/NaN."""
        return self.has_inf

    @property
    def min_value(self) -> float | int:
        if self.kind == "bool":
            return 0
        if self.kind == "uint":
            return 0
        if self.kind == "int":
            return -(1 << (self.bits - 1))
        if self.is_e8m0:
            return 2.0 ** -self.bias            # no sign, no zero: the smallest value is 2^-127
        return -self.max_value

    @property
    def max_value(self) -> float | int:
        """Largest finite value."""
        if self.kind == "bool":
            return 1
        if self.kind == "uint":
            return (1 << self.bits) - 1
        if self.kind == "int":
            return (1 << (self.bits - 1)) - 1
        e, m, b = self.exp, self.man, self.bias
        if self.is_ieee_like:
            top = (1 << e) - 2                  # the all-ones exponent is inf/NaN
            return float((2 - 2.0 ** -m) * 2.0 ** (top - b))
        if self.is_e8m0:                        # 255 is NaN, 254 is 2^127
            return 2.0 ** ((1 << self.exp) - 2 - self.bias)
        if self.name == "f8e4m3fn":             # S.1111.111 is NaN, so the top mantissa is 110
            return float((2 - 2.0 ** -(m - 1)) * 2.0 ** ((1 << e) - 1 - b))
        return float((2 - 2.0 ** -m) * 2.0 ** ((1 << e) - 1 - b))


def _mk(name, kind, bits, exp=0, man=0):
    return DType(name, kind, bits, exp, man)


bool_ = _mk("i1", "bool", 1)
i8, i16, i32, i64 = (_mk(f"i{b}", "int", b) for b in (8, 16, 32, 64))
u8, u16, u32, u64 = (_mk(f"u{b}", "uint", b) for b in (8, 16, 32, 64))
f16 = _mk("f16", "float", 16, 5, 10)
bf16 = _mk("bf16", "float", 16, 8, 7)
f32 = _mk("f32", "float", 32, 8, 23)
f64 = _mk("f64", "float", 64, 11, 52)
f8e4m3fn = _mk("f8e4m3fn", "float", 8, 4, 3)
f8e5m2 = _mk("f8e5m2", "float", 8, 5, 2)
f8e8m0fnu = e8m0 = _mk("f8e8m0fnu", "float", 8, 8, 0)    # unsigned: bits == exp + man

ALL_NAMED: dict[str, DType] = {t.name: t for t in (bool_, i8, i16, i32, i64, u8, u16, u32, u64,
                                                 f16, bf16, f32, f64, f8e4m3fn, f8e5m2, f8e8m0fnu)}
for _b in range(1, 8):
    ALL_NAMED[f"int{_b}"] = _mk(f"int{_b}", "int", _b)
    ALL_NAMED[f"uint{_b}"] = _mk(f"uint{_b}", "uint", _b)

_ALIASES = {"bool": "i1", "int8": "i8", "uint8": "u8", "int16": "i16", "int32": "i32", "int64": "i64",
            "uint16": "u16", "uint32": "u32", "uint64": "u64", "float16": "f16", "half": "f16",
            "bfloat16": "bf16", "float32": "f32", "float64": "f64", "f8e4m3": "f8e4m3fn",
            "float8_e4m3fn": "f8e4m3fn", "float8_e5m2": "f8e5m2",
            "e8m0": "f8e8m0fnu", "f8e8m0": "f8e8m0fnu", "float8_e8m0fnu": "f8e8m0fnu"}
_SMALL_FLOAT = re.compile(r"f(\d)e(\d)m(\d)(?:fn)?$")


def dtype(name: "str | DType") -> DType:
    """Look a type up by name ('bf16', 'int3', 'f6e3m2', 'float8_e4m3fn', ...); raises ValueError."""
    if isinstance(name, DType):
        return name
    name = str(name)
    name = _ALIASES.get(name, name)
    if name in ALL_NAMED:
        return ALL_NAMED[name]
    m = _SMALL_FLOAT.match(name)
    if m:
        bits, e, mm = map(int, m.groups())
        if bits == 1 + e + mm and e >= 1 and bits <= 8:
            canon = f"f{bits}e{e}m{mm}"
            if canon == "f8e4m3":
                return f8e4m3fn
            if canon == "f8e5m2":
                return f8e5m2
            t = ALL_NAMED.get(canon) or _mk(canon, "float", bits, e, mm)
            ALL_NAMED[canon] = t
            return t
        raise ValueError(f"bad small-float type {name!r}: bits must equal 1 + E + M, E >= 1, bits <= 8")
    raise ValueError(f"unknown element type {name!r}")


def small_float(bits: int, exp: int, man: int) -> DType:
    """The small float type f{bits}e{exp}m{man}."""
    return dtype(f"f{bits}e{exp}m{man}")


def int_type(bits: int, signed: bool = True) -> DType:
    """int{bits}/uint{bits} (1..8) or i16/i32/i64/u..."""
    if bits < 8:
        return ALL_NAMED[f"{'int' if signed else 'uint'}{bits}"]
    return ALL_NAMED[f"{'i' if signed else 'u'}{bits}"]


def promote(a: DType, b: DType) -> DType:
    """The result type of mixing a and b in arithmetic (float beats int; wider beats narrower)."""
    if a == b:
        return a
    if a.is_float != b.is_float:
        return a if a.is_float else b
    if a.is_float:
        if a.bits != b.bits:
            return a if a.bits > b.bits else b
        return f32                                   # f16 + bf16 and other same-width mixes
    if a.kind == "bool":
        return b
    if b.kind == "bool":
        return a
    return a if a.bits >= b.bits else b
