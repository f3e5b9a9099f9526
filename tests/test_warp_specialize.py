"""Warp specialization on Hopper (passes/warp_specialize.py): `tile.range(..., warp_specialize=True)`
splits the TMA-pipelined GEMM loop into a producer warpgroup and consumer warpgroups. CPU: the IR
after the pass (roles, register budgets, the empty mbarriers and their releases, named barriers),
its round trip, verifier and code-generation errors, the PerformanceWarning where it cannot apply,
the PTX (ptxas: setmaxnreg, named barriers, 0 spills), and the interpreter running the specialized
IR (two host threads, real mbarrier phases) bit for bit like the plain kernel, a broken phase being
an error rather than a hang. GPU (marked gpu): each new config against float64 at ragged shapes."""
import importlib.util
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import tile
from tile import bf16, f32
from tile import compiler
from tile.codegen.errors import CompileError as CodegenError
from tile.ir.errors import VerifyError
from tile.ir.parser import parse_module
from tile.ir.printer import print_module
from tile.ir.targets import get_target
from tile.ir.verifier import verify
from tile.runtime.interpreter import InterpreterError, run

ROOT = Path(__file__).resolve().parent.parent
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH")
T2 = tile.Tensor[bf16, 2]
SIG = (T2, T2, T2, tile.Tensor[f32, 1], f32)


