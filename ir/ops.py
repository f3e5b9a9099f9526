"""The op set, each op defined once: its name, documentation, effects and verifier.

The interpreter (`runtime/interpreter.py`) and each code generator keep one rule per op name, and
`tests/test_op_coverage.py` checks that every op defined here has them. Operands are positional; an
op's optional operands are told apart by count (e.g. `load` takes a mask iff it has rank + 2).

Conventions every verifier relies on:
* elementwise ops take operands of identical type (the front end broadcasts and promotes first);
* tile shapes are static; scalars are `ScalarType`; global memory is reached only through `TensorType`
  operands (kernel parameters);
* integer `div`/`rem` follow C (truncate toward zero), as on the GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Callable

from .dtypes import bool_, i32
from .errors import VerifyError
from .types import ScalarType, TensorType, TileType, Type


@dataclass
class OpDef:
    """The definition of one op."""
    name: str
    doc: str
    verify: Callable
    regions: int = 0
    effects: bool = False        # reads/writes memory, synchronizes, or must otherwise stay in place
    terminator: bool = False
    attrs: tuple = ()            # attribute names it accepts (required ones are checked by `verify`)
    tags: tuple = field(default_factory=tuple)


OPS: dict[str, OpDef] = {}


def define(name, doc, *, regions=0, effects=False, terminator=False, attrs=(), tags=()):
    def deco(fn):
        OPS[name] = OpDef(name, doc, fn, regions, effects, terminator, tuple(attrs), tuple(tags))
        return fn
    return deco


# ---------------------------------------------------------------- helpers for verifiers
def fail(op, rule):
    raise VerifyError(op, rule)


def need(op, cond, rule):
    if not cond:
        fail(op, rule)


def n_operands(op, *counts):
    need(op, len(op.operands) in counts, f"expects {' or '.join(map(str, counts))} operands, got {len(op.operands)}")


def n_results(op, n):
    need(op, len(op.results) == n, f"expects {n} results, got {len(op.results)}")


def is_value_type(t):
    return isinstance(t, (ScalarType, TileType))


def is_int_scalar(t):
    return isinstance(t, ScalarType) and t.dtype.is_int


def req_attr(op, name, kind=None):
    need(op, name in op.attrs, f"needs attribute '{name}'")
    v = op.attrs[name]
    if kind is not None:
        need(op, isinstance(v, kind) and not (kind is int and isinstance(v, bool)),
             f"attribute '{name}' must be {getattr(kind, '__name__', kind)}, got {v!r}")
    return v


def shape_list(op, name):
    s = req_attr(op, name, list)
    need(op, all(isinstance(d, int) and d > 0 for d in s), f"attribute '{name}' must be a list of positive ints")
    return tuple(s)


def reg_tile(op, t, what):
    need(op, isinstance(t, TileType) and t.space == "reg", f"{what} must be a register tile, got {t}")


def same_types(op):
    ts = [v.type for v in op.operands] + [r.type for r in op.results]
    need(op, all(is_value_type(t) for t in ts), "operands and results must be scalars or tiles")
    first = ts[0]
    for t in ts[1:]:
        need(op, _same_shape_dtype(t, first), f"all operands and the result must have one type: {first} vs {t}")


def _same_shape_dtype(a: Type, b: Type) -> bool:
    if isinstance(a, ScalarType) and isinstance(b, ScalarType):
        return a.dtype == b.dtype
    if isinstance(a, TileType) and isinstance(b, TileType):
        return a.dtype == b.dtype and a.shape == b.shape and a.space == b.space
    return False


def shape(t):
    return t.shape if isinstance(t, TileType) else ()


def index_operands(op, ts: TensorType, idx, what="index"):
    need(op, len(idx) == ts.rank, f"needs {ts.rank} {what} operands for a rank-{ts.rank} tensor, got {len(idx)}")
    for v in idx:
        need(op, is_int_scalar(v.type), f"{what} operands must be integer scalars, got {v.type}")


def tensor_operand(op, v):
    need(op, isinstance(v.type, TensorType), f"operand 0 must be a global tensor, got {v.type}")
    return v.type


# ---------------------------------------------------------------- elementwise
BINARY = ("add", "sub", "mul", "div", "rem", "max", "min", "pow", "and", "or", "xor", "shl", "shr", "atan2")
INT_ONLY = ("and", "or", "xor", "shl", "shr")
UNARY = ("neg", "abs", "not", "exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf",
         "sigmoid", "floor", "ceil", "round")
FLOAT_ONLY = ("exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf", "sigmoid", "floor",
              "ceil", "round", "pow", "atan2")
CMP_PREDS = ("eq", "ne", "lt", "le", "gt", "ge")
REDUCE_KINDS = ("sum", "max", "min", "prod", "and", "or", "xor", "argmax", "argmin")


def _verify_elementwise(op):
    n_results(op, 1)
    same_types(op)
    dt = op.results[0].type.dtype
    if op.name in INT_ONLY or op.name == "not":
        need(op, dt.is_int, f"needs integer operands, got {dt}")
    if op.name in FLOAT_ONLY:
        need(op, dt.is_float, f"needs float operands, got {dt}")


for _n in BINARY:
    define(_n, f"Elementwise `{_n}` of two operands of one type (scalars or tiles).", tags=("elementwise", "binary"))(
        lambda op: (n_operands(op, 2), _verify_elementwise(op)))
for _n in UNARY:
    define(_n, f"Elementwise `{_n}`.", tags=("elementwise", "unary"))(
        lambda op: (n_operands(op, 1), _verify_elementwise(op)))


@define("cmp", "Elementwise comparison; attribute `pred` is one of eq ne lt le gt ge; result is i1.",
        attrs=("pred",), tags=("elementwise",))
def _cmp(op):
    n_operands(op, 2)
    n_results(op, 1)
    need(op, req_attr(op, "pred", str) in CMP_PREDS, f"pred must be one of {CMP_PREDS}")
    a, b = op.operands
    need(op, _same_shape_dtype(a.type, b.type), f"compares values of one type, got {a.type} and {b.type}")
    r = op.results[0].type
    need(op, r.dtype == bool_ and shape(r) == shape(a.type), f"result must be i1 of the operands' shape, got {r}")


@define("select", "`select(c, a, b)`: a where c else b, elementwise; c is i1 of the same shape.",
        tags=("elementwise",))
def _select(op):
    n_operands(op, 3)
    n_results(op, 1)
    c, a, b = op.operands
    need(op, c.type.dtype == bool_ and shape(c.type) == shape(a.type), f"condition must be i1 of the values' shape, got {c.type}")
    need(op, _same_shape_dtype(a.type, b.type) and _same_shape_dtype(a.type, op.results[0].type),
         f"both choices and the result must have one type: {a.type}, {b.type}")


@define("cast", "Value conversion to another element type (round to nearest even, saturating as the "
        "type's definition says; bit-exact for every low-bit type). Same shape.", tags=("elementwise",))
def _cast(op):
    n_operands(op, 1)
    n_results(op, 1)
    a, r = op.operands[0].type, op.results[0].type
    need(op, is_value_type(a) and type(a) is type(r) and shape(a) == shape(r), f"casts keep the shape: {a} -> {r}")


@define("bitcast", "Reinterpret bits. Scalars: same width. Tiles: leading dims equal and the last dim's "
        "bits equal (tile<4x2xu8> <-> tile<4x4xint4>).")
def _bitcast(op):
    n_operands(op, 1)
    n_results(op, 1)
    a, r = op.operands[0].type, op.results[0].type
    if isinstance(a, ScalarType):
        need(op, isinstance(r, ScalarType) and a.dtype.bits == r.dtype.bits, f"scalar bitcast keeps the width: {a} -> {r}")
    else:
        reg_tile(op, a, "operand")
        reg_tile(op, r, "result")
        need(op, a.shape[:-1] == r.shape[:-1] and a.shape[-1] * a.dtype.bits == r.shape[-1] * r.dtype.bits,
             f"bitcast keeps the leading dims and the bits of the last dim: {a} -> {r}")


# ---------------------------------------------------------------- creation
@define("constant", "A scalar constant; attribute `value`.", attrs=("value",))
def _constant(op):
    n_operands(op, 0)
    n_results(op, 1)
    req_attr(op, "value")
    need(op, isinstance(op.results[0].type, ScalarType), "result must be a scalar (use `full` for tiles)")


@define("full", "A register tile filled with the constant `value`.", attrs=("value",))
def _full(op):
    n_operands(op, 0)
    n_results(op, 1)
    req_attr(op, "value")
    reg_tile(op, op.results[0].type, "result")


@define("splat", "A register tile filled with a runtime scalar of the same dtype.")
def _splat(op):
    n_operands(op, 1)
    n_results(op, 1)
    a, r = op.operands[0].type, op.results[0].type
    reg_tile(op, r, "result")
    need(op, isinstance(a, ScalarType) and a.dtype == r.dtype, f"splats a scalar of the tile's dtype, got {a} -> {r}")


@define("arange", "The i32 tile [start, start+1, ..., end-1]; attributes `start`, `end`.", attrs=("start", "end"))
def _arange(op):
    n_operands(op, 0)
    n_results(op, 1)
    s, e = req_attr(op, "start", int), req_attr(op, "end", int)
    r = op.results[0].type
    reg_tile(op, r, "result")
    need(op, e > s and r.shape == (e - s,) and r.dtype == i32, f"result must be tile<{e - s}xi32>, got {r}")


# ---------------------------------------------------------------- shape
@define("broadcast", "NumPy broadcasting of a tile to the result shape (dims of size 1 stretch; leading dims are added).")
def _broadcast(op):
    n_operands(op, 1)
    n_results(op, 1)
    a, r = op.operands[0].type, op.results[0].type
    reg_tile(op, a, "operand")
    reg_tile(op, r, "result")
    need(op, a.dtype == r.dtype, "broadcast keeps the dtype")
    need(op, len(a.shape) <= len(r.shape) and all(x in (1, y) for x, y in zip(reversed(a.shape), reversed(r.shape))),
         f"cannot broadcast {a.shape} to {r.shape}")


@define("reshape", "Same elements (row-major order), new shape.")
def _reshape(op):
    n_operands(op, 1)
    n_results(op, 1)
    a, r = op.operands[0].type, op.results[0].type
    reg_tile(op, a, "operand")
    reg_tile(op, r, "result")
    need(op, a.dtype == r.dtype and a.numel == r.numel, f"reshape keeps dtype and element count: {a} -> {r}")


@define("transpose", "Permute the dims; attribute `perm`.", attrs=("perm",))
def _transpose(op):
    n_operands(op, 1)
    n_results(op, 1)
    a, r = op.operands[0].type, op.results[0].type
    reg_tile(op, a, "operand")
    perm = req_attr(op, "perm", list)
    need(op, sorted(perm) == list(range(a.rank)), f"perm must permute 0..{a.rank - 1}, got {perm}")
    need(op, isinstance(r, TileType) and r.dtype == a.dtype and r.shape == tuple(a.shape[p] for p in perm),
         f"result must be the permuted tile, got {r}")


@define("slice", "A static sub-tile: attributes `start` and `size` per dim.", attrs=("start", "size"))
def _slice(op):
    n_operands(op, 1)
    n_results(op, 1)
    a, r = op.operands[0].type, op.results[0].type
    reg_tile(op, a, "operand")
    st, sz = req_attr(op, "start", list), shape_list(op, "size")
    need(op, len(st) == len(sz) == a.rank, "start and size need one entry per dim")
    need(op, all(0 <= s and s + n <= d for s, n, d in zip(st, sz, a.shape)), f"slice {st}+{list(sz)} is outside {a.shape}")
    need(op, isinstance(r, TileType) and r.shape == sz and r.dtype == a.dtype, f"result must be tile of shape {sz}")


@define("concat", "Concatenate tiles along attribute `axis`.", attrs=("axis",))
def _concat(op):
    n_results(op, 1)
    need(op, len(op.operands) >= 1, "needs at least one operand")
    ax = req_attr(op, "axis", int)
    ts = [v.type for v in op.operands]
    for t in ts:
        reg_tile(op, t, "operand")
    r = op.results[0].type
    need(op, 0 <= ax < r.rank, "axis out of range")
    need(op, all(t.dtype == r.dtype and t.rank == r.rank and all(t.shape[i] == r.shape[i] for i in range(r.rank) if i != ax)
                 for t in ts) and sum(t.shape[ax] for t in ts) == r.shape[ax], f"operands do not concatenate to {r}")


@define("convert_layout", "The same tile in another register layout (the result type's); a no-op on values. "
        "Layout inference inserts it where producers and consumers disagree.")
def _convert_layout(op):
    n_operands(op, 1)
    n_results(op, 1)
    a, r = op.operands[0].type, op.results[0].type
    reg_tile(op, a, "operand")
    reg_tile(op, r, "result")
    need(op, a.shape == r.shape and a.dtype == r.dtype, f"convert_layout keeps shape and dtype: {a} -> {r}")


# ---------------------------------------------------------------- reductions and dot
@define("reduce", "Reduce attribute `axis` with attribute `kind` (sum max min prod and or xor argmax argmin); "
        "the axis is removed (a scalar if none remain). Float sums accumulate in the element type.",
        attrs=("kind", "axis"))
def _reduce(op):
    n_operands(op, 1)
    n_results(op, 1)
    a, r = op.operands[0].type, op.results[0].type
    reg_tile(op, a, "operand")
    k, ax = req_attr(op, "kind", str), req_attr(op, "axis", int)
    need(op, k in REDUCE_KINDS, f"kind must be one of {REDUCE_KINDS}")
    need(op, 0 <= ax < a.rank, f"axis {ax} out of range for {a}")
    rs = a.shape[:ax] + a.shape[ax + 1:]
    want_dt = i32 if k in ("argmax", "argmin") else a.dtype
    need(op, r.dtype == want_dt and shape(r) == rs and (isinstance(r, TileType) or rs == ()),
         f"result must have shape {rs} and dtype {want_dt}, got {r}")


# ---------------------------------------------------------------- scan (cumsum)
@define("cumsum", "Prefix sum along attribute `axis` (int); attribute `exclusive` (bool): false gives the "
        "inclusive sum out[i] = x[0] + ... + x[i], true the exclusive one out[i] = x[0] + ... + x[i-1] "
        "(out[0] = 0). Same shape, dtype and layout as the operand. Integers wrap at their width; floats "
        "accumulate in order from index 0, in f32 for floats of up to 32 bits (f64 for f64), each output "
        "rounded once to the element type. Not defined for i1.", attrs=("axis", "exclusive"))
def _cumsum(op):
    n_operands(op, 1)
    n_results(op, 1)
    a, r = op.operands[0].type, op.results[0].type
    reg_tile(op, a, "operand")
    ax = req_attr(op, "axis", int)
    need(op, 0 <= ax < a.rank, f"axis {ax} out of range for {a}")
    req_attr(op, "exclusive", bool)
    need(op, a.dtype != bool_, "needs an integer or float tile, got i1 (cast to i32 first)")
    need(op, isinstance(r, TileType) and _same_shape_dtype(a, r), f"result must have the operand's type {a}, got {r}")


@define("dot", "Matrix product with accumulator: `dot(a[M,K], b[K,N], acc[M,N])` = acc + a @ b, the products "
        "and sums taken in the accumulator's type (f32 for float inputs, i32 for integer ones).")
def _dot(op):
    n_operands(op, 3)
    n_results(op, 1)
    a, b, c = (v.type for v in op.operands)
    for t, w in ((a, "a"), (b, "b"), (c, "acc")):
        reg_tile(op, t, w)
        need(op, t.rank == 2, f"{w} must be 2-D, got {t}")
    need(op, a.shape[1] == b.shape[0], f"inner dims differ: a is {a.shape}, b is {b.shape}")
    need(op, c.shape == (a.shape[0], b.shape[1]), f"acc must be {a.shape[0]}x{b.shape[1]}, got {c.shape}")
    need(op, a.dtype == b.dtype, f"a and b must have one dtype (cast first), got {a.dtype} and {b.dtype}")
    need(op, c.dtype.name in ("f32", "i32", "f16"), f"acc must be f32, f16 or i32, got {c.dtype}")
    need(op, a.dtype.is_float == c.dtype.is_float, "float inputs need a float accumulator, integer inputs an i32 one")
    need(op, _same_shape_dtype(c, op.results[0].type), "result has the accumulator's type")


# ---------------------------------------------------------------- grid
@define("block_id", "This block's index along attribute `axis` (0, 1, 2).", attrs=("axis",))
def _block_id(op):
    n_operands(op, 0)
    n_results(op, 1)
    need(op, req_attr(op, "axis", int) in (0, 1, 2), "axis must be 0, 1 or 2")
    need(op, op.results[0].type == ScalarType(i32), "result is i32")


define("num_blocks", "The grid's size along attribute `axis`.", attrs=("axis",))(_block_id)


# ---------------------------------------------------------------- global memory
@define("dim", "A global tensor's size along attribute `axis` (i32).", attrs=("axis",))
def _dim(op):
    n_operands(op, 1)
    n_results(op, 1)
    t = tensor_operand(op, op.operands[0])
    need(op, 0 <= req_attr(op, "axis", int) < t.rank, "axis out of range")
    need(op, op.results[0].type == ScalarType(i32), "result is i32")


define("stride", "A global tensor's stride (in elements) along attribute `axis` (i32).", attrs=("axis",))(_dim)


def _tile_access(op, has_value):
    """Shared checks of load/store/atomic: tensor, rank indices, [value], [mask]."""
    t = tensor_operand(op, op.operands[0])
    base = 1 + t.rank + (1 if has_value else 0)
    need(op, len(op.operands) in (base, base + 1), f"expects tensor, {t.rank} indices{', value' if has_value else ''} "
         f"and an optional mask: {base} or {base + 1} operands, got {len(op.operands)}")
    index_operands(op, t, op.operands[1:1 + t.rank])
    return t, (op.operands[base] if len(op.operands) == base + 1 else None)


def _mask_ok(op, mask, shp):
    if mask is not None:
        need(op, isinstance(mask.type, TileType) and mask.type.dtype == bool_ and mask.type.shape == tuple(shp),
             f"mask must be tile<{'x'.join(map(str, shp))}xi1>, got {mask.type}")


@define("load", "Load the tile of attribute `shape` whose first element is at the index operands. Elements outside "
        "the tensor, or where the optional mask is false, read attribute `other` (default 0). A tile of lower "
        "rank than the tensor drops the leading dims (attribute `shape` is right-aligned).",
        effects=False, attrs=("shape", "other"))
def _load(op):
    n_results(op, 1)
    t, mask = _tile_access(op, False)
    shp = shape_list(op, "shape")
    need(op, 1 <= len(shp) <= t.rank, f"tile rank {len(shp)} must be 1..{t.rank}")
    r = op.results[0].type
    reg_tile(op, r, "result")
    need(op, r.shape == shp and r.dtype == t.dtype, f"result must be tile<{'x'.join(map(str, shp))}x{t.dtype}>, got {r}")
    _mask_ok(op, mask, shp)


@define("store", "Store a register tile at the index operands; elements outside the tensor or masked off are "
        "not written.", effects=True)
def _store(op):
    n_results(op, 0)
    t, mask = _tile_access(op, True)
    v = op.operands[1 + t.rank].type
    reg_tile(op, v, "value")
    need(op, v.dtype == t.dtype, f"value dtype {v.dtype} differs from the tensor's {t.dtype} (cast first)")
    need(op, 1 <= v.rank <= t.rank, f"tile rank {v.rank} must be 1..{t.rank}")
    _mask_ok(op, mask, v.shape)


@define("atomic", "Atomic read-modify-write of a tile into the tensor at the index operands; attribute `kind` "
        "(add max min); out-of-bounds and masked elements are skipped.", effects=True, attrs=("kind",))
def _atomic(op):
    n_results(op, 0)
    t, mask = _tile_access(op, True)
    need(op, req_attr(op, "kind", str) in ("add", "max", "min"), "kind must be add, max or min")
    v = op.operands[1 + t.rank].type
    reg_tile(op, v, "value")
    need(op, v.dtype == t.dtype and 1 <= v.rank <= t.rank, f"value {v} does not fit tensor {t}")
    _mask_ok(op, mask, v.shape)


@define("load_scalar", "Load one element at the index operands (an error if outside the tensor).")
def _load_scalar(op):
    n_results(op, 1)
    t = tensor_operand(op, op.operands[0])
    index_operands(op, t, op.operands[1:])
    need(op, op.results[0].type == ScalarType(t.dtype), f"result must be {t.dtype}")


@define("store_scalar", "Store one element at the index operands (an error if outside the tensor).", effects=True)
def _store_scalar(op):
    n_results(op, 0)
    t = tensor_operand(op, op.operands[0])
    index_operands(op, t, op.operands[1:-1])
    need(op, op.operands[-1].type == ScalarType(t.dtype), f"value must be {t.dtype}")


@define("gather", "Rows by index: `gather(T, rows, col0)` -> tile[R, C] with tile[r, c] = T[rows[r], col0 + c] for a "
        "2-D tensor T; rows outside [0, T.dim0) or columns outside the tensor read attribute `other` (default 0).",
        attrs=("shape", "other"))
def _gather(op):
    n_operands(op, 3)
    n_results(op, 1)
    t = tensor_operand(op, op.operands[0])
    need(op, t.rank == 2, "gather reads a 2-D tensor")
    rows, c0 = op.operands[1].type, op.operands[2].type
    need(op, isinstance(rows, TileType) and rows.rank == 1 and rows.dtype.is_int, f"rows must be a 1-D integer tile, got {rows}")
    need(op, is_int_scalar(c0), "col0 must be an integer scalar")
    shp = shape_list(op, "shape")
    r = op.results[0].type
    need(op, len(shp) == 2 and shp[0] == rows.shape[0] and r.shape == shp and r.dtype == t.dtype,
         f"result must be tile<{rows.shape[0]}xCx{t.dtype}> matching attribute shape, got {r}")


@define("scatter", "Rows by index: `scatter(T, rows, col0, value)` writes T[rows[r], col0 + c] = value[r, c]; rows "
        "outside [0, T.dim0) and columns outside the tensor are skipped.", effects=True)
def _scatter(op):
    n_operands(op, 4)
    n_results(op, 0)
    t = tensor_operand(op, op.operands[0])
    need(op, t.rank == 2, "scatter writes a 2-D tensor")
    rows, c0, v = (x.type for x in op.operands[1:])
    need(op, isinstance(rows, TileType) and rows.rank == 1 and rows.dtype.is_int, "rows must be a 1-D integer tile")
    need(op, is_int_scalar(c0), "col0 must be an integer scalar")
    need(op, isinstance(v, TileType) and v.rank == 2 and v.shape[0] == rows.shape[0] and v.dtype == t.dtype,
         f"value must be tile<{rows.shape[0]}xCx{t.dtype}>, got {v}")


# ---------------------------------------------------------------- shared memory and synchronization
@define("alloc_shared", "Allocate a shared-memory tile (its type is the result type).", effects=True)
def _alloc_shared(op):
    n_operands(op, 0)
    n_results(op, 1)
    r = op.results[0].type
    need(op, isinstance(r, TileType) and r.space == "shared", f"result must be a shared tile, got {r}")


@define("subview", "`subview(s, i)`: the i-th slice along the leading dim of a shared tile (a ring-buffer stage).")
def _subview(op):
    n_operands(op, 2)
    n_results(op, 1)
    s, i, r = op.operands[0].type, op.operands[1].type, op.results[0].type
    need(op, isinstance(s, TileType) and s.space == "shared" and s.rank >= 2, f"operand must be a shared tile of rank >= 2, got {s}")
    need(op, is_int_scalar(i), "index must be an integer scalar")
    need(op, isinstance(r, TileType) and r.space == "shared" and r.shape == s.shape[1:] and r.dtype == s.dtype,
         f"result must be the shared tile {s.shape[1:]}, got {r}")


@define("shared_load", "Copy a shared tile into registers.", effects=True)
def _shared_load(op):
    n_operands(op, 1)
    n_results(op, 1)
    s, r = op.operands[0].type, op.results[0].type
    need(op, isinstance(s, TileType) and s.space == "shared", f"operand must be a shared tile, got {s}")
    reg_tile(op, r, "result")
    need(op, r.shape == s.shape and r.dtype == s.dtype, f"result must match the shared tile: {s} -> {r}")


@define("shared_store", "`shared_store(s, v)`: copy a register tile into a shared tile.", effects=True)
def _shared_store(op):
    n_operands(op, 2)
    n_results(op, 0)
    s, v = op.operands[0].type, op.operands[1].type
    need(op, isinstance(s, TileType) and s.space == "shared", f"operand 0 must be a shared tile, got {s}")
    reg_tile(op, v, "value")
    need(op, v.shape == s.shape and v.dtype == s.dtype, f"value must match the shared tile: {v} -> {s}")


@define("async_copy", "`async_copy(s, T, i...)`: start copying the tile of T at the indices into shared tile s "
        "(elements outside T become 0). Complete after `async_commit` + `async_wait` + `barrier`.", effects=True)
def _async_copy(op):
    n_results(op, 0)
    need(op, len(op.operands) >= 3, "expects a shared tile, a tensor and indices")
    s = op.operands[0].type
    need(op, isinstance(s, TileType) and s.space == "shared", f"operand 0 must be a shared tile, got {s}")
    t = op.operands[1].type
    need(op, isinstance(t, TensorType), f"operand 1 must be a global tensor, got {t}")
    index_operands(op, t, op.operands[2:])
    need(op, s.dtype == t.dtype and 1 <= s.rank <= t.rank, f"shared tile {s} does not fit tensor {t}")


@define("async_gather", "`async_gather(s, T, rows, col0)`: start copying rows of a 2-D tensor into the 2-D shared tile "
        "s: s[r, c] = T[rows[r], col0 + c], 0 for rows outside [0, T.dim0) and columns outside T (the async "
        "form of `gather`). Complete after `async_commit` + `async_wait` + `barrier`.", effects=True)
def _async_gather(op):
    n_operands(op, 4)
    n_results(op, 0)
    s = op.operands[0].type
    need(op, isinstance(s, TileType) and s.space == "shared" and s.rank == 2, f"operand 0 must be a 2-D shared tile, got {s}")
    t = tensor_operand(op, op.operands[1])
    need(op, t.rank == 2 and s.dtype == t.dtype, f"shared tile {s} does not fit the 2-D tensor {t}")
    rows, c0 = op.operands[2].type, op.operands[3].type
    need(op, isinstance(rows, TileType) and rows.rank == 1 and rows.dtype.is_int and rows.shape[0] == s.shape[0],
         f"rows must be a 1-D integer tile of {s.shape[0]} indices, got {rows}")
    need(op, is_int_scalar(c0), "col0 must be an integer scalar")


@define("async_commit", "Close the current group of async copies.", effects=True)
def _async_commit(op):
    n_operands(op, 0)
    n_results(op, 0)


@define("async_wait", "Wait until at most attribute `pending` committed groups of async copies are in flight.",
        effects=True, attrs=("pending",))
def _async_wait(op):
    n_operands(op, 0)
    n_results(op, 0)
    need(op, req_attr(op, "pending", int) >= 0, "pending must be >= 0")


@define("barrier", "Every thread of the block waits here; shared-memory writes before it are visible after it.",
        effects=True)
def _barrier(op):
    n_operands(op, 0)
    n_results(op, 0)


# ---------------------------------------------------------------- structured control flow
@define("for", "`for(lo, hi, step, init...)`: a counted loop over i32 `lo..hi` by `step` (> 0) carrying values; "
        "its region's arguments are (iv, carried...) and it ends with `yield`. Attribute `stages` asks for "
        "software pipelining of its loads.", regions=1, attrs=("stages",))
def _for(op):
    need(op, len(op.operands) >= 3, "expects lo, hi, step and the initial carried values")
    for v in op.operands[:3]:
        need(op, is_int_scalar(v.type), f"lo, hi and step must be integer scalars, got {v.type}")
    inits = [v.type for v in op.operands[3:]]
    need(op, [r.type for r in op.results] == inits, "results must have the carried values' types")
    body = op.regions[0]
    need(op, [a.type for a in body.args[1:]] == inits and len(body.args) == len(inits) + 1 and is_int_scalar(body.args[0].type),
         "region arguments must be (iv, carried values)")
    _yield_matches(op, body, inits)


@define("if", "`if(c)`: region 0 when the i1 scalar c is true, else region 1; each ends with `yield` of the "
        "results.", regions=2)
def _if(op):
    n_operands(op, 1)
    need(op, op.operands[0].type == ScalarType(bool_), f"condition must be an i1 scalar, got {op.operands[0].type}")
    for r in op.regions:
        need(op, not r.args, "regions take no arguments")
        _yield_matches(op, r, [x.type for x in op.results])


@define("while", "`while(init...)`: region 0 (before) gets the carried values and ends with `condition(c, v...)`; "
        "if c, region 1 (after) gets v... and ends with `yield` of new carried values; else the loop's results "
        "are v....", regions=2)
def _while(op):
    inits = [v.type for v in op.operands]
    before, after = op.regions
    need(op, [a.type for a in before.args] == inits, "the before-region's arguments must match the initial values")
    need(op, before.ops and before.ops[-1].name == "condition", "the before-region must end with `condition`")
    cond = before.ops[-1]
    passed = [v.type for v in cond.operands[1:]]
    need(op, [r.type for r in op.results] == passed and [a.type for a in after.args] == passed,
         "results and the after-region's arguments must match what `condition` passes")
    _yield_matches(op, after, inits)


def _yield_matches(op, block, types):
    need(op, block.ops and block.ops[-1].name == "yield", "each region must end with `yield`")
    got = [v.type for v in block.ops[-1].operands]
    need(op, got == list(types), f"yield gives {[str(t) for t in got]}, expected {[str(t) for t in types]}")


@define("yield", "End a region, passing values to the enclosing op.", terminator=True)
def _yield(op):
    n_results(op, 0)


@define("condition", "End a while's before-region: `condition(c, v...)`.", terminator=True)
def _condition(op):
    n_results(op, 0)
    need(op, op.operands and op.operands[0].type == ScalarType(bool_), "first operand must be an i1 scalar")


@define("print", "Debug print of its operands with attribute `fmt` (interpreter; once per block).", effects=True,
        attrs=("fmt",))
def _print(op):
    n_results(op, 0)


def opdef(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op '{name}'") from None


def numel(t: Type) -> int:
    return prod(t.shape) if isinstance(t, TileType) else 1
