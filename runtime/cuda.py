"""The CUDA driver layer: device, primary context, streams, memory, modules, functions, launches.

Everything goes through cuda-python's driver bindings (`cuda.bindings.driver`), imported lazily:
`import tile` never touches the driver. The first call that needs the GPU runs `init()`, which
retains the primary context of the device (ordinal `$TILEC_DEVICE`, default 0) and makes it current
in the calling thread (and in every other thread that later calls in).

Without a driver or a device `init()` raises `NoGPUError` with a one-line message (never the
driver's own traceback); `available()` answers the same question as a bool and never raises.

    from tile.runtime import cuda
    if cuda.available():
        dev = cuda.device()                 # Device(name='NVIDIA H100 ...', arch='sm_90a', ...)
        mod = cuda.load_module(ptx)         # PTX (str/bytes) or a cubin (bytes, ELF)
        fn = mod.get_function("vadd")
        fn.launch((grid,), (128,), params, shared_bytes=0, stream=None)
        cuda.synchronize()

PTX is turned into a cubin in process by nvJitLink (`cuda.bindings.nvjitlink`, pip
`nvidia-nvjitlink`) for the device's architecture; if nvJitLink is missing or fails, the driver's
JIT compiles the PTX instead (`TILEC_PTX_JIT=driver` forces that path, `=nvjitlink` forbids the
fallback). `ptx_to_cubin` needs no GPU.

Launch rules (`Function.launch`):
* `args` is the packed parameter array of `runtime.launch.pack_args`: a ctypes array of void*, each
  the address of one argument value (or the integer address of such an array);
* more than 48 KB of shared memory (dynamic + static) opts in through
  CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, checked against the device's opt-in limit;
* a cluster other than (1,1,1) launches through cuLaunchKernelEx with the cluster-dimension
  attribute (grid dims must be multiples of the cluster dims; more than 8 CTAs per cluster sets
  the non-portable-cluster attribute);
* an empty grid (a zero dim) launches nothing.
Every driver failure is a `CudaError` naming the call, the CUresult name and its description, and
the kernel.
"""
from __future__ import annotations

import ctypes
import os
import re
import struct
import threading
from dataclasses import dataclass

from ..ir.errors import TileError

__all__ = ["NoGPUError", "CudaError", "PTXCompileError", "init", "available", "device", "Device",
           "Stream", "default_stream", "stream_handle", "synchronize", "Event",
           "Allocation", "alloc", "memcpy_htod", "memcpy_dtoh", "memcpy_dtod", "memset_d8",
           "load_module", "Module", "Function", "ptx_to_cubin", "ptx_target", "arch_from_cc",
           "check_target", "normalize_dims", "current_context", "ensure_context", "nvjitlink_available",
           "encode_tensor_map"]

SMEM_DEFAULT_LIMIT = 48 * 1024        # bytes of shared memory a block may use without opting in


# ----------------------------------------------------------------------------------------- errors
class NoGPUError(TileError):
    """No usable GPU: the driver library is missing, or there is no device. The message is one line."""


class CudaError(TileError):
    """A CUDA driver call failed. Attributes: `call`, `code` (int), `result_name`, `kernel`."""

    def __init__(self, call: str, code: int, result_name: str, description: str, kernel: str | None = None,
                 detail: str | None = None):
        self.call, self.code, self.result_name, self.kernel = call, code, result_name, kernel
        self.description = description
        where = f" for kernel '{kernel}'" if kernel else ""
        msg = f"{call} failed{where}: {result_name} ({description})"
        if result_name in STICKY_ERRORS:
            msg += (f" -- {'a kernel' if not kernel else 'the kernel'} faulted on the device; the CUDA context is "
                    f"unusable after this error and every later CUDA call in this process fails: restart the "
                    f"process (compute-sanitizer --tool memcheck locates the faulting access)")
        if detail:
            msg += f"\n{detail}"
        super().__init__(msg)

    @property
    def sticky(self) -> bool:
        """A device fault that poisons the context (every later call fails)."""
        return self.result_name in STICKY_ERRORS


# Errors after which the context is unusable (a kernel faulted): the process must be restarted.
STICKY_ERRORS = frozenset({"CUDA_ERROR_ILLEGAL_ADDRESS", "CUDA_ERROR_LAUNCH_FAILED", "CUDA_ERROR_MISALIGNED_ADDRESS",
                           "CUDA_ERROR_ILLEGAL_INSTRUCTION", "CUDA_ERROR_INVALID_ADDRESS_SPACE", "CUDA_ERROR_INVALID_PC",
                           "CUDA_ERROR_HARDWARE_STACK_ERROR", "CUDA_ERROR_ASSERT", "CUDA_ERROR_LAUNCH_TIMEOUT"})


class PTXCompileError(TileError):
    """nvJitLink (or the driver JIT) rejected the PTX; the message carries the compiler's log."""


