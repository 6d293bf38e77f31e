"""Baseline R1 end to end (§5.2; issue 33): a DDPM run samples through the one entry point
(`sampling.generate` → DiT's 250-step ancestral sampler and guidance), is measured by the
protocol like every arm (its held-out loss: EDM's weighted loss of its x0 estimate), and trains
with DiT's train.py details that have config fields (constant EMA without warm-up, the
horizontal flip)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from hdit_edu import ddpm
from hdit_edu.configs import validate_config
from hdit_edu.data import HorizontalFlip
from hdit_edu.diffusion import Denoiser, loss_weight
from hdit_edu.dit import DiT
from hdit_edu.presets import get_config, on_toy_task
from hdit_edu.profiles import TOY_CONSTANT_EMA, ToyScale, to_toy_scale
from hdit_edu.protocol import EvalProtocol, evaluate_loss
from hdit_edu.sampling import DDPM_SAMPLER, SAMPLERS, generate, sampler_and_steps
from hdit_edu.studies.report import study_script
from hdit_edu.toy import ToyDataset
from hdit_edu.training import EMAWarmup, Trainer

TINY = ToyScale(widths=(32, 32), depths=(1, 1), head_dim=16, mapping_width=32, batch_size=4,
                steps=2)  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    """A tiny toy R1 with a non-zero output head (DiT zero-initialises it)."""
    config = to_toy_scale(get_config("R1"), TINY)
    config.training.sample_every = 0
    torch.manual_seed(0)
    net = DiT(config.model).eval()
    for p in net.final_layer.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return config, ddpm.DDPMDenoiser(net)


def test_generate_on_a_ddpm_model_is_dits_sampler_with_seeded_noise(tiny):
    """generate(…) of a DDPM config = ddpm.sample written out: x_T from ``seed``, the step noise
    from ``seed + 1`` (one generator across batches), classes in turn, DiT's guidance."""
    config, denoiser = tiny
    images = generate(denoiser, config, 3, steps=4, cfg_scale=2.0, seed=5, batch_size=2)
    noise, steps = torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)
    expected = [
        ddpm.sample(denoiser, torch.randn(len(b), 3, 32, 32, generator=noise), torch.tensor(b),
                    steps=4, cfg_scale=2.0, generator=steps)  # fmt: skip
        for b in ([0, 1], [2])
    ]
    assert torch.equal(images, torch.cat(expected).clamp(-1, 1))
    again = generate(denoiser, config, 3, steps=4, cfg_scale=2.0, seed=5, batch_size=2)
    assert torch.equal(images, again)  # seeded: deterministic
    assert not torch.equal(images, generate(denoiser, config, 3, steps=4, cfg_scale=2.0, seed=6,
                                            batch_size=2))  # fmt: skip


def test_default_sampling_is_the_processs_own():
    r1, r2 = on_toy_task("R1"), on_toy_task("R2")
    assert sampler_and_steps(r1, None, None) == ("ddpm", 250)  # DiT's sample.py
    assert sampler_and_steps(r2, None, None) == ("dpmpp_3m_sde", 50)  # Table 6
    assert sampler_and_steps(r1, "ddpm", 1000) == ("ddpm", 1000)
    assert DDPM_SAMPLER not in SAMPLERS  # EDM's sampler study loops over SAMPLERS only


def test_generate_default_draws_250_respaced_steps(tiny):
    config, denoiser = tiny
    seen = []
    generate(denoiser, config, 1, seed=0, callback=lambda r: seen.append(r["t"]))
    want = ddpm.space_timesteps(1000, 250)
    assert len(seen) == 250 and seen == want[::-1]  # from step 999 down to step 0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_an_edm_sampler_is_refused_for_a_ddpm_run_and_back(tiny, sampler):
    config, denoiser = tiny
    with pytest.raises(ValueError, match=rf"sampler '{sampler}'.*process='ddpm'; allowed: ddpm$"):
        generate(denoiser, config, 1, sampler=sampler)
    with pytest.raises(ValueError, match=r"sampler 'ddpm'.*'edm'; allowed: euler, heun"):
        sampler_and_steps(on_toy_task("R2"), "ddpm", None)
    with pytest.raises(ValueError, match=r"steps=1001 for sampler 'ddpm'; allowed: 2 … 1000"):
        generate(denoiser, config, 1, steps=1001)
    with pytest.raises(ValueError, match=r"shift.*allowed: steps"):
        generate(denoiser, config, 1, shift=True)


def test_protocol_samples_a_ddpm_model_with_its_own_sampler(tiny):
    config = tiny[0]
    protocol = EvalProtocol(n=4, ddpm_steps=100)
    assert protocol.sampling(config) == ("ddpm", 100)
    assert protocol.sampling(on_toy_task("R2")) == ("dpmpp_3m_sde", 50)
    with pytest.raises(ValueError, match=r"EvalProtocol.ddpm_steps=0; allowed: an integer ≥ 1"):
        EvalProtocol(ddpm_steps=0)


