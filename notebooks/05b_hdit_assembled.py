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
# # 05b — HDiT assembled from its pieces (§4.1–4.3, Figures 3–5)
#
# Notebooks 02–04 took the model apart: the hourglass, the block, the attention. This one puts
# it back together, in the manner of *The Annotated Transformer*: each section quotes the paper,
# then writes that step of the forward pass out by hand from the library's pieces (`TokenMerge`,
# `TokenSplit`, `merge_skip`, `AdaRMSNorm`, `cosine_sim_scale`, `AxialRoPE`, the attention
# kernels, `FeedForward`, `MappingNetwork`). At the end:
#
# * the hand-assembled forward pass is checked to give **exactly** the numbers of the library's
#   `HDiT` (`torch.equal`, bit for bit) on the same weights — a small three-level model with
#   every weight random, and the shipped trained toy model;
# * it runs **one training step** (EDM loss, backward, AdamW) whose gradients equal the
#   library's.
#
# The library stays the one implementation: nothing here is a second model, only the order in
# which the pieces are called, spelled out. Library code used: `hdit_edu.hourglass`,
# `hdit_edu.layers`, `hdit_edu.attention`, `hdit_edu.rope`, `hdit_edu.diffusion`.

# %% tags=["parameters"]
PROFILE = "auto"

# %%
from hdit_edu.env import resolve_profile

PROFILE = resolve_profile(PROFILE)
print(f"profile: {PROFILE}  (everything here is small: both profiles run the same cells)")

# %%
import matplotlib.pyplot as plt
import torch

from hdit_edu.attention import cosine_sim_scale, global_attention, neighborhood_attention
from hdit_edu.configs import LevelConfig, MappingConfig, ModelConfig, token_grids
from hdit_edu.diffusion import Denoiser, c_noise
from hdit_edu.hourglass import HDiT, merge_skip, pixel_shuffle_tokens, pixel_unshuffle_tokens
from hdit_edu.layers import geglu, rms_norm
from hdit_edu.rope import apply_rope, downscale_pos, make_axial_pos
from hdit_edu.toy import ToyDataset
from hdit_edu.viz import plot_hourglass, trace_hourglass

torch.manual_seed(0)
torch.set_num_threads(1)  # a tiny model: one thread is fastest on a small CPU

# %% [markdown]
# ## 0. The model we assemble
#
# > *Figure 3: High-level overview of our HDiT architecture, specifically the version for
# > ImageNet at input resolutions of 256² at patch size p = 4, which has three levels. For any
# > doubling in target resolution, another neighborhood attention block is added.*
#
# We use the same shape at a size a CPU evaluates in milliseconds: a 32×32 image, patch size 2,
# three levels — neighborhood attention (7×7) on 16×16 and 8×8 tokens, global attention on the
# innermost 4×4 — and 8 classes. A fresh HDiT returns exactly zero (its output projections start
# at zero), which would make any comparison trivially true; so every parameter is set to random
# values first.

# %%
config = ModelConfig(
    levels=[
        LevelConfig(depth=1, width=32, head_dim=16, attention="neighborhood", kernel_size=7),
        LevelConfig(depth=1, width=64, head_dim=16, attention="neighborhood", kernel_size=7),
        LevelConfig(depth=2, width=128, head_dim=32, attention="global"),
    ],
    mapping=MappingConfig(depth=1, width=64),
    patch_size=2,
    num_classes=8,
    resolution=32,
)
model = HDiT(config).eval()
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith(".scale") and "attn" in name:
            p.uniform_(5.0, 20.0, generator=g)  # τ, per head (App. C)
        elif name.endswith(".f"):
            p.uniform_(0.2, 0.8, generator=g)  # the lerp coefficients (eq. 6)
        else:
            p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5, generator=g)

