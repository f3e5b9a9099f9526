"""The NVIDIA passes: layout_inference, pipeline_loads, shared_memory_planning (no GPU needed)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import nvptx_kernels as NK  # noqa: E402

import tile  # noqa: E402
from tile.compiler import clone_module  # noqa: E402
from tile.ir.core import Module, Operation  # noqa: E402
from tile.ir.dtypes import bf16, f32, i32  # noqa: E402
from tile.ir.parser import parse_module  # noqa: E402
from tile.ir.printer import print_module  # noqa: E402
from tile.ir.types import TileType, tile_type  # noqa: E402
from tile.ir.verifier import verify  # noqa: E402
from tile.passes.layout_inference import LayoutConflictError, infer_function  # noqa: E402
from tile.passes.pipeline_loads import pipeline_function  # noqa: E402
from tile.passes.shared_memory_planning import plan_function, scratch_bytes  # noqa: E402
from tile.passes.select_instructions import select_function  # noqa: E402
from tile.ir.targets import get_target  # noqa: E402
from tile.ir.thread_maps import ThreadMap, as_map, blocked, mma_a, mma_b, mma_c, mma_warps  # noqa: E402
from tile.ir import fragments as F  # noqa: E402

SEED = int(os.environ.get("TILE_TEST_SEED") or np.random.SeedSequence().entropy) % (2 ** 32)


def ops(fn, name):
    return [o for o in fn.walk() if o.name == name]


def lay(v) -> ThreadMap:
    return as_map(v.type.layout, 128)


# ------------------------------------------------------------------------------- thread maps
def test_fragment_layouts_match_ir_fragments():
    """The warp-tiled mma layouts reduce to ir.fragments' atoms on one warp."""
    assert ThreadMap.from_tv(F.mma_m16n8k16_c()).same(mma_c(16, 8, 1, 1))
    assert ThreadMap.from_tv(F.mma_m16n8k16_a()).same(mma_a(16, 16, 1, 1))
    assert ThreadMap.from_tv(F.mma_m16n8k16_b()).same(mma_b(16, 8, 1, 1))
    for m in (mma_c(128, 128, 2, 2), mma_a(128, 32, 2, 2), mma_b(32, 128, 2, 2), blocked((64, 128), 128, 16)):
        assert ThreadMap.from_tv(m.to_tv()).same(m)
        assert m.to_tv().covers_tile()


def test_blocked_layout():
    b = blocked((128, 32), 128, 16)            # bf16: 16-byte chunks along the last dim
    assert b.runs(-1) == 8 and b.covers() and not b.is_replicated
    small = blocked((64,), 128, 32)            # fewer elements than threads: copies
    assert small.covers() and small.replica_tmodes()
    sub = blocked((256,), 128, 4)              # int4: whole bytes per thread
    assert sub.runs(-1) % 2 == 0


def test_reshape_and_projection_views():
    c = mma_c(64, 64, 4, 1)
    rows = c.project(1)
    assert rows.reshape((64, 1)) is not None
    assert rows.reshape((64, 1)).same(c.broadcast_operand((64, 1)))


# ------------------------------------------------------------------------------- layout inference
def test_gemm_layouts():
    m = NK.gemm(stages=None)
    fn = m.functions[0]
    infer_function(fn)
    verify(m)
    dot = ops(fn, "dot")[0]
    wm, wn = mma_warps(128, 128, 32, bf16, f32, 4)
    assert lay(dot.results[0]).same(mma_c(128, 128, wm, wn))
    assert lay(dot.operands[0]).same(mma_a(128, 32, wm, wn))
    assert lay(dot.operands[1]).same(mma_b(32, 128, wm, wn))
    # the loads stay blocked (coalesced, vectorized) and are converted once each
    for ld in ops(fn, "load"):
        assert lay(ld.results[0]).runs(-1) == 8
    loop = ops(fn, "for")[0]
    assert len([o for o in loop.regions[0].walk() if o.name == "convert_layout"]) == 2
    # after the loop, one conversion gives the 32 KB output tile 16-byte coalesced stores
    tail = [o for o in fn.body.ops[fn.body.ops.index(loop):] if o.name == "convert_layout"]
    assert len(tail) == 1 and lay(tail[0].results[0]).runs(-1) == 8
    assert ops(fn, "store")[0].operands[-1] is tail[0].results[0]
    # the accumulator's zeros are created in the mma layout (no conversion before the loop)
    full = ops(fn, "full")[0]
    assert lay(full.results[0]).same(mma_c(128, 128, wm, wn))
    # every register tile has a layout, and the module prints and parses back
    for o in fn.walk():
        for r in o.results:
            if isinstance(r.type, TileType) and r.type.space == "reg":
                assert r.type.layout is not None
    text = print_module(m)
    assert print_module(parse_module(text)) == text


