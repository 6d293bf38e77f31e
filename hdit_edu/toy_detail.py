"""The toy set with detail at the resolution it is rendered at (issue 30; the paper's Fig. 1–2
claim is about resolution, so the data must carry content only the higher resolution carries).

:class:`ToyDataset`'s shapes are resolution-free: at 128² they are smooth upscales of the 32²
scenes, and a model that gets the layout right at 32² gets everything right at 128². Here each
object's body carries a **stripe texture of a fixed period in pixels** (:data:`STRIPE_PERIOD_PX`
of the image it is drawn into) and a **thin outline** (:data:`OUTLINE_PX` wide), both drawn at
the target resolution. At 32² the stripes are coarse (8 periods across the image); at 128² they
are four times finer relative to the object, so a 32² render upsampled to 128² holds none of
them: a model must get the global layout (class, position, size, tilt: the same scenes as
:class:`ToyDataset` at the same seed) *and* the fine detail (stripes of the right period,
orientation and phase inside the body; an outline at the edge) right.

The stripe is a raised cosine (band-limited: all its energy is at radial frequency
1 / :data:`STRIPE_PERIOD_PX` = 0.25 cycles per pixel, below Nyquist), mixed into the body
towards the colour opposite the pixel's brightness (dark on a light body, light on a dark one)
by up to :data:`STRIPE_AMPLITUDE`. Its orientation (uniform in [0, π), in the object frame, so
it turns with the object) and phase are drawn per image from a stream of their own, so the
scenes — labels, positions, colours — are exactly :class:`ToyDataset`'s.

What makes the detail resolution-borne, checked in ``tests/test_toy_detail.py`` with
:mod:`hdit_edu.spectrum`: the radial power spectrum's excess over the plain toy set peaks at
1 / :data:`STRIPE_PERIOD_PX` cycles per pixel at 64² and 128² (×3 and ×11 the plain set's
power there, 64 images), where a 32² render upsampled to 128² holds ~10⁻⁴ of it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .toy import SPLITS, TOY_CLASSES, TOY_CLASSIFIER_DIR, TOY_SIZES, ToyDataset, render_toy_images

STRIPE_PERIOD_PX = 4.0  # stripe period in pixels of the rendered image, at every resolution
STRIPE_AMPLITUDE = 0.3  # peak mix of the body colour towards the opposite brightness
OUTLINE_PX = 1.0  # outline width in pixels, just inside the body's edge
OUTLINE_MIX = 0.8  # how far the outline goes towards the opposite brightness
DETAIL_STREAM = 7  # the stripes' random stream: default_rng([seed, split index, 7])


def _towards_opposite(image: np.ndarray) -> np.ndarray:
    """Per pixel: 0 where the pixel is light (mean over channels ≥ 0.5), 1 where it is dark."""
    return (image.mean(-1, keepdims=True) < 0.5).astype(image.dtype)


def make_painter(angle: np.ndarray, phase: np.ndarray):
    """The ``paint`` hook of :func:`hdit_edu.toy.render_toy_images` that draws image ``i``'s
    stripes at ``angle[i]`` (object frame) and ``phase[i]``, and the outline."""
    angle, phase = angle.astype(np.float32), phase.astype(np.float32)

    def paint(image, body, x, y, idx, pixels_per_unit):
        a = angle[idx, None, None]
        along = (np.cos(a) * x + np.sin(a) * y) * pixels_per_unit  # pixels across the stripes
        stripe = 0.5 * (1 + np.cos(2 * np.pi * along / STRIPE_PERIOD_PX + phase[idx, None, None]))
        d = body * pixels_per_unit  # signed distance in pixels
        inside = np.clip(0.5 - d, 0, 1)
        target = _towards_opposite(image)
        image = image + (STRIPE_AMPLITUDE * inside * stripe)[..., None] * (target - image)
        outline = np.clip(0.5 + OUTLINE_PX / 2 - np.abs(d + OUTLINE_PX / 2), 0, 1) * inside
        return image + (OUTLINE_MIX * outline)[..., None] * (target - image)

    return paint


def render_detail_images(
    labels: np.ndarray, resolution, rng: np.random.Generator, detail_rng: np.random.Generator
) -> np.ndarray:
    """uint8 (N, H, W, 3): :func:`render_toy_images`'s scenes (from ``rng``) with stripes and
    outlines; the stripes' angle and phase come from ``detail_rng`` before any resolution
    enters, so a seed draws the same stripes (in object units of pixels) at every size."""
    angle = detail_rng.uniform(0, np.pi, len(labels))
    phase = detail_rng.uniform(0, 2 * np.pi, len(labels))
    return render_toy_images(labels, resolution, rng, paint=make_painter(angle, phase))


@functools.lru_cache(maxsize=4)
def _detail_arrays(split: str, resolution: tuple[int, int], size: int, seed: int):
    rng = np.random.default_rng([seed, SPLITS.index(split)])  # ToyDataset's stream
    labels = rng.permutation(np.arange(size) % len(TOY_CLASSES))  # exactly balanced
    detail_rng = np.random.default_rng([seed, SPLITS.index(split), DETAIL_STREAM])
    images = render_detail_images(labels, resolution, rng, detail_rng)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


class ToyDetailDataset(ToyDataset):
    """:class:`ToyDataset` with stripes and outlines drawn at ``resolution`` (module docstring):
    the same splits, sizes (:data:`TOY_SIZES`), labels and scenes for the same ``seed``."""

    _arrays = staticmethod(_detail_arrays)


# The evaluation classifiers, one per resolution (issue 30: the shipped 32² classifier reads the
# detail renders at 93–99 %, below its ceiling on the plain set): ToyClassifier trained on
# ToyDetailDataset at n², written by `hdit-edu classifier train --data toy-detail --resolution N
# --out data/toy_detail_classifier/N` (toy.train_toy_classifier). A study names them by these
# repository-relative paths (records stay comparable across checkouts).
REPOSITORY = TOY_CLASSIFIER_DIR.parent.parent
DETAIL_CLASSIFIERS = "data/toy_detail_classifier"


def detail_classifier(resolution: int) -> str:
    """The repository-relative folder of the evaluation classifier for ``resolution``²."""
    return f"{DETAIL_CLASSIFIERS}/{int(resolution)}"


def classifier_folder(path: str | Path) -> Path:
    """A classifier folder as a study names it: absolute as is, else relative to the
    repository (where ``data/`` is)."""
    path = Path(path)
    return path if path.is_absolute() else REPOSITORY / path


__all__ = [
    "STRIPE_PERIOD_PX",
    "STRIPE_AMPLITUDE",
    "OUTLINE_PX",
    "TOY_SIZES",
    "ToyDetailDataset",
    "render_detail_images",
    "detail_classifier",
    "classifier_folder",
]
