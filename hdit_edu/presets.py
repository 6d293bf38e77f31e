"""The named configurations (§5.2, Tables 1, 2, 5, 6): one registry of every name a command,
a notebook or a study accepts.

:data:`PRESETS` maps each name to a :class:`Preset` — how the configuration is built and what it
is, in one line; :func:`get_config` builds one by name (case-insensitive; ``"NAME@RES"`` adapts it
to another resolution by App. A's rule, :func:`hdit_edu.configs.at_resolution`; a path loads a
JSON file), :func:`config_names` lists them. The names, in groups:

* ``toy`` — the small HDiT of the 32×32 toy set (:func:`toy`; the shipped run
  ``data/checkpoints/toy-hdit``);
* :data:`PAPER_CONFIGS` — Table 6's ``imagenet128``, ``ffhq1024``, ``imagenet256``
  (:func:`paper_config`);
* :data:`ABLATION_STEPS` ``A`` … ``E`` and :data:`BASELINES` ``R1`` … ``R4`` — Table 1
  (:func:`ablation_step`, at 128² and at every doubling);
* :data:`SKIP_VARIANTS` — Table 2's skip merges on step E (:func:`skip_variant`);
* :data:`MIN_SNR_VARIANTS` — Table 5's min-SNR γ = 5 and 4 on D's model;
* :data:`FOLLOW_UPS` — configurations of this project's own questions: ``L`` (issue 19: D with
  every level local, §7) and ``C-smsnr`` (C trained with E's weighting: the toy ablation's
  follow-up).

A preset is either a model of its own (``build``) or a *named change* of another preset
(``base`` + ``change``: the Table 5 and follow-up entries). A change is applied after any
rescaling, so that it means the same at the paper's size and on the toy set:
:func:`on_toy_task` moves a preset onto one of the toy ablation's :data:`TOY_TASKS`
(:func:`hdit_edu.profiles.to_toy_scale`, then the task's patch, kernel and window) and applies
the change there — ``L`` on the toy task is the toy D with its global level made local, not the
toy move of the 128² all-local model.

The schema these configs fill, their validation and their JSON form live in
:mod:`hdit_edu.configs`; the cpu profile's move of any config onto the toy set in
:mod:`hdit_edu.profiles`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .configs import (
    Config,
    DiffusionConfig,
    LevelConfig,
    MappingConfig,
    ModelConfig,
    TrainingConfig,
    all_local,
    at_resolution,
    load_config,
    parse_resolution,
    validate_config,
)
from .kinds import SKIP_KINDS
from .profiles import CPU_SCALE, to_toy_scale

# ----------------------------------------------------------------------------------------------
# The builders: the paper's models, the toy model
# ----------------------------------------------------------------------------------------------

ABLATION_BASE_RESOLUTION = 128
ABLATION_STEPS = ("A", "B1", "B2", "C", "D", "E")
BASELINES = ("R1", "R2", "R3", "R4")
SKIP_VARIANTS = ("E-lerp", "E-add", "E-concat")
PAPER_CONFIGS = ("imagenet128", "ffhq1024", "imagenet256")
MIN_SNR_VARIANTS = ("D-minsnr5", "D-minsnr4")
FOLLOW_UPS = ("L", "C-smsnr")

IMAGENET_CLASSES = 1000

# Table 1, steps A → E (§5.2): what each step changes. Columns: attention of the outer
# (non-innermost) levels, FFN, position embedding, loss weighting. The innermost level (16²
# tokens at 128²) is global in every step.
_STEP_FEATURES = {
    "A": ("global", "gelu", "additive", "snr"),  # global attention hourglass, RMSNorm blocks
    "B1": ("shifted-window", "gelu", "additive", "snr"),  # + Swin (window 8)
    "B2": ("neighborhood", "gelu", "additive", "snr"),  # + neighborhood attention (7×7)
    "C": ("neighborhood", "geglu", "additive", "snr"),  # + GEGLU (hidden 3·d)
    "D": ("neighborhood", "geglu", "rope", "snr"),  # + axial RoPE
    "E": ("neighborhood", "geglu", "rope", "soft-min-snr"),  # + soft-min-SNR (same model)
}

# DiT's own optimiser (Peebles & Xie 2023), used for R1 and — footnote 3 of §5.2 — for R2.
_DIT_TRAINING = {"lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 0.0}


def _imagenet_training(**overrides: Any) -> TrainingConfig:
    """Table 6's ImageNet recipe (AdamW lr 5e-4, betas (0.9, 0.95), wd 1e-2, EMA 0.9999, batch
    256, 400k steps, bf16, class dropout 0.1, no augmentation). The data set is a path to an
    ImageNet-style folder that the user provides."""
    return TrainingConfig(**{"dataset": "data/imagenet/train", **overrides})


def _hourglass_step(step: str) -> Config:
    """Ablation step ``A`` … ``E`` at 128² (Table 6 "Ablation E": depths [2, 11], widths [384,
    768], head dim 64, kernel 7, mapping depth 1 / width 768)."""
    attention, ffn, pos_emb, weighting = _STEP_FEATURES[step]
    outer = LevelConfig(depth=2, width=384, attention=attention, kernel_size=7, window_size=8)
    inner = LevelConfig(depth=11, width=768, attention="global")
    return Config(
        name=step,
        model=ModelConfig(
            levels=[outer, inner],
            mapping=MappingConfig(depth=1, width=768),
            patch_size=4,
            num_classes=IMAGENET_CLASSES,
            ffn=ffn,
            pos_emb=pos_emb,
            skip="lerp",
            resolution=ABLATION_BASE_RESOLUTION,
        ),
        diffusion=DiffusionConfig(loss_weighting=weighting),
        training=_imagenet_training(),
    )


def _baseline(name: str) -> Config:
    """R1–R4 at 128² (§5.2 "Baselines").

    * R1, R2: DiT-B/4 in pixel space — the original architecture (adaLN-Zero, MLP ratio 4,
      fixed sin-cos positions, learned σ → 6 output channels, no augmentation input), trained
      with DiT's own optimiser settings (footnote 3). R1 is DiT's codebase: its discrete DDPM
      (``diffusion.process = "ddpm"``, :mod:`hdit_edu.ddpm`: linear β over 1,000 steps, the
      network embeds the step t, hybrid loss with the learned variance, 250-step ancestral
      sampling) and DiT's train.py (facebookresearch/DiT): AdamW lr 1e-4, betas (0.9, 0.999)
      (PyTorch's default), eps 1e-8, no weight decay, one learning rate for every parameter
      (DiT has no mapping network), no clipping, fp32, batch 256, class dropout 0.1, EMA decay
      0.9999 from the first step with no warm-up (``training.ema_warmup = False``), and
      ``RandomHorizontalFlip`` on every image (``training.hflip``; no other augmentation).
      DiT's sample.py: 250 respaced steps (``hdit_edu.sampling.generate``'s default for a DDPM
      run). On the toy set (:func:`hdit_edu.profiles.to_toy_scale`) R1 keeps all of this but
      the sizes, as every arm does (the toy widths and depths, 32² toy images in pixel space
      instead of 256² ImageNet latents, batch 16) and its EMA: the constant decay becomes
      :data:`hdit_edu.profiles.TOY_CONSTANT_EMA` = 0.995 (0.9999 would leave a run of a few
      thousand steps at its initial weights). R2 wraps the same network in this trainer
      (EDM, the network sees c_noise(σ)), with SNR weighting (DiT's ε-MSE is 1/σ² in x0
      space) and this trainer's clipping, precision, EMA warm-up and (no) augmentation.
    * R3: "a hyperparameter-matched single-level version of ablation step A": one global level,
      depth 12, width 768 (12 heads), GELU 4·d, additive positions, AdaRMSNorm + the mapping
      network (depth 1, width 768), our optimiser; SNR weighting. R4 = R3 + soft-min-SNR.
    """
    if name in ("R1", "R2"):
        model = ModelConfig(
            arch="dit",
            levels=[LevelConfig(depth=12, width=768, head_dim=64, attention="global", d_ff=3072)],
            patch_size=4,
            out_channels=6,
            num_classes=IMAGENET_CLASSES,
            aug_dim=0,
            ffn="gelu",
            pos_emb="additive",
            resolution=ABLATION_BASE_RESOLUTION,
        )
        if name == "R1":  # DiT's train.py: no clipping, no autocast, constant EMA, x-flip
            diffusion = DiffusionConfig(process="ddpm", loss_weighting="snr")
            training = _imagenet_training(
                **_DIT_TRAINING, grad_clip=None, precision="fp32", ema_warmup=False, hflip=True
            )
        else:
            diffusion = DiffusionConfig(loss_weighting="snr")
            training = _imagenet_training(**_DIT_TRAINING)
        return Config(name=name, model=model, diffusion=diffusion, training=training)
    model = ModelConfig(
        levels=[LevelConfig(depth=12, width=768, attention="global")],
        mapping=MappingConfig(depth=1, width=768),
        patch_size=4,
        num_classes=IMAGENET_CLASSES,
        ffn="gelu",
        pos_emb="additive",
        resolution=ABLATION_BASE_RESOLUTION,
    )
    weighting = "snr" if name == "R3" else "soft-min-snr"
    return Config(
        name=name,
        model=model,
        diffusion=DiffusionConfig(loss_weighting=weighting),
        training=_imagenet_training(),
    )


def ablation_step(
    name: str, resolution: int = ABLATION_BASE_RESOLUTION, *, skip: str | None = None
):
    """A model of Table 1: ``"A"``, ``"B1"``, ``"B2"``, ``"C"``, ``"D"``, ``"E"`` (§5.2) or the
    baselines ``"R1"`` … ``"R4"``, at ``resolution`` (128² as trained; 256², 512² … as the
    GFLOP columns count them — see the module docstring for the levels each doubling adds).

    ``skip`` (``"lerp"`` | ``"add"`` | ``"concat"``) replaces the skip merge (Table 2 ablates it
    on step E; :func:`skip_variant`).

    At 128²: A … E are ``[2 @ 384 (outer, local — global for A), 11 @ 768 (global)]``, patch 4,
    head dim 64, mapping depth 1 / width 768, 1000 classes (+1 dropped), augmentation input 9
    (as k-diffusion's model always has), lerp skips.
    """
    if name in ABLATION_STEPS:
        config = _hourglass_step(name)
    elif name in BASELINES:
        config = _baseline(name)
    else:
        raise ValueError(
            f"unknown ablation step {name!r}; allowed: {', '.join(ABLATION_STEPS + BASELINES)}"
        )
    if skip is not None:
        if skip not in SKIP_KINDS:
            raise ValueError(f"skip: unknown value {skip!r}; allowed: {', '.join(SKIP_KINDS)}")
        if config.model.arch != "hdit" or len(config.model.levels) < 2:
            raise ValueError(f"skip={skip!r}: step {name} has no hourglass skips to replace")
        config.model.skip = skip
        if skip != "lerp":
            config.name = f"{name}-{skip}"
    return at_resolution(config, resolution)


def skip_variant(skip: str, resolution: int = ABLATION_BASE_RESOLUTION) -> Config:
    """Table 2: ablation step E with the skip merge ``"lerp"`` (ours, = E), ``"add"`` or
    ``"concat"`` (concatenate, then a pointwise projection back to the width)."""
    return ablation_step("E", resolution, skip=skip)


# The authors' trainer's recipe (k-diffusion train.py and its image_transformer_v2 configs,
# /work/refs-style checkout: configs/config_oxford_flowers*.json) where Table 6 is silent:
REFERENCE_RECIPE = {
    "diffusion.sampling_sigma_min": 1e-2,  # model.sigma_min
    "diffusion.sampling_sigma_max": 160.0,  # model.sigma_max of its HDiT configs (80 at 32²)
    "training.ema_power": 0.75,  # ema_sched.power of its HDiT configs
    "training.grad_clip": 1.0,  # train.py: accelerator.clip_grad_norm_(…, 1.) every step
}
REFERENCE_XFLIP_P = 1.0  # KarrasAugmentationPipeline: x-flip a fair coin whenever it is on


def reference_recipe(config: Config) -> Config:
    """``config`` with :data:`REFERENCE_RECIPE` (and the reference's x-flip when augmentation
    is on), in place; returns it."""
    for key, value in REFERENCE_RECIPE.items():
        part, field_name = key.split(".")
        setattr(getattr(config, part), field_name, value)
    if config.training.augment_p > 0:
        config.training.xflip_p = REFERENCE_XFLIP_P
    return config


def paper_config(name: str) -> Config:
    """A model of Table 6: ``"imagenet128"``, ``"ffhq1024"`` or ``"imagenet256"``.

    Common to all three (Table 6): patch 4, head dim 64 (heads = width / 64), neighborhood
    kernel 7, GEGLU (hidden 3·d), axial RoPE, lerp skips, σ_data 0.5, σ ∈ [1e-3, 1e3],
    interpolated-cosine σ density, soft-min-SNR, AdamW (lr 5e-4, betas (0.9, 0.95), eps 1e-8,
    wd 1e-2), EMA 0.9999, batch 256, bf16, conditioning dropout 0.1. Where Table 6 is silent,
    the reference trainer's recipe (:func:`reference_recipe`): sampling σ ∈ [1e-2, 160], EMA
    warm-up power 0.75, gradient clipping at 1.0, x-flip of half the images when augmenting.

    * ``imagenet128`` (117M, 31 GFLOP): ablation step E — depths [2, 11], widths [384, 768],
      1 neighborhood + 1 global level, mapping depth 1, width 768; 400k steps.
    * ``ffhq1024`` (85M, 206 GFLOP): widths [128, 256, 384, 768, 1024], 3 neighborhood + 2
      global levels (global at 32² and 16², footnote 2), dropout [0, 0, 0, 0, 0.1],
      unconditional, augmentation p = 0.12, mapping depth 2; 1M steps.
      **Ambiguity resolved:** Table 6 lists four depths ``[2, 2, 2, 2]`` for five widths; the
      authors' code gives every level depth 2 — ``[2, 2, 2, 2, 2]`` — which reproduces 206
      GFLOP (and 85M parameters).
    * ``imagenet256`` (557M, 198 GFLOP): depths [2, 2, 16], widths [384, 768, 1536], 2
      neighborhood + 1 global level, mapping depth 2; 2.2M steps.

    **Mapping width (ambiguity resolved).** Table 6 lists "Mapping Width 768" for all three. For
    ImageNet-128 that is the width (117.0M parameters). For FFHQ-1024 and ImageNet-256, width 768
    gives 104.0M / 598.3M parameters — not 85M / 557M. The reading that reproduces both is
    mapping width **256** (k-diffusion's default ``mapping_width``) with hidden size d_ff =
    3·256 = **768** — the 768 of the table is the mapping network's FFN width: 85.08M and
    557.42M parameters. (Mapping width 256 at depth 1 would give 84.5M / 556.8M; Table 6's
    depth 2 fits both better.) The mapping network runs once per image, so FLOPs cannot tell
    the readings apart (< 0.01 GFLOP).
    """
    if name == "imagenet128":
        config = ablation_step("E")
        config.name = "imagenet128"
        return reference_recipe(config)
    if name == "ffhq1024":
        widths = [128, 256, 384, 768, 1024]
        attentions = ["neighborhood"] * 3 + ["global"] * 2
        dropouts = [0.0, 0.0, 0.0, 0.0, 0.1]
        model = ModelConfig(
            levels=[
                LevelConfig(depth=2, width=w, attention=a, kernel_size=7, dropout=p)
                for w, a, p in zip(widths, attentions, dropouts)
            ],
            mapping=MappingConfig(depth=2, width=256),
            num_classes=0,
            resolution=1024,
        )
        training = TrainingConfig(steps=1_000_000, augment_p=0.12, dataset="data/ffhq1024")
        config = Config(name=name, model=model, diffusion=DiffusionConfig(), training=training)
        return reference_recipe(config)
    if name == "imagenet256":
        model = ModelConfig(
            levels=[
                LevelConfig(depth=2, width=384, attention="neighborhood", kernel_size=7),
                LevelConfig(depth=2, width=768, attention="neighborhood", kernel_size=7),
                LevelConfig(depth=16, width=1536, attention="global"),
            ],
            mapping=MappingConfig(depth=2, width=256),
            num_classes=IMAGENET_CLASSES,
            resolution=256,
        )
        # Footnote 6: 2M steps at batch 256, then 50k at 512, 100k at 1,024 and 50k at 2,048.
        schedule = [[2_000_000, 512], [2_050_000, 1024], [2_150_000, 2048]]
        training = _imagenet_training(steps=2_200_000, batch_schedule=schedule)
        config = Config(name=name, model=model, diffusion=DiffusionConfig(), training=training)
        return reference_recipe(config)
    raise ValueError(f"unknown paper config {name!r}; allowed: {', '.join(PAPER_CONFIGS)}")


def toy() -> Config:
    """The small class-conditional HDiT for the 32×32 toy data set (docs/ARCHITECTURE.md's
    "6M-parameter toy HDiT"; about 5.9M parameters): patch 2, levels ``[2 @ 128, neighborhood 7×7 on the 16×16
    grid; 4 @ 256, global on 8×8]``, GEGLU, axial RoPE, lerp skips, mapping depth 1 / width 256,
    8 classes (+1 dropped), augmentation input 9.

    Training: the paper's optimiser (AdamW 5e-4, betas (0.9, 0.95), wd 1e-2) at batch 32 for
    5000 steps in fp32 (CPU); EMA decay 0.999 (0.9999 averages over ~10⁴ steps — longer than
    the run). Diffusion as the paper (soft-min-SNR, interpolated cosine, which at 32² has no
    resolution shift: ``noise_d_low`` = 32 = the resolution).
    """
    model = ModelConfig(
        levels=[
            LevelConfig(depth=2, width=128, attention="neighborhood", kernel_size=7),
            LevelConfig(depth=4, width=256, attention="global"),
        ],
        mapping=MappingConfig(depth=1, width=256),
        patch_size=2,
        num_classes=8,  # the toy set's classes: len(hdit_edu.toy.TOY_CLASSES)
        resolution=32,
    )
    training = TrainingConfig(
        batch_size=32,
        steps=5000,
        ema_decay=0.999,
        grad_clip=None,  # the shipped toy run and the notebooks' records were made unclipped
        precision="fp32",
        dataset="toy",
        checkpoint_every=500,
        sample_every=500,
    )
    return Config(name="toy", model=model, diffusion=DiffusionConfig(), training=training)


# ----------------------------------------------------------------------------------------------
# The registry: every name, one line each
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """One named configuration: what it is (``description``, one line) and how it is built —
    ``build()`` for a model of its own, or ``change(config of base)`` for a named change of the
    preset ``base`` (applied after any rescaling: :func:`on_toy_task`)."""

    description: str
    build: Callable[[], Config] | None = None
    base: str | None = None
    change: Callable[[Config], Config] | None = None


def _min_snr(gamma: float) -> Callable[[Config], Config]:
    """Table 5's change: the loss weighting min-SNR with ``gamma`` (the model unchanged)."""

    def change(config: Config) -> Config:
        config.diffusion.loss_weighting, config.diffusion.gamma = "min-snr", float(gamma)
        return config

    return change


def _with_e_weighting(config: Config) -> Config:
    """The follow-up's change: step E's loss weighting (Table 1's last column) on another model."""
    config.diffusion.loss_weighting = _STEP_FEATURES["E"][3]
    return config


_DESCRIPTIONS = {
    "A": "Table 1: global-attention hourglass, GELU, additive positions, SNR weighting",
    "B1": "Table 1: A with Swin (shifted windows 8×8) on the outer level",
    "B2": "Table 1: A with neighborhood attention (7×7) on the outer level",
    "C": "Table 1: B2 with GEGLU",
    "D": "Table 1: C with axial RoPE",
    "E": "Table 1: D with soft-min-SNR weighting (the model of imagenet128)",
    "R1": "§5.2 baseline: DiT-B/4 in pixel space as DiT trains and samples it (DDPM, 250 steps)",
    "R2": "§5.2 baseline: DiT-B/4 in pixel space with DiT's optimiser (footnote 3)",
    "R3": "§5.2 baseline: single-level HDiT matched to A (12 global layers at 768), SNR",
    "R4": "§5.2 baseline: R3 with soft-min-SNR weighting",
}

PRESETS: dict[str, Preset] = {
    "toy": Preset("the 32×32 toy-set HDiT (~5.9M parameters; the shipped run's model)", toy),
    "imagenet128": Preset(
        "Table 6: ImageNet 128², step E with the reference recipe (117M, 31 GFLOP)",
        lambda: paper_config("imagenet128"),
    ),
    "ffhq1024": Preset(
        "Table 6: FFHQ 1024², five levels, unconditional (85M, 206 GFLOP)",
        lambda: paper_config("ffhq1024"),
    ),
    "imagenet256": Preset(
        "Table 6: ImageNet 256², three levels (557M, 198 GFLOP)",
        lambda: paper_config("imagenet256"),
    ),
    **{
        name: Preset(_DESCRIPTIONS[name], lambda name=name: ablation_step(name))
        for name in (*ABLATION_STEPS, *BASELINES)
    },
    "E-lerp": Preset("Table 2: E's skip merge, a learned lerp (= E)", lambda: skip_variant("lerp")),
    "E-add": Preset("Table 2: E with additive skips", lambda: skip_variant("add")),
    "E-concat": Preset(
        "Table 2: E with concatenated skips and a projection", lambda: skip_variant("concat")
    ),
    "D-minsnr5": Preset("Table 5: D's model with min-SNR γ = 5", base="D", change=_min_snr(5)),
    "D-minsnr4": Preset("Table 5: D's model with min-SNR γ = 4", base="D", change=_min_snr(4)),
    "L": Preset(
        "issue 19 (§7): D with every level neighborhood attention (all-local)",
        base="D",
        change=all_local,
    ),
    "C-smsnr": Preset(
        "the toy ablation's follow-up: C trained with E's soft-min-SNR weighting",
        base="C",
        change=_with_e_weighting,
    ),
}


def config_names() -> tuple[str, ...]:
    """Every name :func:`get_config` builds, in the registry's order."""
    return tuple(PRESETS)


def _canonical(name: str) -> str | None:
    """The registry's spelling of ``name`` (case-insensitive), or None."""
    return {n.lower(): n for n in PRESETS}.get(name.lower())


def _build(name: str) -> Config:
    """The config of the registry name ``name`` (already canonical) at its own size."""
    preset = PRESETS[name]
    if preset.base is None:
        return preset.build()
    config = preset.change(_build(preset.base))
    config.name = name
    config.validate()
    return config


def get_config(name_or_path: str | Path) -> Config:
    """A config by name — one of :func:`config_names` (``"toy"``, ``"imagenet128"``,
    ``"ffhq1024"``, ``"imagenet256"``, ``"A"`` … ``"E"``, ``"R1"`` … ``"R4"``, ``"E-add"``,
    ``"D-minsnr5"``, ``"L"``, …; case-insensitive), optionally with a resolution suffix
    ``"NAME@RES"`` (:func:`~hdit_edu.configs.at_resolution`, e.g. ``"E@512"``, or height ×
    width: ``"E@256x512"``) — or the path of a JSON config file."""
    if isinstance(name_or_path, Path) or str(name_or_path).endswith(".json"):
        config = load_config(name_or_path)
        try:
            validate_config(config)
        except ValueError as e:
            raise ValueError(f"config file {str(name_or_path)!r}: {e}") from None
        return config
    if not isinstance(name_or_path, str):
        raise ValueError(
            f"get_config: got {name_or_path!r}; allowed: a config name or a JSON file path"
        )
    text = name_or_path.strip()
    name, _, suffix = text.partition("@")
    canonical = _canonical(name)
    if canonical is None:
        if Path(text).exists():
            return get_config(Path(text))
        raise ValueError(
            f"unknown config {name_or_path!r}; allowed: {', '.join(PRESETS)} "
            f"(optionally NAME@RESOLUTION, e.g. E@256) or a path to a .json file"
        )
    config = _build(canonical)
    if suffix:
        try:
            resolution = parse_resolution(suffix)
        except ValueError:
            raise ValueError(
                f"config {name_or_path!r}: resolution suffix {suffix!r} is not a positive integer "
                f"N or HxW (e.g. E@256, E@256x512)"
            ) from None
        config = at_resolution(config, resolution)
    return config


# ----------------------------------------------------------------------------------------------
# The toy ablation's tasks: a preset on the 32×32 toy set
# ----------------------------------------------------------------------------------------------

# Toy tasks (32×32 toy set, CPU_SCALE widths 64/128, depths 1/2, head dim 32, mapping width 128):
# name → (patch size, outer neighborhood kernel, outer Swin window). "p4k3" (the toy ablation's
# pre-registered task): patch 4 → an 8×8 outer grid, 3×3 neighborhoods, Swin windows 4×4; "p2":
# patch 2 → 16×16, 7×7 and 8×8 (the same fractions of the grid at twice the size).
TOY_TASKS = {"p2": (2, 7, 8), "p4k3": (4, 3, 4)}


def on_toy_task(name: str, task: str = "p4k3") -> Config:
    """The preset ``name`` on the toy ablation's task ``task`` (:data:`TOY_TASKS`): its 128²
    config moved by :func:`~hdit_edu.profiles.to_toy_scale` (``CPU_SCALE`` at the task's patch),
    then the task's outer kernel / window; a named change (``base`` + ``change``) is applied to
    its base's toy config. Named ``name``, validated; the training budget (seed, steps, batch
    size) is the caller's (:func:`hdit_edu.ablation.run_config`)."""
    canonical = _canonical(name)
    if canonical is None:
        raise ValueError(f"unknown config {name!r}; allowed: {', '.join(PRESETS)}")
    if task not in TOY_TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TOY_TASKS)}")
    preset = PRESETS[canonical]
    if preset.base is not None:
        config = preset.change(on_toy_task(preset.base, task))
    else:
        patch, kernel, window = TOY_TASKS[task]
        config = to_toy_scale(preset.build(), replace(CPU_SCALE, patch_size=patch))
        outer = config.model.levels[0]
        if len(config.model.levels) > 1:  # single-level R3/R4 and DiT: one global level
            outer.kernel_size, outer.window_size = kernel, window
    config.name = canonical
    config.validate()
    return config
