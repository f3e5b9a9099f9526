"""bf16 GEMM with f32 accumulation and a fused epilogue: C = act(scale * (A @ B) + bias).

Variants (constexpr options of `gemm`; `grid()` gives the launch grid of each):
* default: one block per output tile, the K loop pipelined through a STAGES-deep shared ring.
* WS=True (Hopper): a producer warpgroup issues the TMA copies, num_warps consumer warps run wgmma
  (passes/warp_specialize.py).
* PERSISTENT=True: min(#SMs, #tiles) blocks, each looping over the output tiles in grouped order.
* PERSISTENT=True, WS=True: CUTLASS's "persistent warp-specialized" kernel. The roles split around
  the tile loop: the producer runs ahead across tiles (it issues tile t+1's first K blocks while the
  consumers run tile t's epilogue), the ring and its mbarriers are set up once per block. The ring
  stays live through the epilogue, so the epilogue's shared memory comes on top of it (128x256 and
  256x128 tiles: 3 stages).
* launch option cluster=(c, 1, 1) (Hopper, with WS): the c blocks of a cluster compute c row tiles of
  one column tile, so they read the same B tiles; each fetches 1/c of every B tile and TMA multicasts
  it into all c blocks (`load(..., multicast=True)`): c times less L2 traffic for B (CUTLASS's 2x1
  cluster). `grid(..., cluster=c)` sizes the grid for it.

Run: python examples/gemm.py [M N K]   (on the GPU if there is one, else in the interpreter)
"""
import sys

import numpy as np

import tile
from tile import bf16, f32


@tile.inline
def grouped_tile(pid, nm, nn, GROUP: tile.constexpr):
    """(row tile, column tile) of output tile number `pid` of nm x nn in grouped order: consecutive
    tiles walk down GROUP row tiles before moving one column tile right, so the tiles computed at once
    read about sqrt(#tiles) panels of A and of B instead of every panel of A (Triton's GROUP_M)."""
    per_group = GROUP * nn
    first = pid // per_group * GROUP
    rows = tile.minimum(nm - first, GROUP)
    return first + pid % per_group % rows, pid % per_group // rows


@tile.inline
def epilogue(acc, bias, scale, n0, HAS_BIAS: tile.constexpr, ACT: tile.constexpr):
    """act(scale * acc + bias[n0:n0 + BN]) on the f32 accumulator tile."""
    if HAS_BIAS:
        acc = tile.fma(acc, scale, tile.load(bias, (n0,), (acc.shape[1],))[None, :])    # one fma per value
    else:
        acc = acc * scale
    if ACT == "relu":
        acc = tile.maximum(acc, 0.0)
    if ACT == "silu":
        acc = acc * tile.sigmoid(acc)
    if ACT == "gelu":
        acc = 0.5 * acc * (1.0 + tile.erf(acc * 0.7071067811865476))
    return acc


@tile.kernel
def gemm(A: tile.Tensor[bf16, 2], B: tile.Tensor[bf16, 2], C: tile.Tensor[bf16, 2], bias: tile.Tensor[f32, 1],
         scale: float, BM: tile.constexpr = 128, BN: tile.constexpr = 128, BK: tile.constexpr = 64,
         STAGES: tile.constexpr = 3, HAS_BIAS: tile.constexpr = False, ACT: tile.constexpr = "none",
         GROUP: tile.constexpr = 8, PERSISTENT: tile.constexpr = False, WS: tile.constexpr = False,
         SCHEDULE: tile.constexpr = None):
    # The unit of work is a cluster's: cs consecutive row tiles of one column tile (cs = 1 without a
    # `cluster` launch, and every block is its own cluster); block r of the cluster takes row tile r.
    cs = tile.cluster_shape(0)
    nm = tile.cdiv(tile.cdiv(A.shape[0], BM), cs)
    nn = tile.cdiv(B.shape[1], BN)
    if PERSISTENT:
        # grid: (cs * min(#SMs / cs, #work units),): each cluster loops over the work units
        # t = cluster, cluster + #clusters, ...
        for t in tile.range(tile.cluster_id(0), nm * nn, tile.num_clusters(0)):
            bm, bn = grouped_tile(t, nm, nn, GROUP)
            output_tile(A, B, C, bias, scale, bm * cs + tile.block_in_cluster(0), bn, BM, BN, BK, STAGES,
                        HAS_BIAS, ACT, WS, SCHEDULE)
    else:
        # grid: (cs * nm, nn), axis 0 fastest
        pid = tile.block_id(1) * tile.num_clusters(0) + tile.cluster_id(0)
        bm, bn = grouped_tile(pid, nm, nn, GROUP)
        output_tile(A, B, C, bias, scale, bm * cs + tile.block_in_cluster(0), bn, BM, BN, BK, STAGES, HAS_BIAS,
                    ACT, WS, SCHEDULE)


