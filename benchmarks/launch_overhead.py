"""Issue 12's timing numbers in one GPU run, beside Triton (and torch.add), printed as three short tables:

    python benchmarks/launch_overhead.py [--n 10000] [--size 4096] [--skip-compile] [--skip-warm]

1. Host time per launch: tilec's `kernel[grid](x, y, n)` (fast path, and the general path for
   comparison; the same kernel under @tile.autotune with one config: the cost of the autotune layer)
   beside Triton and `torch.add`, one-line elementwise kernels on torch tensors, all in one process.
   Each is warmed up (compile, module load), then launched N times in a loop timed with
   time.perf_counter (host time; the GPU work of a 4096-element add is far below the launch cost),
   with torch.cuda.synchronize() at the end (counted). Best of 5 loops. `measure()` is what the
   benchmark's `launch` family (benchmarks/launch.py) records.
2. Cold compile: each gallery kernel (examples/*.py at its default config, for the GPU's arch:
   front end, passes, LLVM, ptxas -> cubin) in a fresh process with an empty kernel cache,
   `kernel.compile(...)` wall time (the process's imports not counted); Triton's matmul (the
   tutorial kernel, 128x128x64, 4 warps, 3 stages) the same way: its first call with an empty
   TRITON_CACHE_DIR, minus a second call.
3. Warm-cache first launch: a fresh process that already holds torch CUDA tensors (so the CUDA
   context exists, as in any torch program) runs `import tile`, imports examples/gemm.py and launches
   the gemm once (its code in the disk cache from an earlier process), synchronized: the time from
   `import tile` to the launch returning, and to the synchronize. Triton the same way with its
   cache warm: `import triton`, define the matmul, launch, synchronize. A row says how much of
   tilec's time is importing cuda-python's driver module (cuda.pathfinder mostly).
Triton's rows are skipped when triton is not installed."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ("gemm", "attention", "lowbit_gemm", "moe")


# ----------------------------------------------------------------------------------- 1. per launch
def tile_kernels():
    import tile

    @tile.kernel            # (string annotations: they may use only `tile`, a name of the kernel's closure)
    def tile_add1(X: tile.Tensor[tile.f32], Y: tile.Tensor[tile.f32], n: int, BLOCK: tile.constexpr = 1024):
        i = tile.block_id(0) * BLOCK
        tile.store(Y, (i,), tile.load(X, (i,), (BLOCK,)) + 1.0)
    return tile_add1


def triton_add1():
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
    import torch
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
    import torch
    import tile
    tile_add1 = tile_kernels()
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
    tk = triton_add1()
    if tk is not None:
        tk[grid](x, y, size, BLOCK=1024)
        torch.cuda.synchronize()
        rows.append(("triton add1[grid](x, y, n, BLOCK=1024)", per_launch(lambda: tk[grid](x, y, size, BLOCK=1024), n)))
    else:
        rows.append(("triton (not installed)", float("nan")))
    rows.append(("torch.add(x, 1.0, out=y)", per_launch(lambda: torch.add(x, 1.0, out=y), n)))
    return rows


def launch_table(a):
    import torch
    import tile
    rows = measure(a.n, a.size)
    print(f"GPU: {torch.cuda.get_device_name()}, tilec target {tile.current_target()}, {a.size} elements, "
          f"{a.n} launches per loop, best of 5")
    w = max(len(r[0]) for r in rows)
    print(f"{'host time per launch':<{w}}  {'us':>8}")
    for name, us in rows:
        print(f"{name:<{w}}  {us:8.2f}")


# ------------------------------------------------------------------------- children (fresh processes)
def _gallery_kernels():
    import importlib.util
    from tile.kernel import Kernel
    out = []
    for f in GALLERY:
        spec = importlib.util.spec_from_file_location(f"gallery_{f}", ROOT / "examples" / f"{f}.py")
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        out += [(f"{f}.{n}" if n != f else f, v) for n, v in vars(m).items() if isinstance(v, Kernel)]
    return out


def _signature(kernel):
    """Kernel.compile arguments without launch arguments: the annotated signature (tensors whose
    dtype/rank come only from the launch: int4, rank 2) and the constexpr defaults."""
    from tile import cli
    try:
        return cli.signature_args(kernel, {})
    except cli.CLIError:
        defs = {p.name: f"tensor<{'x'.join(['?'] * (p.rank or 2))}x{p.dtype or 'int4'}>"
                for p in kernel.params if p.kind == "tensor" and (p.dtype is None or p.rank is None)}
        return cli.signature_args(kernel, defs)


def child_compile(name):
    """One gallery kernel, compiled cold (the caller gives an empty TILEC_CACHE_DIR)."""
    import tile
    kernels = dict(_gallery_kernels())
    k = kernels[name]
    sig = _signature(k)
    t = time.perf_counter()
    ck = k.compile(target=tile.current_target(), **sig)
    dt = time.perf_counter() - t
    return {"seconds": dt, "registers": (ck.artifact.extra.get("ptxas") or {}).get("registers"),
            "cubin": bool(ck.cubin)}


TRITON_MATMUL = '''
import triton
import triton.language as tl


@triton.jit
def matmul(A, B, C, M, N, K, sam, sak, sbk, sbn, scm, scn,
           BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    a = A + rm[:, None] * sam + rk[None, :] * sak
    b = B + rk[:, None] * sbk + rn[None, :] * sbn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BK)):
        am = (rm[:, None] < M) & (rk[None, :] < K - k * BK)
        bm = (rk[:, None] < K - k * BK) & (rn[None, :] < N)
        acc += tl.dot(tl.load(a, mask=am, other=0.0), tl.load(b, mask=bm, other=0.0))
        a += BK * sak
        b += BK * sbk
    c = C + rm[:, None] * scm + rn[None, :] * scn
    tl.store(c, acc.to(tl.bfloat16), mask=(rm[:, None] < M) & (rn[None, :] < N))
'''


def _triton_matmul_module(d):
    p = Path(d) / "triton_matmul_bench.py"
    p.write_text(TRITON_MATMUL)
    sys.path.insert(0, str(d))
    import triton_matmul_bench
    return triton_matmul_bench


def _mats(torch, n=512):
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    return a, b, c


def child_triton_cold(d):
    import torch
    a, b, c = _mats(torch)
    torch.cuda.synchronize()
    mod = _triton_matmul_module(d)

    def go():
        mod.matmul[(4, 4)](a, b, c, 512, 512, 512, *a.stride(), *b.stride(), *c.stride(), BM=128, BN=128, BK=64,
                           num_warps=4, num_stages=3)
        torch.cuda.synchronize()
    t = time.perf_counter()
    go()
    first = time.perf_counter() - t
    t = time.perf_counter()
    go()
    return {"seconds": first - (time.perf_counter() - t)}


def child_warm_launch(which, d):
    """From `import tile` (or triton) to the first launch of a matmul, in a process that already has
    torch's CUDA context and tensors; run twice by the caller, the first fills the cache."""
    import torch
    a, b, c = _mats(torch)
    bias = torch.zeros(512, device="cuda", dtype=torch.float32)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    if which == "tilec":
        import tile                                    # noqa: F401
        t_import = time.perf_counter()
        import importlib.util
        spec = importlib.util.spec_from_file_location("gallery_gemm", ROOT / "examples" / "gemm.py")
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        m.gemm[(4, 4)](a, b, c, bias, 1.0)
    else:
        mod = _triton_matmul_module(d)
        mod.matmul[(4, 4)](a, b, c, 512, 512, 512, *a.stride(), *b.stride(), *c.stride(), BM=128, BN=128, BK=64,
                           num_warps=4, num_stages=3)
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    heavy = sorted(x for x in ("tile.dsl.frontend", "tile.passes", "tile.codegen", "llvmlite") if x in sys.modules)
    out = {"launch": t1 - t0, "sync": t2 - t0, "heavy": heavy}
    if which == "tilec":
        out["import"] = t_import - t0                 # issue 12's bar counts from here: launch - import
    return out


