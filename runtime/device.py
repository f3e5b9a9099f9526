"""Device arrays for NumPy users, and reading tensors that other libraries hand to a kernel.

`DeviceArray` is a small GPU tensor of any tilec dtype (sub-byte dtypes packed densely, LSB-first,
exactly as `tile.Array` stores them on the host):

    d = tile.to_device(np.random.rand(1000).astype(np.float32))
    e = tile.empty((1000,), "f32")            # uninitialised; e.fill_bytes(0xFF) poisons it
    kernel[grid](d, e)
    e.numpy()                                 # decoded values (like tile.Array.numpy())
    e.to_host()                               # a tile.Array (same storage as on the device)

It exposes `__cuda_array_interface__` (v3; bf16 as '<V2' and 8-bit floats as '|V1', as ml_dtypes
does; sub-byte dtypes have none) and `__dlpack__` / `__dlpack_device__` (DLPack legacy and
versioned capsules; bf16 as kDLBfloat), so `torch.from_dlpack(d)` / `cupy.asarray(d)` share it.

`extract_tensor(obj, name, dtype, rank, align)` reads a kernel argument: a DeviceArray, a torch
tensor (read through data_ptr()/shape/stride(), recognised without importing torch), anything with
`__cuda_array_interface__` (cupy, numba) or `__dlpack__` (jax, cupy...; parsed with ctypes:
DLManagedTensor / DLManagedTensorVersioned), and returns
(ptr, shape, strides in elements, dtype), checking dtype, rank, device and base alignment; every
mismatch is a TypeError / ValueError naming the parameter.
"""
from __future__ import annotations

import ctypes
import math
from typing import NamedTuple

import numpy as np

from ..ir import numerics
from ..ir.dtypes import DType, dtype as _dtype
from . import cuda as _cuda
from .arrays import Array, asarray, from_packed, native_numpy_dtype

__all__ = ["DeviceArray", "to_device", "empty", "zeros", "empty_like", "extract_tensor", "TensorInfo",
           "parse_dlpack_capsule", "DLPackInfo", "dlpack_dtype", "dtype_to_dlpack"]


# ============================================================================ DLPack structures
class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER),
                ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]


kDLCPU, kDLCUDA, kDLCUDAHost, kDLCUDAManaged, kDLROCM = 1, 2, 3, 13, 10
# GPU memory a kernel argument may live in: CUDA (and managed), and ROCm (torch and CuPy on AMD GPUs report
# kDLROCM; only an AMD kernel launch through runtime/hip.py ever sees such memory)
_GPU_DEVICES = (kDLCUDA, kDLCUDAManaged, kDLROCM)
_FLAG_READ_ONLY, _FLAG_IS_COPIED, _FLAG_SUBBYTE_PADDED = 1, 2, 4
_DEVICE_NAMES = {1: "CPU", 2: "CUDA", 3: "CUDA pinned host", 4: "OpenCL", 7: "Vulkan", 8: "Metal", 10: "ROCm",
                 11: "ROCm pinned host", 13: "CUDA managed", 14: "oneAPI"}

# DLPack type codes (dlpack.h, v1.1)
kDLInt, kDLUInt, kDLFloat, kDLBfloat, kDLBool = 0, 1, 2, 4, 6
_CODE_NAMES = {0: "int", 1: "uint", 2: "float", 3: "opaque handle", 4: "bfloat", 5: "complex", 6: "bool",
               7: "float8_e3m4", 8: "float8_e4m3", 9: "float8_e4m3b11fnuz", 10: "float8_e4m3fn",
               11: "float8_e4m3fnuz", 12: "float8_e5m2", 13: "float8_e5m2fnuz", 14: "float8_e8m0fnu",
               15: "float6_e2m3fn", 16: "float6_e3m2fn", 17: "float4_e2m1fn"}
_CODE_TO_TILEC = {(4, 16): "bf16", (10, 8): "f8e4m3fn", (12, 8): "f8e5m2", (15, 6): "f6e2m3", (16, 6): "f6e3m2",
                  (17, 4): "f4e2m1", (14, 8): "f8e8m0fnu", (2, 16): "f16", (2, 32): "f32", (2, 64): "f64", (6, 1): "i1"}


class ByteBool(Exception):
    """Internal: a bool tensor with one byte per element (not tilec's packed i1)."""


