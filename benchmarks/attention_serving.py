#!/usr/bin/env python3
"""Serving-side attention on the GPU, tilec beside the libraries, in one run:

* decode (split-KV flash decoding, examples/decode_attention.py): B16 H32 HKV8 S4096 D128, B4 S16384,
  B64 S1024 (one query token), and B16 S4096 with 4 query tokens (speculative decoding, causal);
  peers: torch SDPA under `sdpa_kernel` with the FLASH_ATTENTION and the CUDNN_ATTENTION back end
  (`enable_gqa=True`; one query token only: SDPA's causal mask is aligned top-left), and
  flash_attn's `flash_attn_with_kvcache` where flash_attn is importable. Speed is also given as TB/s
  of KV cache read (2 * B * HKV * S * D * 2 bytes), beside the copy bandwidth (a device-to-device
  copy of 1 GiB, bytes read + written) and a read-only reduction measured in the same run.
* paged decode: the same shapes from a paged cache [P, PAGE, HKV, D] in random page order through a
  block table (page 64, and 16 and 256 on the first shape), against tilec's own contiguous decode
  (the bar: within 10% at page 64) and flash_attn's paged kv-cache call where importable.
* varlen prefill (examples/varlen_attention.py): 16 packed sequences of random lengths up to 4096 (one
  of length 1), H32 HKV8 D128, causal and not; TFLOP/s on the real rows (4 * sum L^2 * H * D, halved
  when causal); peers: flash_attn_varlen_func where importable, SDPA's flash back end on a nested
  (jagged) tensor, and (causal) SDPA flash on the batch padded to the longest sequence.

Every implementation is checked first against an f32 reference on the same inputs (relative error,
outputs poisoned with NaN first), then timed with CUDA events: each call between its own pair of
events, the calls queued behind a spin kernel so the host's launch time stays out, median of the
runs after warm-up.

    python benchmarks/attention_serving.py --quick     # the three decode bar cases, < 1 min
    python benchmarks/attention_serving.py             # everything, tilec configs swept
    python benchmarks/attention_serving.py --out DIR   # JSON and table (default $OUT, else benchmarks/results)
    python benchmarks/attention_serving.py --dry-run   # list the cases (no GPU, no torch)
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLES = REPO / "examples"
sys.path.insert(0, str(REPO))                  # a script: the benchmarks package beside it
from benchmarks.timing import Timer as EventTimer  # noqa: E402

DECODE_BARS = [dict(B=16, H=32, HKV=8, S=4096, D=128, LQ=1), dict(B=4, H=32, HKV=8, S=16384, D=128, LQ=1),
               dict(B=64, H=32, HKV=8, S=1024, D=128, LQ=1)]
DECODE_EXTRA = [dict(B=16, H=32, HKV=8, S=4096, D=128, LQ=4)]
PAGED = [(0, 64), (1, 64), (2, 64), (0, 16), (0, 256)]          # (index into DECODE_BARS, page size)
VARLEN = [dict(B=16, H=32, HKV=8, D=128, max_len=4096, causal=c) for c in (False, True)]
# tilec decode configs (the first is the default); splits: the host heuristic, and in the full run also
# half and twice that
DECODE_CONFIGS = [dict(BN=64, STAGES=3), dict(BN=128, STAGES=2), dict(BN=64, STAGES=4), dict(BN=32, STAGES=4),
                  dict(BN=128, STAGES=3)]
SPLIT_FACTORS = (1.0, 0.5, 2.0)
VARLEN_CONFIGS = [dict(BM=64, BN=64, STAGES=2), dict(BM=128, BN=64, STAGES=2, num_warps=8),
                  dict(BM=128, BN=128, STAGES=2, num_warps=8)]
TOL = 2e-2                      # bf16 in and out, bf16 P: relative errors near 4e-3


def load_example(stem):
    name = f"tilec_gallery_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, str(EXAMPLES / f"{stem}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _err(e, limit=300):
    s = f"{type(e).__name__}: {e}".replace("\n", " ")
    return s if len(s) <= limit else s[:limit] + "..."


# ---------------------------------------------------------------------------------------- timing
class Timer:
    """GPU time of one call (the benchmark package's CUDA-event Timer: median of `reps` after `warmup`,
    launch overhead kept out and reported as host_us), in microseconds."""

    def __init__(self, torch, reps, warmup):
        self.t = EventTimer(torch, {"reps": reps, "warmup": warmup, "warm_s": 0.0})

    def __call__(self, fn):
        r = self.t.measure(lambda i: fn())
        return {"us": 1e3 * r["ms"], "min_us": 1e3 * r["min_ms"], "max_us": 1e3 * r["max_ms"],
                "reps": r["reps"], "host_us": r["host_us"]}


# ---------------------------------------------------------------------------------------- context
class Ctx:
    def __init__(self, args):
        import torch
        self.torch = torch
        self.args = args
        if not torch.cuda.is_available():
            raise SystemExit("torch.cuda.is_available() is False: this benchmark needs a GPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        self.timer = Timer(torch, reps=10 if args.quick else 30, warmup=3 if args.quick else 8)
        self.gen = torch.Generator(device="cuda")
        self.gen.manual_seed(args.seed)
        self.rows = []
        self.notes = []
        import tile
        from tile.runtime import cuda as tcuda
        from tile.runtime.device import DeviceArray
        self.tile, self.DeviceArray = tile, DeviceArray
        if not tcuda.available():
            raise SystemExit("tile.runtime.cuda is not available (driver / cuda-python)")
        dev = tcuda.device()
        self.num_sms = dev.sm_count
        os.environ.setdefault("TILEC_TARGET", dev.arch)
        self.meta = {"gpu": torch.cuda.get_device_name(), "arch": dev.arch, "sm_count": dev.sm_count,
                     "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                     "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                     "seed": args.seed, "mode": "quick" if args.quick else "full"}
        try:
            import subprocess
            self.meta["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                                 capture_output=True, text=True).stdout.strip()
        except Exception:                                        # noqa: BLE001
            pass
        try:
            import flash_attn
            from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache
            self.fa = dict(kvcache=flash_attn_with_kvcache, varlen=flash_attn_varlen_func,
                           version=flash_attn.__version__)
            self.meta["flash_attn"] = flash_attn.__version__
        except Exception as e:                                   # noqa: BLE001
            self.fa = None
            self.note(f"flash_attn is not importable here ({_err(e, 120)}): no flash_attn_with_kvcache / "
                      f"flash_attn_varlen_func rows")
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            self.sdpa = [("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION)]
            self.sdpa_kernel = sdpa_kernel
        except Exception as e:                                   # noqa: BLE001
            self.sdpa, self.sdpa_kernel = [], None
            self.note(f"torch.nn.attention.sdpa_kernel unavailable: {_err(e)}")

    def note(self, msg):
        print(f"note: {msg}", flush=True)
        self.notes.append(msg)

    def randn(self, *shape):
        return self.torch.randn(shape, device="cuda", dtype=self.torch.bfloat16, generator=self.gen)

    def dev(self, t, shape=None):
        """A tilec DeviceArray view of a torch CUDA tensor (no copy), optionally in another shape."""
        name = {"torch.bfloat16": "bf16", "torch.float32": "f32", "torch.int32": "i32"}[str(t.dtype)]
        if shape is None:
            return self.DeviceArray.from_pointer(t.data_ptr(), tuple(t.shape), name, strides=tuple(t.stride()), owner=t)
        assert t.is_contiguous()
        return self.DeviceArray.from_pointer(t.data_ptr(), tuple(shape), name, owner=t)

    def row(self, case, impl, rec, **extra):
        r = dict(case=case, impl=impl, **rec, **extra)
        self.rows.append(r)
        us = r.get("us")
        perf = ""
        if r.get("tbps"):
            perf = f"{r['tbps']:.2f} TB/s"
        elif r.get("tflops"):
            perf = f"{r['tflops']:.0f} TF/s"
        print(f"  {case:38s} {impl:26s} {r.get('status', ''):6s} "
              f"{(f'{us:9.1f} us' if us else ''):12s} {perf:11s} err {r.get('rel_err', float('nan')):.1e} "
              f"{r.get('config', '')} {r.get('error', '')}", flush=True)
        return r


def rel_err(torch, out, ref):
    o = out.float()
    if not bool(torch.isfinite(o).all()):
        return float("nan")
    return float(torch.linalg.vector_norm(o - ref) / torch.linalg.vector_norm(ref))


def measure(ctx, case, impl, fn, out, ref, nbytes=None, flops=None, **extra):
    """Poison out, run fn once, check against ref, then time it. Returns the row."""
    torch = ctx.torch
    rec = {"status": "ERROR"}
    try:
        if out is not None:
            out.fill_(float("nan"))
        res = fn()
        got = out if out is not None else res
        torch.cuda.synchronize()
        err = rel_err(torch, got if ref.shape == got.shape else got.reshape(ref.shape), ref)
        rec["rel_err"] = err
        if not err <= TOL:
            rec.update(status="FAIL", error=f"relative error {err:.2e} (NaN: unwritten or leaked)")
        else:
            t = ctx.timer(fn)
            rec.update(status="ok", **t)
            if nbytes:
                rec["tbps"] = nbytes / (t["us"] * 1e-6) / 1e12
            if flops:
                rec["tflops"] = flops / (t["us"] * 1e-6) / 1e12
    except Exception as e:                                       # noqa: BLE001
        rec.update(status="ERROR", error=_err(e))
        if ctx.args.verbose:
            traceback.print_exc()
    return ctx.row(case, impl, rec, **extra)


# ---------------------------------------------------------------------------------------- bandwidth
def bandwidth(ctx):
    torch = ctx.torch
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    src.random_(generator=ctx.gen)
    dst = torch.empty_like(src)
    t = ctx.timer(lambda: dst.copy_(src))
    copy = dict(status="ok", **t, tbps=2 * n / (t["us"] * 1e-6) / 1e12)
    ctx.row("bandwidth 1 GiB", "copy (read + write)", copy)
    x = src.view(torch.bfloat16)
    t = ctx.timer(lambda: torch.amax(x))
    ctx.row("bandwidth 1 GiB", "read (torch.amax)", dict(status="ok", **t, tbps=n / (t["us"] * 1e-6) / 1e12))
    return copy["tbps"]


# ---------------------------------------------------------------------------------------- decode
def decode_reference(torch, q, k, v, seqlens):
    """f32: q [B, H, LQ, D], k/v [B, HKV, S, D]; token i of sequence b sees positions < L_b - LQ + 1 + i."""
    B, H, LQ, D = q.shape
    HKV, S = k.shape[1], k.shape[2]
    G = H // HKV
    out = torch.empty((B, H, LQ, D), device="cuda", dtype=torch.float32)
    for b in range(B):
        qb = q[b].float().reshape(HKV, G * LQ, D)
        s = torch.matmul(qb, k[b].float().transpose(1, 2)) / math.sqrt(D)          # [HKV, G * LQ, S]
        lim = int(seqlens[b]) - LQ + 1 + torch.arange(LQ, device="cuda").repeat(G)  # per packed row
        s = s.masked_fill(torch.arange(S, device="cuda")[None, None, :] >= lim[None, :, None], float("-inf"))
        out[b] = torch.matmul(torch.softmax(s, -1), v[b].float()).reshape(H, LQ, D)
    return out


def tilec_decode(ctx, dec, q, K2, V2, seqlens, table, page, cfg, splits, S):
    """(launch, out, info) for one tilec decode config with buffers allocated once."""
    torch = ctx.torch
    B, H, LQ, D = q.shape
    HKV = K2.shape[1] // D if page else K2.shape[0] // (B * S)     # [P * PAGE, HKV * D] or [B * HKV * S, D]
    plan = dec.decode_plan(B, H, HKV, LQ, D, S, splits, cfg["BN"], cfg["STAGES"], ctx.num_sms)
    R, n = B * H * LQ, plan["splits"]
    out = torch.empty((R, D), device="cuda", dtype=torch.bfloat16)
    part = torch.empty((n, R, D) if n > 1 else (1, 1, D), device="cuda", dtype=torch.float32)
    lpart = torch.empty((n, R) if n > 1 else (1, 1), device="cuda", dtype=torch.float32)
    lse = torch.empty((R,), device="cuda", dtype=torch.float32)
    A = ctx.dev
    qa, ka, va, oa, pa, la, sa = A(q, (R, D)), A(K2), A(V2), A(out), A(part), A(lpart), A(lse)
    scalars = (1.0 / math.sqrt(D), plan["group"], LQ, plan["split_len"])
    grid, consts = plan["grid"], plan["consts"]
    cgrid = (-(-R // 16),)
    if page:
        ta, kern, extra = A(table), dec.paged_decode, dict(PAGE=page)
        head = (qa, ka, va, ta, A(seqlens))
    else:
        kern, extra = dec.flash_decode, {}
        head = (qa, ka, va, A(seqlens))

    def launch():
        kern[grid](*head, oa, pa, la, *scalars, **consts, **extra)
        if n > 1:
            dec.decode_combine[cgrid](pa, la, oa, sa, D=D)
        return out
    info = dict(config=dict(cfg, splits=n, split_len=plan["split_len"], BM=plan["BM"], grid=list(grid)))
    try:
        T = ctx.tile.Tensor
        sig = ([T[ctx.tile.bf16, 2]] * 3 + ([T[ctx.tile.i32, 2]] if page else []) + [T[ctx.tile.i32, 1], T[ctx.tile.bf16, 2],
               T[ctx.tile.f32, 3], T[ctx.tile.f32, 2], float, int, int, int])
        ck = kern.compile(*sig, **consts, **extra)
        info["ptxas"] = ck.artifact.extra.get("ptxas") if ck.artifact is not None else None
    except Exception as e:                                       # noqa: BLE001
        info["ptxas"] = f"compile report failed: {_err(e)}"
    return launch, out, info


def decode_configs(ctx, dec, B, H, HKV, S, D, LQ):
    cfgs = DECODE_CONFIGS[:1] if ctx.args.quick else DECODE_CONFIGS
    out = []
    for cfg in cfgs:
        base = dec.decode_plan(B, H, HKV, LQ, D, S, None, cfg["BN"], cfg["STAGES"], ctx.num_sms)["splits"]
        factors = (1.0,) if ctx.args.quick else SPLIT_FACTORS
        seen = set()
        for f in factors:
            s = max(1, int(round(base * f)))
            if s not in seen:
                seen.add(s)
                out.append((cfg, s, f == 1.0))
    return out


def decode_case(ctx, B, H, HKV, S, D, LQ, copy_tbps, pages=()):
    """Contiguous decode (tilec configs and peers), then the paged rows of the same data."""
    torch = ctx.torch
    dec = load_example("decode_attention")
    name = f"decode B{B} H{H} HKV{HKV} S{S} D{D}" + (f" LQ{LQ}" if LQ > 1 else "")
    print(name, flush=True)
    q, k, v = ctx.randn(B, H, LQ, D), ctx.randn(B, HKV, S, D), ctx.randn(B, HKV, S, D)
    seqlens = torch.full((B,), S, device="cuda", dtype=torch.int32)
    nbytes = 2 * B * HKV * S * D * 2
    ref = decode_reference(torch, q, k, v, seqlens.cpu())
    scale = 1.0 / math.sqrt(D)
    rows = {}
    F = torch.nn.functional
    if LQ == 1:
        for pname, be in ctx.sdpa:
            def sdpa(be=be):
                with ctx.sdpa_kernel([be]):
                    return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True)
            rows[pname] = measure(ctx, name, pname, sdpa, None, ref, nbytes=nbytes)
    else:
        ctx.note(f"{name}: no SDPA rows (its causal mask is aligned top-left, decode needs bottom-right)")
    if ctx.fa is not None:
        kT, vT = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()      # [B, S, HKV, D]
        qT = q.transpose(1, 2).contiguous()
        fa = ctx.fa["kvcache"]
        rows["flash_attn kvcache"] = measure(
            ctx, name, "flash_attn_with_kvcache",
            lambda: fa(qT, kT, vT, cache_seqlens=seqlens, softmax_scale=scale, causal=True).transpose(1, 2),
            None, ref, nbytes=nbytes)
    K2, V2 = k.view(B * HKV * S, D), v.view(B * HKV * S, D)
    best = None
    for cfg, splits, default in decode_configs(ctx, dec, B, H, HKV, S, D, LQ):
        try:
            launch, out, info = tilec_decode(ctx, dec, q, K2, V2, seqlens, None, 0, cfg, splits, S)
        except Exception as e:                                   # noqa: BLE001
            ctx.row(name, "tilec", dict(status="ERROR", error=_err(e)), config=dict(cfg, splits=splits))
            continue
        r = measure(ctx, name, "tilec" + (" (default)" if default and cfg is DECODE_CONFIGS[0] else ""),
                    launch, out, ref, nbytes=nbytes, **info)
        if r["status"] == "ok" and (best is None or r["us"] < best["us"]):
            best = r
    peers = [r for r in rows.values() if r["status"] == "ok"]
    summary = dict(case=name, kv_gb=nbytes / 1e9, copy_tbps=copy_tbps)
    if best:
        summary.update(tilec_us=best["us"], tilec_tbps=best["tbps"], tilec_config=best["config"],
                       tilec_vs_copy=best["tbps"] / copy_tbps if copy_tbps else None)
    if peers:
        bp = min(peers, key=lambda r: r["us"])
        summary.update(best_peer=bp["impl"], peer_us=bp["us"])
        if best:
            summary["ratio"] = bp["us"] / best["us"]
    ctx.summaries.append(summary)
    # paged rows: the same keys and values, paginated in random page order
    for page in pages:
        pname = f"paged{page} B{B} H{H} HKV{HKV} S{S} D{D}"
        print(pname, flush=True)
        npg = S // page
        P = B * npg
        perm = torch.randperm(P, device="cuda", generator=ctx.gen)
        table = perm.view(B, npg).to(torch.int32).contiguous()
        kp = torch.empty((P, page, HKV, D), device="cuda", dtype=torch.bfloat16)
        vp = torch.empty_like(kp)
        kp[perm] = k.transpose(1, 2).reshape(P, page, HKV, D)
        vp[perm] = v.transpose(1, 2).reshape(P, page, HKV, D)
        cfg = best["config"] if best else dict(DECODE_CONFIGS[0], splits=None)
        cfg_run = dict(BN=cfg["BN"], STAGES=cfg["STAGES"])
        if page % cfg_run["BN"] and cfg_run["BN"] % page:
            cfg_run = dict(DECODE_CONFIGS[0])
        try:
            launch, out, info = tilec_decode(ctx, dec, q, kp.view(P * page, HKV * D), vp.view(P * page, HKV * D),
                                             seqlens, table, page, cfg_run, cfg.get("splits"), S)
            r = measure(ctx, pname, "tilec paged", launch, out, ref, nbytes=nbytes, **info)
        except Exception as e:                                   # noqa: BLE001
            r = ctx.row(pname, "tilec paged", dict(status="ERROR", error=_err(e)))
        ps = dict(case=pname, kv_gb=nbytes / 1e9, copy_tbps=copy_tbps)
        if r.get("status") == "ok":
            ps.update(tilec_us=r["us"], tilec_tbps=r["tbps"], tilec_config=r["config"])
            if best:
                ps["paged_over_contiguous"] = r["us"] / best["us"]
        if ctx.fa is not None:
            try:
                fa = ctx.fa["kvcache"]
                qT = q.transpose(1, 2).contiguous()
                fr = measure(ctx, pname, "flash_attn_with_kvcache paged",
                             lambda: fa(qT, kp, vp, cache_seqlens=seqlens, block_table=table, softmax_scale=scale,
                                        causal=True).transpose(1, 2), None, ref, nbytes=nbytes)
                if fr["status"] == "ok":
                    ps.update(best_peer=fr["impl"], peer_us=fr["us"])
                    if r.get("status") == "ok":
                        ps["ratio"] = fr["us"] / r["us"]
            except Exception as e:                               # noqa: BLE001
                ctx.note(f"{pname}: flash_attn paged failed: {_err(e)}")
        ctx.summaries.append(ps)


# ---------------------------------------------------------------------------------------- varlen
def varlen_case(ctx, B, H, HKV, D, max_len, causal):
    torch = ctx.torch
    var = load_example("varlen_attention")
    name = f"varlen B{B} H{H} HKV{HKV} D{D} L<={max_len}" + (" causal" if causal else "")
    print(name, flush=True)
    g = torch.Generator().manual_seed(ctx.args.seed + 7)
    lens = torch.randint(1, max_len + 1, (B,), generator=g)
    lens[0], lens[1] = 1, max_len
    cu = torch.zeros(B + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(lens, 0)
    total = int(cu[-1])
    q, k, v = ctx.randn(total, H, D), ctx.randn(total, HKV, D), ctx.randn(total, HKV, D)
    cu_d = cu.cuda()
    flops = sum(4.0 * int(L) ** 2 * H * D for L in lens) * (0.5 if causal else 1.0)
    # f32 reference on a few sequences (the length-1 one, the longest, two others); outputs compared there
    check = [0, 1, 2, B - 1]
    refs = []
    for b in check:
        a, e = int(cu[b]), int(cu[b + 1])
        qb = q[a:e].float().transpose(0, 1)                          # [H, L, D]
        kb = k[a:e].float().transpose(0, 1).repeat_interleave(H // HKV, 0)
        vb = v[a:e].float().transpose(0, 1).repeat_interleave(H // HKV, 0)
        ob = torch.empty_like(qb)
        for h0 in range(0, H, 8):
            s = torch.matmul(qb[h0:h0 + 8], kb[h0:h0 + 8].transpose(1, 2)) / math.sqrt(D)
            if causal:
                s = s.masked_fill(torch.ones(e - a, e - a, device="cuda", dtype=torch.bool).triu(1), float("-inf"))
            ob[h0:h0 + 8] = torch.matmul(torch.softmax(s, -1), vb[h0:h0 + 8])
            del s
        refs.append(ob.transpose(0, 1))
    ref = torch.cat(refs)

    def pick(o):                                                     # the checked sequences' rows of o [total, H, D]
        return torch.cat([o[int(cu[b]):int(cu[b + 1])] for b in check])

    def run_row(impl, fn, out=None, **extra):
        """fn() -> [total, H, D]; checked on the picked rows, then timed."""
        rec = {"status": "ERROR"}
        try:
            if out is not None:
                out.fill_(float("nan"))
            o = fn()
            torch.cuda.synchronize()
            err = rel_err(torch, pick(o), ref)
            rec["rel_err"] = err
            if not err <= TOL:
                rec.update(status="FAIL", error=f"relative error {err:.2e}")
            else:
                t = ctx.timer(fn)
                rec.update(status="ok", **t, tflops=flops / (t["us"] * 1e-6) / 1e12)
        except Exception as e:                                       # noqa: BLE001
            rec.update(status="ERROR", error=_err(e))
            if ctx.args.verbose:
                traceback.print_exc()
        return ctx.row(name, impl, rec, **extra)

    peers = []
    scale = 1.0 / math.sqrt(D)
    if ctx.fa is not None:
        fav = ctx.fa["varlen"]
        peers.append(run_row("flash_attn_varlen_func", lambda: fav(q, k, v, cu_d, cu_d, max_len, max_len,
                                                                   softmax_scale=scale, causal=causal)))
    F = torch.nn.functional
    from torch.nn.attention import SDPBackend
    try:
        offs = cu_d.to(torch.int64)
        rep = H // HKV
        kr, vr = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)   # (NJT: no GQA; outside the timing)
        qn = torch.nested.nested_tensor_from_jagged(q, offs).transpose(1, 2)
        kn = torch.nested.nested_tensor_from_jagged(kr, offs).transpose(1, 2)
        vn = torch.nested.nested_tensor_from_jagged(vr, offs).transpose(1, 2)

        def njt():
            with ctx.sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                return F.scaled_dot_product_attention(qn, kn, vn, is_causal=causal, scale=scale).transpose(1, 2).values()
        peers.append(run_row("sdpa-flash nested (jagged)", njt))
    except Exception as e:                                           # noqa: BLE001
        ctx.note(f"{name}: SDPA on a nested tensor unavailable: {_err(e)}")
    if causal:
        Lm = int(lens.max())
        pad = lambda x: torch.nn.utils.rnn.pad_sequence(                                    # noqa: E731
            [x[int(cu[b]):int(cu[b + 1])] for b in range(B)], batch_first=True).transpose(1, 2).contiguous()
        qp, kp, vp = pad(q), pad(k), pad(v)
        assert qp.shape[2] == Lm

        def padded():
            with ctx.sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                o = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, scale=scale, enable_gqa=True)
            return o

        def padded_packed():
            o = padded().transpose(1, 2)
            return torch.cat([o[b, :int(lens[b])] for b in range(B)])
        # timed without the unpadding (the kernel alone); checked with it
        r = run_row("sdpa-flash padded batch", padded_packed)
        if r["status"] == "ok":
            t = ctx.timer(padded)
            r.update(us=t["us"], tflops=flops / (t["us"] * 1e-6) / 1e12, note="timed without the unpadding copy")
        peers.append(r)
    best = None
    for cfg in (VARLEN_CONFIGS[:1] if ctx.args.quick else VARLEN_CONFIGS):
        out = torch.empty((total, H * D), device="cuda", dtype=torch.bfloat16)
        A = ctx.dev
        args = (A(q, (total, H * D)), A(k, (total, HKV * D)), A(v, (total, HKV * D)), A(cu_d), A(out))
        grid = (-(-max_len // cfg["BM"]), H, B)

        def launch(cfg=cfg, args=args, grid=grid, out=out):
            var.varlen_attention[grid](*args, scale, D=D, CAUSAL=causal, **cfg)
            return out.view(total, H, D)
        r = run_row("tilec", launch, out, config=dict(cfg))
        if r["status"] == "ok" and (best is None or r["us"] < best["us"]):
            best = r
    ok = [p for p in peers if p["status"] == "ok"]
    s = dict(case=name, tflop=flops / 1e12)
    if best:
        s.update(tilec_us=best["us"], tilec_tflops=best["tflops"], tilec_config=best["config"])
    if ok:
        bp = min(ok, key=lambda r: r["us"])
        s.update(best_peer=bp["impl"], peer_us=bp["us"])
        if best:
            s["ratio"] = bp["us"] / best["us"]
    ctx.summaries.append(s)


# ---------------------------------------------------------------------------------------- main
def cases(quick):
    out = [("decode", dict(c, pages=())) for c in DECODE_BARS]
    if quick:
        return out
    out = [("decode", dict(c, pages=tuple(p for i, p in PAGED if i == j))) for j, c in enumerate(DECODE_BARS)]
    out += [("decode", dict(c, pages=())) for c in DECODE_EXTRA]
    out += [("varlen", c) for c in VARLEN]
    return out


def table(ctx):
    lines = ["| case | tilec µs | TB/s or TF/s | tilec config | best peer | peer µs | ratio (peer/tilec) | note |",
             "|---|---|---|---|---|---|---|---|"]
    for s in ctx.summaries:
        perf = ""
        if s.get("tilec_tbps"):
            perf = f"{s['tilec_tbps']:.2f} TB/s ({s['tilec_tbps'] / s['copy_tbps']:.2f}x copy)" if s.get("copy_tbps") \
                else f"{s['tilec_tbps']:.2f} TB/s"
        elif s.get("tilec_tflops"):
            perf = f"{s['tilec_tflops']:.0f} TF/s"
        note = f"paged/contiguous {s['paged_over_contiguous']:.3f}" if s.get("paged_over_contiguous") else ""
        cfg = s.get("tilec_config") or {}
        cfg = ",".join(f"{k}={v}" for k, v in cfg.items() if k not in ("grid",))
        lines.append(f"| {s['case']} | {s.get('tilec_us', float('nan')):.1f} | {perf} | {cfg} | "
                     f"{s.get('best_peer', '-')} | {s.get('peer_us', float('nan')):.1f} | "
                     f"{s.get('ratio', float('nan')):.3f} | {note} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the three decode bar cases, default config (< 1 min)")
    ap.add_argument("--out", default=None, help="folder for the JSON and the table (default $OUT, else benchmarks/results)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--dry-run", action="store_true", help="list the cases and exit (no GPU needed)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = int(time.time()) % 100000
    if args.dry_run:
        for fam, c in cases(args.quick):
            print(fam, c)
        return 0
    t0 = time.time()
    ctx = Ctx(args)
    ctx.summaries = []
    print(f"{ctx.meta['gpu']} ({ctx.meta['sm_count']} SMs), torch {ctx.meta['torch']}, seed {args.seed}", flush=True)
    copy_tbps = bandwidth(ctx)
    ctx.torch.cuda.empty_cache()
    ctx.meta["copy_tbps"] = copy_tbps
    for fam, c in cases(args.quick):
        try:
            if fam == "decode":
                decode_case(ctx, c["B"], c["H"], c["HKV"], c["S"], c["D"], c["LQ"], copy_tbps, c["pages"])
            else:
                varlen_case(ctx, **c)
        except Exception as e:                                   # noqa: BLE001
            ctx.note(f"{fam} {c}: {_err(e, 600)}")
            if args.verbose:
                traceback.print_exc()
        ctx.torch.cuda.empty_cache()
    ctx.meta["seconds"] = round(time.time() - t0, 1)
    out = Path(args.out or os.environ.get("OUT") or HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = out / f"attention-serving-{stamp}-{'quick' if args.quick else 'full'}"
    tab = table(ctx)
    base.with_suffix(".json").write_text(json.dumps(dict(meta=ctx.meta, notes=ctx.notes, summaries=ctx.summaries,
                                                         rows=ctx.rows), indent=1, default=str))
    base.with_suffix(".txt").write_text(tab + "\n")
    print(f"\ncopy bandwidth {copy_tbps:.2f} TB/s; {ctx.meta['seconds']} s; results in {base}.json")
    for n in ctx.notes:
        print(f"note: {n}")
    print(tab)
    return 0


if __name__ == "__main__":
    sys.exit(main())
