"""``hdit-edu ablate``: the ablation chain of Tables 1, 2 and 5 (``hdit_edu.ablation``): the toy
experiment of ``results/ablation-toy`` (``--profile cpu``) or the paper's ImageNet-128 chain
(``--profile gpu``)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import torch

from ..ablation import (
    PAPER_CHAIN,
    TOY_EXPERIMENT,
    ToyBudget,
    run_ablation,
    run_toy_experiment,
    train_command,
    write_summary,
)
from ..env import resolve_profile
from ..kinds import LOSS_WEIGHTINGS
from ..presets import FOLLOW_UPS, TOY_TASKS
from ..sampling import SAMPLERS
from .arguments import (
    NON_NEGATIVE,
    POSITIVE,
    add_command,
    add_shared,
    check_output_file,
    check_writable_folder,
    finite_float,
    int_at_least,
    int_list,
    name_list,
)


def add_ablate(sub) -> None:
    """``ablate``: the toy experiment (cpu) or the paper's chain (gpu)."""
    ablate = add_command(
        sub,
        "ablate",
        cmd_ablate,
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
        help=f"comma-separated configurations (cpu: {','.join(TOY_EXPERIMENT)}, the default; gpu: "
        f"also R1-R3; default A,B1,B2,C,D,E)",
    )
    add_shared(ablate, "--profile")
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
    add_shared(ablate, "--no-progress")
    toy = ablate.add_argument_group("cpu profile: the toy experiment (defaults: the design's)")
    toy.add_argument("--seeds", type=int_list(0), help="comma-separated seeds (default 0,1,2)")
    toy.add_argument("--task", choices=tuple(TOY_TASKS), help=f"toy task (default {ToyBudget.task})")
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


_TOY_ONLY = ("seeds", "task", "batch_size", "lr", "eval_at", "n_eval_mid", "loss_weighting",
             "sampler", "cfg", "sample_batch", "eval_seed", "summary")  # fmt: skip
_GPU_ONLY = ("data", "eval_data", "workers", "print_torchrun")


def _flags(args: argparse.Namespace, names) -> list[str]:
    given = [n for n in names if getattr(args, n) not in (None, False)]
    return ["--" + n.replace("_", "-") for n in given]


def cmd_ablate(args: argparse.Namespace) -> int:
    profile = resolve_profile(args.profile)
    if profile == "gpu":
        return _ablate_gpu(args)
    wrong = _flags(args, _GPU_ONLY)
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: gpu profile only (this is --profile cpu)")
    out = Path(args.out)
    summary = Path(args.summary) if args.summary else out / "summary.json"
    check_writable_folder("--out", out)
    check_output_file("--summary", summary, (".json",), what="JSON (and .md, .png beside it)")
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
