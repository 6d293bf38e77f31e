"""Evaluation settings on one trained pilot model: sampler × steps × guidance scale → class
accuracy, toy FID (against the test split) and the CPU time of sampling. Chooses the
evaluation protocol that the experiment pre-registers (cost against fidelity).

    OMP_NUM_THREADS=1 python results/ablation-toy/sampler_study.py runs/ablation-toy/pilot/E-s0 \
        --n 512 --settings dpmpp_3m_sde:10:3 dpmpp_2m:10:3 dpmpp_2m:20:3 dpmpp_3m_sde:20:2 \
        --out results/ablation-toy/pilot/sampler_study-E-s0.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from hdit_edu.protocol import EvalProtocol, evaluate
from hdit_edu.runs import load_run

torch.set_num_threads(1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--settings", nargs="+", required=True, help="sampler:steps:cfg")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    config, denoiser = load_run(args.run_dir)
    rows = []
    for setting in args.settings:
        sampler, steps, cfg = setting.split(":")
        protocol = EvalProtocol(args.n, sampler, int(steps), float(cfg), args.batch)
        metrics, _, _ = evaluate(denoiser, config, protocol, args.seed)
        row = {"sampler": sampler, "steps": int(steps), "cfg": float(cfg), "n": args.n}
        row |= {k: metrics[k] for k in ("sample_s", "sample_cpu_s", "class_accuracy", "fid")}
        row["load_average"] = list(os.getloadavg())
        print(json.dumps(row), flush=True)
        rows.append(row)
        Path(args.out).write_text(
            json.dumps({"run_dir": args.run_dir, "seed": args.seed, "rows": rows}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
