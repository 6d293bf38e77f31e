"""The ``hdit-edu`` command line: train, sample, FID, the ablation chain, FLOPs, conversion, data.

``hdit-edu`` alone prints its help and an environment report (torch, device, NATTEN). It is
the one command line of the package:

    hdit-edu train  --config toy --profile cpu --steps 2000          # a tiny toy-set run
    hdit-edu train  --config imagenet128 --run-dir runs/e --resume   # Table 6, continue a run
    torchrun --nproc_per_node 8 -m hdit_edu.cli train --config ffhq1024   # multi-GPU (DDP)
    hdit-edu sample --run runs/toy-cpu --n 64 --out grid.png
    hdit-edu sample --run runs/toy-cpu --n 64 --resolution 64 --positions grid --shift   # at 64²
    hdit-edu fid    --run runs/toy-cpu --n 1000                       # toy extractor, offline
    hdit-edu ablate --profile cpu --steps D,E --seeds 0,1,2           # the toy experiment
    hdit-edu ablate --profile cpu --analyze --out results/ablation-toy/runs   # its analysis
    hdit-edu flops  --config E --resolution 256                       # GFLOPs per forward
    hdit-edu flops  --config E --resolution 256x512                   # … of a rectangular size
    hdit-edu convert from-k-diffusion KD.safetensors -o runs/kd       # authors' checkpoints
    hdit-edu prepare FFHQ ffhq1024 --resolution 1024 --flat           # decode-fast copy (once)
    hdit-edu data make-toy OUT --n 1024                               # the toy set as PNGs
    hdit-edu data preview data/toy_preview.png                        # its preview grid
    hdit-edu data check DIR                                           # read every image now
    hdit-edu classifier train                                         # data/toy_classifier/
    hdit-edu fid-folders A B                                          # FID/KID of two folders

Every flag value is checked against its domain before any work (the message names the flag
and what is allowed); bad input, corrupt run-folder files and full disks end with a one-line
error (exit status 2, or 1 for a failed write), never a traceback.

Profiles (as in the notebooks): ``gpu`` is the config as the paper sets it; ``cpu`` moves it
onto the 32×32 toy data set with tiny widths (:func:`hdit_edu.profiles.to_toy_scale`: the same
kinds of attention, FFN, position embedding, skip and loss weighting, small sizes).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from PIL import Image

from . import evaluation
from .ablation import (
    PAPER_CHAIN,
    TOY_EXPERIMENT,
    ToyBudget,
    run_ablation,
    run_toy_experiment,
    train_command,
    write_summary,
)
from .attention import NA_BACKENDS
from .checkpoints import writing
from .configs import (
    Config,
    at_resolution,
    format_resolution,
    load_config,
    normalize_resolution,
    parse_resolution,
)
from .data import ImageFolderDataset, prepare_image_folder, save_grid
from .env import format_report, resolve_profile
from .flops import analytic_breakdown, analytic_gflops, count_gflops
from .interop import (
    CONVERT_DIRECTIONS,
    KD_MODEL_TYPE,
    convert_from_k_diffusion,
    convert_to_k_diffusion,
)
from .kinds import CHECKPOINTING_KINDS, LOSS_WEIGHTINGS
from .presets import FOLLOW_UPS, TOY_TASKS, get_config
from .profiles import for_profile
from .resolution import generate_at, sampling_config
from .rope import POSITION_READINGS
from .runs import load_run
from .sampling import SAMPLERS, grid_columns, sample_labels
from .toy import (
    SPLITS,
    TOY_CLASSES,
    TOY_CLASSIFIER_DIR,
    MissingWeightsError,
    ToyDataset,
    class_accuracy,
    make_toy_folder,
    toy_grid,
    train_toy_classifier,
)
from .training import (
    RECOVERABLE_FIELDS,
    ConfigChangeError,
    NonFiniteLossError,
    Trainer,
    make_dataset,
)

PROFILE_HELP = (
    "'gpu': the config as the paper sets it; 'cpu': the same kinds of choices on the 32x32 toy "
    "set at tiny sizes (minutes on 2 cores); 'auto' (default): gpu when CUDA is available "
    "(the HDIT_PROFILE environment variable overrides)"
)


# ----------------------------------------------------------------------------------------------
# Flag domains: one checker per kind, applied by argparse before any work (the message names
# the flag and the allowed range)
# ----------------------------------------------------------------------------------------------


def int_at_least(minimum: int):
    """An argparse ``type``: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def finite_float(minimum: float = -math.inf, *, open_low: bool = False):
    """An argparse ``type``: a finite number >= ``minimum`` (> with ``open_low``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        low_ok = value > minimum if open_low else value >= minimum
        if not (math.isfinite(value) and low_ok):
            bound = "" if minimum == -math.inf else f" {'>' if open_low else '>='} {minimum:g}"
            raise argparse.ArgumentTypeError(f"got {text!r}; allowed: a finite number{bound}")
        return value

    parse.__name__ = "finite number"
    return parse


def name_list(allowed: tuple[str, ...]):
    """An argparse ``type``: comma-separated names, each one of ``allowed``."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if n not in allowed]
        if not names or bad:
            raise argparse.ArgumentTypeError(
                f"got {text!r}; allowed: comma-separated names of {', '.join(allowed)}"
            )
        return names

    parse.__name__ = "list of names"
    return parse


