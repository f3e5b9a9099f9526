"""dot on Hopper (sm_90a): `wgmma.mma_async` with B read from shared memory through a 64-bit matrix
descriptor and A either from shared memory too (SS form) or from registers (RS form)
(/work/shared/notes/fragment-layouts.md §3, verified on an H100).

Used when the accumulator has the interleaved mma layout `thread_maps.mma_c(M, N, wm, wn)` with
whole warpgroups along M (wm % 4 == 0: warps 4g..4g+3 then hold 64-row blocks, exactly the wgmma
m64nN accumulator of warpgroup g), B is a shared tile read lazily (a shared_load or a conversion
staged through scratch, see lower_shared.LazyFrag) in one of the canonical wgmma layouts, and A is
either such a shared tile too, or a register tile in the mma.sync A layout `mma_a(M, K, wm, wn)` of
the same warp grid: per warp that is the wgmma A fragment of §3.2, so its registers feed the RS form
directly. The RS case is attention's `dot(p.astype(bf16), v)`: p comes from the previous wgmma's
accumulator, whose layout holds the same elements per thread as mma_a (wn == 1), so layout
inference's conversion is a register renaming; V's ring buffer has the panelled 128B-swizzle
layout, which is the MN-major canonical layout (trans-b = 1). Which canonical layout a shared tile
has -- K-major with a 128/64/32-byte swizzle, or MN-major with the 128-byte swizzle -- and the
descriptor's LBO/SBO are read off the layout by checking it element by element against the
canonical formulas, never assumed.

Per dot: (RS: pack every A register first); wgmma.fence; for every k16 step, every 64-row block
and n block of this warpgroup, one wgmma; commit; wait (0, or 1 for an SS dot whose accumulator
only flows to the next iteration of a pipelined loop). One base descriptor per operand; each
instruction adds its block's constant byte offset to it (so that LLVM does not hoist one 64-bit
descriptor per k step out of the loop). An accumulator of constant zeros is not materialized: the
first k step uses scale-d = 0. Shared-memory writes that feed wgmma are made visible to the async
proxy with fence.proxy.async (after cp.async waits and before the barrier of staged conversions).
"""
from __future__ import annotations

import re

import llvmlite.ir as ir

from ..ir.layout import ComposedLayout
from ..ir.ops import OPS
from ..ir.shared_layouts import wgmma_canonical

from .values import LazyFrag, RTile
from .llvm_util import i32, i64