def child_cuda_import():
    """What importing cuda-python's driver module costs in a torch process (tilec's runtime imports it
    on the first launch; cuda.pathfinder is most of it)."""
    import torch
    torch.empty(1, device="cuda")
    torch.cuda.synchronize()
    t = time.perf_counter()
    from cuda.bindings import driver                   # noqa: F401
    return {"launch": time.perf_counter() - t, "sync": float("nan")}


def _child(args, env=None, timeout=600):
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=e,
                       timeout=timeout)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _have_triton():
    try:
        import triton                                  # noqa: F401
        return True
    except ImportError:
        return False


def compile_table():
    from tile.kernel import Kernel                     # noqa: F401 - the names, in this process
    names = [n for n, _ in _gallery_kernels()]
    rows = []
    for n in names:
        with tempfile.TemporaryDirectory() as d:
            r = _child(["compile", n], {"TILEC_CACHE_DIR": d, "TILEC_PTXAS_REPORT": "1"})
        rows.append((f"tilec {n}", r))
    if _have_triton():
        with tempfile.TemporaryDirectory() as d:
            rows.append(("triton matmul 128x128x64", _child(["triton-cold", d], {"TRITON_CACHE_DIR": d})))
    w = max(len(r[0]) for r in rows)
    print(f"\n{'cold compile (fresh process, empty cache)':<{w}}  {'s':>6}")
    for name, r in rows:
        print(f"{name:<{w}}  " + (f"{r['seconds']:6.3f}" if "seconds" in r else f"error: {r['error']}"))


