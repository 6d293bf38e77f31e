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
#    outer levels use 7×7 *neighborhood attention* (cost ∝ tokens), only the innermost 16×16 level
#    attends globally. Each doubling of resolution adds one cheap local level: O(n) overall (App. A).
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

# %% [markdown]
# ## The map: paper ↔ notebooks ↔ library
#
# | paper | notebook | library module |
# | --- | --- | --- |
# | overview | `00_tour` (this one) | `hdit_edu.env` |
#
# The table grows as notebooks land; the README lists the same map.
