"""Family `gemm`: bf16 C = A @ B (f32 accumulation) -- tilec's examples/gemm.py (no bias, no
activation, scale 1) under @tile.autotune, beside cuBLAS (torch.matmul) and a tutorial-style Triton
kernel (best of its configs)."""
from __future__ import annotations

from . import peers
from .common import MODES, TOL, case, cdiv, gallery_kernel, load_gallery
from .tilec_side import tilec_tuned, tuning_configs

WEIGHT = 3.0
SHAPES = [(4096, 4096, 4096), (8192, 8192, 8192), (16, 4096, 4096), (128, 14336, 4096), (4096, 14336, 4096)]
SMOKE_SHAPES = [(256, 256, 256), (16, 512, 256)]


def configs(M) -> list:
    """tilec gemm configs (the kernel's constexprs), most promising first."""
    if M <= 64:
        return [dict(BM=64, BN=64, BK=64, STAGES=4), dict(BM=16, BN=128, BK=64, STAGES=4),
                dict(BM=64, BN=128, BK=128, STAGES=3)]
    if M <= 256:
        return [dict(BM=64, BN=128, BK=64, STAGES=4), dict(BM=128, BN=128, BK=64, STAGES=3),
                dict(BM=64, BN=64, BK=64, STAGES=4)]
    # measured order (H100, 4096^3, 2026-12-06, BENCHMARKS.md): persistent warp-specialized 128x256
    # first (719 TF/s), then warp-specialized, then the cp.async pipelines (128x128 s3: 626). Quick mode
    # tunes the first two. (128x256 on 4 warps spills 3.8 KB per thread on sm_90a: 8 warps.)
    return PERSISTENT_WS_CONFIGS + WS_CONFIGS + [
        dict(BM=128, BN=128, BK=64, STAGES=3), dict(BM=128, BN=256, BK=64, STAGES=3, num_warps=8),
        dict(BM=128, BN=128, BK=32, STAGES=4), dict(BM=64, BN=128, BK=64, STAGES=4),
        dict(BM=128, BN=128, BK=64, STAGES=4, PERSISTENT=True)]


# warp-specialized (Hopper; passes/warp_specialize.py): a TMA producer warpgroup beside num_warps / 4
# consumer warpgroups (elsewhere the loop keeps the cp.async pipeline, with a PerformanceWarning).
WS_CONFIGS = [dict(BM=128, BN=256, BK=64, STAGES=4, WS=True, num_warps=8),
              dict(BM=256, BN=128, BK=64, STAGES=4, WS=True, num_warps=8),
              dict(BM=128, BN=128, BK=64, STAGES=4, WS=True, num_warps=4)]
# persistent + warp-specialized (CUTLASS's "persistent warp-specialized" kernel): one block per SM
# looping over the tiles in grouped order; the producer issues the next tile's copies during this
# tile's epilogue. The ring lives through the epilogue (with the TMA store's 32 KB staging beside it).
# cluster=2: two blocks along M share each B tile through TMA multicast (CUTLASS's 2x1 cluster), halving
# B's L2 traffic. Measured (H100, 2026-12-06 04:47, BENCHMARKS.md): 8192^3 1.56 ms against 1.61 without,
# 4096^3 the same, 4096x14336x4096 0.74 ms against 0.67 -- so quick mode tunes both of the first two.
PERSISTENT_WS_CONFIGS = [dict(BM=128, BN=256, BK=64, STAGES=3, WS=True, PERSISTENT=True, num_warps=8, cluster=2),
                         dict(BM=128, BN=256, BK=64, STAGES=3, WS=True, PERSISTENT=True, num_warps=8),
                         dict(BM=256, BN=128, BK=64, STAGES=3, WS=True, PERSISTENT=True, num_warps=8, cluster=2),
                         dict(BM=128, BN=256, BK=64, STAGES=4, WS=True, PERSISTENT=True, num_warps=8, cluster=2),
                         dict(BM=128, BN=256, BK=64, STAGES=4, WS=True, PERSISTENT=True, num_warps=8),
                         dict(BM=256, BN=128, BK=64, STAGES=4, WS=True, PERSISTENT=True, num_warps=8),
                         dict(BM=256, BN=128, BK=64, STAGES=3, WS=True, PERSISTENT=True, num_warps=8),
                         dict(BM=128, BN=128, BK=64, STAGES=4, WS=True, PERSISTENT=True, num_warps=4)]


