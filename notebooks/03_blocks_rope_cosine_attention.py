# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 — Inside a block: AdaRMSNorm, GEGLU, cosine-similarity attention and axial RoPE
# (§4.2, Figures 4–5, App. C)
#
# HDiT's transformer block is modelled on LLaMA rather than on DiT. This notebook puts the two
# side by side and then takes each ingredient of the HDiT block apart:
#
# 1. **HDiT block vs DiT block** (Fig. 4–5): the code, the module trees, the parameters;
# 2. **AdaRMSNorm** — the conditioning enters as the *scale* of an RMSNorm;
# 3. **GEGLU** — the feed-forward gates itself with the data;
# 4. **cosine-similarity attention** and why its scale is learned *in linear space* (App. C);
# 5. **axial RoPE** — rotary position embeddings on half of each head, one axis per quarter:
#    frequency bands, and the proof by picture that q·k depends only on the relative offset.
#
# Library code used: `hdit_edu.hourglass.TransformerLayer`, `hdit_edu.dit.DiTBlock`,
# `hdit_edu.layers` (norms, feed-forward), `hdit_edu.attention` (`Attention`,
# `cosine_sim_scale`), `hdit_edu.rope` (`AxialRoPE`, `apply_rope`, position grids).

# %% tags=["parameters"]
PROFILE = "auto"

# %%
from hdit_edu.env import resolve_profile

PROFILE = resolve_profile(PROFILE)
print(f"profile: {PROFILE}")

# %%
import inspect
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.colors import ListedColormap

from hdit_edu.attention import Attention, cosine_sim_scale
from hdit_edu.dit import MLP, DiTBlock
from hdit_edu.hourglass import TransformerLayer
from hdit_edu.layers import AdaRMSNorm, FeedForward, RMSNorm, default_d_ff, geglu, rms_norm
from hdit_edu.rope import AdditivePosEmb, AxialRoPE, apply_rope, axial_rope_freqs, make_axial_pos
from hdit_edu.widgets import interact

torch.manual_seed(0)
# DiT-B widths in the gpu profile; small ones on a CPU (the structure is the same).
d, head_dim = (768, 64) if PROFILE == "gpu" else (128, 32)
heads = d // head_dim
print(f"width d = {d}, {heads} heads of {head_dim}")

# %% [markdown]
# ## 1. HDiT block vs DiT block (Figures 4 and 5)
#
# Both blocks are pre-norm residual blocks — attention, then a pointwise feed-forward — and both
# are conditioned on a vector `c` (noise level + class). They differ in almost every detail:
#
# | | DiT (adaLN-Zero) | HDiT |
# | --- | --- | --- |
# | norm | LayerNorm, no affine | RMSNorm |
# | conditioning | `c` → shift, scale **and gate** for both branches (6·d numbers) | `c` → scale only (**AdaRMSNorm**), 2·d numbers |
# | start as identity | the gates start at 0 | the output projections start at 0 |
# | attention | softmax(q·kᵀ/√d), biases | **cosine similarity** × learned scale τ, **axial RoPE**, no biases |
# | positions | additive sin-cos table | RoPE inside attention (no table) |
# | feed-forward | GELU MLP, hidden 4·d | **GEGLU**, hidden 3·d |
#
# First the code, side by side (the library's own source):

# %%
print("─── HDiT: TransformerLayer.forward " + "─" * 40)
print(inspect.getsource(TransformerLayer.forward))
print("─── DiT: DiTBlock.forward " + "─" * 49)
print(inspect.getsource(DiTBlock.forward))

# %% [markdown]
# And the feed-forward branches of Figure 5 — GEGLU modulates with the data (*value ⊙ GELU(gate)*,
# both from the input), DiT's MLP is modulated from outside by its adaLN gate:

# %%
print(inspect.getsource(FeedForward.forward))
print(inspect.getsource(geglu))
print(inspect.getsource(MLP.forward))

# %% [markdown]
# The two blocks at the same width, as module trees (global attention for the HDiT block):

# %%
hdit_block = TransformerLayer(
    d, default_d_ff(d, "geglu"), cond_width=d, attention=dict(kind="global", head_dim=head_dim)
)
dit_block = DiTBlock(d, heads, 4 * d)
print(hdit_block)
print(dit_block)


# %%
def count(module):
    return sum(p.numel() for p in module.parameters())


roles = {
    "conditioning": (
        count(hdit_block.norm1) + count(hdit_block.norm2),
        count(dit_block.adaLN_modulation),
    ),
    "attention": (count(hdit_block.attn), count(dit_block.attn)),
    "feed-forward": (count(hdit_block.ffn), count(dit_block.mlp)),
}
fig, ax = plt.subplots(figsize=(6, 3))
xs = torch.arange(len(roles))
ax.bar(xs - 0.2, [v[0] / 1e6 for v in roles.values()], 0.4, label="HDiT block")
ax.bar(xs + 0.2, [v[1] / 1e6 for v in roles.values()], 0.4, label="DiT block")
ax.set_xticks(xs, list(roles))
ax.set_ylabel("parameters (M)")
ax.legend()
ax.set_title(f"one block at d = {d}")
plt.show()
for role, (h, t) in roles.items():
    print(f"{role:<14} HDiT {h:>11,}   DiT {t:>11,}")