# Descriptions used when the driver cannot be asked (cuGetErrorString needs libcuda).
_ERROR_TEXT = {
    "CUDA_ERROR_INVALID_VALUE": "invalid argument",
    "CUDA_ERROR_OUT_OF_MEMORY": "out of memory",
    "CUDA_ERROR_NOT_INITIALIZED": "initialization error",
    "CUDA_ERROR_DEINITIALIZED": "driver shutting down",
    "CUDA_ERROR_NO_DEVICE": "no CUDA-capable device is detected",
    "CUDA_ERROR_INVALID_DEVICE": "invalid device ordinal",
    "CUDA_ERROR_INVALID_IMAGE": "device kernel image is invalid",
    "CUDA_ERROR_INVALID_CONTEXT": "invalid device context",
    "CUDA_ERROR_NO_BINARY_FOR_GPU": "no kernel image is available for execution on the device",
    "CUDA_ERROR_INVALID_PTX": "a PTX JIT compilation failed",
    "CUDA_ERROR_UNSUPPORTED_PTX_VERSION": "the provided PTX was compiled with an unsupported toolchain",
    "CUDA_ERROR_NOT_FOUND": "named symbol not found",
    "CUDA_ERROR_ILLEGAL_ADDRESS": "an illegal memory access was encountered",
    "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES": "too many resources requested for launch",
    "CUDA_ERROR_LAUNCH_TIMEOUT": "the launch timed out and was terminated",
    "CUDA_ERROR_LAUNCH_FAILED": "unspecified launch failure",
    "CUDA_ERROR_MISALIGNED_ADDRESS": "misaligned address",
    "CUDA_ERROR_ILLEGAL_INSTRUCTION": "an illegal instruction was encountered",
    "CUDA_ERROR_INVALID_HANDLE": "invalid resource handle",
    "CUDA_ERROR_CLUSTER_TOO_LARGE": "cluster size exceeds the limit",
    "CUDA_ERROR_INSUFFICIENT_DRIVER": "CUDA driver version is insufficient for CUDA runtime version",
    "CUDA_ERROR_UNKNOWN": "unknown error",
}


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _describe(err) -> tuple[str, str]:
    """(CUresult name, description) for a CUresult value."""
    name = getattr(err, "name", None) or f"CUresult {int(err)}"
    desc = None
    try:
        if _state.cu is not None and _state.ok:
            e2, s = _state.cu.cuGetErrorString(err)
            if int(e2) == 0 and s:
                desc = s.decode() if isinstance(s, bytes) else str(s)
    except Exception:
        desc = None
    return name, desc or _ERROR_TEXT.get(name, "no description")


def _check(res, call: str, kernel: str | None = None, detail: str | None = None):
    """Unwrap a cuda-python return tuple `(CUresult, *values)`; raise CudaError on failure."""
    if isinstance(res, tuple):
        err, vals = res[0], res[1:]
    else:
        err, vals = res, ()
    if int(err) != 0:
        name, desc = _describe(err)
        raise CudaError(call, int(err), name, desc, kernel, detail)
    if not vals:
        return None
    return vals[0] if len(vals) == 1 else vals


# ------------------------------------------------------------------------------- pure helpers
def arch_from_cc(major: int, minor: int) -> str:
    """The target name for a compute capability: sm_90a for 9.0 (and the arch-specific `a` targets
    of 10.x/12.x: sm_100a, sm_120a), sm_80 / sm_86 / sm_89 for 8.x, sm_75 ..."""
    if major >= 9:
        return f"sm_{major}{minor}a"
    return f"sm_{major}{minor}"


_TARGET_RE = re.compile(r"^\s*\.target\s+(sm_(\d+)([af]?))", re.M)


def ptx_target(ptx) -> str | None:
    """The `.target sm_XX[a]` of a PTX text (str or bytes), or None."""
    if isinstance(ptx, (bytes, bytearray, memoryview)):
        ptx = bytes(ptx[:4096]).decode("ascii", "replace")
    m = _TARGET_RE.search(ptx[:4096] if len(ptx) > 4096 else ptx)
    return m.group(1) if m else None


def _sm_number(target: str) -> int:
    m = re.match(r"sm_(\d+)", target)
    if not m:
        raise ValueError(f"not an NVIDIA target: {target!r}")
    return int(m.group(1))


def check_target(target: str, cc: tuple, device_name: str = "this GPU") -> str:
    """Raise TileError if code for `target` cannot run on a device of compute capability `cc`;
    return the `-arch` to build a cubin with. Arch-specific targets (sm_90a) need exactly that
    device; plain ones (sm_80) run on the same or a newer compute capability."""
    want = _sm_number(target)
    have = cc[0] * 10 + cc[1]
    dev_arch = arch_from_cc(*cc)
    if target.endswith(("a", "f")):
        if want != have:
            raise TileError(f"the kernel was compiled for {target}, which runs only on compute capability "
                            f"{want // 10}.{want % 10}; {device_name} is {cc[0]}.{cc[1]} ({dev_arch}): "
                            f"compile for target '{dev_arch}'")
        return target
    if want > have:
        raise TileError(f"the kernel was compiled for {target}, newer than {device_name} "
                        f"({cc[0]}.{cc[1]}, {dev_arch}): compile for target '{dev_arch}'")
    return f"sm_{have}"


def normalize_dims(dims, what: str = "grid") -> tuple:
    """An int or a sequence of 1..3 ints -> a 3-tuple of ints >= 0 (missing dims are 1)."""
    if isinstance(dims, int) or hasattr(dims, "__index__"):
        dims = (dims,)
    try:
        dims = tuple(dims)
    except TypeError:
        raise TypeError(f"{what} must be an int or a tuple of 1 to 3 ints, got {dims!r}") from None
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"{what} must have 1 to 3 dims, got {len(dims)}: {dims!r}")
    out = []
    for d in dims:
        if isinstance(d, bool) or not hasattr(d, "__index__"):
            raise TypeError(f"{what} dims must be ints, got {d!r} in {dims!r}")
        d = int(d.__index__())
        if d < 0:
            raise ValueError(f"{what} dims must be >= 0, got {dims!r}")
        out.append(d)
    return tuple(out) + (1,) * (3 - len(out))


