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
# # A tour of hdit-edu
#
# **Hourglass Diffusion Transformers** (HDiT; Crowson, Baumann, Birch et al., ICML 2024) generate
# images directly in pixel space with a transformer whose cost grows *linearly* with the number of
# pixels. Three ideas make that work:
#
# 1. **An hourglass** (§4.1, Fig. 3): tokens are merged 2×2 on the way down and split again on the
#    way up, with learnable *lerp* skips between matching levels — most layers run on few tokens.
# 2. **Local attention where the grid is large, global attention where it is small** (§4.3): the
#    outer levels use 7×7 *neighborhood attention* (cost ∝ tokens); only the innermost levels
#    attend globally — the 16×16-token level for ImageNet-128²/256², the 32×32 and 16×16 levels
#    for FFHQ-1024² (footnote 2). Each doubling of resolution adds one cheap local level: O(n)
#    overall (App. A).
# 3. **Better blocks and a better objective** (§4.2, App. B–C): AdaRMSNorm conditioning, GEGLU,
#    cosine-similarity attention with a learned scale, axial RoPE, and the *soft-min-SNR* loss
#    weighting on top of EDM preconditioning.
#
# This notebook is the map. Each later notebook takes one section of the paper, imports the code
# that implements it from the `hdit_edu` library, and checks what it teaches with `assert`s.

# %% tags=["parameters"]
PROFILE = "auto"

# %%
from hdit_edu.env import environment_report, format_report, resolve_profile

PROFILE = resolve_profile(PROFILE)
print(f"profile: {PROFILE}  ('cpu' = tiny sizes that run in minutes; 'gpu' = the paper's sizes)")

# %% [markdown]
# ## Your machine
#
# Neighborhood attention has three backends: NATTEN's fused CUDA kernels (GPU training), NATTEN's
# flex path (forward only on CPU), and our own pure-PyTorch version (any device, with autograd).
# `backend="auto"` picks for you; the report says what this machine has.

# %%
report = environment_report()
print(format_report(report))

# %%
import torch

assert report["torch"] == torch.__version__
assert report["cuda_available"] == torch.cuda.is_available()
assert PROFILE in ("cpu", "gpu")

# The claim of idea 2 above, read from the paper's configs: which token grids attend globally
from hdit_edu.configs import token_grids
from hdit_edu.presets import paper_config

for name, core in {"imagenet128": [16], "imagenet256": [16], "ffhq1024": [32, 16]}.items():
    m = paper_config(name).model
    assert [g[0] for g, lv in zip(token_grids(m), m.levels) if lv.attention == "global"] == core
    assert all(lv.kernel_size == 7 for lv in m.levels if lv.attention == "neighborhood")

# %% [markdown]
# ## First look: HDiT samples in a few seconds
#
# The repository ships a small class-conditional HDiT trained on the 32×32 toy set (8 classes
# of procedurally drawn objects) with its own `hdit-edu train` command
# (`data/checkpoints/toy-hdit/README.md` says how). Here it draws one sample per class with the
# paper's sampler, DPM++(3M) SDE, and classifier-free guidance w = 2.5; notebook 08 turns this
# into an interactive app.

# %%
import time

import matplotlib.pyplot as plt
import torch

from hdit_edu.runs import load_run
from hdit_edu.sampling import generate, sample_labels
from hdit_edu.toy import TOY_CLASSES, class_accuracy
from hdit_edu.widgets import SHIPPED_RUN

torch.set_num_threads(1)  # tiny model: one thread is fastest on a small shared CPU
config, denoiser = load_run(SHIPPED_RUN)
classes = sample_labels(2 * config.model.num_classes, config.model.num_classes)  # 0, 1, … in turn
t0 = time.perf_counter()
images = generate(
    denoiser, config, len(classes), class_cond=classes, cfg_scale=2.5, steps=30, seed=0
)
seconds = time.perf_counter() - t0

