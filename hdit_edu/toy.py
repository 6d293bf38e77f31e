"""The toy problem: a 32×32 data set made by code, and a classifier that measures samples of it.

The paper trains on ImageNet and FFHQ; a laptop cannot. The toy set stands in for them in the
``cpu`` profile (:mod:`hdit_edu.profiles`), the ablation chain at toy scale
(:mod:`hdit_edu.ablation`) and the shipped model (``data/checkpoints/toy-hdit``):

* :class:`ToyDataset` — eight classes (:data:`TOY_CLASSES`) of procedurally drawn, mostly
  symmetric objects (a face, a ring, a plus, an X, a triangle, a diamond, a pair and a quad of
  discs) with random colours, gradient backgrounds, positions, sizes and tilts. It is made by
  code from a seed in about a second (no download, nothing committed). A face and a quad of
  discs are made of the same local parts (discs); only their global arrangement tells them
  apart, so a model must relate distant pixels to draw them right. See ``data/README.md``.
  :func:`make_toy_folder` writes it as PNG files (``hdit-edu data make-toy``), :func:`toy_grid`
  draws the preview (``hdit-edu data preview``).
* :class:`ToyClassifier` — a small CNN trained on the toy set (:func:`train_toy_classifier`,
  ``hdit-edu classifier train``) and shipped in ``data/toy_classifier/``. Its penultimate
  layer is the offline FID feature space of :mod:`hdit_edu.evaluation`
  (:class:`ToyFeatureExtractor`; Inception's weights are a download, and the toy set's 32²
  cartoons are far from ImageNet), and its predictions give the "class accuracy of samples" of
  a class-conditional model (:func:`class_accuracy`).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from .data import ResumableSampler, check_choice, check_resolution, step_generator, to_model_range

# --------------------------------------------------------------------------------------------
# The toy data set: eight classes of procedurally drawn objects
# --------------------------------------------------------------------------------------------

TOY_CLASSES = ("face", "ring", "plus", "cross", "triangle", "diamond", "pair", "quad")
SPLITS = ("train", "test")
TOY_SIZES = {"train": 16384, "test": 2048}


def _disc(x, y, cx, cy, r):
    """Signed distance to a disc of radius r centred at (cx, cy) (negative inside)."""
    return np.hypot(x - cx, y - cy) - r


def _box(x, y, half_w, half_h):
    """Signed distance to an axis-aligned box with half sizes (half_w, half_h)."""
    qx, qy = np.abs(x) - half_w, np.abs(y) - half_h
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _plus(x, y):
    return np.minimum(_box(x, y, 0.95, 0.24), _box(x, y, 0.24, 0.95))


def _toy_shapes(x: np.ndarray, y: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances (object frame, object ≈ [-1, 1]², y down) of the body drawn in the
    foreground colour and of the details drawn on top in the detail colour (inf = none)."""
    none = np.full_like(x, np.inf)
    name = TOY_CLASSES[label]
    if name == "face":  # a head, two symmetric eyes and a smile
        eyes = np.minimum(_disc(x, y, -0.36, -0.22, 0.16), _disc(x, y, 0.36, -0.22, 0.16))
        smile = np.abs(_disc(x, y, 0.0, 0.0, 0.55)) - 0.09  # a ring of radius 0.55 ...
        smile = np.maximum(smile, 0.2 - y)  # ... cut to its lower part
        return _disc(x, y, 0, 0, 0.95), np.minimum(eyes, smile)
    if name == "ring":
        return np.abs(_disc(x, y, 0, 0, 0.72)) - 0.2, none
    if name == "plus":
        return _plus(x, y), none
    if name == "cross":  # the plus turned by 45°
        c = math.sqrt(0.5)
        return _plus(c * (x + y), c * (y - x)), none
    if name == "triangle":  # apex up; max of the three edge half-planes
        edge = (0.9 * x - 0.45 * y - 0.45) / math.hypot(0.9, 0.45)
        edge_l = (-0.9 * x - 0.45 * y - 0.45) / math.hypot(0.9, 0.45)
        return np.maximum(np.maximum(edge, edge_l), y - 0.8), none
    if name == "diamond":
        return (np.abs(x) + np.abs(y) - 1.0) / math.sqrt(2), none
    if name == "pair":
        return np.minimum(_disc(x, y, -0.55, 0, 0.38), _disc(x, y, 0.55, 0, 0.38)), none
    if name == "quad":
        d = [_disc(x, y, sx * 0.52, sy * 0.52, 0.32) for sx in (-1, 1) for sy in (-1, 1)]
        return functools.reduce(np.minimum, d), none
    raise ValueError(f"unknown toy class index {label}; allowed: 0..{len(TOY_CLASSES) - 1}")


