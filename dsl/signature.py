"""A kernel's parameters, read from its Python signature and annotations.

Each parameter is one of
* ``tensor``    — `tile.Tensor[dtype, rank]` (dtype and/or rank may come from the launch argument);
* ``scalar``    — `int` (i32), `float` (f32), `bool` (i1) or a dtype such as `tile.i64`: a runtime scalar;
* ``constexpr`` — `tile.constexpr`: a compile-time constant the kernel is specialized on;
* ``infer``     — no annotation: a tensor or a scalar, as the launch argument says.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

from ..ir.dtypes import DType, bool_, f32, i32
from .language import TensorSpec, Tensor, constexpr

_EMPTY = inspect.Parameter.empty


class _NoDefault:
    """A parameter without a default. (Not inspect.Parameter.empty as a dataclass field default:
    Python 3.10's dataclass reads the class signature, where that value means "no default", and
    rejects the field order.)"""
    def __repr__(self):
        return "<no default>"


NO_DEFAULT = _NoDefault()


@dataclass(frozen=True)
class Param:
    name: str
    kind: str                       # 'tensor' | 'scalar' | 'constexpr' | 'infer'
    dtype: DType | None = None      # tensors and scalars (None: from the argument)
    rank: int | None = None         # tensors (None: from the argument)
    default: object = NO_DEFAULT

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT

    def describe(self) -> str:
        if self.kind == "tensor":
            what = f"a tensor of {self.dtype}" if self.dtype else "a tensor"
            return what + (f" of rank {self.rank}" if self.rank is not None else "")
        if self.kind == "scalar":
            return {"i32": "an int", "f32": "a float", "i1": "a bool"}.get(self.dtype.name, f"a {self.dtype} scalar")
        if self.kind == "constexpr":
            return "a compile-time constant"
        return "a tensor or a scalar"


def _closure_names(fn) -> dict:
    """The names of fn's closure and their values: string annotations (`from __future__ import
    annotations`) of a kernel defined inside a function may use the enclosing function's names (those
    the kernel's body uses, which are all a closure holds)."""
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None) or ()
    out = {}
    for name, cell in zip(code.co_freevars if code is not None else (), cells):
        try:
            out[name] = cell.cell_contents
        except ValueError:                        # a cell not yet assigned
            pass
    return out


def parse_params(fn) -> list[Param]:
    """The parameters of a kernel function; raises TypeError for a parameter the language cannot take."""
    try:
        sig = inspect.signature(fn, eval_str=True, locals=_closure_names(fn))
    except NameError as e:
        raise TypeError(f"{fn.__name__}(): cannot evaluate a parameter annotation: {e}") from None
    out = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{fn.__name__}(): *args / **kwargs parameters are not supported in kernels ('{p.name}')")
        out.append(classify(fn.__name__, p.name, p.annotation, NO_DEFAULT if p.default is _EMPTY else p.default))
    return out


def classify(fname: str, name: str, ann, default=NO_DEFAULT) -> Param:
    if ann is _EMPTY:
        return Param(name, "infer", default=default)
    if ann is constexpr or (isinstance(ann, str) and ann in ("constexpr", "tile.constexpr")):
        return Param(name, "constexpr", default=default)
    if isinstance(ann, TensorSpec):
        return Param(name, "tensor", ann.dtype, ann.rank, default)
    if ann is Tensor:
        return Param(name, "tensor", default=default)
    if ann is bool:
        return Param(name, "scalar", bool_, default=default)
    if ann is int:
        return Param(name, "scalar", i32, default=default)
    if ann is float:
        return Param(name, "scalar", f32, default=default)
    if isinstance(ann, DType):
        return Param(name, "scalar", ann, default=default)
    raise TypeError(f"{fname}(): parameter '{name}' has annotation {ann!r}; a kernel parameter is "
                    f"tile.Tensor[dtype], int, float, bool, a dtype (a runtime scalar) or tile.constexpr")
