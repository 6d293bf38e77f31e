"""hdit_edu.diffusion against closed forms: EDM preconditioning (eq. 4), the loss weightings of
App. B (eq. 5, 7–9), the training loss (eq. 1), the σ densities, stratified sampling and the
exact Gaussian-mixture denoiser. When ``HDIT_K_DIFFUSION_SRC`` points at a checkout of the
authors' k-diffusion (the ``k_diffusion`` fixture of ``conftest.py``), the loss and the
densities are also compared with it.
"""

from __future__ import annotations

import math

import pytest
import torch

from hdit_edu.configs import Config, DiffusionConfig, ModelConfig
from hdit_edu.diffusion import (
    Denoiser,
    GaussianMixtureDenoiser,
    c_in,
    c_noise,
    c_out,
    c_skip,
    cosine_interpolated_sigma,
    default_gamma,
    lognormal_sigma,
    loss_weight,
    rand_cosine_interpolated,
    rand_lognormal,
    sample_sigmas,
    stratified_uniform,
    target_weight,
)
from hdit_edu.training import training_sigmas

SD = 0.5  # σ_data
SIGMAS = torch.logspace(-3, 3, 61, dtype=torch.float64)  # the paper's σ range, 10 per decade
KINDS = ("snr", "min-snr", "soft-min-snr", "karras")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster than two on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- EDM preconditioner (eq. 4) ----------------------------------------------------------------


def test_preconditioner_closed_forms():
    for s in [1e-3, 0.02, 0.5, 1.0, 7.3, 80.0, 1e3]:
        assert c_skip(s) == pytest.approx(SD**2 / (s**2 + SD**2), rel=1e-12)
        assert c_out(s) == pytest.approx(s * SD / math.sqrt(s**2 + SD**2), rel=1e-12)
        assert c_in(s) == pytest.approx(1 / math.sqrt(s**2 + SD**2), rel=1e-12)
        assert c_noise(s) == pytest.approx(math.log(s) / 4, rel=1e-12)
        # σ_data is a parameter, not a constant
        assert c_skip(s, 1.0) == pytest.approx(1 / (s**2 + 1), rel=1e-12)
    # tensors give the same numbers as floats
    t = torch.tensor([0.1, 2.0], dtype=torch.float64)
    for f in (c_skip, c_out, c_in):
        assert torch.allclose(f(t), torch.tensor([f(0.1), f(2.0)], dtype=torch.float64))
    assert torch.allclose(c_noise(t), t.log() / 4)
    # EDM's design identities: unit-variance input and unit-variance training target
    s = SIGMAS
    assert torch.allclose(c_in(s) ** 2 * (s**2 + SD**2), torch.ones_like(s))
    target_var = (1 - c_skip(s)) ** 2 * SD**2 + c_skip(s) ** 2 * s**2
    assert torch.allclose(c_out(s) ** 2, target_var, rtol=1e-12)


