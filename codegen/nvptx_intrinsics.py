"""NVPTX instruction selection: special registers, barriers, warp shuffles, predicated global
loads/stores, cp.async, mbarriers and TMA bulk tensor copies, ldmatrix, mma.sync, wgmma, fast math.

Everything here is either an LLVM NVVM intrinsic (names checked against the bundled LLVM 22, see
/work/shared/notes/codegen-notes.md) or -- only where LLVM has no intrinsic that keeps the
instruction whole -- an inline-asm pattern of exactly one PTX instruction (predicated `ld.global` /
`st.global`: LLVM would otherwise turn every masked access into a branch).
"""
from __future__ import annotations

import llvmlite.ir as ir

from .errors import CompileError
from .llvm_util import Decls, bf16, f16, f32, gptr, i1, i8, i16, i32, i64, sptr, void

_CONSTRAINT = {16: "h", 32: "r", 64: "l"}
# tilec dtype name -> PTX type of a tensor-core operand
PTX_TYPE = {"bf16": "bf16", "f16": "f16", "f8e4m3fn": "e4m3", "f8e5m2": "e5m2", "i8": "s8", "u8": "u8"}


class NVPTXIntrinsics:
    """The NVPTX side of the lowering interface used by codegen/lower_tile.py."""

    name = "nvptx"
    # PTX max/min order -0 < +0 and return the other operand of a NaN: IEEE 754-2019 maximumNumber /
    # minimumNumber in one instruction (tests/test_math_gpu.py checks the signs of zero on the GPU)
    minmax_orders_zeros = True

    def __init__(self, decls: Decls, target):
        self.d = decls
        self.target = target                     # ir.targets.Target
        self.arch = target.arch
        self.warp_size = target.warp_size
        self.ptx_isa_needed = 0                  # e.g. 84: an instruction emitted needs PTX ISA 8.4

    # ------------------------------------------------------------------ ids and sync
    def sreg(self, b, name):
        return self.d.call(b, f"llvm.nvvm.read.ptx.sreg.{name}", i32, [], [])

    def thread_id(self, b):
        return self.sreg(b, "tid.x")

    def block_id(self, b, axis: int):
        return self.sreg(b, "ctaid." + "xyz"[axis])

    def num_blocks(self, b, axis: int):
        return self.sreg(b, "nctaid." + "xyz"[axis])

    _CLUSTER_SREGS = {"cluster_id": "clusterid.", "num_clusters": "nclusterid.", "block_in_cluster": "cluster.ctaid.",
                      "cluster_shape": "cluster.nctaid."}

    def cluster_sreg(self, b, what: str, axis: int):
        """%clusterid / %nclusterid / %cluster_ctaid / %cluster_nctaid along axis, or (what =
        "cluster_rank") %cluster_ctarank, this block's linear rank in its cluster."""
        if what == "cluster_rank":
            return self.sreg(b, "cluster.ctarank")
        return self.sreg(b, self._CLUSTER_SREGS[what] + "xyz"[axis])

    def cluster_barrier(self, b):
        """barrier.cluster.arrive (release) + barrier.cluster.wait (acquire), .aligned: every thread of
        every block of the cluster."""
        self.d.call(b, "llvm.nvvm.barrier.cluster.arrive.aligned", void, [], [])
        self.d.call(b, "llvm.nvvm.barrier.cluster.wait.aligned", void, [], [])

    # (id, threads) while a warp_specialize role is lowered (codegen/lower_warp_specialize.py): every
    # barrier is then that role's named barrier, which the other role's threads never reach
    barrier_scope = None

    barriers_emitted = 0            # counted, so that a ping-pong window can tell it holds none (lower_pingpong.py)

    def barrier(self, b):
        self.barriers_emitted += 1
        if self.barrier_scope is not None:
            bid, n = self.barrier_scope
            self.d.call(b, "llvm.nvvm.barrier.cta.sync.aligned.count", void, [i32, i32],
                        [ir.Constant(i32, bid), ir.Constant(i32, n)])
            return
        self.d.call(b, "llvm.nvvm.barrier.cta.sync.aligned.all", void, [i32], [ir.Constant(i32, 0)])

    def named_barrier_sync(self, b, bid, threads: int):
        """`bar.sync bid, threads`: wait until `threads` threads (arriving or syncing) reached named barrier
        bid (an i32 value, warp-uniform)."""
        self.d.call(b, "llvm.nvvm.barrier.cta.sync.aligned.count", void, [i32, i32], [bid, ir.Constant(i32, threads)])

    def named_barrier_arrive(self, b, bid, threads: int):
        """`bar.arrive bid, threads`: count this warp's threads toward named barrier bid's phase, without waiting."""
        self.d.call(b, "llvm.nvvm.barrier.cta.arrive.aligned.count", void, [i32, i32], [bid, ir.Constant(i32, threads)])

    def setmaxnreg(self, b, regs: int, inc: bool):
        """This warpgroup's per-thread register budget becomes `regs` (Hopper; .sync.aligned: every
        thread of the warpgroup executes it)."""
        self.d.call(b, f"llvm.nvvm.setmaxnreg.{'inc' if inc else 'dec'}.sync.aligned.u32", void, [i32],
                    [ir.Constant(i32, regs)])

    def shfl_xor(self, b, v, lane_mask: int):
        """Butterfly shuffle of a 32-bit value (i32 or f32) across the full warp."""
        if v.type == f32:
            return self.d.call(b, "llvm.nvvm.shfl.sync.bfly.f32", f32, [i32, f32, i32, i32],
                               [ir.Constant(i32, -1), v, ir.Constant(i32, lane_mask), ir.Constant(i32, 0x1F)])
        return self.d.call(b, "llvm.nvvm.shfl.sync.bfly.i32", i32, [i32, i32, i32, i32],
                           [ir.Constant(i32, -1), v, ir.Constant(i32, lane_mask), ir.Constant(i32, 0x1F)])

    # ------------------------------------------------------------------ math
    def and_xor(self, b, x, mask: int, c: int):
        """(x & mask) ^ c as one `lop3.b32` (LUT 0x6a = (a & b) ^ c): the dequantization's pair cut
        and magic number (codegen/fast_convert.py). Written as and + xor, ptxas keeps two LOP3s --
        an instruction takes one immediate -- where one lop3 with the second constant in a register
        (made once per kernel) does both, as Marlin's decode does."""
        asm = ir.InlineAsm(ir.FunctionType(i32, [i32]), f"lop3.b32 $0, $1, {mask & 0xFFFFFFFF:#x}, "
                           f"{c & 0xFFFFFFFF:#x}, 0x6a;", "=r,r")
        return b.call(asm, [x])

    def exp2_approx(self, b, x):
        return self.d.call(b, "llvm.nvvm.ex2.approx.f", f32, [f32], [x])

    def round_pair(self, b, lo, hi, dst: str):
        """Two f32 rounded to bf16 / f16 (nearest even) by one cvt.rn.{bf16x2,f16x2}.f32 (sm_80+; the
        instruction takes the high half first). A NaN comes out as the hardware's NaN (payloads are
        not part of the semantics)."""
        t = bf16 if dst == "bf16" else f16
        if not self.target.has("bf16"):            # the paired cvt is sm_80's, as bf16 is
            return [b.fptrunc(lo, t), b.fptrunc(hi, t)]
        name = "llvm.nvvm.ff2bf16x2.rn" if dst == "bf16" else "llvm.nvvm.ff2f16x2.rn"
        v = self.d.call(b, name, ir.VectorType(t, 2), [f32, f32], [hi, lo])
        return [b.extract_element(v, ir.Constant(i32, 0)), b.extract_element(v, ir.Constant(i32, 1))]

    def exp2_approx_ftz(self, b, x):
        """ex2.approx.ftz.f32: one MUFU.EX2 (the non-ftz form adds a compare and two predicated
        multiplies that keep subnormal results)."""
        return self.d.call(b, "llvm.nvvm.ex2.approx.ftz.f", f32, [f32], [x])

    # ------------------------------------------------------------------ global memory
    def pred_load(self, b, ptr, bits: int, n: int, pred, others):
        """`@pred ld.global{.vN}.b{bits}` of n words at `ptr` (aligned to n*bits/8); where pred is
        false the results are `others`. Returns a list of n i{bits} values."""
        if bits == 8:
            if n != 1:
                raise CompileError("internal: 8-bit predicated loads are scalar")
            t = i16
            other = b.zext(others[0], i16)
            asm = ir.InlineAsm(ir.FunctionType(i16, [gptr, i1, i16]), "@$2 ld.global.u8 $0, [$1];",
                               "=h,l,b,0", side_effect=True)
            r = b.call(asm, [ptr, pred, other])
            return [b.trunc(r, i8)]
        t = ir.IntType(bits)
        c = _CONSTRAINT[bits]
        if n == 1:
            asm = ir.InlineAsm(ir.FunctionType(t, [gptr, i1, t]), f"@$2 ld.global.b{bits} $0, [$1];",
                               f"={c},l,b,0", side_effect=True)
            return [b.call(asm, [ptr, pred, others[0]])]
        st = ir.LiteralStructType([t] * n)
        outs = ", ".join(f"${k}" for k in range(n))
        text = f"@${n + 1} ld.global.v{n}.b{bits} {{{outs}}}, [${n}];"
        cons = ",".join([f"={c}"] * n + ["l", "b"] + [str(k) for k in range(n)])
        asm = ir.InlineAsm(ir.FunctionType(st, [gptr, i1] + [t] * n), text, cons, side_effect=True)
        r = b.call(asm, [ptr, pred] + list(others))
        return [b.extract_value(r, k) for k in range(n)]

    def pred_store(self, b, ptr, bits: int, vals, pred):
        """`@pred st.global{.vN}.b{bits} [ptr], {vals}`."""
        n = len(vals)
        if bits == 8:
            asm = ir.InlineAsm(ir.FunctionType(void, [gptr, i16, i1]), "@$2 st.global.u8 [$0], $1;",
                               "l,h,b", side_effect=True)
            b.call(asm, [ptr, b.zext(vals[0], i16), pred])
            return
        t = ir.IntType(bits)
        c = _CONSTRAINT[bits]
        if n == 1:
            asm = ir.InlineAsm(ir.FunctionType(void, [gptr, t, i1]), f"@$2 st.global.b{bits} [$0], $1;",
                               f"l,{c},b", side_effect=True)
            b.call(asm, [ptr, vals[0], pred])
            return
        ins = ", ".join(f"${k + 1}" for k in range(n))
        text = f"@${n + 1} st.global.v{n}.b{bits} [$0], {{{ins}}};"
        cons = ",".join(["l"] + [c] * n + ["b"])
        asm = ir.InlineAsm(ir.FunctionType(void, [gptr] + [t] * n + [i1]), text, cons, side_effect=True)
        b.call(asm, [ptr] + list(vals) + [pred])

    # ------------------------------------------------------------------ async copies
    def cp_async(self, b, dst, src, nbytes: int, src_size):
        """cp.async {16: .cg, 4/8: .ca}.shared.global with src-size zero fill."""
        kind = "cg" if nbytes == 16 else "ca"
        self.d.call(b, f"llvm.nvvm.cp.async.{kind}.shared.global.{nbytes}.s", void, [sptr, gptr, i32],
                    [dst, src, src_size])

    def cp_async_commit(self, b):
        self.d.call(b, "llvm.nvvm.cp.async.commit.group", void, [], [])

    def cp_async_wait(self, b, n: int):
        self.d.call(b, "llvm.nvvm.cp.async.wait.group", void, [i32], [ir.Constant(i32, n)])

    # ------------------------------------------------------------------ mbarriers and TMA (sm_90)
    def mbarrier_init(self, b, bar, count: int):
        """mbarrier.init.shared.b64 [bar], count."""
        self.d.call(b, "llvm.nvvm.mbarrier.init.shared", void, [sptr, i32], [bar, ir.Constant(i32, count)])

    def fence_mbarrier_init(self, b):
        """fence.mbarrier_init.release.cluster: the initialized mbarriers are visible (to the async
        proxy too) before the barrier that follows."""
        self.d.call(b, "llvm.nvvm.fence.mbarrier_init.release.cluster", void, [], [])

    def mbarrier_expect_tx(self, b, bar, nbytes: int):
        """mbarrier.expect_tx.relaxed.cta.shared.b64 [bar], nbytes: the current phase also waits for
        `nbytes` bytes of asynchronous copies (complete_tx) before it completes."""
        self.d.call(b, "llvm.nvvm.mbarrier.expect.tx.scope.cta.space.cta", void, [sptr, i32],
                    [bar, ir.Constant(i32, nbytes)])

    def mbarrier_arrive(self, b, bar):
        """mbarrier.arrive.shared.b64 _, [bar] (release): one arrival on the current phase."""
        self.d.call(b, "llvm.nvvm.mbarrier.arrive.shared", i64, [sptr], [bar])

    def mbarrier_arrive_remote(self, b, bar, rank):
        """mapa.shared::cluster + mbarrier.arrive.shared::cluster.b64 _, [addr], 1 (release at CTA scope, the
        default -- CUTLASS's ClusterBarrier::arrive(cta_id)): one arrival on mbarrier `bar` (an offset in
        this block's shared memory) of the cluster's block `rank` (i32; this block's own rank works too).
        What it must order is this warp's reads of the stage, finished by its wgmma wait, before the TMA
        writes the other block's producer issues after the phase completes. `.release.cluster` orders the
        same at a price measured on the H100: 2-block-cluster GEMM 4096^3 300 us against 179 us."""
        cl = ir.PointerType(addrspace=7)
        remote = self.d.call(b, "llvm.nvvm.mapa.shared.cluster", cl, [sptr, i32], [bar, rank])
        self.d.call(b, "llvm.nvvm.mbarrier.arrive.scope.cta.space.cluster", void, [cl, i32],
                    [remote, ir.Constant(i32, 1)])

    def mbarrier_try_wait_parity(self, b, bar, phase):
        """mbarrier.try_wait.parity.shared.b64 (acquire): i1, whether the phase of parity `phase`
        (i32, 0 or 1) has completed (waits a while in hardware before answering false)."""
        return self.d.call(b, "llvm.nvvm.mbarrier.try.wait.parity.scope.cta.space.cta", i1, [sptr, i32],
                           [bar, phase])

    def mbarrier_inval(self, b, bar):
        """mbarrier.inval.shared.b64 [bar]: its memory may then be used for something else."""
        self.d.call(b, "llvm.nvvm.mbarrier.inval.shared", void, [sptr], [bar])

    def tma_load(self, b, dst, bar, tmap, coords, multicast: int = 0):
        """cp.async.bulk.tensor.<n>d.shared::cluster.global.tile.mbarrier::complete_tx::bytes
        [dst], [tmap, {coords}], [bar]: the box of tensor map `tmap` (a generic pointer to the
        grid-constant kernel parameter) at `coords` (i32, innermost dim first; outside the tensor
        reads zeros) into shared memory at `dst`, its bytes completing on mbarrier `bar`. `multicast`: a
        mask of cluster ranks (.multicast::cluster): the box lands at `dst` in each of those blocks, its
        bytes completing on each one's mbarrier at `bar`."""
        n = len(coords)
        dst_cl = b.addrspacecast(dst, ir.PointerType(addrspace=7))        # shared::cluster
        self.d.call(b, f"llvm.nvvm.cp.async.bulk.tensor.g2s.tile.{n}d", void,
                    [ir.PointerType(addrspace=7), sptr, ir.PointerType()] + [i32] * n + [i16, i64, i1, i1],
                    [dst_cl, bar, tmap, *coords, ir.Constant(i16, multicast), ir.Constant(i64, 0),
                     ir.Constant(i1, 1 if multicast else 0), ir.Constant(i1, 0)])

    def tma_store(self, b, src, tmap, coords):
        """cp.async.bulk.tensor.<n>d.global.shared::cta.tile.bulk_group [tmap, {coords}], [src]: the
        box at `src` in shared memory to the tensor of map `tmap` at `coords` (i32, innermost dim
        first); elements outside the tensor are not written. Completes with this thread's bulk group."""
        n = len(coords)
        self.d.call(b, f"llvm.nvvm.cp.async.bulk.tensor.s2g.tile.{n}d", void,
                    [sptr, ir.PointerType()] + [i32] * n + [i64, i1],
                    [src, tmap, *coords, ir.Constant(i64, 0), ir.Constant(i1, 0)])

    def bulk_commit(self, b):
        """cp.async.bulk.commit_group: this thread's bulk copies issued since the last commit form a group."""
        self.d.call(b, "llvm.nvvm.cp.async.bulk.commit.group", void, [], [])

    def bulk_wait_read(self, b, pending: int):
        """cp.async.bulk.wait_group.read n: all but the `pending` most recent bulk groups of this thread
        have finished reading their shared-memory sources (the sources may be written again)."""
        self.d.call(b, "llvm.nvvm.cp.async.bulk.wait.group.read", void, [i32], [ir.Constant(i32, pending)])

    # ------------------------------------------------------------------ tensor cores
    def ldmatrix(self, b, ptr, num: int, trans: bool):
        """ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16 -> num i32 registers."""
        name = f"llvm.nvvm.ldmatrix.sync.aligned.m8n8.x{num}{'.trans' if trans else ''}.b16"
        if num == 1:
            return [self.d.call(b, name, i32, [sptr], [ptr])]
        st = ir.LiteralStructType([i32] * num)
        r = self.d.call(b, name, st, [sptr], [ptr])
        return [b.extract_value(r, k) for k in range(num)]

    # ------------------------------------------------------------------ Hopper warpgroup MMA
    def fence_proxy_async(self, b):
        """fence.proxy.async.shared::cta: generic-proxy shared-memory writes become visible to
        the async proxy (wgmma reads operands through it)."""
        self.d.call(b, "llvm.nvvm.fence.proxy.async.shared_cta", void, [], [])

    def wgmma_fence(self, b):
        self.d.call(b, "llvm.nvvm.wgmma.fence.sync.aligned", void, [], [])

    def wgmma_commit(self, b):
        self.d.call(b, "llvm.nvvm.wgmma.commit_group.sync.aligned", void, [], [])

    def wgmma_wait(self, b, n: int):
        self.d.call(b, "llvm.nvvm.wgmma.wait_group.sync.aligned", void, [i64], [ir.Constant(i64, n)])

    def wgmma(self, b, acc, desc_a, desc_b, n: int, in_dtype: str, trans_a: int, trans_b: int,
              a_off: int = 0, b_off: int = 0, scale_d=1):
        """One `wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{bf16|f16}` with both operands in shared
        memory (64-bit matrix descriptors); acc: the n/2 f32 accumulator registers of this thread
        (scale-d = 1: accumulate; 0: D = A*B, the old values are ignored). `a_off`/`b_off`: byte
        offsets (multiples of 16) added to the descriptors' start addresses inside the instruction's
        operand set-up (CUTLASS-style desc + (off >> 4)), so that one base descriptor per operand stays
        live instead of one per k step. No LLVM intrinsic exists: one inline-asm instruction."""
        return self._wgmma_asm(b, acc, None, desc_a, a_off, desc_b, b_off, n, in_dtype, trans_a, trans_b, scale_d)

    def wgmma_rs(self, b, acc, a_regs, desc_b, n: int, in_dtype: str, trans_b: int, b_off: int = 0, scale_d=1):
        """The RS form of `wgmma`: A from registers (4 b32 registers, each a packed pair, in the
        m16n8k16 A-fragment order of this thread's warp, fragment-layouts.md §3.2) and B in shared
        memory. The A registers must stay unchanged until the wgmma group is waited for."""
        if len(a_regs) != 4:
            raise CompileError(f"internal: wgmma m64n{n} (A from registers) needs 4 A registers, got {len(a_regs)}")
        return self._wgmma_asm(b, acc, list(a_regs), None, 0, desc_b, b_off, n, in_dtype, None, trans_b, scale_d)

    def _wgmma_asm(self, b, acc, a_regs, desc_a, a_off, desc_b, b_off, n, in_dtype, trans_a, trans_b, scale_d):
        k = n // 2
        if len(acc) != k:
            raise CompileError(f"internal: wgmma m64n{n} needs {k} accumulators, got {len(acc)}")
        for off in (a_off, b_off):
            if off % 16 or not 0 <= off < (1 << 18):
                raise CompileError(f"internal: wgmma descriptor offset {off} is not a multiple of 16 below 256 KB")
        ptype = PTX_TYPE.get(in_dtype)
        if ptype is None:
            raise CompileError(f"internal: wgmma for {in_dtype}")
        eight = ptype in ("e4m3", "e5m2", "s8", "u8")
        integer = ptype in ("s8", "u8")
        args, types, cons = [], [], []

        def arg(v, t, c):
            args.append(v)
            types.append(t)
            cons.append(c)
            return f"${k + len(args) - 1}"
        regs, pre = [".reg .pred p;"], []
        if a_regs is not None:
            a_txt = "{" + ", ".join(arg(x, i32, "r") for x in a_regs) + "}"
        else:
            a_txt = arg(desc_a, i64, "l")
            if a_off:
                regs.append(".reg .b64 da;")
                pre.append(f"add.s64 da, {a_txt}, {a_off >> 4};")
                a_txt = "da"
        b_txt = arg(desc_b, i64, "l")
        if b_off:
            regs.append(".reg .b64 db;")
            pre.append(f"add.s64 db, {b_txt}, {b_off >> 4};")
            b_txt = "db"
        sc = arg(scale_d if isinstance(scale_d, ir.Value) else ir.Constant(i32, int(scale_d)), i32, "r")
        outs = ", ".join(f"${i}" for i in range(k))
        # 16-bit inputs: imm-scale-a/b and the transpose immediates; fp8: imm-scale-a/b only (no
        # transpose: K-major operands); integers: neither (PTX ISA, wgmma.mma_async)
        if integer:
            tail = ""
        elif eight:
            tail = ", 1, 1"
        else:
            tail = ", 1, 1, " + (f"{trans_b}" if a_regs is not None else f"{trans_a}, {trans_b}")
        kk = 32 if eight else 16
        dtype = "s32" if integer else "f32"
        text = (f"{{ {' '.join(regs)} setp.ne.b32 p, {sc}, 0; {' '.join(pre)}{' ' if pre else ''}"
                f"wgmma.mma_async.sync.aligned.m64n{n}k{kk}.{dtype}.{ptype}.{ptype} "
                f"{{{outs}}}, {a_txt}, {b_txt}, p{tail}; }}")
        at, ac = (i32, "=r") if integer else (f32, "=f")
        cons = ",".join([ac] * k + cons + [str(i) for i in range(k)])
        st = ir.LiteralStructType([at] * k)
        asm = ir.InlineAsm(ir.FunctionType(st, types + [at] * k), text, cons, side_effect=True)
        r = b.call(asm, args + list(acc))
        return [b.extract_value(r, i) for i in range(k)]

    def fence_operands(self, b, vals):
        """vals (f32 or i32 accumulator registers) passed through one empty volatile asm that ties
        each output to its input: the new values cannot be computed before whatever precedes the asm
        (a wgmma.wait_group), so no use of the registers moves above it."""
        if not vals:
            return []
        out = list(vals)
        for t, c in ((f32, "=f"), (i32, "=r")):
            idx = [i for i, x in enumerate(vals) if x.type == t]
            for lo in range(0, len(idx), 128):          # (keeps each asm's operand list modest)
                part = idx[lo:lo + 128]
                k = len(part)
                st = ir.LiteralStructType([t] * k)
                asm = ir.InlineAsm(ir.FunctionType(st, [t] * k), "", ",".join([c] * k + [str(i) for i in range(k)]),
                                   side_effect=True)
                r = b.call(asm, [vals[i] for i in part])
                for j, i in enumerate(part):
                    out[i] = b.extract_value(r, j)
        return out

    def mma_m16n8k32(self, b, a, bb, c, in_dtype: str):
        """D = A*B + C on one m16n8k32 atom of 8-bit inputs: a = 4 i32 (4 bytes each), bb = 2 i32,
        c = 4 accumulators (i32 for s8/u8: exact, wrapping like the interpreter -- no .satfinite;
        f32 for e4m3/e5m2). One inline-asm instruction, so that the fp8 form (PTX ISA 8.4, which
        LLVM's intrinsic would demand of the whole module) needs only the `.version` raised
        (`ptx_isa_needed`)."""
        ptype = PTX_TYPE.get(in_dtype)
        if ptype not in ("s8", "u8", "e4m3", "e5m2"):
            raise CompileError(f"internal: mma.sync m16n8k32 for {in_dtype}")
        integer = ptype in ("s8", "u8")
        if not integer:
            self.ptx_isa_needed = max(self.ptx_isa_needed, 84)
        at, ac, dtype = (i32, "=r", "s32") if integer else (f32, "=f", "f32")
        text = (f"mma.sync.aligned.m16n8k32.row.col.{dtype}.{ptype}.{ptype}.{dtype} "
                "{$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9}, {$10, $11, $12, $13};")
        cons = ",".join([ac] * 4 + ["r"] * 6 + ["0", "1", "2", "3"])
        st = ir.LiteralStructType([at] * 4)
        asm = ir.InlineAsm(ir.FunctionType(st, [i32] * 6 + [at] * 4), text, cons)
        r = b.call(asm, list(a) + list(bb) + list(c))
        return [b.extract_value(r, k) for k in range(4)]

    def mma_m16n8k16(self, b, a, bb, c, in_dtype: str):
        """D = A*B + C on one m16n8k16 atom: a = 4 i32 (packed pairs), bb = 2 i32, c = 4 f32."""
        f4 = ir.LiteralStructType([f32] * 4)
        if in_dtype == "bf16":
            r = self.d.call(b, "llvm.nvvm.mma.m16n8k16.row.col.bf16", f4, [i32] * 6 + [f32] * 4, list(a) + list(bb) + list(c))
        elif in_dtype == "f16":
            h2 = ir.VectorType(f16, 2)
            av = [b.bitcast(x, h2) for x in a]
            bv = [b.bitcast(x, h2) for x in bb]
            r = self.d.call(b, "llvm.nvvm.mma.m16n8k16.row.col.f32.f32", f4, [h2] * 6 + [f32] * 4, av + bv + list(c))
        else:
            raise CompileError(f"internal: mma.sync for {in_dtype}")
        return [b.extract_value(r, k) for k in range(4)]
