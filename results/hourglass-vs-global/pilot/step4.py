"""Pilot step 4 of issue 30 (README "Pilot plan"): on one 128² pilot checkpoint, the spread of
detail distance and class accuracy over noise seeds 1000–1002 at n = 64 and 128, and the
sampling's CPU-seconds; 25 steps of DPM++(3M) SDE, w = 1, one thread.

    python results/hourglass-vs-global/pilot/step4.py RUN_DIR   # prints a JSON row per (n, seed)
"""

import json
import sys

import torch

from hdit_edu.protocol import EvalProtocol, evaluate
from hdit_edu.runs import load_run

KEYS = ("detail_distance", "class_accuracy", "coherence", "fid", "sample_s", "sample_cpu_s")

if __name__ == "__main__":
    torch.set_num_threads(1)
    config, denoiser = load_run(sys.argv[1])
    for n in (64, 128):
        for seed in (1000, 1001, 1002):
            protocol = EvalProtocol(n, steps=25, cfg=1.0, data="toy-detail",
                                    classifier="data/toy_detail_classifier/128")  # fmt: skip
            metrics = evaluate(denoiser, config, protocol, seed)[0]
            row = {"n": n, "noise_seed": seed} | {k: metrics[k] for k in KEYS}
            print(json.dumps(row), flush=True)
