"""hdit_edu.sampling against exact answers: the Karras schedule's closed form; every sampler
drawing from a Gaussian and a Gaussian mixture through their exact denoisers; the convergence
order of the deterministic samplers on the exact probability-flow ODE; classifier-free
guidance in Saharia et al.'s form. With ``HDIT_K_DIFFUSION_SRC`` set (the ``k_diffusion``
fixture of ``conftest.py``), the samplers are also compared step for step with the authors'
k-diffusion.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from hdit_edu.diffusion import GaussianMixtureDenoiser
from hdit_edu.sampling import SAMPLERS, karras_sigmas, sample, sampler_options

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0  # EDM's sampling range
N = 20_000  # samples per statistical test (2-D: 40k scalars)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster than two on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def start(n=N, dim=2, seed=0, sigma_max=SIGMA_MAX):
    """Unit noise × σ_max, and a seeded generator for the samplers' own noise."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) * sigma_max, g


def test_karras_sigmas_closed_form():
    n, rho = 50, 7.0
    sigmas = karras_sigmas(n, SIGMA_MIN, SIGMA_MAX, rho)
    assert sigmas.shape == (n + 1,) and sigmas[-1] == 0
    for i in (0, 1, 17, 48, 49):
        expected = (
            SIGMA_MAX ** (1 / rho) + i / (n - 1) * (SIGMA_MIN ** (1 / rho) - SIGMA_MAX ** (1 / rho))
        ) ** rho
        assert sigmas[i].item() == pytest.approx(expected, rel=1e-6)
    assert sigmas[0].item() == pytest.approx(SIGMA_MAX) and sigmas[n - 1].item() == pytest.approx(
        SIGMA_MIN
    )
    assert (sigmas[1:] < sigmas[:-1]).all()
    assert torch.equal(karras_sigmas(1, 0.1, 10.0), torch.tensor([10.0, 0.0]))


# --- exact Gaussian data ------------------------------------------------------------------------

MU, S = torch.tensor([0.5, -0.3]), 0.5
GAUSSIAN = GaussianMixtureDenoiser(MU[None], [S])  # D(x, σ) = μ + s²/(s² + σ²)·(x − μ)
STD_TOLERANCE = {"euler": 0.10, "heun": 0.03, "dpmpp_2m": 0.03, "dpmpp_3m_sde": 0.03}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_draw_the_gaussian(sampler):
    """50 steps through the exact denoiser of N(μ, s²I): mean μ and std s (2-D, 20k draws)."""
    x, g = start()
    out = sample(GAUSSIAN, x, karras_sigmas(50, SIGMA_MIN, SIGMA_MAX), sampler, generator=g)
    # mean: standard error s/√N ≈ 0.0035, plus the start's bias μ·s/σ_max ≈ 0.003
    assert torch.allclose(out.mean(0), MU, atol=0.02)
    rel = (out.std(0) / S - 1).abs().max().item()
    assert rel < STD_TOLERANCE[sampler], f"{sampler}: std off by {rel:.1%}"


def test_euler_is_first_order_heun_and_dpmpp_2m_second_order():
    """On the exact ODE of N(0, s²) a start x_T ends at x_T·s/√(s² + σ_T²). Doubling the steps
    halves Euler's error and quarters Heun's and DPM++(2M)'s."""
    x = torch.full((1, 1), SIGMA_MAX, dtype=torch.float64)
    exact = SIGMA_MAX * S / math.sqrt(S**2 + SIGMA_MAX**2)
    gaussian = GaussianMixtureDenoiser(torch.zeros(1, 1), [S])

    def error(sampler, n, **options):
        sigmas = karras_sigmas(n, SIGMA_MIN, SIGMA_MAX).double()
        return abs(sample(gaussian, x, sigmas, sampler, **options).item() / exact - 1)

    for sampler, ratio in [("euler", 2.0), ("heun", 4.0), ("dpmpp_2m", 4.0)]:
        e40, e80, e160 = (error(sampler, n) for n in (40, 80, 160))
        assert e80 < e40 and e160 < e80
        assert e40 / e80 == pytest.approx(ratio, rel=0.12), sampler
        assert e80 / e160 == pytest.approx(ratio, rel=0.12), sampler
    assert error("euler", 50) < 0.06 and error("heun", 50) < 0.007
    # DPM++(3M) with η = 0 is the deterministic ODE solver: the most accurate at 50 steps
    assert error("dpmpp_3m_sde", 50, eta=0.0) < min(error("heun", 50), error("dpmpp_2m", 50))


