"""The gallery on an NVIDIA GPU (`pytest -m gpu`; skipped where there is none): each kernel against its
float64 reference on fresh random inputs with poisoned outputs (the examples' `run`), ragged shapes
included, and the GPU and the interpreter agreeing on the same inputs."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from helpers import gpu_and_interpreter

import tile
from tile import bf16

pytestmark = pytest.mark.gpu
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _gpu():
    from tile.kernel import gpu_arch
    return gpu_arch()


@pytest.fixture(autouse=True)
def _need_gpu(monkeypatch):
    if _gpu() is None:
        pytest.skip("no NVIDIA GPU/driver found")
    monkeypatch.delenv("TILEC_TARGET", raising=False)


def load(name):
    spec = importlib.util.spec_from_file_location(f"gallery_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("shape", [(100, 72, 80), (256, 256, 256), (129, 255, 96)])
@pytest.mark.parametrize("act", ["none", "gelu"])
def test_gemm(shape, act):
    assert load("gemm").run(*shape, act=act, with_bias=act != "none") < 1e-2


def test_gemm_big_tiles():
    assert load("gemm").run(300, 260, 200, BM=128, BN=128, BK=32, act="relu") < 1e-2


@pytest.mark.parametrize("shape, sms", [((300, 260, 200), 3), ((129, 255, 96), 132), ((1, 1, 1), 2),
                                        ((520, 700, 64), 7)])
def test_gemm_persistent(shape, sms):
    """One block per 'SM' looping over the output tiles: several tiles per block (sms < tiles, so the
    mbarrier ring is re-initialised between tiles), K shorter than the stages, ragged edges."""
    assert load("gemm").run(*shape, BM=128, BN=128, BK=64, PERSISTENT=True, sms=sms, act="gelu") < 1e-2


@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_attention(D, causal):
    assert load("attention").run(B=2, H=4, HKV=2, S=150, D=D, causal=causal) < 2e-2


@pytest.mark.parametrize("wtype", ["int3", "int4", "uint5", "int6", "f6e3m2", "f4e2m1"])
def test_lowbit_gemm(wtype):
    assert load("lowbit_gemm").run(M=7, N=128, K=256, wtype=wtype, G=32) < 1e-2


@pytest.mark.parametrize("round_tokens", [False, True])
def test_moe(round_tokens):
    err, _ = load("moe").run(T=64, round_tokens=round_tokens)
    assert err < 2e-2


_both = gpu_and_interpreter


def test_gpu_and_interpreter_agree_gemm():
    g = load("gemm")
    rng = np.random.default_rng()
    M, N, K = 130, 70, 96
    A = tile.asarray(rng.standard_normal((M, K)), bf16)
    B = tile.asarray(rng.standard_normal((K, N)), bf16)
    C = tile.asarray(np.full((M, N), np.nan), bf16)
    bias = rng.standard_normal(N).astype(np.float32)
    [(cg, cc)] = _both(g.gemm, (tile.cdiv(M, 64), tile.cdiv(N, 64)), [A, B, C, bias, 0.5], [2],
                       HAS_BIAS=True, ACT="silu")
    assert np.isfinite(cg.numpy()).all()
    assert rel(cg.numpy(), cc.numpy()) < 4e-3       # f32 sums in another order, then one bf16 rounding


@pytest.mark.parametrize("cfg", [dict(),                                            # TMA-store epilogue
                                 dict(WS=True, STAGES=4, BN=256, num_warps=8),
                                 dict(PERSISTENT=True, STAGES=4),
                                 dict(PERSISTENT=True, WS=True, STAGES=4, BN=256, num_warps=8),
                                 dict(PERSISTENT=True, WS=True, STAGES=3, BN=256, num_warps=8, cluster=2)],
                         ids=["default", "ws", "persistent", "persistent-ws", "persistent-ws-cluster"])
def test_gpu_and_interpreter_agree_on_special_values(cfg):
    """The new GEMM paths on +-inf, NaN, +-0 and subnormal inputs, with ragged tails: every output's
    class (NaN, +inf, -inf, finite) is the interpreter's, and the finite ones agree."""
    g = load("gemm")
    rng = np.random.default_rng()
    M, N, K = 300, 260, 200
    a = rng.standard_normal((M, K))
    b = rng.standard_normal((K, N)) / np.sqrt(K)
    a[3, 7], a[10, :], a[20, 5] = np.inf, 0.0, np.nan            # a row of +-0 too: -0.0 below
    a[10, ::2] = -0.0
    a[40, 9], b[9, 100] = -np.inf, 1e-40                        # a subnormal weight (bf16 keeps it)
    b[50, 200] = np.inf
    A, B = tile.asarray(a, bf16), tile.asarray(b, bf16)
    C = tile.asarray(np.full((M, N), np.nan), bf16)
    bias = np.zeros(N, np.float32)
    BM, BN = 128, cfg.get("BN", 128)
    grid = g.grid(M, N, BM, BN, cfg.get("PERSISTENT", False), sms=7, cluster=cfg.get("cluster", 1))
    [(cg, cc)] = _both(g.gemm, grid, [A, B, C, bias, 1.0], [2],
                       BM=BM, BK=64, **cfg)
    G, I = cg.numpy().astype(np.float64), cc.numpy().astype(np.float64)
    for cls in (np.isnan, np.isposinf, np.isneginf):
        assert np.array_equal(cls(G), cls(I)), cls.__name__
    assert np.isnan(I).sum() > 0 and np.isinf(I).sum() > 0        # the specials did reach the output
    fin = np.isfinite(I)
    assert rel(G[fin], I[fin]) < 4e-3