def dlpack_dtype(code: int, bits: int, lanes: int = 1) -> DType:
    """The tilec dtype of a DLPack (code, bits, lanes); ValueError if there is none."""
    if lanes != 1:
        raise ValueError(f"vector dtypes (lanes={lanes}) are not supported")
    if code in (kDLInt, kDLUInt) and (1 <= bits <= 8 or bits in (16, 32, 64)):
        signed = code == kDLInt
        if bits < 8:
            return _dtype(f"{'int' if signed else 'uint'}{bits}")
        return _dtype(f"{'i' if signed else 'u'}{bits}")
    if code == kDLBool and bits == 8:
        raise ByteBool()
    name = _CODE_TO_TILEC.get((code, bits))
    if name is None:
        raise ValueError(f"DLPack dtype ({_CODE_NAMES.get(code, code)}, {bits} bits) has no tilec equivalent")
    return _dtype(name)


def dtype_to_dlpack(dt: DType) -> tuple:
    """(code, bits) of a tilec dtype in DLPack."""
    dt = _dtype(dt)
    for (code, bits), name in _CODE_TO_TILEC.items():
        if name == dt.name:
            return code, bits
    if dt.kind in ("int", "uint"):
        return (kDLInt if dt.kind == "int" else kDLUInt), dt.bits
    raise ValueError(f"{dt} has no DLPack type code")


# --- Python C-API through ctypes (PyObject* taken as py_object: the caller holds a reference)
_api = ctypes.pythonapi
_capsule_is_valid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_IsValid", _api))
_capsule_get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_GetPointer", _api))
_capsule_set_name = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_SetName", _api))
_capsule_new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(("PyCapsule_New", _api))
# raw PyObject* versions for the capsule destructor (the object is being destroyed: no refcounting)
_raw_is_valid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(("PyCapsule_IsValid", _api))
_raw_get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(("PyCapsule_GetPointer", _api))

# Capsule names must outlive the capsules (PyCapsule_SetName keeps the pointer): module constants.
_NAME_LEGACY = ctypes.c_char_p(b"dltensor")
_NAME_VERSIONED = ctypes.c_char_p(b"dltensor_versioned")
_NAME_USED = ctypes.c_char_p(b"used_dltensor")
_NAME_USED_VERSIONED = ctypes.c_char_p(b"used_dltensor_versioned")


class DLPackInfo(NamedTuple):
    """What a DLPack capsule describes. `ptr` already includes byte_offset; strides in elements."""
    ptr: int
    shape: tuple
    strides: tuple
    dtype: DType | None          # None when the DLPack dtype has no tilec equivalent (see dtype_error)
    device_type: int
    device_id: int
    read_only: bool
    code: int
    bits: int
    lanes: int
    dtype_error: str | None


class _DLPackOwner:
    """Holds a consumed DLManagedTensor[Versioned]; calls its deleter when released."""
    __slots__ = ("addr", "deleter", "keep")

    def __init__(self, addr, deleter, keep=None):
        self.addr, self.deleter, self.keep = addr, deleter, keep

    def release(self):
        d, self.deleter = self.deleter, None
        if d:
            d(self.addr)
        self.keep = None

    def __del__(self):
        try:
            self.release()
        except Exception:                        # noqa: BLE001
            pass


def parse_dlpack_capsule(capsule, consume: bool = True):
    """Read a DLPack capsule ("dltensor" or "dltensor_versioned").

    Returns (DLPackInfo, owner). With `consume`, the capsule is renamed "used_dltensor[_versioned]"
    as the protocol requires, and `owner` calls the producer's deleter when released (`.release()`
    or garbage collection): keep it alive while the memory is in use. Without `consume` the capsule
    is only read (its own destructor will free it) and owner is None."""
    if type(capsule).__name__ != "PyCapsule":
        raise TypeError(f"expected a DLPack capsule, got {type(capsule).__name__}")
    if _capsule_is_valid(capsule, _NAME_LEGACY):
        versioned = False
        addr = _capsule_get_pointer(capsule, _NAME_LEGACY)
        managed = DLManagedTensor.from_address(addr)
        t, flags = managed.dl_tensor, 0
    elif _capsule_is_valid(capsule, _NAME_VERSIONED):
        versioned = True
        addr = _capsule_get_pointer(capsule, _NAME_VERSIONED)
        managed = DLManagedTensorVersioned.from_address(addr)
        if managed.version.major != 1:
            raise ValueError(f"DLPack major version {managed.version.major} is not supported (need 1)")
        t, flags = managed.dl_tensor, int(managed.flags)
    else:
        raise ValueError("the DLPack capsule was already consumed (or is not a DLPack tensor)")
    ndim = int(t.ndim)
    shape = tuple(int(t.shape[i]) for i in range(ndim))
    if ndim and bool(t.strides):
        strides = tuple(int(t.strides[i]) for i in range(ndim))
    else:
        strides = _contiguous_strides(shape)                  # NULL strides: compact row-major
    code, bits, lanes = int(t.dtype.code), int(t.dtype.bits), int(t.dtype.lanes)
    dt, err = None, None
    try:
        dt = dlpack_dtype(code, bits, lanes)
        if dt.bits < 8 and flags & _FLAG_SUBBYTE_PADDED:
            dt, err = None, f"{dt} elements padded to one byte each (tilec needs them packed)"
    except ByteBool:
        err = "bool with one byte per element (tilec's i1 tensors are packed, 8 per byte)"
    except ValueError as e:
        err = str(e)
    info = DLPackInfo(ptr=(t.data or 0) + int(t.byte_offset), shape=shape, strides=strides, dtype=dt,
                      device_type=int(t.device.device_type), device_id=int(t.device.device_id),
                      read_only=bool(flags & _FLAG_READ_ONLY), code=code, bits=bits, lanes=lanes, dtype_error=err)
    owner = None
    if consume:
        _capsule_set_name(capsule, (_NAME_USED_VERSIONED if versioned else _NAME_USED))
        deleter = managed.deleter
        owner = _DLPackOwner(addr, deleter if ctypes.cast(deleter, ctypes.c_void_p).value else None)
    return info, owner


