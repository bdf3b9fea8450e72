#!/usr/bin/env bash
# Workflow (session 18): one device call.
#
#   run(): SHFLBW_COMMIT=<commit> bash prototype/device_s18.sh [BUDGET_S]
#
# 1. The token-major CUDA kernels (prototype/tm_mma.py: per-CTA tiles, then cluster-shared tiles),
#    gated, beside dense and shflbw.linear: the first measurement of the lower-level route #5 allows.
# 2. With what is left, session 17's call: on an H200 the owed re-measures then V = 32 beside
#    V = 64; on an H100 V = 32 beside V = 64 (prototype/device_s17.sh).
. "$(dirname "$0")/device_common.sh" "$@"  # budget, left(), paths, the card in $OUT/gpu.txt
grep -q H200 "$OUT/gpu.txt" || echo "NOT AN H200: every number below is an H100 number"
# two processes: a hang in the cluster kernel's barriers must not take the plain kernel's results with it
cap() { local t=$(( $(left) * 45 / 100 )); echo $(( t < $1 ? t : $1 )); }  # min($1, 45 % of what is left)
timeout $(cap 240) python prototype/tm_mma.py --kinds tm --out "$OUT/tm_mma.json" > "$OUT/tm_mma.txt" 2>&1
echo "tm_mma rc $? at $(( $(date +%s) - t0 )) s"; tail -n 80 "$OUT/tm_mma.txt"
timeout $(cap 200) python prototype/tm_mma.py --kinds cluster --out "$OUT/tm_cluster.json" > "$OUT/tm_cluster.txt" 2>&1
echo "tm_cluster rc $? at $(( $(date +%s) - t0 )) s"; grep -v "^4\|^1" "$OUT/tm_cluster.txt" | tail -n 30; grep "cluster" "$OUT/tm_cluster.txt" | tail -n 40
[ "$(left)" -gt 120 ] && bash prototype/device_s17.sh $(( $(left) - 10 ))
