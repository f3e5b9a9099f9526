"""shared_memory_planning: place every shared tile and every op's scratch buffer in ONE dynamic
shared-memory buffer, reusing memory whose live ranges do not overlap.

* `alloc_shared` results live from their definition to their last use (through subviews, and
  through a lazily read shared_load -- `copy` in LAZY_COPIES -- to the dot that reads it); a use
  inside a loop that does not contain the allocation keeps it alive to the end of that loop.
* ops that move register-tile elements between threads (convert_layout that is not a register
  permutation, reshape, slice, concat, shape-changing bitcast, transpose/broadcast whose layouts do
  not line up, a reduce across warps, a dot on the FMA path, every cumsum) need scratch for the op itself;
  a TMA store's staging buffers (`store {copy = "tma"}`) live from the top-level op around it to the
  kernel's end (its bulk copies read them asynchronously).
  `scratch_bytes(op, num_warps)` is the one definition of those sizes; the code generators read
  the offsets back and use at most that much.
* placement: first fit by start of live range, 128-byte aligned. Results: attribute
  `smem_offset` on each alloc_shared, `smem_scratch` on each op with scratch, and function
  attribute `shared_bytes` (the dynamic shared memory a launch must request).
* a shared tile placed on memory an earlier tile or scratch used (or allocated inside a loop) gets
  a `barrier` right after its alloc_shared, so its first writes cannot race with readers of the
  old contents. (Scratch users synchronize themselves: they start with a barrier.)
"""
from __future__ import annotations

from ..ir.core import Block, Function, Module, Operation
from ..ir.types import TileType

from .manager import register
from ..ir.errors import TileError
from ..ir.shared_layouts import cumsum_scratch
from ..ir.targets import LAZY_COPIES, Target, get_target
from ..ir.thread_maps import as_map

__all__ = ["shared_memory_planning", "scratch_bytes", "cumsum_scratch", "plan_function", "ALIGN"]

ALIGN = 128


def _nbytes(shape, bits) -> int:
    """Bytes of a staged tile: sub-byte elements are staged one code per byte (so no byte is
    written by two threads)."""
    n = 1
    for s in shape:
        n *= s
    return n * max(8, bits) // 8


def _packed_bytes(shape, bits) -> int:
    n = 1
    for s in shape:
        n *= s
    return (n * bits + 7) // 8


def _map(t, nthreads):
    return as_map(t.layout, nthreads) if isinstance(t, TileType) and t.layout is not None else None


