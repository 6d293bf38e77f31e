"""The ablation chain (§5.2, Tables 1–2) trained with one budget and measured alike.

Table 1 goes from a global-attention hourglass (step A) through Swin (B1), neighborhood
attention (B2), GEGLU (C), axial RoPE (D) to soft-min-SNR (E), next to the DiT and single-level
baselines R1–R4; Table 2 ablates the skip merge of E. :func:`ablation_config` gives the config
of a step in a profile (``"gpu"``: the paper's ImageNet-128 settings; ``"cpu"``: the toy set at
:data:`ABLATION_CPU_SCALE`, :func:`hdit_edu.profiles.toy_scale`), :func:`run_ablation` trains
every step with the same data order, seed and number of steps and measures each with its EMA
weights — training loss, a held-out loss under one common weighting (:func:`evaluate_loss`),
FID, class accuracy of samples, parameters, GFLOPs — and :func:`ablation_markdown` tabulates
the results (``hdit-edu ablate``, notebook 06).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import evaluation
from .configs import Config, get_config
from .data import ImageFolderDataset, save_grid
from .diffusion import Denoiser
from .flops import analytic_gflops
from .profiles import ToyScale, toy_scale
from .runs import read_metrics
from .sampling import generate, grid_columns, sample_labels
from .toy import ToyDataset, class_accuracy
from .training import Trainer, make_dataset, training_sigmas

# Smaller than the "cpu" profile's CPU_SCALE: the chain's nine runs in a few CPU minutes.
ABLATION_CPU_SCALE = ToyScale(
    widths=(32, 64), depths=(1, 1), head_dim=16, mapping_width=64, batch_size=16, steps=150
)


@torch.no_grad()
def evaluate_loss(
    denoiser: Denoiser,
    config: Config,
    dataset=None,
    *,
    n: int = 256,
    weighting: str = "soft-min-snr",
    seed: int = 0,
    batch_size: int = 128,
) -> float:
    """A held-out loss that is comparable across runs: the same ``n`` test images, the same
    stratified σ and noise for every model, one fixed ``weighting`` (so runs trained with
    different loss weightings, like ablation steps D and E, are measured alike)."""
    m = config.model
    if dataset is None:
        dataset = (
            ToyDataset("test", resolution=m.resolution)
            if config.training.dataset == "toy"
            else make_dataset(config)
        )
    device = next(denoiser.parameters()).device
    n = min(n, len(dataset))
    images, classes = dataset.batch(np.arange(n))
    g = torch.Generator().manual_seed(seed)
    sigma = training_sigmas(config, n, stratified=True, rank=0, world_size=1, generator=g)
    noise = torch.randn(images.shape, generator=g)
    total = 0.0
    for i in range(0, n, batch_size):
        cond = {"class_cond": classes[i : i + batch_size].to(device)} if m.num_classes else {}
        losses = denoiser.loss(
            images[i : i + batch_size].to(device),
            noise[i : i + batch_size].to(device),
            sigma[i : i + batch_size].to(device),
            weighting=weighting,
            **cond,
        )
        total += losses.sum().item()
    return total / n


def ablation_config(
    step: str, profile: str, *, train_steps: int | None = None, data: str | None = None
) -> Config:
    """The config of ablation step ``step`` (Table 1: A, B1, B2, C, D, E; R1–R4; Table 2:
    E-add, E-concat) in a profile: ``"gpu"`` — the paper's ImageNet-128 settings on the image
    folder ``data``; ``"cpu"`` — :func:`toy_scale` with :data:`ABLATION_CPU_SCALE`."""
    config = get_config(step)
    if profile == "cpu":
        config = toy_scale(config, ABLATION_CPU_SCALE)
    elif profile == "gpu":
        if data is not None:
            config.training.dataset = data
    else:
        raise ValueError(f"unknown profile {profile!r}; allowed: cpu, gpu")
    if train_steps is not None:
        config.training.steps = train_steps
    # One budget for all: checkpoints at half-way and the end; the evaluation draws the samples.
    config.training.checkpoint_every = max(1, config.training.steps // 2)
    config.training.sample_every = 0
    return config


def _final_loss(records: list[dict], fraction: float = 0.2) -> float:
    """The mean logged training loss over the last ``fraction`` of a run's records."""
    tail = records[-max(1, int(len(records) * fraction)) :]
    return float(np.mean([r["loss"] for r in tail]))


