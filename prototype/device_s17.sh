#!/usr/bin/env bash
# Workflow (session 17): one device call.
#
#   run(): SHFLBW_COMMIT=<commit> bash prototype/device_s17.sh [BUDGET_S]
#
# On an H200: the re-measures owed since session 9 first (prototype/device_owed_h200.sh), then the
# V = 32 comparison with what is left. On an H100: the V = 32 comparison, then the GPU-only tests.
# Why V = 32: it is the one setting that meets issue #3's kept-importance bars (0.4685 / 0.7190 at
# 75 / 50 %, against 0.46 / 0.715), and its kernel speed was never measured; issue #5 asks for V = 32
# in the benchmark registry too. V = 64 runs beside it in the same process, dense as 1.00x.
. "$(dirname "$0")/device_common.sh" "$@"  # budget, left(), paths, the card in $OUT/gpu.txt
tokens=1,16,512,4096; [ "$budget" -lt 400 ] && tokens=1,4096  # a short call: the two ends only
v32() {
  timeout "$1" python benchmarks/run_linear.py --suite quick --vectors 32,64 --tokens "$tokens" \
    --out "$OUT/linear_v32.json" > "$OUT/linear_v32.txt" 2>&1
  echo "v32 rc $? at $(( $(date +%s) - t0 )) s"
  grep -E " (shflbw|shflbw-graph|spmm-feature-major) " "$OUT/linear_v32.txt" | cut -c1-100 | head -120
}
if grep -q H200 "$OUT/gpu.txt"; then
  bash prototype/device_owed_h200.sh "$(( $(left) * 3 / 4 ))"
  [ "$(left)" -gt 60 ] && v32 $(( $(left) - 10 ))
else
  echo "NOT AN H200: every number below is an H100 number"
  v32 $(( $(left) * 2 / 3 ))
  if [ "$(left)" -gt 90 ]; then
    timeout $(( $(left) - 10 )) python -m pytest -q -m requires_gpu tests -x -p no:cacheprovider \
      > "$OUT/gpu_tests.txt" 2>&1
    echo "gpu tests rc $? at $(( $(date +%s) - t0 )) s"; tail -n 5 "$OUT/gpu_tests.txt"
  fi
fi
