"""One (configuration, seed) run of the toy ablation experiment — the stage-1 driver's command
line, kept so that the ``command`` in every record stays runnable; the code is
:func:`hdit_edu.ablation.run_toy` (the same config objects, seeds, data order and RNG draws:
bit-identical), and the command line of the whole experiment is ``hdit-edu ablate``.

    OMP_NUM_THREADS=1 python results/ablation-toy/run.py --task p4k3 --config E --seed 0 \
        --train-steps 20000 --sample-steps 50 --out results/ablation-toy/runs

The defaults are the stage-1 driver's (task p2, 20 sampler steps), not the pre-registered ones:
the records pass every setting explicitly. The run folder is
``runs/ablation-toy/<out name>/<config>-s<seed>`` under the repository root.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from hdit_edu.ablation import TOY_EXPERIMENT, ToyBudget, run_toy
from hdit_edu.presets import FOLLOW_UPS, TOY_TASKS

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, choices=(*TOY_EXPERIMENT, *FOLLOW_UPS))
    p.add_argument("--task", default="p2", choices=sorted(TOY_TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=None, help="default: Table 6's 5e-4")
    p.add_argument("--eval-at", default="", help="comma-separated steps of extra evaluations")
    p.add_argument("--n-eval", type=int, default=2048, help="samples of the final evaluation")
    p.add_argument("--n-eval-mid", type=int, default=256, help="samples of extra evaluations")
    p.add_argument("--n-loss", type=int, default=2048, help="test images of the held-out loss")
    p.add_argument("--loss-weighting", default="soft-min-snr")
    p.add_argument("--sampler", default="dpmpp_3m_sde")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--sample-batch", type=int, default=64)
    p.add_argument("--eval-seed", type=int, default=None, help="default 1000 + seed")
    p.add_argument("--out", required=True, help="folder of the result JSON")
    p.add_argument("--tag", default="", help="suffix of the run name (pilot variants)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    args = vars(p.parse_args(argv))
    torch.set_num_threads(1)
    name, seed, out, resume = (args.pop(k) for k in ("config", "seed", "out", "resume"))
    budget = ToyBudget(**{k: v for k, v in args.items()})
    run_dir = os.path.relpath(REPO / "runs" / "ablation-toy" / Path(out).name)
    run_toy(name, seed, out, budget, run_dir=run_dir, resume=resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
