"""examples/attention.py with WS=True (issue 9, FA3's producer warpgroup): one pipelined loop over every
visible key block, split by passes/warp_specialize.py into a producer warpgroup issuing K/V's TMA
copies and consumer warpgroups running S = Q K^T (wgmma .ss), the softmax (the causal / ragged-tail
mask only on blocks from `free` on, under a block-uniform branch) and O += P V (wgmma .rs); a stage is
released after the last wgmma reading it has completed (p @ v's wait, which covers the deferred q @ k^T
of OVERLAP too).

CPU: the IR after the pass (roles, register budgets, the one release after p @ v, named barriers),
its round trip, ptxas on the benchmark configurations (0 spills, no warning), and the interpreter
running the specialized IR (two host threads, real mbarrier phases) giving the same bits as the plain
two-loop kernel at small ragged shapes. GPU (`-m gpu`): against float64 (tolerances as in
tests/test_attention_prefill.py: relative 2e-2, log-sum-exp 1e-3) and against the interpreter."""
import functools

import numpy as np
import pytest

import tile
from tile import bf16, f32, compiler
from helpers import LazyExample


ATTN = LazyExample("attention")
T4 = tile.Tensor[bf16, 4]
TOL, LSE_TOL = 2e-2, 1e-3
BIG = dict(BM=128, num_warps=8, WS=True)      # the FA3 tile: 2 consumer warpgroups + the producer


@functools.lru_cache(maxsize=None)
def _compiled(D, BN, overlap, causal=True):
    return ATTN.attention.compile(T4, T4, T4, T4, f32, target="sm_90a", D=D, BN=BN, CAUSAL=causal,
                                  OVERLAP=overlap, **BIG)


def _ws(fn):
    ws = [o for o in fn.body.ops if o.name == "warp_specialize"]
    assert len(ws) == 1 and fn.body.ops[-1] is ws[0], "one warp_specialize, the last op of the kernel"
    return ws[0]


# ------------------------------------------------------------------------------ the IR after the pass
@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlap"])
def test_roles_release_after_the_last_wgmma(overlap):
    ck = _compiled(128, 128 if not overlap else 64, overlap)
    fn = ck.module.functions[0]
    ws = _ws(fn)
    assert fn.attrs["num_warps"] == 8 and fn.attrs["maxnreg"] == 168
    p0, c0 = ws.regions[0].ops[0], ws.regions[1].ops[0]
    assert (p0.name, p0.attrs) == ("setmaxnreg", {"regs": 40, "action": "dec"})
    assert (c0.name, c0.attrs) == ("setmaxnreg", {"regs": 232, "action": "inc"})
    prod, cons = list(ws.regions[0].walk()), list(ws.regions[1].walk())
    # the producer: every K/V copy, by TMA, after a wait on `empty`; the consumers: no copy at all
    assert sorted(o.operands[1].name for o in prod if o.name == "async_copy") == ["K", "V"]
    assert all(o.attrs["copy"] == "tma" for o in prod if o.name == "async_copy")
    assert not [o for o in cons if o.name in ("async_copy", "async_wait", "async_commit")]
    empty = next(o for o in fn.body.ops if o.name == "mbarrier_init" and o.attrs["count"] == 8).operands[0]
    assert [o.name for o in prod].count("mbarrier_wait") == 1
    # the consumers' key loop: both products, p @ v last, then the one release of the stage (per warp)
    loop = next(o for o in ws.regions[1].ops if o.name == "for")
    body = loop.regions[0].ops
    dots = [o for o in body if o.name == "dot"]
    assert [d.attrs["atom"][-2:] for d in dots] == ["ss", "rs"]
    # with OVERLAP the next block's scores wait until p @ v; without, at most the branch to the mask
    assert (overlap <= bool(dots[0].attrs.get("deferred"))) and not dots[1].attrs.get("deferred")
    assert not any(d.attrs.get("inflight") for d in dots)     # p @ v waits at once: the stage is free after it
    rel = [o for o in loop.regions[0].walk() if o.name == "mbarrier_arrive"]
    assert len(rel) == 1 and rel[0].attrs == {"per": "warp"} and rel[0].parent is loop.regions[0]
    assert rel[0].operands[0].owner.operands[0] is empty
    assert body.index(rel[0]) > body.index(dots[1]) and body.index(rel[0].operands[0].owner) == body.index(dots[1]) + 1
    # the slot released is the slot the iteration read (and waited for on `full`)
    wait = next(o for o in body if o.name == "mbarrier_wait")
    assert rel[0].operands[0].owner.operands[1] is wait.operands[0].owner.operands[1]
    # the mask: one branch, in the consumers' loop, of register math only
    ifs = [o for o in body if o.name == "if"]
    assert len(ifs) == 1 and not [o for o in ifs[0].walk() if o.name in ("barrier", "shared_load", "dot")]
    assert all(o.attrs == {"id": 1, "threads": 256} for o in cons if o.name == "barrier")


