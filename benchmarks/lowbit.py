#!/usr/bin/env python3
"""Low-bit weight GEMM (issue 10): tilec's split-K kernel (examples/lowbit_gemv.py) beside fp16 cuBLAS
and PyTorch's tinygemm int4, with the effective bandwidth against a device copy measured in the same
run.

    python benchmarks/lowbit.py --quick          # the issue's bar cases only (< 1 min on an H100)
    python benchmarks/lowbit.py                  # every row: types x M x shapes
    python benchmarks/lowbit.py --only int4,f4e2m1-mx --ms 1,16 --json out.json

Each row times two tilec paths: the shared-memory path (weights staged through shared memory and
transposed there) and, as "(pre)", the register path (weights pre-laid-out on the host by
tile.prelayout_weights so that each thread's load is its mma B fragments; --no-prelaid skips it).

Rows: int2, int3, int4, int8 (group 128, f32 scales), uint5 / uint7 (zero point 16 / 64),
f4e2m1 with MX scales (e8m0 per 32: "f4e2m1-mx") and NVFP4 scales (f8e4m3fn per 16: "f4e2m1-nv"),
f6e3m2; M in 1, 4, 16, 64, 256; N x K in 14336x4096, 4096x4096, 4096x14336.

Timing: CUDA events around each call, median of the reps after warm-up; calls are queued behind a
GPU sleep so that host launch time never shows as GPU time. tilec's time includes zeroing the f32
output (the split-K partial sums are atomically added into it): "tilec" is zero + kernel,
"kernel" the kernel alone.
Effective TB/s = (packed weight bytes + scale bytes + activation bytes) / time; "% copy" divides it
by the device-to-device copy bandwidth (bytes read + written by a 1 GiB copy / its time) measured at
the start of the run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))                  # a script: the benchmarks package beside it
from benchmarks.timing import Timer as EventTimer  # noqa: E402

SHAPES = ((14336, 4096), (4096, 4096), (4096, 14336))
MS = (1, 4, 16, 64, 256)
# row name -> (weight dtype, zero point, group size, scale kind)
ROWS = {
    "int2": ("int2", 0.0, 128, "f32"),
    "int3": ("int3", 0.0, 128, "f32"),
    "int4": ("int4", 0.0, 128, "f32"),
    "int8": ("int8", 0.0, 128, "f32"),
    "uint5": ("uint5", 16.0, 128, "f32"),
    "uint7": ("uint7", 64.0, 128, "f32"),
    "f4e2m1-mx": ("f4e2m1", 0.0, 32, "e8m0"),
    "f4e2m1-nv": ("f4e2m1", 0.0, 16, "e4m3"),
    "f6e3m2": ("f6e3m2", 0.0, 128, "f32"),
}
QUICK = [("int4", 1, 14336, 4096), ("int4", 1, 4096, 4096), ("int4", 16, 14336, 4096),
         ("int3", 1, 14336, 4096), ("f4e2m1-mx", 1, 14336, 4096)]
SCALE_BYTES = {"f32": 4, "e8m0": 1, "e4m3": 1}


def load_gallery():
    spec = importlib.util.spec_from_file_location("gallery_lowbit_gemv", REPO / "examples" / "lowbit_gemv.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_timer(torch, reps, warmup):
    """Median ms of fn() (CUDA events, after warm-up): the benchmark package's Timer, one input set."""
    t = EventTimer(torch, {"reps": reps, "warmup": warmup, "warm_s": 0.0})
    return lambda fn: t.measure(lambda i: fn())["ms"]


def copy_bandwidth(torch, timer, nbytes=1 << 30):
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    bufs = [a, b]
    ms = timer(lambda: bufs[1].copy_(bufs[0]))
    bufs.clear()
    a = b = None
    torch.cuda.empty_cache()
    return 2 * nbytes / (ms * 1e-3) / 1e12            # TB/s, bytes read + written


def torch_to_device_array(t, dtype, shape):
    from tile.runtime.device import DeviceArray
    return DeviceArray.from_pointer(t.data_ptr(), tuple(shape), dtype, owner=t)


