"""The DiT baseline (Peebles & Xie 2023) in pixel space — rows R1–R2 of Table 1 (§5.2).

DiT-B/4: patch size 4, depth 12, width 768, 12 heads, MLP ratio 4 (GELU, tanh approximation),
adaLN-Zero conditioning (Fig. 4–5, right-hand side), fixed 2-D sin-cos additive positions,
learned σ (6 output channels for RGB). About 130M parameters with 1000 classes (§5.2: "approx.
130M parameters for DiT").

Written after the official ``models.py`` (facebookresearch/DiT) — same modules, constants,
initialisation and order of operations — with these deliberate differences:

* **Timestep.** DiT embeds the integer DDPM step t ∈ [0, 1000). On the DDPM path (R1,
  :class:`hdit_edu.ddpm.DDPMDenoiser`) it still does: the denoiser passes ``timestep=t``.
  Inside our EDM denoiser (R2) the network receives σ only, and :class:`DiT` feeds
  ``c_noise(σ) = log(σ)/4`` to the same sinusoidal embedder (256 frequencies, max period 10⁴)
  — EDM's continuous noise-level input. Its range is small (≈ [−1.7, 1.7] for σ ∈ [10⁻³,
  10³]); the MLP after the embedder learns to spread it. This is one of the R1 → R2
  mismatches the authors name (crowsonkb/k-diffusion#96).
* **Class dropping.** DiT drops labels *inside* its label embedder; here the trainer does it and
  passes index ``num_classes`` (the extra "dropped" embedding row, DiT's CFG row).
* **Learned σ.** With ``out_channels = 2·in_channels`` (DiT's ``learn_sigma``) the forward pass
  returns all channels: ε̂ and the variance values v of IDDPM's learned range, which the DDPM
  path (R1) trains with the hybrid loss (:mod:`hdit_edu.ddpm`). The EDM denoiser (R2) uses only
  the first ``model.out_channels_used`` (= ``in_channels``); the others stay untrained there.
* **Positions** come from :func:`hdit_edu.rope.sincos_pos_emb_2d` for any grid (also
  non-square), not a table fixed at the training size. That function puts the row code in the
  first half of the channels, DiT's ``np.meshgrid(grid_w, grid_h)`` puts the column code
  first — irrelevant for a model trained from scratch (swap the halves to load DiT weights).
* **Augmentation conditioning** (only when ``aug_dim > 0``): a zero-initialised linear map of
  the augmentation vector is added to the conditioning, so a fresh model equals the original.
  Set ``aug_dim = 0`` for exactly the original architecture.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configs import ModelConfig, check_grids, normalize_resolution, validate_config
from .diffusion import c_noise
from .layers import check_inputs, make_param_groups, run_layers, zero_init
from .rope import sincos_pos_emb_2d

# ----------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """DiT's (GLIDE's) sinusoidal timestep features, (N,) → (N, dim):

    ω_i = max_period^(−i / (dim/2)),   emb = [cos(t·ω), sin(t·ω)]   (cosines first)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs.to(t.device)[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the noise level (256) → Linear → SiLU → Linear (width)."""

    def __init__(self, width: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, width), nn.SiLU(), nn.Linear(width, width)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_dim))


class LabelEmbedder(nn.Module):
    """One embedding row per class plus one for the dropped label (index ``num_classes``)."""

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, width)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)


# ----------------------------------------------------------------------------------------------
# The DiT block (adaLN-Zero)
# ----------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x · (1 + scale) + shift, with (B, D) shift/scale broadcast over the tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class SelfAttention(nn.Module):
    """Standard multi-head self-attention (ViT layout): ``qkv`` with bias, softmax(QKᵀ/√d)V,
    ``proj`` with bias. The qkv features are ordered (3, heads, head_dim)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, head_dim)
        x = F.scaled_dot_product_attention(q, k, v)  # scale 1/√head_dim
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class MLP(nn.Module):
    """fc1 → GELU (tanh approximation) → fc2, with biases (DiT's ``Mlp``, ratio 4)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """A DiT block with adaLN-Zero (Fig. 4, right): the conditioning c predicts six vectors,

        shift₁, scale₁, gate₁, shift₂, scale₂, gate₂ = W·SiLU(c) + b    (W, b zero-initialised)
        x ← x + gate₁ · Attn(LN(x) · (1 + scale₁) + shift₁)
        x ← x + gate₂ · MLP (LN(x) · (1 + scale₂) + shift₂)

    LN has no affine parameters (eps 1e-6). The zero gates make a fresh block the identity.
    Compare :class:`hdit_edu.hourglass.TransformerLayer`: AdaRMSNorm (scale only, no shift, no
    gate), cosine-similarity attention with RoPE, GEGLU, zero-initialised output projections."""

    def __init__(self, width: int, heads: int, d_ff: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(width, d_ff)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(width, 6 * width)))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x


class FinalLayer(nn.Module):
    """adaLN (shift, scale) → Linear to p²·out_channels (both zero-initialised)."""

    def __init__(self, width: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = zero_init(nn.Linear(width, patch_size * patch_size * out_channels))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(width, 2 * width)))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class DiT(nn.Module):
    """DiT in pixel space, built from a :class:`~hdit_edu.configs.ModelConfig` with
    ``arch="dit"``: ``levels[0]`` gives depth, width, head_dim (heads = width / head_dim) and
    d_ff (None = 4·width, MLP ratio 4); ``patch_size``, ``in_channels``, ``out_channels``
    (None = in_channels; 2·in_channels = DiT's learned σ), ``num_classes`` and ``aug_dim`` are
    read; the hourglass fields (mapping, skip, ffn, pos_emb, attention kind) do not apply.

    ``forward(x, sigma, class_cond=None, aug_cond=None, timestep=None)`` is the inner network F
    of the EDM denoiser, with x (B, C, H, W) and σ (B,); it returns (B, out_channels, H, W),
    exactly zero at initialisation. ``timestep`` (B,): DiT's own DDPM step t (the DDPM path,
    :class:`hdit_edu.ddpm.DDPMDenoiser`), embedded instead of c_noise(σ). ``checkpointing`` (set by :func:`hdit_edu.models.set_checkpointing`):
    activation checkpointing of the blocks, as in :func:`~hdit_edu.layers.run_layers` (the
    blocks are DiT's one level)."""

    checkpointing: str = "none"

    def __init__(self, config: ModelConfig):
        super().__init__()
        validate_config(config, grids=False)  # the spec; the grid: on each input (forward)
        level = config.levels[0]
        self.config = config
        self.patch_size = p = config.patch_size
        self.in_channels = config.in_channels
        self.out_channels = config.out_channels or config.in_channels
        self.out_channels_used = config.in_channels  # the rest (if any): DiT's variance head
        self.num_classes = config.num_classes
        self.aug_dim = config.aug_dim
        self.width = width = level.width
        heads = width // level.head_dim
        d_ff = level.d_ff or 4 * width

        self.x_embedder = nn.Conv2d(config.in_channels, width, kernel_size=p, stride=p)
        self.t_embedder = TimestepEmbedder(width)
        self.y_embedder = LabelEmbedder(config.num_classes, width) if config.num_classes else None
        self.aug_embedder = nn.Linear(config.aug_dim, width, bias=False) if config.aug_dim else None
        self.blocks = nn.ModuleList([DiTBlock(width, heads, d_ff) for _ in range(level.depth)])
        self.final_layer = FinalLayer(width, p, self.out_channels)
        grid = [side // p for side in normalize_resolution(config.resolution)]  # (h, w) tokens
        self.register_buffer("pos_embed", sincos_pos_emb_2d(*grid, width), persistent=False)
        self.initialize_weights()

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """The fixed sin-cos table (h·w, width) for an h×w token grid (cached at the
        training grid, computed for any other)."""
        table = self.pos_embed
        if tuple(table.shape[:2]) != (h, w):
            table = sincos_pos_emb_2d(h, w, self.width).to(table.device)
        return table.reshape(h * w, self.width)

    def initialize_weights(self) -> None:
        """DiT's initialisation: Xavier-uniform linears with zero bias; the patch embedding
        initialised like a linear layer; N(0, 0.02) for the label table and the timestep MLP;
        adaLN modulations, the final linear (and our augmentation map) at zero (as their
        constructors already leave them, re-applied after the Xavier pass)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.x_embedder.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            zero_init(block.adaLN_modulation[-1])
        zero_init(self.final_layer.adaLN_modulation[-1])
        zero_init(self.final_layer.linear)
        if self.aug_embedder is not None:
            zero_init(self.aug_embedder)

    def param_groups(self, base_lr: float = 5e-4, mapping_lr_scale: float = 1 / 3) -> list[dict]:
        """AdamW groups as for HDiT (weight decay on the weight matrices of linear and conv
        layers only). DiT has no mapping network: the two ``mapping_*`` groups are empty and
        ``mapping_lr_scale`` has no effect."""
        return make_param_groups(self, base_lr, mapping_lr_scale)

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        class_cond: torch.Tensor | None = None,
        aug_cond: torch.Tensor | None = None,
        timestep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        sigma = check_inputs(self, x, sigma, class_cond, aug_cond)
        b, _, h, w = x.shape
        p = self.patch_size
        if not torch.jit.is_tracing():  # (a trace's sizes are tensors; its input was checked)
            check_grids(self.config, (h, w))  # shapes only: Python integers
        gh, gw = h // p, w // p

        # patchify: Conv2d(kernel p, stride p) → tokens (B, gh·gw, D), row-major, + positions
        x = self.x_embedder(x).flatten(2).transpose(1, 2)
        x = x + self.position_embedding(gh, gw).to(x.dtype)
        # conditioning c = t_emb(c_noise(σ) or DiT's step t) + y_emb(class) [+ aug]
        c = self.t_embedder(c_noise(sigma) if timestep is None else timestep.reshape(b))
        if self.y_embedder is not None:
            c = c + self.y_embedder(class_cond)
        if self.aug_embedder is not None and aug_cond is not None:
            c = c + self.aug_embedder(aug_cond.to(c.dtype))
        x = run_layers(self.blocks, x, c, checkpointing=self.checkpointing)
        x = self.final_layer(x, c)  # (B, T, p·p·C_out)
        # unpatchify: (B, gh, gw, p, p, C) → (B, C, gh·p, gw·p)
        x = x.reshape(b, gh, gw, p, p, self.out_channels)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(b, self.out_channels, gh * p, gw * p)
