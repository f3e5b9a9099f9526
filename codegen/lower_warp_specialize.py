"""Warp roles on Hopper (NVIDIA sm_90a): the `warp_specialize` op, `setmaxnreg`, and the barriers
of a role (the decisions are passes/warp_specialize.py's, read here from the op's attributes).

* `warp_specialize {producer_warps, consumer_barrier, producer_barrier}`: threads 32*num_warps and
  up run region 0 (the producer), the others region 1 (the consumers); both branches meet after it.
  While a region is lowered, every barrier a lowering emits (a layout conversion through shared
  memory, mbarrier_init/inval, `barrier`) is that role's named barrier, `bar.sync id, threads` over
  the role's threads only (the other role never arrives at it), and the role's first thread is the
  one that issues TMA copies and arrives on mbarriers for it.
* `setmaxnreg {regs, action}`: `setmaxnreg.<inc|dec>.sync.aligned.u32 regs` (per warpgroup; ptxas
  needs the kernel's register count fixed at entry: the function attribute `maxnreg`, .maxnreg).
* An explicit `barrier` in a role must name the role's barrier (id and threads); anything else would
  hang (the producer never reaches a consumer barrier), so it is a located error.
"""
from __future__ import annotations

import llvmlite.ir as ir

from .table import lowers
from .llvm_util import i32


class WarpSpecializeLowering:
    role_leader = 0                 # the first thread of the role being lowered (TMA issue, mbarrier arrive)
    role_barrier = None             # (id, threads) of the role being lowered; None: the whole block (bar.sync 0)

    def launch_warps(self) -> int:
        """Warps the kernel is launched with: num_warps, plus each warp_specialize's producer warps."""
        return self.num_warps + sum(int(o.attrs["producer_warps"]) for o in self.fn.body.ops
                                    if o.name == "warp_specialize")

    @lowers("warp_specialize", family="nvidia")
    def op_warp_specialize(self, op):
        if not self.target.has("setmaxnreg"):
            raise self.error(f"warp_specialize needs a target with setmaxnreg (sm_90a); {self.target.name} has none")
        if op.parent is not self.fn.body or self.role_barrier is not None:
            raise self.error("warp_specialize must be at the kernel's top level")
        b = self.b
        ncons = self.target.threads(self.num_warps)
        nprod = self.target.threads(int(op.attrs["producer_warps"]))
        is_prod = b.icmp_unsigned(">=", self.tid, ir.Constant(i32, ncons))
        prodb = self.llfn.append_basic_block("producer")
        consb = self.llfn.append_basic_block("consumers")
        end = self.llfn.append_basic_block("roles.end")
        b.cbranch(is_prod, prodb, consb)
        roles = ((op.regions[0], prodb, ncons, (int(op.attrs["producer_barrier"]), nprod)),
                 (op.regions[1], consb, 0, (int(op.attrs["consumer_barrier"]), ncons)))
        for region, blk, leader, bar in roles:
            b.position_at_end(blk)
            self.role_leader, self.role_barrier, self.tgt.barrier_scope = leader, bar, bar
            try:
                self.lower_block(region)
            finally:
                self.role_leader, self.role_barrier, self.tgt.barrier_scope = 0, None, None
            b.branch(end)
        self.current_op = op
        b.position_at_end(end)

    @lowers("setmaxnreg", family="nvidia")
    def op_setmaxnreg(self, op):
        if self.role_barrier is None:
            raise self.error("setmaxnreg belongs in a warp_specialize region (it changes a whole warpgroup's budget)")
        if not self.fn.attrs.get("maxnreg"):
            raise self.error("setmaxnreg needs the kernel's register count fixed: function attribute maxnreg")
        self.tgt.setmaxnreg(self.b, int(op.attrs["regs"]), op.attrs["action"] == "inc")

    def named_barrier_of(self, op):
        """(id, threads) of an explicit `barrier`, or None for the whole block's; checked against the role."""
        want = self.role_barrier
        got = (int(op.attrs["id"]), int(op.attrs["threads"])) if "id" in op.attrs else None
        if got != want:
            if want is None:
                raise self.error(f"a named barrier {{id = {got[0]}, threads = {got[1]}}} outside a warp_specialize "
                                 f"region: every thread of the block would not arrive at it")
            raise self.error(f"a barrier in this warp_specialize region must be named {{id = {want[0]}, threads = "
                             f"{want[1]}}} (the role's threads only), got {got or 'the whole block'}")
        return got
