"""IR types: scalars, global tensors, and tiles (dtype, shape, memory space, layout)."""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from .dtypes import DType, dtype as _dtype

SPACES = ("reg", "shared", "global")


class Type:
    """Base of all IR types. Types are immutable and compare by value."""


@dataclass(frozen=True)
class ScalarType(Type):
    """One value held uniformly by the whole block (an int32 index, an f32 scale, a bool)."""
    dtype: DType

    def __str__(self) -> str:
        return self.dtype.name


@dataclass(frozen=True)
class TensorType(Type):
    """A tensor in global memory, passed to a kernel: base address plus runtime shape and strides.

    `shape` holds ints for sizes known at compile time and None for sizes known only at launch.
    Strides are always runtime values (counted in elements; sub-byte tensors are packed densely).
    """
    dtype: DType
    shape: tuple

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"tensor<{dims}x{self.dtype.name}>"


@dataclass(frozen=True)
class TileType(Type):
    """A tile: a dense block of elements with a static shape, living in registers or shared memory.

    `layout` is None until layout inference assigns one (or the user annotates it); it is a layout
    object of `ir.layout` / `ir.register_layout`, printed by its own `str()`.
    """
    dtype: DType
    shape: tuple
    space: str = "reg"
    layout: object = None

    def __post_init__(self):
        if self.space not in SPACES:
            raise ValueError(f"unknown memory space {self.space!r}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbits(self) -> int:
        return self.numel * self.dtype.bits

    def with_(self, **kw) -> "TileType":
        d = dict(dtype=self.dtype, shape=self.shape, space=self.space, layout=self.layout)
        d.update(kw)
        return TileType(**d)

    def __str__(self) -> str:
        s = "x".join(str(d) for d in self.shape) + "x" + self.dtype.name
        if self.space != "reg" or self.layout is not None:
            s += f", {self.space}"
        if self.layout is not None:
            s += ", layout=" + quote(str(self.layout))
        return f"tile<{s}>"


def quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def scalar(dt) -> ScalarType:
    return ScalarType(_dtype(dt))


def tile_type(shape, dt, space: str = "reg", layout=None) -> TileType:
    return TileType(_dtype(dt), tuple(int(s) for s in shape), space, layout)


def elem_dtype(t: Type) -> DType:
    """The element dtype of a scalar, tile or tensor type."""
    return t.dtype


def shape_of(t: Type) -> tuple:
    """() for scalars, the static shape for tiles."""
    return t.shape if isinstance(t, TileType) else ()


def with_dtype(t: Type, dt: DType) -> Type:
    """The same kind and shape as t with element type dt."""
    if isinstance(t, TileType):
        return t.with_(dtype=dt)
    return ScalarType(dt)