print(f"{'total':<14} HDiT {count(hdit_block):>11,}   DiT {count(dit_block):>11,}")

# %% [markdown]
# The conditioning of a DiT block (6·d² + 6·d) is larger than its attention (4·d² + 4·d): 1.5×,
# as the counts printed above show; HDiT's two AdaRMSNorms cost 2·d² (with a `c` of width d),
# half its attention. Both blocks start as the **identity** on the
# residual stream, but for different reasons: DiT's gates are zero, HDiT's output projections are
# zero (no gate at all — §4.2):

# %%
x = torch.randn(2, 8, 8, d)
cond = torch.randn(2, d)
pos = make_axial_pos(8, 8)
assert torch.equal(hdit_block(x, pos, cond), x)
assert torch.equal(dit_block(x.flatten(1, 2), cond), x.flatten(1, 2))
assert not hdit_block.attn.out_proj.weight.any() and not hdit_block.ffn.down_proj.weight.any()
assert roles["conditioning"] == (2 * d * d, 6 * d * d + 6 * d)
assert roles["feed-forward"] == (9 * d * d, 8 * d * d + 5 * d)  # GEGLU 3d: d·6d + 3d·d
assert roles["attention"] == (4 * d * d + heads, 4 * d * d + 4 * d)  # + one τ per head
assert roles["conditioning"][1] / roles["attention"][1] == 1.5  # DiT: (6d² + 6d) / (4d² + 4d)

# %% [markdown]
# ## 2. AdaRMSNorm: conditioning through the norm's scale
#
# RMSNorm (Zhang & Sennrich, 2019) rescales each token to unit root-mean-square and multiplies a
# learned per-channel scale — unlike LayerNorm it does not subtract the mean:
#
# $$\mathrm{RMSNorm}(x) = \frac{x}{\sqrt{\tfrac1d\sum_i x_i^2 + \varepsilon}}\odot s .$$
#
# HDiT makes the scale **adaptive**: the mapping network's output `c` predicts it,
# $s = 1 + W c$, with $W$ initialised to zero — so a fresh AdaRMSNorm *is* an RMSNorm.

# %%
v = torch.tensor([1.0, 2.0, 3.0, 10.0])
print("x            ", v.tolist())
print("RMSNorm(x)   ", [round(t, 3) for t in rms_norm(v, torch.ones(4)).tolist()])
print("LayerNorm(x) ", [round(t, 3) for t in F.layer_norm(v, (4,)).tolist()])
rms = v.pow(2).mean().sqrt()
torch.testing.assert_close(rms_norm(v, torch.ones(4), eps=0.0), v / rms)
# LayerNorm forgets a constant offset, RMSNorm does not:
assert torch.allclose(F.layer_norm(v + 5, (4,)), F.layer_norm(v, (4,)), atol=1e-6)
assert not torch.allclose(rms_norm(v + 5, torch.ones(4)), rms_norm(v, torch.ones(4)))

# %%
norm = AdaRMSNorm(d, cond_width=d)
tokens = torch.randn(3, 4, 4, d)
conds = torch.randn(3, d)
assert torch.equal(norm(tokens, conds), RMSNorm(d)(tokens))  # fresh: exactly RMSNorm
with torch.no_grad():
    norm.linear.weight.normal_(std=0.3 / math.sqrt(d))  # as if trained a little
scales = 1 + norm.linear(conds)
plt.figure(figsize=(7, 2.5))
for i in range(3):
    plt.plot(scales[i, :64].detach(), lw=1, label=f"condition {i}")
plt.axhline(1, color="k", lw=0.5)
plt.xlabel("channel")
plt.ylabel("scale 1 + W·c")
plt.title("AdaRMSNorm: each condition rescales the channels (first 64 shown)")
plt.legend(fontsize=7)
plt.show()
for i in range(3):
    torch.testing.assert_close(norm(tokens, conds)[i], rms_norm(tokens[i], scales[i]))

# %% [markdown]
# ## 3. GEGLU: a feed-forward that gates itself
#
# GEGLU (Shazeer, 2020) projects the input to *two* hidden vectors, a value $a$ and a gate $b$,
# and multiplies: $\mathrm{GEGLU}(x) = (xW_a) \odot \mathrm{GELU}(xW_b)$. The modulation comes
# from the data itself (and acts on the first layer), where DiT's comes from the conditioning (on
# the output). Because the up-projection is twice as wide, the paper shrinks the hidden size from
# 4·d to 3·d (§5.2, step C).

# %%
z = torch.linspace(-3, 3, 121)
a, b = torch.meshgrid(z, z, indexing="ij")
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
ax1.plot(z, F.gelu(z), label="GELU(x)")
ax1.plot(z, z * F.gelu(z), label="x · GELU(x)  (a = b)")
ax1.legend()
ax1.grid(alpha=0.3)
im = ax2.imshow(a * F.gelu(b), extent=[-3, 3, -3, 3], origin="lower", cmap="RdBu_r")
ax2.set_xlabel("gate b")
ax2.set_ylabel("value a")
ax2.set_title("a · GELU(b)")
plt.colorbar(im, ax=ax2)
plt.show()

# %% [markdown]
# From scratch, checked against the library's `FeedForward` (the first half of the
# up-projection is the value, the second the gate — k-diffusion's order):

# %%
ffn = FeedForward(d, 3 * d, kind="geglu")
with torch.no_grad():
    ffn.down_proj.weight.normal_(std=d**-0.5)
