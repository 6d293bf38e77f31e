"""Plots the notebooks show (Figs. 2, 3, 8 and friends): attention windows, RoPE, loss
weightings, FLOP curves, sample grids, denoising trajectories. Matplotlib only; every function
draws into a given ``ax`` (or creates one) and returns it, so notebooks can compose figures.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

# --- diffusion plots ---------------------------------------------------------------------------


def plot_loss_weightings(
    ax=None,
    kinds=("min-snr", "soft-min-snr"),
    *,
    gamma: float | None = 5.0,
    sigma_data: float = 0.5,
    space: str = "x0",
    sigma_range=(1e-3, 1e3),
):
    """Figure 8: loss weight over σ (log–log) for the given :func:`~hdit_edu.diffusion.loss_weight`
    kinds. ``space="x0"`` plots λ(σ) (eq. 7–9), ``space="target"`` the weight on the
    preconditioned target λ(σ)·c_out(σ)² (eq. 5). ``gamma`` applies to the min-SNR kinds."""
    from .diffusion import loss_weight, target_weight

    if space not in ("x0", "target"):
        raise ValueError(f"unknown space {space!r}; allowed: 'x0', 'target'")
    ax = plt.subplots(figsize=(5, 3.5))[1] if ax is None else ax
    sigmas = torch.logspace(math.log10(sigma_range[0]), math.log10(sigma_range[1]), 400)
    weight = loss_weight if space == "x0" else target_weight
    for kind in kinds:
        g = gamma if kind in ("min-snr", "soft-min-snr") else None
        label = f"{kind} (γ = {g:g})" if g is not None else kind
        ax.loglog(sigmas, weight(kind, sigmas, sigma_data=sigma_data, gamma=g), label=label)
    ax.set_xlabel("σ")
    ax.set_ylabel("λ(σ)  (x₀ space)" if space == "x0" else "λ(σ)·c_out(σ)²  (target space)")
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    return ax


def plot_trajectories_2d(ax, xs, *, final=None, data=None, color="C0", max_paths=64, title=None):
    """Paths of 2-D particles through sampling: ``xs`` is a list of (batch, 2) tensors (one per
    step, e.g. the ``x`` of each sampler callback), drawn as lines for up to ``max_paths``
    particles; ``final`` (n, 2) end points and ``data`` (n, 2) reference samples as dots."""
    ax = plt.subplots(figsize=(4, 4))[1] if ax is None else ax
    if data is not None:
        ax.scatter(*data[:, :2].T, s=2, c="0.8", label="data", rasterized=True)
    if xs:
        path = torch.stack([x[:max_paths, :2] for x in xs]).cpu()  # (steps, paths, 2)
        ax.plot(path[..., 0], path[..., 1], color=color, lw=0.6, alpha=0.5)
    if final is not None:
        ax.scatter(*final[:, :2].T.cpu(), s=2, color=color, label="samples", rasterized=True)
    if title:
        ax.set_title(title)
    ax.set_aspect("equal")
    return ax


# --- model plots ------------------------------------------------------------------------------


def trace_hourglass(model, x, sigma, **cond) -> list[dict]:
    """Run ``model`` (an :class:`~hdit_edu.hourglass.HDiT`) once and record every stage of the
    hourglass in order: ``{"name", "kind", "level", "shape"}`` with ``kind`` one of ``"patch"``,
    ``"down"``, ``"merge"``, ``"mid"``, ``"split"``, ``"up"``, ``"unpatch"`` and ``shape`` the
    stage's output (channels-last tokens (B, h, w, C); the image for ``"unpatch"``)."""
    n = len(model.config.levels)
    stages = [("patch_in", "patch", 0, model.patch_in)]
    for i, (level, merge) in enumerate(zip(model.down_levels, model.merges)):
        stages += [(f"down_levels.{i}", "down", i, level), (f"merges.{i}", "merge", i + 1, merge)]
    stages.append(("mid_level", "mid", n - 1, model.mid_level))
    for i in reversed(range(n - 1)):
        stages += [(f"splits.{i}", "split", i, model.splits[i])]
        stages += [(f"up_levels.{i}", "up", i, model.up_levels[i])]
    stages.append(("patch_out", "unpatch", 0, model.patch_out))
    shapes, handles = {}, []
    for name, _, _, module in stages:
        hook = lambda m, args, out, name=name: shapes.__setitem__(name, tuple(out.shape))
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x, sigma, **cond)
    finally:
        for h in handles:
            h.remove()
    return [
        {"name": name, "kind": kind, "level": level, "shape": shapes[name]}
        for name, kind, level, _ in stages
    ]


