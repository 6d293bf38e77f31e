#!/usr/bin/env bash
# Issue 19: evaluate models C and D (or MODELS) of one SEED cell by cell, alternating models, so
# that a partial run always holds the same cells of both (paired comparisons), the most telling
# cells first. One process at a time, one thread. Resumable (run.py skips finished cells).
#   SEED=0 C_RUN=/work/main/runs/ablation-toy/runs/C-s0 D_RUN=/work/main/runs/ablation-toy/runs/D-s0 \
#     bash results/resolution-toy/run_pair.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
SEED=${SEED:-0}
MODELS=${MODELS:-C D}
N=${N:-512}
OUT=${OUT:-results/resolution-toy/runs}
PY=${PY:-/work/main/.venv/bin/python}
CELLS=${CELLS:-"32-normalised-noshift 64-normalised-noshift 64-grid-noshift 48-normalised-noshift
48-grid-noshift 24-normalised-noshift 24-grid-noshift 64-normalised-shift 64-grid-shift
48-normalised-shift 48-grid-shift 24-normalised-shift 24-grid-shift"}
for cell in $CELLS; do
  for model in $MODELS; do
    run_var="${model}_RUN"
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" results/resolution-toy/run.py \
      --model "$model" --seed "$SEED" --run "${!run_var}" --n "$N" --cells "$cell" --out "$OUT"
  done
done
