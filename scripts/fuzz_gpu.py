#!/usr/bin/env python3
"""Differential fuzzing on the GPU: random kernels (tests/fuzz) run on the GPU AND in the interpreter,
both checked op by op against the float64 / exact-integer model, and against each other bit for bit
on every exactly-specified op; plus random gallery configs on the GPU vs their float64 reference.

    python3 scripts/fuzz_gpu.py --cases 200 --seed 1 [--gallery 20] [--cpu]

--cpu: interpreter vs model only (no GPU needed; replays a seed printed by a failure).
Prints a summary table (cases, ops x values checked, mismatches by kind) and exits 1 on any mismatch.
"""
import argparse
import collections
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import fuzz  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="first seed (cases use seed, seed+1, ...)")
    ap.add_argument("--gallery", type=int, default=0, help="random gallery configs to run too")
    ap.add_argument("--cpu", action="store_true", help="interpreter only")
    ap.add_argument("--stop", action="store_true", help="stop at the first mismatch")
    a = ap.parse_args()
    arch = None
    if not a.cpu:
        from tile.kernel import gpu_arch
        arch = gpu_arch()
        if arch is None:
            sys.exit("no NVIDIA GPU found (use --cpu for the interpreter only)")
    rows = collections.OrderedDict()       # op -> [values checked, mismatching cases]
    failures = []
    t0 = time.time()
    for s in range(a.seed, a.seed + a.cases):
        case = fuzz.generate(s)
        try:
            cpu_trace, cpu_out = fuzz.run_case(case)
            if arch:
                gpu_trace, gpu_out = fuzz.run_case(case, target=arch)
                fuzz.compare_backends(case, gpu_trace, cpu_trace, gpu_out, cpu_out)
            bad = None
        except fuzz.FuzzMismatch as e:
            bad = str(e)
            failures.append((s, bad))
        except Exception:                                   # noqa: BLE001 - a crash is a finding too
            bad = f"[fuzz {case.describe()}] crashed:\n{traceback.format_exc()}"
            failures.append((s, bad))
        for n in case.nodes:
            key = f"{n.kind} {n.op} {n.dt}"
            r = rows.setdefault(key, [0, 0, 0])
            r[0] += 1
            r[1] += int(fuzz.np.prod(fuzz._buf_shape(case, n)))
            if bad and f"v{n.id} = {n.kind} {n.op} ({n.dt}" in bad:
                r[2] += 1
        if bad:
            print(bad.split("\n--- source")[0], flush=True)
            if a.stop:
                break
    g_fail = 0
    for s in range(a.seed, a.seed + a.gallery):
        try:
            which, kw, err = fuzz.run_gallery(s, target=arch or "cpu")
            print(f"gallery seed {s}: {which} {kw}: relative error {err:.2e}")
        except Exception as e:                              # noqa: BLE001
            g_fail += 1
            failures.append((s, str(e)))
            print(f"gallery seed {s}: {e}", flush=True)
    print(f"\n{'op':32s} {'uses':>6s} {'values':>10s} {'bad cases':>9s}")
    for k in sorted(rows):
        u, v, b = rows[k]
        print(f"{k:32s} {u:6d} {v:10d} {b:9d}")
    print(f"\n{a.cases} cases (seeds {a.seed}..{a.seed + a.cases - 1}) on {arch or 'interpreter only'}, "
          f"{sum(r[1] for r in rows.values())} values checked, {len(failures) - g_fail} failing cases; "
          f"{a.gallery} gallery configs, {g_fail} failing; {time.time() - t0:.0f} s")
    if failures:
        print("failing seeds:", " ".join(str(s) for s, _ in failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
