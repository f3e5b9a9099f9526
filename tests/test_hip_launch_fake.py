"""The HIP launch path (runtime/hip.py + runtime/launch.pack_args) against a fake hip-python module:
the kernelParams array of a compiled gfx942 GEMM, copied into a kernarg segment the way the HIP
runtime does (each explicit argument of the code object's metadata, at its offset and size), must
be byte for byte the ir/artifact.py ABI. No ROCm or AMD GPU is involved."""
import ctypes
import struct
import sys
from pathlib import Path

import pytest

from tile.codegen.amdgpu import kernel_metadata
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
