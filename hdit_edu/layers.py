"""The building blocks of an HDiT layer (§4.2, Figures 4–5) and its mapping network.

* :func:`rms_norm` / :class:`RMSNorm` — the LLaMA-style norm the blocks use instead of LayerNorm.
* :class:`AdaRMSNorm` — RMSNorm whose per-channel output scale is *predicted from the
  conditioning* (class + noise level, embedded by the mapping network). Its projection starts at
  zero, so a fresh AdaRMSNorm is exactly an RMSNorm (scale 1). This replaces DiT's adaLN-Zero:
  there is no shift and no output gate (Fig. 4).
* :class:`FeedForward` — the pointwise MLP, GEGLU (§4.2 / Fig. 5, ablation step C, hidden 3·d)
  or plain GELU (steps A–B2, hidden 4·d), with its output projection initialised to zero.
* :class:`FourierFeatures` — random Fourier features that embed the noise level c_noise(σ)
  (and the augmentation vector).
* :class:`MappingNetwork` — RMSNorm'd GEGLU residual blocks that turn the summed embeddings into
  the conditioning vector every AdaRMSNorm reads.
* :func:`run_layers` — a stack of layers applied in order, with activation checkpointing
  (``torch.utils.checkpoint``, non-reentrant) per layer or for the whole stack.
* :func:`zero_init`, :func:`tag_module`, :func:`make_param_groups` — initialisation and the AdamW
  parameter groups of Table 6 (weight decay only on weight matrices, the mapping network at
  1/3 of the learning rate).

The constants and the order of operations follow the authors' reference implementation
(k-diffusion ``image_transformer_v2.py`` and ``layers.FourierFeatures``) so that its weights load
onto these modules and reproduce its outputs (see ``hdit_edu.interop``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from .env import values_on_host
from .kinds import CHECKPOINTING_KINDS, FFN_KINDS

# ----------------------------------------------------------------------------------------------
# Initialisation and parameter groups
# ----------------------------------------------------------------------------------------------


def zero_init(layer: nn.Module) -> nn.Module:
    """Set a layer's weight (and bias, if any) to zero and return it.

    HDiT zero-initialises the *output* projection of every residual branch (attention
    ``out_proj``, feed-forward ``down_proj``), the AdaRMSNorm conditioning projection, and the
    final unpatching projection: a fresh model is the identity on its residual stream and
    F(x, σ) = 0 (§4.2: "we do not employ an (adaptive) output gate, but initialize the output
    projections ... to zeros")."""
    nn.init.zeros_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


PARAM_TAGS = ("mapping", "no_wd")
# Layers whose ``weight`` is a weight matrix (weight decay applies; a conv kernel is one too).
WEIGHT_MATRIX_LAYERS = (nn.Linear, nn.Conv2d)


def tag_module(module: nn.Module, *tags: str) -> nn.Module:
    """Attach optimiser tags to a module; every parameter below it inherits them.

    ``"mapping"``: trained at ``mapping_lr_scale`` × the base learning rate (the mapping network
    and the AdaRMSNorm projections that read its output, as in k-diffusion).
    ``"no_wd"``: exempt a Linear's weight from weight decay.

    Tags live on modules (not on parameter objects) so they survive ``copy.deepcopy`` (EMA).
    """
    unknown = set(tags) - set(PARAM_TAGS)
    if unknown:
        raise ValueError(f"unknown parameter tags {sorted(unknown)}; allowed: {PARAM_TAGS}")
    module._hdit_tags = getattr(module, "_hdit_tags", frozenset()) | frozenset(tags)
    return module


def param_tags(model: nn.Module) -> dict[str, frozenset[str]]:
    """The tags of every parameter of ``model``, by name.

    A parameter carries the tags of all the modules on its path, plus ``"wd"`` when it is the
    ``weight`` of an ``nn.Linear`` / ``nn.Conv2d`` (a weight matrix) whose path holds no
    ``"no_wd"``. Norm scales, the attention ``scale``, lerp coefficients, embeddings and biases
    get no weight decay — the rule of k-diffusion's ``apply_wd`` (which it applies to every
    Linear except the time/augmentation input projections, tagged ``"no_wd"`` here)."""
    tags: dict[str, frozenset[str]] = {}

    def visit(module: nn.Module, prefix: str, inherited: frozenset[str]) -> None:
        here = inherited | getattr(module, "_hdit_tags", frozenset())
        for name, _ in module.named_parameters(recurse=False):
            t = set(here)
            if (
                isinstance(module, WEIGHT_MATRIX_LAYERS)
                and name == "weight"
                and "no_wd" not in here
            ):
                t.add("wd")
            t.discard("no_wd")
            tags[prefix + name] = frozenset(t)
        for child_name, child in module.named_children():
            visit(child, f"{prefix}{child_name}.", here)

    visit(model, "", frozenset())
    return tags


def make_param_groups(
    model: nn.Module, base_lr: float = 5e-4, mapping_lr_scale: float = 1 / 3
) -> list[dict]:
    """AdamW parameter groups (Table 6): four groups, always in this order —

    ``wd`` (weight matrices, base LR, the optimiser's weight decay), ``no_wd`` (everything else,
    base LR, weight decay 0), ``mapping_wd`` and ``mapping_no_wd`` (the same at
    ``base_lr · mapping_lr_scale``). Groups may be empty (e.g. a model without a mapping
    network); each carries a ``"name"``."""
    tags = param_tags(model)
    named = dict(model.named_parameters())
    groups = []
    for name, mapping, wd in (
        ("wd", False, True),
        ("no_wd", False, False),
        ("mapping_wd", True, True),
        ("mapping_no_wd", True, False),
    ):
        params = [
            p
            for n, p in named.items()
            if ("mapping" in tags[n]) == mapping and ("wd" in tags[n]) == wd
        ]
        group = {
            "name": name,
            "params": params,
            "lr": base_lr * (mapping_lr_scale if mapping else 1),
        }
        if not wd:
            group["weight_decay"] = 0.0
        groups.append(group)
    return groups


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension (Zhang & Sennrich 2019):

        y = x · scale / sqrt(mean(x², dim=-1) + eps)

    The statistics are computed in (at least) float32 even under bf16 autocast, and the product
    is cast back to ``x``'s dtype — the same order of operations as k-diffusion."""
    dtype = torch.promote_types(torch.promote_types(x.dtype, scale.dtype), torch.float32)
    mean_sq = torch.mean(x.to(dtype) ** 2, dim=-1, keepdim=True)
    factor = scale.to(dtype) * torch.rsqrt(mean_sq + eps)
    return x * factor.to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm with a learned per-channel ``scale`` (init 1), no bias."""

    def __init__(self, shape: int | tuple[int, ...], eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(shape))

    def extra_repr(self) -> str:
        return f"shape={tuple(self.scale.shape)}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.scale, self.eps)


class AdaRMSNorm(nn.Module):
    """Adaptive RMSNorm (§4.2, Fig. 4): the scale is predicted from the conditioning vector,

        y = rms_norm(x, scale = 1 + W·cond),   W ∈ R^{width × cond_width}, W₀ = 0,

    so at initialisation it *is* an RMSNorm with unit scale. ``x`` is channels-last
    (B, ..., width), ``cond`` is (B, cond_width); the scale broadcasts over the tokens.
    ``linear`` is tagged ``"mapping"``: it is trained at the mapping network's learning rate."""

    def __init__(self, width: int, cond_width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.linear = tag_module(zero_init(nn.Linear(cond_width, width, bias=False)), "mapping")

    def extra_repr(self) -> str:
        return f"eps={self.eps}"

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale = self.linear(cond) + 1  # (B, width)
        scale = scale.view(scale.shape[0], *([1] * (x.ndim - 2)), scale.shape[-1])
        return rms_norm(x, scale, self.eps)


# ----------------------------------------------------------------------------------------------
# Feed-forward
# ----------------------------------------------------------------------------------------------


def _check_ffn(ffn: str) -> None:
    if ffn not in FFN_KINDS:
        raise ValueError(f"unknown FFN kind {ffn!r}; allowed: {', '.join(FFN_KINDS)}")


def default_d_ff(width: int, ffn: str) -> int:
    """The FFN hidden size when a config leaves it open: 3·d for GEGLU (§5.2 step C keeps the
    parameter count of a 4·d GELU MLP, as LLaMA does), 4·d for GELU (``ffn``: one of
    :data:`~hdit_edu.kinds.FFN_KINDS`)."""
    _check_ffn(ffn)
    return 3 * width if ffn == "geglu" else 4 * width


def geglu(h: torch.Tensor) -> torch.Tensor:
    """GEGLU (Shazeer 2020): split the up-projection into value and gate halves,

        [a, b] = h,   GEGLU = a ⊙ GELU(b)

    (first half value, second half gate — k-diffusion's chunk order). The modulation comes
    from the data itself, not from the conditioning (Fig. 5)."""
    value, gate = h.chunk(2, dim=-1)
    return value * F.gelu(gate)


class FeedForward(nn.Module):
    """The pointwise feed-forward branch (Fig. 5), without norm and residual; ``kind`` is the
    FFN kind (:data:`~hdit_edu.kinds.FFN_KINDS`, a config's ``ffn``):

        geglu:  y = W_down · dropout(GEGLU(W_up x)),   W_up: width → 2·d_ff
        gelu:   y = W_down · dropout(GELU(W_up x)),    W_up: width → d_ff

    No biases; ``down_proj`` starts at zero (no output gate, unlike DiT)."""

    def __init__(self, width: int, d_ff: int, kind: str = "geglu", dropout: float = 0.0):
        super().__init__()
        _check_ffn(kind)
        self.kind = kind
        up_features = 2 * d_ff if kind == "geglu" else d_ff
        self.up_proj = nn.Linear(width, up_features, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.down_proj = zero_init(nn.Linear(d_ff, width, bias=False))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up_proj(x)
        h = geglu(h) if self.kind == "geglu" else F.gelu(h)
        return self.down_proj(self.dropout(h))


# ----------------------------------------------------------------------------------------------
# Conditioning: Fourier features and the mapping network
# ----------------------------------------------------------------------------------------------


class FourierFeatures(nn.Module):
    """Random Fourier features (Tancik et al. 2020) of a low-dimensional input:

        f = 2π · x Bᵀ,   B ~ N(0, std²) ∈ R^{out/2 × in} (fixed buffer ``weight``),
        FourierFeatures(x) = [cos f, sin f]   (cosines first).

    HDiT embeds the noise level c_noise(σ) = log(σ)/4 with ``FourierFeatures(1, width)`` and
    the augmentation vector with ``FourierFeatures(aug_dim, width)``."""

    def __init__(self, in_features: int, out_features: int, std: float = 1.0):
        super().__init__()
        if out_features % 2:
            raise ValueError(f"FourierFeatures needs an even out_features, got {out_features}")
        self.register_buffer("weight", torch.randn(out_features // 2, in_features) * std)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={2 * self.weight.shape[0]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x @ self.weight.T
        return torch.cat([f.cos(), f.sin()], dim=-1)


class MappingBlock(nn.Module):
    """One residual block of the mapping network: x + FFN_geglu(RMSNorm(x))."""

    def __init__(self, width: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.norm = RMSNorm(width)
        self.ffn = FeedForward(width, d_ff, kind="geglu", dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(self.norm(x))


class MappingNetwork(nn.Module):
    """The mapping network (§4.2, Fig. 3): the summed class / noise-level / augmentation
    embeddings go through

        cond = RMSNorm_out( blocks( RMSNorm_in(e) ) ),   block: x ← x + FFN_geglu(RMSNorm(x)),

    and every AdaRMSNorm of the backbone reads ``cond``. The whole module is tagged
    ``"mapping"`` (its learning rate is scaled by ``mapping_lr_scale``, Table 6 / k-diffusion)."""

    def __init__(self, depth: int, width: int, d_ff: int | None = None, dropout: float = 0.0):
        super().__init__()
        d_ff = default_d_ff(width, "geglu") if d_ff is None else d_ff
        self.in_norm = RMSNorm(width)
        self.blocks = nn.ModuleList([MappingBlock(width, d_ff, dropout) for _ in range(depth)])
        self.out_norm = RMSNorm(width)
        tag_module(self, "mapping")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_norm(x)
        for block in self.blocks:
            x = block(x)
        return self.out_norm(x)


# ----------------------------------------------------------------------------------------------
# Conditioning inputs
# ----------------------------------------------------------------------------------------------


def check_class_labels(class_cond: torch.Tensor, num_classes: int) -> None:
    """Raise ``ValueError`` unless every label lies in [0, num_classes] (``num_classes`` is the
    *dropped* class, classifier-free guidance's unconditional embedding). This reads the
    values: call it where labels enter (the trainer's batch, :func:`hdit_edu.sampling.sample`);
    a forward pass calls it only for labels already on the host (:func:`check_conditioning`)."""
    if class_cond.numel() == 0:
        return
    lo, hi = int(class_cond.min()), int(class_cond.max())
    if lo < 0 or hi > num_classes:
        raise ValueError(
            f"class_cond values must lie in [0, {num_classes}] ({num_classes} = dropped "
            f"class), got min {lo}, max {hi}"
        )


def check_conditioning(
    batch: int,
    sigma: torch.Tensor,
    class_cond: torch.Tensor | None,
    aug_cond: torch.Tensor | None,
    num_classes: int,
    aug_dim: int,
) -> torch.Tensor:
    """Check the conditioning of a forward pass (clear errors before any compute) and return
    σ as a (B,) tensor (a 0-dim σ is broadcast over the batch).

    ``class_cond``: integer tensor (B,) with values in [0, num_classes] — index
    ``num_classes`` is the *dropped* class (classifier-free guidance's unconditional
    embedding); ``None`` for an unconditional model (num_classes = 0).
    ``aug_cond``: (B, aug_dim) or None (= no augmentation, all zeros).

    Shapes and dtypes are always checked; the label *values* only when reading them is free
    (:func:`hdit_edu.env.values_on_host`): on an accelerator it would stall every forward pass
    on a host synchronisation, so there the labels are checked where they enter."""
    if not torch.is_tensor(sigma) or sigma.shape not in ((), (batch,)):
        raise ValueError(f"expected sigma as a tensor of shape ({batch},), got {sigma!r:.80}")
    sigma = sigma.expand(batch)
    if num_classes == 0:
        if class_cond is not None:
            raise ValueError("class_cond given to an unconditional model (num_classes=0)")
    elif class_cond is None:
        raise ValueError(
            f"class_cond is required: the model is class-conditional with {num_classes} classes "
            f"(pass index {num_classes} for the dropped / unconditional class)"
        )
    elif class_cond.shape != (batch,) or class_cond.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"expected class_cond as an integer tensor of shape ({batch},), "
            f"got {class_cond.dtype} {tuple(class_cond.shape)}"
        )
    elif values_on_host(class_cond):
        check_class_labels(class_cond, num_classes)
    if aug_cond is not None and (aug_dim == 0 or tuple(aug_cond.shape) != (batch, aug_dim)):
        raise ValueError(
            f"aug_cond: expected shape ({batch}, {aug_dim}) or None, got {tuple(aug_cond.shape)}"
            + (" (this model has aug_dim=0: no augmentation conditioning)" if aug_dim == 0 else "")
        )
    return sigma


def check_inputs(
    model: nn.Module,
    x: torch.Tensor,
    sigma: torch.Tensor,
    class_cond: torch.Tensor | None,
    aug_cond: torch.Tensor | None,
) -> torch.Tensor:
    """Check the inputs of ``model.forward`` for the inner network F (HDiT and DiT alike):
    images x of shape (B, model.in_channels, H, W), then their conditioning for
    ``model.num_classes`` / ``model.aug_dim`` (:func:`check_conditioning`). Returns σ as a (B,)
    tensor. Each model checks H and W against its own patch / level sizes."""
    if x.ndim != 4 or x.shape[1] != model.in_channels:
        raise ValueError(
            f"expected x of shape (B, {model.in_channels}, H, W), got {tuple(x.shape)}"
        )
    return check_conditioning(
        x.shape[0], sigma, class_cond, aug_cond, model.num_classes, model.aug_dim
    )


# ----------------------------------------------------------------------------------------------
# Activation checkpointing
# ----------------------------------------------------------------------------------------------


def check_checkpointing(kind: str) -> str:
    if kind not in CHECKPOINTING_KINDS:
        raise ValueError(f"checkpointing {kind!r} is not one of {CHECKPOINTING_KINDS}")
    return kind


def _run_in_order(layers, x, *args):
    for layer in layers:
        x = layer(x, *args)
    return x


def run_layers(layers, x: torch.Tensor, *args, checkpointing: str = "none") -> torch.Tensor:
    """``layer_n(… layer_1(x, *args) …, *args)``, with activation checkpointing when gradients
    are recorded: ``"layer"`` keeps only each layer's input and recomputes the layer in the
    backward pass, ``"level"`` keeps only the stack's input and recomputes the whole stack,
    ``"none"`` keeps every activation. Non-reentrant ``torch.utils.checkpoint``, which
    restores the RNG state, so dropout masks (and so the gradients) are those of ``"none"``."""
    if checkpointing == "none" or not torch.is_grad_enabled():
        return _run_in_order(layers, x, *args)
    if checkpointing == "level":
        return torch.utils.checkpoint.checkpoint(
            _run_in_order, layers, x, *args, use_reentrant=False
        )
    for layer in layers:
        x = torch.utils.checkpoint.checkpoint(layer, x, *args, use_reentrant=False)
    return x
