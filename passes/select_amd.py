"""Instruction selection for AMD (CDNA): how MFMA operands reach registers. Called by
passes/select_instructions.py once a dot has its MFMA atom; kept apart from the NVIDIA choices.

`ds_read.k`: the MFMA dot reads its operand from LDS itself, one k step (the atom's k) at a time,
with ds_read_b64 / ds_read_b128 where the k elements of a lane are contiguous in the LDS layout.
Only the accumulator and one k step of A and B are then live in registers (layout inference counts
them so: `layout_inference.mfma_live_values`), which is what lets attention with head dim 128 use
MFMA for q.kT without spilling. The operand comes from
* a `shared_load` whose only use is the dot, with nothing that writes LDS in between;
* a `transpose` of such a shared_load (`ds_read.trans.k` on the shared_load: the dot reads the
  transposed view of the same bytes);
* a `convert_layout` staged through scratch LDS whose only users are dots (the planner keeps its
  scratch alive until the last of them: shared_memory_planning, LAZY_COPIES);
* a `convert_layout` of a shared_load (or of its transpose), each the only user of the one before:
  the conversion is folded away and the shared_load (and the transpose) take the fragment layout,
  so the dot reads the shared tile itself -- no register round trip through scratch.

`buffer.load` / `buffer.store` on a `load` / `store` of whole-byte elements: the access goes through
a buffer resource whose range check reads 0 (drops the write) for a masked lane's offset, so
masking needs no branch (codegen/lower_buffer.py; a uniform run-time check falls back to the
generic path where 32-bit offsets from the tile's origin would not be exact). Without the
attribute a load or store is a plain global access.
"""
from __future__ import annotations

from ..ir.core import Operation
from ..ir.ops import OPS

__all__ = ["select_mfma_copies", "select_global_copy"]


def _fold_shared_conversion(sel, conv: Operation, dot: Operation):
    """`shared_load s` (-> `transpose`) -> `convert_layout` into dot's MFMA fragment, each the only
    user of the one before, nothing writing LDS in between: the dot can read the fragment from s
    itself (through the transposed view). Retypes the shared_load (and the transpose) with the
    fragment layout and removes the conversion -- one LDS round trip less. Returns the copy name
    for the shared_load, or None (nothing changed)."""
    from ..ir.thread_maps import as_map
    src = conv.operands[0].owner if isinstance(conv.operands[0].owner, Operation) else None
    tr = None
    if src is not None and src.name == "transpose" and list(src.attrs["perm"]) == [1, 0]:
        tr, src = src, src.operands[0].owner if isinstance(src.operands[0].owner, Operation) else None
    if src is None or src.name != "shared_load" or src.parent is not dot.parent or conv.parent is not dot.parent:
        return None
    chain = [src] + ([tr] if tr else []) + [conv]
    for a, b in zip(chain, chain[1:]):
        if [u for u in sel.users.get(id(a.results[0]), [])] != [b]:
            return None
    if [u for u in sel.users.get(id(conv.results[0]), [])] != [dot]:
        return None
    ops = dot.parent.ops
    for o in ops[ops.index(src) + 1:ops.index(dot)]:
        if o in chain:
            continue
        if o.regions or (OPS[o.name].effects and o.name != "shared_load"):
            return None
    want = conv.results[0].type
    m = as_map(want.layout, sel.nthreads)
    src.results[0].type = src.results[0].type.with_(layout=(m.permute([1, 0]) if tr else m).to_tv())
    if tr:
        tr.results[0].type = want
    new = (tr or src).results[0]
    for i, x in enumerate(dot.operands):
        if x is conv.results[0]:
            dot.operands[i] = new
    sel.users.setdefault(id(new), []).append(dot)
    conv.parent.ops.remove(conv)
    return "ds_read.trans.k" if tr else "ds_read.k"


def _lazy_source(sel, v, dot: Operation):
    """(producer op, copy name) when dot operand `v` can be read from LDS by the dot, else None."""
    from .shared_memory_planning import scratch_bytes
    op = v.owner if isinstance(v.owner, Operation) else None
    if op is None or v.type.layout is None or v.type.dtype.bits not in (8, 16):
        return None
    if op.name == "convert_layout":
        folded = _fold_shared_conversion(sel, op, dot)
        if folded is not None:
            src = op.operands[0].owner
            return (src.operands[0].owner if folded == "ds_read.trans.k" else src), folded
    if op.name == "shared_load" and sel.deferrable(op, dot):
        return op, "ds_read.k"
    if op.name == "transpose" and list(op.attrs["perm"]) == [1, 0]:
        src = op.operands[0].owner if isinstance(op.operands[0].owner, Operation) else None
        if src is not None and src.name == "shared_load" and sel.deferrable(src, dot, through_transpose=True):
            return src, "ds_read.trans.k"
    if op.name == "convert_layout" and sel.only_dot_operand_users(op) and \
            scratch_bytes(op, sel.num_warps, sel.target.warp_size):       # staged, not a register permutation
        return op, "ds_read.k"
    return None


def select_mfma_copies(sel, op: Operation) -> None:
    """Record `copy = "ds_read.k"` / `"ds_read.trans.k"` on the producers of the MFMA dot `op`'s
    operands that the dot can read from LDS one k step at a time (`sel`: the selector, for its
    use-def helpers). Operands that cannot stay in LDS are read whole, as before."""
    if sel.target.copy_atom("ds_read.k") is None:
        return
    for v in op.operands[:2]:
        src = _lazy_source(sel, v, op)
        if src is not None:
            src[0].attrs["copy"] = src[1]


def select_global_copy(sel, op: Operation) -> None:
    """Record `copy = "buffer.load"` / `"buffer.store"` on a load / store the target can do through
    a buffer resource (whole-byte elements, a register tile with a layout)."""
    name = "buffer.load" if op.name == "load" else "buffer.store" if op.name == "store" else None
    op.attrs.pop("copy", None) if name else None
    if name is None or sel.target.copy_atom(name) is None:
        return
    v = op.results[0] if op.name == "load" else op.value
    t = v.type
    if getattr(t, "space", None) == "reg" and t.layout is not None and t.dtype.bits >= 8:
        op.attrs["copy"] = name
