#!/usr/bin/env python3
"""Run gallery kernels once each at small ragged shapes (for compute-sanitizer; scripts/sanitize.sh).

    python3 scripts/sanitize_gallery.py [gemm|attention|lowbit_gemm|moe ...]

Each example's own run() (fresh random inputs, poisoned outputs, its float64 check). Exit 1 if one fails.
"""
import importlib.util
import os
import sys

EX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
RUNS = {
    "gemm": [dict(M=33, N=47, K=70, BM=64, BN=64, BK=32, act="gelu", with_bias=True),
             dict(M=1, N=5, K=17, BM=128, BN=128, BK=64, act="none", with_bias=False)],
    "attention": [dict(B=1, H=2, HKV=1, S=37, D=64, causal=True, BM=64, BN=64),
                  dict(B=1, H=2, HKV=2, S=70, D=128, causal=False, BM=64, BN=64)],
    "lowbit_gemm": [dict(M=5, N=64, K=128, wtype="int3", G=32), dict(M=9, N=40, K=64, wtype="f4e2m1", G=32)],
    "moe": [dict(T=19)],
}
TOL = {"gemm": 1e-2, "attention": 2e-2, "lowbit_gemm": 1e-2, "moe": 2e-2}


def main(names):
    bad = 0
    for name in names or list(RUNS):
        spec = importlib.util.spec_from_file_location(f"gallery_{name}", os.path.join(EX, f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for kw in RUNS[name]:
            try:
                r = mod.run(**kw)
                err = r[0] if isinstance(r, tuple) else r
                ok = err < TOL[name]
                print(f"{name} {kw}: relative error {err:.2e} {'ok' if ok else 'TOO LARGE'}", flush=True)
            except Exception as e:          # noqa: BLE001
                ok = False
                print(f"{name} {kw}: {type(e).__name__}: {e}", flush=True)
            bad += not ok
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
