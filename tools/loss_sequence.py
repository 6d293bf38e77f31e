"""The toy config's loss sequence, bit for bit: the refactoring check of issue 26.

``python tools/loss_sequence.py [--steps 50] [--out FILE]`` trains the toy configuration
(``get_config("toy")``: the 6M-parameter 32×32 HDiT of ``docs/ARCHITECTURE.md``) from its seed
for ``--steps`` steps on the CPU in one thread, writing nothing but the losses, and prints them
(and writes them to ``--out``) as exact float hex (``float.hex``). A behaviour-preserving change
leaves the file byte-identical: compare two runs with ``cmp``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hdit_edu.presets import get_config
from hdit_edu.training import Trainer


def loss_sequence(steps: int) -> list[float]:
    """The first ``steps`` losses of a fresh toy run on the CPU (one thread, no files)."""
    torch.set_num_threads(1)  # a reduction's order may depend on the thread count
    config = get_config("toy")
    config.training.sample_every = 0
    config.training.checkpoint_every = 10**9
    trainer = Trainer(config, None, device="cpu", progress=False)
    return trainer.fit(steps)["losses"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="training steps (default 50)")
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args(argv)
    losses = loss_sequence(args.steps)
    record = {"config": "toy", "steps": args.steps, "losses": [float(x).hex() for x in losses]}
    text = json.dumps(record, indent=1) + "\n"
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
