"""Family `attention`: bf16 forward attention -- tilec's examples/attention.py under @tile.autotune
(BM/BN/STAGES/OVERLAP, num_warps), beside F.scaled_dot_product_attention with the flash and the cuDNN
back ends."""
from __future__ import annotations

import math

from . import peers
from .common import TOL, case, cdiv, err_text, gallery_kernel
from .tilec_side import tilec_tuned, tuning_configs

WEIGHT = 2.0
CASES = [(8, 16, 2048, 128, False), (8, 16, 2048, 128, True), (2, 16, 8192, 128, False),
         (2, 16, 8192, 128, True), (8, 16, 2048, 64, False), (4, 16, 2048, 256, False)]  # B, H, S, D, causal
SMOKE_CASES = [(1, 2, 256, 64, False), (1, 2, 256, 128, True)]
# Measured order (H100, B8 H16 S2048 D128, 2026-12-06, BENCHMARKS.md): warp-specialized 128x128 first
# (398 TF/s, causal 309), then the 64x64 cp.async pipeline (363 / 297), then the rest. BM = 128 runs
# as two warpgroups of 64 rows (num_warps = 8; with 4 warps it spills). PINGPONG last: its turns were
# moved to FA3's window after that run (the softmax outside them; passes/pingpong.py) and have not
# run on a GPU since. Configs that do not fit a head dim (shared memory: D = 256 takes BN = 64,
# STAGES = 2) fail to compile there and are left out by the tuner. tests/test_attention_prefill.py
# checks ptxas.
CONFIGS = [dict(BM=128, BN=128, num_warps=8, WS=True), dict(BM=64, BN=64),
           dict(BM=128, BN=128, num_warps=8, WS=True, OVERLAP=True), dict(BM=128, BN=64, num_warps=8, WS=True),
           dict(BM=128, BN=128, num_warps=8), dict(BM=128, BN=64, num_warps=8, WS=True, OVERLAP=True),
           dict(BM=128, BN=128, num_warps=8, OVERLAP=True), dict(BM=128, BN=128, num_warps=8, STAGES=3),
           dict(BM=128, BN=64, num_warps=8), dict(BM=128, BN=64, num_warps=8, OVERLAP=True),
           dict(BM=128, BN=128, num_warps=8, WS=True, PINGPONG=True),
           dict(BM=128, BN=128, num_warps=8, WS=True, OVERLAP=True, PINGPONG=True),
           dict(BM=128, BN=64, num_warps=8, WS=True, OVERLAP=True, PINGPONG=True)]


def cases(mode: str) -> list:
    return [case("attention", f"attention/B{B}-H{H}-S{S}-D{D}{'-causal' if causal else ''}",
                 dict(B=B, H=H, S=S, D=D, causal=causal), CONFIGS, ["sdpa-flash", "sdpa-cudnn"])
            for B, H, S, D, causal in (SMOKE_CASES if mode == "smoke" else CASES)]


def reference(torch, q, k, v, causal, scale):
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


def run(ctx) -> None:
    torch = ctx.torch
    backends, sdpa_kernel = peers.sdpa_backends(ctx)
    for c in ctx.cases:
        if ctx.time_left() < 5:
            ctx.skip(c, "time budget")
            continue
        B, H, S, D, causal = (c["params"][k] for k in ("B", "H", "S", "D", "causal"))
        with ctx.case(c) as rec:
            flops = 4.0 * B * H * S * S * D * (0.5 if causal else 1.0)
            nsets = ctx.nsets(4 * B * H * S * D * 2)
            rec.update(unit="TFLOP/s", flops=flops, nsets=nsets)
            Q = [ctx.randn((B, H, S, D)) for _ in range(nsets)]
            Kt = [ctx.randn((B, H, S, D)) for _ in range(nsets)]
            V = [ctx.randn((B, H, S, D)) for _ in range(nsets)]
            O = [torch.empty((B, H, S, D), device="cuda", dtype=torch.bfloat16) for _ in range(nsets)]
            scale = 1.0 / math.sqrt(D)
            ref = reference(torch, Q[0], Kt[0], V[0], causal, scale)
            tol = TOL["attention"]
            for name, be in backends:
                try:
                    with sdpa_kernel([be]):
                        rec["peers"][name] = peers.run_impl(ctx, peers.sdpa(ctx, Q, Kt, V, causal),
                                                            ctx.returned_check(ref), nsets, flops, tol=tol)
                except Exception as e:                       # noqa: BLE001
                    rec["peers"][name] = {"status": "ERROR", "error": err_text(e)}
            rec["tilec"] = tilec_tuned(
                ctx, gallery_kernel("attention"), tuning_configs(ctx, c["configs"]),
                lambda i, targ: (targ(Q[i]), targ(Kt[i]), targ(V[i]), targ(O[i]), scale),
                lambda meta: (cdiv(S, meta["BM"]), B * H),
                ctx.poisoned_check(O[0], ref), nsets, outputs=["O"], flops=flops, tol=tol,
                fixed=dict(D=D, CAUSAL=causal))
