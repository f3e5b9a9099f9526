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

from ..ir.folding import FoldError, fold, py_value, to_value
from ..ir.core import Block, Module, Operation, Value
from ..ir.dtypes import DType
from ..ir.types import ScalarType, TensorType, TileType
from .manager import register

_MAX_SWEEPS = 100


# ------------------------------------------------------------------------------------------- values
# Constants are held as Python numbers (exact values of their dtype); the arithmetic is ir/folding.fold,
# the interpreter's own, so folding agrees with it bit for bit. This module only decides WHAT to fold.
def _norm(v, dt: DType):
    """The value a `constant`/`full` attribute denotes in dtype dt, as a Python number (None if it is
    not a number): the interpreter's reading of it (`folding.to_value`)."""
    if not isinstance(v, (bool, int, float)):
        return None
    if isinstance(v, float) and not dt.is_float and not math.isfinite(v):
        return None
    try:
        with np.errstate(all="ignore"):
            r = py_value(to_value(v, dt), dt)
    except OverflowError:              # an int beyond float range
        return None
    if isinstance(r, float) and math.isnan(r):
        return None                    # a NaN's sign matters (NaN -> f4e2m1 gives the opposite-signed
        # zero) and a Python float does not keep it: leave NaN constants to run time
    return r


def _attr_value(v, dt: DType):
    """The attribute to store for value v of dtype dt (bool for i1)."""
    if dt.kind == "bool":
        return bool(v)
    if dt.is_float:
        return float(v)
    return int(v)


def _fits(v: int, dt: DType):
    return v if dt.min_value <= v <= dt.max_value else None


# Ops folded, and when: those whose result is the same bit for bit on every implementation.
_FLOAT_BINARY = ("add", "sub", "mul", "div", "max", "min")         # rem, pow, atan2: not folded
_INT_BINARY = ("add", "sub", "mul", "div", "rem", "max", "min", "and", "or", "xor", "shl", "shr")
_FLOAT_UNARY = ("neg", "abs", "floor", "ceil", "sqrt")           # exp, log, sin, round, ...: not folded
_INT_UNARY = ("neg", "abs", "not")


def _foldable(name: str, vals, dt: DType) -> bool:
    if dt.is_float:
        if name in ("max", "min"):       # NaN propagation and signed zeros differ between libraries
            a, b = vals
            return not (math.isnan(a) or math.isnan(b) or (a == 0 and b == 0))
        return name in (_FLOAT_BINARY if len(vals) == 2 else _FLOAT_UNARY)
    if name in ("div", "rem"):
        return vals[1] != 0
    if name in ("shl", "shr"):
        return 0 <= vals[1] < dt.bits
    return name in (_INT_BINARY if len(vals) == 2 else _INT_UNARY)


def _no_wrap(name: str, vals, r: int, dt: DType) -> bool:
    """Integer results are folded only when no wrap-around happened (the exact value fits)."""
    if name == "not":
        return True
    try:
        exact = fold(name, None, *vals)
    except FoldError:
        return False
    return exact == r


def _fold(op: Operation, consts: dict):
    """The folded value of op's single result, or None."""
    if len(op.results) != 1:
        return None
    try:
        vals = [consts[v] for v in op.operands]
    except KeyError:
        return None
    rt = op.results[0].type
    dt = rt.dtype
    n = op.name
    from ..ir.ops import BINARY, UNARY
    try:
        with np.errstate(all="ignore"):
            return _fold_values(op, n, vals, rt, dt, BINARY, UNARY)
    except (ArithmeticError, ValueError, KeyError):
        return None


