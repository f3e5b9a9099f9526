"""The AMD driver layer (hip-python), as far as it goes without an AMD GPU.

UNTESTED ON HARDWARE: no AMD GPU or ROCm was available when this was written. Only the parts that
run without ROCm are tested (import, `available()` is False, `init()` raises NoGPUError with one
line). The calls follow codegen-notes §6, whose names and signatures were checked against
hip-python 10.0.0.0.1.2 at import time: hipInit, hipGetDeviceCount, hipGetDeviceProperties
(gcnArchName), hipModuleLoadData (an ET_DYN code object from `ld.lld -shared`),
hipModuleGetFunction, hipModuleLaunchKernel(f, grid xyz, block xyz, shared, stream, kernelParams,
extra) with kernelParams a void*[] of argument addresses exactly as in CUDA (so
`runtime.launch.pack_args` serves both), hipMalloc / hipMemcpy / hipFree, hipDeviceSynchronize.

    from tile.runtime import hip
    if hip.available():
        mod = hip.load_module(hsaco_bytes)
        fn = mod.get_function("kernel")
        fn.launch(grid, (256,), params, shared_bytes)

Differences from CUDA that callers must respect: wavefronts are 64 lanes on gfx9 (CDNA); LDS is
64 KB per workgroup (160 KB on gfx950) and needs no opt-in, so `shared_bytes` is only checked; there
are no clusters.
"""
from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

from ..ir.errors import TileError
from .cuda import NoGPUError, normalize_dims

__all__ = ["NoGPUError", "HipError", "init", "available", "device", "Device", "load_module", "Module",
           "Function", "alloc", "memcpy_htod", "memcpy_dtoh", "memcpy_dtod", "memset_d8", "synchronize", "Event"]


class HipError(TileError):
    """A HIP call failed: the call, the hipError_t name and the kernel."""

    def __init__(self, call: str, err, kernel: str | None = None):
        self.call, self.kernel = call, kernel
        self.result_name = getattr(err, "name", str(err))
        where = f" for kernel '{kernel}'" if kernel else ""
        desc = ""
        try:
            s = _state.hip.hipGetErrorString(err)
            s = s[-1] if isinstance(s, tuple) else s
            desc = f" ({s.decode() if isinstance(s, bytes) else s})"
        except Exception:                        # noqa: BLE001
            pass
        super().__init__(f"{call} failed{where}: {self.result_name}{desc}")


class _State:
    def __init__(self):
        self.lock = threading.RLock()
        self.hip = None
        self.ok = False
        self.error = None
        self.device = None


_state = _State()


@dataclass(frozen=True)
class Device:
    ordinal: int
    name: str
    arch: str                 # gfx90a, gfx942, gfx950 (features such as :sramecc+ stripped)
    full_arch: str            # as the runtime reports it, e.g. "gfx942:sramecc+:xnack-"
    cu_count: int
    warp_size: int
    max_threads_per_block: int
    max_shared_per_block: int
    total_memory: int


def _one_line(s) -> str:
    return " ".join(str(s).split())


def _fail(reason: str):
    raise NoGPUError("no AMD GPU/ROCm runtime found: " + _one_line(reason)) from None


def _ck(res, call: str, kernel: str | None = None):
    """Unwrap hip-python's `(hipError_t, *values)`; raise HipError on failure."""
    if isinstance(res, tuple):
        err, vals = res[0], res[1:]
    else:
        err, vals = res, ()
    if int(err) != 0:
        raise HipError(call, err, kernel)
    if not vals:
        return None
    return vals[0] if len(vals) == 1 else vals


def init(ordinal: int | None = None) -> Device:
    """Initialise HIP once; raise NoGPUError (one line) if hip-python, libamdhip64 or a device is missing."""
    st = _state
    if st.ok:
        return st.device
    with st.lock:
        if st.ok:
            return st.device
        if st.error is not None:
            raise NoGPUError(st.error)
        try:
            st.device = _init_locked(ordinal)
        except NoGPUError as e:
            st.error = str(e)
            raise NoGPUError(st.error) from None
        st.ok = True
        return st.device