def test_gpu_and_interpreter_agree_attention():
    a = load("attention")
    rng = np.random.default_rng()
    B, H, S, D = 1, 2, 77, 64
    q, k, v = (tile.asarray(rng.standard_normal((B, H, S, D)), bf16) for _ in range(3))
    o = tile.asarray(np.full((B, H, S, D), np.nan), bf16)
    [(og, oc)] = _both(a.attention, (tile.cdiv(S, 64), B * H), [q, k, v, o, 0.125], [3], D=D, CAUSAL=True)
    assert np.isfinite(og.numpy()).all()
    assert rel(og.numpy(), oc.numpy()) < 8e-3


def test_gpu_and_interpreter_agree_lowbit_exact_decode():
    lb = load("lowbit_gemm")
    rng = np.random.default_rng()
    X = tile.asarray(rng.standard_normal((3, 64)), bf16)
    W, S = lb.quantize_weights(rng.standard_normal((64, 64)), "int3", 32, 0.0)
    Y = tile.asarray(np.full((3, 64), np.nan), bf16)
    [(yg, yc)] = _both(lb.lowbit_gemm, (1, 1), [X, W, S, Y], [3], G=32)
    assert rel(yg.numpy(), yc.numpy()) < 4e-3


@pytest.mark.parametrize("wtype", ["int3", "int4"])
@pytest.mark.parametrize("N", [192, 100])
def test_gpu_and_interpreter_agree_lowbit_pipelined_packed(wtype, N):
    """The benchmark's tile (BK=128: 8-byte chunks of int3 rows; 16-byte of int4), N=192 taking the
    cp.async path and N=100 (rows not whole chunks) the element fallback."""
    lb = load("lowbit_gemm")
    rng = np.random.default_rng()
    X = tile.asarray(rng.standard_normal((5, 384)), bf16)
    W, S = lb.quantize_weights(rng.standard_normal((384, N)), wtype, 128, 0.0)
    Y = tile.asarray(np.full((5, N), np.nan), bf16)
    [(yg, yc)] = _both(lb.lowbit_gemm, (1, tile.cdiv(N, 64)), [X, W, S, Y], [3], G=128, BM=16, BN=64, BK=128)
    assert np.isfinite(yg.numpy().astype(np.float64)).all()
    assert rel(yg.numpy(), yc.numpy()) < 4e-3


@tile.kernel
def _cast_rows(W: tile.Tensor[2], Y: tile.Tensor[tile.f32, 2], BN: tile.constexpr = 64):
    w = tile.load(W, (tile.block_id(0) * 32, 0), (32, BN))
    tile.store(Y, (tile.block_id(0) * 32, 0), w.astype(tile.f32))


@pytest.mark.parametrize("wtype", ["int3", "int4", "uint5", "int8", "uint8", "i16"])
def test_int_to_float_cast_bit_exact(wtype):
    """Narrow ints -> f32 (the magic-number conversion) equal the interpreter bit for bit."""
    t = tile.dtype(wtype)
    rng = np.random.default_rng()
    W = tile.asarray(rng.integers(t.min_value, t.max_value + 1, (64, 64)), t)
    Y = np.full((64, 64), np.nan, np.float32)
    [(yg, yc)] = _both(_cast_rows, (2,), [W, Y], [1])
    assert np.array_equal(np.asarray(yg), np.asarray(yc))
    assert np.array_equal(np.asarray(yc), W.numpy().astype(np.float32))


