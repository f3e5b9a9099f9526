"""The HIP launch path (runtime/hip.py, runtime/launch_hip.py, runtime/launch.pack_args) against a
fake hip-python module: the kernelParams array of a compiled gfx942 GEMM, copied into a kernarg
segment the way the HIP runtime does (each explicit argument of the code object's metadata, at its
offset and size), must be byte for byte the ir/artifact.py ABI; `kernel[grid](...)` on a machine
whose only GPU is AMD compiles for its gfx arch, launches through HIP (host arrays copied there and
back), accepts torch/CuPy tensors on ROCm (data_ptr, the CUDA array interface, DLPack kDLROCM) and
rejects bad arguments with the NVIDIA path's messages. No ROCm or AMD GPU is involved."""
import ctypes
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import tile
from tile import compiler
from tile.codegen.amdgpu import kernel_metadata
from tile.runtime import cuda as rcuda
from tile.runtime import device as rdev
from tile.runtime import hip as rhip
from tile.runtime.device import DeviceArray
from tile.runtime.launch import pack_args, signature_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gallery_amd import GEMM, compiled, needs_lld   # noqa: E402


class FakeHip:
    """Records what the driver layer hands to hipModuleLoadData / hipModuleLaunchKernel."""

    def __init__(self, md):
        self.md, self.loaded, self.kernarg, self.launch = md, None, None, None

    def hipModuleLoadData(self, data):
        self.loaded = bytes(data)
        return 0, "module"

    def hipModuleGetFunction(self, mod, name):
        return 0, ("fn", name)

    def hipModuleLaunchKernel(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        self.launch = (f, (gx, gy, gz), (bx, by, bz), shared, stream, extra)
        ptrs = (ctypes.c_void_p * len(self.explicit)).from_address(params)
        buf = bytearray(self.md["explicit_kernarg_size"])
        for p, a in zip(ptrs, self.explicit):          # what the runtime copies into the kernarg segment
            buf[a[".offset"]:a[".offset"] + a[".size"]] = ctypes.string_at(p, a[".size"])
        self.kernarg = bytes(buf)
        return (0,)

    @property
    def explicit(self):
        return [a for a in self.md[".args"] if not a[".value_kind"].startswith("hidden_")]


@needs_lld
def test_hip_launch_packs_the_code_objects_kernargs(monkeypatch):
    ck = compiled("gfx942", GEMM)
    md = kernel_metadata(ck.hsaco, ck.meta.name)
    fake = FakeHip(md)
    dev = rhip.Device(0, "fake MI300", "gfx942", "gfx942:sramecc+:xnack-", 304, 64, 1024, 65536, 1 << 30)
    monkeypatch.setattr(rhip._state, "hip", fake)
    monkeypatch.setattr(rhip._state, "ok", True)
    monkeypatch.setattr(rhip._state, "device", dev)
    fn = rhip.load_module(ck.hsaco, ck.meta.name).get_function(ck.meta.name)
    assert fake.loaded == ck.hsaco
    M, N, Kd = 256, 384, 512
    A = DeviceArray.from_pointer(0x7000_0000_1000, (M, Kd), "bf16")
    B = DeviceArray.from_pointer(0x7000_0010_0000, (Kd, N), "bf16")
    C = DeviceArray.from_pointer(0x7000_0020_0000, (M, N), "bf16")
    bias = DeviceArray.from_pointer(0x7000_0030_0000, (N,), "f32")
    types, names = signature_of(ck.artifact)
    params = pack_args(ck.meta, types, [A, B, C, bias, 0.5], names)
    fn.launch((M // 128, N // 128), (ck.meta.num_threads,), params, ck.meta.shared_bytes)
    want = struct.pack("<Q4iQ4iQ4iQ2if", A.ptr, M, Kd, Kd, 1, B.ptr, Kd, N, N, 1, C.ptr, M, N, N, 1,
                       bias.ptr, N, 1, 0.5)                     # 92 bytes: the code object's kernarg size
    assert len(want) == md["explicit_kernarg_size"] == 92
    assert fake.kernarg == want
    assert fake.launch[1] == (2, 3, 1) and fake.launch[2] == (256, 1, 1) and fake.launch[3] == ck.meta.shared_bytes


# ------------------------------------------------------------------ kernel[grid] on a (fake) ROCm machine


@tile.kernel
def _axpy(X: tile.Tensor[tile.f32, 1], Y: tile.Tensor[tile.f32, 1], a: float, BLOCK: tile.constexpr = 256):
    i = tile.block_id(0) * BLOCK
    tile.store(Y, (i,), a * tile.load(X, (i,), (BLOCK,)) + tile.load(Y, (i,), (BLOCK,)))


class FakeHipRuntime(FakeHip):
    """A whole (fake) hip-python `hip` module: one gfx942 device, device memory kept in a dict, and a
    "kernel" that fills the buffer at its second pointer argument with 7.0 (so the copy back to the
    host is visible)."""

    class hipMemcpyKind:
        hipMemcpyHostToDevice, hipMemcpyDeviceToHost = 1, 2

    def __init__(self):
        super().__init__(None)
        self.mem, self.next, self.calls = {}, 0x7F00_0000_0000, []

    def hipInit(self, flags):
        return (0,)

    def hipGetDeviceCount(self):
        return 0, 1

    def hipSetDevice(self, i):
        return (0,)

    def hipGetDeviceProperties(self, i):
        return 0, types.SimpleNamespace(gcnArchName=b"gfx942:sramecc+:xnack-", name=b"AMD Instinct MI300X (fake)",
                                        multiProcessorCount=304, warpSize=64, maxThreadsPerBlock=1024,
                                        sharedMemPerBlock=65536, totalGlobalMem=192 << 30)

    def hipMalloc(self, n):
        p, self.next = self.next, self.next + ((n + 255) // 256 + 1) * 256
        self.mem[p] = bytearray(n)
        self.calls.append(("malloc", n))
        return 0, p

    def hipFree(self, p):
        return (0,)

    def _buf(self, p, n):
        base = max(b for b in self.mem if b <= p)
        assert p + n <= base + len(self.mem[base]), "out of the allocation"
        return self.mem[base], p - base

    def hipMemcpy(self, dst, src, n, kind):
        if kind == self.hipMemcpyKind.hipMemcpyHostToDevice:
            buf, o = self._buf(int(dst), n)
            buf[o:o + n] = np.ascontiguousarray(src).view(np.uint8).reshape(-1)[:n].tobytes()
        else:
            buf, o = self._buf(int(src), n)
            dst.view(np.uint8).reshape(-1)[:n] = np.frombuffer(bytes(buf[o:o + n]), np.uint8)
        self.calls.append(("memcpy", kind, n))
        return (0,)

    def hipDeviceSynchronize(self):
        self.calls.append(("sync",))
        return (0,)

    def hipModuleLaunchKernel(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        res = super().hipModuleLaunchKernel(f, gx, gy, gz, bx, by, bz, shared, stream, params, extra)
        y, n = struct.unpack_from("<Qi", self.kernarg, 16)             # Y: after X (ptr, size, stride)
        if y in self.mem:
            self.mem[y][:4 * n] = np.full(n, 7.0, np.float32).tobytes()
        return res


@pytest.fixture
def rocm(monkeypatch):
    """A machine with an AMD GPU and no NVIDIA one: the fake hip-python module is what
    `from hip import hip` imports; the launch target comes from the GPU."""
    fake = FakeHipRuntime()
    monkeypatch.setitem(sys.modules, "hip", types.SimpleNamespace(hip=fake))
    monkeypatch.setattr(rhip, "_state", rhip._State())
    monkeypatch.setattr(rcuda, "available", lambda: False)
    monkeypatch.setattr(compiler, "_GPU_ARCH", [])
    monkeypatch.delenv("TILEC_TARGET", raising=False)
    compiler.reset_target()
    yield fake
    compiler.reset_target()


def _expect_metadata(fake, ck):
    fake.md = kernel_metadata(ck.artifact.hsaco, ck.meta.name)
    return fake


@needs_lld
def test_kernel_launch_on_rocm_selects_hip_and_copies_host_arrays(rocm):
    assert tile.current_target() == "gfx942"
    ck = _axpy.compile(tile.Tensor[tile.f32, 1], tile.Tensor[tile.f32, 1], float)
    _expect_metadata(rocm, ck)
    n = 1000
    x, y = np.arange(n, dtype=np.float32), np.ones(n, np.float32)
    _axpy[(tile.cdiv(n, 256),)](x, y, 2.0)
    assert rocm.loaded == ck.artifact.hsaco
    assert rocm.launch[1:4] == ((4, 1, 1), (256, 1, 1), ck.meta.shared_bytes)
    ptrs = sorted(rocm.mem)
    assert rocm.kernarg == struct.pack("<Q2iQ2if", ptrs[0], n, 1, ptrs[1], n, 1, 2.0)
    assert len(rocm.kernarg) == rocm.md["explicit_kernarg_size"]
    assert ("sync",) in rocm.calls and (y == 7.0).all() and (x == np.arange(n)).all()


class _TorchOnRocm:
    """What a torch tensor on an AMD GPU looks like to tilec (is_cuda is true on ROCm builds)."""
    __dlpack__ = __cuda_array_interface__ = None      # (present, as on torch tensors; tilec reads data_ptr)

    def __init__(self, ptr, shape, stride, dtype="torch.float32", device="cuda:0"):
        self._p, self.shape, self._s, self.dtype = ptr, tuple(shape), tuple(stride), dtype
        self.device, self.is_cuda, self.ndim = device, device.startswith("cuda"), len(self.shape)

    def data_ptr(self):
        return self._p

    def stride(self):
        return self._s

    def get_device(self):
        return 0


_TorchOnRocm.__module__, _TorchOnRocm.__name__ = "torch", "Tensor"


class _RocmDLPack:
    """A DLPack producer on a ROCm device (kDLROCM = 10), as CuPy-ROCm and torch-ROCm export."""

    def __init__(self, d):
        self.d, self.shape, self.ndim, self.dtype = d, d.shape, d.ndim, np.dtype(np.float32)

    def __dlpack_device__(self):
        return (rdev.kDLROCM, 0)

    def __dlpack__(self, **kw):
        cap = self.d.__dlpack__()
        addr = rdev._capsule_get_pointer(cap, rdev._NAME_LEGACY)
        rdev.DLManagedTensor.from_address(addr).dl_tensor.device.device_type = rdev.kDLROCM
        return cap


@needs_lld
def test_rocm_tensors_are_accepted_with_the_nvidia_checks(rocm):
    ck = _axpy.compile(tile.Tensor[tile.f32, 1], tile.Tensor[tile.f32, 1], float)
    _expect_metadata(rocm, ck)
    X = _TorchOnRocm(0x7000_0000_0100, (300,), (2,))
    Y = _TorchOnRocm(0x7000_0100_0000, (300,), (1,))
    _axpy[(2,)](X, Y, -1.5)
    assert rocm.kernarg == struct.pack("<Q2iQ2if", 0x7000_0000_0100, 300, 2, 0x7000_0100_0000, 300, 1, -1.5)
    # DLPack with device type ROCm (what torch.to_dlpack / CuPy give on AMD GPUs): read like CUDA's
    types_, names = signature_of(ck.artifact)
    Z = _RocmDLPack(DeviceArray.from_pointer(0x7000_0300_0000, (64,), "f32", strides=(3,)))
    params = pack_args(ck.meta, types_, [Z, Y, 0.5], names)
    got = (ctypes.c_uint64.from_address(params[0]).value, ctypes.c_int32.from_address(params[1]).value,
           ctypes.c_int32.from_address(params[2]).value)
    assert got == (0x7000_0300_0000, 64, 3)
    cai = types.SimpleNamespace(__cuda_array_interface__={"shape": (300,), "typestr": "<f4", "version": 3,
                                                          "data": (0x7000_0200_0000, False), "strides": None})
    _axpy[(2,)](cai, Y, 1.0)                       # CuPy on ROCm: the CUDA array interface
    assert struct.unpack_from("<Q", rocm.kernarg, 0)[0] == 0x7000_0200_0000
    # the same argument errors as on NVIDIA, before anything is launched
    rocm.launch = None
    with pytest.raises(TypeError, match="argument 'X' expects a tensor of f32 of rank 1"):
        _axpy[(2,)](_TorchOnRocm(0x7000_0000_0100, (300,), (1,), "torch.float16"), Y, 1.0)
    with pytest.raises(ValueError, match="parameter 'X': base address 0x700000000102 is not 16-byte aligned"):
        _axpy[(2,)](_TorchOnRocm(0x7000_0000_0102, (300,), (1,)), Y, 1.0)
    with pytest.raises(ValueError, match="parameter 'Y': the tensor is on cpu; a kernel needs GPU memory"):
        _axpy[(2,)](X, _TorchOnRocm(0x1000, (300,), (1,), device="cpu"), 1.0)
    with pytest.raises(ValueError, match=r"parameter 'a' = 1e\+300 overflows f32"):
        _axpy[(2,)](X, Y, 1e300)
    assert rocm.launch is None
