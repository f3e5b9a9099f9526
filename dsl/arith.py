"""The value semantics of the language: constants, promotion, NumPy broadcasting, elementwise ops, casts.

Rules (docs/language.md): a Python number adopts the other operand's dtype (a float meeting an integer
gives f32; an int meeting a mask gives i32); two runtime values promote with `ir.dtypes.promote`;
shapes broadcast as in NumPy (scalars splat). `/` is true division (integers go to f32 first); integer
`//` and `%` truncate toward zero (C). Everything raises `SemanticError`; the front end adds the place.
"""
from __future__ import annotations

import math

from ..ir import folding
from ..ir.builder import Builder
from ..ir.core import Value
from ..ir.dtypes import DType, bool_, f32, i32, promote
from ..ir.types import ScalarType, TileType, Type
from .errors import SemanticError
from .values import describe, is_number

FLOAT_MATH = ("exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf", "sigmoid", "floor",
              "ceil", "round")


def default_dtype(x) -> DType:
    """The runtime type a Python number becomes on its own: bool -> i1, int -> i32, float -> f32."""
    if isinstance(x, bool):
        return bool_
    if isinstance(x, int):
        return i32
    if isinstance(x, float):
        return f32
    raise SemanticError(f"{describe(x)} is not a number")


def const_attr(x, dt: DType):
    """The Python value of constant x as an attribute of element type dt (checked to fit)."""
    if isinstance(x, Value) or not is_number(x):
        raise SemanticError(f"expected a constant number, got {describe(x)}")
    if dt.kind == "bool":
        if isinstance(x, float) or x not in (0, 1):
            raise SemanticError(f"the constant {x!r} is not a valid i1 (bool)")
        return bool(x)
    if dt.is_int:
        if isinstance(x, float):
            if not x.is_integer():
                raise SemanticError(f"the constant {x!r} is not an integer, but the type is {dt}")
            x = int(x)
        x = int(x)
        if not dt.min_value <= x <= dt.max_value:
            raise SemanticError(f"the constant {x} does not fit {dt} (range {dt.min_value}..{dt.max_value})")
        return x
    return float(x)


