"""pipeline_loads: software pipelining of the global loads that feed a `dot` in a `for` loop with
attribute `stages = S` (S >= 2), through an S-stage ring buffer of async copies.

    for k in range(lo, hi, step, stages=S):          a_s = alloc_shared <S x BM x BK>   (per load)
        a = load(A, f(k))                             for s in 0 .. S-2:                 (prologue)
        acc = dot(a, ..., acc)           ==>              if lo + s*step < hi: async_copy(a_s[s], A, f(lo + s*step))
                                                          async_commit
                                                      for k in range(lo, hi, step):
                                                          j = (k - lo) / step
                                                          async_wait(pending = S-2); barrier
                                                          a = shared_load(a_s[j % S])
                                                          if k + (S-1)*step < hi:
                                                              async_copy(a_s[(j+S-1) % S], A, f(k + (S-1)*step))
                                                          async_commit
                                                          acc = dot(a, ..., acc)
                                                      async_wait(pending = 0)

Group accounting: before the wait of iteration j, D+j groups have been committed (empty ones
included, which keeps the count uniform; D = S-1 stages are prefetched) and group j must be complete,
so at most D-1 may still be in flight. The stage written in iteration j, (j+D) % S = (j-1) % S, was
last read in iteration j-1; every thread has passed iteration j's barrier, so those reads are done.
On a target with wgmma (Hopper) with S >= 4 the prefetch distance
is D = S-2: the stage written in iteration j was read in iteration j-2, which lets the wgmma of
iteration j-1 still run while iteration j starts (attribute `prefetch` on the loop says which).

On a target with TMA (Hopper) the stages also get one mbarrier each (`full`, a tile<Sx1xi64> in shared
memory, `mbarrier_init {count = 1}` before the prologue, `mbarrier_inval` after the drain), and
every async_copy names its stage's mbarrier. Instruction selection then makes the copies that TMA
can do `copy = "tma"`; the others stay cp.async copies, and both kinds may share a stage:

    issue(stage s):  bar = subview(full, s)
                     if k < hi: async_copy(ring[s], A, f(k), bar) ...   TMA: thread 0 expects the box
                     async_commit                                       bytes on bar, then issues the copy
                     mbarrier_arrive(bar)                               thread 0 arrives: the phase
                                                                        completes once the bytes landed
    iteration j:     async_wait(pending = D-1)                          cp.async copies of stage j % S
                     mbarrier_wait(subview(full, j % S), (j / S) % 2)   its TMA copies (phase parity)
                     barrier

Each stage's mbarrier completes exactly one phase per use of the stage (the arrive comes even when
`k >= hi` skipped the copies, with no bytes expected), so the phase of iteration j is (j / S) % 2.
Reuse of a stage is safe by the same argument as for cp.async: the copy into stage (j+D) % S is
issued after iteration j's barrier, which every thread reaches only after its reads of that stage
(iteration j-1; with D = S-2, iteration j-2, whose wgmma group was waited for in iteration j-1) are
done -- TMA writes a stage only after every reader, the asynchronous wgmma included, has finished.

Targets without asynchronous copies (AMD) take passes/pipeline_registers.py instead: the next
tiles are loaded into registers one iteration ahead and carried by the loop.

A load (or a `gather` of rows by index: an async_gather) is pipelined when it has no mask and
`other` 0 (async copies zero-fill outside the tensor, exactly what such a load reads), its index
operands depend only on the induction variable and loop-invariant values through pure ops and
reads of read-only tensors, and the loop body contains a dot. A read-only tensor is one no op of
the function writes (store, atomic, scatter, store_scalar): reading it D iterations early gives the
same values, so an address computed from a table in memory -- a paged KV cache's block table --
is cloned into the prefetch with the rest of the index computation. A load that only feeds another
candidate's indices stays a plain load there (it is an address, not a tile to stage in shared
memory). The output is ordinary tile IR: the interpreter runs it (async copies complete at once
there) and gives the same results as before the pass.

When the IR already has layouts (the pass runs after layout_inference in the sm_* pipelines), the
new shared_load takes the layout the load's users converted it to (an mma operand fragment: read
with ldmatrix, no extra conversion), and the ring buffer gets the matching (swizzled) layout.
"""
from __future__ import annotations

