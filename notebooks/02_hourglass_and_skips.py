# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 — The hourglass: tokens down, tokens up, and the skips between (§4.1, Fig. 3, Table 2)
#
# A plain diffusion transformer (DiT) runs every layer on every patch of the image. HDiT borrows
# the **hourglass** of Nawrot et al. (2022): after a few layers at full token resolution it
# *merges* each 2×2 group of tokens into one, runs more layers on the 4× shorter sequence, merges
# again, … and on the way back *splits* tokens again, adding back what each level knew through a
# **skip connection**. Most layers then run on few tokens — and the outer levels can use cheap
# local attention (notebook 04), which is what makes the cost linear in the pixel count.
#
# This notebook takes a real `HDiT` apart:
#
# 1. the shapes at every stage, and **Figure 3** drawn from the model instance itself;
# 2. token merge and split — `PixelUnshuffle` / `PixelShuffle` plus a linear map — as exact
#    inverses, and what they are in convolution language;
# 3. the three **skip merges** of Table 2 (concat, add, learnable lerp — eq. 6);
# 4. what the learned lerp coefficient *f* does to the network.
#
# Library code used: `hdit_edu.hourglass` (`HDiT`, `TokenMerge`, `TokenSplit`, `merge_skip`),
# `hdit_edu.rope` (position grids), `hdit_edu.viz` (the Figure 3 drawing).

# %% tags=["parameters"]
PROFILE = "auto"

# %%
from hdit_edu.env import resolve_profile

PROFILE = resolve_profile(PROFILE)
print(f"profile: {PROFILE}")

# %%
import dataclasses
import inspect

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from hdit_edu.configs import LevelConfig, MappingConfig, ModelConfig
from hdit_edu.hourglass import (
    HDiT,
    TokenMerge,
    TokenSplit,
    merge_skip,
    pixel_shuffle_tokens,
    pixel_unshuffle_tokens,
)
from hdit_edu.presets import paper_config
from hdit_edu.rope import downscale_pos, make_axial_pos
from hdit_edu.toy import ToyDataset
from hdit_edu.viz import plot_hourglass, trace_hourglass
from hdit_edu.widgets import interact

torch.manual_seed(0)
device = "cuda" if PROFILE == "gpu" and torch.cuda.is_available() else "cpu"

# %% [markdown]
# ## 1. An hourglass, stage by stage
#
# Figure 3 of the paper shows the ImageNet-256² model: patch size 4, three levels — 7×7
# neighborhood attention on the 64×64 and 32×32 token grids, global attention on the innermost
# 16×16 grid. We take that model's config from the library (`paper_config("imagenet256")`,
# Table 6: widths [384, 768, 1536], depths [2, 2, 16]) and build it as is in the `gpu` profile; in
# the `cpu` profile we shrink the widths and depths, so that a forward pass at 256² takes about a
# second on a laptop. The *shapes of the token grids* are the same in both.

# %%
config = paper_config("imagenet256").model  # Table 6, ImageNet-256²
if PROFILE == "cpu":  # same layout, tiny widths: a 256² forward pass in about a second
    tiny = [(1, 32, 16), (1, 64, 16), (2, 128, 32)]  # (depth, width, head_dim) per level
    config = dataclasses.replace(
        config,
        levels=[
            dataclasses.replace(level, depth=d, width=w, head_dim=hd)
            for level, (d, w, hd) in zip(config.levels, tiny)
        ],
        mapping=MappingConfig(depth=1, width=64),
    )
widths = [level.width for level in config.levels]
print([(level.depth, level.width, level.attention) for level in config.levels])
model = HDiT(config).to(device).eval()
print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
print(model.splits[0])
print(model.down_levels[0][0])

# %% [markdown]
# We push one 256×256 image through the model and record, with forward hooks, the output shape
# of every stage: the patching, each level going down, the merges, the middle level, the splits
# (which also merge the skips), the levels going up and the unpatching. Tokens are kept
# channels-last, `(batch, height, width, channels)`.

# %%
H = W = 256
x = torch.randn(1, 3, H, W, device=device)
sigma = torch.ones(1, device=device)
stages = trace_hourglass(model, x, sigma, class_cond=torch.tensor([7], device=device))
print(f"{'stage':<15}{'kind':<9}{'level':>5}   {'token grid':>12} {'channels':>9} {'tokens':>8}")
for s in stages:
    _, h, w, c = s["shape"]
    print(f"{s['name']:<15}{s['kind']:<9}{s['level']:>5}   {f'{h}×{w}':>12} {c:>9} {h * w:>8}")

