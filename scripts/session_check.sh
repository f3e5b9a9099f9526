#!/usr/bin/env bash
# One device call that checks a session's work when device time is short: the GPU tests named in
# $TESTS (default: the gallery, low-bit, autotune, torch and TMA/serving files), the old tree beside
# the new one on the GEMM benchmark (one round), and quick rows of the newer families. Logs under $OUT.
#   usage (on the GPU machine): bash scripts/session_check.sh OLD_TREE
set -uo pipefail
old=${1:-old}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { tail -5 "$OUT/install.log"; exit 1; }
export TILEC_CACHE_DIR=/tmp/tc PYTHONUNBUFFERED=1
T=${TESTS:-"tests/test_gpu_gallery.py tests/test_gpu_lowbit.py tests/test_autotune.py tests/test_torch_op_gpu.py tests/test_tma.py"}
timeout ${T_TESTS:-200} python3 -m pytest -m gpu -q -n 12 -p no:cacheprovider --tb=line $T >"$OUT/tests.log" 2>&1
echo "tests rc=$?"; grep -E "passed|failed|Error|FAILED" "$OUT/tests.log" | tail -12
ROUNDS=1 OUT="$OUT/cmp" timeout ${T_CMP:-170} bash scripts/bench_compare.sh "$old" --only ${CMP_ROWS:-gemm} >"$OUT/cmp.log" 2>&1; tail -12 "$OUT/cmp.log"
timeout ${T_NEW:-110} python3 benchmarks/run.py --quick --only ${NEW_ROWS:-gemm8,moe_layer} --out "$OUT/new" >"$OUT/new.log" 2>&1; tail -14 "$OUT/new.log"
timeout ${T_LOWBIT:-80} python3 benchmarks/lowbit.py --quick >"$OUT/lowbit.log" 2>&1; tail -12 "$OUT/lowbit.log"
timeout ${T_SERVING:-60} python3 benchmarks/attention_serving.py --quick --out "$OUT/serving" >"$OUT/serving.log" 2>&1; tail -12 "$OUT/serving.log"
