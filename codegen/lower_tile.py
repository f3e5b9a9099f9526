"""Target-independent lowering of tile IR (after layout inference and shared-memory planning) to
LLVM IR with llvmlite.ir.

The model (one kernel = one LLVM function; every thread runs it):
* a scalar IR value is one LLVM value, the same in every thread;
* a register tile is the list of LLVM values its layout (a TVLayout, analyzed as a
  `passes.thread_maps.ThreadMap`) gives each thread: `RTile(map, vals)`; thread coordinates come
  from the layout, never from numbers written here;
* a shared tile is a byte offset into the kernel's one dynamic shared buffer plus its shared layout;
* a global tensor is its base pointer and runtime sizes/strides (ir/artifact.py);
* structured control flow becomes an LLVM CFG with phis over the flattened values.

Which function lowers an op is a table, (target family, op) -> lowering (codegen/table.py); the
lowerings are functions of this context and the op, grouped by op family in one file each: memory
(lower_memory.py), shared memory and data movement between threads (lower_shared.py), reductions
(lower_reduce.py), cumsum (lower_scan.py), dot (lower_dot.py, lower_wgmma.py), TMA copies and
mbarriers (lower_tma.py), the rest here. Target
facts come from the `Target` (ir/targets.py: warp size, features, atoms); instruction patterns
(thread ids, barriers, shuffles, predicated memory instructions, async copies, tensor-core
instructions, fast exp2) from the family's intrinsics object (codegen/nvptx_intrinsics.py). The
choices are already in the IR (passes/select_instructions.py): a lowering carries them out.
"""
from __future__ import annotations


import llvmlite.ir as ir

from ..ir.core import Block, Function, Operation, Value
from ..ir.dtypes import DType
from ..ir.ops import BINARY, UNARY
from ..ir.targets import Target
from ..ir.types import ScalarType, TensorType, TileType
from ..ir.thread_maps import ThreadMap, as_map

from ..ir.artifact import TMAP_ALIGN, TMAP_BYTES, flatten_params
from .errors import CompileError
from . import fast_convert
from .llvm_numerics import Numerics
from .values import LazyFrag, RTile, SView, TensorV
from .table import lowering_for, lowers
from .llvm_util import Decls, f32, f64, gptr, i1, i8, i32, i64, reg_type, sptr
from .lower_buffer import BufferLowering
from . import lower_grid  # noqa: F401  (registers xcd_remap)
from .lower_dot import DotLowering
from .lower_mfma import MfmaLowering
from .lower_memory import MemoryLowering
from .lower_reduce import ReduceLowering
from .lower_scan import ScanLowering
from .lower_shared import SharedLowering
from .lower_tma import TmaLowering
from .lower_tma_store import TmaStoreLowering
from .lower_wgmma import WgmmaLowering
from .lower_warp_specialize import WarpSpecializeLowering
from .lower_pingpong import PingpongLowering
from .lower_cluster import ClusterLowering


