"""divisibility: mark the vectorized global accesses whose vector path is exact for every launch of
this specialization, so that code generation emits only that path -- no run-time check, no
element-by-element copy of the same access beside it.

Code generation otherwise guards each access of `vec` elements per vector with a run-time check
(codegen/lower_memory.py `_fast_cond`): unit last stride, the tile's first index along the last dim,
the tensor's last size and its other strides multiples of `vec`, an aligned base. Two facts make
that check always true:
* the launch (tile/kernel.py) found the tensor `divisible` (function attribute `divisible = ["A",
  ...]`; ir/artifact.py `divisible_ok`): a 16-byte aligned base, a unit last stride, and its last
  size and other strides multiples of 16 bytes' worth of elements -- and a vector is at most 16
  bytes, so of `vec` elements too; the launchers refuse arguments without these facts;
* the op's index along the last dim is a known multiple of `vec`: this pass computes, for every
  integer scalar, a power of two known to divide it (`known_multiples`) -- constants, `x * C`,
  `x + y`, `min`/`max`/`select`, `rem`, shifts, the induction variable of `range(lo, hi, step)` from
  lo and step, a divisible tensor's last size (like Triton's AxisInfo divisibility, in one
  forward walk; values carried around a loop count as unknown).
Then the op gets `vec_exact = true` (load, store, gather, scatter, and the cp.async copies; a TMA
copy needs no check). Anything unknown keeps the run-time check. Per-vector bounds
predicates and explicit masks stay: a vector outside the tensor is skipped by its predicate.
"""
from __future__ import annotations

from ..ir.artifact import divisible_elems
from ..ir.core import Function, Module
from ..ir.types import ScalarType, TensorType

from .manager import register

__all__ = ["divisibility", "known_multiples", "mark_exact"]

# what "divisible by everything" (the constant 0) is capped at: more than any vector needs
_ALL = 1 << 20

# op -> (index of the tensor operand, index of the operand giving the first element's position along
# the last dim: None for "the last of the tensor's indices", which follow the tensor)
_ACCESSES = {"load": (0, None), "store": (0, None), "async_copy": (1, None),
             "gather": (0, 2), "scatter": (0, 2), "async_gather": (1, 3)}


def _low_bit(c: int) -> int:
    c = abs(int(c))
    return _ALL if c == 0 else min(c & -c, _ALL)


def _is_int(t) -> bool:
    return isinstance(t, ScalarType) and t.dtype.is_int and t.dtype.kind != "bool"


def known_multiples(fn: Function) -> dict:
    """id(integer scalar value) -> a power of two that divides it at every execution (1: nothing known)."""
    div = set(fn.attrs.get("divisible") or ())
    known: dict = {}

    def of(v) -> int:
        return known.get(id(v), 1)

    def tensor_name(v):
        return v.name or f"arg{v.index}"

    def visit(block):
        for op in block.ops:
            n, a = op.name, op.operands
            if n == "for":
                iv = op.regions[0].args[0]
                known[id(iv)] = min(of(op.lo), of(op.step))       # lo + i * step
            for r in op.regions:
                visit(r)
            if len(op.results) != 1 or not _is_int(op.results[0].type):
                if n == "if":
                    _join_yields(op, known)
                continue
            r = op.results[0]
            if n == "constant":
                d = _low_bit(op.attrs["value"]) if isinstance(op.attrs["value"], int) else 1
            elif n == "mul":
                d = min(of(a[0]) * of(a[1]), _ALL)
            elif n in ("add", "sub", "min", "max", "or", "xor", "rem"):
                d = min(of(a[0]), of(a[1]))                 # rem: x - q * y
            elif n == "and":
                d = max(of(a[0]), of(a[1]))                 # clears bits, never sets one
            elif n == "shl" and a[1].owner is not None and getattr(a[1].owner, "name", "") == "constant":
                d = min(of(a[0]) << max(0, min(int(a[1].owner.attrs["value"]), 20)), _ALL)
            elif n == "select" and isinstance(a[0].type, ScalarType):
                d = min(of(a[1]), of(a[2]))
            elif n == "cast" and _is_int(a[0].type):
                d = min(of(a[0]), 1 << (r.type.dtype.bits - 1))
            elif n == "dim" and isinstance(a[0].type, TensorType) and tensor_name(a[0]) in div \
                    and op.attrs["axis"] == a[0].type.rank - 1 and a[0].owner is fn.body:
                d = divisible_elems(a[0].type.dtype.bits)
            elif n == "if":
                _join_yields(op, known)
                continue
            else:
                d = 1
            if d > 1:
                known[id(r)] = d

    visit(fn.body)
    return known


def _join_yields(op, known) -> None:
    """An `if`'s results: what both of its regions' yields share."""
    ends = [r.ops[-1] if r.ops and r.ops[-1].name == "yield" else None for r in op.regions]
    if None in ends:
        return
    for k, res in enumerate(op.results):
        if _is_int(res.type):
            d = min(known.get(id(e.operands[k]), 1) for e in ends)
            if d > 1:
                known[id(res)] = d


def mark_exact(fn: Function) -> Function:
    """Write `vec_exact = true` on the accesses whose vector path this specialization makes exact
    (and take it off the others)."""
    div = set(fn.attrs.get("divisible") or ())
    known = known_multiples(fn) if div else {}
    params = {id(a) for a in fn.body.args}
    for op in fn.walk():
        where = _ACCESSES.get(op.name)
        if where is None:
            continue
        op.attrs.pop("vec_exact", None)
        vec = op.attrs.get("vec")
        if not div or not isinstance(vec, int) or vec <= 1:
            continue
        if op.name.startswith("async_") and op.attrs.get("copy") != "cp.async":
            continue        # TMA needs no check; an ld.global copy goes element by element anyway
        T = op.operands[where[0]]
        if id(T) not in params or (T.name or f"arg{T.index}") not in div:
            continue
        bits = T.type.dtype.bits
        if vec * bits > 128 or (bits < 8 and op.name == "async_copy"):
            continue        # wider than a 16-byte vector; packed sub-byte copies check on their own
        last = op.operands[where[0] + T.type.rank] if where[1] is None else op.operands[where[1]]
        if known.get(id(last), 1) % vec == 0:
            op.attrs["vec_exact"] = True
    return fn


@register("divisibility")
def divisibility(m: Module, target) -> Module:
    """Mark vectorized global accesses exact where the launch's `divisible` tensors and known index multiples allow."""
    for fn in m.functions:
        mark_exact(fn)
    return m
