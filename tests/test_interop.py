"""hdit_edu.interop: k-diffusion ``image_transformer_v2`` configs and weights ↔ hdit-edu.

Two kinds of tests:

* **Always** (no reference source needed): config conversion (k-diffusion's defaults, the
  paper configs round-tripping, clear errors for what cannot be converted), the two layout
  transforms checked against k-diffusion's documented einops layout written out here, the
  committed name/shape fixtures (``tests/fixtures/k_diffusion_names/*.json``: every tensor
  name and shape of the reference model for a few configs, recorded from the reference source)
  mapped both ways with random values, checkpoint nesting and formats, the CLI.
* **With the reference source** (``HDIT_K_DIFFUSION_SRC=/path/to/k-diffusion``, a clone of
  crowsonkb/k-diffusion; recorded at commit 4601bf0; skipped otherwise): the reference model
  is built from that source at test time (never copied here), its weights randomised
  (zero-initialised ones included) and converted both ways; outputs must agree to 1e-5 (fp32).
  Also checks that the committed fixtures still match the reference and that
  :func:`~hdit_edu.interop.k_diffusion_defaults` equals k-diffusion's own ``load_config``.

Regenerate the fixtures (after a change of the reference or of :data:`KD_CONFIGS`)::

    HDIT_K_DIFFUSION_SRC=/path/to/k-diffusion .venv/bin/python tests/test_interop.py

The reference is imported by :func:`hdit_edu.reference_source.import_k_diffusion` (the session
fixture ``k_diffusion`` in ``conftest.py``; its own adjustments are tested here with a minimal
tree of the same shape): stand-ins for the imports its model does not use, no ``torch.compile`` of
small kernels on the CPU (same math), and NATTEN 0.21's ``na2d`` — its flex path, forward only
on the CPU, hence ``torch.no_grad()``. hdit-edu uses its own neighborhood attention on the
CPU, so the comparison pits two independent implementations against each other.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from einops import rearrange

from hdit_edu import conversion, interop, reference_source
from hdit_edu.checkpoints import save_checkpoint
from hdit_edu.cli import main
from hdit_edu.configs import MappingConfig, ModelConfig, save_config
from hdit_edu.hourglass import HDiT, TokenMerge, TokenSplit
from hdit_edu.models import build_model
from hdit_edu.presets import paper_config, toy
from hdit_edu.runs import load_run

FIXTURES = Path(__file__).parent / "fixtures" / "k_diffusion_names"
K_DIFFUSION_COMMIT = "4601bf0"
TOLERANCE = 1e-5  # fp32, max |F_reference − F_ours|


def _kd(depths, widths, self_attns=None, *, patch=2, classes=0, **model) -> dict:
    """A small k-diffusion config (32×32 RGB), k-diffusion's defaults left to fill the rest."""
    spec = {
        "type": "image_transformer_v2",
        "input_channels": 3,
        "input_size": [32, 32],
        "patch_size": [patch, patch],
        "depths": depths,
        "widths": widths,
        "sigma_data": 0.5,
        **model,
    }
    if self_attns is not None:
        spec["self_attns"] = self_attns
    return {"model": spec, "dataset": {"num_classes": classes}}


def _g(d=32):
    return {"type": "global", "d_head": d}


def _na(k=7, d=32):
    return {"type": "neighborhood", "d_head": d, "kernel_size": k}


def _sw(w, d=32):
    return {"type": "shifted-window", "d_head": d, "window_size": w}


# The configs compared against the reference (and recorded as fixtures): 1–3 levels;
# global, neighborhood, shifted-window and no attention; with and without classes; mapping
# depth 0, 1, 2; explicit and default FFN sizes; k-diffusion's defaults.
KD_CONFIGS = {
    "one_level_global_p4": _kd([2], [64], [_g()], patch=4, mapping_depth=1, mapping_width=64),
    "two_level_neighborhood_classes": _kd(
        [2, 2],
        [64, 128],
        [_na(7), _g()],
        classes=10,
        mapping_depth=2,
        mapping_width=64,
        dropout_rate=[0.0, 0.1],
    ),
    "three_level_shifted_window_classes": _kd(
        [2, 2, 1],
        [64, 64, 128],
        [_sw(8), _sw(4), _g()],
        classes=3,
        mapping_depth=2,
        mapping_width=64,
        mapping_d_ff=96,
        d_ffs=[128, 160, 256],
    ),
    "two_level_k_diffusion_defaults": _kd([1, 1], [64, 128]),
    "three_level_none_mapping0_classes": _kd(
        [1, 1, 1],
        [64, 64, 64],
        [{"type": "none"}, _na(3), _g()],
        classes=2,
        mapping_depth=0,
        mapping_width=64,
    ),
}
# Names and shapes only (no forward pass): the paper's ImageNet-128 model (117M parameters).
PAPER_FIXTURES = {
    "imagenet128": lambda: interop.config_to_k_diffusion(paper_config("imagenet128").model)
}


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _random_tensors(shapes: dict, seed: int = 0, device="cpu") -> dict[str, torch.Tensor]:
    """Random values of the fixture's shapes (values are never stored, only names and shapes)."""
    if device == "meta":
        return {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) for name, shape in shapes.items()}


