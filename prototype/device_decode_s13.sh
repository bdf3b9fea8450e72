#!/usr/bin/env bash
# Workflow (session 13): one device call that explains the T = 1 decode kernel's time.
#
#   run(): bash prototype/device_decode_s13.sh [BUDGET_S]
#
# 1. prototype/decode_probe.py (T = 1 and 16): the plan beside stream-K, stages left out, flat streaming, cuBLAS on a
#    dense weight of the packed bytes; one-kernel graphs and per layer in a graph of 8 layers;
# 2. Nsight Compute on the plan's kernel and on cuBLAS (11008 x 4096 and 4096 x 4096, 75 %): duration,
#    DRAM throughput, occupancy, warp stall reasons;
# 3. benchmarks/run_linear.py --suite decode --chain 8: the decode suite with the chained timing.
# Each step has its own time limit so that a slow one leaves the others' results in $OUT.
set -u
budget=${1:-540}
t0=$(date +%s)
left() { echo $(( budget - ($(date +%s) - t0) )); }
export PYTHONPATH=$PWD SHFLBW_COMMIT=${SHFLBW_COMMIT:-unknown}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, triton; print(torch.__version__, triton.__version__)" | tee -a "$OUT/gpu.txt"

timeout $(( $(left) / 2 )) python prototype/decode_probe.py --out "$OUT/decode_probe.json" --chain 8 \
  > "$OUT/decode_probe.txt" 2>&1
echo "probe rc $? at $(( $(date +%s) - t0 )) s"; tail -n 60 "$OUT/decode_probe.txt"

sections="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats"
for shape in 11008x4096 4096x4096; do
  for side in sparse dense; do
    [ "$(left)" -lt 150 ] && break 2
    timeout 90 ncu --clock-control none --nvtx --nvtx-include "prof/" --launch-skip 2 --launch-count 2 $sections \
      python prototype/profile_kernels.py decode --shape $shape --only $side --no-time > "$OUT/ncu_${shape}_$side.txt" 2>&1
    echo "ncu $shape $side rc $? at $(( $(date +%s) - t0 )) s"
    grep -E "^  [a-zA-Z_].*\(|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Theoretical Occupancy|Warp Cycles Per Issued|No Eligible|Grid Size" "$OUT/ncu_${shape}_$side.txt" | head -30
  done
done

timeout $(( $(left) - 20 )) python benchmarks/run_linear.py --suite decode --chain 8 --out "$OUT/linear_decode_chain.json" \
  > "$OUT/linear_decode_chain.txt" 2>&1
echo "run_linear rc $? at $(( $(date +%s) - t0 )) s"
grep -E "T1-|T16-" "$OUT/linear_decode_chain.txt" | grep -E " (dense|shflbw|dense-chain8|shflbw-chain8) " | head -130
