"""dot on AMD: MFMA atoms where the layouts are the MFMA fragments, the FMA loop otherwise.

Instruction selection (passes/select_instructions.py) wrote the atom: `mfma.32x32x8`,
`mfma.16x16x16` (CDNA2/3), `mfma.32x32x16`, `mfma.16x16x32` (CDNA4), with `warps = [wm, wn]`, or
`fma`. For an MFMA atom layout inference gave the operands and the accumulator the MFMA fragment
layouts tiled over the waves (ir/thread_maps.py `mfma_a/mfma_b/mfma_c`); which register slot feeds
which atom input is looked up by tile coordinate in those layouts, from the fragment tables of
ir/fragments.py -- nothing is assumed about slot order.
"""
from __future__ import annotations

from .table import lowers
from .values import RTile


class MfmaLowering:
    @lowers("dot", family="amd")
    def op_dot_amd(self, op):
        a, bt = self.get(op.operands[0]), self.get(op.operands[1])
        acc = self.rtile(op.operands[2])
        M, K = op.operands[0].type.shape
        N = op.operands[1].type.shape[1]
        rt = op.results[0].type
        rm = self.tmap(rt)
        if not acc.map.same(rm):
            raise self.error(f"dot: accumulator layout {acc.map} differs from the result's {rm}")
        atom = op.attrs.get("atom")
        if atom is None:
            raise self.error("dot has no atom (attribute `atom`): run the select_instructions pass")
        if self.target.mma_atom(atom) is None:
            raise self.error(f"atom = {atom!r}: target {self.target.name} offers {', '.join(self.target.mma_names)}")
        if atom.startswith("mfma."):
            vals = self._dot_mfma(op, atom, self.materialize(a), self.materialize(bt), acc, M, N, K)
        else:
            vals = self._dot_fma(op, self.materialize(a), self.materialize(bt), acc, M, N, K)
        self.set(op.results[0], RTile(rm, vals, rt.dtype))

    def _dot_mfma(self, op, atom, a, bt, acc, M, N, K):
        raise self.error(f"atom = {atom!r}: the MFMA lowering is not implemented yet")