def _init_locked(ordinal):
    try:
        from hip import hip
    except Exception as e:                       # noqa: BLE001
        _fail(f"hip-python is not importable ({type(e).__name__}: {e}); pip install hip-python")
    try:
        res = hip.hipInit(0)
    except Exception as e:                       # no ROCm: "failed to dlopen libamdhip64.so"
        _fail(f"libamdhip64.so could not be loaded ({e})")
    _state.hip = hip
    err = res[0] if isinstance(res, tuple) else res
    if int(err) != 0:
        _fail(f"hipInit failed with {getattr(err, 'name', err)}")
    try:
        count = _ck(hip.hipGetDeviceCount(), "hipGetDeviceCount")
    except HipError as e:
        _fail(str(e))
    if not count:
        _fail("the runtime reports no AMD GPU")
    if ordinal is None:
        ordinal = int(os.environ.get("TILEC_DEVICE", "0") or 0)
    if not 0 <= ordinal < count:
        _fail(f"device ordinal {ordinal} requested but only {count} device(s) are visible")
    _ck(hip.hipSetDevice(ordinal), "hipSetDevice")
    props = _ck(hip.hipGetDeviceProperties(ordinal), "hipGetDeviceProperties")

    def field(name, default=None):
        v = getattr(props, name, default)
        return v.decode(errors="replace").rstrip("\0") if isinstance(v, bytes) else v

    full = field("gcnArchName", "") or ""
    return Device(ordinal=ordinal, name=field("name", "AMD GPU"), arch=full.split(":")[0], full_arch=full,
                  cu_count=int(field("multiProcessorCount", 0) or 0), warp_size=int(field("warpSize", 64) or 64),
                  max_threads_per_block=int(field("maxThreadsPerBlock", 1024) or 1024),
                  max_shared_per_block=int(field("sharedMemPerBlock", 65536) or 65536),
                  total_memory=int(field("totalGlobalMem", 0) or 0))


def available() -> bool:
    """Whether an AMD GPU and the HIP runtime can be used. Never raises."""
    try:
        init()
        return True
    except Exception:                            # noqa: BLE001
        return False


def device() -> Device:
    return init()


def synchronize() -> None:
    init()
    _ck(_state.hip.hipDeviceSynchronize(), "hipDeviceSynchronize")


# ---------------------------------------------------------------------------------- memory
class Allocation:
    __slots__ = ("ptr", "nbytes", "_h")

    def __init__(self, nbytes: int):
        init()
        self.nbytes = int(nbytes)
        self._h = _ck(_state.hip.hipMalloc(max(self.nbytes, 1)), "hipMalloc")
        self.ptr = int(self._h)

    def free(self):
        if getattr(self, "_h", None) is not None and _state.ok:
            h, self._h, self.ptr = self._h, None, 0
            try:
                _state.hip.hipFree(h)
            except Exception:                    # noqa: BLE001
                pass

    def __del__(self):
        self.free()


def alloc(nbytes: int) -> Allocation:
    return Allocation(nbytes)


def memcpy_htod(dst, src, nbytes: int) -> None:
    """dst: an Allocation or device address; src: a NumPy array / buffer (hip-python takes those)."""
    init()
    hip = _state.hip
    d = dst._h if isinstance(dst, Allocation) else dst
    _ck(hip.hipMemcpy(d, src, int(nbytes), hip.hipMemcpyKind.hipMemcpyHostToDevice), "hipMemcpy(HtoD)")


def memcpy_dtoh(dst, src, nbytes: int) -> None:
    init()
    hip = _state.hip
    s = src._h if isinstance(src, Allocation) else src
    _ck(hip.hipMemcpy(dst, s, int(nbytes), hip.hipMemcpyKind.hipMemcpyDeviceToHost), "hipMemcpy(DtoH)")


def _stream(stream):
    return 0 if stream is None else (stream if isinstance(stream, int) else getattr(stream, "handle", stream))


def memcpy_dtod(dst, src, nbytes: int, stream=None) -> None:
    """Device-to-device copy, ordered on `stream` (asynchronous)."""
    if nbytes <= 0:
        return
    init()
    d = dst._h if isinstance(dst, Allocation) else dst
    s = src._h if isinstance(src, Allocation) else src
    _ck(_state.hip.hipMemcpyDtoDAsync(d, s, int(nbytes), _stream(stream)), "hipMemcpyDtoDAsync")


