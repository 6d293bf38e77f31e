"""The pre-registered analysis of the toy ablation experiment (README.md, "Analysis") — kept as
a command for the stage-1 instructions; the code is :func:`hdit_edu.ablation.write_summary`
(``hdit-edu ablate --analyze``).

    python results/ablation-toy/analyze.py results/ablation-toy/runs [--out summary.json]

Writes the summary JSON (default ``FOLDER/summary.json``), its Markdown and figure beside it,
and prints the Markdown.
"""

from __future__ import annotations

import argparse
import sys

from hdit_edu.ablation import write_summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("--out", default=None, help="summary JSON (Markdown and PNG go next to it)")
    args = p.parse_args(argv)
    print(write_summary(args.folder, args.out)["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