def test_ir_after_the_pass_round_trips():
    from tile.ir.parser import parse_module
    from tile.ir.printer import print_module
    text = _compiled(128, 64, True).ir_after["warp_specialize"]
    assert "warp_specialize {producer_warps = 4" in text
    assert print_module(parse_module(text)) == text


# ------------------------------------------------------------------------------ ptxas
PTXAS = [(128, 128, False), (128, 64, True), (64, 128, True)]


@pytest.mark.parametrize("D,BN,overlap", PTXAS, ids=[f"D{d}-BN{n}{'-overlap' if o else ''}" for d, n, o in PTXAS])
def test_sm90a_ws_configs_no_spills(D, BN, overlap):
    from tile.codegen import ptxas_report
    ck = _compiled(D, BN, overlap)
    assert _ws(ck.module.functions[0])
    ptx = ck.ptx
    assert ck.artifact.meta.num_threads == 384
    assert ptx.count("setmaxnreg.dec.sync.aligned.u32 \t40;") == 1
    assert ptx.count("setmaxnreg.inc.sync.aligned.u32 \t232;") == 1
    assert "cp.async.bulk.tensor.4d.shared::cluster.global" in ptx      # K/V by TMA
    assert "cp.async.ca" not in ptx and "cp.async.cg" not in ptx             # no cp.async left
    rep = ptxas_report(ck.artifact)
    assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0 and rep["stack"] == 0, rep["log"]
    assert "warning" not in rep["log"].lower(), rep["log"]     # "Performance Loss", "setmaxnreg ignored"


# ------------------------------------------------------------------------------ the interpreter
SMALL = dict(D=64, BM=64, BN=32, num_warps=4, STAGES=2)


@functools.lru_cache(maxsize=None)
def _sm90a_ir(causal, overlap, ws):
    """The function after the sm_90a pipeline (with ws: two roles), to run in the interpreter. (The
    plain kernel is compared in the same form, not as the cpu pipeline runs it: the two differ by an
    ulp in a rare output element, WS or not.)"""
    from tile.ir.parser import parse_module
    kw = dict(SMALL, CAUSAL=causal, OVERLAP=overlap, WS=ws)
    b = ATTN.attention.bind((T4, T4, T4, T4, f32), kw, signature_ok=True)
    t = compiler.resolve("sm_90a")
    m, _ = ATTN.attention._frontend(b, t)
    m, after = compiler.lower(m, t)
    fn = parse_module(after["shared_memory_planning"]).functions[0]
    assert any(o.name == "warp_specialize" for o in fn.body.ops) == ws
    return fn


# (H, HKV, S, causal, overlap): GQA, MHA, S = 1, S not a multiple of BN (32) nor BM (64), S a multiple
INTERP = [(4, 2, 77, True, False), (4, 2, 77, False, True), (2, 1, 1, True, True), (2, 2, 1, False, False),
          (2, 2, 64, True, True), (4, 1, 150, False, False)]


@pytest.mark.parametrize("H,HKV,S,causal,overlap", INTERP,
                         ids=[f"H{h}/{k}-S{s}{'-causal' if c else ''}{'-overlap' if o else ''}" for h, k, s, c, o in INTERP])
def test_interpreter_specialized_ir_same_bits_as_plain_kernel(H, HKV, S, causal, overlap):
    """The specialized IR (producer and consumers in two host threads, mbarrier phases enforced) and
    the plain two-loop kernel: identical bits, and close to float64."""
    import ml_dtypes
    from tile.runtime.interpreter import run
    rng = np.random.default_rng()
    B, D = 1, SMALL["D"]
    q, k, v = (rng.standard_normal(s).astype(ml_dtypes.bfloat16) for s in ((B, H, S, D), (B, HKV, S, D), (B, HKV, S, D)))
    o_ws = np.full((B, H, S, D), np.nan, ml_dtypes.bfloat16)
    o_plain = o_ws.copy()
    grid = (tile.cdiv(S, SMALL["BM"]), B * H)
    scale = float(1.0 / np.sqrt(D))
    run(_sm90a_ir(causal, overlap, True), grid, [q, k, v, o_ws, scale])
    run(_sm90a_ir(causal, overlap, False), grid, [q, k, v, o_plain, scale])
    assert not np.isnan(o_ws.astype(np.float32)).any()
    assert np.array_equal(o_ws.view(np.uint16), o_plain.view(np.uint16))
    ref = ATTN.reference(q, k, v, causal, scale)
    assert np.linalg.norm(o_ws.astype(np.float64) - ref) / np.linalg.norm(ref) < TOL