def int_list(minimum: int):
    """An argparse ``type``: comma-separated distinct integers, each >= ``minimum``."""
    one = int_at_least(minimum)

    def parse(text: str) -> list[int]:
        try:
            values = [one(v.strip()) for v in text.split(",")]
        except argparse.ArgumentTypeError:
            values = None
        if not values or len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(
                f"got {text!r}; allowed: comma-separated distinct integers >= {minimum}, e.g. 0,1,2"
            )
        return values

    parse.__name__ = f"list of integers >= {minimum}"
    return parse


def resolution_arg(text: str) -> int | tuple[int, int]:
    """An argparse ``type``: an image size ``N`` (N×N) or ``HxW`` (:func:`parse_resolution`)."""
    try:
        return parse_resolution(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"got {text!r}; allowed: a positive integer N (N×N) or HxW, e.g. 256x512"
        ) from None


def device_arg(text: str) -> str:
    """An argparse ``type``: a torch device this machine has (``cuda`` only with a GPU)."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"got {text!r}; allowed: cpu, cuda, cuda:N, mps (a torch device name)"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(
                f"got {text!r} but CUDA is not available here (no GPU visible to torch "
                f"{torch.__version__}); allowed: cpu"
            )
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(
                f"got {text!r}; allowed: cuda:0 … cuda:{count - 1} ({count} GPUs visible)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"got {text!r} but MPS is not available; allowed: cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: cpu, cuda, cuda:N, mps")
    return text


def check_output_file(flag: str, path: str | Path) -> Path:
    """Refuse, before any work, an output file path that is a folder or cannot be written:
    the nearest existing ancestor must be a folder in which a file can be created."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a folder; allowed: a file path")
    check_writable_folder(flag, path.parent, path)
    return path


def check_writable_folder(flag: str, folder: str | Path, shown: str | Path | None = None) -> None:
    """The folder (or its nearest existing ancestor, where it will be created) must be a
    folder in which this process can create files."""
    shown = str(shown if shown is not None else folder)
    ancestor = Path(folder).absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{flag} {shown!r}: {str(ancestor)!r} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as e:
        raise ValueError(
            f"{flag} {shown!r}: cannot write in {str(ancestor)!r} ({e.strerror})"
        ) from None


def check_run_folder(flag: str, path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r}: no such run folder (written by `hdit-edu train`)")
    return path


