#!/usr/bin/env bash
# A short device call after merges: the GPU tests of the launch path and of the session's new kernels
# (junit counts), the launch-overhead tables (issue 12), and a quick sanity row of the GEMM and the
# MoE layer. Logs under $OUT. Usage (on the GPU machine): bash scripts/final_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { tail -5 "$OUT/install.log"; exit 1; }
export TILEC_CACHE_DIR=/tmp/tc PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout ${T_TESTS:-240} python3 -m pytest -m gpu -q -n 16 -p no:cacheprovider --tb=line --junitxml="$OUT/junit.xml" \
  ${TESTS:-tests/test_launch_fast.py tests/test_runtime_gpu.py tests/test_torch_op_gpu.py tests/test_tma.py tests/test_faults.py tests/test_gpu_lowbit.py tests/test_gpu_gallery.py} >"$OUT/tests.log" 2>&1
echo "tests rc=$?"; grep -E "^FAILED|^ERROR|Error:" "$OUT/tests.log" | head -20
python3 - "$OUT/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    s = ET.parse(sys.argv[1]).getroot(); s = s if s.tag == "testsuite" else s[0]
    t, f, e, k = (int(s.get(x, 0)) for x in ("tests", "failures", "errors", "skipped"))
    print(f"GPU tests: {t - f - e - k} passed, {f + e} failed, {k} skipped")
except Exception as ex:
    print("no junit (timed out?):", ex)
PY
timeout ${T_LAUNCH:-90} python3 benchmarks/launch_overhead.py --n 5000 >"$OUT/launch.log" 2>&1; tail -30 "$OUT/launch.log"
timeout ${T_BENCH:-60} python3 benchmarks/run.py --quick --only ${ROWS:-gemm/4096x4096x4096,moe_layer} --out "$OUT/b" >"$OUT/bench.log" 2>&1; grep -E "^(gemm|moe)" "$OUT/bench.log" | tail -4
