"""Evaluate one trained (model, seed) of issue 19 at every cell of the pre-registered grid
(``README.md`` here): resolutions × position readings × σ shift → one JSON, resumable.

    cd <repo> && PYTHONPATH=$PWD OMP_NUM_THREADS=1 python results/resolution-toy/run.py \\
        --model D --seed 0 --run /work/main/runs/ablation-toy/runs/D-s0 \\
        --out results/resolution-toy/runs

Cells: at the training resolution (32) one cell (every reading gives the training positions
bit for bit and the shift is the identity there); at every other resolution the four cells
{normalised, grid} × {no shift, shift}. Per cell: ``--n`` samples (classes 0…7 in turn,
DPM++(3M) SDE, ``--steps`` steps, guidance ``--cfg``, noise seed 1000 + seed — the toy
ablation's evaluation settings, so the 32² cell's samples are the first ``--n`` of that
run's recorded evaluation), then the one evaluation protocol's metrics
(:func:`hdit_edu.protocol.measure`): class accuracy (the toy classifier on the samples
resized to its 32²), toy FID against the 2,048 held-out test images *rendered at that
resolution* (features of both resized the same way), and the coherence measure. A 16-image grid per cell goes to ``OUT/grids/``.

The JSON (``OUT/MODEL-sSEED.json``) is written atomically after every cell; a rerun skips
the cells it already holds with the same settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from hdit_edu.ablation import versions  # noqa: E402
from hdit_edu.configs import format_resolution, normalize_resolution  # noqa: E402
from hdit_edu.data import save_grid  # noqa: E402
from hdit_edu.protocol import measure  # noqa: E402
from hdit_edu.runs import load_run  # noqa: E402
from hdit_edu.sampling import generate, sample_labels  # noqa: E402

SETTINGS = ("n", "steps", "cfg", "sampler", "batch", "eval_seed")


def cells(resolutions: list[int], train: int) -> list[dict]:
    """The grid of one (model, seed): one cell at the training size, four elsewhere."""
    out = []
    for r in resolutions:
        if r == train:
            out.append({"resolution": r, "positions": "normalised", "shift": False})
            continue
        for positions in ("normalised", "grid"):
            for shift in (False, True):
                out.append({"resolution": r, "positions": positions, "shift": shift})
    return out


def cell_key(cell: dict) -> str:
    return f"{cell['resolution']}-{cell['positions']}-{'shift' if cell['shift'] else 'noshift'}"


def evaluate_cell(config, denoiser, cell: dict, args) -> tuple[dict, torch.Tensor]:
    t0, c0 = time.perf_counter(), time.process_time()
    images = generate(
        denoiser,
        config,
        args.n,
        resolution=cell["resolution"],
        positions=cell["positions"],
        shift=cell["shift"],
        steps=args.steps,
        sampler=args.sampler,
        cfg_scale=args.cfg,
        seed=args.eval_seed,
        batch_size=args.batch,
    )
    sample_s, sample_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    labels = sample_labels(args.n, config.model.num_classes)
    out = {
        **cell,
        "n_samples": args.n,
        **measure(images, labels, coherence=True),  # the one protocol's metrics, at this size
        "nonfinite_samples": int((~images.isfinite().flatten(1).all(1)).sum()),
        "sample_s": sample_s,
        "sample_cpu_s": sample_cpu_s,
        "metrics_s": time.perf_counter() - t0,
        "metrics_cpu_s": time.process_time() - c0,
        "load_average": list(os.getloadavg()),
    }
    return out, images


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model name (C, D, L)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--run", required=True, help="the run folder (config.json + checkpoints/)")
    p.add_argument("--resolutions", default="24,32,48,64")
    p.add_argument("--n", type=int, default=512, help="samples per cell")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--sampler", default="dpmpp_3m_sde")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--eval-seed", type=int, default=None, help="default 1000 + seed")
    p.add_argument("--cells", default="", help="only these cell keys (comma-separated; pilot)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.eval_seed is None:
        args.eval_seed = 1000 + args.seed

    out_dir = Path(args.out)
    (out_dir / "grids").mkdir(parents=True, exist_ok=True)
    name = f"{args.model}-s{args.seed}"
    path = out_dir / f"{name}.json"
    settings = {k: getattr(args, k) for k in SETTINGS}
    result = json.loads(path.read_text()) if path.exists() else None
    if result is None or result.get("settings") != settings:
        result = {"name": name, "model": args.model, "seed": args.seed, "settings": settings}
        result["cells"] = {}
    config, denoiser = load_run(args.run)
    train = max(normalize_resolution(config.model.resolution))
    result.update(
        run=str(args.run),
        train_resolution=train,
        pos_emb=config.model.pos_emb,
        levels=[[lv.attention, lv.kernel_size] for lv in config.model.levels],
        command=" ".join(["python", *sys.argv]),
        versions=versions(),  # python, torch, numpy, git commit + dirty flag, CPU, threads
        env={k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    )

    def write():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, path)

    todo = cells_all(args, train)
    if args.cells:
        todo = [c for c in todo if cell_key(c) in args.cells.split(",")]
    for cell in todo:
        key = cell_key(cell)
        if key in result["cells"]:
            continue
        metrics, images = evaluate_cell(config, denoiser, cell, args)
        save_grid(images[:16], out_dir / "grids" / f"{name}-{key}.png", nrow=8)
        result["cells"][key] = metrics
        result["cpu_s"] = sum(
            c["sample_cpu_s"] + c["metrics_cpu_s"] for c in result["cells"].values()
        )
        result["status"] = (
            "done" if len(result["cells"]) == len(cells_all(args, train)) else "partial"
        )
        write()
        short = {k: metrics[k] for k in ("class_accuracy", "fid", "coherence", "sample_cpu_s")}
        print(name, key, format_resolution(cell["resolution"]), json.dumps(short), flush=True)
    return 0


def cells_all(args, train) -> list[dict]:
    return cells([int(r) for r in args.resolutions.split(",")], train)


if __name__ == "__main__":
    sys.exit(main())
