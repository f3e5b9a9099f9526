#!/usr/bin/env bash
# Device calls that check a session's work when device time is short (each part fits one 10-minute
# call; logs and JSON under $OUT, a short table printed last).
#   usage (on the GPU machine): bash scripts/session_check.sh PART [OLD_TREE]
#   PART = tests   every GPU test (pytest -m gpu, junit counts, the failures listed)
#          gemm    GEMM rows with every tilec config (warp-specialized, persistent, TMA-store candidates
#                  included: --tune-configs 0), the 8-bit rows (fp8 per-tensor / row-wise / block scales,
#                  int8), the compile-time and launch families
#          serve   attention prefill (every config), low-bit (old path beside the pre-laid-out register
#                  path), split-KV decode, the MoE layer
#          cmp     OLD_TREE beside this tree on the GEMM rows (scripts/bench_compare.sh, one round)
#          attn    OLD_TREE beside this tree on attention S2048 / S8192 D128 (the first 3 configs each), then
#                  the GPU tests of TESTS (default: math, attention, ping-pong, select_instructions, fuzz),
#                  the ping-pong configs alone, and the low-bit bar cases
#          cluster the GPU tests of clusters and the softmax work, GEMM 4096^3 on CONFIGS (default 0,1,2: the
#                  2-block-cluster persistent WS configs beside the best one without), OLD_TREE beside this
#                  tree on attention S2048 D128
#          first   when one call is all there is: the GPU tests of the paths never run before (T_TESTS),
#                  then GEMM 4096^3 and attention S2048 D128 (causal and not) over every config, and
#                  the low-bit bar cases (old path beside the pre-laid-out one)
set -uo pipefail
part=${1:-tests}
old=${2:-old}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { tail -5 "$OUT/install.log"; exit 1; }
export TILEC_CACHE_DIR=/tmp/tc PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
case "$part" in
tests)
  timeout ${T_TESTS:-500} python3 -m pytest -m gpu -q -n ${JOBS:-12} -p no:cacheprovider --tb=line \
    --junitxml="$OUT/junit.xml" ${TESTS:-tests} >"$OUT/tests.log" 2>&1
  echo "tests rc=$?"; grep -E "^FAILED|^ERROR" "$OUT/tests.log" | head -40
  python3 scripts/junit_counts.py "$OUT/junit.xml"
  ;;
gemm)
  timeout ${T_GEMM:-330} python3 benchmarks/run.py --quick --tune-configs 0 --budget 320 \
    --only ${ROWS:-gemm/4096x4096x4096,gemm/8192x8192x8192,gemm/4096x14336x4096,gemm8} --out "$OUT/gemm" \
    >"$OUT/gemm.log" 2>&1
  timeout ${T_REST:-150} python3 benchmarks/run.py --quick --only compile,launch --out "$OUT/rest" >"$OUT/rest.log" 2>&1
  grep -hE "^(gemm|gemm8|compile|launch)" "$OUT/gemm.log" "$OUT/rest.log" | tail -30
  ;;
serve)
  timeout ${T_ATT:-200} python3 benchmarks/run.py --quick --tune-configs 0 --budget 190 --only attention,moe_layer \
    --out "$OUT/att" >"$OUT/att.log" 2>&1
  timeout ${T_LOWBIT:-150} python3 benchmarks/lowbit.py --quick >"$OUT/lowbit.log" 2>&1
  timeout ${T_SERVING:-100} python3 benchmarks/attention_serving.py --quick --out "$OUT/serving" >"$OUT/serving.log" 2>&1
  grep -hE "^(attention|moe)" "$OUT/att.log" | tail -10; tail -16 "$OUT/lowbit.log"; tail -8 "$OUT/serving.log"
  ;;
