"""warp_specialize: a producer warpgroup issuing a pipelined loop's TMA copies and the kernel's
warpgroups (the consumers) running the rest, synchronised by a `full` and an `empty` mbarrier per
stage (Hopper: CUTLASS's "warp-specialized" main loop, Triton's `warp_specialize=True`).

Asked for by `tile.range(lo, hi, step, stages=S, warp_specialize=True)` (loop attribute
`warp_specialize`). Runs after pipeline_loads (the S-stage ring, one `full` mbarrier per stage) and
select_instructions (which copies are TMA copies). It applies where the target has `setmaxnreg` and
`tma`, the loop was pipelined at the kernel's top level or directly in a top-level tile loop (see
"Persistent" below), every copy it pipelined is a TMA copy, the loop body's dots are at its top
level with the last one not `deferred` and no ring read after it ("Several dots" below), and
`num_warps` is whole warpgroups; otherwise a tile.PerformanceWarning says why and the loop keeps the
ordinary pipeline (the attribute is dropped).

    for k in range(lo, hi, step) {pipelined = S}:         empty = alloc_shared <S x 1 x i64>
        wait full[j % S] (parity (j / S) % 2)             mbarrier_init full {count = 1}
        barrier                                            mbarrier_init empty {count = num_warps}
        a = shared_load ring[j % S] ...                    warp_specialize {producer_warps = 4, ...} {
        acc = dot(a, b, acc)                     ==>         setmaxnreg {regs = 40, action = "dec"}
        if k + D*step < hi: TMA copies                       for k in range(lo, hi, step):          (producer)
            into ring[(j+D) % S]                                 s = j % S
        arrive full[(j+D) % S]                                   mbarrier_wait empty[s], (j / S + 1) % 2
    (prologue: stages 0 .. D-1 issued before)                    TMA copies of iteration j into ring[s] on full[s]
    epilogue                                                     mbarrier_arrive full[s]
                                                         } {
                                                             setmaxnreg {regs = 232, action = "inc"}
                                                             for k in range(lo, hi, step):          (consumers)
                                                                 mbarrier_wait full[j % S], (j / S) % 2
                                                                 a = shared_load ring[j % S] ...
                                                                 acc = dot(a, b, acc)
                                                                 release: mbarrier_arrive empty[r] {per = "warp"}
                                                             mbarrier_inval full, empty
                                                             epilogue (barriers named: bar.sync 1, 32*num_warps)
                                                         }

Roles. The consumers keep thread ids 0 .. 32*num_warps-1, so every register layout of the kernel is
unchanged; the producer is the warpgroup after them (function attribute `num_warps` still counts
the consumer warps; the op's `producer_warps` come on top of it in the launch). Ops before the
split run on every thread, so only thread-uniform ops stay there (scalars, shared allocations,
mbarrier initialization); every other op before the loop moves to the consumers.

Phases. Each mbarrier completes one phase per use of its stage, and both sides count uses the same
way: iteration j (j = (k - lo) / step) uses stage j % S for the (j / S)-th time.
* `full[s]` completes when the producer's arrive (after `expect_tx` of the copies' bytes) and the
  bytes have landed: the consumer of iteration j waits for parity (j / S) % 2.
* `empty[s]` completes when every consumer warp has arrived (count = num_warps, lane 0 of each warp)
  after the wgmma that read the stage has completed: with `inflight = 1` (the dot's wgmma group stays
  running into the next iteration) iteration j releases stage (j - 1) % S after its own dot's
  `wgmma.wait_group 1`, for j >= 1; with `inflight = 0` iteration j releases j % S after its dot.
  The producer's iteration j (j >= S) must wait for the release of iteration j - S, the
  (j / S - 1)-th completion of empty[j % S]: parity (j / S - 1) % 2 = (j / S + 1) % 2. For j < S the
  same formula asks for parity 1 of a fresh mbarrier, which is the phase "before" its first, reported
  complete at once (try_wait.parity's rule; CUTLASS starts its producer at phase 1 the same way), so
  the first round passes without a branch.
Several dots (attention: S = Q K^T from the K stage, wgmma .ss; the softmax in registers, a mask
under a branch; O += P V with P from registers and V from the V stage, wgmma .rs). The release goes
after the body's LAST dot (in program order), and is the same as for one dot: that dot's inflight
decides "j after it" (inflight 0) or "j - 1 after it" (inflight 1). Why that is after every wgmma
reading any buffer of the stage has completed: wgmma groups complete in order and a group's wait
covers the groups committed before it (wgmma.wait_group N leaves only the N newest pending). Every
read of a stage is by a dot of the iteration that waited for it (every ring read of the body is a
shared_load of the current slot feeding a dot at or before the last one -- checked; ldmatrix reads
finish before their dot issues), so:
* the last dot not inflight: its `wait_group 0` completes every group of the iteration, those of
  earlier dots included -- a `deferred` one (OVERLAP's next scores, whose wait would otherwise sit at
  its first use) too: codegen retires deferred groups at the next non-deferred wait. Stage j is free.
* the last dot inflight: its `wait_group 1` leaves only itself pending; every group of iteration
  j - 1 (all committed before it) has completed. Stage j - 1 is free.
* the last dot `deferred`: its wait is somewhere later, not at a point the pass knows: refused.
A dot inside a nested region (a branch) is refused too (no last dot in program order).
Deadlock freedom. Both loops run the same bounds, so they make the same number of iterations (none
at all when lo >= hi: nobody waits). Every release the producer waits for is made: iteration j waits
for the release of j - S <= n - 1 - S, and the consumers release every iteration up to n - 2
(inflight 1) or n - 1 (inflight 0). Every `full` phase a consumer waits for is produced: the producer
issues iteration j after the release of j - S, which needs only consumer iterations up to j - S + 1
<= j, so the producer is never waiting on a consumer that is waiting on it. The stages the consumers
never release (the last ones) are not needed by anyone.
Reuse. A stage is written by TMA only after `empty` says every consumer warp's wgmma reading it has
completed (write-after-read), and read only after `full` says its bytes landed (read-after-write);
the block-wide barrier of the ordinary pipeline, and its cp.async waits, are gone.
Exit. The producer leaves its region as soon as it has issued its last copy; its copies are still
in flight then, which is safe: they write the block's shared memory, which lives as long as any of
its threads, and the consumers wait for every one of them (the `full` phases) before they leave the
main loop, invalidate the mbarriers and reuse the ring's memory in the epilogue. Nothing follows the
`warp_specialize` op (code after it would run under two register budgets).
Barriers. The producer does not take part in any barrier of the consumers: the explicit ones in the
consumer region become named barriers {id = consumer_barrier, threads = 32*num_warps}, and the op's
`consumer_barrier` / `producer_barrier` are what code generation uses for the barriers lowerings add
(layout conversions through shared memory, mbarrier_inval).
Persistent. A pipelined loop directly in the body of a top-level `for` (a persistent kernel's loop
over output tiles: `for t in range(block_id, #tiles, #blocks)`) is split around that tile loop:

    a_ring, b_ring, full, empty = alloc_shared; mbarrier_init full {1}, empty {num_warps}   (once)
    warp_specialize {
        setmaxnreg dec; c = 0
        for t (c):                                       the tile's coordinates (scalars, recomputed)
            for k (c): s = c % S; wait empty[s] ((c / S + 1) % 2); TMA copies of k on full[s]; arrive full[s]; c += 1
    } {
        setmaxnreg inc; c = 0
        for t (c):
            acc = 0
            for k (acc, c): wait full[c % S] ((c / S) % 2); dot; release; c += 1
            if the tile had an iteration: release its last stage (inflight = 1)
            epilogue (named barriers)
        mbarrier_inval full, empty
    }

The producer needs the tile loop's bounds (top-level values, thread-uniform) and, of the tile loop's
body, the K loop's bounds and the copies' indices: a slice of thread-uniform scalar ops (grouped tile
coordinates), cloned into its own tile loop; a value the tile loop carries is the consumers' and
cannot be used there. Phases: the count c replaces j in every formula above; it runs over all the K
iterations of all the block's tiles in the same order on both sides (same tile bounds, same K bounds
per tile), so iteration c uses stage c % S for the (c / S)-th time whatever the number of K iterations
per tile (it need not be a multiple of S: a tile may start mid-ring and at either parity).
Releases: within a tile, iteration c releases c - 1 (inflight 1, not for the tile's first iteration)
or c (inflight 0); with inflight 1 the tile's last iteration is released after its K loop, whose exit
waits for the wgmma group, so the producer may fill all S stages with the next tile's blocks while the
consumers run the epilogue -- the overlap this form is for. Deadlock freedom: every iteration c is
released (by iteration c + 1 of its tile or after its tile's loop); the producer's iteration c waits
for the release of c - S, which needs the consumers at most up to iteration c - S + 1 <= c - 1
(inflight 1 needs S >= 4), all of whose `full` phases the producer has issued before c. A tile with
no K iteration (K = 0): neither side iterates, c does not move, nothing is released after the loop
(c did not grow), the consumers store the epilogue of zeros. A block with no tile: neither tile loop
iterates; the mbarriers are initialized and invalidated by the same threads anyway. The last tile:
the producer leaves after its last copy; the consumers wait for every `full` phase of it before they
leave their loop and invalidate the mbarriers. Shared memory: the ring is used inside the consumers'
tile loop, so shared_memory_planning keeps it live to that loop's end (the epilogue's scratch cannot
alias it: the producer writes it meanwhile).

Clusters (launch option `cluster`, function attribute `cluster`, n blocks in all). Where a copy of the
loop loads a tile every block of the cluster loads too (`load(..., multicast=True)`, the user's
promise, which the interpreter checks) and its TMA boxes split evenly over the n blocks, the copy gets
`cluster = n`: each block issues 1/n of its boxes, multicast into all n blocks' shared memory at the
same offsets, completing on each block's own `full` mbarrier of the stage (each still expects the whole
tile's bytes: every box lands in every block). A stage may then be overwritten only when every block's
consumers are done with it, since any block's producer writes into all of them: `empty` counts
num_warps * n arrivals and each consumer warp's release arrives on that stage's `empty` in every block
of the cluster (`mbarrier_arrive {per = "warp", cluster = n}`). Phases and deadlock freedom are the
argument above with "the consumers" read as all n blocks' consumers: every block runs the same loops
(the same tile loop bounds and K bounds: a cluster's blocks share the work unit, examples/gemm.py), so
the producer's iteration c in any block waits for releases of c - S that need only iterations <= c - 1
of every block's consumers, whose `full` phases all producers issued before c. A remote block's copy
may land on `full[s]` before this block's producer has added the phase's expected bytes: the count of
pending bytes goes below zero for a while and the phase cannot complete before this producer's own
arrival, after its expect_tx of the whole tile. Around the roles, two `cluster_barrier`s: one after the
mbarriers are initialized (no block multicasts into or arrives on another's mbarriers before they
exist) and one after both roles (no block exits, or invalidates its mbarriers, while another may still
write into its ring or arrive on them); the mbarriers are invalidated after it, so they stay allocated
-- out of the epilogue's scratch -- to the end.

Registers. The launch budget is function attribute `maxnreg` (65536 registers over the launch's
threads, at most 168: ptxas needs a fixed count at entry for setmaxnreg); the producer drops to
`PRODUCER_REGS`, the consumers take what is left: 128 * 40 + 256 * 232 = 64512 <= 65536 for two
consumer warpgroups, 240 for one.
"""
from __future__ import annotations

