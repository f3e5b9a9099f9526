"""Launching a compiled AMD kernel (an Artifact holding an `.hsaco`) through the HIP driver.

`runtime.launch.launch` comes here when `driver_for(target)` is runtime/hip.py. The arguments go
through the same packing plan as on NVIDIA (`launch._plan_for`: the same checks of dtype, rank,
alignment and scalar ranges, the same messages, the same kernelParams array of void*), which
`hipModuleLaunchKernel` copies into the kernarg segment exactly as cuLaunchKernel does; the HIP
runtime adds the code object v5 hidden arguments (block counts, ...) itself.

Tensors may be DeviceArray views of HIP memory, torch tensors on ROCm (`is_cuda` is true there; read
through data_ptr/shape/stride), or objects with `__cuda_array_interface__` (CuPy on ROCm) or DLPack
with device type kDLROCM. Host arrays (NumPy, tile.Array) are copied to HIP memory and back after
the kernel, as on NVIDIA. Streams: an int handle or anything `runtime.cuda.stream_handle` reads
(torch.cuda.Stream on ROCm has `.cuda_stream`, a hipStream_t).

UNTESTED ON HARDWARE: checked against a fake hip-python module (tests/test_hip_launch_fake.py).
"""
from __future__ import annotations

import threading

import numpy as np

from ..ir.errors import TileError
from ..ir.types import ScalarType
from .arrays import Array, asarray
from .cuda import stream_handle
from .device import DeviceArray, _storage_nbytes

__all__ = ["launch_hip", "load_function_hip"]

_FUNCS: dict = {}
_LOCK = threading.Lock()


def load_function_hip(hip, compiled):
    """The loaded kernel of `compiled` on the current HIP device (cached per device and code object)."""
    from .launch import artifact_of
    dev = hip.init()
    art = artifact_of(compiled)
    if art.hsaco is None:
        raise TileError(f"kernel '{art.meta.name}' has no AMD code object (.hsaco); it was compiled for "
                        f"{art.meta.target}")
    key = (dev.ordinal, art.hsaco)
    f = _FUNCS.get(key)
    if f is None:
        with _LOCK:
            f = _FUNCS.get(key)
            if f is None:
                f = _FUNCS[key] = hip.load_module(art.hsaco, art.meta.name).get_function(art.meta.name)
    return f


def _to_hip(hip, a) -> DeviceArray:
    """A host array (already checked against its parameter) copied into fresh HIP memory."""
    arr = a if isinstance(a, Array) else asarray(a)
    shape, dt = tuple(arr.shape), arr.dtype
    nbytes = _storage_nbytes(shape, dt)
    mem = hip.alloc(nbytes)
    if nbytes:
        hip.memcpy_htod(mem, np.ascontiguousarray(arr.data), nbytes)
    return DeviceArray.from_pointer(mem.ptr, shape, dt, owner=mem)


def _from_hip(hip, host, d: DeviceArray) -> None:
    """Copy the device contents back into the host object (as launch._write_back does on NVIDIA)."""
    if isinstance(host, np.ndarray) and not host.flags.writeable:
        return
    dt = d.dtype
    if dt.bits < 8:
        buf = np.empty(d.nbytes, np.uint8)
    else:
        from ..ir import numerics
        from .arrays import native_numpy_dtype
        buf = np.empty(d.shape, native_numpy_dtype(dt) or numerics.code_dtype(dt))
    if d.nbytes:
        hip.memcpy_dtoh(buf, d.ptr, d.nbytes)
    back = Array(buf, dt, d.shape)
    if isinstance(host, Array):
        host._data = back.data
    elif host.dtype.itemsize * 8 == dt.bits:
        host[...] = back.data.reshape(host.shape).view(host.dtype)
    else:
        host[...] = back.numpy().astype(host.dtype)


def launch_hip(hip, compiled, grid, args, stream=None, *, param_types=None, names=None) -> None:
    """`runtime.launch.launch` for an AMD kernel, `hip` being the driver module (runtime/hip.py)."""
    from .launch import _plan_for, _sources, artifact_of, check_host_array, signature_of
    hip.init()                                   # NoGPUError (one line) without ROCm or a device
    art = artifact_of(compiled)
    meta = art.meta
    if param_types is not None:
        types, names = tuple(param_types), tuple(names if names is not None else _sources(meta))
    else:
        types, sig_names = signature_of(art)
        types, names = tuple(types), tuple(names or sig_names)
    fn = load_function_hip(hip, art)
    if callable(grid):
        grid = grid(meta)
    if len(args) != len(types):
        raise TypeError(f"kernel '{meta.name}' takes {len(types)} arguments ({', '.join(names)}), got {len(args)}")
    copies, seen, args = [], {}, list(args)
    for i, t in enumerate(types):
        a = args[i]
        if not isinstance(t, ScalarType) and isinstance(a, (np.ndarray, Array)):
            d = seen.get(id(a))
            if d is None:
                check_host_array(a, t, names[i])
                d = seen[id(a)] = _to_hip(hip, a)
                copies.append((a, d))
            args[i] = d
    params = _plan_for(meta, types, names).pack(args, stream)
    fn.launch(grid, (int(meta.num_threads), 1, 1), params, int(meta.shared_bytes or 0), stream_handle(stream))
    if copies:
        hip.synchronize()
        for host, d in copies:
            _from_hip(hip, host, d)