POSITIVE = int_at_least(1)
NON_NEGATIVE = int_at_least(0)
FINITE = finite_float()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is None/False or the help already names it."""

    def _get_help_string(self, action):
        unset = action.default is None or action.default is False or action.default == []
        if unset or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hdit-edu",
        description="Hourglass Diffusion Transformers (Crowson et al., ICML 2024): "
        "train, sample and study HDiT from the command line.",
        epilog="Run `hdit-edu COMMAND --help` for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_command(sub, "env", _cmd_env, help="print the environment report (torch, device, NATTEN)")

    # --- train ---------------------------------------------------------------------------------
    train = _add_command(
        sub,
        "train",
        _cmd_train,
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
    _add_shared(train, "--profile")
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
    train.add_argument(
        "--sample-steps",
        type=POSITIVE,
        default=50,
        help="sampler steps of the periodic sample grids",
    )
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
    _add_shared(train, "--backend")
    _add_shared(train, "--no-progress")

    # --- sample --------------------------------------------------------------------------------
    sample = _add_command(
        sub,
        "sample",
        _cmd_sample,
        help="draw samples from a run's EMA weights into a PNG grid",
        description="Load RUN's config.json and the EMA weights of its newest checkpoint, draw "
        "N samples (Table 6: 50 steps of DPM++(3M) SDE) and write them as one PNG grid.",
    )
    _add_shared(sample, "--run")
    sample.add_argument("--n", type=POSITIVE, default=16, help="number of samples")
    _add_sampling_args(sample)
    sample.add_argument("--out", help="output PNG (default: RUN/samples/sample-SEED.png)")
    sample.add_argument("--nrow", type=POSITIVE, help="images per row of the grid")
    sample.add_argument(
        "--resolution",
        type=resolution_arg,
        help="sample at this size, N or HxW (default: the training size); must divide into "
        "every level's token grid and fit its kernels (hdit_edu.resolution)",
    )
    sample.add_argument(
        "--positions",
        default="normalised",
        choices=POSITION_READINGS,
        help="how positions are read at another size: normalised (the training range [-1, 1]; "
        "the additive table resized bicubically; default), grid (units of the training grid: "
        "extrapolation; the additive table border-padded), fixed (no resizing: the training "
        "size only)",
    )
    sample.add_argument(
        "--shift",
        action="store_true",
        help="warp the σ schedule by the resolution shift of the interpolated-cosine density",
    )

    # --- fid -----------------------------------------------------------------------------------
    fid = _add_command(
        sub,
        "fid",
        _cmd_fid,
        help="FID/KID of a run's samples (toy extractor offline, Inception online)",
        description="Draw N samples from RUN and compute FID (and KID) against a reference "
        "through clean-fid. Toy-set runs default to the toy classifier's features against the "
        "toy test split (offline); --extractor inception uses clean-fid's Inception (a "
        "download), optionally --mode legacy_tensorflow to match the paper's ADM evaluator.",
    )
    _add_shared(fid, "--run")
    fid.add_argument(
        "--n", type=int_at_least(2), default=1000, help="number of samples (FID needs >= 2)"
    )
    fid.add_argument(
        "--ref",
        default="toy",
        help="reference: 'toy' (the toy test split), an image folder, or clean-fid statistics "
        "NAME:RES:SPLIT (e.g. ffhq:1024:trainval70k)",
    )
    fid.add_argument(
        "--extractor", default="toy", choices=("toy", "inception"), help="feature extractor"
    )
    fid.add_argument(
        "--mode", default="clean", choices=("clean", "legacy_tensorflow"), help="clean-fid mode"
    )
    fid.add_argument("--kid", action="store_true", help="also compute KID")
    _add_sampling_args(fid)
    fid.add_argument("--json", help="also write the result as JSON to this file")

    # --- ablate --------------------------------------------------------------------------------
    ablate = _add_command(
        sub,
        "ablate",
        _cmd_ablate,
        help="the ablation chain (Tables 1, 2, 5): the toy experiment (cpu) or the paper's (gpu)",
        description="--profile cpu: the toy ablation experiment of results/ablation-toy "
        "(pre-registered design; the defaults are its budget): for every seed and configuration, "
        "train on the CPU, evaluate the EMA model (toy FID against the held-out test split, "
        "class accuracy of the samples, held-out loss under one common weighting) and write "
        "OUT/CONFIG-sSEED.json and .png; a finished run is skipped, an unfinished one starts "
        "again (runs are bit-identical on one CPU kind). Then the analysis (paired t CIs, "
        "Holm, sign vs the paper, Kendall's tau) goes to SUMMARY (.json, .md, .png). "
        "--profile gpu: the paper's "
        "ImageNet-128 chain, trained on --data and measured on the held-out --eval-data "
        "(RUN_DIR/results.json, results.md); --print-torchrun N prints the multi-GPU command of "
        "each step instead.",
    )
    ablate.add_argument(
        "--steps",
        type=name_list((*PAPER_CHAIN, *FOLLOW_UPS)),
        help=f"comma-separated configurations (cpu: {','.join(TOY_EXPERIMENT)}, the default; "
        "gpu: "
        f"also R1-R3; default A,B1,B2,C,D,E)",
    )
    _add_shared(ablate, "--profile")
    ablate.add_argument(
        "--train-steps",
        type=POSITIVE,
        help=f"training steps per run (default: cpu {ToyBudget.train_steps}, gpu the paper's)",
    )
    ablate.add_argument(
        "--run-dir",
        help="checkpoint folders (cpu: default runs/ablation-toy/<OUT folder name>; gpu: "
        "default runs/ablation, one sub-folder per step, results.json and results.md)",
    )
    ablate.add_argument(
        "--sample-steps", type=POSITIVE, help="sampler steps of the evaluation (default 50)"
    )
    ablate.add_argument(
        "--n-eval",
        type=int_at_least(2),
        help=f"samples of the final evaluation (default: cpu {ToyBudget.n_eval}, gpu 10000)",
    )
    ablate.add_argument(
        "--n-loss",
        type=POSITIVE,
        help=f"held-out images of the held-out loss (default: cpu {ToyBudget.n_loss}, gpu 1024)",
    )
    ablate.add_argument(
        "--resume",
        action="store_true",
        help="cpu: continue an unfinished run (or a done one given more --train-steps) from "
        "its checkpoint (default: an unfinished run starts again); gpu: always on (each step's "
        "folder is continued or reused)",
    )
    _add_shared(ablate, "--no-progress")
    toy = ablate.add_argument_group("cpu profile: the toy experiment (defaults: the design's)")
    toy.add_argument("--seeds", type=int_list(0), help="comma-separated seeds (default 0,1,2)")
    toy.add_argument(
        "--task", choices=tuple(TOY_TASKS), help=f"toy task (default {ToyBudget.task})"
    )
    toy.add_argument(
        "--batch-size", type=POSITIVE, help=f"batch size (default {ToyBudget.batch_size})"
    )
    toy.add_argument(
        "--lr", type=finite_float(0.0, open_low=True), help="learning rate (default 5e-4)"
    )
    toy.add_argument(
        "--eval-at", type=int_list(1), help="comma-separated steps of extra evaluations"
    )
    toy.add_argument(
        "--n-eval-mid",
        type=int_at_least(2),
        help=f"samples of the extra evaluations (default {ToyBudget.n_eval_mid})",
    )
    toy.add_argument(
        "--loss-weighting",
        choices=LOSS_WEIGHTINGS,
        help=f"the held-out loss's weighting (default {ToyBudget.loss_weighting})",
    )
    toy.add_argument(
        "--sampler", choices=SAMPLERS, help=f"evaluation sampler (default {ToyBudget.sampler})"
    )
    toy.add_argument(
        "--cfg",
        type=finite_float(0.0),
        help=f"classifier-free guidance scale of the evaluation (default {ToyBudget.cfg:g})",
    )
    toy.add_argument(
        "--sample-batch",
        type=POSITIVE,
        help=f"sampling batch size (default {ToyBudget.sample_batch})",
    )
    toy.add_argument(
        "--eval-seed", type=NON_NEGATIVE, help="sampling noise seed (default 1000 + seed)"
    )
    toy.add_argument(
        "--out",
        default="runs/ablation-toy/runs",
        help="folder of the run records (the shipped ones: results/ablation-toy/runs)",
    )
    toy.add_argument(
        "--summary", help="the analysis's JSON (.md and .png beside it; default OUT/summary.json)"
    )
    toy.add_argument(
        "--analyze",
        action="store_true",
        help="only analyse the records in OUT (no training)",
    )
    toy.add_argument(
        "--threads",
        type=POSITIVE,
        default=1,
        help="torch CPU threads (the records used 1; bit-identity holds at a fixed count)",
    )
    gpu = ablate.add_argument_group("gpu profile: the paper's chain")
    gpu.add_argument("--data", help="the ImageNet-style image folder to train on")
    gpu.add_argument(
        "--eval-data",
        help="a held-out image folder in the same class sub-folders (e.g. ImageNet's "
        "validation split): FID reference and held-out loss; never the training folder",
    )
    gpu.add_argument("--workers", type=NON_NEGATIVE, help="DataLoader worker processes (default 8)")
    gpu.add_argument(
        "--print-torchrun",
        type=POSITIVE,
        metavar="NPROC",
        help="print each step's `torchrun --nproc_per_node NPROC` training command (into "
        "RUN_DIR/STEP, the folder this command resumes) and exit",
    )

    # --- flops ---------------------------------------------------------------------------------
    flops = _add_command(
        sub,
        "flops",
        _cmd_flops,
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

    # --- plan --------------------------------------------------------------------------------
    plan = _add_command(
        sub,
        "plan",
        _cmd_plan,
        help="plan paper-scale training: micro-batch, accumulation, checkpointing, memory, time",
        description="For a config's global batch on N GPUs of M GiB: the per-GPU micro-batch, "
        "gradient-accumulation steps and activation checkpointing that fit, the predicted peak "
        "memory by part (weights, gradients, AdamW moments, EMA, activations per image) and "
        "the step time and days at a stated MFU (hdit_edu.planner; activation memory "
        "calibrated on CPU measurements at the true resolution).",
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
        "--mfu",
        type=finite_float(0.0, open_low=True),
        default=0.35,
        help="model FLOPs utilisation assumed for the time (default: 0.35)",
    )
    plan.add_argument(
        "--peak-tflops",
        type=finite_float(0.0, open_low=True),
        default=989.0,
        help="dense bf16 TFLOP/s of one GPU (default: 989, H100/H200 SXM; A100: 312)",
    )
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")

    # --- fid-folders -------------------------------------------------------------------------
    folders = _add_command(
        sub,
        "fid-folders",
        _cmd_fid_folders,
        help="FID and KID between two image folders",
        description="FID and KID between the images of two folders (any layout), through "
        "clean-fid, with the toy classifier's features (offline) or Inception (a download).",
    )
    folders.add_argument("a", help="first image folder")
    folders.add_argument("b", help="second image folder")
    folders.add_argument(
        "--extractor", default="toy", choices=evaluation.EXTRACTORS, help="feature extractor"
    )
    folders.add_argument("--mode", default="clean", choices=evaluation.MODES, help="clean-fid mode")

    # --- convert (k-diffusion checkpoints <-> hdit-edu runs; hdit_edu.interop) ------------------
    convert = _add_command(
        sub,
        "convert",
        _cmd_convert,
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
        "--strict",
        action="store_true",
        help="fail on k-diffusion diffusion/training options hdit-edu cannot represent "
        "(default: warn and use hdit-edu's defaults; model options are always strict)",
    )

    # --- prepare (an image folder resized once, for fast loading at scale) -----------------------
    prepare = _add_command(
        sub,
        "prepare",
        _cmd_prepare,
        help="resize and crop an image folder once into fast-loading uncompressed PNGs",
        description="Resize (to cover) and center-crop every image of SRC to --resolution, "
        "exactly as training reads it, into DST as uncompressed PNGs with the same layout "
        "(class sub-folders stay classes). Training on DST at that resolution reads the same "
        "pixels as on SRC; the loader reads ~3x more of them per second than FFHQ-like PNGs "
        "(benchmarks/README.md; 3 MiB per 1024² image on disk). Files already in DST are "
        "kept: rerun to continue.",
    )
    prepare.add_argument("source", metavar="SRC", help="image folder (flat, or class sub-folders)")
    prepare.add_argument("target", metavar="DST", help="output folder (created)")
    prepare.add_argument(
        "--resolution", required=True, type=resolution_arg, help="N or HxW (e.g. 1024)"
    )
    prepare.add_argument(
        "--flat",
        action="store_true",
        help="one unconditional set at any depth (FFHQ); default: class sub-folders if SRC "
        "holds no images itself",
    )
    prepare.add_argument("--workers", type=NON_NEGATIVE, default=0, help="decoding processes")

    # --- data (the toy set as files) -----------------------------------------------------------
    data = _add_command(
        sub,
        "data",
        None,
        help="write the toy data set as PNG files or its preview grid; check an image folder",
    )
    data_sub = data.add_subparsers(dest="action", metavar="ACTION", required=True)
    make = _add_command(
        data_sub,
        "make-toy",
        _cmd_data_make_toy,
        help="write toy images as PNGs in class sub-folders (ImageNet layout)",
    )
    make.add_argument("path", help="output folder (created)")
    make.add_argument("--n", type=POSITIVE, default=1024, help="number of images")
    _add_shared(make, "--resolution")
    _add_shared(make, "--seed")
    make.add_argument("--split", choices=SPLITS, default="test", help="which split to draw")
    preview = _add_command(
        data_sub,
        "preview",
        _cmd_data_preview,
        help="write a PNG grid of the toy set (rows = classes)",
    )
    preview.add_argument("path", help="output PNG, e.g. data/toy_preview.png")
    preview.add_argument("--per-class", type=POSITIVE, default=8, help="images per class (row)")
    _add_shared(preview, "--resolution")
    _add_shared(preview, "--seed")
    check = _add_command(
        data_sub,
        "check",
        _cmd_data_check,
        help="read every image of a folder up front; name unreadable files and empty classes",
        description="Open and decode every image below DIR as training would (resized to "
        "--resolution), list the classes (sub-folders) with their image counts, and name "
        "unreadable files and class folders without images. Exit status 1 if any file is bad.",
    )
    check.add_argument("path", help="the image folder (flat, or one sub-folder per class)")
    _add_shared(check, "--resolution")
    check.add_argument(
        "--layout",
        choices=("auto", "classes", "flat"),
        default="auto",
        help="classes: each sub-folder is a class; flat: one unconditional set; auto: classes "
        "if DIR holds no images itself",
    )

    # --- classifier (the toy classifier: FID features offline, class accuracy) -----------------
    classifier = _add_command(
        sub, "classifier", None, help="train the toy classifier (offline FID features)"
    )
    classifier_sub = classifier.add_subparsers(dest="action", metavar="ACTION", required=True)
    train_classifier = _add_command(
        classifier_sub,
        "train",
        _cmd_classifier_train,
        help="train the toy classifier and write its weights",
        description="Train the toy classifier (hdit_edu.toy.ToyClassifier) on the toy train "
        "split, test it on the test split and write model.safetensors + config.json.",
    )
    train_classifier.add_argument(
        "--out", default=str(TOY_CLASSIFIER_DIR), help="output folder (default data/toy_classifier)"
    )
    train_classifier.add_argument("--epochs", type=POSITIVE, default=2, help="training epochs")
    train_classifier.add_argument("--batch-size", type=POSITIVE, default=128, help="batch size")
    train_classifier.add_argument(
        "--lr", type=finite_float(0.0, open_low=True), default=2e-3, help="Adam learning rate"
    )
    _add_shared(train_classifier, "--seed")
    return parser


def _add_command(sub, name: str, func, help: str, description: str | None = None):
    """A subcommand ``name`` whose parsed arguments go to ``func(args)``; its --help shows the
    options' defaults (:class:`_HelpFormatter`)."""
    parser = sub.add_parser(
        name, help=help, description=description, formatter_class=_HelpFormatter
    )
    if func is not None:
        parser.set_defaults(func=func)
    return parser


