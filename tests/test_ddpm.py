"""DiT's discrete-time DDPM (baseline R1, §5.2; hdit_edu.ddpm): against golden numbers computed
with DiT's own diffusion code (tests/fixtures/dit_ddpm.json, made by dit_ddpm_make.py), the
t ↔ σ mapping in closed form, the respaced sampler, R1's config and a training smoke."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hdit_edu import ddpm
from hdit_edu.configs import Config, load_config, save_config, validate_config
from hdit_edu.dit import DiT
from hdit_edu.presets import get_config
from hdit_edu.profiles import ToyScale, to_toy_scale
from hdit_edu.toy import ToyDataset
from hdit_edu.training import Trainer

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "dit_ddpm.json").read_text())
F32 = {"rtol": 1e-5, "atol": 2e-6}  # float32 arithmetic in a different order of operations


def golden(*keys) -> torch.Tensor:
    value = FIXTURE
    for key in keys:
        value = value[key]
    return torch.tensor(value, dtype=torch.float32)


def inputs(name: str) -> torch.Tensor:
    return golden("inputs", name)


T_FULL = torch.tensor(FIXTURE["t_full"])
T_SPACED = torch.tensor(FIXTURE["t_spaced"])
FULL = ddpm.DDPMSchedule.linear()
SPACED = FULL.respaced(250)


def fake_network(x, sigma, class_cond=None, aug_cond=None, timestep=None):
    """The fixture's stand-in for DiT (tests/fixtures/dit_ddpm_make.py ``fake_network``): it
    sees the original step as DiT does."""
    shift = 0.05 * torch.cos(timestep.float() / 100).reshape(-1, 1, 1, 1)
    if class_cond is not None:
        shift = shift + 0.02 * class_cond.float().reshape(-1, 1, 1, 1)
    return torch.cat([0.9 * x + shift, 0.8 * torch.tanh(x) - 0.1], dim=1)


fake_network.num_classes = FIXTURE["inputs"]["num_classes"]


def close(ours: torch.Tensor, theirs: torch.Tensor, what: str, **tol) -> float:
    """Assert closeness; return the max absolute difference (printed with -s for the note)."""
    diff = (ours.float() - theirs).abs().max().item()
    print(f"{what}: max |ours − DiT| = {diff:.3g}")
    torch.testing.assert_close(ours.float(), theirs, **(tol or F32), msg=what)
    return diff


# --- golden numbers from DiT's code -------------------------------------------------------------


def test_schedule_matches_dit():
    ac = FULL.alphas_cumprod[T_FULL]
    theirs = torch.tensor(FIXTURE["full"]["alphas_cumprod_at_t"], dtype=torch.float64)
    assert torch.allclose(ac, theirs, rtol=1e-12, atol=0)
    logvar = FULL.posterior_log_variance_clipped[T_FULL]
    theirs = torch.tensor(
        FIXTURE["full"]["posterior_log_variance_clipped_at_t"], dtype=torch.float64
    )
    assert torch.allclose(logvar, theirs, rtol=1e-12, atol=0)
    assert SPACED.timestep_map.tolist() == FIXTURE["spaced250"]["timestep_map"]
    betas = torch.tensor(FIXTURE["spaced250"]["betas"], dtype=torch.float64)
    assert torch.allclose(SPACED.betas, betas, rtol=1e-12, atol=0)


def test_forward_process_posterior_and_model_distribution_match_dit():
    x0, noise, out = inputs("x0"), inputs("noise"), inputs("model_output")
    x_t = ddpm.q_sample(FULL, x0, T_FULL, noise)
    close(x_t, golden("full", "q_sample"), "q_sample")
    mean, var, logvar = ddpm.q_posterior(FULL, x0, x_t, T_FULL)
    close(mean, golden("full", "posterior_mean"), "posterior mean")
    close(var.flatten(), golden("full", "posterior_variance"), "posterior variance")
    close(logvar.flatten(), golden("full", "posterior_log_variance_clipped"), "posterior log var")
    p = ddpm.p_mean_variance(FULL, out, x_t, T_FULL)
    close(p["mean"], golden("full", "p_mean"), "p mean")
    close(p["log_variance"], golden("full", "p_log_variance"), "p log variance (learned range)")
    close(p["pred_x0"], golden("full", "pred_x0"), "x̂0 from ε̂")


def test_vlb_terms_and_hybrid_loss_match_dit():
    x0, noise, out = inputs("x0"), inputs("noise"), inputs("model_output")
    x_t = ddpm.q_sample(FULL, x0, T_FULL, noise)
    true_mean, _, true_logvar = ddpm.q_posterior(FULL, x0, x_t, T_FULL)
    p = ddpm.p_mean_variance(FULL, out, x_t, T_FULL)
    kl = ddpm.normal_kl(true_mean, true_logvar, p["mean"], p["log_variance"])
    close(kl, golden("full", "normal_kl"), "normal KL")
    ll = ddpm.discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])
    close(ll, golden("full", "discretized_log_likelihood"), "discretized Gaussian log-lik")
    vb = ddpm.vb_terms_bpd(FULL, out, x0, x_t, T_FULL)
    close(vb, golden("full", "vb_bpd"), "VLB term (bits/dim; t = 0: decoder NLL)")
    losses = ddpm.training_losses(FULL, out, x0, x_t, noise, T_FULL)
    close(losses["mse"], golden("full", "loss_mse"), "L_simple")
    close(losses["vb"], golden("full", "loss_vb"), "L_vlb term")
    close(losses["loss"], golden("full", "loss"), "hybrid loss")


def test_respaced_p_sample_step_matches_dit():
    x, out, z = inputs("x_spaced"), inputs("model_output"), inputs("step_noise")
    sample, x0 = ddpm.p_sample(SPACED, out, x, T_SPACED, z)
    close(sample, golden("spaced250", "p_sample"), "respaced p_sample step")
    close(x0, golden("spaced250", "p_sample_pred_x0"), "respaced x̂0")
    clipped, _ = ddpm.p_sample(SPACED, out, x, T_SPACED, z, clip_denoised=True)
    close(clipped, golden("spaced250", "p_sample_clipped"), "respaced p_sample, clipped x̂0")
    assert not torch.equal(sample, clipped)  # the fixture exercises the clamp


def test_250_step_sampler_matches_dits_loop():
    """The whole respaced ancestral loop, driven by the same noise stream as DiT's."""
    denoiser = ddpm.DDPMDenoiser(fake_network)
    g = torch.Generator().manual_seed(FIXTURE["inputs"]["loop_seed"])
    x = ddpm.sample(denoiser, inputs("x_T"), steps=250, generator=g)
    close(x, golden("spaced250", "sample_loop"), "250-step ancestral loop", rtol=1e-4, atol=1e-4)


