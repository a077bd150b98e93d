#!/usr/bin/env bash
# Re-create the shipped MNIST-LT runs of the "Class balance" page (issue 6): the four models at rho = 100, and a
# nu sweep of ct3vae, so that every position of the page's nu slider has a trained run.
#   bash scripts/train_shipped_lt.sh                  # all of them
#   bash scripts/train_shipped_lt.sh vae ct3vae:5     # some: MODEL or ct3vae:NU
# Same settings for every run: conv nets, latent 16, beta 1, nu 10 unless given, 2000 steps of 128, seed 0
# (about 4-6 minutes per run on one CPU core). float16 weights when the test metrics stay within 1%.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-2000}
RHO=${RHO:-100}
RUNS=("$@")
[ ${#RUNS[@]} -eq 0 ] && RUNS=(vae t3vae cgvae ct3vae ct3vae:2.5 ct3vae:5 ct3vae:20)
for run in "${RUNS[@]}"; do
  model=${run%%:*}
  nu_args=() name="mnistlt${RHO}_${model}"
  if [[ "$run" == *:* ]]; then
    nu=${run#*:}
    nu_args=(--nu "$nu") name="${name}_nu${nu}"
  fi
  $PY -m cvae_core train --model "$model" --dataset mnist-lt --rho "$RHO" --beta 1 "${nu_args[@]}" \
      --steps "$STEPS" --seed 0 --weights-dtype float16 --out "checkpoints/$name" --json | tail -1
done
