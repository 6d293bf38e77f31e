"""Interoperability with the authors' reference implementation, k-diffusion's
``image_transformer_v2`` (``ImageTransformerDenoiserModelV2``, crowsonkb/k-diffusion).

A model trained with k-diffusion opens here — to study it in the notebooks and sample from it —
and an hdit-edu model opens in k-diffusion. Three things are converted:

1. **The config** (:func:`config_from_k_diffusion`, :func:`config_to_k_diffusion`). A
   k-diffusion JSON config has a ``"model"`` section (``type: image_transformer_v2``,
   ``patch_size``, ``depths``, ``widths``, ``d_ffs``, ``self_attns``, ``dropout_rate``,
   ``mapping_*``, ``sigma_data``, loss and σ-density options), a ``"dataset"`` section (class
   count, conditioning dropout) and optimiser / EMA sections. k-diffusion fills missing values
   from defaults in ``k_diffusion/config.py``; :func:`k_diffusion_defaults` applies the same
   defaults (FFN hidden 3·width, mapping network width 256 / depth 2 / hidden 3·width, 7×7
   neighborhood attention with head dim 64 at every level but a global innermost one, no
   dropout, σ_data 1, …). Options hdit-edu cannot represent raise a ``ValueError`` naming them.

2. **The parameter names** (:func:`k_diffusion_names`): one table, built from a model config,
   pairs every tensor of the reference model with its hdit-edu counterpart — parameters *and*
   buffers: the random Fourier-feature matrices of the noise-level and augmentation embeddings
   are buffers drawn at random for every instance, so they must travel with the weights (the
   RoPE frequencies are buffers too; they are deterministic but converted all the same). Per
   transformer layer (k-diffusion → hdit-edu)::

       self_attn.norm.linear.weight  → norm1.linear.weight      (AdaRMSNorm before attention)
       self_attn.{qkv_proj, out_proj}.weight, self_attn.scale, self_attn.pos_emb.freqs
                                     → attn.{…}                 (same layout: "(t heads d)")
       ff.norm.linear.weight         → norm2.linear.weight      (AdaRMSNorm before the FFN)
       ff.{up_proj, down_proj}.weight → ffn.{…}
       mapping.blocks.i.{up,down}_proj.weight → mapping.blocks.i.ffn.{…}

   Everything else keeps its name (``patch_in``, ``time_emb``, ``time_in_proj``, ``aug_emb``,
   ``aug_in_proj``, ``class_emb``, ``mapping.{in,out}_norm``, ``down_levels`` / ``mid_level`` /
   ``up_levels``, ``merges``, ``splits``, ``out_norm``, ``patch_out``).

3. **Two layouts** that differ on purpose (see :mod:`hdit_edu.hourglass`):

   * *Token merge / split channel order.* k-diffusion groups a p×p patch as ``(dy, dx, c)``
     (``einops "(h nh) (w nw) e -> h w (nh nw e)"``), hdit-edu as ``nn.PixelUnshuffle`` does,
     ``(c, dy, dx)``. The columns of a merge projection (``patch_in``, ``merges``) and the rows
     of a split projection (``splits``, ``patch_out``) are permuted accordingly.
   * *Skip lerp coefficient.* k-diffusion computes ``torch.lerp(skip, up, fac)`` — ``fac``
     weights the upsampled branch; eq. 6's ``f`` (hdit-edu) weights the skip:
     ``f = 1 − fac``.

With those, the two models compute the same function: the tests build the reference from the
k-diffusion source and find outputs (of size ~3) equal to within 8e-6 in float32, in both
directions, and to 4e-15 in float64 (a global-attention model; NATTEN has no float64). One
precision detail differs: the reference's *global* attention computes its RoPE angles in the
activations' dtype (bf16 under autocast), hdit-edu always in float32.

Checkpoints (:func:`load_k_diffusion_checkpoint`): k-diffusion's training checkpoints are
``.pth`` files ``{"config", "model", "model_ema", "opt", …}`` (loaded with
``torch.load(weights_only=True)``: no arbitrary unpickling); its inference checkpoints are
``.safetensors`` files of the EMA weights with the config JSON in the metadata (key
``"config"``). :func:`from_k_diffusion` accepts a raw state dict or a whole checkpoint (EMA
weights preferred), with or without the ``inner_model.`` prefix of k-diffusion's ``Denoiser``
wrapper (and ``module.`` / ``_orig_mod.`` of DDP / ``torch.compile``).

Whole files (:func:`hdit_edu.conversion.convert_from_k_diffusion`,
:func:`~hdit_edu.conversion.convert_to_k_diffusion`; the command line ``hdit-edu convert``)::

    hdit-edu convert from-k-diffusion KD_CHECKPOINT -o RUN_DIR      # then: runs.load_run
    hdit-edu convert to-k-diffusion RUN_DIR -o model.safetensors   # k-diffusion's sample.py

Running the reference itself next to ours (the tests and the benchmarks do) is
:mod:`hdit_edu.reference_source`.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from .checkpoints import (
    error_summary,
)
from .configs import (
    Config,
    DiffusionConfig,
    LevelConfig,
    MappingConfig,
    ModelConfig,
    TrainingConfig,
    image_d,
    normalize_resolution,
    sampling_sigma_range,
    validate_config,
)
from .kinds import ATTENTION_KINDS
from .models import build_model

KD_MODEL_TYPE = "image_transformer_v2"
KD_ATTENTION_TYPES = ATTENTION_KINDS  # k-diffusion's self_attns "type"s are our attention kinds
KD_LOSS_WEIGHTINGS = ("karras", "soft-min-snr", "snr")  # the names k-diffusion's Denoiser takes
KD_SIGMA_DENSITIES = ("lognormal", "cosine-interpolated")  # the ones hdit-edu implements
KD_AUG_DIM = 9  # k-diffusion always embeds a 9-dim augmentation vector (FourierFeatures(9, w))
KD_DEFAULT_D_HEAD = 64
KD_DEFAULT_KERNEL_SIZE = 7
KD_DEFAULT_RESOLUTION = 128  # hdit-edu's ModelConfig default, used when input_size is absent
# k-diffusion's cosine-interpolated density widens the sampling range to at least [1e-3, 1e3].
KD_DENSITY_RANGE = (1e-3, 1e3)
# The prefixes a saved k-diffusion state dict may carry: the Denoiser wrapper, DDP, compile.
STATE_DICT_PREFIXES = ("inner_model.", "module.", "_orig_mod.")
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")
CONVERT_DIRECTIONS = ("from-k-diffusion", "to-k-diffusion")

# ----------------------------------------------------------------------------------------------
# Configs: k-diffusion's defaults, and the two directions
# ----------------------------------------------------------------------------------------------

# The defaults of k_diffusion/config.py ``load_config`` for image_transformer_v2 (merged first)
# and for every model type (merged last; the v2 values, already present, win).
_KD_V2_DEFAULTS = {
    "model": {
        "mapping_width": 256,
        "mapping_depth": 2,
        "mapping_d_ff": None,
        "mapping_cond_dim": 0,
        "mapping_dropout_rate": 0.0,
        "d_ffs": None,
        "self_attns": None,
        "dropout_rate": None,
        "augment_wrapper": False,
        "skip_stages": 0,
        "has_variance": False,
    },
    "optimizer": {
        "type": "adamw",
        "lr": 5e-4,
        "betas": [0.9, 0.99],
        "eps": 1e-8,
        "weight_decay": 1e-4,
    },
}
_KD_DEFAULTS = {
    "model": {
        "sigma_data": 1.0,
        "dropout_rate": 0.0,
        "augment_prob": 0.0,
        "loss_config": "karras",
        "loss_weighting": "karras",
        "loss_scales": 1,
    },
    "dataset": {"type": "imagefolder", "num_classes": 0, "cond_dropout_rate": 0.1},
    "optimizer": {
        "type": "adamw",
        "lr": 1e-4,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "weight_decay": 1e-4,
    },
    "lr_sched": {"type": "constant", "warmup": 0.0},
    "ema_sched": {"type": "inverse", "power": 0.6667, "max_value": 0.9999},
}


def deep_merge(base: dict, head: dict) -> dict:
    """Deep merge (jsonmerge's default): ``head`` wins; dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in head.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def k_diffusion_defaults(config: Mapping[str, Any]) -> dict:
    """A k-diffusion ``image_transformer_v2`` config with k-diffusion's defaults filled in, as its
    ``k_diffusion.config.load_config`` does: ``mapping_d_ff = 3·mapping_width``, ``d_ffs =
    3·width`` per level, ``self_attns`` = 7×7 neighborhood (head dim 64) everywhere but a
    global innermost level, ``dropout_rate`` 0 per level (a single float is repeated), and
    the section defaults (σ_data 1, Karras loss, AdamW lr 5e-4, betas (0.9, 0.99), EMA 0.9999…).
    """
    if not isinstance(config, Mapping) or not isinstance(config.get("model"), Mapping):
        raise ValueError(
            "a k-diffusion config is a JSON object with a 'model' section; got "
            f"{type(config).__name__} with keys {sorted(config) if isinstance(config, Mapping) else '-'}"
        )
    model_type = config["model"].get("type")
    if model_type != KD_MODEL_TYPE:
        raise ValueError(
            f"k-diffusion model type {model_type!r} is not supported; allowed: {KD_MODEL_TYPE!r}"
        )
    for key in ("widths", "depths"):
        if not isinstance(config["model"].get(key), list) or not config["model"][key]:
            raise ValueError(f"k-diffusion config: model.{key} must be a non-empty list")
    config = deep_merge(_KD_V2_DEFAULTS, dict(config))
    model = config["model"]
    widths = model["widths"]
    if not model["mapping_d_ff"]:
        model["mapping_d_ff"] = model["mapping_width"] * 3
    if not model["d_ffs"]:
        model["d_ffs"] = [width * 3 for width in widths]
    if not model["self_attns"]:
        neighborhood = {
            "type": "neighborhood",
            "d_head": KD_DEFAULT_D_HEAD,
            "kernel_size": KD_DEFAULT_KERNEL_SIZE,
        }
        model["self_attns"] = [
            dict(neighborhood)
            if i < len(widths) - 1
            else {"type": "global", "d_head": KD_DEFAULT_D_HEAD}
            for i in range(len(widths))
        ]
    if model["dropout_rate"] is None:
        model["dropout_rate"] = [0.0] * len(widths)
    elif isinstance(model["dropout_rate"], (int, float)):
        model["dropout_rate"] = [float(model["dropout_rate"])] * len(widths)
    return deep_merge(_KD_DEFAULTS, config)


def _square(value: Any, what: str) -> int:
    """``[n, n]`` (or ``n``) → ``n``; anything else is a ValueError naming ``what``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise ValueError(f"k-diffusion config: {what} {value!r} is not supported; allowed: [n, n]")


def _input_size(value: Any) -> int | tuple[int, int]:
    """k-diffusion's ``input_size`` → our ``ModelConfig.resolution``: ``[n, n]`` (or ``n``) →
    ``n``, ``[H, W]`` → ``(H, W)``; anything else is a ValueError."""
    sides = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(sides) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in sides):
        if min(sides) >= 1:
            return sides[0] if sides[0] == sides[1] else (sides[0], sides[1])
    raise ValueError(
        f"k-diffusion config: model.input_size {value!r} is not supported; allowed: [H, W] "
        f"(two positive integers)"
    )


def _level_from_k_diffusion(i: int, depth, width, d_ff, self_attn, dropout) -> LevelConfig:
    where = f"model.self_attns[{i}]"
    if not isinstance(self_attn, Mapping) or self_attn.get("type") not in KD_ATTENTION_TYPES:
        got = self_attn.get("type") if isinstance(self_attn, Mapping) else self_attn
        raise ValueError(f"k-diffusion config: {where} type {got!r}; allowed: {KD_ATTENTION_TYPES}")
    kind = self_attn["type"]
    level = LevelConfig(
        depth=depth,
        width=width,
        head_dim=self_attn.get("d_head", KD_DEFAULT_D_HEAD),
        attention=kind,
        dropout=float(dropout),
        d_ff=None if d_ff == 3 * width else d_ff,
    )
    if kind == "neighborhood":
        level.kernel_size = self_attn.get("kernel_size", KD_DEFAULT_KERNEL_SIZE)
    elif kind == "shifted-window":
        if "window_size" not in self_attn:
            raise ValueError(f"k-diffusion config: {where} (shifted-window) needs a window_size")
        level.window_size = self_attn["window_size"]
    elif kind == "none" and width % level.head_dim:
        level.head_dim = width  # no attention: the head size is unused, only has to divide width
    return level


def model_config_from_k_diffusion(config: Mapping[str, Any]) -> ModelConfig:
    """The hdit-edu :class:`ModelConfig` of a k-diffusion ``image_transformer_v2`` config (the
    network only; see :func:`config_from_k_diffusion` for the whole experiment).

    Raises ``ValueError`` for what the reference model supports and hdit-edu does not:
    ``mapping_cond_dim > 0`` (an extra conditioning input), ``has_variance``, ``skip_stages``,
    non-square patches — and for a spec hdit-edu's :func:`validate_config`
    rejects at the config's ``input_size`` (e.g. a kernel larger than its level's token grid).
    Without ``input_size`` (k-diffusion's training and sampling scripts require it) the
    resolution is taken to be 128."""
    config = k_diffusion_defaults(config)
    model, dataset = config["model"], config["dataset"]
    unsupported = []
    if model["mapping_cond_dim"]:
        unsupported.append(f"mapping_cond_dim={model['mapping_cond_dim']} (allowed: 0)")
    if model["has_variance"]:
        unsupported.append("has_variance=True (allowed: false)")
    if model["skip_stages"]:
        unsupported.append(f"skip_stages={model['skip_stages']} (allowed: 0)")
    if unsupported:
        raise ValueError("unsupported k-diffusion model options: " + "; ".join(unsupported))
    n = len(model["widths"])
    for key in ("depths", "d_ffs", "self_attns", "dropout_rate"):
        if len(model[key]) != n:
            raise ValueError(
                f"k-diffusion config: model.{key} has {len(model[key])} entries, "
                f"model.widths has {n}; allowed: one per level"
            )
    if "input_channels" not in model:
        raise ValueError("k-diffusion config: model.input_channels is missing")
    patch_size = _square(model.get("patch_size"), "model.patch_size")
    resolution = (
        _input_size(model["input_size"]) if "input_size" in model else KD_DEFAULT_RESOLUTION
    )
    levels = [
        _level_from_k_diffusion(i, *spec)
        for i, spec in enumerate(
            zip(
                model["depths"],
                model["widths"],
                model["d_ffs"],
                model["self_attns"],
                model["dropout_rate"],
            )
        )
    ]
    mapping_width = model["mapping_width"]
    result = ModelConfig(
        levels=levels,
        mapping=MappingConfig(
            depth=model["mapping_depth"],
            width=mapping_width,
            d_ff=None if model["mapping_d_ff"] == 3 * mapping_width else model["mapping_d_ff"],
            dropout=float(model["mapping_dropout_rate"]),
        ),
        arch="hdit",
        patch_size=patch_size,
        in_channels=model["input_channels"],
        out_channels=None,  # k-diffusion: out_channels = input_channels
        num_classes=dataset["num_classes"],
        aug_dim=KD_AUG_DIM,
        ffn="geglu",
        pos_emb="rope",
        skip="lerp",
        resolution=resolution,
    )
    validate_config(result)
    return result


def _diffusion_from_k_diffusion(model: dict, image_d: int, problems: list) -> DiffusionConfig:
    """``image_d``: the interpolated cosine's image size, max(input_size) as in k-diffusion."""
    d = DiffusionConfig(sigma_data=float(model["sigma_data"]))
    if model["loss_config"] != "karras":
        problems.append(f"model.loss_config={model['loss_config']!r} (allowed: 'karras')")
    if model["loss_weighting"] in KD_LOSS_WEIGHTINGS:
        # The same weightings: hdit-edu's x0-space λ(σ) times c_out² is k-diffusion's target-
        # space weight (1, (σσ_d)²/(σ² + σ_d²)², σ_d²/(σ² + σ_d²)) — see hdit_edu.diffusion.
        d.loss_weighting = model["loss_weighting"]
    else:
        problems.append(
            f"model.loss_weighting={model['loss_weighting']!r} (allowed: {KD_LOSS_WEIGHTINGS})"
        )
    if model["loss_scales"] != 1:
        problems.append(f"model.loss_scales={model['loss_scales']!r} (allowed: 1)")
    # hdit-edu has one σ range, the range of the training density; k-diffusion's density uses
    # [min(sigma_min, 1e-3), max(sigma_max, 1e3)] unless the density names its own bounds.
    sigma_min = min(model.get("sigma_min", KD_DENSITY_RANGE[0]), KD_DENSITY_RANGE[0])
    sigma_max = max(model.get("sigma_max", KD_DENSITY_RANGE[1]), KD_DENSITY_RANGE[1])
    density = model.get("sigma_sample_density", {"type": "cosine-interpolated"})
    kind = density.get("type")
    if kind == "lognormal":
        d.sigma_density = "lognormal"
        d.lognormal_mean = float(density["mean"] if "mean" in density else density["loc"])
        d.lognormal_std = float(density["std"] if "std" in density else density["scale"])
    elif kind == "cosine-interpolated":
        d.sigma_density = "cosine-interpolated"
        sigma_min = density.get("min_value", sigma_min)
        sigma_max = density.get("max_value", sigma_max)
        d.noise_d_low = density.get("noise_d_low", 32)
        noise_d_high = density.get("noise_d_high", image_d)
        d.noise_d_high = None if noise_d_high == image_d else noise_d_high
        if density.get("image_d", image_d) != image_d:
            problems.append(
                f"model.sigma_sample_density.image_d={density['image_d']} (allowed: the longer "
                f"side of the input size, {image_d})"
            )
    else:
        problems.append(f"model.sigma_sample_density.type={kind!r} (allowed: {KD_SIGMA_DENSITIES})")
    d.sigma_min, d.sigma_max = float(sigma_min), float(sigma_max)
    # The model's own range is the sampler's (k-diffusion's train.py samples over it); a bound
    # equal to the density's stays None (the same range, and the default).
    if model.get("sigma_min", d.sigma_min) != d.sigma_min:
        d.sampling_sigma_min = float(model["sigma_min"])
    if model.get("sigma_max", d.sigma_max) != d.sigma_max:
        d.sampling_sigma_max = float(model["sigma_max"])
    return d


def _training_from_k_diffusion(config: dict, problems: list) -> TrainingConfig:
    t = TrainingConfig()
    opt, lr_sched, ema = config["optimizer"], config["lr_sched"], config["ema_sched"]
    if opt["type"] == "adamw":
        t.lr, t.betas = float(opt["lr"]), tuple(float(b) for b in opt["betas"])
        t.eps, t.weight_decay = float(opt["eps"]), float(opt["weight_decay"])
    else:
        problems.append(f"optimizer.type={opt['type']!r} (allowed: 'adamw')")
    if lr_sched["type"] != "constant" or lr_sched.get("warmup", 0.0):
        problems.append(f"lr_sched={lr_sched!r} (allowed: {{'type': 'constant', 'warmup': 0.0}})")
    # k-diffusion warms the EMA decay up (inverse schedule with ``power``) to ``max_value``.
    t.ema_decay = float(ema["max_value"])
    t.ema_power = float(ema.get("power", _KD_DEFAULTS["ema_sched"]["power"]))
    t.grad_clip = 1.0  # train.py clips the gradient norm at 1.0 every step
    dataset = config["dataset"]
    t.cond_dropout = float(dataset["cond_dropout_rate"])
    t.augment_p = float(config["model"]["augment_prob"])
    if t.augment_p > 0:  # KarrasAugmentationPipeline: x-flip a fair coin whenever it is on
        t.xflip_p = 1.0
    if dataset["type"] == "imagefolder":
        t.dataset = str(dataset.get("location", t.dataset))  # no location: hdit-edu's default
    else:
        problems.append(f"dataset.type={dataset['type']!r} (allowed: 'imagefolder')")
    return t


def config_from_k_diffusion(
    config: Mapping[str, Any], *, strict: bool = True, name: str = "k-diffusion"
) -> Config:
    """Our :class:`Config` of a k-diffusion ``image_transformer_v2`` config (k-diffusion's
    defaults applied first, :func:`k_diffusion_defaults`).

    * model: :func:`model_config_from_k_diffusion` (always strict);
    * diffusion: ``sigma_data``, ``loss_weighting`` (karras / soft-min-snr / snr),
      ``sigma_sample_density`` (lognormal with mean/std, cosine-interpolated with
      noise_d_low/high), and the density's σ range;
    * training: AdamW lr / betas / eps / weight decay, EMA ``max_value``, the dataset's
      ``cond_dropout_rate`` and image-folder ``location``, the model's ``augment_prob``.

    Diffusion and training options hdit-edu cannot represent (another loss config or density,
    ``loss_scales`` ≠ 1, an LR schedule other than constant, another optimiser, a non-folder
    dataset) raise a ``ValueError`` naming them; with ``strict=False`` they are replaced by
    hdit-edu's defaults and named in a warning instead (handy to open a model for sampling).
    """
    model_config = model_config_from_k_diffusion(config)
    config = k_diffusion_defaults(config)
    problems: list[str] = []
    diffusion = _diffusion_from_k_diffusion(config["model"], image_d(model_config), problems)
    training = _training_from_k_diffusion(config, problems)
    if problems:
        message = "unsupported k-diffusion options: " + "; ".join(problems)
        if strict:
            raise ValueError(message + " (strict=False replaces them by hdit-edu's defaults)")
        warnings.warn(message + " — replaced by hdit-edu's defaults", stacklevel=2)
    result = Config(name=name, model=model_config, diffusion=diffusion, training=training)
    validate_config(result)
    return result


def _level_to_k_diffusion(level: LevelConfig) -> dict:
    if level.attention == "none":
        return {"type": "none"}
    spec = {"type": level.attention, "d_head": level.head_dim}
    if level.attention == "neighborhood":
        spec["kernel_size"] = level.kernel_size
    elif level.attention == "shifted-window":
        spec["window_size"] = level.window_size
    return spec


def config_to_k_diffusion(config: Config | ModelConfig) -> dict:
    """The k-diffusion config (explicit, no defaults left to fill) of an hdit-edu config. A
    :class:`ModelConfig` gives the model and dataset sections; a :class:`Config` adds the loss,
    σ density, optimiser, LR and EMA schedules.

    Raises ``ValueError`` for what the reference model cannot express: ``arch`` other than
    ``"hdit"``, ``ffn`` other than ``"geglu"``, ``pos_emb`` other than ``"rope"``,
    ``rope_freqs`` other than ``"image"``, ``skip`` other than ``"lerp"``, ``out_channels`` ≠
    ``in_channels``, ``aug_dim`` other than 0 or 9, a min-SNR weighting or a γ other than the
    default."""
    full = config if isinstance(config, Config) else None
    model = config.model if isinstance(config, Config) else config
    if not isinstance(model, ModelConfig):
        raise ValueError(f"expected a Config or ModelConfig, got {type(config).__name__}")
    validate_config(model)
    unsupported = []
    for field_name, value, allowed in (
        ("arch", model.arch, "hdit"),
        ("ffn", model.ffn, "geglu"),
        ("pos_emb", model.pos_emb, "rope"),
        ("rope_freqs", model.rope_freqs, "image"),
        ("skip", model.skip, "lerp"),
    ):
        if value != allowed:
            unsupported.append(f"model.{field_name}={value!r} (allowed: {allowed!r})")
    if model.out_channels not in (None, model.in_channels):
        unsupported.append(
            f"model.out_channels={model.out_channels} (allowed: in_channels={model.in_channels})"
        )
    if model.aug_dim not in (0, KD_AUG_DIM):
        unsupported.append(f"model.aug_dim={model.aug_dim} (allowed: 0 or {KD_AUG_DIM})")
    if full is not None:
        d = full.diffusion
        if d.loss_weighting not in KD_LOSS_WEIGHTINGS:
            unsupported.append(
                f"diffusion.loss_weighting={d.loss_weighting!r} (allowed: {KD_LOSS_WEIGHTINGS})"
            )
        if d.gamma is not None and not (
            d.loss_weighting == "soft-min-snr" and math.isclose(d.gamma, 1 / d.sigma_data**2)
        ):
            unsupported.append(f"diffusion.gamma={d.gamma} (allowed: None, the default)")
    if unsupported:
        raise ValueError("not expressible in k-diffusion: " + "; ".join(unsupported))

    levels, mapping = model.levels, model.mapping
    kd_model = {
        "type": KD_MODEL_TYPE,
        "input_channels": model.in_channels,
        "input_size": list(normalize_resolution(model.resolution)),  # [H, W]
        "patch_size": [model.patch_size, model.patch_size],
        "depths": [level.depth for level in levels],
        "widths": [level.width for level in levels],
        "d_ffs": [level.d_ff or 3 * level.width for level in levels],
        "self_attns": [_level_to_k_diffusion(level) for level in levels],
        "dropout_rate": [level.dropout for level in levels],
        "mapping_depth": mapping.depth,
        "mapping_width": mapping.width,
        "mapping_d_ff": mapping.d_ff or 3 * mapping.width,
        "mapping_dropout_rate": mapping.dropout,
        "mapping_cond_dim": 0,
    }
    result = {"model": kd_model, "dataset": {"num_classes": model.num_classes}}
    if full is None:
        return result
    d, t = full.diffusion, full.training
    kd_model.update(
        augment_prob=t.augment_p,
        sigma_data=d.sigma_data,
        sigma_min=sampling_sigma_range(full)[0],
        sigma_max=sampling_sigma_range(full)[1],
        loss_config="karras",
        loss_weighting=d.loss_weighting,
        loss_scales=1,
    )
    if d.sigma_density == "lognormal":
        density = {"type": "lognormal", "mean": d.lognormal_mean, "std": d.lognormal_std}
    else:
        density = {
            "type": "cosine-interpolated",
            "min_value": d.sigma_min,
            "max_value": d.sigma_max,
            "noise_d_low": d.noise_d_low,
            "noise_d_high": d.noise_d_high or image_d(model),
        }
    kd_model["sigma_sample_density"] = density
    result["dataset"].update(
        type="imagefolder", location=t.dataset, cond_dropout_rate=t.cond_dropout
    )
    result["optimizer"] = {
        "type": "adamw",
        "lr": t.lr,
        "betas": list(t.betas),
        "eps": t.eps,
        "weight_decay": t.weight_decay,
    }
    result["lr_sched"] = {"type": "constant", "warmup": 0.0}
    result["ema_sched"] = {
        "type": "inverse",
        "power": t.ema_power,
        "max_value": t.ema_decay,
    }
    return result


# ----------------------------------------------------------------------------------------------
# The name table and the two layout transforms
# ----------------------------------------------------------------------------------------------

TRANSFORMS = ("copy", "merge", "split", "lerp")


@dataclass(frozen=True)
class TensorMap:
    """How one k-diffusion tensor becomes one hdit-edu tensor: ``ours`` is our name,
    ``transform`` one of :data:`TRANSFORMS`, ``patch`` the patch size of a merge / split."""

    ours: str
    transform: str = "copy"
    patch: int = 1


def _layer_names(kd: str, ours: str, has_attention: bool) -> dict[str, TensorMap]:
    names = {}
    if has_attention:
        names[f"{kd}.self_attn.norm.linear.weight"] = TensorMap(f"{ours}.norm1.linear.weight")
        for tensor in ("qkv_proj.weight", "scale", "pos_emb.freqs", "out_proj.weight"):
            names[f"{kd}.self_attn.{tensor}"] = TensorMap(f"{ours}.attn.{tensor}")
    names[f"{kd}.ff.norm.linear.weight"] = TensorMap(f"{ours}.norm2.linear.weight")
    for tensor in ("up_proj.weight", "down_proj.weight"):
        names[f"{kd}.ff.{tensor}"] = TensorMap(f"{ours}.ffn.{tensor}")
    return names


def k_diffusion_names(config: ModelConfig | Config) -> dict[str, TensorMap]:
    """Every tensor (parameters and buffers) of the k-diffusion model of ``config``, by its
    k-diffusion name, mapped to its hdit-edu name and transform."""
    model = config.model if isinstance(config, Config) else config
    config_to_k_diffusion(model)  # raises for what the reference cannot express
    p = model.patch_size
    names = {"patch_in.proj.weight": TensorMap("patch_in.proj.weight", "merge", p)}
    for tensor in ("time_emb.weight", "time_in_proj.weight"):
        names[tensor] = TensorMap(tensor)
    # The reference always embeds 9 augmentation features; an hdit-edu model without them
    # (aug_dim = 0) is the same function with a zero aug_in_proj (see to_k_diffusion).
    if model.aug_dim:
        for tensor in ("aug_emb.weight", "aug_in_proj.weight"):
            names[tensor] = TensorMap(tensor)
    if model.num_classes:
        names["class_emb.weight"] = TensorMap("class_emb.weight")
    names["mapping.in_norm.scale"] = TensorMap("mapping.in_norm.scale")
    for i in range(model.mapping.depth):
        block = f"mapping.blocks.{i}"
        names[f"{block}.norm.scale"] = TensorMap(f"{block}.norm.scale")
        for tensor in ("up_proj.weight", "down_proj.weight"):
            names[f"{block}.{tensor}"] = TensorMap(f"{block}.ffn.{tensor}")
    names["mapping.out_norm.scale"] = TensorMap("mapping.out_norm.scale")
    last = len(model.levels) - 1
    for i, level in enumerate(model.levels):
        has_attention = level.attention != "none"
        for kd_level, count in (
            [(f"down_levels.{i}", level.depth), (f"up_levels.{i}", level.depth)]
            if i < last
            else [("mid_level", level.depth)]
        ):
            for j in range(count):
                names.update(_layer_names(f"{kd_level}.{j}", f"{kd_level}.{j}", has_attention))
    for i in range(last):
        names[f"merges.{i}.proj.weight"] = TensorMap(f"merges.{i}.proj.weight", "merge", 2)
    for i in range(last):
        names[f"splits.{i}.proj.weight"] = TensorMap(f"splits.{i}.proj.weight", "split", 2)
        names[f"splits.{i}.fac"] = TensorMap(f"splits.{i}.f", "lerp")
    names["out_norm.scale"] = TensorMap("out_norm.scale")
    names["patch_out.proj.weight"] = TensorMap("patch_out.proj.weight", "split", p)
    return names


def _merge_weight_to_ours(w: torch.Tensor, p: int) -> torch.Tensor:
    """Merge projection (out, p·p·C): input channels (dy, dx, c) → (c, dy, dx)."""
    out = w.shape[0]
    return w.reshape(out, p, p, -1).permute(0, 3, 1, 2).reshape(out, -1)


def _merge_weight_to_kd(w: torch.Tensor, p: int) -> torch.Tensor:
    """The inverse of :func:`_merge_weight_to_ours`: (c, dy, dx) → (dy, dx, c)."""
    out = w.shape[0]
    return w.reshape(out, -1, p, p).permute(0, 2, 3, 1).reshape(out, -1)


def _split_weight_to_ours(w: torch.Tensor, p: int) -> torch.Tensor:
    """Split projection (p·p·C, in): output channels (dy, dx, c) → (c, dy, dx)."""
    inp = w.shape[1]
    return w.reshape(p, p, -1, inp).permute(2, 0, 1, 3).reshape(-1, inp)


def _split_weight_to_kd(w: torch.Tensor, p: int) -> torch.Tensor:
    """The inverse of :func:`_split_weight_to_ours`: (c, dy, dx) → (dy, dx, c)."""
    inp = w.shape[1]
    return w.reshape(-1, p, p, inp).permute(1, 2, 0, 3).reshape(-1, inp)


def _one_minus(t: torch.Tensor) -> torch.Tensor:
    """f = 1 − fac (and back), computed in float64 and rounded once to ``t``'s dtype."""
    return (1 - t.to(torch.float64)).to(t.dtype)


_TO_OURS = {
    "copy": lambda t, p: t,
    "merge": _merge_weight_to_ours,
    "split": _split_weight_to_ours,
    "lerp": lambda t, p: _one_minus(t),
}
_TO_KD = {
    "copy": lambda t, p: t,
    "merge": _merge_weight_to_kd,
    "split": _split_weight_to_kd,
    "lerp": lambda t, p: _one_minus(t),
}


def _check_names(got: Mapping[str, Any], expected: Mapping[str, Any], what: str) -> None:
    missing = [name for name in expected if name not in got]
    unexpected = [name for name in got if name not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{what} does not match the config: {len(missing)} tensor(s) missing "
            f"{missing[:20]}{' …' if len(missing) > 20 else ''}, {len(unexpected)} unmapped "
            f"{unexpected[:20]}{' …' if len(unexpected) > 20 else ''}"
        )


def state_dict_from_k_diffusion(
    state_dict: Mapping[str, torch.Tensor], config: ModelConfig | Config
) -> dict[str, torch.Tensor]:
    """A k-diffusion ``image_transformer_v2`` state dict (prefixes stripped, see
    :func:`strip_prefixes`) → the hdit-edu state dict of the same model. Strict: every tensor
    must be mapped, and every expected tensor present (else a ``ValueError`` listing them)."""
    table = k_diffusion_names(config)
    state_dict = strip_prefixes(state_dict)
    _check_names(state_dict, table, "the k-diffusion state dict")
    return {
        m.ours: _TO_OURS[m.transform](state_dict[kd], m.patch).contiguous()
        for kd, m in table.items()
    }


def state_dict_to_k_diffusion(
    state_dict: Mapping[str, torch.Tensor], config: ModelConfig | Config
) -> dict[str, torch.Tensor]:
    """The inverse of :func:`state_dict_from_k_diffusion`: an hdit-edu state dict → the
    k-diffusion one. Strict, as the forward direction.

    An hdit-edu model without augmentation conditioning (``aug_dim = 0``) gets the reference's
    9-feature ``aug_emb`` (fresh random Fourier features: any matrix works) and a *zero*
    ``aug_in_proj``, which makes the reference compute exactly the same function."""
    model = config.model if isinstance(config, Config) else config
    table = k_diffusion_names(model)
    _check_names(state_dict, {m.ours: None for m in table.values()}, "the hdit-edu state dict")
    out = {}
    for kd, m in table.items():
        out[kd] = _TO_KD[m.transform](state_dict[m.ours], m.patch).contiguous()
        if kd == "time_in_proj.weight" and not model.aug_dim:
            like = state_dict["time_emb.weight"]
            out["aug_emb.weight"] = torch.randn(like.shape[0], KD_AUG_DIM).to(like)
            out["aug_in_proj.weight"] = torch.zeros_like(state_dict[m.ours])
    return out


def strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the wrapper prefixes of :data:`STATE_DICT_PREFIXES` (k-diffusion's ``Denoiser``
    stores the network as ``inner_model``; DDP adds ``module.``, ``torch.compile``
    ``_orig_mod.``) from the start of every name."""
    out = {}
    for name, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in STATE_DICT_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix) :], True
        out[name] = value
    return out


# ----------------------------------------------------------------------------------------------
# Checkpoints and models
# ----------------------------------------------------------------------------------------------


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def select_state_dict(checkpoint: Mapping[str, Any], *, ema: bool = True) -> dict:
    """The model weights of a k-diffusion checkpoint: a raw state dict is returned as is; a
    training checkpoint ``{"model", "model_ema", …}`` gives ``model_ema`` (``ema=True``, the
    default; falls back to ``model`` when there is no EMA) or ``model`` (``ema=False``)."""
    if is_state_dict(checkpoint):
        return dict(checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a state dict or a checkpoint dict, got {type(checkpoint)}")
    keys = ("model_ema", "model") if ema else ("model",)
    for key in keys:
        if is_state_dict(checkpoint.get(key)):
            return dict(checkpoint[key])
    raise ValueError(
        f"no model weights in this checkpoint: looked for {list(keys)} (tensors only); it has "
        f"keys {sorted(checkpoint)[:20]}"
    )


def load_k_diffusion_checkpoint(path: str | Path) -> tuple[dict | None, dict]:
    """Load a k-diffusion checkpoint safely: ``(config or None, checkpoint)``.

    ``.safetensors`` (k-diffusion's inference format): the tensors, and the config JSON from
    the file's metadata key ``"config"``. ``.pth`` / ``.pt`` / ``.ckpt`` (training checkpoints
    or raw state dicts): ``torch.load(weights_only=True)`` — plain containers and tensors only,
    never arbitrary objects; the config from its ``"config"`` key when present."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as f:
                metadata = f.metadata() or {}
            config = json.loads(metadata["config"]) if "config" in metadata else None
            return config, load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any failure to parse is a corrupt file
            raise ValueError(
                f"checkpoint {str(path)!r} is not a readable safetensors file with a JSON "
                f"config: {error_summary(e)}"
            ) from None
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"checkpoint {str(path)!r}: unknown suffix {path.suffix!r}; allowed: "
            f"{CHECKPOINT_SUFFIXES}"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt, or holds objects beyond the safe set
        raise ValueError(
            f"checkpoint {str(path)!r} cannot be read safely (torch.load with "
            f"weights_only=True: plain containers and tensors only): {error_summary(e)}"
        ) from None
    if not isinstance(checkpoint, Mapping):
        raise ValueError(
            f"checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, not a dict"
        )
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), Mapping) else None
    return config, dict(checkpoint)


