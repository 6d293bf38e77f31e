"""Sampling: the Karras noise schedule, four ODE/SDE samplers and classifier-free guidance
(§5.1, App. D; Karras et al. 2022; Lu et al. 2023; Crowson 2023).

All samplers integrate the probability-flow ODE (or its SDE) of the forward process
``x_σ = x₀ + σ·ε`` from ``sigmas[0]`` down to ``sigmas[-1]`` (usually 0), calling a denoiser
``model(x, sigma)`` that returns the x₀ estimate D(x, σ) for σ of shape (batch,):

- ``"euler"``: Euler steps of dx/dσ = (x − D)/σ (EDM Alg. 2 without the correction; 1st order).
- ``"heun"``: EDM Alg. 2 — Euler step then the trapezoidal correction (2nd order), with the
  optional "churn" (S_churn, S_tmin, S_tmax, S_noise) that first raises σ by a factor (1 + γ_i).
- ``"dpmpp_2m"``: DPM-Solver++(2M), the 2nd-order multistep solver in λ = −log σ.
- ``"dpmpp_3m_sde"``: DPM-Solver++(3M) SDE (η = 1), the paper's sampler (50 steps, §5.1).

They share one signature ``fn(model, x, sigmas, *, generator=None, callback=None,
progress=False, **options)``: ``generator`` is the (seedable) noise source of the stochastic
parts, ``callback`` receives ``{"i", "sigma", "sigma_next", "sigma_hat", "x", "denoised"}`` each
step (trajectories, live previews), ``progress=True`` shows a tqdm bar.

:func:`sample` wraps them with classifier-free guidance in Saharia et al.'s form (App. D):
``D_w = D_uncond + w·(D_cond − D_uncond)``; w = 1 is the plain conditional model (no guidance),
the unconditional branch is the "dropped" class index ``num_classes``, and both branches run
in one batched forward.

:func:`generate` is the one entry point for "n images from this model at this size, with these
labels, this sampler and this guidance": Table 6's settings by default (50 steps of DPM++(3M)
SDE on the Karras schedule over the config's σ range, :func:`sampling_sigmas`), in batches,
from a seed; at another size it takes the checks, the position reading and the σ shift of
:mod:`hdit_edu.resolution`. A model trained with DiT's discrete process (``diffusion.process =
"ddpm"``, baseline R1) samples as DiT samples it: :data:`DDPM_SAMPLER` (the ancestral sampler
of :mod:`hdit_edu.ddpm`, respaced to ``steps``, default 250, with DiT's guidance);
:func:`sampler_and_steps` says which sampler and step count a call resolves to, and
:func:`samplers_for` / :func:`step_range` which samplers and step counts fit a model.
:func:`sample_labels` gives the class labels it uses and :func:`grid_columns` the grid layout
that shows one class per column.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import trange

from . import ddpm
from .configs import normalize_resolution, sampling_sigma_range
from .layers import check_class_labels
from .resolution import sampling_config, shifted_sigmas

if TYPE_CHECKING:
    from .configs import Config
    from .diffusion import Denoiser

SAMPLERS = ("euler", "heun", "dpmpp_2m", "dpmpp_3m_sde")  # EDM's: σ-space samplers
DDPM_SAMPLER = "ddpm"  # DiT's ancestral sampler, for diffusion.process = "ddpm" (R1)
DEFAULT_SAMPLING = {"edm": ("dpmpp_3m_sde", 50), "ddpm": (DDPM_SAMPLER, ddpm.SAMPLING_STEPS)}

Model = Callable[..., torch.Tensor]
Callback = Callable[[dict], None]


def karras_sigmas(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device=None
) -> torch.Tensor:
    """EDM's schedule (Karras et al. 2022, eq. 5): n noise levels then a final 0 (n + 1 values),

    σ_i = (σ_max^{1/ρ} + i/(n − 1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ,   i = 0 … n − 1.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max; got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float().to(device)


# --- shared pieces of the samplers -------------------------------------------------------------


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _denoise(model: Model, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """D(x, σ) with σ as a (batch,) tensor (at least float32, also for a low-precision x)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    return model(x, torch.full((x.shape[0],), sigma, device=x.device, dtype=dtype))


def _steps(sigmas: torch.Tensor, progress: bool):
    """(i, σ_i, σ_{i+1}) as Python floats, with an optional tqdm bar."""
    values = sigmas.tolist()
    for i in trange(len(values) - 1, disable=not progress, desc="sampling", leave=False):
        yield i, values[i], values[i + 1]


def _report(callback, i, sigma, sigma_next, sigma_hat, x, denoised) -> None:
    if callback is not None:
        callback(
            {
                "i": i,
                "sigma": sigma,
                "sigma_next": sigma_next,
                "sigma_hat": sigma_hat,
                "x": x,
                "denoised": denoised,
            }
        )


def _churn(x, sigma, n_steps, churn, s_tmin, s_tmax, s_noise, generator):
    """EDM Alg. 2 lines 4–6: γ_i = min(S_churn/N, √2 − 1) for σ_i in [S_tmin, S_tmax];
    σ̂ = σ_i·(1 + γ_i) and x̂ = x + √(σ̂² − σ_i²)·S_noise·ε. Returns (x̂, σ̂)."""
    gamma = min(churn / n_steps, 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    if gamma <= 0:
        return x, sigma
    sigma_hat = sigma * (1 + gamma)
    return x + _noise_like(x, generator) * s_noise * (sigma_hat**2 - sigma**2) ** 0.5, sigma_hat


# --- the samplers ------------------------------------------------------------------------------


def _euler_sampler(heun: bool):
    """Build the Euler (``heun=False``) or the Heun (``heun=True``) sampler: one loop, as in
    EDM Algorithm 2, where Euler is Heun without its correction step."""

    @torch.no_grad()
    def sampler(
        model: Model,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        progress: bool = False,
        churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = math.inf,
        s_noise: float = 1.0,
    ) -> torch.Tensor:
        n_steps = len(sigmas) - 1
        for i, sigma, sigma_next in _steps(sigmas, progress):
            x, sigma_hat = _churn(x, sigma, n_steps, churn, s_tmin, s_tmax, s_noise, generator)
            denoised = _denoise(model, x, sigma_hat)
            _report(callback, i, sigma, sigma_next, sigma_hat, x, denoised)
            d = (x - denoised) / sigma_hat  # dx/dσ of the probability-flow ODE
            x_euler = x + (sigma_next - sigma_hat) * d
            if not heun or sigma_next == 0:
                x = x_euler  # EDM Alg. 2 takes a plain Euler step into σ = 0
                continue
            d_next = (x_euler - _denoise(model, x_euler, sigma_next)) / sigma_next
            x = x + (sigma_next - sigma_hat) * (d + d_next) / 2  # trapezoidal rule (Alg. 2 l. 11)
        return x

    name = "sample_heun" if heun else "sample_euler"
    sampler.__name__ = sampler.__qualname__ = name
    return sampler


sample_euler = _euler_sampler(heun=False)
sample_euler.__doc__ = (
    "Euler steps x ← x + (σ_{i+1} − σ̂_i)·(x − D(x, σ̂_i))/σ̂_i (1st order; optional churn)."
)

sample_heun = _euler_sampler(heun=True)
sample_heun.__doc__ = """EDM Algorithm 2: (churn,) Euler step, then the 2nd-order Heun correction
    d' = (d_i + d_{i+1})/2 — except for the last step into σ = 0, which stays Euler."""


@torch.no_grad()
def sample_dpmpp_2m(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2023, Alg. 2) in λ = −log σ, step h = λ_{i+1} − λ_i:

        x ← (σ_{i+1}/σ_i)·x − (e^{−h} − 1)·D̃,   D̃ = (1 + 1/(2r))·D_i − 1/(2r)·D_{i−1},
        r = h_{i−1}/h  (first step and the last step into σ = 0: D̃ = D_i).

    Deterministic: ``generator`` is accepted for the shared signature and unused."""
    old_denoised, h_last = None, None
    for i, sigma, sigma_next in _steps(sigmas, progress):
        denoised = _denoise(model, x, sigma)
        _report(callback, i, sigma, sigma_next, sigma, x, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        if old_denoised is None:
            d = denoised
        else:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_next / sigma) * x - math.expm1(-h) * d
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (Crowson 2023; the paper's sampler with η = 1, 50 steps).

    With λ = −log σ, h = λ_{i+1} − λ_i and h_η = (1 + η)·h, one step is

        x ← e^{−h_η}·x + (1 − e^{−h_η})·D_i + φ₂·D₁ − φ₃·D₂ + σ_{i+1}·√(1 − e^{−2ηh})·S_noise·ε,

    φ₂ = (e^{−h_η} − 1)/h_η + 1, φ₃ = φ₂/h_η − ½, where D₁, D₂ are the first and second
    divided differences of the last three denoised values (fewer at the first two steps: the
    2nd-order term alone, then none). The last step into σ = 0 returns D.

    The noise ε is a fresh N(0, I) draw from ``generator`` per step. The authors' k-diffusion
    draws it from a Brownian tree over σ instead; for a fixed schedule both give independent
    N(0, I) increments per step, i.e. the same distribution of samples (the tree only makes
    the noise consistent across different step counts for a given seed).
    """
    denoised_1 = denoised_2 = None  # D_{i−1}, D_{i−2}
    h_1 = h_2 = None  # h_{i−1}, h_{i−2}
    for i, sigma, sigma_next in _steps(sigmas, progress):
        denoised = _denoise(model, x, sigma)
        _report(callback, i, sigma, sigma_next, sigma, x, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        h_eta = h * (1 + eta)
        x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        if h_2 is not None:  # third order: divided differences over three points
            r0, r1 = h_1 / h, h_2 / h
            d1_0 = (denoised - denoised_1) / r0
            d1_1 = (denoised_1 - denoised_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / h_eta - 0.5
            x = x + phi_2 * d1 - phi_3 * d2
        elif h_1 is not None:  # second order
            x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
        if eta:
            noise_scale = sigma_next * (-math.expm1(-2 * eta * h)) ** 0.5 * s_noise
            x = x + _noise_like(x, generator) * noise_scale
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


_SAMPLER_FNS = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
}
_SHARED_ARGS = {"model", "x", "sigmas", "generator", "callback", "progress"}


def sampler_options(sampler: str) -> tuple[str, ...]:
    """The extra keyword options a sampler accepts (e.g. ``churn`` for Heun, ``eta`` for 3M)."""
    if sampler not in _SAMPLER_FNS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    params = inspect.signature(_SAMPLER_FNS[sampler]).parameters
    return tuple(p for p in params if p not in _SHARED_ARGS)


# --- classifier-free guidance and the public entry point ---------------------------------------


def _find_num_classes(denoiser) -> int | None:
    for owner in (denoiser, getattr(denoiser, "inner", None)):
        n = getattr(owner, "num_classes", None)
        if n is not None:
            return n
    return None


def _check_sigmas(sigmas: torch.Tensor) -> None:
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(
            "sigmas must be a 1-D tensor of at least 2 noise levels (e.g. karras_sigmas(n, ...))"
        )
    if (sigmas[:-1] <= 0).any() or sigmas[-1] < 0:
        raise ValueError(
            "sigmas must be > 0 except the last one, which may be 0 (allowed: σ in (0, ∞), "
            f"last σ in [0, ∞)); got {sigmas.tolist()}"
        )
    if (sigmas[1:] > sigmas[:-1]).any():
        raise ValueError(f"sigmas must be non-increasing; got {sigmas.tolist()}")


def _guided(denoiser, class_cond, cfg_scale, num_classes, extra_cond) -> Model:
    """The model the samplers call: D(x, σ, **cond), guided when ``cfg_scale != 1``."""
    cond = dict(extra_cond)
    if class_cond is not None:
        cond["class_cond"] = class_cond
    if cfg_scale == 1:
        return lambda x, sigma: denoiser(x, sigma, **cond)

    uncond = torch.full_like(class_cond, num_classes)  # the "dropped" class
    both = {k: _twice(v) for k, v in cond.items()}
    both["class_cond"] = torch.cat([class_cond, uncond])

    def guided(x, sigma):
        d_cond, d_uncond = denoiser(_twice(x), _twice(sigma), **both).chunk(2)
        return d_uncond + cfg_scale * (d_cond - d_uncond)  # Saharia et al.: w = 1 → d_cond

    return guided


def _twice(v):
    return torch.cat([v, v]) if isinstance(v, torch.Tensor) else v


def sample(
    denoiser: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    sampler: str = "dpmpp_3m_sde",
    class_cond: torch.Tensor | None = None,
    cfg_scale: float = 1.0,
    num_classes: int | None = None,
    generator: torch.Generator | int | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    **kwargs,
) -> torch.Tensor:
    """Draw samples: integrate from ``x`` (at noise level ``sigmas[0]``, i.e. unit noise ×
    ``sigmas[0]``) along ``sigmas`` with ``sampler`` (one of :data:`SAMPLERS`).

    ``denoiser(x, sigma, **cond)`` returns the x₀ estimate (sigma shape (batch,)); ``cond`` is
    ``class_cond`` (LongTensor (batch,), when given) plus ``extra_cond`` (e.g. ``aug_cond``).
    ``cfg_scale`` w ≠ 1 applies classifier-free guidance D_u + w·(D_c − D_u), the unconditional
    branch using class index ``num_classes`` (default: ``denoiser.num_classes`` or
    ``denoiser.inner.num_classes``), cond and uncond batched into one forward.
    ``generator`` (a torch.Generator or an int seed) drives the samplers' noise. Keyword
    arguments that name a sampler option (:func:`sampler_options`: ``churn``, ``s_tmin``,
    ``s_tmax``, ``s_noise``, ``eta``) go to the sampler; all others are conditioning.
    """
    if sampler not in _SAMPLER_FNS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    all_options = {o for name in SAMPLERS for o in sampler_options(name)}
    options = {k: v for k, v in kwargs.items() if k in all_options}
    extra_cond = {k: v for k, v in kwargs.items() if k not in all_options}
    unknown = sorted(set(options) - set(sampler_options(sampler)))
    if unknown:
        raise ValueError(
            f"unknown options {unknown} for sampler {sampler!r}; allowed: "
            f"{', '.join(sampler_options(sampler)) or 'none'}"
        )
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"x must be a tensor of shape (batch, ...); got {getattr(x, 'shape', x)}")
    _check_sigmas(sigmas)
    if class_cond is not None:
        class_cond = torch.as_tensor(class_cond, device=x.device)
        if class_cond.shape != (x.shape[0],):
            raise ValueError(
                f"class_cond must have shape (batch,) = ({x.shape[0]},); got "
                f"{tuple(class_cond.shape)}"
            )
    for name, value in extra_cond.items():
        if isinstance(value, torch.Tensor) and value.shape[:1] != (x.shape[0],):
            raise ValueError(
                f"{name} must have batch size {x.shape[0]} (shape (batch, ...)); got "
                f"{tuple(value.shape)}"
            )
    if class_cond is not None and num_classes is None:
        num_classes = _find_num_classes(denoiser)
    if cfg_scale != 1:
        if class_cond is None:
            raise ValueError(
                "classifier-free guidance (cfg_scale != 1) needs class_cond; allowed without "
                "it: cfg_scale=1"
            )
        if num_classes is None:
            raise ValueError(
                "classifier-free guidance needs num_classes (the dropped class index): pass "
                "num_classes=... or use a denoiser with a num_classes attribute"
            )
    if num_classes is not None and class_cond is not None:
        check_class_labels(class_cond, num_classes)  # once, here: the model's forward need not
    if isinstance(generator, int):
        generator = torch.Generator(device=x.device).manual_seed(generator)
    sigmas = sigmas.to(x.device)
    model = _guided(denoiser, class_cond, cfg_scale, num_classes, extra_cond)
    fn = _SAMPLER_FNS[sampler]
    return fn(
        model, x, sigmas, generator=generator, callback=callback, progress=progress, **options
    )


# --- sampling a trained model: the one entry point -------------------------------------------


def sampling_sigmas(
    config: Config,
    steps: int,
    *,
    resolution: Any = None,
    shift: bool = False,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """The σ schedule :func:`generate` samples along: ``steps`` Karras steps over the config's
    sampling σ range (:func:`hdit_edu.configs.sampling_sigma_range`; ``sigma_min`` /
    ``sigma_max`` override its ends), and with ``shift`` warped to ``resolution``'s σ density
    (:func:`hdit_edu.resolution.shifted_sigmas`; None = the training size)."""
    lo, hi = sampling_sigma_range(config)
    lo, hi = sigma_min or lo, sigma_max or hi
    if not shift:
        return karras_sigmas(steps, lo, hi, device=device)
    res = config.model.resolution if resolution is None else resolution
    sigmas = shifted_sigmas(karras_sigmas(steps, lo, hi), config, res)
    return sigmas if device is None else sigmas.to(device)


def samplers_for(config: Config) -> tuple[str, ...]:
    """The samplers that fit a model of ``config``: EDM's :data:`SAMPLERS` for an EDM model,
    only :data:`DDPM_SAMPLER` for one trained with DiT's discrete process (R1)."""
    return (DDPM_SAMPLER,) if config.diffusion.process == "ddpm" else SAMPLERS


def step_range(config: Config) -> tuple[int, int | None]:
    """The step counts the sampler of a model of ``config`` takes, (fewest, most; None: no
    bound): EDM's samplers any integer ≥ 1; DDPM's ancestral sampler 2 … 1000 respaced steps
    (:func:`hdit_edu.ddpm.space_timesteps` keeps at least 2 of the 1,000)."""
    return (2, ddpm.NUM_TIMESTEPS) if config.diffusion.process == "ddpm" else (1, None)


def sampler_and_steps(config: Config, sampler: str | None, steps: int | None) -> tuple[str, int]:
    """The (sampler, steps) :func:`generate` uses for a model of ``config``: None takes the
    process's own (:data:`DEFAULT_SAMPLING`: EDM 50 steps of DPM++(3M) SDE, Table 6; DDPM 250
    respaced steps of DiT's ancestral sampler, DiT's ``sample.py``). The sampler must fit the
    process the model was trained with: an EDM model takes one of :data:`SAMPLERS`, a DDPM model
    only :data:`DDPM_SAMPLER` (its steps: the respaced step count, 2 … 1000)."""
    process = config.diffusion.process
    default_sampler, default_steps = DEFAULT_SAMPLING[process]
    sampler = default_sampler if sampler is None else sampler
    steps = default_steps if steps is None else steps
    allowed = samplers_for(config)
    if sampler not in allowed:
        why = "does not fit" if sampler in (*SAMPLERS, DDPM_SAMPLER) else "is unknown for"
        raise ValueError(
            f"sampler {sampler!r} {why} a model trained with diffusion.process="
            f"{process!r}; allowed: {', '.join(allowed)}"
        )
    low, top = step_range(config)
    ok = isinstance(steps, int) and not isinstance(steps, bool) and steps >= low
    if not ok or (top is not None and steps > top):
        span = f"{low} … {top}" if top else f"an integer ≥ {low}"
        raise ValueError(f"steps={steps!r} for sampler {sampler!r}; allowed: {span}")
    return sampler, steps


@torch.no_grad()
def generate(
    denoiser: Denoiser,
    config: Config,
    n: int,
    *,
    resolution: Any = None,
    positions: str | None = None,
    shift: bool = False,
    sampler: str | None = None,
    steps: int | None = None,
    cfg_scale: float = 1.0,
    class_cond: int | Sequence[int] | torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    sigmas: torch.Tensor | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """``n`` samples (n, C, H, W) in [-1, 1] from a trained denoiser: the one way to draw images
    from a model (``hdit-edu sample`` / ``fid``, the sampling app, the trainer's sample grids,
    the experiments). Table 6's settings by default: 50 steps of DPM++(3M) SDE on the Karras
    schedule over the config's sampling σ range (:func:`sampling_sigmas`). A DDPM model (R1)
    samples with DiT's ancestral sampler over ``steps`` respaced steps (default 250) and DiT's
    guidance (:func:`hdit_edu.ddpm.sample`); ``sampler`` / ``steps`` None take the process's
    own, and a sampler of the other process is refused (:func:`sampler_and_steps`).

    - ``resolution``: n or (H, W) to draw at another size than the training one (None), checked
      by :func:`hdit_edu.resolution.sampling_config`; ``positions``: how the model reads
      positions there (:data:`hdit_edu.rope.POSITION_READINGS`; None: as the model is set),
      restored afterwards; ``shift``: the σ schedule warped by the resolution shift.
    - ``class_cond``: one class for all, a list of n classes, or None (class-conditional
      models: classes 0, 1, 2, … in turn, :func:`sample_labels`); ``cfg_scale``: the guidance
      scale w (1: none).
    - ``seed``: the start noise ``σ_max·ε`` (DDPM: x_T = ε) draws from
      ``Generator().manual_seed(seed)``, the sampler's own noise from ``seed + 1``, batch after
      batch of ``batch_size`` images (so the draws depend on ``batch_size`` when n >
      batch_size).
    - ``sigmas``: a schedule to use instead (decreasing, ending in 0; EDM only); ``callback``:
      the sampler's per-step report (:func:`sample`, or :func:`hdit_edu.ddpm.sample`'s
      ``{"i", "t", "x", "pred_x0"}``), for each batch (trajectories, progress).
    """
    sampler, steps = sampler_and_steps(config, sampler, steps)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    device = torch.device(device) if device is not None else next(denoiser.parameters()).device
    at = config  # the config of the drawn size
    if resolution is not None or positions is not None:
        size = config.model.resolution if resolution is None else resolution
        at = sampling_config(config, size, positions or "normalised")
    if sampler == DDPM_SAMPLER:
        unused = {"shift": shift, "sigma_min": sigma_min, "sigma_max": sigma_max, "sigmas": sigmas}
        given = [k for k, v in unused.items() if v is not None and v is not False]
        if given:
            raise ValueError(
                f"{', '.join(given)}: σ-schedule options of EDM's samplers; a DDPM model "
                f"samples along its respaced discrete steps (allowed: steps)"
            )
        return _generate_ddpm(denoiser, at, n, steps, cfg_scale, class_cond, seed, batch_size,
                              device, callback)  # fmt: skip
    if sigmas is None:
        sigmas = sampling_sigmas(
            config, steps, resolution=resolution, shift=shift, sigma_min=sigma_min,
            sigma_max=sigma_max, device=device,
        )  # fmt: skip
    else:
        sigmas = sigmas.to(device)
    m = at.model
    classes = sample_labels(n, m.num_classes, class_cond)
    noise_gen = torch.Generator(device).manual_seed(seed)
    sde_gen = torch.Generator(device).manual_seed(seed + 1)
    shape = (m.in_channels, *normalize_resolution(m.resolution))  # (C, H, W)
    out = []
    with position_reading(denoiser, positions, m.arch):
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            x = torch.randn((b, *shape), generator=noise_gen, device=device) * sigmas[0]
            cc = classes[start : start + b].to(device) if classes is not None else None
            images = sample(
                denoiser,
                x,
                sigmas,
                sampler,
                class_cond=cc,
                cfg_scale=cfg_scale,
                num_classes=m.num_classes or None,
                generator=sde_gen,
                callback=callback,
            )
            out.append(images.float().cpu())
    return torch.cat(out).clamp(-1, 1)


def _generate_ddpm(denoiser, at, n, steps, cfg_scale, class_cond, seed, batch_size, device,
                   callback) -> torch.Tensor:  # fmt: skip
    """:func:`generate` for a DDPM model: per batch, x_T ~ N(0, I) from the ``seed`` stream and
    :func:`hdit_edu.ddpm.sample` (respaced to ``steps``) with its step noise from ``seed + 1``."""
    m = at.model
    classes = sample_labels(n, m.num_classes, class_cond)
    noise_gen = torch.Generator(device).manual_seed(seed)
    step_gen = torch.Generator(device).manual_seed(seed + 1)
    shape = (m.in_channels, *normalize_resolution(m.resolution))
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = torch.randn((b, *shape), generator=noise_gen, device=device)
        cc = classes[start : start + b].to(device) if classes is not None else None
        images = ddpm.sample(denoiser, x, cc, steps=steps, cfg_scale=cfg_scale,
                             generator=step_gen, callback=callback)  # fmt: skip
        out.append(images.float().cpu())
    return torch.cat(out).clamp(-1, 1)


@contextmanager
def position_reading(denoiser: Denoiser, positions: str | None, arch: str):
    """Within the block, the denoiser's model reads positions as ``positions`` (None: as it is
    set; :data:`hdit_edu.rope.POSITION_READINGS`); its reading is restored afterwards. Only
    the hourglass has readings: another model takes ``"normalised"`` (its only one) or None."""
    model = getattr(denoiser, "inner", denoiser)
    if positions is None:
        yield
        return
    if not hasattr(model, "set_position_reading"):
        if positions != "normalised":
            raise ValueError(
                f"positions {positions!r}: only the hourglass (arch 'hdit') has position "
                f"readings; allowed for {arch!r}: normalised"
            )
        yield
        return
    before = model.position_reading
    model.set_position_reading(positions)
    try:
        yield
    finally:
        model.position_reading = before


def sample_labels(n: int, num_classes: int, class_cond=None) -> torch.Tensor | None:
    """The class labels :func:`generate` uses: None for an unconditional model; ``class_cond``
    (one class, or n of them); default classes 0, 1, 2, … in turn."""
    if not num_classes:
        if class_cond is not None:
            raise ValueError("class_cond given but the model is unconditional (num_classes=0)")
        return None
    if class_cond is None:
        return torch.arange(n) % num_classes
    classes = torch.as_tensor(class_cond, dtype=torch.long).expand(n).clone()
    if (classes < 0).any() or (classes > num_classes).any():
        raise ValueError(
            f"class_cond must be in [0, {num_classes}] ({num_classes} = unconditional); "
            f"got {classes.unique().tolist()}"
        )
    return classes


def grid_columns(n: int, num_classes: int) -> int:
    """Images per row of a sample grid: one class per column when the ``n`` samples cycle
    through ``num_classes`` (≤ 16) classes evenly (:func:`sample_labels`), else a square."""
    if 0 < num_classes <= 16 and n % num_classes == 0:
        return num_classes
    return max(1, math.ceil(math.sqrt(n)))