def pack_codes(torch, codes, bits):
    """tilec's dense LSB-first packing of a [K, N] uint8 code tensor (row-major)."""
    g = codes.reshape(-1, 8).to(torch.int64)
    shifts = torch.arange(8, device=codes.device, dtype=torch.int64) * bits
    word = (g << shifts).sum(dim=1)
    return torch.stack([(word >> (8 * j)) & 0xFF for j in range(bits)], dim=1).to(torch.uint8).reshape(-1)


def make_weights(torch, tile, row, N, K, gen):
    """Packed codes, scales (as the kernel takes them), the f32 dequantized [K, N] weights."""
    import numpy as np
    from tile.ir import numerics
    wtype, zero, G, skind = ROWS[row]
    dt = tile.dtype(wtype)
    lut = torch.tensor(numerics.decode(np.arange(1 << dt.bits, dtype=np.uint8), dt), device="cuda",
                       dtype=torch.float32)
    codes = torch.randint(0, 1 << dt.bits, (K, N), device="cuda", dtype=torch.uint8, generator=gen)
    packed = pack_codes(torch, codes, dt.bits) if dt.bits < 8 else codes.reshape(-1).clone()
    ng = (K + G - 1) // G
    if skind == "e8m0":
        S = torch.randint(120, 125, (ng, N), device="cuda", dtype=torch.uint8, generator=gen)
        sval = torch.pow(2.0, S.float() - 127)
        Sarg = torch_to_device_array(S, tile.e8m0, (ng, N))      # the uint8 codes read as e8m0
    elif skind == "e4m3":
        S = torch.randint(0x20, 0x30, (ng, N), device="cuda", dtype=torch.uint8, generator=gen)
        sval = torch.tensor(numerics.decode(np.arange(256, dtype=np.uint8), tile.dtype("f8e4m3fn")),
                            device="cuda", dtype=torch.float32)[S.long()]
        Sarg = torch_to_device_array(S, tile.dtype("f8e4m3fn"), (ng, N))
    else:
        S = torch.rand((ng, N), device="cuda", dtype=torch.float32, generator=gen).mul_(0.02).add_(0.005)
        sval = S
        Sarg = S
    wdeq = (lut[codes.long()] - zero) * sval.repeat_interleave(G, dim=0)[:K]
    sbytes = ng * N * SCALE_BYTES[skind]
    W = torch_to_device_array(packed, dt, (K, N))
    q_nk = (codes.to(torch.int32) if wtype == "int4" else None)
    return dict(W=W, S=Sarg, wdeq=wdeq, wbytes=K * N * dt.bits // 8, sbytes=sbytes, codes=codes, sval=sval,
                q_nk=q_nk, zero=zero, G=G, skind=skind, wtype=wtype)


def tinygemm_fn(torch, w, X, G):
    """PyTorch's tinygemm int4 (torch._weight_int4pack_mm) on the same int4 weights and scales, or
    None where this torch lacks it. Its codes are unsigned (q + 8) with w = (q - 8) * s; the nibble
    order torch expects varies by version: the one that reproduces the reference is kept."""
    if not hasattr(torch, "_weight_int4pack_mm") or w["skind"] != "f32":
        return None
    q = w["codes"].to(torch.int32)
    q = torch.where(q >= 8, q - 16, q) + 8                       # int4 code -> tinygemm's unsigned code
    q_nk = q.t().contiguous()
    S = w["sval"]
    sz = torch.stack([S, torch.zeros_like(S)], dim=-1).to(torch.bfloat16).contiguous()
    ref = X.float() @ w["wdeq"]
    for high_first in (True, False):
        hi, lo = (q_nk[:, ::2], q_nk[:, 1::2]) if high_first else (q_nk[:, 1::2], q_nk[:, ::2])
        try:
            wpk = torch._convert_weight_to_int4pack(((hi << 4) | lo).to(torch.uint8), 8)
            fn = lambda: torch._weight_int4pack_mm(X, wpk, G, sz)   # noqa: E731
            if rel_err(torch, fn(), ref) < 1e-2:
                return fn
        except Exception:                                       # noqa: BLE001
            pass
    return None


def rel_err(torch, out, ref):
    o = out.float()
    if not bool(torch.isfinite(o).all()):
        return float("nan")
    return float(torch.linalg.vector_norm(o - ref) / torch.linalg.vector_norm(ref))