print(
    "token grids:",
    token_grids(config),
    f"— {sum(p.numel() for p in model.parameters()):,} parameters",
)
x = torch.randn(4, 3, 32, 32, generator=g)
sigma = torch.tensor([0.05, 0.5, 2.0, 20.0])
class_cond = torch.tensor([0, 3, 7, 8])  # 8 = the "dropped" class of classifier-free guidance
with torch.no_grad():
    reference = model(x, sigma, class_cond)
print("library HDiT output:", tuple(reference.shape), f"std {reference.std():.3f}")
assert reference.abs().max() > 0.1  # not the trivial all-zero output of a fresh model

# %% [markdown]
# The map of what we are about to assemble, drawn from this model by tracing one forward pass
# (`hdit_edu.viz.trace_hourglass`, as in notebook 02): each box a stage at its level's depth with
# its layers and token grid, the dashed arrows the skips with their lerp coefficient f. Sections
# 1-7 build these boxes one by one, left to right.

# %%
with torch.no_grad():
    stages = trace_hourglass(model, x[:1], sigma[:1], class_cond=class_cond[:1])
plot_hourglass(model, stages)
plt.show()
assert [s["kind"] for s in stages][0] == "patch" and stages[-1]["kind"] == "unpatch"

# %% [markdown]
# ## 1. Patching (§4.1)
#
# > *For every level on the encoder side, we merge 2×2 tokens into one spatially using
# > PixelUnShuffle (Shi et al., 2016) and do the inverse on the decoder side.*
#
# The image enters the same way, with p×p patches: PixelUnshuffle turns each p×p block of
# pixels into one token of 3·p² channels, and a linear map (no bias) widens it to the first
# level's width. Tokens stay channels-last, `(B, H, W, C)`, through the whole model. Each token
# also gets a position: the centre of its patch, in [−1, 1] (`make_axial_pos`), for RoPE.


# %%
def patch(model, x):
    tokens = pixel_unshuffle_tokens(x.movedim(1, -1), model.patch_size)  # (B, H/p, W/p, 3p²)
    return tokens @ model.patch_in.proj.weight.T  # (B, H/p, W/p, width_0)


h0 = patch(model, x)
pos0 = make_axial_pos(h0.shape[1], h0.shape[2])
print("patched:", tuple(h0.shape), " positions:", tuple(pos0.shape))
assert torch.equal(h0, model.patch_in(x.movedim(1, -1)))

# %% [markdown]
# ## 2. The mapping network (§4.2, Fig. 3)
#
# > *All HDiT blocks have the noise level and the conditioning (embedded jointly using a
# > mapping network) as additional inputs.*
#
# The noise level enters as $c_\text{noise}(\sigma) = \tfrac14\log\sigma$ (EDM), embedded with
# random Fourier features and a linear map; the class as a learned embedding (index
# `num_classes` = "no class"); and the augmentation vector (non-leaking augmentation, §5.1; all
# zeros when an image is not augmented) a third, the same way as the noise level. The sum goes through the mapping network — RMSNorm, residual GEGLU blocks, RMSNorm — and
# the one vector that comes out conditions every AdaRMSNorm of the model.


# %%
def mapping(model, sigma, class_cond):
    noise = model.time_emb(c_noise(sigma)[:, None])  # Fourier features [cos, sin]
    emb = noise @ model.time_in_proj.weight.T
    if model.aug_emb is not None:  # augmentation conditioning; zeros = "not augmented"
        aug = torch.zeros(len(sigma), model.aug_dim)
        emb = emb + model.aug_emb(aug) @ model.aug_in_proj.weight.T
    emb = emb + model.class_emb.weight[class_cond]  # (index num_classes: no class)
    net = model.mapping
    e = rms_norm(emb, net.in_norm.scale, net.in_norm.eps)
    for block in net.blocks:  # x ← x + W_down·GEGLU(W_up·RMSNorm(x))
        hidden = rms_norm(e, block.norm.scale, block.norm.eps) @ block.ffn.up_proj.weight.T
        e = e + geglu(hidden) @ block.ffn.down_proj.weight.T
    return rms_norm(e, net.out_norm.scale, net.out_norm.eps)


