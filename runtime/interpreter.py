"""The NumPy interpreter: executes tile IR (after any pass) on the host. It is the reference
semantics of tilec and what a launch does without a GPU.

    run(fn, grid, args)     # fn: ir.core.Function; grid: 1..3 ints; args: one per parameter

Arguments: for a tensor parameter an `np.ndarray` (native or ml_dtypes dtype) or a `tile.Array`;
for a scalar parameter a Python (or NumPy) number. Tensors are updated in place.

How values are held (one "working" NumPy dtype per tilec dtype, `arrays.value_dtype`): float32 for
floats of up to 32 bits, float64 for f64, int64 for integers and i1 (0/1), uint64 for u64. Every
value held is exactly a value of its tilec dtype. Tiles are ndarrays of their static shape, scalars
0-d ndarrays, shared tiles `SharedTile` (a mutable buffer; subviews alias it), tensors `Tensor`.

Semantics decisions (the op docs in `ir/ops.py` are the contract; these fill in what they leave open):
* Float arithmetic happens in the op's dtype: f32 in float32, f64 in float64; every narrower float
  (f16, bf16, fp8, small floats) is computed in float32 and rounded to its dtype (nearest even, with
  the dtype's overflow rule) after EVERY op. No flush-to-zero. `max`/`min` ignore a NaN operand
  and order -0 < +0 (IEEE 754-2019 maximumNumber/minimumNumber); `rem` on floats is C `fmod`;
  `round` rounds half to even; `sigmoid` is e/(1+e) with e = exp(x) for x < 0 (no 1/inf underflow).
  Transcendentals use NumPy's float32 (float64 for f64) functions; `erf` is `math.erf` in double
  rounded to the dtype.
* Integer arithmetic happens in int64 and wraps to the type's width (two's complement). `div`/`rem`
  truncate toward zero (C); x / 0 gives -1 (all ones) and x % 0 gives x (what NVIDIA hardware
  returns; the GPU leaves it unspecified). Shifts by a negative amount or >= the width give 0 (`shl`,
  unsigned `shr`) or the sign fill (signed `shr`), as PTX clamps them. i1 arithmetic is modulo 2.
* `cast` is bit-exact (`ir.numerics`): floats round to nearest even; float -> int rounds half to even
  and saturates, NaN -> 0; int -> narrower int saturates; anything -> i1 is `!= 0`.
* `dot` with a float accumulator: the inputs are decoded exactly, `acc + a @ b` is computed in
  float64 (a float64 matmul) and rounded ONCE to the accumulator's dtype. That is at least as
  accurate as f32 accumulation (the GPU's order of f32 sums is unspecified anyway) and independent
  of the BLAS in use. Integer inputs: an exact int64 matmul wrapped to i32 (identical to i32
  wrapping arithmetic).
* `reduce`: float sums/products of narrow floats (< 32 bits) accumulate in float32 and round once
  to the dtype; f32 sums use NumPy's float32 pairwise summation; f64 in float64; integers wrap.
  `max`/`min` ignore NaNs unless all are NaN; `argmax`/`argmin` give the first index of the extreme.
* `cumsum`: a sequential running sum from index 0 along the axis, in float32 for floats of up to 32
  bits (float64 for f64), each output rounded to the dtype (the GPU sums in the same order, so the
  two agree bit for bit); integers wrap. Exclusive: out[0] = +0, out[i] = the inclusive out[i-1].
* `load`/`async_copy`/`async_gather` read `other` (0) outside the tensor or where the mask is false; `store`/
  `atomic` skip such elements; `gather`/`scatter` skip rows/columns outside the tensor (a scatter
  to the same row twice: the last row wins). Atomics apply their arithmetic in the tensor's dtype
  (narrow floats rounded after the op), one element at a time.
* `alloc_shared` gives a poisoned buffer (NaN for floats that have one, random codes otherwise);
  `async_copy`/`async_gather` copy at once (a TMA copy too); `barrier`, `async_commit`, `async_wait`,
  `mbarrier_inval` and `setmaxnreg` do nothing. An mbarrier counts its completed phases (in its i64
  word): `mbarrier_arrive` completes one (it stands for all the arrivals its count asks for), and
  `mbarrier_wait(bar, p)` returns once the phase of parity p has completed (at once for parity 1 of a
  fresh mbarrier, as on the GPU); a wait that can never return is an error, not a hang.
* `warp_specialize` runs its producer region in a second host thread beside the consumer region, each
  blocking in `mbarrier_wait` until the other side arrives: the specialized protocol is executed, not
  assumed (runtime/interpreter_roles.py).
* Blocks run one after another, grid axis 0 fastest, then 1, then 2; within a block, ops run in
  program order on whole tiles.
* `print` prints `[block (x, y, z)] ` then `fmt.format(*values)` when fmt has `{}` fields, else fmt
  followed by the values.

Rules are kept by op name in `RULES`; a pass that adds an op adds its rule with `@rule("name")`.
A rule is called as `rule(ctx, op, args)` with `args` the operand values, and returns None (no
results), one value, or a list of values (ops with several results).
"""
from __future__ import annotations

