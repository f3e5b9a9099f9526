"""The language namespace: dtypes, parameter annotations, `inline`, `cdiv`, and a stub for every builtin.

A kernel body is never executed: the front end reads its AST and lowers each call of a function below
to IR (`dsl/builtins.py` holds the lowering of each). Called from ordinary Python, a builtin raises a
clear error instead — except `cdiv`, which works on host integers too.
"""
from __future__ import annotations

import functools
import inspect

from ..ir import dtypes as _dt
from ..ir.dtypes import DType, dtype
from ..ir.errors import TileError

# ---------------------------------------------------------------- dtypes
bool_ = _dt.bool_
i1 = _dt.bool_
i8, i16, i32, i64 = _dt.i8, _dt.i16, _dt.i32, _dt.i64
u8, u16, u32, u64 = _dt.u8, _dt.u16, _dt.u32, _dt.u64
int8, int16, int32, int64 = i8, i16, i32, i64
uint8, uint16, uint32, uint64 = u8, u16, u32, u64
f16, bf16, f32, f64 = _dt.f16, _dt.bf16, _dt.f32, _dt.f64
float16, bfloat16, float32, float64 = f16, bf16, f32, f64
f8e4m3fn, f8e5m2 = _dt.f8e4m3fn, _dt.f8e5m2
float8_e4m3fn, float8_e5m2 = f8e4m3fn, f8e5m2
f8e8m0fnu = e8m0 = float8_e8m0fnu = _dt.f8e8m0fnu     # the OCP MX scale type (2^(c-127), 255 = NaN)
int1, int2, int3, int4, int5, int6, int7 = (dtype(f"int{b}") for b in range(1, 8))
uint1, uint2, uint3, uint4, uint5, uint6, uint7 = (dtype(f"uint{b}") for b in range(1, 8))
f6e3m2, f6e2m3, f5e2m2, f4e2m1, f3e1m1 = (dtype(n) for n in ("f6e3m2", "f6e2m3", "f5e2m2", "f4e2m1", "f3e1m1"))
f5e3m1, f7e4m2, f7e3m3 = (dtype(n) for n in ("f5e3m1", "f7e4m2", "f7e3m3"))

DTYPE_NAMES = ("bool_", "i1", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "int8", "int16", "int32", "int64",
               "uint8", "uint16", "uint32", "uint64", "f16", "bf16", "f32", "f64", "float16", "bfloat16", "float32",
               "float64", "f8e4m3fn", "f8e5m2", "float8_e4m3fn", "float8_e5m2",
               "f8e8m0fnu", "e8m0", "float8_e8m0fnu",
               *(f"int{b}" for b in range(1, 8)), *(f"uint{b}" for b in range(1, 8)),
               "f6e3m2", "f6e2m3", "f5e2m2", "f4e2m1", "f3e1m1", "f5e3m1", "f7e4m2", "f7e3m3")


def as_dtype(x) -> DType:
    """A DType from a DType, a name ('bf16', 'int4') or a NumPy type/dtype (by its name); raises ValueError."""
    if isinstance(x, DType):
        return x
    if isinstance(x, str):
        return dtype(x)
    name = getattr(x, "__name__", None) if isinstance(x, type) else getattr(x, "name", None)
    if isinstance(name, str):
        return dtype(name)
    raise ValueError(f"{x!r} is not a dtype")


# ---------------------------------------------------------------- parameter annotations
class TensorSpec:
    """`Tensor[dtype]`, `Tensor[dtype, rank]` or `Tensor[rank]`: a global tensor parameter. A missing
    dtype or rank is taken from the launch argument."""

    __slots__ = ("dtype", "rank")

    def __init__(self, dtype: DType | None = None, rank: int | None = None):
        self.dtype = dtype
        self.rank = rank

    def __eq__(self, other):
        return isinstance(other, TensorSpec) and (self.dtype, self.rank) == (other.dtype, other.rank)

    def __hash__(self):
        return hash((TensorSpec, self.dtype, self.rank))

    def __repr__(self) -> str:
        parts = [p for p in ((self.dtype.name if self.dtype else None), (str(self.rank) if self.rank is not None else None)) if p]
        return f"tile.Tensor[{', '.join(parts)}]" if parts else "tile.Tensor"


