"""Shared-memory tile layouts (element offsets; `tile.ir.layout` Layout / ComposedLayout).

* `default_shared_layout`: row-major.
* `ldmatrix_swizzle` / `swizzled_row_major`: row-major (or column-major) with an XOR swizzle of the
  16-byte chunk index by the row index, so that ldmatrix's 8 row addresses (8 consecutive rows,
  same logical chunk) fall into 8 different 16-byte bank groups. Chunks of 16 bytes stay
  contiguous, so 16-byte vector stores and cp.async copies still work.
* `tma_tile_layout` / `tma_box_plan`: what Hopper's TMA writes -- a tile covered by boxes placed one
  after another, each box dense row-major, the whole swizzled by the tensor map's swizzle mode
  (SWIZZLE_128B/64B/32B: the 16-byte chunk index, byte-address bits 4.., XOR-ed with bits 7..;
  CuTe Swizzle<3|2|1, 4, 3> on bytes). That is the same layout as `swizzled_row_major` of a 16-bit
  tile with rows of 128/64/32 bytes (panels of 128-byte rows for wider ones), which is the K-major
  (or, transposed, MN-major) canonical wgmma layout with that swizzle: one layout, which TMA writes,
  wgmma descriptors and ldmatrix read.
"""
from __future__ import annotations

from functools import lru_cache
from math import prod

from .layout import ComposedLayout, Layout, Swizzle, row_major

__all__ = ["default_shared_layout", "ldmatrix_swizzle", "swizzled_row_major", "ldmatrix_chunk_dim",
           "wgmma_canonical", "transpose_layout", "conversion_scratch_layout", "smem_vector_elems", "leaves", "cumsum_scratch", "tma_box_swizzle", "tma_tile_layout",
           "tma_box_plan", "same_tile_layout", "TMA_SWIZZLES", "TMA_MAX_BOX", "tma_store_box",
           "tma_staging_layout", "tma_store_value_boxes"]


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


def leaves(shape, stride) -> list:
    """The (size, stride) leaves of a (possibly nested) layout mode, in order."""
    if isinstance(shape, int):
        return [(shape, stride)]
    out = []
    for s, d in zip(shape, stride):
        out += leaves(s, d)
    return out


def ldmatrix_chunk_dim(lay, bits: int = 16):
    """The dim (0 or 1) along which 16 bytes of elements (8 16-bit ones; 16 8-bit ones) are
    contiguous and 16-byte aligned in a 2-D shared layout (every other stride a multiple of the
    chunk; a swizzle moves whole chunks) -- what ldmatrix needs -- or None."""
    chunk = 128 // bits
    inner = lay.layout if isinstance(lay, ComposedLayout) else lay
    if isinstance(inner.shape, int) or inner.rank != 2:
        return None
    if isinstance(lay, ComposedLayout) and ((1 << lay.swizzle.base) < chunk or lay.offset % chunk):
        return None
    modes = [leaves(inner.mode(d).shape, inner.mode(d).stride) for d in (0, 1)]
    for cd in (1, 0):
        first = modes[cd][0]
        if first[1] != 1 or first[0] % chunk:
            continue
        rest = modes[cd][1:] + modes[1 - cd]
        if all(d % chunk == 0 for _, d in rest):
            return cd
    return None


def transpose_layout(lay):
    """The layout of the same shared bytes viewed as the transposed 2-D tile."""
    inner = lay.layout if isinstance(lay, ComposedLayout) else lay
    m0, m1 = inner.mode(0), inner.mode(1)
    lt = Layout((m1.shape, m0.shape), (m1.stride, m0.stride))
    return ComposedLayout(lay.swizzle, lay.offset, lt) if isinstance(lay, ComposedLayout) else lt


def conversion_scratch_layout(src, dst, bits: int, num_warps: int):
    """The scratch layout of a register-layout conversion src -> dst (ThreadMaps): swizzled for the
    ldmatrix / wgmma reads of a 16-bit mma operand fragment, swizzled with the k dim contiguous for
    an MFMA operand fragment, else row-major. (Its size is always
    numel elements: shared_memory_planning reserves that.)"""
    from .thread_maps import mma_operand_kind
    if dst.rank == 2 and bits == 16 and mma_operand_kind(dst, num_warps) is not None:
        contig = 1
        if src.runs(-1) <= 1 and src.rank == 2 and src.permute([1, 0]).runs(-1) > 1:
            contig = 0
        return swizzled_row_major(dst.shape, bits, contig)
    if dst.rank == 2 and bits in (8, 16):
        from .thread_maps import mfma_operand_dim
        kd = mfma_operand_dim(dst, num_warps)
        if kd is not None:                   # AMD: each lane's k run contiguous for ds_read_b64/b128
            return swizzled_row_major(dst.shape, bits, kd)
    return default_shared_layout(dst.shape)