class KernelLowering(MemoryLowering, SharedLowering, ReduceLowering, ScanLowering, DotLowering, MfmaLowering,
                     WgmmaLowering, TmaLowering, TmaStoreLowering, BufferLowering, WarpSpecializeLowering,
                     PingpongLowering, ClusterLowering):
    """Lowers one IR function to an LLVM module holding one kernel."""

    def __init__(self, fn: Function, target: Target, backend, options: dict | None = None):
        self.fn = fn
        self.target = target                     # ir.targets.Target: the facts (warp size, atoms, features)
        self.backend = backend                   # the family's code generator (nvptx.NVPTXBackend)
        self.options = dict(options or {})
        self.num_warps = int(fn.attrs.get("num_warps", self.options.get("num_warps", 4)))
        self.nthreads = target.threads(self.num_warps)      # the threads register layouts are over
        self.launch_threads = target.threads(self.launch_warps())   # + a warp_specialize's producer
        if fn.attrs.get("maxnreg"):                        # fixed by a pass (warp_specialize): the IR's
            self.options["maxnreg"] = int(fn.attrs["maxnreg"])
        self.module = ir.Module(name=fn.name)
        self.module.triple = target.llvm_triple
        self.decls = Decls(self.module)
        self.tgt = backend.make_intrinsics(self.decls)
        self.num = Numerics(self.decls, self.tgt)
        self.vals: dict[int, object] = {}
        self.params = flatten_params(fn)
        self.align = int(self.options.get("align", 16))
        self._tbase_cache: dict = {}
        self._owner_cache: dict = {}
        self._smem = None
        self.shared_bytes = int(fn.attrs.get("shared_bytes", 0))
        self.word_codes = {}                     # code value -> values.WordCode (packed loads)
        self._async_loops: set = set()          # loops whose last wgmma group is waited for at the exit
        self._wgmma_groups = 0                   # wgmma groups committed so far (in program order)
        self._deferred_wgmma: dict = {}          # id(dot result) -> its group, not yet waited for
        self.current_op: Operation | None = None

    # ------------------------------------------------------------------ errors
    def error(self, msg: str, op: Operation | None = None) -> CompileError:
        return CompileError(msg, op or self.current_op, kernel=self.fn.name)

    # ------------------------------------------------------------------ entry
    def build(self) -> ir.Module:
        ptypes = []
        tmap_t = ir.PointerType(ir.ArrayType(i8, TMAP_BYTES))      # typed, so that byval prints its type
        for p in self.params:
            ptypes.append({"ptr": gptr, "i32": i32, "i64": i64, "f32": f32, "f64": f64, "tmap": tmap_t}[p.kind])
        fnty = ir.FunctionType(ir.VoidType(), ptypes)
        self.llfn = ir.Function(self.module, fnty, name=self.fn.name)
        self.llfn.calling_convention = self.backend.kernel_cc
        for a, p in zip(self.llfn.args, self.params):
            a.name = p.name.replace(".", "_")
            if p.kind == "ptr":
                a.add_attribute("noalias") if self.options.get("noalias", False) else None
                a.attributes.align = max(1, self.align)
            elif p.kind == "tmap":              # a CUtensorMap passed by value: .param .align 64 .b8 [128]
                a.add_attribute("byval")
                a.attributes.align = TMAP_ALIGN
        tmaps = [k for k, p in enumerate(self.params) if p.kind == "tmap"]
        if tmaps:
            self.backend.grid_constant_params(self.module, self.llfn, tmaps)
        self.backend.add_function_attributes(self.llfn, self.launch_threads, self.options)
        entry = self.llfn.append_basic_block("entry")
        body = self.llfn.append_basic_block("body")
        self.eb = ir.IRBuilder(entry)              # hoisted thread-invariant computations
        self.b = ir.IRBuilder(body)
        self.tid = self.tgt.thread_id(self.eb)
        self.check_cluster()
        self._bind_params()
        self.lower_block(self.fn.body)
        self.finish_tma_stores()
        self.b.ret_void()
        self.eb.branch(body)
        return self.module

    def _bind_params(self):
        it = iter(self.llfn.args)
        for a in self.fn.args:
            t = a.type
            if isinstance(t, TensorType):
                ptr = next(it)
                shape = [next(it) for _ in range(t.rank)]
                strides = [next(it) for _ in range(t.rank)]
                for k, d in enumerate(t.shape):
                    if d is not None:
                        shape[k] = ir.Constant(i32, d)
                self.vals[id(a)] = TensorV(ptr, shape, strides, t.dtype, a.name or f"arg{a.index}")
            else:
                raw = next(it)
                self.vals[id(a)] = self._scalar_param(raw, t.dtype)
        # the tensor maps (ir/artifact.py: after every IR parameter), as generic pointers to the
        # parameter itself (grid-constant: no local copy), keyed by (tensor, box, swizzle)
        self.tensor_maps = {}
        for a, p in zip(self.llfn.args, self.params):
            if p.kind == "tmap":
                self.tensor_maps[(p.source, tuple(p.box), int(p.swizzle))] = self.eb.bitcast(a, ir.PointerType())

    def _scalar_param(self, raw, dt: DType):
        eb = self.eb
        if dt.kind == "bool":
            return eb.icmp_unsigned("!=", raw, ir.Constant(i32, 0))
        if dt.name in ("f32", "f64"):
            return raw
        if dt.name in ("f16", "bf16"):
            return eb.bitcast(eb.trunc(raw, ir.IntType(16)), reg_type(dt))
        t = reg_type(dt)
        if t.width < raw.type.width:
            return eb.trunc(raw, t)
        return raw

    # ------------------------------------------------------------------ values
    def get(self, v: Value):
        try:
            return self.vals[id(v)]
        except KeyError:
            raise self.error(f"internal: value {v} has no lowering") from None

    def set(self, v: Value, x):
        self.vals[id(v)] = x

    def tmap(self, t: TileType) -> ThreadMap:
        if t.layout is None:
            raise self.error(f"register tile {t} has no layout: run layout inference first")
        try:
            return as_map(t.layout, self.nthreads)
        except Exception as e:
            raise self.error(f"unsupported register layout {t.layout}: {e}") from None

    def rtile(self, v: Value) -> RTile:
        x = self.get(v)
        if not isinstance(x, RTile):
            raise self.error(f"internal: expected a register tile for {v}")
        return x

    def tbase(self, m: ThreadMap) -> list:
        """Per dim, this thread's coordinate offset in layout m (i32, computed once in the entry)."""
        key = m.key()
        c = self._tbase_cache.get(key)
        if c is None:
            eb = self.eb
            c = [ir.Constant(i32, 0)] * m.rank
            div = 1
            for s, cs in m.tmodes:
                if any(cs):
                    dig = eb.urem(eb.udiv(self.tid, ir.Constant(i32, div)), ir.Constant(i32, s)) if div > 1 else \
                        eb.urem(self.tid, ir.Constant(i32, s))
                    for d, k in enumerate(cs):
                        if k:
                            term = eb.mul(dig, ir.Constant(i32, k)) if k != 1 else dig
                            c[d] = term if _is_zero(c[d]) else eb.add(c[d], term)
                div *= s
            self._tbase_cache[key] = c
        return c

    def owner(self, m: ThreadMap):
        """i1: this thread is the first holder of its values (its digits in replicating thread
        modes are 0); None when nothing is replicated across threads."""
        key = m.key()
        if key in self._owner_cache:
            return self._owner_cache[key]
        reps = m.replica_tmodes()
        res = None
        eb = self.eb
        for div, s in reps:
            dig = eb.urem(eb.udiv(self.tid, ir.Constant(i32, div)), ir.Constant(i32, s))
            z = eb.icmp_unsigned("==", dig, ir.Constant(i32, 0))
            res = z if res is None else eb.and_(res, z)
        self._owner_cache[key] = res
        return res

    def coords(self, m: ThreadMap, v: int, b=None) -> list:
        """This thread's tile coordinate (list of i32) of value slot v."""
        b = b or self.b
        tb = self.tbase(m)
        vc = m.vcoord_list()[v]
        out = []
        for d in range(m.rank):
            if vc[d] == 0:
                out.append(tb[d])
            elif _is_zero(tb[d]):
                out.append(ir.Constant(i32, vc[d]))
            else:
                out.append(b.add(tb[d], ir.Constant(i32, vc[d])))
        return out

    def map_values(self, m: ThreadMap, fn):
        """[fn(v) for unique slots v], copies for duplicate slots."""
        src = m.dup_source()
        out = [None] * m.nvals
        for v in range(m.nvals):
            out[v] = fn(v) if src[v] == v else out[src[v]]
        return out

    # ------------------------------------------------------------------ blocks and ops
    def lower_block(self, block: Block):
        """Lower a block's ops; returns the terminator's operand values (lowered), or None."""
        for op in block.ops:
            self.current_op = op
            if self._deferred_wgmma:
                self.wait_deferred_wgmma(op)
            if op.name in ("yield", "condition"):
                return op
            lower = lowering_for(self.target.family, op.name)
            if lower is None:
                raise self.error(f"this op has no lowering for {self.target.name} (codegen/table.py)")
            try:
                lower(self, op)
            except CompileError:
                raise
            except Exception as e:
                raise self.error(f"internal error while lowering: {type(e).__name__}: {e}") from e
        return None

    # ------------------------------------------------------------------ flattening for phis
    def flatten(self, x) -> list:
        if isinstance(x, RTile):
            return [x.vals[u] for u in x.map.unique_values()]
        if isinstance(x, SView):
            return [x.off]
        return [x]

    def unflatten(self, template, flat: list, pos: int):
        if isinstance(template, RTile):
            u = template.map.unique_values()
            src = template.map.dup_source()
            vals = [None] * template.map.nvals
            for k, v in enumerate(u):
                vals[v] = flat[pos + k]
            for v in range(template.map.nvals):
                if vals[v] is None:
                    vals[v] = vals[src[v]]
            return RTile(template.map, vals, template.dtype), pos + len(u)
        if isinstance(template, SView):
            return SView(flat[pos], template.shape, template.dtype, template.layout, template.align), pos + 1
        return flat[pos], pos + 1

    def _template(self, t, ref=None):
        """A lowered-value template for type t (maps for tiles)."""
        if isinstance(t, TileType) and t.space == "reg":
            m = self.tmap(t)
            return RTile(m, [None] * m.nvals, t.dtype)
        if isinstance(t, TileType):
            if not isinstance(ref, SView):
                raise self.error("a shared tile carried by control flow must come from one allocation")
            return ref
        return None

    def _check_same_layout(self, a, b_, what):
        if isinstance(a, RTile) and isinstance(b_, RTile) and not a.map.same(b_.map):
            raise self.error(f"{what}: layouts differ ({a.map} vs {b_.map}); layout inference should have "
                             f"inserted a convert_layout")
        if isinstance(a, SView) and isinstance(b_, SView) and str(a.layout) != str(b_.layout):
            raise self.error(f"{what}: shared layouts differ")

    # ------------------------------------------------------------------ control flow
    @lowers("for")
    def op_for(self, op: Operation):
        b = self.b
        lo, hi, step = (self.get(v) for v in op.operands[:3])
        inits = [self.get(v) for v in op.operands[3:]]
        body = op.regions[0]
        templates = [self._template(a.type, x) for a, x in zip(body.args[1:], inits)]
        for t, x in zip(templates, inits):
            self._check_same_layout(t, x, "for: initial value")
        flat_init = [y for x in inits for y in self.flatten(x)]
        # A loop whose wgmma group stays in flight across iterations is emitted as a guarded
        # do-while whose exit edge waits for that group *before* the zero-trip path joins it: where
        # the wait sits after the join, ptxas sees the zero-trip path's register moves define
        # accumulator registers of a wgmma still in flight and serializes every wgmma (C7515).
        in_flight = any(o.name == "dot" and o.attrs.get("inflight") for o in body.ops)
        pingpong = self.pingpong_begin(op)              # (warpgroup 1's head start; lower_pingpong.py)
        pre = b.block
        head = None if in_flight else self.llfn.append_basic_block("for.head")
        bodyb = self.llfn.append_basic_block("for.body")
        doneb = self.llfn.append_basic_block("for.done") if in_flight else None
        exitb = self.llfn.append_basic_block("for.exit")
        ivt = lo.type
        if in_flight:
            b.cbranch(b.icmp_signed("<", lo, hi), bodyb, exitb)
            b.position_at_end(bodyb)
        else:
            b.branch(head)
            b.position_at_end(head)
        iv = b.phi(ivt, name="iv")
        iv.add_incoming(lo, pre)
        phis = []
        for x in flat_init:
            p = b.phi(x.type)
            p.add_incoming(x, pre)
            phis.append(p)
        if not in_flight:
            b.cbranch(b.icmp_signed("<", iv, hi), bodyb, exitb)
            b.position_at_end(bodyb)
        self.set(body.args[0], iv)
        carried, pos = [], 0
        for a, t, x in zip(body.args[1:], templates, inits):
            tv, pos = self.unflatten(t if t is not None else x, phis, pos)
            self.set(a, tv)
            carried.append(tv)
        term = self.lower_block(body)
        ys = [self.get(v) for v in term.operands]
        for t, y in zip(carried, ys):
            self._check_same_layout(t, y, "for: yielded value")
        flat_y = [z for y in ys for z in self.flatten(y)]
        self.current_op = op
        nxt = b.add(iv, step)
        latch = b.block
        iv.add_incoming(nxt, latch)
        for p, y in zip(phis, flat_y):
            if y.type != p.type:
                raise self.error(f"internal: loop-carried type mismatch {y.type} vs {p.type}")
            p.add_incoming(y, latch)
        if in_flight:
            b.cbranch(b.icmp_signed("<", nxt, hi), bodyb, doneb)
            b.position_at_end(doneb)
            if id(op) in self._async_loops:
                self.tgt.wgmma_wait(b, 0)
            b.branch(exitb)
            b.position_at_end(exitb)
            outs = []                                   # the loop's results: initial values or the last yield
            for x, y in zip(flat_init, flat_y):
                m = b.phi(x.type)
                m.add_incoming(x, pre)
                m.add_incoming(y, doneb)
                outs.append(m)
        else:
            b.branch(head)
            b.position_at_end(exitb)
            if id(op) in self._async_loops:
                self.tgt.wgmma_wait(b, 0)
            outs = phis
        self.pingpong_end(pingpong)                     # (warpgroup 0's drain)
        pos = 0
        for r, c in zip(op.results, carried):
            tv, pos = self.unflatten(c, outs, pos)
            self.set(r, tv)

    @lowers("if")
    def op_if(self, op: Operation):
        b = self.b
        c = self.get(op.operands[0])
        thenb = self.llfn.append_basic_block("if.then")
        elseb = self.llfn.append_basic_block("if.else")
        merge = self.llfn.append_basic_block("if.end")
        b.cbranch(c, thenb, elseb)
        outs = []
        for region, blk in zip(op.regions, (thenb, elseb)):
            b.position_at_end(blk)
            term = self.lower_block(region)
            ys = [self.get(v) for v in term.operands] if term is not None else []
            outs.append((ys, b.block))
            b.branch(merge)
        self.current_op = op
        b.position_at_end(merge)
        (yt, bt), (ye, be) = outs
        for r, x, y in zip(op.results, yt, ye):
            tmpl = self._template(r.type, x)
            if isinstance(tmpl, RTile):
                self._check_same_layout(tmpl, x, "if: then-value")
                self._check_same_layout(tmpl, y, "if: else-value")
            fx, fy = self.flatten(x), self.flatten(y)
            flat = []
            for p, q in zip(fx, fy):
                if p is q:
                    flat.append(p)
                    continue
                phi = b.phi(p.type)
                phi.add_incoming(p, bt)
                phi.add_incoming(q, be)
                flat.append(phi)
            tv, _ = self.unflatten(tmpl if tmpl is not None else x, flat, 0)
            self.set(r, tv)

    @lowers("while")
    def op_while(self, op: Operation):
        b = self.b
        inits = [self.get(v) for v in op.operands]
        before, after = op.regions
        templates = [self._template(a.type, x) for a, x in zip(before.args, inits)]
        flat_init = [y for x in inits for y in self.flatten(x)]
        pre = b.block
        head = self.llfn.append_basic_block("while.head")
        afterb = self.llfn.append_basic_block("while.body")
        exitb = self.llfn.append_basic_block("while.exit")
        b.branch(head)
        b.position_at_end(head)
        phis = []
        for x in flat_init:
            p = b.phi(x.type)
            p.add_incoming(x, pre)
            phis.append(p)
        pos = 0
        for a, t, x in zip(before.args, templates, inits):
            tv, pos = self.unflatten(t if t is not None else x, phis, pos)
            self.set(a, tv)
        term = self.lower_block(before)
        cond = self.get(term.operands[0])
        passed = [self.get(v) for v in term.operands[1:]]
        b.cbranch(cond, afterb, exitb)
        b.position_at_end(afterb)
        for a, x in zip(after.args, passed):
            self.set(a, x)
        term2 = self.lower_block(after)
        ys = [self.get(v) for v in term2.operands]
        flat_y = [z for y in ys for z in self.flatten(y)]
        latch = b.block
        b.branch(head)
        for p, y in zip(phis, flat_y):
            p.add_incoming(y, latch)
        b.position_at_end(exitb)
        for r, x in zip(op.results, passed):
            self.set(r, x)

    @lowers("print")
    def op_print(self, op: Operation):
        """`tile.device_print(fmt, *values)` through CUDA's `vprintf(fmt, args)`: thread 0 of each block
        prints once (the interpreter prints once per block too), prefixed `[block (x, y, z)] `.
        `{}` / `{:spec}` fields become printf conversions by the value's dtype (ints %d / %u / %lld,
        floats as doubles with %g, or %<spec>); the arguments are packed into a local struct, each
        at its natural alignment (CUDA's printf ABI). Scalars only: a register tile's elements are
        spread over the threads, so a tile operand prints as `<tile ...>` (with a warning)."""
        if self.target.family != "nvidia":
            _warn_once(f"tilec: device_print in kernel '{self.fn.name}' is ignored on target {self.target.name} "
                       f"(it prints on NVIDIA GPUs and in the interpreter)")
            return
        from ..ir.dtypes import dtype as _dt
        b = self.b
        bid = [self.tgt.block_id(b, ax) for ax in range(3)]
        convs, vals, tiles = [], list(bid), []
        for v in op.operands:
            t = v.type
            if not isinstance(t, ScalarType):
                convs.append(None)
                shape = "x".join(str(d) for d in getattr(t, "shape", ()) or ())
                tiles.append(f"tile<{shape + 'x' if shape else ''}{t.dtype}>")
                continue
            dt, x = t.dtype, self.get(v)
            if dt.kind == "bool":
                convs.append("d")
                vals.append(b.zext(x, i32))
            elif dt.is_float:
                convs.append("g")
                vals.append(x if dt.name == "f64" else self.num.convert(b, x, dt, _dt("f64")))
            elif dt.bits > 32:
                convs.append("lld" if dt.kind == "int" else "llu")
                vals.append(x if x.type == i64 else (b.sext if dt.kind == "int" else b.zext)(x, i64))
            else:
                convs.append("d" if dt.kind == "int" else "u")
                if x.type.width < 32:
                    x = (b.sext if dt.kind == "int" else b.zext)(x, i32)
                vals.append(x)
        if tiles:
            _warn_once(f"tilec: device_print in kernel '{self.fn.name}': register tiles print as <tile ...> on the "
                       f"GPU (their elements are spread over the threads); print scalars, or use the interpreter")
        try:
            text = "[block (%d, %d, %d)] " + printf_format(op.attrs.get("fmt", "") or "", convs, tiles)
        except ValueError as e:
            raise self.error(f"device_print: {e}")
        data = bytearray(text.encode()) + b"\0"
        fmt_t = ir.ArrayType(i8, len(data))
        gname = f".str.print.{len(self.module.globals)}"
        g = ir.GlobalVariable(self.module, fmt_t, gname, addrspace=1)
        g.global_constant = True
        g.linkage = "private"
        g.initializer = ir.Constant(fmt_t, data)
        gen = ir.PointerType()
        fmt_ptr = b.addrspacecast(g, gen)
        st = ir.LiteralStructType([x.type for x in vals])
        # the struct lives in the entry block (one alloca per print, not one per loop trip)
        slot = self.eb.alloca(st, name="printf.args")
        tid0 = b.icmp_unsigned("==", self.tid, ir.Constant(i32, 0))
        with b.if_then(tid0):
            for k, x in enumerate(vals):
                b.store(x, b.gep(slot, [ir.Constant(i32, 0), ir.Constant(i32, k)], inbounds=True))
            self.decls.call(b, "vprintf", i32, [gen, gen], [fmt_ptr, b.addrspacecast(slot, gen)
                                                            if slot.type != gen else slot])

    # ------------------------------------------------------------------ scalars and creation
    def constant(self, dt: DType, value):
        """LLVM constant of dtype dt with the value an IR attribute gives (the interpreter's
        `to_value` rules: floats rounded to the type, ints wrapped)."""
        import math
        t = reg_type(dt)
        if dt.kind == "bool":
            return ir.Constant(i1, 1 if value else 0)
        if dt.is_float:
            v = float(value)
            if dt.name in ("f32", "f64", "f16", "bf16"):
                if dt.name == "f16" and not math.isnan(v):
                    import numpy as np
                    v = float(np.float16(v))
                return ir.Constant(t, v)
            from ..ir import numerics
            import numpy as np
            return ir.Constant(i8, int(numerics.encode(np.asarray(v, np.float64), dt)))
        if isinstance(value, float):
            from ..ir import numerics
            import numpy as np
            value = int(numerics.decode(numerics.encode(np.asarray(value), dt), dt))
        v = int(value)
        m = 1 << dt.bits
        v %= m
        if dt.kind == "int" and v >= m >> 1:
            v -= m
        return ir.Constant(t, v & ((1 << t.width) - 1) if v < 0 else v)

    @lowers("constant")
    def op_constant(self, op):
        self.set(op.results[0], self.constant(op.results[0].type.dtype, op.attrs["value"]))

    @lowers("full")
    def op_full(self, op):
        t = op.results[0].type
        m = self.tmap(t)
        c = self.constant(t.dtype, op.attrs["value"])
        self.set(op.results[0], RTile(m, [c] * m.nvals, t.dtype))

    @lowers("splat")
    def op_splat(self, op):
        t = op.results[0].type
        m = self.tmap(t)
        s = self.get(op.operands[0])
        self.set(op.results[0], RTile(m, [s] * m.nvals, t.dtype))

    @lowers("arange")
    def op_arange(self, op):
        t = op.results[0].type
        m = self.tmap(t)
        start = int(op.attrs["start"])
        vals = self.map_values(m, lambda v: self._add_const(self.coords(m, v)[0], start))
        self.set(op.results[0], RTile(m, vals, t.dtype))

    def _add_const(self, x, k):
        if k == 0:
            return x
        if isinstance(x, ir.Constant):
            return ir.Constant(i32, x.constant + k)
        return self.b.add(x, ir.Constant(i32, k))

    @lowers("block_id")
    def op_block_id(self, op):
        self.set(op.results[0], self.tgt.block_id(self.b, op.attrs["axis"]))

    @lowers("num_blocks")
    def op_num_blocks(self, op):
        self.set(op.results[0], self.tgt.num_blocks(self.b, op.attrs["axis"]))

    @lowers("dim")
    def op_dim(self, op):
        self.set(op.results[0], self.get(op.operands[0]).shape[op.attrs["axis"]])

    @lowers("stride")
    def op_stride(self, op):
        self.set(op.results[0], self.get(op.operands[0]).strides[op.attrs["axis"]])

    # ------------------------------------------------------------------ elementwise
    def _elementwise(self, op, fn):
        """Apply fn(list of operand values) per value slot (scalars: once)."""
        args = [self.get(v) for v in op.operands]
        rt = op.results[0].type
        if not isinstance(rt, TileType):
            self.set(op.results[0], fn(args))
            return
        m = None
        for a in args:
            if isinstance(a, RTile):
                if m is None:
                    m = a.map
                elif not a.map.same(m):
                    raise self.error(f"operand layouts differ ({m} vs {a.map}); layout inference should have "
                                     f"inserted a convert_layout")
        rm = self.tmap(rt)
        if m is not None and not rm.same(m):
            raise self.error(f"result layout {rm} differs from the operands' {m}")
        vals = self.map_values(rm, lambda v: fn([a.vals[v] if isinstance(a, RTile) else a for a in args]))
        self.set(op.results[0], RTile(rm, vals, rt.dtype))

    @lowers(*BINARY, *UNARY)
    def op_elementwise(self, op):
        dt = op.results[0].type.dtype
        b = self.b
        if op.name in BINARY:
            self._elementwise(op, lambda xs: self.num.binary(b, op.name, xs[0], xs[1], dt))
        else:
            ftz = bool(op.attrs.get("ftz"))
            self._elementwise(op, lambda xs: self.num.unary(b, op.name, xs[0], dt, ftz))

    @lowers("fma")
    def op_fma(self, op):
        dt = op.results[0].type.dtype
        self._elementwise(op, lambda xs: self.num.fma_op(self.b, xs, dt))

    @lowers("cmp")
    def op_cmp(self, op):
        dt = op.operands[0].type.dtype
        self._elementwise(op, lambda xs: self.num.cmp(self.b, op.attrs["pred"], xs[0], xs[1], dt))

    @lowers("select")
    def op_select(self, op):
        self._elementwise(op, lambda xs: self.b.select(xs[0], xs[1], xs[2]))

    @lowers("cast")
    def op_cast(self, op):
        src, dst = op.operands[0].type.dtype, op.results[0].type.dtype
        if fast_convert.choose(src, dst) is not None:
            # narrow codes -> bf16/f16/f32 by bit tricks, two values per register for 16-bit results
            x = self.get(op.operands[0])
            rt = op.results[0].type
            if isinstance(x, RTile) and isinstance(rt, TileType) and x.map.same(self.tmap(rt)):
                dup = x.map.dup_source()
                uniq = [v for v in range(x.map.nvals) if dup[v] == v]
                conv = dict(zip(uniq, fast_convert.convert_values(self.b, [x.vals[v] for v in uniq], src, dst,
                                                                       self.word_codes.get, self.tgt.and_xor)))
                self.set(op.results[0], RTile(x.map, [conv[dup[v]] for v in range(x.map.nvals)], dst))
                return
            if not isinstance(rt, TileType):
                self.set(op.results[0], fast_convert.convert_values(self.b, [x], src, dst)[0])
                return
        if src.name == "f32" and dst.name in ("bf16", "f16"):
            x = self.get(op.operands[0])
            rt = op.results[0].type
            if isinstance(x, RTile) and isinstance(rt, TileType) and x.map.same(self.tmap(rt)):
                # two roundings per instruction where the target has one (cvt.rn.bf16x2.f32)
                vals = list(x.vals)
                out = []
                for k in range(0, len(vals) - 1, 2):
                    out.extend(self.tgt.round_pair(self.b, vals[k], vals[k + 1], dst.name))
                if len(vals) % 2:
                    out.append(self.tgt.round_pair(self.b, vals[-1], vals[-1], dst.name)[0])
                self.set(op.results[0], RTile(x.map, out, dst))
                return
        self._elementwise(op, lambda xs: self.num.convert(self.b, xs[0], src, dst))

    @lowers("bitcast")
    def op_bitcast(self, op):
        a, r = op.operands[0].type, op.results[0].type
        if isinstance(a, ScalarType):
            x = self.get(op.operands[0])
            self.set(op.results[0], self.bitcast_scalar(x, a.dtype, r.dtype))
            return
        if a.shape == r.shape:
            self._elementwise(op, lambda xs: self.bitcast_scalar(xs[0], a.dtype, r.dtype))
            return
        self.bitcast_tile(op)

    def bitcast_scalar(self, x, src: DType, dst: DType):
        b = self.b
        bits = src.bits
        code = self.to_code(x, src)
        return self.from_code(code if code.type.width == max(8, dst.bits) else
                              (b.trunc(code, ir.IntType(max(8, dst.bits))) if code.type.width > max(8, dst.bits)
                               else b.zext(code, ir.IntType(max(8, dst.bits)))), dst)

    def to_code(self, x, dt: DType, b=None):
        """Register value -> its storage code as an integer of max(8, bits) bits (sub-byte codes
        in the low bits of an i8, higher bits 0)."""
        b = b or self.b
        if dt.kind == "bool":
            return b.zext(x, i8)
        if dt.is_float and dt.name in ("f32", "f64", "f16", "bf16"):
            return b.bitcast(x, ir.IntType(dt.bits))
        if dt.bits < 8:
            return b.and_(x, ir.Constant(i8, (1 << dt.bits) - 1))
        return x

    def from_code(self, c, dt: DType, b=None):
        """Storage code (integer of max(8, bits) bits, extra high bits ignored) -> register value."""
        b = b or self.b
        if dt.kind == "bool":
            return b.icmp_unsigned("!=", b.and_(c, ir.Constant(c.type, 1)), ir.Constant(c.type, 0))
        if dt.is_float and dt.name in ("f32", "f64", "f16", "bf16"):
            return b.bitcast(c, reg_type(dt))
        if dt.bits < 8:
            if dt.is_float:
                return b.and_(c, ir.Constant(i8, (1 << dt.bits) - 1))
            if dt.kind == "int":
                sh = ir.Constant(i8, 8 - dt.bits)
                return b.ashr(b.shl(c, sh), sh)
            return b.and_(c, ir.Constant(i8, (1 << dt.bits) - 1))
        return c

    # ------------------------------------------------------------------ layout-only ops
    @lowers("transpose")
    def op_transpose(self, op):
        x = self.get(op.operands[0])
        perm = list(op.attrs["perm"])
        rt = op.results[0].type
        rm = self.tmap(rt)
        if isinstance(x, LazyFrag) and x.transposed and perm == [1, 0] and rm.same(x.map):
            self.set(op.results[0], LazyFrag(x.sv, x.map, x.dtype, x.plan))
            return
        a = self.rtile(op.operands[0])
        if rm.same(a.map.permute(perm)):
            self.set(op.results[0], RTile(rm, list(a.vals), rt.dtype))
            return
        self.move_through_smem(op, a, rm, lambda c: [c[perm.index(d)] for d in range(len(perm))])

    @lowers("broadcast")
    def op_broadcast(self, op):
        a = self.get(op.operands[0])
        rt = op.results[0].type
        rm = self.tmap(rt)
        if not isinstance(a, RTile):
            raise self.error("broadcast of a non-tile")
        ashape = op.operands[0].type.shape
        need = rm.broadcast_operand(ashape)
        if a.map.same(need):
            # every result slot reads the operand slot holding its (projected) coordinate
            lead = rt.rank - len(ashape)
            vi = a.map.value_index()
            vals = []
            for c in rm.vcoord_list():
                cc = tuple(0 if s == 1 else x for x, s in zip(c[lead:], ashape))
                vals.append(a.vals[vi[cc]])
            self.set(op.results[0], RTile(rm, vals, rt.dtype))
            return
        # general case: each thread picks the element from shared memory
        lead = rt.rank - len(op.operands[0].type.shape)
        ashape = op.operands[0].type.shape

        def src_coord(c):
            cc = c[lead:]
            return [ir.Constant(i32, 0) if s == 1 else x for x, s in zip(cc, ashape)]
        self.move_through_smem(op, a, rm, src_coord)


