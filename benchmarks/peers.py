"""The peers tilec is measured against, and the one way every implementation is measured
(`run_impl`: correct first, on a NaN-poisoned output; then timed). torch is reached through the
child's context (`ctx.torch`); Triton is imported only where a family asks for it.

    cuBLAS        torch.matmul / F.linear (fp16)              gemm, lowbit
    Triton        triton_peers.matmul, best of N configs      gemm
    SDPA          flash and cuDNN back ends                   attention
    grouped GEMM  torch._grouped_mm, a per-expert loop         moe
    tinygemm      torch._weight_int4pack_mm                   lowbit (int4)
"""
from __future__ import annotations

import sys

from .common import HERE, err_text, load_module


def run_impl(ctx, fn, check, nsets, flops=None, nbytes=None, tol=1e-2) -> dict:
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
        t = ctx.timer.measure(fn, nsets, max_s=ctx.measure_budget(), flush=ctx.flush_for(nsets))
        r.update(status="ok", ms=t["ms"], timing=t)
        if flops:
            r["tflops"] = flops / t["ms"] / 1e9
        if nbytes:
            r["tbps"] = nbytes / t["ms"] / 1e9
    except Exception as e:                                   # noqa: BLE001
        r.update(status="ERROR", error=err_text(e))
    return r


# ------------------------------------------------------------------------------------- GEMM
def cublas_matmul(torch, A, B, C):
    return lambda i: torch.matmul(A[i], B[i], out=C[i])


def load_triton_peers():
    """(benchmarks/triton_peers.py as a module, None) or (None, why not)."""
    try:
        return sys.modules.get("tilec_bench_triton_peers") or load_module(HERE / "triton_peers.py",
                                                                          "tilec_bench_triton_peers"), None
    except Exception as e:                                   # noqa: BLE001
        sys.modules.pop("tilec_bench_triton_peers", None)
        return None, f"triton peer unavailable: {err_text(e)}"


def triton_matmul_best(ctx, A, B, C, check, nsets, flops, tol) -> dict:
    """The fastest passing of the first `triton_configs` Triton configs, with every try recorded."""
    tp, why = load_triton_peers()
    if tp is None:
        return {"status": "ERROR", "error": why}
    tries = []
    for cfg in tp.CONFIGS[:ctx.mode["triton_configs"]]:
        r = run_impl(ctx, lambda i, cfg=cfg: tp.matmul(A[i], B[i], C[i], cfg), check, nsets, flops, tol=tol)
        r["config"] = tp.config_name(cfg)
        tries.append(r)
    ok = [r for r in tries if r["status"] == "ok"]
    best = dict(min(ok, key=lambda r: r["ms"]) if ok else tries[0])
    best["tried"] = [{k: r.get(k) for k in ("config", "status", "ms", "tflops", "error")} for r in tries]
    return best


# -------------------------------------------------------------------------------- attention
def sdpa_backends(ctx):
    """([(peer name, SDPBackend)], sdpa_kernel) -- empty where this torch has no sdpa_kernel."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return [("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION)], sdpa_kernel
    except Exception as e:                                   # noqa: BLE001
        ctx.note(f"torch.nn.attention.sdpa_kernel unavailable: {err_text(e)}")
        return [], None


def sdpa(ctx, Q, K, V, causal):
    F = ctx.torch.nn.functional
    return lambda i: F.scaled_dot_product_attention(Q[i], K[i], V[i], is_causal=causal)


# --------------------------------------------------------------------------------------- MoE
def grouped_mm_fn(torch):
    return getattr(torch, "_grouped_mm", None) or getattr(torch.nn.functional, "grouped_mm", None)


def per_expert(counts_list, fn):
    """fn(expert, start row, end row) for each expert with rows, in expert order."""
    s = 0
    for e, c in enumerate(counts_list):
        if c:
            fn(e, s, s + c)
        s += c


def moe_peers(ctx, rec, x_sorted, W, offs, counts_list, ref, flops, tol) -> None:
    """torch._grouped_mm (2-D x 3-D with offs) and a per-expert loop of torch.matmul, on input already
    in expert order (the GEMM only)."""
    torch = ctx.torch
    gmm = grouped_mm_fn(torch)
    out = torch.empty((x_sorted.shape[0], W.shape[2]), device="cuda", dtype=torch.bfloat16)

    def check(fn):
        o = fn(0)
        torch.cuda.synchronize()
        return ctx.rel_err(o, ref)

    if gmm is None:
        rec["peers"]["grouped_mm"] = {"status": "ERROR", "error": "torch._grouped_mm is not in this torch"}
    else:
        rec["peers"]["grouped_mm"] = run_impl(ctx, lambda i: gmm(x_sorted, W, offs=offs), check, 1, flops, tol=tol)

    def loop(i):
        per_expert(counts_list, lambda e, s, t: torch.matmul(x_sorted[s:t], W[e], out=out[s:t]))
        return out
    rec["peers"]["loop"] = run_impl(ctx, loop, check, 1, flops, tol=tol)


# ------------------------------------------------------------------------------------ low-bit
def cublas_fp16_linear(ctx, X16, W16):
    F = ctx.torch.nn.functional
    return lambda i: F.linear(X16[i], W16[i])


def tinygemm_pack(torch, q_nk, S, G, high_first=True):
    """torch's int4 packing ([N, K/2] nibble pairs -> _convert_weight_to_int4pack) and its
    (scale, zero) pairs in bf16."""
    hi, lo = (q_nk[:, ::2], q_nk[:, 1::2]) if high_first else (q_nk[:, 1::2], q_nk[:, ::2])
    w = ((hi << 4) | lo).to(torch.uint8)
    wpk = torch._convert_weight_to_int4pack(w, 8)
    sz = torch.stack([S, torch.zeros_like(S)], dim=-1).to(torch.bfloat16).contiguous()
    return wpk, sz


def tinygemm_int4(ctx, X, W, G, check, nsets, nbytes, tol, nibble_order=None):
    """torch._weight_int4pack_mm: both nibble orders are tried until one passes (torch versions
    differ); returns (record, the order that passed or None)."""
    torch = ctx.torch
    r = None
    for hf in ((True, False) if nibble_order is None else (nibble_order,)):
        try:
            pk = [tinygemm_pack(torch, st["q_nk"], st["S"], G, hf) for st in W]
            r = run_impl(ctx, lambda i: torch._weight_int4pack_mm(X[i], pk[i][0], G, pk[i][1]), check, nsets,
                         nbytes=nbytes, tol=tol)
        except Exception as e:                               # noqa: BLE001
            r = {"status": "ERROR", "error": err_text(e)}
        if r["status"] == "ok":
            r["nibble_order"] = "high-first" if hf else "low-first"
            return r, hf
    return r, None
