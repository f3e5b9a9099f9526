"""TMA tensor maps for kernel launches: built from a tensor argument and a `tmap` parameter of the
kernel ABI (ir/artifact.py: box, swizzle, element type), cached, handed to the launch by address.

    addr = tensor_map(spec, ptr, shape, strides)     # spec = TensorMapSpec.of(param, bits)

A tensor map (`CUtensorMap`) is 128 opaque bytes that the driver encodes from the tensor's base,
sizes, strides and the box (`runtime/cuda.encode_tensor_map`, ~microseconds); a launch passes it by
value (the driver copies the 128 bytes into the kernel's parameter space when the launch is made).
Maps are cached per (pointer, element type, shape, strides, box, swizzle), so a repeated launch on
the same tensors costs one dict lookup per map; the bytes live in 64-byte aligned buffers owned by
the cache. The cache keeps two generations of at most `CAPACITY` entries each: when the current one
fills up it becomes the old one (whose entries are promoted back when used again) and the oldest
generation is dropped. A map handed out therefore stays alive for at least `CAPACITY` further
insertions -- far longer than the launch call that reads it.

What a tensor must satisfy (`ir.artifact.tensor_map_ok`) is checked on a cache miss: a tensor that
violates it raises a ValueError naming the parameter (never a driver error). An empty tensor (a
size-0 dim) has no valid map: its map describes a one-element zero tensor instead (every element a
copy reads is outside the real tensor, hence zero, exactly what the map then gives).
"""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

from ..ir.artifact import TMAP_ALIGN, TMAP_BYTES, tensor_map_ok
from ..ir.dtypes import dtype as _dtype
from . import cuda as _cuda

__all__ = ["TensorMapSpec", "tensor_map", "clear", "stats", "CAPACITY"]

CAPACITY = 4096

_LOCK = threading.Lock()
_CURRENT: dict = {}
_OLD: dict = {}
_STATS = {"misses": 0}
_ZERO: dict = {}             # context -> device buffer of zeros (the base of empty tensors' maps)


@dataclass(frozen=True)
class TensorMapSpec:
    """What of a tensor map is fixed by the kernel: the parameter it comes from, the element width
    and type name, the box (outermost first) and the swizzle span in bytes."""
    param: str
    dtype: str
    bits: int
    box: tuple
    swizzle: int

    def __post_init__(self):
        object.__setattr__(self, "_hash", hash((self.param, self.dtype, self.bits, self.box, self.swizzle)))

    def __hash__(self):                  # computed once: it is part of every cache key a launch builds
        return self._hash

    @classmethod
    def of(cls, p) -> "TensorMapSpec":
        """The spec of a `tmap` ParamABI."""
        dt = _dtype(p.dtype)
        return cls(p.source, dt.name, dt.bits, tuple(int(b) for b in p.box), int(p.swizzle))


class _Map:
    """128 bytes in a 64-byte aligned host buffer; `addr` is what the kernel parameter array holds."""
    __slots__ = ("buf", "addr")

    def __init__(self, raw: bytes):
        self.buf = ctypes.create_string_buffer(TMAP_BYTES + TMAP_ALIGN)
        base = ctypes.addressof(self.buf)
        self.addr = (base + TMAP_ALIGN - 1) // TMAP_ALIGN * TMAP_ALIGN
        ctypes.memmove(self.addr, raw, TMAP_BYTES)


def tensor_map(spec: TensorMapSpec, ptr: int, shape, strides) -> int:
    """The host address of the tensor map of `spec` for the tensor (device address `ptr`, sizes and
    strides in elements); built and cached on first use."""
    key = (ptr, shape, strides, spec)
    m = _CURRENT.get(key)
    if m is not None:
        return m.addr
    return _miss(key, spec, ptr, shape, strides)


def _miss(key, spec, ptr, shape, strides) -> int:
    global _CURRENT, _OLD
    with _LOCK:
        m = _CURRENT.get(key)
        if m is None:
            m = _OLD.get(key)
            if m is None:
                _STATS["misses"] += 1
                m = _Map(_encode(spec, int(ptr), tuple(int(d) for d in shape), tuple(int(s) for s in strides)))
            if len(_CURRENT) >= CAPACITY:
                _OLD, _CURRENT = _CURRENT, {}
            _CURRENT[key] = m
    return m.addr


def _encode(spec: TensorMapSpec, ptr: int, shape: tuple, strides: tuple) -> bytes:
    name = spec.param
    rank = len(spec.box)
    if len(shape) != rank:
        raise ValueError(f"parameter '{name}': the kernel reads it with TMA as a rank-{rank} tensor, got rank "
                         f"{len(shape)}")
    if 0 in shape:
        shape, strides, ptr = (1,) * rank, (1,) * rank, _zero_buffer()
    if ptr % 16:
        raise ValueError(f"parameter '{name}': the kernel reads it with TMA, which needs a 16-byte aligned base "
                         f"address; got 0x{ptr:x}")
    if not tensor_map_ok(shape, strides, spec.bits):
        eb = spec.bits // 8
        raise ValueError(
            f"parameter '{name}': the kernel was compiled to read it with TMA (a tensor map), which needs a unit "
            f"innermost stride and every other stride a multiple of 16 bytes; got strides {tuple(strides)} "
            f"(elements of {eb} byte{'s' * (eb != 1)}, shape {tuple(shape)}). Pass a tensor with such strides "
            f"(e.g. a contiguous one whose last dim holds a multiple of {max(16 // eb, 1)} elements), or compile "
            f"without TMA (TILEC_DISABLE=tma, or compile(..., tma=False))")
    eb = spec.bits // 8
    if any(d >= 1 << 32 for d in shape) or any(s * eb >= 1 << 40 for s in strides[:-1]):
        raise ValueError(f"parameter '{name}': shape {tuple(shape)} / strides {tuple(strides)} exceed what a "
                         f"tensor map can describe (sizes < 2^32, strides < 2^40 bytes)")
    # the stride of a size-1 dim is never used: give the driver one it accepts
    fixed = tuple(_pad16(s, spec.bits) if d == 1 and k < rank - 1 else s
                  for k, (d, s) in enumerate(zip(shape, strides)))
    return _cuda.encode_tensor_map(ptr, shape, fixed, spec.bits, spec.box, spec.swizzle, what=f"parameter '{name}'")


def _pad16(s: int, bits: int) -> int:
    """A stride (in elements) that is a positive multiple of 16 bytes, >= s."""
    per = max(16 // (bits // 8), 1)
    return max(per, (max(s, 0) + per - 1) // per * per)


def _zero_buffer() -> int:
    """A 16-byte zeroed device buffer of the current context (the base of empty tensors' maps)."""
    ctx = _cuda.current_context()
    a = _ZERO.get(ctx)
    if a is None:
        a = _ZERO[ctx] = _cuda.alloc(16)
        _cuda.memset_d8(a.ptr, 0, 16)
        _cuda.synchronize()
    return a.ptr


def clear() -> None:
    """Drop every cached tensor map (tests; memory is released as launches stop referring to it)."""
    global _CURRENT, _OLD
    with _LOCK:
        _CURRENT, _OLD = {}, {}
        _STATS.update(misses=0)


def stats() -> dict:
    """Cache counters: misses (= tensor maps encoded) and entries."""
    return dict(_STATS, entries=len(_CURRENT) + len(_OLD))
