"""Profiles: the same experiment at the paper's sizes (``"gpu"``) or on the toy set (``"cpu"``).

Every notebook and ``hdit-edu train / ablate`` take a profile (:func:`hdit_edu.env.resolve_profile`
turns ``"auto"`` into one of :data:`hdit_edu.env.PROFILES`). :func:`for_profile` keeps a config
as the paper sets it (``"gpu"``) or moves it onto the 32×32 toy set at tiny sizes (``"cpu"``,
:func:`to_toy_scale` with :data:`CPU_SCALE`), keeping the *kinds* of choices that define it — so
the same code runs in both, and only the sizes change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .configs import Config, LevelConfig, ModelConfig, validate_config
from .env import PROFILES
from .toy import TOY_CLASSES


@dataclass(frozen=True)
class ToyScale:
    """The sizes of an experiment moved onto the 32×32 toy data set (:func:`to_toy_scale`)."""

    widths: tuple[int, int] = (64, 128)  # outer (local attention) level, inner (global) level
    depths: tuple[int, int] = (1, 2)
    head_dim: int = 32
    mapping_width: int = 128
    batch_size: int = 16
    steps: int = 1000
    patch_size: int = 2


# "cpu" profile of `hdit-edu train`: a tiny model that trains in minutes on 2 cores.
CPU_SCALE = ToyScale()
# A constant EMA decay (training.ema_warmup = False: R1, DiT's) on the toy set: the decay the
# warm-up of the other toy runs reaches after 3k steps (1 − 3001^(−2/3) = 0.9952), so both
# average over the last ~200 steps; DiT's 0.9999 would keep a toy run at its initial weights.
TOY_CONSTANT_EMA = 0.995


def to_toy_scale(config: Config, scale: ToyScale = CPU_SCALE) -> Config:
    """``config`` moved onto the toy problem with the *same kinds* of choices and small sizes.

    What is kept: the architecture (HDiT levels or DiT), each level's attention kind (global /
    neighborhood 7×7 / shifted window 8) on the outer level with a global inner level, the FFN
    (GEGLU / GELU), the position embedding (RoPE / additive), the skip merge, dropout, the
    augmentation input and probability, the diffusion objective (loss weighting, σ density
    and range) and Table 6's optimiser. What changes: 32×32 toy images (8 classes, if the
    model is class-conditional), patch 2 (16×16 tokens on the outer level, 8×8 on the inner),
    ``scale``'s widths, depths, head dim, mapping width, batch size and steps, EMA max decay
    0.999 (0.9999 averages over more steps than a toy run has; a constant decay without
    warm-up, R1's: :data:`TOY_CONSTANT_EMA`), fp32.

    A multi-level hourglass becomes two levels (outer: the config's outermost attention kind;
    inner: global). A single-level model (R3/R4, DiT) becomes one global level at the inner
    width with depth ``sum(depths)`` on the 16×16 grid, like step A's hyper-parameter-matched
    single-level version (§5.2).
    """
    m = config.model
    outer, inner = m.levels[0], m.levels[-1]
    if m.arch == "hdit" and len(m.levels) > 1:
        levels = [
            LevelConfig(
                depth=scale.depths[0],
                width=scale.widths[0],
                head_dim=scale.head_dim,
                attention=outer.attention,
                kernel_size=min(outer.kernel_size, 7),
                window_size=8,
                dropout=outer.dropout,
            ),
            LevelConfig(
                depth=scale.depths[1],
                width=scale.widths[1],
                head_dim=scale.head_dim,
                attention="global",
                dropout=inner.dropout,
            ),
        ]
    else:
        levels = [
            LevelConfig(
                depth=sum(scale.depths),
                width=scale.widths[1],
                head_dim=scale.head_dim,
                attention="global",
                dropout=inner.dropout,
            )
        ]
    model = ModelConfig(
        levels=levels,
        mapping=replace(m.mapping, width=scale.mapping_width, d_ff=None),
        arch=m.arch,
        patch_size=scale.patch_size,
        in_channels=3,
        out_channels=m.out_channels,
        num_classes=len(TOY_CLASSES) if m.num_classes else 0,
        aug_dim=m.aug_dim,
        ffn=m.ffn,
        pos_emb=m.pos_emb,
        skip=m.skip,
        resolution=32,
    )
    diffusion = replace(config.diffusion, noise_d_low=32, noise_d_high=None)
    training = replace(
        config.training,
        batch_size=scale.batch_size,
        steps=scale.steps,
        ema_decay=min(
            config.training.ema_decay, 0.999 if config.training.ema_warmup else TOY_CONSTANT_EMA
        ),
        precision="fp32",
        dataset="toy",
        checkpoint_every=max(1, scale.steps // 4),
        sample_every=max(1, scale.steps // 4),
        log_every=10,
        compile=False,
        # The CPU stand-ins keep the recipe their records (toy ablation, notebooks) were made
        # with: no clipping, EMA power 2/3, ADA's x-flip (p/2) — not the reference's.
        grad_clip=None,
        ema_power=2 / 3,
        xflip_p=None,
    )
    diffusion = replace(diffusion, sampling_sigma_min=None, sampling_sigma_max=None)
    new = Config(name=config.name, model=model, diffusion=diffusion, training=training)
    validate_config(new)
    return new


def for_profile(config: Config, profile: str) -> Config:
    """``"gpu"``: the config as it is (the paper's settings); ``"cpu"``: :func:`to_toy_scale`
    with :data:`CPU_SCALE` (a tiny model on the toy set that trains in minutes on 2 cores)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    return config if profile == "gpu" else to_toy_scale(config, CPU_SCALE)
