"""examples/lowbit_gemv.py, the split-K low-bit GEMM for small M: in the interpreter against a float64
reference on fresh random inputs (ragged N and K tails, M = 1, 3, 16, both multiply paths, every
scale kind), and the PTX of the issue's bar configurations through ptxas for sm_90a with no spills
and the bit-trick decode in it. The same checks on the GPU are in tests/test_gpu_lowbit.py."""
import importlib.util
import shutil
from pathlib import Path

import pytest
from helpers import assemble, on_cpu

import tile

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not found on PATH")


def load():
    spec = importlib.util.spec_from_file_location("gallery_lowbit_gemv", EXAMPLES / "lowbit_gemv.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


LB = load()


@pytest.mark.parametrize("wtype", list(LB.WEIGHT_TYPES))
@pytest.mark.parametrize("M,mma", [(1, True), (16, True), (3, False)])
def test_interpreter_every_type(wtype, M, mma):
    # N = 200 (ragged against BN = 128), K = 328 (a partial last group and K tile), 2 K slices
    err = on_cpu(LB.run, M=M, N=200, K=328, wtype=wtype, G=64, MMA=mma, BM=16 if mma else min(M, 4),
                 BN=128, BK=64, KS=192)
    assert err < 1e-2, err


@pytest.mark.parametrize("G,BK", [(32, 64), (64, 64), (128, 128), (128, 64), (0, 64)])
def test_interpreter_group_sizes(G, BK):
    err = on_cpu(LB.run, M=3, N=136, K=300, wtype="int4", G=G, BK=BK, KS=2 * BK, BN=64)
    assert err < 1e-2, err


@pytest.mark.parametrize("mma,G", [(True, 64), (False, 64), (True, 0)])
def test_interpreter_zero_point_tensor(mma, G):
    err = on_cpu(LB.run, M=2, N=72, K=256, wtype="uint5", G=G, zero_tensor=True, MMA=mma, BM=16 if mma else 2,
                 BN=64, BK=64, KS=128)
    assert err < 1e-2, err


@pytest.mark.parametrize("scale,G", [("e8m0", 32), ("e8m0-codes", 32), ("e4m3", 16)])
def test_interpreter_mx_and_nvfp4_scales(scale, G):
    err = on_cpu(LB.run, M=3, N=100, K=256, wtype="f4e2m1", G=G, scale=scale, BN=64, BK=64, KS=128)
    assert err < 1e-2, err


@pytest.mark.parametrize("prelaid", [False, True])
def test_config_fills_one_wave_of_resident_blocks(prelaid):
    """The split-K grid of the bar shapes: every SM busy, every block resident at once (4 per SM on
    the register path, 2 on the shared-memory path: one wave), and the K slice the shortest that fits
    -- half of it would need a second wave."""
    resident = 4 if prelaid else 2
    for N, K in ((14336, 4096), (4096, 4096), (4096, 14336)):
        for bits in (2, 3, 4, 8):
            c = LB.config(1, N, K, bits, prelaid=prelaid)
            g = LB.grid(1, N, K, **c)
            blocks = g[0] * g[1] * g[2]
            assert 132 <= blocks <= resident * 132, (N, K, bits, c, g)
            half = g[0] * g[2] * tile.cdiv(K, c["KS"] // 2)
            assert c["KS"] == c["BK"] or half > resident * 132, (N, K, bits, c, half)
            assert c["KS"] % c["BK"] == 0 and c["BK"] % 128 == 0
            assert c["BK"] * c["BN"] * bits // 8 >= 4096          # >= 4 KB of packed weights per K tile


def signature(wtype, sdt="f32"):
    return [tile.Tensor[tile.bf16, 2], tile.Tensor[tile.dtype(wtype), 2], tile.Tensor[tile.dtype(sdt), 2],
            tile.Tensor[tile.f32, 2], tile.Tensor[tile.f32, 2]]


# the bar cases: int4 M=1 14336x4096 and 4096x4096, int4 M=16, int3 and f4e2m1 (MX) M=1
# (int4 M=1 4096x4096 is the same kernel with BK = KS = 128; tests/test_gpu_lowbit.py runs it)
BARS = [("int4", 1, 14336, 4096, "f32", 128), ("int4", 16, 14336, 4096, "f32", 128),
        ("int3", 1, 14336, 4096, "f32", 128), ("f4e2m1", 1, 14336, 4096, "u8", 32),
        ("f4e2m1", 1, 14336, 4096, "e8m0", 32)]


@needs_ptxas
@pytest.mark.parametrize("wtype,M,N,K,sdt,G", BARS, ids=[f"{b[0]}-M{b[1]}-{b[2]}x{b[3]}-{b[4]}" for b in BARS])
def test_bar_configs_assemble_without_spills(wtype, M, N, K, sdt, G, tmp_path):
    # MX scales as e8m0 tensors (SCALE "float": a cast of S's dtype) or as uint8 codes (SCALE "e8m0")
    c = LB.config(M, N, K, tile.dtype(wtype).bits, G, scale="e8m0" if sdt in ("u8", "e8m0") else "float")
    ck = LB.lowbit_gemv.compile(*signature(wtype, sdt), target="sm_90a", G=G,
                                SCALE="e8m0" if sdt == "u8" else "float", **c)
    rep = assemble(ck.ptx, "sm_90a", tmp_path)
    assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0 and rep["stack"] == 0, rep
    assert "cp.async" in ck.ptx                                        # the weights are prefetched
    assert "red.global.add.f32" in ck.ptx or "atom.global.add.f32" in ck.ptx    # split-K partial sums
    if c["MMA"]:
        assert "mma.sync.aligned.m16n8k16" in ck.ptx
    # the decode is the bit trick: packed bf16 arithmetic, no per-element f32 round trip
    trick = "mul.rn.bf16x2" if tile.dtype(wtype).is_float else "add.rn.bf16x2"
    if c["MMA"]:
        assert trick in ck.ptx
        assert "cvt.rn.bf16.f32" not in ck.ptx and "cvt.rn.bf16x2.f32" not in ck.ptx


@tile.kernel
def _e8m0(S: tile.Tensor[tile.u8, 2], O: tile.Tensor[tile.f32, 2]):
    tile.store(O, (0, 0), LB._scale(tile.load(S, (0, 0), (1, 256)), "e8m0"))


def e8m0_codes_match_ml_dtypes():
    import ml_dtypes
    import numpy as np
    S = np.arange(256, dtype=np.uint8)[None]
    O = np.full((1, 256), 7.0, np.float32)
    _e8m0[(1,)](S, O)
    ref = S.view(ml_dtypes.float8_e8m0fnu).astype(np.float32)
    nan = np.isnan(ref)
    assert nan.sum() == 1 and np.isnan(O[nan]).all()
    assert np.array_equal(O.view(np.uint32)[~nan], ref.view(np.uint32)[~nan])


def test_e8m0_scale_decode_every_code():
    """MX scales: every e8m0 code decodes to ml_dtypes' float8_e8m0fnu value (2^-127 and NaN included)."""
    on_cpu(e8m0_codes_match_ml_dtypes)


# ------------------------------------------------------------------ the register path (PRELAID)
@pytest.mark.parametrize("wtype", list(LB.WEIGHT_TYPES))
@pytest.mark.parametrize("M", [1, 16])
def test_interpreter_prelaid_every_type(wtype, M):
    # ragged N and K (N = 200 of BN = 128, K = 328: a partial group and K tile), 2 K slices
    err = on_cpu(LB.run, M=M, N=200, K=328, wtype=wtype, G=64, BN=128, BK=64, KS=192, prelaid=True)
    assert err < 1e-2, err


@pytest.mark.parametrize("scale,G,z", [("e8m0", 32, False), ("e8m0-codes", 32, False), ("e4m3", 16, False),
                                       ("float", 0, False),
                                       ("float", 64, True)])
def test_interpreter_prelaid_scales(scale, G, z):
    wtype = "uint5" if z else "f4e2m1"
    err = on_cpu(LB.run, M=3, N=136, K=256, wtype=wtype, G=G, scale=scale, zero_tensor=z, BN=128, BK=64, KS=128,
                 prelaid=True)
    assert err < 1e-2, err


PRELAID_BARS = [("int4", 1, 14336, 4096, "f32", 128), ("f4e2m1", 1, 14336, 4096, "u8", 32),
                ("f4e2m1", 1, 14336, 4096, "e8m0", 32)]


@needs_ptxas
@pytest.mark.parametrize("wtype,M,N,K,sdt,G", PRELAID_BARS, ids=[f"{b[0]}-M{b[1]}-{b[4]}" for b in PRELAID_BARS])
def test_prelaid_bar_configs_registers_only(wtype, M, N, K, sdt, G, tmp_path):
    """The register path of the benchmarked configs: no spills, the weights reach the dot without a
    data-moving convert_layout (no shared-memory transpose of the decoded tile), at most 56 KB of shared memory
    per block (4 blocks per SM on sm_90a), and registers for 4 such blocks (<= 128 per thread)."""
    scale = "e8m0" if sdt == "u8" else "float"
    bits = tile.dtype(wtype).bits
    c = LB.config(M, N, K, bits, G, scale="e8m0" if sdt in ("u8", "e8m0") else "float", prelaid=True)
    c["PRELAID"] = tile.prelayout_plan(bits, LB.sub_step(c["BK"], G), c["BN"], c.get("num_warps", 4))
    ck = LB.lowbit_gemv.compile(*signature(wtype, sdt), target="sm_90a", G=G, SCALE=scale, **c)
    ir = str(ck.ir_after["shared_memory_planning"])
    weight_converts = [ln for ln in ir.splitlines() if "convert_layout" in ln and f"x{c['BN']}xbf16" in ln
                       and "tile<16x" not in ln]
    assert not weight_converts, weight_converts
    # the fragment is reached up to each thread's value order (tile/prelayout.py puts a register's two
    # codes 16 bits apart): that convert renames registers -- on the codes, before the cast, no scratch
    code_converts = [ln for ln in ir.splitlines() if "convert_layout" in ln and f"x{c['BN']}x{wtype}," in ln]
    assert code_converts and not [ln for ln in code_converts if "smem_scratch" in ln], code_converts
    shared = int(ir.split("shared_bytes = ")[1].split(",")[0].split("}")[0])
    assert shared <= 56 * 1024, shared
    rep = assemble(ck.ptx, "sm_90a", tmp_path)
    assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0 and rep["stack"] == 0, rep
    assert rep["registers"] <= 128, rep
    assert "mma.sync.aligned.m16n8k16" in ck.ptx and "ldmatrix.sync.aligned.m8n8.x4.trans" not in ck.ptx


def test_prelaid_int4_pairs_are_cut_and_biased_by_one_lop3():
    """The register path's int4 decode on sm_90a: each pair register is cut from its shifted word and
    given the magic number (with the signed codes' xor) by ONE lop3.b32 (LUT 0x6a: (a & b) ^ c) --
    written as and + xor, ptxas keeps two LOP3s -- then one bias sub/fma: a 128x128 K tile on 4 warps is
    64 pairs per thread, so 64 fused lop3s and no xor left with the magic number."""
    c = LB.config(1, 14336, 4096, 4, 128, prelaid=True)
    c["PRELAID"] = tile.prelayout_plan(4, LB.sub_step(c["BK"], 128), c["BN"], c.get("num_warps", 4))
    ptx = LB.lowbit_gemv.compile(*signature("int4", "f32"), target="sm_90a", G=128, SCALE="float", **c).ptx
    magic = "0x43084308"                                   # bf16 128.0 in both halves, xor the sign bit 8
    pairs = c["BK"] * c["BN"] // (32 * c.get("num_warps", 4)) // 2
    fused = [ln for ln in ptx.splitlines() if "lop3.b32" in ln and ln.rstrip().endswith("0x6a;")]
    assert len(fused) == pairs and all(magic in ln for ln in fused), (len(fused), fused[:2])
    assert not [ln for ln in ptx.splitlines() if "xor.b32" in ln and str(int(magic, 16)) in ln]
