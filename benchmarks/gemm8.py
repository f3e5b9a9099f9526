"""8-bit GEMM rows of benchmarks/run.py (family `gemm8`): tilec's examples/gemm8.py against cuBLAS.

* fp8 e4m3, per-tensor scales, bf16 out: `torch._scaled_mm(A, B, scale_a, scale_b,
  out_dtype=torch.bfloat16)` (its default, and with use_fast_accum=True: the best of both is the
  peer) against `gemm_fp8`, 4096^3 and 8192^3. B is the column-major [K, N] torch wants, i.e. a
  row-major Bt [N, K], which is what tilec's kernel reads (`.T` of a [BN, BK] tile).
* int8, i32 out: `torch._int_mm(A, B)` against `gemm_int8`, 4096^3, checked for exact equality.

tilec's configs are searched by @tile.autotune (benchmarks/tilec_side.py). Nothing here imports torch
or tile at import time (`run.py --dry-run` needs neither).
"""
from __future__ import annotations

from . import peers as P
from .common import TOL, case, cdiv, load_gallery
from .tilec_side import tilec_tuned, torch_to_device_array, tuning_configs
from .timing import rel_err

WEIGHT = 1.5

SHAPES = [("fp8", 4096, 4096, 4096), ("fp8", 8192, 8192, 8192), ("int8", 4096, 4096, 4096),
          ("fp8-rowcol", 4096, 4096, 4096), ("fp8-block", 4096, 4096, 4096)]
SMOKE_SHAPES = [("fp8", 256, 256, 256), ("int8", 256, 256, 256), ("fp8-block", 256, 256, 256)]
# tilec configs, most promising first (tests/test_mma8.py assembles each with ptxas: 0 spills)
CONFIGS = [dict(BM=128, BN=256, BK=128, STAGES=3, num_warps=8), dict(BM=128, BN=256, BK=64, STAGES=4, num_warps=8),
           dict(BM=128, BN=128, BK=128, STAGES=4, num_warps=4), dict(BM=128, BN=128, BK=64, STAGES=4, num_warps=4)]
# block scaling (SCALING="block") takes BK = BN = 128; two accumulators per thread, so 8 warps at BM = 128
BLOCK_CONFIGS = [dict(BM=128, BN=128, BK=128, STAGES=4, num_warps=8), dict(BM=64, BN=128, BK=128, STAGES=4, num_warps=4)]


def cases(mode: str) -> list:
    out = []
    for kind, M, N, K in (SMOKE_SHAPES if mode == "smoke" else SHAPES):
        fp8 = kind.startswith("fp8")
        peers = ["cublas-fp8", "cublas-fp8-fast-accum"] if fp8 else ["cublas-int8"]
        cid = f"gemm8/{kind}{'-e4m3' if kind == 'fp8' else ''}-{M}x{N}x{K}"       # (ids of the first rows kept)
        out.append(case("gemm8", cid, dict(kind=kind, M=M, N=N, K=K), BLOCK_CONFIGS if kind == "fp8-block" else CONFIGS,
                        peers))
    return out


def run(ctx) -> None:
    torch = ctx.torch
    for c in ctx.cases:
        if ctx.time_left() < 5:
            ctx.skip(c, "time budget")
            continue
        p = c["params"]
        with ctx.case(c) as rec:
            if p["kind"] == "int8":
                _int8(ctx, torch, c, rec, p["M"], p["N"], p["K"])
            else:
                _fp8(ctx, torch, c, rec, p["M"], p["N"], p["K"], p["kind"].partition("-")[2] or "tensor")


def _views(tensors, dtype, shape=None):
    """tile DeviceArray views (torch's DLPack has no fp8)."""
    return [torch_to_device_array(t, dtype, shape) for t in tensors]