def from_k_diffusion(
    config: Mapping[str, Any] | None,
    state_dict: Mapping[str, Any],
    *,
    ema: bool = True,
):
    """An hdit-edu :class:`~hdit_edu.hourglass.HDiT` with a k-diffusion model's weights.

    ``config``: the k-diffusion config (``None``: the ``"config"`` stored in a training
    checkpoint). ``state_dict``: a raw state dict (optionally ``inner_model.``-prefixed) or a
    whole training checkpoint (``model_ema`` preferred; ``ema=False`` takes ``model``).
    Returns the model in eval mode, float32; use :func:`config_from_k_diffusion` for the rest
    of the experiment (σ_data for the Denoiser, the loss, the training recipe)."""
    if config is None:
        config = state_dict.get("config") if isinstance(state_dict, Mapping) else None
        if not isinstance(config, Mapping):
            raise ValueError("no k-diffusion config given and none stored in the checkpoint")
    model_config = model_config_from_k_diffusion(config)
    weights = select_state_dict(state_dict, ema=ema)
    weights = {name: t.float() if t.is_floating_point() else t for name, t in weights.items()}
    model = build_model(model_config)
    ours = state_dict_from_k_diffusion(weights, model_config)
    _check_names(ours, model.state_dict(), "the converted state dict")
    model.load_state_dict(ours, strict=True)
    return model.eval()


def to_k_diffusion(model, config: Config | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(k-diffusion config, k-diffusion state dict)`` of an hdit-edu HDiT: the config from
    ``model.config`` (plus the diffusion / training sections of ``config``, an hdit-edu
    :class:`Config` whose model part must be ``model.config``), the state dict loadable by
    ``ImageTransformerDenoiserModelV2.load_state_dict`` (strict) — and, once saved as
    ``.safetensors`` with the config in the metadata, by k-diffusion's ``sample.py``."""
    model_config = getattr(model, "config", None)
    if not isinstance(model_config, ModelConfig) or model_config.arch != "hdit":
        raise ValueError(
            f"to_k_diffusion expects an hdit_edu HDiT model, got {type(model).__name__}"
        )
    if config is not None:
        if not isinstance(config, Config):
            raise ValueError(f"config: expected an hdit_edu Config, got {type(config).__name__}")
        if config.model != model_config:
            raise ValueError("config.model differs from model.config; pass the model's Config")
    kd_config = config_to_k_diffusion(config if config is not None else model_config)
    state_dict = {name: t.detach() for name, t in model.state_dict().items()}
    return kd_config, state_dict_to_k_diffusion(state_dict, model_config)
