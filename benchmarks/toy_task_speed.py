"""Speed of candidate toy ablation tasks: training steps/s (one thread) and sampling cost — the
measurements behind the toy ablation's choice of task (``results/ablation-toy/speed.md``, its
records in ``speed.jsonl``; moved here from ``results/ablation-toy/speed.py``: a benchmark).

Run from the repository root (one thread, as every ablation run will):

    OMP_NUM_THREADS=1 python benchmarks/toy_task_speed.py train --tasks p2 p4 --steps E A
    OMP_NUM_THREADS=1 python benchmarks/toy_task_speed.py sample --tasks p2
    OMP_NUM_THREADS=1 python benchmarks/toy_task_speed.py profile --tasks p2 --steps E

Each measurement builds the ablation step's config with ``presets.ablation_step`` +
``profiles.to_toy_scale`` (the library's toy move), changes only what the task names (patch size,
resolution, widths), builds a :class:`~hdit_edu.training.Trainer` that writes nothing, and
times full training steps (data, σ/noise draws, forward, backward, AdamW, EMA, logging
bookkeeping) after warm-up steps. Prints one JSON line per measurement and appends it to
``--out`` (default ``results/ablation-toy/speed.jsonl``). ``profile`` prints torch.profiler's
table of 10 training steps after 5 warm-up steps (speed.md's "Where the time goes").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

torch.set_num_threads(1)

from hdit_edu.models import set_attention_backend  # noqa: E402
from hdit_edu.presets import ablation_step  # noqa: E402
from hdit_edu.profiles import ToyScale, to_toy_scale  # noqa: E402
from hdit_edu.sampling import generate  # noqa: E402
from hdit_edu.training import Trainer  # noqa: E402

SPEED = Path(__file__).resolve().parents[1] / "results" / "ablation-toy"

# Candidate tasks: (resolution, ToyScale). Outer grid = resolution / patch.
CANDIDATE_TASKS = {
    # the shipped toy model's size (CPU_SCALE) with patch 4: 8×8 outer grid (calibration)
    "p4": (32, ToyScale(patch_size=4)),
    # CPU_SCALE as is: 32×32, patch 2 → 16×16 outer grid, 8×8 inner
    "p2": (32, ToyScale(patch_size=2)),
    # 64×64 toy images, patch 4 → 16×16 outer grid
    "r64p4": (64, ToyScale(patch_size=4)),
    # ABLATION_CPU_SCALE's sizes (widths 32/64, depths 1/1, head dim 16) at patch 2
    "p2-small": (
        32,
        ToyScale(widths=(32, 64), depths=(1, 1), head_dim=16, mapping_width=64, patch_size=2),
    ),
    # patch 2, narrower outer level (48) and depths 1/2
    "p2-w48": (32, ToyScale(widths=(48, 96), depths=(1, 2), head_dim=16, patch_size=2)),
}


def task_config(step: str, task: str, batch_size: int | None = None):
    resolution, scale = CANDIDATE_TASKS[task]
    if batch_size is not None:
        scale = replace(scale, batch_size=batch_size)
    config = to_toy_scale(ablation_step(step), scale)
    if resolution != 32:
        config.model.resolution = resolution
    config.name = f"{step}/{task}"
    return config


def set_backend(model, backend: str) -> None:
    set_attention_backend(model, backend)


def patch_for_compile() -> None:
    """Work around the crash of ``training.compile=true`` for this measurement only (the library
    is not changed here): under ``torch.compile``, call the masked-SDPA and shifted-window
    kernels directly (both are plain differentiable PyTorch) instead of through the
    ``autograd.Function`` whose ``forward`` records an inner graph with ``enable_grad`` — which
    Dynamo does not reproduce, so the first backward failed with "element 0 of tensors does not
    require grad and does not have a grad_fn"."""
    from hdit_edu import attention as A

    na, swa = A.neighborhood_attention, A.shifted_window_attention

    def neighborhood_attention(q, k, v, kernel_size, *, scale=None, backend="auto"):
        if torch.compiler.is_compiling() and backend in ("auto", "masked-sdpa"):
            return A._na_masked_sdpa(q, k, v, kernel_size, A._default_scale(scale, q.shape[-1]))
        return na(q, k, v, kernel_size, scale=scale, backend=backend)

    def shifted_window_attention(q, k, v, window_size, shift, *, scale=None):
        if torch.compiler.is_compiling():
            scale = A._default_scale(scale, q.shape[-1])
            return A._shifted_window_kernel(q, k, v, window_size, shift, scale)
        return swa(q, k, v, window_size, shift, scale=scale)

    A.neighborhood_attention = neighborhood_attention
    A.shifted_window_attention = shifted_window_attention


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def time_train(step, task, backend, compile_, warmup, repeats, batch_size=None) -> dict:
    config = task_config(step, task, batch_size)
    config.training.compile = compile_
    row = {
        "kind": "train",
        "step": step,
        "task": task,
        "backend": backend,
        "compile": compile_,
        "batch_size": config.training.batch_size,
        "resolution": config.model.resolution,
        "patch": config.model.patch_size,
        "load_before": load(),
    }
    trainer = Trainer(config, None, progress=False, device="cpu")
    set_backend(trainer.model, backend)
    row["params_M"] = sum(p.numel() for p in trainer.model.parameters()) / 1e6
    try:
        t0 = time.perf_counter()
        for _ in range(warmup):
            trainer.train_step()
        row["warmup_s"] = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - recorded, not hidden
        row["error"] = f"{type(e).__name__}: {str(e)[:2000]}"
        return row
    row["median_s"] = statistics.median(times)
    row["mean_s"] = statistics.fmean(times)
    row["steps_per_s"] = 1 / row["median_s"]
    row["repeats"] = repeats
    row["load_after"] = load()
    return row


