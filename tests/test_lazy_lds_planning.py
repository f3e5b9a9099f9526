"""shared_memory_planning and lazily read shared tiles: a shared_load whose fragments the dot reads
itself (ldmatrix.k on NVIDIA, ds_read.k / ds_read.trans.k on AMD) keeps its shared tile alive until
that dot, so scratch of an op placed between them (here a cumsum) never reuses the tile's bytes."""
import pytest

import tile
from tile import compiler
from tile.dsl.frontend import compile_kernel
from tile.ir.targets import LAZY_COPIES


@tile.kernel
def _lazy_then_scratch(A: tile.Tensor[tile.bf16, 2], Bt: tile.Tensor[tile.bf16, 2], X: tile.Tensor[tile.f32, 2],
                       C: tile.Tensor[tile.f32, 2], Y: tile.Tensor[tile.f32, 2]):
    a_s = tile.alloc_shared((64, 32), tile.bf16)
    b_s = tile.alloc_shared((64, 32), tile.bf16)
    tile.copy_async(a_s, A, (0, 0))
    tile.copy_async(b_s, Bt, (0, 0))
    tile.commit()
    tile.wait(0)
    tile.barrier()
    a = a_s.load()
    b = b_s.load().T
    y = tile.cumsum(tile.load(X, (0, 0), (64, 64)), 1)        # scratch, between the loads and the dot
    tile.store(C, (0, 0), tile.dot(a, b, tile.zeros((64, 64), tile.f32)))
    tile.store(Y, (0, 0), y)


@pytest.mark.parametrize("target", ["gfx942", "sm_80"])
def test_lazily_read_tiles_outlive_the_scratch_between(target):
    sig = (tile.Tensor[tile.bf16, 2],) * 2 + (tile.Tensor[tile.f32, 2],) * 3
    b = _lazy_then_scratch.bind(sig, {}, signature_ok=True)
    m = compile_kernel(_lazy_then_scratch.fn, _lazy_then_scratch.params, b.types, b.constexprs, "k")
    fn = compiler.lower(m, target)[0].functions[0]
    ops = list(fn.walk())
    allocs = {o.results[0]: o for o in ops if o.name == "alloc_shared"}
    lazy = [o for o in ops if o.name == "shared_load" and o.attrs.get("copy") in LAZY_COPIES]
    assert lazy, "nothing is read lazily: the test does not test anything"
    cs = next(o for o in ops if o.name == "cumsum")
    lo, hi = cs.attrs["smem_scratch"], cs.attrs["smem_scratch"] + 64 * 64 * 4
    for sl in lazy:
        al = allocs[sl.operands[0]]
        t0, t1 = al.attrs["smem_offset"], al.attrs["smem_offset"] + 64 * 32 * 2
        assert hi <= t0 or t1 <= lo, f"cumsum scratch [{lo}, {hi}) overwrites the lazily read tile [{t0}, {t1})"
