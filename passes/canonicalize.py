"""canonicalize: fold constants and remove trivial ops.

Rewrites, repeated to a fixed point:
* elementwise ops (arithmetic, bitwise, compare, select, cast, bitcast) whose operands are all
  `constant` (scalars) or `full` (tiles) become one `constant` / `full`. Folding is exact and
  agrees bit for bit with the interpreter: integer results are folded only when they fit the type
  (no wrap-around is assumed), float results are rounded once to the result type with
  `ir.numerics` (the oracle for every dtype), casts are `numerics.quantize`; ops whose last bit
  may differ between implementations (exp, log, sin, pow, round, ...) are not folded, nor are
  results that are NaN (the text form does not keep a NaN's sign).
* identities: integer x+0, x-0, x*1, x/1; float x*1.0, x/1.0, x-0.0, x+(-0.0); select(c, a, a) and
  select on a constant condition.
* `if` on a constant condition: the taken region is inlined; `for` with constant bounds that runs
  zero times: its results are its initial values.
* `dim` of a tensor dimension known at compile time becomes a constant.
* broadcast/reshape/convert_layout to the operand's own type are removed; broadcast(broadcast x) and
  reshape(reshape x) become one op; splat/broadcast/reshape of a constant become `full`.
Dead ops left behind are removed by `dce`.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import numerics
from ..ir.core import Block, Module, Operation, Value
from ..ir.dtypes import DType
from ..ir.types import ScalarType, TensorType, TileType
from .manager import register

_MAX_SWEEPS = 100


# ------------------------------------------------------------------------------------------- values
def _norm(v, dt: DType):
    """The value a `constant`/`full` attribute denotes in dtype dt, as a Python number (None if it is
    not a number). Mirrors the interpreter: i1 is `v != 0`, floats are rounded to dt, a float given
    for an integer dtype converts as `cast` does, integers wrap to the width."""
    if isinstance(v, bool):
        v = int(v)
    if not isinstance(v, (int, float)):
        return None
    if dt.kind == "bool":
        return 1 if v else 0
    if dt.is_float:
        try:
            return _round(float(v), dt)
        except OverflowError:          # an int beyond float range
            return None
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        return int(numerics.quantize(np.array([v], np.float64), dt)[0])
    m = 1 << dt.bits
    v %= m
    if dt.kind == "int" and v >= m >> 1:
        v -= m
    return v


def _attr_value(v, dt: DType):
    """The attribute to store for value v of dtype dt (bool for i1)."""
    if dt.kind == "bool":
        return bool(v)
    if dt.is_float:
        return float(v)
    return int(v)


def _round(x: float, dt: DType) -> float:
    """x (a float64 result) rounded once to dt."""
    return float(numerics.quantize(np.array([x], np.float64), dt)[0])


def _fits(v: int, dt: DType):
    return v if dt.min_value <= v <= dt.max_value else None


def _tdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _fold_binary(name: str, a, b, dt: DType):
    if dt.is_float:
        with np.errstate(all="ignore"):
            x, y = np.float64(a), np.float64(b)
            if name == "add":
                return _round(x + y, dt)
            if name == "sub":
                return _round(x - y, dt)
            if name == "mul":
                return _round(x * y, dt)
            if name == "div":
                return _round(x / y, dt)
        if name in ("max", "min"):
            if math.isnan(a) or math.isnan(b) or (a == 0 and b == 0):
                return None                  # NaN propagation and signed zeros differ between libraries
            return max(a, b) if name == "max" else min(a, b)
        return None                          # rem, pow, atan2: not folded
    a, b = int(a), int(b)
    if name == "add":
        return _fits(a + b, dt)
    if name == "sub":
        return _fits(a - b, dt)
    if name == "mul":
        return _fits(a * b, dt)
    if name == "div":
        return None if b == 0 else _fits(_tdiv(a, b), dt)
    if name == "rem":
        return None if b == 0 else _fits(a - b * _tdiv(a, b), dt)
    if name == "max":
        return max(a, b)
    if name == "min":
        return min(a, b)
    if name == "and":
        return _fits(a & b, dt)
    if name == "or":
        return _fits(a | b, dt)
    if name == "xor":
        return _fits(a ^ b, dt)
    if name in ("shl", "shr"):
        if not 0 <= b < dt.bits:
            return None
        return _fits(a << b if name == "shl" else a >> b, dt)
    return None


def _fold_unary(name: str, a, dt: DType):
    if dt.is_float:
        with np.errstate(all="ignore"):
            if name == "neg":
                return -a
            if name == "abs":
                return abs(a) if not math.isnan(a) else a
            if name == "floor":
                return float(np.floor(np.float64(a)))
            if name == "ceil":
                return float(np.ceil(np.float64(a)))
            if name == "sqrt":
                return _round(np.sqrt(np.float64(a)), dt)
        return None
    a = int(a)
    if name == "neg":
        return _fits(-a, dt)
    if name == "abs":
        return _fits(abs(a), dt)
    if name == "not":
        if dt.kind == "bool":
            return 1 - a
        if dt.kind == "uint":
            return a ^ ((1 << dt.bits) - 1)
        return ~a
    return None


_CMP = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
        "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b}


def _arr(v, dt: DType) -> np.ndarray:
    """v as a 1-element array of the NumPy type that holds dt's values exactly (1-element arrays,
    not NumPy scalars, so numerics' wrap-around arithmetic raises no overflow warnings)."""
    if dt.is_float:
        return np.array([v], np.float64)
    return np.array([v], np.uint64 if dt.kind == "uint" and dt.bits == 64 else np.int64)