cond = mapping(model, sigma, class_cond)
print("conditioning vector:", tuple(cond.shape))

# %% [markdown]
# ## 3. One HDiT block (§4.2, Fig. 4 and 5)
#
# > *To enable conditioning, we make the output scale used by the RMSNorm operations adaptive
# > and have the mapping network, which is conditioned on the class and diffusion time step,
# > predict them. Unlike DiT, we do not employ an (adaptive) output gate, but initialize the
# > output projections of both self-attention and FFN blocks to zeros.*
#
# > *…we replace this with an adaptation of rotary positional embeddings (RoPE) for 2D image
# > data … applying RoPE for each spatial axis to distinct parts of query and key respectively …
# > to only half of the query and key vectors … Additionally to applying RoPE, we use a cosine
# > similarity-based attention mechanism.*
#
# > *For the feedforward block … we use GEGLU (Shazeer, 2020), where the modulation signal comes
# > from the data itself instead of the conditioning.*
#
# So one layer is two pre-norm residual branches:
#
# 1. $x \leftarrow x + W_o\,\mathrm{Attn}(\text{AdaRMSNorm}_1(x, c))$, where the attention is
#    cosine similarity times a learned τ per head (App. C; our τ multiplies, see notebook 03),
#    axial RoPE on half of each head, and global, neighborhood (§4.3) or shifted-window;
# 2. $x \leftarrow x + W_\text{down}\,\mathrm{GEGLU}(W_\text{up}\,\text{AdaRMSNorm}_2(x, c))$.
#
# AdaRMSNorm: $\mathrm{RMSNorm}(x)\cdot(1 + W c)$ — the scale is predicted from the conditioning.


# %%
def ada_rms_norm(norm, x, cond):
    scale = cond @ norm.linear.weight.T + 1  # (B, width), predicted by the mapping network
    return rms_norm(x, scale[:, None, None, :], norm.eps)


def attention(attn, x, pos):
    b, h, w, _ = x.shape
    qkv = (x @ attn.qkv_proj.weight.T).view(b, h, w, 3, attn.heads, attn.head_dim)
    q, k, v = qkv.unbind(dim=3)  # (B, H, W, heads, head_dim) each
    q, k = cosine_sim_scale(q, k, attn.scale[:, None])  # q'·k' = τ·cos(q, k)   (App. C)
    theta = attn.pos_emb(pos)  # axial RoPE angles: (H, W, heads, head_dim/4) per axis pair
    q, k = apply_rope(q, theta), apply_rope(k, theta)  # rotates half of each head
    if attn.kind == "global":
        y = global_attention(q, k, v, scale=1.0)  # τ is already inside q and k
    else:
        y = neighborhood_attention(q, k, v, attn.kernel_size, scale=1.0, backend=attn.backend)
    return y.reshape(b, h, w, attn.width) @ attn.out_proj.weight.T


def feed_forward(ffn, x):
    return geglu(x @ ffn.up_proj.weight.T) @ ffn.down_proj.weight.T  # Fig. 5: no output gate


def hdit_layer(layer, x, pos, cond):
    x = x + attention(layer.attn, ada_rms_norm(layer.norm1, x, cond), pos)
    return x + feed_forward(layer.ffn, ada_rms_norm(layer.norm2, x, cond))


first = model.down_levels[0][0]
assert torch.equal(hdit_layer(first, h0, pos0, cond), first(h0, pos0, cond))
print("one layer by hand == TransformerLayer:", True)

# %% [markdown]
# ## 4. Going down: levels, skips, merges (§4.1)
#
# > *Due to the hierarchical nature of the model … we merge 2×2 tokens into one spatially …*
# > *Skip Merging Mechanism … we additionally enable the model to learn the relative importance of
# > the skip and the upsampled branch by learning a linear interpolation (lerp) coefficient f.*
#
# At each level but the innermost: run its layers, keep the result as that level's *skip*,
# then merge 2×2 tokens (PixelUnshuffle + linear, width_i → width_{i+1}). The positions follow
# the tokens: each merged token sits at the mean of its four children (`downscale_pos`).


