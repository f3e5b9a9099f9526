"""The Python builtins a kernel may call: min/max/abs on scalars (and tiles), int (truncating)/float/
bool conversions of scalars, len, and range/enumerate/zip/tuple on tuples; a few more (sum, round, ...)
on compile-time values only. Everything else is refused with a message saying what to use."""
from __future__ import annotations

import builtins as _py

from ..ir.core import Value
from ..ir.dtypes import f32, i32
from ..ir.types import ScalarType
from .errors import SemanticError
from .values import TensorShape, describe, is_number, is_scalar, is_tensor, is_tile, normalize_const

_PY_ALLOWED = {"range", "min", "max", "abs", "int", "float", "bool", "len", "enumerate", "zip", "tuple", "list",
               "reversed", "print", "isinstance", "sum", "round", "pow", "divmod", "any", "all", "str"}

_PY_FUNCS = {id(getattr(_py, n)): n for n in _PY_ALLOWED}


def _is_py_builtin(f) -> bool:
    return _PY_FUNCS.get(id(f)) is not None and getattr(_py, _PY_FUNCS[id(f)]) is f


class PyBuiltins:
    """Mixed into the FrontEnd: calls of Python builtins."""

    def py_builtin(self, f, node, args, kwargs):
        name = f.__name__
        args = [normalize_const(a) for a in args]
        if name not in ("min", "max") and kwargs:
            raise SemanticError(f"{name}() takes no keyword arguments in kernels", node)
        if name == "print":
            raise SemanticError("print() is not supported in kernels: use tile.static_print (compile time) or "
                                "tile.device_print (run time)", node)
        if name in ("sum", "round", "pow", "divmod", "any", "all", "isinstance", "str"):
            if all(not isinstance(a, Value) for a in args):
                try:
                    return f(*args)
                except Exception as e:
                    raise SemanticError(f"{name}(): {e}", node) from None
            raise SemanticError(f"{name}() on runtime values is not supported"
                                + (": use tile.sum" if name == "sum" else ""), node)
        if name in ("min", "max"):
            if kwargs:
                raise SemanticError(f"{name}() takes no keyword arguments in kernels", node)
            if len(args) == 1:
                if isinstance(args[0], tuple):
                    args = list(args[0])
                elif isinstance(args[0], Value):
                    raise SemanticError(f"{name}() of one value: use tile.{name}(x, axis) to reduce a tile", node)
            if not args:
                raise SemanticError(f"{name}() needs at least one argument", node)
            r = args[0]
            for x in args[1:]:
                if is_number(r) and is_number(x):
                    r = (_py.min if name == "min" else _py.max)(r, x)
                else:
                    for y in (r, x):
                        if not (is_number(y) or is_scalar(y) or is_tile(y)):
                            raise SemanticError(f"{name}() of {describe(y)} is not supported", node)
                    r = self.arith.binary(name, r, x)
            return r
        if name in ("abs",):
            (x,) = self._n_args(name, args, 1, node)
            if is_number(x):
                return abs(x)
            return self.arith.unary("abs", x)
        if name in ("int", "float", "bool"):
            if not args:
                return f()
            (x,) = self._n_args(name, args, 1, node)
            if not isinstance(x, Value):
                try:
                    return f(x)
                except (TypeError, ValueError) as e:
                    raise SemanticError(f"{name}(): {e}", node) from None
            if not is_scalar(x):
                raise SemanticError(f"{name}() converts scalars; for tiles use .astype(...)", node)
            if name == "bool":
                return self.arith.truth(x)
            if name == "float":
                return self.arith.cast(x, f32)
            if x.type.dtype.is_float:       # int() truncates toward zero, as in Python
                neg = self.arith.compare("lt", x, 0.0)
                x = self.arith.select(neg, self.arith.unary("ceil", x), self.arith.unary("floor", x))
            return self.arith.cast(x, i32)
        if name == "len":
            (x,) = self._n_args(name, args, 1, node)
            if isinstance(x, (tuple, list, str, TensorShape)):
                return len(x)
            if is_tile(x) and x.type.rank:
                return x.type.shape[0]
            if is_tensor(x):
                return self.b.value("dim", [x], ScalarType(i32), {"axis": 0})
            raise SemanticError(f"len() of {describe(x)}", node)
        if name in ("tuple", "list", "reversed", "enumerate", "zip"):
            seqs = []
            for x in args:
                if isinstance(x, TensorShape):
                    x = x.items()
                if not isinstance(x, (tuple, list)):
                    raise SemanticError(f"{name}() works on tuples in kernels, got {describe(x)}", node)
                seqs.append(x)
            if name in ("tuple", "list"):
                return tuple(seqs[0]) if seqs else ()
            if name == "reversed":
                return tuple(reversed(self._n_args(name, seqs, 1, node)[0]))
            if name == "enumerate":
                return tuple(enumerate(self._n_args(name, seqs, 1, node)[0]))
            return tuple(zip(*seqs))
        raise SemanticError(f"the Python builtin {name}() is not supported in kernels", node)

    def _n_args(self, name, args, n, node):
        if len(args) != n:
            raise SemanticError(f"{name}() takes {n} argument{'s' if n != 1 else ''}, got {len(args)}", node)
        return args