class WgmmaLowering:
    def _wgmma_plan(self, op, atom, a, bt, acc, M, N, K):
        """(wm, wn, n_inst, A descriptor info or None (RS), B descriptor info) for the recorded atom
        `wgmma.m64n<n_inst>k16.<ss|rs>`; a located error when the operands cannot do it."""

        def bad(why):
            return self.error(f"atom = {atom!r} cannot be used for this dot: {why}")
        m = re.fullmatch(r"wgmma\.m64n(\d+)k(16|32)\.(ss|rs)", atom)
        if m is None:
            raise bad("expected wgmma.m64n<N>k16.ss / .rs (16-bit inputs) or wgmma.m64n<N>k32.ss (8-bit)")
        n_inst, k_inst, form = int(m.group(1)), int(m.group(2)), m.group(3)
        at = self.target.mma_atom(atom, a.dtype.name, acc.dtype.name)
        if at is None or a.dtype != bt.dtype:
            ks: dict = {}
            for x in self.target.mma_atoms:
                if x.name == "wgmma":
                    ks.setdefault(x.k, []).extend(x.pairs or [(i, c) for i in x.inputs for c in x.acc])
            what = "; ".join(f"k{k}: " + ", ".join(f"{i} -> {c}" for i, c in ps) for k, ps in ks.items())
            raise bad(f"it multiplies {a.dtype} into {acc.dtype}; {self.target.name}'s wgmma takes {what}")
        if at.k != k_inst:
            raise bad(f"{a.dtype} inputs take k = {at.k} per instruction, not {k_inst}")
        if not isinstance(bt, LazyFrag):
            raise bad("B must be read from shared memory (its copy must be smem.desc)")
        if form == "ss" and not isinstance(a, LazyFrag):
            raise bad("the SS form reads A from shared memory (its copy must be smem.desc); use .rs for A in registers")
        if form == "rs" and at.k_major_only:
            raise bad("the RS form (A from registers) is generated for 16-bit inputs only; use mma.m16n8k32")
        if form == "rs" and isinstance(a, LazyFrag):
            a = self.materialize(a)
        wm, wn = self._mma_grid(op, a, bt, acc)
        if wm % 4:
            raise bad(f"the warp grid {[wm, wn]} does not give whole warpgroups along M")
        n_wg = N // wn
        if n_inst not in at.n_range or n_wg % n_inst:
            raise bad(f"each warpgroup holds {n_wg} columns, which n = {n_inst} does not divide")
        bits = a.dtype.bits
        ib = wgmma_canonical(str(bt.sv.layout), (K, N), "b", bits)
        ia = None if form == "rs" else wgmma_canonical(str(a.sv.layout), (M, K), "a", bits)
        if ib is None or (form == "ss" and ia is None):
            raise bad(f"the shared layout {bt.sv.layout if ib is None else a.sv.layout} is not a canonical "
                      f"wgmma layout (128/64/32-byte swizzled, K- or MN-major)")
        if at.k_major_only and (ib[0] != "K" or (ia is not None and ia[0] != "K")):
            raise bad(f"{a.dtype} operands must be K-major in shared memory (the PTX ISA has no transpose "
                      f"for 8-bit wgmma): B's shared layout {bt.sv.layout} is {ib[0]}-major"
                      + ("" if ia is None else f", A's {a.sv.layout} is {ia[0]}-major"))
        need = {1: 1024, 2: 512, 3: 256}
        if (ia is not None and getattr(a.sv, "align", 0) < need[ia[1]]) or getattr(bt.sv, "align", 0) < need[ib[1]]:
            raise bad("an operand's shared buffer is not aligned to its swizzle period")
        return wm, wn, n_inst, ia, ib

    def _inflight_loop(self):
        """The `for` around the current dot when instruction selection marked it `inflight` (its
        wgmma group stays running into the next iteration; the loop's exit waits for it)."""
        op = self.current_op
        if not op.attrs.get("inflight"):
            return None
        loop = getattr(op.parent, "parent", None)
        if loop is None or getattr(loop, "name", None) != "for" or not loop.attrs.get("prefetch") or \
                loop.attrs.get("prefetch") != loop.attrs.get("pipelined", 0) - 2:
            raise self.error("inflight = 1 needs a dot directly in a loop pipelined with prefetch = stages - 2")
        return loop

    def _desc_hi(self, info):
        major, mode, lbo, sbo = info
        return (((lbo & 0x3FFFF) >> 4) << 16) | (((sbo & 0x3FFFF) >> 4) << 32) | (mode << 62)

    def _smem_base32(self):
        c = self._tbase_cache.get("smem_base32")
        if c is None:
            c = self.eb.ptrtoint(self.sptr(ir.Constant(i32, 0), self.eb), i32)
            self._tbase_cache["smem_base32"] = c
        return c

    def _desc(self, sv, byte_off, hi):
        """The 64-bit descriptor of the operand block starting `byte_off` (i32) bytes into sv."""
        b = self.b
        addr = b.add(self._smem_base32(), b.add(sv.off, byte_off) if not _zero(byte_off) else sv.off)
        lo = b.and_(b.lshr(addr, ir.Constant(i32, 4)), ir.Constant(i32, 0x3FFF))
        return b.or_(b.zext(lo, i64), ir.Constant(i64, hi))

    def _dot_wgmma(self, a, bt, acc, M, N, K, plan):
        wm, wn, n_inst, ia, ib = plan
        b = self.b
        gm = wm // 4
        vic = acc.map.value_index()
        out = list(acc.vals)
        dt = a.dtype.name
        eb = a.dtype.bits // 8                       # bytes per element
        kstep = 32 // eb                             # k of one instruction: 32 bytes
        # this warp's warpgroup: rows block gi (of gm), column block gj (of wn)
        warp = b.udiv(self.tid, ir.Constant(i32, self.target.warp_size))
        gi = b.udiv(b.urem(warp, ir.Constant(i32, wm)), ir.Constant(i32, 4))
        gj = b.udiv(warp, ir.Constant(i32, wm))
        rs = ia is None                              # A from registers
        lb = bt.sv.layout
        inner_b = lb.layout if isinstance(lb, ComposedLayout) else lb

        def lin(inner, coord):
            return eb * inner(coord)
        n_wg = N // wn
        hi_b = self._desc_hi(ib)
        blocks_m = M // (64 * gm)
        # byte offset of the warpgroup's first row (A) / column (B): linear in gi / gj
        db = lin(inner_b, (0, n_wg)) if wn > 1 else 0
        wb = b.mul(gj, ir.Constant(i32, db)) if wn > 1 else ir.Constant(i32, 0)
        if rs:
            def a_regs(j, k0):
                """The 4 packed A registers of m block j, k step k0."""
                try:
                    pairs = rs_fragment_slots(a.map, gm, j, k0)
                except KeyError as e:
                    raise self.error(f"internal: wgmma A coordinate {e.args[0]} not in {a.map}")
                return [self._pack2(a.vals[s0], a.vals[s1], a.dtype) for s0, s1 in pairs]
        else:
            la = a.sv.layout
            inner_a = la.layout if isinstance(la, ComposedLayout) else la
            hi_a = self._desc_hi(ia)
            da = lin(inner_a, (64, 0)) if gm > 1 else 0
            wa = b.mul(gi, ir.Constant(i32, da)) if gm > 1 else ir.Constant(i32, 0)
        # one base descriptor per operand; every k step / block adds its constant byte offset inside
        # the instruction's set-up (LLVM would otherwise hoist one 64-bit descriptor per k step and
        # block out of the loop, and keep them all live across it)
        base_b = self._desc(bt.sv, wb, hi_b)
        if not rs:
            base_a = self._desc(a.sv, wa, hi_a)
        # an accumulator of constant zeros (`zeros` feeding the dot): the first k step uses scale-d = 0,
        # so the registers need no zeroing (their inputs are undefined)
        zero = all(isinstance(x, ir.Constant) and not isinstance(x.constant, str) and x.constant == 0
                   for x in out)
        if zero:
            out = [ir.Constant(x.type, ir.Undefined) for x in out]
        tb = 1 if ib[0] == "MN" else 0
        if rs:
            # every A register is written before the fence (a register written between the fence and
            # a wgmma that reads it makes ptxas inject a warpgroup.arrive there, C7519)
            a_all = {(j, k0): a_regs(j, k0) for k0 in range(0, K, kstep) for j in range(blocks_m)}
        self.pingpong_before_issue(self.current_op)    # (this warpgroup's turn: lower_pingpong.py)
        self.tgt.wgmma_fence(b)
        for k0 in range(0, K, kstep):
            for j in range(blocks_m):
                if rs:
                    ar = a_all[(j, k0)]
                else:
                    a_off = lin(inner_a, (64 * gm * j, k0))
                for nb in range(n_wg // n_inst):
                    b_off = lin(inner_b, (k0, nb * n_inst))
                    slots = []
                    for r in range(n_inst // 2):
                        c = (64 * gm * j + 8 * ((r >> 1) & 1), nb * n_inst + 8 * (r >> 2) + (r & 1))
                        s = vic.get(c)
                        if s is None:
                            raise self.error(f"internal: wgmma accumulator coordinate {c} not in {acc.map}")
                        slots.append(s)
                    sd = 0 if zero and k0 == 0 else 1
                    if rs:
                        d = self.tgt.wgmma_rs(b, [out[s] for s in slots], ar, base_b, n_inst, dt, tb,
                                              b_off=b_off, scale_d=sd)
                    else:
                        d = self.tgt.wgmma(b, [out[s] for s in slots], base_a, base_b, n_inst, dt,
                                           1 if ia[0] == "MN" else 0, tb, a_off=a_off, b_off=b_off, scale_d=sd)
                    for s, x in zip(slots, d):
                        out[s] = x
        self.tgt.wgmma_commit(b)
        self.pingpong_after_issue(self.current_op)     # (the other warpgroup's turn)
        self._wgmma_groups += 1
        # (RS form: the A registers must stay untouched until the wait, so wait right here)
        loop = None if rs else self._inflight_loop()
        deferred = bool(self.current_op.attrs.get("deferred"))
        if deferred and (rs or loop is not None):
            raise self.error("deferred = 1 needs an SS wgmma (A in shared memory) that is not inflight")
        if deferred:
            # no wait here: wait_deferred_wgmma waits before the first op that uses the result
            res = self.current_op.results[0]
            self._deferred_wgmma[id(res)] = (res, self._wgmma_groups)
        elif loop is not None:
            # the accumulator only flows to the next iteration's wgmma: keep this group running
            # (the loop's prefetch distance leaves its operand stage untouched for one more iteration)
            self.tgt.wgmma_wait(b, 1)
            self._async_loops.add(id(loop))
        else:
            self.tgt.wgmma_wait(b, 0)
        if not deferred:
            self._retire_deferred(self._wgmma_groups)   # (the wait for this group covers the older ones)
        src = acc.map.dup_source()
        return [out[src[v]] for v in range(len(out))]

    def wait_deferred_wgmma(self, op):
        """Before `op`: wait for the deferred wgmma groups (attribute `deferred`) whose results it
        uses -- all of them before an op with regions or a terminator -- leaving the groups issued
        after them in flight; then pass their accumulators through an empty asm (CUTLASS's
        warpgroup_fence_operand), so that no use of those registers is scheduled above the wait."""
        pend = self._deferred_wgmma
        used = {id(v) for x in op.walk() for v in x.operands}
        everything = bool(op.regions) or OPS[op.name].terminator
        hit = [g for vid, (_, g) in pend.items() if everything or vid in used]
        if not hit:
            return
        newest = max(hit)
        self.tgt.wgmma_wait(self.b, self._wgmma_groups - newest)
        self._retire_deferred(newest)

    def _retire_deferred(self, newest: int):
        """The deferred groups up to `newest` have been waited for: fence their results' registers."""
        pend = self._deferred_wgmma
        for vid, (v, g) in list(pend.items()):
            if g <= newest:
                del pend[vid]
                t = self.get(v)
                uniq = {id(x): x for x in t.vals}
                fenced = dict(zip(uniq, self.tgt.fence_operands(self.b, list(uniq.values()))))
                self.set(v, RTile(t.map, [fenced[id(x)] for x in t.vals], t.dtype))


def rs_fragment_slots(amap, gm: int, j: int, k0: int) -> list:
    """Register slots (lo, hi) of the 4 b32 A registers of a wgmma in the RS form: m block j (rows
    64*gm*j .. of every warpgroup's share), k step k0. Register r holds the A-fragment elements 2r,
    2r+1 (fragment-layouts.md §3.2: row 16w + g + 8*(r & 1), col k0 + 2q + 8*(r >> 1), +1 for hi).
    Slots are looked up by thread 0's coordinates: in `mma_a` every thread's coordinate is its own
    offset plus the slot's, so the same slot holds each thread's own element."""
    vi = amap.value_index()
    out = []
    for r in range(4):
        row, col = 64 * gm * j + 8 * (r & 1), k0 + 8 * (r >> 1)
        pair = []
        for c in ((row, col), (row, col + 1)):
            s = vi.get(c)
            if s is None:
                raise KeyError(c)
            pair.append(s)
        out.append(tuple(pair))
    return out


def _zero(x) -> bool:
    return isinstance(x, ir.Constant) and x.constant == 0