def tilec_consts(lb, tile, row, M, N, K, mma=True, prelaid=False, ks=None):
    wtype, zero, G, skind = ROWS[row]
    bits = tile.dtype(wtype).bits
    c = lb.config(M, N, K, bits, G, mma=mma, scale=skind, prelaid=prelaid)
    if ks:
        c["KS"] = ks
    if M > 16 and mma:                  # beyond the decode regime: 64-row tiles, 3 stages (shared memory)
        c.update(BM=64, STAGES=3, BK=min(c["BK"], max(128, G)))
        c["KS"] = max(c["KS"], c["BK"])
    c.update(G=G, SCALE="float", ZERO=zero)                  # S's dtype says what a scale is (e8m0 too)
    if prelaid:
        c["PRELAID"] = tile.prelayout_plan(bits, lb.sub_step(c["BK"], G), c["BN"], c.get("num_warps", 4))
    return c


def _signature(tile, row):
    wtype, _, _, skind = ROWS[row]
    sdt = {"f32": tile.f32, "e8m0": tile.e8m0, "e4m3": tile.dtype("f8e4m3fn")}[skind]
    return [tile.Tensor[tile.bf16, 2], tile.Tensor[tile.dtype(wtype), 2], tile.Tensor[sdt, 2], tile.Tensor[sdt, 2],
            tile.Tensor[tile.f32, 2]]


def _compile_one(job):
    """Compile one kernel into tilec's disk cache (run in a worker process)."""
    row, consts, arch = job
    import tile
    lb = load_gallery()
    t0 = time.perf_counter()
    try:
        lb.lowbit_gemv.compile(*_signature(tile, row), target=arch, **dict(consts))
        return row, consts, time.perf_counter() - t0, None
    except Exception as e:                                      # noqa: BLE001
        return row, consts, time.perf_counter() - t0, f"{type(e).__name__}: {str(e)[:200]}"


