"""Compile every tilec config the benchmarks may time for sm_90a and print ptxas's report per config:
registers, spill bytes, stack, and whether ptxas serialized the wgmmas (C7512 / C7515). No GPU needed
(ptxas on PATH). A config that spills is slow before it runs: fix its num_warps or tile here first.

    python scripts/spill_survey.py [gemm gemm8 attention moe]
"""
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tile                                                          # noqa: E402
from benchmarks import attention, gemm, gemm8, moe                   # noqa: E402
from benchmarks.common import gallery_kernel, kernel_sig, load_gallery   # noqa: E402
from tile.codegen import ptxas_report                                # noqa: E402


def report(ck) -> str:
    r = ptxas_report(ck)
    slow = " SERIALIZED-WGMMA" if any(c in r.get("log", "") for c in ("C7512", "C7515")) else ""
    bad = " <-- SPILLS" if r.get("spill_stores") or r.get("stack") else ""
    return f"regs {r.get('registers')} spill {r.get('spill_stores')} stack {r.get('stack')}{slow}{bad}"


def cases(families):
    T = tile.Tensor
    if "gemm" in families:
        seen = []
        for M in (16, 128, 4096):
            for c in gemm.configs(M):
                if c not in seen:
                    seen.append(c)
                    yield "gemm", gallery_kernel("gemm"), kernel_sig(tile, "gemm"), c
    if "gemm8" in families:
        g8 = load_gallery("gemm8")
        f8 = T[tile.f8e4m3fn, 2]
        for c in gemm8.CONFIGS:
            yield "gemm_fp8", g8.gemm_fp8, (f8, f8, T[tile.bf16, 2], T[tile.f32, 1], T[tile.f32, 1]), c
            yield "gemm_int8", g8.gemm_int8, (T[tile.i8, 2], T[tile.i8, 2], T[tile.i32, 2]), c
        for c in gemm8.BLOCK_CONFIGS:
            yield "gemm_fp8 block", g8.gemm_fp8, (f8, f8, T[tile.bf16, 2], T[tile.f32, 2], T[tile.f32, 2]), \
                dict(c, SCALING="block")
    if "attention" in families:
        for c in attention.CONFIGS:
            for D in (64, 128):
                yield f"attention D{D}", gallery_kernel("attention"), kernel_sig(tile, "attention"), dict(c, D=D)
    if "moe" in families:
        for c in moe.UP_CONFIGS + [moe.LAYER_CONFIG["up"]]:
            yield "moe_up", gallery_kernel("moe_up"), kernel_sig(tile, "moe_up"), dict(c, F=1024)
        for c in moe.DOWN_CONFIGS + [moe.LAYER_CONFIG["down"]]:
            yield "moe_down", gallery_kernel("moe_down"), kernel_sig(tile, "moe_down"), c


def main(argv):
    warnings.simplefilter("ignore")
    families = argv or ["gemm", "gemm8", "attention", "moe"]
    bad = 0
    for name, kern, sig, cfg in cases(families):
        try:
            line = report(kern.compile(*sig, target="sm_90a", **cfg))
        except tile.TileError as e:
            line = "does not compile: " + str(e).splitlines()[0][:160]
        bad += "SPILLS" in line or "SERIALIZED" in line
        print(f"{name:16s} {cfg}: {line}", flush=True)
    print(f"{bad} config(s) spill or serialize")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
