"""The op set, each op defined once: its name, documentation, operands, attributes, result-type
inference, effects and verifier.

The interpreter (`runtime/interpreter.py`) and each code generator keep one rule per op name, and
`tests/test_op_coverage.py` checks that every op defined here has them.

How an op is defined
====================
One `define(...)` call (usually as a decorator on the op's verify function)::

    @define("load", "Load the tile of attribute `shape` ...",
            operands="tensor, indices[tensor.rank], mask?",
            attrs={"shape": Shape(), "other": Number(of="tensor").opt, **VEC},
            infer=lambda t, a: [TileType(t.tensor.dtype, tuple(a["shape"]))])
    def _load(op):
        need(op, 1 <= len(op.attrs["shape"]) <= op.tensor.type.rank, "...")

* **operands** — the operand signature, comma-separated names, each one of
    - ``name``               exactly one operand;
    - ``name?``              an optional operand (present or not; at most one optional or unsized
                             group per op, after which only plain operands may follow);
    - ``name*``              a variadic group taking every operand the others leave;
    - ``name[other.rank]``   a variadic group of exactly ``rank`` operands, where ``other`` is an
                             earlier operand of TensorType (e.g. the index operands of a load).
  The storage stays the flat ``op.operands`` list (the printer and parser know nothing of the
  names); ``op.<name>`` (see `Operation.__getattr__` in ir/core.py) returns the Value, a list for a
  variadic group, or None for an absent optional operand. `bind_operands(op, items)` splits any list
  aligned with ``op.operands`` (e.g. the interpreter's argument values) the same way. The operand
  count is checked generically from the signature.
* **attrs** — ``{name: AttrType}`` with the types ``Int(min=, max=)``, ``Ints()`` (a list of ints),
  ``Shape()`` (a list of positive ints), ``Str()``, ``OneOf(*choices)``, ``Number(of=...)`` (a
  bool/int/float that is a value of the dtype of ``of``: ``"result"`` or an operand's name); append
  ``.opt`` for an optional attribute. Every declared attribute is checked generically (present if
  required, of its type); attributes not declared are carried along unchecked (annotations).
  `COMMON_ATTRS` are the ones passes may put on any op.
* **infer** — ``infer(types, attrs) -> [result types]`` for ops whose result types follow from the
  operand types and attributes: ``types`` has the operand *types* by name (``types.tensor``, a list
  for a variadic group, None for an absent optional). Inferred tiles carry no layout. The builder
  uses it when an op is created without result types; the verifier checks the result types against
  it, ignoring layouts. It runs after the verify function, so it may assume valid operands.
* **verify** — the decorated function: the op's own rules (operand types, attribute values),
  raising VerifyError through `need`/`fail`. It runs after the operand count and attribute types
  were checked, so it may use the named operands and declared attributes freely.
* **regions**, **effects** (reads/writes memory, synchronizes: dce keeps it), **terminator**, **tags**.

`check_op(op)` runs all of it (the builder and `ir.verifier` call it); `type_problem(t)` checks a
type on its own (a layout annotation must fit its tile).

Conventions every verifier relies on:
* elementwise ops take operands of identical type (the front end broadcasts and promotes first);
* tile shapes are static; scalars are `ScalarType`; global memory is reached only through `TensorType`
  operands (kernel parameters);
* integer `div`/`rem` follow C (truncate toward zero), as on the GPU.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from math import prod
from typing import Callable

from .dtypes import bool_, i32
from .errors import VerifyError
from .types import ScalarType, TensorType, TileType, Type


# ---------------------------------------------------------------- operand signatures
@dataclass(frozen=True)
class Operand:
    """One entry of an operand signature: kind is 'one', 'opt' or 'many'; for a sized group,
    `rank_of` names the earlier TensorType operand whose rank is the group's length."""
    name: str
    kind: str = "one"
    rank_of: str | None = None

    def __str__(self) -> str:
        return self.name + {"one": "", "opt": "?"}.get(self.kind, f"[{self.rank_of}.rank]" if self.rank_of else "*")


_OPERAND = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(\?|\*|\[([A-Za-z_][A-Za-z0-9_]*)\.rank\])?$")
_RESERVED = {"name", "operands", "results", "attrs", "regions", "loc", "parent", "result", "where", "walk"}


def parse_signature(text: str) -> tuple:
    """"tensor, indices[tensor.rank], mask?" -> (Operand, ...), checked for ambiguity."""
    sig = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = _OPERAND.match(part)
        if not m:
            raise ValueError(f"bad operand signature entry {part!r} in {text!r}")
        name, mark, ref = m.group(1), m.group(2), m.group(3)
        if name in _RESERVED or name in (o.name for o in sig):
            raise ValueError(f"operand name {name!r} is reserved or repeated in {text!r}")
        if ref is not None:
            if ref not in (o.name for o in sig if o.kind == "one"):
                raise ValueError(f"{part!r}: {ref!r} must be an earlier single operand")
            sig.append(Operand(name, "many", ref))
        else:
            sig.append(Operand(name, {None: "one", "?": "opt", "*": "many"}[mark]))
    flexible = [i for i, o in enumerate(sig) if o.kind == "opt" or (o.kind == "many" and o.rank_of is None)]
    if len(flexible) > 1 or (flexible and any(o.kind != "one" for o in sig[flexible[0] + 1:])):
        raise ValueError(f"ambiguous operand signature {text!r}: one optional or unsized group, "
                         f"followed only by single operands")
    return tuple(sig)


class OperandError(ValueError):
    """The operands do not match the op's signature."""


