"""Low-bit weight GEMM for small M (LLM decode, M = 1..16), split over K: bf16 activations X[M, K]
times weights W[K, N] of ANY width 1..8 bits with group scales S[cdiv(K, G), N] and optional zero
points:

    Y += X @ ((W - zero) * S)          (Y: f32, zeroed by the caller; `launch()` does it)

One source serves every weight type (int2..int8, uint with a zero point, f4e2m1, f6e3m2, fp8): the
kernel is specialized on W's dtype. Where the time goes at M = 1 is reading W, so the kernel is
built for bandwidth:

* split-K: grid (cdiv(N, BN), cdiv(K, KS), cdiv(M, BM)). Each block reduces one K slice of KS rows
  and adds its partial sums into Y with `tile.atomic_add` (f32 `red.global.add`). `config()` picks
  the split so that every block is resident at once (one wave): 14336 x 4096 on the register path
  (4 blocks per SM) is BN = 128, KS = 1024: 112 x 4 = 448 blocks of 8 K tiles.
  Why atomics and not a workspace reduced by a second kernel: both need a second launch-sized step
  on the timeline (zeroing Y, ~1-2 us, or the reduction kernel, ~2 us) and both move a few hundred
  KB at most (SPLIT x M x N x 4 bytes; 8 x 14336 x 4 = 459 KB at M = 1: 0.15 us of HBM time, and
  the atomics resolve in L2 without reaching HBM at all). The atomics need no workspace and no
  extra bytes read back; the workspace gives a deterministic summation order (atomics add the
  SPLIT partials in arrival order, so the last bits of Y can change between runs). A caller that
  needs bit-reproducible output can use SPLIT = 1 (KS >= K).
* dequantization is the `cast` of the codes to bf16, which instruction selection lowers to bit
  tricks (codegen/fast_convert.py: magic-number bias for integers, exponent shift + one power-of-two
  multiply for small floats, two values per 32-bit register); exact for every type.
* scales and zero points are applied once per group, not per weight: within a group the dot of the
  raw codes is formed first (exact integers or small floats times bf16 activations, f32 sums), then
  `part = (dot(x, w) - zero * rowsum(x)) * s` -- (w - z) * s summed over the group is exactly that.
  So a uint code with a zero point costs nothing extra per weight.
* two ways to multiply, a constexpr: MMA = True uses the tensor cores (mma.m16n8k16, M padded to
  BM = 16: the padding is free, the tensor cores are idle in this regime anyway); MMA = False is a
  broadcast multiply + reduction over K in registers (f32 FMAs, no padding: BM = 1..4).

Per-channel scales: G = 0 (S is [1, N], applied once at the end of the slice). The scales' dtype is
S's: f32, bf16, ... MX scales (one per 32 values, G = 32): S: Tensor[tile.e8m0] (f8e8m0fnu, 2^(c - 127);
`tile.asarray(s, tile.e8m0)` or an ml_dtypes float8_e8m0fnu array); raw uint8 exponent codes work
too with SCALE = "e8m0", which reinterprets them as e8m0. NVFP4: S as f8e4m3fn per 16 values
(G = 16), optionally times a per-tensor f32 `gscale` applied by the caller.

Run: python examples/lowbit_gemv.py
"""
import numpy as np

import tile
from tile import bf16, f32


