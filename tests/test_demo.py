"""The shipped pretrained toy HDiT and the sampling app (issue 7).

* the run dir ``data/checkpoints/toy-hdit/`` is small, an HDiT with neighborhood + global
  levels, and ``hdit-edu sample --run`` accepts it;
* its samples at the demo's default settings are recognisably their classes (toy classifier
  accuracy >= 80 %);
* the app draws exactly what ``hdit-edu sample`` draws, and its "Sample" button callback puts a
  PNG of the right size into the grid image.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
import torch
from PIL import Image

from hdit_edu import cli
from hdit_edu.measure import model_evaluations, sampler_study
from hdit_edu.runs import load_run
from hdit_edu.sampling import SAMPLERS, generate, karras_sigmas, sample
from hdit_edu.toy import class_accuracy
from hdit_edu.widgets import (
    DEMO_SETTINGS,
    SHIPPED_RUN,
    SamplingApp,
    SamplingSettings,
    draw_samples,
    images_png,
    sample_classes,
    trajectory_steps,
)

MAX_SHIPPED_BYTES = 25 * 2**20


@pytest.fixture(scope="module")
def shipped():
    torch.manual_seed(0)
    return load_run(SHIPPED_RUN, device="cpu")


def test_shipped_run_is_a_small_class_conditional_hdit(shipped):
    config, denoiser = shipped
    files = [p for p in SHIPPED_RUN.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    assert total <= MAX_SHIPPED_BYTES, f"{total / 2**20:.1f} MiB > 25 MiB"
    names = {p.name for p in files}
    assert {"config.json", "ema.safetensors", "README.md", "samples.png"} <= names
    assert {"metrics.jsonl", "cfg_sweep.json", "sampler_study.json"} <= names
    m = config.model
    assert m.arch == "hdit" and m.num_classes == 8 and m.resolution == 32
    assert [level.attention for level in m.levels] == ["neighborhood", "global"]
    assert type(denoiser.inner).__name__ == "HDiT"
    # the README records the training command and the measured quality
    readme = (SHIPPED_RUN / "README.md").read_text()
    for needle in ("hdit-edu train", "hdit-edu sample", "class accuracy", "FID", "seed"):
        assert needle in readme, needle


def test_demo_defaults_are_recognisable(shipped):
    """Class accuracy of samples >= 80 % at the demo's defaults (two seeds: 32 images)."""
    config, denoiser = shipped
    images, labels = [], []
    for seed in (0, 1):
        result = draw_samples(denoiser, config, replace(DEMO_SETTINGS, seed=seed))
        images.append(result.images)
        labels.append(result.classes)
    accuracy = class_accuracy(torch.cat(images), torch.cat(labels))
    assert accuracy >= 0.8, accuracy


def test_app_draws_what_hdit_edu_sample_draws(shipped):
    config, denoiser = shipped
    settings = SamplingSettings(class_index=3, cfg_scale=3.0, sampler="dpmpp_3m_sde", steps=6,
                                seed=7, batch_size=5)  # fmt: skip
    result = draw_samples(denoiser, config, settings)
    reference = generate(
        denoiser,
        config,
        5,
        sampler="dpmpp_3m_sde",
        steps=6,
        cfg_scale=3.0,
        class_cond=3,
        seed=7,
    )
    torch.testing.assert_close(result.images, reference, rtol=0, atol=1e-6)
    assert result.classes.tolist() == [3] * 5
    # one x̂₀ per step; the last step into σ = 0 returns the x̂₀ itself
    assert result.trajectory.shape == (6, 5, 3, 32, 32)
    assert result.sigmas[-1] == 0 and len(result.sigmas) == 7
    torch.testing.assert_close(result.trajectory[-1], result.images, rtol=0, atol=1e-6)


def test_sample_classes_and_trajectory_columns():
    assert sample_classes(SamplingSettings(batch_size=10), 8).tolist() == [*range(8), 0, 1]
    assert sample_classes(SamplingSettings(class_index=5, batch_size=3), 8).tolist() == [5] * 3
    assert sample_classes(SamplingSettings(cfg_scale=1.0), 0) is None
    assert trajectory_steps(20) == [0, 3, 5, 8, 11, 14, 16, 19]
    assert trajectory_steps(5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("sampler", "ddim", "euler, heun, dpmpp_2m, dpmpp_3m_sde"),
        ("steps", 0, "1 … 100"),
        ("batch_size", 65, "1 … 64"),
        ("cfg_scale", 4.5, "1.0 … 4.0"),
        ("class_index", 8, "0 … 7"),
    ],
)
def test_bad_settings_name_the_allowed_values(shipped, field, value, allowed):
    with pytest.raises(ValueError, match=field) as info:
        replace(DEMO_SETTINGS, **{field: value}).validate(shipped[0])  # 8 classes, EDM
    assert allowed in str(info.value)


