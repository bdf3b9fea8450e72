#!/usr/bin/env bash
# Workflow (session 18): one device call.
#
#   run(): SHFLBW_COMMIT=<commit> bash prototype/device_s18.sh [BUDGET_S]
#
# 1. The token-major CUDA kernel (prototype/tm_mma.py), gated, beside dense and shflbw.linear: the
#    first measurement of the lower-level route issue #5 allows.
# 2. With what is left, session 17's call: on an H200 the owed re-measures then V = 32 beside
#    V = 64; on an H100 V = 32 beside V = 64 (prototype/device_s17.sh).
. "$(dirname "$0")/device_common.sh" "$@"  # budget, left(), paths, the card in $OUT/gpu.txt
grep -q H200 "$OUT/gpu.txt" || echo "NOT AN H200: every number below is an H100 number"
timeout $(( $(left) / 2 )) python prototype/tm_mma.py --out "$OUT/tm_mma.json" > "$OUT/tm_mma.txt" 2>&1
echo "tm_mma rc $? at $(( $(date +%s) - t0 )) s"; cat "$OUT/tm_mma.txt" | tail -n 80
[ "$(left)" -gt 120 ] && bash prototype/device_s17.sh $(( $(left) - 10 ))
