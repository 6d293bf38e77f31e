"""``hdit-edu env``, ``flops`` and ``plan``: the environment report, a config's FLOPs per forward
pass (App. A, Table 1) and the paper-scale training plan (``hdit_edu.planner``)."""

from __future__ import annotations

import argparse
import json

from ..configs import at_resolution, normalize_resolution
from ..env import format_report
from ..flops import analytic_breakdown, analytic_gflops, count_gflops
from ..planner import format_plan, plan
from ..planner.time_model import GPUS, KERNEL_PATHS
from ..presets import get_config
from .arguments import (
    POSITIVE,
    add_command,
    finite_float,
    resolution_arg,
)


def add_env(sub) -> None:
    """``env``: the environment report."""
    add_command(sub, "env", cmd_env, help="print the environment report (torch, device, NATTEN)")


def add_flops(sub) -> None:
    """``flops``: GFLOPs per forward pass of a config."""
    flops = add_command(
        sub,
        "flops",
        cmd_flops,
        help="GFLOPs per forward pass of a config (App. A, Table 1)",
        description="Count the FLOPs of one forward pass (batch 1) with fvcore, attention "
        "included, and print the per-module breakdown.",
    )
    flops.add_argument(
        "--config", required=True, help="a config name (NAME@RES allowed) or a JSON file"
    )
    flops.add_argument(
        "--resolution",
        type=resolution_arg,
        help="image size N (N×N) or HxW, e.g. 256x512 (default: the config's; levels adapt as "
        "App. A)",
    )
    flops.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_plan(sub) -> None:
    """``plan``: micro-batch, accumulation, checkpointing, memory and time at paper scale."""
    plan = add_command(
        sub,
        "plan",
        cmd_plan,
        help="plan paper-scale training: micro-batch, accumulation, checkpointing, memory, time",
        description="For a config's global batch on N GPUs of M GiB: the per-GPU micro-batch, "
        "gradient-accumulation steps and activation checkpointing that fit, the predicted peak "
        "memory by part (weights, gradients, AdamW moments, EMA, activations per image) and "
        "the days as a range, each number beside its assumption: utilisation calibrated on "
        "the paper's two reported runs (App. E), the GPU's speed-up over the A100, the "
        "batch-size schedule, the kernel path and the measured data loader (hdit_edu.planner, "
        "hdit_edu.planner.time_model).",
    )
    plan.add_argument("--config", required=True, help="a config name or a JSON file")
    plan.add_argument("--gpus", type=POSITIVE, default=8, help="number of GPUs (default: 8)")
    plan.add_argument(
        "--gpu-memory",
        type=finite_float(0.0, open_low=True),
        default=80.0,
        help="memory per GPU in GiB (default: 80)",
    )
    plan.add_argument(
        "--precision", choices=("bf16", "fp32"), help="default: the config's (Table 6: bf16)"
    )
    plan.add_argument(
        "--gpu", choices=sorted(GPUS), default="H100", help="the GPU kind (default: H100)"
    )
    plan.add_argument(
        "--mfu",
        type=finite_float(0.0, open_low=True),
        help="model FLOPs utilisation on this GPU; overrides the calibration (default: "
        "calibrated on the paper's runs, a range)",
    )
    plan.add_argument(
        "--peak-tflops",
        type=finite_float(0.0, open_low=True),
        help="dense bf16 TFLOP/s of one GPU (default: the --gpu's; H100/H200 SXM 989, A100 312)",
    )
    plan.add_argument(
        "--kernel-path",
        choices=sorted(KERNEL_PATHS),
        default="natten",
        help="the neighborhood-attention kernels the run uses (default: natten)",
    )
    plan.add_argument(
        "--workers", type=POSITIVE, default=1, help="data-loader workers per GPU (default: 1)"
    )
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cmd_env(args: argparse.Namespace) -> int:
    print(format_report())
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    result = plan(
        get_config(args.config),
        args.gpus,
        args.gpu_memory,
        args.precision,
        mfu=args.mfu,
        peak_tflops=args.peak_tflops,
        gpu=args.gpu,
        kernel_path=args.kernel_path,
        loader_workers=args.workers,
    )
    print(json.dumps(result.to_dict(), indent=1) if args.json else format_plan(result))
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    config = get_config(args.config)
    if args.resolution:
        config = at_resolution(config, args.resolution)  # App. A: one level per doubling
    res = config.model.resolution
    height, width = normalize_resolution(res)
    result = {
        "config": config.name,
        "resolution": res,
        "gflops": count_gflops(config, res),
        "analytic_gflops": analytic_gflops(config, res),
        "by_level": {str(k): v for k, v in analytic_breakdown(config, res, by="level").items()},
        "by_kind": analytic_breakdown(config, res, by="kind"),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(
        f"{config.name} at {height}x{width}: {result['gflops']:.2f} GFLOP per forward pass "
        f"(fvcore; closed form {result['analytic_gflops']:.2f}; 1 FLOP = 1 multiply-add)"
    )
    print("by level (closed form; None = conditioning path):")
    for level, value in result["by_level"].items():
        print(f"  level {level:<6s} {value:10.3f}")
    print("by kind (closed form):")
    for kind, value in result["by_kind"].items():
        print(f"  {kind:<12s} {value:10.3f}")
    return 0
