#!/usr/bin/env bash
# Re-create the pretrained runs shipped in checkpoints/ (CPU is fine: about 4-6 minutes per run on 2 cores).
#   bash scripts/train_shipped.sh                 # all of them
#   bash scripts/train_shipped.sh cvae sigma_cvae # some of them
# Each is a plain CLI run; the folder holds config.json, model.safetensors (float16 when the test metrics stay
# within 1%, see metrics.json's float16_max_rel_change), metrics.json, history.json and check.json (the numbers
# tests/test_shipped.py re-computes). The sample metrics need the classifier: python scripts/train_classifier.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EPOCHS=${EPOCHS:-5}
MODELS=("$@")
[ ${#MODELS[@]} -eq 0 ] && MODELS=(vae sigma_vae bs_vae cvae sigma_cvae)
for model in "${MODELS[@]}"; do
  $PY -m cvae_core train --model "$model" --dataset mnist --beta 1 --epochs "$EPOCHS" --seed 0 \
      --is-samples 20 --weights-dtype float16 --out "checkpoints/mnist_${model}" --json | tail -1
done