def _contrasting_colours(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Foreground, detail and two background colours (n, 3) in [0, 1]: the foreground is
    light on a dark background or dark on a light one; details contrast with the foreground."""
    light = rng.random(n) < 0.5
    bright = rng.uniform(0.55, 1.0, (4, n, 3))
    dark = rng.uniform(0.0, 0.4, (4, n, 3))
    fg = np.where(light[:, None], bright[0], dark[0])
    detail = np.where(light[:, None], dark[1], bright[1])
    bg0 = np.where(light[:, None], dark[2], bright[2])
    bg1 = np.where(light[:, None], dark[3], bright[3])
    return fg, detail, bg0, bg1


def render_toy_images(
    labels: np.ndarray,
    resolution: int | tuple[int, int],
    rng: np.random.Generator,
    paint: Callable | None = None,
) -> np.ndarray:
    """Draw one toy image per label: uint8 (N, H, W, 3) at ``resolution`` = n (n × n) or (H, W).

    Per image: a centre jitter of ±0.15, a size of 0.5–0.75 (half extent, in units of half
    the image's shorter side), a tilt of ±0.3 rad, random colours and a linear background
    gradient in a random direction. Edges are antialiased from the signed distance d (in
    pixels): coverage = clip(0.5 − d, 0, 1). All random numbers are drawn before any resolution
    enters, so the same seed draws the same scenes at 32² and 64² (and at 32×48, with more
    background to the sides).

    ``paint(image, body, x, y, idx, pixels_per_unit) → image``, if given, changes each group's
    float image (n, H, W, 3) after the body is drawn and before the details: ``body`` is the
    body's signed distance and ``x``, ``y`` the object-frame coordinates (n, H, W), ``idx`` the
    images' indices, ``pixels_per_unit`` (n, 1, 1) the pixels per object unit
    (:mod:`hdit_edu.toy_detail` draws its textures so).
    """
    height, width = check_resolution(resolution)
    n = len(labels)
    cx, cy = rng.uniform(-0.15, 0.15, (2, n))
    size = rng.uniform(0.5, 0.75, n)
    tilt = rng.uniform(-0.3, 0.3, n)
    grad_angle = rng.uniform(0, 2 * np.pi, n)
    fg, detail, bg0, bg1 = _contrasting_colours(rng, n)
    f32 = lambda a: a.astype(np.float32)  # float32 halves the time; uint8 output hides the rest
    cx, cy, size, tilt, grad_angle = map(f32, (cx, cy, size, tilt, grad_angle))
    fg, detail, bg0, bg1 = map(f32, (fg, detail, bg0, bg1))

    # Pixel centres; the shorter side spans [-1, 1], the longer one as far as it reaches.
    short = min(height, width)
    rows = f32((np.arange(height) + 0.5) / short * 2 - height / short)
    cols = f32((np.arange(width) + 0.5) / short * 2 - width / short)
    v, u = np.meshgrid(rows, cols, indexing="ij")  # v: rows (down), u: columns (right)
    corner = 2 * math.sqrt((height / short) ** 2 + (width / short) ** 2)  # gradient span
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        du = u[None] - cx[idx, None, None]
        dv = v[None] - cy[idx, None, None]
        cos, sin = np.cos(tilt[idx])[:, None, None], np.sin(tilt[idx])[:, None, None]
        s = size[idx, None, None]
        x, y = (cos * du + sin * dv) / s, (-sin * du + cos * dv) / s  # into the object frame
        body, details = _toy_shapes(x, y, int(label))
        pixels_per_unit = s * short / 2
        cover_body = np.clip(0.5 - body * pixels_per_unit, 0, 1)[..., None]
        cover_detail = np.clip(0.5 - details * pixels_per_unit, 0, 1)[..., None]
        ga = grad_angle[idx, None, None]
        t = ((np.cos(ga) * u + np.sin(ga) * v) / corner + 0.5)[..., None]  # 0..1
        image = (1 - t) * bg0[idx, None, None] + t * bg1[idx, None, None]
        image = image + cover_body * (fg[idx, None, None] - image)
        if paint is not None:
            image = paint(image, body, x, y, idx, pixels_per_unit)
        image = image + cover_detail * (detail[idx, None, None] - image)
        out[idx] = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return out


@functools.lru_cache(maxsize=4)
def _toy_arrays(
    split: str, resolution: tuple[int, int], size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    labels = rng.permutation(np.arange(size) % len(TOY_CLASSES))  # exactly balanced
    images = render_toy_images(labels, resolution, rng)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


class ToyDataset(torch.utils.data.Dataset):
    """The shipped toy set: ``size`` images of :data:`TOY_CLASSES` (8 classes, balanced),
    deterministic from ``seed``; ``split="train"`` (default 16384 images) and ``"test"``
    (default 2048) are drawn from different random streams, at ``resolution`` = n (n × n) or
    (H, W). Made in memory in about a second (32²) and cached per process; nothing is written
    to disk.

    ``dataset[i]`` → ``(image, class)`` like :class:`ImageFolderDataset`; :meth:`batch` gathers
    many at once. ``.images`` holds the uint8 pixels (N, H, W, 3), ``.labels`` the classes.
    """

    classes = TOY_CLASSES

    def __init__(
        self,
        split: str = "train",
        resolution: int | tuple[int, int] = 32,
        size: int | None = None,
        seed: int = 0,
    ):
        check_choice("split", split, SPLITS)
        height_width = check_resolution(resolution)
        size = TOY_SIZES[split] if size is None else size
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        self.split, self.resolution, self.seed = split, resolution, seed
        self.images, self.labels = self._arrays(split, height_width, size, seed)

    _arrays = staticmethod(_toy_arrays)  # (split, (H, W), size, seed) → (images, labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_model_range(self.images[index]).permute(2, 0, 1), int(self.labels[index])

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) float32 in [-1, 1] and classes LongTensor (B,)."""
        indices = np.asarray(indices, dtype=np.int64)
        images = to_model_range(self.images[indices]).permute(0, 3, 1, 2).contiguous()
        return images, torch.from_numpy(self.labels[indices].astype(np.int64))


def make_toy_folder(
    path: str | Path, n: int, resolution: int = 32, seed: int = 0, split: str = "test"
) -> Path:
    """Write ``n`` toy images as PNGs into ``path/<class name>/<index>.png`` (the ImageNet
    layout, readable by :class:`ImageFolderDataset` and clean-fid). Returns ``path``."""
    path = Path(path)
    dataset = ToyDataset(split, resolution, size=n, seed=seed)
    for name in dataset.classes:
        (path / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = dataset.classes[dataset.labels[i]]
        Image.fromarray(dataset.images[i], mode="RGB").save(path / name / f"{i:06d}.png")
    return path


def toy_grid(per_class: int = 8, resolution: int = 32, seed: int = 0, scale: int = 2) -> np.ndarray:
    """A uint8 preview grid (rows = the classes, ``per_class`` test images each), each pixel
    repeated ``scale`` times: what ``data/toy_preview.png`` shows."""
    ds = ToyDataset("test", resolution, size=per_class * len(TOY_CLASSES) * 4, seed=seed)
    rows = []
    for label in range(len(TOY_CLASSES)):
        picks = np.flatnonzero(ds.labels == label)[:per_class]
        rows.append(np.concatenate(list(ds.images[picks]), axis=1))
    grid = np.concatenate(rows, axis=0)
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)


TOY_CLASSIFIER_DIR = Path(__file__).resolve().parent.parent / "data" / "toy_classifier"


class MissingWeightsError(RuntimeError):
    """A feature extractor's weights or reference statistics are not on this machine and
    could not be downloaded. The message says what is missing, where it must go, and how
    (raised here for the toy classifier, by :mod:`hdit_edu.evaluation` for Inception)."""


# --------------------------------------------------------------------------------------------
# The toy-set classifier (domain feature extractor)
# --------------------------------------------------------------------------------------------


class ToyClassifier(nn.Module):
    """A small CNN for the toy set: three conv stages (each conv 3×3 + GELU + 2×2 max-pool,
    32² → 16² → 8² → 4²), a linear layer to ``feature_dim`` features (+ GELU) — the FID
    feature space — and a linear classifier. Inputs are (B, 3, H, W) in [-1, 1] at
    ``resolution`` (other sizes are resized, antialiased)."""

    def __init__(
        self,
        num_classes: int = 8,
        widths: Sequence[int] = (32, 64, 64),
        feature_dim: int = 128,
        resolution: int = 32,
    ):
        super().__init__()
        if resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8, got {resolution!r}")
        self.config = dict(
            num_classes=num_classes,
            widths=list(widths),
            feature_dim=feature_dim,
            resolution=resolution,
        )
        layers, channels = [], 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2)]
            channels = width
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        side = resolution // 2 ** len(widths)
        self.embed = nn.Sequential(nn.Linear(channels * side * side, feature_dim), nn.GELU())
        self.head = nn.Linear(feature_dim, num_classes)
        self.resolution = resolution
        # Per-feature mean and std over the training set, set after training: features()
        # returns standardised features, so FID/KID numbers are on a unit scale (KID's cubic
        # kernel (xᵀy/d + 1)³ assumes features of order one, as Inception's are).
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))

    def _fit(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
        if images.shape[-2:] != (self.resolution, self.resolution):
            size = (self.resolution, self.resolution)
            images = F.interpolate(
                images, size=size, mode="bilinear", antialias=True, align_corners=False
            )
        return images

    def raw_features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, feature_dim) of images in [-1, 1] (the head's input)."""
        return self.embed(self.trunk(self._fit(images)))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The FID feature space: penultimate activations standardised with the training
        set's per-feature mean and std, (B, feature_dim)."""
        return (self.raw_features(images) - self.feature_mean) / self.feature_std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes) of images in [-1, 1]."""
        return self.head(self.raw_features(images))


def load_toy_classifier(path: str | Path | None = None, device=None) -> ToyClassifier:
    """The shipped (or a given) toy classifier, in eval mode, frozen. ``path``: a folder with
    ``model.safetensors`` and ``config.json`` (default ``data/toy_classifier``)."""
    folder = Path(path) if path is not None else TOY_CLASSIFIER_DIR
    weights, config = folder / "model.safetensors", folder / "config.json"
    if not weights.is_file() or not config.is_file():
        raise MissingWeightsError(
            f"toy classifier not found: need {str(weights)!r} and {str(config)!r}; "
            "make them with `hdit-edu classifier train`"
        )
    model = ToyClassifier(**json.loads(config.read_text())["model"])
    model.load_state_dict(load_file(weights))
    return model.to(device or "cpu").eval().requires_grad_(False)


def _robustness_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The classifier's training augmentation, so generated samples with slight blur or
    noise still classify: x-flip (every toy class is mirror-symmetric in distribution) with
    probability ½, and, for half of the images, Gaussian noise of std U(0, 0.2)."""
    b = len(images)
    flip = torch.rand(b, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(3), images)
    noisy = (torch.rand(b, generator=generator) < 0.5).float()
    std = noisy * torch.rand(b, generator=generator) * 0.2
    return images + std[:, None, None, None] * torch.randn(images.shape, generator=generator)


