"""The NVIDIA back end without a GPU: every op family compiles to PTX that ptxas accepts (sm_80 and
sm_90a), the GEMM uses mma.sync + ldmatrix (+ cp.async when pipelined) without register spills,
and LLVM failures never take the process down.

ptxas is needed for the assembly checks; where it is not on PATH those tests skip (with that reason).
"""
from __future__ import annotations

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import nvptx_kernels as NK  # noqa: E402

from tile.codegen import CompileError, parse_ptxas_report, ptxas_report, run_ptxas
from tile.compiler import compile  # noqa: E402
from tile.ir.targets import get_target  # noqa: E402
from tile.codegen.llvm_isolated import LLVMJob, run_llvm  # noqa: E402

HAVE_PTXAS = shutil.which("ptxas") is not None
needs_ptxas = pytest.mark.skipif(not HAVE_PTXAS, reason="ptxas is not on PATH (install the CUDA toolkit's ptxas)")

TARGETS = ("sm_80", "sm_90a")

KERNELS = {
    "vadd_f32": lambda: NK.vadd(),
    "vadd_bf16": lambda: NK.vadd("bf16"),
    "math_f32": lambda: NK.math_f32(),
    "binary_f32": lambda: NK.binary("f32"),
    "binary_i32": lambda: NK.binary("i32"),
    "binary_int4": lambda: NK.binary("int4"),
    "casts": lambda: NK.casts(),
    "upcasts": lambda: NK.upcasts(),
    "reduce_rows": lambda: NK.reduce2d("sum", 1),
    "reduce_cols_max": lambda: NK.reduce2d("max", 0),
    "argmax": lambda: NK.reduce2d("argmax", 1),
    "reduce_all": lambda: NK.reduce_all(),
    "softmax": lambda: NK.softmax(),
    "loop_if": lambda: NK.loop_if(),
    "while": lambda: NK.while_loop(),
    "dot_fma": lambda: NK.dot_fma(),
    "dot_fma_i8": lambda: NK.dot_fma(dt="i8"),
    "gemm_int4": lambda: NK.gemm_int4(stages=2),
    "gather_scatter": lambda: NK.gather_scatter(),
    "scalars": lambda: NK.scalars(),
    "atomics": lambda: NK.atomics(),
    "masked": lambda: NK.masked_copy(),
    "transpose": lambda: NK.transpose_copy(),
    "shape_ops": lambda: NK.shape_ops(),
    "explicit_pipeline": lambda: NK.explicit_pipeline(),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_op_families_compile(name):
    """sm_90a and sm_80 PTX for each kernel; ptxas accepts it (when present), no local memory."""
    m = KERNELS[name]()
    for tgt in TARGETS:
        ck = compile(m, tgt)
        assert f".target {tgt}" in ck.ptx
        assert ck.meta.name == m.functions[0].name and ck.meta.num_threads == 128
        if HAVE_PTXAS:
            r = ptxas_report(ck)
            assert r["spill_stores"] == 0, r["log"]
            assert r["stack"] == 0, r["log"]


def test_ptx_versions():
    m = NK.vadd()
    assert ".version 8.0" in compile(m, "sm_90a").ptx
    assert ".version 7.0" in compile(m, "sm_80").ptx


def test_input_not_modified_and_meta():
    m = NK.gemm(stages=3)
    before = str(m)
    ck = compile(m, "sm_90a")
    assert str(m) == before                       # compile() works on a copy
    kinds = [p.kind for p in ck.meta.params]
    assert kinds == ["ptr", "i32", "i32", "i32", "i32"] * 3 + ["tmap"] * 3  # A and B loads, C's store by TMA
    assert ck.meta.shared_bytes >= 3 * (128 * 32 + 32 * 128) * 2
    assert "pipeline_loads" in ck.ir_after and "layout_inference" in ck.ir_after


@needs_ptxas
@pytest.mark.parametrize("tgt,wgmma", [("sm_80", None), ("sm_90a", False), ("sm_90a", None)])
def test_gemm_tensor_cores_no_spills(tgt, wgmma):
    """The default GEMM config (128x128x32 bf16, 4 warps): mma.sync + ldmatrix (sm_80, or sm_90a
    with wgmma=False), wgmma with shared-memory descriptors on sm_90a; 0 bytes spilled."""
    opts = {} if wgmma is None else {"wgmma": wgmma}
    ck = compile(NK.gemm(128, 128, 32, stages=None), tgt, **opts)
    if tgt == "sm_90a" and wgmma is None:
        assert "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16" in ck.ptx
        assert "wgmma.fence.sync.aligned" in ck.ptx and "fence.proxy.async" in ck.ptx
    else:
        assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in ck.ptx
        assert "ldmatrix.sync.aligned.m8n8.x4" in ck.ptx
    r = ptxas_report(ck)
    assert "0 bytes spill stores" in r["log"], r["log"]
    assert r["registers"] <= 255


@needs_ptxas
@pytest.mark.parametrize("stages", [2, 3, 4])
def test_pipelined_gemm(stages):
    """Software-pipelined GEMM: cp.async ring buffer (TMA boxes completing on one mbarrier per stage
    on sm_90a), one barrier per iteration, no spills."""
    for tgt in TARGETS:
        ck = compile(NK.gemm(128, 128, 32, stages=stages), tgt)
        ptx = ck.ptx
        rings = stages * (128 * 32 + 32 * 128) * 2
        if tgt == "sm_90a":
            assert "wgmma.mma_async" in ptx and "cp.async.bulk.tensor.2d" in ptx and "mbarrier.try_wait" in ptx
            assert ck.meta.shared_bytes == rings + 128          # + the stages' mbarriers (128-byte aligned)
        else:
            assert "cp.async.cg.shared.global" in ptx and "cp.async.wait_group" in ptx
            assert "mma.sync.aligned.m16n8k16" in ptx and "ldmatrix.sync.aligned" in ptx
            assert ck.meta.shared_bytes == rings
        r = ptxas_report(ck)
        assert r["spill_stores"] == 0, r["log"]


@needs_ptxas
def test_sass_has_hmma():
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump is None:
        pytest.skip("cuobjdump is not on PATH")
    import subprocess
    import tempfile
    ck = compile(NK.gemm(stages=3), "sm_90a")
    cubin, _ = run_ptxas(ck.ptx, "sm_90a")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True).stdout
    assert "HGMMA.64x128x16.F32.BF16" in sass and "UTMALDG.2D" in sass          # wgmma fed by TMA


