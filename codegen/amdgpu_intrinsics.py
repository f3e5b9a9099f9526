"""AMDGPU instruction selection: work-item ids, workgroup barriers, wave-wide shuffles, predicated
global loads/stores, fast exp2, MFMA -- the AMD counterpart of codegen/nvptx_intrinsics.py, with
the same method names, so the target-independent lowerings (codegen/lower_*.py) serve AMD through it.

Everything here is an LLVM AMDGPU intrinsic or plain LLVM IR (names checked against the bundled
LLVM 22, see /work/shared/notes/codegen-notes.md §5); there is no inline assembly:
* ids: `llvm.amdgcn.workitem.id.x`, `llvm.amdgcn.workgroup.id.{x,y,z}`; the grid size from the
  code-object-v5 hidden kernel arguments (`hidden_block_count_{x,y,z}`, the first three u32 behind
  `llvm.amdgcn.implicitarg.ptr`);
* barrier: workgroup release fence, `llvm.amdgcn.s.barrier`, workgroup acquire fence (what HIP's
  `__syncthreads` is: s_barrier alone does not order LDS accesses);
* cross-lane: `llvm.amdgcn.ds.bpermute` (ds_bpermute_b32: any lane of the wave, byte-addressed),
  the lane from `llvm.amdgcn.mbcnt.lo/hi` -- no assumption about the wave size beyond the Target's;
* predicated global memory: a branch around a plain (vector) load/store in addrspace(1); for a
  divergent predicate the AMDGPU back end turns this into EXEC masking, not a jump;
* buffer memory (`copy = "buffer.load"` / `"buffer.store"`): a V# from
  `llvm.amdgcn.make.buffer.rsrc`, `llvm.amdgcn.raw.ptr.buffer.{load,store}.*`; the range check
  reads 0 / drops the write for a masked lane's offset, so masking needs no branch;
* exp2: `llvm.amdgcn.exp2.f32` (v_exp_f32);
* MFMA: `llvm.amdgcn.mfma.f32.{32x32x8,16x16x16}{bf16_1k,f16}` and the gfx950
  `llvm.amdgcn.mfma.f32.{32x32x16,16x16x32}.{bf16,f16}`;
* wave schedules: `llvm.amdgcn.s.setprio`, a bare `llvm.amdgcn.s.barrier`,
  `llvm.amdgcn.sched.barrier` / `llvm.amdgcn.sched.group.barrier`, `llvm.amdgcn.readfirstlane`.
The NVIDIA-only instructions (cp.async, ldmatrix, wgmma, async-proxy fences) are located errors:
instruction selection never chooses them for a target without those features.
"""
from __future__ import annotations

import llvmlite.ir as ir

from .errors import CompileError
from . import fast_convert
from .llvm_util import Decls, bf16, f16, f32, i1, i8, i16, i32, i64, void

cptr = ir.PointerType(addrspace=4)          # constant address space (kernel arguments)

# MFMA atom (tilec name) -> {input dtype: (intrinsic, input vector length, input element type)}
_MFMA = {
    "mfma.32x32x8": {"bf16": ("llvm.amdgcn.mfma.f32.32x32x8bf16.1k", 4, i16),
                     "f16": ("llvm.amdgcn.mfma.f32.32x32x8f16", 4, f16)},
    "mfma.16x16x16": {"bf16": ("llvm.amdgcn.mfma.f32.16x16x16bf16.1k", 4, i16),
                      "f16": ("llvm.amdgcn.mfma.f32.16x16x16f16", 4, f16)},
    "mfma.32x32x16": {"bf16": ("llvm.amdgcn.mfma.f32.32x32x16.bf16", 8, bf16),
                      "f16": ("llvm.amdgcn.mfma.f32.32x32x16.f16", 8, f16)},
    "mfma.16x16x32": {"bf16": ("llvm.amdgcn.mfma.f32.16x16x32.bf16", 8, bf16),
                      "f16": ("llvm.amdgcn.mfma.f32.16x16x32.f16", 8, f16)},
}
_MFMA_ACC = {"mfma.32x32x8": 16, "mfma.16x16x16": 4, "mfma.32x32x16": 16, "mfma.16x16x32": 4}


