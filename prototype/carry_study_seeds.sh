#!/usr/bin/env bash
# Workflow: repeat study cells on other calibration text (shflbw eval --calibration-seed), on the GPU
# machine, after prototype/carry_study.py's first call left the model's head in /tmp/m (see there).
#
#   run(carry=[".carryB"]):  bash prototype/carry_study_seeds.sh "1 2" "shfl_bw,vector" 540 [CELLS] [EVAL_FLAGS]
#
# CELLS (default "0.75:oneshot 0.75:distill 0.5:oneshot") are sparsity:method pairs run for each
# seed. Seeds run in parallel (the Shfl-BW search is host-bound; the machine has 16 cores), each as
# a chain of one-cell invocations so that a timeout keeps the cells already done; a cell may also
# be written seed:sparsity:method, to run it for that seed only, and end in @PATTERNS to run other
# patterns than PATTERNS (e.g. 1:0.5:oneshot@vector). Everything lands in one archive,
# $OUT/study_seeds.tgz (the device returns at most 8 files). EVAL_FLAGS go to every shflbw eval
# (e.g. --no-regroup).
set -u
seeds=${1:-"1 2"}
patterns=${2:-"shfl_bw,vector"}
budget=${3:-540}
cells=${4:-"0.75:oneshot 0.75:distill 0.5:oneshot"}
extra=${5:-}
cat /tmp/m/part_a .carryB/part_b > .carryB/model/model.safetensors
if [ "$(sha256sum .carryB/model/model.safetensors | cut -c1-64)" != "$(cat .carryB/sha)" ]; then
  echo "model halves do not join (is /tmp/m/part_a from the first call there?)" >&2
  exit 1
fi
export SHFLBW_DATA_DIR=$PWD/.carryB/data PYTHONPATH=$PWD/src OMP_NUM_THREADS=8
mkdir -p /tmp/st
cell() {  # seed sparsity method patterns
  [ -e /tmp/st/STOP ] && return
  local tag="seed$1_s$2_$3_${4//,/-}"
  python -m shflbw eval --model "$PWD/.carryB/model" --patterns "$4" --sparsity "$2" --vector 64 \
    --methods "$3" --calibration-seed "$1" $extra --out "/tmp/st/$tag" >"/tmp/st/$tag.log" 2>&1
  echo "seed $1 sparsity $2 $3 $4: rc $? at $(date +%T)"
}
lane() {  # seed: its cells in order
  for c in $cells; do
    local p=$patterns
    if [[ $c == *@* ]]; then p=${c#*@}; c=${c%@*}; fi
    IFS=: read -r a b m <<<"$c"
    if [ -n "$m" ]; then [ "$a" = "$1" ] && cell "$1" "$b" "$m" "$p"; else cell "$1" "$a" "$b" "$p"; fi
  done
}
for sd in $seeds; do
  lane "$sd" &
done
# Leave time for the archive: stop whatever is still running at the budget.
( sleep "$budget"; touch /tmp/st/STOP; pkill -f "shflbw eval" ) &
killer=$!
wait $(jobs -p | grep -v "^$killer$") 2>/dev/null
kill "$killer" 2>/dev/null
tar czf "$OUT/study_seeds.tgz" -C /tmp st
grep -h -E "^(shfl_bw|vector|block|unstructured|2:4) " /tmp/st/*.log
