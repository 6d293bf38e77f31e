"""``hdit-edu ablate toy|paper``: the ablation chain of Tables 1, 2 and 5 (``hdit_edu.ablation``):
``toy``, the pre-registered toy experiment of ``results/ablation-toy`` on the CPU; ``paper``, the
paper's ImageNet-128 chain on GPUs. They share the chain's configurations and the evaluation's
sizes; each has its own flags. ``toy`` is a shortcut onto the study machinery
(:mod:`hdit_edu.studies.chain`: a generated, registered ``study.toml``; the study runner).

The form before the split, ``hdit-edu ablate [--profile cpu|gpu|auto] …``, still works for one
release (:func:`legacy_argv`: the profile picks ``toy`` or ``paper``, with a deprecation message),
and so do ``--steps`` (now ``--configs``) and ``--sample-steps`` (now ``--sampler-steps``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..ablation import (
    PAPER_CHAIN,
    TOY_EXPERIMENT,
    ToyBudget,
    check_done_records,
    run_ablation,
    train_command,
    write_summary,
)
from ..env import PROFILES, resolve_profile
from ..kinds import LOSS_WEIGHTINGS
from ..presets import ABLATION_STEPS, FOLLOW_UPS, TOY_TASKS
from ..sampling import SAMPLERS
from .arguments import (
    NON_NEGATIVE,
    POSITIVE,
    add_command,
    add_renamed,
    add_shared,
    check_output_file,
    check_writable_folder,
    deprecation,
    finite_float,
    int_at_least,
    int_list,
    name_list,
)


def add_ablate(sub) -> None:
    """``ablate toy`` and ``ablate paper``."""
    ablate = add_command(
        sub,
        "ablate",
        None,
        help="the ablation chain (Tables 1, 2, 5): the toy experiment or the paper's",
        description="The ablation chain of Tables 1, 2 and 5: `ablate toy` (the pre-registered "
        "toy experiment of results/ablation-toy, on the CPU) or `ablate paper` (the paper's "
        "ImageNet-128 chain, on GPUs). The old form `ablate --profile cpu|gpu ...` still works "
        "for one release.",
    )
    experiments = ablate.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    _add_toy(experiments)
    _add_paper(experiments)


def _add_chain_options(p: argparse.ArgumentParser, configs_help: str, run_dir_help: str) -> None:
    """The options both experiments take: the configurations, the training and the evaluation's
    sizes (each experiment's defaults named in its help)."""
    add_renamed(
        p, "--configs", "--steps", type=name_list((*PAPER_CHAIN, *FOLLOW_UPS)),
        metavar="NAMES", help=configs_help,
    )  # fmt: skip
    p.add_argument("--run-dir", help=run_dir_help)
    add_renamed(p, "--sampler-steps", "--sample-steps", type=POSITIVE, metavar="N",
                help="sampler steps of the evaluation (default 50)")  # fmt: skip
    add_shared(p, "--no-progress")


def _add_toy(experiments) -> None:
    toy = add_command(
        experiments,
        "toy",
        cmd_ablate_toy,
        help="the toy experiment of results/ablation-toy (CPU; pre-registered design)",
        description="The toy ablation experiment of results/ablation-toy (pre-registered design; "
        "the defaults are its budget): for every seed and configuration, train on the CPU, "
        "evaluate the EMA model (toy FID against the held-out test split, class accuracy of the "
        "samples, held-out loss under one common weighting) and write OUT/CONFIG-sSEED.json and "
        ".png; a finished run is skipped, an unfinished one starts again (runs are "
        "bit-identical on one CPU kind). Then the analysis (paired t CIs, Holm, sign vs the "
        "paper, Kendall's tau) goes to SUMMARY (.json, .md, .png). The runs are a study: "
        "OUT/study.toml is generated from the flags and registered before the first run (other "
        "flags later: a labelled amendment), and worked by the study runner (`hdit-edu study "
        "status OUT/study.toml` shows them).",
    )
    _add_chain_options(
        toy,
        f"comma-separated configurations (default: all of {','.join(TOY_EXPERIMENT)})",
        "checkpoint folders (default runs/ablation-toy/<OUT folder name>)",
    )
    toy.add_argument(
        "--train-steps",
        type=POSITIVE,
        help=f"training steps per run (default {ToyBudget.train_steps})",
    )
    toy.add_argument(
        "--n-eval",
        type=int_at_least(2),
        help=f"samples of the final evaluation (default {ToyBudget.n_eval})",
    )
    toy.add_argument(
        "--n-loss",
        type=POSITIVE,
        help=f"held-out images of the held-out loss (default {ToyBudget.n_loss})",
    )
    toy.add_argument(
        "--resume",
        action="store_true",
        help="continue an unfinished run (or a done one given more --train-steps) from its "
        "checkpoint (default: an unfinished run starts again)",
    )
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


def _add_paper(experiments) -> None:
    paper = add_command(
        experiments,
        "paper",
        cmd_ablate_paper,
        help="the paper's ImageNet-128 chain (GPUs)",
        description="The paper's ImageNet-128 chain: train each configuration on --data, "
        "measure it on the held-out --eval-data (FID, held-out loss) and write "
        "RUN_DIR/results.json and results.md; each step's folder is continued or reused. "
        "--print-torchrun N prints the multi-GPU training command of each step instead.",
    )
    _add_chain_options(
        paper,
        f"comma-separated configurations (default {','.join(ABLATION_STEPS)}; allowed: "
        f"{', '.join(PAPER_CHAIN)})",
        "checkpoint folders, one sub-folder per step, results.json and results.md (default "
        "runs/ablation)",
    )
    paper.add_argument(
        "--train-steps", type=POSITIVE, help="training steps per run (default: the paper's)"
    )
    paper.add_argument(
        "--n-eval", type=int_at_least(2), help="samples of the final evaluation (default 10000)"
    )
    paper.add_argument(
        "--n-loss", type=POSITIVE, help="held-out images of the held-out loss (default 1024)"
    )
    paper.add_argument("--data", help="the ImageNet-style image folder to train on")
    paper.add_argument(
        "--eval-data",
        help="a held-out image folder in the same class sub-folders (e.g. ImageNet's "
        "validation split): FID reference and held-out loss; never the training folder",
    )
    paper.add_argument(
        "--workers", type=NON_NEGATIVE, help="DataLoader worker processes (default 8)"
    )
    paper.add_argument(
        "--print-torchrun",
        type=POSITIVE,
        metavar="NPROC",
        help="print each step's `torchrun --nproc_per_node NPROC` training command (into "
        "RUN_DIR/STEP, the folder this command resumes) and exit",
    )


# Flags the old `ablate --profile gpu` took and ignored: `ablate paper` has none of them.
_IGNORED_BY_PAPER = {"--out": True, "--threads": True, "--resume": False}  # flag: takes a value


def legacy_argv(argv: list[str]) -> list[str]:
    """``ablate [--profile P] …`` (the form before ``toy`` / ``paper``) → ``ablate toy …``
    (profile cpu) or ``ablate paper …`` (profile gpu; ``auto`` as everywhere:
    :func:`hdit_edu.env.resolve_profile`), with a deprecation message; any other ``argv`` is
    returned as it is."""
    if argv[:1] != ["ablate"] or (len(argv) > 1 and argv[1] in ("toy", "paper", "-h", "--help")):
        return argv
    rest, profile, i = [], None, 1
    while i < len(argv):
        word = argv[i]
        if word == "--profile" and i + 1 < len(argv):
            profile, i = argv[i + 1], i + 2
            continue
        if word.startswith("--profile="):
            profile = word.split("=", 1)[1]
        else:
            rest.append(word)
        i += 1
    if profile not in (None, "auto", *PROFILES):
        raise ValueError(f"--profile {profile!r}; allowed: auto, {', '.join(PROFILES)}")
    experiment = "toy" if resolve_profile(profile or "auto") == "cpu" else "paper"
    if experiment == "paper":
        rest = _without(rest, _IGNORED_BY_PAPER)
    old = f"`ablate --profile {profile}`" if profile else "`ablate` without toy or paper"
    deprecation("hdit-edu ablate", old, f"`hdit-edu ablate {experiment}`")
    return ["ablate", experiment, *rest]


def _without(words: list[str], flags: dict[str, bool]) -> list[str]:
    """``words`` without the ``flags`` (``--flag VALUE``, ``--flag=VALUE`` or a switch)."""
    out, i = [], 0
    while i < len(words):
        name = words[i].split("=", 1)[0]
        if name in flags:
            i += 1 + (flags[name] and "=" not in words[i])
            continue
        out.append(words[i])
        i += 1
    return out


def cmd_ablate_toy(args: argparse.Namespace) -> int:
    """The toy chain as a study: ``OUT/study.toml`` generated from the flags and registered
    (:mod:`hdit_edu.studies.chain`), its runs worked by the study runner, then the chain's
    analysis (:func:`hdit_edu.ablation.write_summary`)."""
    from ..studies import runner
    from ..studies.chain import prepare_chain_study

    out = Path(args.out)
    summary = Path(args.summary) if args.summary else out / "summary.json"
    check_writable_folder("--out", out)
    check_output_file("--summary", summary, (".json",), what="JSON (and .md, .png beside it)")
    if not args.analyze:
        names = args.configs or list(TOY_EXPERIMENT)
        unknown = [n for n in names if n not in TOY_EXPERIMENT]
        if unknown:
            extra = ",".join(n for n in unknown if n in FOLLOW_UPS)
            hint = (
                f" ({extra}: an extra toy configuration, outside this experiment's analysis; "
                "train it with hdit_edu.ablation.run_toy: results/ablation-toy/run.py --config NAME)"
            )
            raise ValueError(
                f"--configs {','.join(unknown)}: not in the toy experiment; allowed: "
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
            "sample_steps": args.sampler_steps,
            "cfg": args.cfg,
            "sample_batch": args.sample_batch,
            "eval_seed": args.eval_seed,
        }
        budget = ToyBudget(**{k: v for k, v in chosen.items() if v is not None})
        seeds = args.seeds if args.seeds is not None else [0, 1, 2]
        command = shlex.join(["hdit-edu", *args.argv])
        # before anything is written: every record there readable, every done one this budget's
        check_done_records(names, seeds, out, budget, resume=args.resume)
        # the shortcut onto the study machinery: OUT/study.toml, registered, run by its runner
        run_dir = args.run_dir or str(Path("runs/ablation-toy") / out.name)
        spec = prepare_chain_study(out, names, seeds, budget, run_dir, command=command)
        result = runner.run(
            spec, progress=not args.no_progress, log=lambda line: print(line, flush=True),
            threads=args.threads, resume=args.resume, command=command, wait=True,
        )  # fmt: skip
        if not result["ok"]:
            for name, error in result["errors"].items():
                print(f"hdit-edu ablate: {name} failed: {error}", file=sys.stderr)
            print(f"hdit-edu ablate: see {spec.parent / runner.QUEUE_LOG}", file=sys.stderr)
            return 1
    result = write_summary(out, summary)
    print(result["markdown"])
    print(f"wrote {summary} and its .md, .png")
    return 0


def cmd_ablate_paper(args: argparse.Namespace) -> int:
    steps = args.configs or list(ABLATION_STEPS)
    toy_only = [s for s in steps if s not in PAPER_CHAIN]
    if toy_only:
        raise ValueError(
            f"--configs {','.join(toy_only)}: an extra toy configuration, not a step of the "
            f"paper's chain; allowed: {', '.join(PAPER_CHAIN)}"
        )
    run_dir = Path(args.run_dir or "runs/ablation")
    workers = 8 if args.workers is None else args.workers
    if not args.data:
        raise ValueError("the paper's chain trains on ImageNet-128: pass --data IMAGE_FOLDER")
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
        sample_steps=args.sampler_steps or 50,
        workers=workers,
        resume=True,
        progress=not args.no_progress,
    )
    print(table["markdown"])
    print(f"wrote {run_dir / 'results.json'} and results.md")
    return 0
