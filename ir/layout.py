"""The layout algebra of tilec: CuTe-style ``(shape):(stride)`` layouts, pure Python, ints only.

A :class:`Layout` is a function from coordinates to integer offsets. ``shape`` and ``stride`` are
congruent *int tuples*: an ``int`` or a (possibly nested, possibly empty) tuple of int tuples. An int
shape is a 1-mode layout, so ``Layout(8, 1)`` prints ``8:1`` and ``Layout((8,), (1,))`` prints
``(8):(1)``; the two are different objects (parentheses always mean a tuple) with the same function.

Coordinates.  A coordinate is either a flat index ``i`` (decomposed colexicographically: the first
mode varies fastest, as in CuTe) or a tuple with one entry per mode, where each entry is again an
int (an index *within* that mode, decomposed colexicographically) or a tuple matching the mode.
``offset = sum(coordinate_leaf * stride_leaf)``.  A flat index ``i >= size`` keeps counting in the
last mode (CuTe's natural extension); composition relies on this.

Operations (all raise :class:`LayoutError` rather than return a layout that is not the stated
function): :func:`make_layout`, :func:`coalesce`, :func:`composition`, :func:`complement`,
:func:`right_inverse`, :func:`left_inverse`, :func:`logical_divide`, :func:`zipped_divide`,
:func:`tiled_divide`, :func:`logical_product`, :func:`blocked_product`, :func:`raked_product`,
:func:`slice_` (also ``L[(None, 3)]``), :func:`flatten`, :func:`make_ordered_layout`,
:func:`row_major`, :func:`col_major`.

Swizzles stay outside the affine algebra: :class:`Swizzle` is CuTe's ``Swizzle<B, M, S>`` and
:class:`ComposedLayout` is ``c -> swizzle(offset + layout(c))``.

Text form (what the IR printer writes and :func:`parse_layout` reads back exactly)::

    8:1                           a 1-mode layout with an int shape
    (4,(2,3)):(2,(1,8))           nested modes
    ():()                         the empty (rank-0) layout, size 1
    sw<3,4,3> o (8,64):(64,1)     a ComposedLayout with offset 0
    sw<3,4,3> o 16 + (8,64):(64,1)  ... with offset 16 (the offset is added before the swizzle)
    tv<(16,8) | ((4,8),(2,2)):((32,1),(16,8))>   a TVLayout (see tile.ir.register_layout)

Integers may be negative (``-1``); whitespace between tokens is ignored by the parser.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union

from .errors import TileError

if TYPE_CHECKING:  # pragma: no cover
    from .register_layout import TVLayout

__all__ = [
    "IntTuple", "LayoutError", "Layout", "Swizzle", "ComposedLayout",
    "size", "make_layout", "flatten", "coalesce", "composition", "complement",
    "right_inverse", "left_inverse", "logical_divide", "zipped_divide", "tiled_divide",
    "logical_product", "blocked_product", "raked_product", "slice_",
    "make_ordered_layout", "row_major", "col_major", "swizzled", "parse_layout",
    "idx2crd", "crd2idx",
]

IntTuple = Union[int, tuple]
"""An int or a (nested) tuple of int tuples."""


class LayoutError(TileError, ValueError):
    """An ill-formed layout or an algebra operation that is not defined for its operands.

    A ValueError and, like every deliberate tilec error, a ``tile.ir.errors.TileError``.

    ``pos`` is the character position for errors raised by :func:`parse_layout`, else ``None``.
    """

    def __init__(self, message: str, pos: Optional[int] = None) -> None:
        super().__init__(message)
        self.pos = pos


# ----------------------------------------------------------------------------------------------
# int tuples
# ----------------------------------------------------------------------------------------------

def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _normalize(t: object, what: str) -> IntTuple:
    """Return `t` as an int tuple (lists become tuples); raise LayoutError on anything else."""
    if _is_int(t):
        return t  # type: ignore[return-value]
    if isinstance(t, (tuple, list)):
        return tuple(_normalize(x, what) for x in t)
    raise LayoutError(f"{what} must be an int or a nested tuple of ints, got {t!r}")


def _leaves(t: IntTuple) -> list[int]:
    """The ints of `t` in order (depth-first, left to right)."""
    if _is_int(t):
        return [t]  # type: ignore[list-item]
    out: list[int] = []
    for x in t:  # type: ignore[union-attr]
        out.extend(_leaves(x))
    return out


def _unflatten(leaves: Iterator, profile: IntTuple) -> IntTuple:
    """Rebuild the nesting of `profile` from an iterator of leaves (any objects)."""
    if _is_int(profile):
        return next(leaves)
    return tuple(_unflatten(leaves, p) for p in profile)  # type: ignore[union-attr]


def _congruent(a: IntTuple, b: IntTuple) -> bool:
    if _is_int(a) or _is_int(b):
        return _is_int(a) and _is_int(b)
    return len(a) == len(b) and all(_congruent(x, y) for x, y in zip(a, b))  # type: ignore[arg-type]


def _product(t: IntTuple) -> int:
    p = 1
    for x in _leaves(t):
        p *= x
    return p


def _fmt(t: IntTuple) -> str:
    """CuTe notation for an int tuple: ``(4,(2,3))``; an int prints bare."""
    if _is_int(t):
        return str(t)
    return "(" + ",".join(_fmt(x) for x in t) + ")"  # type: ignore[union-attr]


def _col_major_strides(shape: IntTuple, start: int = 1) -> IntTuple:
    """Compact column-major (colexicographic) strides for `shape`."""
    leaves = _leaves(shape)
    strides, cur = [], start
    for s in leaves:
        strides.append(cur)
        cur *= s
    return _unflatten(iter(strides), shape)


def idx2crd(idx: int, shape: IntTuple) -> IntTuple:
    """The coordinate (congruent to `shape`) of flat index `idx`, colexicographic.

    Indices past the end continue in the last leaf, as in CuTe.
    """
    if _is_int(shape):
        return idx
    if len(shape) == 0:  # type: ignore[arg-type]
        if idx != 0:
            raise LayoutError(f"index {idx} out of range for the empty shape ()")
        return ()
    out = []
    for k, s in enumerate(shape):  # type: ignore[arg-type]
        if k == len(shape) - 1:  # type: ignore[arg-type]
            out.append(idx2crd(idx, s))
        else:
            n = _product(s)
            out.append(idx2crd(idx % n, s))
            idx //= n
    return tuple(out)


def crd2idx(crd: IntTuple, shape: IntTuple) -> int:
    """The colexicographic flat index of coordinate `crd` in `shape` (inverse of idx2crd)."""
    if _is_int(crd):
        return crd  # type: ignore[return-value]
    if _is_int(shape) or len(crd) != len(shape):  # type: ignore[arg-type]
        raise LayoutError(f"coordinate {crd!r} does not match shape {_fmt(shape)}")
    idx, mul = 0, 1
    for c, s in zip(crd, shape):  # type: ignore[arg-type]
        idx += crd2idx(c, s) * mul
        mul *= _product(s)
    return idx


def _idx_offset(idx: int, shape: IntTuple, stride: IntTuple) -> int:
    """Offset of flat index `idx` (the last leaf absorbs any overflow)."""
    if _is_int(shape):
        return idx * stride  # type: ignore[operator]
    if len(shape) == 0:  # type: ignore[arg-type]
        if idx != 0:
            raise LayoutError(f"index {idx} out of range for the empty layout ():()")
        return 0
    off, last = 0, len(shape) - 1  # type: ignore[arg-type]
    for k, (s, d) in enumerate(zip(shape, stride)):  # type: ignore[arg-type]
        if k == last:
            off += _idx_offset(idx, s, d)
        else:
            n = _product(s)
            off += _idx_offset(idx % n, s, d)
            idx //= n
    return off


def _crd_offset(crd: object, shape: IntTuple, stride: IntTuple) -> int:
    """Offset of a (hierarchical, bounds-checked) coordinate."""
    if _is_int(crd):
        n = _product(shape)
        if not 0 <= crd < n:  # type: ignore[operator]
            raise LayoutError(f"coordinate {crd} out of range for mode of shape {_fmt(shape)}")
        return _idx_offset(crd, shape, stride)  # type: ignore[arg-type]
    if isinstance(crd, (tuple, list)):
        if _is_int(shape) or len(crd) != len(shape):  # type: ignore[arg-type]
            raise LayoutError(f"coordinate {crd!r} does not match shape {_fmt(shape)}")
        return sum(_crd_offset(c, s, d) for c, s, d in zip(crd, shape, stride))  # type: ignore[arg-type]
    if crd is None:
        raise LayoutError("a coordinate containing None is a slice: use slice_(layout, coord)")
    raise LayoutError(f"bad coordinate {crd!r}")


def size(x: Union["Layout", "ComposedLayout", IntTuple]) -> int:
    """Number of coordinates of a layout, or the product of an int tuple."""
    if isinstance(x, (Layout, ComposedLayout)):
        return x.size
    return _product(_normalize(x, "shape"))


# ----------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------

class Layout:
    """A CuTe layout ``shape:stride`` (nested int tuples), a function coordinate -> offset.

    ``Layout(shape)`` uses compact column-major strides.  Shapes are >= 1; strides are any ints.
    Immutable and hashable; ``==`` compares shape and stride structurally (use
    :func:`coalesce` to compare functions).
    """

    __slots__ = ("shape", "stride")
    shape: IntTuple
    stride: IntTuple

    def __init__(self, shape: IntTuple, stride: Optional[IntTuple] = None) -> None:
        shape = _normalize(shape, "shape")
        if any(s < 1 for s in _leaves(shape)):
            raise LayoutError(f"shape entries must be >= 1, got {_fmt(shape)}")
        if stride is None:
            stride = _col_major_strides(shape)
        else:
            stride = _normalize(stride, "stride")
            if not _congruent(shape, stride):
                raise LayoutError(f"shape {_fmt(shape)} and stride {_fmt(stride)} are not congruent")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "stride", stride)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Layout is immutable")

    # --- sizes -------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of coordinates: the product of the shape."""
        return _product(self.shape)

    @property
    def cosize(self) -> int:
        """One past the largest offset (for non-negative strides: ``L(size-1) + 1``)."""
        return 1 + sum(max(0, (s - 1) * d) for s, d in zip(_leaves(self.shape), _leaves(self.stride)))

    @property
    def rank(self) -> int:
        """Number of top-level modes (1 for an int shape)."""
        return 1 if _is_int(self.shape) else len(self.shape)  # type: ignore[arg-type]

    @property
    def depth(self) -> int:
        """Nesting depth: 0 for an int shape, 1 for a flat tuple, ..."""
        def d(t: IntTuple) -> int:
            return 0 if _is_int(t) else 1 + max((d(x) for x in t), default=0)  # type: ignore[union-attr]
        return d(self.shape)

    # --- modes -------------------------------------------------------------------------------
    def mode(self, i: int) -> "Layout":
        """Top-level mode `i` as a Layout (mode 0 of an int-shaped layout is itself)."""
        if _is_int(self.shape):
            if i not in (0, -1):
                raise LayoutError(f"mode {i} out of range for rank-1 layout {self}")
            return self
        try:
            return Layout(self.shape[i], self.stride[i])  # type: ignore[index]
        except IndexError:
            raise LayoutError(f"mode {i} out of range for rank-{self.rank} layout {self}") from None

    def __getitem__(self, key: Union[int, tuple]) -> Union["Layout", tuple]:
        """``L[i]`` is mode i; ``L[(None, 3)]`` is ``slice_(L, (None, 3))`` -> (sub-layout, offset)."""
        if _is_int(key):
            return self.mode(key)  # type: ignore[arg-type]
        if isinstance(key, tuple):
            return slice_(self, key)
        raise LayoutError(f"bad layout index {key!r}")

    def __iter__(self) -> Iterator["Layout"]:
        for i in range(self.rank):
            yield self.mode(i)

    def __len__(self) -> int:
        return self.rank

    def __bool__(self) -> bool:
        return True

    # --- the function -------------------------------------------------------------------------
    def __call__(self, *coord: object) -> int:
        """Offset of a flat index ``L(i)`` or a coordinate ``L((m, n))`` / ``L(m, n)``."""
        if len(coord) == 1:
            c = coord[0]
            if _is_int(c):
                if c < 0:  # type: ignore[operator]
                    raise LayoutError(f"negative index {c} for layout {self}")
                return _idx_offset(c, self.shape, self.stride)  # type: ignore[arg-type]
            if _is_int(self.shape) and isinstance(c, (tuple, list)):
                raise LayoutError(f"coordinate {c!r} does not match shape {_fmt(self.shape)}")
            return _crd_offset(c, self.shape, self.stride)
        if _is_int(self.shape) or len(coord) != self.rank:
            raise LayoutError(f"{len(coord)} coordinates for a rank-{self.rank} layout {self}")
        return _crd_offset(coord, self.shape, self.stride)

    def offsets(self) -> list[int]:
        """``[L(i) for i in range(size)]``, built leaf by leaf (the first leaf varies fastest, as in
        the colexicographic flat index): one list comprehension per leaf instead of a coordinate
        decomposition per element (a 128x64 shared tile: ~1 ms instead of ~100 ms)."""
        offs = [0]
        for s, d in zip(_leaves(self.shape), _leaves(self.stride)):
            offs = [o + j * d for j in range(s) for o in offs]
        return offs

    # --- identity and text ---------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and self.shape == other.shape and self.stride == other.stride

    def __hash__(self) -> int:
        return hash(("Layout", self.shape, self.stride))

    def __str__(self) -> str:
        return f"{_fmt(self.shape)}:{_fmt(self.stride)}"

    def __repr__(self) -> str:
        return f"Layout({self.shape!r}, {self.stride!r})"