first)
  NEW_TESTS="tests/test_tma_store.py tests/test_warp_specialize.py tests/test_persistent_ws.py tests/test_pingpong.py
    tests/test_attention_ws.py tests/test_divisibility.py tests/test_e8m0.py tests/test_launch_fast.py"
  timeout ${T_TESTS:-240} python3 -m pytest -m gpu -q -n ${JOBS:-12} -p no:cacheprovider --tb=line \
    --junitxml="$OUT/junit.xml" ${TESTS:-$NEW_TESTS} >"$OUT/tests.log" 2>&1
  echo "tests rc=$?"; grep -E "^FAILED|^ERROR" "$OUT/tests.log" | head -20
  python3 scripts/junit_counts.py "$OUT/junit.xml"
  timeout ${T_GEMM:-150} python3 benchmarks/run.py --quick --tune-configs 0 --budget 140 \
    --only gemm/4096x4096x4096,attention/B8-H16-S2048-D128 --out "$OUT/gemm" >"$OUT/gemm.log" 2>&1
  timeout ${T_LOWBIT:-90} python3 benchmarks/lowbit.py --quick >"$OUT/lowbit.log" 2>&1
  grep -hE "^(gemm|attention)" "$OUT/gemm.log" | tail -8; tail -16 "$OUT/lowbit.log"
  ;;
cmp)
  ROUNDS=1 OUT="$OUT/cmp" timeout ${T_CMP:-500} bash scripts/bench_compare.sh "$old" --only ${CMP_ROWS:-gemm} \
    >"$OUT/cmp.log" 2>&1; tail -14 "$OUT/cmp.log"
  ;;
attn)
  ROUNDS=1 OUT="$OUT/cmp" timeout ${T_CMP:-260} bash scripts/bench_compare.sh "$old" --tune-configs 3 \
    --only ${CMP_ROWS:-attention/B8-H16-S2048-D128,attention/B2-H16-S8192-D128} >"$OUT/cmp.log" 2>&1
  tail -8 "$OUT/cmp.log"; grep -h "autotune" "$OUT"/cmp/bench-*.log | tail -12
  timeout ${T_TESTS:-150} python3 -m pytest -m gpu -q -n ${JOBS:-12} -p no:cacheprovider --tb=line \
    --junitxml="$OUT/junit.xml" ${TESTS:-tests/test_math_gpu.py tests/test_attention_prefill.py tests/test_attention_ws.py
    tests/test_pingpong.py tests/test_select_instructions.py tests/test_fuzz_cpu.py} >"$OUT/tests.log" 2>&1
  echo "tests rc=$?"; grep -E "^FAILED|^ERROR" "$OUT/tests.log" | head -20; python3 scripts/junit_counts.py "$OUT/junit.xml"
  timeout ${T_PP:-70} python3 benchmarks/run.py --quick --configs 10,11 --budget 60 --only attention/B8-H16-S2048-D128 \
    --out "$OUT/pp" >"$OUT/pp.log" 2>&1; grep -hE "^attention|autotune" "$OUT/pp.log" | tail -6
  timeout ${T_LOWBIT:-80} python3 benchmarks/lowbit.py --quick >"$OUT/lowbit.log" 2>&1; tail -12 "$OUT/lowbit.log"
  ;;
cluster)
  timeout ${T_TESTS:-200} python3 -m pytest -m gpu -q -n ${JOBS:-12} -p no:cacheprovider --tb=line \
    --junitxml="$OUT/junit.xml" ${TESTS:-tests/test_cluster.py tests/test_math_gpu.py tests/test_attention_prefill.py
    tests/test_attention_ws.py tests/test_pingpong.py tests/test_select_instructions.py} >"$OUT/tests.log" 2>&1
  echo "tests rc=$?"; grep -E "^FAILED|^ERROR" "$OUT/tests.log" | head -20; python3 scripts/junit_counts.py "$OUT/junit.xml"
  timeout ${T_GEMM:-110} python3 benchmarks/run.py --quick --configs ${CONFIGS:-0,1,2} --budget 100 \
    --only gemm/4096x4096x4096 --out "$OUT/gemm" >"$OUT/gemm.log" 2>&1
  grep -hE "^gemm|autotune" "$OUT/gemm.log" | tail -8
  ROUNDS=1 OUT="$OUT/cmp" timeout ${T_CMP:-200} bash scripts/bench_compare.sh "$old" --tune-configs 3 \
    --only ${CMP_ROWS:-attention/B8-H16-S2048-D128} >"$OUT/cmp.log" 2>&1
  tail -6 "$OUT/cmp.log"; grep -h "autotune" "$OUT"/cmp/bench-*.log | tail -8
  ;;
*) echo "unknown part '$part' (tests, gemm, serve, cmp, first, attn, cluster)"; exit 2 ;;
esac
