"""The benchmark package without torch or a GPU: every module imports with torch, Triton and tilec
blocked; --list / --dry-run keep the case ids the result JSONs compare on; and the parent/child
machinery (budget, crash isolation, JSON, table, scripts/bench_table.py) runs end to end on a fake
family registered through TILEC_BENCH_FAMILIES."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]
MODULES = ["run", "common", "timing", "peers", "tilec_side", "child", "parent", "report", "gemm", "gemm8", "attention", "moe",
           "lowbit_gemm", "launch", "compile_times"]


def _run(args, env=None, timeout=120):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
                       env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout, p.stderr


def test_imports_and_listing_need_no_torch_triton_or_tilec():
    code = textwrap.dedent(f"""
        import sys
        for m in ("torch", "triton", "tile", "matplotlib"):
            sys.modules[m] = None            # any import of them fails
        sys.path.insert(0, {str(ROOT)!r})
        import importlib
        for m in {MODULES!r}:
            importlib.import_module("benchmarks." + m)
        from benchmarks import run
        assert run.main(["--dry-run", "--quick"]) == 0
        assert run.main(["--list"]) == 0
    """)
    rc, out, err = _run([sys.executable, "-c", code])
    assert rc == 0, err
    assert "quick mode: 42 cases" in out and "@tile.autotune over the first 2 config(s)" in out


def test_list_keeps_the_case_ids():
    rc, out, err = _run(RUN + ["--list"])
    assert rc == 0, err
    rows = [ln.split("\t") for ln in out.splitlines()]
    fams = {f for f, _ in rows}
    assert fams == {"compile", "gemm", "gemm8", "attention", "moe", "lowbit", "launch"}
    ids = {i for _, i in rows}
    for cid in ("compile/gemm", "compile/new-process", "gemm/4096x4096x4096", "gemm/16x4096x4096",
                "attention/B8-H16-S2048-D128-causal", "moe_up/T16384-E64-k8-d2048-h1024",
                "moe_down/T16384-E128-k8-d4096-h1536", "moe_layer/T16384-E64-k8-d2048-h1024", "lowbit/int4-M1-N14336-K4096", "lowbit/f4e2m1-M16-N4096-K4096",
                "launch/add1-4096"):
        assert cid in ids, cid
    rc, out, _ = _run(RUN + ["--list", "--smoke", "--only", "moe_up,lowbit/int3"])
    assert out.split() == ["moe", "moe_up/T256-E8-k2-d256-h128", "lowbit", "lowbit/int3-M1-N512-K512",
                           "lowbit", "lowbit/int3-M16-N512-K512"]
    rc, out, _ = _run(RUN + ["--list", "--only", "nothing"])
    assert rc == 2 and "no case matches" in out


FAKE = '''
import os
import sys
WEIGHT = 1.0
TORCH = False


def cases(mode):
    return [{"id": f"fake/{n}", "family": "fake", "params": {"n": n}, "configs": [], "peers": ["peer"]}
            for n in ("one", "crash", "two")]


def run(ctx):
    for c in ctx.cases:
        with ctx.case(c) as rec:
            if c["id"] == "fake/crash" and ctx.args.attempt == 1:
                os._exit(3)                      # the child dies during this case
            rec["unit"] = "TFLOP/s"
            rec["repo_on_path"] = [p for p in sys.path if os.path.isdir(os.path.join(p or ".", "benchmarks"))
                                   or os.path.isfile(os.path.join(p or ".", "run.py"))]
            rec["peers"]["peer"] = {"status": "ok", "ms": 2.0, "tflops": 1.0}
            rec["tune_configs"] = ctx.mode["tune_configs"]
            rec["tilec"] = {"status": "ok", "ms": 1.0, "tflops": 2.0, "rel_err": 1e-3, "config": {"BM": 64, "num_warps": 4},
                            "configs": [{"config": {"BM": 64}, "status": "ok", "ms": 1.0}]}
'''


def test_parent_and_children_end_to_end(tmp_path):
    (tmp_path / "fakefam.py").write_text(FAKE)
    out = tmp_path / "new1"
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = {"TILEC_BENCH_FAMILIES": "fake=fakefam", "PYTHONPATH": path}
    rc, so, se = _run(RUN + ["--only", "fake", "--out", str(out), "--budget", "60", "--seed", "7", "--tune-configs", "3"],
                      env=env)
    assert rc == 0, se + so
    (jpath,) = out.glob("tilec-bench-*-full.json")
    doc = json.loads(jpath.read_text())
    assert doc["seed"] == 7 and doc["mode"] == "full" and doc["compile"] == [] and doc["launch"] == []
    st = {c["id"]: c for c in doc["cases"]}
    assert st["fake/one"]["status"] == "ok" and st["fake/one"]["ratio"] == 2.0 and st["fake/one"]["best_peer"] == "peer"
    assert st["fake/crash"]["status"] == "ERROR" and "exited with code 3 during this case" in st["fake/crash"]["error"]
    assert st["fake/two"]["status"] == "ok"                   # the restarted child did the cases left
    assert st["fake/one"]["tune_configs"] == 3 and st["fake/two"]["tune_configs"] == 3   # (full mode: all)
    # neither the repository root (its tile/ is not the installed package) nor benchmarks/ is on sys.path
    assert st["fake/one"]["repo_on_path"] == [] and st["fake/two"]["repo_on_path"] == []
    assert "(restart 1)" in so
    txt = next(out.glob("tilec-bench-*.txt")).read_text()
    assert "fake/one" in txt and "64 w4" in txt and "3 cases: 1 ERROR, 2 ok" in txt
    assert next(out.glob("tilec-bench-*.log")).read_text().count("--- fake/") >= 3
    # scripts/bench_table.py reads these files (old and new trees' runs, as bench_compare.sh lays them out)
    shutil.copytree(out, tmp_path / "old1")
    rc, so, se = _run([sys.executable, str(ROOT / "scripts" / "bench_table.py"), str(tmp_path)])
    assert rc == 0, se
    assert "fake/one" in so and "1.000" in so and "worst new/old: 1.000 (ok)" in so


def test_compile_family_signatures_match_the_gallery_kernels():
    """benchmarks/common.py kernel_sig (the compile-time family's signatures) follows the gallery: each
    tensor parameter's dtype and rank as the kernel annotates it (a stale rank once broke the family)."""
    sys.path.insert(0, str(ROOT))
    try:
        import tile
        from benchmarks.common import gallery_kernel, kernel_sig
        for kname in ("gemm", "attention", "moe_up", "moe_down", "lowbit_gemm"):
            kern = gallery_kernel(kname)
            sig = kernel_sig(tile, kname, "int4")
            runtime = [p for p in kern.params if p.kind != "constexpr"]
            assert len(sig) == len(runtime), kname
            for p, s in zip(runtime, sig):
                if p.kind == "tensor":
                    assert s.rank == p.rank and (p.dtype is None or s.dtype == p.dtype), \
                        (kname, p.name, s, p.rank, p.dtype)
    finally:
        sys.path.remove(str(ROOT))