from math import prod

from ..ir.core import Block, Function, Module, Operation, Value
from ..ir.dtypes import bool_, i32, i64
from ..ir.errors import warn_performance
from ..ir.targets import Target, get_target
from ..ir.types import ScalarType, TileType

from .dce import dce_function
from .manager import register

__all__ = ["warp_specialize", "warp_specialize_function", "register_budget", "PRODUCER_REGS"]

PRODUCER_REGS = 40                 # CUTLASS's LoadRegisterRequirement: enough for the issue loop
CONSUMER_BARRIER, PRODUCER_BARRIER = 1, 2      # named barriers (0 is the whole block's)
REGISTER_FILE = 65536


def register_budget(consumer_warps: int, producer_warps: int = 4) -> tuple:
    """(launch maxnreg, producer regs, consumer regs): multiples of 8 that fit the register file."""
    threads = 32 * (consumer_warps + producer_warps)
    launch = min(REGISTER_FILE // threads // 8 * 8, 168)
    consumer = min((REGISTER_FILE - 32 * producer_warps * PRODUCER_REGS) // (32 * consumer_warps) // 8 * 8, 240)
    return launch, PRODUCER_REGS, consumer


def _uniform(op: Operation) -> bool:
    """May run on every thread of the block, the producer's included (before the split)."""
    if op.name in ("alloc_shared", "mbarrier_init"):
        return True
    if op.regions or op.name in ("store_scalar", "atomic", "store", "scatter", "print"):
        return False
    return bool(op.results) and all(isinstance(r.type, ScalarType) for r in op.results)


def _clone(op: Operation, mp: dict) -> Operation:
    """A deep copy of op (regions included) with operands renamed through mp (updated with results)."""
    regions = []
    for r in op.regions:
        nb = Block([a.type for a in r.args], [a.name for a in r.args])
        for a, na in zip(r.args, nb.args):
            mp[id(a)] = na
        for o in r.ops:
            nb.append(_clone(o, mp))
        regions.append(nb)
    n = Operation(op.name, [mp.get(id(v), v) for v in op.operands], [r.type for r in op.results], dict(op.attrs),
                  regions, loc=op.loc, result_names=[r.name for r in op.results])
    for r, nr in zip(op.results, n.results):
        mp[id(r)] = nr
    return n


def _defined_in(block: Block) -> set:
    out = set()
    for o in block.walk():
        out.update(id(r) for r in o.results)
        for r in o.regions:
            out.update(id(a) for a in r.args)
    return out


def _emit(into, loc, name, operands, rtype=None, attrs=None, regions=(), hint=None):
    """Append a new op to block (or list) `into`; its result if it has one (a type `rtype`), else the op."""
    o = Operation(name, operands, [rtype] if rtype is not None else [], attrs or {}, regions, loc=loc,
                  result_names=[hint] if rtype is not None else None)
    into.append(o)
    return o.results[0] if rtype is not None else o


class _Specializer:
    def __init__(self, fn: Function, loop: Operation, target: Target):
        self.fn, self.loop, self.target = fn, loop, target
        self.body: Block = loop.regions[0]
        self.loc = loop.loc
        self.ncta = prod(int(x) for x in (fn.attrs.get("cluster") or (1,)))   # blocks per cluster
        self.multicast = False          # some copy is multicast over the cluster ("Clusters" above)

    # ------------------------------------------------------------------ can it be done?
    def why_not(self) -> str | None:
        t, lp, fn = self.target, self.loop, self.fn
        missing = [f for f in ("setmaxnreg", "tma") if not t.has(f)]
        if missing:
            return f"target {t.key} has no {' and no '.join(missing)} (register reallocation and TMA are needed)"
        self.outer = None
        if lp.parent is not fn.body:
            self.outer = _tile_loop(fn, lp)
            if self.outer is None:
                return ("only a loop at the kernel's top level, or directly in the body of one top-level `for` "
                        "(a persistent loop over output tiles), is specialized")
        if not lp.attrs.get("pipelined"):
            return "the loop was not pipelined (no load without a mask feeding a dot)"
        nw = int(fn.attrs.get("num_warps", 4))
        if nw % 4 or nw > 12:
            return f"num_warps = {nw}: the consumers must be 1 to 3 whole warpgroups (4, 8 or 12 warps)"
        if any(o.name == "warp_specialize" for o in fn.body.ops):
            return "the kernel has a warp-specialized loop already"
        copies = [o for o in self.body.walk() if o.name in ("async_copy", "async_gather")]
        slow = [o for o in copies if o.attrs.get("copy") != "tma"]
        if not copies or slow:
            what = ", ".join(f"{o.operands[1].name or 'a tensor'} ({o.attrs.get('copy', o.name)})" for o in slow)
            return f"not every pipelined copy is a TMA copy: {what or 'none'}"
        why = self._find_release_point()
        if why:
            return why
        self.issue = [o for o in self.body.ops if o.name == "if" and
                      any(c.name == "async_copy" for c in o.regions[0].ops)]
        waits = [o for o in self.body.ops if o.name == "mbarrier_wait"]
        if len(self.issue) != 1 or len(waits) != 1:
            return "the loop is not in the shape pipeline_loads gives (one mbarrier wait, one issue block)"
        self.wait = waits[0]
        fulls = {id(c.bar.owner.operands[0]) if c.bar.owner is not None else None for c in copies}
        self.full_sub = self.wait.bar.owner
        if self.full_sub is None or self.full_sub.name != "subview" or fulls != {id(self.full_sub.operands[0])}:
            return "the copies do not complete on the loop's `full` mbarriers"
        self.full = self.full_sub.operands[0]
        return None

    def _find_release_point(self) -> str | None:
        """self.dot: the last dot of the body, after whose wgmma wait every stage read of the iteration
        has completed (module docstring, "Several dots"); None, or why there is no such point."""
        body = self.body
        dots = [o for o in body.walk() if o.name == "dot"]
        if not dots:
            return "the loop body has no dot"
        nested = [o for o in dots if o.parent is not body]
        if nested:
            return f"a dot of the loop body is inside a nested region (at {nested[0].loc}); dots at the body's top level are"
        last = dots[-1]
        if last.attrs.get("deferred"):
            return "the loop body's last dot has a deferred wgmma wait (no single point after which its stage is read)"
        at = body.ops.index(last)
        for o in body.walk():
            if o.name != "shared_load" or not isinstance(o.operands[0].owner, Operation) or \
                    o.operands[0].owner.name != "subview":
                continue
            vals = [o.results[0]]
            for u in body.ops[body.ops.index(_top(o, body)) + 1:]:
                if any(v is x for x in vals for y in u.walk() for v in y.operands):
                    if body.ops.index(u) > at:
                        return (f"a stage of the ring is read after the loop body's last dot "
                                f"({u.name} at {u.loc}): no single release point")
                    if u.name == "transpose":
                        vals.append(u.results[0])
        self.dot = last
        return None

    # ------------------------------------------------------------------ the rewrite
    def run(self):
        if self.outer is not None:
            return self.run_nested()
        fn, lp, body, loc = self.fn, self.loop, self.body, self.loc
        top = fn.body
        S = int(lp.attrs["pipelined"])
        nw = int(fn.attrs.get("num_warps", 4))
        launch, p_regs, c_regs = register_budget(nw)
        lo, hi, step = lp.operands[:3]
        ivt = lp.operands[0].type

        def mk(into, *a, **kw):
            return _emit(into, loc, *a, **kw)

        # -- the producer's issue body: the loop's issue block for iteration j itself (not j + D)
        then_b, k_next, bar_next, nslot, _, bad = self._issue_block(body)
        if bad:
            names = ", ".join(dict.fromkeys(str(v.name or "?") for v in bad))
            return f"the copies' indices use values of the loop body other than the next k: {names}"

        init_full = next((o for o in top.ops if o.name == "mbarrier_init" and o.operands[0] is self.full), None)
        if init_full is None:
            return "no mbarrier_init of the full mbarriers before the loop"
        # the ordinary pipeline's prologue (stages issued before the loop) is the producer's now
        prologue = [o for o in top.ops[top.ops.index(init_full) + 1:top.ops.index(lp)]
                    if o.name in ("if", "async_commit", "mbarrier_arrive")]
        prefix = [o for o in top.ops[:top.ops.index(lp)] if o not in prologue]
        moved = [o for o in prefix if not _uniform(o)]
        need = {id(v) for o in prefix if _uniform(o) for x in o.walk() for v in x.operands}
        if any(id(r) in need for o in moved for r in o.results):
            return "a thread-uniform op before the loop uses a value that only the consumers compute"

        # -- shared state: the empty mbarriers, initialized with the full ones (before the split)
        bar_t = TileType(i64, (1,), "shared", None)
        empty_alloc = Operation("alloc_shared", [], [TileType(i64, (S, 1), "shared", None)], {}, loc=loc,
                                result_names=["empty"])
        empty = self.empty = empty_alloc.results[0]
        at = top.ops.index(init_full) + 1
        top.insert(at, empty_alloc)
        self._plan_multicast(then_b)
        top.insert(at + 1, Operation("mbarrier_init", [empty], [], {"count": nw * self._arrivals()}, loc=loc))
        for o in prologue:
            top.ops.remove(o)

        # -- producer region
        prod = Block()
        mk(prod, "setmaxnreg", [], attrs={"regs": p_regs, "action": "dec"})
        pbody = Block([ivt], ["k"])
        kp = pbody.args[0]
        j = mk(pbody, "div", [mk(pbody, "sub", [kp, lo], ivt), step], ivt, hint="j")
        Sc = mk(pbody, "constant", [], ivt, {"value": S})
        s = mk(pbody, "rem", [j, Sc], ivt, hint="s")
        ph = mk(pbody, "rem", [mk(pbody, "add", [mk(pbody, "div", [j, Sc], ivt), mk(pbody, "constant", [], ivt, {"value": 1})], ivt),
                               mk(pbody, "constant", [], ivt, {"value": 2})], ivt, hint="phase")
        if ivt != ScalarType(i32):
            s = mk(pbody, "cast", [s], ScalarType(i32))
            ph = mk(pbody, "cast", [ph], ScalarType(i32))
        mk(pbody, "mbarrier_wait", [mk(pbody, "subview", [empty, s], bar_t), ph])
        fbar = mk(pbody, "subview", [self.full, s], bar_t)
        mp = {id(k_next): kp, id(bar_next): fbar}
        mp.update({id(v): s for v in nslot})
        for o in then_b.ops:
            if o.name != "yield":
                pbody.append(_clone(o, mp))
        mk(pbody, "mbarrier_arrive", [fbar])
        mk(pbody, "yield", [])
        mk(prod, "for", [lo, hi, step], regions=[pbody])
        mk(prod, "yield", [])

        self._consume(empty, bar_t, S)
        lp.attrs.pop("warp_specialize", None)

        # -- consumer region: the loop, everything after it, and what of the prefix is not uniform
        cons = Block()
        mk(cons, "setmaxnreg", [], attrs={"regs": c_regs, "action": "inc"})
        tail = top.ops[top.ops.index(lp):]
        term = tail.pop() if tail and tail[-1].name in ("yield", "return") else None
        for o in moved + tail:
            top.ops.remove(o)
            if o.name == "async_wait" and o in tail[:2]:
                continue                                  # the ordinary pipeline's drain: no cp.async
            cons.append(o)
            if o.name == "mbarrier_inval" and o.operands[0] is self.full:
                cons.append(Operation("mbarrier_inval", [empty], [], {}, loc=loc))
        self._finish(cons, prod, term, nw, launch)
        return None

    def _issue_block(self, body: Block):
        """pipeline_loads' issue block (the copies of iteration j + D), which the producer runs for
        iteration j: (its block, the next k, its mbarrier, the ring slots it writes, the values it reads
        from outside the loop, the values it reads from the loop body other than those -- which the
        producer cannot have)."""
        then_b: Block = self.issue[0].regions[0]
        copies = [o for o in then_b.walk() if o.name == "async_copy"]
        k_next, bar_next = self.issue[0].cond.owner.operands[0], copies[0].bar
        nslot = [o.operands[1] for o in then_b.ops if o.name == "subview"]
        inside = _defined_in(then_b)
        body_defs = _defined_in(body) | {id(a) for a in body.args}
        known = {id(k_next), id(bar_next)} | {id(v) for v in nslot}
        reads = [v for o in then_b.walk() for v in o.operands if id(v) not in inside]
        outside = [v for v in reads if id(v) not in body_defs]
        bad = [v for v in reads if id(v) in body_defs and id(v) not in known]
        return then_b, k_next, bar_next, nslot, outside, bad

    def _consume(self, empty: Value, bar_t, S: int):
        """The consumers' loop: no issue, no cp.async wait, no block barrier; a release after the dot."""
        body, loc, lo = self.body, self.loc, self.loop.operands[0]
        slot32 = self.full_sub.operands[1]

        def mk(into, *a, **kw):
            return _emit(into, loc, *a, **kw)

        for o in list(body.ops):
            if o in self.issue or o.name in ("async_commit", "async_wait") or \
                    (o.name == "mbarrier_arrive" and o.bar.owner is not None and o.bar.owner.operands[0] is self.full):
                body.ops.remove(o)
        k = body.ops.index(self.wait) + 1
        if k < len(body.ops) and body.ops[k].name == "barrier" and not body.ops[k].attrs:
            body.ops.pop(k)
        rel: list = []
        i32t = ScalarType(i32)
        if int(self.dot.attrs.get("inflight", 0)):
            # iteration j releases stage (j - 1) % S (its wgmma group completed at this dot's wait), j >= 1
            then = Block()
            prev = mk(then, "rem", [mk(then, "add", [slot32, mk(then, "constant", [], i32t, {"value": S - 1})], i32t),
                                    mk(then, "constant", [], i32t, {"value": S})], i32t)
            mk(then, "mbarrier_arrive", [mk(then, "subview", [empty, prev], bar_t)], attrs=self._release_attrs())
            mk(then, "yield", [])
            els = Block()
            mk(els, "yield", [])
            c = mk(rel, "cmp", [body.args[0], lo], ScalarType(bool_), {"pred": "gt"})
            mk(rel, "if", [c], regions=[then, els])
        else:
            mk(rel, "mbarrier_arrive", [mk(rel, "subview", [empty, slot32], bar_t)], attrs=self._release_attrs())
        k = body.ops.index(self.dot) + 1
        for o in rel:
            body.insert(k, o)
            k += 1

    def _plan_multicast(self, issue: Block):
        """Clusters: the TMA copies of `issue` that load the same tile in every block of the cluster
        (`multicast`) and whose boxes split evenly over its blocks get `cluster = n` (each block issues
        1/n of the boxes, multicast to all: codegen/lower_cluster.py); the others stay per block."""
        if self.ncta <= 1:
            return
        for o in issue.walk():
            if o.name == "async_copy" and o.attrs.get("multicast") and o.attrs.get("copy") == "tma":
                boxes = prod(d // b for d, b in zip(o.dst.type.shape, o.attrs["box"]))
                if boxes % self.ncta:
                    warn_performance(self.fn, o, f"this multicast load is {boxes} TMA boxes, which do not split "
                                     f"over the cluster's {self.ncta} blocks: every block loads it whole", stacklevel=4)
                    continue
                o.attrs["cluster"] = self.ncta
                self.multicast = True

    def _arrivals(self) -> int:
        """Arrivals per consumer warp on an `empty` mbarrier: one from each block of the cluster where a
        stage is multicast into all of them, else one."""
        return self.ncta if self.multicast else 1

    def _release_attrs(self) -> dict:
        return {"per": "warp", "cluster": self.ncta} if self.multicast else {"per": "warp"}

    def _finish(self, cons: Block, prod: Block, term, nw: int, launch: int):
        """Name the consumers' barriers, build the warp_specialize op at the end of the kernel (with a
        multicast: between cluster barriers, the mbarriers invalidated after the second)."""
        fn, top, loc = self.fn, self.fn.body, self.loc

        def mk(into, *a, **kw):
            return _emit(into, loc, *a, **kw)

        for o in cons.walk():
            if o.name == "barrier" and "id" not in o.attrs:
                o.attrs.update({"id": CONSUMER_BARRIER, "threads": 32 * nw})
        invals = [o for o in cons.ops if o.name == "mbarrier_inval" and
                  any(o.operands[0] is x for x in (self.full, self.empty))]
        if self.multicast:
            for o in invals:
                cons.ops.remove(o)
            mk(top, "cluster_barrier", [])       # every block's mbarriers initialized before any remote use
        mk(cons, "yield", [])
        ws = Operation("warp_specialize", [], [], {"producer_warps": 4, "consumer_barrier": CONSUMER_BARRIER,
                                                   "producer_barrier": PRODUCER_BARRIER}, [prod, cons], loc=loc)
        top.append(ws)
        if self.multicast:
            mk(top, "cluster_barrier", [])       # no block leaves while another may still write or arrive in it
            for o in invals:
                top.append(o)
        if term is not None:
            top.append(term)
        fn.attrs["maxnreg"] = launch

    def run_nested(self):
        """The pipelined loop directly inside a top-level tile loop: the roles split around the tile
        loop, the ring and its mbarriers live across tiles, both roles count iterations in a value the
        tile loop carries (module docstring, "Persistent")."""
        fn, lp, body, loc, outer = self.fn, self.loop, self.body, self.loc, self.outer
        top, home = fn.body, lp.parent
        S = int(lp.attrs["pipelined"])
        nw = int(fn.attrs.get("num_warps", 4))
        launch, p_regs, c_regs = register_budget(nw)
        lo, hi, step = lp.operands[:3]
        ivt = lo.type
        i32t = ScalarType(i32)
        bar_t = TileType(i64, (1,), "shared", None)

        def mk(into, *a, **kw):
            return _emit(into, loc, *a, **kw)

        # -- the issue block of pipeline_loads (iteration j + D's copies), which the producer runs for j
        then_b, k_next, bar_next, nslot, ext, bad = self._issue_block(body)
        if bad:
            return f"the copies' indices use values of the loop body other than the next k: {bad[0].name or '?'}"

        init_full = next((o for o in home.ops if o.name == "mbarrier_init" and o.operands[0] is self.full), None)
        if init_full is None:
            return "no mbarrier_init of the full mbarriers before the loop"
        i_lp = home.ops.index(lp)
        prologue = [o for o in home.ops[home.ops.index(init_full) + 1:i_lp]
                    if o.name in ("if", "async_commit", "mbarrier_arrive")]
        hoisted = [o for o in home.ops[:i_lp] if o.name == "alloc_shared" or o is init_full]
        if any(o.operands for o in hoisted if o.name == "alloc_shared"):
            return "a shared allocation in the tile loop depends on the tile"
        # what of the tile loop's body the producer computes too: the K loop's bounds and the copies'
        # indices (grouped tile coordinates), thread-uniform scalars
        defs = {id(r): o for o in home.ops[:i_lp] for r in o.results}
        need, stack = set(), [lo, hi, step] + ext
        while stack:
            v = stack.pop()
            if v.owner is home and v is not home.args[0]:
                return f"the producer needs {v.name or 'a value'}, which the tile loop carries (the consumers' state)"
            o = defs.get(id(v))
            if o is None or id(o) in need or o.name == "alloc_shared":
                continue
            if not _uniform(o) or o.regions:
                return f"the producer needs {v.name or 'a value'}, which is not a thread-uniform scalar"
            need.add(id(o))
            stack.extend(o.operands)
        tile_slice = [o for o in home.ops[:i_lp] if id(o) in need]

        prefix = top.ops[:top.ops.index(outer)]
        moved = [o for o in prefix if not _uniform(o)]
        moved_ids = {id(r) for o in moved for r in o.results}
        shared_uses = [v for o in prefix if _uniform(o) for x in o.walk() for v in x.operands] + \
            list(outer.operands[:3]) + [v for o in tile_slice for v in o.operands] + ext
        if any(id(v) in moved_ids for v in shared_uses):
            return "a thread-uniform value both roles need uses a value that only the consumers compute"

        # -- shared state, out of the tile loop: the ring and `full` (initialized once), `empty`
        at = top.ops.index(outer)
        for o in hoisted:
            home.ops.remove(o)
            top.insert(at, o)
            at += 1
        empty_alloc = Operation("alloc_shared", [], [TileType(i64, (S, 1), "shared", None)], {}, loc=loc,
                                result_names=["empty"])
        empty = self.empty = empty_alloc.results[0]
        top.insert(at, empty_alloc)
        self._plan_multicast(then_b)
        top.insert(at + 1, Operation("mbarrier_init", [empty], [], {"count": nw * self._arrivals()}, loc=loc))
        for o in prologue:
            home.ops.remove(o)
        k = home.ops.index(lp) + 1
        for o in home.ops[k:k + 2]:
            if o.name == "async_wait" or (o.name == "mbarrier_inval" and o.operands[0] is self.full):
                home.ops.remove(o)

        # -- producer: tile loop { its tile's coordinates; K loop { wait empty, copies on full } }
        prod = Block()
        mk(prod, "setmaxnreg", [], attrs={"regs": p_regs, "action": "dec"})
        c0p = mk(prod, "constant", [], i32t, {"value": 0})
        olo, ohi, ostep = outer.operands[:3]
        pouter = Block([olo.type, i32t], [home.args[0].name, "c"])
        mp = {id(home.args[0]): pouter.args[0]}
        for o in tile_slice:
            pouter.append(_clone(o, mp))
        pbody = Block([ivt, i32t], ["k", "c"])
        kp, c = pbody.args
        Sc = mk(pbody, "constant", [], i32t, {"value": S})
        s = mk(pbody, "rem", [c, Sc], i32t, hint="s")
        ph = mk(pbody, "rem", [mk(pbody, "add", [mk(pbody, "div", [c, Sc], i32t), mk(pbody, "constant", [], i32t, {"value": 1})], i32t),
                               mk(pbody, "constant", [], i32t, {"value": 2})], i32t, hint="phase")
        mk(pbody, "mbarrier_wait", [mk(pbody, "subview", [empty, s], bar_t), ph])
        fbar = mk(pbody, "subview", [self.full, s], bar_t)
        mp.update({id(k_next): kp, id(bar_next): fbar})
        mp.update({id(v): s for v in nslot})
        for o in then_b.ops:
            if o.name != "yield":
                pbody.append(_clone(o, mp))
        mk(pbody, "mbarrier_arrive", [fbar])
        mk(pbody, "yield", [mk(pbody, "add", [c, mk(pbody, "constant", [], i32t, {"value": 1})], i32t)])
        pc = mk(pouter, "for", [mp.get(id(v), v) for v in (lo, hi, step)] + [pouter.args[1]], i32t,
                regions=[pbody], hint="c")
        mk(pouter, "yield", [pc])
        mk(prod, "for", [olo, ohi, ostep, c0p], i32t, regions=[pouter], hint="c")
        mk(prod, "yield", [])

        # -- consumers: the K loop counts in c (carried through both loops) instead of j = (k - lo) / step
        self._consume(empty, bar_t, S)
        slot = self.full_sub.operands[1]
        if slot.owner.name == "cast":
            slot = slot.owner.operands[0]
        j = slot.owner.operands[0]
        c_tile = home.add_arg(i32t, "c")
        c_k = body.add_arg(i32t, "c")
        jc = c_k
        if ivt != i32t:
            cast = Operation("cast", [c_k], [ivt], {}, loc=loc)
            body.insert(0, cast)
            jc = cast.results[0]
        for o in body.walk():
            o.operands = [jc if v is j else v for v in o.operands]
        y = body.ops[-1]
        one = Operation("constant", [], [i32t], {"value": 1}, loc=loc)
        nxt = Operation("add", [c_k, one.results[0]], [i32t], {}, loc=loc)
        body.insert(body.ops.index(y), one)
        body.insert(body.ops.index(y), nxt)
        y.operands.append(nxt.results[0])
        lp.operands.append(c_tile)
        c_end = Value(i32t, "c", lp, len(lp.results))
        lp.results.append(c_end)
        if int(self.dot.attrs.get("inflight", 0)):
            # the tile's last stage, which no later iteration of this tile releases: after the loop
            # (whose exit waits for the wgmma group) when the tile had an iteration at all
            rel: list = []
            then = Block()
            last = mk(then, "rem", [mk(then, "sub", [c_end, mk(then, "constant", [], i32t, {"value": 1})], i32t),
                                    mk(then, "constant", [], i32t, {"value": S})], i32t)
            mk(then, "mbarrier_arrive", [mk(then, "subview", [empty, last], bar_t)], attrs=self._release_attrs())
            mk(then, "yield", [])
            els = Block()
            mk(els, "yield", [])
            mk(rel, "if", [mk(rel, "cmp", [c_end, c_tile], ScalarType(bool_), {"pred": "gt"})], regions=[then, els])
            k = home.ops.index(lp) + 1
            for o in rel:
                home.insert(k, o)
                k += 1
        home.ops[-1].operands.append(c_end)
        lp.attrs.pop("warp_specialize", None)

        cons = Block()
        mk(cons, "setmaxnreg", [], attrs={"regs": c_regs, "action": "inc"})
        tail = top.ops[top.ops.index(outer) + 1:]
        term = tail.pop() if tail and tail[-1].name in ("yield", "return") else None
        for o in moved:
            top.ops.remove(o)
            cons.append(o)
        outer.operands.append(mk(cons, "constant", [], i32t, {"value": 0}))
        outer.results.append(Value(i32t, "c", outer, len(outer.results)))
        top.ops.remove(outer)
        cons.append(outer)
        cons.append(Operation("mbarrier_inval", [self.full], [], {}, loc=loc))
        cons.append(Operation("mbarrier_inval", [empty], [], {}, loc=loc))
        for o in tail:
            top.ops.remove(o)
            cons.append(o)
        self._finish(cons, prod, term, nw, launch)
        return None


def _top(op: Operation, block: Block) -> Operation:
    """The op of block's own list that is op or holds it in a region."""
    while op.parent is not block:
        op = op.parent.parent
    return op


def _tile_loop(fn: Function, lp: Operation) -> Operation | None:
    """The top-level `for` whose body holds lp directly (a persistent kernel's loop over tiles), or None."""
    outer = getattr(lp.parent, "parent", None)
    if isinstance(outer, Operation) and outer.name == "for" and outer.parent is fn.body:
        return outer
    return None


def _warn(fn: Function, loop: Operation, why: str):
    warn_performance(fn, loop, f"the loop asked for warp_specialize=True but keeps the ordinary pipeline: {why}",
                     stacklevel=3)


def warp_specialize_function(fn: Function, target: Target | None = None) -> Function:
    target = get_target(target or fn.attrs.get("target") or "sm_90a")
    for lp in [o for o in fn.walk() if o.name == "for" and o.attrs.get("warp_specialize")]:
        sp = _Specializer(fn, lp, target)
        why = sp.why_not() or sp.run()
        if why:
            lp.attrs.pop("warp_specialize", None)
            _warn(fn, lp, why)
            continue
        dce_function(fn)
    return fn


@register("warp_specialize")
def warp_specialize(m: Module, target: Target) -> Module:
    """Split a `warp_specialize=True` pipelined loop into a TMA producer warpgroup and consumer warpgroups (Hopper)."""
    for fn in m.functions:
        warp_specialize_function(fn, target)
    return m