class Tensor:
    """Annotation of a global-tensor parameter: `x: tile.Tensor[bf16]`, `tile.Tensor[bf16, 2]`,
    `tile.Tensor[2]` (dtype from the argument) or bare `tile.Tensor`."""

    def __new__(cls, *a, **k):
        raise TypeError("tile.Tensor is an annotation (tile.Tensor[dtype] / tile.Tensor[dtype, rank]); "
                        "make arrays with tile.asarray(x, dtype)")

    def __class_getitem__(cls, item) -> TensorSpec:
        items = item if isinstance(item, tuple) else (item,)
        dt, rank = None, None
        for x in items:
            if isinstance(x, int) and not isinstance(x, bool):
                if rank is not None or x < 0:
                    raise TypeError(f"tile.Tensor[...]: bad rank {x!r}")
                rank = x
            else:
                if dt is not None:
                    raise TypeError(f"tile.Tensor[...] takes one dtype, got {item!r}")
                try:
                    dt = as_dtype(x)
                except ValueError:
                    raise TypeError(f"tile.Tensor[...]: {x!r} is neither a dtype nor a rank") from None
        if len(items) > 2:
            raise TypeError(f"tile.Tensor[dtype, rank] takes at most two items, got {item!r}")
        return TensorSpec(dt, rank)


class constexpr:
    """Annotation of a compile-time constant parameter: `BM: tile.constexpr = 64`. The kernel is
    specialized (and cached) on its value."""

    def __new__(cls, *a, **k):
        raise TypeError("tile.constexpr is an annotation (BM: tile.constexpr = 64)")

    def __class_getitem__(cls, item):
        return cls


# ---------------------------------------------------------------- inline helpers
class InlineFunction:
    """A helper marked `@tile.inline`: the front end inlines its body at each call in a kernel.
    Called from ordinary Python it runs as the plain function."""

    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<tile.inline {self.fn.__qualname__}>"


def inline(fn) -> InlineFunction:
    """Mark a helper function to be inlined into kernels at each call."""
    if isinstance(fn, InlineFunction):
        return fn
    if not inspect.isfunction(fn):
        raise TypeError(f"@tile.inline decorates a function, got {fn!r}")
    return InlineFunction(fn)


# ---------------------------------------------------------------- builtins
class OutsideKernelError(TileError):
    """A `tile.*` builtin was called from ordinary Python instead of inside a kernel."""


def _builtin(fn):
    """Mark a stub: inside a kernel the front end lowers calls to it (by `__tile_builtin__` name)."""
    name = fn.__name__.rstrip("_")

    @functools.wraps(fn)
    def stub(*args, **kwargs):
        raise OutsideKernelError(f"tile.{name}() can only be used inside a @tile.kernel function "
                                 f"(the kernel body is compiled, never run as Python)")

    stub.__tile_builtin__ = name
    stub.__name__ = name
    stub.__qualname__ = name
    return stub


def is_builtin(obj) -> bool:
    return getattr(obj, "__tile_builtin__", None) is not None