# --- a Gaussian mixture -------------------------------------------------------------------------

MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
STDS = torch.tensor([0.3, 0.5])
WEIGHTS = torch.tensor([0.3, 0.7])
MIXTURE = GaussianMixtureDenoiser(MEANS, STDS, WEIGHTS)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_recover_the_mixture_weights(sampler):
    x, g = start(seed=1)
    out = sample(MIXTURE, x, karras_sigmas(50, SIGMA_MIN, SIGMA_MAX), sampler, generator=g)
    nearest = torch.cdist(out, MEANS).argmin(1)  # components are ≥ 8 stds apart
    weights = torch.bincount(nearest, minlength=2) / len(out)
    assert torch.allclose(weights, WEIGHTS, atol=0.015), weights  # std. error ≈ 0.003
    # each component's mean and std too (first-order Euler is the loosest, as for one Gaussian)
    tol = 0.2 if sampler == "euler" else 0.08
    for k in range(2):
        part = out[nearest == k]
        assert ((part.mean(0) - MEANS[k]).abs() / STDS[k]).max() < tol
        assert (part.std(0) / STDS[k] - 1).abs().max() < tol


# --- the shared signature: seeding, callbacks, options --------------------------------------------


def test_noise_source_is_seedable():
    x, _ = start(n=64)
    sigmas = karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    run = lambda sampler, seed, **kw: sample(MIXTURE, x, sigmas, sampler, generator=seed, **kw)  # noqa: E731
    assert torch.equal(run("dpmpp_3m_sde", 3), run("dpmpp_3m_sde", 3))
    assert not torch.allclose(run("dpmpp_3m_sde", 3), run("dpmpp_3m_sde", 4))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(
        sample(MIXTURE, x, sigmas, "heun", generator=g1, churn=5.0),
        sample(MIXTURE, x, sigmas, "heun", generator=g2, churn=5.0),
    )
    assert not torch.allclose(run("heun", 1, churn=5.0), run("heun", 2, churn=5.0))
    # without churn Euler, Heun and DPM++(2M) are deterministic: the seed does not matter
    for sampler in ("euler", "heun", "dpmpp_2m"):
        assert torch.equal(run(sampler, 1), run(sampler, 2))
    # η = 0 makes DPM++(3M) SDE deterministic too
    assert torch.equal(run("dpmpp_3m_sde", 1, eta=0.0), run("dpmpp_3m_sde", 2, eta=0.0))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_callback_sees_every_step(sampler):
    x, g = start(n=8)
    sigmas = karras_sigmas(6, SIGMA_MIN, SIGMA_MAX)
    seen, calls = [], []

    def model(x, sigma):
        calls.append(sigma)
        return MIXTURE(x, sigma)

    out = sample(model, x, sigmas, sampler, generator=g, callback=seen.append, progress=True)
    assert [step["i"] for step in seen] == list(range(6))
    assert [step["sigma"] for step in seen] == pytest.approx(sigmas[:-1].tolist())
    assert [step["sigma_next"] for step in seen] == pytest.approx(sigmas[1:].tolist())
    assert all(step["x"].shape == x.shape == step["denoised"].shape for step in seen)
    # the last step into σ = 0 returns the last denoised estimate (x − σ·(x − D)/σ = D)
    assert torch.allclose(out, seen[-1]["denoised"], atol=1e-5)
    # model evaluations: one per step; Heun adds a correction on all but the last step
    assert len(calls) == (2 * 6 - 1 if sampler == "heun" else 6)
    assert all(c.shape == (8,) for c in calls)