def test_guidance_matches_dits_forward_with_cfg():
    denoiser = ddpm.DDPMDenoiser(fake_network)
    labels = torch.tensor(FIXTURE["inputs"]["labels"])
    scale = FIXTURE["inputs"]["cfg_scale"]
    out = ddpm.guided_output(denoiser, FULL, inputs("x_spaced"), T_FULL, labels, scale)
    close(out, golden("spaced250", "forward_with_cfg"), "forward_with_cfg (w = 4)")
    plain = ddpm.guided_output(denoiser, FULL, inputs("x_spaced"), T_FULL, labels, 1.0)
    assert torch.equal(out[:, 3:], plain[:, 3:])  # the variance half: the conditional pass's
    assert not torch.allclose(out[:, :3], plain[:, :3])


def gaussian_data_network(mu: float, s: float, exact_variance: bool):
    """The ideal network for data x0 ~ N(μ, s²) per pixel, on the 250-step process: ε̂ =
    E[ε | x_t] = √(1−ᾱ)(x_t − √ᾱ μ)/(ᾱ s² + 1 − ᾱ), and v = −1 (Σ = β̃, the posterior's
    variance) or the v of the true reverse variance β̃ + coef1²·Var[x0 | x_t] (what the learned
    range can express and a fixed β̃ cannot)."""

    def net(x, sigma, class_cond=None, aug_cond=None, timestep=None):
        assert torch.equal(timestep, timestep.round())  # the original integer step
        assert torch.equal(sigma, FULL.sigmas[timestep.long()].float())  # and its σ_t
        i = torch.searchsorted(SPACED.timestep_map, timestep.long())  # the respaced index
        ac = SPACED.alphas_cumprod[i].reshape(-1, 1, 1, 1)
        eps = (1 - ac).sqrt() * (x - ac.sqrt() * mu) / (ac * s**2 + 1 - ac)
        if not exact_variance:
            return torch.cat([eps.float(), -torch.ones_like(x)], dim=1)
        var_x0 = s**2 * (1 - ac) / (ac * s**2 + 1 - ac)
        true = SPACED.posterior_variance[i] + SPACED.posterior_mean_coef1[i] ** 2 * var_x0.flatten()
        lo, hi = SPACED.posterior_log_variance_clipped[i], SPACED.betas[i].log()
        v = 2 * (true.log() - lo) / (hi - lo) - 1
        return torch.cat([eps.float(), v.float().reshape(-1, 1, 1, 1).expand_as(x)], dim=1)

    return net


