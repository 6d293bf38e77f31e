"""Configurations: model, diffusion and training specs (§5.2, Table 6, App. A).

Every model of the paper is a :class:`Config` — a model spec (levels of the hourglass, the
mapping network, patching, FFN / position-embedding / skip kinds), a diffusion spec (σ_data,
σ range, loss weighting, σ sampling density) and a training spec (Table 6's optimiser recipe).
Configs are plain dataclasses that round-trip through JSON (:meth:`Config.to_dict`,
:meth:`Config.from_dict`, :func:`save_config`, :func:`load_config`).

This module also holds

* :func:`validate_config` — every check a config must pass *before* any compute, each failing
  with a ``ValueError`` that names the offending value and what is allowed
  (:func:`hdit_edu.models.build_model` calls it first);
* the resolution: ``ModelConfig.resolution`` is ``n`` (n × n) or ``(height, width)`` (JSON
  ``n`` or ``[H, W]``); :func:`normalize_resolution` reads either as ``(H, W)``,
  :func:`parse_resolution` reads the command line's ``"256x512"``, :func:`image_d` is the
  interpolated cosine density's image size (the longer side);
* :func:`at_resolution` — App. A's rule for adapting a model to another resolution;
  :func:`token_grids` (the token grid of every level), :func:`check_grids` (those grids
  checked against the kernels and windows: the one grid check, at build time and on every
  input size), :func:`min_resolution` (the smallest valid image size of a model);
* :func:`all_local` — §7's every-level-local variant of a model.

The named models of the paper (``"E"``, ``"imagenet256"``, ``"toy"``, …) are built in
:mod:`hdit_edu.presets`, the one registry of names (:func:`hdit_edu.presets.get_config`).

**How a model grows with the resolution** (§5.2 "every doubling in resolution involves adding
one local attention block", App. A "additional local attention levels … are added to keep the
innermost level operating at 16²"). :func:`at_resolution` prepends, for every doubling of the
resolution, one more *outer* level that copies the current outermost level (same width, depth,
attention kind, kernel/window, dropout). For the ablation chain the outermost level at 128² is
``depth 2 @ width 384`` with the step's local attention, so 256² adds a second ``2 @ 384`` level
and 512² a third — neighborhood 7×7 for B2…E, Swin window 8 for B1 and, as §5.2 says, *global*
for A (A's outer level is global). This is the reading that reproduces every GFLOP figure of
Table 1 (measured with the authors' code: an added outer level of width 384, depth 2, going down
and again going up). Halving removes the outermost level (while more than one remains); a factor
that is not a power of two keeps the architecture (App. A "Local Complexity Scaling at Arbitrary
Resolutions"). Single-level models (DiT-B/4 for R1/R2, the single-level hourglass R3/R4) keep
their one level: Table 1 reports "the same architecture" on more tokens.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# The allowed values of every "kind" field (named once, in hdit_edu.kinds).
from .kinds import (
    ADDITIVE_POS_EMBS,
    ARCHS,
    ATTENTION_KINDS,
    CHECKPOINTING_KINDS,
    DIFFUSION_PROCESSES,
    FFN_KINDS,
    LOSS_WEIGHTINGS,
    POS_EMB_KINDS,
    PRECISIONS,
    ROPE_FREQS,
    ROPE_POS_EMBS,
    SIGMA_DENSITIES,
    SKIP_KINDS,
)


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
    rope_freqs: str = "image"  # one of ROPE_FREQS: RoPE's frequency range (rope.rope_freq_scale)
    skip: str = "lerp"  # one of SKIP_KINDS
    # training resolution: n (an n×n image) or (height, width); JSON: n or [height, width].
    # It sizes the additive position table and the sampled images.
    resolution: int | tuple[int, int] = 128

    def __post_init__(self) -> None:
        if isinstance(self.resolution, list):  # JSON [height, width]: one spelling, a tuple
            self.resolution = tuple(self.resolution)

    def validate(self, resolution: int | tuple[int, int] | None = None) -> None:
        """Raise ``ValueError`` if this spec is invalid (at ``resolution``; None = its own)."""
        validate_config(self, resolution)


@dataclass
class DiffusionConfig:
    """The diffusion objective (§3.1, App. B)."""

    # "edm": σ-space training and samplers (all the fields below); "ddpm": DiT's discrete
    # process, hybrid loss and 250-step ancestral sampler (R1, hdit_edu.ddpm; the σ fields are
    # then unused).
    process: str = "edm"
    sigma_data: float = 0.5
    sigma_min: float = 1e-3
    sigma_max: float = 1e3
    loss_weighting: str = "soft-min-snr"  # one of LOSS_WEIGHTINGS
    gamma: float | None = None  # None = the weighting's default (soft-min-snr: 1/σ_data² = 4)
    sigma_density: str = "cosine-interpolated"  # one of SIGMA_DENSITIES
    lognormal_mean: float = -1.2
    lognormal_std: float = 1.2
    noise_d_low: int = 32  # interpolated cosine: reference resolution of the low end
    noise_d_high: int | None = None  # None = image_d(model): the (longer) image side
    # The sampler's σ range (the model's sigma_min/sigma_max in k-diffusion), separate from the
    # training density's [sigma_min, sigma_max]; None = the density's bound (as before).
    sampling_sigma_min: float | None = None
    sampling_sigma_max: float | None = None


@dataclass
class TrainingConfig:
    """Table 6's recipe (AdamW, constant LR, EMA) plus run bookkeeping."""

    batch_size: int = 256  # the global batch: micro-batch × grad_accum × processes
    grad_accum: int = 1  # micro-steps per optimizer step (gradient accumulation)
    # A batch-size schedule: [[from_step, global batch], …] after the first batch_size steps
    # (ImageNet-256, footnote 6); the micro-batch stays, the accumulation grows with the batch.
    batch_schedule: list[tuple[int, int]] | None = None
    checkpointing: str = "none"  # activation checkpointing: "none" | "level" | "layer"
    steps: int = 400_000
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 1e-2
    mapping_lr_scale: float = 1 / 3
    ema_decay: float = 0.9999
    ema_power: float = 2 / 3  # EMA warm-up power (k-diffusion's default; its HDiT configs: 0.75)
    # False: no warm-up, the constant decay ema_decay from the first update (DiT's train.py)
    ema_warmup: bool = True
    cond_dropout: float = 0.1
    augment_p: float = 0.0
    # The x-flip is drawn with probability xflip_p (None: augment_p), then a fair coin:
    # None flips p/2 of the images (ADA); 1.0 flips half of them, as the reference trainer does
    # whenever augmentation is on.
    xflip_p: float | None = None
    # DiT's RandomHorizontalFlip: every training image mirrored with probability ½, with no
    # augmentation input (the non-leaking pipeline above has its own flip: not with augment_p)
    hflip: bool = False
    grad_clip: float | None = 1.0  # gradient-norm clipping (the reference trainer: always 1.0)
    precision: str = "bf16"  # "bf16" | "fp32" (bf16 autocast applies on CUDA only)
    compile: bool = False
    dataset: str = "toy"  # "toy" or a path to an image folder
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 1000
    log_every: int = 10
    tensorboard: bool = False  # also log to RUN_DIR/tensorboard (logging_sinks)
    wandb: bool = False  # also log to an offline Weights & Biases run in RUN_DIR/wandb


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

    def validate(self, resolution: int | tuple[int, int] | None = None) -> None:
        """Raise ``ValueError`` if any part of this config is invalid (see
        :func:`validate_config`)."""
        validate_config(self, resolution)


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
            value = [
                _from_dict(LevelConfig, v, f"{where}.levels[{i}]") for i, v in enumerate(value)
            ]
        elif key == "betas" and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{where}: missing required keys {missing}")
    return cls(**kwargs)