def test_launch_options_num_warps_and_stream():
    """num_warps=8 changes the block size; a non-default (non-blocking) stream orders the copies."""
    from tile.runtime import cuda
    g = load("gemm")
    rng = np.random.default_rng()
    M, N, K = 200, 136, 72
    A = tile.asarray(rng.standard_normal((M, K)), bf16)
    B = tile.asarray(rng.standard_normal((K, N)), bf16)
    C = tile.asarray(np.full((M, N), np.nan), bf16)
    bias = rng.standard_normal(N).astype(np.float32)
    s = cuda.Stream(non_blocking=True)
    ck = g.gemm[(tile.cdiv(M, 128), tile.cdiv(N, 128))](A, B, C, bias, 1.0, num_warps=8, stream=s)
    assert ck.meta.num_threads == 256
    ref = g.reference(A.numpy(), B.numpy(), None, 1.0, "none")
    assert rel(C.numpy(), ref) < 1e-2


# ---------------------------------------------------------------- 8-bit GEMMs (examples/gemm8.py)
GEMM8_CONFIGS = [dict(BM=128, BN=128, BK=64), dict(BM=128, BN=256, BK=64, STAGES=4, num_warps=8),
                 dict(BM=128, BN=256, BK=128, STAGES=3, num_warps=8), dict(BM=64, BN=64, BK=64, STAGES=3)]


@pytest.mark.parametrize("cfg", range(len(GEMM8_CONFIGS)))
@pytest.mark.parametrize("dt", ["f8e4m3fn", "f8e5m2"])
@pytest.mark.parametrize("shape", [(256, 256, 512), (200, 136, 192)])
def test_gemm_fp8(shape, dt, cfg):
    """fp8 with per-tensor scales, bf16 out, against float64 on the exact fp8 inputs (the tensor cores
    accumulate in f32; the bf16 output rounds at 2**-9)."""
    assert load("gemm8").run_fp8(*shape, dtype=tile.dtype(dt), **GEMM8_CONFIGS[cfg]) < 1e-2


@pytest.mark.parametrize("scaling,cfg", [("rowcol", GEMM8_CONFIGS[2]), ("rowcol", GEMM8_CONFIGS[0]),
                                         ("block", dict(BM=128, BN=128, BK=128, STAGES=4, num_warps=8)),
                                         ("block", dict(BM=64, BN=128, BK=128, STAGES=4))])
@pytest.mark.parametrize("shape", [(256, 256, 512), (200, 136, 200)])
def test_gemm_fp8_scalings(shape, scaling, cfg):
    """Row-wise and DeepGEMM block scales against float64 on the exact fp8 inputs and scales."""
    assert load("gemm8").run_fp8(*shape, SCALING=scaling, **cfg) < 1e-2


@pytest.mark.parametrize("B_T", [True, False])
def test_gemm_fp8_b_layouts(B_T):
    assert load("gemm8").run_fp8(130, 200, 320, B_T=B_T, BM=128, BN=128, BK=64) < 1e-2


@pytest.mark.parametrize("cfg", range(len(GEMM8_CONFIGS)))
@pytest.mark.parametrize("shape", [(256, 256, 512), (200, 136, 192)])
@pytest.mark.parametrize("B_T", [True, False])
def test_gemm_int8_exact(shape, cfg, B_T):
    assert load("gemm8").run_int8(*shape, B_T=B_T, **GEMM8_CONFIGS[cfg]) == 0


def test_gpu_and_interpreter_agree_gemm_int8():
    """Bit for bit, int8 inputs over the whole range, K large enough to use most of the i32 range."""
    g = load("gemm8")
    rng = np.random.default_rng()
    M, N, K = 130, 72, 4096
    a = rng.integers(-128, 128, (M, K), dtype=np.int8)
    bt = rng.integers(-128, 128, (N, K), dtype=np.int8)
    c = np.full((M, N), -1, np.int32)
    [(cg, cc)] = _both(g.gemm_int8, (tile.cdiv(M, 128), tile.cdiv(N, 128)), [a, bt, c], [2], BK=128)
    assert np.array_equal(cg, cc)
    assert np.array_equal(cc.astype(np.int64), a.astype(np.int64) @ bt.astype(np.int64).T)


def test_gemm_fp8_gpu_near_interpreter():
    """The interpreter sums exactly and rounds once; the tensor cores accumulate in f32 (Hopper's fp8
    path with fewer kept bits): both within bf16 rounding of each other."""
    g = load("gemm8")
    rng = np.random.default_rng()
    M, N, K = 128, 128, 1024
    A, sa = g.quantize_fp8(rng.standard_normal((M, K)))
    Bt, sb = g.quantize_fp8(rng.standard_normal((N, K)) / np.sqrt(K))
    C = tile.asarray(np.full((M, N), np.nan), bf16)
    [(cg, cc)] = _both(g.gemm_fp8, (1, 1), [A, Bt, C, sa, sb], [2], BK=128)
    assert rel(cg.numpy(), cc.numpy()) < 1e-2


