"""8-bit GEMMs on the tensor cores: fp8 (e4m3 / e5m2) with per-tensor scales, and int8 with an
exact i32 result.

* `gemm_fp8`: C = ((A @ B) * scale_a * scale_b).astype(bf16) -- what `torch._scaled_mm(A, B,
  scale_a, scale_b, out_dtype=torch.bfloat16)` computes: A is [M, K] row-major, B is given as
  its transpose Bt [N, K] row-major (torch's column-major B), the scales are one-element f32
  tensors on the device. The products are accumulated in f32 by the tensor cores.
  A and B take their dtype from the arguments: e4m3 or e5m2 (one dtype for both).
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
             scale_a: tile.Tensor[f32, 1], scale_b: tile.Tensor[f32, 1],
             BM: tile.constexpr = 128, BN: tile.constexpr = 128, BK: tile.constexpr = 128,
             STAGES: tile.constexpr = 4, B_T: tile.constexpr = True):
    K = A.shape[1]
    bm = tile.block_id(0)
    bn = tile.block_id(1)
    acc = tile.zeros((BM, BN), f32)
    for k in tile.range(0, K, BK, stages=STAGES):
        a = tile.load(A, (bm * BM, k), (BM, BK))
        if B_T:
            b = tile.load(B, (bn * BN, k), (BN, BK)).T       # B given as Bt [N, K]
        else:
            b = tile.load(B, (k, bn * BN), (BK, BN))
        acc = tile.dot(a, b, acc)
    # per-tensor scales in the epilogue, on the accumulator in registers
    acc = acc * (scale_a[0] * scale_b[0])
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
EXAMPLE_SIGNATURES = {"gemm_fp8": {"A": "tensor<?x?xf8e4m3fn>", "B": "tensor<?x?xf8e4m3fn>"},
                      "gemm_int8": {"A": "tensor<?x?xi8>", "B": "tensor<?x?xi8>"}}


def quantize_fp8(x, dtype=tile.f8e4m3fn):
    """x (float) -> (fp8 array, its f32 per-tensor scale): x ~= q * scale, with the largest |x|
    mapped to the largest finite fp8 value (e4m3: 448, e5m2: 57344)."""
    top = 448.0 if dtype == tile.f8e4m3fn else 57344.0
    amax = float(np.abs(x).max()) or 1.0
    scale = np.float32(amax / top)
    return tile.asarray(x / scale, dtype), scale


def reference_fp8(a, bt, scale_a, scale_b):
    """float64 reference on the exact fp8 inputs the kernel sees."""
    return (a.astype(np.float64) @ bt.astype(np.float64).T) * float(scale_a) * float(scale_b)


def run_fp8(M=100, N=72, K=160, dtype=tile.f8e4m3fn, B_T=True, seed=None, **cfg):
    """Launch on fresh random inputs; return the relative error (Frobenius) against float64."""
    rng = np.random.default_rng(seed)
    A, sa = quantize_fp8(rng.standard_normal((M, K)), dtype)
    Bt, sb = quantize_fp8(rng.standard_normal((N, K)) / np.sqrt(K), dtype)
    B = Bt if B_T else tile.asarray(Bt.numpy().T.copy(), dtype)
    C = tile.asarray(np.full((M, N), np.nan), bf16)        # poisoned: every element must be written
    scale_a, scale_b = np.array([sa], np.float32), np.array([sb], np.float32)
    BM, BN = cfg.get("BM", 128), cfg.get("BN", 128)
    gemm_fp8[(tile.cdiv(M, BM), tile.cdiv(N, BN))](A, B, C, scale_a, scale_b, B_T=B_T, **cfg)
    ref = reference_fp8(A.numpy(), Bt.numpy(), sa, sb)
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
        err = run_fp8(M, N, K, dtype=dt)
        print(f"gemm_fp8 {dt} {M}x{N}x{K} on {tile.current_target()}: relative error {err:.2e}")
        assert err < 1e-2, err
    bad = run_int8(M, N, K)
    print(f"gemm_int8 {M}x{N}x{K} on {tile.current_target()}: {bad} elements differ from the exact product")
    assert bad == 0
