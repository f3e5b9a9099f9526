"""The TMA-store epilogue on Hopper (passes/select_tma_store.py, codegen/lower_tma_store.py): the GEMM's
staged store becomes `store {copy = "tma", box, swizzle, staging}` with a tensor map of C in the ABI;
what the threads write into the staging buffers is what TMA reads as each box (the layout algebra);
the PTX (ptxas: 0 spills) stages, fences, and issues bulk tensor stores waited for with wait_group.read;
the 4-stage persistent warp-specialized 128x256 GEMM now fits in shared memory; sm_80 and
TILEC_DISABLE=tma keep st.global; the interpreter runs the TMA-store IR like the plain store. On the
GPU (marked gpu): default, WS and persistent WS GEMMs at ragged shapes against float64."""
import importlib.util
import re
import shutil
from itertools import product
from pathlib import Path

import numpy as np
import pytest

import tile
from tile import bf16, f32
from tile import compiler
from tile.ir.parser import parse_module
from tile.ir.printer import print_module
from tile.ir.shared_layouts import tma_staging_layout, tma_store_box, tma_store_value_boxes, tma_tile_layout
from tile.ir.targets import get_target
from tile.ir.thread_maps import as_map
from tile.runtime.interpreter import run

ROOT = Path(__file__).resolve().parent.parent
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH")
T2 = tile.Tensor[bf16, 2]
SIG = (T2, T2, T2, tile.Tensor[f32, 1], f32)