def test_fma_fallback_for_f32_dot():
    ck = compile(NK.dot_fma(), "sm_90a")
    assert "mma.sync" not in ck.ptx and "fma.rn.f32" in ck.ptx


def test_epilogue_stays_in_registers():
    """bias + relu after the dot: applied in the accumulator layout, no conversion through smem."""
    ck = compile(NK.gemm(epilogue=True), "sm_90a")
    ir = ck.tile_ir
    tail = ir[ir.rindex("yield"):]
    # no conversion after the loop: the TMA store stages the accumulator layout itself
    assert tail.count("convert_layout") == 0 and 'copy = "tma", box' in tail
    # without the TMA store, the only conversion is the one right before the (coalesced) store
    ck = compile(NK.gemm(epilogue=True), get_target("sm_90a").without("tma.store"))
    ir = ck.tile_ir
    tail = ir[ir.rindex("yield"):]
    assert tail.count("convert_layout") == 1
    assert tail.index("convert_layout") > tail.index(" cast ")


def test_unknown_target():
    from tile.ir.targets import UnknownTargetError
    with pytest.raises(UnknownTargetError, match="unknown target 'sm_75'; valid targets: cpu, sm_80") as e:
        compile(NK.vadd(), "sm_75")
    assert "\n" not in str(e.value)
    with pytest.raises(UnknownTargetError, match="did you mean 'sm_90a'"):
        compile(NK.vadd(), "sm90a")


