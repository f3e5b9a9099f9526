"""The arithmetic of the elementwise ops, defined once: the interpreter executes it, canonicalize folds
constants with it, and the front end evaluates Python-number expressions with it.

    fold(name, dt, *values, attrs=None)

* `dt` a DType: `values` are *working values* of dt (NumPy arrays or 0-d arrays: float32 for floats
  of up to 32 bits, float64 for f64, int64 for integers and i1, uint64 for u64 — `working_dtype`) and
  the result is a working value of the result's dtype. This is the reference semantics of tilec (the
  interpreter's; see runtime/interpreter.py): floats narrower than f32 are computed in f32 and rounded
  to the dtype after every op (`ir.numerics`); integers wrap (two's complement); `div`/`rem` truncate
  toward zero with x/0 = -1 and x%0 = x; `max`/`min` ignore a NaN operand; shifts by a negative
  amount or >= the width give 0 (`shl`, unsigned `shr`) or the sign fill (signed `shr`).
  `dt` is the operands' dtype, except for `cast`/`bitcast`, where it is the result's and
  `attrs["from"]` the operand's (`cmp` takes `attrs["pred"]`; `select` the condition first).
* `dt` None: `values` are Python numbers and so is the result — the language's constant expressions
  (docs/language.md): integers are unbounded, floats are float64 (`math`), `div` truncates integers
  toward zero (C), `rem` matches it (`math.fmod` for floats); errors (division by zero, a domain
  error, overflow) raise FoldError.

`to_value(v, dt)` turns a Python number (an attribute) into a working value; `py_value(x, dt)` back.
"""
from __future__ import annotations

import math

import numpy as np

from . import numerics
from .dtypes import DType

__all__ = ["fold", "FoldError", "working_dtype", "round_float", "wrap_int", "fix", "convert", "to_value",
           "py_value", "BINARY_IMPL", "UNARY_FLOAT", "CMP", "codes", "from_codes", "c_div", "c_rem"]


class FoldError(ArithmeticError):
    """A Python-number constant expression has no value (division by zero, a domain error, ...);
    `detail` is the underlying reason."""

    def __init__(self, msg: str, detail: str | None = None):
        super().__init__(msg)
        self.detail = detail or msg


def working_dtype(dt: DType) -> np.dtype:
    """The NumPy dtype that holds every value of `dt` exactly: float32 for floats of up to 32 bits,
    float64 for f64, uint64 for u64, int64 for every other integer type and bool (i1)."""
    if dt.is_float:
        return np.dtype(np.float64 if dt.bits > 32 else np.float32)
    if dt.kind == "uint" and dt.bits == 64:
        return np.dtype(np.uint64)
    return np.dtype(np.int64)


# ================================================================================= rounding / wrapping
def round_float(x, dt: DType) -> np.ndarray:
    """Round float results (float32 or float64 arrays) to dtype `dt`, as its working array."""
    x = np.asarray(x)
    n = dt.name
    if n == "f64":
        return x.astype(np.float64)
    if n == "f32":
        return x.astype(np.float32)
    if n == "f16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float32)    # NumPy narrows with round-half-even
    if n == "bf16" and x.dtype == np.float32:
        return _bf16_from_f32(x)
    return numerics.quantize(x, dt).astype(np.float32)


