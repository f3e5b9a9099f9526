"""Host time per launch of `kernel[grid](x, y, n)` with torch-like tensors and the CUDA driver mocked
(no GPU, no torch needed): what tilec's own Python costs between the call and cuLaunchKernel.

    python benchmarks/launch_overhead_mock.py [N] [--general]

--general turns the fast path off (every launch binds, specializes and packs through the general
path), for a before/after comparison in one checkout.

The kernel is compiled for sm_90a (PTX only); module loading and the driver's launch call are
replaced by no-ops that count the calls, and torch's current-stream query (made per launch when torch
tensors are passed) by a Python function returning 0. Prints µs per launch (best of 5 runs of N launches)."""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TILEC_TARGET", "sm_90a")
os.environ.setdefault("TILEC_PTXAS_REPORT", "0")

import tile                                                    # noqa: E402
from tile import f32                                           # noqa: E402


class _DType:
    def __init__(self, name):
        self.name = name

    def __str__(self):
        return self.name

    __repr__ = __str__


float32 = _DType("torch.float32")


class Tensor:
    """Looks like a torch.Tensor to tilec (recognised by type name; read through data_ptr/shape/stride)."""
    __module__ = "torch"

    def __init__(self, n, ptr):
        self.shape = (n,)
        self._ptr = ptr
        self.dtype = float32
        self.is_cuda = True
        self.device = "cuda:0"

    def data_ptr(self):
        return self._ptr

    def stride(self):
        return (1,)

    def dim(self):
        return 1

    @property
    def ndim(self):
        return 1

    def __dlpack__(self, *a, **k):
        raise RuntimeError("not used")

    def get_device(self):
        return 0


Tensor.__name__ = Tensor.__qualname__ = "Tensor"


@tile.kernel
def add1(X: tile.Tensor[f32], Y: tile.Tensor[f32], n: int, BLOCK: tile.constexpr = 1024):
    i = tile.block_id(0) * BLOCK
    tile.store(Y, (i,), tile.load(X, (i,), (BLOCK,)) + 1.0)


def install_mock_driver():
    """No GPU: pretend there is one, load no module, count launches."""
    from tile import compiler
    from tile.runtime import cuda, launch as L
    compiler._GPU_ARCH[:] = ["sm_90a"]
    st = cuda._state
    st.ok, st.ctx_int, st.device_count = True, 1, 1
    calls = [0]

    class FakeFunction:
        name = "add1"
        attributes = {"max_threads_per_block": 1024, "num_regs": 16}

        def launch(self, grid, block, params, shared=0, stream=None, cluster=(1, 1, 1)):
            calls[0] += 1

        def launch_parts(self, block, shared, cluster):
            def call(handle, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
                calls[0] += 1
                return (0,)
            return {"call": call, "handle": 1, "block": block, "shared": shared, "stream": 0,
                    "stream_of": lambda h: h, "check": None}
    L.load_function = lambda compiled: FakeFunction()

    def current_stream(ordinal):          # stands in for torch._C._cuda_getCurrentRawStream (a C call)
        return 0
    L._TORCH_STREAM[:] = [current_stream]
    return calls


def measure(n=20000, reps=5):
    calls = install_mock_driver()
    x, y = Tensor(1 << 20, 0x7F0000000000), Tensor(1 << 20, 0x7F0000400000)
    grid = (1024,)
    add1[grid](x, y, 1 << 20)                                 # compile + first launch
    for _ in range(2000):
        add1[grid](x, y, 1 << 20)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            add1[grid](x, y, 1 << 20)
        best = min(best, (time.perf_counter() - t0) / n)
    assert calls[0] == 1 + 2000 + n * reps, calls
    return best * 1e6


if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(argv[0]) if argv else 20000
    general = "--general" in sys.argv
    if general:
        from tile.kernel import Kernel
        if hasattr(Kernel, "_remember_fast"):
            Kernel._remember_fast = lambda *a, **k: None
    print(f"kernel[grid](x, y, n), torch-like tensors, mocked driver, {'general' if general else 'fast'} path: "
          f"{measure(n):.2f} us/launch (host)")