import linecache
import math
import sys

import numpy as np

from ..ir.artifact import divisible_elems
from ..ir import numerics
from ..ir.core import Block, Function, Module, Operation
from ..ir.dtypes import DType
from ..ir.errors import TileError
from ..ir.ops import bind_operands
from ..ir.types import ScalarType, TensorType, TileType
from .arrays import Array, dtype_of, native_numpy_dtype, value_dtype
from . import interpreter_roles as roles

__all__ = ["run", "Interpreter", "InterpreterError", "RULES", "rule", "Tensor", "SharedTile",
           "to_value", "from_value"]


class InterpreterError(TileError):
    """A kernel failed in the interpreter: names the op, its source location and the block."""

    def __init__(self, msg: str, op: Operation | None = None, block: tuple | None = None):
        self.op, self.block, self.msg = op, block, msg
        loc = getattr(op, "loc", None)
        head = f"{loc}: " if loc else ""
        name = f"op '{op.name}'" if op is not None else "kernel"
        where = f" [block {block}]" if block is not None else ""
        text = f"{head}{name}: {msg}{where}"
        if loc is not None:
            src = linecache.getline(loc.file, loc.line).rstrip()
            if src:
                text += f"\n    {src}\n    {' ' * max(loc.col - 1, 0)}^"
        super().__init__(text)