# %%
def merge(merge_module, x):
    return pixel_unshuffle_tokens(x, 2) @ merge_module.proj.weight.T


def go_down(model, x, pos, cond):
    skips, poses = [], []
    for level, merge_module in zip(model.down_levels, model.merges):
        for layer in level:
            x = hdit_layer(layer, x, pos, cond)
        skips.append(x)
        poses.append(pos)
        x, pos = merge(merge_module, x), downscale_pos(pos)
    return x, pos, skips, poses


inner, inner_pos, skips, poses = go_down(model, h0, pos0, cond)
print("skips:", [tuple(s.shape[1:]) for s in skips], " innermost:", tuple(inner.shape[1:]))

# %% [markdown]
# ## 5. The middle: global attention (§4.3)
#
# > *We use global self-attention at low resolutions to achieve coherence, and local
# > self-attention at all higher resolutions to enhance detail.*
#
# The innermost level sees few tokens (4×4 here, 16×16 in the paper's ImageNet models, 32² and
# 16² for FFHQ-1024), so attending globally there is cheap — and it gives every token a view of
# the whole image.

# %%
for layer in model.mid_level:
    assert layer.attn.kind == "global"
    inner = hdit_layer(layer, inner, inner_pos, cond)
print("middle level output:", tuple(inner.shape))

# %% [markdown]
# ## 6. Going up: split, lerp the skip in, layers (§4.1, eq. 6)
#
# $$x_\text{merged} = f\cdot x_\text{skip} + (1-f)\cdot x_\text{upsampled}. \qquad (6)$$
#
# The split is the merge's mirror: a linear map to 4× the channels, then PixelShuffle. Then the
# skip of the same level is lerped in, and the level's second half of layers runs.


# %%
def split(split_module, x, skip):
    upsampled = pixel_shuffle_tokens(x @ split_module.proj.weight.T, 2)
    return merge_skip("lerp", upsampled, skip, split_module.f)  # eq. 6


def go_up(model, x, skips, poses, cond):
    for level, split_module, skip, pos in reversed(
        list(zip(model.up_levels, model.splits, skips, poses))
    ):
        x = split(split_module, x, skip)
        for layer in level:
            x = hdit_layer(layer, x, pos, cond)
    return x


h_up = go_up(model, inner, skips, poses, cond)
print("back at the outer grid:", tuple(h_up.shape))

# %% [markdown]
# ## 7. Unpatching, and the whole forward pass
#
# A final RMSNorm, then the inverse of patching: a linear map to 3·p² channels and
# PixelShuffle back to pixels. This projection is zero-initialised: an untrained HDiT returns
# F = 0, so the EDM denoiser starts as $D = c_\text{skip}\,x$ (notebook 01).


# %%
def unpatch(model, x):
    x = rms_norm(x, model.out_norm.scale, model.out_norm.eps)
    pixels = pixel_shuffle_tokens(x @ model.patch_out.proj.weight.T, model.patch_size)
    return pixels.movedim(-1, 1)  # (B, 3, H, W)


def hdit_assembled(model, x, sigma, class_cond):
    """The HDiT forward pass, one paper step at a time, from the library's pieces."""
    cond = mapping(model, sigma, class_cond)  # §4.2: class + noise level → one vector
    h = patch(model, x)  # §4.1: p×p patches → tokens
    pos = make_axial_pos(h.shape[1], h.shape[2])  # token centres, for axial RoPE
    h, pos_inner, skips, poses = go_down(model, h, pos, cond)  # local attention, 2×2 merges
    for layer in model.mid_level:  # §4.3: global attention at the lowest resolution
        h = hdit_layer(layer, h, pos_inner, cond)
    h = go_up(model, h, skips, poses, cond)  # splits, lerp skips (eq. 6), local attention
    return unpatch(model, h)