def _bf16_from_f32(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bf16 (ties to even, overflow to inf, NaN kept), as float32: a fast path
    equal to numerics.quantize(x, bf16) for float32 input (tested)."""
    x = np.array(x, np.float32, order="C")
    u = x.view(np.uint32)
    with np.errstate(over="ignore"):
        r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return np.where(np.isnan(x), x, r.view(np.float32))


def wrap_int(x, dt: DType) -> np.ndarray:
    """Wrap integer results (int64/uint64) to dtype `dt`'s width, two's complement."""
    x = np.asarray(x)
    b = dt.bits
    if dt.kind == "uint" and b == 64:
        return x.astype(np.uint64)
    x = x.astype(np.int64)
    if b == 64:
        return x
    mask = np.int64((1 << b) - 1)
    if dt.kind in ("uint", "bool"):
        return x & mask
    half = np.int64(1 << (b - 1))
    return ((x + half) & mask) - half


def fix(x, dt: DType) -> np.ndarray:
    """The result of arithmetic in dtype `dt`: rounded (floats) or wrapped (integers)."""
    return round_float(x, dt) if dt.is_float else wrap_int(x, dt)


def convert(x, dt: DType) -> np.ndarray:
    """Value conversion to `dt` (the `cast` op): bit-exact, as `numerics.quantize`."""
    x = np.asarray(x)
    if dt.is_float and x.dtype.kind == "f" and dt.name in ("f32", "f64", "f16"):
        return round_float(x, dt)
    return numerics.quantize(x, dt).astype(working_dtype(dt))


def to_value(v, dt: DType) -> np.ndarray:
    """A Python/NumPy number as a working value of dt (floats rounded, ints wrapped, bool != 0)."""
    key = (type(v), repr(v), dt)              # repr tells -0.0 from 0.0 (they hash alike)
    try:
        return _CONSTS[key]
    except KeyError:
        pass
    except TypeError:                         # unhashable
        return _to_value(v, dt)
    r = np.array(_to_value(v, dt))
    r.flags.writeable = False
    if len(_CONSTS) < 65536:
        _CONSTS[key] = r
    return r


_CONSTS: dict = {}


def _to_value(v, dt: DType) -> np.ndarray:
    if dt.kind == "bool":
        return np.asarray(1 if v else 0, np.int64)
    if dt.is_float:
        return round_float(np.asarray(float(v), np.float64), dt)
    if isinstance(v, (float, np.floating)):
        return convert(np.asarray(float(v)), dt)
    v = int(v)
    m = 1 << dt.bits
    v %= m
    if dt.kind == "int" and v >= m >> 1:
        v -= m
    return np.asarray(v, working_dtype(dt))


def py_value(x, dt: DType):
    """A 0-d working value as a Python number (float for floats, int for integers and i1)."""
    x = np.asarray(x)
    return float(x) if dt.is_float else int(x)


# ================================================================================= typed kernels
def _f(x, dt):
    """Operand as float32 (or float64 for f64) for float arithmetic."""
    return np.asarray(x, np.float64 if dt.bits == 64 else np.float32)


def _idiv(a, b, dt):
    if dt.kind == "uint" and dt.bits == 64:
        z = b == 0
        q = a // np.where(z, np.uint64(1), b)
        return np.where(z, np.uint64(0xFFFFFFFFFFFFFFFF), q)
    z = b == 0
    bs = np.where(z, 1, b)
    q = a // bs
    q = q + ((a % bs != 0) & ((a < 0) != (bs < 0)))
    return wrap_int(np.where(z, -1, q), dt)


def _irem(a, b, dt):
    if dt.kind == "uint" and dt.bits == 64:
        z = b == 0
        return np.where(z, a, a % np.where(z, np.uint64(1), b))
    z = b == 0
    bs = np.where(z, 1, b)
    r = np.fmod(a, bs)                        # integer fmod: sign of the dividend (C)
    return wrap_int(np.where(z, a, r), dt)


def _shift(a, b, dt, left):
    bits = dt.bits
    if dt.kind == "uint" and bits == 64:
        a, s = np.asarray(a, np.uint64), np.asarray(b, np.uint64)
        big = s >= np.uint64(64)
        ss = np.where(big, np.uint64(0), s)
        r = (a << ss) if left else (a >> ss)
        return np.where(big, np.uint64(0), r)
    s = np.asarray(b, np.int64)
    if dt.kind != "int":                      # unsigned amounts: reinterpret as unsigned of the width
        s = np.where(s < 0, bits, s)
    big = (s < 0) | (s >= bits)
    ss = np.where(big, 0, s)
    if left:
        return wrap_int(np.where(big, 0, np.left_shift(a, ss)), dt)
    if dt.kind == "int":
        return wrap_int(np.right_shift(a, np.where(big, bits - 1, ss)), dt)
    return wrap_int(np.where(big, 0, np.right_shift(a, ss)), dt)


def _float_or_int(ffn, ifn):
    def k(a, b, dt):
        if dt.is_float:
            return round_float(ffn(_f(a, dt), _f(b, dt)), dt)
        return ifn(a, b, dt)
    return k


def _int_only(fn):
    return lambda a, b, dt: wrap_int(fn(a, b), dt)


def _float_only(fn):
    return lambda a, b, dt: round_float(fn(_f(a, dt), _f(b, dt)), dt)


BINARY_IMPL = {
    "add": _float_or_int(np.add, lambda a, b, dt: wrap_int(a + b, dt)),
    "sub": _float_or_int(np.subtract, lambda a, b, dt: wrap_int(a - b, dt)),
    "mul": _float_or_int(np.multiply, lambda a, b, dt: wrap_int(a * b, dt)),
    "div": _float_or_int(np.divide, _idiv),
    "rem": _float_or_int(np.fmod, _irem),
    "max": _float_or_int(lambda a, b: _fmax(a, b), lambda a, b, dt: np.maximum(a, b)),
    "min": _float_or_int(lambda a, b: _fmin(a, b), lambda a, b, dt: np.minimum(a, b)),
    "pow": _float_only(np.power),
    "atan2": _float_only(np.arctan2),
    "and": _int_only(np.bitwise_and),
    "or": _int_only(np.bitwise_or),
    "xor": _int_only(np.bitwise_xor),
    "shl": lambda a, b, dt: _shift(a, b, dt, True),
    "shr": lambda a, b, dt: _shift(a, b, dt, False),
}
"""Binary kernels on working values: `BINARY_IMPL[name](a, b, dt)` (also used by `atomic`)."""

_erf = np.frompyfunc(math.erf, 1, 1)


def _erf_impl(x):
    return np.asarray(_erf(np.asarray(x, np.float64)), np.float64)   # scalars come back as Python floats


def _sigmoid(x):
    # e = exp(-|x|): 1/(1+e) for x >= 0, e/(1+e) below; 1/(1+exp(-x)) would give 1/inf = 0 for
    # x < -88.7 in float32, where the true value is still a (subnormal) float32
    one = x.dtype.type(1)
    e = np.exp(-np.abs(x))
    s = one / (one + e)
    return np.where(x >= 0, s, e * s)


def _fmax(a, b):
    """IEEE 754-2019 maximumNumber: NaN ignored; -0 < +0, so max(-0, +0) = +0 in either order and
    max(-0, -0) = -0 (np.fmax keeps the first of two equal operands)."""
    r = np.fmax(a, b)
    z = (a == b) & (r == 0)
    return np.where(z, np.where(np.signbit(a) & np.signbit(b), -np.zeros_like(r), np.zeros_like(r)), r)


def _fmin(a, b):
    r = np.fmin(a, b)
    z = (a == b) & (r == 0)
    return np.where(z, np.where(np.signbit(a) | np.signbit(b), -np.zeros_like(r), np.zeros_like(r)), r)


def _rsqrt(x):
    return x.dtype.type(1) / np.sqrt(x)


UNARY_FLOAT = {"exp": np.exp, "exp2": np.exp2, "log": np.log, "log2": np.log2, "sqrt": np.sqrt,
               "rsqrt": _rsqrt, "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "erf": _erf_impl,
               "sigmoid": _sigmoid, "floor": np.floor, "ceil": np.ceil, "round": np.rint}


TINY_F32 = 2.0 ** -126          # f32's smallest normal: exp2(..., ftz) flushes results below it to +0


def _unary(name, x, dt, attrs=None):
    if name in UNARY_FLOAT:
        r = UNARY_FLOAT[name](_f(x, dt))
        if name == "exp2" and (attrs or {}).get("ftz"):
            r = np.where(np.abs(r) < TINY_F32, np.zeros_like(r), r)
        return round_float(r, dt)
    if name == "neg":
        return round_float(-_f(x, dt), dt) if dt.is_float else wrap_int(-np.asarray(x), dt)
    if name == "abs":
        if dt.is_float:
            return round_float(np.abs(_f(x, dt)), dt)
        return wrap_int(np.abs(x), dt) if dt.kind == "int" else np.asarray(x)
    if name == "not":
        return wrap_int(~np.asarray(x), dt)
    raise KeyError(name)


CMP = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
       "ge": np.greater_equal}


def codes(x, dt: DType) -> np.ndarray:
    """Codes of working values (f32/f64 by a plain view, keeping NaN payloads)."""
    x = np.asarray(x)
    if dt.name == "f32":
        return np.array(x, np.float32, order="C").view(np.uint32)
    if dt.name == "f64":
        return np.array(x, np.float64, order="C").view(np.uint64)
    return numerics.encode(x, dt)


def from_codes(c, dt: DType) -> np.ndarray:
    c = np.asarray(c)
    if dt.name == "f32":
        return c.astype(np.uint32, order="C").view(np.float32)
    if dt.name == "f64":
        return c.astype(np.uint64, order="C").view(np.float64)
    return numerics.decode(c, dt).astype(working_dtype(dt))


def _bitcast(x, src: DType, dst: DType, shape=None) -> np.ndarray:
    """Reinterpret working values of src as dst: scalars keep the width; tiles (`shape` = the result
    shape) keep the bits of the last dim."""
    c = codes(x, src)
    if shape is None:
        return from_codes(c, dst)
    n = int(np.prod(shape))
    packed = numerics.pack(c.reshape(-1), src.bits)
    return from_codes(numerics.unpack(packed, dst.bits, n).reshape(shape), dst)


def fma_f32(a, b, c) -> np.ndarray:
    """float32 a * b + c rounded once (IEEE fma): the product is exact in float64 (24 + 24 bits), the
    sum is rounded to odd in float64 (TwoSum's error sets the last bit), and rounding that to float32
    is then the correctly rounded result (53 >= 24 + 2 bits)."""
    a, b, c = (np.asarray(v, np.float64) for v in (a, b, c))
    with np.errstate(all="ignore"):
        p = a * b
        s = p + c
        bb = s - p
        err = (p - (s - bb)) + (c - bb)
        u = np.ascontiguousarray(s).view(np.uint64)
        fix = np.isfinite(s) & (err != 0) & ((u & np.uint64(1)) == 0)
        away = (err > 0) == (s > 0)                      # the exact value lies beyond |s|
        u = np.where(fix, np.where(away, u + np.uint64(1), u - np.uint64(1)), u)
        return u.view(np.float64).astype(np.float32)


def fma_f64(a, b, c) -> np.ndarray:
    """float64 a * b + c rounded once, element by element in exact rationals (specials by IEEE)."""
    from fractions import Fraction

    def one(x, y, z):
        x, y, z = float(x), float(y), float(z)
        if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(z)):
            return x * y + z                            # inf/NaN: no rounding question
        r = Fraction(x) * Fraction(y) + Fraction(z)
        if r == 0:
            return (x * y) + z                           # the sign of an exact zero, as IEEE gives it
        try:
            return float(r)                              # Fraction -> float rounds to nearest even
        except OverflowError:                            # beyond float64: rounds to the infinity
            return math.inf if r > 0 else -math.inf
    a, b, c = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (a, b, c)))
    return np.vectorize(one, otypes=[np.float64])(a, b, c)


def _fold_typed(name, dt: DType, values, attrs):
    if name == "fma":
        a, b, c = (_f(v, dt) for v in values)
        return round_float(fma_f64(a, b, c) if dt.bits == 64 else fma_f32(a, b, c), dt)
    if name in BINARY_IMPL:
        a, b = values
        return BINARY_IMPL[name](np.asarray(a), np.asarray(b), dt)
    if name in UNARY_FLOAT or name in ("neg", "abs", "not"):
        (a,) = values
        return _unary(name, np.asarray(a), dt, attrs)
    if name == "cmp":
        a, b = values
        return CMP[attrs["pred"]](a, b).astype(np.int64)
    if name == "select":
        c, a, b = values
        return np.where(np.asarray(c) != 0, a, b).astype(working_dtype(dt))
    if name == "cast":
        return convert(values[0], dt)
    if name == "bitcast":
        return _bitcast(values[0], attrs["from"], dt, attrs.get("shape"))
    raise KeyError(f"no folding rule for '{name}'")


# ================================================================================= Python numbers
def c_div(a: int, b: int) -> int:
    """Integer division truncating toward zero (C; the language's `//` on integers)."""
    if b == 0:
        raise FoldError("integer division by zero")
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def c_rem(a: int, b: int) -> int:
    """The remainder matching c_div (sign of the dividend)."""
    return a - b * c_div(a, b)


def _py_sigmoid(x):
    try:
        return 1.0 / (1.0 + math.exp(-x))
    except OverflowError:
        return 0.0


def _bitwise(fn):
    def k(a, b):
        if not (isinstance(a, int) and isinstance(b, int)):
            raise FoldError(f"bitwise operators need integers, got {a!r} and {b!r}")
        r = fn(a, b)
        return bool(r) if isinstance(a, bool) and isinstance(b, bool) else r
    return k


def _both_int(a, b):
    return isinstance(a, int) and isinstance(b, int)


PY_BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: c_div(a, b) if _both_int(a, b) else a / b,
    "rem": lambda a, b: c_rem(a, b) if _both_int(a, b) else math.fmod(a, b),
    "pow": lambda a, b: a ** b,
    "max": max,
    "min": min,
    "atan2": math.atan2,
    "and": _bitwise(lambda a, b: a & b),
    "or": _bitwise(lambda a, b: a | b),
    "xor": _bitwise(lambda a, b: a ^ b),
    "shl": _bitwise(lambda a, b: a << b),
    "shr": _bitwise(lambda a, b: a >> b),
}

PY_UNARY = {
    "neg": lambda x: -x, "abs": abs, "exp": math.exp, "exp2": lambda x: 2.0 ** x, "log": math.log,
    "log2": math.log2, "sqrt": math.sqrt, "rsqrt": lambda x: 1.0 / math.sqrt(x), "sin": math.sin,
    "cos": math.cos, "tanh": math.tanh, "erf": math.erf, "sigmoid": _py_sigmoid,
    "floor": lambda x: float(math.floor(x)), "ceil": lambda x: float(math.ceil(x)),
    "round": lambda x: float(round(x)), "not": lambda x: ~x,
}

PY_CMP = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
          "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b}


def _fold_python(name, values, attrs):
    try:
        if name in PY_BINARY:
            return PY_BINARY[name](*values)
        if name == "fma":
            return float(fma_f64(*values))
        if name in PY_UNARY:
            r = PY_UNARY[name](*values)
            return 0.0 if name == "exp2" and attrs.get("ftz") and abs(r) < TINY_F32 else r
        if name == "cmp":
            return PY_CMP[attrs["pred"]](*values)
        if name == "select":
            c, a, b = values
            return a if c else b
    except ZeroDivisionError:
        raise FoldError("division by zero in a constant expression", "division by zero") from None
    except ValueError as e:
        raise FoldError(f"cannot evaluate the constant expression: {e}", str(e)) from None
    except OverflowError as e:
        raise FoldError(f"constant overflow: {e}", str(e)) from None
    raise KeyError(f"no folding rule for '{name}' on Python numbers")


# ================================================================================= the entry point
def fold(name: str, dt: DType | None, *values, attrs=None):
    """Elementwise op `name` on constants (see the module doc): working values of `dt`, or Python
    numbers when `dt` is None."""
    attrs = attrs or {}
    if dt is None:
        return _fold_python(name, values, attrs)
    return _fold_typed(name, dt, values, attrs)