def scratch_bytes(op: Operation, num_warps: int = 4, warp_size: int = 32) -> int:
    """Bytes of scratch shared memory `op` needs (0 if none), given its layouts and, for a dot, the
    atom instruction selection chose (only the FMA path stages its operands)."""
    nthreads = warp_size * num_warps
    n = op.name
    if n == "convert_layout":
        a, r = op.operands[0].type, op.results[0].type
        am, rm = _map(a, nthreads), _map(r, nthreads)
        if am is None or rm is None or am.same(rm):
            return 0
        if (am.tcoords() == rm.tcoords()).all() and am.nthreads == rm.nthreads:
            vi = am.value_index()
            if all(c in vi for c in rm.vcoord_list()):
                return 0
        return _nbytes(r.shape, r.dtype.bits)
    if n == "transpose":
        a, r = op.operands[0].type, op.results[0].type
        am, rm = _map(a, nthreads), _map(r, nthreads)
        if am is not None and rm is not None and rm.same(am.permute(list(op.attrs["perm"]))):
            return 0
        return _nbytes(a.shape, a.dtype.bits)
    if n == "broadcast":
        a, r = op.operands[0].type, op.results[0].type
        am, rm = _map(a, nthreads), _map(r, nthreads)
        if am is not None and rm is not None and am.same(rm.broadcast_operand(a.shape)):
            return 0
        return _nbytes(a.shape, a.dtype.bits)
    if n == "reshape":
        a, r = op.operands[0].type, op.results[0].type
        am, rm = _map(a, nthreads), _map(r, nthreads)
        if am is not None and rm is not None:
            view = am.reshape(r.shape)
            if view is not None and view.same(rm):
                return 0
        return _nbytes(a.shape, a.dtype.bits)
    if n == "slice":
        a = op.operands[0].type
        return _nbytes(a.shape, a.dtype.bits)
    if n == "bitcast":
        a, r = op.operands[0].type, op.results[0].type
        if not isinstance(a, TileType) or a.shape == r.shape:
            return 0
        return max(_packed_bytes(a.shape, a.dtype.bits), _packed_bytes(r.shape, r.dtype.bits))
    if n == "concat":
        r = op.results[0].type
        return _nbytes(r.shape, r.dtype.bits)
    if n == "reduce":
        a = op.operands[0].type
        am = _map(a, nthreads)
        if am is None:
            return 0
        axis = int(op.attrs["axis"])
        W, div = 1, 1
        for s, cs in am.tmodes:
            if cs[axis]:
                # the part of this mode above the warp boundary
                lo, hi = div, div * s
                if hi > warp_size:
                    W *= hi // max(lo, warp_size)
            div *= s
        if W == 1:
            return 0
        out_n = 1
        for k, s in enumerate(a.shape):
            if k != axis:
                out_n *= s
        wide = a.dtype.bits == 64
        e = 8 if wide else 4
        arg = op.attrs["kind"] in ("argmax", "argmin")
        return out_n * W * (e + (4 if arg else 0))
    if n == "cumsum":
        a = op.operands[0].type
        return cumsum_scratch(a.shape, int(op.attrs["axis"]), a.dtype.bits)[1]
    if n == "store" and op.attrs.get("copy") == "tma":
        # the staging buffers of a TMA store: `staging` boxes (select_tma_store.py)
        box = op.attrs["box"]
        return int(op.attrs["staging"]) * box[0] * box[1] * op.value.type.dtype.bits // 8
    if n == "dot":
        if "atom" not in op.attrs:
            raise TileError(f"{op.where()}dot has no atom: run the select_instructions pass before "
                            f"shared_memory_planning")
        if op.attrs["atom"] != "fma":
            return 0
        a, b = op.operands[0].type, op.operands[1].type
        M, K = a.shape
        N = b.shape[1]
        eb = max(1, a.dtype.bits // 8)
        return (M * K + K * N) * eb
    return 0


def _align(x: int, a: int = ALIGN) -> int:
    return (x + a - 1) // a * a


class _Planner:
    def __init__(self, fn: Function, target: Target):
        self.fn = fn
        self.target = target
        self.num_warps = int(fn.attrs.get("num_warps", 4))
        self.index: dict[int, int] = {}          # id(op) -> position
        self.end: dict[int, int] = {}            # id(op) -> last position inside it
        self.parent_loops: dict[int, list] = {}  # id(op) -> enclosing loop ops (outermost first)
        self.pos = 0

    def number(self, block: Block, loops: list):
        for op in block.ops:
            self.index[id(op)] = self.pos
            self.parent_loops[id(op)] = loops
            self.pos += 1
            inner = loops + [op] if op.name in ("for", "while") else loops
            for r in op.regions:
                self.number(r, inner)
            self.end[id(op)] = self.pos - 1

    def run(self):
        self.number(self.fn.body, [])
        users: dict[int, list] = {}
        for op in self.fn.walk():
            for v in op.operands:
                users.setdefault(id(v), []).append(op)
        items = []          # (start, end, size, op, kind)
        for op in self.fn.walk():
            if op.name == "alloc_shared":
                t = op.results[0].type
                size = _packed_bytes(t.shape, t.dtype.bits)
                start = self.index[id(op)]
                end = start
                stack = [op.results[0]]
                lazy: dict = {}
                def_loops = self.parent_loops[id(op)]
                while stack:
                    v = stack.pop()
                    for u in users.get(id(v), []):
                        e = self.index[id(u)]
                        for lp in self.parent_loops[id(u)]:
                            if lp not in def_loops:
                                e = max(e, self.end[id(lp)])
                                break
                        end = max(end, e)
                        if u.name == "subview" or u.name == "shared_load" and u.attrs.get("copy") in LAZY_COPIES \
                                or u.name == "transpose" and lazy.get(id(v)):
                            # a lazily read shared_load is read by its dot (through a transpose): the
                            # tile lives until then
                            if u.name != "subview":
                                lazy[id(u.results[0])] = True
                            stack.append(u.results[0])
                items.append((start, end, size, op, "alloc"))
            else:
                s = scratch_bytes(op, self.num_warps, self.target.warp_size)
                if s:
                    i = self.index[id(op)]
                    end = i
                    if op.name == "store":
                        # a TMA store's bulk copies read the staging buffers after the op, until the
                        # next TMA store or the kernel's exit waits for them: nothing may reuse them
                        # from the outermost loop around the store (a persistent tile loop: the next
                        # tile's ring) to the end of the kernel
                        loops = self.parent_loops[id(op)]
                        i, end = (self.index[id(loops[0])] if loops else i), self.pos - 1
                    if op.attrs.get("copy") in LAZY_COPIES:
                        # the dot reads the fragments from this scratch, one k step at a time:
                        # keep it alive until the last dot that uses it
                        for u in users.get(id(op.results[0]), []):
                            e = self.index[id(u)]
                            for lp in self.parent_loops[id(u)]:
                                if lp not in self.parent_loops[id(op)]:
                                    e = max(e, self.end[id(lp)])
                                    break
                            end = max(end, e)
                    items.append((i, end, s, op, "scratch"))
                else:
                    op.attrs.pop("smem_scratch", None)
        placed = []          # (start, end, off, size)
        total = 0
        for start, end, size, op, kind in sorted(items, key=lambda x: (x[0], -x[2])):
            # 1024-byte alignment for tiles of 1 KB or more: swizzled layouts (and Hopper's wgmma,
            # which swizzles absolute address bits) need their tiles on swizzle-period boundaries
            al = 1024 if size >= 1024 else ALIGN
            size = _align(size)
            off = 0
            while True:
                clash = [p for p in placed if not (p[1] < start or end < p[0]) and
                         not (p[2] + p[3] <= off or off + size <= p[2])]
                if not clash:
                    break
                off = _align(max(p[2] + p[3] for p in clash), al)
            reused = any(p[1] < start and not (p[2] + p[3] <= off or off + size <= p[2]) for p in placed)
            placed.append((start, end, off, size))
            total = max(total, off + size)
            if kind == "alloc":
                op.attrs["smem_offset"] = off
                in_loop = bool(self.parent_loops[id(op)])
                if reused or in_loop:
                    self._barrier_after(op)
            else:
                op.attrs["smem_scratch"] = off
        self.fn.attrs["shared_bytes"] = total
        return total

    def _barrier_after(self, op: Operation):
        blk = op.parent
        i = blk.ops.index(op)
        if i + 1 < len(blk.ops) and blk.ops[i + 1].name == "barrier":
            return
        blk.insert(i + 1, Operation("barrier", [], [], loc=op.loc))


def plan_function(fn: Function, target: Target | None = None) -> int:
    """Plan one function; returns the dynamic shared memory size in bytes."""
    return _Planner(fn, get_target(target or fn.attrs.get("target") or "sm_90a")).run()


@register("shared_memory_planning")
def shared_memory_planning(m: Module, target: Target) -> Module:
    """Place shared tiles and per-op scratch in one dynamic shared buffer with liveness-based reuse."""
    for fn in m.functions:
        plan_function(fn, target)
    return m
