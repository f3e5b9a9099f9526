"""Register (thread-value) layouts: which thread holds which tile element in which register slot.

A :class:`TVLayout` is ``(tile_shape, layout)`` where `layout` is an ordinary
:class:`~tile.ir.layout.Layout` with exactly two top-level modes, ``(thread, value)``.  It maps
``(t, v)`` to the *colexicographic* flat index of a tile coordinate: for a 2-D ``(M, N)`` tile,
element ``(m, n)`` has index ``m + M*n`` (CuTe's convention).  Replication is first-class: a stride
0 in the thread mode means several threads hold the same element (the result of a reduction or a
broadcast), a stride 0 in the value mode means one thread holds it in several slots.

Text form: ``tv<(16,8) | ((4,8),(2,2)):((32,1),(16,8))>`` (parsed by
:func:`tile.ir.layout.parse_layout`).

Builders: :func:`tv_blocked` (Triton's blocked layout: each thread owns a contiguous chunk) and
:func:`replicate`.  :func:`picture` draws any layout as text.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

from .layout import (ComposedLayout, IntTuple, Layout, LayoutError, _fmt, _is_int, _leaves,
                     _normalize, _product, idx2crd, make_layout)

__all__ = ["TVLayout", "tv_blocked", "replicate", "picture"]


def _flat_tile(tile_shape: object) -> IntTuple:
    t = _normalize(tile_shape, "tile_shape")
    if not _is_int(t):
        if any(not _is_int(x) for x in t):  # type: ignore[union-attr]
            raise LayoutError(f"tile_shape must be an int or a flat tuple of ints, got {_fmt(t)}")
    if any(x < 1 for x in _leaves(t)):
        raise LayoutError(f"tile_shape entries must be >= 1, got {_fmt(t)}")
    return t


class TVLayout:
    """A register layout: ``(thread, value) -> tile element``.

    `tile_shape` is an int (1-D tile) or a flat tuple of ints; `layout` has two top-level modes
    (thread, value), non-negative strides, and offsets inside ``[0, size(tile_shape))``.
    Threads are numbered ``0 .. num_threads-1`` and values ``0 .. values_per_thread-1``, each
    decomposed colexicographically over its mode.
    """

    __slots__ = ("tile_shape", "layout", "_cache")
    tile_shape: IntTuple
    layout: Layout

    def __init__(self, tile_shape: IntTuple, layout: Layout) -> None:
        tile = _flat_tile(tile_shape)
        if not isinstance(layout, Layout):
            raise LayoutError(f"TVLayout needs a Layout, got {layout!r}")
        if _is_int(layout.shape) or layout.rank != 2:
            raise LayoutError(f"TVLayout layout must have exactly two modes (thread, value), got {layout}")
        if any(d < 0 for d in _leaves(layout.stride)):
            raise LayoutError(f"TVLayout strides must be >= 0, got {layout}")
        n = _product(tile)
        if layout.cosize > n:
            raise LayoutError(f"TVLayout {layout} reaches index {layout.cosize - 1}, "
                              f"outside the tile {_fmt(tile)} of {n} elements")
        object.__setattr__(self, "tile_shape", tile)
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "_cache", {})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("TVLayout is immutable")

    # --- structure ------------------------------------------------------------------------------
    @property
    def thread_layout(self) -> Layout:
        """The thread mode ``t -> index contribution``."""
        return self.layout.mode(0)

    @property
    def value_layout(self) -> Layout:
        """The value mode ``v -> index contribution``."""
        return self.layout.mode(1)

    @property
    def num_threads(self) -> int:
        return self.layout.mode(0).size

    @property
    def values_per_thread(self) -> int:
        return self.layout.mode(1).size

    @property
    def tile_size(self) -> int:
        return _product(self.tile_shape)

    @property
    def tile_dims(self) -> tuple[int, ...]:
        """`tile_shape` as a tuple (a 1-D tile gives a 1-tuple)."""
        return (self.tile_shape,) if _is_int(self.tile_shape) else tuple(self.tile_shape)  # type: ignore[arg-type]

    # --- the map --------------------------------------------------------------------------------
    def index(self, t: int, v: int) -> int:
        """Flat (colexicographic) tile index held by thread `t` in value slot `v`."""
        if not (0 <= t < self.num_threads and 0 <= v < self.values_per_thread):
            raise LayoutError(f"(t={t}, v={v}) out of range for {self} "
                              f"({self.num_threads} threads x {self.values_per_thread} values)")
        return self.layout((t, v))

    def coord(self, t: int, v: int) -> tuple[int, ...]:
        """Tile coordinate held by thread `t` in value slot `v`, e.g. ``(m, n)``."""
        c = idx2crd(self.index(t, v), self.tile_dims)
        return tuple(c)  # type: ignore[arg-type]

    def _index_table(self) -> list[list[int]]:
        tab = self._cache.get("index")
        if tab is None:
            nv = self.values_per_thread
            tab = [[self.layout((t, v)) for v in range(nv)] for t in range(self.num_threads)]
            self._cache["index"] = tab
        return tab

    def _owners_table(self) -> dict[int, list[tuple[int, int]]]:
        own = self._cache.get("owners")
        if own is None:
            own = {}
            for t, row in enumerate(self._index_table()):
                for v, i in enumerate(row):
                    own.setdefault(i, []).append((t, v))
            self._cache["owners"] = own
        return own

    def owners(self, coord: Union[int, Sequence[int]]) -> list[tuple[int, int]]:
        """All ``(t, v)`` holding the tile element `coord` (a coordinate tuple or a flat index),
        sorted; empty if no thread holds it."""
        dims = self.tile_dims
        if _is_int(coord):
            idx = coord
        else:
            c = tuple(coord)  # type: ignore[arg-type]
            if len(c) != len(dims) or any(not 0 <= x < s for x, s in zip(c, dims)):
                raise LayoutError(f"coordinate {c} is not in tile {_fmt(self.tile_shape)}")
            idx, mul = 0, 1
            for x, s in zip(c, dims):
                idx += x * mul
                mul *= s
        if not 0 <= idx < self.tile_size:  # type: ignore[operator]
            raise LayoutError(f"index {idx} is not in tile {_fmt(self.tile_shape)}")
        return list(self._owners_table().get(idx, []))  # type: ignore[arg-type]

    @property
    def is_replicated(self) -> bool:
        """True if some tile element is held by more than one (thread, value)."""
        return len(self._owners_table()) < self.num_threads * self.values_per_thread

    def covers_tile(self) -> bool:
        """True if every tile element is held by at least one (thread, value)."""
        return len(self._owners_table()) == self.tile_size

    def is_bijective(self) -> bool:
        """Every tile element is held by exactly one (thread, value)."""
        return self.covers_tile() and not self.is_replicated

    def to_table(self) -> dict[tuple[int, int], tuple[int, ...]]:
        """``{(t, v): tile coordinate}`` for every thread and value."""
        dims = self.tile_dims
        return {(t, v): tuple(idx2crd(i, dims))  # type: ignore[arg-type]
                for t, row in enumerate(self._index_table()) for v, i in enumerate(row)}

    # --- identity and text ----------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, TVLayout) and self.tile_shape == other.tile_shape and self.layout == other.layout

    def __hash__(self) -> int:
        return hash(("TVLayout", self.tile_shape, self.layout))

    def __str__(self) -> str:
        return f"tv<{_fmt(self.tile_shape)} | {self.layout}>"

    def __repr__(self) -> str:
        return f"TVLayout({self.tile_shape!r}, {self.layout!r})"


# ----------------------------------------------------------------------------------------------
# builders
# ----------------------------------------------------------------------------------------------

def _mode(modes: list[tuple[int, int]]) -> Layout:
    """A mode from (shape, stride) pairs, dropping shape-1 entries; one entry stays an int."""
    modes = [(s, d) for s, d in modes if s != 1]
    if not modes:
        return Layout(1, 0)
    if len(modes) == 1:
        return Layout(*modes[0])
    return Layout(tuple(s for s, _ in modes), tuple(d for _, d in modes))


def tv_blocked(tile_shape: IntTuple, threads_shape: IntTuple, values_shape: IntTuple,
               order: Optional[Sequence[int]] = None) -> TVLayout:
    """Triton's blocked layout: each thread owns a contiguous ``values_shape`` chunk.

    Along dim d, ``threads_shape[d]`` threads own consecutive chunks of ``values_shape[d]``
    elements; if the tile is larger, the pattern repeats (more values per thread), if it is
    smaller, the extra threads hold copies (replication, stride 0).  Thread ids and value slots
    run over the dims in `order` (``order[0]`` varies fastest; default: last dim fastest, as for a
    row-major tile).  Value slots run over the chunk first, then over the repeats.
    """
    tile = _flat_tile(tile_shape)
    dims = (tile,) if _is_int(tile) else tuple(tile)  # type: ignore[arg-type]
    nd = len(dims)

    def per_dim(x: IntTuple, what: str) -> tuple[int, ...]:
        x = _normalize(x, what)
        xs = (x,) if _is_int(x) else tuple(x)  # type: ignore[arg-type]
        if len(xs) != nd or any(not _is_int(e) or e < 1 for e in xs):
            raise LayoutError(f"tv_blocked: {what} {_fmt(x)} must give a positive int per tile dim {_fmt(tile)}")
        return xs  # type: ignore[return-value]

    thr, val = per_dim(threads_shape, "threads_shape"), per_dim(values_shape, "values_shape")
    order = tuple(range(nd - 1, -1, -1)) if order is None else tuple(order)
    if sorted(order) != list(range(nd)):
        raise LayoutError(f"tv_blocked: order {order} is not a permutation of the {nd} tile dims")
    dim_stride = [1] * nd
    for d in range(1, nd):
        dim_stride[d] = dim_stride[d - 1] * dims[d - 1]
    t_modes: list[tuple[int, int]] = []
    v_modes: list[tuple[int, int]] = []
    r_modes: list[tuple[int, int]] = []
    for d in order:
        T, V, M, S = thr[d], val[d], dims[d], dim_stride[d]
        if M % V:
            raise LayoutError(f"tv_blocked: values_shape[{d}]={V} does not divide tile dim {M}")
        chunks = M // V
        v_modes.append((V, S))
        if chunks >= T:
            if chunks % T:
                raise LayoutError(f"tv_blocked: {T} threads x {V} values do not divide tile dim {M}")
            t_modes.append((T, V * S))
            r_modes.append((chunks // T, T * V * S))
        else:
            if T % chunks:
                raise LayoutError(f"tv_blocked: {T} threads do not divide evenly over {chunks} chunks of dim {M}")
            t_modes.append((chunks, V * S))
            t_modes.append((T // chunks, 0))      # extra threads replicate
    return TVLayout(tile, make_layout(_mode(t_modes), _mode(v_modes + r_modes)))


def replicate(tv: TVLayout, n: int) -> TVLayout:
    """`n` copies of `tv` on ``n * num_threads`` threads: thread ``t + k*num_threads`` holds what
    thread t holds (a stride-0 thread mode appended)."""
    if not _is_int(n) or n < 1:
        raise LayoutError(f"replicate: n must be a positive int, got {n!r}")
    thr = make_layout(tv.thread_layout, Layout(n, 0))
    return TVLayout(tv.tile_shape, make_layout(thr, tv.value_layout))


# ----------------------------------------------------------------------------------------------
# pictures
# ----------------------------------------------------------------------------------------------

def _grid(header: str, rows: int, cols: int, cell) -> str:
    cells = [[cell(r, c) for c in range(cols)] for r in range(rows)]
    w = max([len(x) for row in cells for x in row] + [len(str(cols - 1))])
    rw = len(str(rows - 1))
    lines = [header, " " * (rw + 3) + " ".join(str(c).rjust(w) for c in range(cols))]
    for r, row in enumerate(cells):
        lines.append(str(r).rjust(rw) + " | " + " ".join(x.rjust(w) for x in row))
    return "\n".join(lines)


def picture(obj: Union[Layout, ComposedLayout, TVLayout], max_cells: int = 16384) -> str:
    """A text picture for debugging.

    * TVLayout over a 1-D or 2-D tile: a grid (rows = dim 0, columns = dim 1) whose cells show
      ``T{t}V{v}``, the first (thread, value) holding the element; ``+k`` means k more
      (thread, value) pairs hold copies; ``.`` marks an element nobody holds.
    * Layout / ComposedLayout of rank 1 or 2: a grid of the offset of each coordinate
      (rank 1 is one row).
    """
    if isinstance(obj, TVLayout):
        dims = obj.tile_dims
        if len(dims) > 2:
            raise LayoutError(f"picture: only 1-D and 2-D tiles can be drawn, got {_fmt(obj.tile_shape)}")
        rows, cols = (1, dims[0]) if len(dims) == 1 else dims
        if rows * cols > max_cells:
            raise LayoutError(f"picture: tile of {rows * cols} cells exceeds max_cells={max_cells}")
        own = obj._owners_table()

        def cell(r: int, c: int) -> str:
            idx = c if len(dims) == 1 else r + rows * c
            o = own.get(idx)
            if not o:
                return "."
            t, v = o[0]
            return f"T{t}V{v}" + (f"+{len(o) - 1}" if len(o) > 1 else "")
        return _grid(str(obj), rows, cols, cell)
    if isinstance(obj, (Layout, ComposedLayout)):
        if obj.rank > 2:
            raise LayoutError(f"picture: only rank-1 and rank-2 layouts can be drawn, got {obj}")
        if obj.rank == 1:
            rows, cols = 1, obj.size
            return _grid(str(obj), rows, cols, lambda r, c: str(obj(c)))
        inner = obj.layout if isinstance(obj, ComposedLayout) else obj
        rows, cols = inner.mode(0).size, inner.mode(1).size
        if rows * cols > max_cells:
            raise LayoutError(f"picture: {rows * cols} cells exceed max_cells={max_cells}")
        return _grid(str(obj), rows, cols, lambda r, c: str(obj((r, c))))
    raise LayoutError(f"picture: cannot draw {obj!r}")
