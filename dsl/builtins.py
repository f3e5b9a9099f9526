"""The IR emitted for each `tile.*` builtin and each method of a value (`x.astype`, `s.load()` ...).

Every builtin gets its call's arguments bound to the stub's signature in `dsl/language.py` (so a wrong
argument count reads like Python's), checks them, and emits ops through the front end's builder.
Mistakes raise `SemanticError` naming the argument's AST node, which the front end reports.
"""
from __future__ import annotations

import inspect
from math import prod

from ..ir.core import Value
from ..ir.dtypes import DType, bool_, f32, i32
from ..ir.types import ScalarType, TileType
from . import language as L
from .arith import const_attr, default_dtype, fold_binary, fold_fma, fold_unary
from .errors import SemanticError
from .values import describe, is_number, is_scalar, is_shared, is_tensor, is_tile, normalize_const

BUILTINS: dict = {}        # name -> emit(fe, args)
METHODS: dict = {}         # (receiver kind, name) -> emit(fe, args); kind: 'tile' 'scalar' 'tensor' 'shared'


def builtin(*names):
    def deco(fn):
        for n in names:
            BUILTINS[n] = fn
        return fn
    return deco


def method(kinds, *names, sig=None):
    def deco(fn):
        for k in kinds.split():
            for n in names:
                METHODS[(k, n)] = (fn, sig)
        return fn
    return deco


class Args:
    """A call's arguments bound to a signature: `a["shape"]`, `a.node_of("shape")`, `a.err("shape", msg)`."""

    def __init__(self, name: str, node, values: dict, nodes: dict, recv=None):
        self.name = name
        self.node = node
        self.values = values
        self.nodes = nodes
        self.recv = recv

    def __getitem__(self, k):
        return self.values[k]

    def get(self, k, default=None):
        return self.values.get(k, default)

    def node_of(self, k):
        return self.nodes.get(k) or self.node

    def err(self, k, msg) -> SemanticError:
        return SemanticError(f"{self.name}: {msg}", self.node_of(k) if k else self.node)


def bind(name: str, sig: inspect.Signature, node, args, kwargs, arg_nodes, kw_nodes, recv=None) -> Args:
    try:
        ba = sig.bind(*args, **kwargs)
    except TypeError as e:
        raise SemanticError(f"{name}(): {e}", node) from None
    ba.apply_defaults()
    nodes = {}
    if arg_nodes is not None:
        try:
            bn = sig.bind(*arg_nodes, **kw_nodes)
            for k, v in bn.arguments.items():
                nodes[k] = v if not isinstance(v, tuple) else None
        except TypeError:
            pass
    return Args(name, node, dict(ba.arguments), nodes, recv)


# ---------------------------------------------------------------- argument helpers
def const_int(a: Args, k, what=None, value=None) -> int:
    v = normalize_const(a[k] if value is None else value)
    if isinstance(v, bool) or not isinstance(v, int):
        raise a.err(k, f"{what or k} must be a compile-time integer, got {describe(v)}"
                    + (" (a runtime value)" if isinstance(v, Value) else ""))
    return v


def const_bool(a: Args, k) -> bool:
    """A compile-time bool argument (True/False, or 0/1)."""
    v = normalize_const(a[k])
    if type(v) is int and v in (0, 1):
        v = bool(v)
    if not isinstance(v, bool):
        raise a.err(k, f"{k} must be a compile-time bool (True/False), got {describe(v)}")
    return v


def const_shape(a: Args, k, what="shape") -> tuple:
    s = normalize_const(a[k])
    if isinstance(s, int) and not isinstance(s, bool):
        s = (s,)
    if not isinstance(s, tuple):
        raise a.err(k, f"{what} must be a tuple of compile-time ints, got {describe(s)}")
    out = []
    for d in s:
        d = normalize_const(d)
        if isinstance(d, Value):
            raise a.err(k, f"{what} must be made of compile-time constants, got a runtime value ({d.type}); "
                           f"tile shapes are static: use a tile.constexpr parameter")
        if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            raise a.err(k, f"{what} must be a tuple of positive compile-time ints, got {s!r}")
        out.append(d)
    return tuple(out)


