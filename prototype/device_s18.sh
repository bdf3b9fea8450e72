#!/usr/bin/env bash
# Workflow (session 18): one device call.
#
#   run(): SHFLBW_COMMIT=<commit> bash prototype/device_s18.sh [BUDGET_S]
#
# 1. The token-major CUDA kernels (prototype/tm_mma.py: per-CTA tiles, then cluster-shared tiles;
#    outputs stored through the permutation, in group order, or in group order then permuted by a
#    second pass), gated, beside dense and shflbw.linear: the first measurement of the lower-level
#    route #5 allows. Before any device call, on the CPU: python prototype/tm_mma.py --emulate and
#    --dry-run, prototype/cuda_offline_check.py (builds every variant without a GPU) and
#    prototype/cluster_protocol_check.py (the cluster kernel's barriers under random schedules).
# 2. Nsight Compute counters of four variants on one case (prototype/tm_mma_profile.py), where ncu works.
# 3. The MLP block token-major end to end with those kernels (prototype/tm_mlp.py).
# 4. With what is left, session 17's call: on an H200 the owed re-measures then V = 32 beside
#    V = 64; on an H100 V = 32 beside V = 64 (prototype/device_s17.sh).
. "$(dirname "$0")/device_common.sh" "$@"  # budget, left(), paths, the card in $OUT/gpu.txt
grep -q H200 "$OUT/gpu.txt" || echo "NOT AN H200: every number below is an H100 number"
# two processes: a hang in the cluster kernel's barriers must not take the plain kernel's results with it
cap() { local t=$(( $(left) * 45 / 100 )); echo $(( t < $1 ? t : $1 )); }  # min($1, 45 % of what is left)
timeout $(cap 240) python prototype/tm_mma.py --kinds tm --out "$OUT/tm_mma.json" > "$OUT/tm_mma.txt" 2>&1
echo "tm_mma rc $? at $(( $(date +%s) - t0 )) s"; tail -n 80 "$OUT/tm_mma.txt"
timeout $(cap 200) python prototype/tm_mma.py --kinds cluster --out "$OUT/tm_cluster.json" > "$OUT/tm_cluster.txt" 2>&1
echo "tm_cluster rc $? at $(( $(date +%s) - t0 )) s"; grep -v "^4\|^1" "$OUT/tm_cluster.txt" | tail -n 30; grep "cluster" "$OUT/tm_cluster.txt" | tail -n 40
# What bounds them: Nsight Compute counters on one case (only where ncu reads counters: Firecracker)
if command -v ncu > /dev/null && [ "$(left)" -gt 200 ]; then
  timeout 90 ncu --clock-control none --kernel-name regex:shflbw_tm --csv --metrics \
gpu__time_duration.sum,lts__t_bytes.sum.per_second,dram__bytes.sum.per_second,\
sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,\
l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum,\
smsp__warp_issue_stalled_barrier_per_warp_active.pct,smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct,\
smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct,smsp__warp_issue_stalled_math_pipe_throttle_per_warp_active.pct \
    python prototype/tm_mma_profile.py > "$OUT/tm_ncu.csv" 2>&1
  rc=$?; echo "ncu rc $rc at $(( $(date +%s) - t0 )) s"; grep -E "WRONG|rel err|==ERROR|ERR_" "$OUT/tm_ncu.csv" | head
  if [ "$rc" -ne 0 ] && [ "$(left)" -gt 200 ]; then  # a metric name this ncu lacks: the standard section
    timeout 90 ncu --clock-control none --kernel-name regex:shflbw_tm --section SpeedOfLight \
      python prototype/tm_mma_profile.py > "$OUT/tm_ncu_sol.txt" 2>&1
    echo "ncu SpeedOfLight rc $? at $(( $(date +%s) - t0 )) s"
  fi
fi
# The MLP block token-major end to end (fc1 in group order with GELU, fc2 over it, one permute pass)
if [ "$(left)" -gt 120 ]; then
  timeout $(cap 150) python prototype/tm_mlp.py --out "$OUT/tm_mlp.json" > "$OUT/tm_mlp.txt" 2>&1
  echo "tm_mlp rc $? at $(( $(date +%s) - t0 )) s"; tail -n 30 "$OUT/tm_mlp.txt"
fi
[ "$(left)" -gt 120 ] && bash prototype/device_s17.sh $(( $(left) - 10 ))
