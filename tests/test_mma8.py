"""8-bit tensor cores: the fragments of mma.sync m16n8k32 (PTX ISA tables), instruction selection of
the 8-bit atoms (wgmma m64nNk32 on sm_90a, mma.sync m16n8k32 on sm_80 / sm_89), the warning of a dot
left on FMA, the PTX of the fp8 and int8 GEMMs assembled by ptxas, and the gallery's 8-bit GEMMs in
the interpreter against exact references."""
import importlib.util
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import assemble, on_cpu

import tile
from tile import bf16, f32, i32
from tile.ir import fragments as F
from tile.ir.targets import get_target
from tile.ir.thread_maps import ThreadMap, mma_a, mma_b

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH")


def _load():
    spec = importlib.util.spec_from_file_location("gallery_gemm8", EXAMPLES / "gemm8.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


G8 = _load()


def _sig(kernel, dt):
    T = tile.Tensor[tile.dtype(dt), 2]
    if kernel.name == "gemm_fp8":
        return [T, T, tile.Tensor[bf16, 2], tile.Tensor[f32, 1], tile.Tensor[f32, 1]]
    return [T, T, tile.Tensor[i32, 2]]


def _compile(name, target, dt, **consts):
    k = getattr(G8, name)
    return k.compile(*_sig(k, dt), target=target, **consts)


def _final_ir(ck):
    return list(ck.ir_after.values())[-1]


def _dots(ck):
    return [op for op in ck.module.functions[0].walk() if op.name == "dot"]


# ------------------------------------------------------------------------------ fragments
def _grp(lane):
    return lane >> 2, lane & 3


def test_mma_m16n8k32_fragments_are_the_ptx_tables():
    """PTX ISA "Matrix Fragments for mma.m16n8k32" (.s8/.u8/.e4m3/.e5m2), element by element."""
    a, b, c = F.mma_m16n8k32_a(), F.mma_m16n8k32_b(), F.mma_m16n8k32_c()
    for lane in range(32):
        g, t = _grp(lane)
        for i in range(16):
            row = g if (i < 4 or 8 <= i < 12) else g + 8
            col = 4 * t + (i & 3) + (16 if i >= 8 else 0)
            assert a.coord(lane, i) == (row, col), (lane, i)
        for i in range(8):
            assert b.coord(lane, i) == (4 * t + (i & 3) + (16 if i >= 4 else 0), g), (lane, i)
        for i in range(4):
            assert c.coord(lane, i) == (g + 8 * (i >> 1), 2 * t + (i & 1)), (lane, i)
    for tv, n in ((a, 16 * 32), (b, 32 * 8), (c, 16 * 8)):       # bijections
        assert len({tv.coord(lane, i) for lane in range(32) for i in range(tv.values_per_thread)}) == n


def test_8bit_fragments_hold_the_bytes_of_the_16bit_ones():
    """Register j of the m16n8k32 A (B) fragment holds the 4 bytes of register j of the m16n8k16 one,
    2-byte element e splitting into bytes 2e, 2e+1 along k: why ldmatrix (b16) reads both."""
    a8, a16 = F.mma_m16n8k32_a(), F.mma_m16n8k16_a()
    b8, b16 = F.mma_m16n8k32_b(), F.mma_m16n8k16_b()
    for lane in range(32):
        for j in range(4):
            for h in range(4):
                r, k = a16.coord(lane, 2 * j + h // 2)
                assert a8.coord(lane, 4 * j + h) == (r, 2 * k + h % 2)
        for j in range(2):
            for h in range(4):
                k, n = b16.coord(lane, 2 * j + h // 2)
                assert b8.coord(lane, 4 * j + h) == (2 * k + h % 2, n)


def test_wgmma_a8_is_the_mma_fragment_per_warp():
    tv, a = F.wgmma_a8(), F.mma_m16n8k32_a()
    for t in range(128):
        for i in range(16):
            m, k = a.coord(t % 32, i)
            assert tv.coord(t, i) == (m + 16 * (t // 32), k)


def test_thread_maps_tile_the_8bit_fragments():
    assert ThreadMap.from_tv(F.mma_m16n8k32_a()).same(mma_a(16, 32, 1, 1, 8))
    assert ThreadMap.from_tv(F.mma_m16n8k32_b()).same(mma_b(32, 8, 1, 1, 8))
    for m in (mma_a(128, 128, 4, 1, 8), mma_b(128, 256, 4, 2, 8)):
        assert m.covers() and m.in_range()
    # 8-bit and 16-bit operand fragments of one tile are different layouts
    assert not mma_a(64, 64, 4, 1, 8).same(mma_a(64, 64, 4, 1, 16))


def test_targets_have_the_8bit_atoms():
    h, ada, amp = get_target("sm_90a"), get_target("sm_89"), get_target("sm_80")
    assert h.mma_atom("wgmma.m64n128k32.ss", "f8e4m3fn", "f32").k == 32
    assert h.mma_atom("wgmma.m64n128k32.ss", "i8", "i32").k_major_only
    assert h.mma_atom("wgmma.m64n128k16.ss").k == 16
    assert 40 not in h.mma_atom("wgmma.m64n40k32", "u8", "i32").n_range      # integer N: 16-steps above 32
    assert 40 in h.mma_atom("wgmma.m64n40k32", "f8e5m2", "f32").n_range
    for t in (h, ada):
        assert t.mma_atom("mma.m16n8k32", "f8e5m2", "f32") and t.mma_atom("mma.m16n8k32", "u8", "i32")
    assert amp.mma_atom("mma.m16n8k32", "i8", "i32") is not None
    assert amp.mma_atom("mma.m16n8k32", "f8e4m3fn", "f32") is None         # fp8 mma.sync: sm_89+
    assert h.mma_atom("mma.m16n8k32", "i8", "f32") is None                  # integers accumulate in i32


# ------------------------------------------------------------------------------ selection
@pytest.mark.parametrize("name,dt", [("gemm_fp8", "f8e4m3fn"), ("gemm_fp8", "f8e5m2"), ("gemm_int8", "i8"),
                                     ("gemm_int8", "u8")])
def test_hopper_selects_wgmma_k32(name, dt):
    """sm_90a: A and Bt tiles in K-major swizzled rings; A read by descriptor, B through `.T`."""
    ck = _compile(name, "sm_90a", dt, BM=128, BN=128, BK=64)
    text = _final_ir(ck)
    assert re.search(r'atom = "wgmma\.m64n128k32\.ss"', text), text
    assert 'copy = "smem.desc"' in text and 'copy = "ldmatrix.trans.k"' in text
    # both rings: 64-byte rows (BK = 64 bytes), the 64B swizzle on 16-byte chunks, K contiguous
    rings = re.findall(r'alloc_shared .*layout="([^"]+)"', text)
    assert rings == ["sw<2,4,3> o (4,128,64):(8192,64,1)"] * 2, rings
    assert "ld.global" not in text               # every copy is a cp.async


def test_hopper_b_not_k_major_is_transposed_into_shared():
    """B given [K, N] (N contiguous): the ring is K-major anyway (wgmma takes no 8-bit transpose), and
    its copy goes through registers (ld.global) instead of cp.async; the dot stays on wgmma."""
    ck = _compile("gemm_fp8", "sm_90a", "f8e4m3fn", BK=128, B_T=False)
    text = _final_ir(ck)
    assert 'atom = "wgmma.m64n128k32.ss"' in text
    b_ring = re.search(r'%b_ring = alloc_shared .*layout="([^"]+)"', text).group(1)
    assert b_ring == "sw<3,4,3> o (4,128,128):(16384,1,128)", b_ring
    assert re.search(r'async_copy %\d+, %B, .*copy = "ld.global"', text)
    assert re.search(r'async_copy %\d+, %A, .*copy = "(cp.async|tma)"', text)


@pytest.mark.parametrize("target,name,dt", [("sm_89", "gemm_fp8", "f8e4m3fn"), ("sm_89", "gemm_int8", "i8"),
                                            ("sm_80", "gemm_int8", "u8")])
def test_mma_sync_k32_where_no_wgmma(target, name, dt):
    ck = _compile(name, target, dt, STAGES=3)
    [dot] = _dots(ck)
    assert dot.attrs["atom"] == "mma.m16n8k32" and dot.attrs["warps"]
    text = _final_ir(ck)
    assert 'copy = "ldmatrix.k"' in text and 'copy = "ldmatrix.trans.k"' in text


def test_fp8_on_ampere_warns_and_falls_back():
    with pytest.warns(tile.PerformanceWarning, match=r"kernel 'gemm_fp8' at gemm8\.py:\d+:\d+: dot "
                      r"f8e4m3fn\[128x32\] @ f8e4m3fn\[32x128\] -> f32 runs on scalar FMA, not on the tensor "
                      r"cores of sm_80: dtype: no tensor-core instruction of sm_80 multiplies f8e4m3fn"):
        ck = _compile("gemm_fp8", "sm_80", "f8e4m3fn", STAGES=2, BK=32)
    assert _dots(ck)[0].attrs["atom"] == "fma"


def test_fma_warning_survives_the_kernel_cache(tmp_path, monkeypatch):
    """A cache hit runs no pass, yet says what the build said: the passes' PerformanceWarnings travel
    with the artifact (first a build into an empty disk cache, then a hit after the in-memory
    specializations are dropped)."""
    from tile.runtime import cache as rc
    monkeypatch.setattr(rc, "_DEFAULT", rc.KernelCache(tmp_path / "cache"))
    k = G8.gemm_fp8
    for _ in range(2):
        k.cache.clear()
        with pytest.warns(tile.PerformanceWarning, match=r"kernel 'gemm_fp8' at gemm8\.py:\d+:\d+: .*scalar FMA"):
            k.compile(*_sig(k, "f8e5m2"), target="sm_80", STAGES=2, BK=32, BN=64)
    assert len(list((tmp_path / "cache").glob("??/*.json"))) == 1


def test_fma_warning_names_the_shape():
    @tile.kernel
    def small_k(A: tile.Tensor[tile.i8, 2], B: tile.Tensor[tile.i8, 2], C: tile.Tensor[i32, 2]):
        a = tile.load(A, (0, 0), (64, 16))
        b = tile.load(B, (0, 0), (16, 64))
        tile.store(C, (0, 0), tile.dot(a, b, tile.zeros((64, 64), i32)))
    T = tile.Tensor[tile.i8, 2]
    with pytest.warns(tile.PerformanceWarning, match=r"kernel 'small_k' at test_mma8\.py:\d+:\d+: .*shape: "
                                                     r"64x16 @ 16x64 does not tile .*K of 32"):
        small_k.compile(T, T, tile.Tensor[i32, 2], target="sm_90a")


def test_tensor_core_dots_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", tile.PerformanceWarning)
        _compile("gemm_int8", "sm_90a", "i8", BK=64)
        _compile("gemm_fp8", "sm_89", "f8e5m2", STAGES=2)
    with warnings.catch_warnings():                     # no tensor cores: nothing to warn about
        warnings.simplefilter("error", tile.PerformanceWarning)
        _compile("gemm_int8", "cpu", "i8")


def test_edited_atom_is_carried_out_or_a_located_error():
    """The IR text decides: a wgmma edited to the 16-bit one is a located error naming what each
    wgmma takes (test_mma_sync_k32_ptx_assembles compiles one edited to mma.m16n8k32)."""
    from tile.compiler import compile as tc_compile
    from tile.ir.parser import parse_module
    ck = _compile("gemm_int8", "sm_90a", "i8", BK=64)
    text = _final_ir(ck)
    bad = text.replace('atom = "wgmma.m64n128k32.ss"', 'atom = "wgmma.m64n128k16.ss"')
    with pytest.raises(tile.TileError, match=r"gemm8\.py:\d+:\d+.*'wgmma.m64n128k16.ss' cannot be used for this "
                                             r"dot: it multiplies i8 into i32; sm_90a's wgmma takes k16: bf16 -> "
                                             r"f32, f16 -> f32; k32: f8e4m3fn -> f32, f8e5m2 -> f32, i8 -> i32"):
        tc_compile(parse_module(bad), "sm_90a")


# ------------------------------------------------------------------------------ PTX
_ptxas = assemble


# the configurations benchmarks/gemm8.py sweeps on the H100
HOPPER_CONFIGS = [dict(BM=128, BN=128, BK=64, STAGES=4, num_warps=4),
                  dict(BM=128, BN=256, BK=64, STAGES=4, num_warps=8),
                  dict(BM=128, BN=128, BK=128, STAGES=4, num_warps=4)]


@needs_ptxas
@pytest.mark.parametrize("cfg", range(len(HOPPER_CONFIGS)))
@pytest.mark.parametrize("name,dt,ptx_types", [("gemm_fp8", "f8e4m3fn", "f32.e4m3.e4m3"),
                                               ("gemm_int8", "i8", "s32.s8.s8")])
def test_hopper_gemm8_ptx_assembles_without_spills(name, dt, ptx_types, cfg, tmp_path):
    ck = _compile(name, "sm_90a", dt, **HOPPER_CONFIGS[cfg])
    ptx = ck.ptx
    insts = set(re.findall(r"wgmma\.mma_async\.sync\.aligned\.m64n(\d+)k32\.(\S+) ", ptx))
    assert insts and all(t == ptx_types for _, t in insts), insts
    assert "mma.sync" not in ptx
    rep = _ptxas(ptx, "sm_90a", tmp_path)
    assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0, rep["log"]


@needs_ptxas
@pytest.mark.parametrize("target,name,dt,inst", [
    ("sm_89", "gemm_fp8", "f8e4m3fn", "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32"),
    ("sm_90a", "gemm_fp8", "f8e5m2", "mma.sync.aligned.m16n8k32.row.col.f32.e5m2.e5m2.f32"),
    ("sm_89", "gemm_int8", "i8", "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32"),
    ("sm_80", "gemm_int8", "u8", "mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32")])
def test_mma_sync_k32_ptx_assembles(target, name, dt, inst, tmp_path):
    """The mma.sync m16n8k32 forms (on sm_90a through an edited atom); fp8 ones raise the module's
    .version to PTX ISA 8.4, which they need."""
    from tile.compiler import compile as tc_compile
    from tile.ir.parser import parse_module
    ck = _compile(name, target, dt, STAGES=3, BK=64, num_warps=8 if target == "sm_90a" else 4)
    ptx = ck.ptx
    if target == "sm_90a":
        text = re.sub(r'atom = "wgmma\.m64n\d+k32\.ss"', 'atom = "mma.m16n8k32"', _final_ir(ck))
        ptx = tc_compile(parse_module(text), "sm_90a").ptx
    assert inst in ptx and "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in ptx
    if "e4m3" in inst or "e5m2" in inst:
        assert re.search(r"^\.version 8\.4$", ptx, re.M)
    rep = _ptxas(ptx, target, tmp_path)
    assert rep["spill_stores"] == 0, rep["log"]


def test_ptx_version_is_raised_only_upwards():
    from tile.codegen.nvptx import raise_ptx_version
    src = "//\n.version 7.8\n.target sm_89\n"
    assert raise_ptx_version(src, 84) == "//\n.version 8.4\n.target sm_89\n"
    assert raise_ptx_version(src.replace("7.8", "8.6"), 84) == src.replace("7.8", "8.6")
    assert raise_ptx_version(src, 0) == src


# ------------------------------------------------------------------------------ interpreter
@pytest.mark.parametrize("dt", ["f8e4m3fn", "f8e5m2"])
@pytest.mark.parametrize("B_T", [True, False])
def test_gemm_fp8_interpreter(dt, B_T):
    err = on_cpu(G8.run_fp8, 100, 72, 200, dtype=tile.dtype(dt), B_T=B_T, BM=64, BN=64, BK=64)
    assert err < 4e-3, err                    # the exact sum rounded once to f32, then to bf16


@pytest.mark.parametrize("scaling,cfg", [("rowcol", dict(BM=64, BN=64, BK=64)),
                                         ("block", dict(BM=64, BN=128, BK=128))])
def test_gemm_fp8_scalings_interpreter(scaling, cfg):
    """Row/column and DeepGEMM block scales (rows of very different sizes, so a scale applied to the
    wrong row or K block shows; K = 200 leaves a partial last K block)."""
    err = on_cpu(G8.run_fp8, 100, 72, 200, SCALING=scaling, **cfg)
    assert err < 4e-3, err


def test_gemm_fp8_unknown_scaling_is_a_located_error():
    with pytest.raises(tile.TileError, match=r"gemm8\.py:\d+:\d+.*SCALING is one of 'tensor', 'rowcol', 'block'"):
        G8.gemm_fp8.compile(*_sig(G8.gemm_fp8, "f8e4m3fn"), target="sm_90a", SCALING="rowwise")


def test_gemm_fp8_block_scaling_needs_128_tiles():
    with pytest.raises(tile.TileError, match=r"gemm8\.py:\d+:\d+.*block scaling takes 128-wide K and N tiles"):
        G8.gemm_fp8.compile(*_sig(G8.gemm_fp8, "f8e4m3fn")[:3], tile.Tensor[f32, 2], tile.Tensor[f32, 2],
                            target="sm_90a", SCALING="block", BK=64)


@needs_ptxas
@pytest.mark.parametrize("scaling,cfg", [("rowcol", dict(BM=128, BN=256, BK=128, STAGES=3, num_warps=8)),
                                         ("block", dict(BM=128, BN=128, BK=128, STAGES=4, num_warps=8))])
def test_gemm_fp8_scalings_assemble_without_spills(scaling, cfg, tmp_path):
    rank = 2 if scaling == "block" else 1
    ck = G8.gemm_fp8.compile(*_sig(G8.gemm_fp8, "f8e4m3fn")[:3], tile.Tensor[f32, rank], tile.Tensor[f32, rank],
                             target="sm_90a", SCALING=scaling, **cfg)
    assert re.search(r"wgmma\.mma_async\.sync\.aligned\.m64n\d+k32\.f32\.e4m3\.e4m3 ", ck.ptx)
    rep = _ptxas(ck.ptx, "sm_90a", tmp_path)
    assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0, rep["log"]


@pytest.mark.parametrize("B_T", [True, False])
def test_gemm_int8_interpreter_exact(B_T):
    assert on_cpu(G8.run_int8, 70, 130, 200, B_T=B_T, BM=64, BN=64, BK=64) == 0


def test_int8_dot_accumulates_exactly_in_i32():
    """-128 * -128 summed K = 4096 times (2**26) and an i32 accumulator that wraps: the interpreter's
    dot is the exact integer sum modulo 2**32, like the tensor cores' (no saturation)."""
    @tile.kernel
    def d(A: tile.Tensor[tile.i8, 2], B: tile.Tensor[tile.i8, 2], C: tile.Tensor[i32, 2], K: tile.constexpr = 64):
        acc = tile.load(C, (0, 0), (16, 16))
        for k in tile.range(0, 4096, K):
            acc = tile.dot(tile.load(A, (0, k), (16, K)), tile.load(B, (k, 0), (K, 16)), acc)
        tile.store(C, (0, 0), acc)
    a = np.full((16, 4096), -128, np.int8)
    b = np.full((4096, 16), -128, np.int8)
    c = np.full((16, 16), 2 ** 31 - 2 ** 26, np.int32)
    c[0, 0] = 5
    on_cpu(d[(1,)], a, b, c)
    want = (np.int64(2 ** 31 - 2 ** 26) + 4096 * 128 * 128 + 2 ** 31) % 2 ** 32 - 2 ** 31
    assert c[1, 1] == want == -(2 ** 31) and c[0, 0] == 5 + 4096 * 128 * 128