from ..ir.core import Block, Function, Module, Operation, Value
from ..ir.dtypes import bool_, i32, i64
from ..ir.ops import OPS
from ..ir.targets import Target, get_target
from ..ir.types import ScalarType, TileType

from .dce import dce_function
from .manager import register

__all__ = ["pipeline_loads", "pipeline_function"]


def _scalar_i(v: Value) -> bool:
    return isinstance(v.type, ScalarType) and v.type.dtype.is_int


WRITES = ("store", "store_scalar", "atomic", "scatter")
READS = ("load", "load_scalar", "gather")


def written_tensors(fn: Function) -> set:
    """ids of the tensor values some op of fn writes."""
    return {id(o.operands[0]) for o in fn.walk() if o.name in WRITES}


class _LoopPipeliner:
    def __init__(self, fn: Function, forop: Operation, stages: int, target: Target):
        self.fn = fn
        self.written = written_tensors(fn)
        self.target = target
        self.op = forop
        self.S = stages
        self.body: Block = forop.regions[0]
        self.iv = self.body.args[0]
        self.body_ops = set(id(o) for o in self.body.ops)
        self.defs = {}
        for o in self.body.ops:
            for r in o.results:
                self.defs[id(r)] = o

    # ------------------------------------------------------------------ analysis
    def slice_of(self, vals):
        """Body ops (in program order) the values depend on, or None if some dependency is not a
        pure, region-free op or is a loop-carried value other than the induction variable."""
        need, stack = set(), list(vals)
        while stack:
            v = stack.pop()
            if v is self.iv:
                continue
            if v.owner is self.body:                       # a carried value
                return None
            o = self.defs.get(id(v))
            if o is None:
                continue                                  # defined outside the loop
            if o.name in READS:
                if id(o.operands[0]) in self.written:
                    return None                           # the loop may change what it reads
            elif OPS[o.name].effects or o.regions or o.name == "shared_load":
                return None
            if id(o) not in need:
                need.add(id(o))
                stack.extend(o.operands)
        return [o for o in self.body.ops if id(o) in need]

    def candidates(self):
        if not any(o.name == "dot" for o in self.body.walk()):
            return []
        out = []
        for o in self.body.ops:
            if o.name not in ("load", "gather"):
                continue
            if o.name == "load" and o.mask is not None:
                continue
            if o.attrs.get("other", 0) not in (0, 0.0, False):
                continue
            rt = o.results[0].type
            if rt.rank > o.tensor.type.rank:
                continue
            if rt.dtype.bits < 8 and (rt.shape[-1] * rt.dtype.bits) % 8:
                continue                                  # packed rows must be whole bytes in shared memory
            sl = self.slice_of(o.operands[1:])
            if sl is None:
                continue
            out.append((o, sl))
        addresses = {id(x) for _, sl in out for x in sl}
        return [(o, sl) for o, sl in out if id(o) not in addresses]

    # ------------------------------------------------------------------ building
    def clone_slice(self, b_ops, sl, iv_value, mapping=None):
        """Clone the slice ops with the induction variable replaced; returns the value mapping."""
        mp = {id(self.iv): iv_value}
        if mapping:
            mp.update(mapping)
        for o in sl:
            if all(id(r) in mp for r in o.results):
                continue
            nop = Operation(o.name, [mp.get(id(v), v) for v in o.operands], [r.type for r in o.results],
                            dict(o.attrs), loc=o.loc, result_names=[r.name for r in o.results])
            b_ops.append(nop)
            for r, nr in zip(o.results, nop.results):
                mp[id(r)] = nr
        return mp

    def run(self) -> bool:
        cands = self.candidates()
        if not cands:
            return False
        S, op = self.S, self.op
        parent: Block = op.parent
        pos = parent.ops.index(op)
        lo, hi, step = op.operands[:3]
        loc = op.loc
        ivt = self.iv.type
        pre: list[Operation] = []

        def mk(name, operands, rtype, attrs=None, into=None, hint=None):
            o = Operation(name, operands, [rtype] if rtype is not None else [], attrs or {}, loc=loc,
                          result_names=[hint] if rtype is not None else None)
            (into if into is not None else pre).append(o)
            return o.results[0] if rtype is not None else o

        def const(v, into=None):
            return mk("constant", [], ivt, {"value": v}, into)

        # ring buffers
        rings = []
        for ld, sl in cands:
            rt: TileType = ld.results[0].type
            st = TileType(rt.dtype, (S,) + tuple(rt.shape), "shared", None)
            ring = mk("alloc_shared", [], st, hint=(ld.results[0].name or "t") + "_ring")
            rings.append(ring)
        stage_t = [TileType(ld.results[0].type.dtype, tuple(ld.results[0].type.shape), "shared", None)
                   for ld, _ in cands]
        # on a target with TMA: one mbarrier per stage, which the stage's TMA copies complete on
        # (instruction selection decides which copies are TMA copies; the protocol is above)
        bars = None
        bar_t = TileType(i64, (1,), "shared", None)
        if self.target.has("tma") and any(ld.name == "load" for ld, _ in cands):
            bars = mk("alloc_shared", [], TileType(i64, (S, 1), "shared", None), hint="full")
            mk("mbarrier_init", [bars], None, {"count": 1})

        def issue(into, k_value, slot_value):
            """if k < hi: async_copy each ring's stage `slot` from the load at k; commit the group (and
            arrive on the stage's mbarrier)."""
            bar = mk("subview", [bars, slot_value], bar_t, into=into) if bars is not None else None
            c = mk("cmp", [k_value, hi], ScalarType(bool_), {"pred": "lt"}, into)
            then_b, else_b = Block(), Block()
            mp = {}                                       # one clone of what the copies share (K and V's rows)
            for (ld, sl), ring, stt in zip(cands, rings, stage_t):
                ops = []
                mp = self.clone_slice(ops, sl, k_value, mp)
                for o in ops:
                    then_b.append(o)
                sv = Operation("subview", [ring, slot_value], [stt], {}, loc=loc)
                then_b.append(sv)
                idx = [mp.get(id(v), v) for v in ld.operands[1:]]
                if ld.name == "gather":
                    then_b.append(Operation("async_gather", [sv.results[0], ld.operands[0], *idx], [], {}, loc=ld.loc))
                else:
                    then_b.append(Operation("async_copy", [sv.results[0], ld.operands[0], *idx] +
                                            ([bar] if bar is not None else []), [],
                                            {"multicast": True} if ld.attrs.get("multicast") else {}, loc=ld.loc))
            then_b.append(Operation("yield", [], [], {}, loc=loc))
            else_b.append(Operation("yield", [], [], {}, loc=loc))
            into.append(Operation("if", [c], [], {}, [then_b, else_b], loc=loc))
            into.append(Operation("async_commit", [], [], {}, loc=loc))
            if bar is not None:
                into.append(Operation("mbarrier_arrive", [bar], [], {}, loc=loc))

        # prefetch distance: S-1 stages ahead; on Hopper S-2, so that the stage overwritten in
        # iteration j was read by the dot of iteration j-2 -- the dot of j-1 (an asynchronous wgmma)
        # may still be reading its stage (codegen then waits for one wgmma group, not all)
        D = S - 2 if (self.target.has("wgmma") and S >= 4) else S - 1
        # prologue
        for s in range(D):
            if s == 0:
                k_s = lo
            else:
                k_s = mk("add", [lo, mk("mul", [const(s), step], ivt)], ivt)
            issue(pre, k_s, mk("constant", [], ScalarType(i32), {"value": s}))
        for o in pre:
            parent.insert(pos, o)
            pos += 1
        # loop body: wait, read the stage, issue the next copy
        head: list[Operation] = []
        j = mk("div", [mk("sub", [self.iv, lo], ivt, into=head), step], ivt, into=head)
        Sc = const(S, head)
        slot = mk("rem", [j, Sc], ivt, into=head)
        slot32 = slot if ivt == ScalarType(i32) else mk("cast", [slot], ScalarType(i32), into=head)
        head.append(Operation("async_wait", [], [], {"pending": D - 1}, loc=loc))
        if bars is not None:
            # iteration j reads stage j % S, whose mbarrier completes its (j // S)-th phase for it
            phase = mk("rem", [mk("div", [j, Sc], ivt, into=head), const(2, head)], ivt, into=head)
            if ivt != ScalarType(i32):
                phase = mk("cast", [phase], ScalarType(i32), into=head)
            head.append(Operation("mbarrier_wait", [mk("subview", [bars, slot32], bar_t, into=head), phase], [], {},
                                  loc=loc))
        head.append(Operation("barrier", [], [], {}, loc=loc))
        for (ld, sl), ring, stt in zip(cands, rings, stage_t):
            sv = mk("subview", [ring, slot32], stt, into=head)
            res = ld.results[0]
            rtype = res.type
            users = [u for u in self.fn.walk() if any(x is res for x in u.operands)]
            conv = None
            tr = None
            if rtype.layout is not None and len(users) == 1 and users[0].name == "transpose" and \
                    list(users[0].attrs["perm"]) == [1, 0]:
                # load -> .T -> convert(fragment): read the transposed fragments straight from shared
                tr = users[0]
                tusers = [u for u in self.fn.walk() if any(x is tr.results[0] for x in u.operands)]
                if tusers and all(u.name == "convert_layout" for u in tusers) and \
                        len({str(u.results[0].type.layout) for u in tusers}) == 1:
                    from ..ir.thread_maps import as_map
                    want = as_map(tusers[0].results[0].type.layout)
                    tr.results[0].type = tusers[0].results[0].type
                    rtype = rtype.with_(layout=want.permute([1, 0]).to_tv())
                    for u in tusers:
                        _replace_uses(self.fn, u.results[0], tr.results[0])
                        u.parent.ops.remove(u)
                tr = None
            if rtype.layout is not None and users and all(u.name == "convert_layout" for u in users):
                lays = {str(u.results[0].type.layout) for u in users}
                if len(lays) == 1:
                    conv = users
                    rtype = users[0].results[0].type
            sl_op = Operation("shared_load", [sv], [rtype], {}, loc=ld.loc, result_names=[res.name])
            head.append(sl_op)
            new = sl_op.results[0]
            targets = [res] if conv is None else [u.results[0] for u in conv]
            for t_ in targets:
                _replace_uses(self.fn, t_, new)
            if conv is not None:
                for u in conv:
                    u.parent.ops.remove(u)
        reads = len(head)
        k_next = mk("add", [self.iv, mk("mul", [const(D, head), step], ivt, into=head)], ivt, into=head)
        nslot = mk("rem", [mk("add", [j, const(D, head)], ivt, into=head), Sc], ivt, into=head)
        nslot32 = nslot if ivt == ScalarType(i32) else mk("cast", [nslot], ScalarType(i32), into=head)
        tail: list[Operation] = []
        issue(tail, k_next, nslot32)
        if D == 1:
            # one stage ahead: the next stage is issued right after the barrier (before the
            # shared_loads, which must stay next to their dot for it to read them lazily). Issued at
            # the end of the body, the copy would be waited for at the top of the next iteration
            # with nothing to hide its latency behind. The stage it overwrites, (j+1) % S =
            # (j-1) % S, was last read in iteration j-1, which every thread finished at j's barrier.
            cut = [o.name for o in head].index("barrier") + 1
            head[:] = head[:cut] + head[reads:] + tail + head[cut:reads]
            tail = []
        for ld, _ in cands:
            self.body.ops.remove(ld)
        for k, o in enumerate(head):
            self.body.insert(k, o)
        # the next stage is issued at the end of the body: the shared_loads stay next to the dot
        # (whose ldmatrix reads then interleave with its mma's)
        y = self.body.ops[-1]
        for o in tail:
            self.body.insert(self.body.ops.index(y), o)
        # drain
        after = Operation("async_wait", [], [], {"pending": 0}, loc=loc)
        parent.insert(parent.ops.index(op) + 1, after)
        if bars is not None:
            parent.insert(parent.ops.index(after) + 1, Operation("mbarrier_inval", [bars], [], {}, loc=loc))
        op.attrs.pop("stages", None)
        op.attrs["pipelined"] = S
        op.attrs["prefetch"] = D
        self._set_shared_layouts(rings)
        return True

    def _set_shared_layouts(self, rings):
        """If the IR has layouts already, give the ring buffers (and their subviews) layouts."""
        from .layout_inference import _drop_stage, _stack_stages, operand_contig_dim
        from ..ir.shared_layouts import default_shared_layout, swizzled_row_major
        from ..ir.thread_maps import as_map
        nw = int(self.fn.attrs.get("num_warps", 4))
        nthreads = self.target.threads(nw)
        for ring in rings:
            subs = [u for u in self.fn.walk() if u.name == "subview" and u.operands[0] is ring]
            loads = [u for s in subs for u in self.fn.walk() if u.name == "shared_load" and u.operands[0] is s.results[0]]
            if not loads or all(ld.results[0].type.layout is None for ld in loads):
                continue
            t = ring.type
            contig = None
            for ld in loads:
                lt = ld.results[0].type
                if lt.rank == 2 and lt.layout is not None and contig is None:
                    contig = operand_contig_dim(as_map(lt.layout, nthreads), nw, lt.dtype.bits)
            lay = _stack_stages(swizzled_row_major(t.shape[-2:], t.dtype.bits, contig), t.shape) \
                if contig is not None and t.rank >= 3 else default_shared_layout(t.shape)
            ring.type = t.with_(layout=lay)
            for s in subs:
                s.results[0].type = s.results[0].type.with_(layout=_drop_stage(lay))


