"""How the benchmark times a call (torch CUDA events; torch is passed in, not imported here):

* each call is timed on its own with a pair of CUDA events; after a warm-up (`warmup` calls and at
  least `warm_s` seconds) the median of `reps` calls is reported, with min / p20 / p80 / max;
* before each chunk of timed calls a spin kernel (`torch.cuda._sleep`), sized from the host's
  measured enqueue time, keeps the GPU busy while Python enqueues the chunk: the event pairs then
  measure the kernels, not launch overhead (reported separately as host_us);
* L2: calls rotate over `nsets` input copies (call i uses copy i % nsets), chosen by `nsets()` so
  that more than 3 x L2 is touched between two uses of one copy; where one set must be reused and
  fits in L2, `flush=True` overwrites a 2 x L2 buffer between calls (outside the events).
"""
from __future__ import annotations

import math
import time

from .common import MAX_ROTATION_BYTES, MAX_SETS, ROTATE_L2_FACTOR


def nsets_for(set_bytes: int, l2_bytes: int) -> int:
    """Input copies to rotate over so that > ROTATE_L2_FACTOR x L2 is touched between two uses of one."""
    target = ROTATE_L2_FACTOR * l2_bytes
    if set_bytes >= target:
        return 1
    n = max(2, math.ceil(target / max(set_bytes, 1)) + 1)
    return int(min(MAX_SETS, n, max(1, MAX_ROTATION_BYTES // max(set_bytes, 1))))


class Timer:
    """CUDA-event timing of one call at a time, median of `reps` (module docstring)."""

    def __init__(self, torch, mode, l2_bytes: int = 50 << 20):
        self.torch = torch
        self.reps, self.warmup, self.warm_s = mode["reps"], mode["warmup"], mode["warm_s"]
        self.max_sleep_ms = 25.0
        self.l2_bytes = l2_bytes
        self._flush_buf = None
        self.cycles_per_ms = self._calibrate()

    def _calibrate(self):
        torch = self.torch
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(10_000)
        torch.cuda.synchronize()
        n = 4_000_000
        s.record()
        torch.cuda._sleep(n)
        e.record()
        e.synchronize()
        ms = s.elapsed_time(e)
        return n / ms if ms > 0 else 1.5e6

    def _flush(self):
        if self._flush_buf is None:
            self._flush_buf = self.torch.empty(2 * self.l2_bytes, dtype=self.torch.uint8, device="cuda")
        self._flush_buf.zero_()

    def measure(self, fn, nsets=1, max_s=30.0, flush=False) -> dict:
        torch = self.torch
        host = []
        i = 0
        t_end = time.perf_counter() + self.warm_s
        while i < self.warmup or (time.perf_counter() < t_end and i < 50):
            h0 = time.perf_counter()
            fn(i % nsets)
            host.append(time.perf_counter() - h0)
            i += 1
        torch.cuda.synchronize()
        host_ms = sorted(host)[len(host) // 2] * 1e3
        # one timed call to size the run: fewer reps when a call is so slow that reps would blow max_s
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn(i % nsets)
        e.record()
        e.synchronize()
        i += 1
        est_ms = s.elapsed_time(e)
        reps = self.reps
        if est_ms * reps > max_s * 1e3:
            reps = max(3, int(max_s * 1e3 / max(est_ms, 1e-3)))
        per_call_host = host_ms * 1.5 + 0.02 + (0.05 if flush else 0.0)
        per_chunk = max(1, min(reps, int((self.max_sleep_ms - 0.3) / per_call_host)))
        times = []
        while len(times) < reps:
            n = min(per_chunk, reps - len(times))
            evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
            sleep_ms = min(self.max_sleep_ms, 0.3 + n * per_call_host)
            torch.cuda._sleep(int(self.cycles_per_ms * sleep_ms))
            for s, e in evs:
                if flush:
                    self._flush()
                s.record()
                fn(i % nsets)
                e.record()
                i += 1
            torch.cuda.synchronize()
            times.extend(s.elapsed_time(e) for s, e in evs)
        times.sort()
        q = lambda f: times[min(len(times) - 1, int(f * (len(times) - 1) + 0.5))]   # noqa: E731
        med = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
        return {"ms": med, "min_ms": times[0], "p20_ms": q(0.2), "p80_ms": q(0.8), "max_ms": times[-1],
                "reps": len(times), "nsets": nsets, "host_us": host_ms * 1e3, "l2_flush": bool(flush)}


def rel_err(torch, out, ref):
    """(||out - ref|| / ||ref||, all finite) with out upcast to f32; NaN never passes."""
    o = out.float()
    if not bool(torch.isfinite(o).all().item()):
        return float("nan"), False
    num = float(torch.linalg.vector_norm(o - ref).item())
    den = float(torch.linalg.vector_norm(ref).item())
    return (num / den if den > 0 else (0.0 if num == 0 else float("inf"))), True
