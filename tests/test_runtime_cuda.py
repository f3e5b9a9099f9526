"""Runtime tests that need no GPU: the no-driver behaviour, argument packing against ir/artifact.py,
argument errors, DLPack / __cuda_array_interface__ parsing, nvJitLink, and the kernel cache."""
from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import sys

import numpy as np
import pytest

from tile.ir.artifact import Artifact, KernelMeta, flatten_params, signature_of_function
from tile.ir import numerics
from tile.ir.core import Function
from tile.ir.dtypes import dtype as D
from tile.ir.errors import TileError
from tile.ir.types import ScalarType, TensorType
from tile.runtime import cache as C
from tile.runtime import cuda, hip
from tile.runtime import device as dev
from tile.runtime import launch as L
from tile.runtime.arrays import asarray

NO_GPU = not cuda.available()
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="checks the behaviour without an NVIDIA driver")


def T(dt, rank=1, shape=None):
    return TensorType(D(dt), tuple(shape) if shape else (None,) * rank)


def S(dt):
    return ScalarType(D(dt))


def kernel_meta(params: dict, name="k", align=16):
    f = Function(name, list(params.values()), list(params))
    meta = KernelMeta(name=name, target="sm_90a", num_threads=128, params=flatten_params(f), align=align)
    return f, meta


def read_params(meta, arr):
    """Decode a packed parameter array back into Python values by ABI kind."""
    out = {}
    for i, p in enumerate(meta.params):
        addr = arr[i]
        typ = {"ptr": ctypes.c_uint64, "i32": ctypes.c_int32, "i64": ctypes.c_int64,
               "f32": ctypes.c_float, "f64": ctypes.c_double}[p.kind]
        out[p.name] = typ.from_address(addr).value
    return out


class FakeCAI:
    """An object exposing __cuda_array_interface__ (as cupy/numba do) over a made-up device address."""

    def __init__(self, ptr, shape, typestr, strides=None, descr=None, stream=None):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False),
                                         "version": 3, "strides": strides, "stream": stream}
        if descr is not None:
            self.__cuda_array_interface__["descr"] = descr