def precompile(lb, tile, cases, arch, jobs, ks=None):
    """Compile the distinct kernels of `cases` [(row, M, N, K, (mma, prelaid))] in parallel processes, so that
    the launches find them in the disk cache. Prints any failure (the case itself reports it too)."""
    import concurrent.futures as cf
    import multiprocessing as mp
    todo = sorted({(row, tuple(sorted(tilec_consts(lb, tile, row, M, N, K, mma, pre, ks).items())), arch)
                   for row, M, N, K, (mma, pre) in cases})
    with cf.ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo))), mp_context=mp.get_context("spawn")) as ex:
        for row, consts, secs, err in ex.map(_compile_one, todo):
            if err:
                print(f"compile {row} {dict(consts)}: {err}")
    return len(todo)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the bar cases only")
    ap.add_argument("--only", help="comma-separated row names (" + ", ".join(ROWS) + ")")
    ap.add_argument("--ms", help="comma-separated M values")
    ap.add_argument("--shapes", help="comma-separated NxK, e.g. 14336x4096")
    ap.add_argument("--fma", action="store_true", help="also time the FMA (non-tensor-core) path for M <= 4")
    ap.add_argument("--no-prelaid", action="store_true", help="skip the register path (pre-laid-out weights)")
    ap.add_argument("--ks", type=int, default=None,
                    help="K slice of every tilec launch instead of config()'s (a multiple of its BK)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--jobs", type=int, default=8, help="processes compiling the kernels up front (1: none)")
    args = ap.parse_args(argv)

    import torch
    import tile
    from tile.runtime import cuda as tcuda
    if not tcuda.available():
        print("no CUDA device: nothing to measure")
        return 1
    import os
    os.environ.setdefault("TILEC_TARGET", tcuda.device().arch)
    lb = load_gallery()
    timer = make_timer(torch, reps=args.reps or (30 if args.quick else 50), warmup=5 if args.quick else 10)
    bw = copy_bandwidth(torch, timer, (1 << 29) if args.quick else (1 << 30))
    print(f"device {torch.cuda.get_device_name()} | copy bandwidth {bw:.2f} TB/s (read + write) | target "
          f"{tile.current_target()}")

    if args.quick:
        cases = list(QUICK)
    else:
        rows = args.only.split(",") if args.only else list(ROWS)
        ms = [int(m) for m in args.ms.split(",")] if args.ms else list(MS)
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")] if args.shapes else list(SHAPES)
        cases = [(r, m, n, k) for r in rows for (n, k) in shapes for m in ms]
    if args.jobs > 1:
        t0 = time.perf_counter()
        n = precompile(lb, tile, [(r, m, n, k, p) for r, m, n, k in cases for p in paths_of(args, m)],
                       tcuda.device().arch, args.jobs, args.ks)
        print(f"compiled {n} kernels in {time.perf_counter() - t0:.1f} s ({args.jobs} processes)")
    F = torch.nn.functional
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    out = []
    hdr = (f"{'row':10s} {'M':>4s} {'N':>6s} {'K':>6s} | {'tilec us':>9s} {'kernel':>7s} {'TB/s':>5s} {'%copy':>5s} "
           f"{'err':>7s} | {'cuBLAS':>7s} {'tinygemm':>8s} | {'x cuBLAS':>8s} {'x tiny':>6s} | config")
    print(hdr)
    print("-" * len(hdr))
    weights = {}
    for row, M, N, K in cases:
        key = (row, N, K)
        if key not in weights:
            weights.clear()
            torch.cuda.empty_cache()
            weights[key] = make_weights(torch, tile, row, N, K, gen)
        w = weights[key]
        X = torch.randn((M, K), device="cuda", generator=gen).to(torch.bfloat16)
        ref = X.float() @ w["wdeq"]
        abytes = M * K * 2
        rec = dict(row=row, M=M, N=N, K=K, wtype=w["wtype"], G=w["G"], scale=w["skind"],
                   weight_bytes=w["wbytes"], scale_bytes=w["sbytes"], act_bytes=abytes, copy_tbps=bw)
        # fp16 cuBLAS on the dequantized weights
        dense = [w["wdeq"].t().contiguous().half(), X.half()]
        rec["cublas_us"] = timer(lambda: F.linear(dense[1], dense[0])) * 1e3
        dense.clear()
        rec["tinygemm_us"] = None
        if w["wtype"] == "int4":
            fn = tinygemm_fn(torch, w, X, w["G"])
            if fn is not None:
                rec["tinygemm_us"] = timer(fn) * 1e3
        # tilec
        for mma, pre in paths_of(args, M):
            tag = PATH_TAG[(mma, pre)]
            try:
                c = tilec_consts(lb, tile, row, M, N, K, mma, pre, args.ks)
                Y = torch.empty((M, N), device="cuda", dtype=torch.float32)
                grid = lb.grid(M, N, K, **c)
                kern = lb.lowbit_gemv
                Wa, Sa = (w["W"] if not pre else prelaid_weights(torch, tile, lb, w, c)), w["S"]

                def run_kernel():
                    kern[grid](X, Wa, Sa, Sa, Y, **c)

                def run_all():
                    Y.zero_()
                    run_kernel()
                run_all()
                torch.cuda.synchronize()
                rec["err" + tag] = rel_err(torch, Y, ref)
                rec["tilec_us" + tag] = timer(run_all) * 1e3
                rec["kernel_us" + tag] = timer(run_kernel) * 1e3
                rec["config" + tag] = {k: v for k, v in c.items() if k not in ("SCALE",)}
            except Exception as e:                              # noqa: BLE001
                rec["error" + tag] = f"{type(e).__name__}: {str(e)[:300]}"
        out.append(rec)
        _print(rec, bw)
    bars(out, bw)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(copy_tbps=bw, device=torch.cuda.get_device_name(),
                                                   rows=out), indent=1))
    return 0


# (mma, prelaid) -> the suffix of a path's keys in the records: "" is the shared-memory path (the
# weights staged through shared memory and transposed there), "_pre" the register path (weights
# pre-laid-out on the host by tile.prelayout_weights, loaded straight into the mma B fragments)
PATH_TAG = {(True, False): "", (True, True): "_pre", (False, False): "_fma"}


def paths_of(args, M):
    return ([(True, False)] + ([] if args.no_prelaid else [(True, True)])
            + ([(False, False)] if args.fma and M <= 4 else []))


