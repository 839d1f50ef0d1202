#!/usr/bin/env bash
# Every GPU benchmark in one call on a lent device machine (torch 2.11, Python 3.12, no network):
#   bash experiments/gpu.sh [PART ...]   # every part, or only those named; writes $OUT/<part>.md
#                                        # and $OUT/gpu_log.txt
# Each part has a hard time cap so one slow part cannot starve the others; the lead copies
# the tables into experiments/results/.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/metaopt_gpu}"; mkdir -p "$OUT"
LOG="$OUT/gpu_log.txt"
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"
} >> "$LOG" 2>&1
PARTS=" ${*:-zoo adapter search learned l2o bilevel} "
run_part() {  # name, cap in seconds, script
  local name=$1 cap=$2 script=$3
  case "$PARTS" in *" $name "*) ;; *) return ;; esac
  if [ ! -f "$script" ]; then echo "== $name: $script missing" >> "$LOG"; return; fi
  echo "== $name (cap ${cap}s)" >> "$LOG"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=10 "$cap" python3 "$script" --out "$OUT" >> "$LOG" 2>&1
  echo "== $name: exit $? after $((SECONDS - t0)) s" >> "$LOG"
}
run_part zoo      150 experiments/gpu_zoo.py
run_part adapter   60 experiments/gpu_adapter.py
run_part search    75 experiments/gpu_search.py
run_part learned  240 experiments/gpu_learned.py  # the fused LO step compiles for 1-2 min
run_part l2o       60 experiments/gpu_l2o.py
run_part bilevel   90 experiments/gpu_bilevel.py
tail -c 6000 "$LOG"
