#!/usr/bin/env python3
"""tilec against the best library on the same GPU, in one run: GEMM, attention, MoE grouped GEMM,
low-bit GEMM, and tilec's compile times. See benchmarks/README.md for what is measured and how.

    python benchmarks/run.py                    # full run (< 9 min on an H100)
    python benchmarks/run.py --quick            # < 3 min
    python benchmarks/run.py --only gemm,attention --out /tmp/res
    python benchmarks/run.py --dry-run          # list the cases (no GPU, no torch needed)

The parent process imports neither torch nor tile: it runs one child process per family
(`--child FAMILY`), each with a time limit, so that a crash, a hang or a sticky CUDA error in one
case costs that case only (the child is restarted for the cases left). Children append JSON lines
to a results file; the parent merges them and writes <out>/tilec-bench-<stamp>.{json,png,txt,log},
printing the compact table last.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as _dt
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

SCRIPT = Path(__file__).resolve()
HERE = SCRIPT.parent
REPO = HERE.parent
EXAMPLES = REPO / "examples"

# ============================================================================ what is measured
FAMILIES = ("compile", "gemm", "attention", "moe", "lowbit", "gemm8")
FAMILY_WEIGHT = {"compile": 1.5, "gemm": 3.0, "attention": 2.0, "moe": 2.0, "lowbit": 2.0, "gemm8": 1.5}
ALIASES = {"attn": "attention", "lowbit_gemm": "lowbit", "w4a16": "lowbit", "grouped": "moe", "compile_time": "compile"}

MODES = {
    # budget: seconds for the whole run (the parent splits it among the families by FAMILY_WEIGHT);
    # first_success: stop trying tilec configs at the first one that passes its check.
    "quick": dict(budget=150.0, reps=5, warmup=2, warm_s=0.01, triton_configs=2, first_success=True,
                  lowbit_wtypes=("int4", "int3")),
    "full": dict(budget=500.0, reps=20, warmup=5, warm_s=0.05, triton_configs=4, first_success=False,
                 lowbit_wtypes=("int4", "int3", "f4e2m1")),
    # smoke: tiny shapes, to check that everything runs and is right (its timings mean little)
    "smoke": dict(budget=100.0, reps=3, warmup=1, warm_s=0.0, triton_configs=1, first_success=True,
                  lowbit_wtypes=("int4", "int3")),
}
SMOKE_SHAPES = {
    "gemm": [(256, 256, 256), (16, 512, 256)],
    "attention": [(1, 2, 256, 64, False), (1, 2, 256, 128, True)],
    "moe": [(256, 8, 2, 256, 128)],
    "lowbit_ms": (1, 16), "lowbit_nk": ((512, 512),),
}
TOL = {"gemm": 1e-2, "attention": 2e-2, "moe": 1e-2, "lowbit": 1e-2}
ROTATE_L2_FACTOR = 3          # input copies rotated so that > 3 x L2 is touched between two uses of one copy
MAX_SETS = 32
MAX_ROTATION_BYTES = 8 << 30

GEMM_SHAPES = [(4096, 4096, 4096), (8192, 8192, 8192), (16, 4096, 4096), (128, 14336, 4096), (4096, 14336, 4096)]


def gemm_configs(M):
    """tilec gemm configs (the kernel's constexprs), most promising first."""
    if M <= 64:
        return [dict(BM=64, BN=64, BK=64, STAGES=4), dict(BM=16, BN=128, BK=64, STAGES=4),
                dict(BM=64, BN=128, BK=128, STAGES=3)]
    if M <= 256:
        return [dict(BM=64, BN=128, BK=64, STAGES=4), dict(BM=128, BN=128, BK=64, STAGES=3),
                dict(BM=64, BN=64, BK=64, STAGES=4)]
    return [dict(BM=128, BN=128, BK=64, STAGES=3), dict(BM=128, BN=256, BK=64, STAGES=3),
            dict(BM=128, BN=128, BK=32, STAGES=4), dict(BM=64, BN=128, BK=64, STAGES=4)]


ATTN_CASES = [(8, 16, 2048, 128, False), (8, 16, 2048, 128, True), (2, 16, 8192, 128, False),
              (2, 16, 8192, 128, True), (8, 16, 2048, 64, False)]
ATTN_CONFIGS = [dict(BM=128, BN=64), dict(BM=64, BN=64), dict(BM=128, BN=128)]

MOE_CASES = [(16384, 64, 8, 2048, 1024), (16384, 128, 8, 4096, 1536)]     # T, E, top-k, d, h
MOE_UP_CONFIGS = [dict(BM=128, BN=64, BK=64), dict(BM=64, BN=128, BK=64), dict(BM=128, BN=128, BK=64)]
MOE_DOWN_CONFIGS = [dict(BM=128, BN=128, BK=64), dict(BM=64, BN=128, BK=64), dict(BM=128, BN=256, BK=64)]

LOWBIT_MS = (1, 4, 16)
LOWBIT_NK = ((14336, 4096), (4096, 4096))
LOWBIT_G = 128
# at M <= 16 each block's K loop runs at ~1.5 us per stage whatever its width (H100, 2026-11-24: BN=32
# beat BN=64 for int4 at both N and for int3 at N=4096; 8 warps per block did not help): more blocks pay
LOWBIT_CONFIGS = [dict(BM=16, BN=32, BK=128), dict(BM=16, BN=64, BK=128), dict(BM=16, BN=128, BK=64),
                  dict(BM=16, BN=64, BK=64)]
LOWBIT_ZERO = {"int4": 0.0, "int3": 0.0, "f4e2m1": 0.0}

# (case id, kernel, constexprs, weight type): the compile-time cases use each family's first config
COMPILE_SPECS = [
    ("compile/init", "gemm", dict(BM=32, BN=32, BK=32, STAGES=2), None),
    ("compile/gemm", "gemm", gemm_configs(4096)[0], None),
    ("compile/attention", "attention", dict(ATTN_CONFIGS[0], D=128, CAUSAL=False), None),
    ("compile/moe_up", "moe_up", dict(MOE_UP_CONFIGS[0], F=MOE_CASES[0][4]), None),
    ("compile/moe_down", "moe_down", dict(MOE_DOWN_CONFIGS[0]), None),
    ("compile/lowbit_gemm-int4", "lowbit_gemm", dict(LOWBIT_CONFIGS[0], G=LOWBIT_G, ZERO=0.0), "int4"),
    ("compile/lowbit_gemm-int3", "lowbit_gemm", dict(LOWBIT_CONFIGS[0], G=LOWBIT_G, ZERO=0.0), "int3"),
]
GALLERY = {"gemm": ("gemm", "gemm"), "attention": ("attention", "attention"), "moe_up": ("moe", "moe_up"),
           "moe_down": ("moe", "moe_down"), "lowbit_gemm": ("lowbit_gemm", "lowbit_gemm")}


def gemm8():
    """benchmarks/gemm8.py: the fp8 / int8 GEMM rows (family gemm8)."""
    return sys.modules.get("tilec_bench_gemm8") or load_module(HERE / "gemm8.py", "tilec_bench_gemm8")


def enumerate_cases(mode_name: str) -> list:
    mode = MODES[mode_name]
    smoke = mode_name == "smoke"
    cases = []

    def add(fam, cid, params, configs=(), peers=()):
        cases.append({"id": cid, "family": fam, "params": params, "configs": [dict(c) for c in configs],
                      "peers": list(peers)})

    for cid, kern, cx, wt in COMPILE_SPECS:
        add("compile", cid, {"kernel": kern, "config": dict(cx), "wtype": wt}, [cx])
    add("compile", "compile/new-process", {"kernel": "all of the above", "config": None, "wtype": None})
    ntri = mode["triton_configs"]
    for M, N, K in (SMOKE_SHAPES["gemm"] if smoke else GEMM_SHAPES):
        add("gemm", f"gemm/{M}x{N}x{K}", dict(M=M, N=N, K=K), gemm_configs(M), ["cublas", f"triton(best of {ntri})"])
    for B, H, S, D, causal in (SMOKE_SHAPES["attention"] if smoke else ATTN_CASES):
        add("attention", f"attention/B{B}-H{H}-S{S}-D{D}{'-causal' if causal else ''}",
            dict(B=B, H=H, S=S, D=D, causal=causal), ATTN_CONFIGS, ["sdpa-flash", "sdpa-cudnn"])
    for T, E, k, d, h in (SMOKE_SHAPES["moe"] if smoke else MOE_CASES):
        p = dict(T=T, E=E, topk=k, d=d, h=h)
        add("moe", f"moe_up/T{T}-E{E}-k{k}-d{d}-h{h}", dict(p, step="up"), MOE_UP_CONFIGS, ["grouped_mm", "loop"])
        add("moe", f"moe_down/T{T}-E{E}-k{k}-d{d}-h{h}", dict(p, step="down"), MOE_DOWN_CONFIGS,
            ["grouped_mm", "loop"])
    for wt in mode["lowbit_wtypes"]:
        for N, K in (SMOKE_SHAPES["lowbit_nk"] if smoke else LOWBIT_NK):
            for M in (SMOKE_SHAPES["lowbit_ms"] if smoke else LOWBIT_MS):
                add("lowbit", f"lowbit/{wt}-M{M}-N{N}-K{K}", dict(M=M, N=N, K=K, wtype=wt, G=LOWBIT_G),
                    LOWBIT_CONFIGS, ["cublas-fp16"] + (["tinygemm-int4"] if wt == "int4" else []))
    gemm8().add_cases(mode_name, add)
    return cases


def select_cases(cases: list, only: str | None) -> list:
    if not only:
        return cases
    toks = [ALIASES.get(t.strip(), t.strip()) for t in only.split(",") if t.strip()]
    return [c for c in cases if any(t == c["family"] or c["id"].startswith(t) for t in toks)]


def cdiv(a, b):
    return -(-a // b)


def _err(e: BaseException, limit: int = 600) -> str:
    s = f"{type(e).__name__}: {e}".strip()
    s = " ".join(s.split())
    return s if len(s) <= limit else s[:limit] + " ..."


def _clean(o):
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, unknown objects -> str."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if o is None or isinstance(o, (bool, int, str)):
        return o
    return str(o)


def cfg_name(cfg) -> str:
    if not cfg:
        return ""
    if "BLOCK_M" in cfg:
        return f"{cfg['BLOCK_M']}x{cfg['BLOCK_N']}x{cfg['BLOCK_K']} s{cfg['num_stages']} w{cfg['num_warps']}"
    parts = [str(cfg[k]) for k in ("BM", "BN", "BK") if k in cfg]
    s = "x".join(parts)
    if "STAGES" in cfg:
        s += f" s{cfg['STAGES']}"
    if "num_warps" in cfg:
        s += f" w{cfg['num_warps']}"
    return s


# ================================================================================ child: shared
class Writer:
    """Appends one JSON object per line to the results file (the parent reads it after the child ends)."""

    def __init__(self, path):
        self.f = open(path, "a", buffering=1, encoding="utf-8")

    def emit(self, event, **kw):
        self.f.write(json.dumps(_clean({"event": event, **kw})) + "\n")
        self.f.flush()


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, str(path))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_gallery(stem: str):
    name = f"tilec_gallery_{stem}"
    return sys.modules.get(name) or load_module(EXAMPLES / f"{stem}.py", name)


def gallery_kernel(kname: str):
    stem, attr = GALLERY[kname] if kname in GALLERY else gemm8().GALLERY[kname]
    return getattr(load_gallery(stem), attr)


def kernel_sig(tile, kname, wtype=None):
    """A signature for kernel.compile(): tile.Tensor[dtype, rank] per tensor, float per f32 scalar."""
    T, bf16, f32, i32 = tile.Tensor, tile.bf16, tile.f32, tile.i32
    if kname == "gemm":
        return (T[bf16, 2], T[bf16, 2], T[bf16, 2], T[f32, 1], float)
    if kname == "attention":
        return (T[bf16, 4], T[bf16, 4], T[bf16, 4], T[bf16, 4], float)
    if kname == "moe_up":
        return (T[bf16, 2], T[bf16, 3], T[i32, 1], T[i32, 1], T[bf16, 2])
    if kname == "moe_down":
        return (T[bf16, 2], T[bf16, 3], T[i32, 1], T[bf16, 2])
    if kname == "lowbit_gemm":
        return (T[bf16, 2], T[tile.dtype(wtype), 2], T[f32, 2], T[bf16, 2])
    return gemm8().kernel_sig(tile, kname)


def import_tilec():
    """(tile, tile.runtime.cuda, target, reason) -- reason is why tilec cases cannot run here, or None."""
    try:
        import tile
        from tile.runtime import cuda as tcuda
    except Exception as e:                                   # noqa: BLE001
        return None, None, None, f"import tile failed: {_err(e)}"
    arch, why = None, None
    try:
        if tcuda.available():
            arch = tcuda.device().arch
        else:
            why = "tile.runtime.cuda.available() is False (no driver/cuda-python, or no device)"
    except Exception as e:                                   # noqa: BLE001
        why = f"tile.runtime.cuda failed: {_err(e)}"
    if arch and not os.environ.get("TILEC_TARGET"):
        os.environ["TILEC_TARGET"] = arch
    try:
        target = tile.current_target()
    except Exception as e:                                   # noqa: BLE001
        return tile, tcuda, None, f"tile.current_target() failed: {_err(e)}"
    if why is None and target == "cpu":
        why = ("tilec's target is 'cpu' (TILEC_TARGET=cpu): the NumPy interpreter is far too slow for these "
               "sizes, so tilec cases are skipped")
    return tile, tcuda, target, why


def tilec_meta(tile, tcuda, target):
    m = {"target": target, "TILEC_TARGET": os.environ.get("TILEC_TARGET"),
         "TILEC_CACHE_DIR": os.environ.get("TILEC_CACHE_DIR")}
    try:
        from importlib.metadata import version
        m["version"] = version("tilec")
    except Exception:                                        # noqa: BLE001
        m["version"] = getattr(tile, "__version__", None)
    try:
        m["file"] = tile.__file__
        if tcuda is not None and tcuda.available():
            d = tcuda.device()
            m["device"] = {"name": d.name, "arch": d.arch, "sm_count": d.sm_count, "l2_bytes": d.l2_bytes,
                           "clock_khz": d.clock_khz, "driver_version": d.driver_version,
                           "peak_bandwidth_gbs": round(d.peak_bandwidth_gbs, 1)}
    except Exception as e:                                   # noqa: BLE001
        m["device_error"] = _err(e)
    return m


def reset_tilec_memory_caches(kernels) -> list:
    """Forget every in-memory compiled kernel so that the next launch goes to the disk cache:
    each Kernel's `.cache` dict, the default KernelCache's memory tier, and launch._FUNCS (loaded
    modules). Returns what it cleared (there is no public API for this yet)."""
    cleared = []
    for k in kernels:
        c = getattr(k, "cache", None)
        if isinstance(c, dict):
            c.clear()
            cleared.append(f"{getattr(k, 'name', k)}.cache")
    try:
        from tile.runtime import cache as rc
        d = getattr(rc, "_DEFAULT", None)
        if d is not None:
            d.clear()
            cleared.append("runtime.cache default memory tier")
    except Exception:                                        # noqa: BLE001
        pass
    try:
        from tile.runtime import launch as rl
        f = getattr(rl, "_FUNCS", None)
        if isinstance(f, dict):
            f.clear()
            cleared.append("runtime.launch._FUNCS")
    except Exception:                                        # noqa: BLE001
        pass
    return cleared


# ---------------------------------------------------------------------------- timing (torch)
class Timer:
    """CUDA-event timing of one call at a time, median of `reps`.

    Before each chunk of timed calls a spin kernel (torch.cuda._sleep) is queued, long enough to
    cover the host's time to enqueue the chunk: the GPU then runs the timed calls back to back and
    each start/end event pair measures GPU time only, not Python launch overhead (which is reported
    separately as host_us). Calls rotate over `nsets` input copies (call i uses copy i % nsets)."""

    def __init__(self, torch, mode):
        self.torch = torch
        self.reps, self.warmup, self.warm_s = mode["reps"], mode["warmup"], mode["warm_s"]
        self.max_sleep_ms = 25.0
        self.cycles_per_ms = self._calibrate()

    def _calibrate(self):
        torch = self.torch
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(10_000)
        torch.cuda.synchronize()
        n = 4_000_000
        s.record()
        torch.cuda._sleep(n)
        e.record()
        e.synchronize()
        ms = s.elapsed_time(e)
        return n / ms if ms > 0 else 1.5e6

    def measure(self, fn, nsets=1, max_s=30.0):
        torch = self.torch
        host = []
        i = 0
        t_end = time.perf_counter() + self.warm_s
        while i < self.warmup or (time.perf_counter() < t_end and i < 50):
            h0 = time.perf_counter()
            fn(i % nsets)
            host.append(time.perf_counter() - h0)
            i += 1
        torch.cuda.synchronize()
        host_ms = sorted(host)[len(host) // 2] * 1e3
        # one timed call to size the run: fewer reps when a call is so slow that reps would blow max_s
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn(i % nsets)
        e.record()
        e.synchronize()
        i += 1
        est_ms = s.elapsed_time(e)
        reps = self.reps
        if est_ms * reps > max_s * 1e3:
            reps = max(3, int(max_s * 1e3 / max(est_ms, 1e-3)))
        per_chunk = max(1, min(reps, int((self.max_sleep_ms - 0.3) / (host_ms * 1.5 + 0.02))))
        times = []
        while len(times) < reps:
            n = min(per_chunk, reps - len(times))
            evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
            sleep_ms = min(self.max_sleep_ms, 0.3 + n * (host_ms * 1.5 + 0.02))
            torch.cuda._sleep(int(self.cycles_per_ms * sleep_ms))
            for s, e in evs:
                s.record()
                fn(i % nsets)
                e.record()
                i += 1
            torch.cuda.synchronize()
            times.extend(s.elapsed_time(e) for s, e in evs)
        times.sort()
        q = lambda f: times[min(len(times) - 1, int(f * (len(times) - 1) + 0.5))]   # noqa: E731
        med = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
        return {"ms": med, "min_ms": times[0], "p20_ms": q(0.2), "p80_ms": q(0.8), "max_ms": times[-1],
                "reps": len(times), "nsets": nsets, "host_us": host_ms * 1e3}


def rel_err(torch, out, ref):
    """(||out - ref|| / ||ref||, all finite) with out upcast to f32; NaN never passes."""
    o = out.float()
    if not bool(torch.isfinite(o).all().item()):
        return float("nan"), False
    num = float(torch.linalg.vector_norm(o - ref).item())
    den = float(torch.linalg.vector_norm(ref).item())
    return (num / den if den > 0 else (0.0 if num == 0 else float("inf"))), True


_TORCH_TO_TILE = {"torch.bfloat16": "bf16", "torch.float16": "f16", "torch.float32": "f32", "torch.int32": "i32",
                  "torch.int64": "i64", "torch.uint8": "u8", "torch.int8": "i8"}


def torch_to_device_array(t, dtype=None, shape=None):
    """A tile DeviceArray view of a torch CUDA tensor's memory (kept alive through `owner`)."""
    from tile.runtime.device import DeviceArray
    dt = dtype or _TORCH_TO_TILE[str(t.dtype)]
    if shape is None:
        return DeviceArray.from_pointer(t.data_ptr(), tuple(t.shape), dt, strides=tuple(t.stride()), owner=t)
    return DeviceArray.from_pointer(t.data_ptr(), tuple(shape), dt, owner=t)


class Ctx:
    """Per-child state: torch, the timer, tilec (or why not), the deadline, the results writer."""

    def __init__(self, args, writer):
        self.args, self.w = args, writer
        self.mode = MODES[args.mode]
        self.deadline = args.deadline
        import torch
        self.torch = torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False: no GPU for the benchmark")
        torch.backends.cuda.matmul.allow_tf32 = False          # references in true f32
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        torch.cuda.init()
        self.props = torch.cuda.get_device_properties(0)
        self.l2 = int(getattr(self.props, "L2_cache_size", 0) or (50 << 20))
        self.gen = torch.Generator(device="cuda")
        self.gen.manual_seed(args.seed + FAMILIES.index(args.child) * 1000 + getattr(args, "attempt", 0))
        self.timer = Timer(torch, self.mode)
        self.tile, self.tcuda, self.target, self.tile_skip = import_tilec()
        self.arg_mode, self.arg_mode_decided = "torch", False
        self.dead = False
        self._noted = set()
        writer.emit("meta", meta=self.meta())

    # ---------------------------------------------------------------- bookkeeping
    def meta(self):
        torch = self.torch
        m = {"gpu": torch.cuda.get_device_name(0), "sm_count": self.props.multi_processor_count,
             "l2_bytes": self.l2, "gpu_memory_bytes": self.props.total_memory,
             "torch": torch.__version__, "torch_cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
             "timer_cycles_per_ms": round(self.timer.cycles_per_ms)}
        try:
            import triton
            m["triton"] = triton.__version__
        except Exception:                                    # noqa: BLE001
            m["triton"] = None
        if self.tile is not None:
            m["tilec"] = tilec_meta(self.tile, self.tcuda, self.target)
        if self.tile_skip:
            m["tilec_skip"] = self.tile_skip
        return m

    def note(self, msg):
        if msg not in self._noted:
            self._noted.add(msg)
            self.w.emit("note", note=msg)
            print(f"note: {msg}", flush=True)

    def time_left(self):
        return self.deadline - time.time()

    def measure_budget(self):
        return max(2.0, min(30.0, 0.15 * self.time_left()))

    def nsets(self, set_bytes):
        target = ROTATE_L2_FACTOR * self.l2
        if set_bytes >= target:
            return 1
        n = max(2, math.ceil(target / max(set_bytes, 1)) + 1)
        return int(min(MAX_SETS, n, max(1, MAX_ROTATION_BYTES // max(set_bytes, 1))))

    def randn(self, shape, dtype=None, scale=1.0):
        torch = self.torch
        t = torch.randn(shape, device="cuda", dtype=dtype or torch.bfloat16, generator=self.gen)
        if scale != 1.0:
            t.mul_(scale)
        return t

    def cuda_alive(self):
        try:
            self.torch.cuda.synchronize()
            x = self.torch.ones(4, device="cuda")
            return float((x + 1).sum().item()) == 8.0
        except Exception:                                    # noqa: BLE001
            return False

    def skip(self, case, why):
        rec = {"id": case["id"], "family": case["family"], "params": case["params"], "status": "SKIP", "error": why}
        self.w.emit("result", id=case["id"], record=rec)

    @contextlib.contextmanager
    def case(self, case):
        rec = {"id": case["id"], "family": case["family"], "params": case["params"], "peers": {}}
        self.w.emit("start", id=case["id"])
        print(f"--- {case['id']}", flush=True)
        t0 = time.time()
        try:
            yield rec
        except Exception as e:                               # noqa: BLE001
            rec["error"] = _err(e)
            rec["traceback"] = traceback.format_exc()[-4000:]
        finally:
            rec["wall_s"] = round(time.time() - t0, 2)
            finalize(rec)
            self.w.emit("result", id=case["id"], record=rec)
            print(f"    {summary_line(rec)}", flush=True)
            gc.collect()
            alive = self.cuda_alive()
            if alive:
                self.torch.cuda.empty_cache()
            if self.dead or not alive:
                self.note("the CUDA context is unusable after a failure; the child exits and is restarted")
                sys.stdout.flush()
                os._exit(3)

    # ---------------------------------------------------------------- tilec
    def tilec_block(self):
        return self.tile_skip

    def targ(self, x):
        if self.arg_mode == "torch" or not isinstance(x, self.torch.Tensor):
            return x
        return torch_to_device_array(x)

    def first_check(self, make_launch, cfg, check):
        """Build the launch and run the correctness check. The first tilec launch of the child is
        tried with torch tensors (DLPack) and, if that raises, with DeviceArray views of the same
        memory; the winner is used for the rest of the child and the switch is noted."""
        launch = make_launch(cfg, self.targ)
        if self.arg_mode_decided:
            return launch, check(launch)
        try:
            res = check(launch)
            self.arg_mode_decided = True
            return launch, res
        except Exception as e:                               # noqa: BLE001
            if not self.cuda_alive():
                raise
            first = _err(e, 300)
            self.arg_mode = "device"
            try:
                launch = make_launch(cfg, self.targ)
                res = check(launch)
            except Exception as e2:                          # noqa: BLE001
                self.arg_mode = "torch"
                second = _err(e2, 300)
                if second == first:
                    raise e
                raise RuntimeError(f"{first} || with DeviceArray arguments instead: {second}") from e
            self.arg_mode_decided = True
            self.note(f"tilec launch with torch tensors failed ({first}); using tile DeviceArray views of the "
                      f"same memory instead")
            return launch, res


def finalize(rec):
    """best_peer / ratio / status of a case record (ratio = best peer time / tilec time: > 1 = tilec faster)."""
    peers = rec.get("peers") or {}
    ok = {k: v for k, v in peers.items() if v.get("status") == "ok" and v.get("ms")}
    t = rec.get("tilec") or {}
    if ok:
        best = min(ok, key=lambda k: ok[k]["ms"])
        rec["best_peer"] = best
        rec["peer_ms"] = ok[best]["ms"]
        if t.get("status") == "ok" and t.get("ms"):
            rec["ratio"] = ok[best]["ms"] / t["ms"]
    if "cublas-fp16" in ok and t.get("status") == "ok" and t.get("ms"):
        rec["ratio_vs_cublas"] = ok["cublas-fp16"]["ms"] / t["ms"]
    if rec.get("error"):
        rec["status"] = "ERROR"
    else:
        rec["status"] = t.get("status", "ERROR")
        if "tilec" not in rec:
            rec["error"] = "no tilec result"


def run_impl(ctx, fn, check, nsets, flops=None, nbytes=None, tol=1e-2):
    """Check one implementation (poisoned output, relative error) and, if right, time it."""
    r = {"status": "ERROR"}
    try:
        err, finite = check(fn)
        r["rel_err"] = err
        if not finite:
            r.update(status="FAIL", error="non-finite outputs (unwritten or NaN)")
            return r
        if err > tol:
            r.update(status="FAIL", error=f"relative error {err:.2e} > {tol:g}")
            return r
        t = ctx.timer.measure(fn, nsets, max_s=ctx.measure_budget())
        r.update(status="ok", ms=t["ms"], timing=t)
        if flops:
            r["tflops"] = flops / t["ms"] / 1e9
        if nbytes:
            r["tbps"] = nbytes / t["ms"] / 1e9
    except Exception as e:                                   # noqa: BLE001
        r.update(status="ERROR", error=_err(e))
    return r


def tilec_sweep(ctx, kname, wtype, configs, make_launch, check, nsets, flops=None, nbytes=None, tol=1e-2,
                fixed=None):
    """Compile, check and time each tilec config; the record of the best passing one, with all tries.
    `configs` are the tuned constexprs, `fixed` the ones every config shares (D, CAUSAL, F, G, ...);
    make_launch(constexprs, targ) gets both merged and returns launch(i) for input copy i."""
    fixed = dict(fixed or {})
    rec = {"status": "SKIP", "configs": []}
    why = ctx.tilec_block()
    if why:
        rec["error"] = why
        return rec
    try:
        kernel = gallery_kernel(kname)
        sig = kernel_sig(ctx.tile, kname, wtype)
    except Exception as e:                                   # noqa: BLE001
        rec.update(status="ERROR", error=f"loading the gallery kernel: {_err(e)}")
        return rec
    passed = False
    for i, cfg in enumerate(configs):
        if passed and ctx.mode["first_success"]:
            break
        if i > 0 and ctx.time_left() < 8:
            rec["configs"].append({"config": cfg, "status": "SKIP", "error": "time budget"})
            continue
        r = {"config": dict(cfg), "status": "ERROR"}
        rec["configs"].append(r)
        try:
            t0 = time.perf_counter()
            try:
                ck = kernel.compile(*sig, target=ctx.target, **cfg, **fixed)
                r["compile_s"] = time.perf_counter() - t0
                r["artifacts"] = [a for a in ("ptx", "cubin") if getattr(ck, a, None)]
            except Exception as e:                           # noqa: BLE001
                r["compile_error"] = _err(e)                 # the launch below reports the error it gets
            t0 = time.perf_counter()
            launch, (err, finite) = ctx.first_check(make_launch, dict(cfg, **fixed), check)
            r["first_launch_s"] = time.perf_counter() - t0
            r["rel_err"] = err
            if not finite:
                r.update(status="FAIL", error="non-finite outputs (unwritten or NaN)")
                continue
            if err > tol:
                r.update(status="FAIL", error=f"relative error {err:.2e} > {tol:g}")
                continue
            t = ctx.timer.measure(launch, nsets, max_s=ctx.measure_budget())
            r.update(status="ok", ms=t["ms"], timing=t)
            if flops:
                r["tflops"] = flops / t["ms"] / 1e9
            if nbytes:
                r["tbps"] = nbytes / t["ms"] / 1e9
            passed = True
        except Exception as e:                               # noqa: BLE001
            r.update(status="ERROR", error=_err(e))
            if not ctx.cuda_alive():
                ctx.dead = True
                r["error"] += " [CUDA context lost]"
                break
    ok = [r for r in rec["configs"] if r["status"] == "ok"]
    if ok:
        best = min(ok, key=lambda r: r["ms"])
        rec.update({k: best[k] for k in ("ms", "tflops", "tbps", "rel_err", "timing") if k in best})
        rec.update(status="ok", config=best["config"])
    else:
        tried = [r for r in rec["configs"] if r["status"] != "SKIP"]
        rec["status"] = "FAIL" if any(r["status"] == "FAIL" for r in tried) else ("ERROR" if tried else "SKIP")
        first = next((r for r in tried if r["status"] == "FAIL"), tried[0] if tried else None)
        rec["error"] = first.get("error") if first else "no config tried (time budget)"
        if first and first.get("rel_err") is not None:
            rec["rel_err"] = first["rel_err"]
    return rec


def summary_line(rec) -> str:
    parts = []
    for name, p in (rec.get("peers") or {}).items():
        parts.append(f"{name} {_perf(rec, p)}")
    t = rec.get("tilec") or {}
    parts.append(f"tilec {_perf(rec, t)}" + (f" [{cfg_name(t.get('config'))}]" if t.get("config") else ""))
    if rec.get("ratio"):
        parts.append(f"ratio {rec['ratio']:.2f}")
    if rec.get("error"):
        parts.append(f"case error: {rec['error'][:200]}")
    return " | ".join(parts)


def _perf(rec, p) -> str:
    if not p:
        return "-"
    if p.get("status") != "ok":
        return f"{p.get('status', '?')}" + (f" ({p['error'][:160]})" if p.get("error") else "")
    if rec.get("unit") == "us":
        s = f"{p['ms'] * 1e3:.1f} us"
        if p.get("tbps"):
            s += f" {p['tbps']:.2f} TB/s"
        return s
    return f"{p['tflops']:.1f} TF/s" if p.get("tflops") else f"{p['ms']:.3f} ms"


# ================================================================================ child: GEMM
def load_triton_peers():
    try:
        return load_module(HERE / "triton_peers.py", "tilec_bench_triton_peers"), None
    except Exception as e:                                   # noqa: BLE001
        return None, f"triton peer unavailable: {_err(e)}"


def fam_gemm(ctx, cases):
    torch = ctx.torch
    tp, tp_err = load_triton_peers()
    for case in cases:
        if ctx.time_left() < 5:
            ctx.skip(case, "time budget")
            continue
        p = case["params"]
        M, N, K = p["M"], p["N"], p["K"]
        with ctx.case(case) as rec:
            flops = 2.0 * M * N * K
            nsets = ctx.nsets(2 * (M * K + K * N + M * N))
            rec.update(unit="TFLOP/s", flops=flops, nsets=nsets)
            A = [ctx.randn((M, K)) for _ in range(nsets)]
            B = [ctx.randn((K, N), scale=K ** -0.5) for _ in range(nsets)]
            C = [torch.empty((M, N), device="cuda", dtype=torch.bfloat16) for _ in range(nsets)]
            bias = torch.randn(N, device="cuda", dtype=torch.float32, generator=ctx.gen)
            ref = A[0].float() @ B[0].float()
            tol = TOL["gemm"]

            def check(fn):
                C[0].fill_(float("nan"))
                fn(0)
                torch.cuda.synchronize()
                return rel_err(torch, C[0], ref)

            peers = rec["peers"]
            peers["cublas"] = run_impl(ctx, lambda i: torch.matmul(A[i], B[i], out=C[i]), check, nsets, flops, tol=tol)
            if tp is None:
                peers["triton"] = {"status": "ERROR", "error": tp_err}
            else:
                tries = []
                for cfg in tp.CONFIGS[:ctx.mode["triton_configs"]]:
                    r = run_impl(ctx, lambda i, cfg=cfg: tp.matmul(A[i], B[i], C[i], cfg), check, nsets, flops, tol=tol)
                    r["config"] = tp.config_name(cfg)
                    tries.append(r)
                ok = [r for r in tries if r["status"] == "ok"]
                best = dict(min(ok, key=lambda r: r["ms"]) if ok else tries[0])
                best["tried"] = [{k: r.get(k) for k in ("config", "status", "ms", "tflops", "error")} for r in tries]
                peers["triton"] = best

            def make_launch(cfg, targ):
                kern = gallery_kernel("gemm")
                args = [(targ(A[i]), targ(B[i]), targ(C[i]), targ(bias)) for i in range(nsets)]
                grid = (cdiv(M, cfg["BM"]), cdiv(N, cfg["BN"]))

                def launch(i):
                    a, b, c, bb = args[i]
                    kern[grid](a, b, c, bb, 1.0, **cfg)
                return launch

            rec["tilec"] = tilec_sweep(ctx, "gemm", None, case["configs"], make_launch, check, nsets, flops, tol=tol)


# =========================================================================== child: attention
def attention_ref(torch, q, k, v, causal, scale):
    """f32 softmax(q k^T * scale) v, in chunks of heads so the scores stay under ~512 MB."""
    B, H, S, D = q.shape
    qf, kf, vf = (t.reshape(B * H, S, D) for t in (q, k, v))
    out = torch.empty((B * H, S, D), device="cuda", dtype=torch.float32)
    chunk = max(1, (512 << 20) // (S * S * 4))
    mask = torch.ones((S, S), device="cuda", dtype=torch.bool).tril() if causal else None
    for i in range(0, B * H, chunk):
        j = min(B * H, i + chunk)
        s = torch.matmul(qf[i:j].float(), kf[i:j].float().transpose(1, 2)).mul_(scale)
        if causal:
            s.masked_fill_(~mask, float("-inf"))
        out[i:j] = torch.matmul(torch.softmax(s, dim=-1), vf[i:j].float())
        del s
    return out.reshape(B, H, S, D)


def fam_attention(ctx, cases):
    torch = ctx.torch
    F = torch.nn.functional
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        backends = [("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION)]
    except Exception as e:                                   # noqa: BLE001
        backends, sdpa_kernel = [], None
        ctx.note(f"torch.nn.attention.sdpa_kernel unavailable: {_err(e)}")
    for case in cases:
        if ctx.time_left() < 5:
            ctx.skip(case, "time budget")
            continue
        p = case["params"]
        B, H, S, D, causal = p["B"], p["H"], p["S"], p["D"], p["causal"]
        with ctx.case(case) as rec:
            flops = 4.0 * B * H * S * S * D * (0.5 if causal else 1.0)
            nsets = ctx.nsets(4 * B * H * S * D * 2)
            rec.update(unit="TFLOP/s", flops=flops, nsets=nsets)
            Q = [ctx.randn((B, H, S, D)) for _ in range(nsets)]
            Kt = [ctx.randn((B, H, S, D)) for _ in range(nsets)]
            V = [ctx.randn((B, H, S, D)) for _ in range(nsets)]
            O = [torch.empty((B, H, S, D), device="cuda", dtype=torch.bfloat16) for _ in range(nsets)]
            scale = 1.0 / math.sqrt(D)
            ref = attention_ref(torch, Q[0], Kt[0], V[0], causal, scale)
            tol = TOL["attention"]

            def check_peer(fn):
                out = fn(0)
                torch.cuda.synchronize()
                return rel_err(torch, out, ref)

            for name, be in backends:
                try:
                    with sdpa_kernel([be]):
                        rec["peers"][name] = run_impl(
                            ctx, lambda i: F.scaled_dot_product_attention(Q[i], Kt[i], V[i], is_causal=causal),
                            check_peer, nsets, flops, tol=tol)
                except Exception as e:                       # noqa: BLE001
                    rec["peers"][name] = {"status": "ERROR", "error": _err(e)}

            def check(fn):
                O[0].fill_(float("nan"))
                fn(0)
                torch.cuda.synchronize()
                return rel_err(torch, O[0], ref)

            def make_launch(cfg, targ):
                kern = gallery_kernel("attention")
                args = [(targ(Q[i]), targ(Kt[i]), targ(V[i]), targ(O[i])) for i in range(nsets)]
                grid = (cdiv(S, cfg["BM"]), B * H)

                def launch(i):
                    q, k, v, o = args[i]
                    kern[grid](q, k, v, o, scale, **cfg)
                return launch

            rec["tilec"] = tilec_sweep(ctx, "attention", None, case["configs"], make_launch, check, nsets, flops,
                                       tol=tol, fixed=dict(D=D, CAUSAL=causal))


# ================================================================================= child: MoE
def moe_build(ctx, T, E, topk, d, h):
    """Inputs and a random top-k routing (distinct experts per token), sorted by expert."""
    torch = ctx.torch
    x = ctx.randn((T, d))
    W1 = ctx.randn((E, d, 2 * h), scale=d ** -0.5)         # [gate | up] of each expert
    W2 = ctx.randn((E, h, d), scale=h ** -0.5)
    ids = torch.rand((T, E), device="cuda", generator=ctx.gen).topk(topk, dim=1).indices
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=E)
    sorted_e = flat[order]
    cstart = torch.cumsum(counts, 0) - counts
    rank = torch.arange(flat.numel(), device="cuda") - cstart[sorted_e]
    return dict(x=x, W1=W1, W2=W2, counts=counts, counts_list=[int(c) for c in counts.tolist()],
                offs=torch.cumsum(counts, 0).to(torch.int32), tokens_sorted=order // topk, sorted_e=sorted_e,
                rank=rank, ntok=flat.numel(), layouts={})


def moe_layout(torch, sh, E, BM):
    """The gallery's padded layout for row tile BM: rows[P] (token of each padded row, -1 = padding),
    block_expert[P // BM], and row_pos (padded row of each expert-sorted assignment)."""
    if BM in sh["layouts"]:
        return sh["layouts"][BM]
    padded = (sh["counts"] + BM - 1) // BM * BM
    pstart = torch.cumsum(padded, 0) - padded
    row_pos = pstart[sh["sorted_e"]] + sh["rank"]
    Pn = int(padded.sum().item())
    rows = torch.full((Pn,), -1, device="cuda", dtype=torch.int32)
    rows[row_pos] = sh["tokens_sorted"].to(torch.int32)
    block_expert = torch.repeat_interleave(torch.arange(E, device="cuda", dtype=torch.int32), padded // BM)
    L = sh["layouts"][BM] = dict(row_pos=row_pos, Pn=Pn, rows=rows, block_expert=block_expert.contiguous())
    return L


def per_expert(counts_list, fn):
    s = 0
    for e, c in enumerate(counts_list):
        if c:
            fn(e, s, s + c)
        s += c


def grouped_mm_fn(torch):
    return getattr(torch, "_grouped_mm", None) or getattr(torch.nn.functional, "grouped_mm", None)


def fam_moe(ctx, cases):
    torch = ctx.torch
    gmm = grouped_mm_fn(torch)
    groups = collections.OrderedDict()
    for c in cases:
        p = c["params"]
        groups.setdefault((p["T"], p["E"], p["topk"], p["d"], p["h"]), []).append(c)
    for (T, E, topk, d, h), gcases in groups.items():
        if ctx.time_left() < 8:
            for c in gcases:
                ctx.skip(c, "time budget")
            continue
        sh = None
        for case in gcases:
            with ctx.case(case) as rec:
                if sh is None:
                    sh = moe_build(ctx, T, E, topk, d, h)
                if case["params"]["step"] == "up":
                    moe_up_case(ctx, case, rec, sh, gmm, T, E, topk, d, h)
                else:
                    moe_down_case(ctx, case, rec, sh, gmm, T, E, topk, d, h)
        sh = None
        gc.collect()
        torch.cuda.empty_cache()


def moe_up_case(ctx, case, rec, sh, gmm, T, E, topk, d, h):
    torch = ctx.torch
    ntok, cl = sh["ntok"], sh["counts_list"]
    flops = 2.0 * ntok * d * (2 * h)
    rec.update(unit="TFLOP/s", flops=flops, nsets=1, real_rows=ntok)
    x, W1 = sh["x"], sh["W1"]
    x_sorted = x[sh["tokens_sorted"]]
    ref_gu = torch.empty((ntok, 2 * h), device="cuda", dtype=torch.float32)
    per_expert(cl, lambda e, s, t: torch.matmul(x_sorted[s:t].float(), W1[e].float(), out=ref_gu[s:t]))
    g, u = ref_gu[:, :h], ref_gu[:, h:]
    ref_h = g * torch.sigmoid(g) * u
    tol = TOL["moe"]
    peer_out = torch.empty((ntok, 2 * h), device="cuda", dtype=torch.bfloat16)

    def check_peer(fn):
        out = fn(0)
        torch.cuda.synchronize()
        return rel_err(torch, out, ref_gu)

    if gmm is None:
        rec["peers"]["grouped_mm"] = {"status": "ERROR", "error": "torch._grouped_mm is not in this torch"}
    else:
        rec["peers"]["grouped_mm"] = run_impl(ctx, lambda i: gmm(x_sorted, W1, offs=sh["offs"]), check_peer, 1, flops,
                                              tol=tol)

    def loop(i):
        per_expert(cl, lambda e, s, t: torch.matmul(x_sorted[s:t], W1[e], out=peer_out[s:t]))
        return peer_out

    rec["peers"]["loop"] = run_impl(ctx, loop, check_peer, 1, flops, tol=tol)
    rec["peers"]["grouped_mm"]["note"] = "GEMM only: input pre-gathered by expert, no SwiGLU (tilec fuses both)"

    def check(fn):
        fn.out.fill_(float("nan"))
        fn(0)
        torch.cuda.synchronize()
        return rel_err(torch, fn.out[fn.row_pos], ref_h)

    def make_launch(cfg, targ):
        kern = gallery_kernel("moe_up")
        L = moe_layout(torch, sh, E, cfg["BM"])
        Hbuf = torch.empty((L["Pn"], h), device="cuda", dtype=torch.bfloat16)
        args = (targ(x), targ(W1), targ(L["rows"]), targ(L["block_expert"]), targ(Hbuf))
        grid = (L["Pn"] // cfg["BM"], cdiv(h, cfg["BN"]))

        def launch(i):
            kern[grid](*args, **cfg)
        launch.out, launch.row_pos = Hbuf, L["row_pos"]
        return launch

    rec["tilec"] = tilec_sweep(ctx, "moe_up", None, case["configs"], make_launch, check, 1, flops, tol=tol,
                               fixed=dict(F=h))


def moe_down_case(ctx, case, rec, sh, gmm, T, E, topk, d, h):
    torch = ctx.torch
    ntok, cl = sh["ntok"], sh["counts_list"]
    flops = 2.0 * ntok * h * d
    rec.update(unit="TFLOP/s", flops=flops, nsets=1, real_rows=ntok)
    W2 = sh["W2"]
    h_sorted = ctx.randn((ntok, h))                        # the activations, already in expert order
    ref_y = torch.empty((ntok, d), device="cuda", dtype=torch.float32)
    per_expert(cl, lambda e, s, t: torch.matmul(h_sorted[s:t].float(), W2[e].float(), out=ref_y[s:t]))
    tol = TOL["moe"]
    peer_out = torch.empty((ntok, d), device="cuda", dtype=torch.bfloat16)

    def check_peer(fn):
        out = fn(0)
        torch.cuda.synchronize()
        return rel_err(torch, out, ref_y)

    if gmm is None:
        rec["peers"]["grouped_mm"] = {"status": "ERROR", "error": "torch._grouped_mm is not in this torch"}
    else:
        rec["peers"]["grouped_mm"] = run_impl(ctx, lambda i: gmm(h_sorted, W2, offs=sh["offs"]), check_peer, 1, flops,
                                              tol=tol)

    def loop(i):
        per_expert(cl, lambda e, s, t: torch.matmul(h_sorted[s:t], W2[e], out=peer_out[s:t]))
        return peer_out

    rec["peers"]["loop"] = run_impl(ctx, loop, check_peer, 1, flops, tol=tol)

    def check(fn):
        fn.out.fill_(float("nan"))
        fn(0)
        torch.cuda.synchronize()
        return rel_err(torch, fn.out[fn.row_pos], ref_y)

    def make_launch(cfg, targ):
        kern = gallery_kernel("moe_down")
        L = moe_layout(torch, sh, E, cfg["BM"])
        Hin = ctx.randn((L["Pn"], h))                      # padding rows random too (computed, not checked)
        Hin[L["row_pos"]] = h_sorted
        Ybuf = torch.empty((L["Pn"], d), device="cuda", dtype=torch.bfloat16)
        args = (targ(Hin), targ(W2), targ(L["block_expert"]), targ(Ybuf))
        grid = (L["Pn"] // cfg["BM"], cdiv(d, cfg["BN"]))

        def launch(i):
            kern[grid](*args, **cfg)
        launch.out, launch.row_pos = Ybuf, L["row_pos"]
        return launch

    rec["tilec"] = tilec_sweep(ctx, "moe_down", None, case["configs"], make_launch, check, 1, flops, tol=tol)


# ============================================================================ child: low-bit
_F4E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def code_values(ctx, wtype):
    """(bits, float list: the value of each code) -- from tilec's numerics when it imports."""
    import numpy as np
    if ctx.tile is not None:
        from tile.ir import numerics
        dt = ctx.tile.dtype(wtype)
        vals = numerics.decode(np.arange(2 ** dt.bits, dtype=np.uint8), dt)
        return dt.bits, [float(v) for v in vals]
    bits = {"int4": 4, "int3": 3, "f4e2m1": 4}[wtype]
    if wtype == "f4e2m1":
        return 4, list(_F4E2M1)
    if wtype.startswith("int"):
        return bits, [float(c - (1 << bits) if c >= 1 << (bits - 1) else c) for c in range(1 << bits)]
    return bits, [float(c) for c in range(1 << bits)]


def pack_codes(torch, codes, bits):
    """Dense LSB-first packing (tilec's storage): element i of the flattened tensor at bits
    [i*bits, (i+1)*bits); 8 codes fill `bits` bytes exactly."""
    g = codes.reshape(-1, 8).to(torch.int64)
    shifts = torch.arange(8, device=codes.device, dtype=torch.int64) * bits
    word = (g << shifts).sum(dim=1)                        # fields do not overlap: sum == or
    return torch.stack([(word >> (8 * j)) & 0xFF for j in range(bits)], dim=1).to(torch.uint8).reshape(-1)


def lowbit_weights(ctx, wtype, N, K, G, nsets):
    """nsets random weight sets: packed codes, scales, the f32 dequantized weights (set 0 only), fp16
    [N, K] dense weights for cuBLAS, and tinygemm's int4 packing (int4 only)."""
    torch = ctx.torch
    bits, vals = code_values(ctx, wtype)
    lut = torch.tensor(vals, device="cuda", dtype=torch.float32)
    zero = LOWBIT_ZERO.get(wtype, 0.0)
    sets = []
    for s in range(nsets):
        codes = torch.randint(0, 2 ** bits, (K, N), device="cuda", dtype=torch.uint8, generator=ctx.gen)
        packed = pack_codes(torch, codes, bits)
        S = torch.rand((K // G, N), device="cuda", dtype=torch.float32, generator=ctx.gen).mul_(0.02).add_(0.005)
        v = lut[codes.long()]
        wdeq = (v - zero) * S.repeat_interleave(G, dim=0)
        st = {"codes_head": codes.reshape(-1)[:64].cpu() if s == 0 else None, "packed": packed, "S": S,
              "W16": wdeq.t().contiguous().half()}
        if s == 0:
            st["wdeq"] = wdeq
        if wtype == "int4":
            st["q_nk"] = (v + 8).to(torch.int32).t().contiguous()       # tinygemm's unsigned codes, [N, K]
        sets.append(st)
        del codes, v
    return bits, sets


def tinygemm_pack(torch, q_nk, S, G, high_first=True):
    hi, lo = (q_nk[:, ::2], q_nk[:, 1::2]) if high_first else (q_nk[:, 1::2], q_nk[:, ::2])
    w = ((hi << 4) | lo).to(torch.uint8)
    wpk = torch._convert_weight_to_int4pack(w, 8)
    sz = torch.stack([S, torch.zeros_like(S)], dim=-1).to(torch.bfloat16).contiguous()
    return wpk, sz


def fam_lowbit(ctx, cases):
    torch = ctx.torch
    F = torch.nn.functional
    groups = collections.OrderedDict()
    for c in cases:
        p = c["params"]
        groups.setdefault((p["wtype"], p["N"], p["K"], p["G"]), []).append(c)
    for (wtype, N, K, G), gcases in groups.items():
        if ctx.time_left() < 6:
            for c in gcases:
                ctx.skip(c, "time budget")
            continue
        W = None
        for case in gcases:
            if ctx.time_left() < 4:
                ctx.skip(case, "time budget")
                continue
            M = case["params"]["M"]
            with ctx.case(case) as rec:
                if W is None:
                    bits = code_values(ctx, wtype)[0]
                    wbytes = K * N * bits // 8 + (K // G) * N * 4
                    nsets = ctx.nsets(wbytes)
                    bits, W = lowbit_weights(ctx, wtype, N, K, G, nsets)
                    W_pack_err = None
                    if ctx.tile is not None:                # our packer must agree with tilec's
                        ref_bytes = ctx.tile.from_codes(W[0]["codes_head"].numpy(), wtype, (64,)).data
                        got = W[0]["packed"][:64 * bits // 8].cpu().numpy()
                        if not (ref_bytes.tobytes() == got.tobytes()):
                            W_pack_err = "the benchmark's packer disagrees with tile.from_codes"
                    tiny = None
                nsets = len(W)
                wbytes = K * N * bits // 8 + (K // G) * N * 4
                rec.update(unit="us", flops=2.0 * M * N * K, nsets=nsets, weight_bytes=wbytes,
                           fp16_weight_bytes=K * N * 2)
                X = [ctx.randn((M, K)) for _ in range(nsets)]
                X16 = [x.half() for x in X]
                Y = [torch.empty((M, N), device="cuda", dtype=torch.bfloat16) for _ in range(nsets)]
                ref = X[0].float() @ W[0]["wdeq"]
                tol = TOL["lowbit"]

                def check_peer(fn):
                    out = fn(0)
                    torch.cuda.synchronize()
                    return rel_err(torch, out, ref)

                rec["peers"]["cublas-fp16"] = run_impl(ctx, lambda i: F.linear(X16[i], W[i]["W16"]), check_peer, nsets,
                                                       nbytes=K * N * 2, tol=tol)
                if wtype == "int4":
                    r = None
                    for hf in ((True, False) if tiny is None else (tiny,)):
                        try:
                            pk = [tinygemm_pack(torch, st["q_nk"], st["S"], G, hf) for st in W]
                            r = run_impl(ctx, lambda i: torch._weight_int4pack_mm(X[i], pk[i][0], G, pk[i][1]),
                                         check_peer, nsets, nbytes=K * N // 2 + (K // G) * N * 4, tol=tol)
                        except Exception as e:               # noqa: BLE001
                            r = {"status": "ERROR", "error": _err(e)}
                        if r["status"] == "ok":
                            tiny = hf
                            r["nibble_order"] = "high-first" if hf else "low-first"
                            break
                    rec["peers"]["tinygemm-int4"] = r

                def check(fn):
                    Y[0].fill_(float("nan"))
                    fn(0)
                    torch.cuda.synchronize()
                    return rel_err(torch, Y[0], ref)

                def make_launch(cfg, targ):
                    if W_pack_err:
                        raise RuntimeError(W_pack_err)
                    kern = gallery_kernel("lowbit_gemm")
                    Wd = [torch_to_device_array(st["packed"], dtype=wtype, shape=(K, N)) for st in W]
                    args = [(targ(X[i]), Wd[i], targ(W[i]["S"]), targ(Y[i])) for i in range(nsets)]
                    grid = (cdiv(M, cfg["BM"]), cdiv(N, cfg["BN"]))

                    def launch(i):
                        x, w, s, y = args[i]
                        kern[grid](x, w, s, y, **cfg)
                    return launch

                rec["tilec"] = tilec_sweep(ctx, "lowbit_gemm", wtype, case["configs"], make_launch, check, nsets,
                                           nbytes=wbytes, tol=tol, fixed=dict(G=G, ZERO=LOWBIT_ZERO.get(wtype, 0.0)))
        W = None                                            # free this group's weights
        gc.collect()
        torch.cuda.empty_cache()


# ======================================================================= child: compile times
def np_moe_layout(ids, E, BM):
    import numpy as np
    topk = ids.shape[1]
    flat = ids.reshape(-1)
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=E)
    padded = (counts + BM - 1) // BM * BM
    pstart = np.cumsum(padded) - padded
    cstart = np.cumsum(counts) - counts
    se = flat[order]
    row_pos = pstart[se] + (np.arange(flat.size) - cstart[se])
    Pn = int(padded.sum())
    rows = np.full(Pn, -1, np.int32)
    rows[row_pos] = (order // topk).astype(np.int32)
    return rows, np.repeat(np.arange(E, dtype=np.int32), padded // BM), Pn


def small_launch(tile, kname, cx, wtype=None):
    """(grid, args) of a small launch of the kernel (tile DeviceArrays from NumPy; no torch)."""
    import numpy as np
    from tile.runtime.device import empty, to_device
    rng = np.random.default_rng(1)

    def bf(*shape, scale=1.0):
        return to_device(tile.asarray(rng.standard_normal(shape) * scale, "bf16"))

    if kname == "gemm":
        M = N = K = 256
        return ((cdiv(M, cx["BM"]), cdiv(N, cx["BN"])),
                (bf(M, K), bf(K, N, scale=K ** -0.5), empty((M, N), "bf16"),
                 to_device(rng.standard_normal(N).astype(np.float32)), 1.0))
    if kname == "attention":
        B, H, S, D = 1, 2, 256, cx["D"]
        return ((cdiv(S, cx["BM"]), B * H),
                (bf(B, H, S, D), bf(B, H, S, D), bf(B, H, S, D), empty((B, H, S, D), "bf16"), 1.0 / math.sqrt(D)))
    if kname in ("moe_up", "moe_down"):
        T, E, topk, d = 64, 4, 2, 256
        h = cx.get("F", 256)
        ids = np.argsort(rng.random((T, E)), axis=1)[:, :topk]
        rows, be, Pn = np_moe_layout(ids, E, cx["BM"])
        if kname == "moe_up":
            return ((Pn // cx["BM"], cdiv(h, cx["BN"])),
                    (bf(T, d), bf(E, d, 2 * h, scale=d ** -0.5), to_device(rows), to_device(be), empty((Pn, h), "bf16")))
        return ((Pn // cx["BM"], cdiv(d, cx["BN"])),
                (bf(Pn, h), bf(E, h, d, scale=h ** -0.5), to_device(be), empty((Pn, d), "bf16")))
    if kname == "lowbit_gemm":
        M, N, K, G = 1, 256, 256, cx["G"]
        bits = tile.dtype(wtype).bits
        W = to_device(tile.from_codes(rng.integers(0, 2 ** bits, (K, N)), wtype))
        S = to_device((rng.random((K // G, N)) * 0.02 + 0.005).astype(np.float32))
        return ((cdiv(M, cx["BM"]), cdiv(N, cx["BN"])), (bf(M, K), W, S, empty((M, N), "bf16")))
    raise KeyError(kname)


def _compile_and_launch(tile, tcuda, spec_id, target, gpu, times: dict, prefix: str):
    """compile() then (on a GPU) the first small launch + synchronize; fills times[prefix + ...]."""
    _, kname, cx, wt = next(s for s in COMPILE_SPECS if s[0] == spec_id)
    kern = gallery_kernel(kname)
    grid = args = None
    t0 = time.perf_counter()
    ck = kern.compile(*kernel_sig(tile, kname, wt), target=target, **cx)
    times[prefix + "compile_s"] = time.perf_counter() - t0
    times["artifacts"] = [a for a in ("ptx", "cubin") if getattr(ck, a, None)]
    if gpu:
        try:
            grid, args = small_launch(tile, kname, cx, wt)
            t0 = time.perf_counter()
            kern[grid](*args, **cx)
            tcuda.synchronize()
            times[prefix + "first_launch_s"] = time.perf_counter() - t0
            times[prefix + "total_s"] = times[prefix + "compile_s"] + times[prefix + "first_launch_s"]
        except Exception as e:                               # noqa: BLE001 - compile() worked; the launch did not
            times[prefix + "launch_error"] = _err(e)
            grid = args = None
    return kern, grid, args, cx


def fam_compile(args, cases, writer):
    """Cold compile (empty cache dir), warm in the same process (memory caches cleared -> disk
    hits), warm in a new process, and the steady host time per launch, of each gallery kernel."""
    cold_dir = tempfile.mkdtemp(prefix="tilec-cold-cache-")
    os.environ["TILEC_CACHE_DIR"] = cold_dir                # before the first use of the default cache
    os.environ["TILEC_CACHE"] = "1"
    t0 = time.perf_counter()
    tile, tcuda, target, why = import_tilec()
    import_s = time.perf_counter() - t0
    ids = [c["id"] for c in cases]
    by_id = {c["id"]: c for c in cases}
    if tile is None:
        for c in cases:
            writer.emit("result", id=c["id"], record={"id": c["id"], "family": "compile", "params": c["params"],
                                                      "status": "ERROR", "error": why})
        return
    gpu = why is None
    if target is None or target == "cpu":
        target = os.environ.get("TILEC_TARGET") if os.environ.get("TILEC_TARGET") not in (None, "", "cpu") else "sm_90a"
    meta = {"tilec": tilec_meta(tile, tcuda, target), "compile_import_s": import_s, "compile_cache_dir": cold_dir}
    if why:
        meta["tilec_compile_note"] = f"compile() only, for target {target}: {why}"
    writer.emit("meta", meta=meta)
    print(f"import tile: {import_s:.2f} s; target {target}; cache {cold_dir}; launches: {'yes' if gpu else 'no (' + why + ')'}",
          flush=True)
    recs = {}
    launchable = {}
    kernel_specs = [s for s in COMPILE_SPECS if s[0] in ids or s[0] == "compile/init"]
    for spec_id, kname, cx, wt in kernel_specs:
        if time.time() > args.deadline - 5:
            if spec_id in by_id:
                writer.emit("result", id=spec_id, record={"id": spec_id, "family": "compile", "status": "SKIP",
                                                          "params": by_id[spec_id]["params"], "error": "time budget"})
            continue
        rec = {"id": spec_id, "family": "compile", "params": {"kernel": kname, "config": cx, "wtype": wt},
               "status": "ERROR", "first_in_process": not recs}
        writer.emit("start", id=spec_id)
        try:
            kern, grid, largs, cx2 = _compile_and_launch(tile, tcuda, spec_id, target, gpu, rec, "cold_")
            rec["status"] = "ok"
            if grid is not None:
                launchable[spec_id] = (kern, grid, largs, cx2)
                hs = []
                for _ in range(30):
                    h0 = time.perf_counter()
                    kern[grid](*largs, **cx2)
                    hs.append(time.perf_counter() - h0)
                tcuda.synchronize()
                hs.sort()
                rec["launch_overhead_us"] = hs[len(hs) // 2] * 1e6
        except Exception as e:                               # noqa: BLE001
            rec["error"] = _err(e)
            rec["traceback"] = traceback.format_exc()[-3000:]
        recs[spec_id] = rec
        if spec_id in by_id:
            writer.emit("result", id=spec_id, record=rec)
        print(f"--- {spec_id}: cold compile() {rec.get('cold_compile_s', float('nan')):.3f} s"
              + (f", first launch {rec['cold_first_launch_s']:.3f} s" if "cold_first_launch_s" in rec else "")
              + (f", {rec['launch_overhead_us']:.1f} us/launch" if "launch_overhead_us" in rec else "")
              + (f"  ERROR {rec['error'][:300]}" if rec.get("error") else "")
              + (f"  launch ERROR {rec['cold_launch_error'][:300]}" if rec.get("cold_launch_error") else ""),
              flush=True)
    try:
        nfiles = sum(1 for _ in Path(cold_dir).rglob("*.json"))
    except Exception:                                        # noqa: BLE001
        nfiles = None
    writer.emit("meta", meta={"compile_disk_cache_entries_after_cold": nfiles})
    if nfiles == 0:
        writer.emit("note", note=f"no files in the tilec disk cache ({cold_dir}) after the cold compiles: the compile "
                                 f"path does not use runtime/cache.py's disk tier (yet), so 'warm' = in-process recompile")
    # warm, same process: memory caches cleared, so the disk tier (if used) answers
    try:
        cleared = reset_tilec_memory_caches([gallery_kernel(k) for k in GALLERY])
    except Exception as e:                                   # noqa: BLE001
        cleared = [f"failed: {_err(e)}"]
    writer.emit("meta", meta={"compile_warm_cleared": cleared})
    try:
        from tile.runtime.cache import default_cache
        stats0 = default_cache().stats.as_dict()
    except Exception:                                        # noqa: BLE001
        stats0 = None
    for spec_id, _, _, _ in kernel_specs:
        if spec_id not in recs or recs[spec_id]["status"] != "ok" or time.time() > args.deadline - 5:
            continue
        upd = {}
        try:
            _compile_and_launch(tile, tcuda, spec_id, target, gpu, upd, "warm_")
        except Exception as e:                               # noqa: BLE001
            upd["warm_error"] = _err(e)
        upd.pop("artifacts", None)
        recs[spec_id].update(upd)
        if spec_id in by_id:
            writer.emit("update", id=spec_id, fields=upd)
    try:
        from tile.runtime.cache import default_cache
        writer.emit("meta", meta={"compile_cache_stats": {"before_warm": stats0, "after_warm": default_cache().stats.as_dict()}})
    except Exception:                                        # noqa: BLE001
        pass
    # warm, new process: same cache directory, fresh interpreter
    if "compile/new-process" in by_id:
        writer.emit("start", id="compile/new-process")
        rec = {"id": "compile/new-process", "family": "compile", "params": by_id["compile/new-process"]["params"],
               "status": "ERROR"}
        probe_ids = [s for s in recs if recs[s]["status"] == "ok"]
        left = args.deadline - time.time() - 3
        if not probe_ids:
            rec["error"] = "no kernel compiled in this process"
        elif left < 5:
            rec.update(status="SKIP", error="time budget")
        else:
            env = dict(os.environ, TILEC_CACHE_DIR=cold_dir)
            cmd = [sys.executable, str(SCRIPT), "--compile-probe", "--cases", ",".join(probe_ids)]
            try:
                pr = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=left)
                line = next((ln for ln in pr.stdout.splitlines() if ln.startswith("PROBE_JSON ")), None)
                if line is None:
                    rec["error"] = f"probe exited {pr.returncode}: {(pr.stderr or pr.stdout)[-800:]}"
                else:
                    probe = json.loads(line[len("PROBE_JSON "):])
                    rec.update(status="ok", import_s=probe.get("import_s"), gallery_s=probe.get("gallery_s"),
                               kernels=probe.get("kernels"))
                    for sid, t in (probe.get("kernels") or {}).items():
                        fields = {"newproc_" + k: v for k, v in t.items() if k != "artifacts"}
                        if sid in by_id:
                            writer.emit("update", id=sid, fields=fields)
            except subprocess.TimeoutExpired:
                rec.update(status="ERROR", error="probe timed out")
            except Exception as e:                           # noqa: BLE001
                rec["error"] = _err(e)
        writer.emit("result", id="compile/new-process", record=rec)
    shutil.rmtree(cold_dir, ignore_errors=True)


def run_probe(args):
    """--compile-probe: a fresh process compiles (and launches) the given compile specs once each."""
    out = {"kernels": {}}
    t0 = time.perf_counter()
    tile, tcuda, target, why = import_tilec()
    out["import_s"] = time.perf_counter() - t0
    if tile is None:
        out["error"] = why
        print("PROBE_JSON " + json.dumps(_clean(out)), flush=True)
        return 0
    gpu = why is None
    if target is None or target == "cpu":
        target = "sm_90a"
    t0 = time.perf_counter()
    for stem in ("gemm", "attention", "moe", "lowbit_gemm"):
        load_gallery(stem)
    out["gallery_s"] = time.perf_counter() - t0
    for sid in args.cases.split(","):
        t = {}
        try:
            _compile_and_launch(tile, tcuda, sid, target, gpu, t, "")
        except Exception as e:                               # noqa: BLE001
            t["error"] = _err(e)
        out["kernels"][sid] = t
    print("PROBE_JSON " + json.dumps(_clean(out)), flush=True)
    return 0


# =================================================================================== child main
FAMILY_FN = {"gemm": fam_gemm, "attention": fam_attention, "moe": fam_moe, "lowbit": fam_lowbit,
             "gemm8": lambda ctx, cases: gemm8().fam_gemm8(sys.modules[__name__], ctx, cases)}


def run_child(args):
    writer = Writer(args.results)
    all_cases = {c["id"]: c for c in enumerate_cases(args.mode)}
    cases = [all_cases[i] for i in args.cases.split(",") if i in all_cases]
    if args.child == "compile":
        fam_compile(args, cases, writer)
        return 0
    try:
        ctx = Ctx(args, writer)
    except Exception as e:                                   # noqa: BLE001
        msg = f"benchmark setup failed: {_err(e)}"
        print(msg, flush=True)
        for c in cases:
            writer.emit("result", id=c["id"], record={"id": c["id"], "family": c["family"], "params": c["params"],
                                                      "status": "ERROR", "error": msg})
        return 0
    if ctx.tile_skip:
        ctx.note(f"tilec not run: {ctx.tile_skip}")
    FAMILY_FN[args.child](ctx, cases)
    return 0


# ======================================================================================= parent
def _run_child_proc(cmd, env, timeout, prefix, log):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True, bufsize=1, cwd=str(REPO))
    tail = collections.deque(maxlen=40)

    def pump():
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            sys.stdout.write(prefix + line)
            sys.stdout.flush()
            log.write(prefix + line)

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)             # the child's own session (it and its probe)
        rc = proc.wait()
    th.join(timeout=5)
    return rc, list(tail), timed_out


def _read_events(path):
    out = []
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def _sh(cmd, cwd=None):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd).stdout.strip()
    except Exception:                                        # noqa: BLE001
        return None


def host_meta():
    m = {"python": sys.version.split()[0], "platform": platform.platform(), "host": platform.node()}
    try:
        import numpy
        m["numpy"] = numpy.__version__
    except Exception:                                        # noqa: BLE001
        pass
    if shutil.which("git"):
        head = _sh(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=str(REPO)) or ""
        m["git_commit"] = head if len(head) == 40 else None
        st = _sh(["git", "status", "--porcelain"], cwd=str(REPO))
        m["git_dirty_files"] = None if st is None else len([ln for ln in st.splitlines() if ln.strip()])
    if shutil.which("nvidia-smi"):
        m["nvidia_smi"] = _sh(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,"
                                             "power.limit,temperature.gpu,utilization.gpu",
                               "--format=csv"])
    return m


def run_parent(args):
    mode_name = args.mode
    mode = MODES[mode_name]
    cases = select_cases(enumerate_cases(mode_name), args.only)
    if not cases:
        print(f"no case matches --only {args.only!r}; families: {', '.join(FAMILIES)}")
        return 2
    if args.dry_run:
        return dry_run(cases, mode_name)
    out_dir = Path(args.out or os.environ.get("OUT") or (HERE / "results")).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    stem = f"tilec-bench-{now.strftime('%Y%m%d-%H%M%S')}-{mode_name}"
    budget = float(args.budget or mode["budget"])
    start = time.time()
    deadline = start + budget
    work = tempfile.mkdtemp(prefix="tilec-bench-")
    seed = args.seed if args.seed is not None else int(start) % 1_000_000
    shared_cache = args.cache_dir or os.path.join(work, "tilec-cache")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TILEC_CACHE_DIR=shared_cache)
    print(f"tilec benchmarks, {mode_name} mode, {len(cases)} cases, budget {budget:.0f} s, seed {seed}, "
          f"out {out_dir}", flush=True)
    meta, notes, results = {}, [], {}
    families = [f for f in FAMILIES if any(c["family"] == f for c in cases)]
    log = open(out_dir / f"{stem}.log", "w", encoding="utf-8")
    try:
        for idx, fam in enumerate(families):
            fam_cases = [c for c in cases if c["family"] == fam]
            wsum = sum(FAMILY_WEIGHT[f] for f in families[idx:])
            fam_deadline = time.time() + max(0.0, deadline - time.time()) * FAMILY_WEIGHT[fam] / wsum
            attempt = 0
            while True:
                todo = [c for c in fam_cases if c["id"] not in results]
                if not todo:
                    break
                left = fam_deadline - time.time()
                if left < 8 or attempt >= 3:
                    why = "time budget" if left < 8 else "child crashed repeatedly"
                    for c in todo:
                        results[c["id"]] = {"id": c["id"], "family": fam, "params": c["params"], "status": "SKIP",
                                            "error": why}
                    break
                attempt += 1
                jsonl = os.path.join(work, f"{fam}-{attempt}.jsonl")
                cmd = [sys.executable, "-u", str(SCRIPT), "--child", fam, "--results", jsonl, "--deadline",
                       repr(fam_deadline), "--seed", str(seed), "--attempt", str(attempt),
                       "--cases", ",".join(c["id"] for c in todo), "--mode", mode_name]
                print(f"== {fam}: {len(todo)} case(s), {left:.0f} s" + (f" (restart {attempt - 1})" if attempt > 1 else ""),
                      flush=True)
                rc, tail, timed_out = _run_child_proc(cmd, env, left + 10, f"[{fam}] ", log)
                started, got = None, 0
                for ev in _read_events(jsonl):
                    kind = ev.get("event")
                    if kind == "meta":
                        meta.update(ev.get("meta") or {})
                    elif kind == "note":
                        if ev.get("note") not in notes:
                            notes.append(ev.get("note"))
                    elif kind == "start":
                        started = ev.get("id")
                    elif kind == "result":
                        results[ev["id"]] = ev["record"]
                        got += 1
                        if started == ev["id"]:
                            started = None
                    elif kind == "update" and ev.get("id") in results:
                        results[ev["id"]].update(ev.get("fields") or {})
                tail_txt = " / ".join(tail[-6:])[-700:]
                if rc == 0 and not timed_out:
                    for c in todo:
                        if c["id"] not in results:
                            results[c["id"]] = {"id": c["id"], "family": fam, "params": c["params"],
                                                "status": "ERROR", "error": "the child ended without a result"}
                    break
                why = "timed out" if timed_out else f"exited with code {rc}"
                if started and started not in results:
                    c = next(c for c in fam_cases if c["id"] == started)
                    results[started] = {"id": started, "family": fam, "params": c["params"], "status": "ERROR",
                                        "error": f"the benchmark process {why} during this case: {tail_txt}"}
                    got += 1
                if timed_out or got == 0:
                    for c in todo:
                        if c["id"] not in results:
                            results[c["id"]] = {"id": c["id"], "family": fam, "params": c["params"],
                                                "status": "SKIP" if timed_out else "ERROR",
                                                "error": ("time budget (the family's child was stopped)" if timed_out
                                                          else f"the benchmark process {why}: {tail_txt}")}
                    break
    finally:
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.time() - start
    ordered = [results[c["id"]] for c in cases if c["id"] in results]
    doc = {
        "schema": 1, "date": now.isoformat(), "mode": mode_name, "elapsed_s": round(elapsed, 1), "budget_s": budget,
        "seed": seed, "gpu": meta.get("gpu"), "meta": meta, "host": host_meta(),
        "settings": {"reps": mode["reps"], "warmup": mode["warmup"], "rotate_l2_factor": ROTATE_L2_FACTOR,
                     "tolerance": TOL, "ratio": "best peer time / tilec time (> 1: tilec faster)"},
        "notes": notes,
        "compile": [r for r in ordered if r.get("family") == "compile"],
        "cases": [r for r in ordered if r.get("family") != "compile"],
    }
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(_clean(doc), indent=1), encoding="utf-8")
    png_path = out_dir / f"{stem}.png"
    plot_err = plot_ratios(doc, png_path)
    table = format_report(doc)
    (out_dir / f"{stem}.txt").write_text(table + "\n", encoding="utf-8")
    print()
    for n in notes:
        print(f"note: {n}")
    print(f"wrote {json_path}" + ("" if plot_err else f", {png_path}") + f" ({elapsed:.0f} s)")
    if plot_err:
        print(f"no plot: {plot_err}")
    print(table, flush=True)
    return 0


# ======================================================================================= report
def _cell(rec, p):
    if not p:
        return "-"
    if p.get("status") != "ok":
        return p.get("status", "?")
    if rec.get("unit") == "us":
        return f"{p['ms'] * 1e3:.1f} us" + (f" {p['tbps']:.2f}TB/s" if p.get("tbps") else "")
    return f"{p['tflops']:.1f} TF/s" if p.get("tflops") else f"{p['ms']:.3f} ms"


def format_report(doc) -> str:
    lines = []
    comp = doc.get("compile") or []
    if comp:
        lines.append("compile times (s): cold = empty cache dir; warm = same process, memory caches cleared; "
                     "new proc = fresh process, same cache dir; launch = host us per launch")
        lines.append(f"{'kernel':<28} {'cold compile':>12} {'cold 1st run':>12} {'warm total':>10} {'new proc':>9} "
                     f"{'launch us':>9}  status")

        def f(v, w, d=3):
            return f"{v:>{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"

        for r in comp:
            if r["id"] == "compile/new-process":
                lines.append(f"{r['id']:<28} import tile {r.get('import_s') or 0:.2f} s, gallery "
                             f"{r.get('gallery_s') or 0:.2f} s (compile + first run per kernel in 'new proc')"
                             if r.get("status") == "ok" else f"{r['id']:<28} {r.get('status')} {(r.get('error') or '')[:80]}")
                continue
            warm = r.get("warm_total_s", r.get("warm_compile_s"))
            newp = r.get("newproc_total_s", r.get("newproc_compile_s"))
            st = r.get("status", "?")
            if r.get("error"):
                st += " " + r["error"][:70]
            elif r.get("cold_launch_error"):
                st = "compile ok, launch ERROR: " + r["cold_launch_error"][:60]
            lines.append(f"{r['id']:<28} {f(r.get('cold_compile_s'), 12)} {f(r.get('cold_first_launch_s'), 12)} "
                         f"{f(warm, 10)} {f(newp, 9)} {f(r.get('launch_overhead_us'), 9, 1)}  {st}")
        lines.append("")
    if not doc.get("cases"):
        lines.append("(no benchmark cases selected)")
        return "\n".join(lines)
    gpu = doc.get("gpu") or "?"
    lines.append(f"tilec vs best peer on {gpu}, {doc.get('date', '')[:19]}, {doc.get('mode')} mode "
                 f"(ratio = peer time / tilec time; > 1 = tilec faster)")
    hdr = f"{'case':<36} {'tilec':>22} {'best peer':>30} {'ratio':>6} {'rel err':>8}  tilec config / status"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in doc.get("cases") or []:
        t = r.get("tilec") or {}
        bp = r.get("best_peer")
        peer = (r.get("peers") or {}).get(bp) if bp else None
        peer_cell = f"{_cell(r, peer)} {bp}" if peer else "-"
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") else "-"
        err = t.get("rel_err")
        err_s = f"{err:.1e}" if isinstance(err, (int, float)) else "-"
        st = r.get("status", "?")
        if st == "ok":
            tail = cfg_name(t.get("config"))
        else:
            tail = f"{st}: {(r.get('error') or t.get('error') or '')[:70]}"
        tcell = _cell(r, t) if t else st
        lines.append(f"{r['id']:<36} {tcell:>22} {peer_cell:>30} {ratio:>6} {err_s:>8}  {tail}")
    n = collections.Counter(r.get("status") for r in doc.get("cases") or [])
    lines.append(f"{len(doc.get('cases') or [])} cases: " + ", ".join(f"{v} {k}" for k, v in sorted(n.items(), key=str)))
    return "\n".join(lines)


def plot_ratios(doc, path):
    """A horizontal bar per case: tilec speed / best peer speed (log scale), failures marked. Returns
    an error string, or None when the PNG was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:                                   # noqa: BLE001
        return f"matplotlib unavailable ({_err(e)})"
    try:
        rows = doc.get("cases") or []
        if not rows:
            return "no cases"
        colors = {"gemm": "#1f77b4", "attention": "#ff7f0e", "moe": "#2ca02c", "lowbit": "#9467bd", "gemm8": "#8c564b"}
        fig, ax = plt.subplots(figsize=(10, 0.3 * len(rows) + 1.6))
        ys = list(range(len(rows)))[::-1]
        vals = [r.get("ratio") for r in rows]
        good = [v for v in vals if v]
        lo = min([0.5] + [v / 1.5 for v in good])
        hi = max([2.0] + [v * 1.5 for v in good])
        for y, r, v in zip(ys, rows, vals):
            if v:
                ax.barh(y, v, color=colors.get(r.get("family"), "gray"), left=0)
                ax.text(v * 1.03, y, f"{v:.2f}", va="center", fontsize=7)
            else:
                ax.text(lo * 1.05, y, r.get("status", "?"), va="center", fontsize=7,
                        color="red" if r.get("status") in ("FAIL", "ERROR") else "gray")
        ax.set_yticks(ys)
        ax.set_yticklabels([r["id"] for r in rows], fontsize=7)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("tilec speed / best peer speed (> 1: tilec faster)")
        ax.set_title(f"tilec vs best peer, {doc.get('gpu') or '?'}, {doc.get('date', '')[:10]} ({doc.get('mode')})",
                     fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    except Exception as e:                                   # noqa: BLE001
        return _err(e)
    return None


def dry_run(cases, mode_name) -> int:
    mode = MODES[mode_name]
    print(f"{mode_name} mode: {len(cases)} cases, reps {mode['reps']} (median), warm-up {mode['warmup']}, "
          f"budget {mode['budget']:.0f} s; tilec configs: "
          f"{'first one that passes' if mode['first_success'] else 'all, best reported'}")
    for c in cases:
        cfgs = "; ".join(cfg_name(x) or json.dumps(x) for x in c["configs"])
        peers = ", ".join(c["peers"]) or "-"
        print(f"  {c['id']:<40} peers: {peers:<34} tilec configs: {cfgs}")
    return 0


# ========================================================================================= main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="tilec vs the best library on the same GPU (see benchmarks/README.md)")
    ap.add_argument("--quick", action="store_true", help="fewer configs and repetitions: < 3 minutes on an H100")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, ~1 minute: checks that every kernel and peer "
                                                         "runs and is right (timings mean little)")
    ap.add_argument("--only", help="comma-separated families (compile, gemm, attention, moe, lowbit) or case-id "
                                   "prefixes (e.g. gemm/4096x4096x4096, moe_up, lowbit/int4)")
    ap.add_argument("--out", help="output folder (default: $OUT if set, else benchmarks/results/)")
    ap.add_argument("--dry-run", action="store_true", help="list the cases and exit (no GPU needed)")
    ap.add_argument("--budget", type=float, help="seconds for the whole run (default: 150 quick, 500 full, "
                                                  "100 smoke)")
    ap.add_argument("--seed", type=int, help="random seed (default: from the clock; recorded in the JSON)")
    ap.add_argument("--cache-dir", help="tilec cache dir for the benchmark families (default: a fresh temporary one)")
    # internal
    ap.add_argument("--child", choices=FAMILIES, help=argparse.SUPPRESS)
    ap.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--results", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--cases", help=argparse.SUPPRESS)
    ap.add_argument("--attempt", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mode is None:
        args.mode = "smoke" if args.smoke else ("quick" if args.quick else "full")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compile_probe:
        return run_probe(args)
    if args.child:
        if args.seed is None:
            args.seed = 0
        if args.deadline is None:
            args.deadline = time.time() + MODES[args.mode]["budget"]
        return run_child(args)
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
