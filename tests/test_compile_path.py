"""The compile path of a launch (tile/compiler.py build): the kernel cache is read before any pass
runs; a miss starts the LLVM worker before the passes, runs them without printing the IR after each
one and checks only the last pass's IR; CompiledKernel.module / .ir_after come on demand and match
what an eager pipeline run gives."""
from __future__ import annotations

import pytest

import tile
from tile import f32
from tile.runtime import cache as C


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TILEC_CACHE", raising=False)
    monkeypatch.setenv("TILEC_PTXAS_REPORT", "0")
    monkeypatch.setattr(C, "_DEFAULT", None)
    return tmp_path / "cache"


def _kernel():
    @tile.kernel
    def scale(X: tile.Tensor[f32, 1], Y: tile.Tensor[f32, 1], s: float, BLOCK: tile.constexpr = 128):
        i = tile.block_id(0) * BLOCK
        tile.store(Y, (i,), tile.load(X, (i,), (BLOCK,)) * s)
    return scale


SIG = dict(X=tile.Tensor[f32, 1], Y=tile.Tensor[f32, 1], s=float)


def test_a_cache_hit_runs_no_pass_and_the_pipeline_views_come_on_demand(own_cache, monkeypatch):
    from tile.ir.parser import parse_module
    from tile.passes import manager
    runs = []
    real = manager.run_pipeline

    def counting(*a, **k):
        runs.append(k.get("record", True))
        return real(*a, **k)
    monkeypatch.setattr(manager, "run_pipeline", counting)
    ck1 = _kernel().compile(target="sm_90a", **SIG)                # a miss: passes without recording
    assert runs == [False] and ck1.ptx
    monkeypatch.setattr(C, "_DEFAULT", None)                        # a new process: the disk cache
    ck2 = _kernel().compile(target="sm_90a", **SIG)
    assert runs == [False] and ck2.ptx == ck1.ptx                   # a hit: no pass ran
    want_module, want = real(parse_module(ck1.ir), "sm_90a")         # the eager pipeline
    assert ck2.ir_after == want and list(want)[-1] in ck2.passes
    assert runs == [False, True]
    assert ck1.ir_after == want                                     # (ck1 re-parses its front-end IR)
    from tile.ir.printer import print_module
    assert print_module(ck2.module) == print_module(want_module) == print_module(ck1.module)
    assert ck2.function.name == "scale"


def test_a_miss_starts_the_llvm_worker_before_the_passes(own_cache, monkeypatch):
    from tile import compiler
    from tile.codegen import llvm_isolated
    monkeypatch.delenv("TILEC_LLVM_INPROCESS", raising=False)
    seen = []
    real = compiler.lower

    def spy(*a, **k):
        w = llvm_isolated._WORKER
        seen.append(w is not None and w.proc.poll() is None)
        return real(*a, **k)
    monkeypatch.setattr(compiler, "lower", spy)
    llvm_isolated._shutdown()
    llvm_isolated._WORKER = None                  # (the one started here serves the later tests)
    ck = _kernel().compile(target="sm_90a", **SIG, BLOCK=256)
    assert seen == [True] and ".entry scale" in ck.ptx


def test_the_worker_runs_without_the_compiler_packages():
    """The LLVM worker is this one file run on its own: it imports llvmlite, not tile."""
    import subprocess
    import sys
    from tile.codegen import llvm_isolated as code
    src = code._WORKER_MAIN.replace("mod.serve()", "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tile'))")
    out = subprocess.run([sys.executable, "-c", src, code.__file__], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_ptxas_report_run_keeps_its_cubin(own_cache, monkeypatch):
    """Where ptxas runs for the resource report, its cubin stays on the artifact (and in the cache):
    the first launch loads it instead of assembling the PTX a second time."""
    import shutil
    if shutil.which("ptxas") is None:
        pytest.skip("needs ptxas on PATH")
    monkeypatch.setenv("TILEC_PTXAS_REPORT", "1")
    ck = _kernel().compile(target="sm_90a", **SIG, BLOCK=64)
    assert ck.cubin[:4] == b"\x7fELF" and ck.artifact.extra["ptxas"]["registers"] > 0
    monkeypatch.setattr(C, "_DEFAULT", None)
    ck2 = _kernel().compile(target="sm_90a", **SIG, BLOCK=64)
    assert ck2.cubin == ck.cubin