class AMDGPUIntrinsics:
    """The AMDGPU side of the lowering interface used by codegen/lower_tile.py."""

    name = "amdgpu"
    # max/min keep llvm.maxnum plus the signed-zero fix-up (codegen/llvm_numerics.py fminmax): no
    # instruction here is known to order -0 < +0
    minmax_orders_zeros = False

    def __init__(self, decls: Decls, target):
        self.d = decls
        self.target = target
        self.arch = target.arch
        self.warp_size = target.warp_size

    # ------------------------------------------------------------------ ids and sync
    def thread_id(self, b):
        return self.d.call(b, "llvm.amdgcn.workitem.id.x", i32, [], [])

    def block_id(self, b, axis: int):
        return self.d.call(b, "llvm.amdgcn.workgroup.id." + "xyz"[axis], i32, [], [])

    def num_blocks(self, b, axis: int):
        """Workgroups along `axis`: hidden_block_count_{x,y,z}, the first three u32 of the
        code-object-v5 implicit kernel arguments (the runtime fills them)."""
        p = self.d.call(b, "llvm.amdgcn.implicitarg.ptr", cptr, [], [])
        q = b.gep(p, [ir.Constant(i64, 4 * axis)], source_etype=i8)
        ld = b.load(q, typ=i32)
        ld.align = 4
        return ld

    def barrier(self, b):
        b.fence("release", "workgroup")
        self.d.call(b, "llvm.amdgcn.s.barrier", void, [], [])
        b.fence("acquire", "workgroup")

    def lane_id(self, b):
        lo = self.d.call(b, "llvm.amdgcn.mbcnt.lo", i32, [i32, i32], [ir.Constant(i32, -1), ir.Constant(i32, 0)])
        if self.warp_size <= 32:
            return lo
        return self.d.call(b, "llvm.amdgcn.mbcnt.hi", i32, [i32, i32], [ir.Constant(i32, -1), lo])

    def shfl_xor(self, b, v, lane_mask: int):
        """Butterfly exchange of a 32-bit value (i32 or f32) across the wave: ds_bpermute_b32
        reads lane (lane ^ mask), addressed in bytes."""
        if not 0 < lane_mask < self.warp_size:
            raise CompileError(f"internal: shuffle lane mask {lane_mask} outside a {self.warp_size}-lane wave")
        src = b.shl(b.xor(self.lane_id(b), ir.Constant(i32, lane_mask)), ir.Constant(i32, 2))
        x = b.bitcast(v, i32) if v.type == f32 else v
        r = self.d.call(b, "llvm.amdgcn.ds.bpermute", i32, [i32, i32], [src, x])
        return b.bitcast(r, f32) if v.type == f32 else r

    # ------------------------------------------------------------------ math
    def and_xor(self, b, x, mask: int, c: int):
        """(x & mask) ^ c: plain IR (the AMDGPU back end selects v_and_b32 / v_xor_b32 or a bfi)."""
        return fast_convert.plain_and_xor(b, x, mask, c)

    def exp2_approx(self, b, x):
        return self.d.call(b, "llvm.amdgcn.exp2.f32", f32, [f32], [x])

    def round_pair(self, b, lo, hi, dst: str):
        """Two f32 rounded to bf16 / f16 (nearest even); LLVM pairs them where the chip can."""
        t = bf16 if dst == "bf16" else f16
        return [b.fptrunc(lo, t), b.fptrunc(hi, t)]

    def exp2_approx_ftz(self, b, x):
        """exp2 with results below 2^-126 flushed to +0 (the op's `ftz`), whatever the wave's
        denormal mode: a compare and a select after v_exp_f32."""
        r = self.exp2_approx(b, x)
        return b.select(b.fcmp_ordered("<", r, ir.Constant(f32, 2.0 ** -126)), ir.Constant(f32, 0.0), r)

    # ------------------------------------------------------------------ global memory
    @staticmethod
    def _guard(b, pred, what: str):
        """Open `if (pred)`: returns (the block before, the then block, the join block); the
        builder is left in the then block."""
        fn = b.block.parent
        then = fn.append_basic_block(f"{what}.on")
        join = fn.append_basic_block(f"{what}.join")
        before = b.block
        b.cbranch(pred, then, join)
        b.position_at_end(then)
        return before, then, join

    def pred_load(self, b, ptr, bits: int, n: int, pred, others):
        """n words of `bits` bits at `ptr` (aligned to n*bits/8) where `pred`, else `others`;
        returns a list of n i{bits} values."""
        t = ir.IntType(bits)
        const_true = isinstance(pred, ir.Constant) and pred.constant in (1, True)
        if not const_true:
            before, then, join = self._guard(b, pred, "ld")
        if n == 1:
            ld = b.load(ptr, typ=t)
            ld.align = max(1, bits // 8)
            got = [ld]
        else:
            vt = ir.VectorType(t, n)
            ld = b.load(ptr, typ=vt)
            ld.align = n * bits // 8
            got = [b.extract_element(ld, ir.Constant(i32, k)) for k in range(n)]
        if const_true:
            return got
        last = b.block
        b.branch(join)
        b.position_at_end(join)
        out = []
        for g, o in zip(got, others):
            p = b.phi(t)
            p.add_incoming(g, last)
            p.add_incoming(o, before)
            out.append(p)
        return out

    def pred_store(self, b, ptr, bits: int, vals, pred):
        """Store the words `vals` (i{bits} each) at `ptr` where `pred`."""
        t = ir.IntType(bits)
        n = len(vals)
        const_true = isinstance(pred, ir.Constant) and pred.constant in (1, True)
        if not const_true:
            _, _, join = self._guard(b, pred, "st")
        if n == 1:
            st = b.store(vals[0], ptr)
            st.align = max(1, bits // 8)
        else:
            vt = ir.VectorType(t, n)
            vec = ir.Constant(vt, ir.Undefined)
            for k, v in enumerate(vals):
                vec = b.insert_element(vec, v, ir.Constant(i32, k))
            st = b.store(vec, ptr)
            st.align = n * bits // 8
        if not const_true:
            b.branch(join)
            b.position_at_end(join)

    # ------------------------------------------------------------------ buffer resources
    # dword 3 of a raw buffer descriptor on CDNA: DATA_FORMAT 32 (4 << 15) and NUM_FORMAT 7 (7 << 12),
    # which untyped buffer loads ignore but need nonzero; stride 0, no swizzle, no add-tid
    RSRC_FLAGS = (7 << 12) | (4 << 15)
    RSRC_RECORDS = 0x7FFFFFFF            # bytes addressable from the base (offsets must stay below)
    RSRC_MASKED = 0x80000000             # an offset past RSRC_RECORDS: loads read 0, stores are dropped

    def make_buffer_rsrc(self, b, ptr):
        """A buffer resource (V#, `ptr addrspace(8)`) over RSRC_RECORDS bytes from global pointer ptr
        (uniform: it lives in SGPRs)."""
        rt = ir.PointerType(addrspace=8)
        return self.d.call(b, "llvm.amdgcn.make.buffer.rsrc.p8.p1", rt, [ptr.type, i16, i64, i32],
                           [ptr, ir.Constant(i16, 0), ir.Constant(i64, self.RSRC_RECORDS),
                            ir.Constant(i32, self.RSRC_FLAGS)])

    @staticmethod
    def _buf_type(bits: int, n: int):
        total = bits * n
        if total >= 64:
            return ir.VectorType(i32, total // 32) if total > 32 else i32
        return ir.IntType(total)

    def buffer_load(self, b, rsrc, voff, bits: int, n: int):
        """n words of `bits` bits at byte offset voff (i32) of the buffer: one buffer_load_{ubyte,
        ushort,dword,dwordx2,dwordx4} (offset >= the records: zeros); returns n i{bits} values."""
        t = self._buf_type(bits, n)
        name = "llvm.amdgcn.raw.ptr.buffer.load." + (f"v{t.count}i32" if isinstance(t, ir.VectorType) else f"i{t.width}")
        z = ir.Constant(i32, 0)
        x = self.d.call(b, name, t, [rsrc.type, i32, i32, i32], [rsrc, voff, z, z])
        words = [b.extract_element(x, ir.Constant(i32, k)) for k in range(t.count)] if isinstance(t, ir.VectorType) \
            else [x]
        return _resplit(b, words, 32 if isinstance(t, ir.VectorType) else t.width, bits, n)

    def buffer_store(self, b, rsrc, voff, bits: int, vals):
        """Store the words `vals` (i{bits} each) at byte offset voff of the buffer as one buffer store
        (offset >= the records: nothing is written)."""
        n = len(vals)
        t = self._buf_type(bits, n)
        wbits = 32 if isinstance(t, ir.VectorType) else t.width
        words = _resplit(b, list(vals), bits, wbits, (bits * n) // wbits)
        if isinstance(t, ir.VectorType):
            x = ir.Constant(t, ir.Undefined)
            for k, w in enumerate(words):
                x = b.insert_element(x, w, ir.Constant(i32, k))
        else:
            x = words[0]
        name = "llvm.amdgcn.raw.ptr.buffer.store." + (f"v{t.count}i32" if isinstance(t, ir.VectorType) else f"i{t.width}")
        z = ir.Constant(i32, 0)
        self.d.call(b, name, void, [t, rsrc.type, i32, i32, i32], [x, rsrc, voff, z, z])

    # ------------------------------------------------------------------ matrix cores
    def mfma(self, b, atom: str, in_dtype: str, a_vals, b_vals, acc):
        """D = A*B + C on one MFMA atom: a_vals/b_vals are this lane's k-consecutive input elements
        (LLVM bfloat/half values), acc its f32 accumulator registers, in the fragment order of
        ir/fragments.py. Returns the new accumulator registers."""
        try:
            name, nk, et = _MFMA[atom][in_dtype]
        except KeyError:
            raise CompileError(f"internal: no MFMA intrinsic for {atom} with {in_dtype} inputs") from None
        nacc = _MFMA_ACC[atom]
        if len(a_vals) != nk or len(b_vals) != nk or len(acc) != nacc:
            raise CompileError(f"internal: {atom} takes {nk}+{nk} inputs and {nacc} accumulators per lane")
        vt, ct = ir.VectorType(et, nk), ir.VectorType(f32, nacc)

        def pack(xs):
            v = ir.Constant(vt, ir.Undefined)
            for k, x in enumerate(xs):
                if et == i16 and x.type != i16:
                    x = b.bitcast(x, i16)
                v = b.insert_element(v, x, ir.Constant(i32, k))
            return v
        c = ir.Constant(ct, ir.Undefined)
        for k, x in enumerate(acc):
            c = b.insert_element(c, x, ir.Constant(i32, k))
        z = ir.Constant(i32, 0)
        r = self.d.call(b, name, ct, [vt, vt, ct, i32, i32, i32], [pack(a_vals), pack(b_vals), c, z, z, z])
        return [b.extract_element(r, ir.Constant(i32, k)) for k in range(nacc)]

    # ------------------------------------------------------------------ wave schedules
    # (passes/schedule_amd.py decides; codegen/lower_mfma.py places them)
    def s_barrier(self, b):
        """A bare workgroup barrier, no fences: it orders when waves issue, not what memory they
        see (the ping-pong turns between MFMA clusters and LDS reads, which touch no shared data)."""
        self.d.call(b, "llvm.amdgcn.s.barrier", void, [], [])

    def s_setprio(self, b, prio: int):
        """s_setprio: this wave's issue priority on its SIMD (0..3)."""
        self.d.call(b, "llvm.amdgcn.s.setprio", void, [i16], [ir.Constant(i16, prio)])

    def sched_barrier(self, b, mask: int = 0):
        """llvm.amdgcn.sched.barrier: the machine scheduler moves no instruction (mask 0) across it."""
        self.d.call(b, "llvm.amdgcn.sched.barrier", void, [i32], [ir.Constant(i32, mask)])

    def sched_group_barrier(self, b, mask: int, count: int, sync_id: int = 0):
        """llvm.amdgcn.sched.group.barrier: the scheduler places `count` instructions of class `mask`
        (0x8 MFMA, 0x20 VMEM read, 0x100 DS read, 0x200 DS write) here, in the order of the calls
        with the same sync_id."""
        self.d.call(b, "llvm.amdgcn.sched.group.barrier", void, [i32, i32, i32],
                    [ir.Constant(i32, mask), ir.Constant(i32, count), ir.Constant(i32, sync_id)])

    def readfirstlane(self, b, v):
        """v of the wave's first active lane, in a scalar register (a wave-uniform value)."""
        return self.d.call(b, "llvm.amdgcn.readfirstlane.i32", i32, [i32], [v])

    # ------------------------------------------------------------------ NVIDIA-only
    def _none(self, what):
        raise CompileError(f"{what} does not exist on {self.target.name} (AMD); instruction selection "
                           f"should not have chosen it")

    def cp_async(self, b, *a, **k):
        self._none("cp.async")

    def cp_async_commit(self, b):
        pass                                     # synchronous copies: nothing in flight

    def cp_async_wait(self, b, n: int):
        pass

    def fence_proxy_async(self, b):
        self._none("fence.proxy.async")

    def ldmatrix(self, b, *a, **k):
        self._none("ldmatrix")

    def wgmma_fence(self, b):
        self._none("wgmma")

    def wgmma_commit(self, b):
        self._none("wgmma")

    def wgmma_wait(self, b, n: int):
        self._none("wgmma")

    def wgmma(self, b, *a, **k):
        self._none("wgmma")

    def wgmma_rs(self, b, *a, **k):
        self._none("wgmma")

    def mma_m16n8k16(self, b, *a, **k):
        self._none("mma.sync")


def _resplit(b, words, wbits: int, bits: int, n: int):
    """Little-endian words of wbits bits -> n values of `bits` bits (both powers of two >= 8)."""
    if wbits == bits:
        return list(words)
    t = ir.IntType(bits)
    if wbits > bits:
        per = wbits // bits
        out = []
        for w in words:
            for k in range(per):
                out.append(b.trunc(b.lshr(w, ir.Constant(w.type, k * bits)) if k else w, t))
        return out[:n]
    per = bits // wbits
    out = []
    for j in range(n):
        acc = None
        for k in range(per):
            x = b.zext(words[j * per + k], t)
            x = b.shl(x, ir.Constant(t, k * wbits)) if k else x
            acc = x if acc is None else b.or_(acc, x)
        out.append(acc)
    return out


__all__ = ["AMDGPUIntrinsics"]
