"""What an expression evaluates to while a kernel is compiled.

* a runtime value: an IR `Value` (scalar, register tile, shared tile, or a global tensor parameter);
* a compile-time constant: a Python `bool`, `int`, `float`, `str`, `None`, a `DType`, a tuple of any of
  these (tuples may hold runtime values too), a module, a builtin stub, an `InlineFunction`;
* a few front-end objects defined here: a tensor's lazy `.shape`, a bound method, and the marker of a
  variable that is not available at this point of the program.
"""
from __future__ import annotations

from ..ir.core import Value
from ..ir.dtypes import DType
from ..ir.types import ScalarType, TensorType, TileType
from .errors import SemanticError


def is_value(x) -> bool:
    return isinstance(x, Value)


def is_number(x) -> bool:
    """A Python compile-time number (bool, int or float)."""
    return isinstance(x, (bool, int, float))


def is_tile(x) -> bool:
    return isinstance(x, Value) and isinstance(x.type, TileType) and x.type.space == "reg"


def is_shared(x) -> bool:
    return isinstance(x, Value) and isinstance(x.type, TileType) and x.type.space == "shared"


def is_scalar(x) -> bool:
    return isinstance(x, Value) and isinstance(x.type, ScalarType)


def is_tensor(x) -> bool:
    return isinstance(x, Value) and isinstance(x.type, TensorType)


def normalize_const(x):
    """NumPy scalars become the Python numbers they hold; other objects are returned as they are."""
    if type(x).__module__ == "numpy" and hasattr(x, "item") and getattr(x, "shape", None) == ():
        v = x.item()
        if isinstance(v, (bool, int, float)):
            return v
    return x


def describe(x) -> str:
    """A short phrase for messages: 'tile<64x32xbf16>', 'the constant 3', ..."""
    if isinstance(x, Value):
        t = x.type
        if isinstance(t, TensorType):
            return f"the tensor {x.name or ''} {t}".replace("  ", " ")
        if isinstance(t, TileType) and t.space == "shared":
            return f"the shared tile {t}"
        return str(t)
    if isinstance(x, bool):
        return f"the constant {x}"
    if isinstance(x, (int, float)):
        return f"the constant {x!r}"
    if isinstance(x, DType):
        return f"the dtype {x.name}"
    if isinstance(x, tuple):
        return f"a tuple of {len(x)}"
    if isinstance(x, str):
        return f"the string {x!r}"
    if x is None:
        return "None"
    if isinstance(x, TensorShape):
        return f"the shape of the tensor {x.tensor.name or ''}".rstrip()
    if isinstance(x, Method):
        return f"the method .{x.name}"
    return f"a {type(x).__name__}"


class TensorShape:
    """`T.shape` of a global tensor: each element is a runtime i32, emitted (a `dim` op) where it is used."""

    def __init__(self, tensor: Value, emit):
        self.tensor = tensor
        self._emit = emit           # emit(axis) -> Value

    def __len__(self) -> int:
        return self.tensor.type.rank

    def __getitem__(self, i):
        n = len(self)
        if isinstance(i, slice):
            return tuple(self._emit(a) for a in builtins_range(n)[i])
        if isinstance(i, bool) or not isinstance(i, int):
            raise SemanticError(f"a tensor's shape is indexed by a compile-time int, got {describe(i)}")
        if not -n <= i < n:
            raise SemanticError(f"axis {i} is out of range for a rank-{n} tensor")
        return self._emit(i % n)

    def items(self) -> tuple:
        return tuple(self._emit(a) for a in builtins_range(len(self)))


builtins_range = range


class Method:
    """`x.name` of a value, waiting to be called: `x.astype`, `s.load`, `A.stride` ..."""

    def __init__(self, recv, name: str):
        self.recv = recv
        self.name = name


class Undefined:
    """A variable that exists in the source but not here (assigned in only one branch of an `if`, or
    only inside a loop); using it raises `msg`."""

    def __init__(self, msg: str):
        self.msg = msg
