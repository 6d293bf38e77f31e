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
# # 04 — Local attention: neighborhood vs shifted windows vs global (§4.3, Table 1 B1/B2)
#
# Global self-attention costs O(n²) in the number of tokens n: at 1024² pixels with patch 4 that
# is 65 536 tokens and 4·10⁹ query–key pairs per head and layer. HDiT keeps global attention only
# at the innermost levels of the hourglass — 16×16 tokens for ImageNet-128²/256², 32×32 and
# 16×16 for FFHQ-1024² (footnote 2; asserted below) — and uses **local** attention everywhere
# else, so
# that each extra doubling of the resolution adds a level whose cost is *linear* in n. The paper
# compares two local mechanisms (Table 1): **Shifted Window** attention (Swin, step B1) and
# **Neighborhood** attention (NATTEN, step B2) — and finds neighborhood attention clearly better.
#
# This notebook looks at what each one lets a token see:
#
# 1. **attended sets** — for a chosen query, the keys of global, 7×7 neighborhood (also at the
#    border, where the window is shifted inward) and 8×8 shifted-window attention, on the token
#    grid of each level of the ImageNet-256 model (Fig. 3); neighborhood attention from scratch,
#    checked against the library's three backends;
# 2. **the receptive field through the hourglass** — which input tokens can reach an output
#    token once merges, splits and skips are taken into account;
# 3. **cost as the grid grows** — multiply-adds and score memory (analytic), and our backends
#    timed on this machine;
# 4. **an explorer** to pick the level, the query and the kernel yourself.
#
# Library code used: `hdit_edu.attention` (`neighborhood_attention`, `shifted_window_attention`),
# `hdit_edu.attention_analysis` (`attended_mask`, `receptive_field`), `hdit_edu.flops`
# (`attention_flops`), `hdit_edu.viz` (attention plots), `hdit_edu.widgets.AttentionExplorer`,
# `hdit_edu.presets` (the paper's models).

# %% tags=["parameters"]
PROFILE = "auto"

# %%
from hdit_edu.env import resolve_profile

PROFILE = resolve_profile(PROFILE)
print(f"profile: {PROFILE}")

# %%
import time
from dataclasses import replace

import matplotlib.pyplot as plt
import torch

from hdit_edu.attention import (
    neighborhood_attention,
    neighborhood_window_starts,
    resolve_na_backend,
    shifted_window_attention,
)
from hdit_edu.attention_analysis import attended_mask, receptive_field
from hdit_edu.configs import token_grids
from hdit_edu.flops import attention_flops, keys_per_query
from hdit_edu.presets import paper_config
from hdit_edu.viz import plot_attended_set, plot_attention_cost, plot_receptive_field

torch.manual_seed(0)
device = "cuda" if PROFILE == "gpu" and torch.cuda.is_available() else "cpu"

# The ImageNet-256 model of Table 6 / Figure 3: what we draw is only its token grids, which cost
# nothing, so both profiles use the paper's model here.
config = paper_config("imagenet256")
levels = config.model.levels
grids = token_grids(config.model)
for i, (level, grid) in enumerate(zip(levels, grids)):
    print(f"level {i}: {grid[0]}×{grid[1]} tokens, {level.attention}", end="")
    print(f" {level.kernel_size}×{level.kernel_size}" if level.attention == "neighborhood" else "")

