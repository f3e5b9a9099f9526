"""The ping-pong of two consumer warpgroups (Hopper; loop attributes `pingpong`, `pingpong_barrier`,
decided by passes/pingpong.py, whose docstring has the counting and deadlock arguments).

For consumer warpgroup w = thread id / 128 (0 or 1) and B = `pingpong_barrier`, the turn's window
`pingpong_window` (passes/pingpong.py; "within" where absent, as in IR written before it existed):
* before the loop, warpgroup 1 arrives at B (warpgroup 0 goes first); "between": then each
  warpgroup syncs on B + w (its first turn: up to the first wgmma of iteration 0);
* in the body, `bar.sync B + w, 256` right before the wgmma dot that opens a turn (its `wgmma.fence`,
  after an RS dot's A registers are packed) -- the first wgmma dot ("within") or the last
  ("between") -- and `bar.arrive B + 1 - w, 256` right after the commit of the one that closes it --
  the last ("within") or the first ("between"), before its wait;
* after the loop (after its exit's wgmma wait): "between": each warpgroup arrives at B + 1 - w (its
  last turn ends); then warpgroup 0 syncs on B once more: the drain of warpgroup 1's last arrive.
Which dots open and close the window is read from the IR (the first and last top-level dots with a
wgmma atom), not chosen here. A barrier any lowering emits inside a turn would hang (the other
warpgroup waits at its own sync meanwhile): a located error.
"""
from __future__ import annotations

import llvmlite.ir as ir

from .llvm_util import i32

PINGPONG_THREADS = 256             # the two consumer warpgroups: 128 arrive + 128 sync per phase


class PingpongLowering:
    _pingpong_open: dict = {}       # id(the wgmma dot that opens a turn) -> (this warpgroup's barrier, the other's)
    _pingpong_close: dict = {}      # id(the wgmma dot that closes it) -> (this warpgroup's barrier, the other's)
    _pingpong_barriers_at_open = 0

    def pingpong_begin(self, op):
        """Before a `pingpong` loop: check, name the barriers, warpgroup 1's head start ("between": and
        each warpgroup's first turn). Returns the state for pingpong_end, or None for an ordinary loop."""
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
        between = op.attrs.get("pingpong_window", "within") == "between"
        if between and len(dots) < 2:
            raise self.error("pingpong_window = \"between\" needs two wgmma dots in the loop body (the pass takes "
                             "\"within\" for one)")
        b = self.b
        base = int(op.attrs["pingpong_barrier"])
        wg = b.lshr(self.tid, ir.Constant(i32, 7), name="warpgroup")
        mine = b.add(ir.Constant(i32, base), wg, name="pp.mine")
        other = b.sub(ir.Constant(i32, base + 1), wg, name="pp.other")
        opens, closes = (dots[-1], dots[0]) if between else (dots[0], dots[-1])
        self._pingpong_open = {**self._pingpong_open, id(opens): (mine, other)}
        self._pingpong_close = {**self._pingpong_close, id(closes): (mine, other)}
        first = b.icmp_unsigned("==", wg, ir.Constant(i32, 1))
        with b.if_then(first):
            self.tgt.named_barrier_arrive(b, ir.Constant(i32, base), PINGPONG_THREADS)
        if between:                                      # the first turn: up to iteration 0's first wgmma
            self.tgt.named_barrier_sync(b, mine, PINGPONG_THREADS)
            self._pingpong_barriers_at_open = self.tgt.barriers_emitted
        return base, wg, (other if between else None)

    def pingpong_end(self, state):
        """After the loop: "between": the last turn ends (arrive at the other's barrier); then warpgroup
        0 syncs on its barrier once more (warpgroup 1's last arrive)."""
        if state is None:
            return
        base, wg, other = state
        b = self.b
        if other is not None:
            self._pingpong_check_turn()
            self.tgt.named_barrier_arrive(b, other, PINGPONG_THREADS)
        with b.if_then(b.icmp_unsigned("==", wg, ir.Constant(i32, 0))):
            self.tgt.named_barrier_sync(b, ir.Constant(i32, base), PINGPONG_THREADS)

    def pingpong_before_issue(self, op):
        """Before a wgmma dot's fence: wait for this warpgroup's turn if op opens it."""
        ids = self._pingpong_open.get(id(op))
        if ids is not None:
            self.tgt.named_barrier_sync(self.b, ids[0], PINGPONG_THREADS)
            self._pingpong_barriers_at_open = self.tgt.barriers_emitted

    def pingpong_after_issue(self, op):
        """After a wgmma dot's commit: hand the turn to the other warpgroup if op closes it."""
        ids = self._pingpong_close.get(id(op))
        if ids is None:
            return
        self._pingpong_check_turn()
        self.tgt.named_barrier_arrive(self.b, ids[1], PINGPONG_THREADS)

    def _pingpong_check_turn(self):
        """No barrier of both consumer warpgroups was emitted since the turn opened (in emission order:
        "between" turns run from the last wgmma to the loop's end and from its start to the first)."""
        if self.tgt.barriers_emitted != self._pingpong_barriers_at_open:
            raise self.error("pingpong: a barrier of both consumer warpgroups inside a turn (between the loop's first "
                             "and last wgmma, or around the loop's end and start for pingpong_window = \"between\"; "
                             "a layout conversion or reduction through shared memory?) would hang: the other "
                             "warpgroup waits for its turn there")
