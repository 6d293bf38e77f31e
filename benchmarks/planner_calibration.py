"""Calibration data of the memory planner: real training steps of the paper configs at their
true widths, on this machine's CPU (issues 17 and 32).

    python benchmarks/planner_calibration.py            # all configs and modes (~15 min, 1 thread)
    python benchmarks/planner_calibration.py --configs imagenet128 --modes none
    python benchmarks/planner_calibration.py --cells imagenet128:level:2:2:fp32 toy:none:2:1:bf16 \
        --out benchmarks/results/planner-heldout-cpu.json      # batch, accumulation, precision

The default run (batch 1, fp32, ``planner-calibration-cpu.json``) is what the planner's two
memory constants are fitted on (:func:`hdit_edu.planner.memory._calibrate`). ``--cells`` measures
other cells, ``CONFIG:MODE:MICRO_BATCH:ACCUM:PRECISION[:RESOLUTION]`` each: the micro-batch,
the gradient-accumulation steps (the step's global batch is their product), ``bf16`` =
``torch.autocast("cpu", bfloat16)`` around the forward pass exactly as the trainer does on
CUDA (the trainer itself autocasts only on CUDA: here its ``use_bf16`` is switched on), and an
optional resolution at which the config keeps all its levels and widths (e.g.
``ffhq1024:level:2:1:fp32:256``: FFHQ's five levels at 256², 1/16 of the tokens). Results are
appended to ``--out`` as each cell finishes (a stopped run keeps what it measured).

Each (config, checkpointing) runs in a fresh process: build the :class:`~hdit_edu.training.Trainer`
(model, EMA, AdamW) at batch 1 with an in-memory set of one random image, create AdamW's
moments with one zero-gradient ``optimizer.step()`` (as after any first step), then run one
:meth:`~hdit_edu.training.Trainer.train_step` — data, augmentation, σ and ε, forward,
backward, AdamW, EMA — under :class:`hdit_edu.planner.PeakMemory`. Recorded per run:

* ``resident_bytes`` — the tensors alive before the step: weights, EMA weights and buffers,
  AdamW's moments (summed from the tensors themselves);
* ``step_peak_bytes`` — the allocator's peak during the step above that (gradients,
  activations, temporaries);
* ``peak_bytes`` — their sum: the step's peak tensor memory;
* ``step_s`` — the step's wall time under the profiler (it slows the step a little),
  and the process's peak RSS.

Writes ``benchmarks/results/planner-calibration-cpu.json`` (the planner's tests read it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import common  # benchmarks/common.py (it also puts the repository root on sys.path)
import torch

from hdit_edu import planner
from hdit_edu.configs import normalize_resolution
from hdit_edu.planner import PeakMemory
from hdit_edu.presets import PAPER_CONFIGS, get_config
from hdit_edu.training import Trainer

OUT = common.RESULTS_DIR / "planner-calibration-cpu.json"


class OneImage:
    """A data set of one fixed random image (class 0) at the model's resolution."""

    def __init__(self, resolution):
        h, w = normalize_resolution(resolution)
        self.image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def __len__(self) -> int:
        return 1

    def batch(self, indices):
        n = len(indices)
        return self.image.expand(n, -1, -1, -1).clone(), torch.zeros(n, dtype=torch.long)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def resident_bytes(trainer: Trainer) -> int:
    """Bytes of the tensors a run holds between steps: weights and buffers, the EMA copy,
    AdamW's moments (summed from the tensors themselves)."""
    return (
        tensor_bytes(trainer.model.parameters())
        + tensor_bytes(trainer.model.buffers())
        + tensor_bytes(trainer.ema.parameters())
        + tensor_bytes(trainer.ema.buffers())
        + sum(tensor_bytes(s.values()) for s in trainer.optimizer.state.values())
    )


