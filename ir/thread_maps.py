"""ThreadMap: a register layout (`ir.register_layout.TVLayout`) in the form passes and code generators
compute with.

A TVLayout maps (thread, value) to a colexicographic tile index. A ThreadMap is the same function
written per tile dimension: a list of thread modes and a list of value modes, each mode a
``(size, cstride)`` pair where ``cstride`` is a tuple with one coordinate stride per tile dim::

    coord(t, v)[d] = sum_k digit_k(t) * tmodes[k].cstride[d] + sum_j digit_j(v) * vmodes[j].cstride[d]

with ``digit_k(t) = (t // prod(sizes of earlier thread modes)) % size_k`` (colexicographic, as in
CuTe). Every TVLayout whose modes do not carry between tile dims (all the ones tilec builds: blocked
layouts, MMA fragments, their slices and permutations) has this form; `from_tv` splits modes where
needed and checks the result against the TVLayout element by element. A mode whose cstride is all
zero replicates: several threads (thread mode) or value slots (value mode) hold one element.

Builders: `blocked` (each thread owns contiguous chunks along the last dim, threads fill the last
dim first: coalesced and vectorizable), `mma_c` / `mma_a` / `mma_b` (the mma.sync m16n8k16
fragments of `ir.fragments`, tiled over warps), and the layout algebra the ops need: `project`
(reduce / broadcast operands: a dim removed), `squash` (a dim of size 1), `permute` (transpose).
"""
from __future__ import annotations

from math import prod

import numpy as np

from .layout import Layout, LayoutError, make_layout
from .register_layout import TVLayout

__all__ = ["ThreadMap", "blocked", "mma_c", "mma_a", "mma_b", "mma_k", "warp_splits", "as_map", "colmajor_strides",
           "mma_warps", "MMA_IN", "MMA8_IN", "MMA_ACC"]


def colmajor_strides(shape) -> tuple:
    out, s = [], 1
    for d in shape:
        out.append(s)
        s *= d
    return tuple(out)


def _idx2crd(idx: int, shape) -> tuple:
    out = []
    for d in shape:
        out.append(idx % d)
        idx //= d
    return tuple(out)


def _rowmajor_strides(shape) -> tuple:
    out, s = [], 1
    for d in reversed(shape):
        out.append(s)
        s *= d
    return tuple(reversed(out))


