#!/usr/bin/env bash
# Meta-train the pretrained μLO on the GPU, ship its best theta, evaluate it (one device call):
#   bash experiments/gpu_pretrained.sh MINUTES EVAL_SECONDS WORKERS [EVAL ARGS...]
# Writes $OUT/gpu/{meta.json,gpu_pretrained.md,best.safetensors,theta_*.safetensors} (the first,
# middle and last snapshots) and $OUT/eval/{eval.json,eval_meta.json}; the report is then made
# where the files come back: python experiments/pretrained.py --stage report --results DIR/eval
#   --work DIR/gpu ...
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/metaopt_gpu}"; mkdir -p "$OUT/gpu" "$OUT/eval"
MIN=$1 EVAL_S=$2 WORKERS=$3; shift 3
DEV=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
W=/tmp/gpu_pretrained_work
rm -rf "$W"
python3 experiments/gpu_pretrained.py --out "$W" --minutes "$MIN" --device "$DEV" \
  ${QUICK:+--quick --val-every 2} || exit 1
snaps=$(ls "$W"/theta_*.safetensors | sort -V)
n=$(echo "$snaps" | wc -l)
pick=$(echo "$snaps" | sed -n "1p;$(( (n + 1) / 2 ))p;${n}p" | sort -u -V)
cp "$W/meta.json" "$W/gpu_pretrained.md" "$W/best.safetensors" $pick "$OUT/gpu/"
cp "$W/best.safetensors" learned/pretrained/mulo_small.safetensors
timeout --signal=INT --kill-after=15 "$EVAL_S" python3 experiments/pretrained.py --stage evaluate \
  --device "$DEV" --workers "$WORKERS" --results "$OUT/eval" \
  --theta learned/pretrained/mulo_small.safetensors \
  --snapshots $(for f in $pick; do echo "$OUT/gpu/$(basename "$f")"; done) "$@"
echo "evaluate exit $?"