class Named(dict):
    """Operands (values, types, or anything aligned with them) by signature name: `n.tensor`."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def _split(sig: tuple, items: list, types: list, opname: str) -> Named:
    n = len(items)
    out, i, pos = Named(), 0, {}

    def want():
        return f"op '{opname}' expects operands ({', '.join(map(str, sig))}), got {n}"
    for k, o in enumerate(sig):
        if o.kind == "one":
            if i >= n:
                raise OperandError(want())
            out[o.name] = items[i]
            pos[o.name] = i
            i += 1
        elif o.rank_of is not None:
            t = types[pos[o.rank_of]]
            if not isinstance(t, TensorType):
                raise OperandError(f"op '{opname}': operand '{o.rank_of}' must be a global tensor, got {t}")
            if i + t.rank > n:
                raise OperandError(want() + f" (needs {t.rank} '{o.name}' for a rank-{t.rank} tensor)")
            out[o.name] = list(items[i:i + t.rank])
            i += t.rank
        else:
            after = len(sig) - k - 1              # only single operands follow a flexible entry
            left = n - i - after
            if o.kind == "opt":
                if left not in (0, 1):
                    raise OperandError(want())
                out[o.name] = items[i] if left else None
                i += left
            else:
                if left < 0:
                    raise OperandError(want())
                out[o.name] = list(items[i:i + left])
                i += left
    if i != n:
        raise OperandError(want())
    return out


# ---------------------------------------------------------------- attribute types
@dataclass(frozen=True)
class AttrType:
    """The declared type of one attribute (see the module doc)."""
    kind: str                       # int ints shape str oneof number
    optional: bool = False
    min: int | None = None
    max: int | None = None
    choices: tuple = ()
    of: str = "result"

    @property
    def opt(self) -> "AttrType":
        return replace(self, optional=True)

    def describe(self) -> str:
        if self.kind == "int":
            lo = "" if self.min is None else f" >= {self.min}"
            hi = "" if self.max is None else f" <= {self.max}"
            return "an int" + lo + (" and" if lo and hi else "") + hi
        return {"ints": "a list of ints", "shape": "a list of positive ints", "str": "a string", "bool": "true or false",
                "oneof": "one of " + ", ".join(map(repr, self.choices)),
                "number": f"a number of the {self.of}'s dtype"}[self.kind]


def Int(min=None, max=None) -> AttrType:
    return AttrType("int", min=min, max=max)


def Ints() -> AttrType:
    return AttrType("ints")


def Shape() -> AttrType:
    return AttrType("shape")


def Str() -> AttrType:
    return AttrType("str")


def Bool() -> AttrType:
    return AttrType("bool")


def OneOf(*choices) -> AttrType:
    return AttrType("oneof", choices=tuple(choices))


def Number(of="result") -> AttrType:
    return AttrType("number", of=of)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def number_problem(v, dt) -> str | None:
    """Why v is not a constant of dtype dt (None if it is): i1 takes true/false (or 0/1), integers an
    int in range, floats an int or float (nan/inf included)."""
    if dt.kind == "bool":
        ok = isinstance(v, bool) or (_is_int(v) and v in (0, 1))
    elif dt.is_int:
        ok = _is_int(v) and dt.min_value <= v <= dt.max_value
    else:
        ok = _is_int(v) or isinstance(v, float)
    return None if ok else f"{v!r} is not a value of {dt}"


def _attr_problem(op, key: str, spec: AttrType, v, named) -> str | None:
    k = spec.kind
    if k == "int":
        if not _is_int(v) or (spec.min is not None and v < spec.min) or (spec.max is not None and v > spec.max):
            if _is_int(v) and spec.min is not None and v < spec.min:
                return f"{key} must be >= {spec.min}, got {v}"
            return f"attribute '{key}' must be {spec.describe()}, got {v!r}"
    elif k == "ints":
        if not isinstance(v, list) or not all(_is_int(x) for x in v):
            return f"attribute '{key}' must be a list of ints, got {v!r}"
    elif k == "shape":
        if not isinstance(v, list) or not all(_is_int(x) and x > 0 for x in v):
            return f"attribute '{key}' must be a list of positive ints, got {v!r}"
    elif k == "str":
        if not isinstance(v, str):
            return f"attribute '{key}' must be a string, got {v!r}"
    elif k == "bool":
        if not isinstance(v, bool):
            return f"attribute '{key}' must be true or false, got {v!r}"
    elif k == "oneof":
        if not isinstance(v, (str, int)) or isinstance(v, bool) or v not in spec.choices:
            return f"attribute '{key}' must be one of {', '.join(map(str, spec.choices))}; got {v!r}"
    elif k == "number":
        if spec.of == "result":
            t = op.results[0].type if len(op.results) == 1 else None
        else:
            x = named.get(spec.of) if named is not None else None
            t = getattr(x, "type", None)
        if t is None or not hasattr(t, "dtype"):
            if isinstance(v, (bool, int, float)):
                return None                     # the type is checked elsewhere
            return f"attribute '{key}' must be a number, got {v!r}"
        p = number_problem(v, t.dtype)
        if p:
            return f"attribute '{key}' must be a value of the {spec.of}'s dtype {t.dtype}: {p}"
    return None


# Attributes that passes may put on any op (their consumers are code generators).
COMMON_ATTRS = {"smem_scratch": Int(min=0).opt}

# What instruction selection (passes/select_instructions.py) writes; code generation carries it out.
# The names are the targets' atoms (ir/targets.py); a value the target lacks is a located error there.
VEC = {"vec": Int(min=1).opt}                                   # elements per global access
# `vec_exact`: the vector path is exact for every launch (passes/divisibility.py): no run-time check
VEC["vec_exact"] = Bool().opt
ASYNC_GATHER = {"copy": OneOf("cp.async", "ld.global").opt, **VEC}
# a TMA copy also records the boxes it is made of (`box`: the box's extent along each dim of the shared
# tile; the tile is covered by boxes placed one after another in shared memory) and the swizzle
# (`swizzle`: span in bytes, 0 = none) the tensor-map hardware writes them with -- one tensor-map
# kernel parameter per distinct (tensor, box, swizzle) (ir/artifact.py)
ASYNC_COPY = {"copy": OneOf("cp.async", "ld.global", "tma").opt, "box": Shape().opt,
              "swizzle": OneOf(0, 32, 64, 128).opt, **VEC}
# `multicast`: the load it came from is the same tile in every block of the cluster (the user's
# promise, `tile.load(..., multicast=True)`); `cluster = n` (passes/warp_specialize.py's decision): a
# TMA copy each of the cluster's n blocks issues 1/n of the boxes of, multicast to all n of them
ASYNC_COPY.update({"multicast": Bool().opt, "cluster": Int(min=2, max=16).opt})
SHARED_COPY = {"copy": OneOf("ld.shared", "ldmatrix", "ldmatrix.k", "ldmatrix.trans.k", "smem.desc",
                             "ds_read.k", "ds_read.trans.k").opt}
# `deferred = 1`: a wgmma whose wait is put off to the first use of its result (other work overlaps it)
DOT_ATOM = {"atom": Str().opt, "warps": Ints().opt, "inflight": Int(min=0, max=1).opt,
            "deferred": Int(min=0, max=1).opt}
BUFFER_LOAD = {"copy": OneOf("buffer.load").opt}                # AMD: through a buffer resource (absent: global)
BUFFER_STORE = {"copy": OneOf("buffer.store").opt}
# AMD: how the waves of a loop overlap MFMAs with memory (passes/schedule_amd.py; ignored elsewhere)
LOOP_SCHEDULE = {"schedule": OneOf("pingpong", "interleave").opt, "phases": Int(min=1, max=16).opt}
LOOP_SCHEDULE_WAVES = {"pingpong": 8, "interleave": 4}      # the waves per workgroup each is made for
# a TMA store (Hopper) of a 2-D register tile: staged through `staging` shared buffers of one `box` each
# (whole rows x one swizzle span of columns, in the tensor map's `swizzle`), one bulk store per box
STORE = {"copy": OneOf("buffer.store", "tma").opt, "box": Shape().opt, "swizzle": OneOf(0, 32, 64, 128).opt,
         "staging": Int(min=1).opt, **VEC}


# ---------------------------------------------------------------- the definitions
@dataclass
class OpDef:
    """The definition of one op (see the module doc)."""
    name: str
    doc: str
    verify: Callable
    regions: int = 0
    effects: bool = False        # reads/writes memory, synchronizes, or must otherwise stay in place
    terminator: bool = False
    attrs: tuple = ()            # attribute names it declares
    tags: tuple = field(default_factory=tuple)
    operands: tuple = ()         # the signature: Operand entries
    attr_types: dict = field(default_factory=dict)
    infer: Callable | None = None

    @property
    def operand_names(self) -> tuple:
        return tuple(o.name for o in self.operands)

    @property
    def signature(self) -> str:
        return ", ".join(map(str, self.operands))

    def bind(self, items, types) -> Named:
        """Split `items` (aligned with operands of these `types`) by operand name; OperandError if the
        count does not fit the signature."""
        return _split(self.operands, list(items), list(types), self.name)

    def infer_types(self, operand_types, attrs) -> list | None:
        """The inferred result types (None if this op has no inference)."""
        if self.infer is None:
            return None
        return list(self.infer(self.bind(operand_types, operand_types), attrs))


OPS: dict[str, OpDef] = {}


def define(name, doc, *, operands="", regions=0, effects=False, terminator=False, attrs=None, infer=None, tags=()):
    attr_types = dict(attrs or {})
    sig = parse_signature(operands)

    def deco(fn):
        OPS[name] = OpDef(name, doc, fn, regions, effects, terminator, tuple(attr_types), tuple(tags), sig,
                          attr_types, infer)
        return fn
    return deco


def bind_operands(op, items=None) -> Named:
    """op's operands (or `items`, aligned with them: e.g. interpreter values) by signature name."""
    d = opdef(op.name)
    return d.bind(op.operands if items is None else items, [v.type for v in op.operands])