def create_moments(trainer: Trainer) -> None:
    """Make AdamW's moments exist, as after any first step: one step on zero gradients."""
    for p in trainer.model.parameters():
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def step_peak(trainer: Trainer) -> dict:
    """One :meth:`~hdit_edu.training.Trainer.train_step` under :class:`PeakMemory`, after
    :func:`create_moments`: ``resident_bytes`` (before the step), ``step_peak_bytes`` (the
    allocator's peak during the step above that), ``peak_bytes`` (their sum), ``step_s`` and
    ``measured_with``. On CUDA also ``cuda_max_memory_allocated_bytes``: the allocator's own
    peak over the step, everything on the device counted."""
    create_moments(trainer)
    device = trainer.device
    resident = resident_bytes(trainer)
    t0 = time.perf_counter()
    with PeakMemory(device) as memory:
        trainer.train_step()
    seconds = time.perf_counter() - t0
    step = round(memory.peak_MiB * 2**20)
    row = {
        "resident_bytes": resident,
        "step_peak_bytes": step,
        "peak_bytes": resident + step,
        "peak_GiB": (resident + step) / 2**30,
        "step_s": seconds,
        "measured_with": memory.kind,
    }
    if device.type == "cuda":  # PeakMemory reset the peak at entry
        row["cuda_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    return row


def cell_config(name: str, mode: str, batch: int = 1, accum: int = 1, precision="fp32",
                resolution: int | None = None):
    """``name``'s config for one measured cell (see the module docstring)."""
    config = get_config(name)
    if resolution:
        config.model.resolution = resolution  # every level and width kept
    t = config.training
    t.batch_size, t.grad_accum, t.precision, t.checkpointing = batch * accum, accum, precision, mode
    return config


def measure(name: str, mode: str, batch: int = 1, accum: int = 1, precision: str = "fp32",
            resolution: int | None = None) -> dict:
    config = cell_config(name, mode, batch, accum, precision, resolution)
    trainer = Trainer(config, None, dataset=OneImage(config.model.resolution), progress=False)
    trainer.use_bf16 = precision == "bf16"  # CPU autocast, as the trainer does on CUDA
    params = sum(p.numel() for p in trainer.model.parameters())
    peak = step_peak(trainer)
    return {
        "config": name,
        "resolution": list(normalize_resolution(config.model.resolution)),
        "checkpointing": mode,
        "batch": batch,
        "grad_accum": accum,
        "precision": precision,
        "params": params,
        **{k: peak[k] for k in ("resident_bytes", "step_peak_bytes", "peak_bytes", "peak_GiB")},
        "step_s": peak["step_s"],
        "peak_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "measured_with": peak["measured_with"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=list(PAPER_CONFIGS))
    p.add_argument("--modes", nargs="+", default=["none", "level", "layer"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cells", nargs="+", metavar="CONFIG:MODE:BATCH:ACCUM:PRECISION[:RES]")
    p.add_argument("--timeout", type=float, help="seconds per cell (then recorded as failed)")
    p.add_argument("--append", action="store_true", help="keep --out's other cells")
    p.add_argument("--table", action="store_true", help="print the held-out table, run nothing")
    p.add_argument("--layers", action="store_true", help="GFLOP/s of one layer per level")
    p.add_argument("--one", metavar="CELL", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.table:
        print(heldout_markdown(), days_markdown(), sep="\n\n")
        return 0
    if args.layers:
        load = list(os.getloadavg())

        def write(rows):
            document = common.make_result(
                "planner-layers", torch.device("cpu"),
                command="python benchmarks/planner_calibration.py "
                + " ".join(argv or sys.argv[1:]),
                settings={"threads": args.threads, "batch": 1, "precision": "fp32",
                          "repeats": 2, "max_grid": MAX_LAYER_GRID},
                results=rows, summary=layers_summary(rows), load_before=load,
            )  # fmt: skip
            print(f"wrote {common.write_result(document, torch.device('cpu'), args.out)}")

        layer_times(out=write)
        return 0
    if args.one:
        print("RESULT " + json.dumps(measure(*parse_cell(args.one))), flush=True)
        return 0
    load_before = os.getloadavg()
    cells = args.cells or [f"{n}:{m}:1:1:fp32" for n in args.configs for m in args.modes]
    rows = []
    if args.append and Path(args.out).exists():
        rows = [r for r in json.loads(Path(args.out).read_text())["results"]
                if r.get("cell") not in cells]  # fmt: skip
    for cell in cells:
        cmd = [sys.executable, __file__, "--one", cell, "--threads", str(args.threads)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess(cmd, -9, "", f"timed out after {args.timeout} s")
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:  # recorded; the next cell runs
            rows.append({"cell": cell, "error": proc.stderr[-2000:]})
            print(f"{cell:28s} failed: {proc.stderr[-300:]}", flush=True)
        else:
            rows.append({"cell": cell, **json.loads(line[0][len("RESULT ") :])})
            r = rows[-1]
            print(
                f"{cell:28s} peak {r['peak_GiB']:.2f} GiB "
                f"(resident {r['resident_bytes'] / 2**30:.2f}) step {r['step_s']:.1f} s",
                flush=True,
            )
        document = common.make_result(
            "planner-calibration",
            torch.device("cpu"),
            command="python benchmarks/planner_calibration.py " + " ".join(argv or sys.argv[1:]),
            settings={"threads": args.threads, "cells": [r.get("cell") for r in rows]},
            results=rows,
            summary={"measured": len(rows), "of": len(cells)},
            load_before=list(load_before),
        )
        path = common.write_result(document, torch.device("cpu"), args.out)  # after each cell
        print(f"wrote {path}", flush=True)
    return 0


LAYER_KINDS = ("qkv+out", "attention", "ffn")


MAX_LAYER_GRID = 64  # tokens per side for the layer timing (neighborhood levels only)


def layer_times(names=("imagenet128", "ffhq1024"), backend="torch", repeats=2, out=None):
    """Forward + backward of one transformer layer of every level of each config, at its true
    width and heads, batch 1, fp32, one neighborhood kernel for all (``backend``): model
    GFLOP/s per level. Neighborhood levels run on at most ``MAX_LAYER_GRID``² tokens (their
    cost per token does not depend on the grid beyond the 7×7 kernel; FFHQ's 256² level would
    take minutes here); global levels at their true grid. Why 1024² runs below 128², as far as
    a CPU can show it: narrow levels do little arithmetic per number moved. ``out(rows)`` is
    called after every level (the file is written as it goes)."""
    from hdit_edu.configs import token_grids
    from hdit_edu.flops import analytic_terms
    from hdit_edu.models import build_model
    from hdit_edu.rope import token_positions

    rows = []
    for name in names:
        config = get_config(name)
        model = build_model(config, backend)
        levels = config.model.levels
        inner = model.inner if hasattr(model, "inner") else model
        layers = [lv[0] for lv in inner.down_levels] + [inner.mid_level[0]]
        cond_width = config.model.mapping.width
        terms = analytic_terms(config)
        for i, (level, (h, w), layer) in enumerate(zip(levels, token_grids(config.model), layers)):
            count = level.depth * (1 if i == len(levels) - 1 else 2)
            gmac = sum(t.flops for t in terms if t.level == i and t.kind in LAYER_KINDS) / count
            if level.attention == "neighborhood" and h * w > MAX_LAYER_GRID**2:
                gmac *= MAX_LAYER_GRID**2 / (h * w)  # per-token FLOPs are the same
                h = w = MAX_LAYER_GRID
            x = torch.randn(1, h, w, level.width, requires_grad=True)
            pos = token_positions(h, w, (h, w), "normalised")
            cond = torch.randn(1, cond_width)
            seconds = []
            for _ in range(repeats + 1):  # the first is a warm-up
                t0 = time.perf_counter()
                layer(x, pos, cond).sum().backward()
                seconds.append(time.perf_counter() - t0)
            median = sorted(seconds[1:])[len(seconds[1:]) // 2]
            rows.append({
                "config": name, "level": i, "grid": [h, w], "width": level.width,
                "true_grid": list(token_grids(config.model)[i]),
                "attention": level.attention, "backend": backend,
                "model_gflop_fwd_bwd": 6 * gmac / 1e9, "seconds": median, "all_s": seconds,
                "gflop_per_s": 6 * gmac / 1e9 / median,
            })  # fmt: skip
            print(f"{name} level {i} {h}x{w} w{level.width}: {rows[-1]['gflop_per_s']:.2f} "
                  f"GFLOP/s ({median:.2f} s)", flush=True)  # fmt: skip
            if out:
                out(rows)
        del model
    return rows


def layers_summary(rows: list[dict]) -> dict:
    """Per config: model GFLOP/s of its transformer layers as a whole (each level's time scaled
    to its true grid and × its number of layers: down and up passes, or the middle's depth)."""
    out = {}
    for name in dict.fromkeys(r["config"] for r in rows):
        levels = get_config(name).model.levels
        flops = seconds = 0.0
        for r in (r for r in rows if r["config"] == name):
            i = r["level"]
            count = levels[i].depth * (1 if i == len(levels) - 1 else 2)
            scale = r["true_grid"][0] * r["true_grid"][1] / (r["grid"][0] * r["grid"][1])
            flops += r["model_gflop_fwd_bwd"] * scale * count
            seconds += r["seconds"] * scale * count
        out[name] = {"model_gflop": flops, "seconds": seconds, "gflop_per_s": flops / seconds}
    if {"imagenet128", "ffhq1024"} <= set(out):
        out["imagenet128_over_ffhq1024"] = (
            out["imagenet128"]["gflop_per_s"] / out["ffhq1024"]["gflop_per_s"]
        )
    return out


def days_markdown() -> str:
    """Days of the three paper configs on 8 × H100 and 64 × A100 (80 GB), and the paper's two
    runs on their own hardware, as ``hdit-edu plan`` gives them."""
    from hdit_edu.planner.time_model import PAPER_RUNS

    lines = [
        "| config | hardware | plan per GPU | time (low – high) | MFU on that GPU | "
        "A100 MFU from | loader: workers per GPU needed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    setups = [(8, "H100"), (64, "A100")]
    rows = [(name, g, kind) for name in PAPER_CONFIGS for g, kind in setups]
    rows += [(n, r.gpus, r.gpu) for n, r in PAPER_RUNS.items() if (n, r.gpus, r.gpu) not in rows]
    for name, gpus, kind in rows:
        p = planner.plan(get_config(name), gpus, 80, gpu=kind)
        t = p.time
        reported = PAPER_RUNS.get(name)
        own = reported and reported.gpus == gpus and reported.gpu == kind
        lines.append(
            f"| {name} | {gpus} × {kind}"
            + (f" (paper: {reported.reported})" if own else "")
            + f" | {p.micro_batch} × {p.grad_accum}, {p.checkpointing} | "
            + (f"{t.days[0]:.1f} – {t.days[1]:.1f} days" if t.days[1] >= 2 else
               f"{24 * t.days[0]:.1f} – {24 * t.days[1]:.1f} hours")  # fmt: skip
            + f" | {t.mfu[1]:.1%} – {t.mfu[0]:.1%} | "
            f"{t.mfu_source} | {t.loader.workers_needed} ({t.loader.format}) |"
        )
    return "\n".join(lines)


def heldout_markdown() -> str:
    """Predicted against measured peak for every recorded row (:func:`planner.heldout_table`),
    as the Markdown table of ``benchmarks/README.md``."""
    lines = [
        "| config @ resolution | checkpointing | micro-batch × accumulation | precision | "
        "measured GiB | predicted GiB | error | error of the step's own part | role |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in planner.heldout_table():
        lines.append(
            f"| {r['config']} @ {r['resolution']}² | {r['checkpointing']} | "
            f"{r['micro_batch']} × {r['grad_accum']} | {r['precision']} | "
            f"{r['measured_bytes'] / 2**30:.3f} | {r['predicted_bytes'] / 2**30:.3f} | "
            f"{r['error_percent']:+.1f} % | {r['transient_error_percent']:+.1f} % | "
            f"{'fit' if r['fit'] else 'held out'} |"
        )
    held = [r for r in planner.heldout_table() if not r["fit"]]
    worst = max(abs(r["error_percent"]) for r in held)
    worst_step = max(abs(r["transient_error_percent"]) for r in held)
    lines.append("")
    lines.append(f"Held out: {len(held)} rows; largest error {worst:.1f} % of the peak, "
                 f"{worst_step:.1f} % of the step's own part.")  # fmt: skip
    return "\n".join(lines)


def parse_cell(cell: str) -> tuple:
    """``CONFIG:MODE:BATCH:ACCUM:PRECISION[:RESOLUTION]`` → the arguments of :func:`measure`."""
    parts = cell.split(":")
    if len(parts) not in (5, 6) or parts[4] not in ("fp32", "bf16"):
        raise SystemExit(f"--cells {cell!r}: expected CONFIG:MODE:BATCH:ACCUM:fp32|bf16[:RES]")
    name, mode, batch, accum, precision, *res = parts
    return name, mode, int(batch), int(accum), precision, int(res[0]) if res else None


if __name__ == "__main__":
    sys.exit(main())
