"""Host tensors of any tilec dtype, and the dtype of a launch argument.

`Array` holds a C-contiguous tensor of one tilec dtype in the same storage the device uses:

* sub-byte dtypes (int1..int7, uint1..uint7, i1/bool, f6e3m2, f4e2m1, ...): one 1-D uint8 buffer of
  codes packed densely, LSB-first (`tile.ir.numerics.pack`): element i of the flattened tensor is
  bits [i*bits, (i+1)*bits) of the buffer;
* 8/16/32/64-bit dtypes with a NumPy equivalent (f16 f32 f64 i8..i64 u8..u64): a NumPy array of that
  dtype;
* other 8/16-bit dtypes (bf16, f8e4m3fn, f8e5m2, f8e3m4, ...): a NumPy array of their codes (uint8 /
  uint16), i.e. the raw bit patterns.

    w = tile.asarray(np.random.randn(64, 32), "int4")   # rounded (half to even) and saturated
    w.numpy()     # the decoded values (int64 here)
    w.codes()     # the 4-bit codes, one per element (uint8)
    w.data        # the 1024 packed bytes

`dtype_of(obj)` names the tilec dtype of a kernel argument: an Array's own, or that of a NumPy array
(native dtypes and the ml_dtypes ones, recognized by name so ml_dtypes is not imported here).
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import numerics
from ..ir.dtypes import DType, dtype as _dtype

__all__ = ["Array", "asarray", "from_codes", "from_packed", "dtype_of", "native_numpy_dtype", "value_dtype"]

# tilec dtype name -> NumPy dtype that holds exactly its values with the same bits.
_NATIVE = {"f16": np.float16, "f32": np.float32, "f64": np.float64,
           "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64,
           "u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "u64": np.uint64}

# NumPy / ml_dtypes dtype name -> tilec dtype name. ml_dtypes types whose semantics differ from every
# tilec type (float8_e4m3fnuz, float8_e5m2fnuz, float8_e4m3b11fnuz, and the IEEE-like
# float8_e4m3 / float8_e3m4, which have infinities where tilec's f8e4m3/f8e3m4 do not) are refused.
_NUMPY_NAMES = {
    "float16": "f16", "float32": "f32", "float64": "f64",
    "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64",
    "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64", "bool": "i1",
    "bfloat16": "bf16", "float8_e4m3fn": "f8e4m3fn", "float8_e5m2": "f8e5m2", "float8_e8m0fnu": "f8e8m0fnu",
    "float6_e3m2fn": "f6e3m2", "float6_e2m3fn": "f6e2m3", "float4_e2m1fn": "f4e2m1",
    "int4": "int4", "uint4": "uint4", "int2": "int2", "uint2": "uint2", "int1": "int1", "uint1": "uint1",
}


def native_numpy_dtype(dt: DType | str):
    """The NumPy dtype storing `dt` natively (same bits), or None (bf16, fp8, sub-byte types)."""
    nd = _NATIVE.get(_dtype(dt).name)
    return None if nd is None else np.dtype(nd)


def value_dtype(dt: DType | str) -> np.dtype:
    """The NumPy dtype that holds every value of `dt` exactly: float32 for floats of up to 32 bits,
    float64 for f64, uint64 for u64, int64 for every other integer type and bool (i1)."""
    from ..ir.folding import working_dtype
    return working_dtype(_dtype(dt))


def _shape_tuple(shape) -> tuple:
    if np.isscalar(shape):
        return (int(shape),)
    return tuple(int(s) for s in shape)


class Array:
    """A C-contiguous host tensor of one tilec dtype (see the module docstring for its storage).

    Attributes: `dtype` (DType), `shape`, `strides` (in elements), `ndim`, `size`, `nbits`, `nbytes`,
    `data` (the storage itself). Methods: `numpy()` (decoded values), `codes()` (raw codes, one per
    element), `copy()`, `astype(dtype)`.
    """
    __slots__ = ("dtype", "shape", "_data")

    def __init__(self, data: np.ndarray, dtype: DType | str, shape):
        """Low level: wrap `data` already in this dtype's storage form. Prefer `asarray`/`from_codes`."""
        self.dtype = _dtype(dtype)
        self.shape = _shape_tuple(shape)
        n = math.prod(self.shape)
        if self.dtype.bits < 8:
            data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
            need = (n * self.dtype.bits + 7) // 8
            if data.size != need:
                raise ValueError(f"{n} elements of {self.dtype} need {need} packed bytes, got {data.size}")
        else:
            want = native_numpy_dtype(self.dtype) or numerics.code_dtype(self.dtype)
            data = np.asarray(data)
            if data.dtype != want:
                raise TypeError(f"storage of {self.dtype} must be {want}, got {data.dtype}")
            data = np.array(data, order="C").reshape(self.shape)
        self._data = data

    # ----------------------------------------------------------------- geometry
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def strides(self) -> tuple:
        """C-contiguous strides counted in elements (also for sub-byte dtypes)."""
        st, acc = [], 1
        for d in reversed(self.shape):
            st.append(acc)
            acc *= d
        return tuple(reversed(st))

    @property
    def nbits(self) -> int:
        return self.size * self.dtype.bits

    @property
    def nbytes(self) -> int:
        return (self.nbits + 7) // 8

    @property
    def data(self) -> np.ndarray:
        """The storage: packed uint8 bytes (sub-byte dtypes) or the shaped native/code array."""
        return self._data

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d Array")
        return self.shape[0]

    # ----------------------------------------------------------------- contents
    def codes(self) -> np.ndarray:
        """The raw codes, shaped like the array, in `numerics.code_dtype(dtype)` (uint8 for <= 8 bits)."""
        if self.dtype.bits < 8:
            return numerics.unpack(self._data, self.dtype.bits, self.size).reshape(self.shape)
        cd = numerics.code_dtype(self.dtype)
        return self._data.view(cd).copy() if self._data.dtype != cd else self._data.copy()

    def numpy(self) -> np.ndarray:
        """The decoded values (a new array): float32 for floats of up to 32 bits, float64 for f64,
        bool for i1, uint64 for u64 and int64 for every other integer type."""
        nd = native_numpy_dtype(self.dtype)
        if self.dtype.kind == "bool":
            return self.codes().astype(bool)
        if nd is not None:
            return self._data.astype(value_dtype(self.dtype))
        return numerics.decode(self.codes(), self.dtype).astype(value_dtype(self.dtype))

    def __array__(self, dtype=None, copy=None):
        v = self.numpy()
        return v if dtype is None else v.astype(dtype)

    def copy(self) -> "Array":
        return Array(self._data.copy(), self.dtype, self.shape)

    def astype(self, dtype) -> "Array":
        """A value conversion (round to nearest even / saturate, bit-exact as `numerics.encode`)."""
        return asarray(self.numpy(), dtype)

    def _set_codes(self, codes) -> None:
        """Overwrite the contents with `codes` (shape must match)."""
        codes = np.asarray(codes)
        if codes.shape != self.shape:
            raise ValueError(f"codes of shape {codes.shape} for an Array of shape {self.shape}")
        self._data = _storage_from_codes(codes, self.dtype)

    def _set_values(self, values) -> None:
        """Overwrite the contents with `values`, each rounded to the dtype (exact if representable)."""
        values = np.asarray(values)
        if values.shape != self.shape:
            raise ValueError(f"values of shape {values.shape} for an Array of shape {self.shape}")
        nd = native_numpy_dtype(self.dtype)
        if nd is not None and _exact_native(values.dtype, nd):
            self._data = values.astype(nd, order="C")
        else:
            self._set_codes(numerics.encode(values, self.dtype))

    def __repr__(self) -> str:
        with np.printoptions(threshold=64, edgeitems=3):
            body = np.array2string(self.numpy(), separator=", ", prefix="tile.Array(")
        return f"tile.Array({body}, dtype={self.dtype.name}, shape={self.shape})"