def broadcast_shapes(*shapes) -> tuple:
    """NumPy's broadcast of the shapes; SemanticError when they do not broadcast."""
    n = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(n):
        dims = {s[len(s) - n + i] for s in shapes if len(s) - n + i >= 0} - {1}
        if len(dims) > 1:
            raise SemanticError("shapes " + ", ".join(str(tuple(s)) for s in shapes) + " do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def shape_of(x) -> tuple:
    if isinstance(x, Value) and isinstance(x.type, TileType):
        return x.type.shape
    return ()


class Arith:
    """Emits the IR of the language's value semantics through a Builder."""

    def __init__(self, b: Builder):
        self.b = b

    # ---------------------------------------------------------------- constants
    def const(self, x, dt: DType | None = None, shape=()) -> Value:
        """Constant x as a scalar (shape ()) or a filled register tile of dt (default: from x)."""
        dt = dt or default_dtype(x)
        v = const_attr(x, dt)
        if shape:
            return self.b.value("full", (), TileType(dt, tuple(shape)), {"value": v})
        return self.b.value("constant", (), ScalarType(dt), {"value": v})

    def to_type(self, x, t: Type) -> Value:
        """x as a value of exactly type t: constants are materialized, values must already have it."""
        if isinstance(x, Value):
            if x.type == t:
                return x
            raise SemanticError(f"expected {t}, got {describe(x)}")
        if isinstance(t, ScalarType):
            return self.const(x, t.dtype)
        if isinstance(t, TileType) and t.space == "reg" and t.layout is None:
            return self.const(x, t.dtype, t.shape)
        raise SemanticError(f"cannot make {describe(x)} a {t}")

    def scalar(self, x, dt: DType | None = None) -> Value:
        """x as a runtime scalar (of dt if given: constants are made in dt, values are cast)."""
        if isinstance(x, Value):
            if not isinstance(x.type, ScalarType):
                raise SemanticError(f"expected a scalar, got {describe(x)}")
            return self.cast(x, dt) if dt else x
        return self.const(x, dt)

    def index(self, x, what="an index") -> Value:
        """x as an integer scalar (an index, an offset, a loop bound)."""
        if isinstance(x, bool) or (isinstance(x, Value) and isinstance(x.type, ScalarType) and x.type.dtype == bool_):
            raise SemanticError(f"{what} must be an integer, got {describe(x)}")
        if isinstance(x, int):
            return self.const(x, i32)
        if isinstance(x, Value) and isinstance(x.type, ScalarType) and x.type.dtype.is_int:
            return x
        raise SemanticError(f"{what} must be an integer scalar, got {describe(x)}")

    # ---------------------------------------------------------------- conversions
    def cast(self, v: Value, dt: DType) -> Value:
        if not isinstance(v, Value):
            raise SemanticError(f"expected a runtime value, got {describe(v)}")
        if not isinstance(v.type, (ScalarType, TileType)):
            raise SemanticError(f"cannot convert {describe(v)}")
        if v.type.dtype == dt:
            return v
        if isinstance(v.type, TileType) and v.type.space != "reg":
            raise SemanticError("load the shared tile into registers (.load()) before converting it")
        t = v.type.with_(dtype=dt) if isinstance(v.type, TileType) else ScalarType(dt)
        return self.b.value("cast", [v], t)

    def broadcast(self, v: Value, shape: tuple) -> Value:
        """A scalar or register tile broadcast to `shape` (NumPy rules)."""
        shape = tuple(shape)
        if isinstance(v.type, ScalarType):
            if not shape:
                return v
            return self.b.value("splat", [v], TileType(v.type.dtype, shape))
        if not isinstance(v.type, TileType) or v.type.space != "reg":
            raise SemanticError(f"cannot broadcast {describe(v)}")
        if v.type.shape == shape:
            return v
        if len(v.type.shape) > len(shape) or broadcast_shapes(v.type.shape, shape) != shape:
            raise SemanticError(f"cannot broadcast shape {v.type.shape} to {shape}")
        return self.b.value("broadcast", [v], v.type.with_(shape=shape))

    # ---------------------------------------------------------------- promotion
    def result_dtype(self, *xs) -> DType:
        """The common dtype of values and Python numbers (numbers adopt the values' dtype)."""
        vals = [x for x in xs if isinstance(x, Value)]
        nums = [x for x in xs if not isinstance(x, Value)]
        for x in vals:
            if not isinstance(x.type, (ScalarType, TileType)):
                raise SemanticError(f"{describe(x)} cannot be used in arithmetic")
            if isinstance(x.type, TileType) and x.type.space != "reg":
                raise SemanticError(f"{describe(x)} cannot be used in arithmetic: load it first (.load())")
        for x in nums:
            if not is_number(x):
                raise SemanticError(f"{describe(x)} cannot be used in arithmetic")
        if vals:
            dt = vals[0].type.dtype
            for x in vals[1:]:
                dt = promote(dt, x.type.dtype)
        else:
            dt = default_dtype(nums[0])
            for x in nums[1:]:
                dt = promote(dt, default_dtype(x))
            return dt
        if any(isinstance(x, float) for x in nums) and not dt.is_float:
            dt = f32
        if any(isinstance(x, int) and not isinstance(x, bool) for x in nums) and dt.kind == "bool":
            dt = i32
        return dt

    def unify(self, *xs, dtype: DType | None = None) -> list[Value]:
        """Promote to one dtype (or `dtype`) and broadcast to one shape; all become runtime values."""
        dt = dtype or self.result_dtype(*xs)
        shape = broadcast_shapes(*(shape_of(x) for x in xs))
        out = []
        for x in xs:
            if isinstance(x, Value):
                out.append(self.broadcast(self.cast(x, dt), shape))
            else:
                out.append(self.const(x, dt, shape))
        return out

    # ---------------------------------------------------------------- ops
    def binary(self, op: str, a, b) -> Value:
        """op is an IR binary op name, or 'truediv' / 'floordiv' for Python's / and //."""
        dt = self.result_dtype(a, b)
        if op == "truediv":
            if not dt.is_float:
                dt = f32
            op = "div"
        elif op == "floordiv":
            a, b = self.unify(a, b, dtype=dt)
            q = self.b.value("div", [a, b], a.type)
            return self.b.value("floor", [q], q.type) if dt.is_float else q
        if op in ("and", "or", "xor", "shl", "shr") and not dt.is_int:
            raise SemanticError(f"bitwise operators need integer or mask operands, got {describe(a)} and {describe(b)}")
        if op in ("pow", "atan2") and not dt.is_float:
            dt = f32
        a, b = self.unify(a, b, dtype=dt)
        return self.b.value(op, [a, b], a.type)

    def compare(self, pred: str, a, b) -> Value:
        a, b = self.unify(a, b)
        rt = a.type.with_(dtype=bool_) if isinstance(a.type, TileType) else ScalarType(bool_)
        return self.b.value("cmp", [a, b], rt, {"pred": pred})

    def fma(self, a, b, c) -> Value:
        dt = self.result_dtype(a, b, c)
        if not dt.is_float:
            dt = f32
        a, b, c = self.unify(a, b, c, dtype=dt)
        return self.b.value("fma", [a, b, c], a.type)

    def unary(self, op: str, a, attrs=None) -> Value:
        (a,) = self.unify(a)
        dt = a.type.dtype
        if op in FLOAT_MATH and not dt.is_float:
            a = self.cast(a, f32)
        if op == "not" and not dt.is_int:
            raise SemanticError(f"~ needs an integer or mask operand, got {describe(a)}")
        return self.b.value(op, [a], a.type, attrs or None)

    def truth(self, c, what="a condition") -> Value:
        """c as an i1 (an integer compares != 0)."""
        if isinstance(c, Value) and isinstance(c.type, (ScalarType, TileType)):
            dt = c.type.dtype
            if dt == bool_:
                return c
            if dt.is_int:
                return self.compare("ne", c, 0)
        raise SemanticError(f"{what} must be a boolean (i1) value, got {describe(c)}")

    def select(self, c, a, b) -> Value:
        if not isinstance(c, Value):
            raise SemanticError("internal: select on a constant condition")
        c = self.truth(c)
        a, b = self.unify(a, b)
        shape = broadcast_shapes(shape_of(c), shape_of(a))
        c = self.broadcast(c, shape)
        a, b = self.broadcast(a, shape), self.broadcast(b, shape)
        return self.b.value("select", [c, a, b], a.type)


# ---------------------------------------------------------------- constant folding
# Python-number expressions are evaluated by ir/folding.fold (dtype None: the language's semantics on
# unbounded ints and float64 floats), the same module the interpreter and canonicalize compute with.
def c_div(a: int, b: int) -> int:
    """Integer division truncating toward zero (the language's `//` on integers)."""
    try:
        return folding.c_div(a, b)
    except folding.FoldError as e:
        raise SemanticError(str(e)) from None


def c_rem(a: int, b: int) -> int:
    """The remainder matching c_div (sign of the dividend)."""
    return a - b * c_div(a, b)


def fold_binary(op: str, a, b):
    """Python-number folding of a binary op with the language's semantics (op: an IR binary op name,
    or 'truediv' / 'floordiv' for Python's / and //)."""
    try:
        if op == "truediv":
            both_int = isinstance(a, int) and isinstance(b, int)
            return folding.fold("div", None, float(a) if both_int else a, b)
        if op == "floordiv":
            q = folding.fold("div", None, a, b)
            return q if isinstance(a, int) and isinstance(b, int) else folding.fold("floor", None, q)
        if op not in folding.PY_BINARY:
            raise SemanticError(f"internal: cannot fold {op}")
        return folding.fold(op, None, a, b)
    except folding.FoldError as e:
        raise SemanticError(str(e)) from None


FOLD_UNARY = tuple(n for n in folding.PY_UNARY if n not in ("round", "not"))


def fold_fma(x, y, z):
    try:
        return folding.fold("fma", None, float(x), float(y), float(z))
    except folding.FoldError as e:
        raise SemanticError(f"cannot evaluate fma({x!r}, {y!r}, {z!r}) at compile time: {e.detail}") from None


def fold_unary(op: str, x, attrs=None):
    try:
        if op not in FOLD_UNARY:
            raise KeyError(op)
        return folding.fold(op, None, x, attrs=attrs)
    except folding.FoldError as e:
        raise SemanticError(f"cannot evaluate {op}({x!r}) at compile time: {e.detail}") from None