def time_sample(step, task, backend, n, steps, cfg, batch_size) -> dict:
    config = task_config(step, task)
    trainer = Trainer(config, None, progress=False, device="cpu")
    set_backend(trainer.ema, backend)
    row = {
        "kind": "sample",
        "step": step,
        "task": task,
        "backend": backend,
        "n": n,
        "sample_steps": steps,
        "cfg": cfg,
        "batch_size": batch_size,
        "load_before": load(),
    }
    t0 = time.perf_counter()
    generate(trainer.ema_denoiser, config, n, steps=steps, cfg_scale=cfg, batch_size=batch_size)
    row["seconds"] = time.perf_counter() - t0
    row["images_per_s"] = n / row["seconds"]
    row["load_after"] = load()
    return row


def time_interleaved(steps, task, backend, warmup, repeats) -> list[dict]:
    """Training steps of several configurations, one step of each in turn (round robin), so
    that a shared machine's changing load hits all of them alike. Records wall-clock and this
    process's CPU time per step (medians)."""
    from hdit_edu.ablation import ToyBudget, run_config

    trainers = {}
    for step in steps:
        budget = ToyBudget(task=task, train_steps=10**6, batch_size=16)  # run.py's tasks
        config = run_config(step, 0, budget)
        trainers[step] = Trainer(config, None, progress=False, device="cpu")
        set_backend(trainers[step].model, backend)
    for _ in range(warmup):
        for trainer in trainers.values():
            trainer.train_step()
    wall = {s: [] for s in steps}
    cpu = {s: [] for s in steps}
    load_before = load()
    for _ in range(repeats):
        for step, trainer in trainers.items():
            t0, c0 = time.perf_counter(), time.process_time()
            trainer.train_step()
            wall[step].append(time.perf_counter() - t0)
            cpu[step].append(time.process_time() - c0)
    rows = []
    for step, trainer in trainers.items():
        rows.append(
            {
                "kind": "train-interleaved",
                "step": step,
                "task": task,
                "backend": backend,
                "batch_size": trainer.config.training.batch_size,
                "params_M": sum(p.numel() for p in trainer.model.parameters()) / 1e6,
                "median_s": statistics.median(wall[step]),
                "median_cpu_s": statistics.median(cpu[step]),
                "steps_per_s": 1 / statistics.median(wall[step]),
                "steps_per_cpu_s": 1 / statistics.median(cpu[step]),
                "repeats": repeats,
                "load_before": load_before,
                "load_after": load(),
            }
        )
    return rows


def profile(step: str, task: str) -> None:
    """torch.profiler's table of 10 training steps (after 5 warm-up steps), one thread."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    trainer = Trainer(task_config(step, task), None, progress=False, device="cpu")
    for _ in range(5):
        trainer.train_step()
    with profiler(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            trainer.train_step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("train", "sample", "interleaved", "profile"))
    p.add_argument(
        "--tasks", nargs="+", default=["p2"], choices=sorted({*CANDIDATE_TASKS, "p4k3"})
    )  # "p4k3": run.py's task (interleaved only)
    p.add_argument("--steps", nargs="+", default=["E"])
    p.add_argument("--backends", nargs="+", default=["auto"])
    p.add_argument("--compile", action="store_true")
    p.add_argument(
        "--compile-fix", action="store_true", help="with --compile: patch_for_compile() first"
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--sample-batch", type=int, default=128)
    p.add_argument("--out", default=str(SPEED / "speed.jsonl"))
    args = p.parse_args(argv)
    if args.compile_fix:
        patch_for_compile()
    if args.what == "profile":
        profile(args.steps[0], args.tasks[0])
        return 0
    if args.what == "interleaved":
        for task in args.tasks:
            for row in time_interleaved(
                args.steps, task, args.backends[0], args.warmup, args.repeats
            ):
                row["command"] = " ".join(sys.argv)
                row["torch"] = torch.__version__
                row["threads"] = torch.get_num_threads()
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
        return 0
    for task in args.tasks:
        for step in args.steps:
            for backend in args.backends:
                if args.what == "train":
                    row = time_train(
                        step,
                        task,
                        backend,
                        args.compile,
                        args.warmup,
                        args.repeats,
                        args.batch_size,
                    )
                else:
                    row = time_sample(
                        step,
                        task,
                        backend,
                        args.n,
                        args.sample_steps,
                        args.cfg,
                        args.sample_batch,
                    )
                row["compile_fix"] = args.compile_fix
                row["command"] = " ".join(sys.argv)
                row["torch"] = torch.__version__
                row["threads"] = torch.get_num_threads()
                line = json.dumps(row)
                print(line, flush=True)
                with open(args.out, "a") as f:
                    f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