def _randomise_(module: torch.nn.Module, seed: int, std: float = 0.1) -> None:
    """Add noise to every parameter (zero-initialised ones included) so F is non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def _inputs(num_classes: int, seed: int, batch: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    sigma = torch.exp(torch.randn(batch, generator=g) * 1.5)  # σ over ~[0.05, 20]
    cls = torch.randint(0, num_classes + 1, (batch,), generator=g) if num_classes else None
    if num_classes:
        cls[-1] = num_classes  # the dropped class
    aug = torch.randn(batch, interop.KD_AUG_DIM, generator=g) * 0.5
    return x, sigma, cls, aug


def _ours_from_shapes(config: ModelConfig, device="cpu") -> HDiT:
    with torch.device(device):
        return HDiT(config)


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------


def test_k_diffusion_defaults_follow_its_config_py():
    full = interop.k_diffusion_defaults({"model": {"type": "image_transformer_v2",
                                                   "depths": [2, 2, 4],
                                                   "widths": [128, 256, 512],
                                                   "dropout_rate": 0.05}})  # fmt: skip
    model = full["model"]
    assert model["d_ffs"] == [384, 768, 1536]  # 3·width
    assert (model["mapping_width"], model["mapping_depth"], model["mapping_d_ff"]) == (256, 2, 768)
    assert model["self_attns"] == [_na(7, 64), _na(7, 64), _g(64)]
    assert model["dropout_rate"] == [0.05] * 3  # a float is repeated per level
    assert model["sigma_data"] == 1.0 and model["loss_weighting"] == "karras"
    assert full["optimizer"] == {
        "type": "adamw",
        "lr": 5e-4,
        "betas": [0.9, 0.99],  # the v2 defaults win over the general ones
        "eps": 1e-8,
        "weight_decay": 1e-4,
    }
    assert full["ema_sched"]["max_value"] == 0.9999 and full["dataset"]["num_classes"] == 0


def test_config_from_k_diffusion_reads_every_section():
    kd = _kd([2, 2, 4], [128, 256, 512], [_sw(8, 64), _sw(8, 64), _g(64)], patch=4)
    kd["model"].update(
        input_size=[256, 256],
        dropout_rate=[0.0, 0.0, 0.1],
        loss_weighting="soft-min-snr",
        sigma_min=1e-2,
        sigma_max=160,
        augment_prob=0.12,
        sigma_sample_density={"type": "cosine-interpolated"},
    )
    kd["dataset"] = {"type": "imagefolder", "location": "/data/flowers", "num_classes": 5}
    kd["optimizer"] = {"type": "adamw", "lr": 5e-4, "betas": [0.9, 0.95], "eps": 1e-8,
                       "weight_decay": 1e-3}  # fmt: skip
    config = interop.config_from_k_diffusion(kd)
    m = config.model
    assert [(lv.depth, lv.width, lv.head_dim, lv.attention) for lv in m.levels] == [
        (2, 128, 64, "shifted-window"),
        (2, 256, 64, "shifted-window"),
        (4, 512, 64, "global"),
    ]
    assert [lv.window_size for lv in m.levels[:2]] == [8, 8]
    assert [lv.dropout for lv in m.levels] == [0.0, 0.0, 0.1]
    assert [lv.d_ff for lv in m.levels] == [None] * 3  # 3·width, hdit-edu's default too
    assert m.mapping == MappingConfig(depth=2, width=256, d_ff=None, dropout=0.0)
    assert (m.patch_size, m.resolution, m.num_classes, m.aug_dim) == (4, 256, 5, 9)
    assert (m.ffn, m.pos_emb, m.skip, m.arch) == ("geglu", "rope", "lerp", "hdit")
    d = config.diffusion
    assert (d.sigma_data, d.loss_weighting, d.sigma_density) == (
        0.5,
        "soft-min-snr",
        "cosine-interpolated",
    )
    # k-diffusion's density range: [min(σ_min, 1e-3), max(σ_max, 1e3)]; noise_d_high = image_d.
    assert (d.sigma_min, d.sigma_max, d.noise_d_low, d.noise_d_high) == (1e-3, 1e3, 32, None)
    t = config.training
    assert (t.lr, t.betas, t.eps, t.weight_decay) == (5e-4, (0.9, 0.95), 1e-8, 1e-3)
    assert (t.ema_decay, t.cond_dropout, t.augment_p, t.dataset) == (
        0.9999,
        0.1,
        0.12,
        "/data/flowers",
    )

    kd["model"]["sigma_sample_density"] = {"type": "lognormal", "loc": -1.2, "scale": 1.2}
    d = interop.config_from_k_diffusion(kd).diffusion
    assert (d.sigma_density, d.lognormal_mean, d.lognormal_std) == ("lognormal", -1.2, 1.2)


@pytest.mark.parametrize("name", ["imagenet128", "ffhq1024", "imagenet256", "toy"])
def test_paper_configs_round_trip_through_k_diffusion(name):
    config = toy() if name == "toy" else paper_config(name)
    kd = interop.config_to_k_diffusion(config)
    assert kd["model"]["type"] == "image_transformer_v2"
    back = interop.config_from_k_diffusion(json.loads(json.dumps(kd)), name=config.name)
    assert back.model == config.model
    assert back.diffusion == config.diffusion
    for field in ("lr", "betas", "eps", "weight_decay", "ema_decay", "cond_dropout", "augment_p",
                  "dataset"):  # fmt: skip
        assert getattr(back.training, field) == getattr(config.training, field), field


def test_rectangular_config_round_trips_through_k_diffusion():
    """``resolution = (H, W)`` ↔ ``input_size: [H, W]``; the σ density's default image size is
    the longer side on both sides (k-diffusion: ``max(input_size)``), so an explicit
    ``image_d`` of the shorter side is named as unsupported."""
    config = toy()
    config.model = dataclasses.replace(config.model, resolution=(32, 48))
    kd = interop.config_to_k_diffusion(config)
    assert kd["model"]["input_size"] == [32, 48]
    assert kd["model"]["sigma_sample_density"]["noise_d_high"] == 48
    back = interop.config_from_k_diffusion(json.loads(json.dumps(kd)), name=config.name)
    assert back.model == config.model and back.model.resolution == (32, 48)
    assert back.diffusion == config.diffusion  # noise_d_high 48 = the default: None again
    kd["model"]["sigma_sample_density"]["image_d"] = 32
    with pytest.raises(ValueError, match="image_d=32 .*the longer side of the input size, 48"):
        interop.config_from_k_diffusion(kd)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"type": "image_v1"}, "image_v1"),
        ({"mapping_cond_dim": 4}, "mapping_cond_dim=4"),
        ({"has_variance": True}, "has_variance"),
        ({"skip_stages": 1}, "skip_stages=1"),
        ({"patch_size": [2, 4]}, "patch_size [2, 4]"),
        ({"input_size": [32, 64, 3]}, "input_size [32, 64, 3]"),
        ({"input_size": [0, 64]}, "allowed: [H, W] (two positive integers)"),
        ({"input_size": [32, 58]}, "32×58 is not divisible"),
        ({"self_attns": [{"type": "axial"}, _g()]}, "'axial'"),
        ({"self_attns": [{"type": "shifted-window"}, _g()]}, "window_size"),
        ({"d_ffs": [192]}, "d_ffs has 1 entries"),
        ({"loss_config": "simple"}, "loss_config='simple'"),
        ({"loss_weighting": "min-snr"}, "loss_weighting='min-snr'"),
        ({"loss_scales": 2}, "loss_scales=2"),
        ({"sigma_sample_density": {"type": "loglogistic"}}, "'loglogistic'"),
    ],
)
def test_unsupported_k_diffusion_options_are_named(change, expected):
    kd = _kd([1, 1], [64, 128], [_na(), _g()])
    kd["model"].update(change)
    with pytest.raises(ValueError) as info:
        interop.config_from_k_diffusion(kd)
    assert expected in str(info.value)


def test_training_only_options_warn_when_not_strict():
    kd = _kd([1, 1], [64, 128], [_na(), _g()])
    kd["dataset"].update(type="huggingface", location="nelorth/oxford-flowers")
    kd["lr_sched"] = {"type": "inverse", "warmup": 0.99}
    with pytest.raises(ValueError) as info:
        interop.config_from_k_diffusion(kd)
    assert "dataset.type='huggingface'" in str(info.value) and "lr_sched" in str(info.value)
    with pytest.warns(UserWarning, match="huggingface") as record:
        config = interop.config_from_k_diffusion(kd, strict=False)
    assert "lr_sched" in str(record[0].message)
    assert config.training.dataset == "toy"  # hdit-edu's default
    assert interop.model_config_from_k_diffusion(kd) == config.model  # the model is unaffected


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"ffn": "gelu"}, "model.ffn='gelu'"),
        ({"pos_emb": "additive"}, "model.pos_emb='additive'"),
        ({"pos_emb": "rope+additive"}, "model.pos_emb='rope+additive'"),
        ({"rope_freqs": "grid"}, "model.rope_freqs='grid'"),
        ({"skip": "concat"}, "model.skip='concat'"),
        ({"aug_dim": 4}, "model.aug_dim=4"),
        ({"out_channels": 6}, "model.out_channels=6"),
    ],
)
def test_what_k_diffusion_cannot_express_is_named(change, expected):
    model = interop.model_config_from_k_diffusion(KD_CONFIGS["two_level_neighborhood_classes"])
    for key, value in change.items():
        setattr(model, key, value)
    with pytest.raises(ValueError) as info:
        interop.config_to_k_diffusion(model)
    assert expected in str(info.value)
    config = paper_config("imagenet128")
    config.diffusion.loss_weighting = "min-snr"
    with pytest.raises(ValueError, match="loss_weighting='min-snr'"):
        interop.config_to_k_diffusion(config)


# ----------------------------------------------------------------------------------------------
# The layout transforms, against k-diffusion's documented einops layout
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [2, 4])
def test_merge_and_split_permutations_match_the_einops_layout(p):
    """k-diffusion: merge "(h nh) (w nw) e -> h w (nh nw e)" then Linear; split Linear then
    "h w (nh nw e) -> (h nh) (w nw) e", then lerp(skip, x, fac). Ours: PixelUnshuffle order."""
    torch.manual_seed(p)
    c_in, c_out = 5, 7
    x = torch.randn(2, 4 * p, 2 * p, c_in)
    w_kd = torch.randn(c_out, p * p * c_in)
    ref = rearrange(x, "b (h nh) (w nw) e -> b h w (nh nw e)", nh=p, nw=p) @ w_kd.T
    merge = TokenMerge(c_in, c_out, p)
    merge.proj.weight.data = interop._merge_weight_to_ours(w_kd, p)
    torch.testing.assert_close(merge(x), ref, rtol=0, atol=1e-5)
    assert torch.equal(interop._merge_weight_to_kd(merge.proj.weight, p), w_kd)

    tokens, skip = torch.randn(2, 3, 2, c_out), torch.randn(2, 3 * p, 2 * p, c_in)
    w_kd, fac = torch.randn(p * p * c_in, c_out), torch.tensor([0.3])
    up = rearrange(tokens @ w_kd.T, "b h w (nh nw e) -> b (h nh) (w nw) e", nh=p, nw=p)
    ref = torch.lerp(skip, up, fac)
    split = TokenSplit(c_out, c_in, p, skip="lerp")
    split.proj.weight.data = interop._split_weight_to_ours(w_kd, p)
    split.f.data = interop._one_minus(fac)
    torch.testing.assert_close(split(tokens, skip), ref, rtol=0, atol=1e-5)
    assert torch.equal(interop._split_weight_to_kd(split.proj.weight, p), w_kd)


# ----------------------------------------------------------------------------------------------
# The committed fixtures: every tensor name of the reference, mapped both ways
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KD_CONFIGS))
def test_fixture_names_map_every_tensor_both_ways(name):
    fixture = _load_fixture(name)
    assert fixture["config"] == KD_CONFIGS[name], "fixture out of date: regenerate (docstring)"
    kd_state = _random_tensors(fixture["tensors"], seed=len(name))
    model_config = interop.model_config_from_k_diffusion(fixture["config"])
    model = interop.from_k_diffusion(fixture["config"], kd_state)  # strict load inside
    ours = model.state_dict()
    assert set(ours) == set(_ours_from_shapes(model_config).state_dict())
    kd_config, back = interop.to_k_diffusion(model)
    assert set(back) == set(kd_state)
    for key, value in kd_state.items():
        assert back[key].shape == value.shape, key
        if key.endswith(".fac"):  # f = 1 − fac: one rounding to fp32 each way
            torch.testing.assert_close(back[key], value, rtol=0, atol=torch.finfo().eps)
        else:
            assert torch.equal(back[key], value), key
    assert interop.config_from_k_diffusion(kd_config, strict=False).model == model_config


@pytest.mark.parametrize("name", sorted(PAPER_FIXTURES))
def test_paper_fixture_names_and_shapes_map_both_ways(name):
    """The paper-size model, on the meta device (names and shapes only, no memory)."""
    fixture = _load_fixture(name)
    assert fixture["config"] == PAPER_FIXTURES[name]()
    model_config = interop.model_config_from_k_diffusion(fixture["config"])
    kd_state = _random_tensors(fixture["tensors"], device="meta")
    ours = interop.state_dict_from_k_diffusion(kd_state, model_config)
    expected = _ours_from_shapes(model_config, device="meta").state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in expected.items()
    }
    back = interop.state_dict_to_k_diffusion(ours, model_config)
    assert {k: tuple(v.shape) for k, v in back.items()} == {
        k: tuple(v) for k, v in fixture["tensors"].items()
    }
    buffers = ("time_emb.weight", "aug_emb.weight", ".pos_emb.freqs")
    n_params = sum(
        torch.Size(shape).numel()
        for key, shape in fixture["tensors"].items()
        if not key.endswith(buffers)
    )
    assert round(n_params / 1e6, 1) == 117.0  # Table 6: ImageNet-128, 117M


def test_name_mismatches_are_listed():
    fixture = _load_fixture("two_level_neighborhood_classes")
    kd_state = _random_tensors(fixture["tensors"])
    kd_state.pop("mid_level.0.self_attn.qkv_proj.weight")
    kd_state["mapping_cond_in_proj.weight"] = torch.zeros(64, 4)
    with pytest.raises(ValueError) as info:
        interop.from_k_diffusion(fixture["config"], kd_state)
    assert "mid_level.0.self_attn.qkv_proj.weight" in str(info.value)
    assert "mapping_cond_in_proj.weight" in str(info.value)
    model = interop.from_k_diffusion(fixture["config"], _random_tensors(fixture["tensors"]))
    ours = model.state_dict()
    ours.pop("splits.0.f")
    with pytest.raises(ValueError, match=r"splits\.0\.f"):
        interop.state_dict_to_k_diffusion(ours, model.config)


def test_checkpoints_nesting_prefixes_and_formats(tmp_path):
    """Training checkpoints {config, model, model_ema, …} (EMA preferred), Denoiser's
    ``inner_model.`` prefix, ``.pth`` (weights_only) and ``.safetensors`` (config in metadata)."""
    from safetensors.torch import save_file

    fixture = _load_fixture("two_level_neighborhood_classes")
    config, shapes = fixture["config"], fixture["tensors"]
    raw, ema = _random_tensors(shapes, seed=1), _random_tensors(shapes, seed=2)
    wrapped = {f"inner_model.{k}": v for k, v in ema.items()}
    checkpoint = {"config": config, "model": raw, "model_ema": wrapped, "step": 10,
                  "opt": {"state": {}, "param_groups": []}}  # fmt: skip
    probe = "mid_level.1.ff.up_proj.weight"
    pick = lambda m: m.state_dict()["mid_level.1.ffn.up_proj.weight"]
    assert torch.equal(pick(interop.from_k_diffusion(None, checkpoint)), ema[probe])
    assert torch.equal(pick(interop.from_k_diffusion(config, checkpoint, ema=False)), raw[probe])
    torch.save(checkpoint, tmp_path / "run_00001000.pth")
    stored, loaded = interop.load_k_diffusion_checkpoint(tmp_path / "run_00001000.pth")
    assert stored == config and torch.equal(
        pick(interop.from_k_diffusion(stored, loaded)), ema[probe]
    )
    save_file(raw, str(tmp_path / "slim.safetensors"), metadata={"config": json.dumps(config)})
    stored, loaded = interop.load_k_diffusion_checkpoint(tmp_path / "slim.safetensors")
    assert stored == config and torch.equal(
        pick(interop.from_k_diffusion(stored, loaded)), raw[probe]
    )
    half = {k: v.half() for k, v in raw.items()}  # convert_for_inference's default dtype
    model = interop.from_k_diffusion(config, half)
    assert model.state_dict()["splits.0.f"].dtype == torch.float32
    with pytest.raises(ValueError, match="no model weights"):
        interop.from_k_diffusion(config, {"model": {}, "step": 3})
    with pytest.raises(ValueError, match="does not exist"):
        interop.load_k_diffusion_checkpoint(tmp_path / "missing.pth")


def test_unaugmented_model_converts_with_a_zero_aug_projection():
    config = interop.model_config_from_k_diffusion(KD_CONFIGS["one_level_global_p4"])
    config.aug_dim = 0
    torch.manual_seed(0)
    model = build_model(config).eval()
    _randomise_(model, seed=3)
    kd_config, kd_state = interop.to_k_diffusion(model)
    assert kd_state["aug_emb.weight"].shape == (32, 9)
    assert not kd_state["aug_in_proj.weight"].any()
    back = interop.from_k_diffusion(kd_config, kd_state)  # the 9-feature model, aug ignored
    x, sigma, _, aug = _inputs(0, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(back(x, sigma, aug_cond=aug), model(x, sigma), rtol=0, atol=1e-6)


def _convert(*argv: str) -> int:
    return main(["convert", *map(str, argv)])


def test_cli_converts_a_run_to_k_diffusion_and_back(tmp_path):
    """hdit-edu run → k-diffusion inference checkpoint → hdit-edu run: the same function."""
    config = interop.config_from_k_diffusion(KD_CONFIGS["two_level_neighborhood_classes"])
    torch.manual_seed(0)
    model, ema = build_model(config).eval(), build_model(config).eval()
    _randomise_(model, seed=5)
    _randomise_(ema, seed=6)
    run = tmp_path / "run"
    run.mkdir()
    save_config(config, run / "config.json")
    save_checkpoint(run, 7, model.state_dict(), ema.state_dict(), {"step": 7})
    kd_path, back = tmp_path / "kd.safetensors", tmp_path / "back"
    assert _convert("to-k-diffusion", run, "-o", kd_path) == 0  # EMA weights by default
    assert _convert("from-k-diffusion", kd_path, "-o", back) == 0
    stored, _ = interop.load_k_diffusion_checkpoint(kd_path)
    assert stored["model"]["widths"] == [64, 128] and stored["dataset"]["num_classes"] == 10
    back_config, denoiser = load_run(back)
    assert back_config.model == config.model and back_config.diffusion == config.diffusion
    x, sigma, cls, aug = _inputs(10, seed=6)
    with torch.no_grad():
        assert torch.equal(denoiser.inner(x, sigma, cls, aug), ema(x, sigma, cls, aug))
    with pytest.raises(ValueError, match="not an empty directory"):
        conversion.convert_from_k_diffusion(kd_path, back)
    assert _convert("from-k-diffusion", kd_path, "-o", back) == 2  # the CLI: a message


def test_cli_converts_a_k_diffusion_training_checkpoint(tmp_path):
    """{config, model, model_ema, step} → a run whose model / ema weights are both converted."""
    fixture = _load_fixture("three_level_shifted_window_classes")
    raw, ema = _random_tensors(fixture["tensors"], 1), _random_tensors(fixture["tensors"], 2)
    checkpoint = {"config": fixture["config"], "model": raw, "model_ema": ema, "step": 1200}
    torch.save(checkpoint, tmp_path / "kd_00001200.pth")
    assert _convert("from-k-diffusion", tmp_path / "kd_00001200.pth", "-o", tmp_path / "r") == 0
    assert (tmp_path / "r" / "checkpoints" / "step-00001200").is_dir()
    for which, expected in (("model", raw), ("ema", ema)):
        _, denoiser = load_run(tmp_path / "r", which=which)
        got = denoiser.inner.state_dict()["up_levels.1.0.ffn.down_proj.weight"]
        assert torch.equal(got, expected["up_levels.1.0.ff.down_proj.weight"]), which
    out = tmp_path / "again.pth"
    assert _convert("to-k-diffusion", tmp_path / "r", "-o", out, "--weights", "model") == 0
    again = torch.load(out, weights_only=True)
    assert again["config"]["model"]["self_attns"][1] == _sw(4)
    assert set(again["model_ema"]) == set(raw)
    assert all(torch.equal(again["model_ema"][k], v) for k, v in raw.items() if "fac" not in k)


# ----------------------------------------------------------------------------------------------
# Finding and importing the reference source
# ----------------------------------------------------------------------------------------------


def _source_tree(root: Path) -> Path:
    """A minimal tree shaped like k-diffusion's whose package reports what its imports saw:
    the packages the loader stands in for, the NATTEN function and the flags."""
    models = root / "k_diffusion" / "models"
    models.mkdir(parents=True)
    (models / "__init__.py").write_text("")
    (models / "image_transformer_v2.py").write_text("")
    (root / "k_diffusion" / "__init__.py").write_text(
        "import os\n"
        "import natten\n"
        "import clip, torchsde\n"
        "from dctorch import functional\n"
        "from jsonmerge import merge\n"
        "from skimage import transform\n"
        "from torchdiffeq import odeint\n"
        "from . import models\n"
        "USES_NA2D = natten.has_fused_na()\n"
        "FLAGS = [os.environ.get(f'K_DIFFUSION_USE_{k}') for k in ('COMPILE', 'FLASH_2')]\n"
    )
    return root


def test_k_diffusion_source_reads_the_variable_and_names_a_bad_path(tmp_path, monkeypatch):
    monkeypatch.delenv(reference_source.K_DIFFUSION_SRC_ENV, raising=False)
    assert reference_source.k_diffusion_source() is None
    monkeypatch.setenv(reference_source.K_DIFFUSION_SRC_ENV, "")
    assert reference_source.k_diffusion_source() is None
    bogus = tmp_path / "not-k-diffusion"
    monkeypatch.setenv(reference_source.K_DIFFUSION_SRC_ENV, str(bogus))
    with pytest.raises(ValueError, match=re.escape(f"HDIT_K_DIFFUSION_SRC='{bogus}' is not a")):
        reference_source.k_diffusion_source()
    with pytest.raises(ValueError, match=re.escape(f"'{bogus}' is not a k-diffusion source")):
        reference_source.k_diffusion_source(bogus)
    tree = _source_tree(tmp_path / "kd")
    monkeypatch.setenv(reference_source.K_DIFFUSION_SRC_ENV, str(tree))
    assert (
        reference_source.k_diffusion_source()
        == str(tree.resolve())
        == reference_source.k_diffusion_source(tree)
    )


def test_import_k_diffusion_adjusts_the_import_and_undoes_it(tmp_path, monkeypatch):
    """Whatever was imported or set before the block (another block may be open: the
    session's reference) is exactly as before after it."""
    import natten

    tree = str(_source_tree(tmp_path).resolve())
    monkeypatch.setenv("K_DIFFUSION_USE_COMPILE", "1")
    monkeypatch.delenv("K_DIFFUSION_USE_FLASH_2", raising=False)
    names = ("k_diffusion", "torchsde", "torchdiffeq", "dctorch", "jsonmerge", "skimage")
    before = {name: sys.modules.get(name) for name in names}
    path, fused = list(sys.path), getattr(natten, "has_fused_na", None)
    with reference_source.import_k_diffusion(tmp_path) as package:
        assert package.__file__ == os.path.join(tree, "k_diffusion", "__init__.py")
        assert sys.modules["k_diffusion"] is package and sys.path[0] == tree
        assert package.USES_NA2D is True and package.FLAGS == ["0", "0"]
        assert package.merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"c": 3}, "d": [2]}) == {
            "a": {"b": 1, "c": 3},
            "d": [2],
        }
        if not hasattr(sys.modules["torchdiffeq"], "__file__"):  # a stand-in: it says so
            with pytest.raises(ModuleNotFoundError, match="torchdiffeq is not installed"):
                package.odeint(None, None, None)
        with reference_source.import_k_diffusion(tree) as inner:  # blocks nest
            assert inner is not package and sys.modules["k_diffusion"] is inner
        assert sys.modules["k_diffusion"] is package and natten.has_fused_na() is True
    assert {name: sys.modules.get(name) for name in names} == before
    assert sys.path == path and getattr(natten, "has_fused_na", None) is fused
    assert os.environ["K_DIFFUSION_USE_COMPILE"] == "1"
    assert "K_DIFFUSION_USE_FLASH_2" not in os.environ
    with reference_source.import_k_diffusion(
        tree, device="cuda"
    ) as package:  # k-diffusion's defaults
        assert package.FLAGS == ["1", None]