# ======================================================================================== values
class Tensor:
    """A kernel's global tensor argument: the exact working values plus shape, strides and the source
    it is written back to."""
    __slots__ = ("source", "dtype", "work", "shape", "strides", "written", "name")

    def __init__(self, source, dt: DType, name: str = "?"):
        self.source, self.dtype, self.name = source, dt, name
        self.written = False
        if isinstance(source, Array):
            self.work = source.numpy().astype(value_dtype(dt))
            self.strides = tuple(source.strides)
        else:
            self.work = _decode_numpy(source, dt)
            self.strides = tuple(s // source.itemsize if source.itemsize else 0 for s in source.strides)
        self.shape = tuple(self.work.shape)

    def write_back(self) -> None:
        if not self.written:
            return
        src, dt = self.source, self.dtype
        if isinstance(src, Array):
            src._set_values(self.work)
            return
        nd = native_numpy_dtype(dt)
        if dt.kind == "bool":
            src[...] = self.work != 0
        elif nd is not None and src.dtype == nd:
            src[...] = self.work.astype(nd)               # exact: the values are of the dtype
        else:                                           # ml_dtypes arrays: write the codes bit for bit
            codes = numerics.encode(self.work, dt)
            raw = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[src.dtype.itemsize]
            src.view(raw)[...] = codes.astype(raw)


def _decode_numpy(a: np.ndarray, dt: DType) -> np.ndarray:
    nd = native_numpy_dtype(dt)
    if nd is not None and a.dtype == nd or a.dtype.kind == "b":
        return a.astype(value_dtype(dt))
    raw = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return numerics.decode(a.view(raw), dt).astype(value_dtype(dt))


class SharedTile:
    """A shared-memory tile: a mutable working-value buffer (subviews are NumPy views of it)."""
    __slots__ = ("buf", "dtype")

    def __init__(self, buf: np.ndarray, dt: DType):
        self.buf, self.dtype = buf, dt

    def __repr__(self) -> str:
        return f"SharedTile({self.dtype.name}, {self.buf.shape})"


class _Exit:
    """What a terminator (yield, condition) hands to the op that runs its region."""
    __slots__ = ("values",)

    def __init__(self, values):
        self.values = list(values)


# ================================================================================= numeric helpers
# The arithmetic itself lives in ir/folding.py (shared with canonicalize and the front end); these
# names stay importable from here.
from ..ir.folding import (BINARY_IMPL, UNARY_FLOAT, _f, fix, fold, round_float,  # noqa: E402,F401
                          to_value, wrap_int, convert)


def from_value(v: np.ndarray, dt: DType):
    """A working value back to plain Python (scalars) or NumPy values (tiles)."""
    v = np.asarray(v)
    if v.ndim == 0:
        return bool(v) if dt.kind == "bool" else (float(v) if dt.is_float else int(v))
    return v.copy()


def _pred(x) -> np.ndarray:
    return np.asarray(x) != 0


# ========================================================================================= rules
RULES: dict = {}


def rule(*names):
    """Register an interpreter rule for the op names: `fn(ctx, op, args)`."""
    def deco(fn):
        for n in names:
            RULES[n] = fn
        return fn
    return deco


def _rdt(op) -> DType:
    return op.results[0].type.dtype


def _ints(vals) -> tuple:
    return tuple(int(v) for v in vals)


# ---- elementwise: ir/folding.fold on the operand values
for _name in (*BINARY_IMPL, "neg", "abs", "not", *UNARY_FLOAT, "fma"):
    RULES[_name] = (lambda n: lambda ctx, op, args: fold(n, _rdt(op), *args, attrs=op.attrs))(_name)


@rule("cmp")
def _r_cmp(ctx, op, args):
    return fold("cmp", op.a.type.dtype, *args, attrs=op.attrs)


@rule("select")
def _r_select(ctx, op, args):
    return fold("select", _rdt(op), *args)


@rule("cast")
def _r_cast(ctx, op, args):
    return fold("cast", _rdt(op), args[0], attrs={"from": op.x.type.dtype})


@rule("bitcast")
def _r_bitcast(ctx, op, args):
    src, dst = op.x.type, op.results[0].type
    shape = None if isinstance(src, ScalarType) else dst.shape
    return fold("bitcast", dst.dtype, args[0], attrs={"from": src.dtype, "shape": shape})


# ---- creation
@rule("constant")
def _r_constant(ctx, op, args):
    return to_value(op.attrs["value"], _rdt(op))


@rule("full")
def _r_full(ctx, op, args):
    t = op.results[0].type
    return np.full(t.shape, to_value(op.attrs["value"], t.dtype), value_dtype(t.dtype))


@rule("splat")
def _r_splat(ctx, op, args):
    t = op.results[0].type
    return np.full(t.shape, args[0], value_dtype(t.dtype))


@rule("arange")
def _r_arange(ctx, op, args):
    return np.arange(op.attrs["start"], op.attrs["end"], dtype=np.int64)


# ---- shape
@rule("broadcast")
def _r_broadcast(ctx, op, args):
    return np.broadcast_to(args[0], op.results[0].type.shape)


@rule("reshape")
def _r_reshape(ctx, op, args):
    return np.reshape(args[0], op.results[0].type.shape)


@rule("transpose")
def _r_transpose(ctx, op, args):
    return np.transpose(args[0], op.attrs["perm"])


@rule("slice")
def _r_slice(ctx, op, args):
    return args[0][tuple(slice(s, s + n) for s, n in zip(op.attrs["start"], op.attrs["size"]))]


@rule("concat")
def _r_concat(ctx, op, args):
    return np.concatenate([np.asarray(a) for a in args], axis=op.attrs["axis"])


@rule("convert_layout")
def _r_identity(ctx, op, args):
    return args[0]


# ---- reductions and dot
@rule("reduce")
def _r_reduce(ctx, op, args):
    x = np.asarray(args[0])
    kind, ax = op.attrs["kind"], op.attrs["axis"]
    dt = op.x.type.dtype
    if kind in ("argmax", "argmin"):
        return np.asarray((np.argmax if kind == "argmax" else np.argmin)(x, axis=ax), np.int64)
    if kind in ("max", "min"):
        if dt.is_float:     # maximumNumber / minimumNumber, as the elementwise op: -0 < +0 in any order
            fn = BINARY_IMPL[kind]
            xs = np.moveaxis(x, ax, 0)
            acc = xs[0]
            for row in xs[1:]:
                acc = fn(acc, row, dt)
            return np.asarray(acc)
        return np.asarray((np.maximum if kind == "max" else np.minimum).reduce(x, axis=ax))
    if kind in ("and", "or", "xor"):
        fn = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}[kind]
        return wrap_int(fn.reduce(x, axis=ax), dt)
    fn = np.add if kind == "sum" else np.multiply
    if dt.is_float:
        return round_float(fn.reduce(_f(x, dt), axis=ax), dt)
    return wrap_int(fn.reduce(x, axis=ax), dt)