_WARNED: set = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        import warnings
        warnings.warn(msg, RuntimeWarning, stacklevel=2)


def printf_format(fmt: str, convs: list, tiles: list) -> str:
    """A printf format from device_print's `{}` format (docs/language.md) and the conversions of its
    values (None: a tile, printed as text). Fields: `{}` or `{:spec}` (spec: printf flags, width and
    precision, optionally its conversion letter); `{{` / `}}` are braces; `%` prints as itself. A
    format without fields prints the values after it, separated by spaces (as the interpreter does)."""
    out, i, n, k, tiles = [], 0, len(fmt), 0, list(tiles)

    def field(spec):
        nonlocal k
        if k >= len(convs):
            raise ValueError(f"the format {fmt!r} has more fields than the {len(convs)} values given")
        c = convs[k]
        k += 1
        if c is None:
            return ("<tile " + tiles.pop(0) + ">").replace("%", "%%")
        if spec and spec[-1] in "diouxXeEfFgGc":
            spec, letter = spec[:-1], spec[-1]
            if c in ("lld", "llu") and letter in "diouxX":
                return "%" + spec + "ll" + letter
            if c == "g" and letter not in "eEfFgG" or c != "g" and letter in "eEfFgG":
                raise ValueError(f"conversion '{letter}' does not fit value {k} (printed as %{c})")
            return "%" + spec + letter
        if spec and not all(ch in "0123456789.-+ #" for ch in spec):
            raise ValueError(f"format spec {spec!r} is not printf flags/width/precision")
        return "%" + spec + c
    has_fields = False
    while i < n:
        ch = fmt[i]
        if fmt.startswith("{{", i) or fmt.startswith("}}", i):
            out.append(ch)
            i += 2
        elif ch == "{":
            j = fmt.find("}", i)
            if j < 0:
                raise ValueError(f"unclosed '{{' in the format {fmt!r}")
            inner = fmt[i + 1:j]
            if inner and inner[0] != ":":
                raise ValueError(f"fields are {{}} or {{:spec}} (positional, in order), got {{{inner}}}")
            out.append(field(inner[1:]))
            has_fields = True
            i = j + 1
        elif ch == "%":
            out.append("%%")
            i += 1
        else:
            out.append(ch)
            i += 1
    if not has_fields:
        out += [(" " if out or k else "") + field("") for _ in range(len(convs))]
    elif k != len(convs):
        raise ValueError(f"the format {fmt!r} has {k} fields for {len(convs)} values")
    return "".join(out) + "\n"


def _is_zero(x) -> bool:
    return isinstance(x, ir.Constant) and x.constant == 0
