"""layout_inference: give every register tile a TVLayout and every shared tile a layout; insert
`convert_layout` where a producer's layout differs from what a consumer needs.

Rules (NVIDIA targets; layouts are built with passes/thread_maps.py):
* anchors: `dot` with bf16/f16 inputs and an f32 accumulator gets the mma.sync fragment layouts
  (accumulator/result: mma C tiled over a warp grid; operands: mma A / B of the same grid); loads,
  gathers and default tiles get the *blocked* layout (16-byte chunks along the last dim, threads
  along the last dim first, replication when the tile is small); layouts a user wrote on a type are
  kept as they are.
* demands flow backward from consumers to flexible producers: an elementwise op passes its
  result's demand to its operands (so does `cumsum`), a broadcast the slice of it, a loop its body's needs to its
  initial values -- so `zeros` feeding a dot accumulator is created in the mma layout, a bias
  vector added to a dot result is loaded in the slice of the mma layout (epilogues stay in the
  accumulator's registers).
* results follow operands forward: elementwise ops (and `cumsum`) keep their operands' layout, `reduce` removes
  the reduced dim from its operand's layout (ThreadMap.project), `transpose` permutes it.
* where layouts still disagree (two anchored operands, a dot operand loaded from memory, a
  loop-carried value, mask or row-index operands) a `convert_layout` is inserted right after the
  value's definition (so it is shared by all users and hoisted out of loops).
* a shared tile without a layout is row-major, swizzled (ldmatrix bank-conflict free) when a
  shared_load of it feeds a dot operand.

A conflict -- an annotated layout that does not fit its tile or the kernel's threads, or a loop
whose carried value has two different annotated layouts -- raises `LayoutConflictError` naming
the op and both layouts.
"""
from __future__ import annotations

from ..ir.core import Block, Function, Module, Operation, Value
from ..ir.errors import TileError, VerifyError
from ..ir.layout import ComposedLayout, Layout
from ..ir.ops import OPS
from ..ir.register_layout import TVLayout
from ..ir.targets import Target, get_target
from ..ir.types import TileType

from .manager import register
from ..ir.shared_layouts import default_shared_layout, swizzled_row_major
from ..ir.thread_maps import (ThreadMap, as_map, blocked, mfma_a, mfma_b, mfma_c, mfma_warps, mma_a, mma_b, mma_c,
                                mma_operand_kind, mma_warps)
from ..ir.thread_maps import mfma_dot_grid

__all__ = ["layout_inference", "LayoutConflictError", "infer_function", "mma_warp_grid"]

ELEMENTWISE = {n for n, d in OPS.items() if "elementwise" in d.tags}      # as ir/ops.py declares them


class LayoutConflictError(TileError):
    """Two layouts that cannot be reconciled; names the op and both layouts."""

    def __init__(self, op, msg: str, a=None, b=None):
        self.op = op
        loc = f"{op.loc}: " if getattr(op, "loc", None) else ""
        both = ""
        if a is not None or b is not None:
            both = f"\n    layout 1: {a}\n    layout 2: {b}"
        super().__init__(f"{loc}op '{op.name}': layout conflict: {msg}{both}")


def _pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _is_reg(t) -> bool:
    return isinstance(t, TileType) and t.space == "reg"


# the atoms whose register fragments are thread_maps.mma_a / mma_b / mma_c (per warp)
WARP_FRAGMENT_ATOMS = ("mma.m16n8k16", "mma.m16n8k32", "wgmma")


def mma_warp_grid(M, N, K, a_dt, c_dt, num_warps, prefer_rows=False, target: Target | None = None):
    """(wm, wn) for a dot on warp-level tensor-core fragments (mma.sync, and wgmma, whose register
    fragments are the same per warp), or None for the FMA path. On a target with wgmma,
    warpgroup-shaped grids come first."""
    target = get_target(target or "sm_90a")
    if not any(a.name in WARP_FRAGMENT_ATOMS and a.supports(a_dt.name, c_dt.name) for a in target.mma_atoms):
        return None
    return mma_warps(M, N, K, a_dt, c_dt, num_warps, prefer_rows, prefer_warpgroups=target.has("wgmma"))


# the atoms whose register fragments are thread_maps.mfma_a / mfma_b / mfma_c (per 64-lane wave)
WAVE_FRAGMENT_ATOMS = ("mfma.32x32x16", "mfma.16x16x32", "mfma.32x32x8", "mfma.16x16x16")


def mfma_atoms(target: Target) -> list:
    """The target's MFMA atoms as (name, m, n, k), in its order of preference."""
    return [(a.name, a.m, a.n, a.k) for a in target.mma_atoms
            if a.name in WAVE_FRAGMENT_ATOMS and a.group == target.warp_size]


def mfma_lazy_operands(target: Target) -> bool:
    """MFMA operands staged in LDS are read one k step at a time by the dot (`ds_read.k`, chosen by
    select_instructions): only the accumulator and one k step of A and B are live in registers."""
    return target.copy_atom("ds_read.k") is not None