def test_training_target_has_unit_variance():
    """For data of std σ_data the target T = (x₀ − c_skip·x_σ)/c_out has unit variance."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(200_000, generator=g, dtype=torch.float64) * SD
    noise = torch.randn(200_000, generator=g, dtype=torch.float64)
    for s in [0.01, 0.3, 2.0, 50.0]:
        x = x0 + s * noise
        target = (x0 - c_skip(s) * x) / c_out(s)
        assert target.std().item() == pytest.approx(1.0, abs=0.01)
        assert (c_in(s) * x).std().item() == pytest.approx(1.0, abs=0.01)


# --- loss weightings (App. B) -------------------------------------------------------------------


def test_loss_weight_equals_equations_7_to_9():
    s = SIGMAS
    assert torch.allclose(loss_weight("snr", s), 1 / s**2, rtol=1e-12)  # eq. 7
    for gamma in (5.0, 4.0, 0.5):
        expected = torch.minimum(1 / s**2, torch.full_like(s, gamma))  # eq. 8
        assert torch.allclose(loss_weight("min-snr", s, gamma=gamma), expected, rtol=1e-12)
        expected = 1 / (s**2 + 1 / gamma)  # eq. 9
        assert torch.allclose(loss_weight("soft-min-snr", s, gamma=gamma), expected, rtol=1e-12)
    # EDM (Karras et al.): λ = (σ² + σ_d²)/(σ·σ_d)²
    assert torch.allclose(loss_weight("karras", s), (s**2 + SD**2) / (s * SD) ** 2, rtol=1e-12)
    # defaults: min-SNR γ = 5 (Hang et al., Fig. 8); soft-min-SNR γ = 1/σ_d² (= 4, Table 5)
    assert default_gamma("min-snr") == 5.0 and default_gamma("soft-min-snr") == 4.0
    assert default_gamma("soft-min-snr", sigma_data=1.0) == 1.0
    assert torch.allclose(loss_weight("min-snr", s), loss_weight("min-snr", s, gamma=5.0))
    assert torch.allclose(loss_weight("soft-min-snr", s), 1 / (s**2 + SD**2), rtol=1e-12)
    # floats work too
    assert loss_weight("min-snr", 0.1) == 5.0 and loss_weight("snr", 2.0) == 0.25


def test_soft_min_snr_is_min_snr_away_from_the_knee():
    """Soft-min-SNR ≈ min-SNR for σ ≪ γ^{-1/2} and σ ≫ γ^{-1/2}; half of it at the knee."""
    for gamma in (5.0, 4.0):
        knee = gamma**-0.5
        hard = loss_weight("min-snr", SIGMAS, gamma=gamma)
        soft = loss_weight("soft-min-snr", SIGMAS, gamma=gamma)
        far = (SIGMAS < knee / 20) | (SIGMAS > knee * 20)
        rel = (soft / hard - 1).abs()
        assert rel[far].max() < 1 / (1 + 20**2) + 1e-12  # ≤ 0.25 %
        assert rel.max() <= 0.5 + 1e-12  # the largest gap: exactly at the knee
        at_knee = loss_weight("soft-min-snr", knee, gamma=gamma) / loss_weight(
            "min-snr", knee, gamma=gamma
        )
        assert at_knee == pytest.approx(0.5, rel=1e-12)
        assert (soft <= hard * (1 + 1e-12)).all()  # soft-min-SNR never exceeds min-SNR


def test_target_weight_is_eq5():
    """w(σ) on ‖F − T‖² = λ(σ)·c_out(σ)²; for min-SNR this is eq. 5's right-hand side."""
    s = SIGMAS
    eq5 = torch.minimum(1 / s**2, torch.full_like(s, 5.0)) * s**2 * SD**2 / (SD**2 + s**2)
    assert torch.allclose(target_weight("min-snr", s), eq5, rtol=1e-12)
    # the trainer's soft-min-SNR (γ = 1/σ_d²), in the form the authors' code writes it
    ours = target_weight("soft-min-snr", s)
    assert torch.allclose(ours, (s * SD) ** 2 / (s**2 + SD**2) ** 2, rtol=1e-12)
    assert torch.allclose(target_weight("karras", s), torch.ones_like(s), rtol=1e-12)  # EDM
    assert torch.allclose(target_weight("snr", s), SD**2 / (s**2 + SD**2), rtol=1e-12)


# --- the Denoiser and its loss (eq. 1, 4) -----------------------------------------------------


class Linear(torch.nn.Module):
    """F(y, σ) = a·y + b·c_noise(σ): simple enough to write D in closed form."""

    def __init__(self, a=0.7, b=0.3):
        super().__init__()
        self.a, self.b = a, b
        self.seen_sigma = None

    def forward(self, y, sigma, class_cond=None):
        self.seen_sigma = sigma
        return self.a * y + self.b * c_noise(sigma).reshape(-1, *[1] * (y.ndim - 1))