def plot_hourglass(model, stages: list[dict], ax=None):
    """Figure 3 drawn from a real model: each stage of :func:`trace_hourglass` as a box at the
    depth of its level (outer levels on top), labelled with its layers and token grid; the
    skips as dashed arrows labelled with their merge (and the lerp coefficient f)."""
    config = model.config
    ax = (
        plt.subplots(figsize=(1.35 * len(stages) + 1, 1.6 * len(config.levels) + 1.6))[1]
        if ax is None
        else ax
    )
    colours = {"patch": "0.85", "merge": "0.92", "split": "0.92", "unpatch": "0.85"}
    attention_colour = {"neighborhood": "C0", "shifted-window": "C2", "global": "C1", "none": "C7"}
    centres = {}
    for x, stage in enumerate(stages):
        level = config.levels[stage["level"]]
        y = -stage["level"]
        shape = stage["shape"]
        if stage["kind"] in ("down", "mid", "up"):
            face = attention_colour[level.attention]
            title = f"{level.attention}\n×{level.depth}"
            alpha = 0.35
        else:
            face, alpha = colours[stage["kind"]], 1.0
            title = {
                "patch": f"patch {config.patch_size}×{config.patch_size}",
                "merge": "merge 2×2",
                "split": "split 2×2",
                "unpatch": "unpatch",
            }[stage["kind"]]
        grid = f"{shape[1]}×{shape[2]}×{shape[3]}" + (" px" if stage["kind"] == "unpatch" else "")
        box = plt.Rectangle(
            (x - 0.45, y - 0.32), 0.9, 0.64, facecolor=face, alpha=alpha, edgecolor="k"
        )
        ax.add_patch(box)
        ax.text(x, y + 0.08, title, ha="center", va="center", fontsize=8)
        ax.text(x, y - 0.22, grid, ha="center", va="center", fontsize=7)
        centres[stage["name"]] = (x, y)
        if x:
            (x0, y0) = centres[stages[x - 1]["name"]]
            ax.annotate(
                "", (x - 0.45, y), (x0 + 0.45, y0), arrowprops=dict(arrowstyle="->", lw=0.8)
            )
    for i in range(len(config.levels) - 1):
        (xa, ya), (xb, yb) = centres[f"down_levels.{i}"], centres[f"splits.{i}"]
        split = model.splits[i]
        label = config.skip + (f"  f = {split.f.item():.2f}" if split.f is not None else "")
        ax.plot([xa, xa, xb], [ya + 0.32, ya + 0.5, ya + 0.5], ls="--", color="C3", lw=1)
        ax.annotate(
            "",
            (xb, yb + 0.32),
            (xb, yb + 0.5),
            arrowprops=dict(arrowstyle="->", color="C3", ls="--"),
        )
        ax.text((xa + xb) / 2, ya + 0.54, label, ha="center", va="bottom", fontsize=8, color="C3")
    ax.set_xlim(-0.7, len(stages) - 0.3)
    ax.set_ylim(-len(config.levels) + 0.5, 0.85)
    ax.set_axis_off()
    ax.set_title(
        f"HDiT hourglass: {len(config.levels)} levels, patch {config.patch_size}, skip '{config.skip}'"
    )
    return ax