class FakeDLPack:
    """Forwards the DLPack protocol to a NumPy array (a CPU producer)."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kw):
        return self.a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


# =============================================================================== no driver
@needs_no_gpu
def test_available_is_false_and_init_raises_one_line():
    assert cuda.available() is False
    assert cuda.available() is False                 # cached, still no exception
    with pytest.raises(cuda.NoGPUError) as ei:
        cuda.init()
    msg = str(ei.value)
    assert msg.startswith("no NVIDIA GPU/driver found: ")
    assert "\n" not in msg
    assert isinstance(ei.value, TileError)
    assert ei.value.__cause__ is None and (ei.value.__context__ is None or ei.value.__suppress_context__)


@needs_no_gpu
@pytest.mark.parametrize("call", ["launch", "to_device", "empty", "load_module", "stream", "synchronize", "device"])
def test_gpu_calls_raise_no_gpu_error(call):
    f, meta = kernel_meta({"X": T("f32"), "n": S("i32")})

    art = Artifact(meta, ptx=".version 8.0\n.target sm_90a\n.address_size 64\n", signature=signature_of_function(f))
    actions = {
        "launch": lambda: L.launch(art, (1,), [np.zeros(4, np.float32), 4]),
        "to_device": lambda: dev.to_device(np.zeros(3, np.float32)),
        "empty": lambda: dev.empty((3,), "f32"),
        "load_module": lambda: cuda.load_module(art.ptx),
        "stream": lambda: cuda.Stream(),
        "synchronize": cuda.synchronize,
        "device": cuda.device,
    }
    with pytest.raises(cuda.NoGPUError) as ei:
        actions[call]()
    assert "\n" not in str(ei.value) and str(ei.value).startswith("no NVIDIA GPU/driver found")


def test_hip_without_rocm():
    if hip.available():
        pytest.skip("an AMD GPU is present")
    with pytest.raises(hip.NoGPUError) as ei:
        hip.init()
    assert "\n" not in str(ei.value) and str(ei.value).startswith("no AMD GPU/ROCm runtime found")
    with pytest.raises(hip.NoGPUError):
        hip.load_module(b"\x7fELF")


# ============================================================================ pure helpers
def test_arch_from_cc():
    assert cuda.arch_from_cc(9, 0) == "sm_90a"
    assert cuda.arch_from_cc(8, 0) == "sm_80"
    assert cuda.arch_from_cc(8, 6) == "sm_86"
    assert cuda.arch_from_cc(8, 9) == "sm_89"
    assert cuda.arch_from_cc(7, 5) == "sm_75"
    assert cuda.arch_from_cc(10, 0) == "sm_100a"


def test_ptx_target_and_compatibility():
    ptx = "//\n.version 8.0\n.target sm_90a\n.address_size 64\n"
    assert cuda.ptx_target(ptx) == "sm_90a"
    assert cuda.ptx_target(ptx.encode()) == "sm_90a"
    assert cuda.ptx_target(".version 7.0\n.target sm_80\n") == "sm_80"
    assert cuda.ptx_target("no target") is None
    assert cuda.check_target("sm_90a", (9, 0)) == "sm_90a"
    assert cuda.check_target("sm_80", (9, 0)) == "sm_90"           # plain PTX JITs forward
    assert cuda.check_target("sm_80", (8, 6)) == "sm_86"
    with pytest.raises(TileError, match="only on compute capability 9.0"):
        cuda.check_target("sm_90a", (8, 0), "A100")
    with pytest.raises(TileError, match="newer than"):
        cuda.check_target("sm_89", (8, 0))


def test_normalize_dims():
    assert cuda.normalize_dims(5) == (5, 1, 1)
    assert cuda.normalize_dims((2, 3)) == (2, 3, 1)
    assert cuda.normalize_dims((np.int64(4), 1, 2)) == (4, 1, 2)
    assert cuda.normalize_dims((0,)) == (0, 1, 1)
    with pytest.raises(ValueError):
        cuda.normalize_dims((1, 2, 3, 4))
    with pytest.raises(ValueError):
        cuda.normalize_dims((-1,))
    with pytest.raises(TypeError):
        cuda.normalize_dims((1.5,))


def test_cuda_error_message_names_result_and_kernel():
    from cuda.bindings import driver as cu
    with pytest.raises(cuda.CudaError) as ei:
        cuda._check((cu.CUresult.CUDA_ERROR_INVALID_VALUE,), "cuLaunchKernel", "vadd")
    msg = str(ei.value)
    assert "cuLaunchKernel" in msg and "CUDA_ERROR_INVALID_VALUE" in msg and "'vadd'" in msg
    assert "invalid argument" in msg
    assert ei.value.code == 1 and ei.value.kernel == "vadd"
    assert cuda._check((cu.CUresult.CUDA_SUCCESS, 7), "x") == 7


def test_stream_handle_conversions():
    class TorchLike:
        cuda_stream = 0x1234

    class CupyLike:
        ptr = 0x99

    class CoreLike:
        def __cuda_stream__(self):
            return (0, 0x77)
    assert cuda.stream_handle(None) == 0
    assert cuda.stream_handle(5) == 5
    assert cuda.stream_handle(TorchLike()) == 0x1234
    assert cuda.stream_handle(CupyLike()) == 0x99
    assert cuda.stream_handle(CoreLike()) == 0x77
    assert cuda.stream_handle(cuda.Stream(handle=42)) == 42
    with pytest.raises(TypeError):
        cuda.stream_handle("stream")


# ================================================================================ nvJitLink
TINY_PTX = """.version 8.0
.target {target}
.address_size 64
.visible .entry tiny(.param .u64 p, .param .u32 n)
{{
  .reg .b64 %rd<2>;
  .reg .b32 %r<2>;
  ld.param.u64 %rd1, [p];
  ld.param.u32 %r1, [n];
  cvta.to.global.u64 %rd1, %rd1;
  st.global.u32 [%rd1], %r1;
  ret;
}}
"""


@pytest.mark.skipif(not cuda.nvjitlink_available(), reason="nvJitLink is not installed")
@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_nvjitlink_ptx_to_cubin(target):
    cubin = cuda.ptx_to_cubin(TINY_PTX.format(target=target), target, name="tiny")
    assert cubin[:4] == b"\x7fELF" and len(cubin) > 500
    assert cuda.ptx_to_cubin(TINY_PTX.format(target=target).encode() + b"\0", target)[:4] == b"\x7fELF"


@pytest.mark.skipif(not cuda.nvjitlink_available(), reason="nvJitLink is not installed")
def test_nvjitlink_error_carries_the_ptxas_log():
    bad = TINY_PTX.format(target="sm_90a").replace("ret;", "bogus_instruction;\n  ret;")
    with pytest.raises(cuda.PTXCompileError) as ei:
        cuda.ptx_to_cubin(bad, "sm_90a", name="tiny")
    assert "bogus_instruction" in str(ei.value) and "'tiny'" in str(ei.value)


# ================================================================================ pack_args
def fake(shape, dt, ptr=0x7F0000001000, strides=None):
    return dev.DeviceArray.from_pointer(ptr, shape, dt, strides=strides)


def test_pack_args_follows_the_abi():
    f, meta = kernel_meta({"A": T("f32", 2), "B": T("bf16", 1), "n": S("i32"), "alpha": S("f32"),
                           "flag": S("i1"), "big": S("i64"), "h": S("f16"), "bh": S("bf16"), "u": S("u8"),
                           "d": S("f64"), "q": S("int4"), "uu": S("u32")})
    A = fake((3, 5), "f32", ptr=0x7F0000001000, strides=(8, 1))
    B = fake((7,), "bf16", ptr=0x7F0000002000)
    arr = L.pack_args(meta, [a.type for a in f.args],
                      [A, B, 1000, 1.5, True, -2 ** 40, 2.5, 1.0, 255, 0.1, -8, 2 ** 32 - 1],
                      [a.name for a in f.args])
    assert len(arr) == len(meta.params) == (1 + 2 * 2) + (1 + 2 * 1) + 10
    v = read_params(meta, arr)
    assert [p.name for p in meta.params][:5] == ["A", "A.shape0", "A.shape1", "A.stride0", "A.stride1"]
    assert v["A"] == 0x7F0000001000 and (v["A.shape0"], v["A.shape1"]) == (3, 5)
    assert (v["A.stride0"], v["A.stride1"]) == (8, 1)
    assert v["B"] == 0x7F0000002000 and v["B.shape0"] == 7 and v["B.stride0"] == 1
    assert v["n"] == 1000 and v["alpha"] == 1.5 and v["flag"] == 1 and v["big"] == -2 ** 40
    assert v["h"] == 0x4100                                     # f16 2.5
    assert v["bh"] == 0x3F80                                    # bf16 1.0
    assert v["u"] == 255 and v["d"] == 0.1
    assert v["q"] & 0xFFFFFFFF == (-8) & 0xFFFFFFFF            # int4 sign-extended in an i32
    assert v["uu"] & 0xFFFFFFFF == 2 ** 32 - 1
    # byte-level: a ptr is 8 bytes little-endian, an i32 4 bytes
    raw = ctypes.string_at(arr[0], 8)
    assert raw == (0x7F0000001000).to_bytes(8, "little")
    assert ctypes.string_at(arr[meta.params.index(next(p for p in meta.params if p.name == "n"))], 4) == \
        (1000).to_bytes(4, "little")
    # f16 scalars agree with numerics.encode
    assert v["h"] == int(numerics.encode(np.array([2.5]), D("f16"))[0])


def test_pack_args_keeps_values_alive():
    f, meta = kernel_meta({"n": S("i32"), "x": S("f32")})
    arr = L.pack_args(meta, [a.type for a in f.args], [7, 2.0])
    import gc
    gc.collect()
    assert read_params(meta, arr) == {"n": 7, "x": 2.0}


def test_pack_args_from_cuda_array_interface_and_dlpack():
    f, meta = kernel_meta({"X": T("f32", 2), "Y": T("bf16", 2)})
    X = FakeCAI(0x7F0000010000, (4, 6), "<f4", strides=(48, 8))         # byte strides -> elements
    Y = fake((2, 3), "bf16", ptr=0x7F0000020000)
    v = read_params(meta, L.pack_args(meta, [a.type for a in f.args], [X, Y.__dlpack__()]))
    assert v["X"] == 0x7F0000010000 and (v["X.stride0"], v["X.stride1"]) == (12, 2)
    assert v["Y"] == 0x7F0000020000 and (v["Y.shape0"], v["Y.shape1"]) == (2, 3)
    # bf16 through __cuda_array_interface__ uses the '<V2' convention
    t = dev.extract_tensor(FakeCAI(0x7F0000030000, (8,), "<V2"), "Y", "bf16", 1)
    assert t.dtype == D("bf16") and t.strides == (1,)
    t = dev.extract_tensor(FakeCAI(0x7F0000030000, (8,), "<V2", descr=[("bfloat16", "<V2")]), "Y", None, 1)
    assert t.dtype == D("bf16")
    t = dev.extract_tensor(FakeCAI(0x7F0000030000, (8,), "|V1"), "F", "f8e4m3fn", 1)
    assert t.dtype == D("f8e4m3fn")


def P(meta, f):
    return [a.type for a in f.args]


@pytest.mark.parametrize("case", ["dtype", "rank", "align", "count", "host", "cpu_dlpack", "not_tensor",
                                  "static_shape", "bytebool", "big_dim", "bad_strides", "typestr"])
def test_tensor_argument_errors_name_the_parameter(case):
    f, meta = kernel_meta({"Inp": T("f32", 2), "Out": T("f32", 2, shape=(None, 4))})
    good = fake((3, 4), "f32")
    args = {"dtype": ([fake((3, 4), "f16"), good], TypeError, "Inp"),
            "rank": ([fake((12,), "f32"), good], ValueError, "Inp"),
            "align": ([fake((3, 4), "f32", ptr=0x7F0000001004), good], ValueError, "Inp"),
            "count": ([good], TypeError, "takes 2 arguments"),
            "host": ([np.zeros((3, 4), np.float32), good], ValueError, "Inp"),
            "cpu_dlpack": ([FakeDLPack(np.zeros((3, 4), np.float32)), good], ValueError, "Inp"),
            "not_tensor": ([3.0, good], TypeError, "Inp"),
            "static_shape": ([good, fake((3, 5), "f32")], ValueError, "Out"),
            "bytebool": ([FakeCAI(0x7F0000001000, (3, 4), "|b1"), good], TypeError, "Inp"),
            "big_dim": ([fake((2 ** 31, 1), "f32"), good], ValueError, "Inp"),
            "bad_strides": ([FakeCAI(0x7F0000001000, (3, 4), "<f4", strides=(16, 2)), good], ValueError, "Inp"),
            "typestr": ([FakeCAI(0x7F0000001000, (3, 4), "<c8"), good], TypeError, "Inp")}
    a, exc, needle = args[case]
    with pytest.raises(exc) as ei:
        L.pack_args(meta, P(meta, f), a, [x.name for x in f.args])
    assert needle in str(ei.value)
    if case not in ("count",):
        assert f"'{needle}'" in str(ei.value)


def test_alignment_follows_meta_align():
    f, meta = kernel_meta({"X": T("f32")}, align=4)
    L.pack_args(meta, P(meta, f), [fake((8,), "f32", ptr=0x7F0000001004)])
    f, meta = kernel_meta({"X": T("f32")}, align=16)
    with pytest.raises(ValueError, match="16-byte aligned"):
        L.pack_args(meta, P(meta, f), [fake((8,), "f32", ptr=0x7F0000001004)])
    L.pack_args(meta, P(meta, f), [fake((0,), "f32", ptr=0x7F0000001004)])     # empty: never read


@pytest.mark.parametrize("dt,value,exc", [
    ("i32", 2 ** 31, ValueError), ("i32", -2 ** 31 - 1, ValueError), ("u8", 256, ValueError),
    ("u8", -1, ValueError), ("int4", 8, ValueError), ("i64", 2 ** 63, ValueError), ("i32", 1.5, TypeError),
    ("i32", "3", TypeError), ("i1", 2, TypeError), ("i1", 0.0, TypeError), ("f16", 65520.0, ValueError),
    ("f16", 1e6, ValueError), ("f32", 1e39, ValueError), ("bf16", 1e39, ValueError),
    ("f8e4m3fn", 465.0, ValueError), ("f4e2m1", 100.0, ValueError), ("f32", "x", TypeError),
    ("f32", 1 + 2j, TypeError)])
def test_scalar_errors_name_the_parameter(dt, value, exc):
    f, meta = kernel_meta({"s": S(dt)})
    with pytest.raises(exc, match="'s'"):
        L.pack_args(meta, P(meta, f), [value])


@pytest.mark.parametrize("dt,value", [("i32", 2 ** 31 - 1), ("i32", -2 ** 31), ("u32", 2 ** 32 - 1),
                                      ("f16", 65504.0), ("f16", 65519.0), ("f8e4m3fn", 464.0),
                                      ("f32", float("inf")), ("f32", float("nan")), ("f16", float("-inf")),
                                      ("i1", np.bool_(True)), ("i32", np.int64(5)), ("f32", np.float64(2.0)),
                                      ("i64", -2 ** 63), ("u64", 2 ** 64 - 1), ("f32", np.array(3.0))])
def test_scalar_edge_values_pack(dt, value):
    f, meta = kernel_meta({"s": S(dt)})
    L.pack_args(meta, P(meta, f), [value])


def test_abi_mismatch_is_reported():
    f, meta = kernel_meta({"X": T("f32"), "n": S("i32")})
    with pytest.raises(TileError, match="scalar in the IR"):
        L.pack_args(meta, [S("f32"), S("i32")], [1.0, 2], ["X", "n"])


def test_signature_sources():
    f, meta = kernel_meta({"X": T("f32", 2), "n": S("i32"), "a": S("f16")})

    art = Artifact(meta, ptx="// p", signature=signature_of_function(f))
    types, names = L.signature_of(art)
    assert names == ["X", "n", "a"] and types == [T("f32", 2), S("i32"), S("f16")]
    assert art.signature == [["X", "tensor<?x?xf32>"], ["n", "i32"], ["a", "f16"]]

    class Holder:                       # a cache entry or a CompiledKernel: holds the artifact
        artifact = art
    assert L.signature_of(Holder()) == (types, names)
    with pytest.raises(TypeError, match="needs a compiled kernel"):
        L.signature_of(object())
    t2, n2 = L.signature_of(Artifact(meta, ptx="// p"))       # no signature: from meta.params
    assert n2 == names and t2[0].rank == 2 and t2[0].dtype is None and t2[1] == S("i32")
    # meta-only signatures still pack (dtype unchecked)
    arr = L.pack_args(meta, t2, [fake((2, 2), "f32"), 3, 7], n2)
    assert read_params(meta, arr)["a"] == 7


def test_parse_type_round_trips():
    for s in ["tensor<?x128xf32>", "tensor<?xint4>", "tensor<4x?x?xbf16>", "i32", "f6e3m2", "i1"]:
        assert str(L.parse_type(s)) == s


# ================================================================================ DLPack
@pytest.mark.parametrize("npdt,tdt", [(np.float32, "f32"), (np.float16, "f16"), (np.int8, "i8"),
                                      (np.uint64, "u64"), (np.int32, "i32"), (np.float64, "f64")])
def test_dlpack_capsule_parse_numpy(npdt, tdt):
    base = (np.arange(60) % 7).astype(npdt).reshape(5, 12)
    a = base[1:, ::3]                                             # offset and strided
    info, owner = dev.parse_dlpack_capsule(a.__dlpack__())
    assert info.dtype == D(tdt)
    assert info.shape == (4, 4) and info.strides == (12, 3)
    assert info.ptr == a.__array_interface__["data"][0]
    assert (info.device_type, info.device_id) == (1, 0)
    owner.release()


def test_dlpack_capsule_versioned_and_consumption():
    a = np.ones((2, 3), np.float32)
    rc = sys.getrefcount(a)
    cap = a.__dlpack__(max_version=(1, 0))
    assert "dltensor_versioned" in repr(cap)
    assert sys.getrefcount(a) == rc + 1                           # the capsule holds the array
    info, owner = dev.parse_dlpack_capsule(cap)
    assert info.shape == (2, 3) and info.strides == (3, 1) and info.dtype == D("f32")
    assert "used_dltensor_versioned" in repr(cap)                 # renamed as the protocol requires
    with pytest.raises(ValueError, match="already consumed"):
        dev.parse_dlpack_capsule(cap)
    owner.release()                                               # the producer's deleter ran
    assert sys.getrefcount(a) == rc
    owner.release()                                               # idempotent
    del cap


def test_dlpack_legacy_capsule_deleter_via_gc():
    a = np.ones(4, np.float32)
    rc = sys.getrefcount(a)
    cap = a.__dlpack__()
    info, owner = dev.parse_dlpack_capsule(cap)
    assert "used_dltensor" in repr(cap)
    del cap, owner
    assert sys.getrefcount(a) == rc


def test_dlpack_bool_is_reported_not_mapped():
    info, owner = dev.parse_dlpack_capsule(np.zeros(5, bool).__dlpack__())
    assert info.dtype is None and "one byte per element" in info.dtype_error
    owner.release()


def test_dlpack_cpu_tensor_rejected_with_parameter_name():
    a = np.zeros((3, 4), np.float32)
    rc = sys.getrefcount(a)
    with pytest.raises(ValueError, match="parameter 'Weights'.*CPU"):
        dev.extract_tensor(FakeDLPack(a), "Weights", "f32", 2)
    with pytest.raises(ValueError, match="parameter 'Weights'.*CPU"):   # a raw capsule: device read from it
        dev.extract_tensor(a.__dlpack__(), "Weights", "f32", 2)
    import gc
    gc.collect()
    assert sys.getrefcount(a) == rc                               # nothing leaked


def test_dlpack_dtype_codes():
    assert dev.dlpack_dtype(4, 16) == D("bf16")
    assert dev.dlpack_dtype(2, 16) == D("f16")
    assert dev.dlpack_dtype(0, 4) == D("int4")
    assert dev.dlpack_dtype(1, 2) == D("uint2")
    assert dev.dlpack_dtype(10, 8) == D("f8e4m3fn")
    assert dev.dlpack_dtype(12, 8) == D("f8e5m2")
    assert dev.dlpack_dtype(17, 4) == D("f4e2m1")
    assert dev.dlpack_dtype(16, 6) == D("f6e3m2")
    for code, bits in [(5, 64), (8, 8), (2, 8)]:
        with pytest.raises(ValueError):
            dev.dlpack_dtype(code, bits)
    with pytest.raises(ValueError, match="lanes"):
        dev.dlpack_dtype(2, 32, 4)
    for name in ["bf16", "f16", "f32", "i8", "u64", "int4", "uint3", "f8e4m3fn", "f4e2m1", "i1"]:
        assert dev.dlpack_dtype(*dev.dtype_to_dlpack(D(name))) == D(name)


def _fake_torch(ptr, shape, stride, dtype, cuda=True, device=0):
    """An object that looks like a torch.Tensor to extract_tensor (torch is never imported)."""
    class _Dt:
        def __init__(self, s):
            self.s = s

        def __str__(self):
            return self.s

        def __hash__(self):
            return hash(self.s)

        def __eq__(self, o):
            return str(o) == self.s
    Tensor = type("Tensor", (), {"__module__": "torch"})
    t = Tensor()
    t.is_cuda, t.device, t.shape, t.dtype = cuda, "cuda:0" if cuda else "cpu", shape, _Dt(dtype)
    t.data_ptr = lambda: ptr
    t.stride = lambda: stride
    t.get_device = lambda: device if cuda else -1
    return t


def test_torch_tensors_are_read_directly():
    t = _fake_torch(0x7F0000060000, (4, 8), (16, 2), "torch.bfloat16")
    assert dev.extract_tensor(t, "A", "bf16", 2) == (0x7F0000060000, (4, 8), (16, 2), D("bf16"))
    with pytest.raises(TypeError, match="'A' expects a f16"):
        dev.extract_tensor(t, "A", "f16", 2)
    with pytest.raises(ValueError, match="'A'.*cpu"):
        dev.extract_tensor(_fake_torch(0x1000, (4,), (1,), "torch.float32", cuda=False), "A", "f32", 1)
    with pytest.raises(TypeError, match="'M'.*one byte per element"):
        dev.extract_tensor(_fake_torch(0x7F0000060000, (4,), (1,), "torch.bool"), "M", "i1", 1)
    with pytest.raises(TypeError, match="'M'.*no tilec equivalent"):
        dev.extract_tensor(_fake_torch(0x7F0000060000, (4,), (1,), "torch.complex64"), "M", None, 1)
    for tname, ours in [("torch.float8_e4m3fn", "f8e4m3fn"), ("torch.uint8", "u8"), ("torch.int64", "i64")]:
        assert dev.extract_tensor(_fake_torch(0x7F0000060000, (4,), (1,), tname), "X", None, 1).dtype == D(ours)
    f, meta = kernel_meta({"X": T("f32", 2)})
    v = read_params(meta, L.pack_args(meta, P(meta, f), [_fake_torch(0x7F0000070000, (3, 5), (10, 2), "torch.float32")]))
    assert (v["X"], v["X.shape1"], v["X.stride0"], v["X.stride1"]) == (0x7F0000070000, 5, 10, 2)


# ================================================================== DeviceArray (no memory touched)
def test_device_array_exports_dlpack_and_cai():
    a = fake((3, 4), "bf16", ptr=0x7F0000040000)
    n0 = len(dev._EXPORTS)
    cap = a.__dlpack__()
    info, owner = dev.parse_dlpack_capsule(cap)
    assert (info.ptr, info.shape, info.strides, info.dtype) == (0x7F0000040000, (3, 4), (4, 1), D("bf16"))
    assert (info.device_type, info.code, info.bits) == (2, 4, 16)
    owner.release()
    assert len(dev._EXPORTS) == n0
    cap = a.__dlpack__(max_version=(1, 0))                        # versioned; dropped unconsumed
    assert "dltensor_versioned" in repr(cap)
    del cap
    assert len(dev._EXPORTS) == n0
    assert a.__dlpack_device__() == (2, 0)
    cai = a.__cuda_array_interface__
    assert cai["typestr"] == "<V2" and cai["shape"] == (3, 4) and cai["strides"] is None and cai["version"] == 3
    s = fake((3, 4), "f32", strides=(8, 2))
    assert s.__cuda_array_interface__["strides"] == (32, 8) and s.__cuda_array_interface__["typestr"] == "<f4"
    packed = fake((10,), "int4")
    assert not hasattr(packed, "__cuda_array_interface__")
    assert packed.nbytes == 5
    info, owner = dev.parse_dlpack_capsule(packed.__dlpack__())
    assert info.dtype == D("int4") and info.shape == (10,)
    owner.release()
    with pytest.raises(ValueError, match="contiguous"):
        fake((4, 4), "int4", strides=(8, 1))


def test_extract_tensor_accepts_our_own_dlpack_export():
    a = fake((5, 6), "f8e4m3fn", ptr=0x7F0000050000)
    t = dev.extract_tensor(a.__dlpack__(), "W", "f8e4m3fn", 2)
    assert t == (0x7F0000050000, (5, 6), (6, 1), D("f8e4m3fn"))
    with pytest.raises(TypeError, match="'W' expects a f16"):
        dev.extract_tensor(a.__dlpack__(), "W", "f16", 2)
    keep = []
    dev.extract_tensor(a.__dlpack__(), "W", None, None, keep=keep)
    assert len(keep) == 1
    keep[0].release()


# ==================================================================================== cache
def built(ptx="// ptx", name="k", cubin=None):
    f, meta = kernel_meta({"X": T("f32"), "n": S("i32")}, name=name)
    return Artifact(meta, ptx=ptx, cubin=cubin, signature=signature_of_function(f))


def test_cache_miss_then_hit(tmp_path):
    c = C.KernelCache(tmp_path)
    calls = []

    def build():
        calls.append(1)
        return built(cubin=b"\x7fELF\x00\x01binary")
    e1 = c.get_or_build(("ir text", "sm_90a", {"a": 1}), build)
    e2 = c.get_or_build(("ir text", "sm_90a", {"a": 1}), build)
    assert len(calls) == 1 and e1.source == "built" and e2.source == "memory"
    assert c.stats.misses == 1 and c.stats.memory_hits == 1 and c.stats.hits == 1
    assert e1.obj is not None and e2.ptx == "// ptx"
    # a fresh process (new cache object) reads it from disk
    c2 = C.KernelCache(tmp_path)
    e3 = c2.get_or_build(("ir text", "sm_90a", {"a": 1}), build)
    assert len(calls) == 1 and e3.source == "disk" and c2.stats.disk_hits == 1
    assert e3.ptx == e1.ptx and e3.cubin == b"\x7fELF\x00\x01binary"
    assert e3.meta == e1.meta and e3.meta.params == e1.meta.params and isinstance(e3.meta.cluster, tuple)
    assert e3.signature == [["X", "tensor<?xf32>"], ["n", "i32"]]
    assert L.signature_of(e3) == ([T("f32"), S("i32")], ["X", "n"])    # a cache entry is launchable
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1 and files[0].name == e1.key + ".json" and files[0].parent.name == e1.key[:2]


def test_cache_key_changes():
    k = C.cache_key("ir", "sm_90a", {"a": 1, "b": 2})
    assert k == C.cache_key("ir", "sm_90a", {"b": 2, "a": 1})            # options order is irrelevant
    assert k != C.cache_key("ir ", "sm_90a", {"a": 1, "b": 2})
    assert k != C.cache_key("ir", "sm_80", {"a": 1, "b": 2})
    assert k != C.cache_key("ir", "sm_90a", {"a": 1, "b": 3})
    assert k != C.cache_key("ir", "sm_90a", {"a": 1, "b": 2}, version="other")
    assert len(k) == 64
    v = C.compiler_version()
    import llvmlite
    assert llvmlite.__version__ in v and "src-" in v


@pytest.mark.parametrize("damage", ["garbage", "truncate", "ptx_edit", "wrong_key", "empty", "bad_cubin"])
def test_corrupt_entry_is_rebuilt(tmp_path, damage):
    c = C.KernelCache(tmp_path)
    parts = ("ir", "sm_90a", {})
    e = c.get_or_build(parts, lambda: built(cubin=b"\x7fELFcubin"))
    path = c.path_of(e.key)
    text = path.read_text()
    if damage == "garbage":
        path.write_bytes(b"\x00\xff not json")
    elif damage == "truncate":
        path.write_text(text[: len(text) // 2])
    elif damage == "ptx_edit":                                   # valid JSON, wrong checksum
        path.write_text(text.replace("// ptx", "// PTX"))
    elif damage == "wrong_key":                                  # a valid entry under the wrong name
        doc = json.loads(text)
        doc["payload"]["key"] = "0" * 64
        body = C._canonical(doc["payload"])
        import hashlib
        path.write_text(json.dumps({"checksum": hashlib.sha256(body.encode()).hexdigest(), "payload": doc["payload"]}))
    elif damage == "empty":
        path.write_text("")
    elif damage == "bad_cubin":
        doc = json.loads(text)
        doc["payload"]["cubin"] = "!!!"
        path.write_text(json.dumps(doc))
    c2 = C.KernelCache(tmp_path)
    calls = []
    e2 = c2.get_or_build(parts, lambda: calls.append(1) or built(ptx="// rebuilt"))
    assert calls == [1] and e2.source == "built" and e2.ptx == "// rebuilt"
    assert c2.stats.corrupt == 1
    assert C.KernelCache(tmp_path).get(parts).ptx == "// rebuilt"   # the rebuilt entry replaced it


def test_missing_file_is_a_miss(tmp_path):
    c = C.KernelCache(tmp_path)
    e = c.get_or_build(("ir", "sm_80"), built)
    c.path_of(e.key).unlink()
    c2 = C.KernelCache(tmp_path)
    assert c2.get(("ir", "sm_80")) is None and c2.stats.corrupt == 0


def _worker(args):
    directory, i = args
    c = C.KernelCache(directory)
    e = c.get_or_build(("shared ir", "sm_90a", {"w": 1}), lambda: built(ptx="// same ptx " + "x" * 20000,
                                                                           cubin=b"\x7fELF" + bytes(range(256)) * 64))
    return e.key, e.ptx[:12], len(e.cubin), e.source


def test_concurrent_writers_leave_one_valid_entry(tmp_path):
    ctx = mp.get_context("fork")
    with ctx.Pool(6) as pool:
        res = pool.map(_worker, [(str(tmp_path), i) for i in range(12)])
    keys = {r[0] for r in res}
    assert len(keys) == 1 and all(r[1] == "// same ptx " and r[2] == 4 + 256 * 64 for r in res)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert len(files) == 1 and files[0].suffix == ".json"          # no temporary files left behind
    e = C.KernelCache(tmp_path).get(("shared ir", "sm_90a", {"w": 1}))
    assert e is not None and e.source == "disk" and len(e.cubin) == 4 + 256 * 64


def test_cache_dir_env_and_disable(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path / "via_env"))
    monkeypatch.delenv("TILEC_CACHE", raising=False)
    c = C.KernelCache()
    assert c.directory == tmp_path / "via_env"
    c.get_or_build(("ir", "sm_90a"), built)
    assert len(list((tmp_path / "via_env").rglob("*.json"))) == 1
    monkeypatch.setenv("TILEC_CACHE", "0")
    c = C.KernelCache(tmp_path / "off")
    c.get_or_build(("ir", "sm_90a"), built)
    assert not (tmp_path / "off").exists()
    assert c.get(("ir", "sm_90a")).source == "memory"
    monkeypatch.delenv("TILEC_CACHE_DIR")
    assert C.cache_dir() == C.Path.home() / ".cache" / "tilec"


def test_unwritable_cache_dir_degrades_to_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    c = C.KernelCache(blocker / "cache")
    with pytest.warns(RuntimeWarning, match="cannot write the kernel cache"):
        e = c.get_or_build(("ir", "sm_90a"), built)
    assert e.ptx == "// ptx" and c.stats.write_errors == 1
    assert c.get_or_build(("ir", "sm_90a"), built).source == "memory"


def test_cache_accepts_dicts_and_keys(tmp_path):
    c = C.KernelCache(tmp_path)
    f, meta = kernel_meta({"X": T("f32")})
    e = c.get_or_build({"ir": "i", "target": "sm_80", "options": {"x": 1}},
                       lambda: {"ptx": "// p", "meta": C.meta_to_json(meta), "extra": {"regs": 40}})
    assert e.meta == meta and e.extra["regs"] == 40
    assert c.get(e.key).ptx == "// p"
    assert C.KernelCache(tmp_path).get(e.key).extra["regs"] == 40
    with pytest.raises(ValueError):
        c.get("not-a-key")
    with pytest.raises(TypeError, match="Artifact"):
        c.get_or_build(("other", "sm_80"), lambda: object())


def test_launch_of_host_arrays_checks_dtype_before_copy():
    # the dtype check of host arrays happens on the host (no device memory involved)
    f, meta = kernel_meta({"X": T("f32")})
    with pytest.raises(TypeError, match="parameter 'X' expects a f32 tensor, got a NumPy float64"):
        L._host_to_device(np.zeros(4), T("f32"), "X")
    with pytest.raises(ValueError, match="parameter 'X' expects a rank-1"):
        L._host_to_device(np.zeros((2, 2), np.float32), T("f32"), "X")
    with pytest.raises(TypeError, match="parameter 'X' expects a f32 tensor"):
        L._host_to_device(asarray(np.zeros(4), "bf16"), T("f32"), "X")


def _vadd_ir():
    from tile.ir.builder import Builder
    from tile.ir.types import tile_type
    f = Function("vadd_cg", [T("f32"), T("f32"), T("f32")], ["X", "Y", "Z"])
    b = Builder(f.body)
    i32 = S("i32")
    off = b.value("mul", [b.value("block_id", [], i32, {"axis": 0}), b.value("constant", [], i32, {"value": 128})], i32)
    tt = tile_type((128,), "f32")
    x = b.value("load", [f.args[0], off], tt, {"shape": [128]})
    y = b.value("load", [f.args[1], off], tt, {"shape": [128]})
    b.create("store", [f.args[2], off, b.value("add", [x, y], tt)])
    return f


def test_codegen_kernel_packs_caches_and_assembles(tmp_path):
    try:
        from tile.compiler import compile as cg_compile
    except ImportError:
        pytest.skip("tile.codegen.compile does not exist yet")
    f = _vadd_ir()
    c = C.KernelCache(tmp_path)
    from tile.ir.core import Module
    key = (str(Module([f])), "sm_90a", {"kernel": "vadd_cg"})
    e = c.get_or_build(key, lambda: cg_compile(f, "sm_90a"))
    assert e.meta.params == flatten_params(f) and ".entry vadd_cg" in e.ptx
    e2 = C.KernelCache(tmp_path).get(key)
    assert e2.source == "disk" and e2.ptx == e.ptx and e2.meta == e.meta
    arr = L.pack_args(e2.meta, [a.type for a in f.args], [fake((1000,), "f32", ptr=0x7F0000080000 + 256 * i)
                                                        for i in range(3)], ["X", "Y", "Z"])
    v = read_params(e2.meta, arr)
    assert v["Y"] == 0x7F0000080100 and v["Z.shape0"] == 1000 and v["X.stride0"] == 1
    if cuda.nvjitlink_available():
        assert cuda.ptx_to_cubin(e2.ptx, "sm_90a", name="vadd_cg")[:4] == b"\x7fELF"
