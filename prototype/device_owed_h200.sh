#!/usr/bin/env bash
# Workflow: the re-measures owed on an H200 (sessions 9-13 got only H100s), in one device call.
#
#   run(kind="nvidia-h200"): SHFLBW_COMMIT=<commit> bash prototype/device_owed_h200.sh [BUDGET_S]
#
# In order of what the issues lack most, each with its own time limit so that a slow step leaves
# the others' results in $OUT:
# 1. the decode suite, one-kernel graphs and per layer in a graph of 8 (#5's T <= 16 bars);
# 2. BERT-large-sized encoder end to end, MLP + tail + attention regions, compiled, graph replays
#    (#7's 1.8x; H200 figure of session 8: 1.68-1.73x);
# 3. the prefill suite, T = 128-4096 (#5's token-major bars).
# It checks the card first: on an H100 it says so, and every number must be labelled H100.
. "$(dirname "$0")/device_common.sh" "$@"  # budget, left(), paths, the card in $OUT/gpu.txt
grep -q H200 "$OUT/gpu.txt" || echo "NOT AN H200: label every number below with the card it ran on"

timeout $(( $(left) / 4 )) python benchmarks/run_linear.py --suite decode --chain 8 --out "$OUT/linear_decode.json" \
  > "$OUT/linear_decode.txt" 2>&1
echo "decode rc $? at $(( $(date +%s) - t0 )) s"

timeout $(( $(left) / 2 )) python benchmarks/run_e2e.py --models bert-large --variants regions --graph --rep 300 \
  --out "$OUT/e2e_bert_large.json" > "$OUT/e2e_bert_large.txt" 2>&1
echo "e2e rc $? at $(( $(date +%s) - t0 )) s"; tail -n 15 "$OUT/e2e_bert_large.txt"

timeout $(( $(left) - 15 )) python benchmarks/run_linear.py --suite prefill --out "$OUT/linear_prefill.json" \
  > "$OUT/linear_prefill.txt" 2>&1
echo "prefill rc $? at $(( $(date +%s) - t0 )) s"
grep -E " (shflbw|shflbw-chain8|shflbw-graph) " "$OUT/linear_decode.txt" "$OUT/linear_prefill.txt" | cut -c1-110 | head -120
