"""The sampling app (``hdit_edu.widgets.SamplingApp``, ``draw_samples``) on a run of DiT's
discrete process (baseline R1, ``diffusion.process = "ddpm"``; issue 33), on a real tiny R1
trained for two steps and loaded from its run dir, as a notebook opens it:

* it offers exactly the samplers that fit the run (``sampling.samplers_for``: DiT's ancestral
  sampler) and the run's own steps (250, DiT's ``sample.py``), over the process's step range;
  an EDM run keeps the demo's defaults (50 steps of DPM++(3M) SDE, 1 … 100 steps);
* its "Sample" button draws exactly (``torch.equal``) what ``sampling.generate`` and
  ``hdit-edu sample`` draw for the same settings, guided as DiT guides; the trajectory's steps
  are the respaced steps t, with σ_t = √((1 − ᾱ_t)/ᾱ_t) of DiT's linear β schedule;
* settings of the other process (an EDM sampler for a DDPM run, and back) are refused once,
  with the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from traitlets import TraitError

from hdit_edu import cli, ddpm
from hdit_edu.data import save_grid
from hdit_edu.presets import get_config, on_toy_task
from hdit_edu.profiles import ToyScale, to_toy_scale
from hdit_edu.runs import load_run
from hdit_edu.sampling import (
    DDPM_SAMPLER,
    DEFAULT_SAMPLING,
    SAMPLERS,
    generate,
    samplers_for,
    step_range,
)
from hdit_edu.toy import ToyDataset
from hdit_edu.training import Trainer
from hdit_edu.widgets import (
    DDPM_SAMPLER_LABEL,
    DEMO_SETTINGS,
    SAMPLER_LABELS,
    SHIPPED_RUN,
    SamplingApp,
    SamplingSettings,
    default_settings,
    draw_samples,
    step_limits,
)

TINY_R1 = ToyScale(widths=(32, 32), depths=(1, 1), head_dim=16, mapping_width=32, batch_size=4,
                   steps=2)  # fmt: skip


@pytest.fixture(scope="module")
def r1_run(tmp_path_factory):
    """A tiny toy R1 (DiT-shaped, DDPM, learned variance) trained two steps into a run dir.
    DiT zero-initialises its output head, so that after two steps the EMA's ε̂ and v are ~1e-6
    and neither the class nor the guidance scale changes a pixel: as ``test_ddpm_r1``'s tiny,
    the head (of the weights and of their EMA) starts from N(0, 0.05²) instead."""
    config = to_toy_scale(get_config("R1"), TINY_R1)
    config.training.sample_every = 0
    run = tmp_path_factory.mktemp("r1") / "run"
    torch.manual_seed(0)
    trainer = Trainer(config, run, dataset=ToyDataset("train", resolution=32, size=64),
                      progress=False)  # fmt: skip
    with torch.no_grad():
        for net in (trainer.model, trainer.ema):
            head = torch.Generator().manual_seed(0)
            for p in net.final_layer.parameters():
                p.copy_(torch.randn(p.shape, generator=head) * 0.05)
    trainer.fit()
    return run


def test_the_samplers_and_steps_that_fit_each_process():
    r1, r2 = on_toy_task("R1"), on_toy_task("R2")
    assert samplers_for(r1) == (DDPM_SAMPLER,) == ("ddpm",)
    assert samplers_for(r2) == SAMPLERS == ("euler", "heun", "dpmpp_2m", "dpmpp_3m_sde")
    assert step_range(r1) == (2, 1000) and step_range(r2) == (1, None)
    assert step_limits(r1) == (2, 1000) and step_limits(r2) == (1, 100)  # the app's EDM cap
    assert DEFAULT_SAMPLING == {"edm": ("dpmpp_3m_sde", 50), "ddpm": ("ddpm", 250)}
    # §5.1's labels stay EDM's four (notebook 08 loops over them); DiT's is its own
    assert tuple(name for _, name in SAMPLER_LABELS) == SAMPLERS
    assert DDPM_SAMPLER_LABEL == ("DDPM ancestral (DiT)", DDPM_SAMPLER)
    # an EDM run's defaults are the demo's, number for number; a DDPM run's are DiT's
    assert default_settings(r2) == DEMO_SETTINGS == SamplingSettings(
        class_index=None, cfg_scale=2.5, sampler="dpmpp_3m_sde", steps=50, seed=0, batch_size=16
    )
    assert default_settings(r1) == replace(DEMO_SETTINGS, sampler="ddpm", steps=250)


def test_app_on_a_ddpm_run_offers_dits_sampler_and_its_250_steps(r1_run):
    app = SamplingApp.from_run(r1_run)
    assert app.config.diffusion.process == "ddpm"
    assert type(app.denoiser).__name__ == "DDPMDenoiser"
    assert list(app.sampler_picker.options) == [("DDPM ancestral (DiT)", "ddpm")]
    assert app.sampler_picker.value == "ddpm"
    assert (app.steps_slider.value, app.steps_slider.min, app.steps_slider.max) == (250, 2, 1000)
    assert app.settings() == replace(DEMO_SETTINGS, sampler="ddpm", steps=250)
    with pytest.raises(TraitError):  # the picker cannot hold an EDM sampler for this run
        app.sampler_picker.value = "dpmpp_3m_sde"
    edm = SamplingApp.from_run(SHIPPED_RUN)  # an EDM run: as before
    assert [name for _, name in edm.sampler_picker.options] == list(SAMPLERS)
    assert (edm.steps_slider.value, edm.steps_slider.min, edm.steps_slider.max) == (50, 1, 100)
    assert edm.settings() == DEMO_SETTINGS


def test_app_on_a_ddpm_run_draws_what_generate_draws(r1_run):
    app = SamplingApp.from_run(r1_run)
    app.class_picker.value = 3
    app.cfg_slider.value = 3.0
    app.steps_slider.value = 6
    app.seed_input.value = 7
    app.batch_slider.value = 5
    app.sample_button.click()  # the on_click callback, as a click in JupyterLab runs it
    result = app.result
    reference = generate(app.denoiser, app.config, 5, sampler="ddpm", steps=6, cfg_scale=3.0,
                         class_cond=3, seed=7, batch_size=5)  # fmt: skip
    assert torch.equal(result.images, reference)
    # the run's own sampler when none is named: the same draws
    assert torch.equal(reference, generate(app.denoiser, app.config, 5, steps=6, cfg_scale=3.0,
                                           class_cond=3, seed=7, batch_size=5))  # fmt: skip
    # guidance is applied (DiT's, on ε̂): w = 1 draws other images from the same noise
    unguided = generate(app.denoiser, app.config, 5, steps=6, class_cond=3, seed=7, batch_size=5)
    assert not torch.equal(unguided, reference)
    assert result.classes.tolist() == [3] * 5
    # one x̂₀ per respaced step, noisiest first; the step into t = 0 returns x̂₀ itself
    keep = ddpm.space_timesteps(1000, 6)
    assert keep == [0, 200, 400, 599, 799, 999]  # DiT: round(i·999/5)
    assert result.timesteps.tolist() == keep[::-1]
    assert result.trajectory.shape == (6, 5, 3, 32, 32)
    assert torch.equal(result.trajectory[-1], result.images)
    # σ_t = √((1 − ᾱ_t)/ᾱ_t) of DiT's linear β schedule (1e-4 … 0.02 over 1,000 steps)
    alphas_cumprod = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    sigma_t = np.sqrt((1 - alphas_cumprod) / alphas_cumprod)[keep[::-1]]
    np.testing.assert_allclose(result.sigmas[:-1].numpy(), sigma_t, rtol=1e-6)
    assert result.sigmas[-1] == 0 and result.sigmas[0].item() == pytest.approx(157.4, abs=0.05)
    # what the app shows says what was drawn
    assert app.progress.value == app.progress.max == 6
    assert app.step_slider.max == 6
    status = app.status.value
    assert f"5 images ({app.class_names[3]}), 6 steps of DDPM ancestral (DiT), w = 3 (DiT's guidance: on ε̂;" \
        in status  # fmt: skip
    assert "DDPM step t = 999, 799, 599, 400, 200, 0 of 1000" in app.strip_caption.value
    assert "(x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t" in app.widget.children[1].children[0].value
    # the headless path of the app (draw_samples without a widget) is the same draw
    again = draw_samples(app.denoiser, app.config, app.settings())
    assert torch.equal(again.images, reference)


def test_hdit_edu_sample_on_a_ddpm_run_writes_generates_draws(r1_run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    args = ["sample", "--run", str(r1_run), "--n", "4", "--sampler-steps", "4", "--cfg", "2",
            "--seed", "3", "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0, capsys.readouterr().err
    config, denoiser = load_run(r1_run)
    images = generate(denoiser, config, 4, steps=4, cfg_scale=2.0, seed=3)
    want = save_grid(images, tmp_path / "want.png", nrow=2)  # grid_columns(4, 8)
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(want)))
    with pytest.raises(ValueError, match=r"shift: σ-schedule options .*allowed: steps"):
        generate(denoiser, config, 1, steps=4, shift=True)  # what `--shift` gets on R1


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_an_edm_sampler_on_a_ddpm_run_is_refused_with_what_fits(r1_run, sampler):
    config, denoiser = load_run(r1_run)
    message = rf"sampler '{sampler}' does not fit .*process='ddpm'; allowed: ddpm$"
    settings = replace(DEMO_SETTINGS, sampler=sampler)
    with pytest.raises(ValueError, match=message):
        SamplingApp(denoiser, config, settings=settings)
    with pytest.raises(ValueError, match=message):
        draw_samples(denoiser, config, settings)


def test_bad_steps_and_a_ddpm_sampler_on_an_edm_run_are_refused(r1_run):
    config, denoiser = load_run(r1_run)
    for steps in (1, 1001):
        with pytest.raises(ValueError, match=rf"^steps={steps}; allowed: 2 … 1000$"):
            replace(default_settings(config), steps=steps).validate(config)
    edm = on_toy_task("R2")
    with pytest.raises(ValueError, match=r"sampler 'ddpm'.*'edm'; allowed: euler, heun, dpmpp_2m, "
                                         r"dpmpp_3m_sde$"):  # fmt: skip
        replace(DEMO_SETTINGS, sampler="ddpm").validate(edm)
    with pytest.raises(ValueError, match=r"^sampler 'ddim' is unknown for a model trained with "
                                         r"diffusion.process='ddpm'; allowed: ddpm$"):  # fmt: skip
        replace(default_settings(config), sampler="ddim").validate(config)
    with pytest.raises(ValueError, match=r"^steps=250; allowed: 1 … 100$"):
        replace(DEMO_SETTINGS, steps=250).validate(edm)