# %%
plot_hourglass(model, stages)
plt.show()

# %% [markdown]
# Read the figure left to right: patching turns 256² pixels into a 64×64 grid of tokens; every
# merge halves the grid side (4× fewer tokens) and widens the channels; the middle level works on
# only 16×16 = 256 tokens — the same sequence length a DiT-B/4 has at 64² — and the way up mirrors
# the way down, each split merging in the skip (red) saved at its level. The grid at every level
# follows from `patch_size` and the level index, which is why the input must be divisible by
# `patch_size · 2^(levels − 1)` (16 here):

# %%
print("grids per level:", model.grid_sizes(H, W))
try:
    model(torch.randn(1, 3, 250, 250, device=device), sigma, torch.tensor([7], device=device))
except ValueError as e:
    print("ValueError:", e)

# %%
by_name = {s["name"]: s["shape"] for s in stages}
for i, width in enumerate(widths):
    side = H // config.patch_size // 2**i
    level_name = f"down_levels.{i}" if i < len(widths) - 1 else "mid_level"
    assert by_name[level_name] == (1, side, side, width)
assert by_name["patch_out"] == (1, H, W, 3)
assert [s["kind"] for s in stages].count("merge") == len(widths) - 1
assert model.grid_sizes(H, W) == [(64, 64), (32, 32), (16, 16)]

# %% [markdown]
# ## 2. Token merge and split: PixelUnshuffle and PixelShuffle
#
# A **merge** gathers each 2×2 block of tokens into one token with 4× the channels
# (`PixelUnshuffle`), then projects linearly to the next level's width. A **split** projects to
# 4× the channels and spreads them back over a 2×2 block (`PixelShuffle`). Without the linear
# maps the two rearrangements are exact inverses — nothing is lost, only moved between the
# spatial axes and the channel axis. Here on an image of the toy data set (3 channels):

# %%
image = ToyDataset("test", resolution=32, size=1)[0][0]  # (3, 32, 32) in [-1, 1]
tokens = image.permute(1, 2, 0)[None]  # channels-last (1, 32, 32, 3)
merged = pixel_unshuffle_tokens(tokens, 2)  # (1, 16, 16, 12): channel order (c, dy, dx)
restored = pixel_shuffle_tokens(merged, 2)
print(tokens.shape, "→", merged.shape, "→", restored.shape)

fig, axes = plt.subplots(1, 6, figsize=(13, 2.4))
axes[0].imshow((image.permute(1, 2, 0) + 1) / 2)
axes[0].set_title("image 32×32×3")
for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
    sub = merged[
        0, :, :, [c * 4 + dy * 2 + dx for c in range(3)]
    ]  # the (dy, dx) pixel of each block
    axes[k + 1].imshow((sub + 1) / 2)
    axes[k + 1].set_title(f"dy={dy}, dx={dx}\n16×16", fontsize=9)
axes[5].imshow((restored[0] + 1) / 2)
axes[5].set_title("shuffle(unshuffle(x))", fontsize=9)
for ax in axes:
    ax.set_axis_off()
plt.show()

# %% [markdown]
# The same rearrangement from scratch — split each spatial axis into (blocks, 2) and move the two
# 2-axes next to the channels — equals the library function:

# %%
b, h, w, c = tokens.shape
from_scratch = (
    tokens.reshape(b, h // 2, 2, w // 2, 2, c)
    .permute(0, 1, 3, 5, 2, 4)
    .reshape(b, h // 2, w // 2, c * 4)
)
assert torch.equal(from_scratch, merged)
assert torch.equal(restored, tokens)  # exact inverses
assert torch.equal(pixel_unshuffle_tokens(pixel_shuffle_tokens(merged, 2), 2), merged)

# %% [markdown]
# **In convolution language.** Unshuffle + linear is a 2×2 convolution with stride 2, and
# linear + shuffle a 2×2 transposed convolution with stride 2: the channel order `(c, dy, dx)` of
# `PixelUnshuffle` is exactly the layout of a convolution kernel `(out, in, kh, kw)`. So a merge
# sees each 2×2 block once, without overlap, and a split paints each 2×2 block from one token.

# %%
merge, split = TokenMerge(3, 8), TokenSplit(8, 3, skip=None)
as_conv = F.conv2d(image[None], merge.proj.weight.view(8, 3, 2, 2), stride=2)
torch.testing.assert_close(merge(tokens), as_conv.permute(0, 2, 3, 1))
t = torch.randn(1, 16, 16, 8)
as_deconv = F.conv_transpose2d(
    t.permute(0, 3, 1, 2), split.proj.weight.view(3, 2, 2, 8).permute(3, 0, 1, 2), stride=2
)
torch.testing.assert_close(split(t), as_deconv.permute(0, 2, 3, 1))
print("TokenMerge == Conv2d(k=2, s=2);  TokenSplit == ConvTranspose2d(k=2, s=2)  ✓")

# %% [markdown]
# **Positions merge with the tokens.** Each token carries a 2-D position (used by RoPE,
# notebook 03). A merged token gets the mean position of the four it replaces — the centre of the
# image region it now covers — which is the position grid of the coarser level:

# %%
pos8 = make_axial_pos(8, 8)
pos4 = downscale_pos(pos8)
plt.figure(figsize=(3.5, 3.5))
plt.scatter(pos8[..., 1].flatten(), pos8[..., 0].flatten(), s=12, label="level i (8×8)")
plt.scatter(
    pos4[..., 1].flatten(), pos4[..., 0].flatten(), s=40, marker="x", label="level i+1 (4×4)"
)
plt.gca().invert_yaxis()
plt.legend(loc="upper right", fontsize=7)
plt.title("token positions (x right, y down)")
plt.show()
torch.testing.assert_close(pos4, make_axial_pos(4, 4))

# %% [markdown]
# ## 3. Merging the skips (Table 2)
#
# On the way up, the split output (the *upsampled* branch, which has been through the coarser
# levels) meets the skip saved at the same level on the way down (fine detail, but only as much
# context as that level's layers gathered). The paper compares three ways to combine them, on
# ablation step E at ImageNet-128²:
#
# | merge | formula | FID (Table 2, the paper's number) |
# | --- | --- | --- |
# | concatenation (U-Net) | $x = W\,[x_\text{up}, x_\text{skip}]$, a pointwise $2d\to d$ projection | 33.75 |
# | addition (Hourglass) | $x = x_\text{up} + x_\text{skip}$ | 28.37 |
# | **learnable lerp** (ours, eq. 6) | $x = f\cdot x_\text{skip} + (1-f)\cdot x_\text{up}$, learnable $f$ | **27.74** |
#
# The FIDs are the paper's, typed from Table 2 (ImageNet-128², 400k steps — far beyond what a
# notebook can train; notebook 06 runs the skip variants at toy scale). What we *measure* here:
# the parameters each merge adds, and — from the shipped toy HDiT — the f its lerp learned.
#
# All three live in one function, `merge_skip`:

# %%
print(inspect.getsource(merge_skip))

# %%
paper_fid = {"concat": 33.75, "add": 28.37, "lerp": 27.74}
extra_params = {}
for kind in paper_fid:
    with torch.device("meta"):  # only counting: no memory, no initialisation
        m = HDiT(dataclasses.replace(config, skip=kind))
    extra_params[kind] = sum(
        p.numel() for split in m.splits for n, p in split.named_parameters() if n != "proj.weight"
    )
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 2.8))
ax1.bar(list(paper_fid), list(paper_fid.values()), color=["C7", "C0", "C3"], hatch="//")
ax1.set_ylim(0, 36)  # bars start at zero: the differences are ~20 %, not 3×
ax1.set_ylabel("FID (lower is better)")
ax1.set_title("the paper's Table 2 (typed, not measured here)", fontsize=9)
ax2.bar(list(extra_params), list(extra_params.values()), color=["C7", "C0", "C3"])
ax2.set_yscale("symlog")
ax2.set_title("parameters the skip merges add (this model)")
for i, v in enumerate(extra_params.values()):
    ax2.text(i, max(v, 1), f"{v:,}", ha="center", va="bottom")
plt.tight_layout()
plt.show()
assert extra_params["add"] == 0
assert extra_params["lerp"] == len(widths) - 1  # one scalar f per skip
assert extra_params["concat"] == sum(2 * w * w for w in widths[:-1])  # 2d → d projections