fig, axes = plt.subplots(2, config.model.num_classes, figsize=(12, 3.4))
for ax, img, c in zip(axes.flat, images, classes.tolist()):
    ax.imshow(((img.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
    ax.set_title(TOY_CLASSES[c], fontsize=9)
    ax.axis("off")
fig.suptitle(
    f"{len(images)} samples, 30 steps of DPM++(3M) SDE, w = 2.5 — {seconds:.1f} s on {'GPU' if torch.cuda.is_available() else 'CPU'}"
)
plt.show()

# %% [markdown]
# A small CNN trained on the toy set (shipped in `data/toy_classifier/`) checks that the samples
# are recognisably their classes — the same classifier gives the notebooks' "class accuracy".

# %%
accuracy = class_accuracy(images, classes)
print(f"class accuracy of these {len(images)} samples: {accuracy:.0%}")
assert images.shape == (len(classes), 3, config.model.resolution, config.model.resolution)
assert accuracy >= 0.6, accuracy

# %% [markdown]
# ## The map: paper ↔ notebooks ↔ library
#
# | paper | notebook | library modules |
# | --- | --- | --- |
# | overview | [00_tour](00_tour.ipynb) (this one) | `env`, `widgets` |
# | §3.1, eq. 1–5, App. B: EDM, loss weightings, σ densities, samplers | [01_diffusion_and_loss_weighting](01_diffusion_and_loss_weighting.ipynb) | `diffusion`, `sampling` |
# | §4.1, Fig. 3, Table 2: the hourglass, merges/splits, skips | [02_hourglass_and_skips](02_hourglass_and_skips.ipynb) | `hourglass` |
# | §4.2, Fig. 4–5, App. C: AdaRMSNorm, GEGLU, cosine attention, axial RoPE | [03_blocks_rope_cosine_attention](03_blocks_rope_cosine_attention.ipynb) | `layers`, `attention`, `rope`, `dit` |
# | §4.3: neighborhood, shifted-window, global attention | [04_local_attention](04_local_attention.ipynb) | `attention` |
# | App. A, Fig. 2, Tables 1 & 6: FLOPs and parameters | [05_flops_and_scaling](05_flops_and_scaling.ipynb) | `flops`, `configs` |
# | §4.1–4.3, Fig. 3–5: the whole forward pass, assembled step by step | [05b_hdit_assembled](05b_hdit_assembled.ipynb) | `hourglass`, `layers`, `attention`, `rope` |
# | §5.2, Tables 1, 2, 5: the ablation chain A → E as a seeded toy experiment | [06_ablation_chain](06_ablation_chain.ipynb) | `ablation`, `configs`, `training`, `evaluation` |
# | §5.3, Table 6: FFHQ-1024² | [07_ffhq1024](07_ffhq1024.ipynb) | `training`, `data` |
# | §5.1, App. D: sampling, classifier-free guidance | [08_sampling_demo](08_sampling_demo.ipynb) | `sampling`, `widgets` |
# | §5.1, Table 6: training the toy model, live; class accuracy of its samples | [09_train_toy_live](09_train_toy_live.ipynb) | `training`, `widgets` |
# | §5.2, §7: resolution extrapolation — RoPE vs additive positions vs all-local, beyond the training size | [10_resolution_extrapolation](10_resolution_extrapolation.ipynb) | `resolution`, `rope`, `toy` |
#
# Outside the notebooks: `hdit-edu train / sample / fid / ablate / flops / plan / convert / prepare` (the command
# line, `hdit_edu.cli`), `hdit_edu.interop` (k-diffusion checkpoints ↔ hdit-edu) and
# `benchmarks/` (wall-clock scaling and throughput).

# %%
from pathlib import Path

linked = sorted(p.stem for p in Path(".").glob("[0-9][0-9]*_*.py"))
assert len(linked) >= 10 and "05b_hdit_assembled" in linked, linked

# %% [markdown]
# ## Exercises
#
# Each exercise asks you to predict a number, then compute it in the answer cell: replace the
# `...` and run the cell; `check` tells you whether you are right, and if not, what to look at.
# The solution cells are collapsed (click the "…" to open one); they run with the notebook and
# pass the same check.
#
# **1.** The FFHQ-1024² model has five levels (patch size 4, then four 2× merges). What fraction
# of all its tokens sits at the outermost level? Predict (is it nearer ½, ¾ or 9/10?), then
# compute it from `token_grids(paper_config("ffhq1024").model)`.

# %% tags=["exercise"]
from hdit_edu.exercises import check, passes

outer_fraction = ...  # your answer: outermost level's tokens / all tokens
check("00.1", outer_fraction)

# %% jupyter={"source_hidden": true} tags=["solution"]
tokens_per_level = [h * w for h, w in token_grids(paper_config("ffhq1024").model)]
print(tokens_per_level, f"→ {tokens_per_level[0] / sum(tokens_per_level):.4f} at the outermost")
assert passes("00.1", tokens_per_level[0] / sum(tokens_per_level))  # 4⁴/(4⁴+4³+…+1) = 0.7507
# three quarters of all tokens: why the outer levels must not use global attention

# %% [markdown]
# **2.** Guidance: draw 16 samples of class 3 ("cross") with w = 1 (no guidance) and with
# w = 4 (20 steps, seed 1). Which batch will the toy classifier recognise better? Predict, then
# measure both with `class_accuracy`.

# %% tags=["exercise"]
accuracy_w1, accuracy_w4 = ..., ...  # your measurements
check("00.2", (accuracy_w1, accuracy_w4), denoiser=denoiser, config=config)

# %% jupyter={"source_hidden": true} tags=["solution"]
one_class = torch.full((16,), 3)  # "cross"
acc = {}
for w in (1.0, 4.0):
    imgs = generate(denoiser, config, 16, class_cond=one_class, cfg_scale=w, steps=20, seed=1)
    acc[w] = class_accuracy(imgs, one_class)
print({w: f"{a:.0%}" for w, a in acc.items()})
assert passes("00.2", (acc[1.0], acc[4.0]), denoiser=denoiser, config=config)
assert acc[4.0] >= acc[1.0]  # guidance makes the class clearer
