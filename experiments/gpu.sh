#!/usr/bin/env bash
# Every GPU benchmark in one call on a lent device machine (torch 2.11, Python 3.12, no network):
#   bash experiments/gpu.sh [PART ...]   # every part, or only those named; writes $OUT/<part>.md
#                                        # and $OUT/gpu_log.txt
# Each part has a hard time cap so one slow part cannot starve the others; the lead copies
# the tables into experiments/results/.
#   bash experiments/gpu.sh zoo lostep   # the zoo and LO-step rows of issue 20: at most 5 min
# GPU_SMOKE=1 rehearses the zoo parts on the CPU at tiny sizes (no compile: TORCH_COMPILE_DISABLE).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/metaopt_gpu}"; mkdir -p "$OUT"
LOG="$OUT/gpu_log.txt"
# a fresh Inductor cache per run: the zoo part compiles cold into it, later parts reuse it warm
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/metaopt_inductor_$(date +%s)}"
[ -n "${GPU_SMOKE:-}" ] && export TORCH_COMPILE_DISABLE=1
# the references the device lacks (pytorch-optimizer, HeavyBall and opt_einsum, optuna) travel
# as wheels in .whl (carry ".whl"; see /work/.library/device/README.md)
if [ -d .whl ] && [ -z "${GPU_SMOKE:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >> "$LOG" 2>&1 \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"
} >> "$LOG" 2>&1
PARTS=" ${*:-zoo adapter search learned l2o bilevel} "
run_part() {  # name, cap in seconds, script, extra arguments
  local name=$1 cap=$2 script=$3; shift 3
  case "$PARTS" in *" $name "*) ;; *) return ;; esac
  if [ ! -f "$script" ]; then echo "== $name: $script missing" >> "$LOG"; return; fi
  echo "== $name (cap ${cap}s)" >> "$LOG"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=10 "$cap" python3 "$script" --out "$OUT" "$@" >> "$LOG" 2>&1
  echo "== $name: exit $? after $((SECONDS - t0)) s" >> "$LOG"
}
if [ -n "${GPU_SMOKE:-}" ]; then
  run_part zoo    150 experiments/gpu_zoo.py --device cpu --scale 0.02 --cap-s 120 --workers 2
  run_part lostep  60 experiments/gpu_learned.py --quick --smoke
  tail -c 3000 "$LOG"; exit 0
fi
run_part zoo      225 experiments/gpu_zoo.py --cap-s 210   # cold compile, measure, 2nd order
run_part lostep    75 experiments/gpu_learned.py --quick   # LO fused step h16, warm cache
run_part adapter   60 experiments/gpu_adapter.py
run_part search    75 experiments/gpu_search.py
run_part learned  240 experiments/gpu_learned.py  # the fused LO step compiles for 1-2 min
run_part l2o       60 experiments/gpu_l2o.py
run_part bilevel   90 experiments/gpu_bilevel.py
tail -c 6000 "$LOG"
