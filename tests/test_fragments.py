"""Tensor-core fragments (tile.ir.fragments) against /work/shared/notes/fragment-layouts.md.

Every fragment is checked for EVERY (thread, value) against the formula of the notes, against spot
rows transcribed from the notes' tables, and for being a bijection onto its tile.
"""
from __future__ import annotations

import pytest

from tile.ir import fragments as F
from tile.ir.layout import Layout, composition, parse_layout
from tile.ir.register_layout import TVLayout


def check_formula(tv: TVLayout, formula, threads: int, values: int, tile: tuple) -> None:
    """tv has the given thread/value counts and tile, equals `formula` everywhere, and is a
    bijection between (t, v) pairs and tile elements."""
    assert tv.num_threads == threads and tv.values_per_thread == values
    assert tv.tile_dims == tile
    for t in range(threads):
        for v in range(values):
            assert tv.coord(t, v) == tuple(formula(t, v)), (t, v)
    assert threads * values == tv.tile_size
    assert tv.covers_tile() and not tv.is_replicated and tv.is_bijective()
    assert parse_layout(str(tv)) == tv


def check_rows(tv: TVLayout, rows: dict) -> None:
    """rows: {thread: [coord of value 0, coord of value 1, ...]} transcribed from a notes table."""
    for t, coords in rows.items():
        assert [tv.coord(t, v) for v in range(len(coords))] == [tuple(c) for c in coords], t
        for v, c in enumerate(coords):
            assert tv.owners(tuple(c)) == [(t, v)]


# ----------------------------------------------------------------------------------------------
# PTX ISA mma.m16n8k16 fragment table / fragment-layouts.md §1 (VERIFIED-H100)
# ----------------------------------------------------------------------------------------------

def mma_A(lane, i):
    g, t = lane >> 2, lane & 3
    return g + 8 * ((i >> 1) & 1), 2 * t + (i & 1) + 8 * (i >> 2)


def mma_B(lane, i):
    g, t = lane >> 2, lane & 3
    return 2 * t + (i & 1) + 8 * (i >> 1), g


def mma_C(lane, i):
    g, t = lane >> 2, lane & 3
    return g + 8 * (i >> 1), 2 * t + (i & 1)


def test_mma_m16n8k16_a():
    """PTX ISA mma.m16n8k16 fragment table (A, 16x16 m x k) / fragment-layouts.md §1."""
    tv = F.mma_m16n8k16_a()
    check_formula(tv, mma_A, 32, 8, (16, 16))
    check_rows(tv, {
        0: [(0, 0), (0, 1), (8, 0), (8, 1), (0, 8), (0, 9), (8, 8), (8, 9)],
        1: [(0, 2), (0, 3), (8, 2), (8, 3), (0, 10), (0, 11), (8, 10), (8, 11)],
        3: [(0, 6), (0, 7), (8, 6), (8, 7), (0, 14), (0, 15), (8, 14), (8, 15)],
        4: [(1, 0), (1, 1), (9, 0), (9, 1), (1, 8), (1, 9), (9, 8), (9, 9)],
        5: [(1, 2), (1, 3), (9, 2), (9, 3), (1, 10), (1, 11), (9, 10), (9, 11)],
        31: [(7, 6), (7, 7), (15, 6), (15, 7), (7, 14), (7, 15), (15, 14), (15, 15)],
    })
    # CuTe notation given in §1 (A indexes (M,K) column-major, as ours does)
    assert tv.layout == Layout(((4, 8), (2, 2, 2)), ((32, 1), (16, 8, 128)))


def test_mma_m16n8k16_b():
    """PTX ISA mma.m16n8k16 fragment table (B, 16x8 k x n) / fragment-layouts.md §1."""
    tv = F.mma_m16n8k16_b()
    check_formula(tv, mma_B, 32, 4, (16, 8))
    check_rows(tv, {
        0: [(0, 0), (1, 0), (8, 0), (9, 0)],
        1: [(2, 0), (3, 0), (10, 0), (11, 0)],
        3: [(6, 0), (7, 0), (14, 0), (15, 0)],
        4: [(0, 1), (1, 1), (8, 1), (9, 1)],
        5: [(2, 1), (3, 1), (10, 1), (11, 1)],
        31: [(6, 7), (7, 7), (14, 7), (15, 7)],
    })
    # §1's CuTe B layout indexes (N,K) column-major; ours indexes (K,N): same map after transposing
    cute_b = Layout(((4, 8), (2, 2)), ((16, 1), (8, 64)))
    for t in range(32):
        for v in range(4):
            k, n = tv.coord(t, v)
            assert cute_b((t, v)) == n + 8 * k


