"""The verdict of scripts/bench_compare.sh: per case, tilec's best time of the old and of the new tree
(each the faster of its two runs), new/old, and a flag where the new one is more than 3% slower.
Usage: python scripts/bench_table.py OUTDIR"""
import glob
import json
import sys
from pathlib import Path


def best(out: Path, side: str) -> dict:
    times = {}
    for f in glob.glob(str(out / f"{side}*" / "tilec-bench-*.json")):
        doc = json.loads(Path(f).read_text())
        for c in doc.get("cases", []):
            t = c.get("tilec") or {}
            ms = t.get("ms")
            if ms is None:
                oks = [x["ms"] for x in t.get("configs", []) if x.get("status") == "ok" and x.get("ms")]
                ms = min(oks) if oks else None
            if ms is not None:
                times[c["id"]] = min(ms, times.get(c["id"], float("inf")))
    return times


def main(out: str) -> int:
    out = Path(out)
    old, new = best(out, "old"), best(out, "new")
    worst = 0.0
    print(f"{'case':<34} {'old ms':>9} {'new ms':>9} {'new/old':>8}")
    for cid in sorted(set(old) | set(new)):
        o, n = old.get(cid), new.get(cid)
        if o is None or n is None:
            print(f"{cid:<34} {o if o else '-':>9} {n if n else '-':>9}   (missing)")
            continue
        r = n / o
        worst = max(worst, r)
        print(f"{cid:<34} {o:9.4f} {n:9.4f} {r:8.3f}{'  SLOWER >3%' if r > 1.03 else ''}")
    print(f"worst new/old: {worst:.3f} ({'ok' if worst <= 1.03 else 'REGRESSION'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