def test_denoiser_forward_is_eq4():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.3, 1.0, 5.0, 80.0], dtype=torch.float64)
    inner = Linear()
    d = Denoiser(inner)(x, sigma)
    s = sigma.reshape(-1, 1, 1, 1)
    f = 0.7 * x / (s**2 + SD**2) ** 0.5 + 0.3 * s.log() / 4
    expected = SD**2 / (s**2 + SD**2) * x + s * SD / (s**2 + SD**2) ** 0.5 * f
    assert torch.allclose(d, expected, rtol=1e-12)
    assert torch.equal(inner.seen_sigma, sigma)  # the inner network receives σ itself
    # a freshly initialised model (F = 0) makes D = c_skip·x; a scalar σ is broadcast
    zero = Denoiser(lambda y, sigma: torch.zeros_like(y))
    assert torch.allclose(zero(x, 2.0), x * SD**2 / (4.0 + SD**2), rtol=1e-12)
    # a bf16 input does not round σ to bf16: the inner network gets it in float32
    Denoiser(inner)(x.bfloat16(), 0.123)
    assert inner.seen_sigma.dtype == torch.float32 and inner.seen_sigma[0].item() == pytest.approx(
        0.123
    )


def test_loss_equals_x0_space_weighted_mse():
    """loss(…, weighting=k) = λ_k(σ)·mean (D − x₀)² (eq. 1) — the F-space form is the same loss."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(16, 3, 4, 4, generator=g, dtype=torch.float64) * SD
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    sigma = torch.logspace(-2.5, 2.5, 16, dtype=torch.float64)
    den = Denoiser(Linear())
    d = den(x0 + sigma.reshape(-1, 1, 1, 1) * noise, sigma)
    mse = (d - x0).pow(2).flatten(1).mean(1)
    for kind in KINDS:
        for gamma in [None, 2.0] if "min-snr" in kind else [None]:
            loss = den.loss(x0, noise, sigma, weighting=kind, gamma=gamma)
            assert loss.shape == (16,)
            expected = loss_weight(kind, sigma, gamma=gamma) * mse
            assert torch.allclose(loss, expected, rtol=1e-10), kind
    # default weighting of the Denoiser = the trainer's: soft-min-SNR with γ = 1/σ_d²
    expected = mse / (sigma**2 + SD**2)
    assert torch.allclose(den.loss(x0, noise, sigma), expected, rtol=1e-10)
    # a callable x₀-space weighting works like the named one
    by_fn = den.loss(x0, noise, sigma, weighting=lambda s: 1 / s**2)
    assert torch.allclose(by_fn, den.loss(x0, noise, sigma, weighting="snr"), rtol=1e-12)


def _gaussian_inner(mean, std, sigma_data=SD):
    """The inner network F whose Denoiser is the exact denoiser of N(mean, std² I)."""
    exact = GaussianMixtureDenoiser(mean[None], [std])

    def inner(y, sigma):
        s = sigma[:, None]
        x = y / c_in(s, sigma_data)
        return (exact(x, sigma) - c_skip(s, sigma_data) * x) / c_out(s, sigma_data)

    return inner


def test_exact_gaussian_denoiser_has_the_lowest_loss():
    """Training-loss sanity: on a tiny data set the exact denoiser of the data's Gaussian beats
    every perturbed one; on fresh data its loss is the closed-form posterior variance,
    E[loss | σ] = λ(σ)·s²σ²/(s² + σ²) per dimension."""
    mu, s = torch.tensor([0.4, -0.3], dtype=torch.float64), 0.45
    g = torch.Generator().manual_seed(2)

    def draw(n_data, n_noise):
        data = mu + s * torch.randn(n_data, 2, generator=g, dtype=torch.float64)
        x0 = data.repeat(n_noise, 1)
        noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        sigma = rand_cosine_interpolated(len(x0), 32, generator=g, dtype=torch.float64)
        return x0, noise, sigma

    def mean_loss(mean, std, batch):
        return Denoiser(_gaussian_inner(mean, std)).loss(*batch).mean().item()

    fresh = draw(65536, 1)
    posterior_var = s**2 * fresh[2] ** 2 / (s**2 + fresh[2] ** 2)
    expected = (loss_weight("soft-min-snr", fresh[2]) * posterior_var).mean().item()
    assert mean_loss(mu, s, fresh) == pytest.approx(expected, rel=0.03)  # std. error ≈ 0.6 %

    tiny = draw(1024, 16)  # 1024 data points, 16 noise draws each
    best = mean_loss(mu, s, tiny)
    shift_x = torch.tensor([0.1, 0.0], dtype=torch.float64)
    perturbed = [
        mean_loss(mu + shift_x, s, tiny),
        mean_loss(mu - shift_x.flip(0), s, tiny),
        mean_loss(mu, s * 0.9, tiny),
        mean_loss(mu, s * 1.1, tiny),
        mean_loss(mu * 0, s, tiny),
    ]
    assert all(p > best for p in perturbed), (best, perturbed)


def test_mixture_denoiser_is_tweedies_formula():
    """The closed form E[x₀|x_σ] equals Tweedie's x + σ²∇log p_σ(x), by autograd of the
    noisy mixture density; one component gives μ + s²/(s² + σ²)(x − μ)."""
    means = torch.tensor([[-1.0, 0.5], [1.5, 0.0], [0.0, -2.0]], dtype=torch.float64)
    stds = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    exact = GaussianMixtureDenoiser(means, stds, weights)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64) * 2
    for s in [0.05, 0.4, 1.0, 10.0]:
        xr = x.clone().requires_grad_(True)
        comps = torch.distributions.Independent(
            torch.distributions.Normal(means, (stds**2 + s**2).sqrt()[:, None].expand(3, 2)), 1
        )
        p = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(weights), comps)
        (score,) = torch.autograd.grad(p.log_prob(xr).sum(), xr)
        assert torch.allclose(exact(x, s), x + s**2 * score, atol=1e-10)
    one = GaussianMixtureDenoiser(means[:1], stds[:1])
    expected = means[0] + 0.09 / (0.09 + 4.0) * (x - means[0])
    assert torch.allclose(one(x, 2.0), expected, atol=1e-12)
    # class-conditional: component k alone; index K (dropped class) = the whole mixture
    cls = torch.tensor([1] * 32 + [3] * 32)
    d = exact(x, 0.7, class_cond=cls)
    comp1 = GaussianMixtureDenoiser(means[1:2], stds[1:2])
    assert torch.allclose(d[:32], comp1(x[:32], 0.7), atol=1e-12)
    assert torch.allclose(d[32:], exact(x[32:], 0.7), atol=1e-12)


# --- stratified sampling and σ densities ---------------------------------------------------------


def test_stratified_uniform_covers_every_stratum_once():
    g = torch.Generator().manual_seed(4)
    u = stratified_uniform(64, generator=g, dtype=torch.float64)  # not distributed: (0, 1)
    assert torch.equal((u * 64).floor().long(), torch.arange(64))
    # across 4 DDP ranks with local batch 8: the 32 draws fill the 32 strata exactly once
    parts = [stratified_uniform(8, rank=r, world_size=4, generator=g) for r in range(4)]
    both = torch.cat(parts)
    assert torch.equal((both * 32).floor().long().sort().values, torch.arange(32))
    # each rank's own batch is spread evenly too (stratum i·world_size + rank)
    assert torch.equal((parts[2] * 32).floor().long(), torch.arange(8) * 4 + 2)
    # reproducible with a seeded generator
    a = stratified_uniform(5, generator=torch.Generator().manual_seed(9))
    b = stratified_uniform(5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_lognormal_density():
    u = torch.tensor([0.5, 0.841344746068543, 0.158655253931457], dtype=torch.float64)
    expected = torch.tensor([math.exp(-1.2), math.exp(0.0), math.exp(-2.4)], dtype=torch.float64)
    assert torch.allclose(lognormal_sigma(u, -1.2, 1.2), expected, rtol=1e-9)
    log_s = rand_lognormal(100_000, -1.2, 1.2, generator=torch.Generator().manual_seed(5)).log()
    assert log_s.mean().item() == pytest.approx(-1.2, abs=0.01)
    assert log_s.std().item() == pytest.approx(1.2, rel=0.01)
    # truncation to a σ range keeps the shape inside it (the ends map onto the range)
    t = lognormal_sigma(torch.tensor([0.0, 1.0], dtype=torch.float64), sigma_min=0.1, sigma_max=2)
    assert torch.allclose(t, torch.tensor([0.1, 2.0], dtype=torch.float64), rtol=1e-9)


def _logsnr_cosine_shifted(t, image_d, noise_d, sigma_min=1e-3, sigma_max=1e3):
    """simple diffusion's shifted cosine schedule, written in log-SNR (SNR = σ_d²/σ²)."""
    shift = 2 * math.log(noise_d / image_d)
    # the unshifted cosine over the log-SNR range moved by −shift; t = 0 is the noisy end
    lam_min, lam_max = -2 * math.log(sigma_max / SD) - shift, -2 * math.log(sigma_min / SD) - shift
    th_start, th_end = math.atan(math.exp(-lam_min / 2)), math.atan(math.exp(-lam_max / 2))
    return -2 * torch.log(torch.tan(th_start + t * (th_end - th_start))) + shift


