"""Device faults and allocation failures give clear TileErrors.

CPU (mocked driver): an out-of-memory cuMemAlloc in `tile.to_device` of a huge array is a CudaError
naming cuMemAlloc, CUDA_ERROR_OUT_OF_MEMORY and the byte count; a sticky error (a kernel fault) says the
context is unusable. GPU (`-m gpu`, run in a subprocess because a fault poisons its CUDA context): an
out-of-bounds `store_scalar` under a wrong user grid is a CudaError naming the kernel and saying the
context is unusable, and a later launch in that process fails with the same kind of error (never
silently), while a fresh process works."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tile.ir.errors import TileError
from tile.runtime import cuda


class _FakeDriver:
    def __init__(self):
        from cuda.bindings import driver as cu
        self.CUresult = cu.CUresult

    def cuMemAlloc(self, n):
        return (self.CUresult.CUDA_ERROR_OUT_OF_MEMORY, 0)

    def cuGetErrorString(self, err):
        return (self.CUresult.CUDA_SUCCESS, b"out of memory")


def test_to_device_out_of_memory_is_a_clear_error(monkeypatch):
    pytest.importorskip("cuda.bindings.driver")
    import tile
    fake = _FakeDriver()
    monkeypatch.setattr(cuda, "_cu", lambda: fake)
    monkeypatch.setattr(cuda, "init", lambda *a, **k: None)
    big = np.zeros((1024, 1024), np.float32)       # "huge": the mocked driver has no memory left
    with pytest.raises(TileError) as ei:
        tile.to_device(big)
    msg = str(ei.value)
    assert isinstance(ei.value, cuda.CudaError)
    assert "cuMemAlloc" in msg and "CUDA_ERROR_OUT_OF_MEMORY" in msg and "out of memory" in msg
    assert "4194304 bytes" in msg, msg                                          # the bytes asked for
    assert not ei.value.sticky and "unusable" not in msg                        # OOM leaves the context usable


def test_sticky_errors_say_the_context_is_unusable():
    e = cuda.CudaError("cuCtxSynchronize", 700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access", "k")
    assert e.sticky and "kernel 'k'" in str(e) and "unusable" in str(e) and "restart the process" in str(e)
    e = cuda.CudaError("cuMemAlloc", 2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory")
    assert not e.sticky and "unusable" not in str(e)


FAULT_SCRIPT = textwrap.dedent('''
    import numpy as np, tile, json, sys
    from tile import i32

    @tile.kernel
    def write_past_end(Y: tile.Tensor[i32, 1]):
        i = tile.block_id(0) * 1048576            # no mask: a wrong grid writes far past the end
        tile.store_scalar(Y, (i,), i)

    @tile.kernel
    def fine(Y: tile.Tensor[i32, 1]):
        tile.store_scalar(Y, (tile.block_id(0),), 7)

    out = {}
    y = np.zeros(4, np.int32)
    if "fresh" in sys.argv:
        z = np.zeros(4, np.int32); fine[(4,)](z); assert (z == 7).all(); print("OK"); sys.exit(0)
    try:
        write_past_end[(4096,)](y)                # host array: the launch synchronizes and copies back
        out["first"] = "no error"
    except Exception as e:
        out["first"] = f"{type(e).__name__}: {e}"
        out["first_tile"] = isinstance(e, tile.TileError)
    try:
        z = np.zeros(4, np.int32)
        fine[(4,)](z)
        out["later"] = "ok" if (z == 7).all() else f"wrong result {z}"
    except Exception as e:
        out["later"] = f"{type(e).__name__}: {e}"
        out["later_tile"] = isinstance(e, tile.TileError)
    print("RESULT" + json.dumps(out))
''')


@pytest.mark.gpu
def test_kernel_fault_names_the_kernel_and_says_the_context_is_gone(tmp_path):
    from tile.kernel import gpu_arch
    if gpu_arch() is None:
        pytest.skip("no NVIDIA GPU/driver found")
    import json
    script = tmp_path / "fault.py"
    script.write_text(FAULT_SCRIPT)
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    line = [l for l in p.stdout.splitlines() if l.startswith("RESULT")]
    assert line, p.stdout + p.stderr
    r = json.loads(line[0][len("RESULT"):])
    first = r["first"]
    assert r.get("first_tile"), first                        # a TileError, not a raw driver exception
    assert "write_past_end" in first, first                  # names the kernel
    # the driver's code for the fault (the H100 reported CUDA_ERROR_INVALID_ADDRESS_SPACE for this one)
    assert any(c in first for c in ("ILLEGAL_ADDRESS", "LAUNCH_FAILED", "INVALID_ADDRESS_SPACE",
                                    "MISALIGNED_ADDRESS", "ILLEGAL_INSTRUCTION")), first
    assert "unusable" in first, first                        # and says the context is gone
    # a later launch in the same process: works (unlikely) or fails with a TileError saying so
    if r["later"] != "ok":
        assert r.get("later_tile") and "unusable" in r["later"], r["later"]
    # a fresh process works
    ok = subprocess.run([sys.executable, str(script), "fresh"], capture_output=True, text=True, timeout=300)
    assert "OK" in ok.stdout, ok.stdout + ok.stderr
