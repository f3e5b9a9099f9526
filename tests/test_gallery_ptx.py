"""Every gallery kernel compiles to PTX for sm_80 and sm_90a, and ptxas assembles it; the default
GEMM configuration spills nothing and uses the tensor cores; `tilec compile` writes the PTX."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tile
from helpers import assemble

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not found on PATH")


def load(name):
    spec = importlib.util.spec_from_file_location(f"gallery_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def signature(kernel, **dtypes):
    """Compile-time signature of a kernel from its annotations (dtype overrides for Tensor[rank])."""
    out = []
    for p in kernel.params:
        if p.kind == "tensor":
            out.append(tile.Tensor[dtypes.get(p.name, p.dtype), p.rank])
        elif p.kind == "scalar":
            out.append(p.dtype)
    return out


def cases():
    yield "gemm", "gemm", {}, {}
    yield "gemm", "gemm", {"BM": 128, "BN": 128, "BK": 32, "HAS_BIAS": True, "ACT": "gelu"}, {}
    yield "gemm", "gemm_splitk", {"BM": 64, "BN": 64, "BK": 64}, {}
    yield "gemm", "gemm_splitk_reduce", {"HAS_BIAS": True, "ACT": "silu"}, {}
    for d in (64, 128):
        yield "attention", "attention", {"D": d, "CAUSAL": True}, {}
    yield "attention", "attention", {"D": 64}, {}
    for k in ("router", "moe_offsets", "moe_scatter", "moe_up", "moe_down", "moe_combine"):
        yield "moe", k, {}, {}
    for w in ("int3", "int4", "uint5", "int6", "f6e3m2", "f4e2m1"):
        yield "lowbit_gemm", "lowbit_gemm", {"ZERO": 16.0 if w == "uint5" else 0.0}, {"W": tile.dtype(w)}
    # (the serving-attention kernels at a benchmark configuration: SERVING below checks every one on sm_90a)
    yield "decode_attention", "paged_decode", {"PAGE": 16}, {}
    yield "varlen_attention", "varlen_attention", {"CAUSAL": True}, {}


CASES = list(cases())


ptxas = assemble


@needs_ptxas
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[0]}.{c[1]}{i}" for i, c in enumerate(CASES)])
def test_gallery_kernel_assembles(case, arch, tmp_path):
    mod, kname, consts, dtypes = CASES[case]
    k = getattr(load(mod), kname)
    ck = k.compile(*signature(k, **dtypes), target=arch, **consts)
    assert ck.ptx and f".target {arch}" in ck.ptx
    report = ptxas(ck.ptx, arch, tmp_path)
    assert report, "no resource report from ptxas"


@needs_ptxas
def test_default_gemm_no_spills_tensor_cores(tmp_path):
    k = load("gemm").gemm
    ck = k.compile(*signature(k), target="sm_90a", BM=128, BN=128, BK=32)
    report = ptxas(ck.ptx, "sm_90a", tmp_path)
    flat = str(report)
    assert "spill" in flat or report, report
    for key, v in _flatten(report):
        if "spill" in key:
            assert v == 0, f"{key} = {v}: {report}"
    assert "mma" in ck.ptx and ("mma.sync.aligned.m16n8k16" in ck.ptx or "wgmma.mma_async" in ck.ptx)


def _flatten(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flatten(v, f"{prefix}{k}.")
    elif isinstance(d, (int, float)):
        yield prefix.rstrip("."), d


@needs_ptxas
def test_tilec_compile_writes_ptx(tmp_path):
    out = tmp_path / "gemm.ptx"
    r = subprocess.run([sys.executable, "-m", "tile.cli", "compile", f"{EXAMPLES / 'gemm.py'}::gemm",
                        "--target", "sm_90a", "-o", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert ".target sm_90a" in out.read_text()
    ptxas(out.read_text(), "sm_90a", tmp_path)


@needs_ptxas
@pytest.mark.parametrize("D,causal,BM", [(64, False, 64), (128, False, 64), (128, True, 64), (128, False, 128)])
def test_attention_pv_wgmma_from_registers(D, causal, BM, tmp_path):
    """sm_90a attention: p @ v is a wgmma in the RS form (p's bf16 A fragments in registers, converted
    from q @ k^T's wgmma accumulator inside each thread, no shared-memory round trip) with V read
    through an MN-major (trans-b = 1) 128B-swizzle descriptor; q @ k^T stays SS. No mma.sync, no
    ldmatrix, no injected warpgroup.arrive / serialization (C7519/C7515); the gallery default
    (BM = 64) spills nothing."""
    import re
    from tile.ir.core import Operation
    k = load("attention").attention
    ck = k.compile(*signature(k), target="sm_90a", D=D, CAUSAL=causal, BM=BM)
    ptx = ck.ptx
    rs = re.findall(r"wgmma\.mma_async\.sync\.aligned\.m64n(\d+)k16\.f32\.bf16\.bf16 \{[^}]*\}, "
                    r"\{%r\d+, %r\d+, %r\d+, %r\d+\}, \S+, p, 1, 1, 1;", ptx)
    ss = re.findall(r"wgmma\.mma_async\.sync\.aligned\.m64n(\d+)k16\.f32\.bf16\.bf16 \{[^}]*\}, "
                    r"%?\w+, %?\w+, p, 1, 1, 0, 0;", ptx)
    blocks = BM // 64
    loops = 2                      # the key blocks without a mask, then the masked ones (diagonal, tail)
    assert len(rs) == loops * blocks * 64 // 16 and all(int(n) == D for n in rs), rs   # BN = 64: 4 k16 steps
    assert len(ss) == loops * blocks * D // 16 and all(int(n) == 64 for n in ss), ss
    assert "mma.sync" not in ptx and "ldmatrix" not in ptx
    # the conversion of p to the A fragment stays in registers
    fn = ck.module.functions[0]
    pv = [op for op in fn.walk() if op.name == "dot" and op.operands[1].owner.name == "shared_load"]
    assert len(pv) == loops
    for d in pv:
        a = d.operands[0].owner
        while isinstance(a, Operation) and a.name == "convert_layout":
            assert "smem_scratch" not in a.attrs
            a = a.operands[0].owner
        assert a.name == "cast"
    src = tmp_path / "k.ptx"
    src.write_text(ptx)
    r = subprocess.run(["ptxas", "-arch=sm_90a", "-v", str(src), "-o", str(tmp_path / "k.cubin")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "C7519" not in r.stderr and "C7515" not in r.stderr, r.stderr
    if BM == 64:
        assert "0 bytes spill stores" in r.stderr, r.stderr


@needs_ptxas
@pytest.mark.parametrize("cfg", [dict(BM=128, BN=128, BK=64, STAGES=4), dict(BM=64, BN=64, BK=64, STAGES=4),
                                 dict(BM=128, BN=128, BK=32, STAGES=4)])
def test_gemm_wgmma_in_flight_across_iterations_not_serialized(cfg, tmp_path):
    """With stages - prefetch = 2 the loop keeps one wgmma group running into the next iteration
    (wait_group 1) and waits for it on the loop's exit edge, before the zero-trip path joins: where
    the wait sat after the join, ptxas serialized every wgmma of the kernel (C7515)."""
    k = load("gemm").gemm
    ck = k.compile(*signature(k), target="sm_90a", **cfg)
    assert "wgmma.wait_group.sync.aligned \t1;" in ck.ptx or "wgmma.wait_group.sync.aligned 1;" in ck.ptx
    rep = assemble(ck.ptx, "sm_90a", tmp_path)
    assert "C7515" not in rep["log"] and "C7519" not in rep["log"], rep["log"]
    assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0, rep["log"]


SERVING = [   # the serving-attention kernels at the configurations benchmarks/attention_serving.py runs by default
    ("decode_attention", "flash_decode", dict(D=128, BM=16, BN=64, STAGES=3, SPLIT=True)),
    ("decode_attention", "flash_decode", dict(D=128, BM=16, BN=64, STAGES=3, SPLIT=False)),
    ("decode_attention", "paged_decode", dict(PAGE=64, D=128, BM=16, BN=64, STAGES=3, SPLIT=True)),
    ("decode_attention", "paged_decode", dict(PAGE=16, D=128, BM=16, BN=64, STAGES=3, SPLIT=True)),
    ("decode_attention", "decode_combine", dict(D=128)),
    ("varlen_attention", "varlen_attention", dict(D=128, BM=64, BN=64, STAGES=2, CAUSAL=False)),
    ("varlen_attention", "varlen_attention", dict(D=128, BM=128, BN=64, STAGES=2, CAUSAL=True, num_warps=8)),
]


@needs_ptxas
@pytest.mark.parametrize("case", range(len(SERVING)), ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(SERVING)])
def test_serving_attention_assembles_without_spills(case, tmp_path):
    """sm_90a: ptxas assembles each kernel with no spill and no stack; the attention kernels stream
    K/V through cp.async ring buffers (the gathers by row index pipelined, the paged cache's block
    table read in the prefetch) and use the tensor cores."""
    mod, kname, consts = SERVING[case]
    k = getattr(load(mod), kname)
    ck = k.compile(*signature(k), target="sm_90a", **consts)
    report = ptxas(ck.ptx, "sm_90a", tmp_path)
    for key, v in _flatten(report):
        if "spill" in key or "stack" in key:
            assert v == 0, f"{key} = {v}: {report}"
    if kname != "decode_combine":
        fn = ck.module.functions[0]
        assert [o for o in fn.walk() if o.name == "async_gather"], "K/V gathers are pipelined"
        assert not [o for o in fn.walk() if o.name == "gather"]
        assert "cp.async.cg.shared.global" in ck.ptx
        assert "mma.sync.aligned.m16n8k16" in ck.ptx or "wgmma.mma_async" in ck.ptx


@needs_ptxas
@pytest.mark.parametrize("step", ["up", "down"])
def test_moe_layer_benchmark_configs_assemble_without_spills(step, tmp_path):
    """The configs benchmarks/moe.py times the MoE layer with (moe_up's 128x128 tile holds two
    accumulators: on 4 warps it spilled 2 KB per thread, so it takes 8)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        from benchmarks.moe import LAYER_CONFIG
    finally:
        sys.path.pop(0)
    k = getattr(load("moe"), f"moe_{step}")
    consts = dict(LAYER_CONFIG[step], **({"F": 1024} if step == "up" else {}))
    report = ptxas(k.compile(*signature(k), target="sm_90a", **consts).ptx, "sm_90a", tmp_path)
    for key, v in _flatten(report):
        if "spill" in key or "stack" in key:
            assert v == 0, f"{key} = {v}: {report}"
