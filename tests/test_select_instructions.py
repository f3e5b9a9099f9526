"""Instruction selection as data: the pass writes each dot's atom and each copy's mechanism into the IR,
the text can be edited (another atom, another vector width) and recompiled, and code generation
carries out exactly what the text says -- or gives a located error when the target cannot."""
import importlib.util
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import tile
from tile import bf16, f32
from tile.codegen import ptxas_report
from tile.compiler import compile as tc_compile
from tile.ir.parser import parse_module
from tile.ir.printer import print_module
from tile.ir.targets import TARGETS, UnknownTargetError, get_target

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH")


def _gemm_module(target="sm_90a", **constexprs):
    spec = importlib.util.spec_from_file_location("gallery_gemm_isel", EXAMPLES / "gemm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    T2 = tile.Tensor[bf16, 2]
    return mod.gemm, mod.gemm.compile(T2, T2, T2, tile.Tensor[f32, 1], f32, target=target, **constexprs)


def _to_mma(text: str) -> str:
    """The IR text with the GEMM's wgmma atom edited to mma.sync (and the wgmma-only in-flight mark gone)."""
    out = re.sub(r'atom = "wgmma\.m64n\d+k16\.ss"', 'atom = "mma.m16n8k16"', text)
    return re.sub(r", inflight = 1|inflight = 1, ", "", out)


def test_targets_are_data():
    h = get_target("sm_90a")
    assert h.warp_size == 32 and h.has("wgmma") and h.mma_atom("wgmma.m64n128k16.ss").name == "wgmma"
    assert not get_target("sm_80").has("wgmma") and get_target("gfx942").warp_size == 64
    assert get_target("gfx950").limits.shared_bytes == 160 * 1024
    assert "select_instructions" in h.pipeline and h.pipeline.index("select_instructions") < \
        h.pipeline.index("shared_memory_planning")
    for t in TARGETS.values():
        for a in t.mma_atoms:
            if a.c is not None:
                frag = a.c() if a.name != "wgmma" else a.c(64)
                assert frag is not None
    with pytest.raises(UnknownTargetError, match=r"^unknown target 'sm90a' \(did you mean 'sm_90a'\?\); valid"):
        get_target("sm90a")


def test_gemm_selection_is_in_the_ir():
    _, ck = _gemm_module()
    text = ck.ir_after["select_instructions"]
    assert 'atom = "wgmma.m64n128k16.ss"' in text and "warps = [4, 1]" in text
    assert text.count('copy = "smem.desc"') == 2                  # A and B read by the wgmma descriptors
    assert 'copy = "tma"' in text and "box = [128, 64], swizzle = 128" in text   # TMA boxes into the ring
    assert 'copy = "cp.async"' not in text
    assert "inflight" not in text                                # 3 stages: the stage is reused next iteration
    assert print_module(parse_module(text)) == text              # the choices round-trip
    t4 = _gemm_module(STAGES=4)[1].ir_after["select_instructions"]
    assert "inflight = 1" in t4                                  # 4 stages: one wgmma group stays in flight
    t80 = _gemm_module("sm_80")[1].ir_after["select_instructions"]
    assert 'atom = "mma.m16n8k16"' in t80 and 'copy = "ldmatrix.k"' in t80 and "wgmma" not in t80
    assert 'copy = "cp.async"' in t80 and "vec = 8" in t80       # 16-byte async copies into the ring


@needs_ptxas
def test_edited_atom_is_carried_out():
    """wgmma -> mma.sync by editing the text after every pass: the PTX follows the edit."""
    _, ck = _gemm_module(STAGES=4)
    text = list(ck.ir_after.values())[-1]
    edited = _to_mma(text)
    assert edited != text and "inflight" not in edited
    out = tc_compile(parse_module(edited), "sm_90a")
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in out.ptx and "wgmma" not in out.ptx
    assert ptxas_report(out)["spill_stores"] == 0
    orig = tc_compile(parse_module(text), "sm_90a")
    assert "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16" in orig.ptx


@needs_ptxas
def test_edited_vector_width_is_carried_out():
    from tile.ir.targets import get_target
    _, ck = _gemm_module(get_target("sm_90a").without("tma"))   # with TMA the epilogue is a TMA store
    text = list(ck.ir_after.values())[-1]
    store = re.search(r"store %C[^\n]*\{vec = 8\}", text)
    assert store is not None
    edited = text.replace(store.group(0), store.group(0).replace("vec = 8", "vec = 2"))
    out = tc_compile(parse_module(edited), "sm_90a")
    assert "st.global.b32" in out.ptx                       # 2 x bf16 per store now
    bad = text.replace(store.group(0), store.group(0).replace("vec = 8", "vec = 16"))
    with pytest.raises(tile.TileError, match=r"vec = 16 cannot be used here: the layout .* allows a power of two "
                                             r"up to 8"):
        tc_compile(parse_module(bad), "sm_90a")


def test_atom_the_target_lacks_is_a_located_error():
    _, ck = _gemm_module()
    text = list(ck.ir_after.values())[-1]
    bad = text.replace('atom = "wgmma.m64n128k16.ss"', 'atom = "mfma.32x32x8"')
    with pytest.raises(tile.TileError, match=r"gemm\.py:\d+:\d+.*atom = 'mfma.32x32x8': target sm_90a offers "
                                             r"wgmma.m64nNk16.ss\|rs, wgmma.m64nNk32.ss, mma.m16n8k16, "
                                                 r"mma.m16n8k32, fma") as e:
        tc_compile(parse_module(bad), "sm_90a")
    assert "tile.dot" in str(e.value) or "dot" in str(e.value)
    odd = text.replace('atom = "wgmma.m64n128k16.ss"', 'atom = "wgmma.m64n48k16.ss"')
    with pytest.raises(tile.TileError, match="cannot be used for this dot: each warpgroup holds 128 columns"):
        tc_compile(parse_module(odd), "sm_90a")


def test_unknown_target_env_is_one_line(monkeypatch):
    @tile.kernel
    def k(X: tile.Tensor[f32, 1]):
        tile.store(X, (0,), tile.load(X, (0,), (4,)) + 1.0)
    monkeypatch.setenv("TILEC_TARGET", "sm90a")
    with pytest.raises(UnknownTargetError) as e:
        k[(1,)](np.zeros(4, np.float32))
    assert str(e.value).startswith("TILEC_TARGET: unknown target 'sm90a'") and "\n" not in str(e.value)


def _gpu():
    from tile.compiler import gpu_arch
    return gpu_arch()


@pytest.mark.gpu
def test_edited_atom_runs_on_the_gpu():
    """The GEMM with its wgmma atom edited to mma.sync agrees with the interpreter on the GPU."""
    if _gpu() != "sm_90a":
        pytest.skip("needs an sm_90a GPU")
    from tile.runtime.launch import launch
    from tile.runtime import interpreter
    g, ck = _gemm_module()
    text = list(ck.ir_after.values())[-1]
    edited = _to_mma(text)
    rng = np.random.default_rng()
    M, N, K = 200, 136, 192
    A = tile.asarray(rng.standard_normal((M, K)), bf16)
    B = tile.asarray(rng.standard_normal((K, N)) / np.sqrt(K), bf16)
    bias = rng.standard_normal(N).astype(np.float32)
    grid = (tile.cdiv(M, 128), tile.cdiv(N, 128), 1)
    results = []
    for t in (edited, text):
        C = tile.asarray(np.full((M, N), np.nan), bf16)
        launch(tc_compile(parse_module(t), "sm_90a"), grid, [A, B, C, bias, 1.5])
        results.append(C.numpy().astype(np.float64))
    Ci = tile.asarray(np.full((M, N), np.nan), bf16)
    interpreter.run(parse_module(ck.ir).functions[0], grid, [A, B, Ci, bias, 1.5])
    ref = Ci.numpy().astype(np.float64)
    for r in results:
        assert np.isfinite(r).all()
        assert np.linalg.norm(r - ref) / np.linalg.norm(ref) < 1e-2


@pytest.mark.parametrize("dt,acc,target,atom", [
    ("f8e4m3fn", "f32", "sm_90a", "wgmma.m64n64k32.ss"), ("f8e5m2", "f32", "sm_90a", "wgmma.m64n64k32.ss"),
    ("i8", "i32", "sm_90a", "wgmma.m64n64k32.ss"), ("u8", "i32", "sm_90a", "wgmma.m64n64k32.ss"),
    ("f8e4m3fn", "f32", "sm_89", "mma.m16n8k32"), ("i8", "i32", "sm_89", "mma.m16n8k32"),
    ("u8", "i32", "sm_80", "mma.m16n8k32"), ("f8e5m2", "f32", "sm_80", "fma"),
    ("bf16", "f32", "sm_90a", "wgmma.m64n64k16.ss")])
def test_8bit_dots_select_8bit_atoms(dt, acc, target, atom):
    """An 8-bit dot whose B comes as Bt [N, K] through `.T` gets the k32 atoms exactly where the
    16-bit one gets k16 (fp8 mma.sync only from sm_89: sm_80 keeps FMA and says so)."""
    D, C = tile.dtype(dt), tile.dtype(acc)

    @tile.kernel
    def g(A: tile.Tensor[D, 2], Bt: tile.Tensor[D, 2], Out: tile.Tensor[C, 2]):
        acc_ = tile.zeros((64, 64), C)
        for k in tile.range(0, A.shape[1], 64, stages=3):
            acc_ = tile.dot(tile.load(A, (0, k), (64, 64)), tile.load(Bt, (0, k), (64, 64)).T, acc_)
        tile.store(Out, (0, 0), acc_)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ck = g.compile(tile.Tensor[D, 2], tile.Tensor[D, 2], tile.Tensor[C, 2], target=target)
    text = list(ck.ir_after.values())[-1]
    assert re.search(rf'dot %\w+, %\w+, %\w+ \{{warps = \[\d, \d\], atom = "{re.escape(atom)}"', text) or \
        (atom == "fma" and 'atom = "fma"' in text), text
    assert print_module(parse_module(text)) == text
    warned = [x for x in w if issubclass(x.category, tile.PerformanceWarning)]
    assert bool(warned) == (atom == "fma")
    if atom.startswith("wgmma"):
        assert 'copy = "smem.desc"' in text


@tile.kernel
def _p_at_v(X, V, Y, P, STORE_P: tile.constexpr = False):
    """softmax-like: p rounded to bf16 for a tensor-core dot (and, with STORE_P, also stored)."""
    x = tile.load(X, (0, 0), (64, 64))
    p = tile.exp2(x - tile.max(x, axis=1)[:, None]).astype(bf16)
    tile.store(Y, (0, 0), tile.dot(p, tile.load(V, (0, 0), (64, 64))))
    if STORE_P:
        tile.store(P, (0, 0), p)


@pytest.mark.parametrize("arch", ["sm_90a", "sm_80"])
def test_rounding_to_bf16_goes_two_values_per_instruction(arch):
    """An f32 -> bf16 cast of a register tile rounds two values per cvt.rn.bf16x2.f32, for the dot and
    for the store alike, with no NaN test: a NaN stays a NaN with the hardware's bits (payloads are
    not part of the semantics, docs/language.md)."""
    T = tile.Tensor
    sig = (T[f32, 2], T[bf16, 2], T[f32, 2], T[bf16, 2])
    for store in (False, True):
        ptx = _p_at_v.compile(*sig, target=arch, STORE_P=store).ptx
        assert "cvt.rn.bf16x2.f32" in ptx and "cvt.rn.bf16.f32" not in ptx and "setp.nan" not in ptx


def _run_p_at_v(x, v):
    y = np.full((64, 64), np.nan, np.float32)
    _p_at_v[(1,)](x, v, y, tile.asarray(np.zeros((64, 64), np.float32), "bf16"))
    return y


@pytest.mark.gpu
def test_rounding_for_tensor_cores_gpu_vs_interpreter(hopper):
    """The paired rounding (GPU) is the interpreter's rounding: both within bf16's rounding of the
    float64 reference, and a NaN row stays a NaN row."""
    from helpers import on_cpu
    rng = np.random.default_rng()
    x = rng.standard_normal((64, 64)).astype(np.float32) * 4
    x[3, 5] = np.nan
    v = tile.asarray(rng.standard_normal((64, 64)).astype(np.float32), "bf16")
    p = np.exp2(x.astype(np.float64) - np.nanmax(x, axis=1)[:, None])
    ref = np.asarray(tile.asarray(p.astype(np.float32), "bf16").numpy(), np.float64) @ np.asarray(v.numpy(), np.float64)
    for y in (_run_p_at_v(x, v), on_cpu(_run_p_at_v, x, v)):
        assert np.isnan(y[3]).all() and not np.isnan(np.delete(y, 3, 0)).any()
        np.testing.assert_allclose(np.delete(y, 3, 0), np.delete(ref, 3, 0), rtol=1e-2, atol=1e-2)