@torch.no_grad()
def _accuracy(
    model: ToyClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512
) -> float:
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += (
            (model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum().item()
        )
    return correct / len(images)


def train_toy_classifier(
    out_dir: str | Path | None = None,
    *,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    resolution: int = 32,
    train_size: int | None = None,
    test_size: int | None = None,
    log: Callable[[str], None] | None = print,
    dataset: type[ToyDataset] | None = None,
) -> tuple[ToyClassifier, dict]:
    """Train :class:`ToyClassifier` on the toy train split (deterministic from ``seed`` on
    CPU: seeded init, :class:`ResumableSampler` order, per-step generators; ``train_size``
    and ``test_size`` limit the images, for quick checks), test it on the toy test split, store the feature
    statistics, and, if ``out_dir`` is given, write ``model.safetensors`` and ``config.json``
    (model config, seed, settings, per-epoch log, accuracy) there. Adam with a cosine-decayed
    learning rate; cross-entropy. ``dataset``: the data set class (default :class:`ToyDataset`;
    :class:`hdit_edu.toy_detail.ToyDetailDataset` for issue 30's per-resolution evaluation
    classifier)."""
    torch.manual_seed(seed)
    dataset = dataset or ToyDataset
    train = dataset("train", resolution, size=train_size)
    test = dataset("test", resolution, size=test_size)
    model = ToyClassifier(num_classes=train.num_classes, resolution=resolution)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = len(train) // batch_size
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + np.cos(np.pi * s / total))
    )
    sampler = ResumableSampler(len(train), seed=seed)
    test_images, test_labels = test.batch(np.arange(len(test)))
    history, start = [], time.time()
    for epoch in range(epochs):
        model.train()
        losses = []
        for step in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch):
            images, labels = train.batch(sampler.batch_indices(step, batch_size))
            images = _robustness_augment(images, step_generator(seed, step))
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        model.eval()
        entry = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * steps_per_epoch,
            "train_loss": float(np.mean(losses)),
            "test_accuracy": _accuracy(model, test_images, test_labels),
            "seconds": round(time.time() - start, 1),
        }
        history.append(entry)
        if log:
            log(json.dumps(entry))
    model.requires_grad_(False)
    set_feature_statistics(model, train)
    record = {
        "model": model.config,
        "classes": list(train.classes),
        "features": "penultimate layer (128-D, after GELU), standardised with the train set's "
        "per-feature mean/std (buffers feature_mean/feature_std)",
        "seed": seed,
        "training": {
            "data": f"{dataset.__name__}('train', {resolution}) ({len(train)} images, seed 0)",
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": f"Adam(lr={lr}), cosine decay to 0 over {total} steps",
            "augmentation": "x-flip p=0.5; Gaussian noise std U(0, 0.2) on half the images",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "log": history,
        "test_accuracy": history[-1]["test_accuracy"],
        "test_data": f"{dataset.__name__}('test', {resolution}) ({len(test)} images, seed 0)",
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            out_dir / "model.safetensors",
        )
        (out_dir / "config.json").write_text(json.dumps(record, indent=2) + "\n")
    return model, record


@torch.no_grad()
def set_feature_statistics(
    model: ToyClassifier, dataset: ToyDataset, batch_size: int = 1024
) -> None:
    """Store the per-feature mean and std of ``model``'s penultimate activations over
    ``dataset`` in the model (used by :meth:`ToyClassifier.features`)."""
    model.eval()
    feats = torch.cat(
        [
            model.raw_features(dataset.batch(np.arange(i, min(i + batch_size, len(dataset))))[0])
            for i in range(0, len(dataset), batch_size)
        ]
    ).double()
    model.feature_mean.copy_(feats.mean(0))
    model.feature_std.copy_(feats.std(0).clamp_min(1e-6))


@torch.no_grad()
def predict_classes(
    images: torch.Tensor, classifier: ToyClassifier | None = None, batch_size: int = 512
) -> torch.Tensor:
    """Toy classes (B,) the classifier assigns to images (B, 3, H, W) in [-1, 1]."""
    classifier = classifier or _shipped_classifier()
    device = next(classifier.parameters()).device
    out = [
        classifier(images[i : i + batch_size].to(device).float()).argmax(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)


def class_accuracy(images: torch.Tensor, labels, classifier: ToyClassifier | None = None) -> float:
    """Fraction of images (B, 3, H, W) in [-1, 1] that the toy classifier assigns to their
    intended class ``labels`` (B,): the "class accuracy of samples" of a conditional model."""
    labels = torch.as_tensor(labels).long().cpu()
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(
            f"need images (B, 3, H, W) and labels (B,), got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    return (predict_classes(images, classifier) == labels).float().mean().item()


_SHIPPED: dict[str, ToyClassifier] = {}


def _shipped_classifier() -> ToyClassifier:
    if "toy" not in _SHIPPED:
        _SHIPPED["toy"] = load_toy_classifier()
    return _SHIPPED["toy"]


class ToyFeatureExtractor(nn.Module):
    """The toy classifier as a clean-fid feature extractor: takes float (B, 3, H, W) in
    [0, 255] (clean-fid hands over 299² images; any size is resized, antialiased, to the
    classifier's resolution) and returns the penultimate features (B, 128)."""

    def __init__(self, classifier: ToyClassifier | None = None):
        super().__init__()
        self.classifier = classifier or _shipped_classifier()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.classifier.parameters()).device
        return self.classifier.features(images.to(device).float() / 127.5 - 1)


# --------------------------------------------------------------------------------------------
# Global coherence of a sample (issue 19): exactly one whole object of the right class
# --------------------------------------------------------------------------------------------

# Separate foreground parts each class draws: the discs of a pair and a quad are apart (gaps of
# 0.34 and 0.40 object units, ≥ 2 pixels at 24²); every other class is one connected body.
TOY_PART_COUNTS = (1, 1, 1, 1, 1, 1, 2, 4)
# Foreground threshold: half the smallest per-channel contrast the renderer guarantees between
# an object and its background (light ≥ 0.55 against dark ≤ 0.4: 0.15), in [0, 1] units.
FOREGROUND_THRESHOLD = 0.075
MIN_PART_FRACTION = 0.004  # parts smaller than 0.4 % of the image are specks, not parts


def foreground_mask(images: torch.Tensor, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """Foreground (B, H, W) bool of toy-like images (B, 3, H, W) in [-1, 1]: the background is
    a linear gradient, so a plane ``a + b·u + c·v`` per channel is fitted (least squares) to the
    one-pixel border ring — which no toy object reaches (centre jitter 0.15 + half extent
    ≤ 0.75 < 0.97, the ring's position) — and a pixel is foreground where some channel differs
    from the plane by more than ``threshold``."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
    x = (images.double().cpu() + 1) / 2
    b, _, h, w = x.shape
    v, u = torch.meshgrid(
        torch.linspace(-1, 1, h, dtype=torch.float64),
        torch.linspace(-1, 1, w, dtype=torch.float64),
        indexing="ij",
    )
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    design = torch.stack((torch.ones_like(u), u, v), -1)  # (H, W, 3)
    a = design[ring]  # (R, 3)
    coef = torch.linalg.lstsq(a, x[:, :, ring].reshape(b * 3, -1).T).solution  # (3, B·3)
    plane = (design.reshape(-1, 3) @ coef).T.reshape(b, 3, h, w)
    return (x - plane).abs().amax(1) > threshold


def count_parts(mask: torch.Tensor, min_fraction: float = MIN_PART_FRACTION) -> torch.Tensor:
    """Connected parts (4-neighbourhood) of each mask (B, H, W) with at least ``min_fraction``
    of the image's pixels, (B,) int. Labels spread by repeated 4-neighbour maxima until
    nothing changes (compact toy parts converge in tens of rounds)."""
    b, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, dtype=torch.long).view(1, h, w).expand(b, h, w)
    labels = torch.where(mask, ids, torch.zeros_like(ids))
    while True:
        p = F.pad(labels, (1, 1, 1, 1))
        spread = torch.stack(
            (labels, p[:, :-2, 1:-1], p[:, 2:, 1:-1], p[:, 1:-1, :-2], p[:, 1:-1, 2:])
        ).amax(0)
        spread = torch.where(mask, spread, torch.zeros_like(spread))
        if torch.equal(spread, labels):
            break
        labels = spread
    min_area = min_fraction * h * w
    counts = []
    for row in labels:
        _, sizes = row[row > 0].unique(return_counts=True)
        counts.append(int((sizes >= min_area).sum()))
    return torch.tensor(counts)


def toy_coherence(
    images: torch.Tensor, labels, classifier: ToyClassifier | None = None
) -> dict[str, torch.Tensor]:
    """Per image (B,) bool: ``coherent`` = exactly one whole object of the intended class:
    the toy classifier (on the image resized to its 32²) names ``labels``, the foreground
    (:func:`foreground_mask`) has exactly the class's number of parts (:data:`TOY_PART_COUNTS`)
    and stays off the border ring (a whole object inside the frame). Also each criterion alone
    (``classified``, ``parts``, ``inside``) and the part counts (``n_parts``)."""
    labels = torch.as_tensor(labels).long().cpu()
    mask = foreground_mask(images)
    n_parts = count_parts(mask)
    expected = torch.tensor(TOY_PART_COUNTS)[labels]
    inside = ~(
        mask[:, 0].any(1) | mask[:, -1].any(1) | mask[:, :, 0].any(1) | mask[:, :, -1].any(1)
    )
    classified = predict_classes(images, classifier) == labels
    parts = n_parts == expected
    return {
        "coherent": classified & parts & inside,
        "classified": classified,
        "parts": parts,
        "inside": inside,
        "n_parts": n_parts,
    }
