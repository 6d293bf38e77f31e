"""Every named configuration is the same ``Config`` it was before the presets moved out of
``configs.py`` (issue 26): ``tests/fixtures/named_configs.json`` is the JSON dump of every
config a name built, made with the library *before* the move (``python tests/test_presets.py``
writes it; the test compares the library of today with it, field by field)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hdit_edu.ablation import (
    EXTRA_TOY_CONFIGS,
    GPU_STEPS,
    TOY_CONFIGS,
    ablation_config,
    paper_step,
    toy_ablation_config,
)
from hdit_edu.configs import CONFIG_NAMES, get_config
from hdit_edu.profiles import for_profile

GOLDEN = Path(__file__).parent / "fixtures" / "named_configs.json"


def _json(config) -> dict:
    return json.loads(json.dumps(config.to_dict()))


def named_configs() -> dict[str, dict]:
    """Every config a name builds, keyed by how it is asked for: ``NAME`` (the paper-scale
    config), ``NAME@256`` / ``E@256x512`` (App. A's resolution rule), ``cpu:NAME`` (the cpu
    profile's toy scale), ``chain:NAME`` (the paper-scale chain's budget), ``toy:TASK:NAME:…``
    (the toy ablation's config of a run: task, seed, steps, batch size, lr)."""
    out = {}
    for name in CONFIG_NAMES:
        out[name] = get_config(name)
        out[f"{name}@256"] = get_config(f"{name}@256")
        out[f"cpu:{name}"] = for_profile(get_config(name), "cpu")
    out["E@256x512"] = get_config("E@256x512")
    for name in GPU_STEPS:
        out[name] = paper_step(name)
        out[f"cpu:{name}"] = for_profile(paper_step(name), "cpu")
        out[f"chain:{name}"] = ablation_config(name, train_steps=1000, data="data/imagenet")
    for name in (*TOY_CONFIGS, *EXTRA_TOY_CONFIGS):
        out[f"toy:p4k3:{name}:0"] = toy_ablation_config(name, 0)
        out[f"toy:p2:{name}:1:500:8:0.001"] = toy_ablation_config(name, 1, 500, 8, 1e-3, "p2")
    return {key: _json(config) for key, config in out.items()}


def test_every_named_config_is_the_golden_one():
    golden = json.loads(GOLDEN.read_text())
    built = named_configs()
    assert sorted(built) == sorted(golden)
    for key, config in built.items():
        assert config == golden[key], key


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        pytest.exit("usage: python tests/test_presets.py --write (only before a refactor)")
    GOLDEN.write_text(json.dumps(named_configs(), indent=1, sort_keys=True) + "\n")
