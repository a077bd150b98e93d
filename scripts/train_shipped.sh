#!/usr/bin/env bash
# Re-create the pretrained runs shipped in checkpoints/ (CPU is fine: about 3-5 minutes per run on 2 cores).
#   bash scripts/train_shipped.sh            # all of them
# Each is a plain CLI run; the folder holds config.json, model.safetensors, metrics.json and history.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EPOCHS=${EPOCHS:-5}
for model in vae sigma_vae bs_vae; do
  $PY -m cvae_core train --model "$model" --dataset mnist --beta 1 --epochs "$EPOCHS" --seed 0 \
      --is-samples 20 --out "checkpoints/mnist_${model}" --json | tail -1
done