@tile.kernel
def lowbit_gemv(X: tile.Tensor[bf16, 2], W: tile.Tensor[2], S: tile.Tensor[2], Z: tile.Tensor[2],
                Y: tile.Tensor[f32, 2],
                G: tile.constexpr = 128, ZERO: tile.constexpr = 0.0, HAS_Z: tile.constexpr = False,
                SCALE: tile.constexpr = "float", MMA: tile.constexpr = True,
                BM: tile.constexpr = 16, BN: tile.constexpr = 128, BK: tile.constexpr = 128,
                KS: tile.constexpr = 512, STAGES: tile.constexpr = 4, PRELAID: tile.constexpr = None):
    tile.static_assert(KS % BK == 0, "the K slice must be a whole number of K tiles")
    # one sub-step per scale group inside a K tile (the whole tile when groups are larger / per-channel)
    SUB = BK if G == 0 or G >= BK else G
    tile.static_assert(BK % SUB == 0 and (G == 0 or G % SUB == 0), "BK and G must divide one another")
    bn = tile.block_id(0)
    ks = tile.block_id(1)
    bm = tile.block_id(2)
    m0 = bm * BM
    n0 = bn * BN
    k_lo = ks * KS
    acc = tile.zeros((BM, BN), f32)
    for k in tile.range(k_lo, k_lo + KS, BK, stages=STAGES):
        for j in tile.static_range(BK // SUB):
            kk = k + j * SUB
            x = tile.load(X, (m0, kk), (BM, SUB))                     # zero beyond M and K
            if PRELAID:                                               # W from tile.prelayout_weights
                w = _prelaid_tile(W, kk // SUB, bn, SUB, BN, PRELAID)
            else:
                w = tile.load(W, (kk, n0), (SUB, BN))
            if MMA:
                part = tile.dot(x, w.astype(bf16))                    # exact bit-trick decode; [BM, BN] f32
            else:
                part = tile.sum(x.astype(f32)[:, :, None] * w.astype(f32)[None, :, :], axis=1)
            if HAS_Z or ZERO != 0.0:
                rs = tile.sum(x.astype(f32), axis=1)[:, None]         # [BM, 1]: sum of x over the group
                if HAS_Z:
                    part = part - rs * tile.load(Z, (0 if G == 0 else kk // G, n0), (1, BN)).astype(f32)
                else:
                    part = part - rs * ZERO
            if G == 0:
                acc = acc + part
            else:
                acc = tile.fma(part, _scale(tile.load(S, (kk // G, n0), (1, BN)), SCALE), acc)
    if G == 0:
        acc = acc * _scale(tile.load(S, (0, n0), (1, BN)), SCALE)
    tile.atomic_add(Y, (m0, n0), acc)


@tile.inline
def _prelaid_tile(W, kt, bn, SUB: tile.constexpr, BN: tile.constexpr, PLAN: tile.constexpr):
    """The [SUB, BN] weight tile (kt, bn) of pre-laid-out codes: one plain load of its [P, T * V]
    block (each thread: whole 16-byte chunks), then a reshape into the mma B fragment's modes and a
    permute into (k, n) order -- both relabel registers: the loaded layout IS the fragment layout."""
    wp = tile.load(W, (kt * PLAN[0], bn * PLAN[1]), (PLAN[0], PLAN[1]))
    return tile.permute(wp.reshape(PLAN[2]), PLAN[3]).reshape((SUB, BN))


@tile.inline
def _scale(s, SCALE: tile.constexpr):
    """Scales -> f32, a cast of S's dtype (e8m0 included: 2^(c - 127), the f32 whose exponent field is
    c). SCALE = "e8m0" takes uint8 codes and reads them as e8m0 (a bitcast: no instruction)."""
    if SCALE == "e8m0":
        s = s.bitcast(tile.e8m0)
    return s.astype(f32)


def config(M, N, K, bits, G=128, mma=None, sms=132, resident=None, scale="float", prelaid=False):
    """Launch constants for a problem: BN = 128 columns; a K tile BK of 256 rows for widths <= 4 bits
    (16 KB of int4 codes per tile) or 128 (16 KB of int8), halved when the problem is too small to fill
    the GPU otherwise; and the K slice KS (a multiple of BK): the SHORTEST whose grid still fits in one
    wave of resident blocks -- `resident` per SM (default 4 on the register path: 51 KB rings; 2 on the
    shared-memory path: 102 KB) times `sms` -- so that every block streams its slice from the start and
    none waits for another to finish. Why: on an H100 (BENCHMARKS.md, 2026-12-06) the longest KS that
    still gave >= 4 x 132 blocks made 896 blocks of 4 K tiles for 14336 x 4096 (1.7 waves at 4 per SM:
    17.8 us, 1.65 TB/s) and 1024 blocks of ONE tile for 4096 x 4096 (9.2 us for 8 MB): each wave paid
    the memory latency again and the tail ran on part of the GPU. (This rule is not measured yet;
    `benchmarks/lowbit.py --ks 512` times the old split of 14336 x 4096 for comparison.)
    MMA (tensor cores, M padded to 16: its loads are software-pipelined through cp.async) unless
    mma=False is asked; then BM = M rounded up to 1, 2 or 4 (the FMA path)."""
    mma = True if mma is None else mma
    BM = 16 if mma else min(4, 1 << (M - 1).bit_length())
    BN = 128
    nb = tile.cdiv(N, BN) * tile.cdiv(M, BM)
    want = (resident or (4 if prelaid else 2)) * sms
    # prelaid (the register path): K tiles of at most 128 rows. Its blocks need no shared scratch to
    # transpose the weights, so smaller rings (4 stages x 12.5 KB = 51 KB at BK = 128, against 102 KB
    # at 256) fit 4 blocks per SM instead of 2 -- 4 x 2 prefetched x 8 KB = 64 KB of int4 in flight
    # per SM, where ~25 KB covers HBM latency at the per-SM share of bandwidth.
    for BK in ((128, 64) if prelaid else (256, 128, 64) if bits <= 4 else (128, 64)):
        if G and G > BK:
            break
        if nb * tile.cdiv(K, BK) >= want:
            break
    if G and BK % G and G % BK:
        BK = G
    KS = BK
    while KS < K and nb * tile.cdiv(K, KS) > want:
        KS *= 2
    out = dict(BM=BM, BN=BN, BK=BK, KS=KS, MMA=mma)
    if scale == "e8m0" and mma and not prelaid:        # 4 warps: 255 registers and a 4-byte spill on sm_90a (TMA copies)
        out["num_warps"] = 8
    return out


def grid(M, N, K, BM, BN, KS, **_):
    return (tile.cdiv(N, BN), tile.cdiv(K, KS), tile.cdiv(M, BM))


def launch(X, W, S, Y, Z=None, **consts):
    """Y (f32, [M, N]) = X @ dequant(W): zeroes Y, then one split-K launch."""
    M, K = X.shape
    N = Y.shape[1]                                           # (a pre-laid-out W has another shape)
    if hasattr(Y, "zero_"):                                  # torch
        Y.zero_()
    elif hasattr(Y, "fill_bytes"):                           # tile.DeviceArray
        Y.fill_bytes(0)
    else:                                                    # NumPy (host data: copied in and out)
        Y[...] = 0
    lowbit_gemv[grid(M, N, K, **consts)](X, W, S, Z if Z is not None else S, Y, HAS_Z=Z is not None, **consts)


def sub_step(BK, G):
    """The K rows one dot covers: a scale group inside the K tile (the whole tile for larger groups)."""
    return BK if G == 0 or G >= BK else G


def prelay(W, BK, G, BN=128, num_warps=4):
    """Host side of the register path: (pre-laid-out W, the PRELAID constant) for these constants.
    W: the [K, N] codes as `quantize` makes them (tile.Array)."""
    SUB = sub_step(BK, G)
    return (tile.prelayout_weights(W, W.dtype, SUB, BN, num_warps),
            tile.prelayout_plan(W.dtype.bits, SUB, BN, num_warps))


# weight type -> zero point subtracted before scaling (unsigned types are centred)
WEIGHT_TYPES = {"int2": 0.0, "int3": 0.0, "int4": 0.0, "int8": 0.0, "uint5": 16.0, "uint7": 64.0,
                "f4e2m1": 0.0, "f6e3m2": 0.0, "f8e4m3fn": 0.0}


def quantize(w, wtype, G, zero=0.0, scale="float"):
    """Group-wise quantization on the host: returns (packed W, S, exact dequantized float64 W).
    scale: "float" (f32 scales), "e8m0" (MX: power-of-two scales, a tile.e8m0 array), "e8m0-codes"
    (the same as uint8 exponent codes) or "e4m3" (NVFP4: f8e4m3fn scales)."""
    t = tile.dtype(wtype)
    K, N = w.shape
    g = G or K
    ng = tile.cdiv(K, g)
    pad = np.zeros((ng * g, N))
    pad[:K] = w
    span = max(abs(t.max_value - zero), abs(t.min_value - zero))
    amax = np.abs(pad.reshape(ng, g, N)).max(axis=1)
    amax = np.where(amax == 0, 1.0, amax)
    if scale in ("e8m0", "e8m0-codes"):
        e = np.ceil(np.log2(amax / span)).astype(np.int64)
        sv = np.ldexp(1.0, e)
        S = tile.asarray(sv, tile.e8m0)                      # exact: powers of two in range
        if scale == "e8m0-codes":
            S = tile.asarray(S.codes(), tile.u8)
    elif scale == "e4m3":
        S = tile.asarray(amax / span, "f8e4m3fn")
        sv = S.numpy().astype(np.float64)
    else:
        S = (amax / span).astype(np.float32)
        sv = S.astype(np.float64)
    srep = np.repeat(sv, g, axis=0)[:K]
    codes = tile.asarray(w / srep + zero, t)                 # round + saturate + pack
    wq = (codes.numpy().astype(np.float64) - zero) * srep
    return codes, S, wq


def run(M=3, N=200, K=384, wtype="int4", G=128, scale="float", zero_tensor=False, seed=None, prelaid=False,
        **consts):
    """Launch on fresh random inputs; return the relative error against the float64 reference.
    prelaid: the weights pre-laid-out on the host (`prelay`) and loaded straight into registers."""
    rng = np.random.default_rng(seed)
    zero = WEIGHT_TYPES[wtype]
    X = tile.asarray(rng.standard_normal((M, K)), bf16)
    W, S, wq = quantize(rng.standard_normal((K, N)), wtype, G, zero, scale)
    mx = scale in ("e8m0", "e8m0-codes")
    c = dict(config(M, N, K, tile.dtype(wtype).bits, G, scale="e8m0" if mx else scale, prelaid=prelaid), G=G,
             SCALE="e8m0" if scale == "e8m0-codes" else "float")
    c.update(consts)
    if prelaid:
        W, c["PRELAID"] = prelay(W, c["BK"], G, c["BN"], c.get("num_warps", 4))
    Y = np.full((M, N), np.nan, np.float32)
    if zero_tensor:                                           # the same zero point, as a tensor
        Z = np.full((tile.cdiv(K, G or K), N), zero, np.float32)
        launch(X, W, S, Y, Z=Z, **c)
    else:
        launch(X, W, S, Y, ZERO=zero, **c)
    ref = X.numpy().astype(np.float64) @ wq
    assert np.isfinite(Y).all(), "some outputs were not written"
    return float(np.linalg.norm(Y - ref) / np.linalg.norm(ref))


if __name__ == "__main__":
    for wtype in WEIGHT_TYPES:
        for mma in (True, False):
            err = run(wtype=wtype, MMA=mma, BM=16 if mma else 4)
            print(f"lowbit_gemv W={wtype:8s} MMA={mma!s:5s} M=3 N=200 K=384 G=128 on {tile.current_target()}: "
                  f"relative error {err:.2e}")
            assert err < 1e-2, err
