"""Weight pre-layout for low-bit GEMM: quantized codes of any width 1..8 permuted (and packed) on the
host so that the kernel's plain, vectorized load of a tile of them leaves in every thread exactly the
values its mma.m16n8k16 B fragments need -- no shared-memory transpose, no `convert_layout`.

The permutation is not written per width: it is the mma B operand layout (`ir.thread_maps.mma_b`, a
(thread, value) -> (k, n) map of one [SUB, BN] weight tile) composed with the load's layout
(`ir.thread_maps.blocked`: thread t reads a chunk of V consecutive codes -- 16 bytes, or the largest
power-of-two count of codes that fits them -- of every row of a [P, T * V] tile). Element (p, t, j) of
the pre-laid-out tile is the weight the B fragment puts in thread t's value slot j + V * p. Inside
the kernel the inverse is a register relabeling: `prelaid_tile()` reshapes the loaded [P, T * V] tile
into the fragment's modes and permutes them into (k, n) order; layout inference carries the load's
layout through it and arrives at the fragment layout exactly, so nothing moves.

Bit order (documented because other tools may produce it): the pre-laid-out matrix is an ordinary
dense, row-major, LSB-first packed array of the dtype (what `tile.asarray` makes) of shape
[cdiv(K, SUB) * P, cdiv(N, BN) * T * V]; its row-major order is (K tile, p | N tile, thread, j); within
a thread's chunk j runs over the fragment's value modes fastest first: k + 1 (the two codes of one
32-bit mma register, adjacent in memory), k + 8, the n atoms, then the k steps. K and N are padded
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
    vm, chunk, n = list(frag.vmodes), [], 1
    while n < V:
        s, cs = vm.pop(0)
        if n * s > V:
            a = V // n
            if s % a:
                raise ValueError(f"prelayout: a fragment mode of {s} values straddles a chunk of {V}")
            chunk.append((a, cs))
            vm.insert(0, (s // a, tuple(c * a for c in cs)))
            n = V
        else:
            chunk.append((s, cs))
            n *= s
    dims = list(reversed(vm)) + list(reversed(frag.tmodes)) + list(reversed(chunk))
    for s, cs in dims:
        if sum(1 for c in cs if c) != 1:
            raise ValueError(f"prelayout: mode {s}:{cs} of the fragment is not along one of k, n")
    order = sorted(range(len(dims)), key=lambda i: (0 if dims[i][1][0] else 1, -max(dims[i][1])))
    P = NV // V
    return P, T * V, tuple(s for s, _ in dims), tuple(order)


def _tiles(K, N, SUB, BN):
    return -(-K // SUB), -(-N // BN)


def prelayout_weights(codes, dtype, SUB: int = 128, BN: int = 128, num_warps: int = 4):
    """[K, N] quantized weights (a `tile.Array` of `dtype`, or integer codes) -> the pre-laid-out,
    packed `tile.Array` of shape [cdiv(K, SUB) * P, cdiv(N, BN) * T * V] (see the module docstring)."""
    from .runtime.arrays import Array, from_codes
    from .ir.dtypes import dtype as to_dtype
    dt = to_dtype(dtype)
    c = codes.codes() if isinstance(codes, Array) else np.asarray(codes)
    K, N = c.shape
    P, TV, split, perm = prelayout_plan(dt.bits, SUB, BN, num_warps)
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
    P, TV, split, perm = prelayout_plan(dt.bits, SUB, BN, num_warps)
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