def test_sampler_options():
    assert sampler_options("heun") == ("churn", "s_tmin", "s_tmax", "s_noise")
    assert sampler_options("dpmpp_3m_sde") == ("eta", "s_noise")
    assert sampler_options("dpmpp_2m") == ()


# --- classifier-free guidance (Saharia et al.; App. D) ------------------------------------------


class ClassGaussians(torch.nn.Module):
    """Exact denoiser of class-conditional N(μ_c, s²I), with the "dropped" class K denoising
    as N(μ_u, s²I); counts its calls and batch sizes."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 0.2]])  # classes 0, 1, dropped
        self.batches = []
        self.aug = []

    def forward(self, x, sigma, class_cond, aug_cond=None):
        self.batches.append((len(x), class_cond.clone()))
        self.aug.append(aug_cond)
        mu = self.means[class_cond]
        return mu + S**2 / (S**2 + sigma[:, None] ** 2) * (x - mu)


def test_cfg_is_saharia_form_in_one_batched_forward():
    model = ClassGaussians()
    x, _ = start(n=6)
    cls = torch.tensor([0, 1, 0, 1, 0, 1])
    sigmas = torch.tensor([3.0, 0.0])  # one step into σ = 0: the sample IS the guided D(x, 3)
    mu_c, mu_u = model.means[cls], model.means[2]
    k = S**2 / (S**2 + 9.0)
    d_c, d_u = mu_c + k * (x - mu_c), mu_u + k * (x - mu_u)
    for w in (0.0, 1.0, 2.5):
        model.batches.clear()
        out = sample(model, x, sigmas, "euler", class_cond=cls, cfg_scale=w)
        assert torch.allclose(out, d_u + w * (d_c - d_u), atol=1e-5)
        (batch, classes), *rest = model.batches
        assert not rest  # one forward per step
        if w == 1:  # no guidance: just the conditional model, batch B
            assert batch == 6 and torch.equal(classes, cls)
        else:  # cond and uncond batched: 2B, the second half the dropped class (= num_classes)
            assert batch == 12 and torch.equal(classes, torch.cat([cls, torch.full((6,), 2)]))
    # extra conditioning (e.g. aug_cond) travels with both halves
    aug = torch.randn(6, 9)
    sample(model, x, sigmas, "euler", class_cond=cls, cfg_scale=2.0, aug_cond=aug)
    assert torch.equal(model.aug[-1], torch.cat([aug, aug]))


def test_guided_samples_follow_the_closed_form():
    """With Gaussian branches of equal s, D_w is the exact denoiser of N(μ_u + w·(μ_c − μ_u), s²):
    guided samples land there (w = 3, DPM++(3M) SDE, 50 steps)."""
    model = ClassGaussians()
    x, g = start(seed=2)
    cls = torch.zeros(N, dtype=torch.long)
    out = sample(
        model,
        x,
        karras_sigmas(50, SIGMA_MIN, SIGMA_MAX),
        class_cond=cls,
        cfg_scale=3.0,
        generator=g,
    )
    target = model.means[2] + 3.0 * (model.means[0] - model.means[2])
    assert torch.allclose(out.mean(0), target, atol=0.02)
    assert (out.std(0) / S - 1).abs().max() < 0.03
    # num_classes was found on the denoiser; it can also come from denoiser.inner
    wrapper = torch.nn.Module()
    wrapper.inner = model
    wrapper.forward = model.forward
    sample(wrapper, x[:4], torch.tensor([1.0, 0.0]), "euler", class_cond=cls[:4], cfg_scale=2.0)


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input_names_the_allowed_values():
    x = torch.zeros(4, 2)
    sig = torch.tensor([1.0, 0.0])
    with pytest.raises(ValueError, match="allowed: euler, heun, dpmpp_2m, dpmpp_3m_sde"):
        sample(MIXTURE, x, sig, "ddim")
    with pytest.raises(ValueError, match="allowed: churn, s_tmin, s_tmax, s_noise"):
        sample(MIXTURE, x, sig, "heun", eta=0.5)
    with pytest.raises(ValueError, match="allowed: none"):
        sample(MIXTURE, x, sig, "dpmpp_2m", churn=1.0)
    with pytest.raises(ValueError, match="non-increasing"):
        sample(MIXTURE, x, torch.tensor([1.0, 2.0, 0.0]), "euler")
    with pytest.raises(ValueError, match="must be > 0 except the last"):
        sample(MIXTURE, x, torch.tensor([1.0, 0.0, 0.0]), "euler")
    with pytest.raises(ValueError, match="1-D tensor"):
        sample(MIXTURE, x, torch.ones(2, 2), "euler")
    with pytest.raises(ValueError, match="class_cond must have shape"):
        sample(MIXTURE, x, sig, class_cond=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in \[0, 2\]"):
        sample(MIXTURE, x, sig, class_cond=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="needs class_cond"):
        sample(MIXTURE, x, sig, cfg_scale=2.0)
    with pytest.raises(ValueError, match="needs num_classes"):
        sample(
            lambda x, s, class_cond: x,
            x,
            sig,
            class_cond=torch.zeros(4, dtype=torch.long),
            cfg_scale=2.0,
        )
    with pytest.raises(ValueError, match="aug_cond must have batch size 4"):
        sample(MIXTURE, x, sig, aug_cond=torch.zeros(3, 9))
    with pytest.raises(ValueError, match="sigma_min <= sigma_max"):
        karras_sigmas(10, 5.0, 1.0)


# --- the authors' implementation (optional) --------------------------------------------------------


def test_matches_k_diffusion_samplers(k_diffusion):
    """Same inputs and the same noise stream: our samplers reproduce k-diffusion's."""
    ks = k_diffusion.sampling
    sigmas = karras_sigmas(50, SIGMA_MIN, SIGMA_MAX)
    assert torch.allclose(
        sigmas, ks.get_sigmas_karras(50, SIGMA_MIN, SIGMA_MAX), rtol=1e-5
    )  # theirs: float32
    x, _ = start(n=512, seed=3)
    ref_fns = {
        "euler": ks.sample_euler,
        "heun": ks.sample_heun,
        "dpmpp_2m": ks.sample_dpmpp_2m,
        "dpmpp_3m_sde": ks.sample_dpmpp_3m_sde,
    }
    cases = [
        ("euler", {}, {}),
        ("heun", {}, {}),
        ("dpmpp_2m", {}, {}),
        ("euler", {"churn": 20.0}, {"s_churn": 20.0}),  # churn on every step: same RNG order
        ("heun", {"churn": 20.0}, {"s_churn": 20.0}),
        ("dpmpp_3m_sde", {}, {}),
        ("dpmpp_3m_sde", {"eta": 0.0}, {"eta": 0.0}),
    ]
    for name, ours_kw, ref_kw in cases:
        if name == "dpmpp_3m_sde":  # k-diffusion takes a noise_sampler(σ, σ_next)
            g_ref = torch.Generator().manual_seed(5)
            noise = lambda s, sn, g=g_ref: torch.randn(x.shape, generator=g)  # noqa: E731
            ref_kw = dict(ref_kw, noise_sampler=noise)
            ref = ref_fns[name](MIXTURE, x, sigmas, disable=True, **ref_kw)
            ours = sample(MIXTURE, x, sigmas, name, generator=5, **ours_kw)
        else:  # k-diffusion's Euler/Heun draw from the global RNG
            torch.manual_seed(7)
            ref = ref_fns[name](MIXTURE, x, sigmas, disable=True, **ref_kw)
            torch.manual_seed(7)
            ours = sample(MIXTURE, x, sigmas, name, **ours_kw)
        # DPM++(3M) SDE: k-diffusion computes its step coefficients in float32, we in float64;
        # over 50 steps from σ = 80 that leaves up to 6e-4 (measured in float64 the two agree to
        # 1e-14; tests/test_reference_fixtures.py checks every step of a recorded reference
        # trajectory). The other samplers agree to 2e-4.
        atol = 1e-3 if name == "dpmpp_3m_sde" else 2e-4
        assert torch.allclose(ours, ref, atol=atol), (name, (ours - ref).abs().max().item())