def warm_table():
    rows = []
    with tempfile.TemporaryDirectory() as d:
        env = {"TILEC_CACHE_DIR": d}
        _child(["warm", "tilec", d], env)                          # fills the cache
        r = _child(["warm", "tilec", d], env)
        rows.append(("tilec gemm (examples/gemm.py)", r))
    if "import" in r:
        rows.append(("  of which: import tile", {"launch": r["import"], "sync": float("nan")}))
    rows.append(("  of which: import cuda.bindings.driver", _child(["cuda-import"])))
    if _have_triton():
        with tempfile.TemporaryDirectory() as d:
            env = {"TRITON_CACHE_DIR": d}
            _child(["warm", "triton", d], env)
            rows.append(("triton matmul", _child(["warm", "triton", d], env)))
    w = max(len(r[0]) for r in rows)
    print(f"\n{'warm cache, new process: import -> first launch':<{w}}  {'launch ms':>9}  {'+sync ms':>8}")
    for name, r in rows:
        if "launch" in r:
            extra = f"  (loaded {', '.join(r['heavy'])})" if r.get("heavy") else ""
            sync = f"{1e3 * r['sync']:8.1f}" if r["sync"] == r["sync"] else f"{'':8}"
            print(f"{name:<{w}}  {1e3 * r['launch']:9.1f}  {sync}{extra}")
        else:
            print(f"{name:<{w}}  error: {r['error']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--skip-warm", action="store_true")
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        kind, rest = a.child[0], a.child[1:]
        out = {"compile": lambda: child_compile(rest[0]), "triton-cold": lambda: child_triton_cold(rest[0]),
               "warm": lambda: child_warm_launch(rest[0], rest[1]), "cuda-import": child_cuda_import}[kind]()
        print(json.dumps(out))
        return
    launch_table(a)
    if not a.skip_compile:
        compile_table()
    if not a.skip_warm:
        warm_table()


if __name__ == "__main__":
    os.environ.setdefault("TILEC_PTXAS_REPORT", "1")
    main()