@tile.inline
def output_tile(A, B, C, bias, scale, bm, bn, BM: tile.constexpr, BN: tile.constexpr, BK: tile.constexpr,
                STAGES: tile.constexpr, HAS_BIAS: tile.constexpr, ACT: tile.constexpr, WS: tile.constexpr,
                SCHEDULE: tile.constexpr):
    """C[bm, bn] tile = epilogue(A[bm, :] @ B[:, bn])."""
    acc = tile.zeros((BM, BN), f32)
    # WS (Hopper): a producer warpgroup issues the TMA copies, num_warps consumer warps run the wgmma;
    # with PERSISTENT the producer runs ahead into the next tile during this tile's epilogue.
    # SCHEDULE (AMD): "pingpong" with num_warps=8, "interleave" with 4 (AMD_CONFIGS); NVIDIA ignores it
    for k in tile.range(0, A.shape[1], BK, stages=STAGES, warp_specialize=WS, schedule=SCHEDULE):
        a = tile.load(A, (bm * BM, k), (BM, BK))           # out-of-bounds elements read 0
        b = tile.load(B, (k, bn * BN), (BK, BN), multicast=True)    # the same in every block of the cluster
        acc = tile.dot(a, b, acc)
    # The epilogue runs on the accumulator in registers, fused before the store.
    tile.store(C, (bm * BM, bn * BN), epilogue(acc, bias, scale, bn * BN, HAS_BIAS, ACT).astype(bf16))