# --- generate: the one entry point for a trained model ------------------------------------------

TOY_RUN = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "toy-hdit"
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "sampling" / "toy_run_generate.pt"


@pytest.fixture(scope="module")
def toy_run():
    from hdit_edu.runs import load_run

    return load_run(TOY_RUN, device="cpu")


def test_generate_is_the_sampler_loop_with_seeded_noise_labels_and_guidance(toy_run):
    """``generate`` at another size, position reading and σ shift, guided, in two batches, is
    exactly the low-level loop written out: start noise σ_max·ε from ``seed``, the sampler's
    noise from ``seed + 1`` (one generator across batches), the shifted Karras schedule, the
    model reading positions on the training grid's spacing (restored afterwards)."""
    from hdit_edu.configs import sampling_sigma_range
    from hdit_edu.resolution import sampling_config, shifted_sigmas
    from hdit_edu.sampling import generate, sampling_sigmas

    config, denoiser = toy_run
    size, labels = (32, 48), [3, 5, 8]  # 8 = the dropped class: unconditional
    images = generate(denoiser, config, 3, resolution=size, positions="grid", shift=True,
                      steps=3, cfg_scale=2.0, class_cond=labels, seed=4, batch_size=2)  # fmt: skip
    assert images.shape == (3, 3, 32, 48) and denoiser.inner.position_reading == "normalised"
    sigmas = shifted_sigmas(karras_sigmas(3, *sampling_sigma_range(config)), config, size)
    assert torch.equal(sigmas, sampling_sigmas(config, 3, resolution=size, shift=True))
    noise, sde = torch.Generator().manual_seed(4), torch.Generator().manual_seed(5)
    denoiser.inner.set_position_reading("grid")
    try:
        with torch.no_grad():
            expected = [
                sample(denoiser, torch.randn(len(batch), 3, 32, 48, generator=noise) * sigmas[0],
                       sigmas, "dpmpp_3m_sde", class_cond=torch.tensor(batch), cfg_scale=2.0,
                       num_classes=8, generator=sde)  # fmt: skip
                for batch in ([3, 5], [8])
            ]
    finally:
        denoiser.inner.set_position_reading("normalised")
    assert torch.equal(images, torch.cat(expected).clamp(-1, 1))
    assert sampling_config(config, size).model.resolution == size


