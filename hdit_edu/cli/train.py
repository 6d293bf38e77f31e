"""``hdit-edu train``: a config trained with Table 6's recipe (``hdit_edu.training.Trainer``),
resumable, DDP under ``torchrun -m hdit_edu.cli train``."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..configs import Config, apply_overrides, load_config
from ..env import resolve_profile
from ..kinds import CHECKPOINTING_KINDS
from ..presets import get_config
from ..profiles import for_profile
from ..training import (
    RECOVERABLE_FIELDS,
    ConfigChangeError,
    Trainer,
    make_dataset,
)
from .arguments import (
    NON_NEGATIVE,
    POSITIVE,
    add_command,
    add_renamed,
    add_shared,
    check_run_folder,
    check_writable_folder,
    device_arg,
)


def add_train(sub) -> None:
    """``train``: a config with Table 6's recipe into a run folder."""
    train = add_command(
        sub,
        "train",
        cmd_train,
        help="train a model (Table 6's recipe); resumable, DDP under torchrun",
        description="Train a config with Table 6's recipe (AdamW, constant LR, EMA, "
        "soft-min-SNR, stratified sigmas, conditioning dropout). Writes RUN_DIR/config.json, "
        "metrics.jsonl, samples/step-*.png and checkpoints/step-*/ (safetensors + trainer "
        "state). Kill it at any time and continue with --resume: the loss sequence continues "
        "exactly. Multi-GPU / multi-node: `torchrun --nproc_per_node N -m hdit_edu.cli train "
        "...` (one code path; rank 0 writes).",
    )
    train.add_argument(
        "--config",
        help="a config name (toy, imagenet128, ffhq1024, imagenet256, A, B1, B2, C, D, E, "
        "R1-R4, E-add, E-concat; NAME@RES for another resolution) or a JSON file; "
        "with --resume it defaults to RUN_DIR/config.json",
    )
    add_shared(train, "--profile")
    train.add_argument(
        "--steps", type=NON_NEGATIVE, help="train until this step (default: the config's)"
    )
    train.add_argument(
        "--run-dir", help="output folder (default: runs/NAME, runs/NAME-cpu for --profile cpu)"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in RUN_DIR"
    )
    train.add_argument(
        "--resume-from", metavar="CHECKPOINT", help="continue from this checkpoint folder"
    )
    train.add_argument(
        "--fallback",
        action="store_true",
        help="with --resume: if the newest checkpoint is corrupt, use the newest intact one",
    )
    train.add_argument(
        "--allow-change",
        action="append",
        default=[],
        metavar="FIELD",
        help="with --resume: let a recoverable training field differ from the run's config.json "
        "(logged in config-changes.jsonl), e.g. --allow-change training.lr --set "
        f"training.lr=1e-4; allowed: {', '.join('training.' + f for f in RECOVERABLE_FIELDS)}",
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set training.lr=1e-4 --set model.levels.0.depth=1 "
        "--set model.resolution=[32,48] (height, width) (VALUE is JSON; repeatable)",
    )
    train.add_argument(
        "--data", help="training data: 'toy' or an image folder (sets training.dataset)"
    )
    train.add_argument(
        "--grad-accum",
        type=POSITIVE,
        metavar="N",
        help="gradient accumulation: N micro-steps per optimizer step (sets "
        "training.grad_accum; global batch = micro-batch × N × processes)",
    )
    train.add_argument(
        "--checkpointing",
        choices=CHECKPOINTING_KINDS,
        help="activation checkpointing (sets training.checkpointing): recompute each 'level' "
        "or each 'layer' in the backward pass instead of keeping its activations",
    )
    train.add_argument(
        "--check-data",
        action="store_true",
        help="read every image of an image-folder data set before training (names bad files)",
    )
    train.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip unreadable image files (each named in a warning) instead of stopping",
    )
    train.add_argument(
        "--workers",
        type=NON_NEGATIVE,
        default=0,
        help="DataLoader worker processes for image folders",
    )
    add_renamed(
        train, "--sampler-steps", "--sample-steps", type=POSITIVE, metavar="N",
        help="sampler steps of the periodic sample grids (default: 50 of DPM++(3M) SDE; a "
        "DDPM run, R1: 250 of DiT's ancestral sampler)",
    )  # fmt: skip
    train.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard event files to RUN_DIR/tensorboard (training.tensorboard)",
    )
    train.add_argument(
        "--wandb",
        action="store_true",
        help="also log to an offline Weights & Biases run in RUN_DIR/wandb (training.wandb)",
    )
    train.add_argument(
        "--device",
        type=device_arg,
        help="torch device (default: cuda:LOCAL_RANK if available, else cpu)",
    )
    add_shared(train, "--backend")
    add_shared(train, "--no-progress")