def save_config(config: Config, path: str | Path) -> None:
    """Write ``config`` as JSON, atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        d = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ValueError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"config file {str(path)!r} is a folder, not a JSON file") from None
    except UnicodeDecodeError as e:
        raise ValueError(
            f"config file {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"config file {str(path)!r} is not valid JSON: {e}") from None
    except OSError as e:
        raise ValueError(f"config file {str(path)!r} cannot be read: {e.strerror}") from None
    try:
        return Config.from_dict(d)
    except ValueError as e:
        raise ValueError(f"config file {str(path)!r}: {e}") from None


def apply_overrides(config: Config, assignments: list[str]) -> Config:
    """A new Config: ``config`` with ``assignments`` such as ``["training.lr=1e-4",
    "model.levels.0.depth=1", "model.resolution=[32,48]"]`` applied (``hdit-edu train --set``;
    notebooks and scripts may call it too). KEY is a dotted path of fields and list indices;
    VALUE is parsed as JSON when it can be (numbers, true/false/null, lists), else it is a
    string. A ``ValueError`` names the assignment, the field and what is allowed. The result
    is built as a loaded config is (:meth:`Config.from_dict`); its values are checked by
    :func:`validate_config` (``config.validate()``), as for any config."""
    d = config.to_dict()
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expects KEY=VALUE (e.g. training.lr=1e-4), got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *path, last = key.split(".")
        node, where = d, ""
        for part in path:
            node = (
                node[_override_index(node, part, item, where)]
                if isinstance(node, list)
                else (node.get(part))
            )
            where = f"{where}.{part}" if where else part
            if node is None or not isinstance(node, (dict, list)):
                raise ValueError(f"{item!r}: {key!r} is not a config field")
        if isinstance(node, list):
            node[_override_index(node, last, item, where)] = value
        elif last not in node:
            raise ValueError(f"{item!r}: unknown field {last!r}; allowed: {sorted(node)}")
        else:
            node[last] = value
    return Config.from_dict(d)


def _override_index(node: list, part: str, item: str, where: str) -> int:
    """``part`` of the assignment ``item`` as an index of the list ``where`` (e.g.
    ``model.levels``), range-checked."""
    if not part.isdigit() or int(part) >= len(node):
        raise ValueError(
            f"{item!r}: {where}[{part}] does not exist; allowed indices: 0 … "
            f"{len(node) - 1} ({where} has {len(node)} entries)"
        )
    return int(part)


# ----------------------------------------------------------------------------------------------
# Validation: clear errors before any compute
# ----------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_kind(where: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{where}: unknown value {value!r}; allowed: {', '.join(allowed)}")


def _check_int(where: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_int(value) or value < minimum:
        none = " or None" if optional else ""
        raise ValueError(f"{where}: got {value!r}; allowed: an integer >= {minimum}{none}")


def _check_real(
    where: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = True,
    optional: bool = False,
) -> None:
    """``value`` must be a finite real number in the interval [low, high) (ends as given)."""
    if optional and value is None:
        return
    ok = _is_real(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        none = " or None" if optional else ""
        raise ValueError(f"{where}: got {value!r}; allowed: a number in {interval}{none}")


def _check_fraction(where: str, value: Any, *, closed: bool = False) -> None:
    """A dropout-like rate: in [0, 1) (or [0, 1] when ``closed``)."""
    _check_real(where, value, 0.0, 1.0, high_open=not closed)


def normalize_resolution(resolution: Any) -> tuple[int, int]:
    """``128`` or ``(128, 192)`` (or ``[128, 192]``) → ``(height, width)``; anything else is a
    ``ValueError``."""
    if _is_int(resolution):
        size = (int(resolution), int(resolution))
    elif isinstance(resolution, (tuple, list)) and len(resolution) == 2:
        size = tuple(resolution)
    else:
        raise ValueError(
            f"resolution: got {resolution!r}; allowed: a positive integer or (height, width)"
        )
    if not all(_is_int(s) and s >= 1 for s in size):
        raise ValueError(
            f"resolution: got {resolution!r}; allowed: a positive integer or (height, width)"
        )
    return int(size[0]), int(size[1])


def image_d(model: ModelConfig) -> int:
    """The image size ``d`` of the interpolated cosine σ density's resolution shift (§3.1,
    simple diffusion): the side of a square image, the *longer* side of a rectangular one —
    as the reference code sets it (``max(input_size)``)."""
    return max(normalize_resolution(model.resolution))


def format_resolution(resolution: Any) -> str:
    """``128`` → ``"128"``, ``(128, 192)`` → ``"128x192"`` (names, file names, messages)."""
    h, w = normalize_resolution(resolution)
    return str(h) if h == w else f"{h}x{w}"


def parse_resolution(text: str) -> int | tuple[int, int]:
    """``"256"`` → ``256``, ``"256x512"`` → ``(256, 512)`` (height × width), as the command line
    and ``NAME@RES`` config names write a resolution; anything else is a ``ValueError``."""
    parts = str(text).strip().lower().replace("×", "x").split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(
            f"resolution {text!r}: allowed: a positive integer N (N×N) or HxW (e.g. 256x512)"
        )
    return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))


def resolution_multiple(model: ModelConfig) -> int:
    """What the image side must be divisible by: ``patch · 2^(levels − 1)`` for the hourglass
    (each level below the first halves the token grid), ``patch`` for DiT."""
    if model.arch == "dit":
        return model.patch_size
    return model.patch_size * 2 ** (len(model.levels) - 1)


def token_grids(model: ModelConfig, resolution: Any = None) -> list[tuple[int, int]]:
    """The token grid ``(h, w)`` of every level at ``resolution`` (None = the model's own).

    Level ``i`` of the hourglass sees ``(H / (patch · 2^i), W / (patch · 2^i))`` tokens.
    Raises ``ValueError`` if the resolution does not divide evenly.
    """
    h, w = normalize_resolution(model.resolution if resolution is None else resolution)
    multiple = resolution_multiple(model)
    if h % multiple or w % multiple:
        rule = (
            f"the patch size {multiple}"
            if model.arch == "dit"
            else f"patch_size·2^(levels−1) = {model.patch_size}·2^{len(model.levels) - 1} = "
            f"{multiple}"
        )
        near = [multiple * max(1, round(side / multiple)) for side in (h, w)]
        raise ValueError(
            f"resolution {h}×{w} is not divisible by {rule}; allowed: multiples of {multiple} "
            f"(e.g. {near[0]}×{near[1]})"
        )
    p = model.patch_size
    n_levels = 1 if model.arch == "dit" else len(model.levels)
    return [(h // (p * 2**i), w // (p * 2**i)) for i in range(n_levels)]


def min_resolution(model: ModelConfig) -> int:
    """The smallest square resolution at which ``model`` is valid: a multiple of
    :func:`resolution_multiple` at which every neighborhood kernel fits its level's grid and
    every Swin window divides it (handy for quick CPU forward passes of big models)."""
    _validate_model(model, None, grids=False)
    multiple = resolution_multiple(model)
    for k in range(1, 1 + 2**16):
        try:
            check_grids(model, k * multiple)
        except ValueError:
            continue
        return k * multiple
    raise ValueError(f"no valid resolution up to {multiple * 2**16} for this model")


def _validate_level(where: str, level: Any, arch: str, pos_emb: str) -> None:
    if not isinstance(level, LevelConfig):
        raise ValueError(f"{where}: expected a LevelConfig, got {type(level).__name__}")
    _check_int(f"{where}.depth", level.depth, 1)
    _check_int(f"{where}.width", level.width, 1)
    _check_int(f"{where}.head_dim", level.head_dim, 1)
    if level.width % level.head_dim:
        raise ValueError(
            f"{where}: width {level.width} is not a multiple of head_dim {level.head_dim}; "
            f"allowed: widths {level.head_dim}, {2 * level.head_dim}, {3 * level.head_dim}, …"
        )
    _check_kind(f"{where}.attention", level.attention, ATTENTION_KINDS)
    if level.attention == "neighborhood" and not (
        _is_int(level.kernel_size) and level.kernel_size >= 3 and level.kernel_size % 2 == 1
    ):
        raise ValueError(
            f"{where}.kernel_size: got {level.kernel_size!r}; allowed: an odd integer >= 3 "
            f"(a window centred on its query; NATTEN needs >= 2)"
        )
    if level.attention == "shifted-window":
        _check_int(f"{where}.window_size", level.window_size, 1)
    _check_fraction(f"{where}.dropout", level.dropout)
    _check_int(f"{where}.d_ff", level.d_ff, 1, optional=True)
    if arch == "hdit" and pos_emb in ROPE_POS_EMBS and level.head_dim % 8:
        raise ValueError(
            f"{where}.head_dim: got {level.head_dim}; axial RoPE rotates a quarter of each head "
            f"per axis pair, so it needs head_dim divisible by 8 (allowed: 8, 16, …, 64, …)"
        )


def check_grids(model: ModelConfig, resolution: Any = None) -> list[tuple[int, int]]:
    """The token grid ``(h, w)`` of every level at ``resolution`` (an int or ``(height,
    width)``; None = the model's own), checked: the image side divisible by
    ``patch_size · 2^(levels − 1)`` (:func:`token_grids`), every neighborhood kernel no larger
    than its level's grid, every Swin window dividing it.

    The one grid check: :func:`validate_config` runs it at build time, and the models run it
    on the size of every input (Python integers from ``.shape``: no compute, no host
    synchronisation)."""
    grids = token_grids(model, resolution)
    if model.arch == "dit":
        return grids
    size = "×".join(
        map(str, normalize_resolution(model.resolution if resolution is None else resolution))
    )
    for i, (level, (gh, gw)) in enumerate(zip(model.levels, grids)):
        where = f"model.levels[{i}]"
        if level.attention == "neighborhood" and level.kernel_size > min(gh, gw):
            raise ValueError(
                f"{where}.kernel_size: neighborhood kernel {level.kernel_size} is larger than its "
                f"{gh}×{gw} token grid at resolution {size}; allowed: an odd kernel <= "
                f"{min(gh, gw)} (or a higher resolution / fewer levels)"
            )
        if level.attention == "shifted-window" and (
            gh % level.window_size or gw % level.window_size
        ):
            divisors = [d for d in range(1, min(gh, gw) + 1) if gh % d == 0 and gw % d == 0]
            raise ValueError(
                f"{where}.window_size: {level.window_size} does not divide its {gh}×{gw} token "
                f"grid at resolution {size}; allowed: {divisors}"
            )
    return grids


def _validate_model(model: Any, resolution: Any, *, grids: bool = True) -> None:
    if not isinstance(model, ModelConfig):
        raise ValueError(f"model: expected a ModelConfig, got {type(model).__name__}")
    _check_kind("model.arch", model.arch, ARCHS)
    _check_kind("model.ffn", model.ffn, FFN_KINDS)
    _check_kind("model.pos_emb", model.pos_emb, POS_EMB_KINDS)
    _check_kind("model.rope_freqs", model.rope_freqs, ROPE_FREQS)
    if model.rope_freqs != "image" and (model.arch != "hdit" or model.pos_emb not in ROPE_POS_EMBS):
        raise ValueError(
            f"model.rope_freqs: got {model.rope_freqs!r} with arch {model.arch!r} and pos_emb "
            f"{model.pos_emb!r}; scaled RoPE frequencies need the hourglass with RoPE (pos_emb "
            f"{' or '.join(map(repr, ROPE_POS_EMBS))}); allowed otherwise: 'image'"
        )
    _check_kind("model.skip", model.skip, SKIP_KINDS)
    if not isinstance(model.levels, list) or not model.levels:
        raise ValueError(
            f"model.levels: got {model.levels!r}; allowed: a non-empty list of LevelConfig"
        )
    if model.arch == "dit" and len(model.levels) != 1:
        raise ValueError(
            f"model.levels: DiT takes exactly one level (depth, width, head_dim), got "
            f"{len(model.levels)}"
        )
    for i, level in enumerate(model.levels):
        _validate_level(f"model.levels[{i}]", level, model.arch, model.pos_emb)
    if model.arch == "hdit" and model.pos_emb in ADDITIVE_POS_EMBS and model.levels[0].width % 4:
        raise ValueError(
            f"model.levels[0].width: got {model.levels[0].width}; the additive position table "
            f"starts from a 2-D sin-cos code, which needs a width divisible by 4"
        )
    _check_int("model.patch_size", model.patch_size, 1)
    _check_int("model.in_channels", model.in_channels, 1)
    _check_int("model.out_channels", model.out_channels, 1, optional=True)
    _check_int("model.num_classes", model.num_classes, 0)
    _check_int("model.aug_dim", model.aug_dim, 0)
    try:
        normalize_resolution(model.resolution)
    except ValueError:
        raise ValueError(
            f"model.resolution: got {model.resolution!r}; allowed: a positive integer n (n×n) "
            f"or (height, width), two positive integers (JSON: n or [height, width])"
        ) from None
    mapping = model.mapping
    if not isinstance(mapping, MappingConfig):
        raise ValueError(f"model.mapping: expected a MappingConfig, got {type(mapping).__name__}")
    _check_int("model.mapping.depth", mapping.depth, 0)
    _check_int("model.mapping.width", mapping.width, 2)
    if mapping.width % 2:
        raise ValueError(
            f"model.mapping.width: got {mapping.width}; the Fourier-feature noise embedding "
            f"(cos | sin halves) needs an even width"
        )
    _check_int("model.mapping.d_ff", mapping.d_ff, 1, optional=True)
    _check_fraction("model.mapping.dropout", mapping.dropout)
    if grids:
        check_grids(model, resolution)


def _validate_diffusion(d: Any) -> None:
    if not isinstance(d, DiffusionConfig):
        raise ValueError(f"diffusion: expected a DiffusionConfig, got {type(d).__name__}")
    _check_real("diffusion.sigma_data", d.sigma_data, 0.0, low_open=True)
    _check_real("diffusion.sigma_min", d.sigma_min, 0.0, low_open=True)
    _check_real("diffusion.sigma_max", d.sigma_max, 0.0, low_open=True)
    if d.sigma_min >= d.sigma_max:
        raise ValueError(
            f"diffusion: sigma_min {d.sigma_min} must be smaller than sigma_max {d.sigma_max}"
        )
    for bound in ("sampling_sigma_min", "sampling_sigma_max"):
        _check_real(f"diffusion.{bound}", getattr(d, bound), 0.0, low_open=True, optional=True)
    lo = d.sampling_sigma_min or d.sigma_min
    hi = d.sampling_sigma_max or d.sigma_max
    if lo >= hi:
        raise ValueError(
            f"diffusion: the sampling range [{lo}, {hi}] (sampling_sigma_min/max, else the "
            f"density's sigma_min/max) must have min < max"
        )
    _check_kind("diffusion.process", d.process, DIFFUSION_PROCESSES)
    _check_kind("diffusion.loss_weighting", d.loss_weighting, LOSS_WEIGHTINGS)
    _check_real("diffusion.gamma", d.gamma, 0.0, low_open=True, optional=True)
    _check_kind("diffusion.sigma_density", d.sigma_density, SIGMA_DENSITIES)
    _check_real("diffusion.lognormal_mean", d.lognormal_mean, -math.inf)
    _check_real("diffusion.lognormal_std", d.lognormal_std, 0.0, low_open=True)
    _check_int("diffusion.noise_d_low", d.noise_d_low, 1)
    _check_int("diffusion.noise_d_high", d.noise_d_high, 1, optional=True)


def _check_ddpm_model(config: Config) -> None:
    """The DDPM path (R1) needs DiT with its learned-variance head: 2·in_channels outputs."""
    m = config.model
    if config.diffusion.process != "ddpm":
        return
    if m.arch != "dit" or m.out_channels != 2 * m.in_channels:
        raise ValueError(
            f"diffusion.process='ddpm' (DiT's learned-variance DDPM): got model.arch={m.arch!r}, "
            f"model.out_channels={m.out_channels!r}; allowed: arch 'dit' with out_channels = "
            f"2·in_channels = {2 * m.in_channels} (ε̂ and the variance values)"
        )


def sampling_sigma_range(config: Config) -> tuple[float, float]:
    """The sampler's σ range: ``diffusion.sampling_sigma_min/max``, each defaulting to the
    training density's bound (the reference samples over the model's σ range, 1e-2 … 80/160,
    and widens only the training density, to [1e-3, 1e3])."""
    d = config.diffusion
    return d.sampling_sigma_min or d.sigma_min, d.sampling_sigma_max or d.sigma_max


def _validate_training(t: Any) -> None:
    if not isinstance(t, TrainingConfig):
        raise ValueError(f"training: expected a TrainingConfig, got {type(t).__name__}")
    _check_int("training.batch_size", t.batch_size, 1)
    _check_int("training.grad_accum", t.grad_accum, 1)
    if t.batch_size % t.grad_accum:
        raise ValueError(
            f"training.grad_accum={t.grad_accum} must divide training.batch_size="
            f"{t.batch_size} (global batch = micro-batch × grad_accum × processes)"
        )
    for name in ("tensorboard", "wandb", "ema_warmup", "hflip"):
        if not isinstance(getattr(t, name), bool):
            raise ValueError(f"training.{name}: got {getattr(t, name)!r}; allowed: true, false")
    _check_int("training.steps", t.steps, 0)
    if t.batch_schedule is not None:
        previous = (0, t.batch_size)
        for i, entry in enumerate(t.batch_schedule):
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise ValueError(
                    f"training.batch_schedule[{i}]: got {entry!r}; allowed: [from_step, batch]"
                )
            _check_int(f"training.batch_schedule[{i}][0]", entry[0], previous[0] + 1)
            _check_int(f"training.batch_schedule[{i}][1]", entry[1], 1)
            if entry[1] % (t.batch_size // t.grad_accum):
                raise ValueError(
                    f"training.batch_schedule[{i}]: batch {entry[1]} must be a multiple of the "
                    f"micro-batch × processes, batch_size / grad_accum = "
                    f"{t.batch_size // t.grad_accum}"
                )
            previous = tuple(entry)
    _check_real("training.lr", t.lr, 0.0, low_open=True)
    if not isinstance(t.betas, (tuple, list)) or len(t.betas) != 2:
        raise ValueError(f"training.betas: got {t.betas!r}; allowed: two numbers in [0, 1)")
    for i, beta in enumerate(t.betas):
        _check_fraction(f"training.betas[{i}]", beta)
    _check_real("training.eps", t.eps, 0.0, low_open=True)
    _check_real("training.weight_decay", t.weight_decay, 0.0)
    _check_real("training.mapping_lr_scale", t.mapping_lr_scale, 0.0, low_open=True)
    _check_fraction("training.ema_decay", t.ema_decay)
    _check_fraction("training.cond_dropout", t.cond_dropout, closed=True)
    _check_fraction("training.augment_p", t.augment_p, closed=True)
    _check_real("training.grad_clip", t.grad_clip, 0.0, low_open=True, optional=True)
    _check_real("training.ema_power", t.ema_power, 0.0, low_open=True)
    if t.xflip_p is not None:
        _check_fraction("training.xflip_p", t.xflip_p, closed=True)
    if t.hflip and t.augment_p > 0:
        raise ValueError(
            f"training.hflip=true with training.augment_p={t.augment_p}: the augmentation "
            "pipeline flips on its own; allowed: hflip with augment_p = 0, or hflip=false"
        )
    _check_kind("training.precision", t.precision, PRECISIONS)
    _check_kind("training.checkpointing", t.checkpointing, CHECKPOINTING_KINDS)
    _check_int("training.seed", t.seed, 0)
    _check_int("training.checkpoint_every", t.checkpoint_every, 1)
    _check_int("training.keep_checkpoints", t.keep_checkpoints, 1)
    _check_int("training.sample_every", t.sample_every, 0)
    _check_int("training.log_every", t.log_every, 1)


def validate_config(
    config: Config | ModelConfig,
    resolution: int | tuple[int, int] | None = None,
    *,
    grids: bool = True,
) -> None:
    """Check a :class:`Config` (model, diffusion and training parts) or a :class:`ModelConfig`;
    raise ``ValueError`` naming the offending field, its value and what is allowed.

    ``resolution`` (an int or ``(height, width)``; None = ``config.model.resolution``) is the
    image size the resolution-dependent checks use (:func:`check_grids`): the image side must be
    divisible by ``patch_size · 2^(levels − 1)``; a neighborhood kernel must fit in its level's
    token grid; a Swin window must divide it. ``grids=False`` leaves those out (a model built
    from the spec checks them on the size of each input). Nothing is built or computed.
    """
    if isinstance(config, Config):
        if not isinstance(config.name, str):
            raise ValueError(f"name: got {config.name!r}; allowed: a string")
        _validate_model(config.model, resolution, grids=grids)
        _validate_diffusion(config.diffusion)
        _check_ddpm_model(config)
        _validate_training(config.training)
    elif isinstance(config, ModelConfig):
        _validate_model(config, resolution, grids=grids)
    else:
        raise ValueError(
            f"validate_config expects a Config or ModelConfig, got {type(config).__name__}"
        )


# ----------------------------------------------------------------------------------------------
# Resolution adaptation (App. A, §5.2)
# ----------------------------------------------------------------------------------------------


def at_resolution(config: Config, resolution: int | tuple[int, int]) -> Config:
    """``config`` adapted to ``resolution`` (n, or ``(height, width)``) by App. A's rule (module
    docstring).

    With ``k = ⌊log2(min(H, W) / min(H₀, W₀))⌋`` (``H₀ × W₀`` = ``config.model.resolution``;
    for square sizes ``⌊log2(n / n₀)⌋``): ``k > 0`` prepends ``k`` copies of the outermost
    level, ``k < 0`` drops ``|k|`` outer levels (keeping at least one); a single-level model
    keeps its level. The *shorter* side's doublings count: the innermost grid's shorter side
    stays as at the base size (a longer side leaves more tokens there, never fewer than the
    kernels need), and H × W and W × H get the same levels. The name gets an ``@resolution``
    suffix (``@256``, ``@256x512``).
    """
    if not isinstance(config, Config):
        raise ValueError(f"at_resolution expects a Config, got {type(config).__name__}")
    size = normalize_resolution(resolution)
    model = config.model
    base = normalize_resolution(model.resolution)
    if size == base:
        return config
    resolution = size[0] if size[0] == size[1] else size
    levels = [replace(level) for level in model.levels]
    if model.arch == "hdit" and len(levels) > 1:
        k = math.floor(math.log2(min(size) / min(base)))  # the shorter side's doublings
        if k > 0:
            levels = [replace(levels[0]) for _ in range(k)] + levels
        elif k < 0:
            levels = levels[min(-k, len(levels) - 1) :]
    base_name = config.name.split("@")[0]
    new = replace(
        config,
        name=f"{base_name}@{format_resolution(resolution)}",
        model=replace(model, levels=levels, mapping=replace(model.mapping), resolution=resolution),
        diffusion=replace(config.diffusion),
        training=replace(config.training),
    )
    validate_config(new)
    return new


def all_local(config: Config, kernel_size: int | None = None) -> Config:
    """``config`` with *every* level local (§7: "if all levels are set to perform local
    attention only … transformer-based models that can scale to arbitrary resolutions"): the
    global levels become neighborhood attention with ``kernel_size`` (default: the outer
    level's kernel), nothing else changed. A copy; validated. Issue 19's all-local model ``L``
    is step D made all-local, so that L − D isolates the global level as C − D isolates the
    position code (both trained with D's SNR weighting)."""
    out = copy.deepcopy(config)
    if out.model.arch != "hdit":
        raise ValueError(f"all_local: needs an hourglass (arch 'hdit'), got {out.model.arch!r}")
    kernel = out.model.levels[0].kernel_size if kernel_size is None else kernel_size
    for level in out.model.levels:
        if level.attention == "global":
            level.attention, level.kernel_size = "neighborhood", kernel
    out.validate()
    return out
