"""The one interface the GPU drivers share: runtime/cuda.py (cuda-python) and runtime/hip.py
(hip-python) are both modules with these names, so the launcher and the arrays are written once
against `driver_for(target)`:

    init(ordinal=None) -> Device          available() -> bool          device() -> Device
    synchronize()                          alloc(nbytes) -> Allocation   memcpy_htod(dst, src, nbytes)
    memcpy_dtoh(dst, src, nbytes)          memcpy_dtod(dst, src, nbytes, stream=None)
    memset_d8(dst, value, nbytes, stream=None)                           load_module(code, name=None) -> Module
    Module.get_function(name) -> Function  Module.unload()
    Function.launch(grid, block, args, shared_bytes=0, stream=None, cluster=(1, 1, 1))
    Event(timing=True): .record(stream=None), .synchronize(), .elapsed_ms(end) -> float
    NoGPUError (raised, one line, where there is no driver or device)

`args` is the kernel parameter array of `runtime/launch.py` (void*[] of argument addresses) for both.
Events, device-to-device copies and memsets are what `runtime/timing.py` (the autotuner's timer) needs.
"""
from __future__ import annotations

import importlib

from ..ir.targets import get_target

__all__ = ["INTERFACE", "driver_for"]

INTERFACE = ("init", "available", "device", "synchronize", "alloc", "memcpy_htod", "memcpy_dtoh", "memcpy_dtod",
             "memset_d8", "load_module", "Module", "Function", "Event", "NoGPUError")

_BY_FAMILY = {"nvidia": "cuda", "amd": "hip"}


def driver_for(target):
    """The driver module for a target (a name or a Target): runtime.cuda for NVIDIA, runtime.hip for AMD."""
    t = get_target(target)
    if t.family not in _BY_FAMILY:
        raise ValueError(f"target {t.name} runs in the interpreter and has no GPU driver")
    return importlib.import_module(f"{__package__}.{_BY_FAMILY[t.family]}")