# Options that several commands take, each defined once.
_SHARED_OPTIONS = {
    "--profile": dict(default="auto", choices=("auto", "cpu", "gpu"), help=PROFILE_HELP),
    "--run": dict(required=True, help="a run folder written by `hdit-edu train`"),
    "--no-progress": dict(action="store_true", help="no progress bar"),
    "--seed": dict(type=NON_NEGATIVE, default=0, help="random seed"),
    "--resolution": dict(
        type=POSITIVE, default=32, help="image side in pixels (the toy set's: 32)"
    ),
    "--backend": dict(
        default="auto",
        choices=NA_BACKENDS,
        help="neighborhood-attention backend ('auto': NATTEN's fused kernels on CUDA, else "
        "masked SDPA on small grids, else the pure-PyTorch one; all compute the same numbers)",
    ),
}


def _add_shared(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument(name, **_SHARED_OPTIONS[name])


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", default="dpmpp_3m_sde", choices=SAMPLERS, help="sampler")
    p.add_argument("--steps", type=POSITIVE, default=50, help="sampler steps (Table 6: 50)")
    p.add_argument(
        "--cfg", type=FINITE, default=1.0, help="classifier-free guidance scale (1 = none)"
    )
    p.add_argument(
        "--class",
        dest="class_",
        metavar="CLASS",
        type=NON_NEGATIVE,
        help="class index for every sample (default: classes 0, 1, 2, ... in turn; "
        "NUM_CLASSES = unconditional)",
    )
    _add_shared(p, "--seed")
    p.add_argument("--weights", default="ema", choices=("ema", "model"), help="which weights")
    p.add_argument("--checkpoint", help="a checkpoint folder (default: the run's newest)")
    p.add_argument("--batch-size", type=POSITIVE, default=64, help="sampling batch size")
    p.add_argument(
        "--device", type=device_arg, help="torch device (default: cuda if available, else cpu)"
    )
    _add_shared(p, "--backend")


# ----------------------------------------------------------------------------------------------
# Config helpers
# ----------------------------------------------------------------------------------------------


def apply_overrides(config, assignments: list[str]):
    """``["training.lr=1e-4", "model.levels.0.depth=1"]`` applied to a Config (a new one).
    VALUE is parsed as JSON when it can be (numbers, true/false/null, lists), else a string."""
    d = config.to_dict()
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE (e.g. training.lr=1e-4), got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *path, last = key.split(".")
        node, where = d, ""
        for part in path:
            node = (
                node[_list_index(node, part, item, where)]
                if isinstance(node, list)
                else (node.get(part))
            )
            where = f"{where}.{part}" if where else part
            if node is None or not isinstance(node, (dict, list)):
                raise ValueError(f"--set {item!r}: {key!r} is not a config field")
        if isinstance(node, list):
            node[_list_index(node, last, item, where)] = value
        elif last not in node:
            raise ValueError(f"--set {item!r}: unknown field {last!r}; allowed: {sorted(node)}")
        else:
            node[last] = value
    return Config.from_dict(d)


def _list_index(node: list, part: str, item: str, where: str) -> int:
    """``part`` as an index of the list ``where`` (e.g. ``model.levels``), range-checked."""
    if not part.isdigit() or int(part) >= len(node):
        raise ValueError(
            f"--set {item!r}: {where}[{part}] does not exist; allowed indices: 0 … "
            f"{len(node) - 1} ({where} has {len(node)} entries)"
        )
    return int(part)


def _device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------


def _cmd_env(args: argparse.Namespace) -> int:
    print(format_report())
    return 0


def _train_config(args: argparse.Namespace, profile: str) -> Config:
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
    config = apply_overrides(config, args.set)
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


def _cmd_train(args: argparse.Namespace) -> int:
    profile = resolve_profile(args.profile)
    resume = args.resume_from or args.resume
    if args.allow_change and not resume:
        raise ValueError("--allow-change applies to --resume / --resume-from only")
    config = _train_config(args, profile)
    suffix = "-cpu" if profile == "cpu" and args.config else ""
    run_dir = Path(args.run_dir or f"runs/{config.name}{suffix}")
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--run-dir {str(run_dir)!r} is a file; allowed: a folder")
    check_writable_folder("--run-dir", run_dir)
    if args.resume_from:
        check_run_folder("--resume-from", args.resume_from)
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
            sample_steps=args.sample_steps,
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


def _load_for_sampling(args):
    check_run_folder("--run", args.run)
    device = _device(args.device)
    config, denoiser = load_run(
        args.run,
        which=args.weights,
        checkpoint=args.checkpoint,
        device=device,
        attention_backend=args.backend,
    )
    classes = config.model.num_classes
    if args.class_ is not None and not (classes and args.class_ <= classes):
        allowed = f"0 … {classes} ({classes} = unconditional)" if classes else "none"
        raise ValueError(
            f"--class {args.class_}: the model of {args.run!r} has {classes} classes; "
            f"allowed: {allowed}"
        )
    return config, denoiser, device


def _generate(args, config, denoiser, device, n, at_resolution=None):
    images = generate_at(
        denoiser,
        config,
        n,
        at_resolution,
        positions=getattr(args, "positions", "normalised"),
        shift=getattr(args, "shift", False),
        sampler=args.sampler,
        steps=args.steps,
        cfg_scale=args.cfg,
        class_cond=args.class_,
        seed=args.seed,
        batch_size=args.batch_size,
        device=device,
    )
    bad = (~images.isfinite().flatten(1).all(1)).sum().item()
    if bad:
        raise ValueError(
            f"{bad} of {n} samples hold NaN or inf pixels: the weights of {args.run!r} "
            f"(checkpoint {args.checkpoint or 'newest'}) produce non-finite outputs; nothing "
            f"was written. Try an earlier checkpoint (--checkpoint) or --weights model"
        )
    return images


def _cmd_sample(args: argparse.Namespace) -> int:
    out = Path(args.out or Path(args.run) / "samples" / f"sample-{args.seed}.png")
    check_output_file("--out", out)
    config, denoiser, device = _load_for_sampling(args)
    at = sampling_config(config, args.resolution, args.positions)  # checked before sampling
    images = _generate(args, config, denoiser, device, args.n, at_resolution=args.resolution)
    nrow = args.nrow or grid_columns(args.n, config.model.num_classes if args.class_ is None else 0)
    with writing(f"the sample grid {str(out)!r}"):
        save_grid(images, out, nrow=nrow)
    height, width = normalize_resolution(at.model.resolution)
    print(f"wrote {args.n} samples ({height}x{width}) to {out}")
    return 0


def _reference(ref: str, config):
    if ref == "toy":
        return ToyDataset("test", resolution=config.model.resolution)
    if Path(ref).exists():
        return str(ref)
    parts = ref.split(":")
    if len(parts) == 3 and parts[1].isdigit():
        return evaluation.ReferenceStats(parts[0], int(parts[1]), parts[2])
    raise ValueError(
        f"--ref {ref!r}: expected 'toy', an existing image folder, or clean-fid statistics "
        f"NAME:RES:SPLIT (e.g. ffhq:1024:trainval70k)"
    )


def _cmd_fid(args: argparse.Namespace) -> int:
    if args.json:
        check_output_file("--json", args.json)
    config, denoiser, device = _load_for_sampling(args)
    reference = _reference(args.ref, config)
    images = _generate(args, config, denoiser, device, args.n)
    options = dict(extractor=args.extractor, mode=args.mode, device=device)
    result = {
        "run": str(args.run),
        "n": args.n,
        "extractor": args.extractor,
        "mode": args.mode,
        "reference": args.ref,
        "fid": evaluation.fid(images, reference, **options),
    }
    if args.kid:
        result["kid"] = evaluation.kid(images, reference, **options)
    if config.model.num_classes and args.extractor == "toy" and config.training.dataset == "toy":
        labels = sample_labels(args.n, config.model.num_classes, args.class_)
        result["class_accuracy"] = class_accuracy(images, labels)
    print(json.dumps(result, indent=1))
    if args.json:
        with writing(repr(str(args.json))):
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


_TOY_ONLY = ("seeds", "task", "batch_size", "lr", "eval_at", "n_eval_mid", "loss_weighting",
             "sampler", "cfg", "sample_batch", "eval_seed", "summary")  # fmt: skip
_GPU_ONLY = ("data", "eval_data", "workers", "print_torchrun")


def _flags(args: argparse.Namespace, names) -> list[str]:
    given = [n for n in names if getattr(args, n) not in (None, False)]
    return ["--" + n.replace("_", "-") for n in given]


def _cmd_ablate(args: argparse.Namespace) -> int:
    profile = resolve_profile(args.profile)
    if profile == "gpu":
        return _ablate_gpu(args)
    wrong = _flags(args, _GPU_ONLY)
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: gpu profile only (this is --profile cpu)")
    out = Path(args.out)
    summary = Path(args.summary) if args.summary else out / "summary.json"
    check_writable_folder("--out", out)
    check_output_file("--summary", summary)
    if not args.analyze:
        names = args.steps or list(TOY_EXPERIMENT)
        unknown = [n for n in names if n not in TOY_EXPERIMENT]
        if unknown:
            extra = ",".join(n for n in unknown if n in FOLLOW_UPS)
            hint = (
                f" ({extra}: an extra toy configuration, outside this experiment's analysis; "
                "train it with hdit_edu.ablation.run_toy: results/ablation-toy/run.py --config NAME)"
            )
            raise ValueError(
                f"--steps {','.join(unknown)}: not in the toy experiment; allowed: "
                f"{', '.join(TOY_EXPERIMENT)}" + (hint if extra else "")
            )
        chosen = {
            "task": args.task,
            "train_steps": args.train_steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "eval_at": ",".join(map(str, args.eval_at)) if args.eval_at else None,
            "n_eval": args.n_eval,
            "n_eval_mid": args.n_eval_mid,
            "n_loss": args.n_loss,
            "loss_weighting": args.loss_weighting,
            "sampler": args.sampler,
            "sample_steps": args.sample_steps,
            "cfg": args.cfg,
            "sample_batch": args.sample_batch,
            "eval_seed": args.eval_seed,
        }
        budget = ToyBudget(**{k: v for k, v in chosen.items() if v is not None})
        torch.set_num_threads(args.threads)
        run_toy_experiment(
            names,
            args.seeds if args.seeds is not None else [0, 1, 2],
            out,
            budget,
            run_dir=args.run_dir,
            resume=args.resume,
            command=shlex.join(["hdit-edu", *args.argv]),
            log=lambda line: print(line, flush=True),
        )
    result = write_summary(out, summary)
    print(result["markdown"])
    print(f"wrote {summary} and its .md, .png")
    return 0


def _ablate_gpu(args: argparse.Namespace) -> int:
    wrong = _flags(args, _TOY_ONLY) + (["--analyze"] if args.analyze else [])
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: cpu profile (the toy experiment) only")
    steps = args.steps or ["A", "B1", "B2", "C", "D", "E"]
    toy_only = [s for s in steps if s not in PAPER_CHAIN]
    if toy_only:
        raise ValueError(
            f"--steps {','.join(toy_only)}: an extra toy configuration, not a step of the "
            f"paper's chain; allowed with --profile gpu: {', '.join(PAPER_CHAIN)}"
        )
    run_dir = Path(args.run_dir or "runs/ablation")
    workers = 8 if args.workers is None else args.workers
    if not args.data:
        raise ValueError("the gpu profile trains on ImageNet-128: pass --data IMAGE_FOLDER")
    if args.print_torchrun:
        for step in steps:
            command = train_command(
                step, run_dir, args.data, train_steps=args.train_steps,
                nproc=args.print_torchrun, workers=workers,
            )  # fmt: skip
            print(shlex.join(command))
        return 0
    if not args.eval_data:
        raise ValueError("--eval-data HELD_OUT_FOLDER is required (FID and held-out loss)")
    table = run_ablation(
        steps,
        run_dir,
        data=args.data,
        eval_data=args.eval_data,
        train_steps=args.train_steps,
        n_eval=args.n_eval or 10_000,
        n_loss=args.n_loss or 1024,
        sample_steps=args.sample_steps or 50,
        workers=workers,
        resume=True,
        progress=not args.no_progress,
    )
    print(table["markdown"])
    print(f"wrote {run_dir / 'results.json'} and results.md")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from .planner import plan

    result = plan(
        get_config(args.config),
        args.gpus,
        args.gpu_memory,
        args.precision,
        mfu=args.mfu,
        peak_tflops=args.peak_tflops,
    )
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.table())
    return 0


