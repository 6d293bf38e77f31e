"""The diffusion objective: EDM preconditioning, the denoising loss, loss weightings and
noise-level densities (§3.1, eq. 1–5; App. B, eq. 7–9; Table 6).

Forward process (§3.1): ``x_σ = x₀ + σ·ε`` with ``ε ~ N(0, I)``. A denoiser ``D(x_σ, σ)``
predicts ``x₀`` and is trained with the weighted mean-squared error of eq. 1,

    E[ λ(σ) · ‖D(x_σ, σ) − x₀‖² ].

**EDM preconditioning** (Karras et al. 2022, eq. 4 of the paper): the network ``F`` is wrapped as

    D(x, σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ))

with ``c_skip = σ_d²/(σ² + σ_d²)``, ``c_out = σ·σ_d/√(σ² + σ_d²)``, ``c_in = 1/√(σ² + σ_d²)`` and
``c_noise = ¼·log σ`` (σ_d = σ_data = 0.5 for images in [−1, 1]). The inner network receives
σ itself and computes ``c_noise(σ)`` with :func:`c_noise` (the model imports it from here).

**The loss in preconditioned-target form.** Because ``D − x₀ = c_out·(F − T)`` with the target
``T = (x₀ − c_skip·x_σ)/c_out``, an x₀-space weight λ(σ) is the same loss as the weight
``λ(σ)·c_out(σ)²`` on ``‖F − T‖²`` (:func:`target_weight`). This is the conversion of eq. 5:
for min-SNR it reads ``min{SNR, γ}·σ²σ_d²/(σ² + σ_d²) = min{SNR, γ}·c_out²`` — the right-hand
side of eq. 5. (Eq. 5's middle expression writes the factor as ``1/c_out²``; the expression
that actually multiplies ‖F − T‖², and the one the authors' code uses, is ``c_out²``: the
``c_out⁻²`` of the paper's sentence is the one inside ``‖F − T‖² = c_out⁻²‖D − x₀‖²``.)

**Loss weightings** (:func:`loss_weight`, x₀ space, App. B):
``"snr"`` 1/σ² (eq. 7), ``"min-snr"`` min{1/σ², γ} (eq. 8, default γ = 5),
``"soft-min-snr"`` 1/(σ² + γ⁻¹) (eq. 9, default γ = 1/σ_d² = 4: the trainer's weighting, whose
target-space weight is ``c_out²/(σ² + σ_d²) = (σσ_d)²/(σ² + σ_d²)²``) and ``"karras"`` (EDM's
own λ = 1/c_out², i.e. weight 1 on the preconditioned target).

**Noise-level densities** (Table 6 "Sigma Sampling Density"): EDM's log-normal
(:func:`rand_lognormal`) and simple diffusion's *interpolated cosine* with its resolution
shift (:func:`rand_cosine_interpolated`), on the paper's σ range [1e-3, 1e3]. Both are inverse
CDFs of a uniform variate drawn *stratified* over the batch and across DDP ranks
(:func:`stratified_uniform`; §5.1 "stratified diffusion timestep sampling").

**Exact toy denoisers** (:class:`GaussianMixtureDenoiser`): for data drawn from a mixture of
isotropic Gaussians the ideal denoiser is closed form; the tests and notebook 01 use it to check
the loss and the samplers against exact answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .env import values_on_host
from .kinds import LOSS_WEIGHTINGS, SIGMA_DENSITIES

SIGMA_DATA = 0.5  # Table 6: "Data Sigma"
SIGMA_RANGE = (1e-3, 1e3)  # Table 6: "Sigma Range"
MIN_SNR_GAMMA = 5.0  # Hang et al. (2023)'s default γ; Figure 8 plots both weightings with it

Number = float | torch.Tensor


# --- EDM preconditioner (eq. 4) ----------------------------------------------------------------


def c_skip(sigma: Number, sigma_data: float = SIGMA_DATA) -> Number:
    """c_skip(σ) = σ_d² / (σ² + σ_d²): how much of the noisy input D passes through."""
    return sigma_data**2 / (sigma**2 + sigma_data**2)


def c_out(sigma: Number, sigma_data: float = SIGMA_DATA) -> Number:
    """c_out(σ) = σ·σ_d / √(σ² + σ_d²): the scale of the network's contribution to D."""
    return sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5


