"""Bit-identical rerun check: train the first ``--steps`` steps of a recorded run again (its
config from the run JSON, CPU, one thread) and compare every step's loss with the record.

    OMP_NUM_THREADS=1 python results/ablation-toy/prefix_check.py results/ablation-toy/pilot/E-s0.json
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from hdit_edu.configs import Config
from hdit_edu.training import Trainer

torch.set_num_threads(1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_json")
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args(argv)
    record = json.loads(open(args.run_json).read())
    recorded = record["losses_first_steps"][: args.steps]
    trainer = Trainer(Config.from_dict(record["config"]), None, progress=False, device="cpu")
    rerun = [trainer.train_step() for _ in range(len(recorded))]
    same = [a == b for a, b in zip(rerun, recorded)]
    print(
        json.dumps(
            {
                "run": args.run_json,
                "steps": len(recorded),
                "identical": all(same),
                "first_difference": None if all(same) else same.index(False),
                "max_abs_difference": max(abs(a - b) for a, b in zip(rerun, recorded)),
            }
        )
    )
    return 0 if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
