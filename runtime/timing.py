"""Timing a kernel launch with GPU events, and keeping its arguments intact between trials -- what
the autotuner (`tile/autotuner.py`) measures configs with. Written against the driver interface
(`runtime/driver.py`: `Event`, `synchronize`, `alloc`, `memcpy_dtod`, `memset_d8`), never torch.

    t = do_bench(lambda: kernel[grid](*args), driver=cuda, warmup_ms=25, rep_ms=100, before=state.prepare)
    t.ms, t.min_ms, t.p20_ms, t.p80_ms, t.reps

How (as Triton's `do_bench`): one call (module load, first-launch work), then 5 calls timed together
give an estimate E; then max(1, warmup_ms / E) warm-up calls, and max(1, rep_ms / E) timed calls
(at most `max_reps`), each between its own pair of events. Before each timed call the L2 cache is
flushed by writing a buffer larger than it (`flush_bytes`, on the same stream: the memset keeps the
GPU busy while the host enqueues the call, so the events see the kernel, not the launch overhead)
and `before()` runs (argument restores, outside the events). The result is the median.

`ArgState(values, restore=[names], zero=[names])` saves the named tensors once (`save()`), and
`prepare()` puts them back (restore) or zeroes them (zero) before every trial call; `finish()`
leaves them as a real launch must find them: restored to the saved values, or zeroed. Tensors are
GPU tensors (a DeviceArray, torch, anything `extract_tensor` reads: copied with the driver on the
launch's stream) or host arrays (NumPy, tile.Array: copied with NumPy).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["Timing", "do_bench", "ArgState", "device_span"]


class Timing(NamedTuple):
    ms: float             # median of the timed calls
    min_ms: float
    p20_ms: float
    p80_ms: float
    max_ms: float
    reps: int

    def as_dict(self) -> dict:
        return self._asdict()


def _quantile(xs: list, q: float) -> float:
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def do_bench(fn, driver, *, warmup_ms: float = 25.0, rep_ms: float = 100.0, before=None, stream=None,
             flush=None, max_reps: int = 1000) -> Timing:
    """GPU time of `fn()` (milliseconds): see the module docstring. `flush` is a callable that evicts
    the L2 cache on `stream` (None: no flush); `before` runs before every call, outside the events."""
    prep = before or (lambda: None)
    prep()
    fn()
    driver.synchronize()
    s, e = driver.Event(), driver.Event()
    s.record(stream)
    for _ in range(5):
        prep()
        fn()
    e.record(stream)
    e.synchronize()
    est = max(s.elapsed_ms(e) / 5, 1e-4)
    n_warm = max(1, int(warmup_ms / est))
    n_rep = max(1, min(int(max_reps), int(rep_ms / est)))
    for _ in range(n_warm):
        prep()
        fn()
    evs = [(driver.Event(), driver.Event()) for _ in range(n_rep)]
    for s, e in evs:
        if flush is not None:
            flush()
        prep()
        s.record(stream)
        fn()
        e.record(stream)
    evs[-1][1].synchronize()
    times = sorted(s.elapsed_ms(e) for s, e in evs)
    n = len(times)
    med = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    return Timing(med, times[0], _quantile(times, 0.2), _quantile(times, 0.8), times[-1], n)


def l2_flusher(driver, nbytes: int, stream=None):
    """A callable that overwrites `nbytes` of a device buffer (allocated now) on `stream`."""
    buf = driver.alloc(nbytes)

    def flush():
        driver.memset_d8(buf.ptr, 0, nbytes, stream)
    flush.buffer = buf
    return flush


# ==================================================================================== arguments
def _is_host(v) -> bool:
    if type(v).__module__ == "numpy" and type(v).__name__ == "ndarray":
        return True
    from .arrays import Array
    return isinstance(v, Array)


def device_span(obj, name: str = "argument") -> tuple[int, int, bool]:
    """(address, bytes, dense) of the memory a GPU tensor covers: from its base address to its last
    element (negative strides are refused). `dense`: it covers no byte outside the tensor."""
    from .device import extract_tensor
    info = extract_tensor(obj, name, align=0)
    bits = info.dtype.bits
    if any(s < 0 for s in info.strides):
        raise ValueError(f"'{name}': a tensor with negative strides cannot be saved or reset by the autotuner")
    if math.prod(info.shape) == 0:
        return info.ptr, 0, True
    last = sum((n - 1) * s for n, s in zip(info.shape, info.strides))
    nbytes = ((last + 1) * bits + 7) // 8
    dense = nbytes == (math.prod(info.shape) * bits + 7) // 8
    return info.ptr, nbytes, dense


class ArgState:
    """Saves / restores / zeroes named tensor arguments between timed trials (module docstring)."""

    def __init__(self, values: dict, *, restore=(), zero=(), driver=None, stream=None):
        self.values, self.driver, self.stream = values, driver, stream
        self.restore, self.zero = list(restore), list(zero)
        self._saved: dict = {}
        self._spans: dict = {}
        for n in self.restore + self.zero:
            v = values.get(n)
            if v is None:
                raise ValueError(f"'{n}' is not an argument of this launch")
            if not _is_host(v):
                if driver is None:
                    raise ValueError(f"'{n}': a GPU tensor needs a driver to be saved or reset")
                ptr, nbytes, dense = device_span(v, n)
                if n in self.zero and not dense:
                    raise ValueError(f"'{n}' is a strided view: zeroing its span would write memory outside it; "
                                     f"pass a contiguous tensor, or name it in restore= instead")
                self._spans[n] = (ptr, nbytes)

    def save(self) -> None:
        for n in self.restore:
            v = self.values[n]
            if n in self._spans:
                ptr, nbytes = self._spans[n]
                buf = self.driver.alloc(nbytes)
                self.driver.memcpy_dtod(buf.ptr, ptr, nbytes, self.stream)
                self._saved[n] = buf
            else:
                self._saved[n] = _host_data(v).copy()

    def prepare(self) -> None:
        for n in self.restore:
            v = self.values[n]
            if n in self._spans:
                ptr, nbytes = self._spans[n]
                self.driver.memcpy_dtod(ptr, self._saved[n].ptr, nbytes, self.stream)
            else:
                np.copyto(_host_data(v), self._saved[n])
        for n in self.zero:
            v = self.values[n]
            if n in self._spans:
                ptr, nbytes = self._spans[n]
                self.driver.memset_d8(ptr, 0, nbytes, self.stream)
            else:
                _host_data(v)[...] = 0

    def finish(self) -> None:
        """Leave the arguments as the real launch expects them, and free the saved copies."""
        self.prepare()
        if self._spans and self.driver is not None:
            self.driver.synchronize()
        self._saved.clear()


def _host_data(v) -> np.ndarray:
    """The NumPy storage of a host array (a tile.Array's packed bytes, or the array itself)."""
    from .arrays import Array
    return v.data if isinstance(v, Array) else v