# ----------------------------------------------------------------------------------------------
# Against the reference source
# ----------------------------------------------------------------------------------------------


def _reference(k_diffusion, config: dict, device="cpu"):
    with torch.device(device):
        return k_diffusion.config.make_model(k_diffusion.config.load_config(config)).eval()


@pytest.mark.parametrize("name", sorted(KD_CONFIGS) + sorted(PAPER_FIXTURES))
def test_fixtures_match_the_reference(k_diffusion, name):
    config = KD_CONFIGS[name] if name in KD_CONFIGS else PAPER_FIXTURES[name]()
    assert interop.k_diffusion_defaults(config) == k_diffusion.config.load_config(config)
    reference = _reference(k_diffusion, config, device="meta")
    shapes = {k: list(v.shape) for k, v in reference.state_dict().items()}
    assert _load_fixture(name)["tensors"] == shapes, "fixture out of date: regenerate (docstring)"


MEASURED: dict[str, tuple[float, float]] = {}


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.filterwarnings("ignore:return_lse is deprecated")  # NATTEN's flex path (reference)
@pytest.mark.parametrize("name", sorted(KD_CONFIGS))
def test_outputs_equal_the_reference_both_ways(k_diffusion, name):
    config = KD_CONFIGS[name]
    num_classes = config["dataset"]["num_classes"]
    seed = sum(map(ord, name))
    torch.manual_seed(seed)

    # k-diffusion → hdit-edu
    reference = _reference(k_diffusion, config)
    _randomise_(reference, seed)
    ours = interop.from_k_diffusion(config, reference.state_dict())
    x, sigma, cls, aug = _inputs(num_classes, seed)
    with torch.no_grad():
        expected = reference(x, sigma, aug_cond=aug, class_cond=cls)
        got = ours(x, sigma, class_cond=cls, aug_cond=aug)
    forward = (got - expected).abs().max().item()
    assert expected.abs().mean() > 0.1  # a non-trivial function
    assert forward <= TOLERANCE, f"{name}: k-diffusion → hdit-edu differs by {forward:.2e}"

    # hdit-edu → k-diffusion (a fresh model of ours, randomised, into a fresh reference)
    torch.manual_seed(seed + 1)
    ours = build_model(interop.config_from_k_diffusion(config, strict=False)).eval()
    _randomise_(ours, seed + 1)
    kd_config, kd_state = interop.to_k_diffusion(ours)
    reference = _reference(k_diffusion, kd_config)
    reference.load_state_dict(kd_state, strict=True)
    x, sigma, cls, _ = _inputs(num_classes, seed + 1)
    with torch.no_grad():
        expected = ours(x, sigma, class_cond=cls)
        got = reference(x, sigma, class_cond=cls)
    backward = (got - expected).abs().max().item()
    assert expected.abs().mean() > 0.1
    assert backward <= TOLERANCE, f"{name}: hdit-edu → k-diffusion differs by {backward:.2e}"
    MEASURED[name] = (forward, backward)
    print(
        f"\n{name}: max |Δ| k-diffusion→hdit-edu {forward:.2e}, hdit-edu→k-diffusion {backward:.2e}"
    )


