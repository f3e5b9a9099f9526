"""dce: dead code elimination.

An op is dead when none of its results is used and it has no effects: its OpDef says
`effects=False`, it is not a terminator, its name is known, and no op nested in its regions has
effects (a `for`/`if`/`while` whose body only computes is removed whole when its results are
unused). Removing an op frees its operands, so dead chains go in one backward sweep per block,
inner regions first; the sweep repeats until nothing changes.
"""
from __future__ import annotations

from ..ir.core import Block, Module, Operation
from ..ir.ops import OPS
from .manager import register


def has_effects(op: Operation) -> bool:
    """True if op (or any op nested in its regions) must stay: effects, terminators, unknown ops."""
    for o in op.walk():
        d = OPS.get(o.name)
        if d is None or d.effects or (d.terminator and o is op):
            return True
    return False


def _count_uses(block: Block, uses: dict):
    for op in block.walk():
        for v in op.operands:
            uses[id(v)] = uses.get(id(v), 0) + 1


def _release(op: Operation, uses: dict):
    for o in op.walk():
        for v in o.operands:
            uses[id(v)] -= 1


def _sweep(block: Block, uses: dict) -> bool:
    changed = False
    kept: list[Operation] = []
    for op in reversed(block.ops):
        for r in op.regions:                 # inner first: a loop's dead body ops go even if it stays
            changed |= _sweep(r, uses)
        if not any(uses.get(id(r), 0) for r in op.results) and not has_effects(op):
            _release(op, uses)
            op.parent = None
            changed = True
            continue
        kept.append(op)
    if changed:
        kept.reverse()
        block.ops = kept
    return changed


def dce_function(f) -> None:
    """Dead code elimination on one function (other passes call it to drop what they left unused)."""
    uses: dict[int, int] = {}
    _count_uses(f.body, uses)
    while _sweep(f.body, uses):
        pass


@register("dce")
def dce(m: Module) -> Module:
    """Remove ops without effects whose results are unused (also inside loop and branch bodies)."""
    for f in m.functions:
        dce_function(f)
    return m
