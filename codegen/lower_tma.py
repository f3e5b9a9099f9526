"""Hopper's tensor-memory accelerator: async copies with `copy = "tma"` and the mbarriers they
complete on (NVIDIA sm_90a).

The protocol (built by passes/pipeline_loads.py, the copies chosen by passes/select_instructions.py;
one mbarrier per ring-buffer stage):

* `mbarrier_init(bars) {count = 1}`: thread 0 initializes every mbarrier of `bars` to one arrival
  per phase and fences the initialization (fence.mbarrier_init: the TMA unit sees it); every thread
  then fences its earlier shared-memory accesses against the async proxy (fence.proxy.async: the
  ring's memory may have held another tile, and TMA is about to write it), and the block
  synchronizes (bar.sync) before anyone uses the mbarriers.
* `async_copy(dst, T, i..., bar) {copy = "tma", box, swizzle}`: thread 0 -- the one thread that
  issues TMA copies -- first adds the tile's bytes to the phase's expected transaction count
  (`mbarrier.expect_tx`), then issues one `cp.async.bulk.tensor.<rank>d...mbarrier::complete_tx::bytes`
  per box (the boxes tile `dst` in row-major order of the box grid, one after another in shared
  memory; the tensor map, a grid-constant kernel parameter, says the box and the swizzle). Elements
  of a box outside the tensor are written as zeros by the hardware, and count as transferred bytes.
* `mbarrier_arrive(bar)`: thread 0 arrives (after its copies, in program order): the phase completes
  when that arrival has happened and every expected byte has landed. A stage with no TMA copy (the
  copies were skipped past the loop's end, or edited to cp.async) completes at the arrival.
* `mbarrier_wait(bar, phase)`: every thread spins on `mbarrier.try_wait.parity` until the phase of
  that parity has completed; its acquire makes the TMA writes visible to the thread's loads and to
  the wgmma it issues next.
* `mbarrier_inval(bars)`: bar.sync (every thread is past its last wait), then thread 0 invalidates
  them, so that their memory may be reused (shared_memory_planning places other tiles there).

Slot reuse (write-after-read) is not the mbarriers' job: the copy into a stage is issued after the
block barrier of an iteration that every thread reaches only when it is done reading that stage --
its ldmatrix/ld.shared reads, and (wgmma reading through descriptors) its wgmma group waited for.
"""
from __future__ import annotations

from math import prod

import llvmlite.ir as ir

from ..ir.shared_layouts import same_tile_layout, tma_tile_layout
from ..ir.types import TileType

from .table import lowers
from .llvm_util import i32

# the alignment a TMA destination needs: 128 bytes, and a whole swizzle atom for a swizzled box
# (the hardware swizzles absolute shared-memory address bits)
_DST_ALIGN = {0: 128, 32: 256, 64: 512, 128: 1024}