def _dims3(dims, what):
    if type(dims) is tuple and len(dims) == 3 and type(dims[0]) is int and type(dims[1]) is int \
            and type(dims[2]) is int and dims[0] >= 0 and dims[1] >= 0 and dims[2] >= 0:
        return dims
    return normalize_dims(dims, what)


# --------------------------------------------------------------------------------------- state
class _State:
    def __init__(self):
        self.lock = threading.RLock()
        self.cu = None            # the cuda.bindings.driver module
        self.ok = False
        self.error: str | None = None
        self.device: "Device | None" = None
        self.cudevice = None
        self.context = None       # CUcontext (primary)
        self.ctx_int = 0
        self.device_count = 0
        self.null_stream = None   # CUstream(0), the legacy default stream
        self.tls = threading.local()


_state = _State()


@dataclass(frozen=True)
class Device:
    """What tilec needs to know about the GPU."""
    ordinal: int
    name: str
    cc: tuple                       # (major, minor)
    arch: str                       # target name: sm_90a, sm_80, sm_89 ...
    sm_count: int
    warp_size: int
    max_threads_per_block: int
    max_shared_per_block: int       # without opt-in (48 KB)
    max_shared_per_block_optin: int
    max_shared_per_sm: int
    max_registers_per_block: int
    total_memory: int
    l2_bytes: int
    clock_khz: int
    memory_clock_khz: int
    memory_bus_bits: int
    driver_version: int             # e.g. 13000 for CUDA 13.0
    cluster_launch: bool

    @property
    def peak_bandwidth_gbs(self) -> float:
        """Theoretical DRAM bandwidth (GB/s) from the memory clock and bus width (DDR)."""
        return 2.0 * self.memory_clock_khz * 1e3 * self.memory_bus_bits / 8 / 1e9


def init(ordinal: int | None = None) -> Device:
    """Initialise the driver once (thread-safe); make the primary context current in this thread.

    Raises NoGPUError (one line) when cuda-python, the driver or a device is missing."""
    st = _state
    if st.ok:
        _make_current()
        return st.device
    with st.lock:
        if st.ok:
            _make_current()
            return st.device
        if st.error is not None:
            raise NoGPUError(st.error)
        try:
            st.device = _init_locked(ordinal)
        except NoGPUError as e:
            st.error = str(e)
            raise NoGPUError(st.error) from None
        st.ok = True
        _make_current()
        return st.device


def _fail(reason: str):
    raise NoGPUError("no NVIDIA GPU/driver found: " + _one_line(reason)) from None