def _replace_uses(fn: Function, old: Value, new: Value):
    for o in fn.walk():
        for i, v in enumerate(o.operands):
            if v is old:
                o.operands[i] = new


def pipeline_function(fn: Function, target: Target | None = None) -> Function:
    target = get_target(target or fn.attrs.get("target") or "sm_90a")
    loops = [o for o in fn.walk() if o.name == "for" and int(o.attrs.get("stages", 1) or 1) >= 2]
    changed = False
    for lp in loops:
        if not target.has("cp.async"):         # AMD: loads staged through registers (pipeline_registers.py)
            from .pipeline_registers import pipeline_loop_registers
            pipeline_loop_registers(fn, lp, target)
            continue
        changed |= _LoopPipeliner(fn, lp, int(lp.attrs["stages"]), target).run()
    if changed:
        # the loop body's own index computations of the replaced loads are dead now; a layout
        # conversion among them would still cost barriers and shared-memory traffic every iteration
        dce_function(fn)
    return fn


@register("pipeline_loads")
def pipeline_loads(m: Module, target: Target) -> Module:
    """Software-pipeline the loads feeding a dot in `for` loops with `stages = S` (cp.async ring buffers; AMD: next tiles prefetched into registers)."""
    for fn in m.functions:
        pipeline_function(fn, target)
    return m
