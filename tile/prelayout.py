"""Weight pre-layout for low-bit GEMM: quantized codes of any width 1..8 permuted (and packed) on the
host so that the kernel's plain, vectorized load of a tile of them leaves in every thread exactly the
values its mma.m16n8k16 B fragments need -- no shared-memory transpose, no data-moving
`convert_layout`.

The permutation is not written per width: it is the mma B operand layout (`ir.thread_maps.mma_b`, a
(thread, value) -> (k, n) map of one [SUB, BN] weight tile) composed with the load's layout
(`ir.thread_maps.blocked`: thread t reads a chunk of V consecutive codes -- 16 bytes, or the largest
power-of-two count of codes that fits them -- of every row of a [P, T * V] tile). Chunk p of thread t holds its
fragment values V p .. V p + V - 1 in one order chosen for the decode: the two codes of one 32-bit mma
register (k and k + 1, the two halves of a bf16x2/f16x2) sit 16 bits apart in the loaded word where
the width divides 16 (`pair_distance`), so one shift serves both halves and the mask and magic
number act on both at once. Inside the kernel the inverse is a register relabeling: `prelaid_tile()`
reshapes the loaded [P, T * V] tile into the fragment's modes and permutes them into (k, n) order;
layout inference carries the load's layout through it and arrives at the fragment layout up to the
order of each thread's values -- a `convert_layout` that only renames registers, placed on the
codes, before the cast, so that the cast pairs them as the mma registers do.

Bit order (documented because other tools may produce it): the pre-laid-out matrix is an ordinary
dense, row-major, LSB-first packed array of the dtype (what `tile.asarray` makes) of shape
[cdiv(K, SUB) * P, cdiv(N, BN) * T * V]; its row-major order is (K tile, p | N tile, thread, j); within
a thread's chunk j runs over the fragment's value modes fastest first, except that k + 1 (the two
codes of one 32-bit mma register) comes after the modes filling `pair_distance` codes: int4 puts
k, k + 8 and the first two n atoms of a word in nibbles 0..3 and their k + 1 partners in nibbles
4..7 (codes c0 c2 c4 c6 c1 c3 c5 c7 of the fragment's order), int8 bytes c0 c2 c1 c3, int2 the 8
codes then their 8 partners, int1 16 and 16; int3 puts the partners 4 codes (12 bits) on, int5 4
(20 bits), int6 and int7 2 (12 and 14 bits); the other modes keep the fragment's order.
`prelayout_plan` gives the exact dims and their permutation. K and N are padded
with code 0 to whole tiles (x is zero beyond K, so padded rows add nothing; columns beyond N are not
stored by the kernel).
"""
from __future__ import annotations

from math import prod

import numpy as np

from .ir.thread_maps import blocked, mma_b


def prelayout_plan(bits: int, SUB: int, BN: int, num_warps: int = 4):
    """(P, TV, split, perm): the pre-laid-out [P, TV] tile of one [SUB, BN] weight tile, the shape it
    is reshaped to (one dim per fragment mode: P modes, thread modes, chunk modes, slowest first) and
    the permutation of those dims into (k modes, n modes) order (slowest first) -- the kernel's
    `tile.permute(w.reshape(*split), perm).reshape(SUB, BN)` is then a relabeling of registers."""
    frag = mma_b(SUB, BN, 1, num_warps)
    T = frag.nthreads
    NV = frag.nvals
    V = blocked((1, T * NV), T, bits).vmodes[0][0]           # the load's chunk: codes per vector
    if NV % V:
        raise ValueError(f"prelayout: {NV} values per thread do not split into chunks of {V}")
    # the chunk: the first value modes, V values exactly (a mode that straddles it is split in two)
    chunk, vm = _split_off(frag.vmodes, V)
    chunk = _pair_apart(chunk, bits)
    dims = list(reversed(vm)) + list(reversed(frag.tmodes)) + list(reversed(chunk))
    for s, cs in dims:
        if sum(1 for c in cs if c) != 1:
            raise ValueError(f"prelayout: mode {s}:{cs} of the fragment is not along one of k, n")
    order = sorted(range(len(dims)), key=lambda i: (0 if dims[i][1][0] else 1, -max(dims[i][1])))
    P = NV // V
    return P, T * V, tuple(s for s, _ in dims), tuple(order)


def pair_distance(bits: int, V: int) -> int:
    """How many codes apart the two codes of one mma register (k, k + 1) are put in a chunk of V:
    the power of two whose distance in bits is nearest 16 -- exactly 16 where `bits` divides 16, so
    that one shift of the loaded word serves both halves of the bf16x2/f16x2 register (and the mask,
    magic number and xor fuse into one lop3); for other widths the nearest the chunk allows (int3:
    12 bits, int5: 20, int6: 12, int7: 14), which the decode's free mantissa bits may still absorb."""
    d, best = 1, None
    while d <= V // 2:
        if best is None or abs(d * bits - 16) < abs(best * bits - 16):
            best = d
        d *= 2
    return best