def _init_locked(ordinal):
    st = _state
    try:
        from cuda.bindings import driver as cu
    except Exception as e:                       # noqa: BLE001 - any import problem means "no CUDA"
        _fail(f"cuda-python is not importable ({type(e).__name__}: {e}); pip install cuda-python")
    try:
        res = cu.cuInit(0)
    except Exception as e:                       # no libcuda.so: cuda-python raises, not an error code
        _fail(f"the driver library libcuda.so could not be loaded ({e})")
    st.cu = cu
    err = res[0] if isinstance(res, tuple) else res
    if int(err) != 0:
        _fail(f"cuInit failed with {getattr(err, 'name', err)} "
              f"({_ERROR_TEXT.get(getattr(err, 'name', ''), 'see the driver installation')})")
    try:
        count = _check(cu.cuDeviceGetCount(), "cuDeviceGetCount")
    except CudaError as e:
        _fail(str(e))
    if not count:
        _fail("the driver reports no CUDA device")
    st.device_count = count
    if ordinal is None:
        ordinal = int(os.environ.get("TILEC_DEVICE", "0") or 0)
    if not 0 <= ordinal < count:
        _fail(f"device ordinal {ordinal} requested but only {count} device(s) are visible")
    dev = _check(cu.cuDeviceGet(ordinal), "cuDeviceGet")
    st.cudevice = dev
    st.context = _check(cu.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    st.ctx_int = int(st.context)
    _check(cu.cuCtxSetCurrent(st.context), "cuCtxSetCurrent")

    A = cu.CUdevice_attribute

    def attr(name, default=0):
        try:
            return _check(cu.cuDeviceGetAttribute(getattr(A, name), dev), "cuDeviceGetAttribute")
        except (CudaError, AttributeError):
            return default

    raw = _check(cu.cuDeviceGetName(256, dev), "cuDeviceGetName")
    name = raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    cc = (attr("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR"), attr("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR"))
    try:
        drv = _check(cu.cuDriverGetVersion(), "cuDriverGetVersion")
    except CudaError:
        drv = 0
    return Device(
        ordinal=ordinal, name=name, cc=cc, arch=arch_from_cc(*cc),
        sm_count=attr("CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT"),
        warp_size=attr("CU_DEVICE_ATTRIBUTE_WARP_SIZE", 32),
        max_threads_per_block=attr("CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK", 1024),
        max_shared_per_block=attr("CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK", SMEM_DEFAULT_LIMIT),
        max_shared_per_block_optin=attr("CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN", SMEM_DEFAULT_LIMIT),
        max_shared_per_sm=attr("CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR"),
        max_registers_per_block=attr("CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK"),
        total_memory=int(_check(cu.cuDeviceTotalMem(dev), "cuDeviceTotalMem")),
        l2_bytes=attr("CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE"),
        clock_khz=attr("CU_DEVICE_ATTRIBUTE_CLOCK_RATE"),
        memory_clock_khz=attr("CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE"),
        memory_bus_bits=attr("CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH"),
        driver_version=drv,
        cluster_launch=bool(attr("CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH")),
    )


def _make_current(force: bool = False):
    """Make tilec's primary context current in this thread if another one (or none) is. Checked
    once per thread (torch, cupy and jax use the same primary context); `ensure_context()` re-checks
    after code that pushes a context of its own."""
    st = _state
    if not force and getattr(st.tls, "ctx", None) == st.ctx_int:
        return
    cu = st.cu
    cur = _check(cu.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if cur is None or int(cur) != st.ctx_int:
        _check(cu.cuCtxSetCurrent(st.context), "cuCtxSetCurrent")
    st.tls.ctx = st.ctx_int


def ensure_context() -> None:
    """Re-check that tilec's context is current in this thread (after another library pushed one)."""
    init()
    _make_current(force=True)


def _cu():
    """The driver module, initialised, with our context current."""
    init()
    return _state.cu


def available() -> bool:
    """Whether an NVIDIA GPU and driver can be used. Never raises."""
    try:
        init()
        return True
    except Exception:                           # noqa: BLE001
        return False


def device() -> Device:
    """The Device in use (initialises the driver)."""
    return init()


def current_context() -> int:
    """The handle (int) of tilec's context; keys per-context caches."""
    init()
    return _state.ctx_int


def synchronize() -> None:
    """Wait for all work on the device (cuCtxSynchronize)."""
    cu = _cu()
    _check(cu.cuCtxSynchronize(), "cuCtxSynchronize")


def _reset_for_tests() -> None:
    """Forget a cached init failure (tests only)."""
    with _state.lock:
        if not _state.ok:
            _state.error = None


# -------------------------------------------------------------------------------------- streams
class Stream:
    """A CUDA stream. `Stream()` creates one (blocking w.r.t. the legacy default stream);
    `Stream(handle=h)` wraps an existing handle without owning it. `default_stream()` is the
    legacy default stream (handle 0), which orders with torch's and cupy's default streams."""

    def __init__(self, handle: int | None = None, *, non_blocking: bool = False, priority: int = 0):
        self._owned = handle is None
        if handle is None:
            cu = _cu()
            flags = 1 if non_blocking else 0          # CU_STREAM_NON_BLOCKING = 1
            if priority:
                h = _check(cu.cuStreamCreateWithPriority(flags, priority), "cuStreamCreateWithPriority")
            else:
                h = _check(cu.cuStreamCreate(flags), "cuStreamCreate")
            self._cu_stream = h
            self.handle = int(h)
        else:
            self.handle = int(handle)
            self._cu_stream = None

    @property
    def cu_stream(self):
        if self._cu_stream is None:
            self._cu_stream = _cu().CUstream(self.handle)
        return self._cu_stream

    def synchronize(self) -> None:
        cu = _cu()
        _check(cu.cuStreamSynchronize(self.cu_stream), "cuStreamSynchronize")

    def __cuda_stream__(self):
        """The CUDA stream protocol (cuda.core): (version, handle)."""
        return (0, self.handle)

    def __int__(self):
        return self.handle

    def __eq__(self, other):
        return isinstance(other, Stream) and other.handle == self.handle

    def __hash__(self):
        return hash(("Stream", self.handle))

    def __repr__(self):
        return f"Stream(0x{self.handle:x}{', default' if self.handle == 0 else ''})"

    def __del__(self):
        if getattr(self, "_owned", False) and getattr(self, "_cu_stream", None) is not None and _state.ok:
            try:
                _state.cu.cuStreamDestroy(self._cu_stream)
            except Exception:                    # noqa: BLE001 - interpreter shutdown
                pass


_DEFAULT_STREAM = None


def default_stream() -> Stream:
    """The legacy default stream (handle 0)."""
    global _DEFAULT_STREAM
    if _DEFAULT_STREAM is None:
        _DEFAULT_STREAM = Stream(handle=0)
    return _DEFAULT_STREAM


def stream_handle(stream) -> int:
    """The raw handle of a stream-like object: None (the default stream, 0), a Stream, an int,
    a cuda-python CUstream, an object with `__cuda_stream__` (cuda.core), `.cuda_stream`
    (torch.cuda.Stream) or `.ptr` (cupy.cuda.Stream)."""
    if stream is None:
        return 0
    if isinstance(stream, Stream):
        return stream.handle
    if isinstance(stream, int):
        return stream
    proto = getattr(stream, "__cuda_stream__", None)
    if proto is not None:
        v = proto() if callable(proto) else proto
        return int(v[1])
    for attr in ("cuda_stream", "ptr", "handle"):
        h = getattr(stream, attr, None)
        if isinstance(h, int):
            return h
    try:
        return int(stream)                       # CUstream and other int-convertible handles
    except Exception:                            # noqa: BLE001
        raise TypeError(f"not a CUDA stream: {stream!r}") from None


def _cu_stream(stream):
    if stream is None:
        s = _state.null_stream
        if s is None:
            s = _state.null_stream = _state.cu.CUstream(0)
        return s
    if isinstance(stream, Stream):
        return stream.cu_stream
    h = stream_handle(stream)
    return _state.cu.CUstream(h)


class Event:
    """A CUDA event for timing: `e0.record(); ...; e1.record(); e1.synchronize(); e0.elapsed_ms(e1)`."""

    def __init__(self, timing: bool = True):
        cu = _cu()
        flags = 0 if timing else 2                 # CU_EVENT_DISABLE_TIMING = 2
        self._ev = _check(cu.cuEventCreate(flags), "cuEventCreate")

    def record(self, stream=None) -> "Event":
        _check(_state.cu.cuEventRecord(self._ev, _cu_stream(stream)), "cuEventRecord")
        return self

    def synchronize(self) -> None:
        _check(_state.cu.cuEventSynchronize(self._ev), "cuEventSynchronize")

    def elapsed_ms(self, end: "Event") -> float:
        return float(_check(_state.cu.cuEventElapsedTime(self._ev, end._ev), "cuEventElapsedTime"))

    def __del__(self):
        if _state.ok and getattr(self, "_ev", None) is not None:
            try:
                _state.cu.cuEventDestroy(self._ev)
            except Exception:                    # noqa: BLE001
                pass


# --------------------------------------------------------------------------------------- memory
class Allocation:
    """Device memory from cuMemAlloc, freed when the object goes away (or by `free()`)."""
    __slots__ = ("ptr", "nbytes", "_ctx", "__weakref__")

    def __init__(self, nbytes: int):
        cu = _cu()
        nbytes = int(nbytes)
        if nbytes < 0:
            raise ValueError(f"cannot allocate {nbytes} bytes")
        # cuMemAlloc(0) is an error; a 1-byte allocation keeps the pointer valid and 256-B aligned.
        self.ptr = int(_check(cu.cuMemAlloc(max(nbytes, 1)), "cuMemAlloc",
                              detail=f"while allocating {nbytes} bytes"))
        self.nbytes = nbytes
        self._ctx = _state.ctx_int

    def free(self) -> None:
        if getattr(self, "ptr", 0) and _state.ok:
            p, self.ptr = self.ptr, 0
            try:
                _state.cu.cuMemFree(p)
            except Exception:                    # noqa: BLE001 - interpreter shutdown
                pass

    def __del__(self):
        self.free()

    def __int__(self):
        return self.ptr

    def __repr__(self):
        return f"Allocation(0x{self.ptr:x}, {self.nbytes} bytes)"


def alloc(nbytes: int) -> Allocation:
    return Allocation(nbytes)


def _host_addr(buf) -> tuple[int, object]:
    """(address, keepalive) of a host buffer: a NumPy array (contiguous), bytes-like or an int."""
    if isinstance(buf, int):
        return buf, None
    iface = getattr(buf, "__array_interface__", None)
    if iface is not None:
        return int(iface["data"][0]), buf
    if isinstance(buf, (bytes,)):
        return ctypes.cast(ctypes.c_char_p(buf), ctypes.c_void_p).value or 0, buf
    c = (ctypes.c_char * len(memoryview(buf).cast("B"))).from_buffer(buf)
    return ctypes.addressof(c), c


def memcpy_htod(dst: int, src, nbytes: int, stream=None) -> None:
    """Copy `nbytes` from host `src` (NumPy array, writable buffer, bytes or address) to device `dst`.
    With a stream the copy is ordered on it (and asynchronous only for pinned host memory)."""
    if nbytes <= 0:
        return
    cu = _cu()
    addr, keep = _host_addr(src)
    if stream is None:
        _check(cu.cuMemcpyHtoD(int(dst), addr, int(nbytes)), "cuMemcpyHtoD")
    else:
        _check(cu.cuMemcpyHtoDAsync(int(dst), addr, int(nbytes), _cu_stream(stream)), "cuMemcpyHtoDAsync")
        _check(cu.cuStreamSynchronize(_cu_stream(stream)), "cuStreamSynchronize")   # `keep` may go away
    del keep


def memcpy_dtoh(dst, src: int, nbytes: int, stream=None) -> None:
    """Copy `nbytes` from device `src` into host `dst`; waits for `stream` (default: legacy) first."""
    if nbytes <= 0:
        return
    cu = _cu()
    addr, keep = _host_addr(dst)
    if stream is not None and stream_handle(stream) != 0:
        _check(cu.cuMemcpyDtoHAsync(addr, int(src), int(nbytes), _cu_stream(stream)), "cuMemcpyDtoHAsync")
        _check(cu.cuStreamSynchronize(_cu_stream(stream)), "cuStreamSynchronize")
    else:
        _check(cu.cuMemcpyDtoH(addr, int(src), int(nbytes)), "cuMemcpyDtoH")
    del keep


def memcpy_dtod(dst: int, src: int, nbytes: int, stream=None) -> None:
    if nbytes <= 0:
        return
    cu = _cu()
    _check(cu.cuMemcpyDtoDAsync(int(dst), int(src), int(nbytes), _cu_stream(stream)), "cuMemcpyDtoDAsync")


def memset_d8(dst: int, value: int, nbytes: int, stream=None) -> None:
    if nbytes <= 0:
        return
    cu = _cu()
    _check(cu.cuMemsetD8Async(int(dst), int(value) & 0xFF, int(nbytes), _cu_stream(stream)), "cuMemsetD8Async")


# ---------------------------------------------------------------------------------- tensor maps
_TMAP_DTYPE = {8: "CU_TENSOR_MAP_DATA_TYPE_UINT8", 16: "CU_TENSOR_MAP_DATA_TYPE_UINT16",
               32: "CU_TENSOR_MAP_DATA_TYPE_UINT32", 64: "CU_TENSOR_MAP_DATA_TYPE_UINT64"}
_TMAP_SWIZZLE = {0: "CU_TENSOR_MAP_SWIZZLE_NONE", 32: "CU_TENSOR_MAP_SWIZZLE_32B",
                 64: "CU_TENSOR_MAP_SWIZZLE_64B", 128: "CU_TENSOR_MAP_SWIZZLE_128B"}


def encode_tensor_map(ptr: int, shape, strides, bits: int, box, swizzle: int, what: str = "tensor") -> bytes:
    """The 128 bytes of a TMA tensor map (cuTensorMapEncodeTiled) of the tensor at device address
    `ptr` with `shape` and `strides` (in elements; outermost dim first, as tilec writes them),
    elements of `bits` bits copied as raw integers of that width (a copy needs no float
    semantics), boxes of `box` elements (outermost first), shared-memory swizzle span `swizzle`
    bytes, elements outside the tensor filled with zeros. The driver wants everything innermost
    first, strides in bytes and without the innermost one (it is the element size); its rules --
    16-byte aligned base, strides multiples of 16 bytes -- are checked by the caller
    (ir.artifact.tensor_map_ok), which names the parameter. `what` names it in driver errors."""
    cu = _cu()
    eb = bits // 8
    rank = len(shape)
    u64, u32 = cu.cuuint64_t, cu.cuuint32_t
    tm = _check(cu.cuTensorMapEncodeTiled(
        getattr(cu.CUtensorMapDataType, _TMAP_DTYPE[bits]), rank, int(ptr),
        [u64(int(d)) for d in reversed(shape)],
        [u64(int(s) * eb) for s in reversed(tuple(strides)[:-1])],
        [u32(int(b)) for b in reversed(box)],
        [u32(1)] * rank,
        cu.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE,
        getattr(cu.CUtensorMapSwizzle, _TMAP_SWIZZLE[int(swizzle)]),
        cu.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
        cu.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE), "cuTensorMapEncodeTiled",
        detail=f"(tensor map of {what}: shape {tuple(shape)}, strides {tuple(strides)}, {bits}-bit elements, "
               f"box {tuple(box)}, swizzle {swizzle} B)")
    return struct.pack("<16Q", *(int(x) for x in tm.opaque))


# ------------------------------------------------------------------------------ PTX -> cubin
def _nvjitlink():
    try:
        from cuda.bindings import nvjitlink
        nvjitlink.version()                      # loads libnvJitLink.so; raises when it is missing
        return nvjitlink
    except Exception:                            # noqa: BLE001
        return None


def nvjitlink_available() -> bool:
    return _nvjitlink() is not None


def ptx_to_cubin(ptx, arch: str, options=("-O3",), name: str = "kernel") -> bytes:
    """Compile PTX (str or bytes) into a cubin for `arch` (e.g. "sm_90a") with nvJitLink, in process;
    no GPU needed. Raises PTXCompileError with the compiler's log, or NoGPUError-free TileError
    when nvJitLink is not installed."""
    nj = _nvjitlink()
    if nj is None:
        raise TileError("nvJitLink is not available (pip install nvidia-nvjitlink)")
    data = ptx.encode() if isinstance(ptx, str) else bytes(ptx)
    data = data.rstrip(b"\0")
    opts = [f"-arch={arch}", *options]
    h = nj.create(len(opts), opts)
    try:
        try:
            nj.add_data(h, nj.InputType.PTX, data, len(data), f"{name}.ptx")
            nj.complete(h)
        except Exception as e:                   # noqa: BLE001 - nvJitLinkError
            log = ""
            try:
                n = nj.get_error_log_size(h)
                buf = bytearray(n)
                nj.get_error_log(h, buf)
                log = bytes(buf).rstrip(b"\0").decode(errors="replace").strip()
            except Exception:                    # noqa: BLE001
                pass
            raise PTXCompileError(f"nvJitLink could not compile kernel '{name}' for {arch}: {e}"
                                  + (f"\n{log}" if log else "")) from None
        size = nj.get_linked_cubin_size(h)
        out = bytearray(size)
        nj.get_linked_cubin(h, out)
        return bytes(out)
    finally:
        nj.destroy(h)


# ------------------------------------------------------------------------------ modules/functions
def _func_attr(name):
    return getattr(_state.cu.CUfunction_attribute, name)


def _cluster_config(cu, block, cluster, shared_bytes: int):
    """A CUlaunchConfig for cuLaunchKernelEx with the block, dynamic shared memory and the cluster-dimension
    attribute set; the caller writes the grid and the stream."""
    cfg = cu.CUlaunchConfig()
    cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = block
    cfg.sharedMemBytes = shared_bytes
    at = cu.CUlaunchAttribute()
    at.id = cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
    at.value.clusterDim.x, at.value.clusterDim.y, at.value.clusterDim.z = cluster
    cfg.attrs = [at]
    cfg.numAttrs = 1
    return cfg


class Function:
    """A kernel in a loaded Module."""

    def __init__(self, module: "Module", name: str, handle):
        self.module, self.name, self.handle = module, name, handle
        self._attrs: dict | None = None
        self._smem_limit = None          # dynamic smem currently allowed (None: not yet queried)
        self._nonportable = False

    @property
    def attributes(self) -> dict:
        """num_regs, max_threads_per_block, shared_bytes (static), local_bytes, const_bytes,
        ptx_version, binary_version (queried once)."""
        if self._attrs is None:
            cu = _state.cu
            q = lambda a: _check(cu.cuFuncGetAttribute(_func_attr(a), self.handle), "cuFuncGetAttribute", self.name)
            self._attrs = dict(
                num_regs=q("CU_FUNC_ATTRIBUTE_NUM_REGS"),
                max_threads_per_block=q("CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK"),
                shared_bytes=q("CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES"),
                local_bytes=q("CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES"),
                const_bytes=q("CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES"),
                ptx_version=q("CU_FUNC_ATTRIBUTE_PTX_VERSION"),
                binary_version=q("CU_FUNC_ATTRIBUTE_BINARY_VERSION"),
            )
        return self._attrs

    def set_attribute(self, name: str, value: int) -> None:
        """cuFuncSetAttribute by short or full name ("MAX_DYNAMIC_SHARED_SIZE_BYTES")."""
        full = name if name.startswith("CU_FUNC_ATTRIBUTE_") else "CU_FUNC_ATTRIBUTE_" + name.upper()
        _check(_state.cu.cuFuncSetAttribute(self.handle, _func_attr(full), int(value)), "cuFuncSetAttribute", self.name)

    def _prepare_smem(self, shared_bytes: int) -> None:
        static = self.attributes["shared_bytes"]
        if self._smem_limit is None:
            self._smem_limit = max(SMEM_DEFAULT_LIMIT - static, 0)
        if shared_bytes <= self._smem_limit:
            return
        dev = _state.device
        cap = dev.max_shared_per_block_optin - static
        if shared_bytes > cap:
            raise TileError(f"kernel '{self.name}' needs {shared_bytes} bytes of dynamic shared memory "
                            f"(+{static} static); {dev.name} allows at most {dev.max_shared_per_block_optin} "
                            f"per block: use smaller tiles or fewer pipeline stages")
        _check(_state.cu.cuFuncSetAttribute(self.handle, _func_attr("CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES"),
                                            int(shared_bytes)), "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
               self.name)
        self._smem_limit = shared_bytes

    def launch_parts(self, block, shared_bytes: int, cluster=(1, 1, 1)) -> dict:
        """What generated launch code needs to launch this kernel with one driver call and nothing
        else per launch: block, shared memory (opted in here, once) and the checks that do not
        change between launches are done now. Returns {"call", "handle", "block", "shared",
        "stream", "stream_of", "check"}: `call(handle, gx, gy, gz, *block, shared, stream,
        params_address, 0)` is cuLaunchKernel (cuda-python's binding: kernelParams given as an int
        address is the cheapest form it takes); `stream` is the legacy default stream and
        `stream_of(handle)` the stream object of a nonzero raw handle (torch's current stream; the
        last one is kept, so a launch on the same stream builds nothing); it returns a tuple whose
        first item is nonzero on failure, which `check(result)` turns into the CudaError naming the
        kernel.
        Grid sizes must be valid (the caller checks them; with a cluster, multiples of its shape too).
        A cluster launch's `call` has the same signature: it writes the grid and the stream into a
        CUlaunchConfig built here once (block, shared memory, the cluster attribute) and calls
        cuLaunchKernelEx. Clusters the general path would have to allow first (more than 8 blocks: the
        non-portable attribute) or cannot launch (before compute capability 9.0) are not eligible
        (ValueError)."""
        cu = _cu()
        b = _dims3(block, "block")
        c = _dims3(cluster, "cluster")
        if c != (1, 1, 1) and (_state.device.cc[0] < 9 or c[0] * c[1] * c[2] > 8):
            raise ValueError("this cluster launch takes the general path (which reports or allows it)")
        if b[0] * b[1] * b[2] > self.attributes["max_threads_per_block"]:
            raise ValueError("too many threads: the general path reports it")
        shared_bytes = int(shared_bytes or 0)
        self._prepare_smem(shared_bytes)
        name = self.name
        CUstream = cu.CUstream
        last = [0, None]                          # the last non-default stream handle and its CUstream
        launch = cu.cuLaunchKernel
        if c != (1, 1, 1):
            cfg = _cluster_config(cu, b, c, shared_bytes)
            launch_ex = cu.cuLaunchKernelEx

            def launch(handle, gx, gy, gz, bx, by, bz, shared, stream, params, extra, cfg=cfg):
                cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ, cfg.hStream = gx, gy, gz, stream
                return launch_ex(cfg, handle, params, extra)

        def check(res):
            _check(res, "cuLaunchKernelEx" if c != (1, 1, 1) else "cuLaunchKernel", name)

        def stream_of(h):
            if h == last[0]:
                return last[1]
            s = CUstream(h)
            last[1], last[0] = s, h
            return s
        return {"call": launch, "handle": self.handle, "block": b, "shared": shared_bytes,
                "stream": _cu_stream(None), "stream_of": stream_of, "check": check}

    def launch(self, grid, block, args, shared_bytes: int = 0, stream=None, cluster=(1, 1, 1)) -> None:
        """Launch on `stream` (default: the legacy default stream). `args`: a ctypes array of void*
        (addresses of the argument values), its integer address, or None for no parameters."""
        cu = _cu()
        g = _dims3(grid, "grid")
        b = _dims3(block, "block")
        c = _dims3(cluster, "cluster")
        if 0 in g:
            return
        if 0 in b or 0 in c:
            raise ValueError(f"kernel '{self.name}': block {b} and cluster {c} dims must be >= 1")
        if g[0] >= 2 ** 31 or g[1] > 65535 or g[2] > 65535:
            raise ValueError(f"kernel '{self.name}': grid {g} exceeds the limits (2^31-1, 65535, 65535)")
        nthreads = b[0] * b[1] * b[2]
        limit = self.attributes["max_threads_per_block"]
        if nthreads > limit:
            raise TileError(f"kernel '{self.name}' is launched with {nthreads} threads per block but can run at "
                            f"most {limit} ({self.attributes['num_regs']} registers per thread)")
        shared_bytes = int(shared_bytes or 0)
        self._prepare_smem(shared_bytes)
        if args is None:
            params = 0
        elif isinstance(args, int):
            params = args
        else:
            params = ctypes.addressof(args)
        if c == (1, 1, 1):
            _check(cu.cuLaunchKernel(self.handle, g[0], g[1], g[2], b[0], b[1], b[2], shared_bytes,
                                     _cu_stream(stream), params, 0), "cuLaunchKernel", self.name)
            return
        self._launch_cluster(cu, g, b, c, shared_bytes, _cu_stream(stream), params)

    def _launch_cluster(self, cu, g, b, c, shared_bytes, hstream, params):
        dev = _state.device
        if dev.cc[0] < 9:
            raise TileError(f"kernel '{self.name}' uses thread-block clusters {c}, which need compute capability "
                            f"9.0 or newer; {dev.name} is {dev.cc[0]}.{dev.cc[1]}")
        if any(gi % ci for gi, ci in zip(g, c)):
            raise ValueError(f"kernel '{self.name}': grid {g} must be a multiple of the cluster shape {c}")
        size = c[0] * c[1] * c[2]
        if size > 8 and not self._nonportable:
            _check(cu.cuFuncSetAttribute(self.handle, _func_attr("CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED"),
                                         1), "cuFuncSetAttribute(NON_PORTABLE_CLUSTER_SIZE_ALLOWED)", self.name)
            self._nonportable = True
        cfg = _cluster_config(cu, b, c, shared_bytes)
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = g
        cfg.hStream = hstream
        _check(cu.cuLaunchKernelEx(cfg, self.handle, params, 0), "cuLaunchKernelEx", self.name,
               detail=f"(cluster {c}, grid {g}, block {b})")

    def __repr__(self):
        return f"Function({self.name!r})"


class Module:
    """A loaded CUDA module. `jit` says how it was built: "cubin" (given a cubin), "nvjitlink" or
    "driver" (the driver's PTX JIT). `cubin` holds the cubin nvJitLink made, if any."""

    def __init__(self, handle, jit: str, cubin: bytes | None = None, name: str | None = None,
                 notes: str | None = None):
        self.handle, self.jit, self.cubin, self.name = handle, jit, cubin, name
        self.notes = notes
        self._functions: dict[str, Function] = {}
        self._ctx = _state.ctx_int

    def get_function(self, name: str) -> Function:
        f = self._functions.get(name)
        if f is None:
            h = _check(_state.cu.cuModuleGetFunction(self.handle, name.encode()), "cuModuleGetFunction", name,
                       detail=f"(no kernel named {name!r} in the module)")
            f = self._functions[name] = Function(self, name, h)
        return f

    def unload(self) -> None:
        if self.handle is not None and _state.ok:
            h, self.handle = self.handle, None
            self._functions.clear()
            try:
                _state.cu.cuModuleUnload(h)
            except Exception:                    # noqa: BLE001
                pass

    def __repr__(self):
        return f"Module({self.name or '?'}, via {self.jit})"


def _is_cubin(image) -> bool:
    return isinstance(image, (bytes, bytearray, memoryview)) and bytes(image[:4]) == b"\x7fELF"


def load_module(image, name: str | None = None, jit: str | None = None) -> Module:
    """Load a module from PTX (str, or bytes not starting with ELF magic) or a cubin (bytes).

    PTX: its `.target` is checked against the device; nvJitLink compiles it for the device's
    arch, falling back to the driver JIT (cuModuleLoadData on the NUL-terminated text) when
    nvJitLink is missing or fails, or when its cubin does not load. `jit` ("nvjitlink" | "driver",
    default `$TILEC_PTX_JIT` or "auto") picks one path only."""
    cu = _cu()
    dev = _state.device
    what = f"module '{name}'" if name else "module"
    if _is_cubin(image):
        h = _check(cu.cuModuleLoadData(bytes(image)), "cuModuleLoadData(cubin)", name)
        return Module(h, "cubin", bytes(image), name)
    text = image.encode() if isinstance(image, str) else bytes(image)
    text = text.rstrip(b"\0")
    target = ptx_target(text)
    arch = check_target(target, dev.cc, dev.name) if target else arch_from_cc(*dev.cc)
    mode = (jit or os.environ.get("TILEC_PTX_JIT") or "auto").lower()
    if mode not in ("auto", "nvjitlink", "driver"):
        raise ValueError(f"TILEC_PTX_JIT / jit must be auto, nvjitlink or driver, got {mode!r}")
    notes = []
    if mode in ("auto", "nvjitlink"):
        try:
            cubin = ptx_to_cubin(text, arch, name=name or "kernel")
        except TileError as e:
            if mode == "nvjitlink":
                raise
            notes.append(str(e))
        else:
            res = cu.cuModuleLoadData(cubin)
            if int(res[0]) == 0:
                return Module(res[1], "nvjitlink", cubin, name)
            ename, desc = _describe(res[0])
            msg = f"the nvJitLink cubin for {arch} did not load: {ename} ({desc})"
            if mode == "nvjitlink":
                raise CudaError("cuModuleLoadData(cubin)", int(res[0]), ename, desc, name)
            notes.append(msg)
    res = cu.cuModuleLoadData(text + b"\0")
    if int(res[0]) != 0:
        ename, desc = _describe(res[0])
        raise CudaError(f"cuModuleLoadData(PTX, driver JIT) of {what}", int(res[0]), ename, desc, name,
                        detail="\n".join(notes) or None)
    return Module(res[1], "driver", None, name, "\n".join(notes) or None)
