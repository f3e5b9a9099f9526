#!/usr/bin/env python3
"""tilec against the best library on the same GPU, in one run: GEMM, attention, MoE grouped GEMM,
low-bit GEMM, launch overhead and tilec's compile times. See benchmarks/README.md.

    python benchmarks/run.py                    # full run (< 9 min on an H100)
    python benchmarks/run.py --quick            # < 3 min
    python benchmarks/run.py --only gemm,attention --out /tmp/res
    python benchmarks/run.py --dry-run          # the cases, configs and peers (no GPU, no torch needed)
    python benchmarks/run.py --list             # family<TAB>case id, one per line (no GPU, no torch)

The parent process imports neither torch nor tilec: each family runs in a child process
(`--child FAMILY`) with its share of the time budget (benchmarks/parent.py).

A family is a module registered in FAMILIES below (name -> module path), with
    run(ctx)            in the child: measure ctx.cases, emit results (benchmarks/tilec_side.py: ctx)
    cases(mode)         optional: its cases (benchmarks/common.case); default one case named after it
    WEIGHT = 1.0        optional: its share of the time budget
    TORCH = True        optional: False for a family that needs no torch (ctx is then a BaseCtx)
Importing it must not import torch or tilec (the parent lists the cases). To add one, add a line
(or, for one run, TILEC_BENCH_FAMILIES="name=module.path").
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, "") and "benchmarks" not in sys.modules:
    # run as a script: load this folder as the package `benchmarks` by its path. Neither this folder
    # (its file names would shadow top-level modules) nor the repository root (its tile/ folder is not
    # the installed package: tile.ir etc. live beside it) goes on sys.path.
    import importlib.util
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if p != str(_here)]
    _spec = importlib.util.spec_from_file_location("benchmarks", _here / "__init__.py",
                                                   submodule_search_locations=[str(_here)])
    sys.modules["benchmarks"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["benchmarks"])

FAMILIES = {
    "compile": "benchmarks.compile_times",
    "gemm": "benchmarks.gemm",
    "attention": "benchmarks.attention",
    "moe": "benchmarks.moe",
    "lowbit": "benchmarks.lowbit_gemm",
    "launch": "benchmarks.launch",
    "gemm8": "benchmarks.gemm8",
}
# $TILEC_BENCH_FAMILIES="name=module.path,...": more families for this run, without editing this file
for _item in filter(None, (x.strip() for x in os.environ.get("TILEC_BENCH_FAMILIES", "").split(","))):
    _name, _, _mod = _item.partition("=")
    FAMILIES[_name.strip()] = _mod.strip()
ALIASES = {"attn": "attention", "lowbit_gemm": "lowbit", "w4a16": "lowbit", "grouped": "moe", "compile_time": "compile",
           "launch_overhead": "launch"}


def all_cases(mode: str) -> tuple[list, dict]:
    """(every family's cases in registry order, family -> weight)."""
    from benchmarks.child import family_cases, load_family
    cases, weights = [], {}
    for name in FAMILIES:
        mod = load_family(FAMILIES, name)
        weights[name] = float(getattr(mod, "WEIGHT", 1.0))
        cases += family_cases(mod, name, mode)
    return cases, weights


def select_cases(cases: list, only: str | None) -> list:
    """--only: comma-separated family names (or aliases) or case-id prefixes."""
    if not only:
        return cases
    toks = [ALIASES.get(t.strip(), t.strip()) for t in only.split(",") if t.strip()]
    return [c for c in cases if any(t == c["family"] or c["id"].startswith(t) for t in toks)]


def parse_args(argv=None):
    from benchmarks.common import MODES
    ap = argparse.ArgumentParser(description="tilec vs the best library on the same GPU (see benchmarks/README.md)")
    ap.add_argument("--quick", action="store_true", help="fewer configs and repetitions: < 3 minutes on an H100")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, ~1 minute: checks that every kernel and peer "
                                                         "runs and is right (timings mean little)")
    ap.add_argument("--only", help=f"comma-separated families ({', '.join(FAMILIES)}) or case-id prefixes "
                                   f"(e.g. gemm/4096x4096x4096, moe_up, lowbit/int4)")
    ap.add_argument("--out", help="output folder (default: $OUT if set, else benchmarks/results/)")
    ap.add_argument("--dry-run", action="store_true", help="list the cases, configs and peers and exit (no GPU, no torch)")
    ap.add_argument("--list", action="store_true", help="print 'family<TAB>case id' per case and exit (no GPU, no torch)")
    ap.add_argument("--budget", type=float, help="seconds for the whole run (default: 150 quick, 500 full, 100 smoke)")
    ap.add_argument("--seed", type=int, help="random seed (default: from the clock; recorded in the JSON)")
    ap.add_argument("--cache-dir", help="tilec cache dir for the benchmark families (default: a fresh temporary one; "
                                        "an existing one also keeps @tile.autotune's winners from earlier runs)")
    # internal: the child processes
    ap.add_argument("--tune-configs", type=int, metavar="N",
                    help="how many of each case's tilec configs @tile.autotune searches, 0 for all (default: 2 quick, "
                         "all full, 1 smoke); the full list of a case is in --dry-run")
    ap.add_argument("--configs", metavar="I,J,...",
                    help="search exactly these of each case's tilec configs (indices into its list, as --dry-run "
                         "shows them; indices past a case's list are skipped); overrides --tune-configs")
    ap.add_argument("--child", choices=sorted(FAMILIES), help=argparse.SUPPRESS)
    ap.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--results", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--cases", help=argparse.SUPPRESS)
    ap.add_argument("--attempt", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mode is None:
        args.mode = "smoke" if args.smoke else ("quick" if args.quick else "full")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compile_probe:
        from benchmarks.compile_times import probe
        return probe(args)
    if args.child:
        from benchmarks.child import run_child
        from benchmarks.common import MODES
        if args.seed is None:
            args.seed = 0
        if args.deadline is None:
            args.deadline = time.time() + MODES[args.mode]["budget"]
        return run_child(args, FAMILIES)
    cases, weights = all_cases(args.mode)
    cases = select_cases(cases, args.only)
    if not cases:
        print(f"no case matches --only {args.only!r}; families: {', '.join(FAMILIES)}")
        return 2
    from benchmarks import report
    if args.list:
        return report.list_cases(cases)
    if args.dry_run:
        return report.dry_run(cases, args.mode, weights)
    from benchmarks.parent import run_parent
    return run_parent(args, FAMILIES, cases, weights)


if __name__ == "__main__":
    sys.exit(main())