def smem_vector_elems(lay, run: int) -> int:
    """How many consecutive elements (along the last dim) can go as one shared-memory access under
    shared layout `lay`, for register runs of `run` elements: a power of two, else 1."""
    inner = lay.layout if isinstance(lay, ComposedLayout) else lay
    modes = list(inner) if not isinstance(inner.shape, int) else [inner]
    last = leaves(modes[-1].shape, modes[-1].stride)
    if run <= 1 or last[0][1] != 1:
        return 1
    v = run
    # every other stride (and the first leaf's extent) must keep runs aligned
    while v > 1:
        ok = last[0][0] % v == 0
        for md in modes[:-1]:
            ok = ok and all(d % v == 0 for _, d in leaves(md.shape, md.stride))
        for s, d in last[1:]:
            ok = ok and d % v == 0
        if isinstance(lay, ComposedLayout):
            ok = ok and (1 << lay.swizzle.base) % v == 0 and lay.offset % v == 0
        if ok:
            break
        v //= 2
    return v


_WGMMA_MODE = {128: 1, 64: 2, 32: 3}


def _swz(o: int, W: int) -> int:
    return o ^ (((o >> 7) & (W // 16 - 1)) << 4)


@lru_cache(maxsize=256)
def wgmma_canonical(layout_str: str, shape: tuple, role: str, bits: int):
    """(major, mode, LBO, SBO) if the 2-D shared layout (text form) of operand `role` ('a': (M, K),
    'b': (K, N)) is a canonical wgmma layout for `bits`-bit elements (what a wgmma matrix
    descriptor can describe: fragment-layouts.md §3.4-3.5); else None. 16-bit elements: K-major
    with a 128/64/32-byte swizzle, or MN-major with the 128-byte one. 8-bit elements: K-major only
    (the PTX ISA has no transpose for 8-bit wgmma operands); the same byte layouts, each row of W
    bytes now W elements, one k32 step 32 bytes."""
    from .layout import parse_layout
    if bits not in (8, 16):
        return None
    eb = bits // 8                              # bytes per element
    lay = parse_layout(layout_str)
    if not isinstance(lay, ComposedLayout):
        return None
    inner, sw = lay.layout, lay.swizzle
    # the swizzle on element offsets: 16-byte chunks (base 3 for 16-bit, 4 for 8-bit), row bits 7..
    if lay.offset or sw.base != (4 if eb == 1 else 3) or sw.shift != 3 or sw.bits not in (1, 2, 3):
        return None
    W = {3: 128, 2: 64, 1: 32}[sw.bits]
    kdim = 1 if role == "a" else 0
    xdim = 1 - kdim
    X, K = shape[xdim], shape[kdim]
    if K % (32 // eb) or X % 64 or inner.rank != 2:
        return None
    # the layout evaluated once per element (flat lists), then read by coordinate: (x, k) is
    # coordinate (x, k) for A and (k, x) for B, at flat index c0 + size(mode 0) * c1
    s0, s1 = inner.mode(0).size, inner.mode(1).size
    if (X, K) != ((s0, s1) if xdim == 0 else (s1, s0)):
        return None
    offs, uoffs = lay.offsets(), inner.offsets()
    sx, sk = (1, s0) if xdim == 0 else (s0, 1)          # flat-index steps of x and of k

    def fits(expected) -> bool:
        """eb * L(x, k) == expected(x, k) (bytes) for every element."""
        for x in range(X):
            bx = x * sx
            for k in range(K):
                if eb * offs[bx + k * sk] != expected(x, k):
                    return False
        return True
    # K-major: rows of W bytes along k, 8-row groups SBO apart, k panels anywhere
    E = W // eb
    sbo = eb * uoffs[8 * sx]
    panel = [eb * uoffs[(k - k % E) * sk] for k in range(K)]
    swz = [[_swz(r * W + c * eb, W) for c in range(E)] for r in range(8)]
    if fits(lambda x, k: panel[k] + (x // 8) * sbo + swz[x % 8][k % E]) and sbo % 16 == 0:
        return ("K", _WGMMA_MODE[W], 16, sbo)
    if W != 128 or eb != 2:
        return None
    # MN-major, 128-byte swizzle: 64-element panels along x (LBO apart), 8-deep k groups SBO apart
    lbo = 2 * uoffs[64 * sx] if X > 64 else 0
    sbo = 2 * uoffs[8 * sk]
    swz = [[_swz(r * 128 + c * 2, 128) for c in range(64)] for r in range(8)]
    if not fits(lambda x, k: (x // 64) * lbo + (k // 8) * sbo + swz[k % 8][x % 64]):
        return None
    if lbo % 16 or sbo % 16:
        return None
    return ("MN", 1, lbo if lbo else 16, sbo)


TMA_SWIZZLES = (128, 64, 32)          # swizzle spans (bytes) of the tensor-map modes, widest first
_TMA_SW_BITS = {128: 3, 64: 2, 32: 1}
TMA_MAX_BOX = 256                      # elements along any dim of a box


def tma_box_swizzle(swizzle: int, bits: int):
    """The swizzle (on element offsets) of tensor-map swizzle mode `swizzle` bytes (0: none -> None)
    for elements of `bits` bits: byte-offset bits 4.. (the 16-byte chunk) XOR-ed with bits 7.., 3/2/1
    of them for the 128/64/32-byte modes."""
    if not swizzle:
        return None
    eb = bits // 8
    return Swizzle(_TMA_SW_BITS[swizzle], 4 - (eb.bit_length() - 1), 3)


def tma_tile_layout(shape, bits: int, box, swizzle: int):
    """The shared layout a tile of `shape` gets when TMA fills it box by box: the boxes of extent
    `box` (dividing `shape`) in row-major order of the box grid, each `prod(box)` elements, dense and
    row-major inside; swizzled by mode `swizzle` over the whole offset (the tile starts on a
    swizzle-atom boundary, as TMA's swizzle uses absolute address bits). A dim with one box is one
    leaf, a dim with several is (box extent, boxes): e.g. (64, 128) bf16 with 128-byte boxes (64, 64)
    is `sw<3,3,3> o (64,(64,2)):(64,(1,4096))`, exactly `swizzled_row_major((64, 128), 16)`."""
    shape, box = tuple(int(x) for x in shape), tuple(int(x) for x in box)
    grid = tuple(d // b for d, b in zip(shape, box))
    vol = prod(box)
    shapes, strides = [], []
    for i, (b, n) in enumerate(zip(box, grid)):
        s_in = prod(box[i + 1:])
        s_grid = vol * prod(grid[i + 1:])
        if n == 1:
            shapes.append(b)
            strides.append(s_in)
        else:
            shapes.append((b, n))
            strides.append((s_in, s_grid))
    lay = Layout(tuple(shapes), tuple(strides)) if len(shape) > 1 else Layout(shapes[0], strides[0])
    sw = tma_box_swizzle(swizzle, bits)
    return ComposedLayout(sw, 0, lay) if sw is not None else lay


def tma_box_plan(layout, shape, bits: int):
    """(box, swizzle) if TMA can write a shared tile of `shape` with shared layout `layout` (its
    `tma_tile_layout`), else None. Boxes: at most 256 elements along each dim, rows of whole 16-byte
    chunks, the innermost extent at most the swizzle span (and as wide as it where the row allows);
    every box a multiple of 128 bytes when there are several (each box's destination must be)."""
    shape = tuple(int(x) for x in shape)
    if bits not in (8, 16, 32, 64) or not 1 <= len(shape) <= 5:
        return None
    eb = bits // 8
    row_bytes = shape[-1] * eb
    if isinstance(layout, ComposedLayout):
        modes = [m for m in TMA_SWIZZLES if tma_box_swizzle(m, bits) == layout.swizzle and not layout.offset]
    else:
        modes = [0]
    for sw in modes:
        inner = shape[-1] if not sw or row_bytes <= sw else sw // eb
        if shape[-1] % inner or (inner * eb) % 16 or inner > TMA_MAX_BOX:
            continue
        box = []
        for d in shape[:-1]:
            b = d if d <= TMA_MAX_BOX else TMA_MAX_BOX
            if d % b:
                break
            box.append(b)
        else:
            box = tuple(box) + (inner,)
            if box != shape and (prod(box) * eb) % 128:
                continue
            if same_tile_layout(str(layout), str(tma_tile_layout(shape, bits, box, sw)), shape):
                return box, sw
    return None


def tma_store_box(shape, bits: int):
    """(box, swizzle) of a TMA store of a 2-D tile of `shape` staged through shared memory, or None.
    A box holds whole rows of the tile (at most 256) and one swizzle span of columns (128 bytes:
    64 bf16, 32 f32), fewer where the row is narrower; the swizzle is the widest mode the box row
    fills (none for rows of 16 bytes or a span of no mode). Whole rows keep each thread's boxes
    independent of its row (a wgmma accumulator spreads warps along M)."""
    if len(shape) != 2 or bits not in (8, 16, 32):
        return None
    R, C = (int(x) for x in shape)
    eb = bits // 8
    if R > TMA_MAX_BOX or (C * eb) % 16:
        return None
    W = C if C * eb <= 128 else 128 // eb
    if C % W:
        return None
    sw = W * eb if W * eb in TMA_SWIZZLES else 0
    if C != W and (R * W * eb) % 128:
        return None
    return (R, W), sw


def tma_store_value_boxes(m, W: int):
    """For a register thread map m of a 2-D tile: the column box (of W columns) of each value slot,
    or None if some value slot's box depends on the thread (a TMA store then cannot write each box
    from a fixed set of registers)."""
    tc = m.tcoords()[:, 1]
    lo, hi = int(tc.min()), int(tc.max())
    out = []
    for c in m.vcoord_list():
        a, b = (lo + c[1]) // W, (hi + c[1]) // W
        if a != b:
            return None
        out.append(a)
    return out


def tma_staging_layout(shape, bits: int, box, swizzle: int, staging: int):
    """The layout of a 2-D tile of `shape` over the staging buffer of a TMA store: column box j (boxes
    of `box`, whole rows) goes to buffer j % staging, each buffer one box in TMA's layout of it
    (`tma_tile_layout` of the box: row-major, swizzled by the tensor map's mode), the buffers one
    after another. Boxes sharing a buffer map to the same bytes (a stride-0 mode): they are written
    one after another, the buffer reused once the bulk store that read it is done."""
    R, C = (int(x) for x in shape)
    W = int(box[1])
    n = C // W
    vol = R * W
    if n == 1:
        lay = Layout((R, W), (W, 1))
    elif staging >= n:
        lay = Layout((R, (W, n)), (W, (1, vol)))
    elif staging == 1:
        lay = Layout((R, (W, n)), (W, (1, 0)))
    else:
        lay = Layout((R, (W, staging, n // staging)), (W, (1, vol, 0)))
    sw = tma_box_swizzle(swizzle, bits)
    return ComposedLayout(sw, 0, lay) if sw is not None else lay


@lru_cache(maxsize=256)
def same_tile_layout(a: str, b: str, shape: tuple) -> bool:
    """Two layouts (text) of a tile of `shape` map every coordinate to the same offset."""
    if a == b:
        return True
    from itertools import product
    from .layout import parse_layout
    la, lb = parse_layout(a), parse_layout(b)
    try:
        return all(la(c) == lb(c) for c in product(*(range(d) for d in shape)))
    except Exception:                               # noqa: BLE001 - not a layout of this shape
        return False


def cumsum_scratch(shape, axis: int, bits: int) -> tuple[int, int]:
    """(line stride in elements, bytes) of a cumsum's scratch: the tile staged one element (sub-byte:
    one code) per max(8, bits) bits, each line along `axis` contiguous, the lines one stride apart
    in row-major order of the other dims. With several lines the stride is padded so that it is an
    odd number of 4-byte words (an odd number of elements for 64-bit ones): the threads of a warp,
    each scanning its own line, then hit distinct banks."""
    n = shape[axis]
    lines = 1
    for k, s in enumerate(shape):
        if k != axis:
            lines *= s
    e = max(8, bits) // 8
    st = n
    if lines > 1:
        while not (st % 2 == 1 if e == 8 else (st * e) % 8 == 4):
            st += 1
    return st, lines * st * e