# ----------------------------------------------------------------------------------------------
# Config helpers
# ----------------------------------------------------------------------------------------------


def train_config(args: argparse.Namespace, profile: str) -> Config:
    """The config ``hdit-edu train`` trains: ``--config`` (or the run's config.json with
    ``--resume``) in ``profile``, then ``--set``, ``--data``, ``--steps``, ``--grad-accum``,
    ``--checkpointing``, ``--tensorboard``, ``--wandb``; validated."""
    resume = args.resume_from or args.resume
    if args.config is None:
        if not (resume and args.run_dir):
            raise ValueError("train needs --config NAME|PATH (or --resume with --run-dir)")
        check_run_folder("--run-dir", args.run_dir)
        config = load_config(Path(args.run_dir) / "config.json")
    else:
        config = for_profile(get_config(args.config), profile)
    try:
        config = apply_overrides(config, args.set)
    except ValueError as e:
        raise ValueError(f"--set {e}") from None
    if args.data:
        config.training.dataset = args.data
    if args.steps is not None:
        config.training.steps = args.steps
    if args.grad_accum is not None:
        config.training.grad_accum = args.grad_accum
    if args.checkpointing is not None:
        config.training.checkpointing = args.checkpointing
    config.training.tensorboard |= args.tensorboard
    config.training.wandb |= args.wandb
    config.validate()
    return config


def cmd_train(args: argparse.Namespace) -> int:
    profile = resolve_profile(args.profile)
    resume = args.resume_from or args.resume
    if args.allow_change and not resume:
        raise ValueError("--allow-change applies to --resume / --resume-from only")
    config = train_config(args, profile)
    suffix = "-cpu" if profile == "cpu" and args.config else ""
    run_dir = Path(args.run_dir or f"runs/{config.name}{suffix}")
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--run-dir {str(run_dir)!r} is a file; allowed: a folder")
    check_writable_folder("--run-dir", run_dir)
    # --resume-from: a missing checkpoint is named by the run folder (runfolder.RunFolder)
    dataset = None
    if config.training.dataset != "toy":
        dataset = make_dataset(config, on_error="skip" if args.skip_bad_images else "raise")
        if args.check_data:
            skipped = dataset.verify()
            print(f"checked {len(dataset) + len(skipped)} images: {len(skipped)} skipped")
    try:
        trainer = Trainer(
            config,
            run_dir,
            resume=resume,
            fallback=args.fallback,
            allow_change=args.allow_change,
            dataset=dataset,
            device=args.device,
            progress=not args.no_progress,
            num_workers=args.workers,
            sample_steps=args.sampler_steps,
            attention_backend=args.backend,
        )
    except ConfigChangeError as e:
        if not e.recoverable or e.refused:
            raise
        argv = [*args.argv, "--allow-change", ",".join(e.recoverable)]
        raise ValueError(f"{e}. The command that does it:\n  hdit-edu {shlex.join(argv)}") from None
    summary = trainer.fit()
    if trainer.dist.is_main:
        first, last = summary["loss_first"], summary["loss_last"]
        losses = f"loss {first:.4f} -> {last:.4f}" if first is not None else "no steps to run"
        print(
            f"{config.name}: step {summary['final_step']} ({summary['steps']} steps in "
            f"{summary['time_s']:.1f} s, {losses}); run dir {run_dir}"
        )
    return 0