def _as_layout(x: Union[Layout, int], what: str) -> Layout:
    if isinstance(x, Layout):
        return x
    if _is_int(x):
        return Layout(x)  # type: ignore[arg-type]
    raise LayoutError(f"{what} must be a Layout or an int, got {x!r}")


def make_layout(*modes: Union[Layout, int]) -> Layout:
    """Concatenate modes into one layout: ``make_layout(A, B) = (A, B)``; ints are ``n:1``."""
    ls = [_as_layout(m, "make_layout mode") for m in modes]
    return Layout(tuple(m.shape for m in ls), tuple(m.stride for m in ls))


def flatten(layout: Layout) -> Layout:
    """Remove all nesting: ``((2,3),4):((1,2),6) -> (2,3,4):(1,2,6)``; an int-shaped layout is kept."""
    if _is_int(layout.shape):
        return layout
    return Layout(tuple(_leaves(layout.shape)), tuple(_leaves(layout.stride)))


def _modes_to_layout(modes: Sequence[tuple[int, int]]) -> Layout:
    """(shape, stride) pairs -> a layout: none -> 1:0, one -> int shape, else a flat tuple."""
    if not modes:
        return Layout(1, 0)
    if len(modes) == 1:
        return Layout(modes[0][0], modes[0][1])
    return Layout(tuple(s for s, _ in modes), tuple(d for _, d in modes))


