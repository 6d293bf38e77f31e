"""DiT's own discrete-time diffusion: baseline R1 of Table 1 (§5.2 "Baselines").

The paper's R1 is DiT-B/4 trained and sampled in DiT's codebase (Peebles & Xie 2023), which
keeps OpenAI's discrete-time DDPM (Ho et al. 2020) with IDDPM's learned variance (Nichol &
Dhariwal 2021). This module is that process, written from DiT's ``diffusion/`` package
(``create_diffusion`` with its defaults: linear β schedule, 1,000 steps, ε-prediction,
``learn_sigma=True`` → ``LEARNED_RANGE``, loss type ``MSE`` → the hybrid loss; sampling respaced
to ``"250"`` steps). ``tests/test_ddpm.py`` checks it against numbers computed with DiT's code.

**The process** (DDPM §2). With β_1 … β_T linear from 10⁻⁴ to 0.02 (T = 1000; indices here run
t = 0 … T − 1, as in DiT), α_t = 1 − β_t and ᾱ_t = Π_{s ≤ t} α_s:

    q(x_t | x_0) = N(√ᾱ_t · x_0, (1 − ᾱ_t) I)                               DDPM eq. 4
    q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I),  β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t)      eq. 6–7
    μ̃_t = β_t √ᾱ_{t−1}/(1 − ᾱ_t) · x_0 + (1 − ᾱ_{t−1}) √α_t/(1 − ᾱ_t) · x_t

**t ↔ σ: the same noise, two clocks.** Divide x_t by √ᾱ_t: x_t/√ᾱ_t = x_0 + σ_t·ε with

    σ_t = √((1 − ᾱ_t)/ᾱ_t)        (the EDM noise level of step t; SNR_t = 1/σ_t² = ᾱ_t/(1 − ᾱ_t))

so DDPM's x_t is EDM's x_σ scaled by c_in = 1/√(1 + σ²) (EDM's input scaling with σ_data = 1),
and an ε-prediction ε̂ gives EDM's denoiser D(x_σ; σ) = x_σ − σ·ε̂. The linear schedule's
1,000 steps cover σ ∈ [0.0100, 157.4] (:func:`DDPMSchedule.sigmas`); EDM's trainer draws σ
continuously on [10⁻³, 10³] instead. :func:`sigma_to_timestep` inverts the table (fractional t
between steps).

**The model** (IDDPM §3.1). The network gets x_t and t and returns 2C channels: ε̂ (C) and a
value v (C) that interpolates the log variance between the two natural choices,

    log Σ_θ = frac · log β_t + (1 − frac) · log β̃_t,   frac = (v + 1)/2      IDDPM eq. 15

(DiT's ``LEARNED_RANGE``; β̃_0 = 0, so log β̃ is "clipped": its t = 0 entry is β̃_1's). The
mean is the posterior mean at the predicted x̂_0 = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t (DDPM eq. 11).

**The hybrid loss** (IDDPM §3.1, eq. 16: L_hybrid = L_simple + λ·L_vlb, λ = 0.001). DiT's
``training_losses`` with loss type ``MSE`` computes, per image, with t ~ U{0, …, T − 1}:

    L_simple = mean_pixels (ε − ε̂)²                                         DDPM eq. 14
    L_t = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) / (D·ln 2)   for t > 0
    L_0 = −log p_θ(x_0 | x_1) / (D·ln 2)   (a Gaussian discretised to 256 bins)  DDPM eq. 13
    loss = L_simple + L_t

with the mean of p_θ built from a *stopped-gradient* ε̂, so L_t trains only the variance. The
VLB term is in bits per dimension (mean over the D = C·H·W pixels, divided by ln 2). IDDPM's
λ·L_vlb = 0.001 · Σ_t L_t = 0.001 · T · E_t[L_t] is exactly E_t[L_t] at T = 1000: DiT adds one
sampled term with weight 1.

**Sampling** (IDDPM §4, "improving sampling speed"). DiT samples with 250 of the 1,000 steps
(``space_timesteps(1000, "250")``): keeping steps S = {s_0 < s_1 < …} and ᾱ at them defines a
new process with β'_i = 1 − ᾱ_{s_i}/ᾱ_{s_{i−1}}; the network still receives the original step
s_i. Each ancestral step draws x_{i−1} = μ_θ + exp(½ log Σ_θ)·z (no noise at i = 0). Classifier-
free guidance (Ho & Salimans 2022) is DiT's ``forward_with_cfg``: ε̂ = ε̂_u + w·(ε̂_c − ε̂_u) on the
first three output channels only, the variance channels from the conditional pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .diffusion import SIGMA_DATA, Denoiser, loss_weight
from .layers import check_class_labels

NUM_TIMESTEPS = 1000  # DiT: create_diffusion(diffusion_steps=1000)
BETA_START, BETA_END = 1e-4, 0.02  # Ho et al.'s linear schedule at T = 1000
SAMPLING_STEPS = 250  # DiT's sample.py: --num-sampling-steps 250
CFG_CHANNELS = 3  # DiT's forward_with_cfg guides the first three output channels only


# ----------------------------------------------------------------------------------------------
# The schedule and its respacing
# ----------------------------------------------------------------------------------------------


def linear_betas(num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    """DiT's ``"linear"`` schedule: β linear from 10⁻⁴ to 0.02, scaled by 1000/T so that other
    step counts keep the same process (float64)."""
    if not isinstance(num_timesteps, int) or num_timesteps < 2:
        raise ValueError(f"num_timesteps must be an integer >= 2, got {num_timesteps!r}")
    scale = 1000 / num_timesteps
    return torch.linspace(
        scale * BETA_START, scale * BETA_END, num_timesteps, dtype=torch.float64
    )


def space_timesteps(num_timesteps: int, section_counts: int | str | list[int]) -> list[int]:
    """The steps of the original process that a respaced sampler keeps (DiT's
    ``space_timesteps``), sorted.

    ``section_counts``: ``"250"`` (or 250) = 250 steps spread evenly over the whole process;
    ``"10,15,20"`` = the process cut into three equal sections, with 10, 15 and 20 steps in
    them; ``"ddimN"``: the integer stride that gives exactly N steps (DDIM's). Within a section
    of ``size`` steps, ``count`` steps sit at ``round(k · (size − 1)/(count − 1))``, k = 0 …
    count − 1 (Python's round: halves go to the even neighbour), so both ends are kept."""
    if isinstance(section_counts, int):
        section_counts = str(section_counts)
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            want = int(section_counts[len("ddim") :])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == want:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"cannot take exactly {want} of {num_timesteps} steps with one stride")
        section_counts = [int(c) for c in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(
                f"section {i} has {size} steps; allowed counts: 1 … {size}, got {count}"
            )
        stride = (size - 1) / (count - 1) if count > 1 else 1
        position = 0.0
        for _ in range(count):
            steps.append(start + round(position))
            position += stride
        start += size
    return sorted(set(steps))


class DDPMSchedule:
    """The tables of a discrete process (float64, indexed by t = 0 … T − 1), and the original
    step each index stands for (``timestep_map``: the identity unless respaced).

    ``alphas_cumprod`` ᾱ_t, ``alphas_cumprod_prev`` ᾱ_{t−1} (ᾱ_{−1} = 1),
    ``posterior_variance`` β̃_t (DDPM eq. 7), ``posterior_log_variance_clipped`` log β̃ with
    its t = 0 entry replaced by β̃_1's (β̃_0 = 0), ``posterior_mean_coef1/2`` (DDPM eq. 7's
    coefficients of x_0 and x_t), ``sigmas`` σ_t = √((1 − ᾱ_t)/ᾱ_t) (the EDM noise level)."""

    def __init__(self, betas: torch.Tensor, timestep_map: list[int] | None = None):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError(f"betas must be 1-D with >= 2 steps, got shape {tuple(betas.shape)}")
        if not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must lie in (0, 1]")
        self.betas = betas
        self.num_timesteps = len(betas)
        self.timestep_map = torch.as_tensor(
            list(range(len(betas))) if timestep_map is None else timestep_map, dtype=torch.long
        )
        alphas = 1 - betas
        ac = torch.cumprod(alphas, 0)
        ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
        self.alphas_cumprod, self.alphas_cumprod_prev = ac, ac_prev
        self.posterior_variance = betas * (1 - ac_prev) / (1 - ac)  # β̃_t, DDPM eq. 7
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = betas * ac_prev.sqrt() / (1 - ac)  # μ̃_t's x_0 factor
        self.posterior_mean_coef2 = (1 - ac_prev) * alphas.sqrt() / (1 - ac)  # μ̃_t's x_t factor
        self.sigmas = ((1 - ac) / ac).sqrt()  # σ_t: x_t/√ᾱ_t = x_0 + σ_t·ε
        self._on: dict = {}

    @classmethod
    def linear(cls, num_timesteps: int = NUM_TIMESTEPS) -> DDPMSchedule:
        """DiT's training process: :func:`linear_betas` over ``num_timesteps`` steps."""
        return cls(linear_betas(num_timesteps))

    def respaced(self, section_counts: int | str | list[int]) -> DDPMSchedule:
        """The process on the steps :func:`space_timesteps` keeps (DiT's ``SpacedDiffusion``):
        ᾱ is kept at those steps and β'_i = 1 − ᾱ_{s_i}/ᾱ_{s_{i−1}} (ᾱ before the first: 1);
        ``timestep_map[i]`` is the original step s_i the network is given."""
        keep = space_timesteps(self.num_timesteps, section_counts)
        if len(keep) < 2:
            raise ValueError(f"a respaced process needs >= 2 steps, got {section_counts!r}")
        ac = self.alphas_cumprod[keep]
        betas = 1 - ac / torch.cat([ac.new_ones(1), ac[:-1]])
        return DDPMSchedule(betas, self.timestep_map[keep].tolist())

    def at(self, table: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """``table[t]`` as float32, shaped (B, 1, …) to broadcast over ``ndim`` dims (DiT's
        ``_extract_into_tensor``: float64 tables, read at the batch's steps, then float32)."""
        key = (id(table), t.device)
        if key not in self._on:  # one copy of each table per device
            dtype = torch.float32 if t.device.type == "mps" else torch.float64
            self._on[key] = table.to(device=t.device, dtype=dtype)
        return self._on[key][t].float().reshape(-1, *([1] * (ndim - 1)))


# ----------------------------------------------------------------------------------------------
# The forward process, the posterior and the model's p(x_{t−1} | x_t)
# ----------------------------------------------------------------------------------------------


def q_sample(s: DDPMSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
    """x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε  (DDPM eq. 4, reparameterised)."""
    return s.at(s.alphas_cumprod.sqrt(), t, x0.ndim) * x0 + s.at(
        (1 - s.alphas_cumprod).sqrt(), t, x0.ndim
    ) * noise


def q_posterior(s: DDPMSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """The posterior q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t): (mean, variance, clipped log
    variance), DDPM eq. 6–7."""
    n = x_t.ndim
    mean = s.at(s.posterior_mean_coef1, t, n) * x0 + s.at(s.posterior_mean_coef2, t, n) * x_t
    return mean, s.at(s.posterior_variance, t, n), s.at(s.posterior_log_variance_clipped, t, n)


def predict_x0(s: DDPMSchedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor):
    """x̂_0 = x_t/√ᾱ_t − √(1/ᾱ_t − 1)·ε̂  (DDPM eq. 4 solved for x_0; = x_σ − σ_t·ε̂ in EDM's
    scaling)."""
    ac = s.alphas_cumprod
    return s.at((1 / ac).sqrt(), t, x_t.ndim) * x_t - s.at((1 / ac - 1).sqrt(), t, x_t.ndim) * eps


def learned_log_variance(s: DDPMSchedule, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """log Σ_θ = frac·log β_t + (1 − frac)·log β̃_t, frac = (v + 1)/2  (IDDPM eq. 15; DiT's
    ``LEARNED_RANGE``: v = −1 → β̃_t, the posterior's; v = +1 → β_t)."""
    frac = (v + 1) / 2
    max_log = s.at(s.betas.log(), t, v.ndim)
    min_log = s.at(s.posterior_log_variance_clipped, t, v.ndim)
    return frac * max_log + (1 - frac) * min_log


def p_mean_variance(
    s: DDPMSchedule,
    output: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    *,
    clip_denoised: bool = False,
) -> dict[str, torch.Tensor]:
    """p_θ(x_{t−1} | x_t) from the network's 2C output channels (ε̂, v): ``mean`` μ_θ = μ̃_t(x̂_0,
    x_t) (DDPM eq. 11 via eq. 7), ``log_variance`` (IDDPM eq. 15), ``pred_x0`` x̂_0 (clamped to
    [−1, 1] if ``clip_denoised``; DiT's sample.py does not clip)."""
    c = x_t.shape[1]
    if output.shape != (x_t.shape[0], 2 * c, *x_t.shape[2:]):
        raise ValueError(
            f"the model must return 2·C = {2 * c} channels (ε̂ and the variance value) shaped "
            f"like x_t {tuple(x_t.shape)}; got {tuple(output.shape)}"
        )
    eps, v = output.split(c, dim=1)
    log_variance = learned_log_variance(s, v, t)
    x0 = predict_x0(s, x_t, t, eps)
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
    mean, _, _ = q_posterior(s, x0, x_t, t)
    return {"mean": mean, "log_variance": log_variance, "pred_x0": x0}


# ----------------------------------------------------------------------------------------------
# The variational bound (bits per dimension) and the hybrid loss
# ----------------------------------------------------------------------------------------------


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(μ₁, e^{ℓ₁}) ‖ N(μ₂, e^{ℓ₂})) per element, in nats:
    ½ (−1 + ℓ₂ − ℓ₁ + e^{ℓ₁−ℓ₂} + (μ₁ − μ₂)² e^{−ℓ₂})."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x) ≈ ½ (1 + tanh(√(2/π)·(x + 0.044715 x³))) (the tanh approximation DiT uses)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """log p(x) per element, in nats, of N(mean, e^{2·log_scale}) discretised to the 256 bins
    of 8-bit pixels in [−1, 1] (DDPM eq. 13): the mass of [x − 1/255, x + 1/255], with the
    outer bins open to ±∞ (x < −0.999: Φ(x⁺); x > 0.999: 1 − Φ(x⁻)); probabilities clamped at
    10⁻¹² before the log."""
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(
            f"x, means and log_scales must have one shape; got {tuple(x.shape)}, "
            f"{tuple(means.shape)}, {tuple(log_scales.shape)}"
        )
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (x - means + 1 / 255))
    cdf_min = approx_standard_normal_cdf(inv_std * (x - means - 1 / 255))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_min = (1 - cdf_min).clamp(min=1e-12).log()
    log_delta = (cdf_plus - cdf_min).clamp(min=1e-12).log()
    return torch.where(
        x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta)
    )


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def vb_terms_bpd(
    s: DDPMSchedule, output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """One term of the variational bound per image (B,), in bits per dimension: L_t = KL(q ‖
    p_θ) for t > 0, L_0 = −log p_θ(x_0 | x_1) at t = 0 (DDPM eq. 5 and 13; DiT's
    ``_vb_terms_bpd``, not clipped)."""
    true_mean, _, true_log_var = q_posterior(s, x0, x_t, t)
    p = p_mean_variance(s, output, x_t, t)
    kl = _mean_flat(normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"]))
    nll = -_mean_flat(
        discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])
    )
    return torch.where(t == 0, nll, kl) / math.log(2.0)


def training_losses(
    s: DDPMSchedule,
    output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The hybrid loss per image (IDDPM eq. 16 as DiT computes it): ``mse`` = L_simple (DDPM eq.
    14), ``vb`` = L_t of :func:`vb_terms_bpd` on the output with ε̂ detached (the bound trains
    the variance only), ``loss`` = mse + vb (λ·L_vlb with λ = 0.001, T = 1000: weight 1)."""
    c = x0.shape[1]
    eps, v = output.split(c, dim=1)
    frozen = torch.cat([eps.detach(), v], dim=1)
    vb = vb_terms_bpd(s, frozen, x0, x_t, t)
    mse = _mean_flat((noise - eps) ** 2)
    return {"mse": mse, "vb": vb, "loss": mse + vb}


# ----------------------------------------------------------------------------------------------
# t ↔ σ
# ----------------------------------------------------------------------------------------------


def sigma_to_timestep(s: DDPMSchedule, sigma: torch.Tensor) -> torch.Tensor:
    """The (fractional) step t with σ_t = σ: linear interpolation of t in log σ between the
    table's steps, clamped to [0, T − 1]. Exact (up to float rounding) on the table's σ_t."""
    log_table = s.sigmas.log().to(sigma.device)
    log_sigma = sigma.double().log().clamp(log_table[0], log_table[-1])
    hi = torch.searchsorted(log_table, log_sigma).clamp(1, s.num_timesteps - 1)
    lo = hi - 1
    w = (log_sigma - log_table[lo]) / (log_table[hi] - log_table[lo])
    return (lo + w).float()


def sample_training_sigmas(
    s: DDPMSchedule,
    n: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """σ of ``n`` training steps drawn as DiT draws them: t ~ U{0, …, T − 1}
    (``torch.randint``), returned as σ_t (float32) so that the trainer's σ-based bookkeeping
    stays; :class:`DDPMDenoiser.loss` reads t back exactly."""
    t = torch.randint(0, s.num_timesteps, (n,), generator=generator, device=device)
    return s.at(s.sigmas, t, 1)


# ----------------------------------------------------------------------------------------------
# The denoiser of the DDPM path
# ----------------------------------------------------------------------------------------------


class DDPMDenoiser(nn.Module):
    """A network with DiT's interface under DiT's discrete process: ``inner(x_t, σ_t,
    timestep=s_t, **cond)`` → (B, 2C, …) (ε̂, v), where the network embeds the original integer
    step s_t, as DiT does (:class:`hdit_edu.dit.DiT` with ``timestep``), and σ_t only passes its
    shape checks.

    * :meth:`loss` ``(x0, noise, sigma, **cond)``: the hybrid loss per image, with the step read
      from σ (σ must be a step's σ_t: :func:`sample_training_sigmas`).
    * ``forward(x, σ, **cond)``: EDM's D(x; σ) = x − σ·ε̂ for x = x_0 + σ·n (any σ; the network
      gets x/√(1 + σ²) and the fractional step of σ), so EDM's samplers run on it too.
    * :func:`sample`: DiT's ancestral sampler, respaced.
    """

    num_classes = Denoiser.num_classes

    def __init__(self, inner: nn.Module | Callable, schedule: DDPMSchedule | None = None):
        super().__init__()
        self.inner = inner
        self.schedule = schedule if schedule is not None else DDPMSchedule.linear()

    def model_output(
        self, x_t: torch.Tensor, t: torch.Tensor, schedule: DDPMSchedule | None = None, **cond
    ) -> torch.Tensor:
        """The network's (ε̂, v) at step index t of ``schedule`` (default: the training one;
        a respaced schedule maps t to the original step, DiT's ``_WrappedModel``)."""
        s = self.schedule if schedule is None else schedule
        timestep = s.timestep_map.to(t.device)[t].float()
        return self.inner(x_t, s.at(s.sigmas, t, 1), timestep=timestep, **cond)

    def loss(
        self,
        x0: torch.Tensor,
        noise: torch.Tensor,
        sigma: torch.Tensor,
        *,
        weighting: str | None = None,
        **cond,
    ) -> torch.Tensor:
        """Per-image loss (B,). ``weighting`` None: the hybrid loss (training) at the steps whose
        σ_t are ``sigma``. A weighting name (:func:`hdit_edu.diffusion.loss_weight`, σ_data =
        0.5, γ its default): EDM's x0-space loss λ(σ)·mean (D(x0 + σ·n; σ) − x0)² of this
        model's x0 estimate (:meth:`forward`) at any σ, the quantity
        :func:`hdit_edu.protocol.evaluate_loss` measures for every model — so a held-out loss
        compares with an EDM model's (off the table's [σ_0, σ_999] the step is clamped)."""
        if x0.shape != noise.shape:
            raise ValueError(
                f"x0 and noise must have the same shape; got {tuple(x0.shape)} and "
                f"{tuple(noise.shape)}"
            )
        if weighting is not None:
            sigma = torch.as_tensor(sigma, device=x0.device, dtype=torch.float32)
            sigma = sigma.expand(x0.shape[0]) if sigma.ndim == 0 else sigma
            sig = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
            d = self(x0 + sig * noise, sigma, **cond)
            lam = loss_weight(weighting, sigma, sigma_data=SIGMA_DATA)
            return (d - x0).pow(2).flatten(1).mean(1) * lam
        s = self.schedule
        t = sigma_to_timestep(s, torch.as_tensor(sigma, device=x0.device)).round().long()
        x_t = q_sample(s, x0, t, noise)
        output = self.model_output(x_t, t, **cond)
        return training_losses(s, output.float(), x0, x_t, noise, t)["loss"]

    def forward(self, x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        """D(x; σ) = x − σ·ε̂(x/√(1 + σ²), t(σ)): the x_0 estimate for EDM's samplers."""
        s = self.schedule
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        t = sigma_to_timestep(s, sigma)
        sig = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        out = self.inner(x / (1 + sig**2).sqrt(), sigma, timestep=t, **cond)
        return x - sig * out[:, : x.shape[1]]


# ----------------------------------------------------------------------------------------------
# Sampling: classifier-free guidance as DiT applies it, ancestral steps, respaced
# ----------------------------------------------------------------------------------------------


def guided_output(
    denoiser: DDPMDenoiser,
    schedule: DDPMSchedule,
    x_t: torch.Tensor,
    t: torch.Tensor,
    class_cond: torch.Tensor | None,
    cfg_scale: float,
    **cond,
) -> torch.Tensor:
    """The network's output under DiT's ``forward_with_cfg``: one batched pass on (x_t, class)
    and (x_t, dropped class); the first :data:`CFG_CHANNELS` channels become ε̂_u + w·(ε̂_c −
    ε̂_u), the rest (the variance values) are the conditional pass's. w = 1: the plain
    conditional output (one pass)."""
    if class_cond is not None:
        cond["class_cond"] = class_cond
    if cfg_scale == 1 or class_cond is None:
        return denoiser.model_output(x_t, t, schedule, **cond)
    both = {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) else v for k, v in cond.items()}
    both["class_cond"] = torch.cat([class_cond, torch.full_like(class_cond, denoiser.num_classes)])
    out_c, out_u = denoiser.model_output(
        torch.cat([x_t, x_t]), torch.cat([t, t]), schedule, **both
    ).chunk(2)
    k = CFG_CHANNELS
    eps = out_u[:, :k] + cfg_scale * (out_c[:, :k] - out_u[:, :k])
    return torch.cat([eps, out_c[:, k:]], dim=1)


def p_sample(
    s: DDPMSchedule,
    output: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    *,
    clip_denoised: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step x_t → x_{t−1} = μ_θ + exp(½ log Σ_θ)·z, no noise where t = 0 (DDPM
    Algorithm 2 with IDDPM's Σ_θ). Returns (x_{t−1}, x̂_0)."""
    p = p_mean_variance(s, output, x_t, t, clip_denoised=clip_denoised)
    nonzero = (t != 0).float().reshape(-1, *([1] * (x_t.ndim - 1)))
    return p["mean"] + nonzero * torch.exp(0.5 * p["log_variance"]) * noise, p["pred_x0"]


@torch.no_grad()
def sample(
    denoiser: DDPMDenoiser,
    noise: torch.Tensor,
    class_cond: torch.Tensor | None = None,
    *,
    steps: int | str = SAMPLING_STEPS,
    cfg_scale: float = 1.0,
    generator: torch.Generator | int | None = None,
    clip_denoised: bool = False,
    callback: Callable[[dict], None] | None = None,
    **cond,
) -> torch.Tensor:
    """Samples x_0 from x_T = ``noise`` (N(0, I), shape (B, C, H, W)) with DiT's ancestral
    sampler on the process respaced to ``steps`` (DiT: ``"250"``; any
    :func:`space_timesteps` spec), classifier-free guidance ``cfg_scale`` as DiT applies it
    (:func:`guided_output`; the dropped class is ``denoiser.num_classes``). ``generator`` (or an
    int seed) drives the per-step noise. ``callback({"i", "t", "x", "pred_x0"})`` after each
    step. Extra keyword arguments are conditioning (e.g. ``aug_cond``)."""
    if not isinstance(noise, torch.Tensor) or noise.ndim < 2:
        raise ValueError(f"noise must be a tensor (B, C, …); got {getattr(noise, 'shape', noise)}")
    if cfg_scale != 1 and class_cond is None:
        raise ValueError("classifier-free guidance (cfg_scale != 1) needs class_cond")
    if class_cond is not None:
        class_cond = torch.as_tensor(class_cond, device=noise.device)
        if class_cond.shape != (noise.shape[0],):
            raise ValueError(
                f"class_cond must have shape ({noise.shape[0]},); got {tuple(class_cond.shape)}"
            )
        if denoiser.num_classes is None:
            raise ValueError("class_cond given but the denoiser's network has no num_classes")
        check_class_labels(class_cond, denoiser.num_classes)
    if isinstance(generator, int):
        generator = torch.Generator(device=noise.device).manual_seed(generator)
    s = denoiser.schedule.respaced(steps)
    x = noise
    for i in reversed(range(s.num_timesteps)):
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        output = guided_output(denoiser, s, x, t, class_cond, cfg_scale, **cond).float()
        z = torch.randn(x.shape, generator=generator, device=x.device)
        x, x0 = p_sample(s, output, x, t, z, clip_denoised=clip_denoised)
        if callback is not None:
            callback({"i": i, "t": int(s.timestep_map[i]), "x": x, "pred_x0": x0})
    return x
