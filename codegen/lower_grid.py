"""xcd_remap: block ids grouped by XCD (ir/grid.py has the arithmetic and why), for every GPU family.
The number of XCDs is the op's `xcds` attribute (instruction selection writes the target's: 8 on
gfx942/gfx950, 1 on NVIDIA, where the op is the identity and emits nothing)."""
from __future__ import annotations

import llvmlite.ir as ir

from .llvm_util import i32
from .table import lowers


@lowers("xcd_remap")
def op_xcd_remap(self, op):
    pid, n = self.get(op.operands[0]), self.get(op.operands[1])
    x = op.attrs.get("xcds")
    if x is None:
        raise self.error("xcd_remap has no `xcds`: run the select_instructions pass")
    if int(x) <= 1:
        self.set(op.results[0], pid)
        return
    b = self.b
    X = ir.Constant(i32, int(x))
    one = ir.Constant(i32, 1)
    per = b.udiv(b.add(n, ir.Constant(i32, int(x) - 1)), X)           # ceil(n / X)
    r = b.urem(n, X)
    tall = b.select(b.icmp_unsigned("==", r, ir.Constant(i32, 0)), X, r)
    xcd, j = b.urem(pid, X), b.udiv(pid, X)
    on_tall = b.add(b.mul(xcd, per), j)
    on_short = b.add(b.add(b.mul(tall, per), b.mul(b.sub(xcd, tall), b.sub(per, one))), j)
    self.set(op.results[0], b.select(b.icmp_unsigned("<", xcd, tall), on_tall, on_short))