def _fold_values(op, n, vals, rt, dt, BINARY, UNARY):
    if n in BINARY and len(vals) == 2 or n in UNARY and len(vals) == 1:
        if not _foldable(n, vals, dt):
            return None
        r = py_value(fold(n, dt, *(to_value(v, dt) for v in vals)), dt)
        if not dt.is_float and not _no_wrap(n, vals, r, dt):
            return None
    elif n == "cmp" and len(vals) == 2:
        src = op.a.type.dtype
        r = py_value(fold("cmp", src, *(to_value(v, src) for v in vals), attrs=op.attrs), dt)
    elif n in ("cast", "bitcast") and len(vals) == 1 and (n == "cast" or isinstance(rt, ScalarType)):
        src = op.x.type.dtype
        r = py_value(fold(n, dt, to_value(vals[0], src), attrs={"from": src}), dt)
    else:
        return None
    if isinstance(r, float) and math.isnan(r):
        return None                  # the sign of a NaN is not kept by the IR text: leave it to run time
    if not dt.is_float:
        r = _fits(int(r), dt)
    return r


# ------------------------------------------------------------------------------------------- rewriting
class _Canon:
    def __init__(self):
        # keyed by the Value objects themselves, not id(): a value dropped during the pass could be
        # freed and its id reused by a new one, which would then inherit a stale constant
        self.subst: dict[Value, Value] = {}     # old value -> replacement
        self.consts: dict[Value, object] = {}   # value -> Python number (constant / full results)
        self.changed = False

    def resolve(self, v: Value) -> Value:
        seen = 0
        while v in self.subst:
            v = self.subst[v]
            seen += 1
            if seen > 100000:            # pragma: no cover - a cycle would be a bug here
                raise RuntimeError("substitution cycle")
        return v

    def replace(self, old: Value, new: Value):
        if old is not new:
            self.subst[old] = new
            self.changed = True

    def record_const(self, op: Operation):
        if op.name in ("constant", "full") and len(op.results) == 1 and "value" in op.attrs:
            v = _norm(op.attrs["value"], op.results[0].type.dtype)
            if v is not None:
                self.consts[op.results[0]] = v

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
        if op.name == "if" and len(op.regions) == 2:
            c = self.consts.get(op.cond)
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
        if op.name == "for":
            lo, hi, step = (self.consts.get(v) for v in (op.lo, op.hi, op.step))
            if lo is None or hi is None or step is None or step <= 0 or lo < hi:
                return None
            if len(op.inits) != len(op.results):
                return None
            for r, v in zip(op.results, op.inits):
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
        if n == "select" and len(res) == 1:
            c, a, b = op.cond, op.a, op.b
            if a is b and a.type == res[0].type:
                self.replace(res[0], a)
                return True
            cv = self.consts.get(c)
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
        if n in ("add", "sub", "mul", "div") and len(res) == 1:
            a, b = op.a, op.b
            if self.identity(n, a, b, res[0].type):
                self.replace(res[0], a)
                return True
            if n in ("add", "mul") and self.identity(n, b, a, res[0].type):
                self.replace(res[0], b)
                return True
        # --- shapes
        if n == "convert_layout" and len(res) == 1 and op.x.type == res[0].type:
            self.replace(res[0], op.x)
            return True
        if n in ("broadcast", "reshape") and len(res) == 1:
            src, rt = op.x, res[0].type
            if src.type == rt:
                self.replace(res[0], src)
                return True
            if src.owner is not None and isinstance(src.owner, Operation):
                inner = src.owner
                if inner.name == n:
                    op.operands = [inner.x]   # broadcast(broadcast x) = broadcast x
                    self.changed = True
                    if op.x.type == rt:
                        self.replace(res[0], op.x)
                        return True
            cv = self.consts.get(op.x)
            if cv is not None and isinstance(rt, TileType) and rt.space == "reg":
                self.to_const(op, cv)
                return False
        if n == "splat" and len(res) == 1:
            cv = self.consts.get(op.x)
            if cv is not None and isinstance(res[0].type, TileType):
                self.to_const(op, cv)
                return False
        if n == "dim" and len(res) == 1:
            t = op.tensor.type
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
        kv = self.consts.get(k)
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