def _split_off(modes, n):
    """(the fastest modes of `modes` holding exactly n values, the rest); a mode straddling n is split."""
    head, rest, have = [], list(modes), 1
    while have < n:
        s, cs = rest.pop(0)
        if have * s > n:
            a = n // have
            if s % a:
                raise ValueError(f"prelayout: a fragment mode of {s} values straddles {n}")
            head.append((a, cs))
            rest.insert(0, (s // a, tuple(c * a for c in cs)))
        else:
            head.append((s, cs))
        have *= head[-1][0]
    return head, rest


def _pair_apart(chunk, bits):
    """The chunk's modes (fastest first) with the pair mode -- the fragment's fastest, k + 1 inside one
    32-bit register -- moved behind the modes that fill `pair_distance` codes: the two codes of a
    register then sit pair_distance * bits bits apart in the loaded word."""
    (s, cs), others = chunk[0], chunk[1:]
    if s != 2 or cs[1] or cs[0] != 1:
        return chunk
    V = prod(m for m, _ in chunk)
    head, tail = _split_off(others, pair_distance(bits, V))
    return head + [chunk[0]] + tail


def _tiles(K, N, SUB, BN):
    return -(-K // SUB), -(-N // BN)


def _plan(bits, SUB, BN, num_warps):
    """prelayout_plan, with a tile that the mma fragments cannot split named as the caller's mistake."""
    from .ir.layout import LayoutError
    try:
        return prelayout_plan(bits, SUB, BN, num_warps)
    except LayoutError as e:
        raise ValueError(f"prelayout: a [SUB={SUB}, BN={BN}] weight tile on {num_warps} warps has no mma.m16n8k16 "
                         f"B fragment layout ({e}); SUB a multiple of 16, BN of 8 * num_warps") from None


def prelayout_weights(codes, dtype, SUB: int = 128, BN: int = 128, num_warps: int = 4):
    """[K, N] quantized weights (a `tile.Array` of `dtype`, or integer codes) -> the pre-laid-out,
    packed `tile.Array` of shape [cdiv(K, SUB) * P, cdiv(N, BN) * T * V] (see the module docstring)."""
    from .runtime.arrays import Array, from_codes
    from .ir.dtypes import dtype as to_dtype
    dt = to_dtype(dtype)
    c = codes.codes() if isinstance(codes, Array) else np.asarray(codes)
    if c.ndim != 2 or not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"prelayout_weights: codes must be a [K, N] matrix of integer codes (or a tile.Array), "
                         f"got {c.dtype} of shape {c.shape}")
    K, N = c.shape
    P, TV, split, perm = _plan(dt.bits, SUB, BN, num_warps)
    kt, nt = _tiles(K, N, SUB, BN)
    pad = np.zeros((kt * SUB, nt * BN), c.dtype)
    pad[:K, :N] = c
    nk = _n_k_dims(split, perm, SUB)
    kdims = [split[i] for i in perm[:nk]]
    ndims = [split[i] for i in perm[nk:]]
    # the tile in (k modes, n modes) order, then back to the split (load) order
    t = pad.reshape(kt, *kdims, nt, *ndims)
    inv = [0] * len(perm)                       # split dim d sits at position inv[d] of the k/n order
    for pos, d in enumerate(perm):
        inv[d] = pos
    src_axis = [1 + p if p < nk else 2 + p for p in inv]          # axes of t, skipping kt / nt
    nP = _n_p_dims(split, P)
    axes = [0] + src_axis[:nP] + [1 + nk] + src_axis[nP:]
    out = t.transpose(axes).reshape(kt * P, nt * TV)
    return from_codes(out, dt)


def unprelayout_weights(prelaid, K: int, N: int, SUB: int = 128, BN: int = 128, num_warps: int = 4):
    """The inverse of `prelayout_weights`: the [K, N] codes (as a `tile.Array`)."""
    from .runtime.arrays import from_codes
    dt = prelaid.dtype
    c = prelaid.codes()
    P, TV, split, perm = _plan(dt.bits, SUB, BN, num_warps)
    kt, nt = _tiles(K, N, SUB, BN)
    nP = _n_p_dims(split, P)
    t = c.reshape(kt, *split[:nP], nt, *split[nP:])
    axis_of = [1 + d if d < nP else 2 + d for d in range(len(split))]
    nk = _n_k_dims(split, perm, SUB)
    axes = [0] + [axis_of[d] for d in perm[:nk]] + [1 + nP] + [axis_of[d] for d in perm[nk:]]
    w = t.transpose(axes).reshape(kt * SUB, nt * BN)[:K, :N]
    return from_codes(np.ascontiguousarray(w), dt)


def _n_p_dims(split, P):
    n, p = 0, 1
    while p < P:
        p *= split[n]
        n += 1
    return n


def _n_k_dims(split, perm, SUB):
    n, p = 0, 1
    while p < SUB:
        p *= split[perm[n]]
        n += 1
    return n