# ---------------------------------------------------------------- helpers for verifiers
def fail(op, rule):
    raise VerifyError(op, rule)


def need(op, cond, rule):
    if not cond:
        fail(op, rule)


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


def reg_tile(op, t, what):
    need(op, isinstance(t, TileType) and t.space == "reg", f"{what} must be a register tile, got {t}")


def shared_tile(op, t, what, rank=None):
    need(op, isinstance(t, TileType) and t.space == "shared" and (rank is None or t.rank == rank),
         f"{what} must be a {'' if rank is None else f'{rank}-D '}shared tile, got {t}")


def same_operand_types(op):
    ts = [v.type for v in op.operands]
    need(op, all(is_value_type(t) for t in ts), "operands must be scalars or tiles")
    for t in ts[1:]:
        need(op, _same_shape_dtype(t, ts[0]), f"all operands must have one type: {ts[0]} vs {t}")


def _same_shape_dtype(a: Type, b: Type) -> bool:
    if isinstance(a, ScalarType) and isinstance(b, ScalarType):
        return a.dtype == b.dtype
    if isinstance(a, TileType) and isinstance(b, TileType):
        return a.dtype == b.dtype and a.shape == b.shape and a.space == b.space
    return False


def same_ignoring_layout(a: Type, b: Type) -> bool:
    if isinstance(a, TileType) and isinstance(b, TileType):
        return a.with_(layout=None) == b.with_(layout=None)
    return a == b


def shape(t):
    return t.shape if isinstance(t, TileType) else ()


def index_operands(op, idx, what="index"):
    for v in idx:
        need(op, is_int_scalar(v.type), f"{what} operands must be integer scalars, got {v.type}")


def tensor_operand(op, v, what="tensor"):
    need(op, isinstance(v.type, TensorType), f"operand '{what}' must be a global tensor, got {v.type}")
    return v.type


def _strip(t: Type) -> Type:
    return t.with_(layout=None) if isinstance(t, TileType) else t


# ---------------------------------------------------------------- types on their own: layouts must fit
def type_problem(t: Type) -> str | None:
    """Why a type is malformed (None if it is fine): a layout annotation must describe its tile —
    a register tile's layout is a thread-value layout over exactly the tile's shape; a shared tile's
    layout has one mode per dim (mode sizes = the dims) and every offset inside the tile's
    allocation (0 .. numel-1)."""
    if not isinstance(t, TileType) or t.layout is None:
        return None
    return _layout_problem(t.layout, t.shape, t.space)


@lru_cache(maxsize=4096)
def _layout_problem(lay, shp: tuple, space: str) -> str | None:
    from .layout import ComposedLayout, Layout
    from .register_layout import TVLayout
    dims = "x".join(map(str, shp))
    if space == "reg":
        if not isinstance(lay, TVLayout):
            return f"a register tile's layout must be a thread-value layout (tv<...>), got {lay}"
        if tuple(lay.tile_dims) != tuple(shp):
            return f"layout {lay} describes a tile of shape {tuple(lay.tile_dims)}, not the {dims} tile"
        return None
    if space == "shared":
        if not isinstance(lay, (Layout, ComposedLayout)):
            return f"a shared tile's layout must be an offset layout (shape:stride, maybe swizzled), got {lay}"
        inner = lay.layout if isinstance(lay, ComposedLayout) else lay
        n = prod(shp)
        if inner.size != n:
            return f"layout {lay} has {inner.size} coordinates, the {dims} tile {n} elements"
        if len(shp) > 1:
            modes = [] if isinstance(inner.shape, int) else list(inner)
            if len(modes) != len(shp) or any(m.size != d for m, d in zip(modes, shp)):
                return f"layout {lay} needs one mode per dim of sizes {list(shp)}"
        if n <= 1 << 16:
            offs = lay.offsets()
            lo, hi = min(offs), max(offs)
        else:                                   # large tiles: the affine bound (swizzles stay within a period)
            from .layout import _leaves
            lo = sum(min(0, (s - 1) * d) for s, d in zip(_leaves(inner.shape), _leaves(inner.stride)))
            hi = inner.cosize - 1 + (lay.offset if isinstance(lay, ComposedLayout) else 0)
        if lo < 0 or hi >= n:
            return f"layout {lay} reaches offset {lo if lo < 0 else hi}, outside the {dims} tile's {n} elements"
    return None


# ---------------------------------------------------------------- checking an op
def check_op(op) -> None:
    """Every rule of op's definition: the operand signature, declared attribute types, the verify
    function, result types against `infer`, and the result types on their own."""
    d = OPS.get(op.name)
    if d is None:
        fail(op, "unknown op")
    try:
        named = d.bind(op.operands, [v.type for v in op.operands])
    except OperandError as e:
        msg = str(e)
        fail(op, msg[len(f"op '{op.name}'"):].lstrip(": ") if msg.startswith(f"op '{op.name}'") else msg)
    for key, spec in list(d.attr_types.items()) + list(COMMON_ATTRS.items()):
        if key not in op.attrs:
            need(op, spec.optional, f"needs attribute '{key}' ({spec.describe()})")
            continue
        p = _attr_problem(op, key, spec, op.attrs[key], named)
        if p:
            fail(op, p)
    for r in op.results:
        p = type_problem(r.type)
        if p:
            fail(op, f"result type {r.type}: {p}")
    d.verify(op)
    if d.infer is not None:
        want = d.infer(Named({k: (None if v is None else [x.type for x in v] if isinstance(v, list) else v.type)
                              for k, v in named.items()}), op.attrs)
        got = [r.type for r in op.results]
        need(op, len(got) == len(want), f"expects {len(want)} results, got {len(got)}")
        for g, w in zip(got, want):
            need(op, same_ignoring_layout(g, w), f"result type {g} does not match the inferred type {w}")