def dtype_arg(a: Args, k) -> DType:
    try:
        return L.as_dtype(a[k])
    except ValueError as e:
        raise a.err(k, f"{k}: {e}") from None


def tensor_arg(a: Args, k="T") -> Value:
    t = a[k]
    if not is_tensor(t):
        raise a.err(k, f"{k} must be a tensor parameter, got {describe(t)}")
    return t


def reg_tile_arg(fe, a: Args, k) -> Value:
    x = a[k]
    if is_tile(x):
        return x
    if is_shared(x):
        raise a.err(k, f"{k} is a shared tile: load it into registers first ({k}.load())")
    raise a.err(k, f"{k} must be a tile, got {describe(x)}")


def offsets_arg(fe, a: Args, t: Value, k="offsets") -> list[Value]:
    offs = a[k]
    if not isinstance(offs, tuple):
        offs = (offs,)
    rank = t.type.rank
    if len(offs) != rank:
        raise a.err(k, f"{k} needs {rank} entries for a rank-{rank} tensor, got {len(offs)}")
    try:
        return [fe.arith.index(o, "an offset") for o in offs]
    except SemanticError as e:
        raise a.err(k, e.msg) from None


def axis_arg(a: Args, k, rank: int) -> int:
    ax = const_int(a, k, "axis")
    if not -rank <= ax < rank:
        raise a.err(k, f"axis {ax} is out of range for rank {rank}")
    return ax % rank


def attr_const(a: Args, k, dt: DType):
    v = normalize_const(a[k])
    if isinstance(v, Value):
        raise a.err(k, f"{k} must be a compile-time constant, got a runtime value ({v.type}); "
                       f"use tile.where on the result instead")
    try:
        return const_attr(v, dt)
    except SemanticError as e:
        raise a.err(k, e.msg) from None


def nonzero(v) -> bool:
    return v != 0 or (isinstance(v, float) and str(v).startswith("-"))


def mask_arg(fe, a: Args, shape, k="mask"):
    """None, or the mask as an i1 tile of `shape` (broadcast). A constant True is no mask."""
    m = normalize_const(a[k])
    if m is None or m is True:
        return None
    if m is False or (is_number(m)):
        raise a.err(k, f"mask must be a boolean tile (or True), got {describe(m)}")
    try:
        m = fe.arith.truth(m, "mask")
        return fe.arith.broadcast(m, shape)
    except SemanticError as e:
        raise a.err(k, e.msg) from None


def value_for_tensor(fe, a: Args, t: Value, k="value"):
    v = a[k]
    if is_shared(v):
        raise a.err(k, f"{k} is a shared tile: load it first ({k}.load())")
    if not is_tile(v):
        raise a.err(k, f"{k} must be a tile, got {describe(v)} (to write one element use T[i, j] = v)")
    if v.type.dtype != t.type.dtype:
        raise a.err(k, f"{k} is {v.type.dtype} but the tensor holds {t.type.dtype}: "
                       f"convert it first (.astype(tile.{t.type.dtype.name}))")
    if v.type.rank > t.type.rank:
        raise a.err(k, f"a rank-{v.type.rank} tile does not fit a rank-{t.type.rank} tensor")
    return v


# ---------------------------------------------------------------- grid
@builtin("block_id", "num_blocks", "cluster_id", "num_clusters", "block_in_cluster", "cluster_shape")
def _grid(fe, a: Args):
    ax = const_int(a, "axis")
    if ax not in (0, 1, 2):
        raise a.err("axis", f"axis must be 0, 1 or 2, got {ax}")
    return fe.b.value(a.name, (), ScalarType(i32), {"axis": ax})


@builtin("xcd_remap")
def _xcd_remap(fe, a: Args):
    vals = []
    for k in ("pid", "num_pids"):
        try:
            v = fe.arith.index(a[k], k)
        except SemanticError as e:
            raise a.err(k, e.msg) from None
        vals.append(fe.arith.cast(v, i32) if v.type.dtype != i32 else v)
    attrs = {}
    if a["num_xcds"] is not None:
        x = const_int(a, "num_xcds")
        if x < 1:
            raise a.err("num_xcds", f"num_xcds must be >= 1, got {x}")
        attrs["xcds"] = x
    return fe.b.value("xcd_remap", vals, ScalarType(i32), attrs)


