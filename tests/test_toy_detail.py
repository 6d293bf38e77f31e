"""The toy set with resolution-borne detail (hdit_edu.toy_detail) and the fine-detail metric
(hdit_edu.spectrum): closed forms of the spectrum, the detail's place in it, and the metric's
floor and ceilings on real renders (issue 30)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hdit_edu import spectrum, toy_detail
from hdit_edu.toy import TOY_CLASSES, ToyDataset
from hdit_edu.toy_detail import STRIPE_PERIOD_PX, ToyDetailDataset, render_detail_images


def _render(n: int, size: int = 64, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng([seed, 1])
    labels = rng.permutation(np.arange(size) % len(TOY_CLASSES))
    return render_detail_images(labels, n, rng, np.random.default_rng([seed, 1, 7]))


def _images(dataset) -> torch.Tensor:
    return dataset.batch(np.arange(len(dataset)))[0]


def test_renders_repeat_and_classes_balance():
    assert np.array_equal(_render(32), _render(32))
    assert not np.array_equal(_render(32, seed=3), _render(32, seed=4))
    ds = ToyDetailDataset("test", 32, size=80)
    assert np.bincount(ds.labels).tolist() == [10] * 8
    assert ds.images.shape == (80, 32, 32, 3) and ds.images.dtype == np.uint8


def test_same_scenes_as_the_toy_set(monkeypatch):
    """Without stripes and outline the renderer draws ToyDataset's images, pixel for pixel; with
    them, only pixels inside the bodies change (the border ring, which no object reaches, not)."""
    plain = ToyDataset("test", 64, size=32, seed=5)
    detail = ToyDetailDataset("test", 64, size=32, seed=5)
    assert np.array_equal(plain.labels, detail.labels)
    assert not np.array_equal(plain.images, detail.images)
    ring = np.ones((64, 64), bool)
    ring[1:-1, 1:-1] = False
    assert np.array_equal(plain.images[:, ring], detail.images[:, ring])
    monkeypatch.setattr(toy_detail, "STRIPE_AMPLITUDE", 0.0)
    monkeypatch.setattr(toy_detail, "OUTLINE_MIX", 0.0)
    off = toy_detail._detail_arrays.__wrapped__("test", (64, 64), 32, 5)[0]
    assert np.array_equal(off, plain.images)


def test_radial_spectrum_of_a_cosine_is_one_bin():
    """cos(2π k x / n) along x: all its power in radial bin k (window leakage ±1 bin)."""
    n, k = 64, 16
    x = torch.arange(n, dtype=torch.float64)
    img = torch.cos(2 * math.pi * k * x / n).expand(1, 3, n, n)
    s = spectrum.radial_spectrum(img)
    assert s.argmax().item() == k
    assert s[k - 1 : k + 2].sum() / s.sum() > 0.99
    assert spectrum.spectrum_distance(img, img) == 0.0


def test_band_power_is_parseval():
    """With low = 0, band power is the mean square of the pixels, exactly (Parseval)."""
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.allclose(spectrum.band_power(img, 0.0), (img.double() ** 2).mean((1, 2, 3)))
    k = 12  # a cosine of 12/32 cycles per pixel lies wholly in the band ≥ 1/8, mean square ½
    x = torch.arange(32, dtype=torch.float64)
    cos = torch.cos(2 * math.pi * k * x / 32).expand(1, 3, 32, 32)
    assert spectrum.band_power(cos).item() == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("n, min_ratio", [(64, 2.0), (128, 8.0)])
def test_detail_is_resolution_borne(n, min_ratio):
    """The stripes put power at 1/STRIPE_PERIOD_PX cycles per pixel of the image they are
    drawn into, at every resolution: detail/plain peaks there (above the coarse band), while the
    render 4× coarser (16² for 64², 32² for 128²) upsampled to n² holds under 1 % of that power
    there."""
    detail = spectrum.radial_spectrum(_images(ToyDetailDataset("test", n, size=64)))
    plain = spectrum.radial_spectrum(_images(ToyDataset("test", n, size=64)))
    coarse = _images(ToyDetailDataset("test", n // 4, size=64))
    up = spectrum.radial_spectrum(spectrum.upsampled(coarse, n))
    k = round(n / STRIPE_PERIOD_PX)
    ratio = detail / plain
    assert (ratio[n // 8 :].argmax().item() + n // 8) == pytest.approx(k, abs=1)
    band = slice(k - 1, k + 2)
    assert detail[band].sum() / plain[band].sum() > min_ratio
    assert up[band].sum() / detail[band].sum() < 0.01


def test_metric_floor_and_ceilings_on_real_images():
    """The fine-detail distance on real 128² renders: two held-out halves of 32 images differ by
    under 0.1 decades (the floor); the same scenes rendered at 32² and upsampled, and uniform
    noise, lie more than 10× the floor away."""
    real = _images(ToyDetailDataset("test", 128, size=64))
    coarse = _images(ToyDetailDataset("test", 32, size=64))
    checks = spectrum.detail_checks(real, coarse)
    assert checks["floor"] < 0.1
    assert checks["upsampled"] > 10 * checks["floor"]
    assert checks["noise"] > 10 * checks["floor"]


def test_training_and_the_evaluation_classifier_take_the_detail_set():
    """``training.dataset = "toy-detail"`` trains on it at the model's resolution, and the
    per-resolution evaluation classifier trains on it (two steps here; its real training is
    ``train_toy_classifier(resolution=n, dataset=ToyDetailDataset)``, not run in tests)."""
    from hdit_edu.presets import get_config
    from hdit_edu.toy import train_toy_classifier
    from hdit_edu.training import make_dataset

    config = get_config("toy")
    config.training.dataset = "toy-detail"
    data = make_dataset(config)
    assert isinstance(data, ToyDetailDataset) and data.images.shape[1:3] == (32, 32)
    model, record = train_toy_classifier(
        epochs=1, batch_size=32, resolution=64, train_size=64, test_size=32,
        log=None, dataset=ToyDetailDataset,
    )  # fmt: skip
    assert model.resolution == 64 and record["training"]["data"].startswith("ToyDetailDataset")
    assert record["test_data"] == "ToyDetailDataset('test', 64) (32 images, seed 0)"