class TmaLowering:
    def _thread0(self):
        """i1: this thread is thread 0 (the block's TMA-issuing thread); computed once, in the entry."""
        lead = self.role_leader                 # a warp_specialize role's first thread (0 outside one)
        c = self._tbase_cache.get(("thread0", lead))
        if c is None:
            c = self._tbase_cache[("thread0", lead)] = self.eb.icmp_unsigned("==", self.tid, ir.Constant(i32, lead))
        return c

    def _mbarriers(self, v):
        """Shared-memory pointers of the mbarriers of a shared i64 tile (one per element)."""
        sv = self.get(v)
        t: TileType = v.type
        if t.dtype.name != "i64":
            raise self.error(f"mbarriers live in a shared tile of i64, got {t}")
        coords = [[k] + [0] * (t.rank - 1) for k in range(t.shape[0])]
        return [self.sptr(self._i(self.sview_addr(sv, c))) for c in coords]

    @lowers("mbarrier_init", family="nvidia")
    def op_mbarrier_init(self, op):
        self._need_tma_target()
        endb = self._guarded(self._thread0())
        for bar in self._mbarriers(op.bars):
            self.tgt.mbarrier_init(self.b, bar, int(op.attrs["count"]))
        self.tgt.fence_mbarrier_init(self.b)
        self._end_guard(endb)
        # every thread: its earlier shared-memory accesses (the ring's memory may have held another
        # tile) are ordered before the TMA writes that follow the barrier (generic -> async proxy)
        self.tgt.fence_proxy_async(self.b)
        self.tgt.barrier(self.b)

    @lowers("mbarrier_arrive", family="nvidia")
    def op_mbarrier_arrive(self, op):
        self._need_tma_target()
        bar, = self._mbarriers(op.bar)
        ncta = int(op.attrs.get("cluster", 1))
        if ncta > 1:
            # lane r < ncta of every warp arrives on this mbarrier of the cluster's block r (lower_cluster.py)
            if op.attrs.get("per") != "warp" or ncta != self.cluster_size():
                raise self.error(f"mbarrier_arrive {{cluster = {ncta}}} needs per = \"warp\" and the launch's cluster "
                                 f"of {ncta} blocks (it is {list(self.cluster_dims())})")
            lane = self.b.urem(self.tid, ir.Constant(i32, self.target.warp_size))
            endb = self._guarded(self.b.icmp_unsigned("<", lane, ir.Constant(i32, ncta)))
            self.tgt.mbarrier_arrive_remote(self.b, bar, lane)
            self._end_guard(endb)
            return
        if op.attrs.get("per") == "warp":             # lane 0 of every warp (the mbarrier counts warps)
            lane0 = self.b.icmp_unsigned("==", self.b.urem(self.tid, ir.Constant(i32, self.target.warp_size)),
                                         ir.Constant(i32, 0))
            endb = self._guarded(lane0)
        else:
            endb = self._guarded(self._thread0())
        self.tgt.mbarrier_arrive(self.b, bar)
        self._end_guard(endb)

    @lowers("mbarrier_wait", family="nvidia")
    def op_mbarrier_wait(self, op):
        self._need_tma_target()
        bar, = self._mbarriers(op.bar)
        b = self.b
        phase = self.as_i32(self.get(op.phase))
        spin = self.llfn.append_basic_block("mbar.wait")
        done = self.llfn.append_basic_block("mbar.done")
        b.branch(spin)
        b.position_at_end(spin)
        b.cbranch(self.tgt.mbarrier_try_wait_parity(b, bar, phase), done, spin)
        b.position_at_end(done)

    @lowers("mbarrier_inval", family="nvidia")
    def op_mbarrier_inval(self, op):
        self._need_tma_target()
        self.tgt.barrier(self.b)
        bars = self._mbarriers(op.bars)
        endb = self._guarded(self._thread0())
        for bar in bars:
            self.tgt.mbarrier_inval(self.b, bar)
        self._end_guard(endb)

    def _need_tma_target(self):
        if not self.target.has("tma"):
            raise self.error(f"mbarrier ops need a target with TMA (sm_90a); {self.target.name} has none")

    # ------------------------------------------------------------------ the copy
    def async_copy_tma(self, op):
        """`async_copy {copy = "tma"}`: thread 0 expects the tile's bytes on the copy's mbarrier and
        issues one bulk tensor copy per box (see the module docstring), after checking that the
        recorded box and swizzle are what the destination's shared layout says."""
        b = self.b
        if op.bar is None:
            raise self.error("a TMA copy needs an mbarrier operand to complete on")
        sv = self.get(op.dst)
        st: TileType = op.dst.type
        T = op.tensor
        dt = st.dtype
        shape = tuple(int(x) for x in st.shape)
        box = tuple(int(x) for x in op.attrs.get("box") or ())
        sw = int(op.attrs.get("swizzle", 0))
        if dt.bits not in (8, 16, 32, 64):
            raise self.error(f"TMA copies whole-byte elements of 1, 2, 4 or 8 bytes, not {dt}")
        if len(box) != len(shape) or any(d % x for d, x in zip(shape, box)) or T.type.rank > 5:
            raise self.error(f"box = {list(box)} does not tile the shared tile {shape} (or the tensor has more "
                             f"than 5 dims)")
        want = tma_tile_layout(shape, dt.bits, box, sw)
        if not same_tile_layout(str(sv.layout), str(want), shape):
            raise self.error(f"TMA writes boxes {list(box)} with swizzle {sw} as shared layout {want}, but the "
                             f"destination's layout is {sv.layout}; use copy = \"cp.async\" for this layout")
        eb = dt.bits // 8
        box_bytes = prod(box) * eb
        if (box != shape and box_bytes % 128) or sv.align < _DST_ALIGN[sw]:
            raise self.error(f"a TMA destination must start on a {_DST_ALIGN[sw]}-byte boundary (each box on a "
                             f"128-byte one): shared tile at alignment {sv.align}, boxes of {box_bytes} bytes")
        name = T.name or f"arg{T.index}"
        full_box = (1,) * (T.type.rank - len(box)) + box
        tmap = self.tensor_maps.get((name, full_box, sw))
        if tmap is None:
            raise self.error(f"internal: no tensor-map parameter for {name} box {list(full_box)} swizzle {sw}")
        idx = [self.as_i32(self.get(v)) for v in op.indices]
        bar, = self._mbarriers(op.bar)
        lead = T.type.rank - len(shape)
        grid = [d // x for d, x in zip(shape, box)]
        ncta = int(op.attrs.get("cluster", 1))       # multicast: this block issues boxes n % ncta == its rank
        nbox = prod(grid)
        if ncta > 1 and (nbox % ncta or ncta != self.cluster_size()):
            raise self.error(f"a TMA copy multicast over cluster = {ncta} needs the launch's cluster of {ncta} blocks "
                             f"(it is {list(self.cluster_dims())}) and a number of boxes ({nbox}) it divides")
        endb = self._guarded(self._thread0())
        self.tgt.mbarrier_expect_tx(b, bar, prod(shape) * eb)     # every block receives the whole tile
        for n in range(nbox):
            g, rest = [], n
            for d in reversed(grid):
                g.append(rest % d)
                rest //= d
            g.reverse()
            coords = list(idx[:lead])
            for k in range(len(shape)):
                c = idx[lead + k]
                coords.append(c if g[k] == 0 else b.add(c, ir.Constant(i32, g[k] * box[k])))
            dst = self.sptr(self._i(self._add(sv.off, n * box_bytes)))
            if ncta > 1:
                mine = self._guarded(b.icmp_unsigned("==", self.cluster_rank(), ir.Constant(i32, n % ncta)))
                self.tgt.tma_load(b, dst, bar, tmap, list(reversed(coords)), multicast=(1 << ncta) - 1)
                self._end_guard(mine)
            else:
                self.tgt.tma_load(b, dst, bar, tmap, list(reversed(coords)))
        self._end_guard(endb)
