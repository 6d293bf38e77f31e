"""The hourglass: token merge / split, skip merges and the HDiT model (§4.1, Fig. 3, Table 2).

An HDiT image goes through (Fig. 3):

1. **Patching** — :class:`TokenMerge` with patch size p (4 in the paper): the image
   (B, C, H, W) becomes a grid of (H/p)×(W/p) tokens of ``levels[0].width`` channels.
2. **Levels going down** — at level i, ``depth_i`` transformer layers at width ``width_i``;
   their output is kept as the *skip* of that level, then a 2×2 :class:`TokenMerge` halves the
   grid and maps width_i → width_{i+1}.
3. **The middle level** (the innermost, lowest resolution; global attention in the paper).
4. **Levels going up** — a 2×2 :class:`TokenSplit` doubles the grid (width_{i+1} → width_i)
   and *merges the skip* of level i (:func:`merge_skip`: learnable lerp, eq. 6 — or add / concat,
   Table 2), then ``depth_i`` more transformer layers.
5. **Unpatching** — RMSNorm, then a :class:`TokenSplit` with patch size p back to pixels, its
   projection initialised to zero, so that a fresh model returns F = 0.

Token positions follow the tokens: the (h, w, 2) grid of :func:`hdit_edu.rope.make_axial_pos`
is averaged over the same 2×2 groups (:func:`hdit_edu.rope.downscale_pos`) at every merge.
The conditioning — noise level c_noise(σ) = log(σ)/4 (Fourier features), class (with an extra
"dropped" class for classifier-free guidance) and, optionally, the augmentation vector — is
summed and turned into one vector by the mapping network; every AdaRMSNorm reads it.

Fidelity to the reference. Modules, constants, initialisation and the order of operations follow
the authors' k-diffusion ``ImageTransformerDenoiserModelV2`` (``image_transformer_v2.py``), so
that its weights map onto ours and give the same outputs. Two layouts differ, on purpose:

* **Token merge / split channel order.** We use ``nn.PixelUnshuffle`` / ``nn.PixelShuffle``,
  whose channel order is ``(c, dy, dx)``; k-diffusion's rearrange uses ``(dy, dx, c)``. A
  converter permutes the projections (p = patch size, C = the narrow side's channels):
  merge ``W_ours = W_kd.view(out, p, p, C).permute(0, 3, 1, 2).reshape(out, C·p²)``;
  split ``W_ours = W_kd.view(p, p, C, in).permute(2, 0, 1, 3).reshape(C·p², in)``.
* **Lerp coefficient.** We learn f of eq. 6, the weight of the *skip*:
  ``x = f·skip + (1 − f)·upsampled``. k-diffusion's ``fac`` weights the *upsampled* branch
  (``torch.lerp(skip, x, fac)``), so ``f = 1 − fac`` (both start at 0.5).

Parameter names differ too (``norm1``/``attn``/``norm2``/``ffn`` per layer; the skip merge inside
the split); ``hdit_edu.interop`` holds the mapping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention
from .configs import ModelConfig, check_grids, normalize_resolution, token_grids, validate_config
from .diffusion import c_noise
from .kinds import ADDITIVE_POS_EMBS, ROPE_POS_EMBS, SKIP_KINDS
from .layers import (
    AdaRMSNorm,
    FeedForward,
    FourierFeatures,
    MappingNetwork,
    RMSNorm,
    check_inputs,
    default_d_ff,
    make_param_groups,
    run_layers,
    tag_module,
    zero_init,
)
from .rope import (
    AdditivePosEmb,
    check_position_reading,
    downscale_pos,
    rope_freq_scale,
    rope_turns,
    token_positions,
)

# ----------------------------------------------------------------------------------------------
# Token merge and split (§4.1)
# ----------------------------------------------------------------------------------------------


def pixel_unshuffle_tokens(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Group each p×p block of channels-last tokens into one token:
    (B, H, W, C) → (B, H/p, W/p, C·p²), channel order (c, dy, dx) — ``nn.PixelUnshuffle``
    applied to the channels-first view."""
    return F.pixel_unshuffle(x.movedim(-1, 1), patch_size).movedim(1, -1)