# ---------------------------------------------------------------- serving attention
# The examples' `run` draws fresh inputs, fills the cache past each sequence's end (and unused pages)
# with NaN, poisons the outputs and compares with float64; here at the benchmark's tile (D 128, BN 64,
# 3 stages) and the test-suite's small one.
@pytest.mark.parametrize("LQ", [1, 4, 8])
@pytest.mark.parametrize("BN", [32, 64])
def test_decode_split_kv(LQ, BN):
    lens = [LQ, 97, 300, 1021, 512 + LQ]
    err, lse_err = load("decode_attention").run(B=5, HQ=32, HKV=8, LQ=LQ, D=128, S=1024 + 64, seqlens=lens,
                                                splits=7, BN=BN)
    assert err < 2e-2 and lse_err < 1e-4, (err, lse_err)


def test_decode_one_split_and_mqa():
    d = load("decode_attention")
    assert d.run(B=3, HQ=8, HKV=8, LQ=1, D=128, S=700, seqlens=[1, 333, 700], splits=1, BN=64)[0] < 2e-2
    err, lse_err = d.run(B=2, HQ=16, HKV=1, LQ=5, D=128, S=400, seqlens=[400, 5], splits=3, BN=64)
    assert err < 2e-2 and lse_err < 1e-4


@pytest.mark.parametrize("page,BN", [(16, 64), (64, 64), (256, 64), (32, 32)])
def test_paged_decode(page, BN):
    lens = [page - 1, page, page + 1, 5 * page + 3]
    err, lse_err = load("decode_attention").run(B=4, HQ=32, HKV=8, LQ=2, D=128, S=5 * page + 3, seqlens=lens,
                                                page=page, splits=3, BN=BN)
    assert err < 2e-2 and lse_err < 1e-4, (err, lse_err)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("BM,warps", [(64, 4), (128, 8)])
def test_varlen_attention(causal, BM, warps):
    err = load("varlen_attention").run(lengths=(1, 37, 0, 64, 129, 300), H=8, HKV=2, D=128, causal=causal, BM=BM,
                                       BN=64, num_warps=warps)
    assert err < 2e-2


def test_gpu_and_interpreter_agree_decode():
    """One split-KV launch and its combine on the GPU and in the interpreter, same inputs (paged, GQA 4,
    3 query tokens): the partial outputs and log-sum-exps, and the combined output."""
    d = load("decode_attention")
    rng = np.random.default_rng()
    B, HQ, HKV, LQ, D, PAGE = 3, 8, 2, 3, 128, 64
    lens = np.array([3, 190, 256], np.int32)
    kf = rng.standard_normal((B, HKV, 256, D))
    vf = rng.standard_normal((B, HKV, 256, D))
    kc, vc, table = d.paginate(kf, vf, lens, PAGE, rng)          # NaN past each end and in unused pages
    R = B * HQ * LQ
    plan = d.decode_plan(B, HQ, HKV, LQ, D, 256, splits=3, BN=64)
    q = tile.asarray(rng.standard_normal((R, D)), bf16)
    K = tile.asarray(kc.reshape(-1, HKV * D), bf16)
    V = tile.asarray(vc.reshape(-1, HKV * D), bf16)
    n = plan["splits"]
    out = tile.asarray(np.full((R, D), np.nan), bf16)
    part = np.full((n, R, D), np.nan, np.float32)
    lpart = np.full((n, R), np.nan, np.float32)
    args = [q, K, V, table, lens, out, part, lpart, 1 / np.sqrt(D), plan["group"], LQ, plan["split_len"]]
    [(pg, pc), (lg, lc)] = _both(d.paged_decode, plan["grid"], args, [6, 7], PAGE=PAGE, **plan["consts"])
    assert np.isfinite(np.asarray(pg)).all() and not np.isnan(np.asarray(lg)).any()
    assert rel(pg, pc) < 4e-3
    fin = np.isfinite(lc)
    assert np.array_equal(fin, np.isfinite(lg)) and np.allclose(lg[fin], lc[fin], atol=1e-4)
    lse = np.full(R, np.nan, np.float32)
    [(og, oc)] = _both(d.decode_combine, (tile.cdiv(R, 16),), [pc, lc, out, lse], [2], D=D)
    assert np.isfinite(og.numpy()).all() and rel(og.numpy(), oc.numpy()) < 4e-3
