"""Low-bit weight GEMM: bf16 activations X[M, K] times weights W[K, N] of ANY width 1..8 bits
(int3, int4, uint5, int6, f6e3m2, f4e2m1, ...) with group-wise scales S[K // G, N]:

    Y = X @ ((W - zero) * S)        (each scale covers G consecutive rows of W)

W is quantized and packed densely on the host (`tile.asarray(values, "int3")`: round to nearest
even, saturate, pack LSB-first); the kernel loads the packed codes, decodes them exactly, scales
in f32 and feeds bf16 tensor-core tiles. The same kernel source serves every weight type: the
weight dtype is taken from the argument and the kernel is specialized on it.

Run: python examples/lowbit_gemm.py
"""
import numpy as np

import tile
from tile import bf16, f32


@tile.kernel
def lowbit_gemm(X: tile.Tensor[bf16, 2], W: tile.Tensor[2], S: tile.Tensor[f32, 2], Y: tile.Tensor[bf16, 2],
                G: tile.constexpr = 32, ZERO: tile.constexpr = 0.0, BM: tile.constexpr = 16,
                BN: tile.constexpr = 64, BK: tile.constexpr = 32):
    tile.static_assert(G % BK == 0, "the K tile must lie inside one scale group")
    K = X.shape[1]
    bm = tile.block_id(0)
    bn = tile.block_id(1)
    acc = tile.zeros((BM, BN), f32)
    for k in tile.range(0, K, BK, stages=3):
        x = tile.load(X, (bm * BM, k), (BM, BK))
        w = tile.load(W, (k, bn * BN), (BK, BN))           # packed low-bit codes -> exact values
        s = tile.load(S, (k // G, bn * BN), (1, BN))       # this K tile's group of scales
        wf = (w.astype(f32) - ZERO) * s
        acc = tile.dot(x, wf.astype(bf16), acc)
    tile.store(Y, (bm * BM, bn * BN), acc.astype(bf16))


# weight type -> zero point subtracted before scaling (unsigned types are centred)
WEIGHT_TYPES = {"int3": 0.0, "int4": 0.0, "uint5": 16.0, "int6": 0.0, "f6e3m2": 0.0, "f4e2m1": 0.0,
                "uint1": 0.5, "int8": 0.0}


def quantize_weights(w, wtype, G, zero):
    """Group-wise symmetric quantization on the host: returns (packed W, scales S)."""
    t = tile.dtype(wtype)
    K, N = w.shape
    groups = w.reshape(K // G, G, N)
    span = max(abs(t.max_value - zero), abs(t.min_value - zero))
    S = (np.abs(groups).max(axis=1) / span).astype(np.float32)          # [K // G, N]
    codes = tile.asarray(w / np.repeat(S, G, axis=0) + zero, t)         # round + saturate + pack
    return codes, S


def run(M=5, N=64, K=128, wtype="int4", G=32, seed=None, **consts):
    """Launch on fresh random inputs; return the relative error against the float64 reference."""
    rng = np.random.default_rng(seed)
    zero = WEIGHT_TYPES[wtype]
    X = tile.asarray(rng.standard_normal((M, K)), bf16)
    W, S = quantize_weights(rng.standard_normal((K, N)), wtype, G, zero)
    Y = tile.asarray(np.full((M, N), np.nan), bf16)
    BM, BN = consts.get("BM", 16), consts.get("BN", 64)
    lowbit_gemm[(tile.cdiv(M, BM), tile.cdiv(N, BN))](X, W, S, Y, G=G, ZERO=zero, **consts)
    w_exact = (W.numpy().astype(np.float64) - zero) * np.repeat(S.astype(np.float64), G, axis=0)
    ref = X.numpy().astype(np.float64) @ w_exact
    out = Y.numpy().astype(np.float64)
    assert np.isfinite(out).all(), "some outputs were not written"
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


if __name__ == "__main__":
    for wtype in WEIGHT_TYPES:
        err = run(wtype=wtype)
        print(f"lowbit_gemm W={wtype:7s} M=5 N=64 K=128 G=32 on {tile.current_target()}: relative error {err:.2e}")
        assert err < 1e-2, err