def _gallery(name):
    spec = importlib.util.spec_from_file_location(f"gallery_{name}_ws", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEMM = _gallery("gemm")
# (BM, BN, BK, num_warps, stages): the two-consumer tiles the pass exists for, the one-consumer 128x128,
# and a small one the interpreter runs quickly
CONFIGS = {"128x256": (128, 256, 64, 8, 4), "256x128": (256, 128, 64, 8, 4), "128x128": (128, 128, 64, 4, 4),
           "small": (64, 64, 32, 4, 4)}


def _kw(cfg, ws=True):
    BM, BN, BK, nw, S = CONFIGS[cfg]
    return dict(BM=BM, BN=BN, BK=BK, STAGES=S, WS=ws, num_warps=nw)


def _lower(target="sm_90a", **kw):
    """(function after the pipeline, ir_after) without code generation."""
    b = GEMM.gemm.bind(SIG, kw, signature_ok=True)
    t = compiler.resolve(target) if isinstance(target, str) else target
    m, _ = GEMM.gemm._frontend(b, t)
    m, after = compiler.lower(m, t)
    return m.functions[0], after


@pytest.fixture(scope="module")
def lowered():
    return {c: _lower(**_kw(c)) for c in ("128x256", "small")}


def _role_ops(fn):
    ws = [o for o in fn.body.ops if o.name == "warp_specialize"]
    assert len(ws) == 1 and fn.body.ops[-1] is ws[0], "one warp_specialize, the last op of the kernel"
    return ws[0], list(ws[0].regions[0].walk()), list(ws[0].regions[1].walk())


# ------------------------------------------------------------------------------ the IR after the pass
def test_roles_registers_and_barriers_in_the_ir(lowered):
    fn, after = lowered["128x256"]
    ws, prod, cons = _role_ops(fn)
    assert ws.attrs == {"producer_warps": 4, "consumer_barrier": 1, "producer_barrier": 2}
    assert fn.attrs["num_warps"] == 8 and fn.attrs["maxnreg"] == 168          # 65536 / 384 threads
    # register budgets: the first op of each region; 128 * 40 + 256 * 232 <= 65536
    p0, c0 = ws.regions[0].ops[0], ws.regions[1].ops[0]
    assert (p0.name, p0.attrs) == ("setmaxnreg", {"regs": 40, "action": "dec"})
    assert (c0.name, c0.attrs) == ("setmaxnreg", {"regs": 232, "action": "inc"})
    assert 128 * 40 + 256 * 232 <= 65536
    # every TMA copy is the producer's; none remains before the split or in the consumers
    copies = [o for o in fn.walk() if o.name == "async_copy"]
    assert copies and all(o.attrs["copy"] == "tma" for o in copies)
    assert {id(o) for o in copies} <= {id(o) for o in prod}
    assert not any(o.name in ("async_copy", "async_commit", "async_wait") for o in cons)
    # the mbarriers: full (count 1: the producer's arrive) and empty (count 8: one arrival per consumer warp)
    inits = {o.operands[0].name: o.attrs["count"] for o in fn.body.ops if o.name == "mbarrier_init"}
    assert inits == {"full": 1, "empty": 8}
    # the producer waits on empty, then arrives on full; the consumers wait on full and release empty per warp
    assert [o.operands[0].owner.operands[0].name for o in prod if o.name == "mbarrier_wait"] == ["empty"]
    assert [o.operands[0].owner.operands[0].name for o in prod if o.name == "mbarrier_arrive"] == ["full"]
    assert [o.operands[0].owner.operands[0].name for o in cons if o.name == "mbarrier_wait"] == ["full"]
    rel = [o for o in cons if o.name == "mbarrier_arrive"]
    assert len(rel) == 1 and rel[0].attrs == {"per": "warp"} and rel[0].operands[0].owner.operands[0].name == "empty"
    # the release follows the dot (inflight = 1: stage j - 1, for j >= 1, inside an if)
    loop = next(o for o in ws.regions[1].ops if o.name == "for")
    names = [o.name for o in loop.regions[0].ops]
    dot = next(o for o in loop.regions[0].ops if o.name == "dot")
    assert dot.attrs["inflight"] == 1 and names.index("if") > names.index("dot")
    assert "barrier" not in names                         # the ordinary pipeline's block barrier is gone
    # no unnamed barrier anywhere in the consumers; the mbarriers are retired there, before the epilogue
    assert all(o.attrs.get("id") == 1 and o.attrs.get("threads") == 256 for o in cons if o.name == "barrier")
    assert [o.operands[0].name for o in cons if o.name == "mbarrier_inval"] == ["full", "empty"]
    assert any(o.name == "store" for o in cons) and not any(o.name == "store" for o in prod)
    # before the split only thread-uniform ops
    assert all(o.name in ("alloc_shared", "mbarrier_init", "warp_specialize") or
               all(type(r.type).__name__ == "ScalarType" for r in o.results) for o in fn.body.ops)
    # the producer's phase for empty starts at parity 1 ((j / S + 1) % 2): the first round passes
    assert re.search(r"%phase = rem %\w+, %\w+", after["warp_specialize"])


def test_three_stages_release_the_stage_just_read():
    """stages = 3: the wgmma is waited for in its own iteration (inflight 0), so iteration j releases
    stage j % S right after its dot, with no branch."""
    fn, _ = _lower(**dict(_kw("small"), STAGES=3))
    ws, _, cons = _role_ops(fn)
    loop = next(o for o in ws.regions[1].ops if o.name == "for")
    ops = loop.regions[0].ops
    dot = next(o for o in ops if o.name == "dot")
    assert not dot.attrs.get("inflight")
    k = ops.index(dot)
    assert [o.name for o in ops[k + 1:k + 3]] == ["subview", "mbarrier_arrive"]
    assert ops[k + 1].operands[1] is next(o for o in ops if o.name == "mbarrier_wait").operands[0].owner.operands[1]


def test_roundtrip_after_every_pass(lowered):
    for cfg in lowered:
        for name, text in lowered[cfg][1].items():
            assert print_module(parse_module(text)) == text, (cfg, name)


def test_not_applicable_warns_and_keeps_the_pipeline():
    """sm_80 (no setmaxnreg, no TMA) and sm_90a without TMA (cp.async copies): a PerformanceWarning
    naming the loop and why; the ordinary pipeline; the loop attribute dropped."""
    for target in ("sm_80", get_target("sm_90a").without("tma")):
        with pytest.warns(tile.PerformanceWarning, match=r"kernel 'gemm' at gemm\.py:\d+:\d+: the loop asked for "
                          r"warp_specialize=True but keeps the ordinary pipeline: target sm_\w+(-tma)? has no"):
            fn, after = _lower(target=target, **_kw("small"))
        assert not any(o.name in ("warp_specialize", "setmaxnreg") for o in fn.walk())
        assert any(o.name == "for" and o.attrs.get("pipelined") for o in fn.walk())
        assert "warp_specialize" not in after["shared_memory_planning"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # asked for and applied: no warning
        _lower(**_kw("small"))


def test_frontend_checks_the_option():
    @tile.kernel
    def k(A: tile.Tensor[f32, 1], W: tile.constexpr = 1):
        for i in tile.range(0, 4, 1, stages=2, warp_specialize=W):
            pass

    @tile.kernel
    def k2(A: tile.Tensor[f32, 1]):
        for i in tile.range(0, 4, 1, warp_specialize=True):
            pass
    with pytest.raises(tile.CompileError, match=r"warp_specialize must be a compile-time bool, got"):
        k.compile(tile.Tensor[f32, 1], target="cpu")
    with pytest.raises(tile.CompileError, match=r"needs a pipelined loop \(stages >= 2\)"):
        k2.compile(tile.Tensor[f32, 1], target="cpu")


# ------------------------------------------------------------------------------ verifier and codegen errors
def test_verifier_rejects_bad_roles_and_barriers(lowered):
    text = lowered["small"][1]["shared_memory_planning"]
    for old, new, why in [
        ('setmaxnreg {regs = 40, action = "dec"}', 'setmaxnreg {regs = 44, action = "dec"}', "multiple of 8"),
        ('setmaxnreg {regs = 40, action = "dec"}', 'setmaxnreg {regs = 40, action = "less"}', "action"),
        ("producer_barrier = 2}", "producer_barrier = 1}", "barriers of their own"),
    ]:
        assert old in text
        with pytest.raises(VerifyError, match=why):
            verify(parse_module(text.replace(old, new, 1), verify=False))
    bad = text.replace("mbarrier_inval %full", "barrier {id = 1}\n    mbarrier_inval %full", 1)
    with pytest.raises(VerifyError, match="needs both `id` and `threads`"):
        verify(parse_module(bad, verify=False))


def test_codegen_rejects_a_whole_block_barrier_in_a_role(lowered):
    """A user edit that puts a plain barrier among the consumers (the producer would never arrive):
    a located CompileError, not a hang on the GPU."""
    text = lowered["small"][1]["shared_memory_planning"]
    m = parse_module(text.replace("mbarrier_inval %full", 'barrier loc("gemm.py":55:5)\n    mbarrier_inval %full', 1))
    with pytest.raises(CodegenError, match=r"gemm\.py:55:5: op 'barrier': a barrier .*must be named \{id = 1, threads = 128\}"):
        compiler.generate(m, get_target("sm_90a"))


# ------------------------------------------------------------------------------ PTX
@needs_ptxas
@pytest.mark.parametrize("cfg", ["128x256", "256x128", "small"])
def test_ptx_roles_and_no_spills(cfg):
    from tile.codegen import ptxas_report
    BM, BN, BK, nw, S = CONFIGS[cfg]
    ck = GEMM.gemm.compile(*SIG, target="sm_90a", **_kw(cfg))
    ptx = ck.ptx
    threads = 32 * nw + 128
    assert ck.artifact.meta.num_threads == threads
    assert re.search(rf"\.reqntid {threads}\b", ptx) and re.search(r"\.maxnreg 168\b", ptx)
    c_regs = 232 if nw == 8 else 240
    assert ptx.count("setmaxnreg.dec.sync.aligned.u32 \t40;") == 1
    assert ptx.count(f"setmaxnreg.inc.sync.aligned.u32 \t{c_regs};") == 1
    assert re.search(rf"bar\.sync \t1, {32 * nw};", ptx)                       # the consumers' named barrier
    assert "cp.async.bulk.tensor.2d" in ptx and "wgmma.mma_async" in ptx
    rep = ptxas_report(ck.artifact)
    assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0 and rep["stack"] == 0, rep["log"]
    assert "warning" not in rep["log"].lower(), rep["log"]                    # e.g. "setmaxnreg ignored"


# ------------------------------------------------------------------------------ the interpreter
def _bf16(rng, shape, scale=1.0):
    import ml_dtypes
    return (rng.standard_normal(shape) * scale).astype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("M, N, K", [(100, 72, 80), (33, 65, 200), (70, 10, 16), (64, 64, 0)])
def test_interpreter_runs_the_specialized_ir_like_the_plain_kernel(lowered, M, N, K):
    """The IR after the pipeline (two roles, mbarrier phases enforced) and the plain kernel on the CPU:
    identical bits. K = 16 < one tile, K = 0 (no iteration on either side), K = 200 (7 tiles, the ring
    wraps twice)."""
    import ml_dtypes
    fn = parse_module(lowered["small"][1]["shared_memory_planning"]).functions[0]
    rng = np.random.default_rng()
    A, B = _bf16(rng, (M, K)), _bf16(rng, (K, N))
    bias = rng.standard_normal(N).astype(np.float32)
    grid = (tile.cdiv(M, 64), tile.cdiv(N, 64))
    C1 = np.full((M, N), np.nan, ml_dtypes.bfloat16)
    C2 = C1.copy()
    run(fn, grid, [A, B, C1, bias, 1.5])
    GEMM.gemm[grid](A, B, C2, bias, 1.5, BM=64, BN=64, BK=32, STAGES=4)
    assert not np.isnan(C1.astype(np.float32)).any()
    assert np.array_equal(C1.view(np.uint16), C2.view(np.uint16))


def test_interpreter_catches_a_wrong_phase(lowered):
    """The producer's first-round trick edited away (parity (j / S) % 2 instead of (j / S + 1) % 2): it
    waits for a release that never comes -- an error naming the wait, not a hang."""
    text = lowered["small"][1]["shared_memory_planning"]
    m = re.search(r"(%\d+) = add (%\d+), (%\d+) : i32 loc\(\"gemm\.py\":\d+:\d+\)\n\s*(%\d+) = constant \{value = 2\}"
                  r" : i32 loc\(\"gemm\.py\":\d+:\d+\)\n\s*%phase = rem \1", text)
    assert m
    bad = text.replace(f"%phase = rem {m.group(1)}", f"%phase = rem {m.group(2)}", 1)
    fn = parse_module(bad).functions[0]
    rng = np.random.default_rng()
    import ml_dtypes
    C = np.zeros((64, 64), ml_dtypes.bfloat16)
    with pytest.raises(InterpreterError, match=r"mbarrier_wait.*waits forever for phase parity 0"):
        run(fn, (1, 1), [_bf16(rng, (64, 64)), _bf16(rng, (64, 64)), C, np.zeros(64, np.float32), 1.0])


# ------------------------------------------------------------------------------ on the GPU
def _hopper():
    from tile.compiler import gpu_arch
    if gpu_arch() != "sm_90a":
        pytest.skip("needs a Hopper GPU (sm_90a)")


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", ["128x256", "256x128", "128x128"])
@pytest.mark.parametrize("M, N, K", [(300, 520, 200), (257, 129, 72), (128, 256, 64), (130, 300, 40), (64, 64, 0),
                                     (1000, 1000, 1024)])
def test_gpu_warp_specialized_gemm(cfg, M, N, K):
    """Each config against float64 at ragged shapes: M, N, K not multiples of the tile, K shorter than
    the stages (K = 40: one partial tile; K = 0: no iteration, the output is the epilogue of zeros),
    and a longer K (16 tiles: the ring wraps four times). bf16 output: relative error < 1e-2; every
    element written (poisoned with NaN first); bias and gelu in the epilogue. The producer warpgroup
    is there where TMA can read both operands (row strides of whole 16-byte units: N and K multiples
    of 8); B with N = 129 or 300 takes cp.async, and the loop keeps the ordinary pipeline (with a
    PerformanceWarning) -- right all the same."""
    _hopper()
    BM, BN, BK, nw, S = CONFIGS[cfg]
    rng = np.random.default_rng()
    A = tile.asarray(rng.standard_normal((M, K)), bf16)
    B = tile.asarray(rng.standard_normal((K, N)) / np.sqrt(max(K, 1)), bf16)
    bias = rng.standard_normal(N).astype(np.float32)
    C = tile.asarray(np.full((M, N), np.nan), bf16)
    ck = GEMM.gemm[(tile.cdiv(M, BM), tile.cdiv(N, BN))](A, B, C, bias, 1.5, HAS_BIAS=True, ACT="gelu",
                                                           **_kw(cfg))
    tma = N % 8 == 0 and K % 8 == 0
    assert ck.artifact.meta.num_threads == 32 * nw + (128 if tma else 0)
    ref = GEMM.reference(A.numpy(), B.numpy(), bias, 1.5, "gelu")
    out = C.numpy().astype(np.float64)
    assert np.isfinite(out).all(), "some outputs were not written"
    assert np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30) < 1e-2


@pytest.mark.gpu
def test_gpu_warp_specialized_equals_plain_pipeline_bit_for_bit():
    """The same 128x128 tiles and the same wgmma k order with and without the producer warpgroup:
    identical bits (only who issues the copies differs)."""
    _hopper()
    rng = np.random.default_rng()
    M, N, K = 384, 256, 520
    A = tile.asarray(rng.standard_normal((M, K)), bf16)
    B = tile.asarray(rng.standard_normal((K, N)), bf16)
    outs = []
    for ws in (False, True):
        C = tile.asarray(np.full((M, N), np.nan), bf16)
        GEMM.gemm[(tile.cdiv(M, 128), tile.cdiv(N, 128))](A, B, C, np.zeros(N, np.float32), 1.0, **_kw("128x128", ws))
        outs.append(C.numpy().astype(np.float64))
    assert np.isfinite(outs[1]).all() and np.array_equal(outs[0], outs[1])