def infer_results(name: str, operands, attrs) -> list | None:
    """The result types of op `name` on these operand values and attributes, or None if the op has
    no inference (or the operands do not fit it: the verifier then says why)."""
    d = opdef(name)
    if d.infer is None:
        return None
    types = [v.type for v in operands]
    try:
        return list(d.infer(d.bind(types, types), dict(attrs or {})))
    except Exception:
        return None


# helpers kept for code outside ir/ that still counts operands
def n_operands(op, *counts):
    need(op, len(op.operands) in counts, f"expects {' or '.join(map(str, counts))} operands, got {len(op.operands)}")


def shape_list(op, name):
    s = req_attr(op, name, list)
    need(op, all(isinstance(d, int) and d > 0 for d in s), f"attribute '{name}' must be a list of positive ints")
    return tuple(s)


# ---------------------------------------------------------------- elementwise
BINARY = ("add", "sub", "mul", "div", "rem", "max", "min", "pow", "and", "or", "xor", "shl", "shr", "atan2")
INT_ONLY = ("and", "or", "xor", "shl", "shr")
UNARY = ("neg", "abs", "not", "exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf",
         "sigmoid", "floor", "ceil", "round")
FLOAT_ONLY = ("exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf", "sigmoid", "floor",
              "ceil", "round", "pow", "atan2")
CMP_PREDS = ("eq", "ne", "lt", "le", "gt", "ge")
REDUCE_KINDS = ("sum", "max", "min", "prod", "and", "or", "xor", "argmax", "argmin")
ATOMIC_KINDS = ("add", "max", "min")


def _verify_elementwise(op):
    same_operand_types(op)
    dt = op.operands[0].type.dtype
    if op.name in INT_ONLY or op.name == "not":
        need(op, dt.is_int, f"needs integer operands, got {dt}")
    if op.name in FLOAT_ONLY:
        need(op, dt.is_float, f"needs float operands, got {dt}")


def _infer_first(t, a):
    """The result has the (first) operand's type."""
    return [_strip(next(iter(t.values())))]


for _n in BINARY:
    define(_n, f"Elementwise `{_n}` of two operands of one type (scalars or tiles).", operands="a, b",
           infer=_infer_first, tags=("elementwise", "binary"))(_verify_elementwise)
# exp2's `ftz = true`: results below 2^-126 (f32's smallest normal; exp2 computes in f32) are +0 -- one
# MUFU.EX2 on NVIDIA instead of four instructions that keep the subnormals (a softmax's p = 2^(s - max)
# loses nothing: such a p is below every rounding of the row sum, which is >= 1)
UNARY_ATTRS = {"exp2": {"ftz": Bool().opt}}
for _n in UNARY:
    define(_n, f"Elementwise `{_n}`.", operands="x", attrs=UNARY_ATTRS.get(_n), infer=_infer_first,
           tags=("elementwise", "unary"))(_verify_elementwise)


@define("fma", "Elementwise `a * b + c` rounded once (fused multiply-add; floats: the product is not rounded "
        "before the sum). Operands of one type.", operands="a, b, c", infer=_infer_first, tags=("elementwise",))
def _fma(op):
    same_operand_types(op)
    need(op, op.operands[0].type.dtype.is_float, f"needs float operands, got {op.operands[0].type.dtype}")


def _with_dtype(t, dt):
    return t.with_(dtype=dt, layout=None) if isinstance(t, TileType) else ScalarType(dt)


@define("cmp", "Elementwise comparison; attribute `pred` is one of eq ne lt le gt ge; result is i1.",
        operands="a, b", attrs={"pred": OneOf(*CMP_PREDS)}, infer=lambda t, a: [_with_dtype(t.a, bool_)],
        tags=("elementwise",))
def _cmp(op):
    a, b = op.a, op.b
    need(op, is_value_type(a.type) and _same_shape_dtype(a.type, b.type),
         f"compares values of one type, got {a.type} and {b.type}")


@define("select", "`select(c, a, b)`: a where c else b, elementwise; c is i1 of the same shape.",
        operands="cond, a, b", infer=lambda t, a: [_strip(t.a)], tags=("elementwise",))
def _select(op):
    c, a, b = op.cond.type, op.a.type, op.b.type
    need(op, is_value_type(c) and c.dtype == bool_ and shape(c) == shape(a),
         f"condition must be i1 of the values' shape, got {c}")
    need(op, is_value_type(a) and _same_shape_dtype(a, b), f"both choices must have one type: {a}, {b}")


@define("cast", "Value conversion to another element type (round to nearest even, saturating as the "
        "type's definition says; bit-exact for every low-bit type). Same shape.", operands="x",
        tags=("elementwise",))
def _cast(op):
    n_results(op, 1)
    a, r = op.x.type, op.results[0].type
    need(op, is_value_type(a) and type(a) is type(r) and shape(a) == shape(r), f"casts keep the shape: {a} -> {r}")


@define("bitcast", "Reinterpret bits. Scalars: same width. Tiles: leading dims equal and the last dim's "
        "bits equal (tile<4x2xu8> <-> tile<4x4xint4>).", operands="x")
def _bitcast(op):
    n_results(op, 1)
    a, r = op.x.type, op.results[0].type
    if isinstance(a, ScalarType):
        need(op, isinstance(r, ScalarType) and a.dtype.bits == r.dtype.bits, f"scalar bitcast keeps the width: {a} -> {r}")
    else:
        reg_tile(op, a, "operand")
        reg_tile(op, r, "result")
        need(op, a.shape[:-1] == r.shape[:-1] and a.shape[-1] * a.dtype.bits == r.shape[-1] * r.dtype.bits,
             f"bitcast keeps the leading dims and the bits of the last dim: {a} -> {r}")


# ---------------------------------------------------------------- creation
@define("constant", "A scalar constant; attribute `value` (a value of the result's dtype).",
        attrs={"value": Number()})
def _constant(op):
    n_results(op, 1)
    need(op, isinstance(op.results[0].type, ScalarType), "result must be a scalar (use `full` for tiles)")


@define("full", "A register tile filled with the constant `value` (a value of the tile's dtype).",
        attrs={"value": Number()})
def _full(op):
    n_results(op, 1)
    reg_tile(op, op.results[0].type, "result")


@define("splat", "A register tile filled with a runtime scalar of the same dtype.", operands="x")
def _splat(op):
    n_results(op, 1)
    a, r = op.x.type, op.results[0].type
    reg_tile(op, r, "result")
    need(op, isinstance(a, ScalarType) and a.dtype == r.dtype, f"splats a scalar of the tile's dtype, got {a} -> {r}")


@define("arange", "The i32 tile [start, start+1, ..., end-1]; attributes `start`, `end`.",
        attrs={"start": Int(), "end": Int()},
        infer=lambda t, a: [TileType(i32, (a["end"] - a["start"],))])
def _arange(op):
    s, e = op.attrs["start"], op.attrs["end"]
    need(op, e > s, f"end must be > start, got {s}..{e}")


# ---------------------------------------------------------------- shape
@define("broadcast", "NumPy broadcasting of a tile to the result shape (dims of size 1 stretch; leading dims "
        "are added).", operands="x")
