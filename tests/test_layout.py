"""Property tests of tile.ir.layout / tile.ir.register_layout against brute-force enumeration."""
from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tile.ir.layout import (ComposedLayout, Layout, LayoutError, Swizzle, blocked_product, coalesce,
                            col_major, complement, composition, flatten, left_inverse,
                            logical_divide, logical_product, make_layout, make_ordered_layout,
                            parse_layout, raked_product, right_inverse, row_major, slice_,
                            swizzled, tiled_divide, zipped_divide)
from tile.ir.register_layout import TVLayout, picture, replicate, tv_blocked

# Applied to every @given test here (not a global profile, so other test modules are unaffected).
_S = settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

MAX_SIZE = 256


# ----------------------------------------------------------------------------------------------
# strategies
# ----------------------------------------------------------------------------------------------

def _leaves(t):
    return [t] if isinstance(t, int) else [x for e in t for x in _leaves(e)]


def _unflatten(it, profile):
    return next(it) if isinstance(profile, int) else tuple(_unflatten(it, p) for p in profile)


def _prod(xs):
    p = 1
    for x in xs:
        p *= x
    return p


def shapes(leaf=st.integers(1, 6)):
    """Nested int tuples of depth <= 2 (an int, a tuple of ints, or a tuple with nested tuples)."""
    inner = st.one_of(leaf, st.lists(leaf, min_size=1, max_size=3).map(tuple))
    return st.one_of(leaf, st.lists(inner, min_size=0, max_size=3).map(tuple)).filter(
        lambda s: _prod(_leaves(s)) <= MAX_SIZE)


@st.composite
def layouts(draw, leaf=st.integers(1, 6), stride=st.integers(0, 24)):
    """Arbitrary small layouts (strides may repeat or be 0)."""
    shape = draw(shapes(leaf))
    strides = [draw(stride) for _ in _leaves(shape)]
    return Layout(shape, _unflatten(iter(strides), shape))


@st.composite
def injective_layouts(draw, leaf=st.integers(1, 5), gap=st.integers(1, 3)):
    """Injective, complementable layouts: the leaves in a random order get strides that are
    products of the previous extent and a random gap factor."""
    shape = draw(shapes(leaf))
    sl = _leaves(shape)
    order = draw(st.permutations(range(len(sl))))
    strides = [0] * len(sl)
    cur = 1
    for k in order:
        cur *= draw(gap)
        strides[k] = cur
        cur *= sl[k]
    return Layout(shape, _unflatten(iter(strides), shape))


@st.composite
def pow2_layouts(draw, max_size=64):
    shape = draw(shapes(st.sampled_from([1, 2, 4])).filter(lambda s: _prod(_leaves(s)) <= max_size))
    strides = [draw(st.sampled_from([0, 1, 2, 4, 8, 16, 32])) for _ in _leaves(shape)]
    return Layout(shape, _unflatten(iter(strides), shape))


def bijective_layouts(leaf=st.integers(1, 5)):
    """Compact layouts (a bijection onto [0, size)) with a random leaf order."""
    return injective_layouts(leaf, gap=st.just(1))


def image(layout):
    return [layout(i) for i in range(layout.size)]


# ----------------------------------------------------------------------------------------------
# basics
# ----------------------------------------------------------------------------------------------

def test_basics():
    L = Layout((4, (2, 3)), (2, (1, 8)))
    assert (L.size, L.cosize, L.rank, L.depth) == (24, 6 + 1 + 16 + 1, 2, 2)
    assert str(L) == "(4,(2,3)):(2,(1,8))"
    assert str(Layout(8, 1)) == "8:1" and Layout(8) == Layout(8, 1)
    assert str(Layout((8,), (1,))) == "(8):(1)" and Layout((8,), (1,)) != Layout(8, 1)
    assert Layout((4, 8)) == Layout((4, 8), (1, 4)) == col_major((4, 8))
    assert row_major((4, 8)) == Layout((4, 8), (8, 1))
    assert row_major((4, (2, 3))) == Layout((4, (2, 3)), (6, (3, 1)))
    assert make_ordered_layout((4, 8, 2), (2, 0, 1)) == Layout((4, 8, 2), (16, 1, 8))
    assert L[0] == Layout(4, 2) and L[1] == Layout((2, 3), (1, 8)) and L[1][1] == Layout(3, 8)
    assert list(L) == [L[0], L[1]] and len(L) == 2
    assert L(5) == L((1, 1)) == L((1, (1, 0))) == L(1, 1) == 2 + 8 * 0 + 1
    assert L((3, (1, 2))) == 6 + 1 + 16
    assert make_layout(Layout(4, 2), Layout((2, 3), (1, 8))) == L
    assert flatten(L) == Layout((4, 2, 3), (2, 1, 8))
    assert hash(L) == hash(Layout((4, (2, 3)), (2, (1, 8))))
    assert Layout((), ()).size == 1 and str(Layout((), ())) == "():()"
    with pytest.raises(LayoutError):
        Layout((4, 2), (1,))
    with pytest.raises(LayoutError):
        Layout(0, 1)
    with pytest.raises(LayoutError):
        L((4, 0))          # out of range coordinate
    with pytest.raises(LayoutError):
        L((1, 2, 3))       # wrong rank