def test_llvm_crash_is_a_compile_error():
    """A malformed nvvm annotation aborts LLVM (assertions build): the child dies, we get an error."""
    bad = ('target triple = "nvptx64-nvidia-cuda"\n'
           'define void @k() {\n  ret void\n}\n'
           '!nvvm.annotations = !{!0}\n!0 = !{ptr @k, !"maxntid", i32 128, i32 1, i32 1}\n')
    with pytest.raises(CompileError, match="kernel 'k'"):
        run_llvm(LLVMJob(bad, "nvptx64-nvidia-cuda", "sm_90a", "+ptx80", 3, (), "asm", "k"))


def test_llvm_rejects_bad_ir():
    with pytest.raises(CompileError, match="LLVM rejected"):
        run_llvm(LLVMJob("define void @k( {", "nvptx64-nvidia-cuda", "sm_90a", "+ptx80", 3, (), "asm", "k"))


def test_unsupported_subbyte_store_layout_is_a_clear_error():
    """A sub-byte store whose layout gives threads partial bytes is refused with a CompileError
    (layout inference never produces one: this IR bypasses it)."""
    from tile.codegen.nvptx import compile_function
    from tile.ir.thread_maps import ThreadMap
    one_each = ThreadMap((256,), [(128, (1,))], [(2, (128,))]).to_tv()      # 1 element per thread per slot
    k = NK.K("bad_store", [NK.T("int4", 1)], ["Y"], {"shared_bytes": 0})
    t = NK.tile_type((256,), NK.dtype("int4"), "reg", one_each)
    k.op("store", [k.args[0], k.c(0), k.v("full", [], t, value=1)])
    with pytest.raises(CompileError, match="whole bytes"):
        compile_function(k.fn, "sm_90a")


def test_parse_ptxas_report():
    log = ("ptxas info    : Function properties for k\n    8 bytes stack frame, 4 bytes spill stores, "
           "4 bytes spill loads\nptxas info    : Used 96 registers, used 1 barriers, 16384 bytes smem\n")
    r = parse_ptxas_report(log)
    assert (r["registers"], r["spill_stores"], r["stack"], r["smem"]) == (96, 4, 8, 16384)


@pytest.mark.parametrize("M,K,wm,wn", [(64, 64, 4, 1), (128, 64, 4, 1), (128, 64, 8, 1), (128, 32, 4, 2),
                                       (256, 32, 8, 1)])
def test_wgmma_rs_fragment_slots(M, K, wm, wn):
    """The register slots fed to an RS-form wgmma hold, in every thread, exactly the A-fragment
    elements of fragment-layouts.md §3.2 (row 16w + g + 8((i>>1)&1), col 2q + (i&1) + 8(i>>2)) of its
    warpgroup's 64-row block; and an mma accumulator (the previous wgmma's) holds the same elements
    per thread as that A fragment (the f32 -> bf16 conversion needs no data movement)."""
    from tile.codegen.lower_wgmma import rs_fragment_slots
    from tile.ir.thread_maps import mma_a, mma_c
    nt = 32 * wm * wn
    am = mma_a(M, K, wm, wn).for_threads(nt)
    cm = mma_c(M, K, wm, wn).for_threads(nt)
    if wn == 1:      # (with warps along N, each warp's accumulator holds other columns)
        assert (am.tcoords() == cm.tcoords()).all() and set(am.vcoord_list()) == set(cm.vcoord_list())
    gm = wm // 4
    for j in range(M // (64 * gm)):
        for k0 in range(0, K, 16):
            slots = rs_fragment_slots(am, gm, j, k0)
            for t in range(nt):
                wi = (t // 32) % wm
                gi, w, g, q = wi // 4, wi % 4, (t % 32) >> 2, t & 3
                for r, pair in enumerate(slots):
                    for e, s in enumerate(pair):
                        i = 2 * r + e
                        want = (64 * (gm * j + gi) + 16 * w + g + 8 * ((i >> 1) & 1), k0 + 2 * q + (i & 1) + 8 * (i >> 2))
                        assert tuple(am.coord(t, s)) == want, (t, r, e)