# ------------------------------------------------------------------------------ GPU
GPU = [(128, False, 128, False), (128, True, 128, False), (128, True, 128, True), (128, False, 64, True),
       (128, True, 64, False), (64, False, 128, True), (64, True, 128, False), (64, True, 64, True)]


@pytest.mark.gpu
@pytest.mark.parametrize("D,causal,BN,overlap", GPU, ids=[
    f"D{d}{'-causal' if c else ''}-BN{n}{'-overlap' if o else ''}" for d, c, n, o in GPU])
def test_gpu_ws_against_float64(D, causal, BN, overlap, hopper):
    """The benchmark's WS configurations at ragged lengths (several key blocks, a ragged tail), GQA,
    LSE, fresh inputs twice; then S = 1 and MQA."""
    for seed in (None, None):
        err, lse_err = ATTN.run(B=2, H=4, HKV=2, S=389, D=D, causal=causal, lse=True, BN=BN, OVERLAP=overlap, **BIG)
        assert err < TOL and lse_err < LSE_TOL, (err, lse_err)
    err, lse_err = ATTN.run(B=1, H=2, HKV=1, S=1, D=D, causal=causal, lse=True, BN=BN, OVERLAP=overlap, **BIG)
    assert err < TOL and lse_err < LSE_TOL, (err, lse_err)


@pytest.mark.gpu
@pytest.mark.parametrize("overlap", [False, True])
def test_gpu_ws_agrees_with_interpreter(overlap, hopper):
    """Same inputs on the GPU and in the interpreter: within 4 bf16 ulps (of the largest output)."""
    from helpers import gpu_and_interpreter
    rng = np.random.default_rng()
    B, H, HKV, S, D = 1, 4, 2, 300, 128
    q, k, v = (tile.asarray(rng.standard_normal(s), bf16) for s in ((B, H, S, D), (B, HKV, S, D), (B, HKV, S, D)))
    o = tile.asarray(np.full((B, H, S, D), np.nan), bf16)
    L = tile.asarray(np.full((B, H, S), np.nan), f32)
    (og, oc), (lg, lc) = gpu_and_interpreter(ATTN.attention_lse, (tile.cdiv(S, 128), B * H),
                                             [q, k, v, o, L, 1.0 / np.sqrt(D)], [3, 4], D=D, BN=128,
                                             CAUSAL=True, OVERLAP=overlap, **BIG)
    og, oc = og.numpy().astype(np.float64), oc.numpy().astype(np.float64)
    assert np.isfinite(og).all() and np.isfinite(oc).all()
    assert np.abs(og - oc).max() <= 2.0 ** -6 * max(1.0, np.abs(oc).max())
    assert np.abs(lg.numpy() - lc.numpy()).max() < LSE_TOL


# ------------------------------------------------------------------------------ refused cleanly
@tile.kernel
def _dot_in_a_branch(A: tile.Tensor[bf16, 2], B: tile.Tensor[bf16, 2], C: tile.Tensor[f32, 2]):
    acc = tile.zeros((64, 64), f32)
    for k in tile.range(0, A.shape[1], 32, stages=3, warp_specialize=True):
        a = tile.load(A, (0, k), (64, 32))
        b = tile.load(B, (k, 0), (32, 64))
        if k > 0:
            acc = tile.dot(a, b, acc)
    tile.store(C, (0, 0), acc)


def test_a_dot_in_a_branch_keeps_the_ordinary_pipeline():
    """No last dot in program order: a located PerformanceWarning saying why, the ordinary pipeline."""
    T2 = tile.Tensor[bf16, 2]
    b = _dot_in_a_branch.bind((T2, T2, tile.Tensor[f32, 2]), {}, signature_ok=True)
    t = compiler.resolve("sm_90a")
    m, _ = _dot_in_a_branch._frontend(b, t)
    with pytest.warns(tile.PerformanceWarning, match=r"kernel '_dot_in_a_branch' at test_attention_ws\.py:\d+:\d+: .*"
                      r"keeps the ordinary pipeline: a dot of the loop body is inside a nested region"):
        m, _ = compiler.lower(m, t)
    fn = m.functions[0]
    assert not any(o.name in ("warp_specialize", "setmaxnreg") for o in fn.walk())
    assert any(o.name == "for" and o.attrs.get("pipelined") for o in fn.walk())
