"""Shared-memory tile layouts (element offsets; `tile.ir.layout` Layout / ComposedLayout).

* `default_shared_layout`: row-major.
* `ldmatrix_swizzle` / `swizzled_row_major`: row-major (or column-major) with an XOR swizzle of the
  16-byte chunk index by the row index, so that ldmatrix's 8 row addresses (8 consecutive rows,
  same logical chunk) fall into 8 different 16-byte bank groups. Chunks of 16 bytes stay
  contiguous, so 16-byte vector stores and cp.async copies still work.
"""
from __future__ import annotations

from tile.ir.layout import ComposedLayout, Layout, Swizzle, row_major

__all__ = ["default_shared_layout", "ldmatrix_swizzle", "swizzled_row_major"]


def default_shared_layout(shape) -> Layout:
    shape = tuple(shape)
    return row_major(shape) if len(shape) > 1 else Layout(shape[0], 1)


def ldmatrix_swizzle(row_elems: int, elem_bits: int):
    """The swizzle (on element offsets) for a row of `row_elems` elements, or None if rows are
    too short to conflict (<= 16 bytes) or not a whole number of 16-byte chunks."""
    row_bytes = row_elems * elem_bits // 8
    if row_bytes < 32 or row_bytes % 16 or (row_bytes & (row_bytes - 1)):
        return None
    chunk_elems = 128 // elem_bits                       # elements per 16-byte chunk
    base = chunk_elems.bit_length() - 1
    if row_bytes >= 128:
        bits = 3
        shift = (row_bytes // 16).bit_length() - 1       # the row index starts above the row's chunks
    else:
        bits = {32: 1, 64: 2}[row_bytes]
        shift = 3
    return Swizzle(bits, base, shift)


def swizzled_row_major(shape, elem_bits: int, contig_dim: int = -1):
    """Row-major (contig_dim=-1/1) or column-major (contig_dim=0, 2-D) layout with the ldmatrix
    swizzle of its rows. Rows wider than 128 bytes are split into panels of 128-byte rows (panel p
    holds columns [64p, 64p+64) of every row for 16-bit types): the canonical 128B-swizzled layout of
    Hopper's wgmma (K-major or MN-major), and still conflict-free for ldmatrix."""
    shape = tuple(shape)
    if len(shape) != 2:
        lay = default_shared_layout(shape)
        sw = ldmatrix_swizzle(shape[-1], elem_bits)
        return ComposedLayout(sw, 0, lay) if sw is not None else lay
    R, C = shape
    cd = 0 if contig_dim % 2 == 0 else 1
    row = (R, C)[cd]                         # elements along the contiguous dim
    other = (R, C)[1 - cd]
    panel = 1024 // elem_bits                # elements in 128 bytes
    if row * elem_bits > 1024 and row % panel == 0:
        inner = (panel, row // panel)
        strides = (1, other * panel)
        modes = [(other, panel), (inner, strides)]            # (non-contiguous dim, contiguous dim)
        if cd == 1:
            lay = Layout((modes[0][0], modes[1][0]), (modes[0][1], modes[1][1]))
        else:
            lay = Layout((modes[1][0], modes[0][0]), (modes[1][1], modes[0][1]))
        return ComposedLayout(ldmatrix_swizzle(panel, elem_bits), 0, lay)
    lay = Layout(shape, (C, 1)) if cd == 1 else Layout(shape, (1, R))
    sw = ldmatrix_swizzle(row, elem_bits)
    return ComposedLayout(sw, 0, lay) if sw is not None else lay