def test_held_out_loss_of_a_ddpm_model_is_edms_weighted_loss_of_its_x0_estimate(tiny):
    """evaluate_loss measures every model alike: λ(σ)·mean (D − x0)² with D the DDPM model's
    x0 estimate; equal to an EDM Denoiser's loss on a network that returns that estimate."""
    config, denoiser = tiny
    x0 = torch.rand(3, 3, 32, 32) * 2 - 1
    noise, sigma = torch.randn(3, 3, 32, 32), torch.tensor([0.05, 1.0, 20.0])
    labels = torch.tensor([0, 3, 8])
    with torch.no_grad():
        got = denoiser.loss(x0, noise, sigma, weighting="soft-min-snr", class_cond=labels)
        d = denoiser(x0 + sigma.view(-1, 1, 1, 1) * noise, sigma, class_cond=labels)
    want = (d - x0).pow(2).mean(dim=(1, 2, 3)) * loss_weight("soft-min-snr", sigma)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert loss_weight("soft-min-snr", torch.tensor(1.0)).item() == pytest.approx(1 / 1.25)
    edm = Denoiser(lambda x, s, **c: torch.zeros_like(x))  # D = c_skip·x: a different model
    assert not torch.allclose(edm.loss(x0, noise, sigma), got)
    value = evaluate_loss(denoiser, config, n=8, weighting="soft-min-snr")
    assert math.isfinite(value) and value > 0


def test_r1_trains_with_dits_constant_ema_and_flip():
    r1 = get_config("R1")
    t = r1.training
    assert (t.ema_warmup, t.hflip, t.ema_decay, t.augment_p) == (False, True, 0.9999, 0.0)
    for name in ("R2", "R3", "R4", "E"):  # everything else keeps this trainer's recipe
        other = get_config(name).training
        assert (other.ema_warmup, other.hflip) == (True, False), name
    toy = to_toy_scale(r1).training
    assert (toy.ema_warmup, toy.hflip, toy.ema_decay) == (False, True, TOY_CONSTANT_EMA)
    assert to_toy_scale(get_config("R2")).training.ema_decay == 0.999
    assert 1 - 3001 ** (-2 / 3) == pytest.approx(TOY_CONSTANT_EMA, abs=3e-4)
    constant, warm = EMAWarmup(0.9999, warmup=False), EMAWarmup(0.9999)
    assert [constant.decay(s) for s in (0, 1, 10**6)] == [0.9999] * 3  # DiT: from update 0
    assert warm.decay(0) == 0.0 and warm.decay(999) == pytest.approx(0.99, abs=1e-4)


def test_hflip_mirrors_about_half_the_images_without_an_augmentation_input():
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5).repeat(500, 1,
                                                                                          1, 1)
    out, cond = HorizontalFlip()(images, torch.Generator().manual_seed(0))
    assert cond is None
    flipped = (out != images).flatten(1).any(1)
    assert torch.equal(out[flipped], images[flipped].flip(-1))
    assert torch.equal(out[~flipped], images[~flipped])
    assert abs(flipped.float().mean().item() - 0.5) < 0.05  # 1000 fair coins: ±3.2 σ


def test_hflip_and_constant_ema_in_the_trainer(tmp_path):
    """A tiny toy R1: the step's batch is flipped (pure in the step, so resumable), no aug_cond
    reaches the model, and the EMA after one step is 0.995·θ₀ + 0.005·θ₁ (no warm-up copy)."""
    config = to_toy_scale(get_config("R1"), TINY)
    config.training.sample_every = 0
    data = ToyDataset("train", resolution=32, size=64)
    trainer = Trainer(config, None, dataset=data, progress=False)
    plain = data.batch(trainer.step_indices(0))[0]
    images, _, aug = trainer.read_step(0)
    assert aug is None and not torch.equal(images, plain)
    assert torch.equal(images, trainer.read_step(0)[0])
    mirrored = (images != plain).flatten(1).any(1)
    assert torch.equal(images[mirrored], plain[mirrored].flip(-1))
    before = copy.deepcopy(trainer.model.state_dict())
    trainer.train_step()
    d = TOY_CONSTANT_EMA
    for name, p in trainer.ema.named_parameters():
        want = d * before[name] + (1 - d) * trainer.model.state_dict()[name]
        torch.testing.assert_close(p, want, rtol=1e-6, atol=1e-7)


def test_hflip_is_validated_once_with_the_value_and_what_is_allowed():
    config = get_config("R1")
    config.training.augment_p = 0.12
    with pytest.raises(ValueError, match=r"hflip=true with training.augment_p=0.12.*allowed"):
        validate_config(config)
    config = get_config("R1")
    config.training.ema_warmup = "no"
    with pytest.raises(ValueError, match=r"training.ema_warmup: got 'no'; allowed: true, false"):
        validate_config(config)