def test_generate_draws_what_the_five_old_entry_points_drew(toy_run):
    """The golden draws of the code before issue 26 merged the entry points
    (``resolution.generate_at`` and ``sampling.generate`` of commit 21cb375, the shipped toy
    run, one thread): bit for bit on the CPU kind and torch that made them, else to float
    rounding (another kernel's summation order). The fixture names its CPU by model name only
    ("AMD EPYC"), and that name turned out to cover two kinds that round differently
    (results/hourglass-vs-global/README.md, amendment A1): bit for bit needs a ``cpu_id``."""
    from hdit_edu.env import cpu_kind, same_cpu_kind
    from hdit_edu.sampling import generate

    config, denoiser = toy_run
    golden = torch.load(GOLDEN, weights_only=True)
    got = {
        "at_32x48_grid_shift_cfg2_class3": generate(
            denoiser, config, 2, resolution=(32, 48), positions="grid", shift=True, steps=3,
            seed=7, cfg_scale=2.0, class_cond=3,
        ),  # fmt: skip
        "three_in_batches_of_two": generate(denoiser, config, 3, steps=3, seed=1, batch_size=2),
    }
    made = {"cpu": golden["cpu_model"], "cpu_id": golden.get("cpu_id")}
    same_machine = same_cpu_kind(made, cpu_kind(), known=True) and golden["torch"] == torch.__version__
    for name, images in got.items():
        if same_machine:
            assert torch.equal(images, golden[name]), name
        else:
            torch.testing.assert_close(images, golden[name], rtol=0, atol=1e-4)