def _broadcast(op):
    n_results(op, 1)
    a, r = op.x.type, op.results[0].type
    reg_tile(op, a, "operand")
    reg_tile(op, r, "result")
    need(op, a.dtype == r.dtype, "broadcast keeps the dtype")
    need(op, len(a.shape) <= len(r.shape) and all(x in (1, y) for x, y in zip(reversed(a.shape), reversed(r.shape))),
         f"cannot broadcast {a.shape} to {r.shape}")


@define("reshape", "Same elements (row-major order), new shape.", operands="x")
def _reshape(op):
    n_results(op, 1)
    a, r = op.x.type, op.results[0].type
    reg_tile(op, a, "operand")
    reg_tile(op, r, "result")
    need(op, a.dtype == r.dtype and a.numel == r.numel, f"reshape keeps dtype and element count: {a} -> {r}")


@define("transpose", "Permute the dims; attribute `perm`.", operands="x", attrs={"perm": Ints()},
        infer=lambda t, a: [t.x.with_(shape=tuple(t.x.shape[p] for p in a["perm"]), layout=None)])
def _transpose(op):
    a = op.x.type
    reg_tile(op, a, "operand")
    perm = op.attrs["perm"]
    need(op, sorted(perm) == list(range(a.rank)), f"perm must permute 0..{a.rank - 1}, got {perm}")


@define("slice", "A static sub-tile: attributes `start` and `size` per dim.", operands="x",
        attrs={"start": Ints(), "size": Shape()},
        infer=lambda t, a: [t.x.with_(shape=tuple(a["size"]), layout=None)])
def _slice(op):
    a = op.x.type
    reg_tile(op, a, "operand")
    st, sz = op.attrs["start"], op.attrs["size"]
    need(op, len(st) == len(sz) == a.rank, "start and size need one entry per dim")
    need(op, all(0 <= s and s + n <= d for s, n, d in zip(st, sz, a.shape)), f"slice {st}+{list(sz)} is outside {a.shape}")


def _infer_concat(t, a):
    x, ax = t.inputs[0], a["axis"]
    return [x.with_(shape=x.shape[:ax] + (sum(y.shape[ax] for y in t.inputs),) + x.shape[ax + 1:], layout=None)]


@define("concat", "Concatenate tiles along attribute `axis`.", operands="inputs*", attrs={"axis": Int(min=0)},
        infer=_infer_concat)
def _concat(op):
    ts = [v.type for v in op.inputs]
    need(op, len(ts) >= 1, "needs at least one operand")
    for t in ts:
        reg_tile(op, t, "operand")
    ax, f = op.attrs["axis"], ts[0]
    need(op, ax < f.rank, "axis out of range")
    need(op, all(t.dtype == f.dtype and t.rank == f.rank and all(t.shape[i] == f.shape[i] for i in range(f.rank) if i != ax)
                 for t in ts), "operands must agree in dtype and every dim but the axis")


@define("convert_layout", "The same tile in another register layout (the result type's); a no-op on values. "
        "Layout inference inserts it where producers and consumers disagree.", operands="x", attrs=SHARED_COPY,
        infer=lambda t, a: [_strip(t.x)])
def _convert_layout(op):
    reg_tile(op, op.x.type, "operand")


# ---------------------------------------------------------------- reductions and dot
def _infer_reduce(t, a):
    x, ax, k = t.x, a["axis"], a["kind"]
    rs = x.shape[:ax] + x.shape[ax + 1:]
    dt = i32 if k in ("argmax", "argmin") else x.dtype
    return [TileType(dt, rs) if rs else ScalarType(dt)]


@define("reduce", "Reduce attribute `axis` with attribute `kind` (sum max min prod and or xor argmax argmin); "
        "the axis is removed (a scalar if none remain). Float sums accumulate in the element type.",
        operands="x", attrs={"kind": OneOf(*REDUCE_KINDS), "axis": Int(min=0)}, infer=_infer_reduce)
def _reduce(op):
    a = op.x.type
    reg_tile(op, a, "operand")
    need(op, op.attrs["axis"] < a.rank, f"axis {op.attrs['axis']} out of range for {a}")


# ---------------------------------------------------------------- scan (cumsum)
@define("cumsum", "Prefix sum along attribute `axis` (int); attribute `exclusive` (bool): false gives the "
        "inclusive sum out[i] = x[0] + ... + x[i], true the exclusive one out[i] = x[0] + ... + x[i-1] "
        "(out[0] = 0). Same shape, dtype and layout as the operand. Integers wrap at their width; floats "
        "accumulate in order from index 0, in f32 for floats of up to 32 bits (f64 for f64), each output "
        "rounded once to the element type. Not defined for i1.",
        operands="x", attrs={"axis": Int(min=0), "exclusive": Bool()}, infer=lambda t, a: [_strip(t.x)])
def _cumsum(op):
    a = op.x.type
    reg_tile(op, a, "operand")
    need(op, op.attrs["axis"] < a.rank, f"axis {op.attrs['axis']} out of range for {a}")
    need(op, a.dtype != bool_, "needs an integer or float tile, got i1 (cast to i32 first)")


@define("dot", "Matrix product with accumulator: `dot(a[M,K], b[K,N], acc[M,N])` = acc + a @ b, the products "
        "and sums taken in the accumulator's type (f32 for float inputs, i32 for integer ones).",
        operands="a, b, acc", attrs=DOT_ATOM, infer=lambda t, a: [_strip(t.acc)])
def _dot(op):
    a, b, c = op.a.type, op.b.type, op.acc.type
    for t, w in ((a, "a"), (b, "b"), (c, "acc")):
        reg_tile(op, t, w)
        need(op, t.rank == 2, f"{w} must be 2-D, got {t}")
    need(op, a.shape[1] == b.shape[0], f"inner dims differ: a is {a.shape}, b is {b.shape}")
    need(op, c.shape == (a.shape[0], b.shape[1]), f"acc must be {a.shape[0]}x{b.shape[1]}, got {c.shape}")
    need(op, a.dtype == b.dtype, f"a and b must have one dtype (cast first), got {a.dtype} and {b.dtype}")
    need(op, c.dtype.name in ("f32", "i32", "f16"), f"acc must be f32, f16 or i32, got {c.dtype}")
    need(op, a.dtype.is_float == c.dtype.is_float, "float inputs need a float accumulator, integer inputs an i32 one")


# ---------------------------------------------------------------- grid
def _i32(t, a):
    return [ScalarType(i32)]


@define("block_id", "This block's index along attribute `axis` (0, 1, 2).", attrs={"axis": Int(min=0, max=2)},
        infer=_i32)
def _block_id(op):
    pass


define("num_blocks", "The grid's size along attribute `axis`.", attrs={"axis": Int(min=0, max=2)}, infer=_i32)(_block_id)
# thread-block clusters (NVIDIA sm_90: the launch's `cluster` shape, function attribute `cluster`): the grid
# is cut into clusters of that many blocks per axis, whose blocks run at once and share shared memory
define("cluster_id", "This block's cluster's index along attribute `axis` (block_id // the cluster's extent).",
       attrs={"axis": Int(min=0, max=2)}, infer=_i32)(_block_id)
