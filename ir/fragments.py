"""Tensor-core fragments as TVLayouts (no special-cased code: each is one ``(thread, value)`` layout).

Source: /work/shared/notes/fragment-layouts.md (NVIDIA parts verified on an H100; AMD from the AMD
Matrix Instruction Calculator, CK and Triton docs).  Conventions:

* thread = lane (or thread in the warpgroup), value = the element index of the PTX / AMD table
  (element ``2j`` is in the low half of 32-bit register ``j``, ``2j+1`` in the high half);
* the tile coordinate is the table's ``(row, col)``: ``(m, k)`` for A, ``(k, n)`` for B, ``(m, n)``
  for C/D, and the tile index is colexicographic (``row + ROWS*col``).  Note: CuTe's ``BLayout``
  indexes B as ``(n, k)``; here B is ``(k, n)`` so that ``coord(t, v)`` is the table's entry.

Every fragment is a bijection between (thread, value) pairs and the tile elements.
"""
from __future__ import annotations

from .layout import Layout, LayoutError
from .register_layout import TVLayout

__all__ = [
    "mma_m16n8k16_a", "mma_m16n8k16_b", "mma_m16n8k16_c",
    "mma_m16n8k32_a", "mma_m16n8k32_b", "mma_m16n8k32_c",
    "wgmma_acc", "wgmma_a", "wgmma_a8",
    "mfma_32x32x8_a", "mfma_32x32x8_b", "mfma_32x32x8_c",
    "mfma_16x16x16_a", "mfma_16x16x16_b", "mfma_16x16x16_c",
    "mfma_32x32x16_a", "mfma_32x32x16_b", "mfma_32x32x16_c",
    "mfma_16x16x32_a", "mfma_16x16x32_b", "mfma_16x16x32_c",
    "ldmatrix", "ldmatrix_x1", "ldmatrix_x2", "ldmatrix_x4",
]


# ----------------------------------------------------------------------------------------------
# NVIDIA mma.sync m16n8k16 (bf16/f16 in, f32 accumulate)
# ----------------------------------------------------------------------------------------------

def mma_m16n8k16_a() -> TVLayout:
    """A operand (16x16, (m, k)) of ``mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32``.

    Source: PTX ISA mma.m16n8k16 fragment table, fragment-layouts.md §1 (VERIFIED-H100):
    lane = t + 4g, element i -> row = g + 8*((i>>1)&1), col = 2t + (i&1) + 8*(i>>2).
    Thread mode (t, g) = (4,8):(2*16, 1); value mode (i&1, (i>>1)&1, i>>2) = (2,2,2):(16, 8, 128).
    """
    return TVLayout((16, 16), Layout(((4, 8), (2, 2, 2)), ((32, 1), (16, 8, 128))))


def mma_m16n8k16_b() -> TVLayout:
    """B operand (16x8, (k, n)) of ``mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32``.

    Source: PTX ISA mma.m16n8k16 fragment table, fragment-layouts.md §1 (VERIFIED-H100):
    element i -> k = 2t + (i&1) + 8*(i>>1), n = g.  Tile index k + 16n.
    """
    return TVLayout((16, 8), Layout(((4, 8), (2, 2)), ((2, 16), (1, 8))))


def mma_m16n8k16_c() -> TVLayout:
    """C/D accumulator (16x8, (m, n)) of ``mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32``.

    Source: PTX ISA mma.m16n8k16 fragment table, fragment-layouts.md §1 (VERIFIED-H100):
    element i -> row = g + 8*(i>>1), col = 2t + (i&1).  (CuTe ``((4,8),(2,2)):((32,1),(16,8))``.)
    """
    return TVLayout((16, 8), Layout(((4, 8), (2, 2)), ((32, 1), (16, 8))))


# ----------------------------------------------------------------------------------------------
# NVIDIA mma.sync m16n8k32 (8-bit inputs: s8/u8 -> s32 on sm_80+, e4m3/e5m2 -> f32 on sm_89+)
# ----------------------------------------------------------------------------------------------

