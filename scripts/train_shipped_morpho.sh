#!/usr/bin/env bash
# Re-create the shipped morpho-mnist runs of the "Rare combinations" page (issue 7): cvae, sigma_cvae, flow_cvae end
# to end and flow_cvae two-stage, all conditioned on the 14 morpho-mnist condition values (digit one-hot and thick,
# slant, red, large; the CLI sets condition=attributes from the data set).
#   bash scripts/train_shipped_morpho.sh               # all of them
#   bash scripts/train_shipped_morpho.sh flow_cvae     # some: cvae sigma_cvae flow_cvae flow_cvae_2stage
# Same settings for every run: conv nets, latent 16, beta 1, STEPS steps of 128 (default 3000), seed 0; float16
# weights when the test metrics stay within 1%.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-3000}
RUNS=("$@")
[ ${#RUNS[@]} -eq 0 ] && RUNS=(cvae sigma_cvae flow_cvae flow_cvae_2stage)
for run in "${RUNS[@]}"; do
  model=$run extra=()
  if [ "$run" = flow_cvae_2stage ]; then model=flow_cvae extra=(--option two_stage=true); fi
  $PY -m cvae_core train --model "$model" --dataset morpho-mnist --beta 1 "${extra[@]}" \
      --steps "$STEPS" --seed 0 --weights-dtype float16 --out "checkpoints/morpho_$run" --json | tail -1
done
