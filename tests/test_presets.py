"""The registry of named configurations (hdit_edu.presets, issue 26): the paper's named models
(Table 1 chain, Table 2 skips, Table 5 weightings, Table 6), the toy model, names and JSON, the toy
tasks, and a real forward pass of every named config at its smallest valid resolution.

Every configuration a name builds is the same ``Config`` it was before the presets moved out of
``configs.py`` and ``ablation.py``: ``tests/fixtures/named_configs.json`` is the JSON dump of
each one, written with the library *before* the move (commit 5964337, by this file's
``__main__`` in its form of then); the test compares today's library with it, field by field.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from hdit_edu.ablation import PAPER_CHAIN, TOY_EXPERIMENT, ToyBudget, ablation_config, run_config
from hdit_edu.configs import (
    all_local,
    load_config,
    min_resolution,
    save_config,
    token_grids,
    validate_config,
)
from hdit_edu.models import build_model
from hdit_edu.presets import (
    ABLATION_STEPS,
    BASELINES,
    FOLLOW_UPS,
    MIN_SNR_VARIANTS,
    PAPER_CONFIGS,
    PRESETS,
    SKIP_VARIANTS,
    TOY_TASKS,
    ablation_step,
    config_names,
    get_config,
    on_toy_task,
    paper_config,
    skip_variant,
    toy,
)
from hdit_edu.profiles import for_profile

GOLDEN = Path(__file__).parent / "fixtures" / "named_configs.json"
# The names configs.get_config took before the registry (the golden file's paper-scale names;
# D-minsnr5/4 were ablation.paper_step's, L and C-smsnr only toy configurations).
FORMER_NAMES = ("toy", *PAPER_CONFIGS, *ABLATION_STEPS, *BASELINES, *SKIP_VARIANTS)


def _json(config) -> dict:
    return json.loads(json.dumps(config.to_dict()))


def named_configs() -> dict[str, dict]:
    """Every config a name builds, keyed by how it is asked for: ``NAME`` (the paper-scale
    config), ``NAME@256`` / ``E@256x512`` (App. A's resolution rule), ``cpu:NAME`` (the cpu
    profile's toy scale), ``chain:NAME`` (the paper-scale chain's budget), ``toy:TASK:NAME:…``
    (the toy ablation's config of a run: task, seed, steps, batch size, lr)."""
    out = {}
    for name in FORMER_NAMES:
        out[name] = get_config(name)
        out[f"{name}@256"] = get_config(f"{name}@256")
        out[f"cpu:{name}"] = for_profile(get_config(name), "cpu")
    out["E@256x512"] = get_config("E@256x512")
    for name in PAPER_CHAIN:
        out[name] = get_config(name)
        out[f"cpu:{name}"] = for_profile(get_config(name), "cpu")
        out[f"chain:{name}"] = ablation_config(name, train_steps=1000, data="data/imagenet")
    p2 = ToyBudget(task="p2", train_steps=500, batch_size=8, lr=1e-3)
    for name in (*TOY_EXPERIMENT, *FOLLOW_UPS):
        out[f"toy:p4k3:{name}:0"] = run_config(name, 0)
        out[f"toy:p2:{name}:1:500:8:0.001"] = run_config(name, 1, p2)
    return {key: _json(config) for key, config in out.items()}


def test_every_named_config_is_the_golden_one():
    golden = json.loads(GOLDEN.read_text())
    built = named_configs()
    assert sorted(built) == sorted(golden)
    for key, config in built.items():
        assert config == golden[key], key


def test_one_registry_holds_every_name_with_a_one_line_description():
    assert config_names() == (*FORMER_NAMES, *MIN_SNR_VARIANTS, *FOLLOW_UPS)
    assert set(TOY_EXPERIMENT) | set(PAPER_CHAIN) | set(FOLLOW_UPS) <= set(config_names())
    for name, preset in PRESETS.items():
        assert preset.description and "\n" not in preset.description, name
        assert (preset.build is None) == (preset.base is not None), name
        assert get_config(name).name in (name, "E"), name  # E-lerp is E itself
        assert get_config(name.lower()) == get_config(name)


def test_named_changes_mean_the_same_at_both_scales():
    """``L`` and ``C-smsnr`` (until now toy-only names) at the paper's size: D made all-local,
    C with E's weighting; on the toy task the change is applied to the toy base."""
    d, c, e = get_config("D"), get_config("C"), get_config("E")
    local = all_local(d)
    local.name = "L"
    assert get_config("L") == local
    assert [level.attention for level in get_config("L").model.levels] == ["neighborhood"] * 2
    smsnr = get_config("C-smsnr")
    assert smsnr.model == c.model and smsnr.diffusion.loss_weighting == e.diffusion.loss_weighting
    toy_local = all_local(on_toy_task("D"))
    toy_local.name = "L"
    assert on_toy_task("L") == toy_local
    assert get_config("L@256").model.levels[0].attention == "neighborhood"
    minsnr = get_config("D-minsnr5@256")
    assert minsnr.model == get_config("D@256").model and minsnr.diffusion.gamma == 5.0


def test_on_toy_task_keeps_each_steps_kind_of_change():
    """The toy experiment's configurations (on_toy_task, task p4k3) change what the paper
    changes, at the task's outer kernel / window."""
    expected = {  # Table 1: outer attention, FFN, position embedding, loss weighting
        "A": ("global", "gelu", "additive", "snr"),
        "B1": ("shifted-window", "gelu", "additive", "snr"),
        "B2": ("neighborhood", "gelu", "additive", "snr"),
        "C": ("neighborhood", "geglu", "additive", "snr"),
        "D": ("neighborhood", "geglu", "rope", "snr"),
        "E": ("neighborhood", "geglu", "rope", "soft-min-snr"),
        "D-minsnr5": ("neighborhood", "geglu", "rope", "min-snr"),
    }
    patch, kernel, window = TOY_TASKS["p4k3"]
    for step, kinds in expected.items():
        c = on_toy_task(step)
        m = c.model
        got = (m.levels[0].attention, m.ffn, m.pos_emb, c.diffusion.loss_weighting)
        assert got == kinds, step
        assert m.levels[1].attention == "global" and m.resolution == 32 and m.num_classes == 8
        assert c.training.dataset == "toy" and c.training.lr == 5e-4
        assert m.patch_size == patch and m.levels[0].kernel_size == kernel
        assert m.levels[0].window_size == window
    assert on_toy_task("D-minsnr4").diffusion.gamma == 4.0
    assert on_toy_task("E-concat").model.skip == "concat"
    r4 = on_toy_task("R4").model
    assert len(r4.levels) == 1 and r4.levels[0].attention == "global"


def test_unknown_names_and_tasks_are_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown config 'Z'; allowed: toy, imagenet128"):
        on_toy_task("Z")
    with pytest.raises(ValueError, match="unknown task 'p8'; allowed: p2, p4k3"):
        on_toy_task("E", "p8")


# ----------------------------------------------------------------------------------------------
# The named models
# ----------------------------------------------------------------------------------------------


def _levels(config):
    return [(lv.depth, lv.width, lv.attention) for lv in config.model.levels]


def test_ablation_chain_at_128():
    outer = {"A": "global", "B1": "shifted-window", "B2": "neighborhood"}
    for step in ABLATION_STEPS:
        c = ablation_step(step)
        assert _levels(c) == [(2, 384, outer.get(step, "neighborhood")), (11, 768, "global")]
        assert c.model.patch_size == 4 and c.model.num_classes == 1000
        assert [lv.head_dim for lv in c.model.levels] == [64, 64]
        assert c.model.ffn == ("gelu" if step in ("A", "B1", "B2") else "geglu")
        assert c.model.pos_emb == ("rope" if step in ("D", "E") else "additive")
        assert c.diffusion.loss_weighting == ("soft-min-snr" if step == "E" else "snr")
        assert c.model.mapping.depth == 1 and c.model.mapping.width == 768
    assert ablation_step("B1").model.levels[0].window_size == 8
    assert ablation_step("B2").model.levels[0].kernel_size == 7
    # E changes only the loss weighting: same architecture as D
    assert ablation_step("D").model == ablation_step("E").model


def test_each_doubling_adds_an_outer_level_of_width_384_depth_2():
    for step, kind in [("A", "global"), ("B1", "shifted-window"), ("E", "neighborhood")]:
        assert _levels(ablation_step(step, 256)) == [(2, 384, kind)] * 2 + [(11, 768, "global")]
        assert _levels(ablation_step(step, 512)) == [(2, 384, kind)] * 3 + [(11, 768, "global")]
    # the innermost level stays at 16×16 tokens
    assert token_grids(ablation_step("E", 512).model)[-1] == (16, 16)
    assert ablation_step("E", 512).name == "E@512"


def test_baselines():
    r1 = ablation_step("R1")
    assert r1.model.arch == "dit" and _levels(r1) == [(12, 768, "global")]
    assert r1.model.out_channels == 6 and r1.model.aug_dim == 0 and r1.model.patch_size == 4
    assert r1.model.levels[0].d_ff == 4 * 768
    assert r1.training.lr == 1e-4 and r1.training.weight_decay == 0.0  # DiT's optimiser
    assert ablation_step("R2").model == r1.model
    r3, r4 = ablation_step("R3"), ablation_step("R4")
    assert r3.model.arch == "hdit" and _levels(r3) == [(12, 768, "global")]
    assert (r3.model.ffn, r3.model.pos_emb) == ("gelu", "additive")
    assert r3.model == r4.model
    assert (r3.diffusion.loss_weighting, r4.diffusion.loss_weighting) == ("snr", "soft-min-snr")
    # "the same architecture" at higher resolutions: more tokens, no added level
    assert _levels(ablation_step("R1", 512)) == [(12, 768, "global")]
    assert token_grids(ablation_step("R3", 512).model) == [(128, 128)]


def test_skip_variants():
    e = ablation_step("E")
    for skip in ("lerp", "add", "concat"):
        variant = skip_variant(skip)
        assert variant.model.skip == skip
        assert dataclasses.replace(variant.model, skip="lerp") == e.model
    assert get_config("E-concat").model.skip == "concat"
    assert get_config("E-add@256").model.skip == "add"
    with pytest.raises(ValueError, match="no hourglass skips"):
        ablation_step("R1", skip="add")


def test_paper_configs_follow_table6():
    im128 = paper_config("imagenet128")
    assert im128.model == ablation_step("E").model
    ffhq = paper_config("ffhq1024")
    assert [lv.width for lv in ffhq.model.levels] == [128, 256, 384, 768, 1024]
    assert [lv.depth for lv in ffhq.model.levels] == [2, 2, 2, 2, 2]
    assert [lv.width // lv.head_dim for lv in ffhq.model.levels] == [2, 4, 6, 12, 16]
    assert [lv.attention for lv in ffhq.model.levels] == ["neighborhood"] * 3 + ["global"] * 2
    assert token_grids(ffhq.model)[3:] == [(32, 32), (16, 16)]  # global at 32² and 16²
    assert [lv.dropout for lv in ffhq.model.levels] == [0, 0, 0, 0, 0.1]
    assert ffhq.model.num_classes == 0 and ffhq.training.augment_p == 0.12
    assert ffhq.training.steps == 1_000_000
    im256 = paper_config("imagenet256")
    assert _levels(im256) == [
        (2, 384, "neighborhood"),
        (2, 768, "neighborhood"),
        (16, 1536, "global"),
    ]
    assert [lv.width // lv.head_dim for lv in im256.model.levels] == [6, 12, 24]
    for c in (im128, ffhq, im256):
        assert c.model.patch_size == 4
        assert all(lv.kernel_size == 7 for lv in c.model.levels)
        assert (c.diffusion.sigma_data, c.diffusion.sigma_min, c.diffusion.sigma_max) == (
            0.5,
            1e-3,
            1e3,
        )
        assert c.diffusion.sigma_density == "cosine-interpolated"
        t = c.training
        assert (t.lr, t.betas, t.eps, t.weight_decay, t.ema_decay) == (
            5e-4,
            (0.9, 0.95),
            1e-8,
            1e-2,
            0.9999,
        )
        assert (t.batch_size, t.precision, t.cond_dropout) == (256, "bf16", 0.1)
    # the mapping network reading that reproduces the parameter counts (see paper_config)
    assert (ffhq.model.mapping.depth, ffhq.model.mapping.width) == (2, 256)
    assert (im256.model.mapping.depth, im256.model.mapping.width) == (2, 256)
    with pytest.raises(ValueError, match="allowed: imagenet128, ffhq1024, imagenet256"):
        paper_config("cifar10")


def test_toy_matches_the_toy_data_set():
    from hdit_edu.toy import TOY_CLASSES

    small = toy()
    assert small.model.num_classes == len(TOY_CLASSES) == 8
    assert small.model.resolution == 32 and small.model.patch_size == 2
    assert token_grids(small.model) == [(16, 16), (8, 8)]
    assert _levels(small) == [(2, 128, "neighborhood"), (4, 256, "global")]
    assert small.training.dataset == "toy"

# ----------------------------------------------------------------------------------------------
# Names, JSON
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", config_names())
def test_every_named_config_round_trips_through_json(name, tmp_path):
    config = get_config(name)
    validate_config(config)
    path = tmp_path / f"{name}.json"
    save_config(config, path)
    assert load_config(path) == config
    assert get_config(path) == config
    assert get_config(str(path)) == config


def test_get_config_names_and_errors():
    assert get_config("e") == get_config("E")
    assert get_config("E@512") == ablation_step("E", 512)
    assert get_config("E@256x512") == ablation_step("E", (256, 512))
    assert get_config("E@256x512").model.resolution == (256, 512)
    assert get_config("imagenet128@256").model == ablation_step("E", 256).model
    with pytest.raises(ValueError, match="unknown config 'F'; allowed: toy, imagenet128"):
        get_config("F")
    with pytest.raises(
        ValueError, match="resolution suffix 'big' is not a positive integer N or HxW"
    ):
        get_config("E@big")
    with pytest.raises(ValueError, match="does not exist"):
        get_config("missing.json")
    with pytest.raises(ValueError, match="unknown ablation step 'F'"):
        ablation_step("F")


def test_unknown_json_key_is_an_error(tmp_path):
    d = get_config("toy").to_dict()
    d["model"]["levels"][0]["kernel"] = 7
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"levels\[0\]: unknown keys \['kernel'\]"):
        get_config(path)

# ----------------------------------------------------------------------------------------------
# Every named config builds and runs
# ----------------------------------------------------------------------------------------------

# One name per distinct architecture (the rest are equal model configs, checked here).
DISTINCT_MODELS = [
    "toy",
    "A",
    "B1",
    "B2",
    "C",
    "E",
    "E-add",
    "E-concat",
    "R1",
    "R3",
    "ffhq1024",
    "imagenet256",
    "L",
]
SAME_MODEL = {
    "D": "E",
    "imagenet128": "E",
    "E-lerp": "E",
    "R2": "R1",
    "R4": "R3",
    "D-minsnr5": "E",
    "D-minsnr4": "E",
    "C-smsnr": "C",
}


def test_distinct_models_cover_every_name():
    assert set(DISTINCT_MODELS) | set(SAME_MODEL) == set(config_names())
    for name, same in SAME_MODEL.items():
        assert get_config(name).model == get_config(same).model


@pytest.mark.parametrize("name", DISTINCT_MODELS)
def test_named_config_builds_and_runs_at_its_smallest_resolution(name):
    config = get_config(name)
    torch.manual_seed(0)
    model = build_model(config).eval()
    res = min_resolution(config.model)
    m = config.model
    x = torch.randn(2, m.in_channels, res, res)
    sigma = torch.tensor([0.5, 3.0])
    class_cond = torch.tensor([0, m.num_classes]) if m.num_classes else None
    with torch.no_grad():
        out = model(x, sigma, class_cond)
    assert out.shape == (2, m.out_channels or m.in_channels, res, res)
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output: F = 0 at init


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        pytest.exit("usage: python tests/test_presets.py --write (only before a refactor)")
    GOLDEN.write_text(json.dumps(named_configs(), indent=1, sort_keys=True) + "\n")