def test_cosine_interpolated_density_closed_forms():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    # no shift (image_d = noise_d): σ(t) = σ_d·tan θ(t), θ linear from atan(σ_max/σ_d)
    th0, th1 = math.atan(1e3 / SD), math.atan(1e-3 / SD)
    plain = SD * torch.tan(th0 + t * (th1 - th0))
    assert torch.allclose(cosine_interpolated_sigma(t, 64, 64, 64), plain, rtol=1e-12)
    # interpolation in log-SNR between the schedules shifted from 32 and from image_d
    for image_d in (64, 256, 1024):
        lam = torch.lerp(
            _logsnr_cosine_shifted(t, image_d, 32), _logsnr_cosine_shifted(t, image_d, image_d), t
        )
        expected = SD * torch.exp(-lam / 2)
        assert torch.allclose(cosine_interpolated_sigma(t, image_d), expected, rtol=1e-10)
        ends = cosine_interpolated_sigma(torch.tensor([0.0, 1.0], dtype=torch.float64), image_d)
        assert torch.allclose(ends, torch.tensor([1e3, 1e-3], dtype=torch.float64), rtol=1e-10)
    # the resolution shift: higher resolutions get more noise. At t = ½ half of the shift
    # applies, so σ(½) grows ≈ (image_d/32)^{1/2}: ×√8 from 32 to 256.
    mid = [cosine_interpolated_sigma(torch.tensor([0.5]), d).item() for d in (32, 64, 128, 256)]
    assert mid == sorted(mid)
    assert mid[-1] / mid[0] == pytest.approx(math.sqrt(8), rel=0.01)
    # draws stay in the paper's range [1e-3, 1e3]
    draws = rand_cosine_interpolated(100_000, 1024, generator=torch.Generator().manual_seed(6))
    assert draws.min() >= 1e-3 and draws.max() <= 1e3