def test_global_attention_model_is_exact_in_float64(k_diffusion, monkeypatch):
    """In float64 the mapping is exact (~1e-15), once one precision quirk of the reference is
    matched: its *global* attention computes the RoPE angles in the activations' dtype (it
    casts the positions to ``qkv.dtype``), hdit-edu from float32 positions. Giving hdit-edu
    float64 positions removes the only difference. (NATTEN has no float64 kernels, so this is
    checked on the all-global config.)"""
    from hdit_edu import hourglass

    config = KD_CONFIGS["one_level_global_p4"]
    reference = _reference(k_diffusion, config)
    _randomise_(reference, seed=11)
    ours = interop.from_k_diffusion(config, reference.state_dict())
    reference.double()
    ours.double()
    token_positions = hourglass.token_positions  # the model's one position source (issue 19)
    monkeypatch.setattr(
        hourglass, "token_positions", lambda *a, **k: token_positions(*a, **k).double()
    )
    x, sigma, _, aug = _inputs(0, seed=12)
    x, sigma, aug = x.double(), sigma.double(), aug.double()
    with torch.no_grad():
        diff = (ours(x, sigma, aug_cond=aug) - reference(x, sigma, aug_cond=aug)).abs().max()
    assert diff < 1e-12, diff.item()
    print(f"\none_level_global_p4 float64: max |Δ| {diff.item():.1e}")


