"""dot: tensor-core atoms where the layouts are the mma fragments, an FMA loop otherwise.

Tensor cores (mma.sync m16n8k16, bf16/f16 inputs, f32 accumulate): layout inference gives the
accumulator the fragment layout `thread_maps.mma_c(M, N, wm, wn)` and the operands
`mma_a` / `mma_b` of the same warp grid (their values arrive through ldmatrix, see
lower_shared.py). Which register slot feeds which atom is looked up by tile coordinate in the
layouts, from the fragment tables of ir/fragments.py; nothing is assumed about slot order.

FMA fallback (any dtypes, any shapes, any layouts): both operands are staged through scratch
shared memory and every thread computes its accumulator elements with a loop over K.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..ir.dtypes import DType, u8
from ..ir.layout import Layout
from ..ir.thread_maps import mma_dot_grid

from .lower_shared import _atoms
from .values import LazyFrag, RTile, SView
from .table import lowers
from .llvm_util import f32, f64, i1, i8, i16, i32, i64



class DotLowering:
    @lowers("dot", family="nvidia")       # mma.sync / wgmma / FMA, as instruction selection chose
    def op_dot(self, op):
        """Carries out the atom instruction selection recorded (attribute `atom`): a wgmma form,
        mma.sync m16n8k16 over the warp grid `warps`, or the FMA loop."""
        a, bt, acc, (M, N, K), rm, atom = self.dot_operands(op)
        rt = op.results[0].type
        if atom.startswith("wgmma"):
            vals = self._dot_wgmma(a, bt, acc, M, N, K, self._wgmma_plan(op, atom, a, bt, acc, M, N, K))
        elif atom in ("mma.m16n8k16", "mma.m16n8k32"):
            at = self.target.mma_atom(atom, a.dtype.name, acc.dtype.name)
            if at is None or a.dtype != bt.dtype:
                have = self.target.mma_atom(atom)
                pairs = ", ".join(f"{i} -> {c}" for i, c in (have.pairs or [(i, c) for i in have.inputs
                                                                              for c in have.acc]))
                raise self.error(f"atom = {atom!r} on {self.target.name} multiplies {pairs}, not {a.dtype} into {acc.dtype}")
            grid = self._mma_grid(op, a, bt, acc)
            vals = self._dot_mma(a, bt, acc, M, N, K, *grid)
        else:
            vals = self._dot_fma(op, self.materialize(a), self.materialize(bt), acc, M, N, K)
        self.set(op.results[0], RTile(rm, vals, rt.dtype))

    def dot_operands(self, op):
        """What every family's dot lowering starts from: the operands (RTile or LazyFrag), the
        accumulator, (M, N, K), the result's layout and the recorded atom -- checked to exist on the
        target and the accumulator to have the result's layout."""
        a, bt = self.get(op.a), self.get(op.b)
        acc = self.rtile(op.acc)
        M, K = op.a.type.shape
        N = op.b.type.shape[1]
        rm = self.tmap(op.results[0].type)
        if not acc.map.same(rm):
            raise self.error(f"dot: accumulator layout {acc.map} differs from the result's {rm}")
        atom = op.attrs.get("atom")
        if atom is None:
            raise self.error("dot has no atom (attribute `atom`): run the select_instructions pass")
        if self.target.mma_atom(atom) is None:
            raise self.error(f"atom = {atom!r}: target {self.target.name} offers {', '.join(self._atom_names())}")
        return a, bt, acc, (M, N, K), rm, atom

    def _atom_names(self):
        out = []
        for at in self.target.mma_atoms:
            n = (f"wgmma.m64nNk{at.k}.ss" + ("" if at.k_major_only else "|rs")) if at.name == "wgmma" else at.name
            if n not in out:
                out.append(n)
        return out

    def _mma_grid(self, op, a, bt, acc):
        """The warp grid of an mma.sync dot (attribute `warps`), checked against the operands'
        fragment layouts."""
        g = op.attrs.get("warps")
        if not (isinstance(g, list) and len(g) == 2):
            raise self.error("an mma.sync or wgmma dot needs attribute warps = [wm, wn]")
        grid = mma_dot_grid(a.map, bt.map, acc.map, self.num_warps, a.dtype.bits)
        if grid != tuple(g):
            raise self.error(f"atom {op.attrs.get('atom')} with warps = {g}: the operands are not the mma.sync fragments "
                             f"of that warp grid (layout inference gave "
                             f"{'no mma layouts' if grid is None else 'warps = ' + str(list(grid))})")
        return grid

    def _pack2(self, x, y, dt: DType):
        return self._pack([x, y], dt)

    def _pack(self, xs, dt: DType):
        """One b32 fragment register from 32 // bits elements (element 0 in the low bits)."""
        b = self.b
        t = ir.IntType(dt.bits)
        vec = ir.Constant(ir.VectorType(t, len(xs)), ir.Undefined)
        for h, x in enumerate(xs):
            vec = b.insert_element(vec, self.to_code(x, dt), ir.Constant(i32, h))
        return b.bitcast(vec, i32)

    def _dot_mma(self, a, bt, acc, M, N, K, wm, wn):
        """mma.sync atoms (m16n8k16 for 16-bit inputs, m16n8k32 for 8-bit ones): for every k step,
        every accumulator atom (16x8) of this thread's warp meets the A atom of its rows and the B
        atom of its columns. A fragment register holds e = 32 // bits consecutive k elements
        (ir/fragments.py); atom origins and register slots come from the layouts (tile coordinates
        of thread 0's slots)."""

        b = self.b
        via, vib, vic = a.map.value_index(), bt.map.value_index(), acc.map.value_index()
        dt = a.dtype
        e = 32 // dt.bits
        kk = 8 * e                                   # k of one atom
        out = list(acc.vals)
        la, lb = a, bt
        c_atoms = _atoms(acc.map, (16, 8))
        ks_list = sorted({o[1] for o in _atoms(a.map, (16, kk))})

        def slot(vi, c):
            s_ = vi.get(c)
            if s_ is None:
                raise self.error(f"internal: fragment coordinate {c} missing from the layout")
            return s_
        for k0 in ks_list:
            if isinstance(la, LazyFrag):
                a = _Vals(self._read_ldmatrix(la.sv, la.map, la.dtype, *la.plan, ks_only=k0, partial=True))
            if isinstance(lb, LazyFrag):
                bt = _Vals(self._read_ldmatrix(lb.sv, lb.map, lb.dtype, *lb.plan, ks_only=k0, partial=True))
            A, B = {}, {}
            for r0, n0 in c_atoms:
                if r0 not in A:
                    regs = []
                    for j in range(4):
                        r, c = r0 + 8 * (j & 1), k0 + 4 * e * (j >> 1)
                        regs.append(self._pack([a.vals[slot(via, (r, c + h))] for h in range(e)], dt))
                    A[r0] = regs
                if n0 not in B:
                    regs = []
                    for j in range(2):
                        k = k0 + 4 * e * j
                        regs.append(self._pack([bt.vals[slot(vib, (k + h, n0))] for h in range(e)], dt))
                    B[n0] = regs
            for r0, n0 in c_atoms:
                cs = [slot(vic, (r0 + 8 * (i >> 1), n0 + (i & 1))) for i in range(4)]
                if e == 2:
                    d = self.tgt.mma_m16n8k16(b, A[r0], B[n0], [out[s_] for s_ in cs], dt.name)
                else:
                    d = self.tgt.mma_m16n8k32(b, A[r0], B[n0], [out[s_] for s_ in cs], dt.name)
                for s_, x in zip(cs, d):
                    out[s_] = x
        src = acc.map.dup_source()
        return [out[src[v]] for v in range(len(out))]

    # ------------------------------------------------------------------ FMA
    def _stage(self, sv_off, tile, shape):
        """Write a register tile into scratch at byte offset sv_off, row-major, one code per
        byte-or-more element; returns the SView."""
        dt = tile.dtype
        if dt.bits >= 8:
            sv = SView(ir.Constant(i32, sv_off), tuple(shape), dt,
                       Layout(tuple(shape), (shape[1], 1)))
            self.write_tile_smem(sv, tile)
            return sv, dt
        codes = RTile(tile.map, [self.to_code(x, dt) for x in tile.vals], u8)
        sv = SView(ir.Constant(i32, sv_off), tuple(shape), u8, Layout(tuple(shape), (shape[1], 1)))
        self.write_tile_smem(sv, codes)
        return sv, u8

    def _dot_fma(self, op, a, bt, acc, M, N, K):
        b = self.b
        if "smem_scratch" not in op.attrs:
            raise self.error("dot needs scratch shared memory: run shared_memory_planning first")
        base = int(op.attrs["smem_scratch"])
        ebytes = max(1, a.dtype.bits // 8)
        self.tgt.barrier(b)
        sa, sda = self._stage(base, a, (M, K))
        sb, sdb = self._stage(base + M * K * ebytes, bt, (K, N))
        self.tgt.barrier(b)
        cdt = acc.dtype
        m = acc.map
        uniq = m.unique_values()
        float_acc = cdt.is_float
        work = f64 if cdt.name == "f64" else f32

        def to_acc(x):
            return self.num.to_work(b, x, cdt) if float_acc else x
        accs0 = [to_acc(acc.vals[v]) for v in uniq]
        # the k loop
        pre = b.block
        head = self.llfn.append_basic_block("dot.k")
        body = self.llfn.append_basic_block("dot.body")
        done = self.llfn.append_basic_block("dot.done")
        b.branch(head)
        b.position_at_end(head)
        kphi = b.phi(i32)
        kphi.add_incoming(ir.Constant(i32, 0), pre)
        phis = []
        for x in accs0:
            p = b.phi(x.type)
            p.add_incoming(x, pre)
            phis.append(p)
        b.cbranch(b.icmp_signed("<", kphi, ir.Constant(i32, K)), body, done)
        b.position_at_end(body)
        rows, cols = {}, {}
        new = []
        for u, p in zip(uniq, phis):
            r, c = self.coords(m, u)
            rk, ck = str(r), str(c)
            if rk not in rows:
                x = self._sload(self.sview_addr(sa, [r, kphi]), sda, 1)[0]
                x = self.from_code(x, a.dtype) if sda is u8 else x
                rows[rk] = self._dot_in(x, a.dtype, cdt, work)
            if ck not in cols:
                y = self._sload(self.sview_addr(sb, [kphi, c]), sdb, 1)[0]
                y = self.from_code(y, bt.dtype) if sdb is u8 else y
                cols[ck] = self._dot_in(y, bt.dtype, cdt, work)
            xa, yb = rows[rk], cols[ck]
            if float_acc:
                fn = "llvm.fma.f64" if work == f64 else "llvm.fma.f32"
                new.append(self.decls.call(b, fn, work, [work] * 3, [xa, yb, p]))
            else:
                new.append(b.add(p, b.mul(xa, yb)))
        nk = b.add(kphi, ir.Constant(i32, 1))
        latch = b.block
        b.branch(head)
        kphi.add_incoming(nk, latch)
        for p, x in zip(phis, new):
            p.add_incoming(x, latch)
        b.position_at_end(done)
        vals = [None] * m.nvals
        for u, p in zip(uniq, phis):
            vals[u] = self.num.from_work(b, p, cdt) if float_acc else p
        src = m.dup_source()
        return [vals[src[v]] for v in range(m.nvals)]

    def _dot_in(self, x, dt: DType, cdt: DType, work):
        b = self.b
        if cdt.is_float:
            w = self.num.to_work(b, x, dt) if dt.is_float else (
                b.sitofp(x, work) if dt.kind == "int" else b.uitofp(x, work))
            return b.fpext(w, f64) if work == f64 and w.type == f32 else w
        t = i32 if cdt.bits <= 32 else i64
        if dt.kind == "int":
            return b.sext(x, t) if x.type.width < t.width else x
        return b.zext(x, t) if x.type.width < t.width else x


class _Vals:
    def __init__(self, vals):
        self.vals = vals
