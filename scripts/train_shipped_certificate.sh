#!/usr/bin/env bash
# Re-create the shipped runs of the "Collapse certificate" page (issue 8): a plain Bernoulli VAE and RST-VAE on
# statically binarised MNIST, at the paper's alpha_KL = 1 and at the collapse-stress setting alpha_KL = 8.
#   bash scripts/train_shipped_certificate.sh                   # all four
#   bash scripts/train_shipped_certificate.sh rst_vae_beta8     # some: vae_beta1 rst_vae_beta1 vae_beta8 rst_vae_beta8
# Same settings as `reproduce certificate` (seed 0): MLP nets (hidden 256), latent 16, batch 128, 8 epochs,
# lambda_TS = 1, the teacher PCA 50 / 10 components / eps 0.05 / gain 5; float16 weights when the test metrics stay
# within 1%. The history of each run has the certificate (IT, LTS, GT on 1,000 test images) at every log tick.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=("$@")
[ ${#RUNS[@]} -eq 0 ] && RUNS=(vae_beta1 rst_vae_beta1 vae_beta8 rst_vae_beta8)
for run in "${RUNS[@]}"; do
  model=${run%_beta*} beta=${run##*_beta}
  $PY -m cvae_core train --model "$model" --dataset mnist-binary --beta "$beta" --latent-dim 16 \
      --option arch=mlp --option hidden=256 --option likelihood=bernoulli --epochs 8 --seed 0 \
      --weights-dtype float16 --out "checkpoints/mnistbin_$run" --json | tail -1
done
