"""select_instructions: choose the instruction behind every dot and copy, and write the choice into
the IR, where it prints, can be edited, and is what code generation carries out.

Attributes written (values are the target's atom names, `ir/targets.py`):
* `dot`: `atom` -- `wgmma.m64n<N>k16.ss` / `.rs` (Hopper: A from shared memory or from registers,
  N columns per instruction), `wgmma.m64n<N>k32.ss` (Hopper, fp8 / int8: both operands K-major in
  shared memory), `mma.m16n8k16`, `mma.m16n8k32` (8-bit inputs: int8 from sm_80, fp8 from sm_89),
  `mfma.32x32x8` / `mfma.16x16x16` / `mfma.32x32x16` /
  `mfma.16x16x32` (AMD: operands and accumulator in the MFMA fragments of the wave grid), or
  `fma` (a tile.PerformanceWarning says why -- dtype, shape or layout -- where the target has tensor
  cores) -- and `warps = [wm, wn]`, the warp (wave) grid
  of the fragments, for tensor-core atoms; `inflight = 1` on a wgmma whose group may stay in flight
  across iterations of its pipelined loop (the loop's exit waits for it); `deferred = 1` on an SS
  wgmma whose result is first used later in its block, after other work: codegen waits for its
  group there (or a later wgmma's wait covers it), not right after the issue -- attention's scores
  of the next key block run on the tensor cores during this block's softmax.
* `shared_load` and `convert_layout` feeding a dot: `copy` -- `smem.desc` (the wgmma reads the
  shared tile through a matrix descriptor), `ldmatrix.k` (the mma.sync dot reads fragments with
  ldmatrix one k step at a time), `ldmatrix.trans.k` (the same through the `transpose` that
  follows), `ldmatrix` (all fragments at once), `ld.shared` (plain vector loads); on AMD
  `ds_read.k` / `ds_read.trans.k` (the MFMA dot reads one k step at a time from LDS: select_amd.py).
* `load`, `store`, `gather`, `scatter`: `vec`, elements per global access (a run-time check of
  strides and alignment still guards the vector path, unless passes/divisibility.py proves it
  exact: `vec_exact`); on AMD `copy = "buffer.load"` /
  `"buffer.store"` on loads and stores (through a buffer resource: select_amd.py); on Hopper a store
  staged in shared memory and written by bulk tensor stores: `copy = "tma", box, swizzle, staging`
  (select_tma_store.py).
* `async_copy`: `copy` -- `tma` (Hopper's tensor-memory accelerator: one thread copies whole boxes,
  `box = [...]`, written with the tensor map's `swizzle` (bytes), completing on the copy's mbarrier;
  see `tma_plan`), `cp.async` or `ld.global` (a synchronous copy) -- and `vec` (for the latter two;
  kept on a TMA copy so that an edit back to cp.async compiles). `async_gather`: `cp.async` or
  `ld.global`, and `vec`.
* `xcd_remap`: `xcds`, the target's XCD count (1 on NVIDIA: the identity) unless the kernel gave one.

The choice follows the layouts layout inference gave (an MMA atom needs its fragment layouts) and
what the target offers; a choice edited by hand that the target or the layouts cannot honour is a
located error in code generation, never a silent fallback.
"""
from __future__ import annotations

from ..ir.core import Function, Module, Operation
from ..ir.ops import OPS
from ..ir.shared_layouts import (conversion_scratch_layout, default_shared_layout, ldmatrix_chunk_dim,
                                    smem_vector_elems, tma_box_plan, transpose_layout, wgmma_canonical)
from ..ir.targets import Target
from ..ir.thread_maps import (as_map, blocked, mfma_dot_grid, mma_a, mma_c, mma_dot_grid, mma_operand_kind,
                              vector_elems)
from ..ir.types import TileType

from .layout_inference import mfma_atoms
from .select_amd import select_global_copy, select_mfma_copies
from .select_tma_store import select_tma_store
from .manager import register
from .shared_memory_planning import scratch_bytes

__all__ = ["select_instructions", "select_function"]


def _is_reg(t) -> bool:
    return isinstance(t, TileType) and t.space == "reg"


