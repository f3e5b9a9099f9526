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

from functools import lru_cache

import llvmlite.ir as ir

from tile.ir.layout import ComposedLayout
from tile.passes.thread_maps import mma_a, mma_c, warp_splits

from .llvm_util import i32, i64

_MODE = {128: 1, 64: 2, 32: 3}


def _swz(o: int, W: int) -> int:
    return o ^ (((o >> 7) & (W // 16 - 1)) << 4)


@lru_cache(maxsize=256)
def canonical_info(layout_str: str, shape: tuple, role: str, bits: int):
    """(major, mode, LBO, SBO) if the 2-D shared layout (text form) of operand `role` ('a': (M, K),
    'b': (K, N)) is a canonical wgmma layout for 16-bit elements; else None."""
    from tile.ir.layout import parse_layout
    if bits != 16:
        return None
    lay = parse_layout(layout_str)
    if not isinstance(lay, ComposedLayout):
        return None
    inner, sw = lay.layout, lay.swizzle
    if lay.offset or sw.base != 3 or sw.shift != 3 or sw.bits not in (1, 2, 3):
        return None
    W = {3: 128, 2: 64, 1: 32}[sw.bits]
    kdim = 1 if role == "a" else 0
    xdim = 1 - kdim
    R, C = shape
    X, K = shape[xdim], shape[kdim]

    def coord(x, k):
        return (x, k) if xdim == 0 else (k, x)

    def Lu(x, k):
        return inner(coord(x, k))

    def L(x, k):
        return lay(coord(x, k))
    if K % 16 or X % 64:
        return None
    # K-major: rows of W bytes along k, 8-row groups SBO apart, k panels anywhere
    E = W // 2
    try:
        sbo = 2 * Lu(8, 0)
        ok = True
        for x in range(X):
            for k in range(K):
                exp = 2 * Lu(0, k - k % E) + (x // 8) * sbo + _swz((x % 8) * W + (k % E) * 2, W)
                if 2 * L(x, k) != exp:
                    ok = False
                    break
            if not ok:
                break
        if ok and sbo % 16 == 0:
            return ("K", _MODE[W], 16, sbo)
    except Exception:
        pass
    if W != 128:
        return None
    # MN-major, 128-byte swizzle: 64-element panels along x (LBO apart), 8-deep k groups SBO apart
    try:
        lbo = 2 * Lu(64, 0) if X > 64 else 0
        sbo = 2 * Lu(0, 8)
        for x in range(X):
            for k in range(K):
                exp = (x // 64) * lbo + (k // 8) * sbo + _swz((k % 8) * 128 + (x % 64) * 2, 128)
                if 2 * L(x, k) != exp:
                    return None
        if lbo % 16 or sbo % 16:
            return None
        return ("MN", 1, lbo if lbo else 16, sbo)
    except Exception:
        return None


class WgmmaLowering:
    def _wgmma_plan(self, a, bt, acc, M, N, K):
        from .lower_shared import LazyFrag
        if not getattr(self.tgt, "has_wgmma", False) or self.options.get("wgmma") is False:
            return None
        if not isinstance(bt, LazyFrag):
            return None
        a_regs = not isinstance(a, LazyFrag)          # the RS form: A from this thread's registers
        if a.dtype.name not in ("bf16", "f16") or acc.dtype.name != "f32" or a.dtype != bt.dtype:
            return None
        grid = None
        for wm, wn in warp_splits(self.num_warps):
            if wm % 4:
                continue
            try:
                if acc.map.same(mma_c(M, N, wm, wn).for_threads(self.nthreads)):
                    grid = (wm, wn)
                    break
            except Exception:
                continue
        if grid is None:
            return None
        wm, wn = grid
        if a_regs:
            # per warp the wgmma A fragment is the m16n8k16 A fragment of its 16 rows (fragment-
            # layouts.md §3.2): A must hold exactly mma_a of this warp grid (warps along N: copies)
            try:
                if not a.map.same(mma_a(M, K, wm, wn).for_threads(self.nthreads)):
                    return None
            except Exception:
                return None
        n_wg = N // wn
        if n_wg % 8:
            return None
        n_inst = n_wg if n_wg <= 256 else (256 if n_wg % 256 == 0 else (128 if n_wg % 128 == 0 else 0))
        if not n_inst:
            return None
        ia = None if a_regs else canonical_info(str(a.sv.layout), (M, K), "a", 16)
        ib = canonical_info(str(bt.sv.layout), (K, N), "b", 16)
        if (ia is None and not a_regs) or ib is None:
            return None
        need = {1: 1024, 2: 512, 3: 256}
        if (not a_regs and getattr(a.sv, "align", 0) < need[ia[1]]) or getattr(bt.sv, "align", 0) < need[ib[1]]:
            return None
        return wm, wn, n_inst, ia, ib

    def _async_wgmma_loop(self):
        """The `for` whose body this dot is in, if the dot may stay in flight across iterations: the
        loop was pipelined with prefetch distance stages-2, the dot accumulates into the loop-carried
        value, and its result goes only to the yield (so nothing reads it before the next wgmma or the
        wait at the loop's exit)."""
        op = self.current_op
        blk = op.parent
        loop = getattr(blk, "parent", None)
        if loop is None or getattr(loop, "name", None) != "for":
            return None
        S, D = loop.attrs.get("pipelined"), loop.attrs.get("prefetch")
        if not S or D is None or D != S - 2:
            return None
        acc, res = op.operands[2], op.results[0]
        if acc.owner is not blk or acc not in blk.args:
            return None
        users = [o for o in blk.ops for v in o.operands if v is res]
        if len(users) != 1 or users[0].name != "yield":
            return None
        y = users[0]
        if [i for i, v in enumerate(y.operands) if v is res] != [blk.args.index(acc) - 1]:
            return None
        if any(v is acc for o in blk.ops if o is not op for x in o.walk() for v in x.operands):
            return None
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
        # this warp's warpgroup: rows block gi (of gm), column block gj (of wn)
        warp = b.udiv(self.tid, ir.Constant(i32, 32))
        gi = b.udiv(b.urem(warp, ir.Constant(i32, wm)), ir.Constant(i32, 4))
        gj = b.udiv(warp, ir.Constant(i32, wm))
        rs = ia is None                              # A from registers
        lb = bt.sv.layout
        inner_b = lb.layout if isinstance(lb, ComposedLayout) else lb

        def lin(inner, coord):
            return 2 * inner(coord)
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
            a_all = {(j, k0): a_regs(j, k0) for k0 in range(0, K, 16) for j in range(blocks_m)}
        self.tgt.wgmma_fence(b)
        for k0 in range(0, K, 16):
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
        # (RS form: the A registers must stay untouched until the wait, so wait right here)
        loop = None if rs else self._async_wgmma_loop()
        if loop is not None:
            # the accumulator only flows to the next iteration's wgmma: keep this group running
            # (the loop's prefetch distance leaves its operand stage untouched for one more iteration)
            self.tgt.wgmma_wait(b, 1)
            self._async_loops.add(id(loop))
        else:
            self.tgt.wgmma_wait(b, 0)
        src = acc.map.dup_source()
        return [out[src[v]] for v in range(len(out))]


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
