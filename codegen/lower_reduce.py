"""reduce: within each thread over its value slots, then across the lanes of a warp with butterfly
shuffles, then across warps through shared memory (scratch) when the reduced dim spans warps.

The result's layout is the operand's with the reduced dim removed (ThreadMap.project): threads
that differed only along the reduced dim end up holding the same result (replication), so no
data moves afterwards. Narrow floats accumulate in f32 and are rounded once at the end (as the
interpreter does); argmax/argmin keep (value, index) pairs and prefer the first index, NaN being
the largest (NumPy).
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..ir.dtypes import DType
from ..ir.types import TileType

from .values import RTile
from .table import lowers
from .llvm_util import f32, f64, i1, i8, i16, i32, i64

TRUE = ir.Constant(i1, 1)


def _log2(n: int) -> int:
    return n.bit_length() - 1


class ReduceLowering:
    def _red_work(self, x, dt: DType, kind: str):
        """Operand value -> accumulator value."""
        if dt.is_float and kind in ("sum", "prod"):
            return self.num.to_work(self.b, x, dt)
        if dt.is_float and dt.name not in ("f32", "f64"):
            return self.num.to_work(self.b, x, dt)           # compare in f32; exact round trip
        return x

    def _red_final(self, x, dt: DType, kind: str):
        if dt.is_float and (kind in ("sum", "prod") or dt.name not in ("f32", "f64")):
            return self.num.from_work(self.b, x, dt)
        if dt.is_int and kind in ("sum", "prod"):
            return self.num.norm_int(self.b, x, dt)
        return x

    def _combine(self, kind, dt: DType, a, b_):
        """Combine two accumulators (pairs (value, index) for argmax/argmin)."""
        b = self.b
        if kind in ("argmax", "argmin"):
            (va, ia), (vb, ib) = a, b_
            lt_idx = b.icmp_signed("<", ib, ia)
            if dt.is_float:
                an = b.fcmp_unordered("uno", va, va)
                bn = b.fcmp_unordered("uno", vb, vb)
                better = b.fcmp_ordered(">" if kind == "argmax" else "<", vb, va)
                eq = b.fcmp_ordered("==", vb, va)
                plain = b.and_(b.not_(an), b.or_(better, b.and_(eq, lt_idx)))
                nanwin = b.or_(b.not_(an), lt_idx)
                take = b.select(bn, nanwin, plain)
            else:
                signed = dt.kind == "int"
                if kind == "argmax":
                    better = b.icmp_signed(">", vb, va) if signed else b.icmp_unsigned(">", vb, va)
                else:
                    better = b.icmp_signed("<", vb, va) if signed else b.icmp_unsigned("<", vb, va)
                eq = b.icmp_unsigned("==", vb, va)
                take = b.or_(better, b.and_(eq, lt_idx))
            return (b.select(take, vb, va), b.select(take, ib, ia))
        x, y = a, b_
        if x.type in (f32, f64):
            if kind == "sum":
                return b.fadd(x, y)
            if kind == "prod":
                return b.fmul(x, y)
            if kind in ("max", "min"):      # maximumNumber / minimumNumber: -0 < +0, as the elementwise op
                return self.num.fminmax(b, kind, x, y)
            raise self.error(f"reduce {kind} of floats is not defined")
        signed = dt.kind == "int"
        if kind == "sum":
            return b.add(x, y)
        if kind == "prod":
            return b.mul(x, y)
        if kind == "max":
            return b.select(b.icmp_signed(">", x, y) if signed else b.icmp_unsigned(">", x, y), x, y)
        if kind == "min":
            return b.select(b.icmp_signed("<", x, y) if signed else b.icmp_unsigned("<", x, y), x, y)
        if kind == "and":
            return b.and_(x, y)
        if kind == "or":
            return b.or_(x, y)
        if kind == "xor":
            return b.xor(x, y)
        raise self.error(f"unknown reduce kind {kind}")

    def _shfl(self, x, mask: int):
        b = self.b
        t = x.type
        if t == f32 or t == i32:
            return self.tgt.shfl_xor(b, x, mask)
        if t == f64 or t == i64:
            u = b.bitcast(x, i64) if t == f64 else x
            lo = self.tgt.shfl_xor(b, b.trunc(u, i32), mask)
            hi = self.tgt.shfl_xor(b, b.trunc(b.lshr(u, ir.Constant(i64, 32)), i32), mask)
            r = b.or_(b.zext(lo, i64), b.shl(b.zext(hi, i64), ir.Constant(i64, 32)))
            return b.bitcast(r, f64) if t == f64 else r
        if isinstance(t, ir.IntType):
            return b.trunc(self.tgt.shfl_xor(b, b.zext(x, i32), mask), t)
        raise self.error(f"internal: cannot shuffle {t}")

    def _shfl_acc(self, acc, mask):
        if isinstance(acc, tuple):
            return tuple(self._shfl(x, mask) for x in acc)
        return self._shfl(acc, mask)

    @lowers("reduce")
    def op_reduce(self, op):
        b = self.b
        a = self.rtile(op.operands[0])
        m = a.map
        axis = int(op.attrs["axis"])
        kind = op.attrs["kind"]
        dt = a.dtype
        rt = op.results[0].type
        pm = m.project(axis)
        if isinstance(rt, TileType):
            rm = self.tmap(rt)
            if not rm.same(pm):
                raise self.error(f"reduce result layout {rm} is not the operand's with dim {axis} removed "
                                 f"({pm}); layout inference should have set it")
        else:
            rm = pm
        arg = kind in ("argmax", "argmin")
        vcs = m.vcoord_list()
        tb = self.tbase(m)
        # 1. within the thread: groups of slots with the same coordinate off the axis
        groups: dict = {}
        for v in m.unique_values():
            key = vcs[v][:axis] + vcs[v][axis + 1:]
            groups.setdefault(key, []).append(v)
        accs = {}
        for key, slots in groups.items():
            slots = sorted(slots, key=lambda v: vcs[v][axis])
            acc = None
            for v in slots:
                x = self._red_work(a.vals[v], dt, kind)
                if arg:
                    idx = self._add(tb[axis], vcs[v][axis])
                    x = (x, self._i(idx))
                acc = x if acc is None else self._combine(kind, dt, acc, x)
            accs[key] = acc
        # 2. across lanes / warps: thread-mode bits that move along the axis
        lane_bits, warp_bits = [], []
        div = 1
        for s, cs in m.tmodes:
            if cs[axis]:
                if s & (s - 1):
                    raise self.error(f"reduce over a layout with a non-power-of-two thread mode ({m})")
                for k in range(_log2(s)):
                    p = _log2(div) + k
                    (lane_bits if (1 << p) < self.tgt.warp_size else warp_bits).append(p)
            div *= s
        for p in lane_bits:
            for key in accs:
                accs[key] = self._combine(kind, dt, accs[key], self._shfl_acc(accs[key], 1 << p))
        if warp_bits:
            accs = self._reduce_across_warps(op, m, axis, kind, dt, accs, warp_bits, rm)
        # 3. result slots
        out = [None] * rm.nvals
        rvcs = rm.vcoord_list()
        for v in range(rm.nvals):
            acc = accs[rvcs[v]]
            if arg:
                out[v] = acc[1]
            else:
                out[v] = self._red_final(acc, dt, kind)
        if isinstance(rt, TileType):
            self.set(op.results[0], RTile(rm, out, rt.dtype))
        else:
            self.set(op.results[0], out[0])

    def _reduce_across_warps(self, op, m, axis, kind, dt, accs, warp_bits, rm):
        b = self.b
        W = 1 << len(warp_bits)
        if "smem_scratch" not in op.attrs:
            raise self.error("this reduce crosses warps and needs scratch: run shared_memory_planning first")
        base = int(op.attrs["smem_scratch"])
        arg = kind in ("argmax", "argmin")
        some = next(iter(accs.values()))
        vt = some[0].type if arg else some.type
        ebytes = 8 if vt in (f64, i64) else 4
        out_shape = rm.shape
        out_n = 1
        for s in out_shape:
            out_n *= s
        idx_base = base + out_n * W * ebytes
        # this warp's digit along the axis
        wd = ir.Constant(i32, 0)
        eb = self.eb
        for k, p in enumerate(warp_bits):
            bit = eb.and_(eb.lshr(self.tid, ir.Constant(i32, p)), ir.Constant(i32, 1))
            wd = eb.or_(wd, eb.shl(bit, ir.Constant(i32, k)))
        rtb = self.tbase(rm)

        def out_lin(key):
            lin = ir.Constant(i32, 0)
            for d, s in enumerate(out_shape):
                c = self._add(rtb[d], key[d])
                lin = b.add(b.mul(lin, ir.Constant(i32, s)), self._i(c))
            return lin

        def widen(x):
            if x.type in (f32, f64, i32, i64):
                return x
            return b.zext(x, i32) if x.type != i1 else b.zext(x, i32)

        def narrow(x, t):
            return x if x.type == t else b.trunc(x, t)
        self.tgt.barrier(b)
        lins = {key: out_lin(key) for key in accs}
        for key, acc in accs.items():
            val = acc[0] if arg else acc
            slot = b.add(b.mul(lins[key], ir.Constant(i32, W)), wd)
            wv = widen(val)
            b.store(wv, self.sptr(b.add(ir.Constant(i32, base), b.mul(slot, ir.Constant(i32, ebytes)))))
            if arg:
                b.store(acc[1], self.sptr(b.add(ir.Constant(i32, idx_base), b.mul(slot, ir.Constant(i32, 4)))))
        self.tgt.barrier(b)
        new = {}
        for key, acc in accs.items():
            val0 = acc[0] if arg else acc
            wt = widen(val0).type
            res = None
            for w in range(W):
                slot = b.add(b.mul(lins[key], ir.Constant(i32, W)), ir.Constant(i32, w))
                x = b.load(self.sptr(b.add(ir.Constant(i32, base), b.mul(slot, ir.Constant(i32, ebytes)))), typ=wt)
                x = narrow(x, val0.type)
                if arg:
                    ix = b.load(self.sptr(b.add(ir.Constant(i32, idx_base), b.mul(slot, ir.Constant(i32, 4)))), typ=i32)
                    x = (x, ix)
                res = x if res is None else self._combine(kind, dt, res, x)
            new[key] = res
        return new
