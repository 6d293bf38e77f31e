"""Rerun check: train the first ``--steps`` steps of a recorded run again (the config
:func:`hdit_edu.ablation.run_config` builds for it, checked against the record; CPU, one
thread) and compare every step's loss with the record (:func:`hdit_edu.ablation.rerun_prefix`):
``==`` at every step on the record's CPU kind, within ``CROSS_CPU_RTOL`` on another.

    OMP_NUM_THREADS=1 python results/ablation-toy/prefix_check.py results/ablation-toy/runs/E-s0.json
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from hdit_edu.ablation import rerun_prefix


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_json")
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with open(args.run_json) as f:
        result = rerun_prefix(json.load(f), args.steps)
    keep = ("steps", "identical", "first_difference", "max_abs_difference",
            "max_rel_difference", "cpu", "recorded_cpu", "same_cpu", "reproduced", "seconds")  # fmt: skip
    print(json.dumps({"run": args.run_json} | {k: result[k] for k in keep}))
    return 0 if result["reproduced"] else 1


if __name__ == "__main__":
    sys.exit(main())