def test_baselines_toy_spec_loads_and_its_cost_is_the_readmes():
    """results/baselines-toy: the registered spec loads, runs 4 arms × 4 seeds at one lr with R1 sampling
    through DiT's 250 steps, fits the budget (6 CPU-h, 30 min a run) by its design's rates, and
    its README states those numbers."""
    from pathlib import Path

    from hdit_edu.ablation import run_config
    from hdit_edu.studies.spec import load_study

    folder = Path(__file__).resolve().parents[1] / "results" / "baselines-toy"
    study = load_study(folder / "study.toml")
    assert [a.label for a in study.arms] == ["R1", "R2", "R3", "R4"]
    assert len(study.runs()) == 16 and all(a.seeds == (0, 1, 2, 3) for a in study.arms)
    b = study.budget
    assert (b.train_steps, b.n_eval, b.cfg, b.ddpm_steps, b.sample_steps) == (9000, 512, 1.0,
                                                                               250, 50)
    assert all(run_config(a, 0, b).training.lr == 5e-4 for a in ("R1", "R2", "R3", "R4"))
    protocol = EvalProtocol(n=b.n_eval, sampler=b.sampler, steps=b.sample_steps, cfg=b.cfg,
                            ddpm_steps=b.ddpm_steps)  # fmt: skip
    assert protocol.sampling(run_config("R1", 0, b)) == ("ddpm", 250)
    assert protocol.sampling(run_config("R2", 0, b)) == ("dpmpp_3m_sde", 50)
    assert "heldout_loss" not in study.metrics and study.metrics[0] == "fid"
    design = study_script(folder, "design")
    cost = design.per_run(study)
    assert max(cost.values()) <= design.RUN_LIMIT_S
    total = design.total_cpu_h(study)
    assert total <= design.BUDGET_CPU_H
    readme = (folder / "README.md").read_text()
    assert f"**{total:.2f} CPU-hours**" in readme
    for label, seconds in cost.items():
        assert f"| {label} |" in readme and f"{seconds:,.0f} |" in readme, label


def test_baselines_toy_reading_gives_each_outcome_of_its_rule():
    """results/baselines-toy/reading.py applies the README's rule as registered: the validity
    bar on R1's class accuracy, R2 worse than R1 from the CI's side of 0, R3 ≈ R1 within 20 % of
    R1's toy FID (inside: supports; outside 0 and beyond the margin: contradicts), and the whole
    account from the two primary readings."""
    from pathlib import Path

    reading = study_script(Path(__file__).resolve().parents[1] / "results" / "baselines-toy").reading

    def row(x, y, metric, lo, hi):
        return {"x": x, "y": y, "metric": metric,
                "difference": {"mean": (lo + hi) / 2, "n": 4, "ci95": [lo, hi]}}  # fmt: skip

    def result(worse, equal, r1_fid=100.0, r1_acc=0.4, equal_acc=(-0.02, 0.03)):
        table = {"R1": {"fid": {"mean": r1_fid}, "class_accuracy": {"mean": r1_acc}}}
        return {"table": table, "kendall_tau": {"tau": 1 / 3, "p": 0.75}, "comparisons": [
            row("R1", "R2", "fid", *worse), row("R1", "R3", "fid", *equal),
            row("R1", "R3", "class_accuracy", *equal_acc)]}  # fmt: skip

    lines = reading(result(worse=(5, 30), equal=(-10, 15)))  # margin ±20
    assert "R1 learned the task" in lines[0]
    assert lines[1].endswith('supports "R2 worse than R1".')
    assert lines[2].endswith('supports "R3 ≈ R1".') and "±20" in lines[2]
    assert lines[3].endswith('supports "R3 ≈ R1".')
    assert "**supported** at toy scale" in lines[4] and "+0.333" in lines[5]
    lines = reading(result(worse=(-30, -5), equal=(-10, 15)))
    assert "contradicts" in lines[1] and "**contradicted**" in lines[4]
    lines = reading(result(worse=(5, 30), equal=(25, 45)))  # excludes 0, mean 35 > 20
    assert "contradicts \"R3 ≈ R1\"" in lines[2] and "**contradicted**" in lines[4]
    lines = reading(result(worse=(5, 30), equal=(5, 25)))  # excludes 0 but mean 15 ≤ 20
    assert "not resolved \"R3 ≈ R1\"" in lines[2] and "**not decided**" in lines[4]
    lines = reading(result(worse=(-5, 30), equal=(-10, 15), equal_acc=(0.02, 0.2)))
    assert "not resolved \"R2" in lines[1] and "contradicts" in lines[3]
    assert "**not decided**" in lines[4]  # accuracy is secondary: not in the whole account
    lines = reading(result(worse=(5, 30), equal=(-10, 15), r1_acc=0.2))
    assert "R1 undertrained at this budget" in lines[0] and "not tested" in lines[4]