def mfma_live_values(f, target: Target, num_warps: int) -> int:
    """Values per lane the MFMA fragments (A, B, C) of one dot keep live: with lazy operands the
    accumulator and one k step (the atom's k) of the operands."""
    a, b, c = f
    if not mfma_lazy_operands(target):
        return a.nvals + b.nvals + c.nvals
    g = mfma_dot_grid(a, b, c, num_warps, mfma_atoms(target))
    K = a.shape[1]
    ak = target.mma_atom(g[0]).k if g is not None else K
    return c.nvals + (a.nvals + b.nvals) * ak // K


def dot_fragments(M, N, K, a_dt, c_dt, num_warps, prefer_rows=False, target: Target | None = None, op=None):
    """The register fragments of a dot on matrix instructions -- (A, B, C) ThreadMaps for the
    target's threads -- or None for the FMA path: the mma.sync fragments over a warp grid on
    NVIDIA (`mma_warp_grid`), the MFMA fragments over a wave grid where the target has MFMA atoms.
    A dot `op` whose `atom` asks for an MFMA shape (`tile.dot(mfma="16x16")`: "mfma.16x16") gets
    that shape's atom or a located error."""
    target = get_target(target or "sm_90a")
    n = target.threads(num_warps)
    g = mma_warp_grid(M, N, K, a_dt, c_dt, num_warps, prefer_rows, target)
    if g is not None:
        wm, wn = g
        bits = a_dt.bits
        return mma_a(M, K, wm, wn, bits).for_threads(n), mma_b(K, N, wm, wn, bits).for_threads(n), \
            mma_c(M, N, wm, wn).for_threads(n)
    atoms = {x[0]: x for x in mfma_atoms(target)}
    want = str(op.attrs.get("atom", "")) if op is not None else ""
    if atoms and want.startswith("mfma."):
        atoms = {k: v for k, v in atoms.items() if k == want or k.startswith(want + "x")}
        if not atoms or mfma_warps(M, N, K, a_dt, c_dt, num_warps, list(atoms.values()), prefer_rows) is None:
            raise VerifyError(op, f"atom = {want!r}: {target.name} has no such MFMA atom for a {M}x{N}x{K} "
                                  f"{a_dt} dot on {num_warps} waves (a shape the atom and the wave grid tile)")
    g = mfma_warps(M, N, K, a_dt, c_dt, num_warps, list(atoms.values()), prefer_rows,
                   target.limits.registers // 4, lazy_k=mfma_lazy_operands(target)) if atoms else None
    if g is None:
        return None
    name, wm, wn = g
    _, am, an, ak = atoms[name]
    return mfma_a(M, K, wm, wn, am, ak).for_threads(n), mfma_b(K, N, wm, wn, an, ak).for_threads(n), \
        mfma_c(M, N, wm, wn, am).for_threads(n)


class _Demand:
    __slots__ = ("map", "kind")

    def __init__(self, m, kind="plain"):
        self.map, self.kind = m, kind


class LayoutInference:
    def __init__(self, fn: Function, num_warps: int | None = None, target: Target | None = None):
        self.fn = fn
        self.target = get_target(target or fn.attrs.get("target") or "sm_90a")
        self.num_warps = int(fn.attrs.get("num_warps", 4) if num_warps is None else num_warps)
        self.nthreads = self.target.threads(self.num_warps)
        self.layout: dict[int, ThreadMap] = {}        # id(Value) -> layout
        self.fixed: set[int] = set()                  # annotated by the user
        self.demand: dict[int, _Demand] = {}
        self.required: list = []                      # (op, operand index, ThreadMap)
        self.dot_grid: dict[int, tuple] = {}          # id(dot op) -> (A, B, C) fragment maps or None
        self.prefer_rows = self._prefer_rows()

    # ------------------------------------------------------------------ helpers
    def default(self, t: TileType) -> ThreadMap:
        return blocked(t.shape, self.nthreads, t.dtype.bits)

    def annotated(self, v: Value, op=None):
        t = v.type
        if not _is_reg(t) or t.layout is None:
            return None
        lay = t.layout
        try:
            m = as_map(lay)
        except Exception as e:
            raise LayoutConflictError(op or _Fake(v), f"the annotated layout of {v.name or 'a value'} cannot be "
                                                      f"used: {e}", lay, f"a layout of tile {t.shape}")
        if tuple(m.shape) != tuple(t.shape):
            raise LayoutConflictError(op or _Fake(v), f"the annotated layout of {v.name or 'a value'} is for a "
                                                      f"{m.shape} tile, but the tile is {t.shape}", lay, t)
        if m.nthreads > self.nthreads or self.nthreads % m.nthreads:
            raise LayoutConflictError(op or _Fake(v), f"the annotated layout spreads over {m.nthreads} threads, "
                                                      f"the kernel has {self.nthreads} ({self.num_warps} warps)",
                                      lay, f"{self.nthreads} threads")
        return m.for_threads(self.nthreads)

    def _prefer_rows(self) -> bool:
        for op in self.fn.walk():
            if op.name == "reduce" and int(op.attrs.get("axis", -1)) == 1 and op.operands[0].type.rank == 2:
                return True
        return False

    def grid(self, op):
        key = id(op)
        if key not in self.dot_grid:
            self._plan_dots()
        if key not in self.dot_grid:
            a, b, c = (v.type for v in op.operands)
            M, K = a.shape
            N = b.shape[1]
            self.dot_grid[key] = dot_fragments(M, N, K, a.dtype, c.dtype, self.num_warps, self.prefer_rows,
                                               self.target, op)
        return self.dot_grid[key]

    def _plan_dots(self):
        """The fragments of every dot at once. MFMA operands read whole from registers (B replicated
        over the waves that share it; on targets without `ds_read.k`) can exhaust the register file:
        where the MFMA fragments of all dots together need more than half of it per lane, the
        largest dots take the FMA path (which reads its operands from shared memory) until they
        fit -- spilling to scratch costs more than FMA."""
        if self.dot_grid:
            return
        # Dots under different top-level ops (two key loops one after the other) are never live at
        # once: the budget holds per top-level op, not for the sum over the kernel.
        groups: dict = {}
        for top in self.fn.body.ops:
            for op in top.walk():
                if op.name != "dot" or not all(_is_reg(v.type) for v in op.operands):
                    continue
                a, b, c = (v.type for v in op.operands)
                M, K = a.shape
                N = b.shape[1]
                f = dot_fragments(M, N, K, a.dtype, c.dtype, self.num_warps, self.prefer_rows, self.target, op)
                self.dot_grid[id(op)] = f
                if f is not None and mfma_atoms(self.target):      # (NVIDIA: ldmatrix reads k steps lazily)
                    groups.setdefault(id(top), []).append((mfma_live_values(f, self.target, self.num_warps), id(op)))
        budget = self.target.limits.registers // 2
        for sizes in groups.values():
            total = sum(n for n, _ in sizes)
            for n, key in sorted(sizes, reverse=True):
                if total <= budget:
                    break
                self.dot_grid[key] = None
                total -= n

    def _dot_layout_feeding(self, v, body: Block, shape):
        """The accumulator layout of a dot (with tensor-core fragments) in `body` whose result reaches
        `v` through elementwise ops and broadcasts of the same shape, or None."""
        inside = {id(o) for o in body.ops}
        seen, stack = set(), [v]
        while stack:
            x = stack.pop()
            o = x.owner if isinstance(x.owner, Operation) else None
            if o is None or id(o) in seen or id(o) not in inside or not _is_reg(x.type) \
                    or tuple(x.type.shape) != tuple(shape):
                continue
            seen.add(id(o))
            if o.name == "dot":
                g = self.grid(o)
                if g is not None:
                    return g[2]
                continue
            if o.name in ELEMENTWISE:
                stack.extend(o.operands)
        return None

    def demand_of(self, v):
        d = self.demand.get(id(v))
        return d

    def set_demand(self, v, m, kind="plain"):
        if m is None or not _is_reg(v.type):
            return
        if id(v) not in self.demand:
            self.demand[id(v)] = _Demand(m, kind)

    # ------------------------------------------------------------------ backward: demands
    def backward_block(self, block: Block):
        for op in reversed(block.ops):
            self.backward_op(op)

    def backward_op(self, op: Operation):
        n = op.name
        res = op.results[0] if len(op.results) == 1 else None
        rd = self.demand_of(res) if res is not None else None
        fixed_res = res is not None and _is_reg(res.type) and res.type.layout is not None
        if fixed_res:
            m = self.annotated(res, op)
            rd = _Demand(m)
        if n == "dot":
            g = self.grid(op)
            if g is not None:
                a, b, c = op.operands
                M, K = a.type.shape
                N = b.type.shape[1]
                fa, fb, fc = g
                self.set_demand(a, fa, "dot_a")
                self.set_demand(b, fb, "dot_b")
                self.set_demand(c, fc, "acc")
            elif rd is not None:
                self.set_demand(op.operands[2], rd.map)
        elif n in ELEMENTWISE or n == "cumsum" or (n == "bitcast" and _is_reg(op.operands[0].type)
                                                   and op.operands[0].type.shape == op.results[0].type.shape):
            if rd is not None and rd.kind not in ("dot_a", "dot_b"):
                for v in op.operands:
                    if _is_reg(v.type):
                        self.set_demand(v, rd.map)
        elif n == "broadcast":
            if rd is not None and rd.kind not in ("dot_a", "dot_b"):
                self.set_demand(op.operands[0], rd.map.broadcast_operand(op.operands[0].type.shape))
        elif n == "transpose":
            if rd is not None and rd.kind not in ("dot_a", "dot_b"):
                perm = list(op.attrs["perm"])
                inv = [perm.index(d) for d in range(len(perm))]
                self.set_demand(op.operands[0], rd.map.permute(inv))
        elif n == "reshape":
            if rd is not None and rd.kind not in ("dot_a", "dot_b"):
                back = rd.map.reshape(op.operands[0].type.shape)
                if back is not None:
                    self.set_demand(op.operands[0], back)
        elif n == "convert_layout":
            pass
        elif n == "for":
            body = op.regions[0]
            y = body.ops[-1]
            # A carried value that the body rebuilds from a dot result through elementwise ops (a
            # split-K or per-group-scaled accumulator: acc = acc + dot(a, b) * s) stays in the dot's
            # accumulator layout, even where a consumer after the loop wants another: a conversion
            # after the loop runs once, one inside it every iteration.
            for i, arg in enumerate(body.args[1:]):
                if self.demand_of(arg) is None and _is_reg(arg.type):
                    fc = self._dot_layout_feeding(y.operands[i], body, arg.type.shape)
                    if fc is not None:
                        self.set_demand(y.operands[i], fc)
                        self.set_demand(arg, fc)
            for _ in range(2):
                for i, (arg, r) in enumerate(zip(body.args[1:], op.results)):
                    d = self.demand_of(arg) or self.demand_of(r)
                    if d is not None:
                        self.set_demand(y.operands[i], d.map, d.kind if d.kind == "acc" else "plain")
                self.backward_block(body)
            for i, (arg, r) in enumerate(zip(body.args[1:], op.results)):
                d = self.demand_of(arg) or self.demand_of(r)
                if d is not None:
                    self.set_demand(op.operands[3 + i], d.map, d.kind)
        elif n == "if":
            for region in op.regions:
                y = region.ops[-1]
                for i, r in enumerate(op.results):
                    d = self.demand_of(r)
                    if d is not None:
                        self.set_demand(y.operands[i], d.map)
                self.backward_block(region)
        elif n == "while":
            before, after = op.regions
            for _ in range(2):
                self.backward_block(after)
                y = after.ops[-1]
                for i, arg in enumerate(before.args):
                    d = self.demand_of(arg)
                    if d is not None:
                        self.set_demand(y.operands[i], d.map)
                cond = before.ops[-1]
                for i, (a2, r) in enumerate(zip(after.args, op.results)):
                    d = self.demand_of(a2) or self.demand_of(r)
                    if d is not None:
                        self.set_demand(cond.operands[1 + i], d.map)
                self.backward_block(before)
            for i, arg in enumerate(before.args):
                d = self.demand_of(arg)
                if d is not None:
                    self.set_demand(op.operands[i], d.map)
        else:
            for region in op.regions:
                self.backward_block(region)

    # ------------------------------------------------------------------ forward: assignment
    def get(self, v: Value) -> ThreadMap:
        m = self.layout.get(id(v))
        if m is None:
            raise LayoutConflictError(_Fake(v), f"value {v.name or '?'} has no layout (used before definition?)")
        return m

    def assign(self, v: Value, m: ThreadMap, op=None):
        if not _is_reg(v.type):
            return
        ann = self.annotated(v, op)
        if ann is not None:
            self.layout[id(v)] = ann
            self.fixed.add(id(v))
            return ann
        self.layout[id(v)] = m
        return m

    def require(self, op, i, m):
        if _is_reg(op.operands[i].type) and m is not None:
            self.required.append((op, i, m))

    def result_choice(self, res, fallback):
        d = self.demand_of(res)
        return d.map if d is not None else fallback

    def forward_block(self, block: Block):
        for op in list(block.ops):
            self.forward_op(op)

    def forward_op(self, op: Operation):
        n = op.name
        rs = op.results
        res = rs[0] if len(rs) == 1 else None
        if n in ("full", "splat", "arange"):
            self.assign(res, self.result_choice(res, self.default(res.type)), op)
        elif n in ("load", "gather"):
            d = self.demand_of(res)
            m = d.map if d is not None and d.kind == "plain" else self.default(res.type)
            m = self.assign(res, m, op)
            if n == "load" and op.mask is not None:
                self.require(op, len(op.operands) - 1, m)          # the mask is the last operand
            else:
                self.require(op, 1, m.project(1))
        elif n == "shared_load":
            self.assign(res, self.result_choice(res, self.default(res.type)), op)
        elif n in ELEMENTWISE or (n == "bitcast" and res is not None and _is_reg(res.type)
                                  and op.operands[0].type.shape == res.type.shape):
            tiles = [i for i, v in enumerate(op.operands) if _is_reg(v.type)]
            if not tiles:
                return
            if n == "select" and len(tiles) == 3:
                cand_idx = [1, 2, 0]
            else:
                cand_idx = tiles
            cands = [self.get(op.operands[i]) for i in cand_idx]
            d = self.demand_of(res)
            chosen = None
            if d is not None and any(c.same(d.map) for c in cands):
                chosen = d.map
            if chosen is None:
                fixed = [c for i, c in zip(cand_idx, cands) if id(op.operands[i]) in self.fixed]
                mma_like = [c for c in cands if c.nvals and _looks_mma(c)]
                chosen = (fixed or mma_like or cands)[0]
            chosen = self.assign(res, chosen, op)
            if res.type.dtype.bits != op.operands[tiles[0]].type.dtype.bits and n == "bitcast":
                pass
            for i in tiles:
                self.require(op, i, chosen)
        elif n == "broadcast":
            m = self.assign(res, self.result_choice(res, self.default(res.type)), op)
            self.require(op, 0, m.broadcast_operand(op.operands[0].type.shape))
        elif n == "cumsum":
            self.assign(res, self.get(op.operands[0]), op)
        elif n == "reduce":
            a = self.get(op.operands[0])
            if _is_reg(res.type):
                self.assign(res, a.project(int(op.attrs["axis"])), op)
        elif n == "transpose":
            a = self.get(op.operands[0])
            self.assign(res, a.permute(list(op.attrs["perm"])), op)
        elif n == "reshape":
            a = self.get(op.operands[0])
            d = self.demand_of(res)
            view = a.reshape(res.type.shape)
            self.assign(res, d.map if d is not None and view is None else (view or self.default(res.type)), op)
        elif n in ("slice", "concat", "bitcast"):
            self.assign(res, self.result_choice(res, self.default(res.type)), op)
        elif n == "convert_layout":
            self.assign(res, self.result_choice(res, self.get(op.operands[0])), op)
        elif n == "dot":
            g = self.grid(op)
            a, b, c = op.operands
            M, K = a.type.shape
            N = b.type.shape[1]
            if g is not None:
                fa, fb, cm = g
                self.require(op, 0, fa)
                self.require(op, 1, fb)
            else:
                cm = self.get(c)
            cm = self.assign(res, cm, op)
            self.require(op, 2, cm)
        elif n in ("store", "atomic"):
            vi = 1 + op.tensor.type.rank                       # the value's operand index
            vm = self.get(op.value)
            vt = op.value.type
            if vt.dtype.bits < 8 and n == "store" and not _owns_bytes(vm, vt.dtype.bits):
                vm = self.default(vt)
                self.require(op, vi, vm)
            elif n == "store" and _scattered(vm, vt):
                # a big tile in a fragment layout (short runs per thread): one trip through shared
                # memory buys 16-byte coalesced stores
                vm = self.default(vt)
                self.require(op, vi, vm)
            if op.mask is not None:
                self.require(op, vi + 1, vm)
        elif n == "scatter":
            vm = self.get(op.operands[3])
            vt = op.operands[3].type
            if vt.dtype.bits < 8 and not _owns_bytes(vm, vt.dtype.bits):
                vm = self.default(vt)
                self.require(op, 3, vm)
            self.require(op, 1, vm.project(1))
        elif n == "shared_store":
            vm = self.get(op.operands[1])
            vt = op.operands[1].type
            if vt.dtype.bits < 8 and not _owns_bytes(vm, vt.dtype.bits):
                self.require(op, 1, self.default(vt))
        elif n == "for":
            body = op.regions[0]
            self.layout[id(body.args[0])] = None
            for i, (arg, r, init) in enumerate(zip(body.args[1:], op.results, op.operands[3:])):
                if not _is_reg(arg.type):
                    continue
                ann_a, ann_r = self.annotated(arg, op), self.annotated(r, op)
                if ann_a is not None and ann_r is not None and not ann_a.same(ann_r):
                    raise LayoutConflictError(op, f"loop-carried value {i} has one annotated layout in the loop "
                                                  f"and another on the loop's result", arg.type.layout, r.type.layout)
                m = ann_a or ann_r
                if m is None:
                    d = self.demand_of(arg) or self.demand_of(r)
                    m = d.map if d is not None else self.get(init)
                m = self.assign(arg, m, op)
                self.require(op, 3 + i, m)
            self.forward_block(body)
            y = body.ops[-1]
            for i, (arg, r) in enumerate(zip(body.args[1:], op.results)):
                if _is_reg(arg.type):
                    m = self.layout[id(arg)]
                    self.require(y, i, m)
                    self.layout[id(r)] = m
                    if r.type.layout is not None:
                        self.fixed.add(id(r))
        elif n == "if":
            for region in op.regions:
                self.forward_block(region)
            yt, ye = op.regions[0].ops[-1], op.regions[1].ops[-1]
            for i, r in enumerate(op.results):
                if not _is_reg(r.type):
                    continue
                ann = self.annotated(r, op)
                d = self.demand_of(r)
                m = ann or (d.map if d is not None else self.get(yt.operands[i]))
                self.layout[id(r)] = m
                self.require(yt, i, m)
                self.require(ye, i, m)
        elif n == "while":
            before, after = op.regions
            for i, (arg, init) in enumerate(zip(before.args, op.operands)):
                if not _is_reg(arg.type):
                    continue
                ann = self.annotated(arg, op)
                d = self.demand_of(arg)
                m = ann or (d.map if d is not None else self.get(init))
                self.layout[id(arg)] = m
                self.require(op, i, m)
            self.forward_block(before)
            cond = before.ops[-1]
            for i, (a2, r) in enumerate(zip(after.args, op.results)):
                if _is_reg(a2.type):
                    m = self.get(cond.operands[1 + i])
                    ann = self.annotated(a2, op) or self.annotated(r, op)
                    if ann is not None:
                        m = ann
                        self.require(cond, 1 + i, m)
                    self.layout[id(a2)] = m
                    self.layout[id(r)] = m
            self.forward_block(after)
            y = after.ops[-1]
            for i, arg in enumerate(before.args):
                if _is_reg(arg.type):
                    self.require(y, i, self.layout[id(arg)])
        else:
            for region in op.regions:
                self.forward_block(region)
            for r in rs:
                if _is_reg(r.type):
                    self.assign(r, self.result_choice(r, self.default(r.type)), op)

    # ------------------------------------------------------------------ rewrite
    FLEXIBLE = {"full", "splat", "arange", "broadcast", "load", "gather", "reshape", "transpose"} | ELEMENTWISE

    def run(self):
        for _ in range(4):
            self.layout, self.fixed, self.required = {}, set(), []
            self.backward_block(self.fn.body)
            self.forward_block(self.fn.body)
            # a conversion right after a flexible producer: make the producer emit the needed layout
            # (e.g. a bias broadcast added to a dot result is built in the accumulator's layout)
            cands = []
            for op, i, m in self.required:
                v = op.operands[i]
                have = self.layout.get(id(v))
                if have is None or have.same(m) or id(v) in self.demand or id(v) in self.fixed:
                    continue
                if op.name == "dot" and i in (0, 1):
                    continue
                if m.replica_tmodes() and not have.replica_tmodes():
                    continue                                  # never trade real work for copies
                prod = v.owner if isinstance(v.owner, Operation) else None
                if prod is None or prod.name not in self.FLEXIBLE:
                    continue
                if any(u is not op and any(x is v for x in u.operands) and not self._wants(u, v, m)
                       for u in self._users(v)):
                    continue
                cands.append((op, v, m))
            # a candidate whose consumer is itself about to change layout waits for the next round
            changing = {id(v) for _, v, _ in cands}
            new = False
            for op, v, m in cands:
                if any(id(r) in changing for r in op.results):
                    continue
                if id(v) not in self.demand:
                    self.demand[id(v)] = _Demand(m)
                    new = True
            if not new:
                break
        self.insert_converts()
        self.write_types(self.fn.body)
        self.shared_layouts()
        self.fn.attrs.setdefault("num_warps", self.num_warps)
        self.warn_replicated()

    # a register tile with a dim that is not a power of two gets the fallback layout that gives every
    # thread the whole tile: correct, but each thread does all the work and holds all the values
    # (1000 i32 elements: 1000 registers each, spilled). Above this many values per thread, say so.
    REPLICATED_WARN_VALUES = 64

    def warn_replicated(self):
        """One PerformanceWarning per kernel, at the first op that makes such a tile."""
        from ..ir.errors import warn_performance
        hits = []
        for op in self.fn.walk():
            for r in op.results:
                t = r.type
                m = self.layout.get(id(r))
                if _is_reg(t) and m is not None and id(r) not in self.fixed and not all(_pow2(s) for s in t.shape) \
                        and m.nvals > self.REPLICATED_WARN_VALUES and m.replica_tmodes():
                    hits.append((op, t, m))
        if not hits:
            return
        op, t, m = hits[0]
        pad = "x".join(str(1 << (s - 1).bit_length()) for s in t.shape)
        more = f" (and {len(hits) - 1} more tiles after it)" if len(hits) > 1 else ""
        shape = "x".join(map(str, t.shape))
        warn_performance(self.fn, op, f"{op.name} makes a {shape} {t.dtype} tile, not a power of two in every dim, so "
                                      f"every thread holds all of it ({m.nvals} values each){more}; a {pad} tile with "
                                      f"masked loads and stores is spread over the threads", stacklevel=2)

    def _users(self, v):
        if not hasattr(self, "_user_index"):
            idx: dict = {}
            for o in self.fn.walk():
                for x in o.operands:
                    idx.setdefault(id(x), []).append(o)
            self._user_index = idx
        return self._user_index.get(id(v), [])

    def _wants(self, user, v, m) -> bool:
        """Does `user` accept v in layout m without a conversion (or need m as well)?"""
        for op, i, mm in self.required:
            if op is user and op.operands[i] is v:
                return mm.same(m)
        return True

    REMAT_LEAVES = {"full", "splat", "arange"}

    def remat(self, v) -> bool:
        """A tile that is cheaper to recompute in another layout than to move between threads:
        full/splat/arange and elementwise ops, broadcasts, reshapes and transposes of such tiles
        (with any scalar operands)."""
        key = id(v)
        c = self._remat.get(key)
        if c is not None:
            return c
        self._remat[key] = False                     # (cycles cannot happen: SSA)
        o = v.owner
        ok = False
        if isinstance(o, Operation) and len(o.results) == 1 and not o.regions and \
                (id(v) not in self.fixed or id(v) in self._clones):
            if o.name in self.REMAT_LEAVES:
                ok = True
            elif o.name in ELEMENTWISE or o.name in ("broadcast", "reshape", "transpose"):
                tiles = [x for x in o.operands if _is_reg(x.type)]
                ok = bool(tiles) and all(self.remat(x) for x in tiles)
        self._remat[key] = ok
        return ok

    def materialize(self, v, m: ThreadMap):
        """v in layout m: v itself, a recomputation (remat tiles) or a convert_layout."""
        have = self.layout.get(id(v))
        if have is not None and have.same(m):
            return v
        key = (id(v), m.key())
        got = self._mat.get(key)
        if got is not None:
            return got
        nv = None
        if self.remat(v):
            nv = self._recompute(v, m)
        elif self._widening_cast(v) and have is not None and _register_permutation(have, m):
            # a permutation of each thread's registers commutes with the cast: done on the codes, the
            # cast then converts its values in the order the consumer pairs them (a narrow-code cast
            # makes two values per 32-bit register; a pre-laid-out weight tile is loaded in another
            # order than its mma fragment's: tile/prelayout.py)
            nv = self._recompute(v, m)
            if nv is not None:
                self._remat[id(v)] = True             # the original cast goes once nothing uses it
        if nv is None:
            nv = self._make_convert(v, m)
        self._mat[key] = nv
        return nv

    def _widening_cast(self, v) -> bool:
        o = v.owner
        return isinstance(o, Operation) and o.name == "cast" and len(o.results) == 1 and _is_reg(o.operands[0].type) \
            and o.operands[0].type.dtype.bits < v.type.dtype.bits

    def _recompute(self, v, m: ThreadMap):
        o = v.owner
        ops_in = []
        for x in o.operands:
            if not _is_reg(x.type):
                ops_in.append(x)
                continue
            if o.name in ELEMENTWISE:
                mx = m
            elif o.name == "broadcast":
                mx = m.broadcast_operand(x.type.shape)
            elif o.name == "reshape":
                mx = m.reshape(x.type.shape)
                if mx is None:
                    return None
            else:                                    # transpose
                perm = list(o.attrs["perm"])
                mx = m.permute([perm.index(d) for d in range(len(perm))])
            ops_in.append(self.materialize(x, mx))
        t = v.type.with_(layout=m.to_tv())
        clone = Operation(o.name, ops_in, [t], dict(o.attrs), loc=o.loc, result_names=[v.name])
        blk = o.parent
        blk.insert(blk.ops.index(o) + 1, clone)
        self.layout[id(clone.results[0])] = m
        self.fixed.add(id(clone.results[0]))
        self._clones.add(id(clone.results[0]))
        return clone.results[0]

    def insert_converts(self):
        self._remat, self._mat, self._clones = {}, {}, set()
        for op, i, m in self.required:
            v = op.operands[i]
            have = self.layout.get(id(v))
            if have is None or have.same(m):
                continue
            op.operands[i] = self.materialize(v, m)
        self._drop_dead_remat()

    def _drop_dead_remat(self):
        """Remove recomputable ops left without users (their clones took over)."""
        while True:
            used = set()
            for o in self.fn.walk():
                for x in o.operands:
                    used.add(id(x))
            dead = [o for o in self.fn.walk() if o.results and len(o.results) == 1 and not o.regions
                    and id(o.results[0]) not in used and id(o.results[0]) in self._remat
                    and self._remat[id(o.results[0])]]
            if not dead:
                return
            for o in dead:
                o.parent.ops.remove(o)

    def _make_convert(self, v: Value, m: ThreadMap) -> Value:
        t = v.type.with_(layout=m.to_tv())
        cop = Operation("convert_layout", [v], [t], loc=None, result_names=[(v.name + "_cv") if v.name else None])
        if isinstance(v.owner, Operation):
            blk = v.owner.parent
            idx = blk.ops.index(v.owner) + 1
            cop.loc = v.owner.loc
        else:
            blk = v.owner
            idx = 0
        blk.insert(idx, cop)
        self.layout[id(cop.results[0])] = m
        self.fixed.add(id(cop.results[0]))
        return cop.results[0]

    def write_types(self, block: Block):
        for a in block.args:
            self._write(a)
        for op in block.ops:
            for r in op.results:
                self._write(r)
            for region in op.regions:
                self.write_types(region)

    def _write(self, v: Value):
        if not _is_reg(v.type):
            return
        m = self.layout.get(id(v))
        if m is None:
            m = self.default(v.type)
        if v.type.layout is not None:
            try:
                if as_map(v.type.layout, self.nthreads).same(m):
                    return
            except Exception:
                pass
        v.type = v.type.with_(layout=m.to_tv())

    def shared_layouts(self):
        """Row-major, or swizzled when a shared_load feeds a dot operand through ldmatrix."""
        allocs = [op for op in self.fn.walk() if op.name == "alloc_shared"]
        if not allocs:
            return
        users: dict[int, list] = {}
        for op in self.fn.walk():
            for v in op.operands:
                users.setdefault(id(v), []).append(op)

        def loads_of(v, acc):
            for u in users.get(id(v), []):
                if u.name == "subview":
                    loads_of(u.results[0], acc)
                elif u.name == "shared_load":
                    acc.append(u)
            return acc
        for op in allocs:
            r = op.results[0]
            t = r.type
            if t.layout is None:
                contig = None
                for ld in loads_of(r, []):
                    lt = ld.results[0].type
                    if lt.rank == 2 and lt.layout is not None:
                        c = operand_contig_dim(as_map(lt.layout, self.nthreads), self.num_warps, lt.dtype.bits)
                        contig = c if contig is None else contig
                if contig is not None and t.rank >= 2:
                    inner = swizzled_row_major(t.shape[-2:], t.dtype.bits, contig)
                    lay = _stack_stages(inner, t.shape)
                else:
                    lay = default_shared_layout(t.shape)
                r.type = t.with_(layout=lay)
            self._propagate_subviews(r, users)

    def _propagate_subviews(self, v, users):
        for u in users.get(id(v), []):
            if u.name == "subview":
                lay = v.type.layout
                sub = _drop_stage(lay)
                if sub is not None:
                    u.results[0].type = u.results[0].type.with_(layout=sub)
                    self._propagate_subviews(u.results[0], users)


def _stack_stages(inner, shape):
    """Layout of a (stages..., R, C) tile whose trailing 2-D tile has layout `inner`."""
    il = inner.layout if isinstance(inner, ComposedLayout) else inner
    if len(shape) == 2:
        return inner
    lead = shape[:-2]
    size = shape[-2] * shape[-1]
    strides = []
    s = size
    for d in reversed(lead):
        strides.append(s)
        s *= d
    strides = list(reversed(strides))
    lay = Layout(tuple(lead) + tuple(il.shape), tuple(strides) + tuple(il.stride))
    return ComposedLayout(inner.swizzle, 0, lay) if isinstance(inner, ComposedLayout) else lay


def _drop_stage(lay):
    inner = lay.layout if isinstance(lay, ComposedLayout) else lay
    if isinstance(inner.shape, int) or inner.rank < 2:
        return None
    modes = list(inner)[1:]
    sub = modes[0] if len(modes) == 1 else Layout(tuple(m.shape for m in modes), tuple(m.stride for m in modes))
    return ComposedLayout(lay.swizzle, 0, sub) if isinstance(lay, ComposedLayout) else sub


def _is_mma_operand(m: ThreadMap, num_warps: int, bits: int = 16) -> bool:
    return mma_operand_kind(m, num_warps, bits) is not None


def operand_contig_dim(m: ThreadMap, num_warps: int, bits: int):
    """The contiguous dim of the swizzled shared layout for a tile read into register layout m,
    or None when m is no mma operand fragment (then row-major, unswizzled).

    16-bit: -1 (row-major, swizzled: ldmatrix reads either way, .trans for the other major, and
    wgmma takes K- and MN-major descriptors). 8-bit: the operand's K dim, whichever way the tile
    is stored -- wgmma takes only K-major 8-bit operands (no transpose bit) and ldmatrix without
    .trans only K-contiguous 8-bit fragments; a tile whose K is not contiguous in global memory is
    then written to shared memory transposed, through registers (its async copy cannot be a
    cp.async), which is why a B given as B^T [N, K] (torch._scaled_mm's column-major B) and
    read through `.T` is the fast case."""
    if bits == 16:
        return -1 if (_is_mma_operand(m, num_warps) or _is_mma_operand(m.permute([1, 0]), num_warps)) else None
    if bits != 8:
        return None
    k = mma_operand_kind(m, num_warps, 8)
    if k is not None:
        return 1 if k[0] == "a" else 0                 # A (M, K): K is dim 1; B (K, N): dim 0
    k = mma_operand_kind(m.permute([1, 0]), num_warps, 8)
    if k is not None:
        return 0 if k[0] == "a" else 1                 # stored (K, M) / (N, K)
    return None


def _register_permutation(a: ThreadMap, b: ThreadMap) -> bool:
    """Every thread holds the same elements in a and b, in another order (a convert_layout between
    them moves no data between threads: codegen relabels registers)."""
    if a.shape != b.shape or a.nthreads != b.nthreads or a.nvals != b.nvals:
        return False
    if not (a.tcoords() == b.tcoords()).all():
        return False
    have = a.value_index()
    return all(c in have for c in b.vcoord_list())


def _looks_mma(m: ThreadMap) -> bool:
    """An mma C-like layout: lanes (4, 8) with col stride 2 / row stride 1."""
    return m.rank == 2 and len(m.tmodes) >= 2 and m.tmodes[0] == (4, (0, 2)) and m.tmodes[1] == (8, (1, 0))


def _scattered(m: ThreadMap, t) -> bool:
    """A tile of at least 4 KB whose threads hold runs of less than 16 bytes along the last dim,
    where the blocked layout would give full 16-byte runs."""
    if t.rank < 2 or t.dtype.bits < 8 or t.nbits < 4096 * 8:
        return False
    if any(s & (s - 1) for s in t.shape):
        return False
    return m.runs(-1) * t.dtype.bits < 128 and blocked(t.shape, m.nthreads, t.dtype.bits).runs(-1) * t.dtype.bits >= 128


def _owns_bytes(m: ThreadMap, bits: int) -> bool:
    from math import gcd
    per = 8 // gcd(8, bits)
    return m.runs(-1) % per == 0 and m.runs(-1) >= per


class _Fake:
    """Stands in for an op in error messages about a value."""

    def __init__(self, v):
        self.name = getattr(getattr(v, "owner", None), "name", "value")
        self.loc = getattr(getattr(v, "owner", None), "loc", None)


def infer_function(fn: Function, num_warps: int | None = None, target: Target | None = None) -> Function:
    LayoutInference(fn, num_warps, target).run()
    return fn


@register("layout_inference")
def layout_inference(m: Module, target: Target) -> Module:
    """Give every register tile a TVLayout (blocked / mma fragments), shared tiles a (swizzled) layout,
    and insert convert_layout where producers and consumers disagree."""
    for fn in m.functions:
        infer_function(fn, target=target)
    return m