define("num_clusters", "The number of clusters along attribute `axis`.", attrs={"axis": Int(min=0, max=2)},
       infer=_i32)(_block_id)
define("block_in_cluster", "This block's index within its cluster along attribute `axis` (block_id % the "
       "cluster's extent).", attrs={"axis": Int(min=0, max=2)}, infer=_i32)(_block_id)
define("cluster_shape", "The cluster's extent (blocks) along attribute `axis`; 1 without clusters.",
       attrs={"axis": Int(min=0, max=2)}, infer=_i32)(_block_id)


@define("cluster_barrier", "Every thread of every block of the cluster waits here until all have arrived "
        "(release / acquire at cluster scope); without clusters, the block's barrier.", effects=True,
        infer=lambda t, a: [])
def _cluster_barrier(op):
    pass


@define("xcd_remap", "`xcd_remap(pid, n)`: block ids 0..n-1 renumbered so that the blocks one XCD runs get "
        "consecutive ids -- a GPU made of `xcds` chiplets (XCDs, each with its own L2) deals blocks to them "
        "round-robin, so neighbouring tiles then share an L2. A bijection of 0..n-1 (ids outside it: "
        "unspecified); `xcds` 1 is the identity. Attribute `xcds`: absent, the target's count (written by "
        "select_instructions).", operands="pid, n", attrs={"xcds": Int(min=1).opt}, infer=_i32)
def _xcd_remap(op):
    for w in ("pid", "n"):
        need(op, getattr(op, w).type == ScalarType(i32), f"{w} must be an i32 scalar, got {getattr(op, w).type}")


# ---------------------------------------------------------------- global memory
@define("dim", "A global tensor's size along attribute `axis` (i32).", operands="tensor", attrs={"axis": Int(min=0)},
        infer=_i32)
def _dim(op):
    t = tensor_operand(op, op.tensor)
    need(op, op.attrs["axis"] < t.rank, "axis out of range")


define("stride", "A global tensor's stride (in elements) along attribute `axis` (i32).", operands="tensor",
       attrs={"axis": Int(min=0)}, infer=_i32)(_dim)


def _tile_access(op):
    """Shared checks of load/store/atomic: the tensor and its index operands."""
    t = tensor_operand(op, op.tensor)
    index_operands(op, op.indices)
    return t


def _mask_ok(op, mask, shp):
    if mask is not None:
        need(op, isinstance(mask.type, TileType) and mask.type.dtype == bool_ and mask.type.shape == tuple(shp),
             f"mask must be tile<{'x'.join(map(str, shp))}xi1>, got {mask.type}")


def _none(t, a):
    return []


@define("load", "Load the tile of attribute `shape` whose first element is at the index operands. Elements outside "
        "the tensor, or where the optional mask is false, read attribute `other` (default 0). A tile of lower "
        "rank than the tensor drops the leading dims (attribute `shape` is right-aligned).",
        operands="tensor, indices[tensor.rank], mask?", attrs={"shape": Shape(), "other": Number(of="tensor").opt, **VEC,
                                                               **BUFFER_LOAD, "multicast": Bool().opt},
        infer=lambda t, a: [TileType(t.tensor.dtype, tuple(a["shape"]))])
def _load(op):
    t = _tile_access(op)
    shp = op.attrs["shape"]
    need(op, 1 <= len(shp) <= t.rank, f"tile rank {len(shp)} must be 1..{t.rank}")
    _mask_ok(op, op.mask, shp)


@define("store", "Store a register tile at the index operands; elements outside the tensor or masked off are "
        "not written.", operands="tensor, indices[tensor.rank], value, mask?", effects=True,
        attrs=STORE, infer=_none)
def _store(op):
    t = _tile_access(op)
    v = op.value.type
    reg_tile(op, v, "value")
    need(op, v.dtype == t.dtype, f"value dtype {v.dtype} differs from the tensor's {t.dtype} (cast first)")
    need(op, 1 <= v.rank <= t.rank, f"tile rank {v.rank} must be 1..{t.rank}")
    _mask_ok(op, op.mask, v.shape)
    if op.attrs.get("copy") == "tma":
        box = op.attrs.get("box")
        need(op, op.mask is None, "a TMA store cannot take a mask (the hardware clips only at the tensor's edges)")
        need(op, v.rank == 2 and box is not None and len(box) == 2 and box[0] == v.shape[0] and box[0] <= 256
             and v.shape[1] % box[1] == 0, f"a TMA store of {v} needs attribute box = [rows, columns]: whole "
             f"rows (<= 256), the columns dividing the tile's")
        need(op, "swizzle" in op.attrs and "staging" in op.attrs,
             "a TMA store needs attributes swizzle (bytes: 0, 32, 64 or 128) and staging (buffers)")


@define("atomic", "Atomic read-modify-write of a tile into the tensor at the index operands; attribute `kind` "
        "(add max min); out-of-bounds and masked elements are skipped.",
        operands="tensor, indices[tensor.rank], value, mask?", effects=True, attrs={"kind": OneOf(*ATOMIC_KINDS)},
        infer=_none)
def _atomic(op):
    t = _tile_access(op)
    v = op.value.type
    reg_tile(op, v, "value")
    need(op, v.dtype == t.dtype and 1 <= v.rank <= t.rank, f"value {v} does not fit tensor {t}")
    _mask_ok(op, op.mask, v.shape)


@define("load_scalar", "Load one element at the index operands (an error if outside the tensor).",
        operands="tensor, indices[tensor.rank]", infer=lambda t, a: [ScalarType(t.tensor.dtype)])
def _load_scalar(op):
    _tile_access(op)


@define("store_scalar", "Store one element at the index operands (an error if outside the tensor).",
        operands="tensor, indices[tensor.rank], value", effects=True, infer=_none)
def _store_scalar(op):
    t = _tile_access(op)
    need(op, op.value.type == ScalarType(t.dtype), f"value must be {t.dtype}")


def _rows_col0(op, rows, c0):
    need(op, isinstance(rows, TileType) and rows.space == "reg" and rows.rank == 1 and rows.dtype.is_int,
         f"rows must be a 1-D integer register tile, got {rows}")
    need(op, is_int_scalar(c0), f"col0 must be an integer scalar, got {c0}")


@define("gather", "Rows by index: `gather(T, rows, col0)` -> tile[R, C] with tile[r, c] = T[rows[r], col0 + c] for a "
        "2-D tensor T; rows outside [0, T.dim0) or columns outside the tensor read attribute `other` (default 0).",
        operands="tensor, rows, col0", attrs={"shape": Shape(), "other": Number(of="tensor").opt, **VEC},
        infer=lambda t, a: [TileType(t.tensor.dtype, tuple(a["shape"]))])
def _gather(op):
    t = tensor_operand(op, op.tensor)
    need(op, t.rank == 2, "gather reads a 2-D tensor")
    rows = op.rows.type
    _rows_col0(op, rows, op.col0.type)
    shp = op.attrs["shape"]
    need(op, len(shp) == 2 and shp[0] == rows.shape[0], f"attribute shape must be [{rows.shape[0]}, C], got {shp}")


