"""fold_dot_accumulator: `dot(a, b, zeros) + x` -> `dot(a, b, x)`.

The front end writes `acc = acc * alpha + tile.dot(p, v)` as a dot into fresh zeros followed by an
add; on a GPU that holds two accumulators in registers at once (64 registers per thread each for a
64x128 f32 tile on 4 warps). Accumulating into x directly is the same sum with one rounding fewer
(`dot` is acc + a @ b, exactly what the add computed, in the accumulator's type).

Applies when the dot's accumulator is a `full` of 0, the dot's only user is the add, and the add's
other operand has the accumulator's type; the new dot takes the add's place (so x is defined).
"""
from __future__ import annotations

from ..ir.core import Module, Operation

from .manager import register

__all__ = ["fold_dot_accumulator", "fold_function"]


def _is_zeros(v) -> bool:
    o = v.owner
    return isinstance(o, Operation) and o.name == "full" and o.attrs.get("value") in (0, 0.0, False)


def fold_function(fn) -> int:
    users: dict[int, list] = {}
    for o in fn.walk():
        for v in o.operands:
            users.setdefault(id(v), []).append(o)
    n = 0
    for dot in [o for o in fn.walk() if o.name == "dot"]:
        acc = dot.operands[2]
        if not _is_zeros(acc):
            continue
        r = dot.results[0]
        us = users.get(id(r), [])
        if len(us) != 1 or us[0].name != "add":
            continue
        add = us[0]
        if add.parent is not dot.parent:
            continue
        other = add.operands[1] if add.operands[0] is r else add.operands[0]
        if other is r or other.type != r.type or add.results[0].type != r.type:
            continue
        blk = add.parent
        new = Operation("dot", [dot.operands[0], dot.operands[1], other], [r.type], dict(dot.attrs), loc=dot.loc,
                        result_names=[add.results[0].name])
        blk.ops[blk.ops.index(add)] = new
        new.parent = blk
        blk.ops.remove(dot)
        old = add.results[0]
        for o in fn.walk():
            for i, v in enumerate(o.operands):
                if v is old:
                    o.operands[i] = new.results[0]
        n += 1
    return n


@register("fold_dot_accumulator")
def fold_dot_accumulator(m: Module) -> Module:
    """Accumulate `dot(a, b, 0) + x` directly into x (one accumulator in registers, not two)."""
    for fn in m.functions:
        fold_function(fn)
    return m