def _exact_native(src: np.dtype, nd: np.dtype) -> bool:
    """Whether astype(src -> nd) is itself the tilec conversion (same value class, no rounding that
    numerics would do differently): float->float of the same or larger width via NumPy's RNE, and
    integer->integer of the same kind where the values already fit (checked by the caller's contract:
    used only for values that are already of the type)."""
    src, nd = np.dtype(src), np.dtype(nd)
    if src == nd:
        return True
    if src.kind == "f" and nd.kind == "f":
        return True          # NumPy float narrowing rounds to nearest even and overflows to inf
    return False


def _storage_from_codes(codes: np.ndarray, dt: DType) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype.kind not in "biu":
        raise TypeError(f"codes must be integers, got {codes.dtype}")
    if dt.bits < 8:
        return numerics.pack(codes.reshape(-1), dt.bits)
    cd = numerics.code_dtype(dt)
    if codes.size and dt.bits < 64:
        c = codes.astype(np.int64) if codes.dtype.kind != "u" else codes
        if c.min() < 0 or int(c.max()) >> dt.bits:
            raise ValueError(f"a code does not fit in {dt.bits} bits")
    c = codes.astype(cd, order="C")
    nd = native_numpy_dtype(dt)
    return c.view(nd) if nd is not None else c


def from_codes(codes, dtype, shape=None) -> Array:
    """An Array from raw codes (one per element, each in [0, 2**bits)); `shape` defaults to theirs."""
    dt = _dtype(dtype)
    codes = np.asarray(codes)
    shape = codes.shape if shape is None else _shape_tuple(shape)
    codes = codes.reshape(shape)
    return Array(_storage_from_codes(codes, dt), dt, shape)


