"""Sampling a trained model at another resolution than its training one (issue 19, §5.2's open
question: does axial RoPE extrapolate better than additive positions?).

Three things change when a model trained on ``H₀ × W₀`` images draws ``H × W`` ones:

1. **The token grids.** Every level's grid must exist: the side divisible by
   ``patch · 2^(levels − 1)``, every neighborhood kernel no larger than its level's grid, every
   Swin window dividing it (:func:`hdit_edu.configs.check_grids`, the one grid check).
   :func:`sampling_config` runs it and says which value fails and what is allowed.
2. **The positions** (:mod:`hdit_edu.rope`): ``"normalised"`` (the training range, today's
   behaviour: interpolation), ``"grid"`` (units of the training grid's spacing: true
   extrapolation) or ``"fixed"`` (no resizing at all: the training size only).
3. **The σ schedule's resolution shift** (§3.1, simple diffusion). The training density, the
   interpolated cosine, is shifted from ``noise_d_low`` towards the image size ``d``: at a
   larger ``d`` the same σ destroys less of the image's structure (an average over more pixels
   has less noise), so a model of that size trains at higher σ. :func:`shifted_sigmas` warps the
   sampler's schedule the same way: each σ of the (Karras) schedule is mapped to its quantile
   ``t`` under the training density at ``d₀`` and back through the density at ``d``
   (:func:`hdit_edu.diffusion.cosine_interpolated_sigma` with the config's ``noise_d_low`` and
   ``noise_d_high``), so the sampler spends its steps where a model trained at ``d`` would have
   learned — without the shift, the steps stay where the ``d₀`` model learned.

:func:`hdit_edu.sampling.generate` puts the three together (``generate(…, resolution=…,
positions=…, shift=True)``; ``hdit-edu sample --resolution H[xW] --positions … --shift``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .configs import (
    Config,
    check_grids,
    format_resolution,
    image_d,
    normalize_resolution,
)
from .diffusion import cosine_interpolated_sigma
from .rope import check_position_reading


def sampling_config(config: Config, resolution: Any = None, positions: str = "normalised"):
    """A copy of ``config`` whose model draws ``resolution`` (n or (H, W); None: the training
    size, ``config`` itself), checked: the grids exist (:func:`hdit_edu.configs.check_grids`) and the position
    reading can serve them (``"fixed"`` only at the training grid). ``ValueError`` naming the
    value and what is allowed otherwise."""
    check_position_reading(positions)
    m = config.model
    if resolution is None:
        return config
    train = normalize_resolution(m.resolution)
    size = normalize_resolution(resolution)
    where = (
        f"--resolution {format_resolution(size)} (the model trained at {format_resolution(train)})"
    )
    try:
        check_grids(m, size)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if positions == "fixed" and size != train and m.arch == "hdit":
        what = {
            "additive": "additive position table",
            "rope+additive": "additive position table and RoPE position grid",
        }.get(m.pos_emb, "RoPE position grid")
        raise ValueError(
            f"{where}: the {what} is fixed to the training grid (positions 'fixed': no "
            f"resizing); allowed: --resolution {format_resolution(train)}, or positions "
            f"'normalised' (resize bicubically / interpolate) or 'grid' (extrapolate)"
        )
    out = copy.deepcopy(config)
    out.model.resolution = size if size[0] != size[1] else size[0]
    return out


def shifted_sigmas(sigmas: torch.Tensor, config: Config, resolution: Any) -> torch.Tensor:
    """The schedule ``sigmas`` (decreasing, zeros kept) warped from the training resolution's
    σ density to ``resolution``'s (module docstring, 3.): ``σ ↦ σ_d(t(σ))`` where ``t(σ)`` is
    σ's quantile under the interpolated-cosine density at the training size ``d₀`` and
    ``σ_d`` that density's inverse CDF at ``d = max(H, W)``. Identity at ``d = d₀``; the end
    points σ_min, σ_max of the density stay fixed. Needs ``sigma_density =
    "cosine-interpolated"``."""
    dc = config.diffusion
    if dc.sigma_density != "cosine-interpolated":
        raise ValueError(
            f"the resolution shift warps the interpolated-cosine σ density; this run trains "
            f"with {dc.sigma_density!r}; allowed: sampling without the shift"
        )
    d0, d = image_d(config.model), max(normalize_resolution(resolution))
    if d == d0:
        return sigmas.clone()
    lo, hi, sd = dc.sigma_min, dc.sigma_max, dc.sigma_data
    s = sigmas.double()
    nonzero = s > 0
    # t(σ): σ's quantile under the training density, whose inverse CDF σ(t) decreases in t;
    # inverted by bisection in float64 (the density at d₀ is itself interpolated when
    # noise_d_low ≠ d₀, so there is no closed form in general). 64 halvings: exact to float64.
    kw = dict(sigma_data=sd, sigma_min=lo, sigma_max=hi)
    target = s[nonzero].clamp(lo, hi)
    t_lo, t_hi = torch.zeros_like(target), torch.ones_like(target)
    for _ in range(64):
        mid = (t_lo + t_hi) / 2
        above = cosine_interpolated_sigma(mid, d0, dc.noise_d_low, dc.noise_d_high, **kw) > target
        t_lo, t_hi = torch.where(above, mid, t_lo), torch.where(above, t_hi, mid)
    t = (t_lo + t_hi) / 2
    # at d, noise_d_high = None reads as d (unshifted at the low-noise end), as in training
    warped = cosine_interpolated_sigma(t, d, dc.noise_d_low, dc.noise_d_high, **kw)
    out = s.clone()
    out[nonzero] = warped
    return out.to(sigmas.dtype)


def position_span(config: Config, resolution: Any, positions: str) -> float:
    """The largest |position| of the outer level's tokens at ``resolution`` (for the notebook's
    picture and the tests): ``1 − 1/n`` normalised, ``(n − 1)/n₀`` in training-grid units,
    ``n`` (``n₀``) the longer side's tokens (at training)."""
    check_position_reading(positions)
    p = config.model.patch_size
    n = max(normalize_resolution(resolution)) // p
    n0 = max(normalize_resolution(config.model.resolution)) // p
    return (1 - 1 / n) * (n / n0 if positions == "grid" else 1.0)


__all__ = ["position_span", "sampling_config", "shifted_sigmas"]