def memset_d8(dst, value: int, nbytes: int, stream=None) -> None:
    """Set `nbytes` bytes at `dst` to `value`, ordered on `stream` (asynchronous)."""
    if nbytes <= 0:
        return
    init()
    d = dst._h if isinstance(dst, Allocation) else dst
    _ck(_state.hip.hipMemsetD8Async(d, int(value) & 0xFF, int(nbytes), _stream(stream)), "hipMemsetD8Async")


class Event:
    """A HIP event for timing, as runtime.cuda.Event: `e0.record(); ...; e1.record(); e1.synchronize();
    e0.elapsed_ms(e1)`."""

    def __init__(self, timing: bool = True):
        init()
        self._ev = _ck(_state.hip.hipEventCreateWithFlags(0 if timing else 2), "hipEventCreateWithFlags")

    def record(self, stream=None) -> "Event":
        _ck(_state.hip.hipEventRecord(self._ev, _stream(stream)), "hipEventRecord")
        return self

    def synchronize(self) -> None:
        _ck(_state.hip.hipEventSynchronize(self._ev), "hipEventSynchronize")

    def elapsed_ms(self, end: "Event") -> float:
        return float(_ck(_state.hip.hipEventElapsedTime(self._ev, end._ev), "hipEventElapsedTime"))

    def __del__(self):
        if _state.ok and getattr(self, "_ev", None) is not None:
            try:
                _state.hip.hipEventDestroy(self._ev)
            except Exception:                    # noqa: BLE001
                pass


# ------------------------------------------------------------------------------ modules
class Function:
    def __init__(self, module: "Module", name: str, handle):
        self.module, self.name, self.handle = module, name, handle

    def launch(self, grid, block, args, shared_bytes: int = 0, stream=None, cluster=(1, 1, 1)) -> None:
        """hipModuleLaunchKernel with kernelParams = the void*[] of `pack_args` (its address)."""
        init()
        g, b = normalize_dims(grid, "grid"), normalize_dims(block, "block")
        if tuple(normalize_dims(cluster, "cluster")) != (1, 1, 1):
            raise TileError(f"kernel '{self.name}': AMD GPUs have no thread-block clusters")
        if 0 in g:
            return
        dev = _state.device
        if shared_bytes > dev.max_shared_per_block:
            raise TileError(f"kernel '{self.name}' needs {shared_bytes} bytes of LDS; {dev.name} ({dev.arch}) "
                            f"has {dev.max_shared_per_block} per workgroup")
        if args is None:
            params = None
        elif isinstance(args, int):
            params = args
        else:
            params = ctypes.addressof(args)      # void*[]: hip-python's Pointer takes an int address
        _ck(_state.hip.hipModuleLaunchKernel(self.handle, g[0], g[1], g[2], b[0], b[1], b[2], int(shared_bytes),
                                             _stream(stream), params, None), "hipModuleLaunchKernel", self.name)


class Module:
    def __init__(self, handle, name=None):
        self.handle, self.name = handle, name
        self._functions: dict = {}

    def get_function(self, name: str) -> Function:
        f = self._functions.get(name)
        if f is None:
            h = _ck(_state.hip.hipModuleGetFunction(self.handle, name.encode()), "hipModuleGetFunction", name)
            f = self._functions[name] = Function(self, name, h)
        return f

    def unload(self):
        if self.handle is not None and _state.ok:
            h, self.handle = self.handle, None
            try:
                _state.hip.hipModuleUnload(h)
            except Exception:                    # noqa: BLE001
                pass


def load_module(code_object: bytes, name: str | None = None) -> Module:
    """Load an AMDGPU code object (.hsaco: an ELF shared object linked by ld.lld >= 19)."""
    init()
    data = bytes(code_object)
    if data[:4] != b"\x7fELF":
        raise TileError("hipModuleLoadData needs an ELF code object (.hsaco), not text")
    return Module(_ck(_state.hip.hipModuleLoadData(data), "hipModuleLoadData", name), name)