with torch.no_grad():
    assembled = hdit_assembled(model, x, sigma, class_cond)

# %% [markdown]
# ## 8. The check: the assembled pass *is* HDiT
#
# Same weights, same inputs: the outputs must be identical — not close, identical, since every
# step calls the same kernels in the same order.

# %%
max_diff = (assembled - reference).abs().max().item()
print(f"max |assembled − HDiT| = {max_diff}")
assert torch.equal(assembled, reference)

# %% [markdown]
# The same on real weights: the shipped toy HDiT (`data/checkpoints/toy-hdit`: two levels,
# 7×7 neighborhood attention on 8×8 tokens, global attention on 4×4, patch size 4, trained with
# `hdit-edu train`).

# %%
from hdit_edu.runs import load_run
from hdit_edu.widgets import SHIPPED_RUN

toy_config, toy_denoiser = load_run(SHIPPED_RUN)
toy = toy_denoiser.inner
x_toy = torch.randn(8, 3, 32, 32, generator=g)
s_toy = torch.logspace(-1, 1, 8)
c_toy = torch.arange(8)
with torch.no_grad():
    toy_ref, toy_ours = toy(x_toy, s_toy, c_toy), hdit_assembled(toy, x_toy, s_toy, c_toy)
print(f"shipped model: max |assembled − HDiT| = {(toy_ours - toy_ref).abs().max().item()}")
assert torch.equal(toy_ours, toy_ref)

# %% [markdown]
# ## 9. One training step of the assembled model
#
# > *We adapt our general training setup from (Karras et al., 2022), including their
# > preconditioner … We train all models with AdamW … using a constant learning rate of 5×10⁻⁴.*
#
# The EDM denoiser (eq. 4) wraps any inner network F, so it wraps the assembled one as well:
# $D = c_\text{skip}x + c_\text{out}\,F(c_\text{in}x, \sigma)$, trained with the soft-min-SNR
# weighted loss (notebook 01). One step on a batch of the toy set, σ from the paper's range.
# The gradients must equal those of the library's `HDiT` on the same batch, and the step must
# lower the loss on that batch.

# %%
data = ToyDataset("train", resolution=32, size=16)
x0, labels = data.batch(range(16))
noise = torch.randn(x0.shape, generator=g)
sigma_b = torch.logspace(-2, 1.5, 16)


def assembled_inner(y, s, class_cond=None):
    return hdit_assembled(model, y, s, class_cond)


den_assembled, den_library = Denoiser(assembled_inner), Denoiser(model)
model.train()

loss = den_assembled.loss(x0, noise, sigma_b, class_cond=labels).mean()
loss.backward()
grads_assembled = {n: p.grad.clone() for n, p in model.named_parameters()}
model.zero_grad()
den_library.loss(x0, noise, sigma_b, class_cond=labels).mean().backward()
grads_library = {n: p.grad.clone() for n, p in model.named_parameters()}
model.zero_grad()

worst = max((grads_assembled[n] - grads_library[n]).abs().max().item() for n in grads_library)
print(f"loss {loss.item():.4f}; largest gradient difference assembled vs HDiT: {worst}")
assert all(torch.equal(grads_assembled[n], grads_library[n]) for n in grads_library)

optimizer = torch.optim.AdamW(model.param_groups(5e-4), lr=5e-4, betas=(0.9, 0.95), eps=1e-8)
loss = den_assembled.loss(x0, noise, sigma_b, class_cond=labels).mean()
loss.backward()
optimizer.step()
optimizer.zero_grad()
with torch.no_grad():
    loss_after = den_assembled.loss(x0, noise, sigma_b, class_cond=labels).mean()
print(f"loss on the batch: {loss.item():.4f} before the step, {loss_after.item():.4f} after")
assert loss_after < loss

