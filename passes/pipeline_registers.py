"""Software pipelining for targets without asynchronous copies (AMD CDNA): register-staged double
buffering, the classic CDNA schedule. `pipeline_loads` hands such targets' loops here.

The global loads that feed a dot in a `for` loop with `stages >= 2` are issued one iteration ahead
into registers; the tile loaded in iteration j-1 is carried into iteration j, where the conversion
to the dot's fragment layout writes it to LDS (convert_layout: barrier, write, barrier -- after
every wave finished the previous step's MFMAs) and the dot reads it from there one k step at a time
(`ds_read.k`, passes/select_amd.py). The next tile's loads are issued after those writes and before
the dots, so their latency hides behind this step's MFMAs:

    for k in range(lo, hi, step, stages=S):       a0 = lo < hi ? load(A, f(lo)) : 0           (prologue)
        a = load(A, f(k))                         for k in range(lo, hi, step), carrying a_cur = a0:
        acc = dot(a, ..., acc)          ==>           a_cv = convert_layout(a_cur)   # regs -> LDS
                                                      a_next = k + step < hi ? load(A, f(k + step)) : 0
                                                      acc = dot(a_cv, ..., acc)      # LDS -> MFMA, per k step
                                                      yield ..., a_next

One LDS buffer per operand (the conversion's scratch) instead of an S-stage ring: attention with
head dim 128 keeps q, k and v in 48 KB, within gfx942's 64 KB. The prefetch distance is one
iteration whatever S asks (each further stage would cost the tile's registers again); the loop
records it as `pipelined = 2, prefetch = 1`. The loads chosen are pipeline_loads' (no mask, `other`
0, indices from the induction variable and loop-invariant values through pure ops); the guard
`k + step < hi` keeps the last iteration from reading past the loop's range. The output is
ordinary tile IR (the interpreter runs it with the same results).
"""
from __future__ import annotations

from ..ir.core import Block, Function, Operation, Value
from ..ir.dtypes import bool_
from ..ir.targets import Target
from ..ir.types import ScalarType

__all__ = ["pipeline_loop_registers"]


def _uses(fn: Function, v: Value) -> list:
    return [o for o in fn.walk() if any(x is v for x in o.operands)]


def pipeline_loop_registers(fn: Function, forop: Operation, target: Target) -> bool:
    """Register-stage the loads of one `for` loop (see the module doc); False if none qualifies."""
    from .pipeline_loads import _LoopPipeliner, _replace_uses
    lp = _LoopPipeliner(fn, forop, 2, target)
    cands = [(ld, sl) for ld, sl in lp.candidates() if ld.name == "load"]
    if not cands:
        return False
    body: Block = forop.regions[0]
    parent: Block = forop.parent
    lo, hi, step = forop.operands[:3]
    ivt = lp.iv.type
    loc = forop.loc

    def guarded_load(into: list, k: Value, ld: Operation, sl, hint: str = "_next") -> Value:
        """`k < hi ? load(T, f(k)) : 0` (uniform branch; the tile keeps the load's layout)."""
        c = Operation("cmp", [k, hi], [ScalarType(bool_)], {"pred": "lt"}, loc=loc)
        into.append(c)
        then_b, else_b = Block(), Block()
        ops: list = []
        mp = lp.clone_slice(ops, sl, k)
        for o in ops:
            then_b.append(o)
        rt = ld.results[0].type
        nld = Operation(ld.name, [mp.get(id(v), v) for v in ld.operands], [rt], dict(ld.attrs), loc=ld.loc,
                        result_names=[ld.results[0].name])
        then_b.append(nld)
        then_b.append(Operation("yield", [nld.results[0]], [], {}, loc=loc))
        zero = 0.0 if rt.dtype.is_float else (False if rt.dtype == bool_ else 0)
        z = Operation("full", [], [rt], {"value": zero}, loc=ld.loc)
        else_b.append(z)
        else_b.append(Operation("yield", [z.results[0]], [], {}, loc=loc))
        g = Operation("if", [c.results[0]], [rt], {}, [then_b, else_b], loc=ld.loc,
                      result_names=[(ld.results[0].name or "t") + hint])
        into.append(g)
        return g.results[0]

    # prologue: the first tiles, before the loop
    pre: list = []
    firsts = [guarded_load(pre, lo, ld, sl, "_first") for ld, sl in cands]
    pos = parent.ops.index(forop)
    for o in pre:
        parent.insert(pos, o)
        pos += 1
    # carried: each load's result becomes a loop-carried tile
    curs = []
    for (ld, _), first in zip(cands, firsts):
        res = ld.results[0]
        cur = body.add_arg(res.type, (res.name or "t") + "_cur")
        curs.append(cur)
        forop.operands.append(first)
        forop.results.append(Value(res.type, res.name, forop, len(forop.results)))
        _replace_uses(fn, res, cur)
        body.ops.remove(ld)
    # the next tiles: just before the first dot, after the conversions that write the current tiles
    # to LDS (their registers are free again), so the loads are in flight during the MFMAs
    at = next((i for i, o in enumerate(body.ops) if any(y.name == "dot" for y in o.walk())), len(body.ops) - 1)
    nxt: list = []
    k1 = Operation("add", [lp.iv, step], [ivt], {}, loc=loc)
    nxt.append(k1)
    news = [guarded_load(nxt, k1.results[0], ld, sl) for ld, sl in cands]
    for k, o in enumerate(nxt):
        body.insert(at + k, o)
    body.ops[-1].operands.extend(news)
    forop.attrs.pop("stages", None)
    forop.attrs["pipelined"] = 2
    forop.attrs["prefetch"] = 1
    return True
