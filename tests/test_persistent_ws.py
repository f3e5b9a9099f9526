"""The persistent warp-specialized GEMM (examples/gemm.py PERSISTENT=True, WS=True): the K loop's
warp specialization split around the persistent tile loop (passes/warp_specialize.py, "Persistent").
CPU: the IR after the pass (one init and one inval per mbarrier array, the iteration count carried by
both roles' tile and K loops, the producer's K loop inside its own tile loop, each tile's last stage
released after its K loop, named barriers only among the consumers), its round trip, the ring kept
out of the epilogue's scratch, the PTX (ptxas: 0 spills) and the interpreter running the specialized
IR (two host threads, mbarrier phases enforced) bit for bit like the plain kernel with several tiles
per block and K iterations per tile not a multiple of the stages. GPU (marked gpu): each config against
float64 at ragged shapes, and bit equality with the non-persistent warp-specialized kernel."""
import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import tile
from tile import bf16, f32
from tile import compiler
from tile.ir.parser import parse_module
from tile.ir.printer import print_module
from tile.runtime.interpreter import InterpreterError, run

ROOT = Path(__file__).resolve().parent.parent
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH")
T2 = tile.Tensor[bf16, 2]
SIG = (T2, T2, T2, tile.Tensor[f32, 1], f32)