def test_sampler_with_the_ideal_network_of_gaussian_data_draws_that_gaussian():
    """Checks the denoiser's step and σ wiring end to end, and what the learned variance buys:
    for Gaussian data every reverse step is exactly Gaussian, so 250 ancestral steps with the
    true variance return N(μ, s²); with Σ = β̃ (v = −1) the samples are too narrow."""
    mu, s = 0.3, 0.5
    noise = torch.randn(512, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for exact, std in ((True, (0.497, 0.503)), (False, (0.47, 0.49))):
        denoiser = ddpm.DDPMDenoiser(gaussian_data_network(mu, s, exact))
        x = ddpm.sample(denoiser, noise, generator=1)
        assert x.mean().item() == pytest.approx(mu, abs=0.005)
        assert std[0] < x.std().item() < std[1], (exact, x.std().item())


# --- the process in closed form -----------------------------------------------------------------


def test_linear_schedule_and_t_sigma_mapping_closed_form():
    betas = FULL.betas
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    # σ_t² = (1 − ᾱ_t)/ᾱ_t; σ_0² = β_0/(1 − β_0); ᾱ_999 of Ho et al.'s schedule ≈ 4.04e-5
    assert FULL.sigmas[0].item() == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-12)
    assert FULL.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-4)
    assert FULL.sigmas[-1].item() == pytest.approx(157.407, rel=1e-5)
    # −log ᾱ_t = −Σ log(1 − β_s) ≥ Σ β_s = (t + 1)(β_0 + β_t)/2 (an arithmetic series), and
    # exceeds it by less than Σ β_s² (β ≤ 0.02)
    t = torch.arange(1000, dtype=torch.float64)
    series = (t + 1) * (betas[0] + betas) / 2
    excess = -FULL.alphas_cumprod.log() - series
    assert (excess >= 0).all() and (excess <= torch.cumsum(betas**2, 0)).all()
    # the table inverts exactly, and fractional t between steps is monotone
    assert torch.equal(ddpm.sigma_to_timestep(FULL, FULL.sigmas.float()).round().long(),
                       torch.arange(1000))
    assert (ddpm.sigma_to_timestep(FULL, FULL.sigmas.float()) - t).abs().max() < 1e-3
    mid = (FULL.sigmas[:-1] * FULL.sigmas[1:]).sqrt().float()  # geometric midpoints
    frac = ddpm.sigma_to_timestep(FULL, mid) - t[:-1]
    assert ((frac > 0.3) & (frac < 0.7)).all()


def test_q_sample_is_edms_x_sigma_scaled_and_d_is_x_minus_sigma_eps():
    """x_t = √ᾱ_t (x_0 + σ_t ε) = c_in(σ_t)·x_σ with σ_data = 1; D(x_σ; σ_t) = x_σ − σ_t ε̂."""
    x0, noise = inputs("x0"), inputs("noise")
    t = T_FULL
    sigma = FULL.at(FULL.sigmas, t, 4)
    x_sigma = x0 + sigma * noise
    torch.testing.assert_close(ddpm.q_sample(FULL, x0, t, noise), x_sigma / (1 + sigma**2).sqrt())
    denoiser = ddpm.DDPMDenoiser(fake_network)
    d = denoiser(x_sigma, sigma.flatten())
    x_t = ddpm.q_sample(FULL, x0, t, noise)
    eps = denoiser.model_output(x_t, t)[:, :3]
    torch.testing.assert_close(d, ddpm.predict_x0(FULL, x_t, t, eps), rtol=1e-4, atol=1e-4)


def test_space_timesteps_examples():
    assert ddpm.space_timesteps(1000, "250")[:3] == [0, 4, 8]
    assert ddpm.space_timesteps(1000, "250")[-1] == 999
    assert len(ddpm.space_timesteps(1000, "250")) == 250
    sections = ddpm.space_timesteps(300, "10,15,20")  # DiT's docstring example
    assert len(sections) == 45 and sections[0] == 0 and sections[-1] == 299
    assert ddpm.space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    with pytest.raises(ValueError, match="allowed counts"):
        ddpm.space_timesteps(10, "20")
    # respacing keeps ᾱ at the kept steps
    assert torch.allclose(SPACED.alphas_cumprod, FULL.alphas_cumprod[SPACED.timestep_map])