def run_ablation(
    steps: Sequence[str],
    run_dir: str | Path,
    *,
    profile: str = "cpu",
    train_steps: int | None = None,
    data: str | None = None,
    n_eval: int = 256,
    n_ref: int = 10_000,
    sample_steps: int = 20,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train every step of ``steps`` with one budget (same data order, seed and number of
    steps), then measure each with the EMA weights: the final training loss, a held-out loss
    with one common weighting (:func:`evaluate_loss`), FID against the toy test split with
    the toy classifier's features (``profile="gpu"``: Inception against ``data``), the class
    accuracy of its samples (toy set only), parameters and GFLOPs per forward pass — at the
    trained size and for the paper's 128² model (Table 1's column). Writes
    ``run_dir/results.json`` and ``run_dir/results.md``; returns ``{"rows", "markdown"}``."""
    run_dir = Path(run_dir)
    if profile == "gpu" and data is None:
        raise ValueError(
            "the gpu profile trains on ImageNet-128: pass data=<image folder> (--data)"
        )
    configs = {s: ablation_config(s, profile, train_steps=train_steps, data=data) for s in steps}
    if profile == "cpu":  # the toy test split's features, computed once for every FID
        reference = evaluation.extract_features(
            ToyDataset("test", resolution=32), extractor="toy", batch_size=256
        )
    else:  # Inception features of a random subset of the training folder
        reference = evaluation.extract_features(
            _random_images(ImageFolderDataset(data, 128), n_ref), extractor="inception", n=n_ref
        )
    rows = []
    for name, config in configs.items():
        t0 = time.perf_counter()
        out = run_dir / name
        resume_this = resume and out.exists()
        trainer = Trainer(
            config, out, resume=resume_this, progress=progress, sample_steps=sample_steps
        )
        trainer.fit()
        train_time = time.perf_counter() - t0
        denoiser = trainer.ema_denoiser
        images = generate(denoiser, config, n_eval, steps=sample_steps, seed=1)
        labels = sample_labels(n_eval, config.model.num_classes)
        if profile == "cpu":
            fid = evaluation.fid(images, reference, extractor="toy")
            acc = class_accuracy(images, labels) if labels is not None else None
        else:
            fid = evaluation.fid(images, reference, extractor="inception")
            acc = None
        rows.append(
            {
                "step": name,
                "params_M": sum(p.numel() for p in trainer.model.parameters()) / 1e6,
                "train_loss": _final_loss(read_metrics(out)),
                "eval_loss": evaluate_loss(denoiser, config),
                "fid": fid,
                "class_accuracy": acc,
                "gflops": analytic_gflops(config),
                "paper_gflops_128": analytic_gflops(get_config(name)),
                "train_time_s": train_time,
                "loss_weighting": config.diffusion.loss_weighting,
                "run_dir": str(out),
            }
        )
        if trainer.dist.world_size == 1:
            save_grid(
                images[:16],
                out / "samples" / "eval.png",
                nrow=grid_columns(16, config.model.num_classes),
            )
    result = {
        "profile": profile,
        "train_steps": {r["step"]: configs[r["step"]].training.steps for r in rows},
        "rows": rows,
    }
    result["markdown"] = ablation_markdown(rows)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (run_dir / "results.md").write_text(result["markdown"] + "\n")
    return result


def _random_images(dataset, n: int, seed: int = 0):
    """``generate_fn(batch_size)`` over ``n`` random images of a data set (clean-fid's
    generator protocol), for reference features of a large folder."""
    order = np.random.default_rng(seed).permutation(len(dataset))[:n]
    position = 0

    def next_images(batch_size: int) -> torch.Tensor:
        nonlocal position
        indices = order[position : position + batch_size]
        position += len(indices)
        return dataset.batch(indices)[0]

    return next_images


def ablation_markdown(rows: list[dict]) -> str:
    """The ablation results as a Markdown table (Table 1's columns plus the toy metrics)."""
    head = "| step | params (M) | train loss | held-out loss | FID (toy) | class acc. | GFLOP | GFLOP@128² (paper model) |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        acc = f"{r['class_accuracy']:.3f}" if r["class_accuracy"] is not None else "–"
        lines.append(
            f"| {r['step']} | {r['params_M']:.2f} | {r['train_loss']:.4f} | {r['eval_loss']:.4f} | "
            f"{r['fid']:.2f} | {acc} | {r['gflops']:.3f} | {r['paper_gflops_128']:.1f} |"
        )
    return "\n".join(lines)