def _gallery(name):
    spec = importlib.util.spec_from_file_location(f"gallery_{name}_pws", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEMM = _gallery("gemm")
# (BM, BN, BK, num_warps, stages): the benchmark candidates (benchmarks/gemm.py PERSISTENT_WS_CONFIGS)
# and a small one the interpreter runs quickly
CONFIGS = {"128x256": (128, 256, 64, 8, 3), "256x128": (256, 128, 64, 8, 3), "128x128": (128, 128, 64, 4, 4),
           "small": (64, 64, 32, 4, 4)}


def _kw(cfg, persistent=True, ws=True):
    BM, BN, BK, nw, S = CONFIGS[cfg]
    return dict(BM=BM, BN=BN, BK=BK, STAGES=S, WS=ws, PERSISTENT=persistent, num_warps=nw)


@pytest.fixture(scope="module")
def small():
    """(function after the pipeline, ir_after) of the small config, without code generation."""
    b = GEMM.gemm.bind(SIG, _kw("small"), signature_ok=True)
    t = compiler.resolve("sm_90a")
    m, _ = GEMM.gemm._frontend(b, t)
    m, after = compiler.lower(m, t)
    return m.functions[0], after


def _bar_name(op):
    """The name of the mbarrier array an mbarrier op works on (through its subview)."""
    v = op.operands[0]
    return v.name if v.owner is None or v.owner.name != "subview" else v.owner.operands[0].name


# ------------------------------------------------------------------------------ the IR after the pass
def test_split_around_the_tile_loop(small):
    fn, _ = small
    top = fn.body.ops
    ws = [o for o in top if o.name == "warp_specialize"]
    assert len(ws) == 1 and top[-1] is ws[0]
    prod, cons = ws[0].regions
    # the ring and both mbarrier arrays: allocated and initialized once, before the split (not per tile)
    assert {o.attrs["count"] for o in top if o.name == "mbarrier_init"} == {1, 4}
    assert [_bar_name(o) for o in top if o.name == "mbarrier_init"] == ["full", "empty"]
    assert sum(o.name == "alloc_shared" for o in top) == 4                  # a ring, b ring, full, empty
    assert not any(o.name in ("alloc_shared", "mbarrier_init") for r in (prod, cons) for o in r.walk())
    # invalidated once, by the consumers, after their tile loop
    assert [(o.name, _bar_name(o)) for o in cons.ops if o.name in ("for", "mbarrier_inval")] == \
        [("for", None), ("mbarrier_inval", "full"), ("mbarrier_inval", "empty")]
    assert not any(o.name == "mbarrier_inval" for o in prod.walk())

    def tile_and_k(region):
        tl = [o for o in region.ops if o.name == "for"]
        assert len(tl) == 1
        kl = [o for o in tl[0].regions[0].ops if o.name == "for"]
        assert len(kl) == 1
        return tl[0], kl[0]
    for region, role in ((prod, "producer"), (cons, "consumers")):
        tl, kl = tile_and_k(region)
        # the count: an i32 the tile loop carries from 0, into the K loop and back out of it
        c0 = tl.operands[-1].owner
        assert (c0.name, c0.attrs, str(c0.results[0].type)) == ("constant", {"value": 0}, "i32"), role
        c_tile, c_k = tl.regions[0].args[-1], kl.regions[0].args[-1]
        assert kl.operands[-1] is c_tile and str(c_k.type) == "i32", role
        assert tl.regions[0].ops[-1].operands[-1] is kl.results[-1], role       # yield of the K loop's count
        inc = kl.regions[0].ops[-1].operands[-1].owner                          # yield c + 1
        assert inc.name == "add" and inc.operands[0] is c_k and inc.operands[1].owner.attrs == {"value": 1}, role
        # stage and parity are computed from the count, not from k
        wait = next(o for o in kl.regions[0].ops if o.name == "mbarrier_wait")
        stage = wait.operands[0].owner.operands[1].owner
        assert stage.name == "rem" and stage.operands[0] is c_k, role
        assert _bar_name(wait) == ("empty" if role == "producer" else "full"), role
    # the producer's K loop issues the TMA copies; the tile coordinates it needs are its own clones
    _, pk = tile_and_k(prod)
    assert [o.attrs["copy"] for o in pk.regions[0].walk() if o.name == "async_copy"] == ["tma", "tma"]
    assert not any(o.name in ("async_copy", "async_commit", "async_wait") for o in cons.walk())
    assert not any(o.name in ("store", "dot") for o in prod.walk())
    # the consumers: the tile's last stage is released after its K loop (inflight = 1), if it had one
    ct, ck = tile_and_k(cons)
    dot = next(o for o in ck.regions[0].ops if o.name == "dot")
    assert dot.attrs["inflight"] == 1
    ops = ct.regions[0].ops
    after = next(o for o in ops[ops.index(ck) + 1:] if o.name != "cmp")
    assert after.name == "if"
    cond = after.operands[0].owner
    assert (cond.name, cond.attrs["pred"]) == ("cmp", "gt") and cond.operands == [ck.results[-1], ct.regions[0].args[-1]]
    rel = [o for o in after.regions[0].ops if o.name == "mbarrier_arrive"]
    assert len(rel) == 1 and rel[0].attrs == {"per": "warp"} and _bar_name(rel[0]) == "empty"
    assert any(o.name == "store" for o in ct.regions[0].ops)                  # the epilogue, in the tile loop
    assert all(o.attrs.get("id") == 1 and o.attrs.get("threads") == 128 for o in cons.walk() if o.name == "barrier")


def test_roundtrip_and_ring_outlives_the_epilogue(small):
    fn, after = small
    for name, text in after.items():
        assert print_module(parse_module(text)) == text, name
    # the producer writes the ring while the consumers run the epilogue: its scratch must not alias the ring
    rings = [(o.attrs["smem_offset"], o.results[0].type) for o in fn.body.ops if o.name == "alloc_shared"
             and o.results[0].name.endswith("_ring")]
    scratch = [o for o in fn.walk() if "smem_scratch" in o.attrs]
    assert len(rings) == 2 and scratch
    for o in scratch:
        for off, t in rings:
            size = int(np.prod(t.shape)) * t.dtype.bits // 8
            assert o.attrs["smem_scratch"] >= off + size or o.attrs["smem_scratch"] + 1 <= off, (o.name, off)


@tile.kernel
def _two_deep(A: T2, B: T2, C: tile.Tensor[f32, 2]):
    for t in tile.range(tile.block_id(0), 4, tile.num_blocks(0)):
        for r in tile.range(0, 2):
            acc = tile.zeros((64, 64), f32)
            for k in tile.range(0, A.shape[1], 32, stages=4, warp_specialize=True):
                acc = tile.dot(tile.load(A, (r * 64, k), (64, 32)), tile.load(B, (k, t * 64), (32, 64)), acc)
            tile.store(C, (r * 64, t * 64), acc)


@tile.kernel
def _carried_row(A: T2, B: T2, C: tile.Tensor[f32, 2]):
    row = 0
    for t in tile.range(tile.block_id(0), 4, tile.num_blocks(0)):
        acc = tile.zeros((64, 64), f32)
        for k in tile.range(0, A.shape[1], 32, stages=4, warp_specialize=True):
            acc = tile.dot(tile.load(A, (row, k), (64, 32)), tile.load(B, (k, t * 64), (32, 64)), acc)
        tile.store(C, (row, t * 64), acc)
        row = row + 64


@pytest.mark.parametrize("kernel, why", [
    (_two_deep, r"only a loop at the kernel's top level, or directly in the body of one top-level `for`"),
    (_carried_row, r"the producer needs \w+, which the tile loop carries")])
def test_refused_nesting_warns_and_keeps_the_pipeline(kernel, why):
    """A K loop two loops deep, or one whose copies use a value the tile loop carries (the consumers'
    state, which the producer does not compute): a located PerformanceWarning, the ordinary pipeline."""
    b = kernel.bind((T2, T2, tile.Tensor[f32, 2]), {}, signature_ok=True)
    t = compiler.resolve("sm_90a")
    m, _ = kernel._frontend(b, t)
    with pytest.warns(tile.PerformanceWarning, match=r"at test_persistent_ws\.py:\d+:\d+: the loop asked for "
                      r"warp_specialize=True but keeps the ordinary pipeline: " + why):
        m, _ = compiler.lower(m, t)
    fn = m.functions[0]
    assert not any(o.name == "warp_specialize" for o in fn.walk())
    assert any(o.name == "for" and o.attrs.get("pipelined") for o in fn.walk())


# ------------------------------------------------------------------------------ the interpreter
def _bf16(rng, shape, scale=1.0):
    import ml_dtypes
    return (rng.standard_normal(shape) * scale).astype(ml_dtypes.bfloat16)


def _both(fn, M, N, K, blocks):
    import ml_dtypes
    rng = np.random.default_rng()
    A, B = _bf16(rng, (M, K)), _bf16(rng, (K, N), 0.2)
    bias = rng.standard_normal(N).astype(np.float32)
    C1 = np.full((M, N), np.nan, ml_dtypes.bfloat16)
    C2 = C1.copy()
    run(fn, (blocks,), [A, B, C1, bias, 1.5])
    GEMM.gemm[(blocks,)](A, B, C2, bias, 1.5, BM=64, BN=64, BK=32, STAGES=4, PERSISTENT=True)
    return C1, C2


@pytest.mark.parametrize("M, N, K, blocks", [(200, 130, 160, 3), (130, 300, 200, 5), (100, 72, 16, 2),
                                             (100, 72, 0, 3), (64, 64, 96, 3)])
def test_interpreter_runs_the_persistent_specialized_ir_like_the_plain_kernel(small, M, N, K, blocks):
    """Identical bits to the plain persistent kernel. K = 160 = 5 * BK with 4 stages and 12 tiles on 3
    blocks: each tile starts at another stage and parity; K = 200: 7 K blocks, the last partial;
    K = 16: one partial K block per tile; K = 0: no K iteration, the epilogue of zeros; one tile on
    3 blocks: two blocks with no tile at all."""
    fn = parse_module(small[1]["shared_memory_planning"]).functions[0]
    C1, C2 = _both(fn, M, N, K, blocks)
    assert not np.isnan(C1.astype(np.float32)).any()
    assert np.array_equal(C1.view(np.uint16), C2.view(np.uint16))


def test_interpreter_needs_the_release_after_each_tile(small):
    """The release of each tile's last stage edited away: the producer waits for it in the next tile
    (stage of iteration c - S), an error naming the wait rather than a hang."""
    fn = parse_module(small[1]["shared_memory_planning"]).functions[0]
    cons = fn.body.ops[-1].regions[1]
    tl = next(o for o in cons.ops if o.name == "for")
    ops = tl.regions[0].ops
    k = next(i for i, o in enumerate(ops) if o.name == "for")
    assert [o.name for o in ops[k + 1:k + 3]] == ["cmp", "if"]
    ops.pop(k + 2)
    with pytest.raises(InterpreterError, match=r"mbarrier_wait.*waits forever"):
        _both(fn, 200, 130, 160, 3)


# ------------------------------------------------------------------------------ the warp grid of two warpgroups
def test_two_warpgroups_take_the_widest_wgmma():
    """8 warps on Hopper: whole warpgroups along M, each on m64nN with the widest N (wgmma reads A and
    B from shared memory per instruction: 256x128 on [4, 2] would take four m64n64 per warpgroup and
    read a third more); without wgmma the mma.sync traffic rule is unchanged."""
    from tile.ir.thread_maps import mma_warps
    assert mma_warps(256, 128, 64, bf16, f32, 8) == (8, 1)
    assert mma_warps(128, 256, 64, bf16, f32, 8) == (8, 1)
    assert mma_warps(128, 128, 64, bf16, f32, 8) == (8, 1)
    assert mma_warps(64, 128, 64, bf16, f32, 8) == (4, 2)          # 64 rows: one warpgroup high
    assert mma_warps(128, 256, 64, bf16, f32, 4) == (4, 1)
    assert mma_warps(256, 128, 64, bf16, f32, 8, prefer_warpgroups=False) == (4, 2)


# ------------------------------------------------------------------------------ PTX
@needs_ptxas
@pytest.mark.parametrize("cfg", ["128x256", "256x128"])       # (128x128, one warpgroup, has registers to spare)
def test_ptx_no_spills(cfg):
    from tile.codegen import ptxas_report
    BM, BN, BK, nw, S = CONFIGS[cfg]
    ck = GEMM.gemm.compile(*SIG, target="sm_90a", **_kw(cfg))
    ptx = ck.ptx
    assert ck.artifact.meta.num_threads == 32 * nw + 128
    assert ptx.count("setmaxnreg.dec.sync.aligned.u32 \t40;") == 1
    assert ptx.count(f"setmaxnreg.inc.sync.aligned.u32 \t{232 if nw == 8 else 240};") == 1
    assert re.search(rf"bar\.sync \t1, {32 * nw};", ptx)                       # the epilogue's named barrier
    assert "cp.async.bulk.tensor.2d" in ptx and f"wgmma.mma_async.sync.aligned.m64n{min(BN, 256)}k16" in ptx
    assert ptx.count("mbarrier.init") == 2 * S and ptx.count("mbarrier.inval") == 2 * S    # full and empty
    rep = ptxas_report(ck.artifact)
    assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0 and rep["stack"] == 0, rep["log"]
    assert "warning" not in rep["log"].lower(), rep["log"]


# ------------------------------------------------------------------------------ on the GPU
def _hopper():
    from tile.compiler import gpu_arch
    if gpu_arch() != "sm_90a":
        pytest.skip("needs a Hopper GPU (sm_90a)")


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", ["128x256", "256x128", "128x128"])
@pytest.mark.parametrize("M, N, K, sms", [(1000, 1000, 1024, 5), (300, 520, 200, 3), (257, 129, 72, 2),
                                          (130, 300, 40, 132), (64, 64, 0, 4), (2000, 1500, 328, 132)])
def test_gpu_persistent_warp_specialized_gemm(cfg, M, N, K, sms):
    """Against float64 (examples/gemm.py run: bf16 output, relative error < 1e-2, output poisoned with
    NaN first, bias and gelu in the epilogue) at ragged M, N, K; few blocks (sms = 2, 3, 5) for several
    tiles per block with K blocks per tile not a multiple of the stages; K = 40: one partial K block;
    K = 0: no K iteration; sms = 132 with more blocks than some shapes have tiles."""
    _hopper()
    BM, BN, BK, nw, S = CONFIGS[cfg]
    err = GEMM.run(M, N, K, act="gelu", with_bias=True, BM=BM, BN=BN, BK=BK, STAGES=S, WS=True, PERSISTENT=True,
                   sms=sms, num_warps=nw)
    assert err < 1e-2, err


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", ["128x256", "128x128"])
def test_gpu_persistent_equals_one_block_per_tile_bit_for_bit(cfg):
    """The same tiles, the same wgmma k order, persistent (7 blocks, several tiles each) or one block per
    tile: identical bits."""
    _hopper()
    rng = np.random.default_rng()
    M, N, K = 700, 900, 520
    A = tile.asarray(rng.standard_normal((M, K)), bf16)
    B = tile.asarray(rng.standard_normal((K, N)), bf16)
    BM, BN = CONFIGS[cfg][:2]
    outs = []
    for persistent in (False, True):
        C = tile.asarray(np.full((M, N), np.nan), bf16)
        GEMM.gemm[GEMM.grid(M, N, BM, BN, persistent, sms=7)](A, B, C, np.zeros(N, np.float32), 1.0,
                                                              **_kw(cfg, persistent))
        outs.append(C.numpy().astype(np.float64))
    assert np.isfinite(outs[1]).all() and np.array_equal(outs[0], outs[1])