def test_learned_range_ends_and_hybrid_loss_gradients():
    t = T_FULL
    ones = torch.ones(4, 3, 4, 4)
    lo = ddpm.learned_log_variance(FULL, -ones, t)[:, 0, 0, 0]
    hi = ddpm.learned_log_variance(FULL, ones, t)[:, 0, 0, 0]
    torch.testing.assert_close(lo, FULL.posterior_log_variance_clipped[t].float())
    torch.testing.assert_close(hi, FULL.betas[t].log().float())
    # L_vlb reaches only the variance channels, L_simple only ε̂ (the stop-gradient)
    out = inputs("model_output").requires_grad_()
    x0, noise = inputs("x0"), inputs("noise")
    x_t = ddpm.q_sample(FULL, x0, t, noise)
    losses = ddpm.training_losses(FULL, out, x0, x_t, noise, t)
    (g_vb,) = torch.autograd.grad(losses["vb"].sum(), out, retain_graph=True)
    (g_mse,) = torch.autograd.grad(losses["mse"].sum(), out)
    assert g_vb[:, :3].abs().max() == 0 and g_vb[:, 3:].abs().max() > 0
    assert g_mse[:, 3:].abs().max() == 0 and g_mse[:, :3].abs().max() > 0


# --- the network, R1's config and the trainer ---------------------------------------------------

TINY = ToyScale(widths=(32, 32), depths=(1, 1), head_dim=16, mapping_width=32, batch_size=4,
                steps=2)


def tiny_r1() -> Config:
    config = to_toy_scale(get_config("R1"), TINY)
    config.training.sample_every = 0
    config.training.log_every = 1
    return config


def test_dit_learned_variance_output_and_timestep_input():
    config = tiny_r1()
    assert config.model.out_channels == 6 and config.diffusion.process == "ddpm"
    torch.manual_seed(0)
    net = DiT(config.model)
    for p in net.final_layer.parameters():  # zero-initialised: give it values to see
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 3, 32, 32)
    sigma = FULL.sigmas[[10, 500]].float()
    labels = torch.tensor([1, 8])
    out_t = net(x, sigma, labels, timestep=torch.tensor([10.0, 500.0]))
    assert out_t.shape == (2, 6, 32, 32)
    assert not torch.allclose(out_t, net(x, sigma, labels))  # t embedded, not c_noise(σ)
    denoiser = ddpm.DDPMDenoiser(net)
    assert denoiser.num_classes == 8
    loss = denoiser.loss(torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, 3, 32, 32), sigma,
                         class_cond=labels)
    assert loss.shape == (2,) and loss.isfinite().all()
    x = ddpm.sample(denoiser, torch.randn(2, 3, 32, 32), labels, steps=5, cfg_scale=2.0,
                    generator=0)
    assert x.shape == (2, 3, 32, 32) and x.isfinite().all()


def test_r1_config_names_the_ddpm_path_and_round_trips(tmp_path):
    r1, r2 = get_config("R1"), get_config("R2")
    assert r1.diffusion.process == "ddpm" and r2.diffusion.process == "edm"
    assert r1.model == r2.model  # the same DiT-B/4; only the process and the recipe differ
    t = r1.training  # DiT's train.py
    assert (t.lr, tuple(t.betas), t.weight_decay, t.batch_size, t.ema_decay) == (
        1e-4, (0.9, 0.999), 0.0, 256, 0.9999)
    assert t.grad_clip is None and t.precision == "fp32" and t.cond_dropout == 0.1
    save_config(r1, tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["diffusion"]["process"] == "ddpm"
    assert load_config(tmp_path / "config.json") == r1
    assert to_toy_scale(r1).diffusion.process == "ddpm" and to_toy_scale(r1).model.out_channels == 6


def test_process_is_validated_once_with_the_value_and_what_is_allowed():
    config = get_config("R2")
    config.diffusion.process = "ddim"
    with pytest.raises(ValueError, match=r"diffusion.process.*'ddim'.*allowed: edm, ddpm"):
        validate_config(config)
    config = get_config("R3")
    config.diffusion.process = "ddpm"
    with pytest.raises(ValueError, match=r"arch 'dit' with out_channels = 2·in_channels = 6"):
        validate_config(config)


def test_two_training_steps_of_a_tiny_r1(tmp_path):
    config = tiny_r1()
    data = ToyDataset("train", resolution=32, size=64)
    trainer = Trainer(config, tmp_path / "run", dataset=data, progress=False)
    assert isinstance(trainer.denoiser, ddpm.DDPMDenoiser)
    head = trainer.model.final_layer.linear.weight.detach().clone()
    trainer.fit(2)
    losses = [r["loss"] for r in trainer.history if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    # the hybrid loss of a fresh (zero-output) DiT: ε̂ = 0 → L_simple ≈ 1, plus a VLB term
    assert 0.5 < losses[0] < 50
    # both halves of the output head trained: ε̂ rows and the variance rows (channels 3–5)
    moved = (trainer.model.final_layer.linear.weight.detach() - head).abs()
    per_channel = moved.reshape(TINY.patch_size**2, 6, -1).amax(dim=(0, 2))
    assert (per_channel > 0).all(), per_channel
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["diffusion"]["process"] == "ddpm"