def cases(mode: str) -> list:
    ntri = MODES[mode]["triton_configs"]
    return [case("gemm", f"gemm/{M}x{N}x{K}", dict(M=M, N=N, K=K), configs(M), ["cublas", f"triton(best of {ntri})"])
            for M, N, K in (SMOKE_SHAPES if mode == "smoke" else SHAPES)]


def run(ctx) -> None:
    torch = ctx.torch
    for c in ctx.cases:
        if ctx.time_left() < 5:
            ctx.skip(c, "time budget")
            continue
        M, N, K = (c["params"][k] for k in ("M", "N", "K"))
        with ctx.case(c) as rec:
            flops = 2.0 * M * N * K
            nsets = ctx.nsets(2 * (M * K + K * N + M * N))
            rec.update(unit="TFLOP/s", flops=flops, nsets=nsets)
            A = [ctx.randn((M, K)) for _ in range(nsets)]
            B = [ctx.randn((K, N), scale=K ** -0.5) for _ in range(nsets)]
            C = [torch.empty((M, N), device="cuda", dtype=torch.bfloat16) for _ in range(nsets)]
            bias = torch.randn(N, device="cuda", dtype=torch.float32, generator=ctx.gen)
            ref = A[0].float() @ B[0].float()
            tol = TOL["gemm"]
            check = ctx.poisoned_check(C[0], ref)
            rec["peers"]["cublas"] = peers.run_impl(ctx, peers.cublas_matmul(torch, A, B, C), check, nsets, flops,
                                                    tol=tol)
            rec["peers"]["triton"] = peers.triton_matmul_best(ctx, A, B, C, check, nsets, flops, tol)
            rec["tilec"] = tilec_tuned(
                ctx, gallery_kernel("gemm"), tuning_configs(ctx, c["configs"]),
                lambda i, targ: (targ(A[i]), targ(B[i]), targ(C[i]), targ(bias), 1.0),
                lambda meta: load_gallery("gemm").grid(M, N, sms=ctx.props.multi_processor_count, **meta),
                check, nsets, outputs=["C"], flops=flops, tol=tol)
            if M <= 256:
                splitk_instead(ctx, rec, A, B, C, bias, check, nsets, flops, tol)


# split-K configs for skinny products (examples/gemm.py gemm_splitk): the 16-row tile runs mma.sync,
# the 64- and 128-row ones wgmma
SPLITK_CONFIGS = [dict(BM=16, BN=128, BK=64), dict(BM=64, BN=64, BK=64), dict(BM=64, BN=128, BK=64),
                  dict(BM=128, BN=128, BK=64)]


def splitk_instead(ctx, rec, A, B, C, bias, check, nsets, flops, tol) -> None:
    """Time the gallery's split-K GEMM (partials + reduce: two launches) for each config; the fastest
    correct one becomes tilec's result when it beats the one-launch kernel (kept as `tilec_1pass`)."""
    torch = ctx.torch
    gm = load_gallery("gemm")
    M, K = A[0].shape
    N = B[0].shape[1]
    tries = []
    for cfg in SPLITK_CONFIGS[:ctx.mode["tune_configs"] or None]:
        S = gm.split_k(M, N, K, cfg["BM"], cfg["BN"], cfg["BK"])
        part = torch.empty((S, M, N), device="cuda", dtype=torch.float32)
        grid, rgrid = (cdiv(M, cfg["BM"]), cdiv(N, cfg["BN"]), S), (cdiv(M, 16), cdiv(N, 128))

        def launch(i, cfg=cfg, part=part, grid=grid, rgrid=rgrid):
            gm.gemm_splitk[grid](A[i], B[i], part, STAGES=4, **cfg)
            gm.gemm_splitk_reduce[rgrid](part, C[i], bias, 1.0)
        r = peers.run_impl(ctx, launch, check, nsets, flops, tol=tol)
        r["config"] = dict(cfg, SPLIT=S)
        tries.append(r)
    ok = [r for r in tries if r["status"] == "ok"]
    rec["tilec_splitk"] = {"tried": tries}
    if not ok:
        return
    best = min(ok, key=lambda r: r["ms"])
    one = rec["tilec"]
    if one.get("status") != "ok" or best["ms"] < one["ms"]:
        rec["tilec_1pass"] = one
        rec["tilec"] = dict(best, note="split-K (2 launches)")