# %% [markdown]
# **Measured on a trained model.** §4.1 motivates the learnable f: "the usefulness of the
# information provided by the skips can differ significantly". The shipped toy HDiT
# (`data/checkpoints/toy-hdit`, 2 levels, one lerp skip) started at f = 0.5; after training:

# %%
from hdit_edu.runs import load_run
from hdit_edu.widgets import SHIPPED_RUN

toy_config, toy_denoiser = load_run(SHIPPED_RUN)
learned_f = [split.f.item() for split in toy_denoiser.inner.splits]
print(f"learned lerp coefficient(s) f of the shipped model: {[round(f, 3) for f in learned_f]}")
print("(init 0.5; f > 0.5 means the merged tokens lean on the skip, the fine-grid branch)")
assert toy_config.model.skip == "lerp" and len(learned_f) == len(toy_config.model.levels) - 1
assert all(f > 0.7 for f in learned_f)  # training moved f far from 0.5, towards the skip

# %% [markdown]
# The lerp costs one number per skip and can interpolate anywhere between "use only the
# upsampled branch" and "use only the skip". On an image: let the skip carry the full image and
# the upsampled branch a coarse (4× down-, then up-sampled) version of it, and move *f*:

# %%
fine = tokens
coarse = F.interpolate(F.avg_pool2d(image[None], 4), scale_factor=4, mode="nearest").permute(
    0, 2, 3, 1
)


def show_lerp(f=0.5):
    merged = merge_skip("lerp", coarse, fine, torch.tensor([f]))
    fig, axes = plt.subplots(1, 3, figsize=(7, 2.5))
    for ax, img, title in zip(
        axes,
        [coarse, fine, merged],
        ["x_upsampled (coarse)", "x_skip (fine)", f"lerp, f = {f:.2f}"],
    ):
        ax.imshow(((img[0] + 1) / 2).clamp(0, 1))
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    plt.show()


interact(show_lerp, f=widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05))

# %%
zero, one = torch.zeros(1), torch.ones(1)
assert torch.equal(merge_skip("lerp", coarse, fine, one), fine)  # f = 1: the skip, exactly
assert torch.equal(merge_skip("lerp", coarse, fine, zero), coarse)  # f = 0: the upsampled branch
torch.testing.assert_close(merge_skip("lerp", coarse, fine, 0.5 * one), (coarse + fine) / 2)
assert model.splits[0].f.item() == 0.5  # every lerp starts halfway

# %% [markdown]
# ## 4. What the learned lerp coefficient does
#
# *f* decides how much of the inner levels reaches the output. At **f = 1** the upsampled branch
# is discarded: everything below that level is cut off, and the hourglass collapses into a
# shallower transformer. At **f = 0** the skip is ignored: all the level's information must
# squeeze through the coarser levels (an autoencoder without skips). Learning *f* per level lets
# the model choose — the paper found this "especially helpful when training deep hierarchies",
# where the usefulness of a skip differs a lot between levels.
#
# We measure it: for a small model with random (non-zero) weights, the size of the gradient of
# the output with respect to the *middle level's* parameters, as a function of the outer *f*.
# (k-diffusion stores the complementary weight `fac = 1 − f` of the upsampled branch;
# `hdit_edu.interop` converts.)

# %%
small = HDiT(
    ModelConfig(
        levels=[
            LevelConfig(1, 32, 16, "neighborhood", kernel_size=3),
            LevelConfig(1, 64, 16, "global"),
        ],
        mapping=MappingConfig(1, 64),
        patch_size=2,
        num_classes=0,
        resolution=32,
    )
)
with torch.no_grad():
    for p in small.parameters():
        p.add_(torch.randn_like(p) * 0.05)  # move away from the zero init
xs, sig = torch.randn(2, 3, 32, 32), torch.full((2,), 0.5)
fs = torch.linspace(0, 1, 11)
grad_norms = []
for f in fs:
    small.zero_grad()
    with torch.no_grad():
        small.splits[0].f.fill_(f)
    small(xs, sig).square().sum().backward()
    grad_norms.append(
        torch.cat([p.grad.flatten() for p in small.mid_level.parameters()]).norm().item()
    )
