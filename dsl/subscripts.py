"""Subscripts: `T[i, j]` (one element of a global tensor), `s[i]` (a stage of a shared tile), and
`x[:, None]`, `x[a:b]`, `x[i]`, `x[...]` on register tiles (constant indices only)."""
from __future__ import annotations

import ast

from ..ir.core import Value
from ..ir.types import ScalarType
from . import builtins as B
from .errors import SemanticError
from .values import TensorShape, describe, is_number, is_scalar, is_shared, is_tensor, is_tile, normalize_const


class Subscripts:
    """Mixed into the FrontEnd: subscript expressions and element access."""

    def expr_Subscript(self, node):
        obj = normalize_const(self.expr(node.value))
        if is_tensor(obj):
            idx = self.index_tuple(node.slice)
            return self.load_element(obj, idx, node)
        if is_shared(obj):
            return self.subview(obj, self.expr(node.slice))
        if is_tile(obj):
            return self.index_tile(obj, node.slice, node)
        if isinstance(obj, Value):
            raise SemanticError(f"cannot index {describe(obj)}", node)
        idx = normalize_const(self.expr(node.slice))
        if isinstance(idx, Value):
            raise SemanticError(f"an index into {describe(obj)} must be a compile-time constant", node.slice)
        try:
            return obj[idx]
        except (IndexError, KeyError, TypeError) as e:
            raise SemanticError(f"cannot index {describe(obj)} with {idx!r}: {e}", node) from None

    def index_tuple(self, sl) -> tuple:
        v = self.expr(sl)
        if not isinstance(v, tuple):
            v = (v,)
        if any(isinstance(x, slice) or x is None or x is Ellipsis for x in v):
            raise SemanticError("T[...] on a tensor reads one element (integer indices); load tiles with tile.load", sl)
        return v

    def expr_Slice(self, node):
        parts = []
        for p in (node.lower, node.upper, node.step):
            v = normalize_const(self.expr(p)) if p is not None else None
            parts.append(v)
        return slice(*parts)

    def load_element(self, t: Value, idx, node):
        if isinstance(idx, TensorShape):
            idx = idx.items()
        if len(idx) != t.type.rank:
            raise SemanticError(f"a rank-{t.type.rank} tensor needs {t.type.rank} indices, got {len(idx)}", node)
        ix = [self.arith.index(i) for i in idx]
        return self.b.value("load_scalar", [t, *ix], ScalarType(t.type.dtype))

    def store_element(self, t: Value, idx, v, node):
        if len(idx) != t.type.rank:
            raise SemanticError(f"a rank-{t.type.rank} tensor needs {t.type.rank} indices, got {len(idx)}", node)
        ix = [self.arith.index(i) for i in idx]
        v = normalize_const(v)
        if is_number(v):
            v = self.arith.const(v, t.type.dtype)
        if not is_scalar(v):
            raise SemanticError(f"one element of a tensor takes a scalar, got {describe(v)}"
                                + (" (store tiles with tile.store)" if is_tile(v) else ""), node)
        if v.type.dtype != t.type.dtype:
            raise SemanticError(f"the value is {v.type.dtype} but the tensor holds {t.type.dtype}: convert it first "
                                f"(.astype(tile.{t.type.dtype.name}))", node)
        self.b.create("store_scalar", [t, *ix, v])

    def subview(self, s: Value, i):
        i = normalize_const(i)
        if isinstance(i, tuple):
            if len(i) != 1:
                raise SemanticError("a shared tile takes one index (the stage)")
            i = i[0]
        if s.type.rank < 2:
            raise SemanticError(f"indexing a shared tile picks a stage of its leading dim; {s.type} has only one dim")
        iv = self.arith.index(i, "a stage index")
        if isinstance(i, int) and not 0 <= i < s.type.shape[0]:
            raise SemanticError(f"stage {i} is out of range for {s.type}")
        return self.b.value("subview", [s, iv])      # the stage's layout: layout inference derives it

    def index_tile(self, x: Value, sl, node):
        """x[...] on a register tile: constant ints, constant slices (step 1), None (new axis) and `...`."""
        if isinstance(sl, ast.Tuple):
            items = [self._index_item(e) for e in sl.elts]
        else:
            items = [self._index_item(sl)]
        if items.count(Ellipsis) > 1:
            raise SemanticError("an index can have only one `...`", node)
        n_real = sum(1 for i in items if i is not None and i is not Ellipsis)
        if n_real > x.type.rank:
            raise SemanticError(f"too many indices for {x.type}", node)
        if Ellipsis in items:
            k = items.index(Ellipsis)
            items = items[:k] + [slice(None)] * (x.type.rank - n_real) + items[k + 1:]
        else:
            items = items + [slice(None)] * (x.type.rank - n_real)
        start, size, out_shape = [], [], []
        d = 0
        for it in items:
            if it is None:
                out_shape.append(1)
                continue
            n = x.type.shape[d]
            if isinstance(it, slice):
                lo, hi, step = it.indices(n)
                if step != 1:
                    raise SemanticError("tile slices must have step 1", node)
                if hi <= lo:
                    raise SemanticError(f"the slice {lo}:{hi} of a dim of size {n} is empty", node)
                start.append(lo)
                size.append(hi - lo)
                out_shape.append(hi - lo)
            else:
                i = it + n if it < 0 else it
                if not 0 <= i < n:
                    raise SemanticError(f"index {it} is out of range for a dim of size {n}", node)
                start.append(i)
                size.append(1)
            d += 1
        v = x
        if tuple(size) != x.type.shape:
            v = self.b.value("slice", [x], x.type.with_(shape=tuple(size)), {"start": start, "size": size})
        if not out_shape:
            # every dim indexed by an int: a single element
            v = self.b.value("reshape", [v], v.type.with_(shape=(1,)))
            return B.reduce(self, "sum", v, 0)
        if tuple(out_shape) != v.type.shape:
            v = self.b.value("reshape", [v], v.type.with_(shape=tuple(out_shape)))
        return v

    def _index_item(self, e):
        if isinstance(e, ast.Constant) and e.value is None:
            return None
        if isinstance(e, ast.Constant) and e.value is Ellipsis:
            return Ellipsis
        v = normalize_const(self.expr(e))
        if v is None or v is Ellipsis:
            return v
        if isinstance(v, slice):
            for p in (v.start, v.stop, v.step):
                if p is not None and (isinstance(p, bool) or not isinstance(p, int)):
                    raise SemanticError(f"tile slices need compile-time integer bounds, got {describe(p)}", e)
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        raise SemanticError(f"a tile index must be a compile-time int, slice, None or `...`, got {describe(v)}"
                            + ("; to pick elements at runtime use tile.where or tile.gather" if isinstance(v, Value)
                               else ""), e)