def test_sample_sigmas_follows_the_config():
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    config = Config(model=ModelConfig(resolution=128))
    a = training_sigmas(config, 16, generator=g())
    b = rand_cosine_interpolated(16, 128, 32, None, generator=g())
    assert torch.equal(a, b)
    lognormal = DiffusionConfig(sigma_density="lognormal", lognormal_mean=-1.0, lognormal_std=1.5)
    a = training_sigmas(Config(diffusion=lognormal), 16, generator=g())
    b = rand_lognormal(16, -1.0, 1.5, sigma_min=1e-3, sigma_max=1e3, generator=g())
    assert torch.equal(a, b)
    a = sample_sigmas("lognormal", 16, lognormal_mean=-1.0, lognormal_std=1.5, generator=g())
    assert torch.equal(a, b)  # the density's defaults: the paper's σ range
    a = sample_sigmas("cosine-interpolated", 16, image_d=64, stratified=False, generator=g())
    b = cosine_interpolated_sigma(torch.rand(16, generator=g()), 64)
    assert torch.equal(a, b)


# --- bad input ---------------------------------------------------------------------------------


def test_bad_input_names_the_allowed_values():
    with pytest.raises(ValueError, match="allowed: 'snr', 'min-snr', 'soft-min-snr', 'karras'"):
        loss_weight("l2", 1.0)
    with pytest.raises(ValueError, match="allowed"):
        Denoiser(Linear(), weighting="min_snr")
    x = torch.zeros(2, 3)
    den = Denoiser(Linear())
    with pytest.raises(ValueError, match="allowed"):
        den.loss(x, x, torch.ones(2), weighting="huber")
    with pytest.raises(ValueError, match="must be > 0"):
        loss_weight("snr", torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="must be > 0"):
        den(x, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="must be > 0"):
        den.loss(x, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        den(x, torch.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        den.loss(x, torch.zeros(2, 4), torch.ones(2))
    with pytest.raises(ValueError, match="shaped like its input"):
        Denoiser(lambda y, s: torch.cat([y, y], 1))(x, torch.ones(2))
    with pytest.raises(ValueError, match="gamma is used only by"):
        loss_weight("snr", 1.0, gamma=5.0)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        loss_weight("min-snr", 1.0, gamma=0.0)
    with pytest.raises(ValueError, match="allowed: 'lognormal', 'cosine-interpolated'"):
        sample_sigmas("uniform", 4)
    with pytest.raises(ValueError, match="needs image_d"):
        sample_sigmas(DiffusionConfig().sigma_density, 4)
    with pytest.raises(ValueError, match="rank"):
        stratified_uniform(4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="agree on K"):
        GaussianMixtureDenoiser(torch.zeros(2, 2), [1.0])
    with pytest.raises(ValueError, match="shape"):
        GaussianMixtureDenoiser(torch.zeros(2, 2), [1.0, 1.0])(torch.zeros(4, 3), 1.0)


# --- the authors' implementation (optional) --------------------------------------------------------


def test_matches_k_diffusion_loss_and_densities(k_diffusion):
    ku, kl = k_diffusion.utils, k_diffusion.layers
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    inner = lambda y, sigma: conv(y) * (1 + c_noise(sigma))[:, None, None, None]  # noqa: E731
    x0, noise = torch.randn(32, 3, 8, 8), torch.randn(32, 3, 8, 8)
    sigma = rand_cosine_interpolated(32, 64)
    with torch.no_grad():
        for kind in ("soft-min-snr", "snr", "karras"):
            ref = kl.Denoiser(inner, sigma_data=SD, weighting=kind).loss(x0, noise, sigma)
            ours = Denoiser(inner, weighting=kind).loss(x0, noise, sigma)
            assert torch.allclose(ours, ref, rtol=1e-5), kind
        assert torch.allclose(Denoiser(inner)(x0, sigma), kl.Denoiser(inner, SD)(x0, sigma))
    for image_d, low, high in [(64, 32, 64), (256, 32, 256), (1024, 32, 1024), (128, 64, 128)]:
        torch.manual_seed(3)
        ref = ku.rand_cosine_interpolated(
            [10_000], image_d, low, high, sigma_data=SD, dtype=torch.float64
        )
        torch.manual_seed(3)
        ours = cosine_interpolated_sigma(
            torch.rand(10_000, dtype=torch.float64), image_d, low, high
        )
        assert torch.allclose(ours, ref, rtol=1e-12)
    for rank, world in [(0, 1), (1, 4), (3, 4)]:
        torch.manual_seed(4)
        ref = ku.stratified_uniform([16], rank, world)
        torch.manual_seed(4)
        assert torch.equal(stratified_uniform(16, rank=rank, world_size=world), ref)


def test_denoiser_uses_only_the_declared_channels_of_a_learned_variance_dit():
    """R1/R2: DiT-B/4 predicts 2·C channels (mean + variance head); D(x, σ) uses the first C."""
    from hdit_edu import LevelConfig, ModelConfig, build_model

    cfg = ModelConfig(
        arch="dit",
        levels=[LevelConfig(depth=1, width=64, head_dim=32, attention="global")],
        patch_size=4,
        out_channels=6,
        num_classes=3,
        aug_dim=0,
        ffn="gelu",
        pos_emb="additive",
        resolution=16,
    )
    torch.manual_seed(0)
    dit = build_model(cfg)
    for p in dit.parameters():  # leave the zero init: every output channel becomes non-trivial
        p.data.normal_(0, 0.05)
    x, sigma, cls = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 2.0]), torch.tensor([0, 3])
    full = dit(x * c_in(sigma, 0.5)[:, None, None, None], sigma, class_cond=cls)
    assert full.shape == (2, 6, 16, 16)
    d = Denoiser(dit, sigma_data=0.5)(x, sigma, class_cond=cls)
    expected = (
        c_skip(sigma, 0.5)[:, None, None, None] * x
        + c_out(sigma, 0.5)[:, None, None, None] * full[:, :3]
    )
    torch.testing.assert_close(d, expected, rtol=1e-5, atol=1e-6)