class _Selector:
    def __init__(self, fn: Function, target: Target):
        self.fn = fn
        self.target = target
        self.num_warps = int(fn.attrs.get("num_warps", 4))
        self.nthreads = target.threads(self.num_warps)
        self.users: dict[int, list] = {}
        for op in fn.walk():
            for v in op.operands:
                self.users.setdefault(id(v), []).append(op)

    def map(self, t):
        return as_map(t.layout, self.nthreads)

    # ------------------------------------------------------------------ entry
    def run(self):
        for op in list(self.fn.walk()):
            n = op.name
            if n in ("load", "gather", "store", "scatter"):
                v = op.results[0] if n in ("load", "gather") else op.value
                if _is_reg(v.type) and v.type.layout is not None:
                    op.attrs["vec"] = vector_elems(self.map(v.type), v.type.dtype.bits)
                select_global_copy(self, op)             # AMD: through a buffer resource
                select_tma_store(self, op)               # Hopper: staged in shared memory, bulk stores
            elif n in ("async_copy", "async_gather"):
                self.async_copy(op)
            elif n == "xcd_remap":
                op.attrs.setdefault("xcds", self.target.xcds)     # the target's chiplet count
        for op in list(self.fn.walk()):
            if op.name in ("shared_load", "convert_layout"):
                op.attrs.pop("copy", None)
        for op in list(self.fn.walk()):
            if op.name == "dot":
                self.dot(op)
        for op in list(self.fn.walk()):
            if op.name == "shared_load" and "copy" not in op.attrs:
                op.attrs["copy"] = self.eager_copy(op)

    # ------------------------------------------------------------------ copies
    def async_copy(self, op: Operation):
        st = op.operands[0].type
        bits = st.dtype.bits
        m = blocked(st.shape, self.nthreads, bits)
        vec = vector_elems(m, bits)
        nbytes = vec * bits // 8
        if bits < 8:
            # packed rows copied as byte spans (codegen's packed path); gathers of sub-byte rows
            # go element by element
            ok = self.target.has("cp.async") and op.name == "async_copy"
        else:
            ok = self.target.has("cp.async") and vec > 1 and nbytes in (4, 8, 16) and \
                smem_vector_elems(self.shared_layout(st), vec) >= vec
        op.attrs["copy"] = "cp.async" if ok else "ld.global"
        op.attrs["vec"] = vec
        op.attrs.pop("box", None)
        op.attrs.pop("swizzle", None)
        plan = self.tma_plan(op) if op.name == "async_copy" else None
        if plan is not None:
            op.attrs["copy"] = "tma"
            op.attrs["box"], op.attrs["swizzle"] = list(plan[0]), plan[1]

    def tma_plan(self, op: Operation):
        """(box, swizzle) when the tensor-memory accelerator can make this async copy, else None
        (cp.async then). It can when the target has it, the copy names an mbarrier to complete on,
        the tensor may be described by a tensor map (not listed in the function attribute
        `any_strides`: a launch found strides a tensor map cannot take; 1 to 5 dims of whole-byte
        elements) and the destination's shared layout is what TMA writes (`tma_box_plan`: boxes of
        at most 256 elements per dim, rows of whole 16-byte chunks, the tensor-map swizzle), its
        stages on swizzle-atom boundaries. Elements outside the tensor are zero either way."""
        if not self.target.has("tma") or self.target.copy_atom("tma") is None or op.bar is None:
            return None
        T = op.tensor
        st = op.dst.type
        bits = st.dtype.bits
        if T.type.rank > 5 or bits not in (8, 16, 32, 64):
            return None
        if (T.name or f"arg{T.index}") in (self.fn.attrs.get("any_strides") or ()):
            return None
        plan = tma_box_plan(self.shared_layout(st), st.shape, bits)
        if plan is None:
            return None
        stage = st.numel * bits // 8
        if stage % (1024 if plan[1] else 128):       # every stage on a swizzle-atom (128-byte) boundary
            return None
        return plan

    def eager_copy(self, op: Operation) -> str:
        rt = op.results[0].type
        if rt.layout is None:
            return "ld.shared"
        return "ldmatrix" if self.ldmatrix_ok(op.operands[0].type, self.map(rt), rt.dtype.bits) else "ld.shared"

    def ldmatrix_ok(self, st, m, bits: int, layout=None) -> bool:
        """ldmatrix can read the mma operand fragment m from shared tile st (or the bytes viewed with
        `layout`): 16-bit elements in 16-byte chunks along either dim (.trans for the other), or
        8-bit elements in 16-byte chunks along the operand's K dim (no .trans for bytes)."""
        at = self.target.copy_atom("ldmatrix")
        if bits not in (8, 16) or not at or (at.elem_bits and bits not in at.elem_bits):
            return False
        kind = mma_operand_kind(m, self.num_warps, bits)
        if kind is None:
            return False
        cd = ldmatrix_chunk_dim(layout if layout is not None else self.shared_layout(st), bits)
        if bits == 8:
            return cd == (1 if kind[0] == "a" else 0)
        return cd is not None

    @staticmethod
    def shared_layout(st):
        return st.layout if st.layout is not None else default_shared_layout(st.shape)

    def lazy_source(self, v, dot: Operation):
        """How dot operand v can be read from shared memory by the dot itself: (producer op, copy
        name, shared layout of the bytes as the operand sees them), or None."""
        op = v.owner if isinstance(v.owner, Operation) else None
        bits = v.type.dtype.bits
        if op is None or bits not in (8, 16) or v.type.layout is None:
            return None
        m = self.map(v.type)
        if op.name == "shared_load" and self.deferrable(op, dot):
            st = op.operands[0].type
            if self.ldmatrix_ok(st, m, bits):
                return op, "ldmatrix.k", self.shared_layout(st)
        if op.name == "transpose" and list(op.attrs["perm"]) == [1, 0]:
            src = op.operands[0].owner if isinstance(op.operands[0].owner, Operation) else None
            if src is not None and src.name == "shared_load" and self.deferrable(src, dot, through_transpose=True):
                lay = transpose_layout(self.shared_layout(src.operands[0].type))
                if self.ldmatrix_ok(None, m, bits, lay):
                    return src, "ldmatrix.trans.k", lay
        if bits == 16 and op.name == "convert_layout" and self.only_dot_operand_users(op) and \
                scratch_bytes(op, self.num_warps, self.target.warp_size):     # staged, not a register permutation
            am = self.map(op.operands[0].type)
            lay = conversion_scratch_layout(am, m, 16, self.num_warps)
            if self.ldmatrix_ok(None, m, 16, lay):
                return op, "ldmatrix.k", lay
        return None

    def only_dot_operand_users(self, op) -> bool:
        r = op.results[0]
        us = self.users.get(id(r), [])
        return bool(us) and all(u.name == "dot" and not any(x is r for x in u.operands[2:]) for u in us)

    def deferrable(self, op: Operation, dot: Operation, through_transpose: bool = False) -> bool:
        """The shared_load's only use is an operand of `dot` later in the same block (with
        `through_transpose`: via a 2-D transpose), with nothing between that could write shared
        memory: the dot may then read the bytes itself when it needs them."""
        res = op.results[0]
        blk = op.parent
        ops = blk.ops
        i = ops.index(op)
        for o in ops[i + 1:]:
            uses = [k for k, v in enumerate(o.operands) if v is res]
            if through_transpose and uses == [0] and o.name == "transpose" and list(o.attrs["perm"]) == [1, 0]:
                if any(v is res for later in ops[ops.index(o) + 1:] for x in later.walk() for v in x.operands):
                    return False
                res, through_transpose = o.results[0], False
                continue
            if o.name == "dot" and uses:
                if o is not dot or uses not in ([0], [1]):
                    return False
                return not any(v is res for later in ops[ops.index(o) + 1:] for x in later.walk() for v in x.operands)
            if uses or any(v is res for x in o.walk() for v in x.operands):
                return False
            if OPS[o.name].effects and o.name != "shared_load":
                return False
            if o.regions and any(OPS[x.name].effects for x in o.walk() if x is not o):
                return False              # (a branch of register math only -- a mask -- writes no shared memory)
        return False

    # ------------------------------------------------------------------ dot
    def dot(self, op: Operation):
        a, b, c = op.operands
        op.attrs.pop("inflight", None)
        op.attrs.pop("deferred", None)
        grid = None
        bits = a.type.dtype.bits if isinstance(a.type, TileType) else 0
        regs = all(_is_reg(v.type) and v.type.layout is not None for v in (a, b, c))
        mma = self.mma_atom(a.type.dtype.name, c.type.dtype.name) if regs else None
        if mma is not None:
            grid = mma_dot_grid(self.map(a.type), self.map(b.type), self.map(c.type), self.num_warps, bits)
        if grid is None and regs:
            atoms = [x for x in mfma_atoms(self.target)
                     if self.target.mma_atom(x[0]).supports(a.type.dtype.name, c.type.dtype.name)]
            mf = mfma_dot_grid(self.map(a.type), self.map(b.type), self.map(c.type), self.num_warps, atoms) \
                if atoms else None
            if mf is not None:                   # MFMA; operands staged in LDS read one k step at a time
                op.attrs["atom"], op.attrs["warps"] = mf[0], [mf[1], mf[2]]
                select_mfma_copies(self, op)
                return
        if grid is None:
            op.attrs["atom"] = "fma"
            op.attrs.pop("warps", None)
            warn_fma(op, self.fn, self.target, fma_reason(op, self.target, self.num_warps))
            return
        op.attrs["warps"] = list(grid)
        la, lb = self.lazy_source(a, op), self.lazy_source(b, op)
        wg = self.wgmma(op, grid, la, lb)
        if wg is not None:
            op.attrs["atom"] = wg
            if lb is not None:
                lb[0].attrs["copy"] = "smem.desc" if lb[1] != "ldmatrix.trans.k" else lb[1]
            if wg.endswith(".ss"):
                la[0].attrs["copy"] = "smem.desc" if la[1] != "ldmatrix.trans.k" else la[1]
            if self.inflight(op) and wg.endswith(".ss"):
                op.attrs["inflight"] = 1
            elif wg.endswith(".ss") and self.deferred(op):
                op.attrs["deferred"] = 1
            return
        op.attrs["atom"] = mma.name
        for src in (la, lb):
            if src is not None:
                src[0].attrs["copy"] = src[1]

    def mma_atom(self, in_dt: str, acc_dt: str):
        """The target's mma.sync atom (m16n8k16 for 16-bit inputs, m16n8k32 for 8-bit ones) that
        multiplies in_dt into acc_dt, or None. (Where the target has wgmma for these types, its
        register fragments are the same per warp, and `wgmma` decides between them.)"""
        for at in self.target.mma_atoms:
            if at.name in ("mma.m16n8k16", "mma.m16n8k32") and at.supports(in_dt, acc_dt):
                return at
        return None

    def wgmma(self, op, grid, la, lb):
        """The wgmma atom name for this dot, or None (then mma.sync)."""
        a, b, c = op.operands
        at = self.target.mma_atom("wgmma", a.type.dtype.name, c.type.dtype.name)
        if at is None or lb is None:
            return None
        bits = a.type.dtype.bits
        wm, wn = grid
        if wm % 4:
            return None
        M, K = a.type.shape
        N = b.type.shape[1]
        n_wg = N // wn
        if n_wg % 8:
            return None
        n_inst = n_wg if n_wg <= 256 else (256 if n_wg % 256 == 0 else (128 if n_wg % 128 == 0 else 0))
        if not n_inst or n_inst not in at.n_range:
            return None
        ib = wgmma_canonical(str(lb[2]), (K, N), "b", bits)
        if ib is None or (at.k_major_only and ib[0] != "K"):
            return None
        ia = wgmma_canonical(str(la[2]), (M, K), "a", bits) if la is not None else None
        if ia is not None and (not at.k_major_only or ia[0] == "K"):
            return f"wgmma.m64n{n_inst}k{at.k}.ss"
        if at.k_major_only:
            return None                  # (the RS form of the 8-bit wgmma is not generated: mma.sync)
        # the RS form: per warp the wgmma A fragment is the m16n8k16 A fragment of its 16 rows
        # (fragment-layouts.md §3.2): A must hold exactly mma_a of this warp grid
        try:
            if not self.map(a.type).same(mma_a(M, K, wm, wn).for_threads(self.nthreads)):
                return None
        except Exception:               # noqa: BLE001
            return None
        if not self.map(c.type).same(mma_c(M, N, wm, wn).for_threads(self.nthreads)):
            return None
        return f"wgmma.m64n{n_inst}k16.rs"

    def inflight(self, op: Operation) -> bool:
        """The dot may stay in flight across iterations: its loop was pipelined with prefetch distance
        stages-2, the dot accumulates into the loop-carried value, and its result goes only to the
        yield (nothing reads it before the next wgmma or the wait at the loop's exit)."""
        blk = op.parent
        loop = getattr(blk, "parent", None)
        if loop is None or getattr(loop, "name", None) != "for":
            return False
        S, D = loop.attrs.get("pipelined"), loop.attrs.get("prefetch")
        if not S or D is None or D != S - 2:
            return False
        acc, res = op.operands[2], op.results[0]
        if acc.owner is not blk or acc not in blk.args:
            return False
        users = [o for o in blk.ops for v in o.operands if v is res]
        if len(users) != 1 or users[0].name != "yield":
            return False
        y = users[0]
        if [i for i, v in enumerate(y.operands) if v is res] != [blk.args.index(acc) - 1]:
            return False
        return not any(v is acc for o in blk.ops if o is not op for x in o.walk() for v in x.operands)


    def deferred(self, op: Operation) -> bool:
        """The dot's wait may go to the first use of its result: that use is in the same block, and
        the ops between it and the issue have no regions (the group stays in one straight line of
        code) and include real work (not only index or constant set-up). (SS only: the RS form's A
        registers would have to stay untouched until the wait.)"""
        ops = op.parent.ops
        res = op.results[0]
        between = []
        for o in ops[ops.index(op) + 1:]:
            if any(v is res for x in o.walk() for v in x.operands):
                return any(x.name not in _SETUP for x in between)
            if o.regions:
                return False
            between.append(o)
        return False