def _convert(v, src: DType, dst: DType):
    """numerics.quantize of v (of src) to dst, as a Python number."""
    r = numerics.quantize(_arr(v, src), dst)[0]
    return float(r) if dst.is_float else int(r)


def _bitcast(v, src: DType, dst: DType):
    code = numerics.encode(_arr(v, src), src)
    r = numerics.decode(code, dst)[0]
    return float(r) if dst.is_float else int(r)


def _fold(op: Operation, consts: dict):
    """The folded value of op's single result, or None."""
    if len(op.results) != 1:
        return None
    try:
        vals = [consts[id(v)] for v in op.operands]
    except KeyError:
        return None
    rt = op.results[0].type
    dt = rt.dtype
    n = op.name
    from ..ir.ops import BINARY, UNARY
    if n in BINARY and len(vals) == 2:
        r = _fold_binary(n, vals[0], vals[1], dt)
    elif n in UNARY and len(vals) == 1:
        r = _fold_unary(n, vals[0], dt)
    elif n == "cmp" and len(vals) == 2:
        f = _CMP.get(op.attrs.get("pred"))
        r = None if f is None else int(f(vals[0], vals[1]))
    elif n == "cast" and len(vals) == 1:
        r = _convert(vals[0], op.operands[0].type.dtype, dt)
    elif n == "bitcast" and len(vals) == 1 and isinstance(rt, ScalarType):
        r = _bitcast(vals[0], op.operands[0].type.dtype, dt)
    else:
        return None
    if r is None:
        return None
    if isinstance(r, float) and math.isnan(r):
        return None                  # the sign of a NaN is not kept by the IR text: leave it to run time
    if not dt.is_float:
        r = _fits(int(r), dt)
    return r


