#!/usr/bin/env bash
# The pre-registered toy ablation experiment (README.md): 11 configurations × seeds, one run at a
# time, one thread each, seed-major (every configuration at seed 0 first, so that a partial
# experiment still has seed-paired comparisons). Resumable: a run whose JSON is "done" is
# skipped; an unfinished one starts again (runs are bit-identical). The analysis is written
# after every run (runs/summary.json, .md, .png).
#
#   bash results/ablation-toy/run_all.sh            # seeds 0 1 2
#   SEEDS="3 4" CONFIGS="D E" bash results/ablation-toy/run_all.sh
#
# The same experiment in one command: hdit-edu ablate toy --out results/ablation-toy/runs
# (its defaults are the design's; one process for all runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-/work/main/.venv/bin/python}
SEEDS=${SEEDS:-"0 1 2"}
CONFIGS=${CONFIGS:-"E D C B2 B1 A R4 E-add E-concat D-minsnr5 D-minsnr4"}
for seed in $SEEDS; do
  for config in $CONFIGS; do
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" -m hdit_edu.cli ablate \
      toy --configs "$config" --seeds "$seed" --task p4k3 --train-steps 20000 \
      --batch-size 16 --n-eval 2048 --sampler-steps 50 --sampler dpmpp_3m_sde --cfg 3 \
      --sample-batch 64 --n-loss 2048 --loss-weighting soft-min-snr --threads 1 \
      --out results/ablation-toy/runs
  done
done
