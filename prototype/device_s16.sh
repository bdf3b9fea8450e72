#!/usr/bin/env bash
# Workflow (written in session 15, which got no machine for it): one device call.
#
#   run(): SHFLBW_COMMIT=<commit> bash prototype/device_s16.sh [BUDGET_S]
#
# 1. prototype/overlap_roundtrip.py: does overlapping the roundtrip's two transposes with the SpMM
#    (token chunks on three streams, one CUDA graph) lift token-major prefill (issue #5's 2.0x at
#    T >= 2048, 75 %)? A third of the roundtrip's time at T = 4096 is the transposes.
# 2. prototype/gather_ceiling.py: the feature-major SpMM beside its loads alone (is it load-bound?).
# 3. On an H200 only: prototype/device_owed_h200.sh with what time is left (decode suite, BERT-large
#    end to end, prefill), the re-measures owed since session 9.
. "$(dirname "$0")/device_common.sh" "$@"  # budget, left(), paths, the card in $OUT/gpu.txt
grep -q H200 "$OUT/gpu.txt" || echo "NOT AN H200: every number below is an H100 number"
timeout $(( $(left) / 2 )) python prototype/overlap_roundtrip.py --out "$OUT/overlap.json" \
  --budget $(( $(left) / 2 - 30 )) > "$OUT/overlap.txt" 2>&1
echo "overlap rc $? at $(( $(date +%s) - t0 )) s"; grep -v Warning "$OUT/overlap.txt" | tail -n 30
timeout 100 python prototype/gather_ceiling.py --out "$OUT/gather_ceiling.json" > "$OUT/gather_ceiling.txt" 2>&1
echo "gather ceiling rc $? at $(( $(date +%s) - t0 )) s"; grep -v Warning "$OUT/gather_ceiling.txt" | tail -n 16
if grep -q H200 "$OUT/gpu.txt" && [ "$(left)" -gt 120 ]; then
  bash prototype/device_owed_h200.sh "$(( $(left) - 10 ))"
fi