def _contiguous_strides(shape) -> tuple:
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= max(int(d), 1)
    return tuple(reversed(st))


# ======================================================================= export (our own arrays)
_EXPORTS: dict = {}          # address of an exported DLManagedTensor -> what keeps it valid


@_DELETER
def _export_deleter(addr):
    _EXPORTS.pop(addr, None)


_DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


@_DESTRUCTOR
def _capsule_destructor(cap):
    # An unconsumed capsule is being freed: release what it points to.
    for name in (_NAME_LEGACY, _NAME_VERSIONED):
        if _raw_is_valid(cap, name):
            addr = _raw_get_pointer(cap, name)
            _EXPORTS.pop(addr, None)
            return


def _export_capsule(arr: "DeviceArray", versioned: bool):
    code, bits = dtype_to_dlpack(arr.dtype)
    nd = len(arr.shape)
    shape = (ctypes.c_int64 * max(nd, 1))(*arr.shape)
    strides = (ctypes.c_int64 * max(nd, 1))(*arr.strides)
    m = DLManagedTensorVersioned() if versioned else DLManagedTensor()
    t = m.dl_tensor
    t.data = arr.ptr or None
    t.device = DLDevice(kDLCUDA, arr.device_id)
    t.ndim = nd
    t.dtype = DLDataType(code, bits, 1)
    t.shape = ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64))
    t.strides = ctypes.cast(strides, ctypes.POINTER(ctypes.c_int64))
    t.byte_offset = 0
    m.manager_ctx = None
    m.deleter = _export_deleter
    if versioned:
        m.version = DLPackVersion(1, 1)
        m.flags = _FLAG_READ_ONLY if arr.readonly else 0
    addr = ctypes.addressof(m)
    _EXPORTS[addr] = (m, shape, strides, arr)
    name = _NAME_VERSIONED if versioned else _NAME_LEGACY
    return _capsule_new(addr, name, ctypes.cast(_capsule_destructor, ctypes.c_void_p).value)


# ============================================================================== DeviceArray
def _typestr(dt: DType) -> str:
    nd = native_numpy_dtype(dt)
    if nd is not None:
        return nd.str
    if dt.bits == 16:
        return "<V2"                  # bf16: ml_dtypes' bfloat16 has typestr '<V2'
    if dt.bits == 8:
        return "|V1"                  # 8-bit floats: '|V1' (ml_dtypes)
    raise AttributeError(f"{dt} arrays are stored packed ({dt.bits} bits per element) and have no "
                         f"__cuda_array_interface__; share them through DLPack or .bytes_view()")


def _storage_nbytes(shape, dt: DType) -> int:
    return (math.prod(shape) * dt.bits + 7) // 8


