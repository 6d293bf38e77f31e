"""``hdit-edu convert``: k-diffusion ``image_transformer_v2`` checkpoints to hdit-edu runs and
back (``hdit_edu.interop``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..conversion import convert_from_k_diffusion, convert_to_k_diffusion
from ..interop import CONVERT_DIRECTIONS, KD_MODEL_TYPE
from .arguments import (
    add_command,
    check_output_file,
)


def add_convert(sub) -> None:
    """``convert from-k-diffusion|to-k-diffusion``."""
    convert = add_command(
        sub,
        "convert",
        cmd_convert,
        help="convert k-diffusion image_transformer_v2 checkpoints to hdit-edu runs and back",
        description=(
            "from-k-diffusion: a k-diffusion checkpoint (.pth training checkpoint, or "
            ".safetensors inference checkpoint with its config in the metadata) → an hdit-edu "
            "run directory (config.json + checkpoints/step-N/{model,ema}.safetensors) that "
            "hdit_edu.runs.load_run and `hdit-edu sample` read. to-k-diffusion: an hdit-edu "
            "run directory, checkpoint folder or .safetensors weights file (with --config) → "
            "a k-diffusion inference checkpoint (.safetensors with the config in the metadata, "
            "as k-diffusion's convert_for_inference.py writes) or a .pth {config, model_ema}."
        ),
    )
    convert.add_argument("direction", choices=CONVERT_DIRECTIONS)
    convert.add_argument("source", type=Path, help="the checkpoint (or run directory) to convert")
    convert.add_argument(
        "-o", "--output", type=Path, required=True, help="the output run dir / checkpoint file"
    )
    convert.add_argument(
        "--config",
        type=Path,
        help="the source's config JSON (k-diffusion's, or ours); default: the one stored with "
        "the source",
    )
    convert.add_argument(
        "--weights",
        choices=("ema", "model"),
        default="ema",
        help="to-k-diffusion: which weights of an hdit-edu run to export (default: ema); "
        "from-k-diffusion converts both (model → model, model_ema → ema)",
    )
    convert.add_argument(
        "--force",
        action="store_true",
        help="to-k-diffusion: replace an existing output file (default: refuse)",
    )
    convert.add_argument(
        "--strict",
        action="store_true",
        help="fail on k-diffusion diffusion/training options hdit-edu cannot represent "
        "(default: warn and use hdit-edu's defaults; model options are always strict)",
    )


def cmd_convert(args: argparse.Namespace) -> int:
    if args.direction == "from-k-diffusion":
        output = convert_from_k_diffusion(
            args.source, args.output, config=args.config, strict=args.strict
        )
        print(f"wrote hdit-edu run {output} (config.json + checkpoints/)")
    else:
        check_output_file(
            "-o", args.output, (".safetensors", ".pth", ".pt"), what="a k-diffusion checkpoint",
            force=args.force,
        )  # fmt: skip
        output = convert_to_k_diffusion(
            args.source, args.output, config=args.config, weights=args.weights
        )
        print(f"wrote k-diffusion {KD_MODEL_TYPE} checkpoint {output} ({args.weights} weights)")
    return 0
