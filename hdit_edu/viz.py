"""Plots the notebooks show (Figs. 2, 3, 8 and friends): attention windows, loss weightings,
FLOP curves, sample grids, denoising trajectories, the loss curves of runs. Matplotlib only;
every function draws into a given ``ax`` (or creates one) and returns it, so notebooks can
compose figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .attention import ATTENTION_MODULE_KINDS
from .attention_analysis import attended_mask
from .diffusion import loss_weight, target_weight
from .flops import TERM_KINDS, attention_flops, keys_per_query, loglog_slope
from .runs import read_metrics

# --- sample grids ------------------------------------------------------------------------------


def show_images(
    ax,
    images,
    nrow: int = 8,
    title: str | None = None,
    *,
    column_labels: Sequence[str] | None = None,
    padding: int = 1,
    label_rotation: float = 0,
):
    """Draw a grid of samples on ``ax`` and name its columns: ``images`` is a tensor (N, 3, H, W)
    in [-1, 1], laid out ``nrow`` per row, or a grid already rendered to an array (H, W[, 3]),
    such as a run's ``samples/step-*.png``, of ``nrow`` columns. ``column_labels`` (one per
    column, e.g. the class names of a grid drawn with one class per column) become the x tick
    labels under the columns' centres (turned by ``label_rotation`` degrees where the panel is
    narrow). Returns ``ax``."""
    if torch.is_tensor(images):
        from torchvision.utils import make_grid

        grid = make_grid((images.float() + 1) / 2, nrow=nrow, padding=padding, pad_value=1)
        ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy())
        columns = min(nrow, len(images))
    else:
        ax.imshow(np.asarray(images), interpolation="nearest")
        columns = nrow
    if title:
        ax.set_title(title, fontsize=9)
    if column_labels is None:
        ax.set_axis_off()
        return ax
    if len(column_labels) != columns:
        raise ValueError(
            f"column_labels has {len(column_labels)} names for a grid of {columns} columns: "
            "give one per column"
        )
    width = ax.get_images()[-1].get_array().shape[1]
    ax.set_xticks([(j + 0.5) * width / columns for j in range(columns)], labels=column_labels)
    ax.tick_params(axis="x", length=0, labelsize=8, pad=2, labelrotation=label_rotation)
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return ax


# --- diffusion plots ---------------------------------------------------------------------------


# One look per weighting in every plot of them: at small σ the SNR and Karras curves coincide, so
# SNR is a wide pale band and Karras a dashed line on top (both stay visible).
WEIGHTING_STYLES = {
    "snr": {"color": "C7", "lw": 4.0, "alpha": 0.5},
    "min-snr": {"color": "C0", "lw": 1.6},
    "soft-min-snr": {"color": "C3", "lw": 1.6},
    "karras": {"color": "k", "lw": 1.2, "ls": "--"},
}


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
    if space not in ("x0", "target"):
        raise ValueError(f"unknown space {space!r}; allowed: 'x0', 'target'")
    ax = plt.subplots(figsize=(5, 3.5))[1] if ax is None else ax
    sigmas = torch.logspace(math.log10(sigma_range[0]), math.log10(sigma_range[1]), 400)
    weight = loss_weight if space == "x0" else target_weight
    for kind in kinds:
        g = gamma if kind in ("min-snr", "soft-min-snr") else None
        label = f"{kind} (γ = {g:g})" if g is not None else kind
        values = weight(kind, sigmas, sigma_data=sigma_data, gamma=g)
        ax.loglog(sigmas, values, label=label, **WEIGHTING_STYLES.get(kind, {}))
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


# --- flops plots -------------------------------------------------------------------------------


def plot_flops_scaling(rows: list[dict], ax=None, fit_from: int = 1024, title: str | None = None):
    """Fig. 2: GFLOP per forward pass against pixel count, log-log, one line per config name in
    ``rows`` (:func:`hdit_edu.flops.scaling_table`), with the power-law slope fitted over the
    resolutions ``>= fit_from`` written in the legend (≈ 1: O(n); ≈ 2: O(n²)). Returns ``ax``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.5))
    names = list(dict.fromkeys(r["name"] for r in rows))
    for i, name in enumerate(names):
        mine = sorted((r for r in rows if r["name"] == name), key=lambda r: r["resolution"])
        pixels = [r["resolution"] ** 2 for r in mine]
        gflops = [r["gflops"] for r in mine]
        fit = [(p, g) for r, p, g in zip(mine, pixels, gflops) if r["resolution"] >= fit_from]
        label = name
        if len(fit) >= 2:
            slope = loglog_slope(*zip(*fit))
            label = f"{name}  (slope {slope:.2f} for ≥ {fit_from}²)"
        ax.loglog(pixels, gflops, "o-", color=f"C{i}", label=label)
        for r, p, g in zip(mine, pixels, gflops):
            if r["method"] == "fvcore":
                ax.plot(p, g, "kx", ms=7)
    ax.set_xlabel("pixels per image (resolution²)")
    ax.set_ylabel("GFLOP per forward pass")
    ax.set_title(title or "Compute against resolution (× = measured by fvcore)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_flops_breakdown(
    breakdowns: dict,
    stack: str = "kind",
    ax=None,
    normalize: bool = False,
    title: str | None = None,
    levels_from: str = "outside",
):
    """Stacked bars of where the FLOPs go. ``breakdowns``: ``{bar label: {(level, kind): GFLOP}}``
    (:func:`hdit_edu.flops.analytic_breakdown` with ``by="level-kind"``); ``stack="kind"`` stacks
    the kinds of work (patching, qkv+out, attention, FFN, …), ``stack="level"`` the hourglass
    levels (``None`` = the conditioning path). ``levels_from="inside"`` numbers the levels from
    the innermost one ("core", "core + 1", …) so that bars of models with different numbers of
    levels line up. ``normalize``: show fractions of the total."""
    if stack not in ("kind", "level"):
        raise ValueError(f"stack: unknown value {stack!r}; allowed: kind, level")
    if levels_from not in ("outside", "inside"):
        raise ValueError(f"levels_from: unknown value {levels_from!r}; allowed: outside, inside")
    if stack == "level" and levels_from == "inside":
        renumbered = {}
        for label, b in breakdowns.items():
            core = max(lv for lv, _ in b if lv is not None)
            renumbered[label] = {
                (None if lv is None else core - lv, kind): v for (lv, kind), v in b.items()
            }
        breakdowns = renumbered
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    labels = list(breakdowns)
    index = 1 if stack == "kind" else 0
    if stack == "kind":
        keys = [k for k in TERM_KINDS if any(k == key[1] for b in breakdowns.values() for key in b)]
    else:
        levels = {key[0] for b in breakdowns.values() for key in b}
        keys = sorted(lv for lv in levels if lv is not None) + ([None] if None in levels else [])

    def key_name(key) -> str:
        if stack == "kind":
            return key
        if key is None:
            return "conditioning"
        if levels_from == "inside":
            return "core (innermost)" if key == 0 else f"core + {key}"
        return f"level {key}"

    totals = [sum(b.values()) for b in breakdowns.values()]
    bottom = [0.0] * len(labels)
    for j, key in enumerate(keys):
        values = [
            sum(v for k, v in b.items() if k[index] == key) / (t if normalize else 1)
            for b, t in zip(breakdowns.values(), totals)
        ]
        ax.bar(labels, values, bottom=bottom, label=key_name(key), color=f"C{j}")
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("fraction of GFLOP" if normalize else "GFLOP per forward pass")
    ax.set_title(title or f"Where the FLOPs go (by {stack})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


# --- attention & rope plots ---------------------------------------------------------------------


def _token_grid(ax, h: int, w: int):
    """Axes showing an h × w token grid (row 0 on top), thin lines between tokens."""
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks(range(0, w, max(1, w // 8)))
    ax.set_yticks(range(0, h, max(1, h // 8)))
    if max(h, w) <= 32:
        for i in range(h + 1):
            ax.axhline(i - 0.5, color="0.85", lw=0.4)
        for j in range(w + 1):
            ax.axvline(j - 0.5, color="0.85", lw=0.4)
    ax.set_aspect("equal")
    return ax


def plot_attended_set(
    kind: str,
    h: int,
    w: int,
    query: tuple[int, int],
    *,
    kernel_size: int = 7,
    window_size: int = 8,
    shift: int = 0,
    ax=None,
    title: str | None = None,
):
    """The keys the query token attends to (shaded) on the h × w token grid, the query as a
    red dot; for shifted windows also the window borders of the rolled grid (dashed)."""
    ax = plt.subplots(figsize=(3, 3))[1] if ax is None else ax
    mask = attended_mask(
        kind, h, w, query, kernel_size=kernel_size, window_size=window_size, shift=shift
    )
    ax.imshow(mask.float().numpy(), cmap="Blues", vmin=0, vmax=1.4, interpolation="nearest")
    _token_grid(ax, h, w)
    if kind == "shifted-window":
        for b in range(window_size - shift, max(h, w), window_size):  # borders at ⌊(i+s)/w⌋
            if b < h:
                ax.axhline(b - 0.5, color="C2", lw=1.2, ls="--")
            if b < w:
                ax.axvline(b - 0.5, color="C2", lw=1.2, ls="--")
    ax.plot(query[1], query[0], "o", color="C3", ms=max(3, 60 / max(h, w)))
    detail = {
        "global": "",
        "neighborhood": f" {kernel_size}×{kernel_size}",
        "shifted-window": f" {window_size}×{window_size}, shift {shift}",
    }.get(kind, "")
    ax.set_title(title or f"{kind}{detail}: {int(mask.sum())} keys", fontsize=9)
    return ax


def plot_receptive_field(field: torch.Tensor, query=None, *, ax=None, title: str | None = None):
    """A boolean (h, w) receptive field (e.g. :func:`hdit_edu.attention_analysis.receptive_field`)."""
    ax = plt.subplots(figsize=(3, 3))[1] if ax is None else ax
    h, w = field.shape
    ax.imshow(field.float().numpy(), cmap="Oranges", vmin=0, vmax=1.4, interpolation="nearest")
    _token_grid(ax, h, w)
    if query is not None:
        ax.plot(query[1], query[0], "o", color="C3", ms=max(3, 60 / max(h, w)))
    frac = field.float().mean().item()
    ax.set_title(title or f"receptive field: {frac:.0%} of the tokens", fontsize=9)
    return ax


def plot_attention_cost(
    sides,
    *,
    heads: int,
    head_dim: int,
    kernel_size: int = 7,
    window_size: int = 8,
    axes=None,
):
    """Cost of one attention layer as the token grid (side × side) grows, per image, for global,
    neighborhood and shifted-window attention: multiply-adds
    (:func:`hdit_edu.flops.attention_flops`) and the memory of the attention scores if they
    were materialised in fp32 (``tokens · keys/query · heads · 4`` bytes; fused kernels keep
    only O(tokens)). ``axes``: two axes, or None for a new figure."""
    axes = plt.subplots(1, 2, figsize=(9, 3.2))[1] if axes is None else axes
    window = {"kernel_size": kernel_size, "window_size": window_size}
    sides = list(sides)
    for kind in ATTENTION_MODULE_KINDS:
        flops = [attention_flops(kind, s, s, heads, head_dim, **window) for s in sides]
        memory = [s * s * keys_per_query(kind, s, s, **window) * heads * 4 for s in sides]
        axes[0].loglog(sides, flops, "o-", label=kind, ms=3)
        axes[1].loglog(sides, memory, "o-", label=kind, ms=3)
    axes[0].set_ylabel("multiply-adds per layer")
    axes[1].set_ylabel("score memory per layer (bytes, fp32)")
    for ax in axes:
        ax.set_xlabel("token grid side (tokens = side²)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    return axes


# --- training runs ---------------------------------------------------------------------------


def plot_losses(
    runs: str | Path | Sequence[str | Path] | dict[str, str | Path],
    *,
    by_sigma: bool = False,
    ax=None,
    smooth: int = 1,
):
    """Loss curves of one or several runs (a run dir, a list, or ``{label: run dir}``).

    ``by_sigma=True`` plots one run's loss per σ bin instead. ``smooth`` is a moving-average
    window in log records. Returns the matplotlib Axes."""
    if isinstance(runs, (str, Path)):
        runs = {Path(runs).name: runs}
    elif not isinstance(runs, dict):
        runs = {Path(r).name: r for r in runs}
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))

    def smoothed(values):
        v = np.asarray(values, dtype=float)
        if smooth <= 1 or len(v) < smooth:
            return v
        return np.convolve(v, np.ones(smooth) / smooth, mode="valid")

    for label, run in runs.items():
        records = read_metrics(run)
        steps = [r["step"] for r in records]
        if by_sigma:
            for name in records[0]["sigma_bins"]:
                vals = [r["sigma_bins"][name] for r in records]
                ok = [(s, v) for s, v in zip(steps, vals) if v is not None]
                if ok:
                    s, v = zip(*ok)
                    ax.plot(
                        s[smooth - 1 :] if smooth > 1 and len(v) >= smooth else s,
                        smoothed(v),
                        label=f"{label} σ∈{name}" if len(runs) > 1 else f"σ ∈ {name}",
                    )
        else:
            v = smoothed([r["loss"] for r in records])
            ax.plot(steps[len(steps) - len(v) :], v, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss" + (" per σ bin" if by_sigma else ""))
    ax.set_yscale("log")
    # beside the axes, not over the curves (the σ bands fill the whole plot)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    return ax


def plot_forest(comparisons, metrics=("fid", "class_accuracy", "heldout_loss"), axes=None):
    """A forest plot of an ablation analysis (:func:`hdit_edu.ablation.analyze`'s
    ``"comparisons"``): one panel per metric, one row per comparison "x → y" with the mean
    seed-paired difference (y − x) and its 95 % CI; filled: significant after Holm, open: not;
    the dotted line is no difference. Returns the axes."""
    names = list(dict.fromkeys(f"{c['x']} → {c['y']}" for c in comparisons))
    if axes is None:
        _, axes = plt.subplots(
            1, len(metrics), figsize=(4 * len(metrics), 0.32 * len(names) + 1.2), sharey=True
        )
    for ax, metric in zip(axes, metrics):
        rows = {f"{c['x']} → {c['y']}": c for c in comparisons if c["metric"] == metric}
        for i, name in enumerate(names):
            c = rows.get(name)
            if c is None or not c["difference"]["n"]:
                continue
            d = c["difference"]
            low, high = d["ci95"] if d["n"] > 1 else (d["mean"], d["mean"])
            filled = bool(c.get("significant"))
            ax.plot([low, high], [i, i], color="C0" if filled else "C7", lw=1.5)
            ax.plot(d["mean"], i, "o", ms=5, color="C0" if filled else "C7",
                    mfc="C0" if filled else "white")  # fmt: skip
        ax.axvline(0, color="k", ls=":", lw=1)
        ax.set_title(f"{metric}: y − x (95 % CI)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    return axes
