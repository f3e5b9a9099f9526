"""8-bit GEMMs on the tensor cores: fp8 (e4m3 / e5m2) with per-tensor scales, and int8 with an
exact i32 result.

* `gemm_fp8`: C = ((A @ B) * scale_a * scale_b).astype(bf16) -- what `torch._scaled_mm(A, B,
  scale_a, scale_b, out_dtype=torch.bfloat16)` computes: A is [M, K] row-major, B is given as
  its transpose Bt [N, K] row-major (torch's column-major B), the scales are one-element f32
  tensors on the device. The products are accumulated in f32 by the tensor cores.
  A and B take their dtype from the arguments: e4m3 or e5m2 (one dtype for both).
  SCALING selects the scales: "tensor" (one f32 each, as above), "rowcol" (scale_a [M], scale_b [N]:
  `torch._scaled_mm`'s row-wise scaling), "block" (DeepGEMM's: scale_a [M, cdiv(K, 128)], one per
  row and 128-deep K block of A; scale_b [cdiv(N, 128), cdiv(K, 128)], one per 128x128 block of B;
  each block's product is scaled in f32 as it is added).
* `gemm_int8`: C = A @ B in i32, exactly (wrapping modulo 2**32 like `torch._int_mm`), A [M, K]
  and Bt [N, K] of i8 (or u8).

Both read Bt through `.T`: the tile loaded as [BN, BK] (K contiguous, copied by cp.async as it is)
is B's [BK, BN] tile stored K-major, which is what the 8-bit wgmma (sm_90a; no transpose for
8-bit operands) and the 8-bit ldmatrix (sm_80 / sm_89 mma.sync m16n8k32) read. With B_T = False
the kernels take B [K, N] (N contiguous) instead: correct, but the tile is transposed through
registers on its way to shared memory (synchronous copies), so it is slower.

Run: python examples/gemm8.py [M N K]   (on the GPU if there is one, else in the interpreter)
"""
import sys

import numpy as np

import tile
from tile import bf16, f32, i32