h = torch.randn(5, d)
w_value, w_gate = ffn.up_proj.weight.chunk(2, dim=0)
scratch = ((h @ w_value.T) * F.gelu(h @ w_gate.T)) @ ffn.down_proj.weight.T
torch.testing.assert_close(ffn(h), scratch)
sizes = {
    "GELU, 4d": count(FeedForward(d, 4 * d, "gelu")),
    "GEGLU, 3d (HDiT)": count(FeedForward(d, 3 * d, "geglu")),
    "GEGLU, 8d/3 (LLaMA)": count(FeedForward(d, 8 * d // 3, "geglu")),
}
for k, val in sizes.items():
    print(f"{k:<20} {val:>10,} parameters = {val / d**2:.2f}·d²")
assert sizes["GELU, 4d"] == 8 * d * d and sizes["GEGLU, 3d (HDiT)"] == 9 * d * d

# %% [markdown]
# ## 4. Cosine-similarity attention and its scale (App. C)
#
# Standard attention uses $\mathrm{softmax}(q\cdot k^\top/\sqrt{d})$: the logits grow with the
# norms of q and k, which can explode during training. HDiT (after Swin-v2's *scaled cosine
# attention*) normalises q and k and multiplies by a learned per-head scale τ:
#
# $$\mathrm{softmax}\big(\tau\cdot\cos(q,k)\big)\,v, \qquad \tau \text{ init } 10 .$$
#
# **A note on notation.** App. C writes Swin-v2's attention as $\mathrm{softmax}(\cos(q,k)/\tau)$
# (eq. 11) and parametrises $1/\tau = \exp(\min\{\theta, \log\tfrac{1}{0.01}\})$ (eq. 12): there τ
# *divides*. Our τ — the library's `Attention.scale`, and the "scale" that App. C.1 says ends
# up between 5 and 50 — *multiplies*: our τ is eq. 11–12's $1/\tau$. Eq. 12's init
# θ = log 10 is our init τ = 10. The first cell below checks the two notations agree.
#
# The logits are bounded by ±τ, so τ alone sets how sharp attention can get. The library folds
# it into q and k (`cosine_sim_scale`: $q' = q\sqrt\tau/\lVert q\rVert$, the same for k), so
# that every attention kernel runs with scale 1:

# %%
q, k = torch.randn(6, head_dim), torch.randn(6, head_dim)
tau = torch.tensor(10.0)
q2, k2 = cosine_sim_scale(q, k, tau)
cos = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T
torch.testing.assert_close(q2 @ k2.T, tau * cos, rtol=1e-5, atol=1e-5)
attn = Attention(d, head_dim)
assert torch.equal(attn.scale, torch.full((heads,), 10.0))  # τ itself is the parameter
# eq. 11 divides by the paper's τ_p; eq. 12 gives 1/τ_p = exp(min(θ, log 100)), θ init log 10
theta0 = torch.tensor(math.log(10.0))
tau_paper = 1 / torch.exp(torch.clamp(theta0, max=math.log(1 / 0.01)))  # = 0.1
torch.testing.assert_close(
    torch.softmax(cos / tau_paper, -1), torch.softmax(tau * cos, -1), rtol=1e-5, atol=1e-6
)
assert abs(1 / tau_paper.item() - attn.scale[0].item()) < 1e-5  # our τ = eq. 12's 1/τ

taus = torch.logspace(-1, 2.3, 60)
keys = F.normalize(torch.randn(256, head_dim), dim=-1)
query = F.normalize(torch.randn(1, head_dim), dim=-1)


def entropy_at(t):
    p = torch.softmax(t * query @ keys.T, dim=-1)
    return -(p * p.log()).sum().item()


entropy = [entropy_at(t) for t in taus]
plt.figure(figsize=(5, 3))
plt.semilogx(taus, entropy)
plt.axvline(10, color="C1", ls="--", label="init τ = 10")
plt.axvspan(5, 50, color="C2", alpha=0.15, label="trained models: 5–50 (App. C)")
plt.axhline(math.log(256), color="k", lw=0.5)
plt.xlabel("τ")
plt.ylabel("attention entropy (nats)")
plt.title("τ sets the sharpness (256 keys)")
plt.legend(fontsize=7)
plt.show()

# %% [markdown]
# **Measured on a trained model.** App. C.1: "our converged models' scale typically reaching a
# range between 5 and 50". The shipped toy HDiT (trained 25k steps on a CPU) has these τ:

# %%
from hdit_edu.runs import load_run
from hdit_edu.widgets import SHIPPED_RUN

_, toy_denoiser = load_run(SHIPPED_RUN)
learned_tau = torch.cat(
    [m.scale.detach().flatten() for m in toy_denoiser.modules() if isinstance(m, Attention)]
)
print(
    f"{learned_tau.numel()} heads: τ from {learned_tau.min():.2f} to {learned_tau.max():.2f}, "
    f"mean {learned_tau.mean():.2f} (init 10)"
)
assert ((learned_tau > 5) & (learned_tau < 50)).all()  # inside App. C.1's range
assert (learned_tau != 10.0).all()  # and every one of them was trained

# %% [markdown]
# **Why learn τ in linear space?** Swin-v2 learns θ with multiplier
# $\exp(\min\{\theta, \log 100\})$ — eq. 12's $1/\tau$, our τ. The paper found that this makes the scales vary wildly — many pinned at the clamp
# (100), others below 1 — and that learning τ directly fixes it (App. C.1). Two mechanisms are
# visible without any training run:
#
# * **Multiplicative steps.** By the chain rule $\partial L/\partial\theta = \tau\,\partial
#   L/\partial\tau$. Adam moves each parameter by roughly the learning rate per step, so in the
#   exp parametrisation τ moves by ≈ τ·lr: a large scale moves fast, a small one barely.
#   In linear space every scale moves by ≈ lr.
# * **The clamp is a trap.** Above the clamp, $\min\{\theta, \log 100\}$ has zero gradient: once
#   momentum carries θ past log 100, no gradient brings it back.

# %%
cos_sims = torch.rand(64, 16) * 2 - 1  # cosine similarities of 64 queries with 16 keys
target = torch.softmax(20.0 * cos_sims, -1)  # attention that τ* = 20 would produce


def attention_loss(tau):
    return -(target * torch.log_softmax(tau * cos_sims, -1)).sum(-1).mean()


theta = torch.tensor(math.log(30.0), requires_grad=True)
tau_lin = torch.tensor(30.0, requires_grad=True)
attention_loss(torch.exp(theta.clamp(max=math.log(100)))).backward()
attention_loss(tau_lin).backward()
print(
    f"at τ = 30:  ∂L/∂τ = {tau_lin.grad:.5f},  ∂L/∂θ = {theta.grad:.5f}  (ratio {theta.grad / tau_lin.grad:.1f} = τ)"
)
torch.testing.assert_close(theta.grad, 30.0 * tau_lin.grad, rtol=1e-4, atol=0)
above = torch.tensor(math.log(100) + 0.01, requires_grad=True)
attention_loss(torch.exp(above.clamp(max=math.log(100)))).backward()
assert above.grad == 0  # past the clamp: no gradient at all

# %%
tau_grid = torch.logspace(-0.5, 2, 50)
lr_lin, lr_log = 0.4, 0.04  # equal steps at τ = 10
plt.figure(figsize=(5, 3))
plt.loglog(tau_grid, torch.full_like(tau_grid, lr_lin), label="linear τ: Δτ = lr")
plt.loglog(tau_grid, tau_grid * math.expm1(lr_log), label="τ = exp(θ): Δτ = τ(e^lr − 1)")
plt.xlabel("τ")
plt.ylabel("change of τ per Adam step")
plt.legend(fontsize=8)
plt.title("step size in τ")
plt.show()

# %% [markdown]
# A small simulation of the trap: for 150 steps the data "want" very sharp attention (τ* = 300),
# then the usual τ* = 20. Both parametrisations train with Adam at the matched step sizes above.
# The linear scale follows; the exponential one runs into the clamp, overshoots it with its
# momentum, and stays at 100 for good.


# %%
def run(parametrisation, steps=400):
    g = torch.Generator().manual_seed(0)
    p = torch.tensor(math.log(10.0) if parametrisation == "exp" else 10.0, requires_grad=True)
    opt = torch.optim.Adam(
        [p], lr=lr_log if parametrisation == "exp" else lr_lin, betas=(0.9, 0.95)
    )
    trace = []
    for step in range(steps):
        tau_star = 300.0 if step < 150 else 20.0
        c = torch.rand(32, 16, generator=g) * 2 - 1
        t = torch.exp(p.clamp(max=math.log(100))) if parametrisation == "exp" else p
        loss = -(torch.softmax(tau_star * c, -1) * torch.log_softmax(t * c, -1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        trace.append(t.item())
    return trace


trace_lin, trace_exp = run("linear"), run("exp")
plt.figure(figsize=(6, 3))
plt.plot(trace_lin, label="linear τ (HDiT)")
plt.plot(trace_exp, label="τ = exp(min(θ, log 100)) (Swin-v2)")
plt.axvline(150, color="k", lw=0.5)
plt.axhline(20, color="C2", ls=":", lw=1)
plt.xlabel("step")
plt.ylabel("τ")
plt.legend(fontsize=8)
plt.show()
assert abs(trace_exp[-1] - 100) < 1e-3  # stuck at the clamp
assert abs(trace_lin[-1] - 20) < 5  # back near the optimum
print(f"final τ: linear {trace_lin[-1]:.1f}, exp {trace_exp[-1]:.1f}")

# %% [markdown]
# (This shows the mechanisms, not the paper's training statistics: that learned scales end up
# in 5–50 with the linear parametrisation is the paper's empirical finding.)
#
# ## 5. Axial RoPE
#
# Rotary embeddings (Su et al.) rotate pairs of q/k channels by an angle proportional to the
# token's position; since rotations compose, $R(p)q\cdot R(p')k = q\cdot R(p'-p)k$ — attention
# sees only the *relative* offset. HDiT's 2-D version (§4.2) splits each head in four:
#
# * a quarter rotated by the **row** coordinate y, a quarter by the **column** coordinate x
#   (each channel c paired with channel c + head_dim/4);
# * the remaining **half is not rotated** at all (content that matches regardless of position —
#   the paper found this better).
#
# Positions are cell centres of the token grid on [−1, 1]; frequencies are log-spaced between π
# and 10π over all heads (each head gets a spread of scales).

# %%
rope_heads = 12 if PROFILE == "gpu" else 6
freqs = axial_rope_freqs(64, rope_heads)  # (heads, head_dim // 8)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3), gridspec_kw={"width_ratios": [1.2, 1]})
im = ax1.imshow(freqs / math.pi, aspect="auto", cmap="viridis")
ax1.set_xlabel("frequency index within the head")
ax1.set_ylabel("head")
ax1.set_title("RoPE frequencies / π (head_dim 64)")
plt.colorbar(im, ax=ax1)
role = torch.zeros(64)
role[:8], role[8:16], role[16:24], role[24:32] = 0, 1, 0, 1  # y-pairs, x-pairs (x1 | x2 halves)
role[32:] = 2
ax2.imshow(role[None], aspect="auto", cmap=ListedColormap(["C0", "C1", "0.85"]))
ax2.set_yticks([])
ax2.set_xlabel("channel of a head")
ax2.set_title("blue: rotated by y · orange: by x · grey: untouched")
plt.tight_layout()
plt.show()
assert torch.allclose(freqs.min(), torch.tensor(math.pi)) and freqs.max() < 10 * math.pi

# %%
rope = AxialRoPE(head_dim, 1)
qv = torch.randn(head_dim)
theta_grid = rope(make_axial_pos(8, 8))  # (8, 8, 1, head_dim // 4)
rotated = apply_rope(qv.expand(8, 8, 1, head_dim), theta_grid)
assert torch.equal(rotated[..., head_dim // 2 :], qv[head_dim // 2 :].expand(8, 8, 1, -1))
print("the second half of every head passes through RoPE unchanged ✓")

# %% [markdown]
# **q·k depends only on the offset.** Take one query vector and one key vector, place them at
# every position of a 16×16 grid, rotate them, and compute all 256 × 256 scores. For any query
# position, the map of its scores over key positions is the *same picture, shifted*:

# %%
n = 16
pos = make_axial_pos(n, n)
theta = AxialRoPE(head_dim, 1)(pos)  # (n, n, 1, head_dim/4)
qv, kv = torch.randn(head_dim), torch.randn(head_dim)
qs = apply_rope(qv.expand(n, n, 1, head_dim), theta).reshape(n * n, head_dim)
ks = apply_rope(kv.expand(n, n, 1, head_dim), theta).reshape(n * n, head_dim)
scores = (qs @ ks.T).reshape(n, n, n, n)  # [query y, query x, key y, key x]


def show_scores(query_y=4, query_x=4):
    plt.figure(figsize=(3.4, 3))
    plt.imshow(scores[query_y, query_x], cmap="RdBu_r")
    plt.scatter([query_x], [query_y], marker="x", color="k")
    plt.title(f"q·k for the query at ({query_y}, {query_x})", fontsize=9)
    plt.colorbar()
    plt.show()


interact(
    show_scores, query_y=widgets.IntSlider(4, 0, n - 1), query_x=widgets.IntSlider(4, 0, n - 1)
)

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for ax, (qy, qx) in zip(axes, [(3, 3), (8, 5), (12, 12)]):
    ax.imshow(scores[qy, qx], cmap="RdBu_r", vmin=scores.min(), vmax=scores.max())
    ax.scatter([qx], [qy], marker="x", color="k")
    ax.set_title(f"query at ({qy}, {qx})", fontsize=9)
plt.show()
# the same relative offset gives the same score, wherever the pair sits on the grid
for dy, dx in [(0, 1), (2, -3), (-5, 4)]:
    vals = torch.stack(
        [
            scores[y, x, y + dy, x + dx]
            for y in range(max(0, -dy), min(n, n - dy))
            for x in range(max(0, -dx), min(n, n - dx))
        ]
    )
    assert (vals.max() - vals.min()).abs() < 1e-4 * scores.abs().max(), (dy, dx)
print("score depends only on (Δy, Δx) ✓")

# %% [markdown]
# Compare the **additive** position embedding that RoPE replaces (steps A–C of the ablation): the
# position vector is added to the token *before* the q/k projections, so the score of a pair is
# a function of both absolute positions, not of the offset alone:

# %%
table = AdditivePosEmb(n, n, d).table.detach()  # (n, n, d), sin-cos initialised
w_q, w_k = torch.randn(head_dim, d) / d**0.5, torch.randn(head_dim, d) / d**0.5
content = torch.randn(d)
xq = (content + table).reshape(n * n, d) @ w_q.T
xk = (content + table).reshape(n * n, d) @ w_k.T
add_scores = (xq @ xk.T).reshape(n, n, n, n)
same_offset = torch.stack([add_scores[y, x, y, x + 1] for y in range(n) for x in range(n - 1)])
print(
    f"additive: scores at offset (0, 1) range over [{same_offset.min():.2f}, {same_offset.max():.2f}]"
)
assert same_offset.max() - same_offset.min() > 0.1

# %% [markdown]
# ### RoPE's frequencies against the grid: rotation per token and aliasing
#
# The frequencies above are set in **image units**: π … 10π radians per unit of position on
# [−1, 1], whatever the token grid. On a side of n tokens the spacing is 2/n, so frequency f
# turns a channel pair by **2f/n per token**. Attention only ever sees the pair at whole token
# offsets, and there a turn of θ per token is indistinguishable from θ − 2π: a pair that turns
# by **more than π per token aliases** — it looks like a slower pair turning the other way, and
# the fine position it was meant to resolve is lost (Nyquist's limit, in tokens). The range's
# top, 10π, turns by at most π per token only from n = 20 tokens per side. The paper's
# ImageNet-128² model has 32×32 and 16×16 tokens; the toy ablation of notebook 06 (patch 4 on
# 32² images) has **8×8 and 4×4**. `hdit_edu.rope.rope_turns` (one level) and
# `hdit_edu.hourglass.level_rope_turns` (every level of a config) measure it from the library's
# own frequencies and positions:

# %%
import dataclasses

from hdit_edu.ablation import run_config
from hdit_edu.hourglass import level_rope_turns
from hdit_edu.presets import get_config
from hdit_edu.rope import rope_freq_scale, rope_turns

toy_d = run_config("D", seed=0).model  # the toy ablation's step D (axial RoPE)
paper_d = get_config("imagenet128").model  # the paper's ImageNet-128² model
levels = {
    "toy outer": level_rope_turns(toy_d)[0],
    "toy inner": level_rope_turns(toy_d)[1],
    "paper outer": level_rope_turns(paper_d)[0],
    "paper inner": level_rope_turns(paper_d)[1],
}
print("level         grid    pairs  max turn/token  aliased (> π)")
for name, (grid, turns, aliased) in levels.items():
    print(
        f"{name:12s} {grid[0]:2d}×{grid[1]:<2d}  {turns.numel():5d}  {turns.max():10.2f}π     "
        f"{int(aliased.sum()):3d} ({100 * aliased.float().mean():.1f} %)"
    )
assert [grid for grid, _, _ in levels.values()] == [(8, 8), (4, 4), (32, 32), (16, 16)]
counts = {name: (int(a.sum()), a.numel()) for name, (_, _, a) in levels.items()}
assert counts == {
    "toy outer": (3, 8), "toy inner": (11, 16), "paper outer": (0, 48), "paper inner": (9, 96)
}
assert round(levels["toy outer"][1].max().item(), 2) == 1.87
assert round(levels["toy inner"][1].max().item(), 2) == 4.33

# %% [markdown]
# Every pair's turn per token against the grid side (a level with the toy inner level's 16
# frequencies; every level spans the same decade π … 10π, so the picture is the same with more
# lines). Above the red line a pair aliases; the markers are the real levels' pairs at their
# grids. On the right, what aliasing does to attention: the score of one query/key pair that
# only this channel pair carries, against the offset between the two tokens, rotated by
# `AxialRoPE` and `apply_rope` — the continuous curve is what the frequency means, the dots are
# what attention sees at whole tokens.

# %%
sides = torch.logspace(math.log10(2), math.log10(64), 200)
line_turns = rope_turns(32, 4, (64, 64))[0].flatten().sort().values * 64  # f·2/π: turn × side
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
for t in line_turns:
    ax1.loglog(sides, t / sides, color="C0", lw=0.6, alpha=0.6)
scaled = line_turns.max() * torch.clamp(sides / 20, max=1) / sides  # × rope_freq_scale
ax1.loglog(sides, scaled, "k--", lw=1, label='fastest pair with rope_freqs="grid"')
ax1.axhline(1, color="C3", lw=1.2, label="π per token: aliasing above")
for i, (name, (grid, turns, aliased)) in enumerate(levels.items()):
    side = grid[0] * (1 + 0.04 * (i - 1.5))  # a small horizontal offset per level
    ax1.scatter(torch.full((turns.numel(),), side), turns.flatten(), s=9, zorder=3,
                color=f"C{i + 1}", label=f"{name} {grid[0]}×{grid[1]}: "
                f"{int(aliased.sum())}/{turns.numel()} alias")
ax1.set_xticks([2, 4, 8, 16, 32, 64], ["2", "4", "8", "16", "32", "64"])
ax1.minorticks_off()
ax1.set_xlabel("token grid side n")
ax1.set_ylabel("turn per token (units of π)")
ax1.set_title("RoPE pairs' turn per token, image-unit frequencies", fontsize=9)
ax1.legend(fontsize=7, loc="upper right")

# the toy outer level (8×8, 2 heads of 32): its fastest pair and a slow one, as real scores
rope8 = AxialRoPE(32, 2)
turns8 = levels["toy outer"][1]
fast = divmod(int(turns8.argmax()), turns8.shape[1])  # (head, frequency index)
slow = divmod(int(turns8.argmin()), turns8.shape[1])
spacing = 2 / 8


def pair_score(head, index, offsets):
    """q·k of a query and a key that differ only in the y-channel pair `index` of `head`,
    the query at row offset `offsets` (position units) from the key."""
    q = torch.zeros(len(offsets), 2, 32)
    q[:, head, index] = 1.0  # x1 channel of the pair; its partner x2 is channel 8 + index
    pos = torch.stack([offsets, torch.zeros_like(offsets)], -1)
    q_rot = apply_rope(q, rope8(pos))
    k_rot = apply_rope(q[:1], rope8(torch.zeros(1, 2)))
    return (q_rot * k_rot).sum(-1)[:, head]


fine = torch.linspace(-3, 3, 601) * spacing
tokens = torch.arange(-3, 4, dtype=torch.float32) * spacing
for (head, index), colour, what in [(fast, "C3", "aliased"), (slow, "C0", "not aliased")]:
    t = turns8[head, index].item()
    ax2.plot(fine / spacing, pair_score(head, index, fine), color=colour, lw=0.8,
             label=f"{what}: {t:.2f}π per token")
    ax2.plot(tokens / spacing, pair_score(head, index, tokens), "o", color=colour)
t_fast = turns8[fast].item()
alias = 2 - t_fast  # the turn the samples show: t − 2π, i.e. 2π − t the other way
ax2.plot(fine / spacing, torch.cos(alias * math.pi * fine / spacing), "k:", lw=1,
         label=f"its alias: {alias:.2f}π per token")
ax2.set_xlabel("query − key offset (tokens)")
ax2.set_ylabel("score of one channel pair")
ax2.set_title("toy 8×8 level: what attention sees at whole tokens", fontsize=9)
ax2.legend(fontsize=7, loc="lower left")
plt.tight_layout()
plt.show()

# at whole token offsets the fast pair's scores ARE its slow alias's
torch.testing.assert_close(
    pair_score(*fast, tokens), torch.cos(alias * math.pi * tokens / spacing), atol=1e-5, rtol=0
)
print(f"fastest pair of the toy 8×8 level: {t_fast:.3f}π per token, seen as {alias:.3f}π")

# %% [markdown]
# So the pairs meant to resolve the finest offsets are read as slower ones: between π and 2π
# per token, the faster the pair, the slower its alias; past 2π the turns wrap round again. The
# *folded* turn of every pair (the one attention sees at whole tokens, in [0, π]):

# %%
def folded(turns):
    """The turn per token attention sees at whole tokens, in units of π: t mod 2, reflected
    into [0, 1]."""
    return (torch.remainder(turns + 1, 2) - 1).abs()


for name in ("toy outer", "toy inner"):
    turns = levels[name][1].flatten().sort().values
    print(f"{name}: intended {[round(v, 2) for v in turns.tolist()]}")
    print(f"{' ' * len(name)}  seen     {[round(v, 2) for v in folded(turns).tolist()]}")
inner = levels["toy inner"][1].flatten()
print(f"the toy inner level's fastest pair: {inner.max():.2f}π per token, seen as "
      f"{folded(inner.max()):.2f}π")
assert math.isclose(folded(inner.max()).item(), inner.max().item() - 4, rel_tol=1e-12)
# the folded turns of the toy inner level are not even ordered like the frequencies any more
assert not (folded(inner).diff() >= 0).all()
torch.testing.assert_close(folded(levels["paper outer"][1]), levels["paper outer"][1])
# and an alias can land on another pair's code: the toy outer level's second-fastest pair
outer = levels["toy outer"][1].flatten().sort().values
twin = (outer[:5] - folded(outer[6])).abs().argmin()
print(f"toy outer: the pair at {outer[6]:.3f}π is seen as {folded(outer[6]):.3f}π, next to the "
      f"unaliased pair at {outer[twin]:.3f}π — two pairs, almost one code")
assert (outer[twin] - folded(outer[6])).abs() < 0.005

# %% [markdown]
# **The grid-scaled option.** `model.rope_freqs = "grid"` scales each level's frequencies by
# min(1, n/20) for its training grid of n tokens per side: the range's top (10π) then turns by
# exactly π per token and every pair by less; the decade between the slowest and the fastest
# pair is kept, and sides of 20 tokens or more are left as they are. The default, `"image"`,
# is the paper's and k-diffusion's range, bit-identical to every shipped config and
# checkpoint — and note that even the paper's 16×16 inner level has 9 of 96 pairs past π, so
# `"grid"` is *not* the paper's model at 128² either. Whether the scaling matters for the toy
# ablation's C → D verdict is an experiment, not something this picture can settle: a slow
# alias is still a usable relative code. The experiment is `results/ablation-toy-revisited/`
# (registered before its runs; notebook 06, "The ablation revisited"), and its answer is the
# cell after the next one.

# %%
toy_grid = dataclasses.replace(toy_d, rope_freqs="grid")
for (grid, turns, aliased), (_, before, _) in zip(level_rope_turns(toy_grid), levels.values()):
    scale = rope_freq_scale("grid", grid)
    print(f"{grid[0]}×{grid[1]}: scale {scale:.2f}, max turn {before.max():.2f}π → "
          f"{turns.max():.3f}π, aliased {int(aliased.sum())}/{turns.numel()}")
    assert not aliased.any() and turns.max() < 1 and math.isclose(scale, min(1, grid[0] / 20))
paper_grid = level_rope_turns(dataclasses.replace(paper_d, rope_freqs="grid"))
assert torch.equal(paper_grid[0][1], levels["paper outer"][1])  # 32×32: unchanged
assert not paper_grid[1][2].any()  # 16×16: scaled by 0.8, none aliases

# %% [markdown]
# **What the experiment found.** D (axial RoPE, no absolute position) was trained five times
# beside D-grid (its frequencies scaled to the grid, nothing aliases) and D-table (RoPE *and*
# C's learned table added after patching), and every run was scored at its own guidance scale.
# The differences in toy FID against D (negative = better; mean [95 % CI] over the five
# seeds, Holm p over the study's five comparisons), read from the study's shipped summary:

# %%
import json
from pathlib import Path

import hdit_edu

REVISITED = Path(hdit_edu.__file__).resolve().parents[1] / "results/ablation-toy-revisited"
revisited = json.loads((REVISITED / "summary.json").read_text())
rope_test = {(c["x"], c["y"]): c for c in revisited["comparisons"] if c["metric"] == "fid_selected"}
for arm in ("D-grid", "D-table"):
    c = rope_test["D", arm]
    lo, hi = c["difference"]["ci95"]
    print(f"{arm} − D: {c['difference']['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}], Holm p = "
          f"{c['p_holm']:.3g} ({'significant' if c['significant'] else 'not significant'})")
# scaling the frequencies did not help significantly; giving back the absolute position did
assert not rope_test["D", "D-grid"]["significant"]
assert rope_test["D", "D-table"]["significant"] and rope_test["D", "D-table"]["difference"]["ci95"][1] < 0

# %% [markdown]
# On these toy grids, aliasing is not what made RoPE hurt: five seeds cannot tell the effect of
# the grid-scaled frequencies from zero. What D had lost is the *absolute* position. RoPE
# only sees offsets between tokens, and a data set of centred objects rewards knowing where
# the centre is. So `rope_freqs = "image"` stays the default. On small grids of centred
# content, `pos_emb = "rope+additive"` keeps RoPE and gives the position back.

# %% [markdown]
# **Summary.** An HDiT block is LLaMA-like: RMSNorm whose scale the conditioning predicts
# (AdaRMSNorm, starting as a plain RMSNorm), attention on cosine similarities with a per-head
# scale learned directly (bounded logits, constant step size, no clamp to get stuck at), RoPE on
# half of each head for the two image axes (scores depend only on relative offsets), GEGLU with
# hidden 3·d, and zero-initialised output projections instead of DiT's gates.

# %% [markdown]
# ## Exercises
#
# Predict first, then compute your answer in the answer cell (replace the `...`); `check` says
# whether it is right and, if not, what to look at. The collapsed solution runs with the
# notebook and passes the same check.
#
# **1.** GEGLU's hidden size is 3·d instead of 4·d (§5.2 step C). At d = 768, does the GEGLU FFN
# have more, fewer or the same number of parameters as a 4·d GELU FFN? Predict, then count.

# %% tags=["exercise"]
from hdit_edu.exercises import check, passes

geglu_params, gelu_params = ..., ...  # your counts
check("03.1", (geglu_params, gelu_params))

# %% jupyter={"source_hidden": true} tags=["solution"]
n_geglu = sum(p.numel() for p in FeedForward(768, default_d_ff(768, "geglu"), "geglu").parameters())
n_gelu = sum(p.numel() for p in FeedForward(768, default_d_ff(768, "gelu"), "gelu").parameters())
print(f"GEGLU 3d: {n_geglu:,}   GELU 4d: {n_gelu:,}")
assert n_geglu == 768 * 2 * 2304 + 2304 * 768 == 9 * 768**2  # up: d → 2·3d, down: 3d → d
assert n_gelu == 8 * 768**2  # so GEGLU has 9/8 of the parameters: "a slight increase"
assert passes("03.1", (n_geglu, n_gelu))

# %% [markdown]
# **2.** At τ = 0 every logit is 0. What is the attention entropy over 256 keys then? And as
# τ → ∞? Compute both (a very large τ stands for ∞).

# %% tags=["exercise"]
entropy_tau0, entropy_tau_inf = ..., ...  # your answer
check("03.2", (entropy_tau0, entropy_tau_inf))


# %% jupyter={"source_hidden": true} tags=["solution"]
def stable_entropy(t):  # −Σ p log p with log_softmax: no 0·log 0 at large τ
    logits = t * query @ keys.T
    return -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum().item()


print(f"entropy at τ = 0: {entropy_at(0.0):.4f} (log 256 = {math.log(256):.4f})")
print(f"entropy at τ = 10⁴: {stable_entropy(1e4):.2e}")
assert abs(entropy_at(0.0) - math.log(256)) < 1e-5  # uniform over all keys
assert stable_entropy(1e4) < 0.01  # all weight on the most similar key
assert passes("03.2", (entropy_at(0.0), stable_entropy(1e4)))

# %% [markdown]
# **3.** RoPE encodes *relative* position. Move a query and a key by the same offset: predict
# whether their rotated dot product changes. Check with `AxialRoPE` and `apply_rope`: compute
# the product at two positions, then with both positions moved by the same offset.

# %% tags=["exercise"]
dot_before, dot_after = ..., ...  # your two dot products
check("03.3", (dot_before, dot_after))

# %% jupyter={"source_hidden": true} tags=["solution"]
rope_ex = AxialRoPE(64, 1)
qv, kv = torch.randn(1, 64), torch.randn(1, 64)
p_q, p_k, shift_by = torch.tensor([0.1, -0.3]), torch.tensor([0.5, 0.2]), torch.tensor([0.7, -0.4])


def rotated_dot(pq, pk):
    return (apply_rope(qv, rope_ex(pq)) * apply_rope(kv, rope_ex(pk))).sum()


before, after = rotated_dot(p_q, p_k), rotated_dot(p_q + shift_by, p_k + shift_by)
print(f"q·k at the original positions {before:.5f}, both shifted {after:.5f}")
assert passes("03.3", (before, after))
assert not torch.allclose(rotated_dot(p_q, p_k + shift_by), before)  # a relative move changes it