def _fp8(ctx, torch, case, rec, M, N, K, scaling):
    """scaling "tensor": one scale per tensor; "rowcol": per row of A and per column of B (torch's
    row-wise `_scaled_mm`); "block": DeepGEMM's 1x128 (A) and 128x128 (B) blocks (torch's block-wise
    `_scaled_mm` where this torch and cuBLAS have it; otherwise the peer is reported unavailable)."""
    flops = 2.0 * M * N * K
    nsets = ctx.nsets(M * K + N * K + 2 * M * N)
    rec.update(unit="TFLOP/s", flops=flops, nsets=nsets)
    f8 = torch.float8_e4m3fn

    def quant(x, rows):                               # amax of each group -> 448
        if scaling == "tensor":
            s = (x.abs().amax().float() / 448.0).reshape(1, 1)
            full = s
        elif scaling == "rowcol":
            s = x.abs().amax(dim=1, keepdim=True).float().clamp_min(1e-12) / 448.0       # [R, 1]
            full = s
        else:                                         # [R/rows, K/128] blocks (shapes multiples of 128)
            R = x.shape[0]
            s = x.abs().reshape(R // rows, rows, K // 128, 128).amax(dim=(1, 3)).float().clamp_min(1e-12) / 448.0
            full = s.repeat_interleave(rows, 0).repeat_interleave(128, 1)
        return (x / full).to(f8), s
    A, SA, Bt, SB = [], [], [], []
    for _ in range(nsets):
        a, sa = quant(ctx.randn((M, K)), 1)
        bt, sb = quant(ctx.randn((N, K), scale=K ** -0.5), 128)
        A.append(a), SA.append(sa), Bt.append(bt), SB.append(sb)
    C = [torch.empty((M, N), device="cuda", dtype=torch.bfloat16) for _ in range(nsets)]
    if scaling == "block":
        ref = (A[0].float() * SA[0].repeat_interleave(128, 1)) @ (Bt[0].float() * SB[0].repeat_interleave(
            128, 0).repeat_interleave(128, 1)).t()
    else:
        ref = (A[0].float() @ Bt[0].float().t()) * SA[0] * SB[0].reshape(1, -1)
    tol = TOL["gemm"]

    def check(fn):
        C[0].fill_(float("nan"))
        fn(0)
        torch.cuda.synchronize()
        return rel_err(torch, C[0], ref)

    # torch's scale shapes: tensor () / (); row-wise [M, 1] / [1, N]; block-wise [M, K/128] / [K/128, N/128]
    ta = [s.reshape(()) if scaling == "tensor" else s for s in SA]
    tb = [s.reshape(()) if scaling == "tensor" else s.reshape(1, N) if scaling == "rowcol" else s.t()
          for s in SB]

    def scaled_mm(i, fast):
        C[i].copy_(torch._scaled_mm(A[i], Bt[i].t(), scale_a=ta[i], scale_b=tb[i], out_dtype=torch.bfloat16,
                                    use_fast_accum=fast))

    def scaled_mm_out(i, fast):
        torch._scaled_mm(A[i], Bt[i].t(), scale_a=ta[i], scale_b=tb[i], out_dtype=torch.bfloat16,
                         use_fast_accum=fast, out=C[i])
    try:                                             # the out= form where this torch has it (no copy)
        scaled_mm_out(0, False)
        mm = scaled_mm_out
    except Exception:                                # noqa: BLE001
        mm = scaled_mm
    peers = rec["peers"]
    peers["cublas-fp8"] = P.run_impl(ctx, lambda i: mm(i, False), check, nsets, flops, tol=tol)
    peers["cublas-fp8-fast-accum"] = P.run_impl(ctx, lambda i: mm(i, True), check, nsets, flops, tol=tol)
    if scaling == "tensor":
        sv = [_views((SA[i], SB[i]), "f32", (1,)) for i in range(nsets)]
    elif scaling == "rowcol":
        sv = [(_views((SA[i],), "f32", (M,))[0], _views((SB[i],), "f32", (N,))[0]) for i in range(nsets)]
    else:
        sv = [_views((SA[i].contiguous(), SB[i].contiguous()), "f32") for i in range(nsets)]
    views = [(*_views((A[i], Bt[i]), "f8e4m3fn"), *sv[i]) for i in range(nsets)]
    rec["tilec"] = tilec_tuned(
        ctx, load_gallery("gemm8").gemm_fp8, tuning_configs(ctx, [dict(c, SCALING=scaling) for c in case["configs"]]),
        lambda i, targ: (views[i][0], views[i][1], targ(C[i]), views[i][2], views[i][3]),
        lambda meta: (cdiv(M, meta["BM"]), cdiv(N, meta["BN"])), check, nsets, outputs=["C"], flops=flops, tol=tol)


def _int8(ctx, torch, case, rec, M, N, K):
    flops = 2.0 * M * N * K
    nsets = ctx.nsets(M * K + N * K + 4 * M * N)
    rec.update(unit="TOP/s", flops=flops, nsets=nsets)

    def rnd(shape):
        return torch.randint(-128, 128, shape, device="cuda", dtype=torch.int8, generator=ctx.gen)
    A = [rnd((M, K)) for _ in range(nsets)]
    Bt = [rnd((N, K)) for _ in range(nsets)]
    C = [torch.empty((M, N), device="cuda", dtype=torch.int32) for _ in range(nsets)]
    ref = (A[0].double() @ Bt[0].double().t())                # exact: |sum| < 2**53

    def check(fn):
        C[0].fill_(-(2 ** 31))
        fn(0)
        torch.cuda.synchronize()
        wrong = int((C[0].double() != ref).sum().item())
        return wrong / ref.numel(), True                     # the fraction of wrong elements: must be 0

    def int_mm(i):
        torch._int_mm(A[i], Bt[i].t(), out=C[i])
    peers = rec["peers"]
    peers["cublas-int8"] = P.run_impl(ctx, int_mm, check, nsets, flops, tol=0.0)
    rec["tilec"] = tilec_tuned(
        ctx, load_gallery("gemm8").gemm_int8, tuning_configs(ctx, case["configs"]),
        lambda i, targ: (targ(A[i]), targ(Bt[i]), targ(C[i])),
        lambda meta: (cdiv(M, meta["BM"]), cdiv(N, meta["BN"])), check, nsets, outputs=["C"], flops=flops, tol=0.0)
