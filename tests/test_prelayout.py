"""tile.prelayout_weights: the weight pre-layout of the low-bit GEMM's register path. Its inverse
round-trips for every width 1..8 (ragged K and N); the layout is checked against the mma B fragment
directly (each thread's chunk holds the weights ThreadMap.coord names); ThreadMap.reshape splits a
mode across new dims (what makes the kernel's reshape a relabeling)."""
import numpy as np
import pytest

import tile
from tile.ir.thread_maps import ThreadMap, blocked, mma_b

TYPES = ["int1", "uint2", "int3", "int4", "uint5", "f6e3m2", "uint7", "int8", "f4e2m1", "f8e4m3fn"]


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("SUB", [32, 128])
def test_inverse_round_trips(name, SUB):
    dt = tile.dtype(name)
    rng = np.random.default_rng()
    K, N = 3 * SUB - 5, 300                                     # partial last K tile and N tile
    codes = rng.integers(0, 1 << dt.bits, (K, N)).astype(np.uint8)
    p = tile.prelayout_weights(tile.from_codes(codes, dt), dt, SUB, 128)
    P, TV, _, _ = tile.prelayout_plan(dt.bits, SUB, 128)
    assert p.shape == (3 * P, 3 * TV) and p.dtype == dt
    back = tile.unprelayout_weights(p, K, N, SUB, 128)
    assert back.shape == (K, N) and np.array_equal(back.codes(), codes)
    pc = p.codes()                                              # padding is code 0
    assert np.count_nonzero(pc) == np.count_nonzero(codes)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("num_warps", [4, 8])
def test_chunks_are_the_b_fragment(bits, num_warps):
    """Thread t's chunk p of the pre-laid-out tile (V codes, one load of the blocked layout) holds its
    mma B fragment values V p .. V p + V - 1; the two codes of one 32-bit mma register (k, k + 1)
    sit `pair_distance` codes apart in it -- 16 bits where the width divides 16."""
    from tile.prelayout import pair_distance
    SUB, BN = 64, 128
    frag = mma_b(SUB, BN, 1, num_warps)
    P, TV, split, perm = tile.prelayout_plan(bits, SUB, BN, num_warps)
    T = frag.nthreads
    V = TV // T
    d = pair_distance(bits, V)
    assert P * V == frag.nvals and V * bits <= 128 and blocked((P, TV), T, bits).vmodes[0][0] == V
    assert d * bits == 16 if 16 % bits == 0 else d == {3: 4, 5: 4, 6: 2, 7: 2}[bits]
    rng = np.random.default_rng()
    dt = tile.dtype(f"uint{bits}") if bits < 8 else tile.u8
    codes = rng.integers(0, 1 << bits, (SUB, BN)).astype(np.uint8)
    pc = tile.prelayout_weights(tile.from_codes(codes, dt), dt, SUB, BN, num_warps).codes()
    assert pc.shape == (P, TV)
    # the plan's relabeling applied to the ids, as the kernel applies it to the codes
    tile_ids = np.transpose(np.arange(P * TV).reshape(split), perm).reshape(SUB, BN)
    for t in rng.integers(0, T, 8):
        t = int(t)
        for v in rng.integers(0, frag.nvals // 2, 8):
            v = 2 * int(v)                                      # the register's first value (k even)
            pos = []
            for u in (v, v + 1):
                k, n = frag.coord(t, u)
                row, col = divmod(int(tile_ids[k, n]), TV)
                assert row == u // V and col // V == t              # in thread t's chunk u // V
                assert pc[row, col] == codes[k, n]
                pos.append(col % V)
            assert frag.coord(t, v + 1)[0] == frag.coord(t, v)[0] + 1
            assert pos[1] - pos[0] == d, (pos, d)
        # every slot of the chunk is used once
        ids = sorted(int(tile_ids[frag.coord(t, u)]) for u in range(frag.nvals))
        assert ids == sorted(p * TV + t * V + j for p in range(P) for j in range(V))


def test_threadmap_reshape_splits_a_mode_across_dims():
    m = blocked((4, 4096), 128, 4)                              # 128 threads x 32 codes along dim 1
    v = m.reshape((4, 4, 8, 4, 32))
    assert v is not None and v.nthreads == 128
    # the same elements at the same (thread, slot), in the new coordinates
    for t in (0, 5, 37, 127):
        for s in (0, 31, 64, 127):
            r, c = m.coord(t, s)
            assert v.coord(t, s) == (r, c // 1024, c // 128 % 8, c // 32 % 4, c % 32)
    # a mode that cannot be split along the new dims still gives no view
    assert ThreadMap((8, 6), [(2, (0, 3))], [(3, (0, 1)), (8, (1, 0))]).reshape((8, 3, 2)) is None


def test_bad_arguments_are_named():
    """A tile the fragments cannot split and codes that are not an integer matrix: one clear ValueError."""
    with pytest.raises(ValueError, match=r"\[SUB=16, BN=100\] weight tile on 4 warps has no mma.m16n8k16"):
        tile.prelayout_weights(np.zeros((64, 100), np.uint8), "int4", 16, 100)
    for bad in (np.zeros(100, np.uint8), np.zeros((8, 8))):
        with pytest.raises(ValueError, match=r"codes must be a \[K, N\] matrix of integer codes"):
            tile.prelayout_weights(bad, "int4")
