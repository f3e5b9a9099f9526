"""The ping-pong of two consumer warpgroups (Hopper; loop attributes `pingpong`, `pingpong_barrier`,
decided by passes/pingpong.py, whose docstring has the counting and deadlock arguments).

For consumer warpgroup w = thread id / 128 (0 or 1) and B = `pingpong_barrier`:
* before the loop, warpgroup 1 arrives at B (warpgroup 0 goes first);
* in the body, `bar.sync B + w, 256` right before the first wgmma dot's `wgmma.fence` (after an RS
  dot's A registers are packed), `bar.arrive B + 1 - w, 256` right after the last wgmma dot's
  `wgmma.commit_group` (before its wait);
* after the loop (after its exit's wgmma wait), warpgroup 0 syncs on B once more: the drain of
  warpgroup 1's last arrive.
Which dots open and close the window is read from the IR (the first and last top-level dots with a
wgmma atom), not chosen here. A barrier any lowering emits inside the window would hang (the other
warpgroup waits at its own sync meanwhile): a located error.
"""
from __future__ import annotations

import llvmlite.ir as ir

from .llvm_util import i32

PINGPONG_THREADS = 256             # the two consumer warpgroups: 128 arrive + 128 sync per phase


class PingpongLowering:
    _pingpong_open: dict = {}       # id(first wgmma dot) -> (this warpgroup's barrier, the other's)
    _pingpong_close: dict = {}      # id(last wgmma dot) -> (this warpgroup's barrier, the other's)
    _pingpong_barriers_at_open = 0

    def pingpong_begin(self, op):
        """Before a `pingpong` loop: check, name the barriers, warpgroup 1's head start. Returns the
        barrier values (or None for an ordinary loop), for pingpong_end."""
        if not op.attrs.get("pingpong"):
            return None
        if "pingpong_barrier" not in op.attrs:
            raise self.error("pingpong = true without pingpong_barrier: run the pingpong pass (passes/pingpong.py)")
        if not self.target.has("wgmma") or self.role_barrier is None or \
                self.role_barrier[1] != PINGPONG_THREADS or self.role_leader != 0:
            raise self.error(f"pingpong needs the consumer region of a warp_specialize with two warpgroups "
                             f"({PINGPONG_THREADS} threads) on a target with wgmma")
        dots = [o for o in op.regions[0].ops if o.name == "dot" and str(o.attrs.get("atom", "")).startswith("wgmma")]
        if not dots:
            raise self.error("pingpong: the loop body has no wgmma dot at its top level")
        b = self.b
        base = int(op.attrs["pingpong_barrier"])
        wg = b.lshr(self.tid, ir.Constant(i32, 7), name="warpgroup")
        mine = b.add(ir.Constant(i32, base), wg, name="pp.mine")
        other = b.sub(ir.Constant(i32, base + 1), wg, name="pp.other")
        self._pingpong_open = {**self._pingpong_open, id(dots[0]): (mine, other)}
        self._pingpong_close = {**self._pingpong_close, id(dots[-1]): (mine, other)}
        first = b.icmp_unsigned("==", wg, ir.Constant(i32, 1))
        with b.if_then(first):
            self.tgt.named_barrier_arrive(b, ir.Constant(i32, base), PINGPONG_THREADS)
        return base, wg

    def pingpong_end(self, state):
        """After the loop: warpgroup 0 syncs on its barrier once more (warpgroup 1's last arrive)."""
        if state is None:
            return
        base, wg = state
        b = self.b
        with b.if_then(b.icmp_unsigned("==", wg, ir.Constant(i32, 0))):
            self.tgt.named_barrier_sync(b, ir.Constant(i32, base), PINGPONG_THREADS)

    def pingpong_before_issue(self, op):
        """Before a wgmma dot's fence: wait for this warpgroup's turn if op opens the window."""
        ids = self._pingpong_open.get(id(op))
        if ids is not None:
            self.tgt.named_barrier_sync(self.b, ids[0], PINGPONG_THREADS)
            self._pingpong_barriers_at_open = self.tgt.barriers_emitted

    def pingpong_after_issue(self, op):
        """After a wgmma dot's commit: hand the turn to the other warpgroup if op closes the window."""
        ids = self._pingpong_close.get(id(op))
        if ids is None:
            return
        if self.tgt.barriers_emitted != self._pingpong_barriers_at_open:
            raise self.error("pingpong: a barrier of both consumer warpgroups between the loop's first and last "
                             "wgmma (a layout conversion or reduction through shared memory?) would hang: the other "
                             "warpgroup waits for its turn there")
        self.tgt.named_barrier_arrive(self.b, ids[1], PINGPONG_THREADS)
