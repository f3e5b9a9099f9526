"""Family `moe`: the grouped GEMMs of a top-k MoE layer -- tilec's `moe_up` (gathers token rows, gate
+ up GEMM, SwiGLU) and `moe_down` from examples/moe.py, beside torch._grouped_mm and a per-expert
loop of torch.matmul (which get their input already in expert order and do the GEMM only).

tilec's inputs depend on the row tile BM (the padded expert-sorted layout), so the configs are
autotuned per BM (one search per distinct BM, each on its own layout) and the fastest winner is
reported."""
from __future__ import annotations

import collections
import gc

from . import peers
from .common import TOL, case, cdiv, gallery_kernel
from .tilec_side import best_of, tilec_tuned, tuning_configs

WEIGHT = 2.0
CASES = [(16384, 64, 8, 2048, 1024), (16384, 128, 8, 4096, 1536)]     # T, E, top-k, d, h
SMOKE_CASES = [(256, 8, 2, 256, 128)]
UP_CONFIGS = [dict(BM=128, BN=64, BK=64), dict(BM=64, BN=128, BK=64), dict(BM=128, BN=128, BK=64)]
DOWN_CONFIGS = [dict(BM=128, BN=128, BK=64), dict(BM=64, BN=128, BK=64), dict(BM=128, BN=256, BK=64)]


def cases(mode: str) -> list:
    out = []
    for T, E, k, d, h in (SMOKE_CASES if mode == "smoke" else CASES):
        p = dict(T=T, E=E, topk=k, d=d, h=h)
        tag = f"T{T}-E{E}-k{k}-d{d}-h{h}"
        out.append(case("moe", f"moe_up/{tag}", dict(p, step="up"), UP_CONFIGS, ["grouped_mm", "loop"]))
        out.append(case("moe", f"moe_down/{tag}", dict(p, step="down"), DOWN_CONFIGS, ["grouped_mm", "loop"]))
    return out


def build(ctx, T, E, topk, d, h) -> dict:
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


def layout(torch, sh, E, BM) -> dict:
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


def by_bm(configs) -> dict:
    groups = collections.OrderedDict()
    for c in configs:
        groups.setdefault(c["BM"], []).append(c)
    return groups


def run(ctx) -> None:
    torch = ctx.torch
    groups = collections.OrderedDict()
    for c in ctx.cases:
        p = c["params"]
        groups.setdefault((p["T"], p["E"], p["topk"], p["d"], p["h"]), []).append(c)
    for (T, E, topk, d, h), gcases in groups.items():
        if ctx.time_left() < 8:
            for c in gcases:
                ctx.skip(c, "time budget")
            continue
        sh = None
        for c in gcases:
            with ctx.case(c) as rec:
                if sh is None:
                    sh = build(ctx, T, E, topk, d, h)
                (up if c["params"]["step"] == "up" else down)(ctx, c, rec, sh, E, d, h)
        sh = None
        gc.collect()
        torch.cuda.empty_cache()


def _masked_check(ctx, out, row_pos, ref):
    """check(fn): the padded output poisoned with NaN, fn(0), the real rows against ref."""
    torch = ctx.torch

    def check(fn):
        out.fill_(float("nan"))
        fn(0)
        torch.cuda.synchronize()
        return ctx.rel_err(out[row_pos], ref)
    return check


def up(ctx, c, rec, sh, E, d, h) -> None:
    torch = ctx.torch
    ntok = sh["ntok"]
    flops = 2.0 * ntok * d * (2 * h)
    rec.update(unit="TFLOP/s", flops=flops, nsets=1, real_rows=ntok)
    x, W1 = sh["x"], sh["W1"]
    ctx.l2_flush = 2 * (x.numel() + W1.numel() + ntok * 3 * h) < 3 * ctx.l2     # one input set: flush if it fits
    x_sorted = x[sh["tokens_sorted"]]
    ref_gu = torch.empty((ntok, 2 * h), device="cuda", dtype=torch.float32)
    peers.per_expert(sh["counts_list"], lambda e, s, t: torch.matmul(x_sorted[s:t].float(), W1[e].float(),
                                                                       out=ref_gu[s:t]))
    g, u = ref_gu[:, :h], ref_gu[:, h:]
    ref_h = g * torch.sigmoid(g) * u
    tol = TOL["moe"]
    peers.moe_peers(ctx, rec, x_sorted, W1, sh["offs"], sh["counts_list"], ref_gu, flops, tol)
    rec["peers"]["grouped_mm"]["note"] = "GEMM only: input pre-gathered by expert, no SwiGLU (tilec fuses both)"
    kern = gallery_kernel("moe_up")
    recs = []
    for BM, cfgs in by_bm(tuning_configs(ctx, c["configs"])).items():
        L = layout(torch, sh, E, BM)
        Hbuf = torch.empty((L["Pn"], h), device="cuda", dtype=torch.bfloat16)
        recs.append(tilec_tuned(
            ctx, kern, cfgs,
            lambda i, targ, L=L, Hbuf=Hbuf: (targ(x), targ(W1), targ(L["rows"]), targ(L["block_expert"]), targ(Hbuf)),
            lambda meta, L=L: (L["Pn"] // meta["BM"], cdiv(h, meta["BN"])),
            _masked_check(ctx, Hbuf, L["row_pos"], ref_h), 1, outputs=["Hbuf"], flops=flops, tol=tol,
            fixed=dict(F=h)))
    rec["tilec"] = best_of(recs)


def down(ctx, c, rec, sh, E, d, h) -> None:
    torch = ctx.torch
    ntok = sh["ntok"]
    flops = 2.0 * ntok * h * d
    rec.update(unit="TFLOP/s", flops=flops, nsets=1, real_rows=ntok)
    W2 = sh["W2"]
    ctx.l2_flush = 2 * (W2.numel() + ntok * (h + d)) < 3 * ctx.l2                 # one input set: flush if it fits
    h_sorted = ctx.randn((ntok, h))                        # the activations, already in expert order
    ref_y = torch.empty((ntok, d), device="cuda", dtype=torch.float32)
    peers.per_expert(sh["counts_list"], lambda e, s, t: torch.matmul(h_sorted[s:t].float(), W2[e].float(),
                                                                       out=ref_y[s:t]))
    tol = TOL["moe"]
    peers.moe_peers(ctx, rec, h_sorted, W2, sh["offs"], sh["counts_list"], ref_y, flops, tol)
    kern = gallery_kernel("moe_down")
    recs = []
    for BM, cfgs in by_bm(tuning_configs(ctx, c["configs"])).items():
        L = layout(torch, sh, E, BM)
        Hin = ctx.randn((L["Pn"], h))                      # padding rows random too (computed, not checked)
        Hin[L["row_pos"]] = h_sorted
        Ybuf = torch.empty((L["Pn"], d), device="cuda", dtype=torch.bfloat16)
        recs.append(tilec_tuned(
            ctx, kern, cfgs,
            lambda i, targ, L=L, Hin=Hin, Ybuf=Ybuf: (targ(Hin), targ(W2), targ(L["block_expert"]), targ(Ybuf)),
            lambda meta, L=L: (L["Pn"] // meta["BM"], cdiv(d, meta["BN"])),
            _masked_check(ctx, Ybuf, L["row_pos"], ref_y), 1, outputs=["Ybuf"], flops=flops, tol=tol))
    rec["tilec"] = best_of(recs)
