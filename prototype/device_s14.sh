#!/usr/bin/env bash
# Workflow (session 14): one device call that does what the card it lands on is owed.
#
#   run(kind="nvidia-h200"): SHFLBW_COMMIT=<commit> bash prototype/device_s14.sh [BUDGET_S]
#
# - On an H200: prototype/device_owed_h200.sh (decode suite with the chain, BERT-large end to end,
#   prefill), the re-measures sessions 9-13 could not make.
# - On anything else (an H100): the two decode variants that session 13 left unmeasured, beside the
#   plan and dense: stream-K with per-group inner loops (streamk-*) and splits that are not powers of
#   two (plan-3splits ...), T = 1 and 16, 75 %, one-kernel graphs and per layer in a graph of 8; then the
#   prefill suite (T = 128-4096) at this commit.
. "$(dirname "$0")/device_common.sh" "$@"  # budget, left(), paths, the card in $OUT/gpu.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__)" | tee -a "$OUT/gpu.txt"
if grep -q H200 "$OUT/gpu.txt"; then
  exec bash prototype/device_owed_h200.sh "$budget"
fi
echo "NOT AN H200: every number below is an H100 number"
timeout $(( $(left) / 3 )) python prototype/decode_probe.py --out "$OUT/decode_probe.json" --chain 8 \
  --shapes 11008x4096,4096x11008,14336x4096,4096x4096 --sparsities 0.75 --only "^(plan|streamk)" \
  > "$OUT/decode_probe.txt" 2>&1
echo "probe rc $? at $(( $(date +%s) - t0 )) s"; tail -n 70 "$OUT/decode_probe.txt"
timeout $(( $(left) - 15 )) python benchmarks/run_linear.py --suite prefill --out "$OUT/linear_prefill.json" \
  > "$OUT/linear_prefill.txt" 2>&1
echo "prefill rc $? at $(( $(date +%s) - t0 )) s"
grep -E " (dense|shflbw) " "$OUT/linear_prefill.txt" | cut -c1-110 | head -80
