"""The TMA store (NVIDIA sm_90a): `store {copy = "tma", box, swizzle, staging}` (chosen by
passes/select_tma_store.py), as CUTLASS's Hopper epilogue does it.

The tile's columns are cut into boxes of `box` (whole rows x one swizzle span); box j is staged in
shared buffer j % staging (`smem_scratch`, buffers one box apart, each in the tensor map's swizzled
layout: ir/shared_layouts.py `tma_staging_layout`). Per box:

1. before a buffer is written again: the issuing thread waits until its earlier bulk stores have
   read it (`cp.async.bulk.wait_group.read`: 0 for the first box -- the previous store's, e.g. the
   previous tile's in a persistent kernel, may still be reading -- and staging - 1 later), then a
   barrier over the threads that write (the role's named barrier inside a warp_specialize region);
2. every owner thread writes its registers of the box (a fixed set of registers: the selection
   checked it) with `st.shared` vectors into the swizzled buffer;
3. `fence.proxy.async.shared::cta` (the writes become visible to the async proxy TMA reads through),
   the barrier;
4. the issuing thread (the role's first) stores the box with `cp.async.bulk.tensor.2d.global.
   shared::cta.bulk_group` and commits the group. The hardware clips rows and columns outside the tensor.

The bulk stores stay in flight after the op: a persistent kernel's next tile runs its main loop
while they drain. Whoever issued them waits (`wait_group.read 0`) before the kernel returns, since
the staging memory must stay valid until they have read it.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..ir.shared_layouts import tma_staging_layout, tma_store_value_boxes

from .llvm_util import i32
from .values import SView

_DST_ALIGN = {0: 128, 32: 256, 64: 512, 128: 1024}     # a swizzled box's buffer: one whole swizzle atom


class TmaStoreLowering:
    def store_tma(self, op):
        if not self.target.has("tma"):
            raise self.error(f"a TMA store needs a target with TMA (sm_90a); {self.target.name} has none "
                             f"(use the store's vec path: remove copy = \"tma\")")
        T, idx, val, _ = self.store_operands(op)
        m, dt = val.map, val.dtype
        t = op.value.type
        R, C = (int(x) for x in t.shape)
        BR, W = (int(x) for x in op.attrs["box"])
        sw, S = int(op.attrs["swizzle"]), int(op.attrs["staging"])
        n = C // W
        if dt.bits not in (8, 16, 32) or BR != R or C % W or (S > 1 and n % S) or S > n:
            raise self.error(f"a TMA store of {t} with box [{BR}, {W}] and staging = {S}: the box must span "
                             f"the tile's rows, its columns divide the tile's, staging divide the boxes")
        boxes = tma_store_value_boxes(m, W)
        if boxes is None:
            raise self.error(f"the register layout of {t} gives some register a different column box of {W} "
                             f"per thread: a TMA store cannot stage it box by box (use the vec path)")
        if "smem_scratch" not in op.attrs:
            raise self.error("a TMA store needs its staging buffers: run the shared_memory_planning pass first")
        off = int(op.attrs["smem_scratch"])
        box_bytes = R * W * dt.bits // 8
        if off % _DST_ALIGN[sw] or box_bytes % 128:
            raise self.error(f"TMA store staging at byte {off} (boxes of {box_bytes} bytes) must start on a "
                             f"{_DST_ALIGN[sw]}-byte boundary, each box on a 128-byte one")
        name = op.tensor.name or f"arg{op.tensor.index}"
        full_box = (1,) * (op.tensor.type.rank - 2) + (BR, W)
        tmap = self.tensor_maps.get((name, full_box, sw))
        if tmap is None:
            raise self.error(f"internal: no tensor-map parameter for {name} box {list(full_box)} swizzle {sw}")
        sv = SView(ir.Constant(i32, off), (R, C), dt, tma_staging_layout((R, C), dt.bits, (BR, W), sw, S),
                   _DST_ALIGN[sw])
        vec = self._smem_vec(sv, m, dt)
        uniq = set(m.unique_values())
        per_box = [[] for _ in range(n)]
        for g, slots in self._groups_of(m, vec):
            if vec == 1 and g not in uniq:
                continue
            if len({boxes[s] for s in slots}) != 1:
                raise self.error("internal: a shared-memory vector of a TMA store spans two boxes")
            per_box[boxes[g]].append((g, slots))
        b = self.b
        lead, own = self._thread0(), self.owner(m)
        # TMA coordinates, innermost dim first: (column, row, leading indices...)
        outer = list(reversed(idx[:-2]))
        for j in range(n):
            if j == 0 or j >= S:
                endb = self._guarded(lead)
                self.tgt.bulk_wait_read(b, 0 if j == 0 else S - 1)
                self._end_guard(endb)
                self.tgt.barrier(b)
            endb = self._guarded(own)
            for g, slots in per_box[j]:
                self._sstore(self.sview_addr(sv, self.coords(m, g)), dt, [val.vals[s] for s in slots])
            self._end_guard(endb)
            self.tgt.fence_proxy_async(b)
            self.tgt.barrier(b)
            endb = self._guarded(lead)
            x = idx[-1] if j == 0 else b.add(idx[-1], ir.Constant(i32, j * W))
            src = self.sptr(ir.Constant(i32, off + (j % S) * box_bytes))
            self.tgt.tma_store(b, src, tmap, [x, idx[-2]] + outer)
            self.tgt.bulk_commit(b)
            self._end_guard(endb)
        self.tma_store_issuers().add(self.role_leader)

    def tma_store_issuers(self) -> set:
        """The threads (role leaders) that issued TMA stores so far."""
        s = self._tbase_cache.get("tma_store_issuers")
        if s is None:
            s = self._tbase_cache["tma_store_issuers"] = set()
        return s

    def finish_tma_stores(self):
        """Before the kernel returns: every thread that issued TMA stores waits until they have read
        their staging buffers (the block's shared memory must outlive them)."""
        for lead in sorted(self.tma_store_issuers()):
            endb = self._guarded(self.b.icmp_unsigned("==", self.tid, ir.Constant(i32, lead)))
            self.tgt.bulk_wait_read(self.b, 0)
            self._end_guard(endb)
