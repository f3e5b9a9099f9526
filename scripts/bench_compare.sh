#!/usr/bin/env bash
# Old commit beside the new one in ONE device call: each tree is installed into its own folder (not
# editable), then benchmarks/run.py --quick runs old, new, old, new (the per-case best of the two
# runs of each is compared, which keeps clock noise out of the verdict; ROUNDS=1 for one). Logs and JSON under $OUT.
#   usage (on the GPU machine): bash scripts/bench_compare.sh OLD_TREE [run.py args]
# OLD_TREE: a copy of the old commit (e.g. `git archive <commit> | tar -x -C old/`, carried).
set -uo pipefail
old=${1:?usage: bench_compare.sh OLD_TREE [run.py args]}; shift || true
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/whl .whl/*.whl; fi
old=$(cd "$old" && pwd)
for side in old new; do
  src=$([ $side = old ] && echo "$old" || pwd)
  python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site-$side "$src" >"$OUT/install-$side.log" 2>&1 \
    || { tail -5 "$OUT/install-$side.log"; exit 1; }
done
export PYTHONUNBUFFERED=1
for round in $(seq 1 "${ROUNDS:-2}"); do
  for side in old new; do
    src=$([ $side = old ] && echo "$old" || pwd)
    mkdir -p "$OUT/$side$round"
    (cd /tmp && PYTHONPATH=/tmp/site-$side:/tmp/whl TILEC_CACHE_DIR=/tmp/cache-$side$round \
       timeout 240 python3 "$src/benchmarks/run.py" --quick --out "$OUT/$side$round" "$@" \
       >"$OUT/bench-$side$round.log" 2>&1) || echo "bench $side round $round failed: $(tail -2 "$OUT/bench-$side$round.log")"
  done
done
python3 scripts/bench_table.py "$OUT"