@tile.kernel
def gemm_fp8(A: tile.Tensor[2], B: tile.Tensor[2], C: tile.Tensor[bf16, 2],
             scale_a: tile.Tensor[f32], scale_b: tile.Tensor[f32],
             BM: tile.constexpr = 128, BN: tile.constexpr = 128, BK: tile.constexpr = 128,
             STAGES: tile.constexpr = 4, B_T: tile.constexpr = True, SCALING: tile.constexpr = "tensor"):
    K = A.shape[1]
    bm = tile.block_id(0)
    bn = tile.block_id(1)
    acc = tile.zeros((BM, BN), f32)
    tile.static_assert(SCALING == "tensor" or SCALING == "rowcol" or SCALING == "block",
                       "SCALING is one of 'tensor', 'rowcol', 'block'")
    if SCALING == "block":
        tile.static_assert(BK == 128 and BN == 128, "block scaling takes 128-wide K and N tiles (one scale each)")
    for k in tile.range(0, K, BK, stages=STAGES):
        a = tile.load(A, (bm * BM, k), (BM, BK))
        if B_T:
            b = tile.load(B, (bn * BN, k), (BN, BK)).T       # B given as Bt [N, K]
        else:
            b = tile.load(B, (k, bn * BN), (BK, BN))
        if SCALING == "block":
            # DeepGEMM's scaling: each 128-deep slice's product is scaled in f32 before it joins the
            # sum (the scales differ per slice, so they cannot wait for the epilogue)
            sa = tile.load(scale_a, (bm * BM, k // 128), (BM, 1))     # [BM, 1]: one per row and K block
            sb = tile.load(scale_b, (bn, k // 128), (1, 1))           # one per 128x128 block of B
            acc = tile.fma(tile.dot(a, b), sa * sb, acc)               # one fma per value
        else:
            acc = tile.dot(a, b, acc)
    if SCALING == "tensor":
        acc = acc * (scale_a[0] * scale_b[0])                          # one-element tensors
    if SCALING == "rowcol":
        acc = acc * tile.load(scale_a, (bm * BM,), (BM,))[:, None] * tile.load(scale_b, (bn * BN,), (BN,))[None, :]
    tile.store(C, (bm * BM, bn * BN), acc.astype(bf16))


@tile.kernel
def gemm_int8(A: tile.Tensor[2], B: tile.Tensor[2], C: tile.Tensor[i32, 2],
              BM: tile.constexpr = 128, BN: tile.constexpr = 128, BK: tile.constexpr = 128,
              STAGES: tile.constexpr = 4, B_T: tile.constexpr = True):
    K = A.shape[1]
    bm = tile.block_id(0)
    bn = tile.block_id(1)
    acc = tile.zeros((BM, BN), i32)
    for k in tile.range(0, K, BK, stages=STAGES):
        a = tile.load(A, (bm * BM, k), (BM, BK))
        if B_T:
            b = tile.load(B, (bn * BN, k), (BN, BK)).T
        else:
            b = tile.load(B, (k, bn * BN), (BK, BN))
        acc = tile.dot(a, b, acc)
    tile.store(C, (bm * BM, bn * BN), acc)


# the dtypes to compile with where no launch gives them (tools and tests: `tilec ir` takes them as -D)
EXAMPLE_SIGNATURES = {"gemm_fp8": {"A": "tensor<?x?xf8e4m3fn>", "B": "tensor<?x?xf8e4m3fn>",
                                   "scale_a": "tensor<?xf32>", "scale_b": "tensor<?xf32>"},   # SCALING="tensor"
                      "gemm_int8": {"A": "tensor<?x?xi8>", "B": "tensor<?x?xi8>"}}


def quantize_fp8(x, dtype=tile.f8e4m3fn, axis=None):
    """x (float) -> (fp8 array, its f32 scales): x ~= q * scale, the largest |x| of each group mapped to
    the largest finite fp8 value (e4m3: 448, e5m2: 57344). axis=None: one scale for the tensor (a
    one-element array); axis=1: one per row ([M]); axis=0: one per column ([N])."""
    top = 448.0 if dtype == tile.f8e4m3fn else 57344.0
    amax = np.abs(x).max(axis=axis, keepdims=axis is not None)
    scale = np.where(amax > 0, amax / top, 1.0).astype(np.float32)
    return tile.asarray(x / scale, dtype), scale.reshape(-1)


def quantize_fp8_blocks(x, rows, dtype=tile.f8e4m3fn):
    """x [R, K] -> (fp8 array, f32 scales [cdiv(R, rows), cdiv(K, 128)]): one scale per block of `rows`
    rows (1 for activations, 128 for weights) by 128 columns."""
    top = 448.0 if dtype == tile.f8e4m3fn else 57344.0
    R, K = x.shape
    nr, nk = -(-R // rows), -(-K // 128)
    pad = np.zeros((nr * rows, nk * 128))
    pad[:R, :K] = np.abs(x)
    amax = pad.reshape(nr, rows, nk, 128).max(axis=(1, 3))
    scale = np.where(amax > 0, amax / top, 1.0).astype(np.float32)
    full = np.repeat(np.repeat(scale, rows, 0), 128, 1)[:R, :K]
    return tile.asarray(x / full, dtype), scale


def reference_fp8(a, bt, scale_a, scale_b, scaling="tensor"):
    """float64 reference on the exact fp8 inputs the kernel sees (a [M, K], bt [N, K]) and their scales."""
    a, bt = a.astype(np.float64), bt.astype(np.float64)
    if scaling == "tensor":
        return (a @ bt.T) * float(scale_a[0]) * float(scale_b[0])
    if scaling == "rowcol":
        return (a @ bt.T) * scale_a.astype(np.float64)[:, None] * scale_b.astype(np.float64)[None, :]
    M, K = a.shape
    sa = np.repeat(scale_a.astype(np.float64), 128, 1)[:, :K]                 # [M, K]
    sb = np.repeat(np.repeat(scale_b.astype(np.float64), 128, 0), 128, 1)[:bt.shape[0], :K]   # [N, K]
    return (a * sa) @ (bt * sb).T


def run_fp8(M=100, N=72, K=160, dtype=tile.f8e4m3fn, B_T=True, seed=None, SCALING="tensor", **cfg):
    """Launch on fresh random inputs; return the relative error (Frobenius) against float64."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K)) * np.exp(rng.standard_normal((M, 1)))      # rows of different sizes
    bt = rng.standard_normal((N, K)) / np.sqrt(K)
    if SCALING == "block":
        A, sa = quantize_fp8_blocks(a, 1, dtype)
        Bt, sb = quantize_fp8_blocks(bt, 128, dtype)
    else:
        A, sa = quantize_fp8(a, dtype, axis=1 if SCALING == "rowcol" else None)
        Bt, sb = quantize_fp8(bt, dtype, axis=1 if SCALING == "rowcol" else None)
    B = Bt if B_T else tile.asarray(Bt.numpy().T.copy(), dtype)
    C = tile.asarray(np.full((M, N), np.nan), bf16)        # poisoned: every element must be written
    BM, BN = cfg.get("BM", 128), cfg.get("BN", 128)
    gemm_fp8[(tile.cdiv(M, BM), tile.cdiv(N, BN))](A, B, C, sa, sb, B_T=B_T, SCALING=SCALING, **cfg)
    ref = reference_fp8(A.numpy(), Bt.numpy(), sa, sb, SCALING)
    out = C.numpy().astype(np.float64)
    assert np.isfinite(out).all(), "some outputs were not written"
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def run_int8(M=100, N=72, K=160, B_T=True, seed=None, **cfg):
    """Launch on fresh random int8 inputs (the full range, -128 included); return the number of
    elements that differ from the exact integer product."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (M, K), dtype=np.int8)
    bt = rng.integers(-128, 128, (N, K), dtype=np.int8)
    C = np.full((M, N), -(2 ** 31), np.int32)               # poisoned
    B = bt if B_T else np.ascontiguousarray(bt.T)
    BM, BN = cfg.get("BM", 128), cfg.get("BN", 128)
    gemm_int8[(tile.cdiv(M, BM), tile.cdiv(N, BN))](a, B, C, B_T=B_T, **cfg)
    ref = a.astype(np.int64) @ bt.astype(np.int64).T
    return int((C.astype(np.int64) != ref).sum())


if __name__ == "__main__":
    M, N, K = (int(x) for x in sys.argv[1:4]) if len(sys.argv) >= 4 else (100, 72, 160)
    for dt in (tile.f8e4m3fn, tile.f8e5m2):
        for scaling in ("tensor", "rowcol", "block"):
            err = run_fp8(M, N, K, dtype=dt, SCALING=scaling)
            print(f"gemm_fp8 {dt} {scaling:6s} {M}x{N}x{K} on {tile.current_target()}: relative error {err:.2e}")
            assert err < 1e-2, err
    bad = run_int8(M, N, K)
    print(f"gemm_int8 {M}x{N}x{K} on {tile.current_target()}: {bad} elements differ from the exact product")
    assert bad == 0