def _coalesced_modes(layout: Layout) -> list[tuple[int, int]]:
    modes: list[tuple[int, int]] = []
    for s, d in zip(_leaves(layout.shape), _leaves(layout.stride)):
        if s == 1:
            continue
        if modes and modes[-1][0] * modes[-1][1] == d:
            modes[-1] = (modes[-1][0] * s, modes[-1][1])
        else:
            modes.append((s, d))
    return modes


def coalesce(layout: Layout) -> Layout:
    """The same function (on flat indices) with the fewest modes.

    Flattens, drops shape-1 modes, and merges neighbours ``s0:d0, s1:d1`` with ``d1 == s0*d0``.
    The result is ``1:0``, an int-shaped layout, or a flat tuple.
    """
    return _modes_to_layout(_coalesced_modes(layout))


# ----------------------------------------------------------------------------------------------
# composition
# ----------------------------------------------------------------------------------------------

def _compose_leaf(amodes: list[tuple[int, int]], s: int, d: int, use: list[int],
                  a: Layout, b: Layout) -> list[tuple[int, int]]:
    """Modes of ``A o (s:d)`` where A is given as coalesced flat modes.

    Walks A's modes as mixed-radix digits (the last one unbounded).  ``use[i]`` accumulates the
    largest digit value this mode of B puts into A's digit i (used for the carry check).
    """
    if d < 0:
        raise LayoutError(f"composition {a} o {b}: negative stride {d} in B is not supported")
    if s == 1:
        return []
    if d == 0:
        return [(s, 0)]
    out: list[tuple[int, int]] = []
    last = len(amodes) - 1
    for i, (si, di) in enumerate(amodes):
        if i == last:
            out.append((s, d * di))
            return out
        if (s - 1) * d < si:            # all of j*d, j < s, stays inside this digit
            out.append((s, d * di))
            use[i] += (s - 1) * d
            return out
        if d % si == 0:                 # steps over this digit entirely
            d //= si
            continue
        if si % d == 0:                 # fills this digit, continues into the next ones
            q = si // d
            if s % q:
                raise LayoutError(
                    f"composition {a} o {b} is undefined (shape divisibility): B's mode {s}:{d} "
                    f"covers {q} steps of A's mode of size {si}, and {q} does not divide {s}")
            out.append((q, d * di))
            use[i] += (q - 1) * d
            s //= q
            d = 1
            continue
        raise LayoutError(
            f"composition {a} o {b} is undefined (stride divisibility): stride {d} of B is neither "
            f"a divisor nor a multiple of A's mode size {si}")
    raise AssertionError("unreachable")  # pragma: no cover