def _gallery(name):
    spec = importlib.util.spec_from_file_location(f"gallery_{name}_tmastore", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEMM = _gallery("gemm")
CFG = {"default": {}, "ws": dict(WS=True),
       "pws128x256s4": dict(BM=128, BN=256, BK=64, STAGES=4, WS=True, PERSISTENT=True, num_warps=8)}


def _lowered(target="sm_90a", **kw):
    """(function after the pipeline, ir_after) without code generation."""
    b = GEMM.gemm.bind(SIG, kw, signature_ok=True)
    t = target if not isinstance(target, str) else compiler.resolve(target)
    m, _ = GEMM.gemm._frontend(b, t)
    m, after = compiler.lower(m, t)
    return m.functions[0], after


def _store(fn):
    return next(o for o in fn.walk() if o.name == "store" and o.operands[0].name == "C")


# ------------------------------------------------------------------------------ one layout
@pytest.mark.parametrize("cfg", ["default", "pws128x256s4"])
def test_threads_write_what_tma_reads(cfg):
    """Every element of the accumulator tile, written by its thread at the staging layout's offset,
    lands where TMA reads it as element (r, c mod W) of box c // W from buffer (c // W) mod staging;
    and each register's box is the same for every thread (so each box is written by fixed registers)."""
    fn, _ = _lowered(**CFG[cfg])
    st = _store(fn)
    t = st.value.type
    (R, W), sw = st.attrs["box"], st.attrs["swizzle"]
    S = st.attrs["staging"]
    assert ((R, W), sw) == tma_store_box(t.shape, 16)
    lay = tma_staging_layout(t.shape, 16, (R, W), sw, S)
    box = tma_tile_layout((R, W), 16, (R, W), sw)
    for r, c in product(range(t.shape[0]), range(0, t.shape[1], 3)):
        assert lay((r, c)) == (c // W % S) * R * W + box((r, c % W)), (r, c)
    m = as_map(t.layout, 32 * int(fn.attrs["num_warps"]))
    boxes = tma_store_value_boxes(m, W)
    cols = m.tcoords()[:, 1][:, None] + m.vcoords()[:, 1][None, :]
    assert boxes is not None and (cols // W == np.array(boxes)[None, :]).all()
    assert sorted(set(boxes)) == list(range(t.shape[1] // W))


# ------------------------------------------------------------------------------ the IR
@pytest.mark.parametrize("cfg", list(CFG))
def test_epilogue_store_is_tma_in_the_ir(cfg):
    """After select_instructions: the store of C reads the accumulator's layout (no convert_layout
    before it), records copy/box/swizzle/staging; the ABI gets C's map; every pass's IR round-trips."""
    fn, after = _lowered(**CFG[cfg])
    st = _store(fn)
    BN = CFG[cfg].get("BN", 128)
    assert st.attrs["copy"] == "tma" and list(st.attrs["box"]) == [CFG[cfg].get("BM", 128), 64]
    assert st.attrs["swizzle"] == 128 and st.attrs["staging"] == 2 and st.value.owner.name != "convert_layout"
    assert "smem_scratch" in st.attrs
    sel = after["select_instructions"]
    assert re.search(r'store %C, [^\n]*\{vec = 2, copy = "tma", box = \[\d+, 64\], swizzle = 128, staging = 2\}', sel)
    assert "convert_layout" not in sel                          # the epilogue's conversion is gone
    from tile.ir.artifact import flatten_params
    maps = [(p.source, p.box, p.swizzle) for p in flatten_params(fn) if p.kind == "tmap"]
    assert maps[-1] == ("C", (CFG[cfg].get("BM", 128), 64), 128) and len(maps) == 3
    for name, text in after.items():
        assert print_module(parse_module(text)) == text, name
    assert int(fn.attrs["shared_bytes"]) <= get_target("sm_90a").limits.shared_bytes
    if cfg == "pws128x256s4":     # ring 4 x 48 KB + two 16 KB staging boxes fit beside it (not the 64 KB conversion)
        assert int(fn.attrs["shared_bytes"]) == 4 * 49152 + 2 * 16384 + 1024 and BN == 256


def test_verifier_rejects_a_masked_or_ill_boxed_tma_store():
    _, after = _lowered()
    text = after["select_instructions"]
    bad = text.replace("box = [128, 64], swizzle = 128, staging = 2}", "box = [64, 64], swizzle = 128, staging = 2}")
    from tile.ir.verifier import verify
    verify(parse_module(text))
    with pytest.raises(tile.TileError, match=r"gemm\.py:\d+:\d+.*TMA store .* whole rows"):
        verify(parse_module(bad))
    masked = parse_module(text)
    st = _store(masked.functions[0])
    st.operands.append(st.operands[-1])            # any operand as a mask: the mask is refused first
    with pytest.raises(tile.TileError, match=r"mask"):
        verify(masked)


@pytest.mark.parametrize("how", ["sm_80", "disabled", "store_disabled", "odd_strides"])
def test_where_tma_cannot_the_store_stays_vectorized(how):
    """sm_80, TILEC_DISABLE=tma (target without tma) or tma.store (without the store atom: the loads
    stay TMA), and C with strides a tensor map cannot describe (the launch's `any_strides`, e.g. N not
    a multiple of 8) keep convert_layout + store {vec = 8}."""
    if how == "sm_80":
        fn, after = _lowered("sm_80")
    elif how == "disabled":
        fn, after = _lowered(get_target("sm_90a").without("tma"))
    elif how == "store_disabled":
        fn, after = _lowered(get_target("sm_90a").without("tma.store"))
        assert after["select_instructions"].count('copy = "tma"') >= 2      # the A and B loads stay TMA
    else:
        b = GEMM.gemm.bind(SIG, {}, signature_ok=True)
        t = compiler.resolve("sm_90a")
        m, _ = GEMM.gemm._frontend(b, t)
        m.functions[0].attrs["any_strides"] = ["C"]
        m, after = compiler.lower(m, t)
        fn = m.functions[0]
    st = _store(fn)
    assert "copy" not in st.attrs and st.attrs["vec"] == 8 and st.value.owner.name == "convert_layout"
    assert 'copy = "tma", box' not in after["select_instructions"].split("store %C")[-1]


def test_interpreter_runs_the_tma_store_ir_like_numpy():
    """The TMA-store IR is a store to the interpreter: ragged M, N against float64."""
    fn, after = _lowered(BM=64, BN=64, BK=32)
    fn = parse_module(after["shared_memory_planning"]).functions[0]
    assert _store(fn).attrs["copy"] == "tma"
    rng = np.random.default_rng()
    M, N, K = 100, 72, 40
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    import ml_dtypes
    A, B = A.astype(ml_dtypes.bfloat16), B.astype(ml_dtypes.bfloat16)
    C = np.full((M, N), np.nan, ml_dtypes.bfloat16)
    run(fn, (2, 2), [A, B, C, np.zeros(N, np.float32), 1.0])
    ref = A.astype(np.float64) @ B.astype(np.float64)
    out = C.astype(np.float64)
    assert np.isfinite(out).all()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-2


# ------------------------------------------------------------------------------ PTX
@needs_ptxas
@pytest.mark.parametrize("cfg", ["default", "pws128x256s4"])
def test_ptx_stages_fences_and_bulk_stores(cfg):
    from tile.codegen import ptxas_report
    ck = GEMM.gemm.compile(*SIG, target="sm_90a", **CFG[cfg])
    ptx = ck.ptx
    nbox = CFG[cfg].get("BN", 128) // 64
    assert ptx.count("cp.async.bulk.tensor.2d.global.shared::cta.tile.bulk_group") == nbox
    assert ptx.count("cp.async.bulk.commit_group") == nbox
    assert "fence.proxy.async.shared::cta" in ptx and "cp.async.bulk.wait_group.read \t0;" in ptx
    assert ("cp.async.bulk.wait_group.read \t1;" in ptx) == (nbox > 2)     # a staging buffer reused
    assert "st.global" not in ptx
    if cfg == "pws128x256s4":
        assert re.search(r"fence\.proxy\.async\.shared::cta;\s*bar\.sync \t1, 256;", ptx)   # the consumers' barrier
    assert [p.name for p in ck.meta.params if p.kind == "tmap"] == ["A.tmap", "B.tmap", "C.tmap"]
    rep = ptxas_report(ck.artifact)
    assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0 and rep["stack"] == 0, rep["log"]


# ------------------------------------------------------------------------------ on the GPU
def _hopper():
    from tile.compiler import gpu_arch
    if gpu_arch() != "sm_90a":
        pytest.skip("needs a Hopper GPU (sm_90a)")


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", list(CFG))
@pytest.mark.parametrize("M, N, K", [(100, 72, 80), (257, 136, 200), (1000, 1000, 1024), (130, 300, 40),
                                     (64, 64, 0), (300, 100, 64)])
def test_gpu_tma_store_gemm(cfg, M, N, K):
    """Against float64 (examples/gemm.py run: bf16 output poisoned with NaN first, bias and gelu, relative
    error < 1e-2): M and N not multiples of the tile (the hardware clips the boxes), K = 0. N = 100, 300 are not
    multiples of 8: C's rows are not 16-byte strided, so the launch specializes C to `any_strides` and
    the store falls back to st.global (that selection: test_where_tma_cannot_the_store_stays_vectorized)."""
    _hopper()
    kw = dict(CFG[cfg])
    err = GEMM.run(M, N, K, act="gelu", with_bias=True, sms=7 if kw.get("PERSISTENT") else 132, **kw)
    assert err < 1e-2, err


@pytest.mark.gpu
def test_gpu_tma_store_equals_st_global_bit_for_bit(monkeypatch):
    """The same kernel with and without TMA (TILEC_DISABLE=tma): identical bits in C."""
    _hopper()
    rng = np.random.default_rng()
    M, N, K = 700, 904, 520
    A = tile.asarray(rng.standard_normal((M, K)), bf16)
    B = tile.asarray(rng.standard_normal((K, N)), bf16)
    outs = []
    for disable in (False, True):
        if disable:
            monkeypatch.setenv("TILEC_DISABLE", "tma")
        C = tile.asarray(np.full((M, N), np.nan), bf16)
        GEMM.gemm[GEMM.grid(M, N, 128, 128)](A, B, C, np.zeros(N, np.float32), 1.0)
        outs.append(C.numpy().astype(np.float64))
    assert np.isfinite(outs[0]).all() and np.array_equal(outs[0], outs[1])