# The numbers of the introduction: 1024² pixels at patch 4, and the global levels of each model
tokens_1024 = (1024 // 4) ** 2
assert tokens_1024 == 65_536 and round(tokens_1024**2 / 1e9) == 4
for name, core in {"imagenet128": [16], "imagenet256": [16], "ffhq1024": [32, 16]}.items():
    m = paper_config(name).model
    found = [g[0] for g, lv in zip(token_grids(m), m.levels) if lv.attention == "global"]
    print(f"{name}: global attention on {found} tokens per side")
    assert found == core, (name, found)

# %% [markdown]
# ## 1. What a query sees
#
# * **Global**: every token.
# * **Neighborhood** (Hassani et al., 2023): the k×k tokens centred on the query. At the border a
#   centred window would stick out of the grid; NATTEN does not pad it with zeros but **shifts it
#   inward**, so every query sees exactly k² real tokens. Along an axis of length L, query i sees
#   `[s, s + k)` with `s = clamp(i − ⌊k/2⌋, 0, L − k)`.
# * **Shifted window** (Liu et al., 2021): the grid is cut into fixed w×w windows and a token
#   sees its window. Every other layer the windows are shifted by w/2 (implemented by rolling the
#   grid and masking the tokens the roll wrapped around): the seams move, so information crosses
#   them over two layers. A query near a window's edge sees little on one side and nothing beyond.
#
# Each row below is one level of the ImageNet-256 model; the query (red dot) is near the centre in
# the first columns and in the top-left corner in the others.

# %%
window = 8
columns = [
    ("global", "centre", {}),
    ("neighborhood", "centre", {"kernel_size": 7}),
    ("neighborhood", "corner", {"kernel_size": 7}),
    ("shifted-window", "centre", {"window_size": window, "shift": 0}),
    ("shifted-window", "centre", {"window_size": window, "shift": window // 2}),
    ("shifted-window", "corner", {"window_size": window, "shift": window // 2}),
]
fig, axes = plt.subplots(len(grids), len(columns), figsize=(2.6 * len(columns), 2.7 * len(grids)))
for row, (h, w) in enumerate(grids):
    for col, (kind, where, kwargs) in enumerate(columns):
        query = (h // 2 - 3, w // 2 + 1) if where == "centre" else (1, 0)
        plot_attended_set(kind, h, w, query, ax=axes[row, col], **kwargs)
    axes[row, 0].set_ylabel(f"level {row}: {h}×{w}")
fig.tight_layout()
plt.show()

# %% [markdown]
# Neighborhood attention looks the same wherever the query is — a k×k square, pushed inside at
# the borders — while a shifted window depends on where the query falls relative to the seams.
# The checks below go over *every* query of a 16×16 grid.

# %%
h = w = 16
counts = torch.tensor(
    [[int(attended_mask("neighborhood", h, w, (i, j)).sum()) for j in range(w)] for i in range(h)]
)
assert (counts == 49).all(), "every query sees exactly 7×7 keys: windows are never padded"
corner = attended_mask("neighborhood", h, w, (0, 0))
assert corner[:7, :7].all() and corner.sum() == 49  # the corner query's window is shifted inward
assert neighborhood_window_starts(16, 7).tolist() == [
    0,
    0,
    0,
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    9,
    9,
    9,
]
# unshifted windows partition the grid into 8×8 blocks; with shift 4 the corner piece is 4×4
assert attended_mask("shifted-window", h, w, (5, 5), window_size=8, shift=0).sum() == 64
assert attended_mask("shifted-window", h, w, (0, 0), window_size=8, shift=4).sum() == 16
assert attended_mask("shifted-window", h, w, (6, 6), window_size=8, shift=4).sum() == 64
print("per-query key counts at 16×16 — neighborhood:", counts.unique().tolist())

# %% [markdown]
# ### Neighborhood attention from scratch
#
# One query, by hand: cut its (clamped) window out of the keys and values, softmax over it.
# The library computes all queries at once with one of three backends — NATTEN
# (`natten.functional.na2d`), our pure-PyTorch version (`"torch"`: one re-indexed copy of the
# keys per window entry, memory O(tokens·k²)), and dense SDPA with a boolean neighborhood mask
# (`"masked-sdpa"`, the fast CPU path on small grids). They must all agree with the hand-made one.

# %%
B, H, W, heads, head_dim, k = 2, 12, 9, 2, 16, 7
q, key, v = (torch.randn(B, H, W, heads, head_dim) for _ in range(3))
scale = head_dim**-0.5


def one_query_by_hand(i, j):
    r0 = min(max(i - k // 2, 0), H - k)  # the window, shifted inward at the border
    c0 = min(max(j - k // 2, 0), W - k)
    keys = key[:, r0 : r0 + k, c0 : c0 + k].reshape(B, k * k, heads, head_dim)
    values = v[:, r0 : r0 + k, c0 : c0 + k].reshape(B, k * k, heads, head_dim)
    attn = (torch.einsum("bhd,bnhd->bhn", q[:, i, j], keys) * scale).softmax(dim=-1)
    return torch.einsum("bhn,bnhd->bhd", attn, values)


with torch.no_grad():
    outputs = {
        b: neighborhood_attention(q, key, v, k, backend=b)
        for b in ("torch", "masked-sdpa", "natten")
    }
errors = {
    backend: max(
        (out[:, i, j] - one_query_by_hand(i, j)).abs().max().item()
        for i, j in [(0, 0), (5, 4), (11, 8), (2, 7)]
    )
    for backend, out in outputs.items()
}
print("max |library − by hand| per backend:", {b: f"{e:.1e}" for b, e in errors.items()})
print(
    "backend='auto' picks", repr(resolve_na_backend("auto", q, key, v, k)), "for this input on", device
)

# %%
assert all(e <= 1e-5 for e in errors.values())
assert (outputs["torch"] - outputs["natten"]).abs().max() <= 1e-5
assert (outputs["torch"] - outputs["masked-sdpa"]).abs().max() <= 1e-5

# %% [markdown]
# ## 2. The receptive field through the hourglass
#
# One layer of 7×7 neighborhood attention lets a token gather from 3 tokens to each side; a stack
# of L layers, from 3L. The hourglass multiplies this reach: after a 2×2 merge each token of the
# next level covers twice the distance, and the skips and splits bring it back to full resolution.
# `receptive_field` follows the dependencies backwards from one output token (attention spreads
# a set to every key its queries see, a split to the skip and the parent token, a merge to the
# 2×2 children). Below, for a corner query and a central one:
#
# * the outer level alone, as a one-level model: `depth` = 2 layers of 7×7 → a reach of 6 tokens,
# * the two outer levels as an NA-only hourglass,
# * a hypothetical hourglass with neighborhood attention at *every* level,
# * the real model — its global 16×16 middle level makes every output token see the whole image.
#
# (At 256² even the NA-only three-level hourglass reaches every token of the 64×64 grid: the
# 7×7 windows of its 16×16 level already span half the image. Local attention limits what one
# layer sees, not what the network sees.)

# %%
h, w = grids[0]
variants = {
    "level 0 alone": [levels[0]],
    "levels 0–1 (NA only)": levels[:2],
    "NA at every level": [
        replace(level, attention="neighborhood", kernel_size=7) for level in levels
    ],
    "the model (global middle)": levels,
}
queries = {"corner": (0, 0), "centre": (h // 2, w // 2)}
fields = {
    (name, where): receptive_field(stack, h, w, query)
    for name, stack in variants.items()
    for where, query in queries.items()
}
fig, axes = plt.subplots(2, len(variants), figsize=(3.1 * len(variants), 6.2))
for col, name in enumerate(variants):
    for row, (where, query) in enumerate(queries.items()):
        field = fields[(name, where)]
        plot_receptive_field(
            field, query, ax=axes[row, col], title=f"{name}\n{field.float().mean():.0%} of tokens"
        )
fig.tight_layout()
plt.show()

# %%
# one level of depth 2 = two 7×7 layers: a (1 + 2·3·2)² = 13×13 square around a central token
assert fields[("level 0 alone", "centre")].sum() == 13 * 13
# every level adds reach; the global middle level reaches everything
sizes = [int(fields[(name, "centre")].sum()) for name in variants]
assert sizes == sorted(sizes) and sizes[-1] == h * w
assert fields[("the model (global middle)", "corner")].all()
print("receptive field of the centre token (tokens):", dict(zip(variants, sizes)))

# %% [markdown]
# ## 3. Cost as the grid grows
#
# Per layer and image, attention does `tokens · heads · keys-per-query · (d_q + d_v)`
# multiply-adds (`attention_flops`): keys-per-query is `tokens` for global attention, `k²` for
# neighborhood attention and `w²` for shifted windows. Doubling the side of the grid therefore
# multiplies global attention by 16 and the local ones by 4. The score matrix a naive
# implementation materialises grows the same way — at 256×256 tokens (FFHQ-1024 with patch 4)
# global attention would hold 16 GiB of fp32 scores per head; NATTEN's fused kernels (and our
# `"torch"` backend) never hold more than O(tokens · k²).

# %%
sides = [8, 16, 32, 64, 128, 256]
plot_attention_cost(sides, heads=6, head_dim=64, kernel_size=7, window_size=8)
plt.tight_layout()
plt.show()

# %%
for kind in ("global", "neighborhood", "shifted-window"):
    ratio = attention_flops(kind, 64, 64, 6, 64) / attention_flops(kind, 32, 32, 6, 64)
    assert ratio == (16 if kind == "global" else 4), (kind, ratio)
# FFHQ-1024's outer grid, 256×256 tokens: global fp32 scores take 16 GiB per head and layer
assert 256 * 256 * keys_per_query("global", 256, 256) * 4 / 2**30 == 16
assert attention_flops("neighborhood", 16, 16, 6, 64) < attention_flops("global", 16, 16, 6, 64)

# %% [markdown]
# **Measured on this machine.** The same neighborhood attention with our two trainable backends,
# forward and backward: dense SDPA with a neighborhood mask does O(tokens²) work but in one fused
# call; the gather (`"torch"`) does O(tokens·k²) work and memory in many small operations. On the
# CPU grids timed here (up to 48² = 2,304 tokens) the gather's better order does not pay: the
# fused masked SDPA wins, by more as the grid grows (at the smallest grid the two are within
# the noise). The gather's real advantage is memory — the mask and the scores grow as tokens²,
# which is why `backend="auto"` stops using masked SDPA above `MASKED_SDPA_AUTO_MAX_TOKENS`
# tokens (on a GPU it uses NATTEN's fused kernels). These timings use k = 7; with a smaller
# kernel the gather does less (k² = 9 keys a query at k = 3) while masked SDPA does not, so
# `"auto"` also switches above `MASKED_SDPA_AUTO_TOKENS_PER_K2`·k² tokens (the crossover
# measured by `python benchmarks/attention_micro.py --sweep`). Timings on a shared CPU are noisy: the cell
# prints which backend won at each size.

# %%
timing_sides = [8, 16, 32, 48] if PROFILE == "cpu" else [16, 32, 64, 128]
timings = {"torch": [], "masked-sdpa": []}
for side in timing_sides:
    x = [torch.randn(1, side, side, 4, 32, device=device, requires_grad=True) for _ in range(3)]
    outs = {}
    for backend in timings:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            out = neighborhood_attention(*x, 7, backend=backend)
            out.square().sum().backward()
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        timings[backend].append(best * 1e3)
        outs[backend] = out.detach()
    assert (outs["torch"] - outs["masked-sdpa"]).abs().max() <= 1e-5  # same numbers, any size

fig, ax = plt.subplots(figsize=(4.5, 3.2))
for backend, ms in timings.items():
    ax.loglog([s * s for s in timing_sides], ms, "o-", label=backend)
ax.set_xlabel("tokens")
ax.set_ylabel("forward + backward (ms)")
ax.set_title("neighborhood attention 7×7, 4 heads of 32", fontsize=9)
ax.legend()
plt.show()
print({b: [f"{t:.1f}" for t in ms] for b, ms in timings.items()})
for side, t_gather, t_sdpa in zip(timing_sides, timings["torch"], timings["masked-sdpa"]):
    winner = "masked-sdpa" if t_sdpa < t_gather else "torch (gather)"
    print(f"{side * side:>6} tokens: {winner} faster ({t_gather / t_sdpa:.1f}× gather/sdpa)")

# %% [markdown]
# Shifted windows are just as cheap (w² keys per query, one batched SDPA over the windows); the
# paper's argument against them is quality, not cost: a token at a window edge never sees its
# neighbour across the seam in that layer. Shifted-window attention is checked against a brute-
# force reference in the tests; here its outputs simply agree with a per-window softmax:

# %%
xs = torch.randn(1, 16, 16, 2, 8)
out = shifted_window_attention(xs, xs, xs, 8, 0)
block = xs[:, :8, 8:].reshape(1, 64, 2, 8)  # the top-right 8×8 window, unshifted
attn = (torch.einsum("bqhd,bkhd->bhqk", block, block) * 8**-0.5).softmax(-1)
expected = torch.einsum("bhqk,bkhd->bqhd", attn, block).reshape(1, 8, 8, 2, 8)
assert (out[:, :8, 8:] - expected).abs().max() <= 1e-6

# %% [markdown]
# ## 4. Explore
#
# Pick a level of the ImageNet-256 model, a query token, the neighborhood kernel and the Swin
# window (and whether this layer is a shifted one). The counts under each panel are the keys the
# query attends to.

# %%
from hdit_edu.widgets import AttentionExplorer

explorer = AttentionExplorer(grids=grids, kernel_size=7, window_size=8, query=(0, 0))
explorer

# %%
assert explorer.key_counts() == {"global": 64 * 64, "neighborhood": 49, "shifted-window": 64}
explorer.shifted.value = True
assert explorer.key_counts()["shifted-window"] == 16  # the corner piece of the shifted seam
explorer.level.value, explorer.kernel.value = 2, 3
assert explorer.key_counts() == {"global": 16 * 16, "neighborhood": 9, "shifted-window": 16}
explorer.shifted.value, explorer.level.value, explorer.kernel.value = False, 0, 7  # reset

# %% [markdown]
# ## Summary
#
# * Neighborhood attention gives every token the same k×k view (shifted inward at the borders),
#   shifted windows give a view that depends on where the seams fall; both cost O(tokens).
# * Through the hourglass a few local layers already see far (each merge doubles the reach); the
#   global middle level makes the receptive field the whole image.
# * All neighborhood backends — NATTEN, our gather, masked SDPA — compute the same numbers;
#   `backend="auto"` picks the fastest this machine has.

# %% [markdown]
# ## Exercises
#
# Predict first, then compute your answer in the answer cell (replace the `...`); `check` says
# whether it is right and, if not, what to look at. The collapsed solution runs with the
# notebook and passes the same check.
#
# **1.** Count the keys a corner query sees with a 5×5 neighborhood on a 16×16 grid (NATTEN
# shifts the window inward at the border), and with a zero-padded window that did not.

# %% tags=["exercise"]
from hdit_edu.exercises import check, passes

natten_keys, padded_keys = ..., ...  # your counts
check("04.1", (natten_keys, padded_keys))

# %% jupyter={"source_hidden": true} tags=["solution"]
corner = torch.zeros(16, 16, dtype=torch.bool)
corner[0, 0] = True
seen = attended_mask("neighborhood", 16, 16, (0, 0), kernel_size=5)
print(f"corner query, k = 5: {int(seen.sum())} keys; a padded window would keep {3 * 3}")
assert int(seen.sum()) == 25 == keys_per_query("neighborhood", 16, 16, kernel_size=5)
assert seen[:5, :5].all()  # the window is pushed inside: rows and columns 0…4
padded = sum(0 <= i < 16 and 0 <= j < 16 for i in range(-2, 3) for j in range(-2, 3))
assert passes("04.1", (int(seen.sum()), padded))

# %% [markdown]
# **2.** Shifted windows of 8 with shift 4 on a 16×16 grid cut some windows at the seam. Averaged
# over all 256 queries, how many keys does a query see? Predict (64 for every query without the
# shift), then count with `attended_mask` for every query.

# %% tags=["exercise"]
mean_keys = ...  # your answer
check("04.2", mean_keys)

# %% jupyter={"source_hidden": true} tags=["solution"]
def keys_seen(i, j):
    return int(attended_mask("shifted-window", 16, 16, (i, j), window_size=8, shift=4).sum())


sizes = torch.tensor([[keys_seen(i, j) for j in range(16)] for i in range(16)])
print(f"keys per query: {sorted(set(sizes.flatten().tolist()))}; mean {sizes.float().mean():.1f}")
assert passes("04.2", sizes.float().mean().item())
assert sorted(sizes.flatten().tolist()) == [16] * 64 + [32] * 128 + [64] * 64
# on 16×16 the shift by 4 cuts three of the four rolled windows at the wrap seam: 64 queries
# keep a whole 8×8 window, 128 see a 4×8 piece and 64 a 4×4 corner piece — 36 keys on average,
# not 64: why Swin alternates shifted layers with unshifted ones

# %% [markdown]
# **3.** Make a grid that fails: a 7×7 neighborhood kernel on the 4×4 innermost grid. Read the
# error — it names the value and what is allowed. What is the largest kernel that works there?

# %% tags=["exercise"]
largest_kernel = ...  # your answer
check("04.3", largest_kernel)

# %% jupyter={"source_hidden": true} tags=["solution"]
try:
    neighborhood_attention(*torch.randn(3, 1, 4, 4, 1, 8), kernel_size=7)
    raise AssertionError("a 7×7 kernel on a 4×4 grid should fail")
except ValueError as err:
    print(err)
    assert "7" in str(err) and "4" in str(err)
works = []
for k in (1, 3, 5, 7):
    try:
        neighborhood_attention(*torch.randn(3, 1, 4, 4, 1, 8), kernel_size=k)
        works.append(k)
    except ValueError:
        pass
print("kernels that work on 4×4:", works)
assert passes("04.3", max(works))