@_S
@given(layouts())
def test_flat_index_matches_coordinates(L):
    """L(i) == L(crd) for the colexicographic coordinate of i, enumerated independently."""
    if isinstance(L.shape, int):
        coords = [(i,) for i in range(L.shape)]
        offs = [L(c[0]) for c in coords]
    else:
        ranges = [range(_prod(_leaves(m))) for m in L.shape]
        # colexicographic: first mode fastest
        coords = [tuple(reversed(c)) for c in itertools.product(*reversed(ranges))]
        offs = [L(c) for c in coords]
    assert offs == image(L)


@_S
@given(layouts(), st.integers(0, 3), st.integers(0, 3), st.sampled_from([1, 2, 3, 4, -3, -4]), st.integers(0, 64))
def test_offsets_are_the_function_at_each_flat_index(L, bits, base, shift, offset):
    """offsets() (built leaf by leaf) == [L(i) for i in range(size)], swizzled or not."""
    assert L.offsets() == [L(i) for i in range(L.size)]
    assume(abs(shift) >= bits)
    C = ComposedLayout(Swizzle(bits, base, shift), offset, L)
    assert C.offsets() == [C(i) for i in range(C.size)]


def test_wgmma_canonical_matches_the_definition_element_by_element():
    """wgmma_canonical reads the layout through flat offset lists; the definition (fragment-layouts.md
    3.3) evaluated per coordinate gives the same answer on the layouts the compiler makes and on
    near misses (padded strides, other swizzles)."""
    from tile.ir.layout import parse_layout
    from tile.ir.shared_layouts import _swz, swizzled_row_major, transpose_layout, wgmma_canonical

    def reference(lay, shape, role):
        if not isinstance(lay, ComposedLayout) or lay.offset or (lay.swizzle.base, lay.swizzle.shift) != (3, 3):
            return None
        W = {3: 128, 2: 64, 1: 32}.get(lay.swizzle.bits)
        xd = 0 if role == "a" else 1
        X, K = shape[xd], shape[1 - xd]
        if W is None or K % 16 or X % 64:
            return None
        L = lambda x, k: lay((x, k) if xd == 0 else (k, x))                     # noqa: E731
        Lu = lambda x, k: lay.layout((x, k) if xd == 0 else (k, x))             # noqa: E731
        E, sbo = W // 2, 2 * Lu(8, 0)
        if sbo % 16 == 0 and all(2 * L(x, k) == 2 * Lu(0, k - k % E) + (x // 8) * sbo + _swz((x % 8) * W + (k % E) * 2, W)
                                 for x in range(X) for k in range(K)):
            return ("K", {128: 1, 64: 2, 32: 3}[W], 16, sbo)
        if W != 128:
            return None
        lbo, sbo = (2 * Lu(64, 0) if X > 64 else 0), 2 * Lu(0, 8)
        if lbo % 16 or sbo % 16 or not all(2 * L(x, k) == (x // 64) * lbo + (k // 8) * sbo + _swz((k % 8) * 128 + (x % 64) * 2, 128)
                                           for x in range(X) for k in range(K)):
            return None
        return ("MN", 1, lbo or 16, sbo)
    cases = []
    for (R, C), cd in itertools.product([(64, 64), (128, 64), (64, 128), (64, 256), (128, 32), (16, 64)], (0, 1)):
        lay = swizzled_row_major((R, C), 16, cd)
        cases += [(lay, (R, C)), (transpose_layout(lay), (C, R))]
    for bits, st_ in itertools.product((1, 2, 3), ((64, 1), (1, 64), (72, 1), (1, 72))):
        cases.append((ComposedLayout(Swizzle(bits, 3, 3), 0, Layout((64, 64), st_)), (64, 64)))
    found = 0
    for lay, shape in cases:
        for role in "ab":
            want = reference(lay, shape, role)
            assert wgmma_canonical(str(lay), shape, role, 16) == want, (str(lay), shape, role)
            found += want is not None
    assert found >= 10                            # both majors are exercised, not only the None answers


@_S
@given(layouts())
def test_coalesce_preserves_function(L):
    C = coalesce(L)
    assert C.size == L.size
    assert image(C) == image(L)
    assert C.depth <= 1
    shp = _leaves(C.shape)
    strd = _leaves(C.stride)
    assert all(s > 1 for s in shp) or C == Layout(1, 0)
    assert all(strd[k + 1] != shp[k] * strd[k] for k in range(len(shp) - 1))


# ----------------------------------------------------------------------------------------------
# composition
# ----------------------------------------------------------------------------------------------

def test_composition_worked_example():
    """dsl-anchors.md §4 (checked with pycute)."""
    A, B = Layout((6, 2), (8, 2)), Layout((4, 3), (3, 1))
    R = composition(A, B)
    assert R == Layout(((2, 2), 3), ((24, 2), 8))
    assert image(R) == [A(B(i)) for i in range(B.size)]


def test_composition_rejects_non_layouts():
    # pycute's integer division would silently return 2:1 here (A(0..2) = 0, 1, 7 is no layout)
    with pytest.raises(LayoutError, match="shape divisibility"):
        composition(Layout((2, 5), (1, 7)), Layout(3))
    with pytest.raises(LayoutError, match="stride divisibility"):
        composition(Layout((4, 3), (1, 10)), Layout(3, 3))
    # the two modes of B carry between the modes of A
    with pytest.raises(LayoutError, match="overflow"):
        composition(Layout((2, 2), (1, 10)), Layout((2, 2), (1, 1)))
    with pytest.raises(LayoutError):
        composition(Layout(8), Layout(2, -1))


def _check_composition(A, B):
    try:
        R = composition(A, B)
    except LayoutError:
        return False
    assert R.size == B.size
    assert image(R) == [A(B(i)) for i in range(B.size)], (str(A), str(B), str(R))
    return True


@_S
@given(layouts(), layouts(stride=st.integers(0, 8)))
def test_composition_is_function_composition(A, B):
    _check_composition(A, B)


@_S
@given(pow2_layouts(), pow2_layouts())
def test_composition_pow2(A, B):
    _check_composition(A, B)


@_S
@given(st.tuples(st.integers(2, 4), st.integers(2, 4)), st.tuples(st.integers(1, 3), st.integers(20, 40)),
       st.tuples(st.integers(1, 4), st.integers(1, 4)), st.tuples(st.integers(0, 3), st.integers(0, 3)))
def test_composition_two_mode_b_over_two_mode_a(ashape, astride, bshape, bstride):
    """Two modes of B landing in the same small mode of A: their sum may carry into A's next mode,
    which a per-mode composition would get wrong; it must be detected."""
    _check_composition(Layout(ashape, astride), Layout(bshape, bstride))


@_S
@given(bijective_layouts(), st.data())
def test_composition_with_tiles_of_compact_layouts(A, data):
    """Compact B that lie inside A: almost always defined; check it and the result."""
    B = data.draw(bijective_layouts(st.sampled_from([1, 2, 3, 4])))
    assume(B.size <= A.size)
    _check_composition(A, B)


def test_composition_defined_cases():
    cases = [
        (Layout((8, 8), (8, 1)), Layout((2, 4), (1, 8))),
        (Layout((4, 8), (1, 4)), Layout((4, 2), (8, 1))),
        (Layout((2, 2), (10, 1)), Layout((2, 2), (1, 2))),
        (Layout((8, 3), (1, 100)), Layout(3, 3)),
        (Layout(24), Layout((4, (2, 3)), (2, (1, 8)))),
        (Layout((16, 16), (16, 1)), Layout(((2, 8), 4), ((8, 1), 16))),
    ]
    for A, B in cases:
        assert _check_composition(A, B), (str(A), str(B))


def test_composition_by_mode_tiler():
    A = Layout((8, 16), (16, 1))
    R = composition(A, (Layout(4, 2), None))
    assert R == make_layout(composition(A[0], Layout(4, 2)), A[1])
    assert R((3, 5)) == A((6, 5))


# ----------------------------------------------------------------------------------------------
# complement and inverses
# ----------------------------------------------------------------------------------------------

def test_complement_worked_example():
    assert complement(Layout(4, 2), 24) == Layout((2, 3), (1, 8))


@_S
@given(injective_layouts(), st.integers(1, 4), st.integers(0, 40))
def test_complement_is_bijection(A, k, extra):
    span = max([s * d for s, d in zip(_leaves(A.shape), _leaves(A.stride)) if s > 1] + [1])
    for M in (span * k, span * k + extra):
        C = complement(A, M)
        P = make_layout(A, C)
        img = image(P)
        assert sorted(img) == list(range(P.size))      # a bijection onto [0, size)
        assert P.size >= M
        if M % span == 0:
            assert P.size == M                         # ... onto exactly [0, M)


def test_complement_rejects():
    with pytest.raises(LayoutError):
        complement(Layout((2, 2), (1, 3)), 16)       # gap {2} is not a layout
    with pytest.raises(LayoutError):
        complement(Layout((2, 2), (1, 1)), 16)       # not injective


@_S
@given(layouts())
def test_right_inverse(L):
    R = right_inverse(L)
    assert [L(R(i)) for i in range(R.size)] == list(range(R.size))


@_S
@given(bijective_layouts())
def test_right_inverse_of_bijection_is_full_inverse(L):
    R = right_inverse(L)
    assert R.size == L.size
    assert [R(L(i)) for i in range(L.size)] == list(range(L.size))


@_S
@given(injective_layouts())
def test_left_inverse(L):
    R = left_inverse(L)
    assert [R(L(i)) for i in range(L.size)] == list(range(L.size))


def test_left_inverse_rejects_non_injective():
    with pytest.raises(LayoutError):
        left_inverse(Layout((4, 2), (1, 0)))


# ----------------------------------------------------------------------------------------------
# divide and product
# ----------------------------------------------------------------------------------------------

def test_divide_product_worked_examples():
    assert logical_divide(Layout(24), Layout(4, 2)) == Layout((4, (2, 3)), (2, (1, 8)))
    # pycute's int branch calls logical_divide and returns (3,2):(1,3); ours is the product
    assert logical_product(Layout(4, 1), 3) == Layout((4, 3), (1, 4))
    assert logical_product(Layout(4, 1), Layout(3)) == Layout((4, 3), (1, 4))
    assert blocked_product(Layout((2, 2)), Layout((3, 4))) == Layout(((2, 3), (2, 4)), ((1, 4), (2, 12)))
    assert raked_product(Layout((2, 2)), Layout((3, 4))) == Layout(((3, 2), (4, 2)), ((4, 1), (12, 2)))
    assert zipped_divide(Layout((8, 16)), (2, 4)) == Layout(((2, 4), (4, 4)), ((1, 8), (2, 32)))
    assert tiled_divide(Layout((8, 16)), (2, 4)) == Layout(((2, 4), 4, 4), ((1, 8), 2, 32))
    with pytest.raises(LayoutError, match="does not divide"):
        logical_divide(Layout(24), Layout(5))


@_S
@given(layouts(leaf=st.sampled_from([1, 2, 4, 8])), st.data())
def test_logical_divide(A, data):
    B = data.draw(injective_layouts(leaf=st.sampled_from([1, 2, 4]), gap=st.sampled_from([1, 2])))
    try:
        D = logical_divide(A, B)
    except LayoutError:
        return
    assert D.size == A.size
    assert sorted(image(D)) == sorted(image(A))        # a permutation of A's image
    tile = [D((i, 0)) for i in range(B.size)]
    assert tile == [A(B(i)) for i in range(B.size)]    # the first tile is A o B


@_S
@given(bijective_layouts(leaf=st.sampled_from([1, 2, 4])), st.data())
def test_logical_divide_by_mode(A, data):
    """A tuple tiler divides each mode; the result keeps A's size and image."""
    assume(not isinstance(A.shape, int) and A.rank >= 1)
    tiler = tuple(data.draw(st.sampled_from([None] + [t for t in (1, 2, 4) if m.size % t == 0]))
                  for m in A)
    D = logical_divide(A, tiler)
    assert D.size == A.size and sorted(image(D)) == sorted(image(A))


@_S
@given(injective_layouts(leaf=st.integers(1, 4)), layouts(stride=st.integers(0, 6)))
def test_logical_product(A, B):
    assume(A.size * B.size <= 1024)
    try:
        P = logical_product(A, B)
    except LayoutError:
        return
    assert P.size == A.size * B.size
    assert P[0] == A
    assert image(P[1]) == [complement(A, A.size * B.cosize)(B(i)) for i in range(B.size)]
    if len(set(image(B))) == B.size:                   # B injective -> the product is too
        assert len(set(image(P))) == P.size


@_S
@given(bijective_layouts(leaf=st.integers(1, 4)), bijective_layouts(leaf=st.integers(1, 4)))
def test_product_of_compact_layouts_is_compact(A, B):
    assume(A.size * B.size <= 1024)
    P = logical_product(A, B)
    assert sorted(image(P)) == list(range(A.size * B.size))


# ----------------------------------------------------------------------------------------------
# slicing
# ----------------------------------------------------------------------------------------------

def test_slice():
    L = Layout((4, (2, 3)), (2, (1, 8)))
    sub, off = L[(None, 3)]                 # n = 3 -> (1, 1) in (2,3)
    assert sub == Layout(4, 2) and off == 1 + 8
    sub, off = slice_(L, (2, (None, 1)))
    assert sub == Layout(2, 1) and off == 4 + 8
    sub, off = slice_(L, (None, (1, None)))
    assert sub == Layout((4, 3), (2, 8)) and off == 1
    sub, off = slice_(L, (1, 5))
    assert sub == Layout(1, 0) and off == L((1, 5))


@_S
@given(layouts())
def test_slice_property(L):
    """Keeping mode 0 and fixing the rest: L((i, c...)) == off + sub(i)."""
    assume(not isinstance(L.shape, int) and L.rank >= 2)
    rest = tuple(m.size - 1 for m in list(L)[1:])
    sub, off = slice_(L, (None,) + rest)
    assert [off + sub(i) for i in range(L[0].size)] == [L((i,) + rest) for i in range(L[0].size)]


# ----------------------------------------------------------------------------------------------
# swizzles
# ----------------------------------------------------------------------------------------------

@_S
@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.booleans())
def test_swizzle_is_bijection(bits, base, extra, neg):
    shift = bits + extra
    sw = Swizzle(bits, base, -shift if neg and shift else shift)
    n = 1 << (bits + base + shift)
    assert sw.period == n
    vals = [sw(o) for o in range(n)]
    assert sorted(vals) == list(range(n))
    assert [sw(v) for v in vals] == list(range(n))      # an involution


def test_swizzle_semantics():
    sw = Swizzle(3, 4, 3)                               # 128B smem swizzle on byte offsets
    for o in range(0, 4096, 2):
        assert sw(o) == o ^ (((o >> 7) & 7) << 4)        # fragment-layouts.md §3.5 swz(o, 128)
    assert sw.yyy_mask == 0b111 << 7 and sw.zzz_mask == 0b111 << 4
    with pytest.raises(LayoutError):
        Swizzle(3, 4, 2)


@_S
@given(st.integers(1, 3), st.integers(0, 2), st.integers(0, 2), bijective_layouts(), st.integers(0, 3))
def test_composed_layout_is_bijection_on_codomain(bits, base, extra, L, k):
    sw = Swizzle(bits, base, bits + extra)
    reps = sw.period // math.gcd(L.size, sw.period)
    full = make_layout(L, Layout(reps, L.size))          # a bijection onto [0, m * period)
    assert full.size % sw.period == 0
    off = k * sw.period
    C = swizzled(full, sw, off)
    assert C.size == full.size
    assert sorted(image(C)) == list(range(off, off + full.size))


def test_composed_layout_ops():
    C = swizzled(Layout((8, 64), (64, 1)), Swizzle(3, 3, 3))
    assert str(C) == "sw<3,3,3> o (8,64):(64,1)"
    assert str(swizzled(Layout((8, 64), (64, 1)), Swizzle(3, 4, 3), 16)) == "sw<3,4,3> o 16 + (8,64):(64,1)"
    D = logical_divide(C, (None, Layout(8)))
    assert isinstance(D, ComposedLayout)
    assert [D(i) for i in range(C.size)] == [C((i % 8, (i // 8) % 8 + 8 * (i // 64))) for i in range(C.size)]
    sub, off = slice_(C, (3, None))
    assert off == 0 and [sub(j) for j in range(64)] == [C((3, j)) for j in range(64)]


# ----------------------------------------------------------------------------------------------
# text form
# ----------------------------------------------------------------------------------------------

signed_layouts = layouts(stride=st.integers(-30, 30))


@_S
@given(signed_layouts)
def test_parse_round_trip_layout(L):
    text = str(L)
    P = parse_layout(text)
    assert P == L and str(P) == text


@_S
@given(signed_layouts, st.integers(0, 3), st.integers(0, 4), st.integers(0, 3), st.integers(-64, 64))
def test_parse_round_trip_composed(L, bits, base, extra, off):
    C = ComposedLayout(Swizzle(bits, base, bits + extra), off, L)
    text = str(C)
    P = parse_layout(text)
    assert P == C and str(P) == text
    assert (" + " in text) == (off != 0)


@st.composite
def tv_layouts(draw):
    dims = draw(st.lists(st.integers(1, 8), min_size=1, max_size=3))
    tile = dims[0] if len(dims) == 1 and draw(st.booleans()) else tuple(dims)
    n = _prod(dims)
    thr = draw(shapes(st.integers(1, 4)))
    val = draw(shapes(st.integers(1, 4)))
    leaves = _leaves(thr) + _leaves(val)
    strides = []
    for s in leaves:
        strides.append(draw(st.integers(0, max(0, (n - 1) // max(1, s - 1)))))
    assume(1 + sum((s - 1) * d for s, d in zip(leaves, strides)) <= n)
    it = iter(strides)
    lay = make_layout(Layout(thr, _unflatten(it, thr)), Layout(val, _unflatten(it, val)))
    return TVLayout(tile, lay)


@_S
@given(tv_layouts())
def test_parse_round_trip_tv(tv):
    text = str(tv)
    assert text.startswith("tv<") and " | " in text
    P = parse_layout(text)
    assert P == tv and str(P) == text


def test_parse_whitespace_and_exact_strings():
    assert parse_layout(" ( 4 , ( 2 ,3)) : (2,( 1, 8 ) ) ") == Layout((4, (2, 3)), (2, (1, 8)))
    assert parse_layout("8:1") == Layout(8, 1)
    assert parse_layout("(8):(1)") == Layout((8,), (1,))
    assert parse_layout("():()") == Layout((), ())
    assert parse_layout("sw<3,4,3> o 8:1") == ComposedLayout(Swizzle(3, 4, 3), 0, Layout(8, 1))
    assert parse_layout("sw<3,4,3> o -16 + 8:1") == ComposedLayout(Swizzle(3, 4, 3), -16, Layout(8, 1))
    tv = parse_layout("tv<(16,8) | ((4,8),(2,2)):((32,1),(16,8))>")
    assert isinstance(tv, TVLayout) and tv.num_threads == 32 and tv.values_per_thread == 4


@pytest.mark.parametrize("text,pos", [
    ("(4,2)(1,4)", 5),              # missing ':'
    ("(4,2):(1", 8),                # unterminated tuple
    ("(4,2):(1,4", 10),
    ("(4,,2):(1,4)", 3),            # empty element
    ("(4,2):(1,4) x", 12),          # trailing text
    ("4:", 2),
    ("", 0),
    ("sw<3,4> o 8:1", 6),           # swizzle with two fields
    ("sw<3,4,3> 8:1", 10),          # missing 'o'
    ("sw<3,4,3> o 16 (8):(1)", 15),  # offset without '+'
    ("tv<(16,8) ((4,8),(2,2)):((32,1),(16,8))>", 10),   # missing '|'
    ("tv<(16,8) | ((4,8),(2,2)):((32,1),(16,8))", 41),  # missing '>'
    ("(4,2):(1,4,2)", 0),           # shape/stride not congruent
    ("(0,2):(1,4)", 0),             # zero extent
    ("sw<3,4,1> o 8:1", 0),         # |shift| < bits
    ("tv<(4,4) | (4,4):(1,8)>", 0),  # reaches outside the tile
    ("tv<(4,4) | 16:1>", 0),        # needs two modes
    ("4:a", 2),
])
def test_parse_errors(text, pos):
    with pytest.raises(LayoutError) as ei:
        parse_layout(text)
    assert ei.value.pos == pos, str(ei.value)
    assert f"position {pos}" in str(ei.value)


# ----------------------------------------------------------------------------------------------
# register layouts
# ----------------------------------------------------------------------------------------------

def test_tv_layout_basics():
    tv = TVLayout((4, 8), Layout(((4, 2), (2, 2)), ((8, 1), (4, 2))))
    assert tv.num_threads == 8 and tv.values_per_thread == 4
    assert tv.coord(0, 0) == (0, 0) and tv.coord(1, 0) == (0, 2) and tv.coord(4, 0) == (1, 0)
    assert tv.coord(0, 2) == (2, 0)
    assert tv.owners((2, 3)) == [(1, 3)]
    assert tv.covers_tile() and not tv.is_replicated
    table = tv.to_table()
    assert len(table) == 32 and sorted(table.values()) == sorted(itertools.product(range(4), range(8)))
    with pytest.raises(LayoutError):
        tv.coord(8, 0)


@_S
@given(st.sampled_from([1, 2, 4, 8, 16]), st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 4]),
       st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4]),
       st.booleans())
def test_tv_blocked(M, N, vm, vn, tm, tn, row):
    assume(M % vm == 0 and N % vn == 0)
    try:
        tv = tv_blocked((M, N), (tm, tn), (vm, vn), order=(1, 0) if row else (0, 1))
    except LayoutError:
        return
    assert tv.num_threads == tm * tn
    assert tv.covers_tile()
    # replicated exactly when there are more threads than chunks
    assert tv.is_replicated == (tm * tn * tv.values_per_thread > M * N)
    for t in range(tv.num_threads):
        coords = [tv.coord(t, v) for v in range(vm * vn)]
        # value slots 0 .. vm*vn-1 are one contiguous vm x vn chunk at a chunk-aligned corner
        m0, n0 = coords[0]
        assert m0 % vm == 0 and n0 % vn == 0
        assert sorted(coords) == sorted((m0 + i, n0 + j) for i in range(vm) for j in range(vn))
    # order: thread 1 is the next chunk along the fastest dim (when that dim has several threads)
    if row and tn > 1 and N // vn > 1:
        assert tv.coord(1, 0) == (0, vn)
    if not row and tm > 1 and M // vm > 1:
        assert tv.coord(1, 0) == (vm, 0)


def test_tv_blocked_replication_and_replicate():
    tv = tv_blocked(8, 8, 2)                            # 8 threads, 4 chunks of 2: 2x replication
    assert tv.num_threads == 8 and tv.values_per_thread == 2 and tv.is_replicated and tv.covers_tile()
    assert tv.owners((3,)) == [(1, 1), (5, 1)]
    r = replicate(tv_blocked((4, 8), (2, 4), (2, 2)), 4)
    assert r.num_threads == 32 and r.is_replicated and r.covers_tile()
    for t in range(8):
        for v in range(4):
            assert {r.coord(t + 8 * k, v) for k in range(4)} == {r.coord(t, v)}
    assert len(r.owners((0, 0))) == 4


def test_picture():
    tv = tv_blocked((2, 4), (2, 2), (1, 2))
    pic = picture(tv)
    assert pic.splitlines()[0] == str(tv)
    assert pic.splitlines()[2].split() == ["0", "|", "T0V0", "T0V1", "T1V0", "T1V1"]
    assert "+1" in picture(replicate(tv, 2))
    lp = picture(Layout((2, 3), (3, 1)))
    assert lp.splitlines()[2].split() == ["0", "|", "0", "1", "2"]
    assert lp.splitlines()[3].split() == ["1", "|", "3", "4", "5"]
