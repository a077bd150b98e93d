#!/usr/bin/env bash
# The shipped runs of the Strategies page (issue 9): the base language model, then the discrete and the continuous
# sequence CVAE over it, all on the default strategies task (sort_asc, sort_desc, reverse, rotate; first-digit
# mixture; 20,000 training pairs, seed 0). About 7 + 13 min of one CPU core (the two CVAEs run side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-checkpoints/strategies}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
$PY -m cvae_core train-base --out "$OUT/base" --steps 3000 --width 128 --layers 3 --weights-dtype float16
$PY -m cvae_core train --model seq_cvae --base-model "$OUT/base" --latent discrete --option K=4 --beta 0.5 \
    --steps 2000 --warm-start 0.3 --weights-dtype float16 --out "$OUT/discrete" --json > "$OUT.discrete.log" 2>&1 &
$PY -m cvae_core train --model seq_cvae --base-model "$OUT/base" --latent continuous --latent-dim 2 --beta 0.5 \
    --steps 1200 --warm-start 0.3 --weights-dtype float16 --out "$OUT/continuous" --json > "$OUT.continuous.log" 2>&1 &
wait %1 && wait %2
tail -n 2 "$OUT.discrete.log" "$OUT.continuous.log"
rm -f "$OUT.discrete.log" "$OUT.continuous.log"