def _extension_modes(a: Layout) -> list[tuple[int, int]]:
    """Coalesced modes of A whose last mode also gives A's extension past ``size(A)``.

    Like :func:`coalesce`, but the last leaf (which absorbs indices >= size) is kept even when its
    shape is 1, so that ``A(i)`` for ``i >= size(A)`` is preserved too.
    """
    shapes, strides = _leaves(a.shape), _leaves(a.stride)
    modes = _coalesced_modes(Layout(tuple(shapes[:-1]), tuple(strides[:-1])))
    s, d = shapes[-1], strides[-1]
    if modes and modes[-1][0] * modes[-1][1] == d:
        modes[-1] = (modes[-1][0] * s, modes[-1][1])
    else:
        modes.append((s, d))
    return modes


def _compose_layouts(a: Layout, b: Layout) -> Layout:
    if not _leaves(a.shape):  # the empty layout ():() is only defined at 0
        if any(s > 1 and d != 0 for s, d in zip(_leaves(b.shape), _leaves(b.stride))):
            raise LayoutError(f"composition {a} o {b} is undefined: {a} only maps index 0")
        return Layout(b.shape, _unflatten(iter([0] * len(_leaves(b.shape))), b.shape))
    amodes = _extension_modes(a)
    use = [0] * len(amodes)
    results = []
    for s, d in zip(_leaves(b.shape), _leaves(b.stride)):
        modes = _compose_leaf(amodes, s, d, use, a, b)
        r = _modes_to_layout(modes)
        results.append(r)
    # The result adds the images of B's modes separately; that equals A(B(c)) only if the digits
    # they put into each bounded mode of A never carry into the next one.
    for (si, _), u in zip(amodes[:-1], use[:-1]):
        if u >= si:
            raise LayoutError(
                f"composition {a} o {b} is undefined: B's modes together overflow A's mode of size "
                f"{si} (their sum carries into the next mode, so the result is not a layout)")
    shape = _unflatten(iter([r.shape for r in results]), b.shape)
    stride = _unflatten(iter([r.stride for r in results]), b.shape)
    return Layout(shape, stride)


def _by_mode(a: Layout, tiler: Sequence, fn, name: str) -> Layout:
    """Apply ``fn(A[k], tiler[k])`` for each mode; None and missing entries keep A's mode."""
    if len(tiler) > a.rank:
        raise LayoutError(f"{name}: tiler {tiler!r} has more modes than layout {a} (rank {a.rank})")
    if _is_int(a.shape):
        t = tiler[0] if tiler else None
        return a if t is None else fn(a, t)
    modes = []
    for k, m in enumerate(a):
        t = tiler[k] if k < len(tiler) else None
        modes.append(m if t is None else fn(m, t))
    return make_layout(*modes)


LayoutLike = Union[Layout, int, tuple, None]


