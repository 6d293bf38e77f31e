"""The ``hdit-edu`` command line: train, sample, FID, the ablation chain, FLOPs, conversion, data.

``hdit-edu`` alone prints its help and an environment report (torch, device, NATTEN). It is
the one command line of the package:

    hdit-edu train  --config toy --profile cpu --steps 2000          # a tiny toy-set run
    hdit-edu train  --config imagenet128 --run-dir runs/e --resume   # Table 6, continue a run
    torchrun --nproc_per_node 8 -m hdit_edu.cli train --config ffhq1024   # multi-GPU (DDP)
    hdit-edu sample --run runs/toy-cpu --n 64 --sampler-steps 50 --out grid.png
    hdit-edu sample --run runs/toy-cpu --n 64 --resolution 64 --positions grid --shift   # at 64²
    hdit-edu fid    --run runs/toy-cpu --n 1000                       # toy extractor, offline
    hdit-edu ablate toy --configs D,E --seeds 0,1,2                   # the toy experiment
    hdit-edu ablate toy --analyze --out results/ablation-toy/runs     # its analysis
    hdit-edu ablate paper --data IMAGENET128 --eval-data VAL          # the paper's chain
    hdit-edu study run results/my-study/study.toml --workers 2        # a pre-registered study
    hdit-edu flops  --config E --resolution 256                       # GFLOPs per forward
    hdit-edu flops  --config E --resolution 256x512                   # … of a rectangular size
    hdit-edu convert from-k-diffusion KD.safetensors -o runs/kd       # authors' checkpoints
    hdit-edu prepare FFHQ ffhq1024 --resolution 1024 --flat           # decode-fast copy (once)
    hdit-edu data make-toy OUT --n 1024                               # the toy set as PNGs
    hdit-edu data preview data/toy_preview.png                        # its preview grid
    hdit-edu data check DIR                                           # read every image now
    hdit-edu classifier train                                         # runs/toy_classifier/
    hdit-edu fid-folders A B                                          # FID/KID of two folders

Every flag value is checked against its domain before any work (the message names the flag
and what is allowed); bad input, corrupt run-folder files and full disks end with a one-line
error (exit status 2, or 1 for a failed write), never a traceback.

A flag says what it counts: ``--steps`` is training steps, ``--sampler-steps`` sampler steps,
``--configs`` configurations. The old spellings (``sample``/``fid --steps``, ``train``/``ablate
--sample-steps``, ``ablate --steps``, ``ablate --profile cpu|gpu``) still work for one release,
each with a deprecation message on stderr that names the new one.

Profiles (as in the notebooks): ``gpu`` is the config as the paper sets it; ``cpu`` moves it
onto the 32×32 toy data set with tiny widths (:func:`hdit_edu.profiles.to_toy_scale`: the same
kinds of attention, FFN, position embedding, skip and loss weighting, small sizes).
"""

from __future__ import annotations

import argparse
import sys

from ..toy import MissingWeightsError
from ..training import NonFiniteLossError
from . import ablate, convert, data, info, sample, study, train

# The subcommands in the order `hdit-edu --help` lists them.
COMMANDS = (
    info.add_env,
    train.add_train,
    sample.add_sample,
    sample.add_fid,
    ablate.add_ablate,
    study.add_study,
    info.add_flops,
    info.add_plan,
    sample.add_fid_folders,
    convert.add_convert,
    data.add_prepare,
    data.add_data,
    data.add_classifier,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``hdit-edu`` parser: one sub-parser per command, added by its group's module."""
    parser = argparse.ArgumentParser(
        prog="hdit-edu",
        description="Hourglass Diffusion Transformers (Crowson et al., ICML 2024): "
        "train, sample and study HDiT from the command line.",
        epilog="Run `hdit-edu COMMAND --help` for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``hdit-edu ARGV``; returns the exit status (bad input: a one-line error, status 2)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = ablate.legacy_argv(argv)  # `ablate --profile …`: deprecated, one more release
    except ValueError as e:
        print(f"hdit-edu ablate: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        print("\nenvironment:")
        return info.cmd_env(args)
    try:
        return args.func(args)
    except ValueError as e:  # bad input or a corrupt file: a message, not a traceback
        print(f"hdit-edu {args.command}: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"hdit-edu {args.command}: stopped: {e}", file=sys.stderr)
        return 3
    except MissingWeightsError as e:
        print(f"hdit-edu {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, permissions: what was being written, no traceback
        print(f"hdit-edu {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hdit-edu {args.command}: interrupted", file=sys.stderr)
        return 130