def from_packed(data, dtype, shape) -> Array:
    """An Array over densely packed bytes (LSB-first), e.g. read from a file or a device buffer."""
    dt = _dtype(dtype)
    shape = _shape_tuple(shape)
    n = math.prod(shape)
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else \
        np.asarray(data).reshape(-1).view(np.uint8)
    need = (n * dt.bits + 7) // 8
    if buf.size < need:
        raise ValueError(f"{n} elements of {dt} need {need} bytes, got {buf.size}")
    if dt.bits < 8:
        return Array(buf[:need].copy(), dt, shape)
    return from_codes(numerics.unpack(buf, dt.bits, n), dt, shape)


def asarray(x, dtype=None) -> Array:
    """An Array of `dtype` (a name such as "int4" or a DType) holding `x`'s values rounded to it
    (nearest even, saturating / overflowing as `tile.ir.dtypes` says; bit-exact, `numerics.encode`).

    `x` may be an Array (returned as is when no other dtype is asked for), a NumPy array (native or
    ml_dtypes dtype), anything `np.asarray` accepts, or a Python scalar. Without `dtype`, the dtype is
    `dtype_of(x)` (so a float64 NumPy array becomes f64, a Python list of floats too)."""
    if isinstance(x, Array):
        if dtype is None or _dtype(dtype) == x.dtype:
            return x
        return x.astype(dtype)
    a = np.asarray(x)
    dt = dtype_of(a) if dtype is None else _dtype(dtype)
    out = Array.__new__(Array)
    out.dtype, out.shape = dt, tuple(a.shape)
    nd = native_numpy_dtype(dt)
    if nd is not None and (a.dtype == nd or (a.dtype.kind == "f" and nd.kind == "f" and a.dtype.itemsize <= 8)):
        out._data = a.astype(nd, order="C")       # same type, or NumPy's RNE float narrowing
    elif _NUMPY_NAMES.get(a.dtype.name) == dt.name:
        out._data = _storage_from_codes(_codes_of_numpy(a, dt), dt)   # already of the dtype: bit copy
    else:
        out._data = _storage_from_codes(numerics.encode(a, dt), dt)
    return out


def _codes_of_numpy(a: np.ndarray, dt: DType) -> np.ndarray:
    """Codes of a NumPy array that already holds dtype `dt` (native or ml_dtypes), bit for bit."""
    if a.dtype.kind == "b":
        return a.astype(np.uint8)
    item = a.dtype.itemsize
    raw = np.array(a, order="C").view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[item])
    if dt.bits < 8:
        raw = raw & np.uint8((1 << dt.bits) - 1)       # ml_dtypes int4 & co. may sign-extend
    return raw.astype(numerics.code_dtype(dt))


def dtype_of(obj) -> DType:
    """The tilec dtype of a launch argument or NumPy dtype.

    Array -> its dtype; NumPy arrays, scalars and dtypes: float16/32/64 -> f16/f32/f64, int8..int64 ->
    i8..i64, uint8..uint64 -> u8..u64, bool -> i1, and the ml_dtypes types by name (bfloat16 -> bf16,
    float8_e4m3fn -> f8e4m3fn, float8_e5m2 -> f8e5m2, float8_e8m0fnu -> f8e8m0fnu, float6_e3m2fn -> f6e3m2, float6_e2m3fn ->
    f6e2m3, float4_e2m1fn -> f4e2m1, int4/uint4/int2/uint2/int1/uint1). Python scalars: bool -> i1,
    int -> i32, float -> f32 (the language's runtime scalar types). Anything else raises TypeError."""
    if isinstance(obj, Array):
        return obj.dtype
    if isinstance(obj, DType):
        return obj
    if isinstance(obj, bool):
        return _dtype("i1")
    if isinstance(obj, int):
        return _dtype("i32")
    if isinstance(obj, float):
        return _dtype("f32")
    if isinstance(obj, np.dtype):
        nd = obj
    elif isinstance(obj, (np.ndarray, np.generic)):
        nd = obj.dtype
    elif isinstance(obj, type) and issubclass(obj, np.generic):
        nd = np.dtype(obj)
    elif hasattr(obj, "__cuda_array_interface__"):
        nd = np.dtype(obj.__cuda_array_interface__["typestr"])
    else:
        raise TypeError(f"cannot tell the tilec dtype of {type(obj).__name__} (pass a NumPy array, "
                        f"a tile.Array or a Python scalar)")
    name = _NUMPY_NAMES.get(nd.name)
    if name is None:
        raise TypeError(f"NumPy dtype {nd.name!r} has no tilec equivalent")
    return _dtype(name)
