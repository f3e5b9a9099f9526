"""Family `lowbit`: Y = X @ dequant(W), group 128, small M (decode) -- tilec's examples/lowbit_gemm.py
(int4 / int3 / f4e2m1 weights, packed densely) under @tile.autotune, beside fp16 cuBLAS (F.linear)
on the dequantized dense weights and, for int4, PyTorch's tinygemm (torch._weight_int4pack_mm).

Weights go to tilec as DeviceArray views of a torch uint8 buffer (torch has no packed int3/int4),
packed here exactly as `tile.from_codes` packs (checked at run time)."""
from __future__ import annotations

import collections
import gc

from . import peers
from .common import MODES, TOL, case, cdiv, gallery_kernel
from .tilec_side import tilec_tuned, torch_to_device_array, tuning_configs

WEIGHT = 2.0
MS = (1, 4, 16)
NK = ((14336, 4096), (4096, 4096))
SMOKE_MS, SMOKE_NK = (1, 16), ((512, 512),)
G = 128
# at M <= 16 each block's K loop runs at ~1.5 us per stage whatever its width (H100, 2026-11-24: BN=32
# beat BN=64 for int4 at both N and for int3 at N=4096; 8 warps per block did not help): more blocks pay
CONFIGS = [dict(BM=16, BN=32, BK=128), dict(BM=16, BN=64, BK=128), dict(BM=16, BN=128, BK=64),
           dict(BM=16, BN=64, BK=64)]
ZERO = {"int4": 0.0, "int3": 0.0, "f4e2m1": 0.0}
_F4E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def cases(mode: str) -> list:
    smoke = mode == "smoke"
    out = []
    for wt in MODES[mode]["lowbit_wtypes"]:
        for N, K in (SMOKE_NK if smoke else NK):
            for M in (SMOKE_MS if smoke else MS):
                out.append(case("lowbit", f"lowbit/{wt}-M{M}-N{N}-K{K}", dict(M=M, N=N, K=K, wtype=wt, G=G), CONFIGS,
                                ["cublas-fp16"] + (["tinygemm-int4"] if wt == "int4" else [])))
    return out


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


def weights(ctx, wtype, N, K, nsets):
    """nsets random weight sets: packed codes, scales, the f32 dequantized weights (set 0 only), fp16
    [N, K] dense weights for cuBLAS, and tinygemm's int4 codes (int4 only)."""
    torch = ctx.torch
    bits, vals = code_values(ctx, wtype)
    lut = torch.tensor(vals, device="cuda", dtype=torch.float32)
    zero = ZERO.get(wtype, 0.0)
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


def run(ctx) -> None:
    torch = ctx.torch
    groups = collections.OrderedDict()
    for c in ctx.cases:
        p = c["params"]
        groups.setdefault((p["wtype"], p["N"], p["K"]), []).append(c)
    for (wtype, N, K), gcases in groups.items():
        if ctx.time_left() < 6:
            for c in gcases:
                ctx.skip(c, "time budget")
            continue
        st = {}                                          # this group's weights, made by its first case
        for c in gcases:
            if ctx.time_left() < 4:
                ctx.skip(c, "time budget")
                continue
            with ctx.case(c) as rec:
                one(ctx, c, rec, st, wtype, N, K)
        st.clear()                                       # free this group's weights
        gc.collect()
        torch.cuda.empty_cache()


def one(ctx, c, rec, st, wtype, N, K) -> None:
    torch = ctx.torch
    M = c["params"]["M"]
    if not st:
        bits = code_values(ctx, wtype)[0]
        st["bits"], st["W"] = weights(ctx, wtype, N, K, ctx.nsets(K * N * bits // 8 + (K // G) * N * 4))
        st["pack_err"] = None
        if ctx.tile is not None:                         # our packer must agree with tilec's
            W0 = st["W"][0]
            ref_bytes = ctx.tile.from_codes(W0["codes_head"].numpy(), wtype, (64,)).data
            got = W0["packed"][:64 * bits // 8].cpu().numpy()
            if ref_bytes.tobytes() != got.tobytes():
                st["pack_err"] = "the benchmark's packer disagrees with tile.from_codes"
        st["nibbles"] = None
    bits, W = st["bits"], st["W"]
    nsets = len(W)
    wbytes = K * N * bits // 8 + (K // G) * N * 4
    rec.update(unit="us", flops=2.0 * M * N * K, nsets=nsets, weight_bytes=wbytes, fp16_weight_bytes=K * N * 2)
    X = [ctx.randn((M, K)) for _ in range(nsets)]
    X16 = [x.half() for x in X]
    Y = [torch.empty((M, N), device="cuda", dtype=torch.bfloat16) for _ in range(nsets)]
    ref = X[0].float() @ W[0]["wdeq"]
    tol = TOL["lowbit"]
    check_peer = ctx.returned_check(ref)
    rec["peers"]["cublas-fp16"] = peers.run_impl(ctx, peers.cublas_fp16_linear(ctx, X16, [w["W16"] for w in W]),
                                                 check_peer, nsets, nbytes=K * N * 2, tol=tol)
    if wtype == "int4":
        r, st["nibbles"] = peers.tinygemm_int4(ctx, X, W, G, check_peer, nsets, K * N // 2 + (K // G) * N * 4, tol,
                                               st["nibbles"])
        rec["peers"]["tinygemm-int4"] = r
    if st["pack_err"]:
        rec["tilec"] = {"status": "ERROR", "error": st["pack_err"]}
        return
    Wd = [torch_to_device_array(w["packed"], dtype=wtype, shape=(K, N)) for w in W]
    rec["tilec"] = tilec_tuned(
        ctx, gallery_kernel("lowbit_gemm"), tuning_configs(ctx, c["configs"]),
        lambda i, targ: (targ(X[i]), Wd[i], targ(W[i]["S"]), targ(Y[i])),
        lambda meta: (cdiv(M, meta["BM"]), cdiv(N, meta["BN"])),
        ctx.poisoned_check(Y[0], ref), nsets, outputs=["Y"], nbytes=wbytes, tol=tol,
        fixed=dict(G=G, ZERO=ZERO.get(wtype, 0.0)))