def _cmd_flops(args: argparse.Namespace) -> int:
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


def _cmd_fid_folders(args: argparse.Namespace) -> int:
    print(json.dumps(evaluation.metrics(args.a, args.b, extractor=args.extractor, mode=args.mode)))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    if args.direction == "from-k-diffusion":
        output = convert_from_k_diffusion(
            args.source, args.output, config=args.config, strict=args.strict
        )
        print(f"wrote hdit-edu run {output} (config.json + checkpoints/)")
    else:
        output = convert_to_k_diffusion(
            args.source, args.output, config=args.config, weights=args.weights
        )
        print(f"wrote k-diffusion {KD_MODEL_TYPE} checkpoint {output} ({args.weights} weights)")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    done = prepare_image_folder(
        args.source,
        args.target,
        args.resolution,
        class_subfolders=False if args.flat else None,
        workers=args.workers,
    )
    print(
        f"{done['images']} images at {format_resolution(args.resolution)} in {args.target}: "
        f"{done['written']} written, {done['skipped']} already there"
    )
    return 0


def _cmd_data_make_toy(args: argparse.Namespace) -> int:
    if Path(args.path).exists() and not Path(args.path).is_dir():
        raise ValueError(f"path {args.path!r} is a file; allowed: a folder (created if missing)")
    check_writable_folder("path", args.path)
    path = make_toy_folder(args.path, args.n, args.resolution, args.seed, args.split)
    print(f"wrote {args.n} toy images ({args.resolution}x{args.resolution}) to {path}")
    return 0


