"""cumsum: an inclusive or exclusive prefix sum of a register tile along one axis, through the op's
scratch shared memory.

Algorithm (correct for any tile shape, thread count and layout, replicated ones included):
1. barrier; every OWNER of each element (`write_tile_smem`: one of the threads that hold a
   replicated element) writes its elements into the scratch, staged one element per max(8, bits)
   bits (sub-byte types as u8 codes). The scratch keeps each line along the axis contiguous and the
   lines `stride` elements apart, the stride padded to an odd number of 4-byte words
   (ir/shared_layouts.py `cumsum_scratch`), so the 32 lines a warp scans at one time
   sit in distinct banks;
2. barrier; thread t scans lines t, t + T, t + 2T, ... (T = threads of the block) sequentially,
   in place: a running sum in a register, each element read, added and its output written back;
3. barrier; every thread reads its result elements (in the result's layout) back.

Cost: 3 barriers, one shared-memory write and one read per element owned/held, and a critical path
of ceil(L / T) * n dependent (load, add, store) steps, L = numel / n lines of n elements along the
axis. It is fast when there are at least as many lines as threads (e.g. a row-wise cumsum of a
128x64 tile with 128 threads: 64 steps) and serial for a single long line (a 1-D tile of 1024
elements: 1024 steps by one thread, ~tens of microseconds) -- fine for MoE routing offsets over
tens to hundreds of experts, not meant for long 1-D scans.

Numerics (the same rule as the interpreter, bit for bit, since both sum in index order):
integers add in their own width (sub-byte ones in an i8, wrapped to their width at each output);
floats accumulate in f32 (f64 for f64), starting from -0.0 (so a sum of -0.0 stays -0.0, as
NumPy's cumsum), each output rounded once to the element type; an exclusive scan's first output is
+0.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..ir.layout import Layout
from ..ir.shared_layouts import cumsum_scratch

from .values import RTile
from .table import lowers
from .llvm_util import f64, i32


def scan_scratch_layout(shape, axis: int, stride: int):
    """The scratch layout of a cumsum: the axis contiguous (stride 1), the other dims row-major with
    each line `stride` elements long."""
    shape = tuple(shape)
    if len(shape) == 1:
        return Layout(shape[0], 1)
    strides = [0] * len(shape)
    strides[axis] = 1
    acc = stride
    for d in reversed(range(len(shape))):
        if d != axis:
            strides[d] = acc
            acc *= shape[d]
    return Layout(shape, tuple(strides))


class ScanLowering:
    @lowers("cumsum")
    def op_cumsum(self, op):
        a = self.rtile(op.operands[0])
        at, rt = op.operands[0].type, op.results[0].type
        rm = self.tmap(rt)
        axis = int(op.attrs["axis"])
        excl = bool(op.attrs["exclusive"])
        dt = a.dtype
        if dt.kind == "bool":
            raise self.error("cumsum of an i1 tile is not defined (cast it to i32 first)")
        shape = tuple(at.shape)
        n = shape[axis]
        lines = 1
        for s in shape:
            lines *= s
        lines //= n
        sdt = self._stage_dtype(dt)
        e = sdt.bits // 8
        stride, _ = cumsum_scratch(shape, axis, dt.bits)
        sv = self.scratch(op, shape, sdt, scan_scratch_layout(shape, axis, stride))
        b = self.b
        self.tgt.barrier(b)
        self.write_tile_smem(sv, self._codes_tile(a))
        self.tgt.barrier(b)
        T = self.nthreads
        count = -(-lines // T)
        if count == 1 and lines == T:
            self._scan_line(sv.off, self.tid, n, e, stride, dt, sdt, excl)
        else:
            self._thread_loop(count, lambda k: self.b.add(self.b.mul(k, ir.Constant(i32, T)), self.tid), lines,
                              lambda g: self._scan_line(sv.off, g, n, e, stride, dt, sdt, excl))
        self.tgt.barrier(self.b)
        vals = self.read_tile_smem(sv, rm, sdt, op)
        if sdt is not dt:
            vals = [self.from_code(x, dt) for x in vals]
        self.set(op.results[0], RTile(rm, vals, dt))

    def _scan_line(self, off, g, n: int, e: int, stride: int, dt, sdt, excl: bool):
        """Scan line g (an i32 value) of the scratch in place: a runtime loop over its n elements."""
        b = self.b
        base = b.add(off, b.mul(g, ir.Constant(i32, stride * e)))
        ct = ir.IntType(sdt.bits)
        if dt.is_float:
            wt = f64 if dt.name == "f64" else ir.FloatType()
            acc0 = ir.Constant(wt, -0.0)
            zero = ir.Constant(wt, 0.0)
        else:
            wt = ct if dt.bits >= 8 else ir.IntType(8)
            acc0 = zero = ir.Constant(wt, 0)
        pre = b.block
        head = self.llfn.append_basic_block("scan.head")
        body = self.llfn.append_basic_block("scan.body")
        done = self.llfn.append_basic_block("scan.done")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(i32)
        acc = b.phi(wt)
        i.add_incoming(ir.Constant(i32, 0), pre)
        acc.add_incoming(acc0, pre)
        b.cbranch(b.icmp_unsigned("<", i, ir.Constant(i32, n)), body, done)
        b.position_at_end(body)
        p = self.sptr(b.add(base, b.mul(i, ir.Constant(i32, e))) if e > 1 else b.add(base, i))
        x = self.from_code(b.load(p, typ=ct), dt)
        if dt.is_float:
            w = self.num.to_work(b, x, dt)
            new = b.fadd(acc, w)
        else:
            new = b.add(acc, x)
        if excl:
            out = acc
            if dt.is_float:                    # the first output is +0, not the -0.0 the sum starts from
                out = b.select(b.icmp_unsigned("==", i, ir.Constant(i32, 0)), zero, acc)
        else:
            out = new
        out = self.num.from_work(b, out, dt) if dt.is_float else self.num.norm_int(b, out, dt)
        b.store(self.to_code(out, dt), p)
        nxt = b.add(i, ir.Constant(i32, 1))
        i.add_incoming(nxt, b.block)
        acc.add_incoming(new, b.block)
        b.branch(head)
        b.position_at_end(done)