def _lin2crd(lin: int, shape, rm) -> tuple:
    out = []
    for d, m in zip(shape, rm):
        out.append((lin // m) % d if m else 0)
    return tuple(out)


def _live(vmodes):
    """Value modes without the all-zero ones (those would only repeat a value in more slots)."""
    return [(s, cs) for s, cs in vmodes if any(cs)]


def _leaves(shape, stride):
    if isinstance(shape, int):
        return [(shape, stride)]
    out = []
    for s, d in zip(shape, stride):
        out += _leaves(s, d)
    return out


def _smallest_factor(n: int) -> int:
    p = 2
    while p * p <= n:
        if n % p == 0:
            return p
        p += 1
    return n


class ThreadMap:
    """A register layout as per-dimension thread and value modes (see the module docstring)."""

    __slots__ = ("shape", "tmodes", "vmodes", "_cache")

    def __init__(self, shape, tmodes, vmodes):
        shape = tuple(int(s) for s in shape)
        r = len(shape)

        def norm(modes):
            out = []
            for s, cs in modes:
                cs = tuple(int(c) for c in cs)
                if len(cs) != r:
                    raise LayoutError(f"ThreadMap: coordinate stride {cs} does not match the tile rank {r}")
                if s != 1:
                    out.append((int(s), cs))
            return tuple(out)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "tmodes", norm(tmodes))
        object.__setattr__(self, "vmodes", norm(vmodes))
        object.__setattr__(self, "_cache", {})

    def __setattr__(self, k, v):
        raise AttributeError("ThreadMap is immutable")

    # ------------------------------------------------------------------ structure
    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def nthreads(self) -> int:
        return prod(s for s, _ in self.tmodes)

    @property
    def nvals(self) -> int:
        return prod(s for s, _ in self.vmodes)

    def _coords(self, modes, n) -> np.ndarray:
        out = np.zeros((n, self.rank), np.int64)
        idx = np.arange(n, dtype=np.int64)
        div = 1
        for s, cs in modes:
            dig = (idx // div) % s
            out += dig[:, None] * np.asarray(cs, np.int64)[None, :]
            div *= s
        return out

    def tcoords(self) -> np.ndarray:
        """(nthreads, rank): the coordinate offset each thread contributes."""
        c = self._cache.get("t")
        if c is None:
            c = self._cache["t"] = self._coords(self.tmodes, self.nthreads)
        return c

    def vcoords(self) -> np.ndarray:
        """(nvals, rank): the coordinate offset of each value slot (= the coords thread 0 holds)."""
        c = self._cache.get("v")
        if c is None:
            c = self._cache["v"] = self._coords(self.vmodes, self.nvals)
        return c

    def vcoord_list(self) -> list:
        c = self._cache.get("vl")
        if c is None:
            c = self._cache["vl"] = [tuple(int(x) for x in row) for row in self.vcoords()]
        return c

    def coord(self, t: int, v: int) -> tuple:
        return tuple(int(a + b) for a, b in zip(self.tcoords()[t], self.vcoords()[v]))

    def value_index(self) -> dict:
        """coordinate offset (tuple) -> first value slot holding it (for thread 0)."""
        d = self._cache.get("vi")
        if d is None:
            d = {}
            for v, c in enumerate(self.vcoord_list()):
                d.setdefault(c, v)
            self._cache["vi"] = d
        return d

    def unique_values(self) -> list:
        """The value slots that are not copies of an earlier slot (value modes with zero stride
        replicate)."""
        u = self._cache.get("uv")
        if u is None:
            seen, u = set(), []
            for v, c in enumerate(self.vcoord_list()):
                if c not in seen:
                    seen.add(c)
                    u.append(v)
            self._cache["uv"] = u
        return u

    def dup_source(self) -> list:
        """For each value slot, the first slot holding the same element (itself if unique)."""
        u = self._cache.get("ds")
        if u is None:
            vi = self.value_index()
            u = self._cache["ds"] = [vi[c] for c in self.vcoord_list()]
        return u

    def replica_tmodes(self) -> list:
        """(divisor, size) of each thread mode with zero stride: a thread owns its values iff all
        its digits in these modes are 0."""
        out, div = [], 1
        for s, cs in self.tmodes:
            if not any(cs):
                out.append((div, s))
            div *= s
        return out

    @property
    def is_replicated(self) -> bool:
        return bool(self.replica_tmodes()) or len(self.unique_values()) < self.nvals

    def covers(self) -> bool:
        """Every tile element is held by some (thread, value)."""
        tc, vc = self.tcoords(), self.vcoords()
        allc = (tc[:, None, :] + vc[None, :, :]).reshape(-1, self.rank)
        if allc.size == 0:
            return prod(self.shape) == 0
        if (allc < 0).any() or (allc >= np.asarray(self.shape)).any():
            return False
        idx = allc @ np.asarray(colmajor_strides(self.shape), np.int64)
        return len(np.unique(idx)) == prod(self.shape)

    def in_range(self) -> bool:
        tc, vc = self.tcoords(), self.vcoords()
        hi = tc.max(axis=0) + vc.max(axis=0) if self.rank else np.zeros(0)
        return bool(((hi < np.asarray(self.shape)) | (np.asarray(self.shape) == 0)).all())

    # ------------------------------------------------------------------ identity
    def key(self):
        return (self.shape, self.tmodes, self.vmodes)

    def same(self, other: "ThreadMap") -> bool:
        """The same function (t, v) -> coordinate (mode splits may differ)."""
        if not isinstance(other, ThreadMap) or self.shape != other.shape:
            return False
        if self.key() == other.key():
            return True
        if self.nthreads != other.nthreads or self.nvals != other.nvals:
            return False
        return bool(np.array_equal(self.tcoords(), other.tcoords()) and
                    np.array_equal(self.vcoords(), other.vcoords()))

    def __eq__(self, other):
        return isinstance(other, ThreadMap) and self.same(other)

    def __hash__(self):
        return hash(self.shape)

    def __repr__(self):
        return f"ThreadMap({self.shape}, t={list(self.tmodes)}, v={list(self.vmodes)})"

    def __str__(self):
        return str(self.to_tv())

    # ------------------------------------------------------------------ conversions
    def to_tv(self) -> TVLayout:
        cm = colmajor_strides(self.shape)

        def mode(modes):
            leaves = [(s, sum(c * m for c, m in zip(cs, cm))) for s, cs in modes]
            if not leaves:
                return Layout(1, 0)
            if len(leaves) == 1:
                return Layout(*leaves[0])
            return Layout(tuple(s for s, _ in leaves), tuple(d for _, d in leaves))
        tile = self.shape[0] if self.rank == 1 else (self.shape if self.rank else 1)
        return TVLayout(tile, make_layout(mode(self.tmodes), mode(self.vmodes)))

    @staticmethod
    def from_tv(tv: TVLayout) -> "ThreadMap":
        # Both are immutable, and the conversion (with its exhaustive check) is asked for the same
        # layout many times per compile: the TVLayout keeps its ThreadMap.
        m = tv._cache.get("thread_map")
        if m is None:
            m = tv._cache["thread_map"] = ThreadMap._from_tv(tv)
        return m

    @staticmethod
    def _from_tv(tv: TVLayout) -> "ThreadMap":
        shape = tuple(tv.tile_dims)
        cm = colmajor_strides(shape)

        def split(s, d):
            if d == 0:
                return [(s, (0,) * len(shape))]
            c1 = _idx2crd(d, shape)
            ok = all(_idx2crd(k * d, shape) == tuple(k * x for x in c1) for k in range(s))
            if ok and sum(x * m for x, m in zip(c1, cm)) == d:
                return [(s, c1)]
            p = _smallest_factor(s)
            if p == s:
                raise LayoutError(f"register layout {tv} cannot be split into per-dimension modes: "
                                  f"its mode {s}:{d} carries between tile dims")
            return split(p, d) + split(s // p, d * p)
        tl = tv.thread_layout
        vl = tv.value_layout
        tm, vm = [], []
        for s, d in _leaves(tl.shape, tl.stride):
            tm += split(s, d)
        for s, d in _leaves(vl.shape, vl.stride):
            vm += split(s, d)
        m = ThreadMap(shape, tm, vm)
        # check: the per-dim form is exactly the TVLayout's function
        def idx_of(leaves, n):
            i = np.arange(n, dtype=np.int64)
            out, div = np.zeros(n, np.int64), 1
            for s, d in leaves:
                out += ((i // div) % s) * d
                div *= s
            return out
        ti = idx_of(_leaves(tl.shape, tl.stride), tv.num_threads)
        vi = idx_of(_leaves(vl.shape, vl.stride), tv.values_per_thread)
        full = ti[:, None] + vi[None, :]
        cmv = np.asarray(cm, np.int64)
        mine = (m.tcoords()[:, None, :] + m.vcoords()[None, :, :]) @ cmv
        if not np.array_equal(full, mine):
            raise LayoutError(f"register layout {tv} cannot be split into per-dimension modes "
                              f"(its thread and value parts carry between tile dims)")
        return m

    def for_threads(self, n: int) -> "ThreadMap":
        """The layout on `n` threads: extra threads (a multiple) hold copies."""
        if self.nthreads == n:
            return self
        if n % self.nthreads:
            raise LayoutError(f"a layout of {self.nthreads} threads cannot be spread over {n} threads")
        return ThreadMap(self.shape, list(self.tmodes) + [(n // self.nthreads, (0,) * self.rank)], self.vmodes)

    # ------------------------------------------------------------------ algebra
    def project(self, axis: int) -> "ThreadMap":
        """The layout of the tile with dim `axis` removed (what a reduction along `axis` leaves;
        what a broadcast along a new leading dim needs)."""
        shape = self.shape[:axis] + self.shape[axis + 1:]
        f = lambda modes: [(s, cs[:axis] + cs[axis + 1:]) for s, cs in modes]
        return ThreadMap(shape, f(self.tmodes), _live(f(self.vmodes)))

    def squash(self, axis: int) -> "ThreadMap":
        """The layout of the tile with dim `axis` of size 1 (a broadcast operand)."""
        shape = self.shape[:axis] + (1,) + self.shape[axis + 1:]
        f = lambda modes: [(s, cs[:axis] + (0,) + cs[axis + 1:]) for s, cs in modes]
        return ThreadMap(shape, f(self.tmodes), _live(f(self.vmodes)))

    def permute(self, perm) -> "ThreadMap":
        """The layout of the transposed tile (`perm` as in the transpose op)."""
        shape = tuple(self.shape[p] for p in perm)
        f = lambda modes: [(s, tuple(cs[p] for p in perm)) for s, cs in modes]
        return ThreadMap(shape, f(self.tmodes), f(self.vmodes))

    def reshape(self, new_shape):
        """The layout of the same elements viewed with `new_shape` (row-major order), such that a
        reshape moves no data -- or None if that view is not a ThreadMap (modes would carry
        between the new dims)."""
        new_shape = tuple(int(s) for s in new_shape)
        if prod(new_shape) != prod(self.shape):
            return None
        rm_old = _rowmajor_strides(self.shape)
        rm_new = _rowmajor_strides(new_shape)

        def conv(modes):
            out = []
            for s, cs in modes:
                lin = sum(c * m for c, m in zip(cs, rm_old))
                if lin == 0:
                    out.append((s, (0,) * len(new_shape)))
                    continue
                # a mode that runs across several new dims (128 threads along one dim viewed as
                # 4 x 8 x 4) is split into one mode per dim it crosses, each filling its dim exactly
                while s > 1:
                    c1 = _lin2crd(lin, new_shape, rm_new)
                    d = next((i for i, c in enumerate(c1) if c), None)
                    if d is None or sum(1 for c in c1 if c) != 1 or new_shape[d] % c1[d]:
                        return None
                    part = min(s, new_shape[d] // c1[d])
                    if s % part:
                        return None
                    out.append((part, c1))
                    s //= part
                    lin *= part
            return out
        tm, vm = conv(self.tmodes), conv(self.vmodes)
        if tm is None or vm is None:
            return None
        m = ThreadMap(new_shape, tm, vm)
        a = (self.tcoords()[:, None, :] + self.vcoords()[None, :, :]) @ np.asarray(rm_old, np.int64)
        b = (m.tcoords()[:, None, :] + m.vcoords()[None, :, :]) @ np.asarray(rm_new, np.int64)
        return m if np.array_equal(a, b) else None

    def broadcast_operand(self, operand_shape) -> "ThreadMap":
        """The layout an operand of `broadcast` needs so that the broadcast moves no data: this
        (result) layout with the added leading dims removed and the stretched dims squashed."""
        m = self
        lead = self.rank - len(operand_shape)
        for _ in range(lead):
            m = m.project(0)
        for d, s in enumerate(operand_shape):
            if s == 1 and m.shape[d] != 1:
                m = m.squash(d)
        return m

    # ------------------------------------------------------------------ vector runs
    def runs(self, dim: int = -1) -> int:
        """The largest r (a power of two) such that value slots come in groups of r consecutive
        slots holding r consecutive elements along `dim` (starting at a multiple of r)."""
        dim = dim % self.rank if self.rank else 0
        if not self.rank or not self.vmodes:
            return 1
        s0, cs0 = self.vmodes[0]
        if any(c for i, c in enumerate(cs0) if i != dim) or cs0[dim] != 1:
            return 1
        r = s0
        # a following mode may continue the run
        for s, cs in self.vmodes[1:]:
            if all(c == 0 for i, c in enumerate(cs) if i != dim) and cs[dim] == r:
                r *= s
            else:
                break
        # thread parts must keep starts aligned to the run
        p = 1
        while p * 2 <= r and r % (p * 2) == 0:
            p *= 2
        r = p
        tc = self.tcoords()[:, dim] if self.nthreads else np.zeros(1, np.int64)
        vc = self.vcoords()[:, dim]
        while r > 1 and ((tc % r).any() or (vc[::r] % r).any()):
            r //= 2
        return r


def as_map(layout, nthreads: int | None = None) -> ThreadMap:
    """A ThreadMap from a TVLayout or a ThreadMap (spread over `nthreads` threads if given)."""
    m = layout if isinstance(layout, ThreadMap) else ThreadMap.from_tv(layout)
    if nthreads is not None:
        m = m.for_threads(nthreads)
    return m


# ---------------------------------------------------------------------------------- builders
def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def blocked(shape, nthreads: int, elem_bits: int = 32, max_vec_bits: int = 128) -> ThreadMap:
    """Each thread owns chunks of up to 16 bytes (`max_vec_bits`) along the last dim; threads fill
    the last dim first, then the earlier dims; what remains repeats in more value slots; threads
    beyond the tile's elements hold copies. Tiles with a non-power-of-two dim are replicated on
    every thread (correct, not fast)."""
    shape = tuple(int(s) for s in shape)
    r = len(shape)
    z = (0,) * r
    if r == 0:
        return ThreadMap((), [(nthreads, ())], [])
    numel = prod(shape)

    def unit(d, k=1):
        return tuple(k if i == d else 0 for i in range(r))
    if not all(_is_pow2(s) for s in shape) or not _is_pow2(nthreads):
        vm = []
        for d in range(r - 1, -1, -1):
            pass
        # value slots in colexicographic order of the tile (first dim fastest)
        vm = [(shape[d], unit(d)) for d in range(r)]
        return ThreadMap(shape, [(nthreads, z)], vm)
    vec_max = max(1, max_vec_bits // max(1, elem_bits))
    while vec_max & (vec_max - 1):            # a power of two (int3: 32 codes = 12 bytes, not 42)
        vec_max &= vec_max - 1
    vec = min(vec_max, shape[-1], max(1, numel // nthreads))
    if elem_bits < 8:                         # sub-byte: each thread owns whole bytes
        from math import gcd
        vec = max(vec, min(shape[-1], 8 // gcd(8, elem_bits)))
    vmodes = [(vec, unit(r - 1))]
    tmodes = []
    ext = list(shape)
    ext[-1] //= vec
    step = [1] * r
    step[-1] = vec
    left = nthreads
    reps = []
    for d in range(r - 1, -1, -1):
        t = min(ext[d], left)
        if t > 1:
            tmodes.append((t, unit(d, step[d])))
        left //= t
        rep = ext[d] // t
        if rep > 1:
            reps.append((rep, unit(d, step[d] * t)))
    if left > 1:
        tmodes.append((left, z))
    return ThreadMap(shape, tmodes, vmodes + reps)


def warp_splits(num_warps: int):
    """(wm, wn) with wm * wn = num_warps, wm descending."""
    out = []
    wm = num_warps
    while wm >= 1:
        if num_warps % wm == 0:
            out.append((wm, num_warps // wm))
        wm //= 2
    return out


def mma_c(M: int, N: int, wm: int, wn: int) -> ThreadMap:
    """The m16n8k16 accumulator fragment (ir.fragments.mma_m16n8k16_c) tiled over a (wm x wn) grid of
    warps and repeated over (M/wm/16, N/wn/8) atoms. Warp w = wi + wm*wj holds the 16-row atoms
    wi, wi + wm, wi + 2wm, ... (rows interleaved 16 at a time: four consecutive warps then hold one
    64-row block, which is exactly the accumulator of a Hopper wgmma m64nN on that warpgroup) and the
    column block wj of width N/wn. Value slots: the 4 fragment values, then n atoms, then m atoms."""
    if M % (16 * wm) or N % (8 * wn):
        raise LayoutError(f"mma_c: a {M}x{N} tile does not split into {wm}x{wn} warps of 16x8 atoms")
    tm = [(4, (0, 2)), (8, (1, 0)), (wm, (16, 0)), (wn, (0, N // wn))]
    vm = [(2, (0, 1)), (2, (8, 0)), (N // wn // 8, (0, 8)), (M // wm // 16, (16 * wm, 0))]
    return ThreadMap((M, N), tm, vm)


def mma_k(bits: int = 16) -> int:
    """K of one mma.sync atom for inputs of `bits` bits: m16n8k16 for 16-bit types, m16n8k32 for
    8-bit ones (each 32-bit fragment register holds 32 // bits consecutive k elements)."""
    return 8 * (32 // bits)


def mma_a(M: int, K: int, wm: int, wn: int, bits: int = 16) -> ThreadMap:
    """The mma.sync A fragment of an (M, K) tile for a (wm x wn) warp grid, rows interleaved as in
    `mma_c`; warps along n hold copies. 16-bit inputs: ir.fragments.mma_m16n8k16_a; 8-bit inputs
    (`bits=8`): ir.fragments.mma_m16n8k32_a -- the same registers, each holding e = 32 // bits
    consecutive k elements (lane q of a quad holds k = e*q .. e*q + e - 1). Value slots: the e
    elements of a register, the row half (+8), the k half (+4e), m atoms, k steps."""
    e = 32 // bits
    kk = 8 * e
    if M % (16 * wm) or K % kk:
        raise LayoutError(f"mma_a: a {M}x{K} tile does not split into {wm} warps of 16x{kk} atoms")
    tm = [(4, (0, e)), (8, (1, 0)), (wm, (16, 0)), (wn, (0, 0))]
    vm = [(e, (0, 1)), (2, (8, 0)), (2, (0, 4 * e)), (M // wm // 16, (16 * wm, 0)), (K // kk, (0, kk))]
    return ThreadMap((M, K), tm, vm)


def mma_b(K: int, N: int, wm: int, wn: int, bits: int = 16) -> ThreadMap:
    """The mma.sync B fragment (ir.fragments.mma_m16n8k16_b; 8-bit: mma_m16n8k32_b) of a (K, N)
    tile for a (wm x wn) warp grid: warps along m hold copies. Value slots: the e = 32 // bits
    elements of a register, the k half (+4e), n atoms, k steps."""
    e = 32 // bits
    kk = 8 * e
    if N % (8 * wn) or K % kk:
        raise LayoutError(f"mma_b: a {K}x{N} tile does not split into {wn} warps of {kk}x8 atoms")
    tm = [(4, (e, 0)), (8, (0, 1)), (wm, (0, 0)), (wn, (0, N // wn))]
    vm = [(e, (1, 0)), (2, (4 * e, 0)), (N // wn // 8, (0, 8)), (K // kk, (kk, 0))]
    return ThreadMap((K, N), tm, vm)


MMA_IN = ("bf16", "f16")
# 8-bit mma.sync / wgmma inputs (k = 32 per instruction) and the accumulator each needs
MMA8_IN = ("f8e4m3fn", "f8e5m2", "i8", "u8")
MMA_ACC = {"bf16": "f32", "f16": "f32", "f8e4m3fn": "f32", "f8e5m2": "f32", "i8": "i32", "u8": "i32"}


def mma_warps(M, N, K, a_dt, c_dt, num_warps, prefer_rows=False, prefer_warpgroups=True):
    """The (wm, wn) warp grid for an mma.sync m16n8k16 dot of this shape, or None when the FMA path
    is needed (inputs not bf16/f16, accumulator not f32, K not a multiple of 16, or no grid fits).

    With `prefer_warpgroups` (Hopper), grids with whole warpgroups along M (wm % 4 == 0, M a
    multiple of 64 * wm / 4) come first: their accumulator layout is the wgmma accumulator; among
    them the one whose wgmma instructions read the least shared memory (the widest n). Otherwise
    the grid minimizes operand traffic (each warp reads an (M/wm x K) and a (K x N/wn) slice); ties,
    or `prefer_rows` (the kernel reduces rows of a 2-D tile, e.g. a softmax), go to more warps
    along M so that row reductions stay inside a warp."""
    if MMA_ACC.get(a_dt.name) != c_dt.name or K % mma_k(a_dt.bits):
        return None
    best = None
    for wm, wn in warp_splits(num_warps):
        if M % (16 * wm) or N % (8 * wn):
            continue
        cost = M * wn + N * wm
        wg = prefer_warpgroups and wm % 4 == 0 and M % (16 * wm) == 0 and (N // wn) % 8 == 0
        if wg:
            # wgmma reads both operands from shared memory, per instruction (m64 x n, n <= 256): per k
            # step the warpgroups read (M/64) * (64 * #instructions + N) -- the widest n wins (256x128
            # on 8 warps: [8, 1], m64n128, not [4, 2], m64n64; 128x256: [8, 1], m64n256)
            n = min(N // wn, 256)
            cost = (M // 64) * (64 * (N // n) + N)
        if prefer_rows and wn == 1:
            cost = -1
        key = (0 if wg else 1, cost, -wm)
        if best is None or key < best[0]:
            best = (key, (wm, wn))
    return None if best is None else best[1]


WARP = 32       # the mma.sync fragments above are defined over 32-lane warps (NVIDIA)


def mma_operand_kind(m: ThreadMap, num_warps: int, bits: int = 16):
    """('a' | 'b', wm, wn) when m is an mma.sync operand fragment (`mma_a` / `mma_b`, for inputs of
    `bits` bits) tiled over a (wm x wn) grid of `num_warps` warps, else None."""
    if m.rank != 2:
        return None
    R, C = m.shape
    n = WARP * num_warps
    for wm, wn in warp_splits(num_warps):
        for which, f in (("a", mma_a), ("b", mma_b)):
            try:
                if m.same(f(R, C, wm, wn, bits).for_threads(n)):
                    return which, wm, wn
            except Exception:           # noqa: BLE001 - this grid does not tile the shape
                continue
    return None


def mma_dot_grid(am: ThreadMap, bm: ThreadMap, cm: ThreadMap, num_warps: int, bits: int = 16):
    """(wm, wn) when (am, bm, cm) are the mma.sync A, B and C fragments (inputs of `bits` bits) of
    one warp grid, else None."""
    M, K = am.shape
    N = bm.shape[1]
    n = WARP * num_warps
    for wm, wn in warp_splits(num_warps):
        try:
            if cm.same(mma_c(M, N, wm, wn).for_threads(n)) and am.same(mma_a(M, K, wm, wn, bits).for_threads(n)) \
                    and bm.same(mma_b(K, N, wm, wn, bits).for_threads(n)):
                return wm, wn
        except Exception:               # noqa: BLE001
            continue
    return None


WAVE64 = 64     # the MFMA fragments below are defined over 64-lane waves (AMD CDNA)


def mfma_c(M: int, N: int, wm: int, wn: int, am: int) -> ThreadMap:
    """The accumulator fragment of an `am` x `am` MFMA atom (ir.fragments.mfma_32x32x*_c / 16x16x*_c:
    lane l holds column l % am, rows 4*(l // am) + 8*(r // 4) + r % 4 for 32x32, 4*(l // 16) + r
    for 16x16) tiled over a (wm x wn) grid of waves and repeated over (M/wm/am, N/wn/am) atoms.
    Wave w = wi + wm*wj holds the row atoms wi, wi + wm, ... (interleaved, as `mma_c`) and the
    column block wj of width N/wn. Value slots: the fragment values, then n atoms, then m atoms."""
    if M % (am * wm) or N % (am * wn) or am not in (16, 32):
        raise LayoutError(f"mfma_c: a {M}x{N} tile does not split into {wm}x{wn} waves of {am}x{am} atoms")
    g = WAVE64 // am                                 # lane groups along the rows
    tm = [(am, (0, 1)), (g, (4, 0)), (wm, (am, 0)), (wn, (0, N // wn))]
    vm = [(4, (1, 0)), (am // (4 * g), (4 * g, 0)), (N // wn // am, (0, am)), (M // wm // am, (am * wm, 0))]
    return ThreadMap((M, N), tm, vm)


def mfma_a(M: int, K: int, wm: int, wn: int, am: int, ak: int) -> ThreadMap:
    """The A fragment of an (am x ak) MFMA atom (ir.fragments.mfma_*_a: lane l holds row l % am,
    columns kper*(l // am) + e, kper = ak*am/64) of an (M, K) tile for a (wm x wn) wave grid, rows
    interleaved as in `mfma_c`; waves along n hold copies. Value slots: e, m atoms, k steps."""
    kper = ak * am // WAVE64
    if M % (am * wm) or K % ak or not kper:
        raise LayoutError(f"mfma_a: a {M}x{K} tile does not split into {wm} waves of {am}x{ak} atoms")
    tm = [(am, (1, 0)), (WAVE64 // am, (0, kper)), (wm, (am, 0)), (wn, (0, 0))]
    vm = [(kper, (0, 1)), (M // wm // am, (am * wm, 0)), (K // ak, (0, ak))]
    return ThreadMap((M, K), tm, vm)


def mfma_b(K: int, N: int, wm: int, wn: int, an: int, ak: int) -> ThreadMap:
    """The B fragment of an (ak x an) MFMA atom (ir.fragments.mfma_*_b: lane l holds column l % an,
    rows kper*(l // an) + e) of a (K, N) tile for a (wm x wn) wave grid: waves along m hold copies.
    Value slots: e, n atoms, k steps."""
    kper = ak * an // WAVE64
    if N % (an * wn) or K % ak or not kper:
        raise LayoutError(f"mfma_b: a {K}x{N} tile does not split into {wn} waves of {ak}x{an} atoms")
    tm = [(an, (0, 1)), (WAVE64 // an, (kper, 0)), (wm, (0, 0)), (wn, (0, N // wn))]
    vm = [(kper, (1, 0)), (N // wn // an, (0, an)), (K // ak, (ak, 0))]
    return ThreadMap((K, N), tm, vm)


def mfma_wave_splits(num_warps: int):
    """The (wm, wn) wave grids an MFMA dot may use: all `num_warps` waves, or -- for tiles too small
    to give every wave its own atoms (MoE's 16-row tiles) -- fewer, the other waves holding copies
    (their layouts replicate over them; stores go through the owners only)."""
    out, w = [], num_warps
    while w >= 1:
        out += warp_splits(w)
        w //= 2
    return out


def mfma_warps(M, N, K, a_dt, c_dt, num_warps, atoms, prefer_rows=False, reg_budget=None, lazy_k=False):
    """(atom name, wm, wn) for an MFMA dot of this shape, or None (FMA). `atoms`: the target's
    MFMA atoms as (name, m, n, k), in its order of preference. The grid minimizes operand traffic
    (as `mma_warps`); ties go to the earlier atom, then to more waves along M. With `reg_budget`
    (registers per lane), grids whose fragments (A and B, replicated across waves, plus C) need
    more values per lane than that come last, the least over budget first: MFMA operands are
    whole register tiles, so a B operand replicated over every wave (`prefer_rows`) can exhaust
    the register file. With `lazy_k` (the dot reads its operands from LDS one k step at a time)
    only one k step of A and B counts."""
    if a_dt.name not in MMA_IN or c_dt.name != "f32":
        return None
    best = None
    for i, (name, am, an, ak) in enumerate(atoms):
        if K % ak:
            continue
        for wm, wn in mfma_wave_splits(num_warps):
            if M % (am * wm) or N % (an * wn):
                continue
            cost = M * wn + N * wm
            if prefer_rows and wn == 1:
                cost = -1
            kk = ak if lazy_k else K
            vals = (M * kk // wm + kk * N // wn + M * N // (wm * wn)) // WAVE64
            over = vals if reg_budget is not None and vals > reg_budget else 0
            key = (over, wm * wn < num_warps, cost, i, -wm)
            if best is None or key < best[0]:
                best = (key, (name, wm, wn))
    return None if best is None else best[1]


def mfma_dot_grid(am: ThreadMap, bm: ThreadMap, cm: ThreadMap, num_warps: int, atoms):
    """(atom name, wm, wn) when (am, bm, cm) are the A, B and C fragments of one of `atoms`
    ((name, m, n, k)) tiled over a (wm x wn) wave grid, else None."""
    M, K = am.shape
    N = bm.shape[1]
    n = WAVE64 * num_warps
    for name, m_, n_, k_ in atoms:
        for wm, wn in mfma_wave_splits(num_warps):
            try:
                if cm.same(mfma_c(M, N, wm, wn, m_).for_threads(n)) and \
                        am.same(mfma_a(M, K, wm, wn, m_, k_).for_threads(n)) and \
                        bm.same(mfma_b(K, N, wm, wn, n_, k_).for_threads(n)):
                    return name, wm, wn
            except Exception:           # noqa: BLE001
                continue
    return None


# every MFMA atom shape (m, k) of ir/fragments.py (n = m)
MFMA_SHAPES = ((32, 8), (16, 16), (32, 16), (16, 32))
_MFMA_DIM: dict = {}


def mfma_operand_dim(m: ThreadMap, num_warps: int):
    """The k dim of `m` (1 for an A fragment, 0 for B) when m is an MFMA operand fragment of some
    atom tiled over `num_warps` waves (`mfma_a` / `mfma_b`), else None: a lane's k elements are
    consecutive along it, so LDS holding such an operand keeps that dim contiguous."""
    key = (m.key(), num_warps)
    if key in _MFMA_DIM:
        return _MFMA_DIM[key]
    out = None
    if m.rank == 2 and m.nthreads == WAVE64 * num_warps:
        R, C = m.shape
        for am, ak in MFMA_SHAPES:
            for wm, wn in warp_splits(num_warps):
                for dim, build in ((1, lambda: mfma_a(R, C, wm, wn, am, ak)), (0, lambda: mfma_b(R, C, wm, wn, am, ak))):
                    try:
                        if build().same(m):
                            out = dim
                    except LayoutError:
                        pass
                    if out is not None:
                        break
                if out is not None:
                    break
            if out is not None:
                break
    _MFMA_DIM[key] = out
    return out


def vector_elems(m: ThreadMap, bits: int) -> int:
    """Elements one global/shared access of layout m can move: the largest power of two <= the
    runs along the last dim and <= 16 bytes; sub-byte accesses must be whole bytes (else 1)."""
    r = m.runs(-1)
    if r <= 1:
        return 1
    cap = max(1, 128 // bits)
    v = 1
    while v * 2 <= min(r, cap):
        v *= 2
    if bits < 8 and (v * bits) % 8:
        return 1
    return v
