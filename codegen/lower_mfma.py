"""dot on AMD: MFMA atoms where the layouts are the MFMA fragments, the FMA loop otherwise.

Instruction selection (passes/select_instructions.py) wrote the atom: `mfma.32x32x8`,
`mfma.16x16x16` (CDNA2/3), `mfma.32x32x16`, `mfma.16x16x32` (CDNA4), with `warps = [wm, wn]`, or
`fma`. For an MFMA atom layout inference gave the operands and the accumulator the MFMA fragment
layouts tiled over the waves (ir/thread_maps.py `mfma_a/mfma_b/mfma_c`); which register slot feeds
which atom input is looked up by tile coordinate in those layouts, from the fragment tables of
ir/fragments.py -- nothing is assumed about slot order.
"""
from __future__ import annotations

from ..ir.thread_maps import MMA_IN, ThreadMap, mfma_dot_grid

from .lower_shared import _atoms
from .table import lowers
from .values import RTile


class MfmaLowering:
    @lowers("dot", family="amd")
    def op_dot_amd(self, op):
        a, bt, acc, (M, N, K), rm, atom = self.dot_operands(op)       # (lower_dot.py)
        rt = op.results[0].type
        if atom.startswith("mfma."):
            vals = self._dot_mfma(op, atom, self.materialize(a), self.materialize(bt), acc, M, N, K)
        else:
            vals = self._dot_fma(op, self.materialize(a), self.materialize(bt), acc, M, N, K)
        self.set(op.results[0], RTile(rm, vals, rt.dtype))

    def _dot_mfma(self, op, atom, a, bt, acc, M, N, K):
        """One MFMA per (row atom, column atom, k step) of this thread's wave: the A atom of its
        rows meets the B atom of its columns. Atom origins and register slots come from the layouts
        (thread 0's tile coordinates); the order of an atom's accumulator registers is the fragment's
        (ir/fragments.py, through the Target's atom)."""
        at = self.target.mma_atom(atom)
        if a.dtype.name not in MMA_IN or a.dtype != bt.dtype or acc.dtype.name != "f32":
            raise self.error(f"atom = {atom!r} multiplies bf16/f16 into f32, not {a.dtype} x {bt.dtype} into {acc.dtype}")
        g = op.attrs.get("warps")
        got = mfma_dot_grid(a.map, bt.map, acc.map, self.num_warps, [(at.name, at.m, at.n, at.k)])
        if not (isinstance(g, list) and len(g) == 2) or got is None or list(got[1:]) != list(g):
            raise self.error(f"atom = {atom!r} with warps = {g}: the operands are not the {atom} fragments of that "
                             f"wave grid (layout inference gave "
                             f"{'no MFMA layouts' if got is None else 'warps = ' + str(list(got[1:]))})")
        b = self.b
        kper = at.k * at.m // at.group                     # consecutive k elements per lane
        creg = ThreadMap.from_tv(at.c()).vcoord_list()     # accumulator register r -> (i, j) in the atom
        via, vib, vic = a.map.value_index(), bt.map.value_index(), acc.map.value_index()

        def slot(vi, c):
            s_ = vi.get(c)
            if s_ is None:
                raise self.error(f"internal: fragment coordinate {c} missing from the layout")
            return s_
        out = list(acc.vals)
        c_atoms = _atoms(acc.map, (at.m, at.n))
        k_steps = sorted({o[1] for o in _atoms(a.map, (at.m, at.k))})
        for k0 in k_steps:
            A, B = {}, {}
            for r0, n0 in c_atoms:
                if r0 not in A:
                    A[r0] = [a.vals[slot(via, (r0, k0 + e))] for e in range(kper)]
                if n0 not in B:
                    B[n0] = [bt.vals[slot(vib, (k0 + e, n0))] for e in range(kper)]
            for r0, n0 in c_atoms:
                cs = [slot(vic, (r0 + i, n0 + j)) for i, j in creg]
                d = self.tgt.mfma(b, atom, a.dtype.name, A[r0], B[n0], [out[s_] for s_ in cs])
                for s_, x in zip(cs, d):
                    out[s_] = x
        src = acc.map.dup_source()
        return [out[src[v]] for v in range(len(out))]
