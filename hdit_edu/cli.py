"""The ``hdit-edu`` command line.

``hdit-edu`` alone prints its help and an environment report (torch, device, NATTEN).
Subcommands: ``env`` (the report). Training, sampling, FID, ablations, FLOPs and conversion
are added by their modules' issues (see README.md).
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hdit-edu",
        description="Hourglass Diffusion Transformers (Crowson et al., ICML 2024): "
        "train, sample and study HDiT from the command line.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    env = sub.add_parser("env", help="print the environment report (torch, device, NATTEN)")
    env.set_defaults(func=_cmd_env)
    return parser


def _cmd_env(args: argparse.Namespace) -> int:
    from .env import format_report

    print(format_report())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        print("\nenvironment:")
        return _cmd_env(args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
