"""One (configuration, seed) run of the toy ablation experiment: train, evaluate, write a JSON.

Stage-1 driver (pilot and first full runs); the next stage moves this into
``hdit_edu/ablation.py`` + ``hdit-edu ablate``. Run from the repository root, one thread:

    OMP_NUM_THREADS=1 python results/ablation-toy/run.py --config E --seed 0 \
        --train-steps 3000 --eval-at 1000,2000 --out results/ablation-toy/pilot

Configurations (each changes exactly what the paper changes; built with the library's
``configs.ablation_step`` + ``profiles.toy_scale``):

* Table 1: ``A B1 B2 C D E R4``;
* Table 2: ``E-add E-concat`` (``E`` is lerp);
* Table 5 (D's model, only the weighting changes): ``D`` (SNR), ``D-minsnr5`` (min-SNR γ = 5),
  ``D-minsnr4`` (min-SNR γ = 4), ``E`` (soft-min-SNR γ = 4).

The run directory (``runs/ablation-toy/<out name>/<config>-s<seed>``, git-ignored) keeps the
final checkpoint (issue 19 reuses C's and D's). The result JSON holds the config, settings,
versions, timings, the loss of each of the first 100 steps exactly (for the bit-identical
prefix check), the loss per 10 steps (the trainer's log), and the metrics of every evaluation.

Timings are wall-clock (``*_s``) and this process's CPU time (``*_cpu_s``): on a shared,
oversubscribed machine the wall-clock measures the neighbours as much as the run; the CPU time
is what the budget counts. A run whose JSON says ``"status": "done"`` is skipped; an unfinished
one starts again from step 0 (reruns are bit-identical).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from hdit_edu import evaluation  # noqa: E402
from hdit_edu.ablation import evaluate_loss  # noqa: E402
from hdit_edu.configs import ablation_step, skip_variant  # noqa: E402
from hdit_edu.data import save_grid  # noqa: E402
from hdit_edu.profiles import CPU_SCALE, toy_scale  # noqa: E402
from hdit_edu.runs import read_metrics  # noqa: E402
from hdit_edu.sampling import generate, sample_labels  # noqa: E402
from hdit_edu.toy import ToyDataset, predict_classes  # noqa: E402
from hdit_edu.training import Trainer  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CONFIGS = ("A", "B1", "B2", "C", "D", "E", "R4", "E-add", "E-concat", "D-minsnr5", "D-minsnr4")
EXACT_PREFIX = 100  # per-step losses kept exactly
# Tasks (32×32 toy set, CPU_SCALE widths 64/128, depths 1/2, head dim 32, mapping width 128):
# "p2": patch 2 → 16×16 outer grid, neighborhood 7×7 / Swin window 8 (toy_scale as it is);
# "p4k3": patch 4 → 8×8 outer grid, neighborhood 3×3 / Swin window 4 (the same fractions of
# the grid as 7/16 → 3/8 and 8/16 → 4/8: the p2 task's attention pattern at half the grid).
TASKS = {"p2": (2, 7, 8), "p4k3": (4, 3, 4)}


def build_config(
    name: str,
    seed: int,
    train_steps: int,
    batch_size: int,
    lr: float | None,
    task: str = "p2",
):
    """The toy config of ``name`` (see the module docstring) on ``task`` with the common
    budget."""
    if name not in CONFIGS:
        raise ValueError(f"unknown configuration {name!r}; allowed: {', '.join(CONFIGS)}")
    if name in ("E-add", "E-concat"):
        config = skip_variant(name.split("-")[1])
    elif name.startswith("D-minsnr"):
        config = ablation_step("D")
        config.diffusion.loss_weighting = "min-snr"
        config.diffusion.gamma = float(name.removeprefix("D-minsnr"))
    else:
        config = ablation_step(name)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    patch, kernel, window = TASKS[task]
    config = toy_scale(config, replace(CPU_SCALE, patch_size=patch))
    outer = config.model.levels[0]
    if len(config.model.levels) > 1:  # single-level R4 has one global level: nothing to set
        outer.kernel_size, outer.window_size = kernel, window
    config.name = name
    t = config.training
    t.seed, t.steps, t.batch_size = seed, train_steps, batch_size
    if lr is not None:
        t.lr = lr
    t.checkpoint_every, t.keep_checkpoints, t.sample_every = train_steps, 1, 0
    config.validate()
    return config


def versions() -> dict:
    def git(*args):
        try:
            return subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    cpu = None
    try:
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpu": cpu,
        "threads": torch.get_num_threads(),
    }


_REFERENCE = {}


def reference_features() -> np.ndarray:
    """Toy-classifier features of the whole held-out test split (2,048 images)."""
    if "test" not in _REFERENCE:
        _REFERENCE["test"] = evaluation.extract_features(
            ToyDataset("test", resolution=32), extractor="toy", batch_size=256
        )
    return _REFERENCE["test"]


def evaluate(trainer: Trainer, args, n: int) -> dict:
    """EMA model: ``n`` samples (classes 0..7 in turn) → toy FID vs the test split and class
    accuracy; held-out loss on the test split under the common weighting."""
    config, denoiser = trainer.config, trainer.ema_denoiser
    t0, c0 = time.perf_counter(), time.process_time()
    images = generate(
        denoiser,
        config,
        n,
        sampler=args.sampler,
        steps=args.sample_steps,
        cfg_scale=args.cfg,
        seed=args.eval_seed,
        batch_size=args.sample_batch,
    )
    sample_s, sample_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    labels = sample_labels(n, config.model.num_classes)
    feats = evaluation.extract_features(images, extractor="toy", batch_size=256)
    per_class = (predict_classes(images) == labels).float()
    out = {
        "step": trainer.step,
        "n_samples": n,
        "fid": evaluation.frechet_distance(feats, reference_features()),
        "class_accuracy": per_class.mean().item(),
        "class_accuracy_per_class": [
            per_class[labels == c].mean().item() for c in range(config.model.num_classes)
        ],
        "sample_s": sample_s,
        "sample_cpu_s": sample_cpu_s,
    }
    t0, c0 = time.perf_counter(), time.process_time()
    out["heldout_loss"] = evaluate_loss(
        denoiser, config, n=args.n_loss, weighting=args.loss_weighting, seed=0
    )
    out["loss_s"] = time.perf_counter() - t0
    out["loss_cpu_s"] = time.process_time() - c0
    return out, images


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, choices=CONFIGS)
    p.add_argument("--task", default="p2", choices=sorted(TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=None, help="default: Table 6's 5e-4")
    p.add_argument("--eval-at", default="", help="comma-separated steps of extra evaluations")
    p.add_argument("--n-eval", type=int, default=2048, help="samples of the final evaluation")
    p.add_argument("--n-eval-mid", type=int, default=256, help="samples of extra evaluations")
    p.add_argument("--n-loss", type=int, default=2048, help="test images of the held-out loss")
    p.add_argument("--loss-weighting", default="soft-min-snr")
    p.add_argument("--sampler", default="dpmpp_3m_sde")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--sample-batch", type=int, default=64)
    p.add_argument(
        "--eval-seed", type=int, default=None, help="sampling noise seed (default 1000 + seed)"
    )
    p.add_argument("--out", required=True, help="folder of the result JSON")
    p.add_argument("--tag", default="", help="suffix of the run name (pilot variants)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from its newest checkpoint (also: extend a done run to more steps)",
    )
    args = p.parse_args(argv)

    if args.eval_seed is None:
        args.eval_seed = 1000 + args.seed
    name = f"{args.config}-s{args.seed}{args.tag}"
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    previous = json.loads(path.read_text()) if path.exists() else None
    extend = (
        args.resume
        and previous is not None
        and previous["config"]["training"]["steps"] < args.train_steps
    )
    if previous is not None and previous.get("status") == "done" and not extend:
        print(f"{path} is done: skipped", flush=True)
        return 0
    run_dir = REPO / "runs" / "ablation-toy" / out_dir.name / name
    if run_dir.exists() and not args.resume:  # an unfinished attempt: start again (bit-identical)
        shutil.rmtree(run_dir)
    config = build_config(
        args.config, args.seed, args.train_steps, args.batch_size, args.lr, args.task
    )
    result = {
        "name": name,
        "config_name": args.config,
        "seed": args.seed,
        "config": config.to_dict(),
        "settings": vars(args),
        "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
        "versions": versions(),
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "run_dir": str(run_dir.relative_to(REPO)),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_start": list(os.getloadavg()),
        "status": "running",
        "evaluations": [],
    }

    def write():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, path)

    t_start = time.perf_counter()
    train_s, train_cpu_s, exact = 0.0, 0.0, []
    if args.resume and previous is not None:  # continue a recorded run from its checkpoint
        result["evaluations"] = previous["evaluations"]
        result["resumed_from"] = {
            k: previous.get(k) for k in ("settings", "command", "started", "status")
        } | {"step": previous["evaluations"][-1]["step"] if previous["evaluations"] else None}
        train_s, train_cpu_s = previous.get("train_s", 0.0), previous.get("train_cpu_s", 0.0)
        exact = previous.get("losses_first_steps", [])
    trainer = Trainer(config, run_dir, resume=args.resume, progress=False, device="cpu")
    result["params"] = sum(p.numel() for p in trainer.model.parameters())
    eval_at = sorted({int(s) for s in args.eval_at.split(",") if s} | {args.train_steps})
    eval_at = [target for target in eval_at if target > trainer.step]
    try:
        for target in eval_at:
            t0, c0 = time.perf_counter(), time.process_time()
            summary = trainer.fit(target)
            train_s += time.perf_counter() - t0
            train_cpu_s += time.process_time() - c0
            exact += summary["losses"][: max(0, EXACT_PREFIX - len(exact))]
            final = target == args.train_steps
            metrics, images = evaluate(trainer, args, args.n_eval if final else args.n_eval_mid)
            metrics["train_s_so_far"] = train_s
            metrics["train_cpu_s_so_far"] = train_cpu_s
            metrics["load_average"] = list(os.getloadavg())
            result["evaluations"].append(metrics)
            result["losses_first_steps"] = exact
            result["loss_every_10"] = [[r["step"], r["loss"]] for r in read_metrics(run_dir)]
            write()
            print(
                json.dumps({k: v for k, v in metrics.items() if "per_class" not in k}), flush=True
            )
        save_grid(images[:64], out_dir / f"{name}.png", nrow=8)
        result["status"] = "done"
    except Exception as e:  # noqa: BLE001 - every run is reported, failed ones too
        result["status"] = "failed"
        result["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        result["train_s"] = train_s
        result["train_cpu_s"] = train_cpu_s
        result["wall_s"] = time.perf_counter() - t_start
        result["cpu_s"] = time.process_time()
        result["load_average_end"] = list(os.getloadavg())
        result["final"] = result["evaluations"][-1] if result["evaluations"] else None
        write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
