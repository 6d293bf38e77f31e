"""Check that a retrained toy run is the shipped record's run: every logged training loss and
the final evaluation's numbers equal (``==``), so its checkpoint is the one the record was
made with. Used when a new machine retrains issue 19's C and D checkpoints (git-ignored)
from the toy ablation's recipe before evaluating them at other sizes.

    python results/resolution-toy/same_as_record.py RETRAINED.json \\
        results/ablation-toy/runs/C-s1.json

Exit status 0 and one line when they are equal; 1 and the differing fields otherwise, with
both runs' CPUs, the first step whose loss differs and the final numbers side by side (runs
repeat bit for bit on one CPU kind only: ``hdit_edu.ablation.CROSS_CPU_RTOL``). Timings, load
averages, dates and paths are not compared.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# the fields that depend only on the recipe, the seed and the arithmetic
LOSSES = ("losses_first_steps", "loss_every_10")
FINAL = ("step", "n_samples", "fid", "class_accuracy", "class_accuracy_per_class", "heldout_loss")


def differences(new: dict, record: dict) -> list[str]:
    """The fields in which ``new`` differs from ``record`` (empty: the same run)."""
    diff = [f for f in ("config", "seed", "params", *LOSSES) if new[f] != record[f]]
    diff += [f"final.{f}" for f in FINAL if new["final"][f] != record["final"][f]]
    return diff


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(__doc__)
        return 2
    new, record = (json.loads(Path(a).read_text()) for a in args)
    diff = differences(new, record)
    name = record["name"]
    if diff:
        print(f"{name}: differs from the record in {', '.join(diff)}")
        pairs = list(zip(new["losses_first_steps"], record["losses_first_steps"]))
        step = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
        if step is not None:
            a, b = pairs[step]
            print(
                f"  first loss difference at step {step}: {a!r} vs {b!r} (relative {abs(a - b) / abs(b):.2g})"
            )
        print(
            f"  CPU: {new['versions'].get('cpu')!r} vs the record's {record['versions'].get('cpu')!r}"
        )
        for f in ("fid", "class_accuracy", "heldout_loss"):
            print(f"  final {f}: {new['final'][f]!r} vs {record['final'][f]!r}")
        return 1
    n = len(new["loss_every_10"]) + len(new["losses_first_steps"])
    f = new["final"]
    print(
        f"{name}: same run as the record ({n} logged losses equal; final toy FID "
        f"{f['fid']!r}, class accuracy {f['class_accuracy']!r}, held-out loss "
        f"{f['heldout_loss']!r} equal)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