def c_in(sigma: Number, sigma_data: float = SIGMA_DATA) -> Number:
    """c_in(σ) = 1 / √(σ² + σ_d²): scales the noisy input to unit variance."""
    return 1 / (sigma**2 + sigma_data**2) ** 0.5


def c_noise(sigma: Number) -> Number:
    """c_noise(σ) = ¼·log σ: the noise-level input of the network (the model calls this)."""
    if isinstance(sigma, torch.Tensor):
        return sigma.log() / 4
    return math.log(sigma) / 4


# --- input checks ------------------------------------------------------------------------------


def _check_kind(kind: str, allowed: Sequence[str], what: str) -> None:
    if kind not in allowed:
        raise ValueError(f"unknown {what} {kind!r}; allowed: {', '.join(map(repr, allowed))}")


def _check_positive(sigma: Number, what: str = "sigma") -> None:
    """σ must be > 0 where 1/σ or log σ appears. A tensor's values are read only where that
    is free (:func:`hdit_edu.env.values_on_host`: no host synchronisation on an accelerator,
    where the σ come from the checked schedule of :func:`hdit_edu.sampling.sample` or from the
    training densities, which never leave [σ_min, σ_max])."""
    if isinstance(sigma, torch.Tensor):
        bad = values_on_host(sigma) and bool((sigma <= 0).any())
    else:
        bad = sigma <= 0
    if bad:
        raise ValueError(f"{what} must be > 0 here (allowed: σ in (0, ∞)); got {sigma}")


def _sigma_per_sample(sigma: Number, x: torch.Tensor) -> torch.Tensor:
    """σ as a (batch,) tensor on x's device; a Python number or 0-d tensor is broadcast.
    A tensor keeps its dtype; a number gets x's (at least float32, even for a bf16 x)."""
    if isinstance(sigma, torch.Tensor) and sigma.is_floating_point():
        sigma = sigma.to(x.device)
    else:
        sigma = torch.as_tensor(
            sigma, device=x.device, dtype=torch.promote_types(x.dtype, torch.float32)
        )
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(
            f"sigma must have shape (batch,) = ({x.shape[0]},) for x of shape {tuple(x.shape)}"
            f" (or be a scalar); got shape {tuple(sigma.shape)}"
        )
    return sigma


