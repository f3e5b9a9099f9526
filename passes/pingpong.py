"""pingpong: the two consumer warpgroups of a warp-specialized loop take turns at the tensor cores
(FlashAttention-3's "ping-pong" / inter-warpgroup overlap): while one issues its wgmmas, the other runs
its softmax (exp2, max, sum: SFU and ALU work), so the GEMMs of one overlap the other's non-GEMM work.

Asked for by `tile.range(..., warp_specialize=True, pingpong=True)` (loop attribute `pingpong`; the
front end refuses it without warp_specialize). Runs after warp_specialize. It applies where the
target has `wgmma`, the loop is the consumers' loop of a `warp_specialize` op (region 1) with exactly
two consumer warpgroups (`num_warps = 8`), its body has at least one wgmma dot at its top level, and
no explicit `barrier` lies between its first and its last wgmma dot; then it records the named
barriers to use, `pingpong_barrier = B` (B = one past the op's consumer and producer barriers: ids B
and B + 1). Otherwise a tile.PerformanceWarning says why and the attribute is dropped (the same
kernel, without the turns). The values are unchanged: only the order in which the warpgroups issue
their wgmmas is; the interpreter ignores the attribute.

What codegen does (codegen/lower_pingpong.py), for consumer warpgroup w (0 or 1; thread id / 128):
    before the loop:  w == 1: bar.arrive B, 256          (warpgroup 0's head start)
    each iteration:   bar.sync  B + w, 256               before the first wgmma dot's wgmma.fence
                      bar.arrive B + 1 - w, 256          after the last wgmma dot's commit_group
                                                          (before its wait: the other one may issue)
    after the loop:   w == 0: bar.sync B, 256            (the drain)

Measured limit (H100, 2026-12-06, BENCHMARKS.md): with the window from the first wgmma (q k^T) to the
last (p v), the softmax between them lies inside a warpgroup's turn, so the turns serialize the two
warpgroups instead of overlapping one's softmax with the other's GEMMs: WS + PINGPONG ran at 295
TF/s against WS alone at 398 (S2048 D128). FlashAttention-3 syncs before p v of iteration j and
arrives after q k^T of iteration j + 1 is issued (the softmax outside every turn). Moving the window
there needs the wait on the next stage's `full` barrier taken out of it first (FA3 waits for K
before its sync): inside it, with 2 stages and an in-flight p v, the producer can wait for the other
warpgroup's release while that warpgroup waits for this one's turn to end.

Counting. A named barrier's phase completes when 256 threads (the count, = the two consumer
warpgroups' 128 + 128) have arrived at it, by bar.arrive (not waiting) or bar.sync (waiting). Barrier
B (warpgroup 0's turn): warpgroup 1 arrives once before the loop and once per iteration; warpgroup 0
syncs once per iteration and once after the loop. Barrier B + 1 (warpgroup 1's turn): warpgroup 0
arrives once per iteration, warpgroup 1 syncs once per iteration. Both warpgroups run the same number
n of iterations (the loop's bounds are thread-uniform: the producer computes them too), zero included,
so B sees n + 1 arrives of 128 and n + 1 syncs of 128, B + 1 n and n: every phase has exactly one
warpgroup arriving and the other syncing, and no barrier is left with arrivals nobody syncs (without
the drain, B would keep warpgroup 1's last arrive). Phases do not mix: warpgroup 1's arrive k >= 1
on B comes after its sync on B + 1 of iteration k - 1, which needs warpgroup 0's arrive of iteration
k - 1, made after warpgroup 0 synced on B in iteration k - 1 (phase k - 1): arrive k belongs to phase
k. Likewise on B + 1.

Deadlock freedom. Inside the window (from a warpgroup's sync to its arrive) the other warpgroup is
waiting at its own sync, so any barrier of both warpgroups there (a consumer-wide `bar.sync 1, 256` of
a layout conversion through shared memory, a cross-warpgroup reduction) would hang: an explicit one
is refused here, one a lowering adds is a located error in codegen. mbarrier waits in the window are
on the producer (`full`), which never waits for a warpgroup in its window: its waits on `empty` need
releases of earlier iterations only (passes/warp_specialize.py, "Deadlock freedom").
"""
from __future__ import annotations


from ..ir.core import Function, Module, Operation
from ..ir.errors import warn_performance
from ..ir.targets import Target, get_target

from .manager import register

__all__ = ["pingpong", "pingpong_function", "CONSUMER_WARPGROUPS"]

CONSUMER_WARPGROUPS = 2            # the two that take turns (FA3's tile: 2 x 64 query rows)


def _consumer_region_of(lp: Operation) -> Operation | None:
    """The warp_specialize op whose consumer region (region 1) holds lp, or None."""
    blk = lp.parent
    while blk is not None:
        op = blk.parent
        if not isinstance(op, Operation):
            return None
        if op.name == "warp_specialize":
            return op if blk is op.regions[1] else None
        blk = op.parent
    return None


def _why_not(fn: Function, lp: Operation, target: Target) -> str | None:
    if not target.has("wgmma"):
        return f"the target {target.name} has no wgmma"
    ws = _consumer_region_of(lp)
    if ws is None:
        return "the loop is not the consumers' loop of a warp-specialized kernel (warp_specialize did not apply)"
    nw = int(fn.attrs.get("num_warps", 4))
    if nw != 4 * CONSUMER_WARPGROUPS:
        return f"it needs exactly {CONSUMER_WARPGROUPS} consumer warpgroups (num_warps = 8), got num_warps = {nw}"
    body = lp.regions[0].ops
    dots = [i for i, o in enumerate(body) if o.name == "dot" and str(o.attrs.get("atom", "")).startswith("wgmma")]
    if not dots:
        return "the loop body has no wgmma dot at its top level"
    if any(o.name == "barrier" for o in body[dots[0]:dots[-1]]):
        return "a barrier lies between the loop's first and last wgmma (the other warpgroup waits for its turn there)"
    return None


def _warn(fn: Function, loop: Operation, why: str):
    warn_performance(fn, loop, f"the loop asked for pingpong=True but its consumer warpgroups do not take turns: {why}",
                     stacklevel=3)


def pingpong_function(fn: Function, target: Target | None = None) -> Function:
    target = get_target(target or fn.attrs.get("target") or "sm_90a")
    for lp in [o for o in fn.walk() if o.name == "for" and o.attrs.get("pingpong")]:
        if "pingpong_barrier" in lp.attrs:
            continue                                      # decided already (IR through the pipeline)
        why = _why_not(fn, lp, target)
        if why:
            lp.attrs.pop("pingpong", None)
            _warn(fn, lp, why)
            continue
        ws = _consumer_region_of(lp)
        lp.attrs["pingpong_barrier"] = max(int(ws.attrs["consumer_barrier"]), int(ws.attrs["producer_barrier"])) + 1
    return fn


@register("pingpong")
def pingpong(m: Module, target: Target) -> Module:
    """Record the named barriers of a `pingpong = true` consumer loop, or drop the attribute with a warning."""
    for fn in m.functions:
        pingpong_function(fn, target)
    return m