@rule("cumsum")
def _r_cumsum(ctx, op, args):
    x = np.asarray(args[0])
    ax, excl = op.attrs["axis"], bool(op.attrs["exclusive"])
    dt = op.operands[0].type.dtype
    if dt.is_float:                       # sequential (np.add.accumulate), in float32 / float64
        w = _f(x, dt)
        s = np.cumsum(w, axis=ax, dtype=w.dtype)
    else:                                 # int64 / uint64 arithmetic wraps mod 2**64: exact after wrap_int
        with np.errstate(over="ignore"):
            s = np.cumsum(x, axis=ax, dtype=x.dtype)
    if excl:
        s = np.moveaxis(s, ax, 0)
        s = np.concatenate([np.zeros_like(s[:1]), s[:-1]], axis=0)
        s = np.moveaxis(s, 0, ax)
    return fix(s, dt)


@rule("dot")
def _r_dot(ctx, op, args):
    a, b, acc = (np.asarray(x) for x in args)
    dt = _rdt(op)
    if dt.is_float:
        return round_float(acc.astype(np.float64) + np.matmul(a.astype(np.float64), b.astype(np.float64)), dt)
    return wrap_int(acc.astype(np.int64) + np.matmul(a.astype(np.int64), b.astype(np.int64)), dt)


# ---- grid
@rule("block_id")
def _r_block_id(ctx, op, args):
    return np.asarray(ctx.block[op.attrs["axis"]], np.int64)


@rule("num_blocks")
def _r_num_blocks(ctx, op, args):
    return np.asarray(ctx.grid[op.attrs["axis"]], np.int64)


def cluster_dims(fn) -> tuple:
    """The launch's cluster shape (function attribute `cluster`, padded to 3; (1, 1, 1) without)."""
    c = tuple(int(x) for x in (fn.attrs.get("cluster") or ()))
    return c + (1,) * (3 - len(c))