def composition(a: Union[Layout, "ComposedLayout"], b: LayoutLike) -> Union[Layout, "ComposedLayout"]:
    """Functional composition ``(A o B)(c) = A(B(c))`` for every coordinate c of B.

    The result has B's shape nesting (each mode of B may split into several).  `b` may be a
    Layout, an int ``n`` (meaning ``n:1``), or a tuple *tiler* applied mode by mode
    (``(A0 o B0, A1 o B1, ...)``; None keeps a mode).  A ComposedLayout on the left keeps its
    swizzle and offset.  Raises LayoutError if the composition is not a layout: a stride of B that
    neither divides nor is a multiple of the A mode it lands in (stride divisibility), a mode of B
    that spans a non-divisible number of steps of A (shape divisibility), B's modes jointly
    overflowing a mode of A, or a negative stride in B.  The checks are sufficient, and as strict
    as CuTe's: a few "lucky" cases whose values happen to be affine anyway (e.g.
    ``(3,4,2):(6,23,13) o 3:4``) are rejected too.  A(x) for x >= size(A) uses the last-mode
    extension (see :class:`Layout`).
    """
    if isinstance(a, ComposedLayout):
        return ComposedLayout(a.swizzle, a.offset, composition(a.layout, b))  # type: ignore[arg-type]
    if not isinstance(a, Layout):
        raise LayoutError(f"composition: left operand must be a Layout, got {a!r}")
    if b is None:
        return a
    if isinstance(b, (tuple, list)):
        return _by_mode(a, b, composition, "composition")
    return _compose_layouts(a, _as_layout(b, "composition right operand"))


# ----------------------------------------------------------------------------------------------
# complement, inverses
# ----------------------------------------------------------------------------------------------