def cdiv(a, b):
    """Ceil division: the number of blocks of size b that cover a (host ints and kernel values)."""
    if isinstance(a, bool) or isinstance(b, bool):
        raise TypeError("cdiv() takes integers")
    try:
        a, b = a.__index__(), b.__index__()
    except AttributeError:
        raise TypeError(f"cdiv() takes integers, got {type(a).__name__} and {type(b).__name__}") from None
    return -(-a // b)


cdiv.__tile_builtin__ = "cdiv"


@_builtin
def block_id(axis): """This block's index along axis 0, 1 or 2 (i32)."""
@_builtin
def num_blocks(axis): """The grid's size along axis 0, 1 or 2 (i32)."""
@_builtin
def cluster_id(axis):
    """This block's cluster's index along axis 0, 1 or 2 (i32): block_id(axis) // cluster_shape(axis). A
    launch with `cluster=(x, y, z)` (NVIDIA sm_90) groups the grid's blocks into clusters that run at
    once; without one every block is its own cluster (cluster_id = block_id)."""
@_builtin
def num_clusters(axis): """The number of clusters along axis 0, 1 or 2 (i32): num_blocks(axis) // cluster_shape(axis)."""
@_builtin
def block_in_cluster(axis): """This block's index within its cluster along axis 0, 1 or 2 (i32); 0 without clusters."""
@_builtin
def cluster_shape(axis): """The launch's cluster extent along axis 0, 1 or 2 (i32); 1 without clusters."""
@_builtin
def xcd_remap(pid, num_pids, num_xcds=None):
    """Block id `pid` of `num_pids` renumbered so that the blocks one XCD (AMD chiplet, own L2) runs
    get consecutive ids; num_xcds None: the target's (8 on MI300X/MI355X, 1 -- the identity -- on
    NVIDIA). Use the result in place of the linear block id."""


@_builtin
def load(T, offsets, shape, mask=None, other=0, multicast=False):
    """The tile of `shape` whose first element is T[offsets]; outside T or where mask is false reads `other`.

    `multicast=True` promises that every block of the cluster loads this same tile here (a GEMM's B tile
    in a cluster of blocks along M). In a warp-specialized TMA loop launched with `cluster=(n, 1, 1)`,
    each block then fetches 1/n of it and the hardware writes it into all n blocks' shared memory (TMA
    multicast): n times less L2 traffic for that operand. Elsewhere it changes nothing; the interpreter
    checks the promise (a block reading another tile is an error)."""


@_builtin
def store(T, offsets, value, mask=None):
    """Store a tile at T[offsets]; elements outside T or masked off are not written."""


@_builtin
def atomic_add(T, offsets, value, mask=None): """Atomic T[offsets...] += value, elementwise."""
@_builtin
def atomic_max(T, offsets, value, mask=None): """Atomic T[offsets...] = max(T, value), elementwise."""
@_builtin
def atomic_min(T, offsets, value, mask=None): """Atomic T[offsets...] = min(T, value), elementwise."""
@_builtin
def load_scalar(T, *indices): """One element of T (must be inside T); also written T[i, j]."""
@_builtin
def store_scalar(T, indices, value): """Write one element of T; also written T[i, j] = v."""
@_builtin
def gather(T, rows, col0, ncols, other=0): """out[r, c] = T[rows[r], col0 + c]; rows outside T read other."""
@_builtin
def scatter(T, rows, col0, value): """T[rows[r], col0 + c] = value[r, c]; rows outside T are skipped."""
@_builtin
def dot(a, b, acc=None, mfma=None):
    """acc + a @ b, accumulated in f32 (i32 for integer inputs); acc defaults to zeros. mfma (AMD CDNA;
    other targets ignore it): "32x32" or "16x16", the MFMA shape (gfx942: 32x32x8 / 16x16x16, gfx950:
    32x32x16 / 16x16x32); None: the compiler's choice. Either way the IR shows it as the dot's `atom`."""


@_builtin
def sum(x, axis=None): """Sum along axis (None: everything, to a scalar)."""
@_builtin
def max(x, axis=None): """Maximum along axis (None: everything, to a scalar)."""
@_builtin
def min(x, axis=None): """Minimum along axis (None: everything, to a scalar)."""
@_builtin
def prod(x, axis=None): """Product along axis (None: everything, to a scalar)."""
@_builtin
def argmax(x, axis=None): """Index of the maximum along axis (None: the flat index), i32."""
@_builtin
def argmin(x, axis=None): """Index of the minimum along axis (None: the flat index), i32."""


@_builtin
def cumsum(x, axis, exclusive=False):
    """Prefix sum of a tile along axis (inclusive; exclusive=True: out[0] = 0); same shape and dtype."""


@_builtin
def exp(x): """e**x elementwise."""
@_builtin
def exp2(x, ftz=False):
    """2**x elementwise. ftz=True: results below 2**-126 (f32's smallest normal) are +0 -- one
    instruction on NVIDIA (ex2.approx.ftz) instead of four; what a softmax's exp2(s - max) wants."""
@_builtin
def log(x): """Natural log elementwise."""
@_builtin
def log2(x): """Base-2 log elementwise."""
@_builtin
def sqrt(x): """Square root elementwise."""
@_builtin
def rsqrt(x): """1 / sqrt(x) elementwise."""
@_builtin
def sin(x): """Sine elementwise."""
@_builtin
def cos(x): """Cosine elementwise."""
@_builtin
def tanh(x): """Hyperbolic tangent elementwise."""
@_builtin
def erf(x): """Error function elementwise."""
@_builtin
def sigmoid(x): """1 / (1 + exp(-x)) elementwise."""
@_builtin
def floor(x): """Round down elementwise."""
@_builtin
def ceil(x): """Round up elementwise."""
@_builtin
def abs(x): """Absolute value elementwise."""
@_builtin
def pow(a, b): """a ** b elementwise (floats)."""
@_builtin
def atan2(a, b): """atan2(a, b) elementwise (floats)."""
@_builtin
def maximum(a, b): """Elementwise maximum with broadcasting."""
@_builtin
def minimum(a, b): """Elementwise minimum with broadcasting."""
@_builtin
def where(cond, a, b): """a where cond else b, elementwise with broadcasting."""
@_builtin
def fma(a, b, c):
    """a * b + c rounded once (fused multiply-add), elementwise with broadcasting; floats."""


@_builtin
def zeros(shape, dtype=f32): """A tile of zeros."""
@_builtin
def full(shape, value, dtype=None): """A tile filled with value (a constant or a runtime scalar)."""
@_builtin
def arange(start, end=None): """The i32 tile [start, ..., end - 1] (constant bounds; arange(n) is 0..n-1)."""
@_builtin
def broadcast_to(x, shape): """NumPy broadcasting of x to shape."""
@_builtin
def reshape(x, shape): """Same elements in row-major order, new shape (one dim may be -1)."""
@_builtin
def trans(x): """Reverse the dims (the transpose of a 2-D tile)."""
@_builtin
def permute(x, perm): """Permute the dims."""
@_builtin
def concat(xs, axis=0): """Concatenate tiles along axis."""


@_builtin
def range(lo, hi=None, step=1, stages=None, warp_specialize=False, schedule=None, pingpong=False):
    """A runtime loop `for i in tile.range(lo, hi, step, stages=n)`; stages asks for software pipelining;
    `warp_specialize=True` (Hopper) for a producer warpgroup issuing the pipelined TMA copies.
    `pingpong=True` (with warp_specialize=True; Hopper, num_warps = 8): the two consumer warpgroups take
    turns issuing their wgmmas, so one's softmax runs under the other's GEMMs (FlashAttention-3;
    passes/pingpong.py; same values, only the order of issue changes). Where it cannot apply (no
    wgmma, one consumer warpgroup, no wgmma dot in the loop) a tile.PerformanceWarning says why.
    schedule (AMD CDNA; other targets ignore it): "pingpong" (8 waves: two groups of 4 take turns at the
    MFMAs, the other group reading LDS meanwhile) or "interleave" (4 waves: each k step's MFMAs
    interleaved with the LDS reads of the next); None: the compiler's order."""


@_builtin
def static_range(lo, hi=None, step=1): """A loop unrolled at compile time (constant bounds)."""
@_builtin
def static_assert(cond, msg=""): """A compile-time check."""
@_builtin
def static_print(*args): """Print at compile time."""
@_builtin
def device_print(fmt, *values): """Debug print at run time, once per block: `{}` fields in fmt (docs/language.md)."""


@_builtin
def alloc_shared(shape, dtype, layout=None): """A shared-memory tile."""
@_builtin
def copy_async(dst, T, offsets): """Start a global -> shared copy of the tile of T at offsets (zero fill outside T)."""
@_builtin
def commit(): """Close the current group of async copies."""
@_builtin
def wait(pending=0): """Wait until at most `pending` committed groups of async copies are in flight."""
@_builtin
def barrier(): """Block-wide barrier."""
@_builtin
def annotate(x, layout): """Give a tile an explicit layout."""


BUILTIN_NAMES = tuple(n for n, v in list(globals().items()) if is_builtin(v))
