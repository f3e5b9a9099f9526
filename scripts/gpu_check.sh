#!/usr/bin/env bash
# One device call: install tilec (no deps; lark from carried wheels), run the GPU tests and the gallery,
# then (optionally) the benchmark; `safety` runs the math tests, the differential fuzzer and the
# sanitizers (issue 13's checks). Logs go to $OUT.
# Usage: bash scripts/gpu_check.sh [tests|bench|all|safety] [bench args]
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
  python3 scripts/junit_counts.py "$OUT/junit.xml"
  mkdir -p /tmp/sass && python3 scripts/sass_check.py /tmp/sass 2>&1 | tail -3
  for e in gemm attention lowbit_gemm moe; do timeout 120 python3 examples/$e.py 2>&1 | tail -4; done | tee "$OUT/gallery.log"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  timeout 500 python3 benchmarks/run.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log" | tail -40
fi
if [ "$what" = safety ]; then
  par=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
  timeout 200 python3 -m pytest -q --tb=short $par -p no:cacheprovider tests/test_math_gpu.py tests/test_math_ptx.py \
    2>&1 | tail -5 | tee "$OUT/math.log"
  timeout 240 python3 scripts/fuzz_gpu.py --cases ${FUZZ_CASES:-150} --gallery ${FUZZ_GALLERY:-12} --seed ${FUZZ_SEED:-1000} \
    >"$OUT/fuzz.log" 2>&1; echo "fuzz rc=$?"; tail -15 "$OUT/fuzz.log"
  OUT="$OUT/sanitize" timeout 400 bash scripts/sanitize.sh 2>&1 | tail -25 | tee "$OUT/sanitize.log"
fi