def mma_m16n8k32_a() -> TVLayout:
    """A operand (16x32, (m, k)) of ``mma.sync.aligned.m16n8k32.row.col.{s32.s8.s8.s32 |
    f32.e4m3.e4m3.f32 | ...}``: 4 b32 registers of 4 bytes each, a0..a15.

    Source: PTX ISA, "Matrix Fragments for mma.m16n8k32" (.s8/.u8/.e4m3/.e5m2; DOC, and CuTe's
    ``SM80_16x32_Row`` ``((4,8),(4,2,2)):((64,1),(16,8,256))``, the same function):
    row = g for a0..a3 and a8..a11, g + 8 otherwise; col = 4t + (i & 3), + 16 for i >= 8.
    Byte-wise this is the m16n8k16 A fragment with each 16-bit element split into two bytes (the
    same registers hold the same bytes), which is why ldmatrix (b16, no .trans) reads it from a
    K-contiguous tile exactly as it reads the 16-bit one (fragment-layouts.md §2).
    Thread mode (t, g) = (4,8):(4*16, 1); value mode (i&3, (i>>2)&1, i>>3) = (4,2,2):(16, 8, 256).
    """
    return TVLayout((16, 32), Layout(((4, 8), (4, 2, 2)), ((64, 1), (16, 8, 256))))


def mma_m16n8k32_b() -> TVLayout:
    """B operand (32x8, (k, n)) of ``mma.sync.aligned.m16n8k32.row.col`` (8-bit inputs): 2 b32
    registers, b0..b7.

    Source: PTX ISA "Matrix Fragments for mma.m16n8k32" (DOC; CuTe ``SM80_16x8x32`` B
    ``((4,8),(4,2)):((32,1),(8,128))`` over (n, k), the same function): k = 4t + (i & 3), + 16
    for i >= 4; n = g. Tile index k + 32n.
    """
    return TVLayout((32, 8), Layout(((4, 8), (4, 2)), ((4, 32), (1, 16))))


def mma_m16n8k32_c() -> TVLayout:
    """C/D accumulator (16x8, (m, n)) of ``mma.sync.aligned.m16n8k32`` (s32 or f32): the same
    layout as m16n8k16's (PTX ISA: row = g + 8*(i>>1), col = 2t + (i&1))."""
    return mma_m16n8k16_c()


# ----------------------------------------------------------------------------------------------
# NVIDIA wgmma m64nNk16 (sm_90a)
# ----------------------------------------------------------------------------------------------

