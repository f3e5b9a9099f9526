"""Family `compile`: tilec's compile times, in a process of their own with `TILEC_CACHE_DIR` a new
empty directory (no torch needed):

* cold compile -- `kernel.compile(signature, target=arch, **constexprs)` with nothing cached, and the
  first launch after it on small inputs (`compile/init` compiles a small gemm first, so one-time
  imports are not charged to the first kernel measured);
* warm total -- the same in the same process after clearing every in-memory cache, so the disk tier
  answers; new proc -- the same in a fresh process with the same cache directory (`--compile-probe`);
* launch us -- steady host time of one `kernel[grid](...)` call (DeviceArray arguments), median of 30.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import lowbit_gemm, moe
from .common import GALLERY, RUN_PY, case, cdiv, clean, err_text, gallery_kernel, import_tilec, kernel_sig, \
    load_gallery, tilec_meta

WEIGHT = 1.5
TORCH = False                     # run(ctx) gets a BaseCtx: no torch in this family's process

# (case id, kernel, constexprs, weight type): each gallery kernel's first benchmark config -- for gemm
# and attention the cp.async configs measured here before the warp-specialized ones came first in
# their lists, so that the rows stay comparable across runs
SPECS = [
    ("compile/init", "gemm", dict(BM=32, BN=32, BK=32, STAGES=2), None),
    ("compile/gemm", "gemm", dict(BM=128, BN=128, BK=64, STAGES=3), None),
    ("compile/attention", "attention", dict(BM=128, BN=128, num_warps=8, D=128, CAUSAL=False), None),
    ("compile/moe_up", "moe_up", dict(moe.UP_CONFIGS[0], F=moe.CASES[0][4]), None),
    ("compile/moe_down", "moe_down", dict(moe.DOWN_CONFIGS[0]), None),
    ("compile/lowbit_gemm-int4", "lowbit_gemm", dict(lowbit_gemm.CONFIGS[0], G=lowbit_gemm.G, ZERO=0.0), "int4"),
    ("compile/lowbit_gemm-int3", "lowbit_gemm", dict(lowbit_gemm.CONFIGS[0], G=lowbit_gemm.G, ZERO=0.0), "int3"),
]


def cases(mode: str) -> list:
    out = [case("compile", cid, {"kernel": kern, "config": dict(cx), "wtype": wt}, [cx]) for cid, kern, cx, wt in SPECS]
    out.append(case("compile", "compile/new-process", {"kernel": "all of the above", "config": None, "wtype": None}))
    return out


def reset_memory_caches(kernels) -> list:
    """Forget every in-memory compiled kernel so that the next launch goes to the disk cache: each
    Kernel's `.cache` and fast-path table, the default KernelCache's memory tier, and launch._FUNCS
    (loaded modules). Returns what it cleared."""
    cleared = []
    for k in kernels:
        for attr in ("cache", "_fast"):
            c = getattr(k, attr, None)
            if isinstance(c, dict):
                c.clear()
                cleared.append(f"{getattr(k, 'name', k)}.{attr}")
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
                    (bf(T, d), bf(E, d, 2 * h, scale=d ** -0.5), to_device(rows[:, None]), to_device(be), empty((Pn, h), "bf16")))
        return ((Pn // cx["BM"], cdiv(d, cx["BN"])),
                (bf(Pn, h), bf(E, h, d, scale=h ** -0.5), to_device(be), empty((Pn, d), "bf16")))
    if kname == "lowbit_gemm":
        M, N, K, G = 1, 256, 256, cx["G"]
        bits = tile.dtype(wtype).bits
        W = to_device(tile.from_codes(rng.integers(0, 2 ** bits, (K, N)), wtype))
        S = to_device((rng.random((K // G, N)) * 0.02 + 0.005).astype(np.float32))
        return ((cdiv(M, cx["BM"]), cdiv(N, cx["BN"])), (bf(M, K), W, S, empty((M, N), "bf16")))
    raise KeyError(kname)


def compile_and_launch(tile, tcuda, spec_id, target, gpu, times: dict, prefix: str):
    """compile() then (on a GPU) the first small launch + synchronize; fills times[prefix + ...]."""
    _, kname, cx, wt = next(s for s in SPECS if s[0] == spec_id)
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
            times[prefix + "launch_error"] = err_text(e)
            grid = args = None
    return kern, grid, args, cx


def run(ctx) -> None:
    """Cold compile (empty cache dir), warm in the same process (memory caches cleared -> disk
    hits), warm in a new process, and the steady host time per launch, of each gallery kernel."""
    args, cases, writer = ctx.args, ctx.cases, ctx.w
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
    specs = [s for s in SPECS if s[0] in ids or s[0] == "compile/init"]
    for spec_id, kname, cx, wt in specs:
        if time.time() > args.deadline - 5:
            if spec_id in by_id:
                writer.emit("result", id=spec_id, record={"id": spec_id, "family": "compile", "status": "SKIP",
                                                          "params": by_id[spec_id]["params"], "error": "time budget"})
            continue
        rec = {"id": spec_id, "family": "compile", "params": {"kernel": kname, "config": cx, "wtype": wt},
               "status": "ERROR", "first_in_process": not recs}
        writer.emit("start", id=spec_id)
        try:
            kern, grid, largs, cx2 = compile_and_launch(tile, tcuda, spec_id, target, gpu, rec, "cold_")
            rec["status"] = "ok"
            if grid is not None:
                hs = []
                for _ in range(30):
                    h0 = time.perf_counter()
                    kern[grid](*largs, **cx2)
                    hs.append(time.perf_counter() - h0)
                tcuda.synchronize()
                hs.sort()
                rec["launch_overhead_us"] = hs[len(hs) // 2] * 1e6
        except Exception as e:                               # noqa: BLE001
            rec["error"] = err_text(e)
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
                                 f"path does not use runtime/cache.py's disk tier, so 'warm' = in-process recompile")
    # warm, same process: memory caches cleared, so the disk tier (if used) answers
    try:
        cleared = reset_memory_caches([gallery_kernel(k) for k in GALLERY])
    except Exception as e:                                   # noqa: BLE001
        cleared = [f"failed: {err_text(e)}"]
    writer.emit("meta", meta={"compile_warm_cleared": cleared})
    try:
        from tile.runtime.cache import default_cache
        stats0 = default_cache().stats.as_dict()
    except Exception:                                        # noqa: BLE001
        stats0 = None
    for spec_id, _, _, _ in specs:
        if spec_id not in recs or recs[spec_id]["status"] != "ok" or time.time() > args.deadline - 5:
            continue
        upd = {}
        try:
            compile_and_launch(tile, tcuda, spec_id, target, gpu, upd, "warm_")
        except Exception as e:                               # noqa: BLE001
            upd["warm_error"] = err_text(e)
        upd.pop("artifacts", None)
        recs[spec_id].update(upd)
        if spec_id in by_id:
            writer.emit("update", id=spec_id, fields=upd)
    try:
        from tile.runtime.cache import default_cache
        writer.emit("meta", meta={"compile_cache_stats": {"before_warm": stats0,
                                                          "after_warm": default_cache().stats.as_dict()}})
    except Exception:                                        # noqa: BLE001
        pass
    if "compile/new-process" in by_id:                       # warm, new process: same cache dir, fresh interpreter
        new_process(args, by_id, recs, writer, cold_dir)
    shutil.rmtree(cold_dir, ignore_errors=True)


def new_process(args, by_id, recs, writer, cold_dir) -> None:
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
        cmd = [sys.executable, str(RUN_PY), "--compile-probe", "--cases", ",".join(probe_ids)]
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
        except Exception as e:                               # noqa: BLE001
            rec["error"] = err_text(e)
    writer.emit("result", id="compile/new-process", record=rec)


def probe(args) -> int:
    """--compile-probe: a fresh process compiles (and launches) the given compile specs once each."""
    out = {"kernels": {}}
    t0 = time.perf_counter()
    tile, tcuda, target, why = import_tilec()
    out["import_s"] = time.perf_counter() - t0
    if tile is None:
        out["error"] = why
        print("PROBE_JSON " + json.dumps(clean(out)), flush=True)
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
            compile_and_launch(tile, tcuda, sid, target, gpu, t, "")
        except Exception as e:                               # noqa: BLE001
            t["error"] = err_text(e)
        out["kernels"][sid] = t
    print("PROBE_JSON " + json.dumps(clean(out)), flush=True)
    return 0