def test_epilogue_in_accumulator_layout():
    m = NK.gemm(epilogue=True)
    fn = m.functions[0]
    infer_function(fn)
    loop = ops(fn, "for")[0]
    conv = [o for o in fn.body.ops[fn.body.ops.index(loop):] if o.name == "convert_layout"]
    assert len(conv) == 1 and ops(fn, "store")[0].operands[-1] is conv[0].results[0]   # only before the store
    for o in fn.body.ops[fn.body.ops.index(loop) + 1:fn.body.ops.index(conv[0])]:
        for r in o.results:
            if isinstance(r.type, TileType) and r.type.rank == 2:
                assert lay(r).same(lay(ops(fn, "dot")[0].results[0]))      # bias + relu + cast in registers
    bias_load = [o for o in ops(fn, "load") if o.operands[0].name == "bias"][0]
    acc = lay(ops(fn, "dot")[0].results[0])
    assert lay(bias_load.results[0]).same(acc.broadcast_operand((128,)))


def test_softmax_rows_need_no_conversion():
    m = NK.softmax()
    fn = m.functions[0]
    infer_function(fn)
    assert not ops(fn, "convert_layout")
    for r in ops(fn, "reduce"):
        assert lay(r.results[0]).same(lay(r.operands[0]).project(1))


def test_annotated_layout_is_respected():
    m = NK.vadd(n=256)
    fn = m.functions[0]
    ld = ops(fn, "load")[0]
    user = ThreadMap((256,), [(128, (2,))], [(2, (1,))]).to_tv()
    ld.results[0].type = ld.results[0].type.with_(layout=user)
    infer_function(fn)
    assert ld.results[0].type.layout == user
    add = ops(fn, "add")[0]
    assert lay(add.results[0]).same(as_map(user))


def test_conflict_wrong_tile_shape():
    m = NK.vadd(n=256)
    fn = m.functions[0]
    ld = ops(fn, "load")[0]
    bad = ThreadMap((128,), [(128, (1,))], []).to_tv()
    ld.results[0].type = ld.results[0].type.with_(layout=bad)
    with pytest.raises(LayoutConflictError) as e:
        infer_function(fn)
    msg = str(e.value)
    assert "op 'load'" in msg and "layout conflict" in msg and str(bad) in msg


def test_conflict_loop_carried_layouts():
    m = NK.loop_if(n=256)
    fn = m.functions[0]
    forop = ops(fn, "for")[0]
    l1 = blocked((256,), 128, 32).to_tv()
    l2 = ThreadMap((256,), [(128, (1,))], [(2, (128,))]).to_tv()
    arg = forop.regions[0].args[1]
    arg.type = arg.type.with_(layout=l1)
    forop.results[0].type = forop.results[0].type.with_(layout=l2)
    with pytest.raises(LayoutConflictError) as e:
        infer_function(fn)
    msg = str(e.value)
    assert "op 'for'" in msg and str(l1) in msg and str(l2) in msg


def test_conflict_too_many_threads():
    m = NK.vadd(n=256)
    fn = m.functions[0]
    fn.attrs["num_warps"] = 2
    ld = ops(fn, "load")[0]
    big = blocked((256,), 128, 32).to_tv()
    ld.results[0].type = ld.results[0].type.with_(layout=big)
    with pytest.raises(LayoutConflictError, match="spreads over 128 threads, the kernel has 64"):
        infer_function(fn)


