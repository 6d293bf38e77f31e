"""Fine detail, measured: the radially averaged power spectrum of images, and a distance between
two sets of images on its high-frequency band (issue 30's fine-detail metric; the paper's
Fig. 1–2 claim is that the hourglass buys quality at high resolution, where the fine detail is).

Class accuracy and coherence (:mod:`hdit_edu.toy`) read the global layout; toy FID reads the
toy classifier's features at 32², where fine detail is gone. This module reads the detail:

* :func:`radial_spectrum` — per image, the mean power (over the three channels) of the
  Hann-windowed, mean-free image in radial frequency bins of width ``1/n`` cycles per pixel up to
  Nyquist (0.5), averaged over the images; ``log10`` of it is what two sets are compared on.
  The window keeps the gradient backgrounds' wrap-around edges from leaking across the band.
* :func:`band_power` — per image, the mean power per pixel above ``low`` cycles per pixel
  (Parseval: the unwindowed spectrum's energy over the band, divided by the pixel count). No
  window, so the backgrounds' wrap-around edges count too: a statistic, not the comparison.
* :func:`spectrum_distance` — the RMS difference of two sets' ``log10`` radial spectra over
  the bins in ``[low, 0.5]`` (decades); :data:`DETAIL_BAND` = 1/8 cycles per pixel and up:
  what a render four times coarser (32² for 128²) cannot carry.
* :func:`detail_floor` — the distance between two held-out halves of real images (the floor:
  what sampling noise alone gives at this n), and :func:`detail_checks` the ceiling checks: a
  render upsampled from a quarter of the resolution and uniform noise must each lie far above
  the floor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DETAIL_BAND = 1 / 8  # cycles per pixel: above the Nyquist of a render 4× coarser


def _check(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square images (B, 3, n, n), got shape {tuple(images.shape)}")
    return images.double()


def _radius(n: int) -> torch.Tensor:
    """|f| in cycles per pixel of each rfft2 bin of an n × n image, (n, n // 2 + 1)."""
    fy = torch.fft.fftfreq(n, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(n, dtype=torch.float64)[None, :]
    return torch.sqrt(fy**2 + fx**2)


def _rfft_weights(n: int) -> torch.Tensor:
    """How many full-spectrum bins each rfft2 bin stands for (1 on the real columns, else 2)."""
    w = torch.full((n // 2 + 1,), 2.0, dtype=torch.float64)
    w[0] = 1
    if n % 2 == 0:
        w[-1] = 1
    return w[None, :]


def radial_spectrum(images: torch.Tensor) -> torch.Tensor:
    """Mean power per radial bin (n // 2 bins: bin k holds k/n ≤ |f| < (k+1)/n cycles per pixel),
    (n // 2,) float64, of images (B, 3, n, n) in [-1, 1]: Hann-windowed, each channel's mean
    removed, power averaged over channels, images and the bin's frequencies."""
    x = _check(images)
    n = x.shape[-1]
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    hann = torch.hann_window(n, periodic=False, dtype=torch.float64)
    power = torch.fft.rfft2(x * (hann[:, None] * hann[None, :])).abs() ** 2 / n**2
    power = power.mean(dim=(0, 1))  # (n, n // 2 + 1)
    bins = (_radius(n) * n).long().clamp(max=n // 2)
    weights = _rfft_weights(n).expand_as(power)
    total = torch.zeros(n // 2 + 1, dtype=torch.float64).index_add_(
        0, bins.flatten(), (power * weights).flatten()
    )
    count = torch.zeros(n // 2 + 1, dtype=torch.float64).index_add_(
        0, bins.flatten(), weights.flatten()
    )
    return (total / count)[: n // 2]


def band_power(images: torch.Tensor, low: float = DETAIL_BAND) -> torch.Tensor:
    """Per image (B,): the mean power per pixel and channel of the frequencies with |f| ≥ ``low``
    cycles per pixel (no window; Parseval), images (B, 3, n, n) in [-1, 1]."""
    x = _check(images)
    n = x.shape[-1]
    power = torch.fft.rfft2(x).abs() ** 2 / n**2  # Σ over the full spectrum = Σ x² (Parseval)
    band = (_radius(n) >= low) * _rfft_weights(n)
    return (power * band).sum(dim=(-2, -1)).mean(1) / n**2


def spectrum_distance(a: torch.Tensor, b: torch.Tensor, low: float = DETAIL_BAND) -> float:
    """RMS difference (decades) of the ``log10`` radial spectra of image sets ``a`` and ``b``
    (same n) over the bins from ``low`` to Nyquist."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"image sets differ in size: {tuple(a.shape)} vs {tuple(b.shape)}")
    n = a.shape[-1]
    first = math.ceil(low * n)
    sa, sb = radial_spectrum(a)[first:], radial_spectrum(b)[first:]
    return float(torch.sqrt(((sa.log10() - sb.log10()) ** 2).mean()))


def detail_floor(real: torch.Tensor, low: float = DETAIL_BAND) -> float:
    """The floor: :func:`spectrum_distance` between the two halves of ``real`` (held-out real
    images against real ones; what n alone gives)."""
    half = len(real) // 2
    return spectrum_distance(real[:half], real[half : 2 * half], low)


def upsampled(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` resized to ``size``² (bicubic, antialiased): what a model that learned the
    layout at the low resolution and nothing finer would draw."""
    return F.interpolate(
        images.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False
    ).clamp(-1, 1)


def detail_checks(real: torch.Tensor, coarse: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Floor and ceilings of the fine-detail distance on real images: ``real`` (2m images at n²)
    and ``coarse`` (the same scenes rendered at a lower resolution). Returns ``floor`` (real
    half vs real half), ``upsampled`` (real half vs ``coarse`` upsampled to n²) and ``noise``
    (real half vs uniform noise in [-1, 1], ``seed``)."""
    half = len(real) // 2
    n = real.shape[-1]
    noise = torch.rand(real[:half].shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    test = real[half : 2 * half]
    return {
        "floor": detail_floor(real),
        "upsampled": spectrum_distance(test, upsampled(coarse[:half], n)),
        "noise": spectrum_distance(test, noise),
    }