@define("scatter", "Rows by index: `scatter(T, rows, col0, value)` writes T[rows[r], col0 + c] = value[r, c]; rows "
        "outside [0, T.dim0) and columns outside the tensor are skipped.", operands="tensor, rows, col0, value",
        effects=True, attrs=VEC, infer=_none)
def _scatter(op):
    t = tensor_operand(op, op.tensor)
    need(op, t.rank == 2, "scatter writes a 2-D tensor")
    rows, v = op.rows.type, op.value.type
    _rows_col0(op, rows, op.col0.type)
    need(op, isinstance(v, TileType) and v.space == "reg" and v.rank == 2 and v.shape[0] == rows.shape[0]
         and v.dtype == t.dtype, f"value must be tile<{rows.shape[0]}xCx{t.dtype}>, got {v}")


# ---------------------------------------------------------------- shared memory and synchronization
@define("alloc_shared", "Allocate a shared-memory tile (its type is the result type).", effects=True,
        attrs={"smem_offset": Int(min=0).opt})
def _alloc_shared(op):
    n_results(op, 1)
    shared_tile(op, op.results[0].type, "result")


@define("subview", "`subview(s, i)`: the i-th slice along the leading dim of a shared tile (a ring-buffer stage).",
        operands="src, index", infer=lambda t, a: [t.src.with_(shape=t.src.shape[1:], layout=None)])
def _subview(op):
    s = op.src.type
    need(op, isinstance(s, TileType) and s.space == "shared" and s.rank >= 2, f"operand must be a shared tile of rank >= 2, got {s}")
    need(op, is_int_scalar(op.index.type), "index must be an integer scalar")


@define("shared_load", "Copy a shared tile into registers.", operands="src", effects=True, attrs=SHARED_COPY,
        infer=lambda t, a: [TileType(t.src.dtype, t.src.shape)])
def _shared_load(op):
    shared_tile(op, op.src.type, "operand")


@define("shared_store", "`shared_store(s, v)`: copy a register tile into a shared tile.", operands="dst, value",
        effects=True, infer=_none)
def _shared_store(op):
    s, v = op.dst.type, op.value.type
    shared_tile(op, s, "operand 'dst'")
    reg_tile(op, v, "value")
    need(op, v.shape == s.shape and v.dtype == s.dtype, f"value must match the shared tile: {v} -> {s}")


@define("async_copy", "`async_copy(s, T, i..., bar?)`: start copying the tile of T at the indices into shared tile s "
        "(elements outside T become 0). Complete after `async_commit` + `async_wait` + `barrier`; a copy made by "
        "the tensor-memory accelerator (`copy = \"tma\"`) completes on mbarrier `bar` instead (after its "
        "`mbarrier_arrive` + `mbarrier_wait`).",
        operands="dst, tensor, indices[tensor.rank], bar?", effects=True, attrs=ASYNC_COPY, infer=_none)
def _async_copy(op):
    s = op.dst.type
    shared_tile(op, s, "operand 'dst'")
    t = _tile_access(op)
    need(op, s.dtype == t.dtype and 1 <= s.rank <= t.rank, f"shared tile {s} does not fit tensor {t}")
    if op.bar is not None:
        mbarrier_operand(op, op.bar.type, "operand 'bar'", single=True)
    if op.attrs.get("copy") == "tma":
        need(op, op.bar is not None, "a TMA copy (copy = \"tma\") needs an mbarrier operand to complete on")
        box = op.attrs.get("box")
        need(op, box is not None and len(box) == s.rank and all(b <= 256 and d % b == 0 for b, d in zip(box, s.shape)),
             f"a TMA copy needs attribute box: one extent <= 256 per dim of {s}, each dividing the tile's")
        need(op, "swizzle" in op.attrs, "a TMA copy needs attribute swizzle (bytes: 0, 32, 64 or 128)")


def mbarrier_operand(op, t, what, single=False):
    """An mbarrier operand: a shared tile of i64 words (one mbarrier each); `single`: one of them (a
    tile<1xi64> subview of a ring of mbarriers)."""
    need(op, isinstance(t, TileType) and t.space == "shared" and t.dtype.name == "i64" and
         (not single or t.shape == (1,)),
         f"{what} must be {'an mbarrier, tile<1xi64, shared>' if single else 'mbarriers, a shared tile of i64'}, "
         f"got {t}")


@define("mbarrier_init", "`mbarrier_init(bars)`: make every 64-bit word of shared tile `bars` an mbarrier whose "
        "phases complete after attribute `count` arrivals (and the bytes TMA copies expect on it); one thread "
        "initializes them and the whole block waits until it has.",
        operands="bars", effects=True, attrs={"count": Int(min=1)}, infer=_none)
def _mbarrier_init(op):
    mbarrier_operand(op, op.bars.type, "operand 'bars'")


@define("mbarrier_arrive", "`mbarrier_arrive(bar)`: the block's copy-issuing thread (the one that issues its TMA "
        "copies, after them) arrives on mbarrier `bar`: the current phase completes when the bytes those copies "
        "expect have landed too. Attribute `per = \"warp\"`: lane 0 of every warp executing it arrives instead "
        "(the mbarrier's count is then the number of those warps; a warp-specialized consumer releasing a stage). "
        "Attribute `cluster = n` (with per = \"warp\"): lane r < n of every warp arrives on the same mbarrier of "
        "the cluster's block r instead (a stage that is multicast into all n blocks is free when all of them "
        "have released it).",
        operands="bar", effects=True, attrs={"per": OneOf("block", "warp").opt, "cluster": Int(min=2, max=16).opt},
        infer=_none)
def _mbarrier_arrive(op):
    mbarrier_operand(op, op.bar.type, "operand 'bar'", single=True)


@define("mbarrier_wait", "`mbarrier_wait(bar, phase)`: every thread waits until the phase of parity `phase` (0 or 1) "
        "of mbarrier `bar` has completed; what the copies completing on it wrote is then visible.",
        operands="bar, phase", effects=True, infer=_none)
def _mbarrier_wait(op):
    mbarrier_operand(op, op.bar.type, "operand 'bar'", single=True)
    need(op, is_int_scalar(op.phase.type), "phase must be an integer scalar")


@define("mbarrier_inval", "`mbarrier_inval(bars)`: retire the mbarriers of `bars` (every phase complete), so that "
        "their memory may be used for something else.", operands="bars", effects=True, infer=_none)
def _mbarrier_inval(op):
    mbarrier_operand(op, op.bars.type, "operand 'bars'")


@define("async_gather", "`async_gather(s, T, rows, col0)`: start copying rows of a 2-D tensor into the 2-D shared tile "
        "s: s[r, c] = T[rows[r], col0 + c], 0 for rows outside [0, T.dim0) and columns outside T (the async "
        "form of `gather`). Complete after `async_commit` + `async_wait` + `barrier`.",
        operands="dst, tensor, rows, col0", effects=True, attrs=ASYNC_GATHER, infer=_none)
