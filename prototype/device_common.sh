# Sourced by the device scripts (prototype/device_*.sh) as `. "$(dirname "$0")/device_common.sh" "$@"`:
# the time budget in seconds ($1, default 540), left() for the seconds still in it, the import
# paths, the commit stamp the results carry (the device copy has no git history), and the card,
# printed and kept in $OUT/gpu.txt so a script can branch on it.
set -u
budget=${1:-540}
t0=$(date +%s)
left() { echo $(( budget - ($(date +%s) - t0) )); }
export PYTHONPATH=$PWD/src:$PWD SHFLBW_COMMIT=${SHFLBW_COMMIT:-unknown}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$OUT/gpu.txt"
