"""pingpong: the two consumer warpgroups of a warp-specialized loop take turns at the tensor cores
(FlashAttention-3's "ping-pong" / inter-warpgroup overlap): while one issues its wgmmas, the other runs
its softmax (exp2, max, sum: SFU and ALU work), so the GEMMs of one overlap the other's non-GEMM work.

Asked for by `tile.range(..., warp_specialize=True, pingpong=True)` (loop attribute `pingpong`; the
front end refuses it without warp_specialize). Runs after warp_specialize. It applies where the
target has `wgmma`, the loop is the consumers' loop of a `warp_specialize` op (region 1) with exactly
two consumer warpgroups (`num_warps = 8`) and its body has at least one wgmma dot at its top level;
then it records the named barriers to use, `pingpong_barrier = B` (B = one past the op's consumer and
producer barriers: ids B and B + 1), and the window of a turn, `pingpong_window`. Otherwise a
tile.PerformanceWarning says why and the attribute is dropped (the same kernel, without the turns).
The values are unchanged: only the order in which the warpgroups issue their wgmmas is; the
interpreter ignores the attributes.

The window. FlashAttention-3's turn lies "between" iterations: from before p v of iteration j to
after q k^T of iteration j + 1 is issued, so each warpgroup's softmax is outside every turn and
overlaps the other's GEMMs. (The first version's window, "within" -- an iteration's first wgmma to
its last -- put the softmax inside the turn and serialized the warpgroups: WS + PINGPONG ran at 295
TF/s against WS alone at 398 on an H100, S2048 D128, BENCHMARKS.md 2026-12-06.) "between" is chosen
where the body has two or more top-level wgmma dots, no explicit `barrier` before the first or after
the last (those lie in a turn), and the stage wait inside the turn cannot deadlock (below); else
"within" where no barrier lies between the first and the last wgmma (a one-dot body: the two are
the same turn); else the ping-pong is refused.

What codegen does (codegen/lower_pingpong.py), for consumer warpgroup w (0 or 1; thread id / 128),
all barriers with 256 threads:
    "within"                                               "between"
    before the loop:  w == 1: bar.arrive B                 w == 1: bar.arrive B; then bar.sync B + w
    each iteration:   bar.sync B + w before the first      bar.arrive B + 1 - w after the FIRST wgmma's
                      wgmma's fence; bar.arrive B + 1 - w  commit; bar.sync B + w before the LAST
                      after the last wgmma's commit        wgmma's fence
    after the loop:   w == 0: bar.sync B (the drain)       bar.arrive B + 1 - w; w == 0: bar.sync B
"between" counts: each warpgroup syncs n + 1 times on its own barrier and arrives n + 1 times on the
other's; with warpgroup 1's head start and warpgroup 0's drain, B sees n + 2 arrives and n + 2 syncs,
B + 1 n + 1 and n + 1 (n = 0 included). The phases alternate as in "within" (below).

Deadlock freedom of "between". A turn holds the next iteration's wait on its `full` stage: warpgroup
w waits there, in its turn, for the producer; the producer waits for every consumer warp's release of
iteration j + 1 - S (S = the ring's stages); the other warpgroup meanwhile waits at its sync before
p v of iteration j, having released every iteration up to j - 1 (its last dot not in flight: released
after that dot) or j - 2 (in flight: released one iteration later). So j + 1 - S <= j - 1 needs S >= 2,
and S >= 3 where the last dot stays in flight: the pass checks it and takes "within" otherwise.

Counting ("within"). A named barrier's phase completes when 256 threads (the count, = the two consumer
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
    return _window(lp)[1]


def _window(lp: Operation) -> tuple:
    """("between" | "within", None), or (None, why not) -- see "The window" in the module docstring."""
    body = lp.regions[0].ops
    dots = [i for i, o in enumerate(body) if o.name == "dot" and str(o.attrs.get("atom", "")).startswith("wgmma")]
    if not dots:
        return None, "the loop body has no wgmma dot at its top level"
    first, last = dots[0], dots[-1]

    def barrier_in(ops):
        return any(o.name == "barrier" for o in ops)
    if first != last and not barrier_in(body[:first]) and not barrier_in(body[last + 1:]):
        stages = int(lp.attrs.get("pipelined") or 0)
        if stages >= (3 if body[last].attrs.get("inflight") else 2):
            return "between", None
    if barrier_in(body[first:last]):
        return None, "a barrier lies between the loop's first and last wgmma (the other warpgroup waits for its turn there)"
    return "within", None


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
        lp.attrs["pingpong_window"] = _window(lp)[0]
    return fn


@register("pingpong")
def pingpong(m: Module, target: Target) -> Module:
    """Record the named barriers and the turn's window of a `pingpong = true` consumer loop, or drop the
    attribute with a warning."""
    for fn in m.functions:
        pingpong_function(fn, target)
    return m