plt.figure(figsize=(4.5, 2.8))
plt.plot(fs, grad_norms, "o-")
plt.xlabel("f (weight of the skip)")
plt.ylabel("‖∂ output / ∂ θ_mid‖")
plt.title("how much the middle level matters")
plt.show()

# %%
with torch.no_grad():
    small.splits[0].f.fill_(1.0)
    out_before = small(xs, sig)
    for p in small.mid_level.parameters():
        p.add_(torch.randn_like(p))  # change the middle level completely …
    out_after = small(xs, sig)
assert torch.equal(out_before, out_after)  # … at f = 1 the output does not change at all
assert grad_norms[-1] == 0.0 and min(grad_norms[:-1]) > 0
print("f = 1 cuts the inner levels off; any f < 1 lets them contribute")

# %% [markdown]
# **Summary.** The hourglass keeps each token's content and position consistent across levels
# (merge = unshuffle + linear = a stride-2 2×2 convolution; split its transpose), so the inner
# levels see a coarse, cheap version of the image and the skips bring the detail back. Of the
# three skip merges, the learnable lerp adds one parameter per level, contains "skip only" and
# "upsampled only" as its end points, and was best in the paper's ablation (Table 2).

# %% [markdown]
# ## Exercises
#
# Predict first, then compute your answer in the answer cell (replace the `...`); `check` says
# whether it is right and, if not, what to look at. The collapsed solution runs with the
# notebook and passes the same check.
#
# **1.** Make an input size that fails. The small model above has patch size 2 and two levels:
# every image side must be a multiple of what number? Try a 30×30 image and read the error.

# %% tags=["exercise"]
from hdit_edu.exercises import check, passes

side_multiple = ...  # your answer
check("02.1", side_multiple, model=small)

# %% jupyter={"source_hidden": true} tags=["solution"]
try:
    small.grid_sizes(30, 30)
    raise AssertionError("30×30 should not be accepted")
except ValueError as err:
    print(err)
    assert "divisible" in str(err) or "divide" in str(err)
assert small.grid_sizes(36, 36) == [(18, 18), (9, 9)]  # any multiple of 2 · 2¹ = 4 works
assert passes("02.1", 4, model=small)

# %% [markdown]
# **2.** The lerp can shrink what it merges. For a skip and an upsampled branch that are
# independent with unit variance, which f makes the merged tokens' RMS smallest, and what is
# that RMS? Predict, then measure: sweep f over 0, 0.05, …, 1 with `merge_skip` on two
# random tensors and find the minimum.

# %% tags=["exercise"]
best_f, smallest_rms = ..., ...  # your measurement
check("02.2", (best_f, smallest_rms))

# %% jupyter={"source_hidden": true} tags=["solution"]
gen = torch.Generator().manual_seed(3)
up_branch, skip_branch = torch.randn(2, 1, 64, 64, 32, generator=gen)
sweep = torch.linspace(0, 1, 21)
rms = torch.stack(
    [merge_skip("lerp", up_branch, skip_branch, f[None]).pow(2).mean().sqrt() for f in sweep]
)
best = int(rms.argmin())
print(f"smallest RMS {rms[best]:.4f} at f = {sweep[best]:.2f} (theory: √(f² + (1 − f)²) → √½)")
assert passes("02.2", (sweep[best].item(), rms[best].item()))
# at f = ½ the merge averages two independent signals: a third of their power is lost, which
# the layers after it must make up (one reason the learned f are not ½)

# %% [markdown]
# **3.** How many parameters would concatenation skips add to the ImageNet-256 model (widths
# 384, 768, 1536)? Predict from the formula ($2d \to d$ per skip), then build it on the meta
# device and count.

# %% tags=["exercise"]
concat_extra = ...  # your count
check("02.3", concat_extra)

# %% jupyter={"source_hidden": true} tags=["solution"]
in256 = paper_config("imagenet256").model
predicted = sum(2 * lv.width * lv.width for lv in in256.levels[:-1])
with torch.device("meta"):
    concat_model = HDiT(dataclasses.replace(in256, skip="concat"))
counted = sum(
    p.numel()
    for s in concat_model.splits
    for n, p in s.named_parameters()
    if n == "skip_proj.weight"
)
print(f"concat skips add {counted:,} parameters (predicted {predicted:,})")
assert counted == predicted == 2 * 384**2 + 2 * 768**2
assert passes("02.3", counted)
