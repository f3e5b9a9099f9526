"""TMA on Hopper: instruction selection makes the pipelined loads TMA copies where the access allows it
(cp.async elsewhere and on sm_80), the choice and the mbarrier pipeline print in the IR and round-trip,
the PTX assembles, the kernel ABI lists the tensor-map parameters (artifact, AOT file), the launcher
builds and caches tensor maps and refuses strides a tensor map cannot describe; on the GPU (marked
gpu) the GEMM with ragged shapes and the attention kernel agree with a float64 reference."""
import importlib.util
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tile
from tile import bf16, f32
from tile.compiler import compile as tc_compile
from tile.ir.artifact import Artifact, KernelMeta, ParamABI, kernarg_layout, tensor_map_ok
from tile.ir.parser import parse_module
from tile.ir.printer import print_module
from tile.ir.shared_layouts import (swizzled_row_major, tma_box_plan, tma_tile_layout, wgmma_canonical)
from tile.ir.targets import get_target

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH")
T2 = tile.Tensor[bf16, 2]
T4 = tile.Tensor[bf16, 4]


def _gallery(name):
    spec = importlib.util.spec_from_file_location(f"gallery_{name}_tma", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEMM = _gallery("gemm")
ATTN = _gallery("attention")


def _gemm(target="sm_90a", **kw):
    return GEMM.gemm.compile(T2, T2, T2, tile.Tensor[f32, 1], f32, target=target, **kw)


def _attention(D, target="sm_90a"):
    return ATTN.attention.compile(T4, T4, T4, T4, f32, target=target, D=D)


def _copies(ck, name="select_instructions"):
    """[(tensor name, copy, box, swizzle)] of the async copies after pass `name`."""
    fn = parse_module(ck.ir_after[name]).functions[0]
    return [(o.operands[1].name, o.attrs.get("copy"), o.attrs.get("box"), o.attrs.get("swizzle"))
            for o in fn.walk() if o.name == "async_copy"]


# ------------------------------------------------------------------------------ one layout
def test_tma_writes_the_swizzled_wgmma_layout():
    """What TMA writes with SWIZZLE_128B/64B/32B is the ring's swizzled layout, and that layout is a
    canonical wgmma layout (K-major for A, MN-major for a row-major B): one layout from the algebra."""
    for shape, box, sw in [((128, 64), (128, 64), 128), ((64, 128), (64, 64), 128), ((64, 256), (64, 64), 128),
                           ((64, 32), (64, 32), 64), ((64, 16), (64, 16), 32)]:
        ring = swizzled_row_major(shape, 16)
        assert tma_box_plan(ring, shape, 16) == (box, sw)
        assert str(tma_tile_layout(shape, 16, box, sw)) == str(ring)
    a = tma_tile_layout((128, 64), 16, (128, 64), 128)
    assert wgmma_canonical(str(a), (128, 64), "a", 16) == ("K", 1, 16, 1024)
    b = tma_tile_layout((64, 128), 16, (64, 64), 128)                  # B (K, N), N contiguous: MN-major
    assert wgmma_canonical(str(b), (64, 128), "b", 16) == ("MN", 1, 8192, 1024)
    # the 128-byte mode on byte offsets is CuTe's Swizzle<3,4,3> (fp8), on bf16 elements Swizzle<3,3,3>
    assert str(tma_tile_layout((64, 128), 8, (64, 128), 128)) == "sw<3,4,3> o (64,128):(128,1)"
    # not TMA-writable: a swizzle TMA has no mode for, rows of a partial 16-byte chunk, boxes > 256
    assert tma_box_plan(swizzled_row_major((64, 128), 16).layout, (64, 128), 16) is None
    from tile.ir.layout import Layout
    assert tma_box_plan(Layout((64, 4), (4, 1)), (64, 4), 16) is None
    assert tma_box_plan(Layout((512, 8), (8, 1)), (512, 8), 16) == ((256, 8), 0)
    assert tma_box_plan(Layout((64, 512), (512, 1)), (64, 512), 16) is None


def test_tensor_map_rule():
    assert tensor_map_ok((100, 80), (80, 1), 16)
    assert not tensor_map_ok((100, 70), (70, 1), 16)                 # 140-byte rows
    assert not tensor_map_ok((80, 100), (1, 80), 16)                 # transposed: innermost stride 80
    assert tensor_map_ok((1, 70), (70, 1), 16)                       # a size-1 dim's stride is never used
    assert tensor_map_ok((2, 3, 5, 8), (120, 40, 8, 1), 16) and not tensor_map_ok((5, 6), (6, 1), 8)
    assert not tensor_map_ok((4,) * 6, (1,) * 6, 16) and not tensor_map_ok((8, 8), (8, 1), 4)


# ------------------------------------------------------------------------------ selection
def test_gemm_copies_are_tma_on_hopper_and_cp_async_on_ampere():
    ck = _gemm()
    assert _copies(ck) == [("A", "tma", [128, 64], 128), ("B", "tma", [64, 64], 128)] * 3   # prologue x2, loop
    text = ck.ir_after["select_instructions"]
    assert "mbarrier_init %full {count = 1}" in text and "mbarrier_wait" in text and "mbarrier_inval %full" in text
    assert text.count("mbarrier_arrive") == 3
    for name, t in (("sm_80", "sm_80"), ("without", get_target("sm_90a").without("tma"))):
        other = _gemm(t)
        assert {c[1] for c in _copies(other)} == {"cp.async"}, name
        assert "mbarrier" not in other.ir_after["select_instructions"], name


@pytest.mark.parametrize("D", [64, 128])
def test_attention_k_v_loads_are_4d_tma(D):
    ck = _attention(D)
    copies = _copies(ck)
    assert {c[0] for c in copies} == {"K", "V"}
    assert {(c[1], tuple(c[2]), c[3]) for c in copies} == {("tma", (64, 64), 128)}
    fn = ck.module.functions[0]
    params = [p for p in ck.meta.params if p.kind == "tmap"]
    # the output's epilogue is a TMA store too (staged in shared memory): a third map, of O
    assert [(p.source, p.box, p.swizzle, p.dtype) for p in params] == \
        [("K", (1, 1, 64, 64), 128, "bf16"), ("V", (1, 1, 64, 64), 128, "bf16"), ("O", (1, 1, 64, 64), 128, "bf16")]
    assert "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes" in ck.ptx
    assert "cp.async.bulk.tensor.4d.global.shared::cta.tile.bulk_group" in ck.ptx
    assert fn.attrs["target"] == "sm_90a"
    assert {c[1] for c in _copies(_attention(D, "sm_80"))} == {"cp.async"}


def test_disable_switch(monkeypatch):
    """TILEC_DISABLE=tma compiles Hopper kernels with cp.async (a specialization of its own)."""
    from tile import compiler
    monkeypatch.setenv("TILEC_TARGET", "sm_90a")
    monkeypatch.setenv("TILEC_DISABLE", "tma")
    t = compiler.resolve()
    assert t.name == "sm_90a" and not t.has("tma") and t.key == "sm_90a-tma" and t.has("wgmma")
    ck = GEMM.gemm.compile(T2, T2, T2, tile.Tensor[f32, 1], f32)
    assert {c[1] for c in _copies(ck)} == {"cp.async"} and "tmap" not in {p.kind for p in ck.meta.params}
    monkeypatch.delenv("TILEC_DISABLE")
    ck2 = GEMM.gemm.compile(T2, T2, T2, tile.Tensor[f32, 1], f32)
    assert ck2 is not ck and {c[1] for c in _copies(ck2)} == {"tma"}
    out = tc_compile(parse_module(ck2.ir), "sm_90a", tma=False)               # the compiler option
    assert "cp.async.cg" in out.ptx and "cp.async.bulk.tensor" not in out.ptx


def test_strides_a_tensor_map_cannot_take_specialize_the_kernel():
    """Compiled for launch arguments, a tensor whose rows are not whole 16-byte chunks is listed in
    `any_strides` and copied by cp.async; the others keep TMA."""
    A = np.zeros((100, 80), np.float32)
    B = np.zeros((80, 70), np.float32)                                # rows of 70 bf16 = 140 bytes
    args = [tile.asarray(A, bf16), tile.asarray(B, bf16), tile.asarray(np.zeros((100, 70)), bf16),
            np.zeros(70, np.float32), 1.0]
    ck = GEMM.gemm.compile(*args, target="sm_90a")
    assert 'any_strides = ["B", "C"]' in ck.ir
    assert {(c[0], c[1]) for c in _copies(ck)} == {("A", "tma"), ("B", "cp.async")}
    assert [p.name for p in ck.meta.params if p.kind == "tmap"] == ["A.tmap"]
    args[1] = tile.asarray(np.zeros((80, 72), np.float32), bf16)
    args[2] = tile.asarray(np.zeros((100, 72)), bf16)
    ck2 = GEMM.gemm.compile(*args, target="sm_90a")
    assert "any_strides" not in ck2.ir and {c[1] for c in _copies(ck2)} == {"tma"}


# ------------------------------------------------------------------------------ IR and PTX
def test_ir_round_trips_after_every_pass():
    for ck in (_gemm(), _attention(128)):
        for name, text in ck.ir_after.items():
            assert print_module(parse_module(text)) == text, name


@needs_ptxas
@pytest.mark.parametrize("which", ["gemm", "gemm4", "attn64", "attn128"])
def test_ptx_assembles_without_spills(which):
    from tile.codegen import ptxas_report
    ck = {"gemm": lambda: _gemm(), "gemm4": lambda: _gemm(STAGES=4), "attn64": lambda: _attention(64),
          "attn128": lambda: _attention(128)}[which]()
    ptx = ck.ptx
    assert re.search(r"\.param \.align 64 \.b8 \w+_param_\d+\[128\]", ptx)
    assert "cvta.param.u64" in ptx                           # grid-constant: read in place, no local copy
    assert "mbarrier.try_wait.parity.shared.b64" in ptx and "mbarrier.expect_tx" in ptx
    assert "mbarrier.init.shared.b64" in ptx and "mbarrier.inval.shared.b64" in ptx
    rep = ptxas_report(ck.artifact)
    assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0 and rep["stack"] == 0, rep


@needs_ptxas
def test_edited_copy_back_to_cp_async_compiles():
    """`copy = "tma"` edited to "cp.async" in the final IR: the stage's mbarrier still completes (no
    bytes expected), the cp.async groups carry the data; an impossible TMA edit is a located error."""
    ck = _gemm()
    text = list(ck.ir_after.values())[-1]
    edited = re.sub(r'copy = "tma", vec = 8, box = \[\d+, \d+\], swizzle = 128', 'copy = "cp.async", vec = 8', text)
    edited = re.sub(r', copy = "tma", box = \[\d+, \d+\], swizzle = \d+, staging = \d+', '', edited)  # the store
    assert 'copy = "tma"' not in edited and edited != text
    out = tc_compile(parse_module(edited), "sm_90a")
    assert "cp.async.cg.shared.global" in out.ptx and "cp.async.bulk.tensor" not in out.ptx
    assert not [p for p in out.meta.params if p.kind == "tmap"]
    half = text.replace('box = [128, 64], swizzle = 128', 'box = [128, 64], swizzle = 64', 1)
    with pytest.raises(tile.TileError, match=r"gemm\.py:\d+:\d+.*TMA writes boxes \[128, 64\] with swizzle 64"):
        tc_compile(parse_module(half), "sm_90a")
    with pytest.raises(tile.TileError, match=r"gemm\.py:\d+:\d+.*mbarrier ops need a target with TMA \(sm_90a\); sm_80"):
        tc_compile(parse_module(text), "sm_80")


# ------------------------------------------------------------------------------ ABI and AOT
def test_abi_lists_the_tensor_maps():
    ck = _gemm()
    maps = [p for p in ck.meta.params if p.kind == "tmap"]
    assert [(p.name, p.source, p.role, p.box, p.swizzle, p.dtype) for p in maps] == \
        [("A.tmap", "A", "tmap", (128, 64), 128, "bf16"), ("B.tmap", "B", "tmap", (64, 64), 128, "bf16"),
         ("C.tmap", "C", "tmap", (128, 64), 128, "bf16")]     # C: the epilogue's TMA store
    assert ck.meta.params[-3:] == maps                        # after every IR parameter
    offs, size = kernarg_layout(ck.meta.params)
    assert offs[-3] % 64 == 0 and offs[-2] == offs[-3] + 128 and offs[-1] == offs[-2] + 128 and size == offs[-1] + 128
    back = Artifact.from_json(ck.artifact.to_json())
    assert back.meta.params == ck.meta.params


def test_aot_artifact_carries_the_tensor_maps(tmp_path):
    out = tmp_path / "gemm.tilec"
    r = subprocess.run([sys.executable, "-m", "tile.cli", "compile", f"{EXAMPLES / 'gemm.py'}::gemm",
                        "--target", "sm_90a", "-o", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    art = Artifact.load(out)
    maps = [(p.name, p.box, p.swizzle, p.dtype) for p in art.meta.params if p.kind == "tmap"]
    assert maps == [("A.tmap", (128, 64), 128, "bf16"), ("B.tmap", (64, 64), 128, "bf16"),
                    ("C.tmap", (128, 64), 128, "bf16")]
    assert "gemm_param_19[128]" in art.ptx and "gemm_param_21[128]" in art.ptx


# ------------------------------------------------------------------------------ the launcher (no GPU)
def _tmap_meta():
    params = [ParamABI("A", "ptr", "A", "ptr"), ParamABI("A.shape0", "i32", "A", "shape", 0),
              ParamABI("A.shape1", "i32", "A", "shape", 1), ParamABI("A.stride0", "i32", "A", "stride", 0),
              ParamABI("A.stride1", "i32", "A", "stride", 1), ParamABI("n", "i32", "n", "scalar"),
              ParamABI("A.tmap", "tmap", "A", "tmap", box=(64, 64), swizzle=128, dtype="bf16")]
    return KernelMeta("k", "sm_90a", 128, params=params)


@pytest.fixture
def fake_encoder(monkeypatch):
    from tile.runtime import cuda, tensor_maps
    calls = []

    def encode(ptr, shape, strides, bits, box, swizzle, what=""):
        calls.append((ptr, tuple(shape), tuple(strides), bits, tuple(box), swizzle))
        return struct.pack("<16Q", ptr, *shape, *strides, bits, *box, swizzle, *([0] * (16 - 3 - 3 * len(shape))))
    monkeypatch.setattr(cuda, "encode_tensor_map", encode)
    tensor_maps.clear()
    yield calls
    tensor_maps.clear()


def test_launcher_builds_and_caches_tensor_maps(fake_encoder, monkeypatch):
    import ctypes
    from tile.ir.dtypes import dtype
    from tile.ir.types import ScalarType, TensorType
    from tile.runtime.device import DeviceArray
    from tile.runtime.launch import pack_args
    from tile.runtime import tensor_maps
    meta = _tmap_meta()
    types = [TensorType(dtype("bf16"), (None, None)), ScalarType(dtype("i32"))]
    A = DeviceArray.from_pointer(0x7f0000001000, (200, 72), "bf16")
    arr = pack_args(meta, types, [A, 5], ["A", "n"])
    addr = arr[6]                                        # the tensor map's pointer: 128 bytes, 64-aligned
    assert addr % 64 == 0
    raw = ctypes.string_at(addr, 128)
    assert struct.unpack("<16Q", raw)[:9] == (0x7f0000001000, 200, 72, 72, 1, 16, 64, 64, 128)
    assert fake_encoder == [(0x7f0000001000, (200, 72), (72, 1), 16, (64, 64), 128)]
    arr2 = pack_args(meta, types, [A, 6], ["A", "n"])           # the same tensor: a cache hit
    assert arr2[6] == addr and len(fake_encoder) == 1 and tensor_maps.stats()["misses"] == 1
    B = DeviceArray.from_pointer(0x7f0000001000, (100, 72), "bf16")
    assert pack_args(meta, types, [B, 6], ["A", "n"])[6] != addr and len(fake_encoder) == 2
    # an empty tensor has no valid map: a one-element tensor of zeros stands in (all reads are zeros)
    monkeypatch.setattr(tensor_maps, "_zero_buffer", lambda: 0x1200)
    empty = DeviceArray.from_pointer(0x7f0000002000, (0, 72), "bf16")
    pack_args(meta, types, [empty, 1], ["A", "n"])
    assert fake_encoder[-1] == (0x1200, (1, 1), (8, 1), 16, (64, 64), 128)


def test_launcher_refuses_strides_a_tensor_map_cannot_take(fake_encoder):
    from tile.ir.dtypes import dtype
    from tile.ir.types import ScalarType, TensorType
    from tile.runtime.device import DeviceArray
    from tile.runtime.launch import pack_args
    meta = _tmap_meta()
    types = [TensorType(dtype("bf16"), (None, None)), ScalarType(dtype("i32"))]
    bad = DeviceArray.from_pointer(0x7f0000001000, (200, 70), "bf16")
    with pytest.raises(ValueError, match=r"parameter 'A': the kernel was compiled to read it with TMA .* strides "
                                         r"\(70, 1\) .*TILEC_DISABLE=tma"):
        pack_args(meta, types, [bad, 5], ["A", "n"])
    t = DeviceArray.from_pointer(0x7f0000001000, (72, 200), "bf16", strides=(1, 72))
    with pytest.raises(ValueError, match="parameter 'A'.*unit innermost stride"):
        pack_args(meta, types, [t, 5], ["A", "n"])
    assert fake_encoder == []


# ------------------------------------------------------------------------------ on the GPU
def _gpu_arch():
    from tile.compiler import gpu_arch
    return gpu_arch()


def _hopper():
    if _gpu_arch() != "sm_90a":
        pytest.skip("needs an sm_90a GPU")


def _gemm_ref(a, b, scale=1.0):
    return scale * (a.numpy().astype(np.float64) @ b.numpy().astype(np.float64))


@pytest.mark.gpu
@pytest.mark.parametrize("M,N,K", [(200, 136, 200), (64, 64, 72), (300, 264, 520), (1, 8, 8)])
def test_gpu_gemm_ragged_shapes(M, N, K):
    """Ragged M, N (boxes hanging over the tensor's end: zero-filled by the hardware) and K not a
    multiple of BK, through TMA; checked against float64 (bf16 output: relative error < 1e-2)."""
    _hopper()
    rng = np.random.default_rng()
    A = tile.asarray(rng.standard_normal((M, K)), bf16)
    B = tile.asarray(rng.standard_normal((K, N)) / np.sqrt(K), bf16)
    C = tile.asarray(np.full((M, N), np.nan), bf16)
    bias = np.zeros(N, np.float32)
    ck = GEMM.gemm[(tile.cdiv(M, 128), tile.cdiv(N, 128))](A, B, C, bias, 1.0)
    assert {c[1] for c in _copies(ck)} == {"tma"}
    out = C.numpy().astype(np.float64)
    ref = _gemm_ref(A, B)
    assert np.isfinite(out).all()
    assert np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30) < 1e-2


@pytest.mark.gpu
def test_gpu_tma_equals_cp_async_bit_for_bit(monkeypatch):
    """The same GEMM through TMA and through cp.async (TILEC_DISABLE=tma): identical bits (the same
    products summed in the same order; only the copy engine differs), and K = 136 leaves a partial
    last K tile."""
    _hopper()
    rng = np.random.default_rng()
    M, N, K = 192, 200, 136
    A = tile.asarray(rng.standard_normal((M, K)), bf16)
    B = tile.asarray(rng.standard_normal((K, N)), bf16)
    outs = []
    for off in ("", "tma"):
        monkeypatch.setenv("TILEC_DISABLE", off)
        C = tile.asarray(np.full((M, N), np.nan), bf16)
        ck = GEMM.gemm[(tile.cdiv(M, 128), tile.cdiv(N, 128))](A, B, C, np.zeros(N, np.float32), 1.0)
        assert {c[1] for c in _copies(ck)} == ({"cp.async"} if off else {"tma"})
        outs.append(C.numpy().astype(np.float64))
    assert np.array_equal(outs[0], outs[1])
    ref = _gemm_ref(A, B)
    got = C.numpy().astype(np.float64)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-2


@pytest.mark.gpu
def test_gpu_tensor_maps_are_cached_across_launches():
    """Two launches on the same device tensors encode the maps once; new tensors, new maps; the
    fast launch path (torch-free: DeviceArrays) reads the same cache."""
    _hopper()
    from tile.runtime import tensor_maps
    rng = np.random.default_rng()
    M, N, K = 256, 128, 128
    A = tile.to_device(tile.asarray(rng.standard_normal((M, K)), bf16))
    B = tile.to_device(tile.asarray(rng.standard_normal((K, N)) / np.sqrt(K), bf16))
    C = tile.to_device(tile.asarray(np.full((M, N), np.nan), bf16))
    bias = tile.to_device(np.zeros(N, np.float32))
    grid = (tile.cdiv(M, 128), tile.cdiv(N, 128))
    GEMM.gemm[grid](A, B, C, bias, 1.0)
    m0 = tensor_maps.stats()["misses"]
    for _ in range(3):
        GEMM.gemm[grid](A, B, C, bias, 1.0)                  # the fast path after the first launch
    assert tensor_maps.stats()["misses"] == m0
    A2 = tile.to_device(tile.asarray(rng.standard_normal((M, K)), bf16))
    GEMM.gemm[grid](A2, B, C, bias, 1.0)
    assert tensor_maps.stats()["misses"] == m0 + 1
    out = C.to_host().numpy().astype(np.float64)
    ref = A2.to_host().numpy().astype(np.float64) @ B.to_host().numpy().astype(np.float64)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-2


@pytest.mark.gpu
def test_gpu_misaligned_rows_take_cp_async_and_aot_refuses_them(tmp_path):
    """N = 70 (140-byte rows of B): a launch through @tile.kernel compiles the cp.async
    specialization for B and is right; the AOT artifact (compiled for tensor-map strides) refuses
    the argument with an error naming it."""
    _hopper()
    from tile.runtime.launch import launch
    rng = np.random.default_rng()
    M, N, K = 100, 70, 80
    A = tile.asarray(rng.standard_normal((M, K)), bf16)
    B = tile.asarray(rng.standard_normal((K, N)) / np.sqrt(K), bf16)
    C = tile.asarray(np.full((M, N), np.nan), bf16)
    ck = GEMM.gemm[(1, 1)](A, B, C, np.zeros(N, np.float32), 1.0)
    assert ("B", "cp.async") in {(c[0], c[1]) for c in _copies(ck)}
    ref = _gemm_ref(A, B)
    assert np.linalg.norm(C.numpy().astype(np.float64) - ref) / np.linalg.norm(ref) < 1e-2
    art = _gemm().artifact
    with pytest.raises(ValueError, match="parameter 'B': the kernel was compiled to read it with TMA"):
        launch(art, (1, 1, 1), [A, B, C, np.zeros(N, np.float32), 1.0])


@pytest.mark.gpu
@pytest.mark.parametrize("D", [64, 128])
def test_gpu_attention_with_tma(D):
    _hopper()
    err = ATTN.run(B=2, H=4, HKV=2, S=200, D=D, causal=False)
    assert err < 2e-2, err
    err = ATTN.run(B=1, H=2, HKV=1, S=100, D=D, causal=True)
    assert err < 2e-2, err


def test_fast_launcher_packs_tensor_maps_and_sends_tma_able_strides_back(fake_encoder, monkeypatch):
    """The generated fast launcher (runtime/launch.py FastLauncher) with a `tmap` parameter: its
    pointer slot is the cached tensor map of this launch's tensor (packed per launch, unlike the
    constant pointers), the values are what pack_args packs, the launch goes on torch's current
    stream; with the parameter in `any_strides`, an argument a tensor map could take returns None
    (the general path then picks the TMA specialization), and a misfit one launches."""
    import ctypes
    from tile.ir.dtypes import dtype
    from tile.ir.types import ScalarType, TensorType
    from tile.runtime import cuda, launch as L
    from tile.runtime.device import DeviceArray
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))   # (undone after the test: benchmarks/gemm.py must not shadow examples/gemm.py)
    import launch_overhead_mock as M
    st = cuda._state
    monkeypatch.setattr(st, "ok", True)
    monkeypatch.setattr(st, "device_count", 1)
    monkeypatch.setattr(st, "device", __import__("types").SimpleNamespace(ordinal=0))
    meta = _tmap_meta()
    art = Artifact(meta=meta, ptx="")
    types = [TensorType(dtype("bf16"), (None, None)), ScalarType(dtype("i32"))]
    calls = []

    class FakeFunction:
        attributes = {"max_threads_per_block": 1024, "num_regs": 16}

        def launch_parts(self, block, shared, cluster):
            def call(handle, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
                ptrs = (ctypes.c_void_p * len(meta.params)).from_address(params)
                vals = [ctypes.c_int32.from_address(ptrs[i]).value for i in range(1, 6)]
                calls.append(((gx, gy, gz), stream, ctypes.c_uint64.from_address(ptrs[0]).value, vals, ptrs[6]))
                return (0,)
            return {"call": call, "handle": 1, "block": block, "shared": shared, "stream": "legacy",
                    "stream_of": lambda h: ("stream", h), "check": None}
    monkeypatch.setattr(L, "load_function", lambda compiled: FakeFunction())
    monkeypatch.setattr(L, "_TORCH_STREAM", [lambda ordinal: 0xAB00])

    bf16_ = M._DType("torch.bfloat16")             # one object, as torch.bfloat16 is

    def bf16_tensor(shape, ptr, strides=None):
        t = M.Tensor(1, ptr)
        t.dtype, t.shape = bf16_, tuple(shape)
        t._st = tuple(strides) if strides else (shape[1], 1)
        t.stride = lambda: t._st
        return t
    A = bf16_tensor((200, 72), 0x7F0000001000)
    fl = L.fast_launcher(art, [A, 5], types, ["A", "n"], result="ok")
    assert fl is not None and "tmap(" in fl.source
    assert fl.fast((4, 2), (A, 7), {}) == "ok"
    A2 = bf16_tensor((100, 72), 0x7F0000100000)
    assert fl.fast(3, (A2, 8), {}) == "ok"
    (g1, s1, p1, v1, m1), (g2, s2, p2, v2, m2) = calls
    assert (g1, s1, p1, v1) == ((4, 2, 1), ("stream", 0xAB00), 0x7F0000001000, [200, 72, 72, 1, 7])
    assert (g2, p2, v2) == ((3, 1, 1), 0x7F0000100000, [100, 72, 72, 1, 8])
    assert m1 != m2 and [c[0] for c in fake_encoder] == [0x7F0000001000, 0x7F0000100000]
    assert struct.unpack("<Q", ctypes.string_at(m2, 8))[0] == 0x7F0000100000
    # compiled without TMA for A (its strides allowed no tensor map): TMA-able strides go back
    fl2 = L.fast_launcher(art, [A, 5], types, ["A", "n"], result="ok", any_strides=("A",))
    assert fl2.fast((1,), (A, 5), {}) is None and len(calls) == 2
    odd = bf16_tensor((200, 70), 0x7F0000001000, (70, 1))          # 140-byte rows: no tensor map
    assert fl2.fast((1,), (odd, 5), {}) is None                      # ... but this spec has A.tmap
    assert len(calls) == 2