def complement(a: Layout, cotarget: Optional[int] = None) -> Layout:
    """The layout ``A*`` that fills the gaps of A: ``(A, A*)`` is a bijection onto ``[0, N)``.

    ``N`` is the smallest multiple of A's span (the extent of its largest mode) that is
    ``>= cotarget``; when `cotarget` is such a multiple (e.g. ``size(A)`` for a tile that divides),
    ``(A, A*)`` is a bijection onto exactly ``[0, cotarget)``.  Default `cotarget` is ``cosize(A)``.
    Stride-0 and shape-1 modes of A are ignored.  Raises if a stride is negative or A's sorted
    strides do not divide each other (e.g. ``(2,2):(1,3)``, or non-injective A).
    """
    if cotarget is None:
        cotarget = a.cosize
    if not _is_int(cotarget) or cotarget < 1:
        raise LayoutError(f"complement: cotarget must be a positive int, got {cotarget!r}")
    modes = []
    for s, d in zip(_leaves(a.shape), _leaves(a.stride)):
        if d < 0:
            raise LayoutError(f"complement of {a}: negative strides are not supported")
        if s > 1 and d != 0:
            modes.append((d, s))
    modes.sort()
    out: list[tuple[int, int]] = []
    current = 1
    for d, s in modes:
        if d % current:
            raise LayoutError(
                f"complement of {a} is undefined: stride {d} is not a multiple of {current}, "
                f"the extent of the smaller modes (A is not injective or leaves a non-layout gap)")
        if d // current > 1:
            out.append((d // current, current))
        current = d * s
    rest = -(-cotarget // current)
    out.append((rest, current))
    return coalesce(Layout(tuple(x for x, _ in out), tuple(y for _, y in out)))


def right_inverse(layout: Layout) -> Layout:
    """The largest R with ``L(R(i)) == i`` for all i in ``[0, size(R))`` (``1:0`` if only i = 0)."""
    modes = _coalesced_modes(layout)
    cand, idx_stride = [], 1
    for s, d in modes:
        if d > 0:
            cand.append((d, s, idx_stride))
        idx_stride *= s
    cand.sort()
    out, current = [], 1
    for d, s, istr in cand:
        if d != current:
            break
        out.append((s, istr))
        current *= s
    return coalesce(_modes_to_layout(out))


def left_inverse(layout: Layout) -> Layout:
    """An R with ``R(L(i)) == i`` for all i in ``[0, size(L))``; defined when L is injective
    (and complementable, see :func:`complement`)."""
    for s, d in zip(_leaves(layout.shape), _leaves(layout.stride)):
        if s > 1 and d == 0:
            raise LayoutError(f"left_inverse of {layout} is undefined: stride 0 makes it non-injective")
    full = make_layout(layout, complement(layout))
    return right_inverse(full)


# ----------------------------------------------------------------------------------------------
# divide and product
# ----------------------------------------------------------------------------------------------

def logical_divide(a: Union[Layout, "ComposedLayout"], b: LayoutLike) -> Union[Layout, "ComposedLayout"]:
    """Tile A by B: ``A o (B, complement(B, size(A)))``, shaped ``(tile, rest)``.

    The first mode is the tile (B's elements), the second iterates over the tiles.  A tuple `b`
    divides mode by mode.  Raises unless B tiles A exactly (``size`` is preserved).
    """
    if isinstance(a, ComposedLayout):
        return ComposedLayout(a.swizzle, a.offset, logical_divide(a.layout, b))  # type: ignore[arg-type]
    if not isinstance(a, Layout):
        raise LayoutError(f"logical_divide: left operand must be a Layout, got {a!r}")
    if b is None:
        return a
    if isinstance(b, (tuple, list)):
        return _by_mode(a, b, logical_divide, "logical_divide")
    b = _as_layout(b, "logical_divide tiler")
    c = complement(b, a.size)
    if b.size * c.size != a.size:
        raise LayoutError(f"logical_divide: tile {b} does not divide {a} (size {a.size}); "
                          f"tile plus its complement {c} has size {b.size * c.size}")
    return composition(a, make_layout(b, c))


def zipped_divide(a: Layout, b: LayoutLike) -> Layout:
    """``logical_divide`` regrouped as ``((tile modes...), (rest modes...))``."""
    if not isinstance(b, (tuple, list)):
        return logical_divide(a, b)  # type: ignore[return-value]
    if len(b) > a.rank:
        raise LayoutError(f"zipped_divide: tiler {b!r} has more modes than layout {a} (rank {a.rank})")
    if any(isinstance(t, (tuple, list)) for t in b):
        raise LayoutError(f"zipped_divide: tiler entries must be Layouts, ints or None, got {b!r}")
    tiler = list(b) + [None] * (a.rank - len(b))
    tiles, rests = [], []
    for m, t in zip(a, tiler):
        d = logical_divide(m, Layout(m.size) if t is None else t)
        tiles.append(d.mode(0))  # type: ignore[union-attr]
        rests.append(d.mode(1))  # type: ignore[union-attr]
    return make_layout(make_layout(*tiles), make_layout(*rests))


def tiled_divide(a: Layout, b: LayoutLike) -> Layout:
    """``zipped_divide`` with the rest modes unpacked: ``((tile modes...), rest0, rest1, ...)``."""
    z = zipped_divide(a, b)
    tile, rest = z.mode(0), z.mode(1)
    return make_layout(tile, *list(rest))


def logical_product(a: Layout, b: LayoutLike) -> Layout:
    """Replicate A by B: ``(A, complement(A, size(A)*cosize(B)) o B)``.

    An int `b` is ``b:1`` (so ``logical_product(4:1, 3) == (4,3):(1,4)``); a tuple multiplies mode
    by mode.
    """
    if not isinstance(a, Layout):
        raise LayoutError(f"logical_product: left operand must be a Layout, got {a!r}")
    if b is None:
        return a
    if isinstance(b, (tuple, list)):
        return _by_mode(a, b, logical_product, "logical_product")
    b = _as_layout(b, "logical_product right operand")
    c = complement(a, a.size * b.cosize)
    return make_layout(a, composition(c, b))  # type: ignore[arg-type]


def _pad_rank(layout: Layout, r: int) -> Layout:
    modes = list(layout) + [Layout(1, 0)] * (r - layout.rank)
    return make_layout(*modes)


def _zip_product(a: Layout, b: Union[Layout, int], raked: bool) -> Layout:
    b = _as_layout(b, "product right operand")
    r = max(a.rank, b.rank)
    a2, b2 = _pad_rank(a, r), _pad_rank(b, r)
    p = logical_product(a2, b2)
    first, second = p.mode(0), p.mode(1)
    modes = [make_layout(second.mode(k), first.mode(k)) if raked else make_layout(first.mode(k), second.mode(k))
             for k in range(r)]
    return make_layout(*modes)


def blocked_product(a: Layout, b: Union[Layout, int]) -> Layout:
    """Per mode ``(A_k, B*_k)``: B's copies of A are laid out as whole blocks (A is the inner mode)."""
    return _zip_product(a, b, raked=False)


def raked_product(a: Layout, b: Union[Layout, int]) -> Layout:
    """Per mode ``(B*_k, A_k)``: A's elements are interleaved ("raked") across B's copies."""
    return _zip_product(a, b, raked=True)


# ----------------------------------------------------------------------------------------------
# slicing and constructors
# ----------------------------------------------------------------------------------------------

_GONE = object()


def _slice_rec(crd: object, shape: IntTuple, stride: IntTuple) -> tuple[object, object, int]:
    if crd is None:
        return shape, stride, 0
    if _is_int(crd):
        return _GONE, _GONE, _crd_offset(crd, shape, stride)
    if isinstance(crd, (tuple, list)):
        if _is_int(shape) or len(crd) != len(shape):  # type: ignore[arg-type]
            raise LayoutError(f"slice coordinate {crd!r} does not match shape {_fmt(shape)}")
        parts = [_slice_rec(c, s, d) for c, s, d in zip(crd, shape, stride)]  # type: ignore[arg-type]
        off = sum(p[2] for p in parts)
        kept = [(p[0], p[1]) for p in parts if p[0] is not _GONE]
        if not kept:
            return _GONE, _GONE, off
        if len(kept) == 1:
            return kept[0][0], kept[0][1], off
        return tuple(k[0] for k in kept), tuple(k[1] for k in kept), off
    raise LayoutError(f"bad slice coordinate {crd!r}")


def slice_(layout: Union[Layout, "ComposedLayout"], coord: object) -> tuple[Union[Layout, "ComposedLayout"], int]:
    """Fix the int entries of `coord` and keep the ``None`` ones.

    Returns ``(sub, offset)`` with ``layout(full_coord) == offset + sub(kept_coord)``.  Fixed modes
    disappear; a tuple left with one kept mode is unwrapped; if nothing is kept, ``sub`` is ``1:0``.
    For a ComposedLayout the offset cannot be pulled through the swizzle, so it is folded into the
    returned ComposedLayout and the returned offset is 0.
    """
    if isinstance(layout, ComposedLayout):
        sub, off = slice_(layout.layout, coord)
        return ComposedLayout(layout.swizzle, layout.offset + off, sub), 0  # type: ignore[arg-type]
    shape, stride, off = _slice_rec(coord, layout.shape, layout.stride)
    if shape is _GONE:
        return Layout(1, 0), off
    return Layout(shape, stride), off  # type: ignore[arg-type]


def make_ordered_layout(shape: IntTuple, order: IntTuple) -> Layout:
    """Compact layout of `shape` where the leaf with the smallest `order` value has stride 1,
    the next smallest the next stride, and so on (`order` is congruent to `shape`; ties keep
    left-to-right order)."""
    shape = _normalize(shape, "shape")
    order = _normalize(order, "order")
    if not _congruent(shape, order):
        raise LayoutError(f"order {_fmt(order)} is not congruent to shape {_fmt(shape)}")
    sl, ol = _leaves(shape), _leaves(order)
    strides = [0] * len(sl)
    cur = 1
    for k in sorted(range(len(sl)), key=lambda k: (ol[k], k)):
        strides[k] = cur
        cur *= sl[k]
    return Layout(shape, _unflatten(iter(strides), shape))


def col_major(shape: IntTuple) -> Layout:
    """Compact column-major (first mode fastest) layout, CuTe's default: ``(4,8) -> (4,8):(1,4)``."""
    return Layout(shape)


def row_major(shape: IntTuple) -> Layout:
    """Compact row-major (last leaf fastest) layout: ``(4,8) -> (4,8):(8,1)``."""
    shape = _normalize(shape, "shape")
    n = len(_leaves(shape))
    return make_ordered_layout(shape, _unflatten(iter(range(n - 1, -1, -1)), shape))


# ----------------------------------------------------------------------------------------------
# swizzles
# ----------------------------------------------------------------------------------------------

class Swizzle:
    """CuTe ``Swizzle<bits, base, shift>``: XOR `bits` bits taken `shift` above bit `base` into
    the bits at `base`.

    ``yyy_mask = ((1 << bits) - 1) << (base + max(0, shift))`` and
    ``f(o) = o ^ ((o & yyy_mask) >> shift)`` (a negative shift shifts left).  With
    ``|shift| >= bits`` it is an involutive bijection of every aligned block of
    ``2**(bits + base + |shift|)`` offsets.  E.g. the 128-byte smem swizzle on byte offsets is
    ``Swizzle(3, 4, 3)``.
    """

    __slots__ = ("bits", "base", "shift")
    bits: int
    base: int
    shift: int

    def __init__(self, bits: int, base: int, shift: int) -> None:
        for name, v in (("bits", bits), ("base", base), ("shift", shift)):
            if not _is_int(v):
                raise LayoutError(f"Swizzle {name} must be an int, got {v!r}")
        if bits < 0 or base < 0:
            raise LayoutError(f"Swizzle bits and base must be >= 0, got sw<{bits},{base},{shift}>")
        if abs(shift) < bits:
            raise LayoutError(f"Swizzle needs |shift| >= bits (else not a bijection), got sw<{bits},{base},{shift}>")
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "shift", shift)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Swizzle is immutable")

    @property
    def yyy_mask(self) -> int:
        """The source bits (the ones read)."""
        return ((1 << self.bits) - 1) << (self.base + max(0, self.shift))

    @property
    def zzz_mask(self) -> int:
        """The destination bits (the ones flipped)."""
        return ((1 << self.bits) - 1) << (self.base - min(0, self.shift))

    @property
    def period(self) -> int:
        """``2**(bits + base + |shift|)``: the swizzle permutes each aligned block of this size."""
        return 1 << (self.bits + self.base + abs(self.shift))

    def __call__(self, offset: int) -> int:
        y = offset & self.yyy_mask
        return offset ^ (y >> self.shift if self.shift >= 0 else y << -self.shift)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Swizzle) and (self.bits, self.base, self.shift) == (other.bits, other.base, other.shift)

    def __hash__(self) -> int:
        return hash(("Swizzle", self.bits, self.base, self.shift))

    def __str__(self) -> str:
        return f"sw<{self.bits},{self.base},{self.shift}>"

    def __repr__(self) -> str:
        return f"Swizzle({self.bits}, {self.base}, {self.shift})"


class ComposedLayout:
    """``c -> swizzle(offset + layout(c))``: a swizzled (shared-memory) layout.

    Coordinates, `size`, `shape`, `rank` and modes are those of the inner `layout`.
    """

    __slots__ = ("swizzle", "offset", "layout")
    swizzle: Swizzle
    offset: int
    layout: Layout

    def __init__(self, swizzle: Swizzle, offset: int, layout: Layout) -> None:
        if not isinstance(swizzle, Swizzle):
            raise LayoutError(f"ComposedLayout needs a Swizzle, got {swizzle!r}")
        if not _is_int(offset):
            raise LayoutError(f"ComposedLayout offset must be an int, got {offset!r}")
        if not isinstance(layout, Layout):
            raise LayoutError(f"ComposedLayout needs a Layout, got {layout!r}")
        object.__setattr__(self, "swizzle", swizzle)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "layout", layout)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ComposedLayout is immutable")

    @property
    def shape(self) -> IntTuple:
        return self.layout.shape

    @property
    def size(self) -> int:
        return self.layout.size

    @property
    def rank(self) -> int:
        return self.layout.rank

    @property
    def depth(self) -> int:
        return self.layout.depth

    def __call__(self, *coord: object) -> int:
        return self.swizzle(self.offset + self.layout(*coord))

    def offsets(self) -> list[int]:
        """``[L(i) for i in range(size)]`` (the inner layout's offsets, shifted and swizzled)."""
        sw, base = self.swizzle, self.offset
        m, sh = sw.yyy_mask, sw.shift
        if sh >= 0:
            return [o ^ ((o & m) >> sh) for o in (x + base for x in self.layout.offsets())]
        return [o ^ ((o & m) << -sh) for o in (x + base for x in self.layout.offsets())]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ComposedLayout) and self.swizzle == other.swizzle
                and self.offset == other.offset and self.layout == other.layout)

    def __hash__(self) -> int:
        return hash(("ComposedLayout", self.swizzle, self.offset, self.layout))

    def __str__(self) -> str:
        off = f"{self.offset} + " if self.offset != 0 else ""
        return f"{self.swizzle} o {off}{self.layout}"

    def __repr__(self) -> str:
        return f"ComposedLayout({self.swizzle!r}, {self.offset}, {self.layout!r})"