def grid(M, N, BM, BN, PERSISTENT=False, sms=132, cluster=1, **_):
    """The launch grid of `gemm` for a config: one block per output tile (the row tiles rounded up to
    whole clusters of `cluster` blocks), or (PERSISTENT) one per SM at most, in whole clusters, each
    looping over the tiles."""
    cluster = cluster if isinstance(cluster, int) else cluster[0]      # an autotune config's meta: (x, y, z)
    units = (tile.cdiv(tile.cdiv(M, BM), cluster), tile.cdiv(N, BN))
    if PERSISTENT:
        return (cluster * min(sms // cluster, units[0] * units[1]),)
    return (cluster * units[0], units[1])


# ---- AMD CDNA (MI300X gfx942, MI355X gfx950): the wave schedules of HipKittens, as configs of `gemm`.
# 8-wave ping-pong on a 256x128 tile (HipKittens' bf16 GEMM uses 256x256; here that tile needs more
# than the 256 registers per lane two waves per SIMD leave, and its epilogue more than gfx942's 64 KB
# of LDS -- 256x128x64 is the largest that compiles with no scratch on both); 4-wave interleave on
# 128x128. Each entry: the kernel's constexprs plus the launch's num_warps.
AMD_CONFIGS = [dict(BM=256, BN=128, BK=64, SCHEDULE="pingpong", num_warps=8),
               dict(BM=128, BN=128, BK=64, SCHEDULE="interleave", num_warps=4)]


# ---- split-K for skinny products (M of a few rows): the (M/BM) x (N/BN) output tiles are too few to
# keep 132 SMs streaming B, so each output tile's K range is cut into `num_blocks(2)` slices summed by
# separate blocks into f32 partials; a second launch adds the partials in slice order (deterministic,
# no atomics) and applies the epilogue.

@tile.kernel
def gemm_splitk(A: tile.Tensor[bf16, 2], B: tile.Tensor[bf16, 2], Part: tile.Tensor[f32, 3],
                BM: tile.constexpr = 64, BN: tile.constexpr = 64, BK: tile.constexpr = 64,
                STAGES: tile.constexpr = 4):
    """Part[s] = A[:, Ks] @ B[Ks, :] for the s-th K slice Ks (a multiple of BK); grid (M/BM, N/BN, S)."""
    K = A.shape[1]
    bm, bn, s = tile.block_id(0), tile.block_id(1), tile.block_id(2)
    per_slice = tile.cdiv(tile.cdiv(K, tile.num_blocks(2)), BK) * BK
    acc = tile.zeros((BM, BN), f32)
    for k in tile.range(s * per_slice, tile.minimum((s + 1) * per_slice, K), BK, stages=STAGES):
        acc = tile.dot(tile.load(A, (bm * BM, k), (BM, BK)), tile.load(B, (k, bn * BN), (BK, BN)), acc)
    tile.store(Part, (s, bm * BM, bn * BN), acc)


@tile.kernel
def gemm_splitk_reduce(Part: tile.Tensor[f32, 3], C: tile.Tensor[bf16, 2], bias: tile.Tensor[f32, 1], scale: float,
                       BM: tile.constexpr = 16, BN: tile.constexpr = 128, HAS_BIAS: tile.constexpr = False,
                       ACT: tile.constexpr = "none"):
    """C = epilogue(sum over s of Part[s]); grid (M/BM, N/BN)."""
    bm, bn = tile.block_id(0), tile.block_id(1)
    acc = tile.zeros((BM, BN), f32)
    for s in tile.range(0, Part.shape[0]):
        acc = acc + tile.load(Part, (s, bm * BM, bn * BN), (BM, BN))
    tile.store(C, (bm * BM, bn * BN), epilogue(acc, bias, scale, bn * BN, HAS_BIAS, ACT).astype(bf16))


def split_k(M, N, K, BM, BN, BK, sms=132):
    """Slices of K so that the split-K grid has about two blocks per SM, each slice >= 4 K tiles."""
    tiles = tile.cdiv(M, BM) * tile.cdiv(N, BN)
    return max(1, min(tile.cdiv(2 * sms, tiles), tile.cdiv(K, 4 * BK)))


def reference(a, b, bias, scale, act):
    """float64 NumPy reference on the exact (bf16-rounded) inputs the kernel sees."""
    from math import erf
    y = scale * (a.astype(np.float64) @ b.astype(np.float64))
    if bias is not None:
        y = y + bias.astype(np.float64)[None, :]
    if act == "relu":
        y = np.maximum(y, 0.0)
    elif act == "silu":
        y = y / (1.0 + np.exp(-y))
    elif act == "gelu":
        y = 0.5 * y * (1.0 + np.vectorize(erf)(y / np.sqrt(2.0)))
    return y


def run(M=100, N=72, K=80, act="gelu", with_bias=True, BM=128, BN=128, BK=64, seed=None, GROUP=8, SPLIT=1,
        PERSISTENT=False, sms=132, STAGES=3, WS=False, SCHEDULE=None, num_warps=4, cluster=1):
    """Launch on fresh random inputs; return the relative error against the float64 reference."""
    rng = np.random.default_rng(seed)
    A = tile.asarray(rng.standard_normal((M, K)), bf16)
    B = tile.asarray(rng.standard_normal((K, N)) / np.sqrt(K), bf16)
    bias = rng.standard_normal(N).astype(np.float32)
    C = tile.asarray(np.full((M, N), np.nan), bf16)          # poisoned: every element must be written
    scale = 1.5
    if SPLIT == 1:
        gemm[grid(M, N, BM, BN, PERSISTENT, sms, cluster)](A, B, C, bias, scale, BM=BM, BN=BN, BK=BK,
                                                            HAS_BIAS=with_bias, ACT=act, GROUP=GROUP,
                                                            PERSISTENT=PERSISTENT, STAGES=STAGES, WS=WS,
                                                            SCHEDULE=SCHEDULE, num_warps=num_warps, cluster=cluster)
    else:                                                   # poisoned partials: every one must be written
        part = np.full((SPLIT, tile.cdiv(M, BM) * BM, tile.cdiv(N, BN) * BN), np.nan, np.float32)
        gemm_splitk[(tile.cdiv(M, BM), tile.cdiv(N, BN), SPLIT)](A, B, part, BM=BM, BN=BN, BK=BK)
        gemm_splitk_reduce[(tile.cdiv(M, 16), tile.cdiv(N, 128))](part, C, bias, scale, HAS_BIAS=with_bias, ACT=act)
    ref = reference(A.numpy(), B.numpy(), bias if with_bias else None, scale, act)
    out = C.numpy().astype(np.float64)
    assert np.isfinite(out).all(), "some outputs were not written"
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


if __name__ == "__main__":
    M, N, K = (int(x) for x in sys.argv[1:4]) if len(sys.argv) >= 4 else (100, 72, 80)
    for act in ("none", "relu", "gelu"):
        err = run(M, N, K, act=act, with_bias=act != "none")
        print(f"gemm {M}x{N}x{K} act={act:5s} on {tile.current_target()}: relative error {err:.2e}")
        assert err < 1e-2, err
    if tile.current_target().startswith("gfx"):            # AMD: the wave-scheduled configs as well
        for cfg in AMD_CONFIGS:
            err = run(M, N, K, act="gelu", **cfg)
            print(f"gemm {M}x{N}x{K} {cfg} on {tile.current_target()}: relative error {err:.2e}")
            assert err < 1e-2, err
