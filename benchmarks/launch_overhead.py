"""Host time per launch on a GPU: tilec's `kernel[grid](x, y, n)` beside Triton and `torch.add`,
one-line elementwise kernels on torch tensors, all in one process.

    python benchmarks/launch_overhead.py [--n 10000] [--size 4096]

Each is warmed up (compile, module load), then launched N times in a loop timed with
time.perf_counter (host time; the GPU work of a 4096-element add is far below the launch cost, so
the loop measures what the host spends per launch), with torch.cuda.synchronize() at the end
(counted). Prints µs per launch for each, best of 5 loops. Triton is skipped when not installed.
`measure()` is what the benchmark's `launch` family (benchmarks/launch.py) records."""
from __future__ import annotations

import argparse
import os
import time

import torch

import tile
from tile import f32


@tile.kernel
def tile_add1(X: tile.Tensor[f32], Y: tile.Tensor[f32], n: int, BLOCK: tile.constexpr = 1024):
    i = tile.block_id(0) * BLOCK
    tile.store(Y, (i,), tile.load(X, (i,), (BLOCK,)) + 1.0)


def triton_kernel():
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def add1(X, Y, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        tl.store(Y + offs, tl.load(X + offs, mask=m) + 1.0, mask=m)
    return add1


def per_launch(fn, n, reps=5):
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def measure(n: int = 10000, size: int = 4096) -> list:
    """[(launcher, host us per launch)]: tilec's fast path, its general path, the same kernel under
    @tile.autotune (one config: the cost of the autotune layer), Triton (NaN when not installed) and
    torch.add, all on the same torch tensors."""
    x = torch.randn(size, device="cuda")
    y = torch.empty_like(x)
    grid = ((size + 1023) // 1024,)
    tile_add1[grid](x, y, size)
    torch.cuda.synchronize()
    assert torch.equal(y[:size], x + 1.0) or size % 1024, "tilec result differs"
    rows = [("tilec kernel[grid](x, y, n)", per_launch(lambda: tile_add1[grid](x, y, size), n))]
    from tile.kernel import Kernel
    saved = Kernel._remember_fast
    Kernel._remember_fast = lambda *args, **kw: None           # the general path, for comparison
    tile_add1._fast.clear()
    try:
        rows.append(("tilec general path (fast path off)", per_launch(lambda: tile_add1[grid](x, y, size),
                                                                     max(n // 10, 100))))
    finally:
        Kernel._remember_fast = saved
    tuned = tile.autotune(configs=[tile.Config(BLOCK=1024)], key=["n"])(tile.kernel(tile_add1.fn))
    meta_grid = lambda meta: (tile.cdiv(meta["n"], meta["BLOCK"]),)     # noqa: E731
    tuned[meta_grid](x, y, size)
    rows.append(("tilec @tile.autotune, grid lambda", per_launch(lambda: tuned[meta_grid](x, y, size), n)))
    tk = triton_kernel()
    if tk is not None:
        tk[grid](x, y, size, BLOCK=1024)
        torch.cuda.synchronize()
        rows.append(("triton add1[grid](x, y, n, BLOCK=1024)", per_launch(lambda: tk[grid](x, y, size, BLOCK=1024), n)))
    else:
        rows.append(("triton (not installed)", float("nan")))
    rows.append(("torch.add(x, 1.0, out=y)", per_launch(lambda: torch.add(x, 1.0, out=y), n)))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--size", type=int, default=4096)
    a = ap.parse_args()
    print(f"GPU: {torch.cuda.get_device_name()}, tilec target {tile.current_target()}, {a.size} elements, "
          f"{a.n} launches per loop, best of 5")
    rows = measure(a.n, a.size)
    w = max(len(r[0]) for r in rows)
    for name, us in rows:
        print(f"{name:<{w}}  {us:8.2f} us/launch")


if __name__ == "__main__":
    os.environ.setdefault("TILEC_PTXAS_REPORT", "1")
    main()