def swizzled(layout: Layout, swizzle: Swizzle, offset: int = 0) -> ComposedLayout:
    """``swizzle o (offset + layout)``."""
    return ComposedLayout(swizzle, offset, layout)


# ----------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------

class _Parser:
    """Recursive descent over the grammar::

        top      := tv | composed | layout
        tv       := 'tv' '<' inttuple '|' layout '>'
        composed := swizzle 'o' [INT '+'] layout
        swizzle  := 'sw' '<' INT ',' INT ',' INT '>'
        layout   := inttuple ':' inttuple
        inttuple := INT | '(' [inttuple (',' inttuple)*] ')'
        INT      := '-'? [0-9]+
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, msg: str, pos: Optional[int] = None) -> LayoutError:
        p = self.pos if pos is None else pos
        return LayoutError(f"parse_layout: {msg} at position {p} in {self.text!r}", pos=p)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_word(self, word: str) -> bool:
        self.skip_ws()
        return self.text.startswith(word, self.pos)

    def expect(self, tok: str) -> None:
        self.skip_ws()
        if not self.text.startswith(tok, self.pos):
            got = self.text[self.pos] if self.pos < len(self.text) else "end of text"
            raise self.error(f"expected {tok!r}, got {got!r}")
        self.pos += len(tok)

    def integer(self) -> int:
        self.skip_ws()
        start = self.pos
        if self.pos < len(self.text) and self.text[self.pos] == "-":
            self.pos += 1
        d0 = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in "0123456789":
            self.pos += 1
        if self.pos == d0:
            self.pos = start
            got = self.text[start] if start < len(self.text) else "end of text"
            raise self.error(f"expected an integer, got {got!r}")
        return int(self.text[start:self.pos])

    def inttuple(self) -> IntTuple:
        if self.peek() != "(":
            return self.integer()
        self.pos += 1
        items: list[IntTuple] = []
        if self.peek() == ")":
            self.pos += 1
            return ()
        while True:
            items.append(self.inttuple())
            c = self.peek()
            if c == ",":
                self.pos += 1
            elif c == ")":
                self.pos += 1
                return tuple(items)
            else:
                raise self.error(f"expected ',' or ')', got {c or 'end of text'!r}")

    def layout(self) -> Layout:
        self.skip_ws()
        start = self.pos
        shape = self.inttuple()
        self.expect(":")
        stride = self.inttuple()
        try:
            return Layout(shape, stride)
        except LayoutError as e:
            raise self.error(str(e), start) from None

    def swizzle(self) -> Swizzle:
        self.skip_ws()
        start = self.pos
        self.expect("sw")
        self.expect("<")
        b = self.integer()
        self.expect(",")
        m = self.integer()
        self.expect(",")
        s = self.integer()
        self.expect(">")
        try:
            return Swizzle(b, m, s)
        except LayoutError as e:
            raise self.error(str(e), start) from None

    def top(self) -> Union[Layout, ComposedLayout, "TVLayout"]:
        if self.at_word("tv"):
            from .register_layout import TVLayout
            start = self.pos
            self.expect("tv")
            self.expect("<")
            tile = self.inttuple()
            self.expect("|")
            lay = self.layout()
            self.expect(">")
            try:
                result: Union[Layout, ComposedLayout, TVLayout] = TVLayout(tile, lay)
            except LayoutError as e:
                raise self.error(str(e), start) from None
        elif self.at_word("sw"):
            sw = self.swizzle()
            self.expect("o")
            offset = 0
            save = self.pos
            c = self.peek()
            if c == "-" or c.isdigit():
                n = self.integer()
                if self.peek() == "+":
                    self.pos += 1
                    offset = n
                else:
                    self.pos = save
            result = ComposedLayout(sw, offset, self.layout())
        else:
            result = self.layout()
        if self.peek():
            raise self.error(f"unexpected {self.text[self.pos]!r} after the layout")
        return result


def parse_layout(text: str) -> Union[Layout, ComposedLayout, "TVLayout"]:
    """Parse the text form written by ``str()`` of a Layout, ComposedLayout or TVLayout.

    ``parse_layout(str(x)) == x`` and ``str(parse_layout(str(x))) == str(x)``.  Raises LayoutError
    (with ``.pos``, the character position) on malformed text.
    """
    if not isinstance(text, str):
        raise LayoutError(f"parse_layout needs a str, got {type(text).__name__}")
    return _Parser(text).top()