# %% [markdown]
# ## 10. Against the authors' code, for the same weights
#
# The library's own HDiT is also checked against the authors' implementation (k-diffusion's
# `image_transformer_v2`): `tests/reference/fixtures/` holds small models of theirs (random
# weights, every attention kind, with and without classes), inputs, and the outputs *their* code
# computed (`manifest.json` names the commit). `hdit_edu.interop.from_k_diffusion` converts the
# weights; here is how far our outputs are from theirs, relative to the largest output.

# %%
import json
from pathlib import Path

from safetensors.torch import load_file

import hdit_edu
from hdit_edu import interop

FIXTURES = Path(hdit_edu.__file__).resolve().parents[1] / "tests" / "reference" / "fixtures"
manifest = json.loads((FIXTURES / "manifest.json").read_text())
gap = {}
for name, entry in manifest["models"].items():
    kd_config = json.loads((FIXTURES / entry["config"]).read_text())
    ours = interop.from_k_diffusion(kd_config, load_file(str(FIXTURES / entry["weights"]))).eval()
    cases = {}
    for key, value in load_file(str(FIXTURES / entry["io"])).items():
        case, tensor = key.split(".", 1)
        cases.setdefault(case, {})[tensor] = value
    for case_name, c in cases.items():
        with torch.no_grad():
            out = ours(c["x"], c["sigma"], class_cond=c.get("class_cond"), aug_cond=c["aug_cond"])
        error = (out - c["output"]).abs().max() / c["output"].abs().max()
        gap[f"{name} ({case_name})"] = error.item()
fig, ax = plt.subplots(figsize=(8, 0.28 * len(gap) + 1))
ax.barh(list(gap), list(gap.values()), color="C0")
ax.axvline(torch.finfo(torch.float32).eps, color="C3", ls="--", label="float32 ε (1.2e-7)")
ax.set_xscale("log")
ax.set_xlabel("max |ours − k-diffusion| / max |k-diffusion|")
ax.tick_params(axis="y", labelsize=7)
ax.legend(loc="lower right", fontsize=8)
plt.show()
print(f"k-diffusion commit {manifest['k_diffusion_commit'][:10]}; worst gap {max(gap.values()):.1e}")

# %% [markdown]
# Not zero, and not meant to be: both sides compute in float32, and they compute the same
# formulas with different sequences of operations (each its own attention and neighborhood
# kernels, its own order of scalings and sums). A float32 result is exact only to about
# ε ≈ 1.2·10⁻⁷ of its size, and reordered sums round differently, so over a few layers the
# roundings add up to the few to few tens of ε plotted above; closer would need both sides in
# float64. The tests (`tests/test_reference_fixtures.py`) hold every model to 10⁻⁵, and the
# samplers, densities and losses too.

# %%
assert max(gap.values()) <= 1e-5  # the tests' tolerance
assert max(gap.values()) < 100 * torch.finfo(torch.float32).eps  # "a few tens of ε" at most
assert len(gap) == sum(len(e["inputs"]) for e in manifest["models"].values())  # every case

# %% [markdown]
# ## Summary
#
# | paper | step | library piece |
# | --- | --- | --- |
# | §4.1 | patching: PixelUnshuffle p×p + linear | `TokenMerge` (`HDiT.patch_in`) |
# | §4.2, Fig. 3 | c_noise, Fourier features, class embedding → mapping network | `FourierFeatures`, `MappingNetwork` |
# | §4.2, Fig. 4 | AdaRMSNorm → cosine-sim attention (τ, App. C) with axial RoPE → residual | `AdaRMSNorm`, `Attention`, `AxialRoPE` |
# | §4.2, Fig. 5 | AdaRMSNorm → GEGLU FFN → residual | `FeedForward` |
# | §4.3 | neighborhood attention on the outer levels, global in the middle | `neighborhood_attention`, `global_attention` |
# | §4.1, eq. 6 | 2×2 merge down, split up, lerp skip | `TokenMerge`, `TokenSplit`, `merge_skip` |
# | §4.1 | RMSNorm + PixelShuffle back to pixels (zero-initialised) | `RMSNorm`, `TokenSplit` (`HDiT.patch_out`) |
# | §3.1, eq. 4 | the EDM preconditioner around it all | `Denoiser` |
#
# The assembled pass equals `HDiT` bit for bit, on random and on trained weights, and trains:
# its gradients are the library's.