@builtin("cdiv")
def _cdiv(fe, a: Args):
    x, y = a["a"], a["b"]
    if isinstance(x, int) and isinstance(y, int) and not isinstance(x, bool) and not isinstance(y, bool):
        if y == 0:
            raise a.err("b", "division by zero")
        return -(-x // y)
    for k in ("a", "b"):
        try:
            fe.arith.index(a[k], "an argument")
        except SemanticError as e:
            raise a.err(k, e.msg) from None
    s = fe.arith.binary("sub", fe.arith.binary("add", x, y), 1)
    return fe.arith.binary("floordiv", s, y)


# ---------------------------------------------------------------- global memory
@builtin("load")
def _load(fe, a: Args):
    t = tensor_arg(a)
    idx = offsets_arg(fe, a, t)
    shape = const_shape(a, "shape")
    if len(shape) > t.type.rank:
        raise a.err("shape", f"a rank-{len(shape)} tile cannot be loaded from a rank-{t.type.rank} tensor")
    mask = mask_arg(fe, a, shape)
    other = attr_const(a, "other", t.type.dtype)
    attrs = {"shape": list(shape)}
    if nonzero(other):
        attrs["other"] = other
    if a["multicast"] is not None and const_bool(a, "multicast"):
        attrs["multicast"] = True
    return fe.b.value("load", [t, *idx] + ([mask] if mask is not None else []), TileType(t.type.dtype, shape), attrs)


@builtin("store", "atomic_add", "atomic_max", "atomic_min")
def _store(fe, a: Args):
    t = tensor_arg(a)
    idx = offsets_arg(fe, a, t)
    v = value_for_tensor(fe, a, t)
    mask = mask_arg(fe, a, v.type.shape)
    ops = [t, *idx, v] + ([mask] if mask is not None else [])
    if a.name == "store":
        fe.b.create("store", ops)
    else:
        fe.b.create("atomic", ops, attrs={"kind": a.name.split("_")[1]})
    return None


@builtin("load_scalar")
def _load_scalar(fe, a: Args):
    t = tensor_arg(a)
    ix = a["indices"]
    if len(ix) == 1 and isinstance(ix[0], tuple):
        ix = ix[0]
    return fe.load_element(t, ix, a.node)


@builtin("store_scalar")
def _store_scalar(fe, a: Args):
    t = tensor_arg(a)
    ix = a["indices"]
    fe.store_element(t, ix if isinstance(ix, tuple) else (ix,), a["value"], a.node)
    return None


def _row_access(fe, a: Args, verb: str):
    """The checked (tensor, rows, col0) operands of gather/scatter: a 2-D tensor, a 1-D integer row tile."""
    t = tensor_arg(a)
    if t.type.rank != 2:
        raise a.err("T", f"{verb} a 2-D tensor, got {t.type}")
    rows = a["rows"]
    if not (is_tile(rows) and rows.type.rank == 1 and rows.type.dtype.is_int and rows.type.dtype != bool_):
        raise a.err("rows", f"rows must be a 1-D integer tile, got {describe(rows)}")
    try:
        c0 = fe.arith.index(a["col0"], "col0")
    except SemanticError as e:
        raise a.err("col0", e.msg) from None
    return t, rows, c0


@builtin("gather")
def _gather(fe, a: Args):
    t, rows, c0 = _row_access(fe, a, "reads")
    n = const_int(a, "ncols")
    if n <= 0:
        raise a.err("ncols", f"ncols must be positive, got {n}")
    shape = (rows.type.shape[0], n)
    other = attr_const(a, "other", t.type.dtype)
    attrs = {"shape": list(shape)}
    if nonzero(other):
        attrs["other"] = other
    return fe.b.value("gather", [t, rows, c0], TileType(t.type.dtype, shape), attrs)


@builtin("scatter")
def _scatter(fe, a: Args):
    t, rows, c0 = _row_access(fe, a, "writes")
    v = value_for_tensor(fe, a, t)
    if v.type.rank != 2 or v.type.shape[0] != rows.type.shape[0]:
        raise a.err("value", f"value must be a {rows.type.shape[0]}xC tile (one row per index), got {v.type}")
    fe.b.create("scatter", [t, rows, c0, v])
    return None


# ---------------------------------------------------------------- dot
@builtin("dot")
def _dot(fe, a: Args):
    x, y = reg_tile_arg(fe, a, "a"), reg_tile_arg(fe, a, "b")
    for k, v in (("a", x), ("b", y)):
        if v.type.rank != 2:
            raise a.err(k, f"{k} must be 2-D, got {v.type}")
    if x.type.shape[1] != y.type.shape[0]:
        raise a.err(None, f"inner dims differ: a is {x.type.shape}, b is {y.type.shape}")
    if x.type.dtype != y.type.dtype:
        raise a.err(None, f"a and b must have one dtype (cast one with .astype), got {x.type.dtype} and {y.type.dtype}")
    m, n = x.type.shape[0], y.type.shape[1]
    acc_dt = f32 if x.type.dtype.is_float else i32
    acc = normalize_const(a["acc"])
    if acc is None or (is_number(acc) and acc == 0):
        acc = fe.arith.const(0, acc_dt, (m, n))
    elif is_tile(acc):
        if acc.type.shape != (m, n):
            raise a.err("acc", f"acc must be {m}x{n} (a's rows by b's columns), got {acc.type.shape}")
        if acc.type.dtype.is_float != x.type.dtype.is_float or acc.type.dtype.name not in ("f32", "f16", "i32"):
            raise a.err("acc", f"acc must be f32 (or f16) for float inputs and i32 for integer inputs, got {acc.type.dtype}")
    else:
        raise a.err("acc", f"acc must be a tile or None, got {describe(acc)}")
    shape = normalize_const(a["mfma"])
    if shape is not None and shape not in MFMA_SHAPES:
        raise a.err("mfma", f"mfma must be one of {', '.join(map(repr, MFMA_SHAPES))} or None, got {describe(shape)}")
    # the request is the dot's `atom` until instruction selection writes the full atom name there
    return fe.b.value("dot", [x, y, acc], acc.type, {"atom": f"mfma.{shape}"} if shape else None)


MFMA_SHAPES = ("32x32", "16x16")           # tile.dot(mfma=): the MFMA shapes of every CDNA target


# ---------------------------------------------------------------- reductions
def _reduce_axes(fe, a: Args, x: Value):
    ax = normalize_const(a["axis"])
    rank = x.type.rank
    if ax is None:
        return None
    axes = ax if isinstance(ax, tuple) else (ax,)
    out = []
    for v in axes:
        v = const_int(a, "axis", value=v)
        if not -rank <= v < rank:
            raise a.err("axis", f"axis {v} is out of range for {x.type}")
        out.append(v % rank)
    if len(set(out)) != len(out):
        raise a.err("axis", f"repeated axis in {ax!r}")
    return out


def reduce(fe, kind: str, x: Value, axis: int) -> Value:
    t = x.type
    shape = t.shape[:axis] + t.shape[axis + 1:]
    dt = i32 if kind in ("argmax", "argmin") else t.dtype
    rt = TileType(dt, shape) if shape else ScalarType(dt)
    return fe.b.value("reduce", [x], rt, {"kind": kind, "axis": axis})


@builtin("sum", "max", "min", "prod", "argmax", "argmin")
def _reduction(fe, a: Args):
    x = normalize_const(a["x"])
    kind = a.name
    if is_number(x) or is_scalar(x):
        if kind in ("argmax", "argmin"):
            return 0
        return x
    x = reg_tile_arg(fe, a, "x")
    axes = _reduce_axes(fe, a, x)
    if kind in ("sum", "prod") and x.type.dtype.is_int and x.type.dtype.bits < 32:
        x = fe.arith.cast(x, i32)            # NumPy-like: narrow integers (and masks) sum in i32
    if axes is None:
        if kind in ("argmax", "argmin"):
            if x.type.rank > 1:
                x = fe.b.value("reshape", [x], x.type.with_(shape=(x.type.numel,)))
            return reduce(fe, kind, x, 0)
        while isinstance(x.type, TileType):
            x = reduce(fe, kind, x, x.type.rank - 1)
        return x
    if kind in ("argmax", "argmin") and len(axes) > 1:
        raise a.err("axis", "takes one axis (or None)")
    for ax in sorted(axes, reverse=True):
        x = reduce(fe, kind, x, ax)
    return x


# ---------------------------------------------------------------- scan
@builtin("cumsum")
def _cumsum(fe, a: Args):
    x = normalize_const(a["x"])
    if is_number(x) or is_scalar(x):
        raise a.err("x", f"x must be a tile, got {describe(x)}")
    x = reg_tile_arg(fe, a, "x")
    if x.type.dtype == bool_:
        raise a.err("x", "x is a boolean tile (i1): convert it first (.astype(tile.i32))")
    ax = axis_arg(a, "axis", x.type.rank)
    ex = const_bool(a, "exclusive")
    return fe.b.value("cumsum", [x], TileType(x.type.dtype, x.type.shape), {"axis": ax, "exclusive": ex})


# ---------------------------------------------------------------- elementwise
UNARY_BUILTINS = ("exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf", "sigmoid", "floor",
                  "ceil", "abs")


@builtin(*UNARY_BUILTINS)
def _unary(fe, a: Args):
    x = normalize_const(a["x"])
    attrs = {"ftz": True} if a.name == "exp2" and const_bool(a, "ftz") else {}
    if is_number(x):
        return fold_unary(a.name, x, attrs)
    try:
        return fe.arith.unary(a.name, x, attrs)
    except SemanticError as e:
        raise a.err("x", f"{e.msg}") from None


@builtin("maximum", "minimum", "pow", "atan2")
def _binary(fe, a: Args):
    x, y = normalize_const(a["a"]), normalize_const(a["b"])
    op = {"maximum": "max", "minimum": "min"}.get(a.name, a.name)
    if is_number(x) and is_number(y):
        return fold_binary(op, x, y)
    return fe.arith.binary(op, x, y)


@builtin("fma")
def _fma(fe, a: Args):
    x, y, z = (normalize_const(a[k]) for k in ("a", "b", "c"))
    if is_number(x) and is_number(y) and is_number(z):
        return fold_fma(x, y, z)
    try:
        return fe.arith.fma(x, y, z)
    except SemanticError as e:
        raise a.err(None, e.msg) from None


@builtin("where")
def _where(fe, a: Args):
    c, x, y = (normalize_const(a[k]) for k in ("cond", "a", "b"))
    if not isinstance(c, Value):
        if is_number(x) and is_number(y):
            return x if c else y
        x, y = fe.arith.unify(x, y)
        return x if c else y
    return fe.arith.select(c, x, y)


# ---------------------------------------------------------------- creation
@builtin("zeros")
def _zeros(fe, a: Args):
    return fe.arith.const(0, dtype_arg(a, "dtype"), const_shape(a, "shape"))


@builtin("full")
def _full(fe, a: Args):
    shape = const_shape(a, "shape")
    v = normalize_const(a["value"])
    dt = dtype_arg(a, "dtype") if a["dtype"] is not None else None
    if is_number(v):
        try:
            return fe.arith.const(v, dt or default_dtype(v), shape)
        except SemanticError as e:
            raise a.err("value", e.msg) from None
    if is_scalar(v):
        return fe.arith.broadcast(fe.arith.cast(v, dt or v.type.dtype), shape)
    raise a.err("value", f"value must be a number or a scalar, got {describe(v)}")


@builtin("arange")
def _arange(fe, a: Args):
    if a["end"] is None:
        lo, hi = 0, const_int(a, "start", "end")
    else:
        lo, hi = const_int(a, "start"), const_int(a, "end")
    if hi <= lo:
        raise a.err(None, f"needs start < end, got {lo}, {hi}")
    return fe.b.value("arange", (), TileType(i32, (hi - lo,)), {"start": lo, "end": hi})


# ---------------------------------------------------------------- shape ops
@builtin("broadcast_to")
def _broadcast_to(fe, a: Args):
    shape = const_shape(a, "shape")
    x = normalize_const(a["x"])
    if is_number(x):
        return fe.arith.const(x, default_dtype(x), shape)
    if is_scalar(x):
        return fe.arith.broadcast(x, shape)
    x = reg_tile_arg(fe, a, "x")
    try:
        return fe.arith.broadcast(x, shape)
    except SemanticError as e:
        raise a.err(None, e.msg) from None


def reshape(fe, a: Args, x: Value, shape) -> Value:
    if not isinstance(shape, tuple):
        shape = (shape,)
    dims = []
    for d in shape:
        d = normalize_const(d)
        if isinstance(d, bool) or not isinstance(d, int) or (d <= 0 and d != -1):
            raise a.err("shape", f"shape must be positive compile-time ints (one may be -1), got {shape!r}")
        dims.append(d)
    n = x.type.numel
    if dims.count(-1) > 1:
        raise a.err("shape", "only one dim may be -1")
    if -1 in dims:
        known = prod(d for d in dims if d != -1)
        if n % known:
            raise a.err("shape", f"cannot reshape {x.type.shape} to {tuple(shape)}")
        dims[dims.index(-1)] = n // known
    if prod(dims) != n:
        raise a.err("shape", f"cannot reshape {x.type.shape} ({n} elements) to {tuple(dims)}")
    if tuple(dims) == x.type.shape:
        return x
    return fe.b.value("reshape", [x], x.type.with_(shape=tuple(dims)))


@builtin("reshape")
def _reshape(fe, a: Args):
    return reshape(fe, a, reg_tile_arg(fe, a, "x"), normalize_const(a["shape"]))


def transpose(fe, x: Value, perm) -> Value:
    perm = list(perm)
    if perm == list(range(x.type.rank)):
        return x
    return fe.b.value("transpose", [x], x.type.with_(shape=tuple(x.type.shape[p] for p in perm)), {"perm": perm})


@builtin("trans")
def _trans(fe, a: Args):
    x = reg_tile_arg(fe, a, "x")
    return transpose(fe, x, reversed(range(x.type.rank)))


@builtin("permute")
def _permute(fe, a: Args):
    x = reg_tile_arg(fe, a, "x")
    p = normalize_const(a["perm"])
    if not isinstance(p, tuple) or sorted(p) != list(range(x.type.rank)):
        raise a.err("perm", f"perm must be a permutation of 0..{x.type.rank - 1}, got {describe(p) if not isinstance(p, tuple) else p}")
    return transpose(fe, x, p)


@builtin("concat")
def _concat(fe, a: Args):
    xs = a["xs"]
    if not isinstance(xs, tuple) or not xs:
        raise a.err("xs", f"xs must be a tuple of tiles, got {describe(xs)}")
    for x in xs:
        if not is_tile(x):
            raise a.err("xs", f"xs must be tiles, got {describe(x)}")
    rank = xs[0].type.rank
    if any(x.type.rank != rank for x in xs):
        raise a.err("xs", "needs tiles of one rank, got " + ", ".join(str(x.type) for x in xs))
    ax = axis_arg(a, "axis", rank)
    for x in xs:
        if any(x.type.shape[i] != xs[0].type.shape[i] for i in range(rank) if i != ax):
            raise a.err("xs", f"shapes differ outside axis {ax}: " + ", ".join(str(x.type.shape) for x in xs))
    dt = fe.arith.result_dtype(*xs)
    xs = [fe.arith.cast(x, dt) for x in xs]
    shape = list(xs[0].type.shape)
    shape[ax] = sum(x.type.shape[ax] for x in xs)
    return fe.b.value("concat", xs, TileType(dt, tuple(shape)), {"axis": ax})


# ---------------------------------------------------------------- compile-time and debugging
@builtin("range", "static_range")
def _range_outside_for(fe, a: Args):
    raise SemanticError(f"tile.{a.name}() can only be the iterable of a `for` loop", a.node)


@builtin("static_assert")
def _static_assert(fe, a: Args):
    c = normalize_const(a["cond"])
    if isinstance(c, Value):
        raise a.err("cond", f"needs a compile-time condition, got a runtime value ({c.type})")
    if not c:
        msg = a["msg"]
        raise a.err("cond", f"failed{': ' + str(msg) if msg else ''}")
    return None


@builtin("static_print")
def _static_print(fe, a: Args):
    print(*(fe.show(v) for v in a["args"]))
    return None


@builtin("device_print")
def _device_print(fmt_fe, a: Args):
    fe = fmt_fe
    fmt = a["fmt"]
    if not isinstance(fmt, str):
        raise a.err("fmt", f"fmt must be a constant string, got {describe(fmt)}")
    vals = []
    for v in a["values"]:
        v = normalize_const(v)
        if is_number(v):
            v = fe.arith.const(v)
        if not (is_scalar(v) or is_tile(v)):
            raise a.err("values", f"device_print prints scalars and tiles, got {describe(v)}")
        vals.append(v)
    fe.b.create("print", vals, attrs={"fmt": fmt})
    return None


# ---------------------------------------------------------------- the explicit level
@builtin("alloc_shared")
def _alloc_shared(fe, a: Args):
    shape = const_shape(a, "shape")
    dt = dtype_arg(a, "dtype")
    return fe.b.value("alloc_shared", (), TileType(dt, shape, "shared", layout_arg(a, "layout")))


def layout_arg(a: Args, k):
    """None, a layout of `tile.layout` (tile.ir.layout), or its text form."""
    lay = a[k]
    if lay is None:
        return None
    from ..ir import layout as LA
    if isinstance(lay, str):
        try:
            return LA.parse_layout(lay)
        except LA.LayoutError as e:
            raise a.err(k, f"bad layout text {lay!r}: {e}") from None
    if not (type(lay).__module__ or "").startswith("tile.ir."):
        raise a.err(k, f"layout must be a tile.layout layout, got {describe(lay)}")
    return lay


@builtin("copy_async")
def _copy_async(fe, a: Args):
    s = a["dst"]
    if not is_shared(s):
        raise a.err("dst", f"dst must be a shared tile (tile.alloc_shared), got {describe(s)}")
    t = tensor_arg(a)
    if s.type.dtype != t.type.dtype:
        raise a.err("dst", f"the shared tile holds {s.type.dtype} but the tensor {t.type.dtype}")
    if s.type.rank > t.type.rank:
        raise a.err("dst", f"a rank-{s.type.rank} shared tile does not fit a rank-{t.type.rank} tensor")
    idx = offsets_arg(fe, a, t)
    fe.b.create("async_copy", [s, t, *idx])
    return None


@builtin("commit")
def _commit(fe, a: Args):
    fe.b.create("async_commit")


@builtin("wait")
def _wait(fe, a: Args):
    n = const_int(a, "pending")
    if n < 0:
        raise a.err("pending", f"pending must be >= 0, got {n}")
    fe.b.create("async_wait", attrs={"pending": n})


@builtin("barrier")
def _barrier(fe, a: Args):
    fe.b.create("barrier")


@builtin("annotate")
def _annotate(fe, a: Args):
    """`tile.annotate(x, layout)`: x in the given register layout (a `convert_layout` whose result type
    carries it; layout inference keeps annotated layouts and reports conflicts)."""
    x = a["x"]
    if not is_tile(x) or x.type.space != "reg":
        raise a.err("x", f"annotate takes a register tile, got {describe(x)}")
    lay = layout_arg(a, "layout")
    if lay is None:
        raise a.err("layout", "annotate needs a layout (a tile.layout TVLayout or its text)")
    if type(lay).__name__ != "TVLayout":
        raise a.err("layout", f"a register tile needs a thread-value layout (tile.layout TVLayout / 'tv<...>'), "
                              f"got {lay}")
    if tuple(lay.tile_shape if isinstance(lay.tile_shape, tuple) else (lay.tile_shape,)) != tuple(x.type.shape):
        raise a.err("layout", f"the layout is for a {lay.tile_shape} tile, but the tile is {tuple(x.type.shape)}")
    return fe.b.value("convert_layout", [x], x.type.with_(layout=lay))


# ---------------------------------------------------------------- methods
def _sig(text):
    """An inspect.Signature from a parameter list written as Python source."""
    ns = {}
    exec(f"def f({text}): pass", ns)
    return inspect.signature(ns["f"])


@method("tile scalar", "astype", "to", sig=_sig("dtype"))
def _astype(fe, a: Args):
    return fe.arith.cast(a.recv, dtype_arg(a, "dtype"))


@method("tile scalar", "bitcast", sig=_sig("dtype"))
def _bitcast(fe, a: Args):
    x, dt = a.recv, dtype_arg(a, "dtype")
    if dt == x.type.dtype:
        return x
    if isinstance(x.type, ScalarType):
        if dt.bits != x.type.dtype.bits:
            raise a.err("dtype", f"a scalar bitcast keeps the width: {x.type.dtype} is {x.type.dtype.bits} bits, "
                                 f"{dt} is {dt.bits}")
        return fe.b.value("bitcast", [x], ScalarType(dt))
    bits = x.type.shape[-1] * x.type.dtype.bits
    if bits % dt.bits:
        raise a.err("dtype", f"the last dim holds {bits} bits, not a whole number of {dt} ({dt.bits} bits)")
    return fe.b.value("bitcast", [x], x.type.with_(dtype=dt, shape=x.type.shape[:-1] + (bits // dt.bits,)))


@method("tile", "reshape", sig=_sig("*shape"))
def _m_reshape(fe, a: Args):
    s = a["shape"]
    if len(s) == 1 and isinstance(s[0], tuple):
        s = s[0]
    return reshape(fe, a, a.recv, s)


@method("tile", "sum", "max", "min", "prod", "argmax", "argmin", sig=_sig("axis=None"))
def _m_reduce(fe, a: Args):
    a.values["x"] = a.recv
    return _reduction(fe, a)


@method("tile", "broadcast_to", sig=_sig("shape"))
def _m_broadcast_to(fe, a: Args):
    a.values["x"] = a.recv
    return _broadcast_to(fe, a)


@method("tile", "trans", sig=_sig(""))
def _m_trans(fe, a: Args):
    return transpose(fe, a.recv, reversed(range(a.recv.type.rank)))


@method("tensor", "stride", sig=_sig("axis"))
def _m_stride(fe, a: Args):
    ax = axis_arg(a, "axis", a.recv.type.rank)
    return fe.b.value("stride", [a.recv], ScalarType(i32), {"axis": ax})


@method("shared", "load", sig=_sig(""))
def _m_shared_load(fe, a: Args):
    s = a.recv
    return fe.b.value("shared_load", [s], TileType(s.type.dtype, s.type.shape))


@method("shared", "store", sig=_sig("value"))
def _m_shared_store(fe, a: Args):
    s, v = a.recv, normalize_const(a["value"])
    if is_number(v):
        v = fe.arith.const(v, s.type.dtype, s.type.shape)
    elif is_scalar(v):
        v = fe.arith.broadcast(v, s.type.shape)
    if not is_tile(v):
        raise a.err("value", f"value must be a register tile, got {describe(v)}")
    if v.type.shape != s.type.shape:
        raise a.err("value", f"value is {v.type.shape} but the shared tile is {s.type.shape}")
    if v.type.dtype != s.type.dtype:
        raise a.err("value", f"value is {v.type.dtype} but the shared tile holds {s.type.dtype}: "
                             f"convert it first (.astype(tile.{s.type.dtype.name}))")
    fe.b.create("shared_store", [s, v])
    return None


def receiver_kind(x) -> str | None:
    if is_tile(x):
        return "tile"
    if is_shared(x):
        return "shared"
    if is_scalar(x):
        return "scalar"
    if is_tensor(x):
        return "tensor"
    return None


STUB_SIGS = {n: inspect.signature(getattr(L, n)) for n in L.BUILTIN_NAMES}
STUB_SIGS["cdiv"] = inspect.signature(L.cdiv)