# ------------------------------------------------------------------------------- shared memory planning
def test_scratch_offsets_of_lazy_fragments():
    """Dot operands converted through scratch stay there until the dot reads them (per k step):
    both scratch buffers are live at once and must not overlap."""
    m = NK.gemm(stages=None)
    fn = m.functions[0]
    infer_function(fn)
    select_function(fn, get_target('sm_90a').without("tma.store"))    # (the epilogue's conversion kept)
    total = plan_function(fn)
    loop = ops(fn, "for")[0]
    conv = [o for o in loop.regions[0].walk() if o.name == "convert_layout"]
    sizes = [scratch_bytes(c) for c in conv]
    assert sizes == [128 * 32 * 2, 32 * 128 * 2]
    assert all(c.attrs.get("copy") in ("ldmatrix.k", "smem.desc") for c in conv)
    offs = sorted(c.attrs["smem_scratch"] for c in conv)
    assert offs[1] >= offs[0] + sizes[0]
    # the epilogue's conversion (after the loop) reuses the operands' scratch
    out = [o for o in ops(fn, "convert_layout") if o not in conv][0]
    assert out.attrs["smem_scratch"] == 0 and scratch_bytes(out) == 128 * 128 * 2
    assert total == max(sum(sizes), 128 * 128 * 2) == fn.attrs["shared_bytes"]


def test_scratch_reuse():
    """Scratch of ops that are not live at the same time shares memory."""
    m = NK.reduce2d("max", 0)          # a cross-warp reduction needs scratch
    fn = m.functions[0]
    # two of them one after the other
    red = ops(fn, "reduce")[0]
    blk = red.parent
    i = blk.ops.index(red)
    clone = Operation("reduce", list(red.operands), [red.results[0].type], dict(red.attrs))
    blk.insert(i + 1, clone)
    infer_function(fn)
    select_function(fn, get_target('sm_90a'))
    total = plan_function(fn)
    a, b = ops(fn, "reduce")
    assert scratch_bytes(a) > 0 and a.attrs["smem_scratch"] == b.attrs["smem_scratch"] == 0
    assert total == scratch_bytes(a)


def test_alloc_liveness():
    """Two shared tiles used one after the other share memory (and get a barrier); one live across
    a loop does not overlap scratch used inside the loop."""
    k = NK.K("smem2", [NK.T(f32), NK.T(f32)], ["X", "Y"])
    X, Y = k.args
    z = k.c(0)
    t = tile_type((64, 64), f32)
    st = tile_type((64, 64), f32, "shared")
    s1 = k.v("alloc_shared", [], st)
    k.op("shared_store", [s1, k.v("load", [X, z, z], t, shape=[64, 64])])
    k.op("barrier", [])
    a = k.v("shared_load", [s1], t)
    s2 = k.v("alloc_shared", [], st)
    k.op("shared_store", [s2, a])
    k.op("barrier", [])
    k.op("store", [Y, z, z, k.v("shared_load", [s2], t)])
    fn = k.fn
    infer_function(fn)
    select_function(fn, get_target('sm_90a'))
    total = plan_function(fn)
    a1, a2 = ops(fn, "alloc_shared")
    assert a1.attrs["smem_offset"] == a2.attrs["smem_offset"] == 0
    assert total == 64 * 64 * 4
    blk = fn.body.ops
    assert blk[blk.index(a2) + 1].name == "barrier"

    m2 = NK.gemm(stages=3)
    fn2 = m2.functions[0]
    infer_function(fn2)
    pipeline_function(fn2, get_target("sm_80"))
    select_function(fn2, get_target('sm_90a'))
    plan_function(fn2)
    rings = ops(fn2, "alloc_shared")
    spans = sorted((r.attrs["smem_offset"], r.attrs["smem_offset"] + 3 * 128 * 32 * 2) for r in rings)
    assert spans[0][1] <= spans[1][0]          # the two rings are disjoint


def test_planning_reports_shared_bytes_attr():
    m = NK.softmax()
    fn = m.functions[0]
    infer_function(fn)
    select_function(fn, get_target('sm_90a'))
    plan_function(fn)
    assert fn.attrs["shared_bytes"] >= 0
    text = print_module(m)
    assert "shared_bytes" in text and print_module(parse_module(text)) == text


