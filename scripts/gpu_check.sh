#!/usr/bin/env bash
# One device call: install tilec (no deps; lark from carried wheels), run the GPU tests and the gallery,
# then (optionally) the benchmark. Logs go to $OUT. Usage: bash scripts/gpu_check.sh [tests|bench|all] [bench args]
set -uo pipefail
what=${1:-all}; shift || true
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
export TILEC_CACHE_DIR=/tmp/tilec-cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
if [ "$what" = tests ] || [ "$what" = all ]; then
  # in parallel where pytest-xdist is there (compiles dominate); the junit file gives the counts
  par=$(python3 -c "import xdist" 2>/dev/null && echo "-n 12")
  timeout 420 python3 -m pytest -m gpu -q --tb=line -rs $par -p no:cacheprovider --junitxml="$OUT/junit.xml" tests \
    2>&1 | grep -v PytestBenchmarkWarning | tee "$OUT/gpu_tests.log" | tail -40
  python3 - "$OUT/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
s = ET.parse(sys.argv[1]).getroot()
s = s if s.tag == "testsuite" else s[0]
t, f, e, k = (int(s.get(x, 0)) for x in ("tests", "failures", "errors", "skipped"))
print(f"GPU tests: {t - f - e - k} passed, {f + e} failed, {k} skipped")
PY
  mkdir -p /tmp/sass && python3 scripts/sass_check.py /tmp/sass 2>&1 | tail -3
  for e in gemm attention lowbit_gemm moe; do timeout 120 python3 examples/$e.py 2>&1 | tail -4; done | tee "$OUT/gallery.log"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  timeout 500 python3 benchmarks/run.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log" | tail -40
fi
