"""Configs: validation (each kind of bad value → ValueError naming it), App. A's resolution
rule, the resolution's spellings and JSON round-trip. (The named models: tests/test_presets.py.)"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from hdit_edu.configs import (
    Config,
    at_resolution,
    format_resolution,
    image_d,
    load_config,
    min_resolution,
    normalize_resolution,
    parse_resolution,
    save_config,
    token_grids,
    validate_config,
)
from hdit_edu.models import build_model
from hdit_edu.presets import ablation_step, get_config, paper_config, toy

# ----------------------------------------------------------------------------------------------
# Validation: one test per kind of bad value
# ----------------------------------------------------------------------------------------------


def _set(path: str, value):
    """A mutation of a fresh E config: set the dotted attribute ``path`` (``levels[0]`` ok)."""

    def mutate(config: Config) -> None:
        target = config
        *parents, last = path.split(".")
        for part in parents:
            if part.endswith("]"):
                name, index = part[:-1].split("[")
                target = getattr(target, name)[int(index)]
            else:
                target = getattr(target, part)
        setattr(target, last, value)

    return mutate


def _chain(*mutations):
    def mutate(config: Config) -> None:
        for mutation in mutations:
            mutation(config)

    return mutate


# (id, mutation, resolution for the check (None = the config's), fragments the message must hold)
BAD_CONFIGS = [
    ("arch", _set("model.arch", "unet"), None, ["model.arch", "'unet'", "hdit, dit"]),
    (
        "attention-kind",
        _set("model.levels[0].attention", "local"),
        None,
        ["levels[0].attention", "'local'", "neighborhood"],
    ),
    ("ffn-kind", _set("model.ffn", "swiglu"), None, ["model.ffn", "'swiglu'", "geglu, gelu"]),
    ("pos-emb-kind", _set("model.pos_emb", "alibi"), None, ["model.pos_emb", "rope, additive"]),
    ("skip-kind", _set("model.skip", "gate"), None, ["model.skip", "'gate'", "lerp, add, concat"]),
    ("no-levels", _set("model.levels", []), None, ["model.levels", "non-empty"]),
    ("depth-0", _set("model.levels[1].depth", 0), None, ["levels[1].depth", "got 0", ">= 1"]),
    ("depth-float", _set("model.levels[0].depth", 2.0), None, ["levels[0].depth", "2.0"]),
    (
        "width-not-multiple-of-head-dim",
        _set("model.levels[0].width", 400),
        None,
        ["levels[0]", "width 400", "head_dim 64"],
    ),
    (
        "rope-head-dim",
        _set("model.levels[1].head_dim", 12),
        None,
        ["levels[1].head_dim", "12", "divisible by 8"],
    ),
    (
        "kernel-even",
        _set("model.levels[0].kernel_size", 6),
        None,
        ["levels[0].kernel_size", "6", "odd"],
    ),
    ("kernel-1", _set("model.levels[0].kernel_size", 1), None, ["kernel_size", "1", ">= 3"]),
    (
        "kernel-larger-than-grid",
        lambda c: None,
        16,
        ["levels[0].kernel_size", "7", "4×4", "<= 4"],
    ),
    (
        "resolution-not-divisible",
        lambda c: None,
        100,
        ["100×100", "not divisible", "= 8", "multiples of 8"],
    ),
    ("resolution-type", lambda c: None, "128", ["resolution", "'128'", "positive integer"]),
    (
        "model-resolution-pair",
        _set("model.resolution", (128, 0)),
        None,
        ["model.resolution", "(128, 0)", "(height, width)"],
    ),
    (
        "model-resolution-three",
        _set("model.resolution", (128, 128, 3)),
        None,
        ["model.resolution", "(128, 128, 3)", "positive integer n"],
    ),
    (
        "rectangular-not-divisible",
        _set("model.resolution", (128, 100)),
        None,
        ["128×100", "not divisible", "= 8", "e.g. 128×96"],
    ),
    (
        "kernel-larger-than-rectangular-grid",
        _set("model.resolution", (128, 16)),
        None,
        ["levels[0].kernel_size", "32×4 token grid", "128×16", "<= 4"],
    ),
    ("patch-size-0", _set("model.patch_size", 0), None, ["model.patch_size", "got 0"]),
    (
        "dropout-negative",
        _set("model.levels[0].dropout", -0.1),
        None,
        ["levels[0].dropout", "-0.1"],
    ),
    ("mapping-dropout-1", _set("model.mapping.dropout", 1.0), None, ["mapping.dropout", "[0, 1)"]),
    ("mapping-width-odd", _set("model.mapping.width", 767), None, ["mapping.width", "767", "even"]),
    ("mapping-depth-negative", _set("model.mapping.depth", -1), None, ["mapping.depth", "-1"]),
    ("num-classes-negative", _set("model.num_classes", -1), None, ["num_classes", "-1", ">= 0"]),
    ("d-ff-0", _set("model.levels[1].d_ff", 0), None, ["levels[1].d_ff", "or None"]),
    ("out-channels-0", _set("model.out_channels", 0), None, ["out_channels", "got 0"]),
    ("aug-dim-negative", _set("model.aug_dim", -9), None, ["aug_dim", "-9"]),
    (
        "additive-width",
        _chain(
            _set("model.pos_emb", "additive"),
            _set("model.levels[0].width", 66),
            _set("model.levels[0].head_dim", 6),
        ),
        None,
        ["levels[0].width", "66", "divisible by 4"],
    ),
    (
        "dit-two-levels",
        lambda c: _set("model.arch", "dit")(c),
        None,
        ["model.levels", "exactly one level", "got 2"],
    ),
    ("sigma-range", _set("diffusion.sigma_min", 2e3), None, ["sigma_min 2000", "sigma_max 1000"]),
    ("sigma-data", _set("diffusion.sigma_data", 0.0), None, ["diffusion.sigma_data", "(0, inf)"]),
    (
        "loss-weighting",
        _set("diffusion.loss_weighting", "p2"),
        None,
        ["loss_weighting", "'p2'", "soft-min-snr"],
    ),
    (
        "sigma-density",
        _set("diffusion.sigma_density", "uniform"),
        None,
        ["sigma_density", "'uniform'", "cosine-interpolated"],
    ),
    ("batch-size-0", _set("training.batch_size", 0), None, ["training.batch_size", "got 0"]),
    ("lr-negative", _set("training.lr", -5e-4), None, ["training.lr", "-0.0005"]),
    ("beta-1", _set("training.betas", (0.9, 1.0)), None, ["training.betas[1]", "1.0"]),
    ("ema-decay-1", _set("training.ema_decay", 1.0), None, ["ema_decay", "[0, 1)"]),
    ("precision", _set("training.precision", "fp16"), None, ["precision", "'fp16'", "bf16, fp32"]),
    ("cond-dropout", _set("training.cond_dropout", 1.5), None, ["cond_dropout", "[0, 1]"]),
]


@pytest.mark.parametrize(
    "mutate, resolution, fragments", [b[1:] for b in BAD_CONFIGS], ids=[b[0] for b in BAD_CONFIGS]
)
def test_bad_config_is_a_clear_value_error(mutate, resolution, fragments):
    config = ablation_step("E")
    validate_config(config)  # the unmutated config is fine
    mutate(config)
    with pytest.raises(ValueError) as info:
        validate_config(config, resolution)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_there_are_at_least_15_kinds_of_checks():
    assert len({b[0] for b in BAD_CONFIGS}) >= 15


def test_window_must_divide_the_grid():
    config = ablation_step("B1")
    validate_config(config, 64)  # level-0 grid 16, window 8
    with pytest.raises(
        ValueError, match=r"window_size: 8 does not divide .* 12×12 .* \[1, 2, 3, 4, 6, 12\]"
    ):
        validate_config(config, 48)


def test_build_model_validates_before_allocating():
    config = ablation_step("E")
    config.model.levels[1].width = 770  # not a multiple of 64
    start = time.perf_counter()
    with pytest.raises(ValueError, match="width 770 is not a multiple of head_dim 64"):
        build_model(config)
    assert time.perf_counter() - start < 0.5
    with pytest.raises(ValueError, match="kernel_size"):
        build_model(dataclasses.replace(ablation_step("E").model, resolution=16))


def test_validate_accepts_model_configs_and_non_square():
    model = ablation_step("E").model
    model.validate()
    validate_config(model, (128, 192))
    assert token_grids(model, (128, 192)) == [(32, 48), (16, 24)]
    with pytest.raises(ValueError, match="expects a Config or ModelConfig"):
        validate_config({"model": {}})


# ----------------------------------------------------------------------------------------------
# Resolutions (App. A's rule and the spellings)
# ----------------------------------------------------------------------------------------------


def _levels(config):
    return [(lv.depth, lv.width, lv.attention) for lv in config.model.levels]


def test_at_resolution_rule():
    e = ablation_step("E")
    assert at_resolution(e, 128) is e
    assert _levels(at_resolution(e, 192)) == _levels(e)  # not a power of two: no new level
    assert _levels(at_resolution(e, 64)) == [(11, 768, "global")]  # halving drops a level
    assert _levels(at_resolution(e, 32)) == [(11, 768, "global")]  # at least one level stays
    assert _levels(at_resolution(paper_config("ffhq1024"), 2048))[0] == (2, 128, "neighborhood")
    # H × W: the shorter side's doublings count (App. A's rule on min(H, W) / min(H₀, W₀))
    wide = at_resolution(e, (128, 256))
    assert (wide.name, wide.model.resolution, _levels(wide)) == (
        "E@128x256",
        (128, 256),
        _levels(e),
    )
    assert token_grids(wide.model) == [(32, 64), (16, 32)]
    tall = at_resolution(e, (512, 256))
    assert tall.name == "E@512x256" and _levels(tall) == _levels(at_resolution(e, 256))
    assert token_grids(tall.model)[-1] == (32, 16)  # innermost: the 16² of 256², taller
    assert _levels(at_resolution(e, (64, 128))) == [(11, 768, "global")]
    assert at_resolution(e, (128, 128)) is e  # (n, n) is n
    again = at_resolution(wide, (256, 512))  # from a rectangular base: both sides doubled
    assert again.name == "E@256x512" and _levels(again) == _levels(at_resolution(e, 256))
    assert _levels(at_resolution(wide, (256, 128))) == _levels(e)  # transposed: same levels


def test_resolution_spellings():
    assert normalize_resolution(32) == (32, 32)
    assert normalize_resolution([32, 48]) == normalize_resolution((32, 48)) == (32, 48)
    assert parse_resolution("256") == 256 and parse_resolution("256x512") == (256, 512)
    assert parse_resolution("256×512") == (256, 512)
    for bad in ("256x", "x512", "0x4", "2x3x4", "big", "-1"):
        with pytest.raises(ValueError, match="allowed: a positive integer N"):
            parse_resolution(bad)
    assert format_resolution(64) == format_resolution((64, 64)) == "64"
    assert format_resolution((32, 48)) == "32x48"


def test_image_d_is_the_longer_side():
    """The interpolated cosine density's image size: the side of a square, the longer side of a
    rectangle (k-diffusion: max(input_size))."""
    model = toy().model
    assert image_d(model) == 32
    assert image_d(dataclasses.replace(model, resolution=(32, 48))) == 48
    assert image_d(dataclasses.replace(model, resolution=(64, 48))) == 64


def test_rectangular_resolution_round_trips_through_json(tmp_path):
    config = toy()
    # a list (JSON's spelling) is stored as a tuple
    config.model = dataclasses.replace(config.model, resolution=[32, 48])
    assert config.model.resolution == (32, 48)
    validate_config(config)
    assert token_grids(config.model) == [(16, 24), (8, 12)]
    path = tmp_path / "rect.json"
    save_config(config, path)
    assert json.loads(path.read_text())["model"]["resolution"] == [32, 48]
    assert load_config(path) == config


def test_shipped_square_config_loads_unchanged():
    path = Path(__file__).parents[1] / "data" / "checkpoints" / "toy-hdit" / "config.json"
    assert json.loads(path.read_text())["model"]["resolution"] == 32
    config = load_config(path)
    side = 32 // config.model.patch_size
    assert config.model.resolution == 32 and token_grids(config.model)[0] == (side, side)


def test_min_resolution():
    expected = {"toy": 16, "A": 8, "B1": 32, "E": 32, "R1": 4, "ffhq1024": 128, "imagenet256": 64}
    for name, res in expected.items():
        assert min_resolution(get_config(name).model) == res, name