def test_sample_button_shows_an_image():
    app = SamplingApp.from_run(settings=replace(DEMO_SETTINGS, steps=8))  # the shipped run
    assert "hdit-sample-button" in app.sample_button._dom_classes
    assert app.sample_button.description == "Sample"
    assert len(app.grid_image.value) == 0 and app.result is None
    assert [label for label, _ in app.sampler_picker.options] == [
        "Euler",
        "Heun",
        "DPM++(2M)",
        "DPM++(3M) SDE",
    ]
    assert app.class_picker.options[1][0] == "0: face"

    app.batch_slider.value = 16
    app.sample_button.click()  # the on_click callback, as a click in JupyterLab runs it

    png = bytes(app.grid_image.value)
    assert png.startswith(b"\x89PNG")
    grid = Image.open(io.BytesIO(png))
    # 16 images of 32² in 8 columns, 1-pixel padding, shown 4× enlarged
    assert grid.size == ((8 * 33 + 1) * 4, (2 * 33 + 1) * 4)
    assert app.progress.value == app.progress.max == 8
    assert app.result.images.shape == (16, 3, 32, 32)
    strip = Image.open(io.BytesIO(bytes(app.strip_image.value)))
    assert strip.size == ((8 * 33 + 1) * 2, (4 * 33 + 1) * 2)  # 4 samples × 8 steps, 2×
    assert app.grid_image.width == str(grid.size[0])  # shown at its natural width
    assert app.step_slider.max == 8 and app.step_slider.value == 8  # steps count from 1
    assert Image.open(io.BytesIO(bytes(app.step_image.value))).size[0] == (8 * 33 + 1) * 2
    assert " s</b>" in app.status.value and "8 steps of DPM++(3M) SDE" in app.status.value

    last = bytes(app.step_image.value)
    app.step_slider.value = 1  # the slider redraws the x̂₀ grid of that step
    first = bytes(app.step_image.value)
    assert first != last
    assert first == images_png(app.result.trajectory[0], scale=2)


def test_hdit_edu_sample_accepts_the_shipped_run(tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = cli.main(
        ["sample", "--run", str(SHIPPED_RUN), "--n", "8", "--steps", "4", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (8 * 34 + 2, 34 + 2)  # save_grid: padding 2, 8 per row


def test_cached_guidance_sweep_is_figure_9_shaped():
    """The cached sweep (CPU profile of notebook 08): guidance raises class accuracy over
    w = 1, and the demo's w is at least as accurate as no guidance."""
    sweep = json.loads((SHIPPED_RUN / "cfg_sweep.json").read_text())
    scales, accuracy = sweep["scales"], sweep["class_accuracy"]
    assert scales[0] == 1.0 and scales[-1] == 4.0 and len(scales) == len(sweep["fid"])
    assert max(accuracy) > accuracy[0]
    assert accuracy[scales.index(DEMO_SETTINGS.cfg_scale)] >= 0.8
    assert sweep["sampler"] == DEMO_SETTINGS.sampler and sweep["steps"] == DEMO_SETTINGS.steps


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_model_evaluations_counts_the_denoiser_calls(shipped, sampler):
    config, denoiser = shipped
    calls = []

    def counted(x, sigma, **cond):
        calls.append(len(x))
        return denoiser(x, sigma, **cond)

    d = config.diffusion
    sigmas = karras_sigmas(6, d.sigma_min, d.sigma_max)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    classes = torch.tensor([0, 3])
    sample(
        counted, x, sigmas, sampler, class_cond=classes, generator=torch.Generator().manual_seed(1)
    )
    assert len(calls) == model_evaluations(sampler, 6) == (11 if sampler == "heun" else 6)


def test_recorded_sampler_study_is_what_sampler_study_computes(shipped):
    """The study notebook 08 reads in the cpu profile: its ODE errors at 5 and 10 steps are
    recomputed (the same start noise and 200-step reference), its budgets are equal, and the
    paper's sampler is the most accurate at that budget."""
    config, denoiser = shipped
    recorded = json.loads((SHIPPED_RUN / "sampler_study.json").read_text())
    live = sampler_study(denoiser, config, n=8, budget=4, step_counts=(5, 10))
    for name, errors in live["errors"].items():
        assert errors["nfe"] == recorded["errors"][name]["nfe"][:2]
        assert errors["rms"] == pytest.approx(recorded["errors"][name]["rms"][:2], rel=1e-3)
    assert sorted(live["quality"]) == sorted(recorded["quality"]) == sorted(SAMPLERS)
    assert live["quality"]["heun"] == {**live["quality"]["heun"], "steps": 2, "nfe": 3}
    assert recorded["n"] == 512 and recorded["cfg_scale"] == DEMO_SETTINGS.cfg_scale
    assert {q["nfe"] for q in recorded["quality"].values()} == {49, 50}
    accuracy = {s: q["class_accuracy"] for s, q in recorded["quality"].items()}
    assert max(accuracy, key=accuracy.get) == "dpmpp_3m_sde"