def prelaid_weights(torch, tile, lb, w, c):
    """The pre-laid-out copy of these weights (made on the host once per shape, cached on w)."""
    import numpy as np
    key = ("prelaid", c["BK"], c["BN"])
    if key not in w:
        codes = tile.from_codes(w["codes"].cpu().numpy(), tile.dtype(w["wtype"]))
        Wp, _ = lb.prelay(codes, c["BK"], w["G"], c["BN"], c.get("num_warps", 4))
        packed = torch.from_numpy(np.ascontiguousarray(Wp.data).view(np.uint8).reshape(-1).copy()).cuda()
        w[key] = torch_to_device_array(packed, Wp.dtype, Wp.shape)
    return w[key]


def bars(rows, bw):
    """The issue's bars, for the rows that were run: PASS / FAIL with the numbers."""
    lines = []
    for r, tag in ((r, tag) for r in rows for tag in ("", "_pre")):
        t = r.get("tilec_us" + tag)
        if t is None:
            continue
        tb = (r["weight_bytes"] + r["scale_bytes"] + r["act_bytes"]) / (t * 1e-6) / 1e12
        tiny = r.get("tinygemm_us")
        name = f"{r['row']}{'(pre)' if tag else ''} M={r['M']} {r['N']}x{r['K']}"
        if tag and r.get("tilec_us"):
            lines.append((t < r["tilec_us"], f"{name}: register path {r['tilec_us'] / t:.2f}x the shared-memory path"))
        if r["M"] <= 16:
            lines.append((tb >= 0.65 * bw, f"{name}: {100 * tb / bw:.0f}% of copy bandwidth (bar 65%)"))
        if r["row"] == "int4" and r["M"] == 1 and (r["N"], r["K"]) == (14336, 4096):
            lines.append((t <= 13.0, f"{name}: {t:.1f} us (bar <= 13 us)"))
            if tiny:
                lines.append((tiny / t >= 1.6, f"{name}: {tiny / t:.2f}x tinygemm (bar 1.6x)"))
        if r["row"] == "int4" and r["M"] == 1 and (r["N"], r["K"]) == (4096, 4096) and tiny:
            lines.append((tiny / t >= 1.5, f"{name}: {tiny / t:.2f}x tinygemm (bar 1.5x)"))
        if r["row"] == "int4" and r["M"] == 16:
            lines.append((r["cublas_us"] / t >= 2.5, f"{name}: {r['cublas_us'] / t:.2f}x fp16 cuBLAS (bar 2.5x)"))
        if r["row"] == "int4" and r["M"] >= 64:
            lines.append((r["cublas_us"] / t >= 1.0, f"{name}: {r['cublas_us'] / t:.2f}x fp16 cuBLAS (bar 1.0x)"))
    if lines:
        print("\nbars (issue 10):")
        for ok, text in lines:
            print(f"  {'PASS' if ok else 'FAIL'}  {text}")


def _print(r, bw):
    nbytes = r["weight_bytes"] + r["scale_bytes"] + r["act_bytes"]
    for tag in ("", "_pre", "_fma"):
        cfg = r.get("config" + tag) or {}                  # each path's own (the register path's BK differs)
        cs = " ".join(f"{k}={cfg[k]}" for k in ("BM", "BN", "BK", "KS") if k in cfg)
        if tag and ("tilec_us" + tag) not in r and ("error" + tag) not in r:
            continue
        name = r["row"] + {"": "", "_pre": "(pre)", "_fma": "(fma)"}[tag]
        if "error" + tag in r:
            print(f"{name:10s} {r['M']:4d} {r['N']:6d} {r['K']:6d} | ERROR {r['error' + tag]}")
            continue
        t = r["tilec_us" + tag]
        tbps = nbytes / (t * 1e-6) / 1e12
        tiny = r.get("tinygemm_us")
        print(f"{name:10s} {r['M']:4d} {r['N']:6d} {r['K']:6d} | {t:9.1f} {r['kernel_us' + tag]:7.1f} {tbps:5.2f} "
              f"{100 * tbps / bw:5.0f} {r['err' + tag]:7.1e} | {r['cublas_us']:7.1f} "
              f"{(f'{tiny:8.1f}' if tiny else '       -')} | {r['cublas_us'] / t:8.2f} "
              f"{(f'{tiny / t:6.2f}' if tiny else '     -')} | {cs}")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