# ------------------------------------------------------------------------------------------- rewriting
class _Canon:
    def __init__(self):
        self.subst: dict[int, Value] = {}     # id(old value) -> replacement
        self.consts: dict[int, object] = {}   # id(value) -> Python number (constant / full results)
        self.changed = False

    def resolve(self, v: Value) -> Value:
        seen = 0
        while id(v) in self.subst:
            v = self.subst[id(v)]
            seen += 1
            if seen > 100000:            # pragma: no cover - a cycle would be a bug here
                raise RuntimeError("substitution cycle")
        return v

    def replace(self, old: Value, new: Value):
        if old is not new:
            self.subst[id(old)] = new
            self.changed = True

    def record_const(self, op: Operation):
        if op.name in ("constant", "full") and len(op.results) == 1 and "value" in op.attrs:
            v = _norm(op.attrs["value"], op.results[0].type.dtype)
            if v is not None:
                self.consts[id(op.results[0])] = v

    def to_const(self, op: Operation, value):
        """Turn op into `constant` (scalar result) or `full` (tile result) holding value, in place."""
        rt = op.results[0].type
        op.name = "constant" if isinstance(rt, ScalarType) else "full"
        op.operands = []
        op.attrs = {"value": _attr_value(value, rt.dtype)}
        for r in op.regions:
            r.parent = None
        op.regions = []
        self.changed = True

    def block(self, block: Block):
        work = list(block.ops)
        work.reverse()                    # a stack: pop() gives program order
        out: list[Operation] = []
        while work:
            op = work.pop()
            op.operands = [self.resolve(v) for v in op.operands]
            inline = self.try_inline(op)
            if inline is not None:        # the op is gone; its replacement ops come next
                work.extend(reversed(inline))
                self.changed = True
                continue
            if self.rewrite(op):          # the op's results were all substituted: drop it
                self.changed = True
                continue
            for r in op.regions:
                self.block(r)
            self.record_const(op)
            out.append(op)
        for op in out:
            op.parent = block
        block.ops = out

    def try_inline(self, op: Operation):
        """if on a constant condition / a zero-trip for: the ops that replace it (or None)."""
        if op.name == "if" and len(op.regions) == 2 and len(op.operands) == 1:
            c = self.consts.get(id(op.operands[0]))
            if c is None:
                return None
            region = op.regions[0 if c else 1]
            if not region.ops or region.ops[-1].name != "yield" or region.args:
                return None
            y = region.ops[-1]
            if len(y.operands) != len(op.results):
                return None
            for r, v in zip(op.results, y.operands):
                self.replace(r, v)       # resolved lazily: body ops may be rewritten first
            return list(region.ops[:-1])
        if op.name == "for" and len(op.operands) >= 3:
            lo, hi, step = (self.consts.get(id(v)) for v in op.operands[:3])
            if lo is None or hi is None or step is None or step <= 0 or lo < hi:
                return None
            if len(op.operands) - 3 != len(op.results):
                return None
            for r, v in zip(op.results, op.operands[3:]):
                self.replace(r, v)
            return []
        return None

    def rewrite(self, op: Operation) -> bool:
        """Fold or simplify op in place; True if it was replaced entirely (to be dropped)."""
        n = op.name
        if n in ("constant", "full"):
            return False
        res = op.results
        # --- select on a constant condition, or with equal choices
        if n == "select" and len(op.operands) == 3 and len(res) == 1:
            c, a, b = op.operands
            if a is b and a.type == res[0].type:
                self.replace(res[0], a)
                return True
            cv = self.consts.get(id(c))
            if cv is not None:
                pick = a if cv else b
                if pick.type == res[0].type:
                    self.replace(res[0], pick)
                    return True
        # --- whole-op constant folding
        v = _fold(op, self.consts)
        if v is not None:
            self.to_const(op, v)
            return False
        # --- identities
        if n in ("add", "sub", "mul", "div") and len(op.operands) == 2 and len(res) == 1:
            a, b = op.operands
            if self.identity(n, a, b, res[0].type):
                self.replace(res[0], a)
                return True
            if n in ("add", "mul") and self.identity(n, b, a, res[0].type):
                self.replace(res[0], b)
                return True
        # --- shapes
        if n == "convert_layout" and len(op.operands) == 1 and len(res) == 1 and op.operands[0].type == res[0].type:
            self.replace(res[0], op.operands[0])
            return True
        if n in ("broadcast", "reshape") and len(op.operands) == 1 and len(res) == 1:
            src, rt = op.operands[0], res[0].type
            if src.type == rt:
                self.replace(res[0], src)
                return True
            if src.owner is not None and isinstance(src.owner, Operation):
                inner = src.owner
                if inner.name == n and len(inner.operands) == 1:
                    op.operands = [inner.operands[0]]   # broadcast(broadcast x) = broadcast x
                    self.changed = True
                    if op.operands[0].type == rt:
                        self.replace(res[0], op.operands[0])
                        return True
            cv = self.consts.get(id(op.operands[0]))
            if cv is not None and isinstance(rt, TileType) and rt.space == "reg":
                self.to_const(op, cv)
                return False
        if n == "splat" and len(op.operands) == 1 and len(res) == 1:
            cv = self.consts.get(id(op.operands[0]))
            if cv is not None and isinstance(res[0].type, TileType):
                self.to_const(op, cv)
                return False
        if n == "dim" and len(op.operands) == 1 and len(res) == 1:
            t = op.operands[0].type
            ax = op.attrs.get("axis")
            if isinstance(t, TensorType) and isinstance(ax, int) and 0 <= ax < t.rank and t.shape[ax] is not None \
                    and isinstance(res[0].type, ScalarType) and res[0].type.dtype.min_value <= t.shape[ax] <= res[0].type.dtype.max_value:
                self.to_const(op, t.shape[ax])
                return False
        return False

    def identity(self, n, x: Value, k: Value, rt) -> bool:
        """Is `x n k` == x for the constant k (and x already of the result's type)?"""
        if x.type != rt:
            return False
        kv = self.consts.get(id(k))
        if kv is None:
            return False
        dt = rt.dtype
        if dt.is_float:
            if n in ("mul", "div"):
                return kv == 1.0
            if n == "sub":
                return kv == 0.0 and math.copysign(1.0, kv) > 0
            if n == "add":
                return kv == 0.0 and math.copysign(1.0, kv) < 0
            return False
        if n in ("add", "sub"):
            return kv == 0
        return kv == 1 and dt.kind != "bool"


@register("canonicalize")
def canonicalize(m: Module) -> Module:
    """Fold constants (scalar and `full` arithmetic, compares, casts, constant `if`) and remove trivial broadcasts/reshapes."""
    for f in m.functions:
        for _ in range(_MAX_SWEEPS):
            c = _Canon()
            c.block(f.body)
            if not c.changed:
                break
    return m