def _cmd_data_preview(args: argparse.Namespace) -> int:
    check_output_file("path", args.path)
    grid = toy_grid(args.per_class, args.resolution, args.seed)
    Image.fromarray(grid, mode="RGB").save(args.path, optimize=True)
    print(f"wrote {args.path} (rows: {', '.join(TOY_CLASSES)})")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    layout = {"auto": None, "classes": True, "flat": False}[args.layout]
    dataset = ImageFolderDataset(
        args.path, args.resolution, class_subfolders=layout, on_error="skip"
    )
    total = len(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every bad file is listed below
        try:
            bad = dataset.verify()
        except ValueError:  # nothing readable at all
            bad = list(dataset.skipped)
    counts = {name: 0 for name in dataset.classes}
    for target in dataset.targets:
        counts[dataset.classes[target]] += 1
    print(f"{args.path}: {total} image files, {total - len(bad)} readable, {len(bad)} bad")
    if len(counts) > 1:
        print(f"{len(counts)} classes: " + ", ".join(f"{k} ({v})" for k, v in counts.items()))
    for folder in dataset.empty_classes:
        print(f"empty class folder (no images; not counted as a class): {folder}")
    for path in bad:
        print(f"bad image: {path}")
    return 1 if bad else 0


def _cmd_classifier_train(args: argparse.Namespace) -> int:
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out!r} is a file; allowed: a folder (created if missing)")
    check_writable_folder("--out", args.out)
    _, record = train_toy_classifier(
        args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    print(f"test accuracy {record['test_accuracy']:.4f}; wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        print("\nenvironment:")
        return _cmd_env(args)
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


if __name__ == "__main__":
    sys.exit(main())