@rule("cluster_id")
def _r_cluster_id(ctx, op, args):
    ax = op.attrs["axis"]
    return np.asarray(ctx.block[ax] // ctx.cluster[ax], np.int64)


@rule("num_clusters")
def _r_num_clusters(ctx, op, args):
    ax = op.attrs["axis"]
    return np.asarray(ctx.grid[ax] // ctx.cluster[ax], np.int64)


@rule("block_in_cluster")
def _r_block_in_cluster(ctx, op, args):
    ax = op.attrs["axis"]
    return np.asarray(ctx.block[ax] % ctx.cluster[ax], np.int64)


@rule("cluster_shape")
def _r_cluster_shape(ctx, op, args):
    return np.asarray(ctx.cluster[op.attrs["axis"]], np.int64)


@rule("xcd_remap")
def _r_xcd_remap(ctx, op, args):
    from ..ir.grid import xcd_remap          # no `xcds` yet (before select_instructions): the identity
    return np.asarray(xcd_remap(int(args[0]), int(args[1]), int(op.attrs.get("xcds", 1))), np.int64)


# ---- global memory
@rule("dim")
def _r_dim(ctx, op, args):
    return np.asarray(args[0].shape[op.attrs["axis"]], np.int64)


@rule("stride")
def _r_stride(ctx, op, args):
    return np.asarray(args[0].strides[op.attrs["axis"]], np.int64)


def _window(tshape, offs, tile_shape):
    """The part of a tile (right-aligned to the tensor's dims) that lies inside the tensor:
    (tensor index, tile index) tuples of slices, or None if none of it does."""
    lead = len(tshape) - len(tile_shape)
    full = (1,) * lead + tuple(tile_shape)
    src, dst = [], []
    for o, n, d in zip(offs, full, tshape):
        lo, hi = max(o, 0), min(o + n, d)
        if hi <= lo:
            return None
        src.append(slice(lo, hi))
        dst.append(slice(lo - o, hi - o))
    return tuple(src), tuple(dst[lead:])


def _tile_access(op, args, has_value):
    """(tensor, offsets, value or None, mask or None) of load/store/atomic."""
    a = bind_operands(op, args)
    value = np.asarray(a.value) if has_value else None
    mask = _pred(a.mask) if a.mask is not None else None
    return a.tensor, _ints(a.indices), value, mask


def _load_tile(t: Tensor, offs, shape, other, mask=None):
    out = np.full(shape, other, t.work.dtype)
    w = _window(t.shape, offs, shape)
    if w is not None:
        src, dst = w
        out[dst] = t.work[src].reshape(out[dst].shape)
    if mask is not None:
        out = np.where(mask, out, np.asarray(other, out.dtype))
    return out


def _check_exact(ctx, op, last_index) -> None:
    """IR through the NVIDIA pipeline: an access marked `vec_exact` (passes/divisibility.py) promises
    its index along the last dim is a multiple of `vec` -- checked here, where it costs nothing."""
    if op.attrs.get("vec_exact") and int(last_index) % op.attrs.get("vec", 1):
        raise InterpreterError(f"vec_exact = true, but the index along the last dim is {int(last_index)}, "
                               f"not a multiple of vec = {op.attrs.get('vec')}", op, ctx.block)


@rule("load")
def _r_load(ctx, op, args):
    t, offs, _, mask = _tile_access(op, args, False)
    _check_exact(ctx, op, offs[-1])
    if op.attrs.get("multicast"):
        _check_multicast(ctx, op, t, offs)
    other = to_value(op.attrs.get("other", 0), t.dtype)
    return _load_tile(t, offs, tuple(op.attrs["shape"]), other, mask)


def _check_multicast(ctx, op, t: Tensor, offs) -> None:
    """`load(..., multicast=True)` promises the same tile in every block of the cluster (the GPU may fetch
    it once for all of them): the n-th execution of this load in each block of a cluster must read the
    same tensor at the same indices as in the cluster's first block, or it is an error here."""
    seen = ctx.multicast_seen
    cl = tuple(b // c for b, c in zip(ctx.block, ctx.cluster))
    n = ctx.multicast_count.get(id(op), 0)
    ctx.multicast_count[id(op)] = n + 1
    key = (cl, id(op), n)
    got = (t.name, tuple(int(o) for o in offs))
    first = seen.setdefault(key, (ctx.block, got))
    if first[1] != got:
        raise InterpreterError(f"a multicast load must read the same tile in every block of a cluster: block "
                               f"{first[0]} read {first[1][0]} at {list(first[1][1])}, this block reads {got[0]} at "
                               f"{list(got[1])} (execution {n} of this load)", op, ctx.block)


def _update(t: Tensor, offs, value, mask, combine=None):
    w = _window(t.shape, offs, value.shape)
    if w is None:
        return
    src, dst = w
    cur = t.work[src]
    new = np.asarray(value[dst]).reshape(cur.shape)
    if combine is not None:
        new = combine(cur, new)
    if mask is not None:
        new = np.where(mask[dst].reshape(cur.shape), new, cur)
    t.work[src] = new
    t.written = True


@rule("store")
def _r_store(ctx, op, args):
    t, offs, value, mask = _tile_access(op, args, True)
    _check_exact(ctx, op, offs[-1])
    _update(t, offs, value, mask)


@rule("atomic")
def _r_atomic(ctx, op, args):
    t, offs, value, mask = _tile_access(op, args, True)
    impl = BINARY_IMPL[{"add": "add", "max": "max", "min": "min"}[op.attrs["kind"]]]
    _update(t, offs, value, mask, lambda cur, new: impl(cur, new, t.dtype))


def _scalar_index(ctx, op, t: Tensor, idx):
    idx = _ints(idx)
    if len(idx) != len(t.shape) or any(not 0 <= i < d for i, d in zip(idx, t.shape)):
        raise InterpreterError(f"index {idx} is outside tensor {t.name} of shape {t.shape}", op, ctx.block)
    return idx


@rule("load_scalar")
def _r_load_scalar(ctx, op, args):
    a = bind_operands(op, args)
    return np.asarray(a.tensor.work[_scalar_index(ctx, op, a.tensor, a.indices)])


@rule("store_scalar")
def _r_store_scalar(ctx, op, args):
    a = bind_operands(op, args)
    t = a.tensor
    t.work[_scalar_index(ctx, op, t, a.indices)] = a.value
    t.written = True


def _rows_cols(t: Tensor, rows, col0, ncols):
    rows = np.asarray(rows).astype(np.int64)
    cols = int(col0) + np.arange(ncols, dtype=np.int64)
    vr = (rows >= 0) & (rows < t.shape[0])
    vc = (cols >= 0) & (cols < t.shape[1])
    return rows, cols, vr, vc


@rule("gather")
def _r_gather(ctx, op, args):
    t, rows, col0 = args
    _check_exact(ctx, op, col0)
    shape = tuple(op.attrs["shape"])
    out = np.full(shape, to_value(op.attrs.get("other", 0), t.dtype), t.work.dtype)
    rows, cols, vr, vc = _rows_cols(t, rows, col0, shape[1])
    out[np.ix_(vr, vc)] = t.work[np.ix_(rows[vr], cols[vc])]
    return out


@rule("scatter")
def _r_scatter(ctx, op, args):
    t, rows, col0, value = args
    _check_exact(ctx, op, col0)
    value = np.asarray(value)
    rows, cols, vr, vc = _rows_cols(t, rows, col0, value.shape[1])
    t.work[np.ix_(rows[vr], cols[vc])] = value[np.ix_(vr, vc)]
    t.written = True


# ---- shared memory and synchronization
def _poison(shape, dt: DType) -> np.ndarray:
    if dt.is_float and dt.has_nan:
        return np.full(shape, np.nan, value_dtype(dt))
    rng = np.random.default_rng(0x5EED)
    codes = rng.integers(0, 1 << min(dt.bits, 63), size=shape, dtype=np.uint64)
    return numerics.decode(codes, dt).astype(value_dtype(dt))


@rule("alloc_shared")
def _r_alloc_shared(ctx, op, args):
    t = op.results[0].type
    return SharedTile(_poison(t.shape, t.dtype), t.dtype)


@rule("subview")
def _r_subview(ctx, op, args):
    s, i = args
    i = int(i)
    if not 0 <= i < s.buf.shape[0]:
        raise InterpreterError(f"stage {i} is outside the shared tile's {s.buf.shape[0]} stages", op, ctx.block)
    return SharedTile(s.buf[i], s.dtype)


@rule("shared_load")
def _r_shared_load(ctx, op, args):
    return args[0].buf.copy()


@rule("shared_store")
def _r_shared_store(ctx, op, args):
    args[0].buf[...] = args[1]


@rule("async_copy")
def _r_async_copy(ctx, op, args):
    a = bind_operands(op, args)
    s, t = a.dst, a.tensor
    _check_exact(ctx, op, _ints(a.indices)[-1])
    s.buf[...] = _load_tile(t, _ints(a.indices), s.buf.shape, to_value(0, t.dtype))


@rule("async_gather")
def _r_async_gather(ctx, op, args):
    s, t, rows, col0 = args
    _check_exact(ctx, op, col0)
    shape = s.buf.shape
    out = np.full(shape, to_value(0, t.dtype), t.work.dtype)
    rows, cols, vr, vc = _rows_cols(t, rows, col0, shape[1])
    out[np.ix_(vr, vc)] = t.work[np.ix_(rows[vr], cols[vc])]
    s.buf[...] = out


@rule("async_commit", "async_wait", "barrier", "mbarrier_inval", "setmaxnreg", "cluster_barrier")
def _r_nop(ctx, op, args):
    return None


# ---- mbarriers and warp roles (see runtime/interpreter_roles.py)
@rule("mbarrier_init")
def _r_mbarrier_init(ctx, op, args):
    roles.mbarrier_init(args[0])


@rule("mbarrier_arrive")
def _r_mbarrier_arrive(ctx, op, args):
    roles.mbarrier_arrive(ctx, args[0])


@rule("mbarrier_wait")
def _r_mbarrier_wait(ctx, op, args):
    roles.mbarrier_wait(ctx, op, args[0], int(args[1]))


@rule("warp_specialize")
def _r_warp_specialize(ctx, op, args):
    roles.run_roles(ctx, op)


# ---- structured control flow
@rule("for")
def _r_for(ctx, op, args):
    a = bind_operands(op, args)
    lo, hi, step = _ints((a.lo, a.hi, a.step))
    if step <= 0:
        raise InterpreterError(f"loop step must be > 0, got {step}", op, ctx.block)
    carried = list(a.inits)
    body = op.regions[0]
    ivt = body.args[0].type.dtype
    i = lo
    while i < hi:
        carried = ctx.run_region(body, [to_value(i, ivt), *carried])
        i += step
    return carried


@rule("if")
def _r_if(ctx, op, args):
    return ctx.run_region(op.regions[0] if bool(args[0]) else op.regions[1], [])


@rule("while")
def _r_while(ctx, op, args):
    before, after = op.regions
    carried = list(args)
    while True:
        out = ctx.run_region(before, carried)
        c, passed = out[0], out[1:]
        if not bool(c):
            return passed
        carried = ctx.run_region(after, passed)


@rule("yield", "condition")
def _r_exit(ctx, op, args):
    return _Exit(args)


@rule("print")
def _r_print(ctx, op, args):
    fmt = op.attrs.get("fmt", "")
    vals = [from_value(a, t.type.dtype) if isinstance(t.type, (ScalarType, TileType)) and
            not isinstance(a, SharedTile) else a for a, t in zip(args, op.operands)]
    if "{" in fmt:
        try:
            text = fmt.format(*vals)
        except (IndexError, KeyError, ValueError):
            text = " ".join([fmt, *map(str, vals)])
    else:
        text = " ".join([fmt, *map(str, vals)]) if fmt else " ".join(map(str, vals))
    print(f"[block {ctx.block}] {text}", file=ctx.out or sys.stdout)


# ================================================================================== the machine
class Interpreter:
    """Runs one function over a grid. `run()` executes every block; `run_block(b)` one of them."""

    def __init__(self, fn: Function, grid, args, out=None):
        if isinstance(fn, Module):
            if len(fn.functions) != 1:
                raise ValueError("pass a Function (the module holds several kernels)")
            fn = fn.functions[0]
        self.fn = fn
        grid = (int(grid),) if np.isscalar(grid) else tuple(int(g) for g in grid)
        if not 1 <= len(grid) <= 3 or any(g < 0 for g in grid):
            raise ValueError(f"grid must be 1 to 3 non-negative ints, got {grid}")
        self.grid = grid + (1,) * (3 - len(grid))
        self.cluster = cluster_dims(fn)
        if any(g % c for g, c in zip(self.grid, self.cluster)):
            raise ValueError(f"kernel '{fn.name}': grid {self.grid} must be a multiple of the cluster shape "
                             f"{self.cluster}")
        self.multicast_seen: dict = {}          # (cluster, load, n-th execution) -> (first block, what it read)
        self.multicast_count: dict = {}
        self.block = (0, 0, 0)
        self.out = out
        self.tensors: list[Tensor] = []
        self.params = self._bind(list(args))

    def _bind(self, args):
        params = self.fn.args
        if len(args) != len(params):
            raise TypeError(f"kernel {self.fn.name} takes {len(params)} arguments, got {len(args)}")
        by_id: dict[int, Tensor] = {}
        vals = []
        for p, a in zip(params, args):
            name = p.name or f"arg{p.index}"
            t = p.type
            if isinstance(t, TensorType):
                if not isinstance(a, (np.ndarray, Array)):
                    raise TypeError(f"argument {name!r}: expected a NumPy array or tile.Array, got {type(a).__name__}")
                got = dtype_of(a)
                if got != t.dtype:
                    raise TypeError(f"argument {name!r}: expected a {t.dtype} tensor, got {got}")
                if a.ndim != t.rank or any(s is not None and s != d for s, d in zip(t.shape, a.shape)):
                    raise ValueError(f"argument {name!r}: expected shape {t}, got {tuple(a.shape)}")
                if name in (self.fn.attrs.get("divisible") or ()) and a.shape[-1] % divisible_elems(t.dtype.bits):
                    raise ValueError(f"argument {name!r}: kernel {self.fn.name} was compiled assuming it is divisible "
                                     f"(its last size a multiple of {divisible_elems(t.dtype.bits)} elements), got "
                                     f"shape {tuple(a.shape)}")
                if id(a) not in by_id:
                    by_id[id(a)] = Tensor(a, t.dtype, name)
                    self.tensors.append(by_id[id(a)])
                vals.append(by_id[id(a)])
            elif isinstance(t, ScalarType):
                if isinstance(a, np.ndarray) and a.ndim == 0:
                    a = a[()]
                if not isinstance(a, (bool, int, float, np.number, np.bool_)):
                    raise TypeError(f"argument {name!r}: expected a {t.dtype} scalar, got {type(a).__name__}")
                dt = t.dtype
                if dt.is_int and dt.kind != "bool":
                    if isinstance(a, (float, np.floating)):
                        raise TypeError(f"argument {name!r}: expected an integer ({dt}), got {a!r}")
                    if not dt.min_value <= int(a) <= dt.max_value:
                        raise ValueError(f"argument {name!r}: {a} does not fit in {dt}")
                vals.append(to_value(a, dt))
            else:
                raise TypeError(f"argument {name!r}: parameters of type {t} are not supported")
        return vals

    def run(self) -> None:
        with np.errstate(all="ignore"):
            gx, gy, gz = self.grid
            for z in range(gz):
                for y in range(gy):
                    for x in range(gx):
                        self.run_block((x, y, z))
        for t in self.tensors:
            t.write_back()

    def run_block(self, block) -> None:
        """Run one block of the grid (its coordinates padded to 3)."""
        self.block = tuple(block) + (0,) * (3 - len(block))
        self.multicast_count = {}
        self._env = dict(zip(self.fn.args, self.params))
        self._exec(self.fn.body, self._env)

    def run_region(self, block: Block, args) -> list:
        """Run a region with its arguments bound; returns the values its terminator passes."""
        env = self._env
        for a, v in zip(block.args, args):
            env[a] = v
        out = self._exec(block, env)
        return [] if out is None else out

    def _exec(self, block: Block, env: dict):
        for op in block.ops:
            try:
                fn = RULES[op.name]
            except KeyError:
                raise InterpreterError("the interpreter has no rule for this op", op, self.block) from None
            try:
                args = [env[v] for v in op.operands]
            except KeyError as e:
                raise InterpreterError(f"operand {e.args[0]!r} has no value (not defined before use)",
                                       op, self.block) from None
            try:
                res = fn(self, op, args)
            except InterpreterError:
                raise
            except Exception as e:
                raise InterpreterError(f"{type(e).__name__}: {e}", op, self.block) from e
            if isinstance(res, _Exit):
                return res.values
            if res is None:
                if op.results:
                    raise InterpreterError("the rule produced no value", op, self.block)
                continue
            if len(op.results) == 1 and not isinstance(res, list):
                env[op.results[0]] = res
            else:
                if len(res) != len(op.results):
                    raise InterpreterError(f"the rule produced {len(res)} values for {len(op.results)} results",
                                           op, self.block)
                for r, v in zip(op.results, res):
                    env[r] = v
        return None


def run(fn: Function, grid, args, out=None) -> None:
    """Execute `fn` over `grid` (1..3 ints) with `args` (one per parameter); tensors change in place.
    `out` is the stream for `print` (default sys.stdout)."""
    Interpreter(fn, grid, args, out=out).run()