class DeviceArray:
    """A tensor in GPU memory: `ptr`, `shape`, `strides` (elements), `dtype` (DType).

    Created by `to_device`, `empty`, `zeros`, or `DeviceArray.from_pointer` (a view of foreign
    memory; needs no GPU, so it also serves tests)."""

    def __init__(self, shape, dtype, *, ptr: int | None = None, strides=None, owner=None, readonly: bool = False,
                 device_id: int | None = None):
        self.dtype = _dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in self.shape):
            raise ValueError(f"negative dimension in shape {self.shape}")
        self.strides = _contiguous_strides(self.shape) if strides is None else tuple(int(s) for s in strides)
        if len(self.strides) != len(self.shape):
            raise ValueError(f"strides {self.strides} do not match shape {self.shape}")
        if self.dtype.bits < 8 and not self.is_contiguous:
            raise ValueError(f"{self.dtype} device arrays must be contiguous (their elements are packed)")
        if ptr is None:
            owner = _cuda.alloc(_storage_nbytes(self.shape, self.dtype))
            ptr = owner.ptr
        self.ptr = int(ptr)
        self._owner = owner
        self.readonly = readonly
        self._stream = None          # handle of the last stream that used it (None: nothing pending)
        if device_id is None:
            device_id = _cuda._state.device.ordinal if _cuda._state.ok else 0
        self.device_id = device_id

    @classmethod
    def from_pointer(cls, ptr: int, shape, dtype, strides=None, owner=None, readonly: bool = False) -> "DeviceArray":
        """Wrap existing device memory (kept alive through `owner`)."""
        return cls(shape, dtype, ptr=ptr, strides=strides, owner=owner, readonly=readonly)

    # ------------------------------------------------------------------------- geometry
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the elements (packed for sub-byte dtypes)."""
        return _storage_nbytes(self.shape, self.dtype)

    @property
    def is_contiguous(self) -> bool:
        return all(st == c or d == 1 for st, c, d in zip(self.strides, _contiguous_strides(self.shape), self.shape)) \
            or self.size == 0

    def data_ptr(self) -> int:
        return self.ptr

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d DeviceArray")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype.name}, ptr=0x{self.ptr:x})"

    # ------------------------------------------------------------------------- host transfer
    def _wait(self):
        if self._stream not in (None, 0):
            _cuda.Stream(handle=self._stream).synchronize()

    def to_host(self) -> Array:
        """A tile.Array with the contents (same storage as here: packed for sub-byte dtypes)."""
        self._wait()
        dt = self.dtype
        if self.size == 0:
            return from_packed(b"", dt, self.shape) if dt.bits < 8 else \
                Array(np.empty(self.shape, native_numpy_dtype(dt) or numerics.code_dtype(dt)), dt, self.shape)
        if dt.bits < 8:
            buf = np.empty(self.nbytes, np.uint8)
            _cuda.memcpy_dtoh(buf, self.ptr, buf.nbytes)
            return Array(buf, dt, self.shape)
        store = native_numpy_dtype(dt) or numerics.code_dtype(dt)
        item = store.itemsize
        if self.is_contiguous:
            out = np.empty(self.shape, store)
            _cuda.memcpy_dtoh(out, self.ptr, out.nbytes)
            return Array(out, dt, self.shape)
        # a strided view: copy the span it touches, then gather on the host
        lo = sum(min(0, (d - 1) * s) for d, s in zip(self.shape, self.strides))
        hi = sum(max(0, (d - 1) * s) for d, s in zip(self.shape, self.strides))
        span = np.empty(hi - lo + 1, store)
        _cuda.memcpy_dtoh(span, self.ptr + lo * item, span.nbytes)
        view = np.lib.stride_tricks.as_strided(span[-lo:], self.shape, tuple(s * item for s in self.strides))
        return Array(np.ascontiguousarray(view), dt, self.shape)

    def numpy(self) -> np.ndarray:
        """The decoded values as NumPy (as tile.Array.numpy(): native dtypes as themselves, bf16
        and small floats as float32, sub-byte integers as int64, i1 as bool)."""
        host = self.to_host()
        if native_numpy_dtype(self.dtype) is not None:
            return host.data                     # freshly copied from the device: not shared
        return host.numpy()

    def copy_from_host(self, x) -> "DeviceArray":
        """Overwrite the contents with a NumPy array / tile.Array of the same shape (converted to
        this dtype by `tile.asarray` rules)."""
        if not self.is_contiguous:
            raise ValueError("copy_from_host needs a contiguous DeviceArray")
        a = x if isinstance(x, Array) and x.dtype == self.dtype else asarray(x, self.dtype)
        if tuple(a.shape) != self.shape:
            raise ValueError(f"shape {tuple(a.shape)} does not match the DeviceArray's {self.shape}")
        data = np.ascontiguousarray(a.data)
        self._wait()
        _cuda.memcpy_htod(self.ptr, data, self.nbytes)
        return self

    def fill_bytes(self, value: int) -> "DeviceArray":
        """Set every storage byte to `value` (poisoning outputs before a test: 0xFF is NaN for floats)."""
        if not self.is_contiguous:
            raise ValueError("fill_bytes needs a contiguous DeviceArray")
        _cuda.memset_d8(self.ptr, value, self.nbytes, self._stream)
        _cuda.synchronize()
        return self

    def bytes_view(self) -> "DeviceArray":
        """The storage as a 1-D u8 DeviceArray sharing memory (contiguous arrays only)."""
        if not self.is_contiguous:
            raise ValueError("bytes_view needs a contiguous DeviceArray")
        return DeviceArray((self.nbytes,), "u8", ptr=self.ptr, owner=self, readonly=self.readonly,
                           device_id=self.device_id)

    # ------------------------------------------------------------------------- interop
    @property
    def __cuda_array_interface__(self) -> dict:
        typestr = _typestr(self.dtype)
        item = self.dtype.bits // 8
        d = {"shape": self.shape, "typestr": typestr, "data": (self.ptr if self.size else 0, self.readonly),
             "version": 3, "strides": None if self.is_contiguous else tuple(s * item for s in self.strides),
             "stream": None if self._stream is None else (1 if self._stream == 0 else self._stream)}
        if typestr.startswith(("<V", "|V")):
            d["descr"] = [("", typestr)]
        return d

    def __dlpack_device__(self):
        return (kDLCUDA, self.device_id)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        if copy:
            raise BufferError("DeviceArray.__dlpack__ cannot copy (copy=True)")
        if dl_device is not None and tuple(dl_device) != (kDLCUDA, self.device_id):
            raise BufferError(f"DeviceArray lives on CUDA device {self.device_id}, not {tuple(dl_device)}")
        if stream is not None and stream != -1 and self._stream is not None and _cuda._state.ok:
            consumer = 0 if stream == 1 else int(stream)
            if consumer != self._stream:
                _cuda.Stream(handle=self._stream).synchronize()
        versioned = max_version is not None and tuple(max_version)[0] >= 1
        return _export_capsule(self, versioned)


# ============================================================================ constructors
def to_device(x, dtype=None, stream=None) -> DeviceArray:
    """A DeviceArray holding `x`: a NumPy array, tile.Array, or anything `tile.asarray` accepts
    (copied), or a GPU tensor with `__cuda_array_interface__` / `__dlpack__` (shared, not copied).
    `dtype` converts host data (rounding as `tile.asarray`); a DeviceArray is returned as is."""
    if isinstance(x, DeviceArray):
        if dtype is not None and _dtype(dtype) != x.dtype:
            raise TypeError(f"to_device cannot convert a {x.dtype} DeviceArray to {dtype} on the device")
        return x
    if not isinstance(x, (np.ndarray, np.generic, Array)) and (
            hasattr(x, "__cuda_array_interface__") or _dlpack_on_gpu(x)):
        info = extract_tensor(x, "x", dtype, None, align=1)
        return DeviceArray(info.shape, info.dtype, ptr=info.ptr, strides=info.strides, owner=x)
    a = asarray(x, dtype)
    out = DeviceArray(a.shape, a.dtype)
    data = np.ascontiguousarray(a.data)
    _cuda.memcpy_htod(out.ptr, data, out.nbytes, stream)
    return out


def _dlpack_on_gpu(x) -> bool:
    dev = getattr(x, "__dlpack_device__", None)
    if dev is None or not hasattr(x, "__dlpack__"):
        return False
    try:
        return int(dev()[0]) in _GPU_DEVICES
    except Exception:                            # noqa: BLE001
        return False


def empty(shape, dtype) -> DeviceArray:
    """An uninitialised DeviceArray."""
    if isinstance(shape, int):
        shape = (shape,)
    return DeviceArray(shape, dtype)


def zeros(shape, dtype) -> DeviceArray:
    a = empty(shape, dtype)
    _cuda.memset_d8(a.ptr, 0, a.nbytes)
    _cuda.synchronize()
    return a


def empty_like(a) -> DeviceArray:
    return empty(tuple(a.shape), a.dtype if isinstance(a, (DeviceArray, Array)) else _dtype_of_any(a))


def gpu_tensor_dtype(obj) -> DType | None:
    """The tilec dtype of a GPU tensor argument (DeviceArray, torch tensor, DLPack or CUDA-array-interface
    object) without touching its memory; None if it cannot be told."""
    if isinstance(obj, DeviceArray):
        return obj.dtype
    if _is_torch_tensor(obj):
        name = _TORCH_DTYPES.get(str(obj.dtype))
        return _dtype(name) if name else None
    try:
        cai = getattr(obj, "__cuda_array_interface__", None)
    except Exception:                                # noqa: BLE001 - torch bf16 raises here
        cai = None
    if cai is not None:
        try:
            return _cai_dtype(cai["typestr"], cai.get("descr"), None, "argument")
        except (TypeError, ValueError):
            return None
    return None


def _dtype_of_any(a) -> DType:
    from .arrays import dtype_of
    return dtype_of(a)


# ============================================================================== extract_tensor
class TensorInfo(NamedTuple):
    ptr: int
    shape: tuple
    strides: tuple            # in elements
    dtype: DType


_TYPESTR = {"f": {2: "f16", 4: "f32", 8: "f64"}, "i": {1: "i8", 2: "i16", 4: "i32", 8: "i64"},
            "u": {1: "u8", 2: "u16", 4: "u32", 8: "u64"}}


def _cai_dtype(typestr: str, descr, expected: DType | None, name: str) -> DType:
    """tilec dtype of a __cuda_array_interface__ typestr ('<f4', '<V2' for bf16, '|V1' for fp8)."""
    ts = typestr.strip()
    if len(ts) < 3 or ts[0] not in "<>|=":
        raise TypeError(f"parameter '{name}': unreadable typestr {typestr!r}")
    if ts[0] == ">":
        raise TypeError(f"parameter '{name}': big-endian data ({typestr!r}) is not supported")
    kind, size = ts[1], int(ts[2:])
    if kind in _TYPESTR and size in _TYPESTR[kind]:
        return _dtype(_TYPESTR[kind][size])
    if kind == "b" and size == 1:
        raise TypeError(f"parameter '{name}': got a bool tensor with one byte per element ({typestr!r}); "
                        f"tilec's i1 tensors are packed 8 per byte: pass u8 data to a u8 parameter, or "
                        f"pack it with tile.asarray(x, 'i1')")
    if kind == "V":
        label = ""
        if descr and isinstance(descr, (list, tuple)) and descr and isinstance(descr[0], (list, tuple)):
            label = str(descr[0][0]).lower()
        if size == 2 and (label in ("bfloat16", "bf16") or label == "" and (expected is None or expected.name == "bf16")):
            return _dtype("bf16")
        if size == 1 and expected is not None and expected.is_float and expected.bits == 8:
            return expected                      # '|V1' is every fp8 flavour: trust the parameter
        if size == 1 and label:
            try:
                return _dtype(label)
            except ValueError:
                pass
        raise TypeError(f"parameter '{name}': opaque typestr {typestr!r} cannot be read as "
                        f"{expected if expected is not None else 'a tilec dtype'}")
    raise TypeError(f"parameter '{name}': typestr {typestr!r} has no tilec equivalent")


def _sync_producer(stream_field, consumer_stream):
    """__cuda_array_interface__ v3: the producer's pending work (on stream `stream_field`: 1 = the
    legacy default stream, 2 = per-thread default, else a handle) must be visible to the launch.
    Different streams: wait for the producer's stream on the host (simple and safe)."""
    if stream_field is None or not _cuda._state.ok:
        return
    h = int(stream_field)
    producer = 0 if h == 1 else h
    if producer == _cuda.stream_handle(consumer_stream):
        return
    cu = _cuda._state.cu
    _cuda._check(cu.cuStreamSynchronize(cu.CUstream(producer)), "cuStreamSynchronize")