# %% [markdown]
# ## Exercises
#
# Predict first, then compute your answer in the answer cell (replace the `...`); `check` says
# whether it is right and, if not, what to look at. The collapsed solution runs with the
# notebook and passes the same check.
#
# **1.** Zero the unpatching projection (as at initialisation). Predict the output of the
# assembled model, and what the EDM denoiser D then returns.

# %% tags=["exercise"]
from hdit_edu.exercises import check, passes

denoised_when_zeroed = ...  # your answer: D(x, σ) of a copy of `model` with patch_out zeroed
check("05b.1", denoised_when_zeroed, x=x, sigma=sigma)

# %% jupyter={"source_hidden": true} tags=["solution"]
import copy

zeroed = copy.deepcopy(model).eval()
with torch.no_grad():
    zeroed.patch_out.proj.weight.zero_()
    out = hdit_assembled(zeroed, x, sigma, class_cond)
    d = Denoiser(zeroed)(x, sigma, class_cond=class_cond)
assert torch.equal(out, torch.zeros_like(x))  # F = 0
assert passes("05b.1", d, x=x, sigma=sigma)  # D = c_skip·x

# %% [markdown]
# **2.** Assemble the *additive* skip of Table 2 instead of the lerp: build an HDiT with
# `skip="add"`, write the split for it, and check your assembled pass against the library.

# %% tags=["exercise"]
add_model = ...  # your HDiT with skip="add" (random weights as in section 0)
assembled_add = ...  # your assembled forward pass of it on (x, sigma, class_cond)
check("05b.2", assembled_add, model=add_model, x=x, sigma=sigma, class_cond=class_cond)

# %% jupyter={"source_hidden": true} tags=["solution"]
import dataclasses

add_model = HDiT(dataclasses.replace(config, skip="add")).eval()
with torch.no_grad():
    for name, p in add_model.named_parameters():  # random weights, as in section 0
        if name.endswith(".scale") and "attn" in name:
            p.uniform_(5.0, 20.0, generator=g)
        else:
            p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5, generator=g)


def split_add(split_module, x, skip):
    return pixel_shuffle_tokens(x @ split_module.proj.weight.T, 2) + skip  # x_up + x_skip


split_lerp = split
split = split_add  # go_up calls `split`
try:
    with torch.no_grad():
        assembled_add = hdit_assembled(add_model, x, sigma, class_cond)
finally:
    split = split_lerp
assert passes("05b.2", assembled_add, model=add_model, x=x, sigma=sigma, class_cond=class_cond)
print("additive skips: assembled == HDiT")

# %% [markdown]
# **3.** Feed a 64×64 image to the same model (RoPE and neighborhood attention work at any
# size). Predict the token grids, and whether the assembled pass still equals `HDiT`.

# %% tags=["exercise"]
grids_at_64 = ...  # your answer: the list of (h, w) token grids, outermost first
check("05b.3", grids_at_64, model=model)

# %% jupyter={"source_hidden": true} tags=["solution"]
x64 = torch.randn(2, 3, 64, 64, generator=g)
s64, c64 = torch.tensor([0.3, 3.0]), torch.tensor([1, 2])
print("grids at 64²:", model.grid_sizes(64, 64))
assert passes("05b.3", model.grid_sizes(64, 64), model=model)
model.eval()
with torch.no_grad():
    assert torch.equal(hdit_assembled(model, x64, s64, c64), model(x64, s64, c64))