# ------------------------------------------------------------------------------- pipelining
def _run(module, grid, args):
    from tile.runtime import interpreter
    interpreter.run(module.functions[0], grid, args)


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_pipelining_preserves_results(stages):
    """The interpreter gives identical results before and after pipeline_loads (ragged K, M, N)."""
    import ml_dtypes as md
    rng = np.random.default_rng(SEED + stages)
    M, N, K = 70, 50, 75                      # ragged in every dim: partial tiles, zero fill
    A = rng.uniform(-2, 2, (M, K)).astype(md.bfloat16)
    B = rng.uniform(-2, 2, (K, N)).astype(md.bfloat16)
    m = NK.gemm(BM=32, BN=32, BK=16, stages=stages, out="f32")
    before = clone_module(m)
    after = clone_module(m)
    fn = after.functions[0]
    infer_function(fn)
    pipeline_function(fn, get_target("sm_80"))
    select_function(fn, get_target('sm_90a'))
    plan_function(fn)
    verify(after)
    if stages >= 2:
        assert ops(fn, "async_copy") and ops(fn, "async_wait") and not ops(fn, "load")
        waits = [o.attrs["pending"] for o in ops(fn, "async_wait")]
        assert waits == [stages - 2, 0]
        assert ops(fn, "alloc_shared")[0].results[0].type.shape == (stages, 32, 16)
    else:
        assert not ops(fn, "async_copy")
    text = print_module(after)
    assert print_module(parse_module(text)) == text
    grid = ((M + 31) // 32, (N + 31) // 32)
    C1 = np.full((M, N), np.nan, np.float32)
    C2 = np.full((M, N), np.nan, np.float32)
    _run(before, grid, [A, B, C1])
    _run(after, grid, [A, B, C2])
    assert np.array_equal(C1, C2), f"seed {SEED + stages}"
    ref = A.astype(np.float64) @ B.astype(np.float64)
    assert np.allclose(C1, ref, rtol=1e-5, atol=1e-5)


def test_pipelining_skips_masked_loads_and_short_loops():
    # a loop without a dot is left alone
    m = NK.loop_if()
    fn = m.functions[0]
    ops(fn, "for")[0].attrs["stages"] = 3
    pipeline_function(fn, get_target("sm_80"))
    assert not ops(fn, "async_copy")


def test_pipelined_ring_gets_swizzled_layout():
    m = NK.gemm(stages=3)
    fn = m.functions[0]
    infer_function(fn)
    pipeline_function(fn, get_target("sm_80"))
    rings = ops(fn, "alloc_shared")
    assert all("sw<" in str(r.results[0].type.layout) for r in rings)
    # the shared_loads read straight into the mma operand fragments: no conversion left in the loop
    loop = ops(fn, "for")[0]
    assert not [o for o in loop.regions[0].walk() if o.name == "convert_layout"]


def test_pipelined_subbyte_copy_int3():
    """int3 weights (rows of 64 codes = 24 bytes) in a pipelined loop: the async copy of the packed
    tile compiles (byte chunks of the packed rows, 8-byte cp.async here), and the pipelined IR gives
    the interpreter's results bit for bit (ragged N and K: zero fill past the tensor)."""
    import importlib.util
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    import tile
    from tile.compiler import compile as cg_compile
    path = Path(__file__).resolve().parent.parent / "examples" / "lowbit_gemm.py"
    spec = importlib.util.spec_from_file_location("gallery_lowbit_gemm_t", path)
    g = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(g)
    k = g.lowbit_gemm
    sig = [tile.Tensor[bf16, 2], tile.Tensor[tile.dtype("int3"), 2], tile.Tensor[f32, 2], tile.Tensor[bf16, 2]]
    consts = dict(G=128, ZERO=0.0, BM=16, BN=64, BK=128)
    ck = k.compile(*sig, target="sm_90a", **consts)
    fn = ck.module.functions[0]
    copies = [o for o in fn.walk() if o.name == "async_copy" and o.operands[0].type.dtype.bits == 3]
    assert copies, "the int3 weight load is pipelined"
    assert "cp.async.ca.shared.global" in ck.ptx and ", 8, " in ck.ptx
    if shutil.which("ptxas"):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "k.ptx").write_text(ck.ptx)
            r = subprocess.run(["ptxas", "-arch=sm_90a", str(Path(d) / "k.ptx"), "-o", str(Path(d) / "k.cubin")],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(SEED)
    M, N, K = 5, 100, 384                          # N: a partial tile; K: three scale groups
    X = tile.asarray(rng.standard_normal((M, K)), bf16)
    W, S = g.quantize_weights(rng.standard_normal((K, N)), "int3", 128, 0.0)
    grid = (1, (N + 63) // 64)
    outs = []
    for mod in (k.compile(*sig, target="cpu", **consts).module, ck.module):
        Y = tile.asarray(np.full((M, N), np.nan), bf16)
        _run(mod, grid, [X, W, S, Y])
        outs.append(Y.numpy())
    assert np.isfinite(outs[0].astype(np.float64)).all()
    assert np.array_equal(outs[0].view(np.uint16), outs[1].view(np.uint16)), f"seed {SEED}"


def test_pipelined_gather_moe_up():
    """The gather of rows by token index in moe_up is pipelined as an async_gather (cp.async chunks
    along the row, each with its row's index); the pipelined IR prints, parses back and gives the
    interpreter's results bit for bit (padding rows -1 and a ragged D read zeros)."""
    import importlib.util
    from pathlib import Path

    import tile
    path = Path(__file__).resolve().parent.parent / "examples" / "moe.py"
    spec = importlib.util.spec_from_file_location("gallery_moe_t", path)
    g = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(g)
    k = g.moe_up
    sig = [tile.Tensor[bf16, 2], tile.Tensor[bf16, 3], tile.Tensor[i32, 2], tile.Tensor[i32, 1], tile.Tensor[bf16, 2]]
    consts = dict(F=64, BM=16, BN=32, BK=32)
    ck = k.compile(*sig, target="sm_90a", **consts)
    fn = ck.module.functions[0]
    assert [o for o in fn.walk() if o.name == "async_gather"] and not [o for o in fn.walk() if o.name == "gather"]
    text = print_module(ck.module)
    assert print_module(parse_module(text)) == text
    # the gathered rows go by cp.async (8-byte chunks here); the weight tiles, boxes of a 3-D tensor,
    # by TMA on sm_90a
    assert "cp.async.ca.shared.global" in ck.ptx
    assert "cp.async.bulk.tensor.3d" in ck.ptx
    rng = np.random.default_rng(SEED)
    T, D, F, E = 20, 80, 64, 3                     # D = 80: the last K tile is partly outside X
    X = tile.asarray(rng.standard_normal((T, D)), bf16)
    W1 = tile.asarray(rng.standard_normal((E, D, 2 * F)) / 8, bf16)
    rows = np.array(list(range(0, 20, 2)) + [-1] * 6 + list(range(1, 20, 2)) + [-1] * 6, np.int32)[:, None]
    be = np.array([0, 2], np.int32)
    grid = (len(rows) // 16, F // 32)
    outs = []
    for mod in (k.compile(*sig, target="cpu", **consts).module, ck.module):
        H = tile.asarray(np.full((len(rows), F), np.nan), bf16)
        _run(mod, grid, [X, W1, rows, be, H])
        outs.append(H.numpy())
    assert np.isfinite(outs[0].astype(np.float64)).all()
    assert np.array_equal(outs[0].view(np.uint16), outs[1].view(np.uint16)), f"seed {SEED}"


@tile.kernel
def _scaled_acc(A: tile.Tensor[tile.bf16, 2], B: tile.Tensor[tile.bf16, 2], S: tile.Tensor[tile.f32, 2],
                C: tile.Tensor[tile.f32, 2]):
    acc = tile.zeros((16, 64), tile.f32)
    for k in tile.range(0, A.shape[1], 32):
        part = tile.dot(tile.load(A, (0, k), (16, 32)), tile.load(B, (k, 0), (32, 64)))
        acc = acc + part * tile.load(S, (k // 32, 0), (1, 64))
    tile.atomic_add(C, (0, 0), acc)


def test_scaled_accumulator_stays_in_the_dot_layout():
    """acc = acc + dot(a, b) * s (per-group scales, split-K partial sums): the carried accumulator
    takes the dot's fragment layout although the atomic_add after the loop prefers another -- the
    conversion (if any) runs once after the loop, not every iteration."""
    ck = _scaled_acc.compile(tile.Tensor[tile.bf16, 2], tile.Tensor[tile.bf16, 2], tile.Tensor[tile.f32, 2],
                        tile.Tensor[tile.f32, 2], target="sm_90a")
    fn = ck.module.functions[0]
    loop = ops(fn, "for")[0]
    dot = [o for o in loop.regions[0].ops if o.name == "dot"][0]
    assert lay(loop.results[0]).same(lay(dot.results[0]))
    inside = [o for o in loop.regions[0].ops if o.name == "convert_layout"
              and tuple(o.results[0].type.shape) == (16, 64) and o.results[0].type.dtype == f32]
    assert not inside, inside


def _gallery(stem):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "examples" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"gallery_{stem}_t", path)
    g = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(g)
    return g


@pytest.mark.parametrize("page", [16, 64])
def test_pipelined_gather_through_a_block_table(page):
    """paged_decode's K/V rows come from the block table (a read-only tensor): both gathers are
    pipelined, the block-table reads are cloned into the prefetch (not staged in a ring of their
    own), K and V share one cloned index computation, the loop body keeps no dead copy of it, and
    the pipelined IR gives the unpipelined one's results bit for bit (NaN pages never read)."""
    g = _gallery("decode_attention")
    k = g.paged_decode
    sig = [tile.Tensor[bf16, 2]] * 3 + [tile.Tensor[i32, 2], tile.Tensor[i32, 1], tile.Tensor[bf16, 2],
                                        tile.Tensor[f32, 3], tile.Tensor[f32, 2], float, int, int, int]
    consts = dict(PAGE=page, D=64, BM=16, BN=32, STAGES=3)
    ck = k.compile(*sig, target="sm_90a", **consts)
    fn = ck.module.functions[0]
    loop = ops(fn, "for")[0]
    assert loop.attrs.get("pipelined") == 3
    rings = ops(fn, "alloc_shared")
    assert len(rings) == 2 and all(r.results[0].type.dtype == bf16 for r in rings)
    assert len(ops(fn, "async_gather")) == 2 * 3            # K and V: two prologue stages and the loop's
    assert not ops(fn, "gather")
    table_reads = [o for o in fn.walk() if o.name in ("load", "load_scalar") and o.operands[0].type.dtype == i32
                   and o.operands[0] is fn.args[3]]
    assert len(table_reads) == 3                            # one per issue of a stage: shared by K and V
    body = loop.regions[0]
    assert not [o for o in body.ops if o in table_reads], "the body's own (dead) index computation is gone"
    rng = np.random.default_rng(SEED)
    B, HQ, HKV, LQ, D, S = 3, 4, 2, 2, 64, 3 * page
    lens = np.array([2, page + 1, 3 * page], np.int32)
    kc, vc, table = g.paginate(rng.standard_normal((B, HKV, S, D)), rng.standard_normal((B, HKV, S, D)), lens,
                               page, rng)
    plan = g.decode_plan(B, HQ, HKV, LQ, D, S, splits=2, BN=32)
    R = B * HQ * LQ
    q = tile.asarray(rng.standard_normal((R, D)), bf16)
    K, V = tile.asarray(kc.reshape(-1, HKV * D), bf16), tile.asarray(vc.reshape(-1, HKV * D), bf16)
    outs = []
    for mod in (k.compile(*sig, target="sm_90a", **dict(consts, STAGES=1)).module, ck.module):
        part = np.full((plan["splits"], R, D), np.nan, np.float32)
        lpart = np.full((plan["splits"], R), np.nan, np.float32)
        _run(mod, plan["grid"], [q, K, V, table, lens, q.copy(), part, lpart, 0.125, plan["group"], LQ,
                                 plan["split_len"]])
        outs.append((part, lpart))
    assert np.isfinite(outs[0][0]).all() and not np.isnan(outs[0][1]).any()
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1]), f"seed {SEED}"


@tile.kernel
def _gather_rows_it_rewrites(X: tile.Tensor[bf16, 2], idx: tile.Tensor[i32, 1], W: tile.Tensor[bf16, 2],
                             Y: tile.Tensor[f32, 2]):
    acc = tile.zeros((16, 32), f32)
    for n in tile.range(0, 64, 16, stages=3):
        rows = tile.load(idx, (n,), (16,))
        acc = tile.dot(tile.gather(X, rows, 0, 32), tile.load(W, (0, 0), (32, 32)), acc)
        tile.store(idx, (n,), rows + 1)
    tile.store(Y, (0, 0), acc)


def test_index_from_a_written_tensor_is_not_pipelined():
    """Rows read from a tensor the kernel also writes are not read stages ahead: the gather stays."""
    T = tile.Tensor
    fn = _gather_rows_it_rewrites.compile(T[bf16, 2], T[i32, 1], T[bf16, 2], T[f32, 2], target="sm_90a").module.functions[0]
    assert ops(fn, "gather") and not ops(fn, "async_gather")