def _per_sample(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """(batch,) → (batch, 1, 1, …) so that it broadcasts against a tensor with ``ndim`` dims."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


# --- loss weightings (App. B, eq. 5, 7–9) ------------------------------------------------------


def default_gamma(kind: str, sigma_data: float = SIGMA_DATA) -> float | None:
    """The γ a weighting uses when none is given: min-SNR 5 (Hang et al.), soft-min-SNR
    1/σ_d² (= 4 for σ_d = 0.5, the trainer's setting and Table 5's); None for the others."""
    _check_kind(kind, LOSS_WEIGHTINGS, "loss weighting")
    if kind == "min-snr":
        return MIN_SNR_GAMMA
    if kind == "soft-min-snr":
        return 1 / sigma_data**2
    return None


def loss_weight(
    kind: str, sigma: Number, *, sigma_data: float = SIGMA_DATA, gamma: float | None = None
) -> Number:
    """The paper's x₀-space loss weight λ(σ) of eq. 1 (App. B):

    - ``"snr"``           λ = 1/σ²                  (eq. 7)
    - ``"min-snr"``       λ = min{1/σ², γ}          (eq. 8; γ defaults to 5)
    - ``"soft-min-snr"``  λ = 1/(σ² + γ⁻¹)          (eq. 9; γ defaults to 1/σ_d² = 4)
    - ``"karras"``        λ = (σ² + σ_d²)/(σ·σ_d)² = 1/c_out²   (EDM: unit weight on F's target)

    ``gamma`` is only meaningful for the two min-SNR kinds (a ValueError otherwise).
    """
    _check_kind(kind, LOSS_WEIGHTINGS, "loss weighting")
    _check_positive(sigma)
    if gamma is None:
        gamma = default_gamma(kind, sigma_data)
    elif kind not in ("min-snr", "soft-min-snr"):
        raise ValueError(f"gamma is used only by 'min-snr' and 'soft-min-snr', not {kind!r}")
    elif gamma <= 0:
        raise ValueError(f"gamma must be > 0 (allowed: (0, ∞)); got {gamma}")
    snr = 1 / sigma**2  # SNR(σ) = 1/σ² (the data scaled to [-1, 1])
    if kind == "snr":
        return snr
    if kind == "min-snr":
        return snr.clamp(max=gamma) if isinstance(snr, torch.Tensor) else min(snr, gamma)
    if kind == "soft-min-snr":
        return 1 / (sigma**2 + 1 / gamma)
    return 1 / c_out(sigma, sigma_data) ** 2  # "karras"


def target_weight(
    kind: str, sigma: Number, *, sigma_data: float = SIGMA_DATA, gamma: float | None = None
) -> Number:
    """The weight on ‖F − T‖² (preconditioned target) equal to x₀-space weight λ(σ) (eq. 5):

        λ(σ)·‖D − x₀‖² = λ(σ)·c_out(σ)²·‖F − T‖²   ⇒   w(σ) = λ(σ)·c_out(σ)².

    E.g. soft-min-SNR with γ = 1/σ_d²: w = c_out²/(σ² + σ_d²) = (σ·σ_d)²/(σ² + σ_d²)².
    """
    return (
        loss_weight(kind, sigma, sigma_data=sigma_data, gamma=gamma) * c_out(sigma, sigma_data) ** 2
    )


# --- the denoiser and its loss (eq. 1, 4) ------------------------------------------------------

Weighting = str | Callable[[torch.Tensor], torch.Tensor]


class Denoiser(nn.Module):
    """Turns an inner network ``F(x, sigma, **cond)`` into the EDM denoiser D (eq. 4).

    ``inner`` receives the scaled input ``c_in(σ)·x`` and σ itself (shape (batch,)); it computes
    ``c_noise(σ)`` on its own. ``weighting``/``gamma`` are the default x₀-space loss weighting
    (:func:`loss_weight` kind, or a callable σ → λ(σ)) of :meth:`loss`.
    """

    def __init__(
        self,
        inner: nn.Module | Callable,
        sigma_data: float = SIGMA_DATA,
        weighting: Weighting = "soft-min-snr",
        gamma: float | None = None,
    ):
        super().__init__()
        if sigma_data <= 0:
            raise ValueError(f"sigma_data must be > 0 (allowed: (0, ∞)); got {sigma_data}")
        if isinstance(weighting, str):
            _check_kind(weighting, LOSS_WEIGHTINGS, "loss weighting")
        self.inner = inner
        self.sigma_data = sigma_data
        self.weighting = weighting
        self.gamma = gamma

    @property
    def num_classes(self) -> int | None:
        """The inner model's class count (index ``num_classes`` is the dropped class)."""
        for owner in (self.inner, getattr(self.inner, "config", None)):
            n = getattr(owner, "num_classes", None)
            if n is not None:
                return n
        return None

    def scalings(self, sigma: torch.Tensor, ndim: int) -> tuple[torch.Tensor, ...]:
        """(c_skip, c_out, c_in) for per-sample σ, shaped to broadcast against ``ndim`` dims."""
        return tuple(_per_sample(f(sigma, self.sigma_data), ndim) for f in (c_skip, c_out, c_in))

    def _inner(self, x_in: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        """F(c_in·x, σ). A network with extra output channels (DiT-B/4's learned-variance head,
        R1/R2) declares ``out_channels_used``: only those leading channels are F."""
        out = self.inner(x_in, sigma, **cond)
        used = getattr(self.inner, "out_channels_used", None)
        if used is not None and out.ndim == x_in.ndim and out.shape[1] > used:
            out = out[:, :used]
        if out.shape != x_in.shape:
            raise ValueError(
                f"the inner network must return a tensor shaped like its input "
                f"{tuple(x_in.shape)}; got {tuple(out.shape)} (a network with extra output "
                f"channels must set `out_channels_used`)"
            )
        return out

    def forward(self, x: torch.Tensor, sigma: Number, **cond) -> torch.Tensor:
        """D(x, σ) = c_skip·x + c_out·F(c_in·x, σ): the estimate of x₀ (eq. 4)."""
        sigma = _sigma_per_sample(sigma, x)
        _check_positive(sigma)
        skip, out, inp = self.scalings(sigma, x.ndim)
        return skip * x + out * self._inner(inp * x, sigma, cond)

    def loss(
        self,
        x0: torch.Tensor,
        noise: torch.Tensor,
        sigma: Number,
        *,
        weighting: Weighting | None = None,
        gamma: float | None = None,
        **cond,
    ) -> torch.Tensor:
        """Per-sample training loss (batch,) of eq. 1, in the preconditioned-target form:

            x_σ = x₀ + σ·ε,   T = (x₀ − c_skip·x_σ)/c_out,
            loss = λ(σ)·c_out(σ)² · mean_pixels (F(c_in·x_σ, σ) − T)²   (= λ·mean (D − x₀)²)

        ``weighting`` (default: the Denoiser's) names the x₀-space weight λ (see
        :func:`loss_weight`) or is a callable σ → λ(σ).
        """
        if x0.shape != noise.shape:
            raise ValueError(
                f"x0 and noise must have the same shape; got {tuple(x0.shape)} and "
                f"{tuple(noise.shape)}"
            )
        sigma = _sigma_per_sample(sigma, x0)
        _check_positive(sigma)
        weighting = self.weighting if weighting is None else weighting
        if isinstance(weighting, str):
            gamma = self.gamma if gamma is None else gamma
            w = target_weight(weighting, sigma, sigma_data=self.sigma_data, gamma=gamma)
        elif callable(weighting):
            w = weighting(sigma) * c_out(sigma, self.sigma_data) ** 2
        else:
            raise ValueError(
                f"weighting must be one of {LOSS_WEIGHTINGS} or a callable σ → λ(σ); "
                f"got {weighting!r}"
            )
        skip, out, inp = self.scalings(sigma, x0.ndim)
        x_noisy = x0 + _per_sample(sigma, x0.ndim) * noise
        target = (x0 - skip * x_noisy) / out
        f = self._inner(inp * x_noisy, sigma, cond)
        return (f - target).pow(2).flatten(1).mean(1) * w


# --- stratified uniform variates (§5.1) --------------------------------------------------------


def _dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """rank/world_size as given, else from torch.distributed when initialised, else (0, 1)."""
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"need world_size >= 1 and 0 <= rank < world_size; got rank={rank}, "
            f"world_size={world_size}"
        )
    return rank, world_size


def stratified_uniform(
    n: int,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``n`` uniform variates on [0, 1), stratified over the global batch of all ranks.

    The global batch of N = n·world_size draws is cut into N equal strata; sample i of this
    rank takes stratum g = i·world_size + rank and draws ``u_i = (g + U_i)/N``, U_i ~ U[0, 1).
    Together the ranks hold exactly one variate per stratum; the interleaving (as in the
    authors' k-diffusion) also leaves each rank's own batch spread evenly over [0, 1).
    ``rank``/``world_size`` default to torch.distributed's when it is initialised (else 0, 1);
    for gradient accumulation pass ``rank = rank·accum + micro_step``, ``world_size =
    world_size·accum``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    rank, world_size = _dist_rank_world(rank, world_size)
    stratum = torch.arange(n, device=device, dtype=dtype) * world_size + rank
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    return (stratum + u) / (n * world_size)


# --- sigma densities (Table 6; EDM; simple diffusion §3.1) -------------------------------------


def lognormal_sigma(
    u: torch.Tensor, mean: float = -1.2, std: float = 1.2, *, sigma_min=0.0, sigma_max=math.inf
) -> torch.Tensor:
    """Inverse CDF of EDM's log-normal density, ln σ ~ N(mean, std²), optionally truncated
    to [sigma_min, sigma_max] (u is mapped onto that interval of the normal CDF Φ):

        σ = exp(mean + std·Φ⁻¹(p)),   p = Φ(z_min) + u·(Φ(z_max) − Φ(z_min)),  z = (ln σ − mean)/std.
    """

    def normal_cdf(sigma: float) -> float:
        return 0.5 * (1 + math.erf((math.log(sigma) - mean) / (std * math.sqrt(2))))

    lo = normal_cdf(sigma_min) if sigma_min > 0 else 0.0
    hi = normal_cdf(sigma_max) if sigma_max < math.inf else 1.0
    p = (lo + u.double() * (hi - lo)).clamp(1e-12, 1 - 1e-12)  # keep Φ⁻¹ finite
    log_sigma = mean + std * math.sqrt(2) * torch.erfinv(2 * p - 1)  # Φ⁻¹(p) = √2·erfinv(2p − 1)
    return log_sigma.exp().clamp(sigma_min, sigma_max).to(u.dtype)


def cosine_interpolated_sigma(
    u: torch.Tensor,
    image_d: int,
    noise_d_low: int = 32,
    noise_d_high: int | None = None,
    *,
    sigma_data: float = SIGMA_DATA,
    sigma_min: float = SIGMA_RANGE[0],
    sigma_max: float = SIGMA_RANGE[1],
) -> torch.Tensor:
    """Inverse CDF of simple diffusion's interpolated cosine density (Hoogeboom et al. 2023;
    §3.1 "noise schedules shifted and interpolated from a reference low resolution").

    The cosine schedule has logSNR(t) = −2·log tan(θ(t)) with SNR = σ_d²/σ², i.e.
    σ(t) = σ_d·tan θ(t), θ moving linearly in t ∈ [0, 1] so that σ(0) = σ_max, σ(1) = σ_min.
    *Shifting* it from a reference resolution ``noise_d`` to the image resolution ``image_d``
    lowers logSNR by 2·log(image_d/noise_d) — σ is multiplied by image_d/noise_d — with θ's
    end points chosen so that the shifted σ still spans exactly [σ_min, σ_max]:

        σ_d(t) = σ_d·(image_d/noise_d)·tan θ_d(t),
        θ_d(t) = atan(r·σ_max/σ_d) + t·(atan(r·σ_min/σ_d) − atan(r·σ_max/σ_d)),  r = noise_d/image_d.

    *Interpolating* between the schedule shifted from ``noise_d_low`` (used at t = 0, the high
    noise end) and from ``noise_d_high`` (default ``image_d``, i.e. unshifted; used at t = 1)
    linearly in logSNR (= in log σ):  log σ(t) = (1 − t)·log σ_low(t) + t·log σ_high(t).
    """
    noise_d_high = image_d if noise_d_high is None else noise_d_high
    if min(image_d, noise_d_low, noise_d_high) <= 0:
        raise ValueError(
            f"resolutions must be > 0; got image_d={image_d}, noise_d_low={noise_d_low}, "
            f"noise_d_high={noise_d_high}"
        )
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
    t = u.double()

    def log_sigma_shifted(noise_d: int) -> torch.Tensor:
        r = noise_d / image_d
        theta_start = math.atan(r * sigma_max / sigma_data)
        theta_end = math.atan(r * sigma_min / sigma_data)
        theta = theta_start + t * (theta_end - theta_start)
        return math.log(sigma_data / r) + torch.tan(theta).log()

    log_sigma = torch.lerp(log_sigma_shifted(noise_d_low), log_sigma_shifted(noise_d_high), t)
    return log_sigma.exp().clamp(sigma_min, sigma_max).to(u.dtype)


def _draw_uniform(
    n: int,
    *,
    stratified: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The ``n`` variates u ∈ [0, 1) that the σ densities below map through their inverse CDFs:
    stratified over the global batch (:func:`stratified_uniform`, §5.1; ``rank``/``world_size``
    as there) or, with ``stratified=False``, i.i.d. U[0, 1)."""
    if stratified:
        return stratified_uniform(
            n, rank=rank, world_size=world_size, generator=generator, device=device, dtype=dtype
        )
    return torch.rand(n, generator=generator, device=device, dtype=dtype)


def rand_lognormal(
    n: int,
    mean: float = -1.2,
    std: float = 1.2,
    *,
    sigma_min: float = 0.0,
    sigma_max: float = math.inf,
    **draw,
) -> torch.Tensor:
    """``n`` σ from EDM's log-normal density (ln σ ~ N(mean, std²)); see :func:`lognormal_sigma`.

    ``**draw``: ``stratified=True``, ``rank``, ``world_size``, ``generator``, ``device``,
    ``dtype=torch.float32`` — how the uniform variates are drawn (:func:`stratified_uniform`;
    i.i.d. with ``stratified=False``)."""
    u = _draw_uniform(n, **draw)
    return lognormal_sigma(u, mean, std, sigma_min=sigma_min, sigma_max=sigma_max)


def rand_cosine_interpolated(
    n: int,
    image_d: int,
    noise_d_low: int = 32,
    noise_d_high: int | None = None,
    *,
    sigma_data: float = SIGMA_DATA,
    sigma_min: float = SIGMA_RANGE[0],
    sigma_max: float = SIGMA_RANGE[1],
    **draw,
) -> torch.Tensor:
    """``n`` σ from the interpolated cosine density; see :func:`cosine_interpolated_sigma`.

    ``**draw``: how the uniform variates are drawn, as for :func:`rand_lognormal`."""
    u = _draw_uniform(n, **draw)
    bounds = dict(sigma_data=sigma_data, sigma_min=sigma_min, sigma_max=sigma_max)
    return cosine_interpolated_sigma(u, image_d, noise_d_low, noise_d_high, **bounds)


def sample_sigmas(
    density: str,
    n: int,
    *,
    image_d: int | None = None,
    sigma_data: float = SIGMA_DATA,
    sigma_min: float = SIGMA_RANGE[0],
    sigma_max: float = SIGMA_RANGE[1],
    lognormal_mean: float = -1.2,
    lognormal_std: float = 1.2,
    noise_d_low: int = 32,
    noise_d_high: int | None = None,
    **draw,
) -> torch.Tensor:
    """``n`` training noise levels from the density ``density`` (Table 6 "Sigma Sampling
    Density": ``"lognormal"`` or ``"cosine-interpolated"``), confined to [sigma_min,
    sigma_max] (the paper's [1e-3, 1e3]). The keyword values are those of a
    :class:`~hdit_edu.configs.DiffusionConfig` (the same names and defaults;
    :func:`hdit_edu.training.training_sigmas` passes a config's); ``image_d``, the training
    resolution, is needed by the interpolated cosine density.

    ``**draw``: how the uniform variates are drawn, as for :func:`rand_lognormal`."""
    _check_kind(density, SIGMA_DENSITIES, "sigma density")
    common = dict(sigma_min=sigma_min, sigma_max=sigma_max, **draw)
    if density == "lognormal":
        return rand_lognormal(n, lognormal_mean, lognormal_std, **common)
    if image_d is None:
        raise ValueError(
            "the 'cosine-interpolated' density needs image_d (the training resolution): pass "
            "image_d=..."
        )
    return rand_cosine_interpolated(
        n, image_d, noise_d_low, noise_d_high, sigma_data=sigma_data, **common
    )


# --- exact denoisers of toy distributions ------------------------------------------------------


class GaussianMixtureDenoiser(nn.Module):
    """The exact (Bayes-optimal) denoiser E[x₀ | x_σ] for data from a mixture of isotropic
    Gaussians Σ_k π_k·N(μ_k, s_k² I) — the target a perfect D would learn.

    Per component the posterior mean is ``μ_k + s_k²/(s_k² + σ²)·(x − μ_k)``; the mixture
    weights them by the responsibilities r_k(x) ∝ π_k·N(x; μ_k, (s_k² + σ²) I):

        D(x, σ) = Σ_k r_k(x, σ)·[μ_k + s_k²/(s_k² + σ²)·(x − μ_k)].

    ``means`` (K, *shape) — one data point per component (any shape, e.g. (K, 2) for 2-D toy
    data); ``stds`` (K,); ``weights`` (K,) (normalised here; default uniform). With
    ``class_cond`` (batch,) given, sample b uses only component ``class_cond[b]`` (the class-
    conditional denoiser) and index ``K`` (the "dropped" class) means the whole mixture.
    """

    def __init__(self, means, stds, weights=None):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1)
        k = means.shape[0]
        weights = torch.ones(k) if weights is None else torch.as_tensor(weights)
        weights = weights.to(torch.float64).reshape(-1)
        if stds.shape != (k,) or weights.shape != (k,):
            raise ValueError(
                f"means (K, ...), stds (K,) and weights (K,) must agree on K; got means "
                f"{tuple(means.shape)}, stds {tuple(stds.shape)}, weights {tuple(weights.shape)}"
            )
        if (stds <= 0).any() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("stds must be > 0 and weights >= 0 with a positive sum")
        self.register_buffer("means", means)
        self.register_buffer("stds", stds)
        self.register_buffer("weights", weights / weights.sum())
        self.num_classes = k

    def forward(self, x: torch.Tensor, sigma: Number, class_cond=None) -> torch.Tensor:
        if x.shape[1:] != self.means.shape[1:]:
            raise ValueError(
                f"x must have shape (batch, {', '.join(map(str, self.means.shape[1:]))}); "
                f"got {tuple(x.shape)}"
            )
        sigma = _sigma_per_sample(sigma, x).double()
        _check_positive(sigma)
        xd = x.double().flatten(1)  # (B, n)
        mu = self.means.flatten(1)  # (K, n)
        var = self.stds**2 + sigma[:, None] ** 2  # (B, K): variance of x_σ per component
        dist2 = torch.cdist(xd, mu) ** 2  # (B, K)
        n = xd.shape[1]
        log_r = self.weights.log() - 0.5 * dist2 / var - 0.5 * n * var.log()
        if class_cond is not None:
            k = self.num_classes
            class_cond = torch.as_tensor(class_cond, device=x.device).reshape(-1)
            if class_cond.shape != (len(x),) or (class_cond < 0).any() or (class_cond > k).any():
                raise ValueError(
                    f"class_cond must have shape ({len(x)},) with values in [0, {k}] ({k} = "
                    f"the whole mixture); got {class_cond.tolist()}"
                )
            onehot = nn.functional.one_hot(class_cond.clamp(max=k), k + 1)[:, :k].bool()
            keep = onehot | (class_cond == k)[:, None]  # dropped class: the whole mixture
            log_r = log_r.masked_fill(~keep, -math.inf)
        r = log_r.softmax(dim=1)  # (B, K) responsibilities
        shrink = self.stds**2 / var  # (B, K): s_k²/(s_k² + σ²)
        # posterior mean per component: μ_k + shrink·(x − μ_k), then the r-weighted sum
        d = (r * (1 - shrink)) @ mu + (r * shrink).sum(1, keepdim=True) * xd
        return d.reshape(x.shape).to(x.dtype)

    @torch.no_grad()
    def sample_data(self, n: int, generator: torch.Generator | None = None) -> tuple:
        """``n`` draws x₀ from the mixture and their component indices."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(
            (n,) + tuple(self.means.shape[1:]), generator=generator, dtype=torch.float64
        )
        x = self.means[comp] + _per_sample(self.stds[comp], eps.ndim) * eps
        return x.float(), comp