# ops that only set up indices, constants or views: no work to overlap a wgmma with
_SETUP = frozenset({"constant", "splat", "full", "arange", "broadcast", "reshape", "subview"})


def _pairs_text(target: Target) -> str:
    """What the target's tensor-core atoms multiply, e.g. 'bf16/f16 -> f32, i8/u8 -> i32'."""
    by_acc: dict = {}
    for at in target.mma_atoms:
        if at.name == "fma":
            continue
        pairs = at.pairs or tuple((i, c) for i in at.inputs for c in at.acc)
        for i, c in pairs:
            lst = by_acc.setdefault(c, [])
            if i not in lst:
                lst.append(i)
    return ", ".join(f"{'/'.join(ins)} -> {acc}" for acc, ins in by_acc.items())


def fma_reason(op: Operation, target: Target, num_warps: int) -> str | None:
    """Why a dot is on the FMA loop on a target with tensor cores (dtype, shape or layout), or None
    where the target has no tensor cores (nothing is lost there)."""
    atoms = [at for at in target.mma_atoms if at.name != "fma"]
    if not atoms:
        return None
    a, b, c = (v.type for v in op.operands)
    M, K = a.shape
    N = b.shape[1]
    ok = [at for at in atoms if at.supports(a.dtype.name, c.dtype.name)]
    if not ok:
        return (f"dtype: no tensor-core instruction of {target.name} multiplies {a.dtype} into a {c.dtype} "
                f"accumulator (it has {_pairs_text(target)})")
    k = min(at.k for at in ok)
    m = min(at.m for at in ok)
    n = min(at.n or 8 for at in ok)
    if K % k or M % m or N % n:
        return (f"shape: {M}x{K} @ {K}x{N} does not tile into the {m}x{n}x{k} instruction "
                f"(M a multiple of {m}, N of {n}, K of {k})")
    lays = []
    for v, w in zip(op.operands, ("a", "b", "acc")):
        if v.type.layout is not None:
            lays.append(f"{w}: {v.type.layout}")
    return (f"layout: its operands are not in the tensor-core fragment layouts of one warp grid of "
            f"{num_warps} warps (an annotated layout, a warp count the tile does not split into, or "
            f"layout inference kept it off the tensor cores for registers); " + "; ".join(lays))


def warn_fma(op: Operation, fn: Function, target: Target, reason: str | None):
    """A tile.PerformanceWarning for a dot left on scalar FMA where the target has tensor cores,
    naming the kernel, the dot's source line and why."""
    if reason is None:
        return
    from ..ir.errors import warn_performance
    a, b, c = (v.type for v in op.operands)
    warn_performance(fn, op, f"dot {a.dtype}[{a.shape[0]}x{a.shape[1]}] @ {b.dtype}[{b.shape[0]}x{b.shape[1]}] -> "
                             f"{c.dtype} runs on scalar FMA, not on the tensor cores of {target.name}: {reason}",
                     stacklevel=2)


def select_function(fn: Function, target: Target) -> Function:
    _Selector(fn, target).run()
    return fn


@register("select_instructions")
def select_instructions(m: Module, target: Target) -> Module:
    """Record each dot's atom (wgmma / mma.sync / FMA), each copy's mechanism and vector width in the IR."""
    for fn in m.functions:
        select_function(fn, target)
    return m
