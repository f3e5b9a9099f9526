"""Host time per call of a tilec kernel registered as a torch custom op (`tile.torch_op`), beside the
plain `kernel[grid](x, y, n)` launch and `torch.add`, on torch tensors in one process (GPU needed).

    python benchmarks/torch_op_overhead.py [--n 10000] [--size 4096]

The op allocates its output (`torch.empty_like`), computes the grid and `n` from the input and goes
through torch's dispatcher; the plain launch reuses a preallocated output; "the op's body alone" is
the function registered with torch (tilec's share of an op call). Best of 5 loops of N calls
timed with time.perf_counter, torch.cuda.synchronize() counted."""
from __future__ import annotations

import argparse

import torch

import tile
from launch_overhead import per_launch as per_call      # (benchmarks/ is this script's folder)
from tile import f32


@tile.kernel
def add1(X: tile.Tensor[f32], Y: tile.Tensor[f32], n: int, BLOCK: tile.constexpr = 1024):
    i = tile.block_id(0) * BLOCK
    tile.store(Y, (i,), tile.load(X, (i,), (BLOCK,)) + 1.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--size", type=int, default=4096)
    a = ap.parse_args()
    x = torch.randn(a.size, device="cuda")
    y = torch.empty_like(x)
    grid = (tile.cdiv(a.size, 1024),)
    op = tile.torch_op(add1, "tilec_bench::add1", grid=lambda m: (tile.cdiv(m["X"].shape[0], m["BLOCK"]),),
                       outputs={"Y": "like X"}, scalars={"n": lambda m: m["X"].numel()})
    assert torch.equal(op(x), x + 1.0)
    body = op._init_fn                      # tilec's part: allocate, grid, launch (torch's dispatch skipped)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, {a.size} elements, {a.n} calls per "
          f"loop, best of 5")
    rows = [("tilec kernel[grid](x, y, n)", per_call(lambda: add1[grid](x, y, a.size), a.n)),
            ("tile.torch_op op(x) (allocates y)", per_call(lambda: op(x), a.n)),
            ("torch.ops namespace call", per_call(lambda: torch.ops.tilec_bench.add1(x), a.n)),
            ("the op's body alone (no dispatcher)", per_call(lambda: body(x), a.n)),
            ("torch.add(x, 1.0) (allocates)", per_call(lambda: torch.add(x, 1.0), a.n)),
            ("torch.add(x, 1.0, out=y)", per_call(lambda: torch.add(x, 1.0, out=y), a.n))]
    w = max(len(r[0]) for r in rows)
    for name, us in rows:
        print(f"{name:<{w}}  {us:8.2f} us/call")


if __name__ == "__main__":
    main()