def extract_tensor(obj, param_name: str, expected_dtype=None, expected_rank: int | None = None, align: int = 16,
                   *, stream=None, keep: list | None = None) -> TensorInfo:
    """(ptr, shape, strides in elements, dtype) of a GPU tensor argument.

    Accepts a DeviceArray, an object with `__cuda_array_interface__`, or one with `__dlpack__`
    (or a raw DLPack capsule). Checks: dtype == expected_dtype (TypeError), rank == expected_rank,
    the memory is on a CUDA device, the base address is `align`-byte aligned (ValueError) — each
    message names the parameter. DLPack capsules are consumed; their deleter runs when `keep` (a
    list that must outlive the launch call) is released, or at once if `keep` is None (the producer
    object `obj` itself keeps the memory alive)."""
    want = None if expected_dtype is None else _dtype(expected_dtype)
    name = param_name
    if isinstance(obj, DeviceArray):
        ptr, shape, strides, dt = obj.ptr, obj.shape, obj.strides, obj.dtype
    elif type(obj) in _TORCH_TYPES or _is_torch_tensor(obj):
        ptr, shape, strides, dt = _torch_tensor(obj, name, want)
    elif isinstance(obj, (np.ndarray, np.generic, Array)):
        raise ValueError(f"parameter '{name}': got a host {type(obj).__name__}; pass a GPU tensor "
                         f"(tile.to_device(x)) or let tile.launch copy host arrays")
    elif hasattr(obj, "__cuda_array_interface__") and not _prefer_dlpack(obj, want):
        try:
            cai = obj.__cuda_array_interface__
        except Exception as e:                   # noqa: BLE001 - e.g. torch bf16 raises here
            if hasattr(obj, "__dlpack__"):
                return _from_dlpack(obj, name, want, expected_rank, align, stream, keep)
            raise TypeError(f"parameter '{name}': __cuda_array_interface__ failed: {e}") from None
        if cai.get("mask") is not None:
            raise ValueError(f"parameter '{name}': masked arrays are not supported")
        dt = _cai_dtype(cai["typestr"], cai.get("descr"), want, name)
        shape = tuple(int(s) for s in cai["shape"])
        ptr = int(cai["data"][0] or 0)
        st = cai.get("strides")
        item = max(dt.bits // 8, 1)
        if st is None:
            strides = _contiguous_strides(shape)
        else:
            if any(int(s) % item for s in st):
                raise ValueError(f"parameter '{name}': byte strides {tuple(st)} are not multiples of the "
                                 f"element size ({item} bytes)")
            strides = tuple(int(s) // item for s in st)
        _sync_producer(cai.get("stream"), stream)
    elif hasattr(obj, "__dlpack__") or type(obj).__name__ == "PyCapsule":
        return _from_dlpack(obj, name, want, expected_rank, align, stream, keep)
    else:
        raise TypeError(f"parameter '{name}' expects a tensor (DeviceArray, NumPy array, or an object with "
                        f"__cuda_array_interface__ / __dlpack__), got {type(obj).__name__}")
    return _validate(name, ptr, shape, strides, dt, want, expected_rank, align)


# torch tensors: read directly (data_ptr/shape/stride), ~20x cheaper than torch's Python-level
# __cuda_array_interface__ or __dlpack__. torch is never imported here: the type is recognised by name.
_TORCH_TYPES: set = set()
_TORCH_DTYPES = {"torch.float32": "f32", "torch.float16": "f16", "torch.bfloat16": "bf16", "torch.float64": "f64",
                 "torch.int8": "i8", "torch.int16": "i16", "torch.int32": "i32", "torch.int64": "i64",
                 "torch.uint8": "u8", "torch.uint16": "u16", "torch.uint32": "u32", "torch.uint64": "u64",
                 "torch.float8_e4m3fn": "f8e4m3fn", "torch.float8_e5m2": "f8e5m2",
                 "torch.float8_e8m0fnu": "f8e8m0fnu"}
_TORCH_DTYPE_CACHE: dict = {}


def _is_torch_tensor(obj) -> bool:
    t = type(obj)
    if (t.__module__, t.__name__) in (("torch", "Tensor"), ("torch.nn.parameter", "Parameter")):
        _TORCH_TYPES.add(t)
        return True
    return False


def _torch_dtype(tdt, name):
    dt = _TORCH_DTYPE_CACHE.get(tdt)
    if dt is None:
        key = str(tdt)
        if key == "torch.bool":
            raise TypeError(f"parameter '{name}': got a bool tensor with one byte per element; tilec's i1 tensors "
                            f"are packed 8 per byte: pass it as torch.uint8 to a u8 parameter")
        if key not in _TORCH_DTYPES:
            raise TypeError(f"parameter '{name}': {key} has no tilec equivalent")
        dt = _TORCH_DTYPE_CACHE[tdt] = _dtype(_TORCH_DTYPES[key])
    return dt


def _torch_tensor(obj, name, want):
    if not obj.is_cuda:
        raise ValueError(f"parameter '{name}': the tensor is on {obj.device}; a kernel needs GPU memory: move it "
                         f"to the GPU (.cuda()) or pass a NumPy array to have it copied")
    if _cuda._state.ok and _cuda._state.device_count > 1 and obj.get_device() != _cuda._state.device.ordinal:
        raise ValueError(f"parameter '{name}': the tensor is on cuda:{obj.get_device()}, the kernel runs on device "
                         f"{_cuda._state.device.ordinal}")
    return obj.data_ptr(), tuple(obj.shape), tuple(obj.stride()), _torch_dtype(obj.dtype, name)


_ML_DTYPES = {"bf16": "bfloat16", "f8e4m3fn": "float8_e4m3fn", "f8e5m2": "float8_e5m2",
              "f8e8m0fnu": "float8_e8m0fnu"}


def torch_host_view(obj, name: str = "argument") -> np.ndarray:
    """A NumPy array sharing memory with a CPU torch tensor (same shape and strides), so a launch in the
    interpreter writes into the tensor itself (GPU launches refuse CPU tensors: move them). bf16
    and fp8 tensors come out as ml_dtypes arrays (their bits reinterpreted, nothing converted); those
    need the ml_dtypes package. torch is read from the tensor, not imported."""
    t = obj.detach() if getattr(obj, "requires_grad", False) else obj
    dt = _torch_dtype(t.dtype, name)
    if dt.name not in _ML_DTYPES:
        return t.numpy()
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError(f"parameter '{name}': a CPU {t.dtype} tensor is read in place as an ml_dtypes array: "
                        f"install ml_dtypes, or move the tensor to the GPU") from None
    import sys
    torch = sys.modules[type(obj).__module__.split(".")[0]]
    raw = torch.int16 if dt.bits == 16 else torch.uint8
    return t.view(raw).numpy().view(getattr(ml_dtypes, _ML_DTYPES[dt.name]))


def _prefer_dlpack(obj, want) -> bool:
    """torch exposes __cuda_array_interface__ but raises on bf16 there: go through DLPack for bf16."""
    return want is not None and want.name == "bf16" and hasattr(obj, "__dlpack__")


def _validate(name, ptr, shape, strides, dt, want, rank, align) -> TensorInfo:
    if want is not None and dt != want:
        raise TypeError(f"parameter '{name}' expects a {want} tensor, got {dt}")
    if rank is not None and len(shape) != rank:
        raise ValueError(f"parameter '{name}' expects a rank-{rank} tensor, got rank {len(shape)} (shape {shape})")
    if align and align > 1 and math.prod(shape) != 0 and ptr % align:
        raise ValueError(f"parameter '{name}': base address 0x{ptr:x} is not {align}-byte aligned, which the "
                         f"compiled kernel assumes; pass a tensor whose data starts on a {align}-byte boundary "
                         f"(e.g. a fresh or .contiguous() one, not an offset slice)")
    return TensorInfo(ptr, tuple(shape), tuple(strides), dt)


def _from_dlpack(obj, name, want, rank, align, stream, keep) -> TensorInfo:
    if type(obj).__name__ == "PyCapsule":
        cap, producer = obj, None
    else:
        dev = None
        if hasattr(obj, "__dlpack_device__"):
            try:
                dev = tuple(int(v) for v in obj.__dlpack_device__())
            except Exception:                    # noqa: BLE001
                dev = None
        if dev is not None and dev[0] not in _GPU_DEVICES:
            raise ValueError(f"parameter '{name}': the tensor is in {_DEVICE_NAMES.get(dev[0], dev[0])} memory "
                             f"(DLPack device {dev[0]}); a kernel needs GPU memory: move it to the GPU or pass a "
                             f"NumPy array to have it copied")
        kw = {}
        if dev is not None:
            h = _cuda.stream_handle(stream)
            kw["stream"] = 1 if h == 0 else h       # DLPack: 1 = legacy default stream
        try:
            cap = obj.__dlpack__(**kw)
        except TypeError:
            cap = obj.__dlpack__()
        producer = obj
    info, owner = parse_dlpack_capsule(cap, consume=True)
    if owner is not None and producer is None:
        owner.keep = cap
    try:
        if info.device_type not in _GPU_DEVICES:
            raise ValueError(f"parameter '{name}': the tensor is in {_DEVICE_NAMES.get(info.device_type, info.device_type)} "
                             f"memory (DLPack device {info.device_type}); a kernel needs GPU memory")
        if info.device_type == kDLCUDA and _cuda._state.ok and info.device_id != _cuda._state.device.ordinal:
            raise ValueError(f"parameter '{name}': the tensor is on CUDA device {info.device_id}, the kernel runs on "
                             f"device {_cuda._state.device.ordinal}")
        if info.dtype is None:
            raise TypeError(f"parameter '{name}'" + (f" expects a {want} tensor" if want is not None else "")
                            + f", got {info.dtype_error}")
        out = _validate(name, info.ptr, info.shape, info.strides, info.dtype, want, rank, align)
    except Exception:
        if owner is not None:
            owner.release()
        raise
    if owner is not None:
        if keep is not None:
            keep.append(owner)
        else:
            owner.release()
    return out