def wgmma_acc(n: int) -> TVLayout:
    """Accumulator D (64 x n, (m, n)) of ``wgmma.mma_async m64nNk16.f32.bf16.bf16``; 128 threads,
    n/2 f32 values each.

    Source: fragment-layouts.md §3.1 (VERIFIED-H100 for N = 64, 128, 256): thread
    t = q + 4g + 32w, register r -> row = 16w + g + 8*((r>>1)&1), col = 8*(r>>2) + 2q + (r&1).
    CuTe ``((4,8,4),(2,2,N/8)):((128,1,16),(64,8,512))``.
    """
    if not isinstance(n, int) or n % 8 or not 8 <= n <= 256:
        raise LayoutError(f"wgmma_acc: N must be a multiple of 8 in [8, 256], got {n!r}")
    return TVLayout((64, n), Layout(((4, 8, 4), (2, 2, n // 8)), ((128, 1, 16), (64, 8, 512))))


def wgmma_a() -> TVLayout:
    """A from registers (RS form), one k16 step (64x16, (m, k)), 128 threads x 8 bf16.

    Source: fragment-layouts.md §3.2 (VERIFIED-H100): element i -> row = 16w + g + 8*((i>>1)&1),
    col = 2q + (i&1) + 8*(i>>2); per warp it is the m16n8k16 A fragment.
    """
    return TVLayout((64, 16), Layout(((4, 8, 4), (2, 2, 2)), ((128, 1, 16), (64, 8, 512))))


def wgmma_a8() -> TVLayout:
    """A from registers (RS form) of ``wgmma.mma_async m64nNk32`` with 8-bit inputs, one k32 step
    (64x32, (m, k)), 128 threads x 16 bytes.

    Source: PTX ISA "Register Fragments and Shared Memory Matrix Layouts" for wgmma .e4m3/.e5m2/
    .s8/.u8 A (DOC, not run here): per warp w it is the m16n8k32 A fragment of rows 16w..16w+15,
    as for 16-bit inputs (§3.2): row = 16w + g + 8*((i>>2)&1), col = 4q + (i&3) + 16*(i>>3).
    """
    return TVLayout((64, 32), Layout(((4, 8, 4), (4, 2, 2)), ((256, 1, 16), (64, 8, 1024))))


# ----------------------------------------------------------------------------------------------
# NVIDIA ldmatrix
# ----------------------------------------------------------------------------------------------

def ldmatrix(num: int, trans: bool = False) -> TVLayout:
    """What each lane receives from ``ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16``.

    Tile ``(8, 8, num)`` = (row, col, matrix j); value ``h + 2j`` is the low (h=0) / high (h=1)
    half of destination register j.  Source: fragment-layouts.md §2 "What each lane receives"
    (VERIFIED-H100): no trans: M_j[l/4][2(l%4)+h]; .trans: M_j[2(l%4)+h][l/4].
    (Lane l supplies the address of row l%8 of matrix l//8; all 32 lanes receive.)
    """
    if num not in (1, 2, 4):
        raise LayoutError(f"ldmatrix: num must be 1, 2 or 4, got {num!r}")
    thr = ((4, 8), (2, 8)) if trans else ((4, 8), (16, 1))    # (l%4, l/4)
    half = 1 if trans else 8                                  # h moves a row (.trans) or a column
    shape = ((4, 8), (2, num)) if num > 1 else ((4, 8), 2)
    stride = (thr[1], (half, 64)) if num > 1 else (thr[1], half)
    return TVLayout((8, 8, num) if num > 1 else (8, 8), Layout(shape, stride))


def ldmatrix_x1(trans: bool = False) -> TVLayout:
    """``ldmatrix ... .x1``: see :func:`ldmatrix` (tile (8, 8))."""
    return ldmatrix(1, trans)


def ldmatrix_x2(trans: bool = False) -> TVLayout:
    """``ldmatrix ... .x2``: see :func:`ldmatrix` (tile (8, 8, 2))."""
    return ldmatrix(2, trans)


def ldmatrix_x4(trans: bool = False) -> TVLayout:
    """``ldmatrix ... .x4``: see :func:`ldmatrix` (tile (8, 8, 4))."""
    return ldmatrix(4, trans)


# ----------------------------------------------------------------------------------------------
# AMD MFMA (wave64)
# ----------------------------------------------------------------------------------------------

def _mfma_a(nonk: int, kper: int) -> TVLayout:
    # A (M x K), index i + M*k: lane%nonk -> i, lane//nonk -> k += kper, e -> k += 1
    k = (64 // nonk) * kper
    return TVLayout((nonk, k), Layout(((nonk, 64 // nonk), kper), ((1, nonk * kper), nonk)))


def _mfma_b(nonk: int, kper: int) -> TVLayout:
    # B (K x N), index k + K*j: lane%nonk -> j, lane//nonk -> k += kper, e -> k += 1
    k = (64 // nonk) * kper
    return TVLayout((k, nonk), Layout(((nonk, 64 // nonk), kper), ((k, kper), 1)))


def _mfma_c(nonk: int) -> TVLayout:
    # C (M x N), index i + M*j
    if nonk == 32:   # r -> i = 8*(r//4) + 4*(l//32) + r%4, j = l%32
        return TVLayout((32, 32), Layout(((32, 2), (4, 4)), ((32, 4), (1, 8))))
    # nonk == 16:    r -> i = 4*(l//16) + r, j = l%16
    return TVLayout((16, 16), Layout(((16, 4), 4), ((16, 4), 1)))


def mfma_32x32x8_a() -> TVLayout:
    """A (32x8, (i, k)) of gfx90a ``v_mfma_f32_32x32x8bf16_1k`` / gfx942 ``v_mfma_f32_32x32x8_bf16``.

    Source: AMD Matrix Instruction Calculator v1.3.2, fragment-layouts.md §4.1:
    i = l % 32, k = 4*(l // 32) + e, e = 0..3.
    """
    return _mfma_a(32, 4)


def mfma_32x32x8_b() -> TVLayout:
    """B (8x32, (k, j)) of the 32x32x8 bf16 MFMA.  Source: fragment-layouts.md §4.1:
    j = l % 32, k = 4*(l // 32) + e."""
    return _mfma_b(32, 4)


def mfma_32x32x8_c() -> TVLayout:
    """C/D (32x32, (i, j)), 16 f32 per lane, of the 32x32x8 bf16 MFMA.  Source:
    fragment-layouts.md §4.1: r -> i = 8*(r//4) + 4*(l//32) + r%4, j = l % 32."""
    return _mfma_c(32)


def mfma_16x16x16_a() -> TVLayout:
    """A (16x16, (i, k)) of gfx90a ``v_mfma_f32_16x16x16bf16_1k`` / gfx942 ``v_mfma_f32_16x16x16_bf16``.

    Source: AMD Matrix Instruction Calculator v1.3.2, fragment-layouts.md §4.2:
    i = l % 16, k = 4*(l // 16) + e.
    """
    return _mfma_a(16, 4)


def mfma_16x16x16_b() -> TVLayout:
    """B (16x16, (k, j)) of the 16x16x16 bf16 MFMA.  Source: fragment-layouts.md §4.2:
    j = l % 16, k = 4*(l // 16) + e."""
    return _mfma_b(16, 4)


def mfma_16x16x16_c() -> TVLayout:
    """C/D (16x16, (i, j)), 4 f32 per lane, of the 16x16x16 bf16 MFMA.  Source:
    fragment-layouts.md §4.2: r -> i = 4*(l // 16) + r, j = l % 16."""
    return _mfma_c(16)


def mfma_32x32x16_a() -> TVLayout:
    """A (32x16) of gfx950 ``v_mfma_f32_32x32x16_bf16``: i = l % 32, k = 8*(l // 32) + e, e = 0..7.
    Source: fragment-layouts.md §4.3 (CK / Triton / AMD gfx950 example; DOC)."""
    return _mfma_a(32, 8)


def mfma_32x32x16_b() -> TVLayout:
    """B (16x32) of gfx950 ``v_mfma_f32_32x32x16_bf16``: j = l % 32, k = 8*(l // 32) + e.
    Source: fragment-layouts.md §4.3."""
    return _mfma_b(32, 8)


def mfma_32x32x16_c() -> TVLayout:
    """C/D of gfx950 32x32x16: unchanged from 32x32x8 (fragment-layouts.md §4.3)."""
    return _mfma_c(32)


def mfma_16x16x32_a() -> TVLayout:
    """A (16x32) of gfx950 ``v_mfma_f32_16x16x32_bf16``: i = l % 16, k = 8*(l // 16) + e.
    Source: fragment-layouts.md §4.3."""
    return _mfma_a(16, 8)


def mfma_16x16x32_b() -> TVLayout:
    """B (32x16) of gfx950 ``v_mfma_f32_16x16x32_bf16``: j = l % 16, k = 8*(l // 16) + e.
    Source: fragment-layouts.md §4.3."""
    return _mfma_b(16, 8)


def mfma_16x16x32_c() -> TVLayout:
    """C/D of gfx950 16x16x32: unchanged from 16x16x16 (fragment-layouts.md §4.3)."""
    return _mfma_c(16)