def test_mma_m16n8k16_c():
    """PTX ISA mma.m16n8k16 fragment table (C/D, 16x8 m x n) / fragment-layouts.md §1."""
    tv = F.mma_m16n8k16_c()
    check_formula(tv, mma_C, 32, 4, (16, 8))
    check_rows(tv, {
        0: [(0, 0), (0, 1), (8, 0), (8, 1)],
        1: [(0, 2), (0, 3), (8, 2), (8, 3)],
        3: [(0, 6), (0, 7), (8, 6), (8, 7)],
        4: [(1, 0), (1, 1), (9, 0), (9, 1)],
        5: [(1, 2), (1, 3), (9, 2), (9, 3)],
        31: [(7, 6), (7, 7), (15, 6), (15, 7)],
    })
    assert str(tv) == "tv<(16,8) | ((4,8),(2,2)):((32,1),(16,8))>"


# ----------------------------------------------------------------------------------------------
# ldmatrix: fragment-layouts.md §2 "What each lane receives" (VERIFIED-H100)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix(num, trans):
    """fragment-layouts.md §2: no trans lo/hi = M_j[l/4][2(l%4)+h]; .trans M_j[2(l%4)+h][l/4];
    value h + 2j is half h of destination register j."""
    tv = F.ldmatrix(num, trans)

    def formula(l, v):
        h, j = v % 2, v // 2
        r, c = (2 * (l % 4) + h, l // 4) if trans else (l // 4, 2 * (l % 4) + h)
        return (r, c, j) if num > 1 else (r, c)
    check_formula(tv, formula, 32, 2 * num, (8, 8, num) if num > 1 else (8, 8))


def test_ldmatrix_x4_table():
    """fragment-layouts.md §2 table 'Values seen on the H100' (matrix j, (row, col), lo|hi)."""
    plain, trans = F.ldmatrix_x4(), F.ldmatrix_x4(trans=True)
    rows_plain = {0: [(0, 0), (0, 1)], 1: [(0, 2), (0, 3)], 4: [(1, 0), (1, 1)], 31: [(7, 6), (7, 7)]}
    rows_trans = {0: [(0, 0), (1, 0)], 1: [(2, 0), (3, 0)], 4: [(0, 1), (1, 1)], 31: [(6, 7), (7, 7)]}
    for tv, rows in ((plain, rows_plain), (trans, rows_trans)):
        for lane, (lo, hi) in rows.items():
            for j in range(4):
                assert tv.coord(lane, 2 * j) == lo + (j,)
                assert tv.coord(lane, 2 * j + 1) == hi + (j,)


def test_ldmatrix_x4_feeds_mma_a():
    """fragment-layouts.md §2 'Feeding m16n8k16': with lane l addressing A[l%16][8*(l//16)],
    matrix j covers rows 8*(j%2).., k 8*(j//2).., and {r0..r3} = {a0a1, a2a3, a4a5, a6a7}.
    In the algebra: (8x8x4 ldmatrix tile -> 16x16 A tile) o ldmatrix_x4 == mma A fragment."""
    to_a = Layout((8, 8, (2, 2)), (1, 16, (8, 128)))   # (r, c, j) -> (r + 8(j%2)) + 16(c + 8(j//2))
    ld = F.ldmatrix_x4()
    moved = composition(to_a, ld.layout)
    a = F.mma_m16n8k16_a()
    assert [moved(i) for i in range(256)] == [a.layout(i) for i in range(256)]


# ----------------------------------------------------------------------------------------------
# wgmma: fragment-layouts.md §3.1 (accumulator) and §3.2 (A from registers), VERIFIED-H100
# ----------------------------------------------------------------------------------------------

def wgmma_D(t, r):
    w, l = t >> 5, t & 31
    g, q = l >> 2, l & 3
    return 16 * w + g + 8 * ((r >> 1) & 1), 8 * (r >> 2) + 2 * q + (r & 1)


@pytest.mark.parametrize("n", [64, 128, 256])
def test_wgmma_acc(n):
    """fragment-layouts.md §3.1 accumulator formula, for N = 64, 128, 256."""
    tv = F.wgmma_acc(n)
    check_formula(tv, wgmma_D, 128, n // 2, (64, n))
    assert tv.layout == Layout(((4, 8, 4), (2, 2, n // 8)), ((128, 1, 16), (64, 8, 512)))


def test_wgmma_acc_table():
    """fragment-layouts.md §3.1 table 'Observed on the H100 (m64n256k16)': d0..d7 and d127."""
    tv = F.wgmma_acc(256)
    rows = {
        0: [(0, 0), (0, 1), (8, 0), (8, 1), (0, 8), (0, 9), (8, 8), (8, 9)],
        1: [(0, 2), (0, 3), (8, 2), (8, 3), (0, 10), (0, 11), (8, 10), (8, 11)],
        3: [(0, 6), (0, 7), (8, 6), (8, 7), (0, 14), (0, 15), (8, 14), (8, 15)],
        4: [(1, 0), (1, 1), (9, 0), (9, 1), (1, 8), (1, 9), (9, 8), (9, 9)],
        31: [(7, 6), (7, 7), (15, 6), (15, 7), (7, 14), (7, 15), (15, 14), (15, 15)],
        32: [(16, 0), (16, 1), (24, 0), (24, 1), (16, 8), (16, 9), (24, 8), (24, 9)],
        64: [(32, 0), (32, 1), (40, 0), (40, 1), (32, 8), (32, 9), (40, 8), (40, 9)],
        127: [(55, 6), (55, 7), (63, 6), (63, 7), (55, 14), (55, 15), (63, 14), (63, 15)],
    }
    check_rows(tv, rows)
    d127 = {0: (8, 249), 1: (8, 251), 3: (8, 255), 4: (9, 249), 31: (15, 255),
            32: (24, 249), 64: (40, 249), 127: (63, 255)}
    for t, c in d127.items():
        assert tv.coord(t, 127) == c


def test_wgmma_acc_small_and_invalid():
    """§3: N is a multiple of 8 from 8 to 256."""
    check_formula(F.wgmma_acc(8), wgmma_D, 128, 4, (64, 8))
    for bad in (0, 12, 264):
        with pytest.raises(ValueError):
            F.wgmma_acc(bad)


def test_wgmma_a():
    """fragment-layouts.md §3.2 RS-form A formula and table."""
    def formula(t, i):
        w, l = t >> 5, t & 31
        g, q = l >> 2, l & 3
        return 16 * w + g + 8 * ((i >> 1) & 1), 2 * q + (i & 1) + 8 * (i >> 2)
    tv = F.wgmma_a()
    check_formula(tv, formula, 128, 8, (64, 16))
    check_rows(tv, {
        0: [(0, 0), (0, 1), (8, 0), (8, 1), (0, 8), (0, 9), (8, 8), (8, 9)],
        1: [(0, 2), (0, 3), (8, 2), (8, 3), (0, 10), (0, 11), (8, 10), (8, 11)],
        4: [(1, 0), (1, 1), (9, 0), (9, 1), (1, 8), (1, 9), (9, 8), (9, 9)],
        32: [(16, 0), (16, 1), (24, 0), (24, 1), (16, 8), (16, 9), (24, 8), (24, 9)],
        127: [(55, 6), (55, 7), (63, 6), (63, 7), (55, 14), (55, 15), (63, 14), (63, 15)],
    })
    # per warp it is the m16n8k16 A fragment (rows shifted by 16w)
    a = F.mma_m16n8k16_a()
    for t in range(128):
        for i in range(8):
            m, k = a.coord(t % 32, i)
            assert tv.coord(t, i) == (m + 16 * (t // 32), k)


# ----------------------------------------------------------------------------------------------
# AMD MFMA: fragment-layouts.md §4 (AMD Matrix Instruction Calculator v1.3.2; CK/Triton for §4.3)
# ----------------------------------------------------------------------------------------------

def mfma_AB(lane, e, nonk, kper):       # §4.4 helper: -> (i or j, k)
    return lane % nonk, kper * (lane // nonk) + e


def mfma_CD(lane, r, nonk):             # §4.4 helper: -> (i, j)
    i = (8 * (r // 4) + 4 * (lane // 32) + r % 4) if nonk == 32 else (4 * (lane // 16) + r)
    return i, lane % nonk


MFMA = [  # (name, nonk, kper, K)
    ("32x32x8", 32, 4, 8), ("16x16x16", 16, 4, 16),      # §4.1, §4.2 (gfx90a / gfx942)
    ("32x32x16", 32, 8, 16), ("16x16x32", 16, 8, 32),    # §4.3 (gfx950)
]


@pytest.mark.parametrize("name,nonk,kper,K", MFMA)
def test_mfma_a(name, nonk, kper, K):
    """fragment-layouts.md §4.1/4.2/4.3 A: i = l % nonk, k = kper*(l // nonk) + e."""
    tv = getattr(F, f"mfma_{name}_a")()
    check_formula(tv, lambda l, e: mfma_AB(l, e, nonk, kper), 64, kper, (nonk, K))


@pytest.mark.parametrize("name,nonk,kper,K", MFMA)
def test_mfma_b(name, nonk, kper, K):
    """fragment-layouts.md §4.1/4.2/4.3 B: j = l % nonk, k = kper*(l // nonk) + e; coord (k, j)."""
    tv = getattr(F, f"mfma_{name}_b")()

    def formula(l, e):
        j, k = mfma_AB(l, e, nonk, kper)
        return k, j
    check_formula(tv, formula, 64, kper, (K, nonk))


@pytest.mark.parametrize("name,nonk,kper,K", MFMA)
def test_mfma_c(name, nonk, kper, K):
    """fragment-layouts.md §4.1/4.2 C/D (unchanged for the §4.3 gfx950 variants)."""
    tv = getattr(F, f"mfma_{name}_c")()
    check_formula(tv, lambda l, r: mfma_CD(l, r, nonk), 64, 16 if nonk == 32 else 4, (nonk, nonk))


def test_mfma_32x32x8_table():
    """fragment-layouts.md §4.1 table (lanes 0, 1, 31, 32, 63)."""
    a, c = F.mfma_32x32x8_a(), F.mfma_32x32x8_c()
    check_rows(a, {0: [(0, 0), (0, 1), (0, 2), (0, 3)], 1: [(1, e) for e in range(4)],
                   31: [(31, e) for e in range(4)], 32: [(0, 4), (0, 5), (0, 6), (0, 7)],
                   63: [(31, 4 + e) for e in range(4)]})
    # C: r0..r3 / r4..r7 / r8..r11 / r12..r15 are row blocks starting at these rows, in column l % 32
    starts = {0: [0, 8, 16, 24], 1: [0, 8, 16, 24], 31: [0, 8, 16, 24], 32: [4, 12, 20, 28], 63: [4, 12, 20, 28]}
    for lane, st in starts.items():
        check_rows(c, {lane: [(st[r // 4] + r % 4, lane % 32) for r in range(16)]})


def test_mfma_16x16x16_table():
    """fragment-layouts.md §4.2 table (lanes 0, 1, 15, 16, 63)."""
    a, c = F.mfma_16x16x16_a(), F.mfma_16x16x16_c()
    check_rows(a, {0: [(0, e) for e in range(4)], 1: [(1, e) for e in range(4)],
                   15: [(15, e) for e in range(4)], 16: [(0, 4 + e) for e in range(4)],
                   63: [(15, 12 + e) for e in range(4)]})
    check_rows(c, {0: [(0, 0), (1, 0), (2, 0), (3, 0)], 1: [(0, 1), (1, 1), (2, 1), (3, 1)],
                   15: [(r, 15) for r in range(4)], 16: [(4, 0), (5, 0), (6, 0), (7, 0)],
                   63: [(12 + r, 15) for r in range(4)]})


def test_fragments_round_trip_text():
    for name in F.__all__:
        fn = getattr(F, name)
        tvs = [fn(64)] if name == "wgmma_acc" else [fn(4)] if name == "ldmatrix" else [fn()]
        for tv in tvs:
            assert parse_layout(str(tv)) == tv and str(parse_layout(str(tv))) == str(tv)
