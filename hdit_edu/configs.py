"""Configurations: model, diffusion and training specs (§5.2, Tables 1, 2, 6).

Every model of the paper is a :class:`Config` — a model spec (levels of the hourglass, the
mapping network, patching, FFN / position-embedding / skip kinds), a diffusion spec (σ_data,
σ range, loss weighting, σ sampling density) and a training spec (Table 6's optimiser recipe).
Configs are plain dataclasses that round-trip through JSON (:meth:`Config.to_dict`,
:meth:`Config.from_dict`, :func:`save_config`, :func:`load_config`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The allowed values of every "kind" field, named once.
ARCHS = ("hdit", "dit")
ATTENTION_KINDS = ("global", "neighborhood", "shifted-window", "none")
FFN_KINDS = ("geglu", "gelu")
POS_EMB_KINDS = ("rope", "additive")
SKIP_KINDS = ("lerp", "add", "concat")
LOSS_WEIGHTINGS = ("snr", "min-snr", "soft-min-snr", "karras")
SIGMA_DENSITIES = ("lognormal", "cosine-interpolated")


@dataclass
class LevelConfig:
    """One level of the hourglass (Fig. 3): ``depth`` transformer layers going down (and
    ``depth`` more going up, except at the innermost level) at ``width`` channels."""

    depth: int
    width: int
    head_dim: int = 64
    attention: str = "neighborhood"  # one of ATTENTION_KINDS
    kernel_size: int = 7  # neighborhood attention kernel (Table 6: 7)
    window_size: int = 8  # shifted-window attention window (B1)
    dropout: float = 0.0
    d_ff: int | None = None  # FFN hidden size; None = 3·width for GEGLU, 4·width for GELU


@dataclass
class MappingConfig:
    """The mapping network (class + noise level [+ augmentation] → conditioning vector)."""

    depth: int = 1
    width: int = 768
    d_ff: int | None = None  # None = 3·width (GEGLU)
    dropout: float = 0.0


@dataclass
class ModelConfig:
    """A model spec. ``arch="hdit"`` is the hourglass; ``arch="dit"`` is the DiT-B/4 baseline,
    which uses ``levels[0]`` for its depth/width/head_dim and ignores the hourglass fields."""

    levels: list[LevelConfig] = field(default_factory=list)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    arch: str = "hdit"  # one of ARCHS
    patch_size: int = 4
    in_channels: int = 3
    out_channels: int | None = None  # None = in_channels (DiT with learned sigma: 2·in_channels)
    num_classes: int = 0  # 0 = unconditional; else num_classes + 1 embeddings (last = dropped)
    aug_dim: int = 9  # size of the augmentation conditioning vector (0 = none)
    ffn: str = "geglu"  # one of FFN_KINDS
    pos_emb: str = "rope"  # one of POS_EMB_KINDS
    skip: str = "lerp"  # one of SKIP_KINDS
    resolution: int = 128  # training resolution (sizes the additive position table)


@dataclass
class DiffusionConfig:
    """The diffusion objective (§3.1, App. B)."""

    sigma_data: float = 0.5
    sigma_min: float = 1e-3
    sigma_max: float = 1e3
    loss_weighting: str = "soft-min-snr"  # one of LOSS_WEIGHTINGS
    gamma: float | None = None  # None = the weighting's default (soft-min-snr: 1/σ_data² = 4)
    sigma_density: str = "cosine-interpolated"  # one of SIGMA_DENSITIES
    lognormal_mean: float = -1.2
    lognormal_std: float = 1.2
    noise_d_low: int = 32  # interpolated cosine: reference resolution of the low end
    noise_d_high: int | None = None  # None = the model resolution


@dataclass
class TrainingConfig:
    """Table 6's recipe (AdamW, constant LR, EMA) plus run bookkeeping."""

    batch_size: int = 256
    steps: int = 400_000
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 1e-2
    mapping_lr_scale: float = 1 / 3
    ema_decay: float = 0.9999
    cond_dropout: float = 0.1
    augment_p: float = 0.0
    grad_clip: float | None = None
    precision: str = "bf16"  # "bf16" | "fp32" (bf16 autocast applies on CUDA only)
    compile: bool = False
    dataset: str = "toy"  # "toy" or a path to an image folder
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 1000
    log_every: int = 10


@dataclass
class Config:
    """A whole experiment: a name, a model, a diffusion objective and a training recipe."""

    name: str = "unnamed"
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return _from_dict(cls, d, "config")


def _from_dict(cls, d: dict[str, Any], where: str):
    """Build dataclass ``cls`` from a dict, recursively; unknown keys are a clear error."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(fields)}")
    nested = {
        "model": ModelConfig,
        "diffusion": DiffusionConfig,
        "training": TrainingConfig,
        "mapping": MappingConfig,
    }
    kwargs = {}
    for key, value in d.items():
        if key in nested and cls in (Config, ModelConfig):
            value = _from_dict(nested[key], value, f"{where}.{key}")
        elif key == "levels" and cls is ModelConfig:
            if not isinstance(value, list):
                raise ValueError(f"{where}.levels: expected a list, got {value!r}")
            value = [_from_dict(LevelConfig, v, f"{where}.levels[{i}]") for i, v in enumerate(value)]
        elif key == "betas" and value is not None:
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"config file {str(path)!r} is not valid JSON: {e}") from None
    return Config.from_dict(d)


def build_model(config: Config | ModelConfig):
    """Build the model a config describes: :class:`~hdit_edu.hourglass.HDiT` for
    ``arch="hdit"``, :class:`~hdit_edu.dit.DiT` for ``arch="dit"``."""
    model_config = config.model if isinstance(config, Config) else config
    if not isinstance(model_config, ModelConfig):
        raise ValueError(
            f"build_model expects a Config or ModelConfig, got {type(config).__name__}"
        )
    if model_config.arch == "hdit":
        from .hourglass import HDiT

        return HDiT(model_config)
    if model_config.arch == "dit":
        from .dit import DiT

        return DiT(model_config)
    raise ValueError(f"unknown model arch {model_config.arch!r}; allowed: {ARCHS}")
