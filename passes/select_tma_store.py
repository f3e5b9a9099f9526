"""The TMA store of instruction selection (Hopper): `store {copy = "tma", box, swizzle, staging}`.

A store of a 2-D register tile that layout inference made coalesced through a shared-memory
conversion (`convert_layout` staged in scratch, the GEMM epilogue's) instead writes the tile from
the layout it already has (the accumulator's) into `staging` shared buffers of one box each, in the
tensor map's swizzled layout, and one thread stores each box with `cp.async.bulk.tensor` (codegen/
lower_tma_store.py). That saves the conversion's read-back, makes the global writes asynchronous
(the persistent kernel's store of tile t overlaps the main loop of tile t+1) and needs less shared
memory: two boxes of whole rows x 128 bytes (32 KB for 128 bf16 rows) instead of the whole tile
(64 KB at 128x256). Out-of-bounds rows and columns are clipped by the hardware, so no mask.

Where it is chosen: the target has TMA; a store without `mask=` of a 2-D tile of 8-, 16- or 32-bit
elements whose tensor a tensor map may describe (1..5 dims, not in `any_strides`); its value a
staged `convert_layout` used by nothing else; boxes of whole rows (`tma_store_box`) such that every
register of a thread falls in one column box whatever the thread (so each box is written by a
static set of registers). The conversion is then removed: the store reads its operand.
"""
from __future__ import annotations

from ..ir.core import Operation
from ..ir.shared_layouts import tma_store_box, tma_store_value_boxes
from ..ir.thread_maps import vector_elems
from ..ir.types import TileType

from .shared_memory_planning import scratch_bytes

__all__ = ["select_tma_store", "STAGING"]

STAGING = 2       # box buffers: box j+1 is written while the bulk store of box j reads its buffer
MAX_STAGING_BYTES = 32768     # beside a 4-stage 128x256 ring (192 KB of 227 KB); 256-row boxes: one buffer


def select_tma_store(sel, op: Operation) -> bool:
    """Make `store` op a TMA store if it can and pays (see the module docstring); True if it did."""
    target, fn = sel.target, sel.fn
    # (TILEC_DISABLE=tma.store takes the stores alone away, "tma" the loads and the stores)
    if op.name != "store" or not target.has("tma") or target.copy_atom("tma.store") is None or op.mask is not None \
            or op.attrs.get("copy"):
        return False
    v, T = op.value, op.tensor
    t = v.type
    if not isinstance(t, TileType) or t.space != "reg" or t.rank != 2 or t.dtype.bits not in (8, 16, 32):
        return False
    if not 2 <= T.type.rank <= 5 or (T.name or f"arg{T.index}") in (fn.attrs.get("any_strides") or ()):
        return False
    conv = v.owner if isinstance(v.owner, Operation) else None
    if conv is None or conv.name != "convert_layout" or len(sel.users.get(id(v), [])) != 1:
        return False
    if not scratch_bytes(conv, sel.num_warps, target.warp_size):      # a register permutation: nothing to save
        return False
    src = conv.operands[0]
    plan = tma_store_box(t.shape, t.dtype.bits)
    if plan is None or src.type.layout is None:
        return False
    box, sw = plan
    m = sel.map(src.type)
    if tma_store_value_boxes(m, box[1]) is None:
        return False
    nboxes = t.shape[1] // box[1]
    box_bytes = box[0] * box[1] * t.dtype.bits // 8
    staging = STAGING if nboxes % STAGING == 0 and STAGING * box_bytes <= MAX_STAGING_BYTES else 1
    op.operands[1 + T.type.rank] = src
    sel.users[id(src)] = [u for u in sel.users.get(id(src), []) if u is not conv] + [op]
    conv.parent.ops.remove(conv)
    op.attrs.update(copy="tma", box=list(box), swizzle=sw, staging=staging,
                    vec=vector_elems(m, t.dtype.bits))
    return True
