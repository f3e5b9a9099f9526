"""A new process with a warm kernel cache: the time from `import tile` to the driver call of the first
launch of a gallery kernel, with the CUDA driver mocked (no GPU, no torch needed).

    python benchmarks/warm_launch_mock.py [gemm|attention] [--runs 5]

The parent fills a private cache (one child compiles), then starts --runs children that each import
numpy (as any program using tilec with torch or numpy has), start the clock, `import tile`, import
examples/<kernel>.py and launch the kernel on torch-like tensors up to the driver's launch call.
Prints wall and CPU milliseconds (min and median over the runs) and the compiler modules the
launch imported (none is the goal: the code comes from the cache by its source key)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, os, sys, time
import numpy                                      # before the clock: the program's own imports
t0, c0 = time.perf_counter(), time.process_time()
import tile
import importlib.util
spec = importlib.util.spec_from_file_location("gallery", os.path.join(sys.argv[1], "examples", sys.argv[2] + ".py"))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
from tile import compiler
from tile.runtime import cuda, launch as L
compiler._GPU_ARCH[:] = ["sm_90a"]
cuda._state.ok, cuda._state.ctx_int, cuda._state.device_count = True, 1, 1
cuda.encode_tensor_map = lambda *a, **k: bytes(128)      # TMA descriptors (sm_90a's default): the driver's work
hit = []


class DT:
    def __init__(self, n):
        self.name = n

    def __str__(self):
        return self.name


class Tensor:
    __module__ = "torch"

    def __init__(self, shape, ptr, dt):
        self.shape, self._ptr, self.dtype, self.is_cuda = tuple(shape), ptr, DT(dt), True
        st, acc = [], 1
        for d in reversed(self.shape):
            st.append(acc)
            acc *= d
        self._st = tuple(reversed(st))

    def data_ptr(self):
        return self._ptr

    def stride(self):
        return self._st

    def dim(self):
        return len(self.shape)

    ndim = property(dim)

    def __dlpack__(self, *a, **k):                # makes it an array to tilec; never called
        raise RuntimeError("not used")

    def get_device(self):
        return 0


Tensor.__name__ = Tensor.__qualname__ = "Tensor"


class Fn:
    name = sys.argv[2]
    attributes = {"max_threads_per_block": 1024, "num_regs": 16}

    def launch(self, *a, **k):
        hit.append((time.perf_counter(), time.process_time()))

    def launch_parts(self, block, shared, cluster):
        raise ValueError("not timed")


L.load_function = lambda compiled: Fn()
T = lambda shape, i, dt: Tensor(shape, i << 32, dt)                         # noqa: E731
if sys.argv[2] == "gemm":
    m.gemm[(2, 2)](T((256, 256), 1, "torch.bfloat16"), T((256, 256), 2, "torch.bfloat16"),
                   T((256, 256), 3, "torch.bfloat16"), T((256,), 4, "torch.float32"), 1.0)
else:
    q = T((1, 4, 128, 64), 1, "torch.bfloat16")
    m.attention[(2, 4)](q, q, q, q, 0.125)
heavy = sorted(x for x in ("tile.dsl.frontend", "tile.ir.printer", "tile.ir.parser", "tile.passes", "tile.codegen",
                           "llvmlite", "lark") if x in sys.modules)
print(json.dumps({"wall": hit[0][0] - t0, "cpu": hit[0][1] - c0, "heavy": heavy}))
'''


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    which = args[0] if args else "gemm"
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 5
    if "--runs" in sys.argv:
        args = [a for a in args if a != str(runs)]
        which = args[0] if args else "gemm"
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, TILEC_CACHE_DIR=d, TILEC_TARGET="sm_90a", TILEC_PTXAS_REPORT="0")
        out = []
        for i in range(runs + 1):                  # the first fills the cache
            r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), which], capture_output=True, text=True,
                               env=env, timeout=600)
            if r.returncode != 0:
                sys.exit(r.stderr)
            if i:
                out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    wall = [1e3 * o["wall"] for o in out]
    cpu = [1e3 * o["cpu"] for o in out]
    print(f"{which}: new process, warm cache, mocked driver: import tile -> driver call "
          f"{min(wall):.1f} ms wall (median {statistics.median(wall):.1f}), {min(cpu):.1f} ms CPU "
          f"(median {statistics.median(cpu):.1f}); compiler modules imported: {out[-1]['heavy'] or 'none'}")


if __name__ == "__main__":
    main()