def _async_gather(op):
    s = op.dst.type
    shared_tile(op, s, "operand 'dst'", rank=2)
    t = tensor_operand(op, op.tensor)
    need(op, t.rank == 2 and s.dtype == t.dtype, f"shared tile {s} does not fit the 2-D tensor {t}")
    rows = op.rows.type
    _rows_col0(op, rows, op.col0.type)
    need(op, rows.shape[0] == s.shape[0], f"rows must hold {s.shape[0]} indices, got {rows}")


def _nothing(op):
    pass


define("async_commit", "Close the current group of async copies.", effects=True, infer=_none)(_nothing)


@define("async_wait", "Wait until at most attribute `pending` committed groups of async copies are in flight.",
        effects=True, attrs={"pending": Int(min=0)}, infer=_none)
def _async_wait(op):
    pass


@define("barrier", "Every thread of the block waits here; shared-memory writes before it are visible after it. "
        "Attributes `id` and `threads` (both or neither): named barrier `id` (1..15) over the `threads` threads "
        "that execute it -- the consumer warpgroups of a `warp_specialize`, without the producer.",
        effects=True, attrs={"id": Int(min=1, max=15).opt, "threads": Int(min=32).opt}, infer=_none)
def _barrier(op):
    need(op, ("id" in op.attrs) == ("threads" in op.attrs), "a named barrier needs both `id` and `threads`")
    if "threads" in op.attrs:
        need(op, op.attrs["threads"] % 32 == 0, f"threads must be whole warps, got {op.attrs['threads']}")


# ---------------------------------------------------------------- warp specialization (Hopper)
@define("warp_specialize", "Warp roles: region 0 (the producer) runs on the `producer_warps` warps that follow "
        "the function's `num_warps` (the consumers, thread ids 0 .. 32*num_warps-1, which run region 1); each "
        "region ends with `yield`. Barriers in region 1 are named barrier `consumer_barrier` over the consumer "
        "threads, in region 0 `producer_barrier` over the producer's (passes/warp_specialize.py).",
        regions=2, effects=True, infer=_none,
        attrs={"producer_warps": Int(min=1), "consumer_barrier": Int(min=1, max=15),
               "producer_barrier": Int(min=1, max=15)})
def _warp_specialize(op):
    need(op, op.attrs["consumer_barrier"] != op.attrs["producer_barrier"],
         "the producer and the consumers need barriers of their own")
    for r in op.regions:
        need(op, not r.args, "regions take no arguments")
        _yield_matches(op, r, [])


@define("setmaxnreg", "`setmaxnreg {regs, action}`: this warpgroup's register budget becomes `regs` per thread "
        "(a multiple of 8 in 24..256; `action` \"inc\" asks for more, \"dec\" gives some back). The first op "
        "of a `warp_specialize` region; the kernel's launch budget is the function attribute `maxnreg`.",
        effects=True, infer=_none, attrs={"regs": Int(min=24, max=256), "action": OneOf("inc", "dec")})
def _setmaxnreg(op):
    need(op, op.attrs["regs"] % 8 == 0, f"regs must be a multiple of 8, got {op.attrs['regs']}")


# ---------------------------------------------------------------- structured control flow
@define("for", "`for(lo, hi, step, init...)`: a counted loop over `lo..hi` by `step` (> 0) carrying values; lo, hi, "
        "step and the induction variable share one integer type; its region's arguments are (iv, carried...) and it "
        "ends with `yield`. Attribute `stages` asks for software pipelining of its loads (`pipelined`, `prefetch`: "
        "what pipelining did); `warp_specialize` asks for a producer warpgroup issuing its copies "
        "(passes/warp_specialize.py); `pingpong` (with it, Hopper) asks for the two consumer warpgroups to take turns "
        "issuing their wgmmas, through named barriers `pingpong_barrier` and `pingpong_barrier` + 1, a turn "
        "spanning `pingpong_window` = \"between\" (the last wgmma of one iteration to the first of the next) or "
        "\"within\" (an iteration's first wgmma to its last) (what passes/pingpong.py decided). Attribute `schedule` (AMD: \"pingpong\" / \"interleave\", `phases`) asks for "
        "a wave schedule of its MFMAs (passes/schedule_amd.py; other targets ignore it).", operands="lo, hi, step, inits*",
        regions=1,
        attrs={"stages": Int(min=1).opt, "pipelined": Int(min=0).opt, "prefetch": Int(min=0).opt,
               "warp_specialize": Bool().opt, "pingpong": Bool().opt,
               "pingpong_barrier": Int(min=1, max=14).opt, "pingpong_window": OneOf("between", "within").opt,
               **LOOP_SCHEDULE},
        infer=lambda t, a: list(t.inits))
def _for(op):
    lo = op.lo.type
    for w in ("lo", "hi", "step"):
        t = getattr(op, w).type
        need(op, is_int_scalar(t), f"lo, hi and step must be integer scalars, got {w}: {t}")
        need(op, t == lo, f"lo, hi and step must have one integer type, got lo: {lo}, {w}: {t}")
    inits = [v.type for v in op.inits]
    need(op, [r.type for r in op.results] == inits, "results must have the carried values' types")
    body = op.regions[0]
    need(op, [a.type for a in body.args[1:]] == inits and len(body.args) == len(inits) + 1 and is_int_scalar(body.args[0].type),
         "region arguments must be (iv, carried values)")
    need(op, body.args[0].type == lo, f"the induction variable must have the bounds' type {lo}, got {body.args[0].type}")
    _yield_matches(op, body, inits)
    need(op, "pingpong_barrier" not in op.attrs or op.attrs.get("pingpong"),
         "pingpong_barrier without pingpong = true (the barriers of a ping-pong nobody asked for)")
    need(op, "pingpong_window" not in op.attrs or "pingpong_barrier" in op.attrs,
         "pingpong_window without pingpong_barrier (a turn without its barriers)")


@define("if", "`if(c)`: region 0 when the i1 scalar c is true, else region 1; each ends with `yield` of the "
        "results.", operands="cond", regions=2)
def _if(op):
    need(op, op.cond.type == ScalarType(bool_), f"condition must be an i1 scalar, got {op.cond.type}")
    for r in op.regions:
        need(op, not r.args, "regions take no arguments")
        _yield_matches(op, r, [x.type for x in op.results])


@define("while", "`while(init...)`: region 0 (before) gets the carried values and ends with `condition(c, v...)`; "
        "if c, region 1 (after) gets v... and ends with `yield` of new carried values; else the loop's results "
        "are v....", operands="inits*", regions=2)
def _while(op):
    inits = [v.type for v in op.inits]
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


define("yield", "End a region, passing values to the enclosing op.", operands="values*", terminator=True,
       infer=_none)(_nothing)


@define("condition", "End a while's before-region: `condition(c, v...)`.", operands="cond, values*", terminator=True,
        infer=_none)
def _condition(op):
    need(op, op.cond.type == ScalarType(bool_), "first operand must be an i1 scalar")


@define("print", "Debug print of its operands with attribute `fmt` (interpreter; once per block).",
        operands="values*", effects=True, attrs={"fmt": Str().opt}, infer=_none)
def _print(op):
    pass


def opdef(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op '{name}'") from None


def numel(t: Type) -> int:
    return prod(t.shape) if isinstance(t, TileType) else 1
