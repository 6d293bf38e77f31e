"""Building a model from its config: the one place that picks HDiT or DiT (§4, §5.2).

:func:`build_model` validates a config (:func:`hdit_edu.configs.validate_config`: a bad spec
fails before any parameter is allocated) and builds :class:`~hdit_edu.hourglass.HDiT` for
``arch="hdit"`` or :class:`~hdit_edu.dit.DiT` for ``arch="dit"``. The neighborhood-attention
backend (:data:`hdit_edu.attention.NA_BACKENDS`) is chosen here, at build time, or switched on a
built model with :func:`set_attention_backend`; :func:`set_checkpointing` switches activation
checkpointing (a training choice: the numbers stay the same).
"""

from __future__ import annotations

from torch import nn

from .attention import Attention, check_backend
from .configs import ARCHS, Config, ModelConfig, validate_config
from .dit import DiT
from .hourglass import HDiT, Level
from .layers import check_checkpointing


def build_model(config: Config | ModelConfig, attention_backend: str = "auto") -> nn.Module:
    """Build the model a config describes: :class:`~hdit_edu.hourglass.HDiT` for
    ``arch="hdit"``, :class:`~hdit_edu.dit.DiT` for ``arch="dit"``. The config is validated
    first (:func:`~hdit_edu.configs.validate_config` at its own resolution): a bad spec fails
    before any parameter is allocated. ``attention_backend``: the neighborhood-attention
    backend of every HDiT attention module (one of :data:`hdit_edu.attention.NA_BACKENDS`;
    DiT has no neighborhood attention and ignores it)."""
    model_config = config.model if isinstance(config, Config) else config
    if not isinstance(model_config, ModelConfig):
        raise ValueError(
            f"build_model expects a Config or ModelConfig, got {type(config).__name__}"
        )
    validate_config(config)
    check_backend(attention_backend)
    if model_config.arch == "hdit":
        return HDiT(model_config, attention_backend=attention_backend)
    if model_config.arch == "dit":
        return DiT(model_config)
    raise ValueError(f"unknown model arch {model_config.arch!r}; allowed: {ARCHS}")


def set_attention_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switch the neighborhood-attention backend of every attention module of a built model
    (one of :data:`hdit_edu.attention.NA_BACKENDS`); returns the model. The weights and the
    numbers it computes stay the same (every backend computes the same attention)."""
    check_backend(backend)
    for module in model.modules():
        if isinstance(module, Attention):
            module.backend = backend
    return model


def set_checkpointing(model: nn.Module, kind: str) -> nn.Module:
    """Activation checkpointing of a built model (one of
    :data:`hdit_edu.kinds.CHECKPOINTING_KINDS`): ``"level"`` recomputes each HDiT level (DiT:
    its whole stack of blocks) in the backward pass, ``"layer"`` each transformer layer,
    ``"none"`` keeps every activation. Returns the model; the gradients stay the same."""
    check_checkpointing(kind)
    for module in model.modules():
        if isinstance(module, (Level, DiT)):
            module.checkpointing = kind
    return model
