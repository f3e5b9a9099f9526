"""On an NVIDIA GPU (`pytest -m gpu`): the fast dequantization casts on the device, every code of every
type, bit for bit against tilec's numerics (itself checked against ml_dtypes), which also checks
that the hardware's packed bf16/f16 multiply keeps subnormal inputs (the small floats' own
subnormals arrive as subnormals before their power-of-two multiply); and examples/lowbit_gemv.py
against its float64 reference and against the interpreter."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import tile
from tile.codegen import fast_convert
from tile.ir import dtypes, numerics

pytestmark = pytest.mark.gpu
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def _need_gpu(monkeypatch):
    from tile.kernel import gpu_arch
    if gpu_arch() is None:
        pytest.skip("no NVIDIA GPU/driver found")
    monkeypatch.delenv("TILEC_TARGET", raising=False)


@tile.kernel
def _cast(A: tile.Tensor[2], B: tile.Tensor[2], BN: tile.constexpr = 512):
    j = tile.block_id(0)
    tile.store(B, (0, j * BN), tile.load(A, (0, j * BN), (1, BN)).astype(B.dtype))


SRCS = [f"int{b}" for b in range(1, 8)] + [f"uint{b}" for b in range(1, 8)] + ["i8", "u8", "f4e2m1", "f6e3m2",
                                                                              "f6e2m3", "f8e4m3fn", "f8e5m2", "f5e2m2"]
CASES = [(s, d) for s in SRCS for d in ("bf16", "f16", "f32")
         if fast_convert.choose(dtypes.dtype(s), dtypes.dtype(d)) is not None]


@pytest.mark.parametrize("src,dst", CASES, ids=[f"{s}->{d}" for s, d in CASES])
def test_fast_cast_on_gpu_exhaustive(src, dst):
    S, D = dtypes.dtype(src), dtypes.dtype(dst)
    c = np.arange(1 << S.bits, dtype=np.uint8)
    codes = np.concatenate([c, c[::-1], np.roll(c, 1)])[None, :]            # every code in every lane
    A = tile.from_codes(codes, S, codes.shape)
    B = tile.asarray(np.full(codes.shape, np.nan), D)
    _cast[(tile.cdiv(codes.shape[1], 512),)](A, B)
    want = numerics.encode(numerics.decode(codes, S), D)
    got = B.codes() if hasattr(B, "codes") else None
    got = np.asarray(got).reshape(codes.shape)
    bad = np.nonzero(got != want)
    assert bad[0].size == 0, [(int(codes[0, j]), hex(int(got[0, j])), hex(int(want[0, j]))) for j in bad[1][:8]]


def load():
    spec = importlib.util.spec_from_file_location("gallery_lowbit_gemv_gpu", EXAMPLES / "lowbit_gemv.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("wtype", ["int2", "int3", "int4", "int8", "uint5", "uint7", "f4e2m1", "f6e3m2", "f8e4m3fn"])
@pytest.mark.parametrize("M,mma", [(1, True), (3, True), (16, True), (1, False), (3, False)])
def test_lowbit_gemv_gpu(wtype, M, mma):
    lb = load()
    err = lb.run(M=M, N=200, K=328, wtype=wtype, G=64, MMA=mma, BM=16 if mma else min(M, 4), BN=128, BK=64, KS=192)
    assert err < 1e-2, err


@pytest.mark.parametrize("scale,G", [("e8m0", 32), ("e4m3", 16), ("float", 0)])
def test_lowbit_gemv_gpu_scales(scale, G):
    lb = load()
    err = lb.run(M=3, N=300, K=512, wtype="f4e2m1", G=G, scale=scale, BN=128, BK=64, KS=128)
    assert err < 1e-2, err


@pytest.mark.parametrize("wtype,M,N,K", [("int4", 1, 14336, 4096), ("int4", 16, 4096, 4096), ("int3", 1, 4096, 4096)])
def test_lowbit_gemv_gpu_bar_shapes_default_config(wtype, M, N, K):
    lb = load()
    assert lb.run(M=M, N=N, K=K, wtype=wtype, G=128) < 1e-2


def test_lowbit_gemv_gpu_matches_interpreter():
    """The same inputs on the GPU and in the interpreter: equal up to the f32 summation order of the
    split-K atomics and the dot (both are exact products summed in f32)."""
    from helpers import on_cpu
    lb = load()
    rng = np.random.default_rng()
    M, N, K = 3, 136, 256
    X = tile.asarray(rng.standard_normal((M, K)), tile.bf16)
    W, S, _ = lb.quantize(rng.standard_normal((K, N)), "int4", 64)
    c = dict(lb.config(M, N, K, 4, 64), G=64, BK=64, KS=128)
    yg = np.zeros((M, N), np.float32)
    lb.launch(X, W, S, yg, **c)
    yc = np.zeros((M, N), np.float32)
    on_cpu(lb.launch, X, W, S, yc, **c)
    np.testing.assert_allclose(yg, yc, rtol=1e-5, atol=1e-5 * np.abs(yc).max())


def test_e8m0_scale_decode_every_code_gpu():
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import test_lowbit_gemv
    test_lowbit_gemv.e8m0_codes_match_ml_dtypes()


@pytest.mark.parametrize("wtype", ["int2", "int3", "int4", "int8", "uint5", "uint7", "f4e2m1", "f6e3m2", "f8e4m3fn"])
@pytest.mark.parametrize("M", [1, 3, 16])
def test_lowbit_gemv_gpu_prelaid(wtype, M):
    """The register path (weights pre-laid-out on the host) on ragged N and K, fresh inputs, output
    poisoned with NaN (run() checks every output was written)."""
    lb = load()
    err = lb.run(M=M, N=200, K=328, wtype=wtype, G=64, BN=128, BK=64, KS=192, prelaid=True)
    assert err < 1e-2, err


@pytest.mark.parametrize("wtype,M,N,K,G,scale", [("int4", 1, 14336, 4096, 128, "float"),
                                                 ("int4", 16, 4096, 4096, 128, "float"),
                                                 ("int3", 1, 4096, 4096, 128, "float"),
                                                 ("uint5", 1, 4096, 4096, 128, "float"),
                                                 ("f4e2m1", 1, 4096, 4096, 32, "e8m0"),
                                                 ("f4e2m1", 1, 4096, 4096, 16, "e4m3")])
def test_lowbit_gemv_gpu_prelaid_bar_configs(wtype, M, N, K, G, scale):
    """The configurations benchmarks/lowbit.py times for the register path (config(prelaid=True))."""
    lb = load()
    assert lb.run(M=M, N=N, K=K, wtype=wtype, G=G, scale=scale, prelaid=True) < 1e-2


def test_lowbit_gemv_gpu_prelaid_matches_interpreter():
    from helpers import on_cpu
    lb = load()
    rng = np.random.default_rng()
    M, N, K = 2, 264, 320
    X = tile.asarray(rng.standard_normal((M, K)), tile.bf16)
    W, S, _ = lb.quantize(rng.standard_normal((K, N)), "int3", 64)
    c = dict(lb.config(M, N, K, 3, 64, prelaid=True), G=64, BK=64, KS=128)
    Wp, c["PRELAID"] = lb.prelay(W, c["BK"], 64, c["BN"])
    yg = np.full((M, N), np.nan, np.float32)
    lb.launch(X, Wp, S, yg, **c)
    yc = np.full((M, N), np.nan, np.float32)
    on_cpu(lb.launch, X, Wp, S, yc, **c)
    np.testing.assert_allclose(yg, yc, rtol=1e-5, atol=1e-5 * np.abs(yc).max())
