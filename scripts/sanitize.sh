#!/usr/bin/env bash
# compute-sanitizer over every gallery kernel at small ragged shapes (scripts/sanitize_gallery.py):
# memcheck, racecheck, synccheck, initcheck; a table of findings per tool per kernel; exit 1 on any.
# Usage (on the GPU machine, tilec installed): bash scripts/sanitize.sh [example ...]   logs in ${OUT:-/tmp/sanitize}
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sanitize}; mkdir -p "$OUT"
CS=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)}
[ -x "$CS" ] || { echo "compute-sanitizer not found (set COMPUTE_SANITIZER)"; exit 2; }
export TILEC_CACHE_DIR=${TILEC_CACHE_DIR:-/tmp/tilec-cache-sanitize} PYTHONUNBUFFERED=1
examples=("$@"); [ ${#examples[@]} -eq 0 ] && examples=(gemm attention lowbit_gemm moe)
tools=(memcheck racecheck synccheck initcheck)
# compile once outside the sanitizer (the cache makes the sanitized runs launch-only)
python3 scripts/sanitize_gallery.py "${examples[@]}" >"$OUT/warmup.log" 2>&1 || { echo "gallery fails without the sanitizer:"; cat "$OUT/warmup.log"; exit 1; }
declare -A RES
fail=0
for ex in "${examples[@]}"; do
  for tool in "${tools[@]}"; do
    extra=()
    [ "$tool" = racecheck ] && extra=(--racecheck-report all)
    log="$OUT/$ex.$tool.log"
    timeout 900 "$CS" --tool "$tool" "${extra[@]}" --error-exitcode 99 --print-limit 20 \
        python3 scripts/sanitize_gallery.py "$ex" >"$log" 2>&1
    rc=$?
    n=$(grep -Eo "ERROR SUMMARY: [0-9]+" "$log" | awk '{s+=$3} END {print s+0}')
    hz=$(grep -Eo "RACECHECK SUMMARY: [0-9]+ hazard" "$log" | awk '{s+=$3} END {print s+0}')
    n=$((n + hz))
    if [ "$rc" = 124 ]; then RES[$ex.$tool]="TIMEOUT"; fail=1
    elif [ "$n" -gt 0 ] || [ "$rc" = 99 ]; then RES[$ex.$tool]="$n errors"; fail=1
    elif [ "$rc" != 0 ]; then RES[$ex.$tool]="run failed ($rc)"; fail=1
    else RES[$ex.$tool]="clean"; fi
  done
done
printf "\n%-14s" kernel; for t in "${tools[@]}"; do printf "%-18s" "$t"; done; echo
for ex in "${examples[@]}"; do
  printf "%-14s" "$ex"; for t in "${tools[@]}"; do printf "%-18s" "${RES[$ex.$t]}"; done; echo
done
echo "logs: $OUT/<kernel>.<tool>.log"
if [ "$fail" != 0 ]; then
  for f in "$OUT"/*.log; do grep -l -E "ERROR SUMMARY: [1-9]|hazard|Invalid|Race|Uninitialized" "$f" 2>/dev/null; done | while read -r f; do
    echo "== $f"; grep -E -m 12 "Invalid|Race|Uninitialized|Barrier|Error|at 0x|in .*kernel|hazard" "$f"; done
fi
exit $fail