def pixel_shuffle_tokens(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The inverse of :func:`pixel_unshuffle_tokens`: (B, h, w, C·p²) → (B, h·p, w·p, C)."""
    return F.pixel_shuffle(x.movedim(-1, 1), patch_size).movedim(1, -1)


class TokenMerge(nn.Module):
    """Downsampling: PixelUnshuffle p×p, then a linear projection (no bias),

        (B, H, W, in) → (B, H/p, W/p, p²·in) → (B, H/p, W/p, out).

    With p = 2 it merges 2×2 tokens between levels; with p = ``patch_size`` it patches the
    image (``HDiT.patch_in``)."""

    def __init__(self, in_features: int, out_features: int, patch_size: int = 2):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_features * patch_size**2, out_features, bias=False)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_unshuffle_tokens(x, self.patch_size))


def merge_skip(
    kind: str | None,
    upsampled: torch.Tensor,
    skip: torch.Tensor | None,
    f: torch.Tensor | None = None,
    proj: nn.Module | None = None,
) -> torch.Tensor:
    """Merge the skip connection of a level into the upsampled branch (Table 2):

    * ``"lerp"`` (ours, eq. 6):  x = f·x_skip + (1 − f)·x_upsampled, learnable f;
    * ``"add"``  (Hourglass):    x = x_skip + x_upsampled;
    * ``"concat"`` (U-Net):      x = W·[x_upsampled, x_skip], a pointwise projection 2d → d;
    * ``None``: no skip (the final unpatching).
    """
    if kind is None:
        return upsampled
    if kind == "lerp":
        # torch.lerp(a, b, f) = a + f·(b − a): exactly x_skip at f = 1, x_upsampled at f = 0.
        return torch.lerp(upsampled, skip, f.to(upsampled.dtype))
    if kind == "add":
        return upsampled + skip
    if kind == "concat":
        return proj(torch.cat([upsampled, skip], dim=-1))
    raise ValueError(f"unknown skip kind {kind!r}; allowed: {SKIP_KINDS} or None")


class TokenSplit(nn.Module):
    """Upsampling: a linear projection (no bias), then PixelShuffle p×p, then the skip merge,

        (B, h, w, in) → (B, h, w, p²·out) → (B, h·p, w·p, out) → merge_skip(·, skip).

    ``skip``: ``"lerp"`` (parameter ``f`` (1,), init 0.5), ``"add"``, ``"concat"`` (parameter
    ``skip_proj``: Linear 2·out → out, no bias) or ``None`` (no skip input; the unpatching)."""

    def __init__(
        self, in_features: int, out_features: int, patch_size: int = 2, skip: str | None = "lerp"
    ):
        super().__init__()
        if skip is not None and skip not in SKIP_KINDS:
            raise ValueError(f"unknown skip kind {skip!r}; allowed: {SKIP_KINDS} or None")
        self.patch_size = patch_size
        self.skip = skip
        self.proj = nn.Linear(in_features, out_features * patch_size**2, bias=False)
        self.f = nn.Parameter(torch.full((1,), 0.5)) if skip == "lerp" else None
        self.skip_proj = (
            nn.Linear(2 * out_features, out_features, bias=False) if skip == "concat" else None
        )

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, skip={self.skip!r}"

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if (skip is None) != (self.skip is None):
            raise ValueError(
                f"TokenSplit(skip={self.skip!r}) "
                + ("needs a skip tensor" if skip is None else "takes no skip tensor")
            )
        upsampled = pixel_shuffle_tokens(self.proj(x), self.patch_size)
        return merge_skip(self.skip, upsampled, skip, self.f, self.skip_proj)


# ----------------------------------------------------------------------------------------------
# Transformer layers and levels (§4.2, Fig. 4)
# ----------------------------------------------------------------------------------------------


class TransformerLayer(nn.Module):
    """One HDiT layer (Fig. 4, left), pre-norm with AdaRMSNorm and no output gates:

        x ← x + Attention(AdaRMSNorm₁(x, cond), pos)      (skipped when ``attention`` is None)
        x ← x + FeedForward(AdaRMSNorm₂(x, cond))

    ``attention``: the keyword arguments of :class:`hdit_edu.attention.Attention` (kind,
    head_dim, kernel_size, window_size, shift, rope, backend), or ``None`` for an FFN-only
    layer (attention kind ``"none"``). ``ffn``: the FFN kind (``"geglu"`` or ``"gelu"``)."""

    def __init__(
        self,
        width: int,
        d_ff: int,
        cond_width: int,
        attention: dict | None,
        ffn: str = "geglu",
        dropout: float = 0.0,
    ):
        super().__init__()
        if attention is not None:
            self.norm1 = AdaRMSNorm(width, cond_width)
            self.attn = Attention(width, dropout=dropout, **attention)
        else:
            self.norm1 = self.attn = None
        self.norm2 = AdaRMSNorm(width, cond_width)
        self.ffn = FeedForward(width, d_ff, kind=ffn, dropout=dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = x + self.attn(self.norm1(x, cond), pos)
        return x + self.ffn(self.norm2(x, cond))


class Level(nn.ModuleList):
    """The transformer layers of one level, applied in order; ``checkpointing`` (``"none"``,
    ``"level"``, ``"layer"``; set by :func:`hdit_edu.models.set_checkpointing`) as in
    :func:`~hdit_edu.layers.run_layers`."""

    checkpointing: str = "none"

    def forward(self, x: torch.Tensor, pos: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return run_layers(self, x, pos, cond, checkpointing=self.checkpointing)


# ----------------------------------------------------------------------------------------------
# The model (§4.1, Fig. 3)
# ----------------------------------------------------------------------------------------------


def level_rope_scales(config: ModelConfig) -> list[float]:
    """Each level's factor on RoPE's frequencies (:func:`hdit_edu.rope.rope_freq_scale` at its
    training token grid): all 1.0 for ``rope_freqs = "image"`` (no grid is read)."""
    if config.rope_freqs == "image":
        return [1.0] * len(config.levels)
    return [rope_freq_scale(config.rope_freqs, g) for g in token_grids(config)]


def level_rope_turns(config: ModelConfig, resolution=None, reading: str = "normalised") -> list:
    """RoPE's rotation per token at every level of ``config`` at ``resolution`` (None = its
    training resolution) under a position ``reading``: ``[(grid, turns, aliased), …]``,
    outermost first, ``turns`` in units of π per ``(head, frequency)``
    (:func:`hdit_edu.rope.rope_turns`; the frequencies scaled as the model scales them)."""
    train, grids = token_grids(config), check_grids(config, resolution)
    rows = []
    for level, grid, train_grid in zip(config.levels, grids, train):
        turns, aliased = rope_turns(
            level.head_dim,
            level.width // level.head_dim,
            grid,
            rope_freqs=config.rope_freqs,
            train_grid=train_grid,
            reading=reading,
        )
        rows.append((grid, turns, aliased))
    return rows


class HDiT(nn.Module):
    """The Hourglass Diffusion Transformer — the inner network F of the EDM denoiser (eq. 4).

    Built from a :class:`~hdit_edu.configs.ModelConfig`: ``levels`` (outermost first; the last
    one is the middle level), ``mapping``, ``patch_size``, ``in_channels``, ``out_channels``,
    ``num_classes``, ``aug_dim``, ``ffn`` (FFN activation for every level), ``pos_emb``
    (``"rope"`` in the attention, ``"additive"``: a learned table added after patching,
    sized for the token grid of ``resolution`` = n or (H, W), or ``"rope+additive"``: both),
    ``rope_freqs`` (RoPE's frequency range, :func:`level_rope_scales`), ``skip`` (how the up
    levels merge their skips).

    ``forward(x, sigma, class_cond=None, aug_cond=None)``: x (B, C, H, W), σ (B,), class_cond
    (B,) in [0, num_classes] (``num_classes`` = the dropped class), aug_cond (B, aug_dim) or
    None (zeros). Returns (B, out_channels, H, W); exactly 0 at initialisation. H and W must be
    divisible by ``patch_size · 2^(levels − 1)``.

    ``attention_backend`` picks the neighborhood attention backend (see
    :mod:`hdit_edu.attention`; ``"auto"`` by default).
    """

    def __init__(self, config: ModelConfig, attention_backend: str = "auto"):
        super().__init__()
        # The whole spec, before any parameter is allocated; the token grids are checked on
        # the size of each input (forward), the one size-dependent check.
        validate_config(config, grids=False)
        self.config = config
        levels, mapping = config.levels, config.mapping
        self.patch_size = config.patch_size
        self.in_channels = config.in_channels
        self.out_channels = config.out_channels or config.in_channels
        self.out_channels_used = config.in_channels
        self.num_classes = config.num_classes
        self.aug_dim = config.aug_dim

        # Patching (+ the additive position table of ablation steps A–C)
        self.patch_in = TokenMerge(config.in_channels, levels[0].width, config.patch_size)
        grid = [side // config.patch_size for side in normalize_resolution(config.resolution)]
        self.pos_emb = (
            AdditivePosEmb(*grid, levels[0].width)
            if config.pos_emb in ADDITIVE_POS_EMBS
            else None
        )
        # How positions are read on another grid than this training one (rope.py, issue 19):
        # "normalised" (default; training is unaffected) | "grid" | "fixed". Sampling option,
        # checked when set (the property below), not in forward.
        self.train_grid = tuple(grid)
        self.position_reading = "normalised"

        # Conditioning: noise level, augmentation, class → mapping network
        width = mapping.width
        self.time_emb = FourierFeatures(1, width)
        self.time_in_proj = tag_module(nn.Linear(width, width, bias=False), "no_wd")
        self.aug_emb = FourierFeatures(config.aug_dim, width) if config.aug_dim else None
        self.aug_in_proj = (
            tag_module(nn.Linear(width, width, bias=False), "no_wd") if config.aug_dim else None
        )
        self.class_emb = nn.Embedding(config.num_classes + 1, width) if config.num_classes else None
        self.mapping = MappingNetwork(mapping.depth, width, mapping.d_ff, mapping.dropout)

        # Levels: down / middle / up, and the merges and splits between them
        self.down_levels, self.up_levels = nn.ModuleList(), nn.ModuleList()
        rope_scales = level_rope_scales(config)
        for i, level in enumerate(levels):
            make_layer = self._layer_factory(
                level, config, width, attention_backend, rope_scales[i]
            )
            if i < len(levels) - 1:
                # The up level continues the layer count (shifted windows alternate across both).
                self.down_levels.append(Level([make_layer(j) for j in range(level.depth)]))
                self.up_levels.append(
                    Level([make_layer(level.depth + j) for j in range(level.depth)])
                )
            else:
                self.mid_level = Level([make_layer(j) for j in range(level.depth)])
        self.merges = nn.ModuleList(
            [TokenMerge(a.width, b.width) for a, b in zip(levels[:-1], levels[1:])]
        )
        self.splits = nn.ModuleList(
            [
                TokenSplit(b.width, a.width, skip=config.skip)
                for a, b in zip(levels[:-1], levels[1:])
            ]
        )

        # Unpatching, zero-initialised: F(x, σ) = 0 at initialisation
        self.out_norm = RMSNorm(levels[0].width)
        self.patch_out = TokenSplit(
            levels[0].width, self.out_channels, config.patch_size, skip=None
        )
        zero_init(self.patch_out.proj)

    @staticmethod
    def _layer_factory(level, config: ModelConfig, cond_width: int, backend: str, rope_scale=1.0):
        """``index → TransformerLayer`` for one level. Layer ``index`` of a shifted-window level
        shifts its windows by ``window_size // 2`` when ``index`` is odd (Swin's alternation)."""
        d_ff = level.d_ff or default_d_ff(level.width, config.ffn)

        def make_layer(index: int) -> TransformerLayer:
            attention = None
            if level.attention != "none":
                attention = dict(
                    head_dim=level.head_dim,
                    kind=level.attention,
                    kernel_size=level.kernel_size,
                    window_size=level.window_size,
                    shift=level.window_size // 2 if index % 2 == 1 else 0,
                    rope=config.pos_emb in ROPE_POS_EMBS,
                    rope_scale=rope_scale,
                    backend=backend,
                )
            return TransformerLayer(
                level.width, d_ff, cond_width, attention, config.ffn, level.dropout
            )

        return make_layer

    def param_groups(self, base_lr: float = 5e-4, mapping_lr_scale: float = 1 / 3) -> list[dict]:
        """AdamW groups (Table 6): weight decay on weight matrices only; the mapping network and
        the AdaRMSNorm projections at ``mapping_lr_scale`` × ``base_lr``. See
        :func:`hdit_edu.layers.make_param_groups`."""
        return make_param_groups(self, base_lr, mapping_lr_scale)

    @property
    def position_reading(self) -> str:
        """How positions are read on a grid other than the training one (one of
        :data:`hdit_edu.rope.POSITION_READINGS`; see :mod:`hdit_edu.rope`), checked when set:
        the forward pass reads it unchecked. At the training grid every reading gives the
        same, bit-identical, positions."""
        return self._position_reading

    @position_reading.setter
    def position_reading(self, reading: str) -> None:
        self._position_reading = check_position_reading(reading)

    def set_position_reading(self, reading: str) -> None:
        """Set :attr:`position_reading` (checked: an error naming ``reading`` and the allowed
        readings)."""
        self.position_reading = reading

    def grid_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """The token grid of every level for an input of ``height × width`` pixels, checked
        against the kernels and windows (:func:`hdit_edu.configs.check_grids`)."""
        return check_grids(self.config, (height, width))

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        class_cond: torch.Tensor | None = None,
        aug_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        sigma = check_inputs(self, x, sigma, class_cond, aug_cond)
        if not torch.jit.is_tracing():  # (a trace's sizes are tensors; its input was checked)
            check_grids(self.config, (x.shape[2], x.shape[3]))  # shapes only: Python integers

        # Patching: (B, C, H, W) → tokens (B, H/p, W/p, width_0)
        x = self.patch_in(x.movedim(1, -1))
        reading = self.position_reading  # checked when set
        if self.pos_emb is not None:
            x = self.pos_emb(x, reading)
        pos = token_positions(x.shape[1], x.shape[2], self.train_grid, reading, device=x.device)

        # Mapping network: cond = M(W_t·FF(c_noise(σ)) + W_a·FF(aug) + E[class])
        dtype = self.time_emb.weight.dtype
        emb = self.time_in_proj(self.time_emb(c_noise(sigma).to(dtype)[:, None]))
        if self.aug_emb is not None:
            if aug_cond is None:
                aug_cond = x.new_zeros(x.shape[0], self.aug_dim, dtype=dtype)
            emb = emb + self.aug_in_proj(self.aug_emb(aug_cond.to(dtype)))
        if self.class_emb is not None:
            emb = emb + self.class_emb(class_cond)
        cond = self.mapping(emb)

        # The hourglass: down (keeping skips and positions), middle, up (merging the skips)
        skips, poses = [], []
        for down_level, merge in zip(self.down_levels, self.merges):
            x = down_level(x, pos, cond)
            skips.append(x)
            poses.append(pos)
            x = merge(x)
            pos = downscale_pos(pos)
        x = self.mid_level(x, pos, cond)
        for up_level, split, skip, pos in reversed(
            list(zip(self.up_levels, self.splits, skips, poses))
        ):
            x = split(x, skip)
            x = up_level(x, pos, cond)

        # Unpatching: tokens → (B, C_out, H, W)
        x = self.patch_out(self.out_norm(x))
        return x.movedim(-1, 1)