# ----------------------------------------------------------------------------------------------
# Fixture generation (run once against the reference source; see the module docstring)
# ----------------------------------------------------------------------------------------------


def regenerate_fixtures(src: str) -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    configs = {**KD_CONFIGS, **{name: make() for name, make in PAPER_FIXTURES.items()}}
    with reference_source.import_k_diffusion(src) as k_diffusion:
        for name, config in configs.items():
            reference = _reference(k_diffusion, config, device="meta")
            tensors = {k: list(v.shape) for k, v in reference.state_dict().items()}
            lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in tensors.items()]
            text = (
                "{\n"
                f'"about": "names and shapes of the state dict of k-diffusion\'s '
                f"image_transformer_v2 (commit {K_DIFFUSION_COMMIT}) for this config; generated "
                f'by tests/test_interop.py",\n'
                f'"config": {json.dumps(config)},\n'
                '"tensors": {\n' + ",\n".join(lines) + "\n}\n}\n"
            )
            (FIXTURES / f"{name}.json").write_text(text)
            print(f"wrote {FIXTURES / name}.json: {len(tensors)} tensors")


if __name__ == "__main__":
    source = reference_source.k_diffusion_source()
    if source is None:
        sys.exit(f"set {reference_source.K_DIFFUSION_SRC_ENV} to a clone of crowsonkb/k-diffusion")
    regenerate_fixtures(source)
