"""Evaluation: FID and KID through clean-fid (§5.1), and a toy-set classifier that works offline.

The paper reports FID (Heusel et al., 2017) on 50k samples with the ADM evaluator's Inception
network (§5.1). FID compares Gaussians fitted to features of two image sets,

    FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2}),

and KID (Bińkowski et al., 2018) is the unbiased MMD² with the kernel k(x, y) = (xᵀy / d + 1)³.
We compute both with clean-fid (Parmar et al., 2022): its ``mode="clean"`` resizes with
antialiasing, its ``mode="legacy_tensorflow"`` resizes like the TensorFlow Inception of the ADM
evaluator the paper used (same network weights in both modes).

Inception's weights are a download. Offline — and for the toy set, whose 32² cartoons are far
from ImageNet — the feature space is the penultimate layer of :class:`ToyClassifier`, a small
CNN trained on the toy set by ``python -m hdit_edu.evaluation train-classifier`` and shipped in
``data/toy_classifier/``. The same classifier gives the "class accuracy of samples" of a
class-conditional model (:func:`class_accuracy`).

Sources of images (``samples`` / ``reference`` below) can be: a folder of images (any layout;
clean-fid reads it), a generator function ``generate_fn(batch_size) -> images`` in [-1, 1]
(B, 3, H, W), a tensor of images in [-1, 1], a :class:`~hdit_edu.data.ToyDataset` or
:class:`~hdit_edu.data.ImageFolderDataset`, an array of precomputed features (N, D), or —
as a reference only — :class:`ReferenceStats`, clean-fid's precomputed Inception statistics
(e.g. ``ReferenceStats("ffhq", 1024, "trainval70k")``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import time
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import ResumableSampler, ToyDataset, _check_choice, step_generator, to_uint8

EXTRACTORS = ("toy", "inception")
MODES = ("clean", "legacy_tensorflow")
TOY_CLASSIFIER_DIR = Path(__file__).resolve().parent.parent / "data" / "toy_classifier"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + INCEPTION_FILE
)
CLEANFID_STATS_URL = "https://www.cs.cmu.edu/~clean-fid/stats"
DOWNLOAD_TIMEOUT_S = 20.0


class MissingWeightsError(RuntimeError):
    """A feature extractor's weights or reference statistics are not on this machine and
    could not be downloaded. The message says what is missing, where it must go, and how."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    from safetensors.torch import load_file

    folder = Path(path) if path is not None else TOY_CLASSIFIER_DIR
    weights, config = folder / "model.safetensors", folder / "config.json"
    if not weights.is_file() or not config.is_file():
        raise MissingWeightsError(
            f"toy classifier not found: need {str(weights)!r} and {str(config)!r}; "
            "make them with `python -m hdit_edu.evaluation train-classifier`"
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
) -> tuple[ToyClassifier, dict]:
    """Train :class:`ToyClassifier` on the toy train split (deterministic from ``seed`` on
    CPU: seeded init, :class:`ResumableSampler` order, per-step generators; ``train_size``
    and ``test_size`` limit the images, for quick checks), test it on the toy test split, store the feature
    statistics, and, if ``out_dir`` is given, write ``model.safetensors`` and ``config.json``
    (model config, seed, settings, per-epoch log, accuracy) there. Adam with a cosine-decayed
    learning rate; cross-entropy."""
    torch.manual_seed(seed)
    train = ToyDataset("train", resolution, size=train_size)
    test = ToyDataset("test", resolution, size=test_size)
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
            "data": f"ToyDataset('train', {resolution}) ({len(train)} images, seed 0)",
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": f"Adam(lr={lr}), cosine decay to 0 over {total} steps",
            "augmentation": "x-flip p=0.5; Gaussian noise std U(0, 0.2) on half the images",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "log": history,
        "test_accuracy": history[-1]["test_accuracy"],
        "test_data": f"ToyDataset('test', {resolution}) ({len(test)} images, seed 0)",
    }
    if out_dir is not None:
        from safetensors.torch import save_file

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
# Inception (clean-fid's TorchScript port of the TF Inception) and reference statistics
# --------------------------------------------------------------------------------------------


def inception_path() -> Path:
    """Where the Inception weights are looked for: ``$HDIT_EDU_INCEPTION`` if set, else
    clean-fid's own place (``/tmp/inception-2015-12-05.pt``; ``./`` on Windows)."""
    if os.environ.get("HDIT_EDU_INCEPTION"):
        return Path(os.environ["HDIT_EDU_INCEPTION"])
    return Path("./" if platform.system() == "Windows" else "/tmp") / INCEPTION_FILE


def _download(url: str, target: Path, what: str, how: str) -> Path:
    """Download ``url`` to ``target`` (temp file + rename) with a timeout; any failure →
    :class:`MissingWeightsError` naming ``what``, ``target``, ``url`` and ``how``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with (
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            open(partial, "wb") as f,
        ):
            shutil.copyfileobj(response, f)
        partial.replace(target)
    except OSError as e:  # URLError, timeouts and refused connections are all OSErrors
        partial.unlink(missing_ok=True)
        raise MissingWeightsError(
            f"{what} not found: {str(target)!r} does not exist and downloading it from {url} "
            f"failed ({e}). {how}"
        ) from None
    return target


def inception_extractor(mode: str = "clean", device=None, download: bool = True) -> nn.Module:
    """clean-fid's Inception-V3 (2048-D pool features) for ``mode`` ("clean": expects 299²;
    "legacy_tensorflow": resizes inside like the TF original). Looks for the weights at
    :func:`inception_path`; downloads them there (with a timeout) if allowed; else — or
    offline — raises :class:`MissingWeightsError` saying how to provide them."""
    _check_choice("mode", mode, MODES)
    path = inception_path()
    how = (
        f"Run once with internet access (the weights are cached at that path), or copy "
        f"{INCEPTION_FILE} (from {INCEPTION_URL}) to {str(path)!r}, or set HDIT_EDU_INCEPTION "
        "to its location. Offline, use extractor='toy' (the toy-set classifier)."
    )
    if not path.is_file():
        if not download:
            raise MissingWeightsError(
                f"Inception weights are missing: {str(path)!r} does not exist (downloads disabled). {how}"
            )
        _download(INCEPTION_URL, path, "Inception weights", how)
    from cleanfid.inception_torchscript import InceptionV3W

    model = InceptionV3W(
        str(path.parent), download=False, resize_inside=mode == "legacy_tensorflow"
    )
    if path.name != INCEPTION_FILE:  # InceptionV3W only knows the default file name
        model.base = torch.jit.load(str(path)).eval()
        model.layers = model.base.layers
    return model.to(device or default_device()).eval()


@dataclass(frozen=True)
class ReferenceStats:
    """clean-fid's precomputed Inception statistics of a data set, e.g. ``("ffhq", 1024,
    "trainval70k")`` or ``("cifar10", 32, "train")`` (list: clean-fid's README)."""

    name: str
    resolution: int
    split: str = "train"

    def path(self, mode: str, kid: bool = False) -> Path:
        import cleanfid

        suffix = "_kid" if kid else ""
        file = f"{self.name}_{mode}_{self.split}_{self.resolution}{suffix}.npz".lower()
        return Path(cleanfid.__file__).parent / "stats" / file

    def load(self, mode: str, kid: bool = False, download: bool = True) -> dict:
        """{"mu", "sigma"} (FID) or {"feats"} (KID), downloaded once if allowed."""
        path = self.path(mode, kid)
        if not path.is_file():
            url = f"{CLEANFID_STATS_URL}/{path.name}"
            how = (
                f"Run once with internet access, or copy {path.name} (from {url}) to {str(path)!r}."
            )
            if not download:
                raise MissingWeightsError(
                    f"reference statistics {str(path)!r} are missing (downloads disabled). {how}"
                )
            _download(url, path, f"reference statistics {self}", how)
        with np.load(path) as stats:
            return {k: stats[k] for k in stats.files}


# --------------------------------------------------------------------------------------------
# Features of an image source, through clean-fid's pipeline
# --------------------------------------------------------------------------------------------


@dataclass
class _Extractor:
    model: Callable  # float (B, 3, h, w) in [0, 255] -> (B, D)
    fn_resize: Callable | None  # None = clean-fid's resizer for the mode


def _build_extractor(extractor, mode: str, device, download: bool) -> _Extractor:
    from cleanfid.resize import make_resizer

    _check_choice("mode", mode, MODES)
    if extractor == "inception":
        return _Extractor(inception_extractor(mode, device, download), None)
    if extractor == "toy":
        extractor = ToyFeatureExtractor(load_toy_classifier(device=device))
    if isinstance(extractor, ToyFeatureExtractor):
        # "clean": resize straight to the classifier's resolution with clean-fid's antialiased
        # PIL bicubic (not up to 299² and back); "legacy_tensorflow": the extractor resizes.
        side = extractor.classifier.resolution
        resize = make_resizer("PIL", False, "bicubic", (side, side))
        same = lambda x: x.astype(np.float32) if x.shape[:2] == (side, side) else resize(x)
        return _Extractor(extractor, same if mode == "clean" else None)
    if callable(extractor):
        return _Extractor(extractor, None)
    raise ValueError(f"extractor must be one of {EXTRACTORS} or a callable, got {extractor!r}")


def _batched_generator(source, n: int | None) -> tuple[Callable, int]:
    """clean-fid's ``gen`` protocol for in-memory images or a generate function: G(z) must
    return exactly len(z) images, float in [0, 255]; clean-fid keeps the first n features.
    Images are quantised to uint8 levels first, as if saved to PNG."""
    if callable(source):
        if n is None:
            raise ValueError("n (the number of images to generate) is required for a generator")
        produced = [0]

        def G(z):
            want = min(len(z), n - produced[0])
            images = source(max(want, 1))
            if images.ndim != 4 or len(images) != max(want, 1):
                raise ValueError(
                    f"generate_fn({max(want, 1)}) must return (B, 3, H, W) images, got {tuple(images.shape)}"
                )
            produced[0] += want
            pad = images[-1:].expand(len(z) - len(images), *images.shape[1:])
            return to_uint8(torch.cat([images, pad])).float()

        return G, n
    images = source
    if hasattr(images, "batch"):  # ToyDataset / ImageFolderDataset
        count = len(images) if n is None else min(n, len(images))
        images = images.batch(np.arange(count))[0]
    images = torch.as_tensor(images)
    count = len(images) if n is None else min(n, len(images))
    position = [0]

    def G(z):
        batch = images[position[0] : position[0] + len(z)]
        position[0] += len(z)
        if len(batch) < len(z):
            batch = torch.cat([batch, images[:1].expand(len(z) - len(batch), *images.shape[1:])])
        return to_uint8(batch).float()

    return G, count


def _check_folder(source) -> Path:
    """A folder clean-fid can read, or a ValueError naming it and the extensions it reads."""
    from cleanfid.utils import EXTENSIONS

    folder = Path(source)
    if not folder.is_dir() or not any(
        p.suffix[1:] in EXTENSIONS for p in folder.rglob("*") if p.is_file()
    ):
        raise ValueError(
            f"image folder {str(folder)!r} does not exist or has no images "
            f"(extensions clean-fid reads: {', '.join(sorted(EXTENSIONS))})"
        )
    return folder


def extract_features(
    source,
    *,
    extractor="toy",
    mode: str = "clean",
    n: int | None = None,
    batch_size: int = 64,
    device=None,
    num_workers: int = 0,
    download: bool = True,
    verbose: bool = False,
) -> np.ndarray:
    """Features (N, D) of an image source (see the module docstring), computed by clean-fid
    (its folder reader and resizer, or its generator loop) with ``extractor``. With ``n``, a
    folder contributes ``n`` files drawn at random (seed 0), not the first ``n`` in order
    (which would be the first classes); data sets are read into memory (for a large folder
    pass its path instead)."""
    from cleanfid import fid as cleanfid

    device = torch.device(device) if device is not None else default_device()
    if isinstance(source, np.ndarray) and source.ndim == 2:
        return source  # already features
    ext = _build_extractor(extractor, mode, device, download)
    if isinstance(source, (str, Path)):
        folder = _check_folder(source)
        return cleanfid.get_folder_features(
            str(folder), ext.model, num_workers=num_workers, num=n, shuffle=n is not None,
            seed=0, batch_size=batch_size, device=device, mode=mode,
            custom_fn_resize=ext.fn_resize, verbose=verbose,
        )  # fmt: skip
    G, count = _batched_generator(source, n)
    return cleanfid.get_model_features(
        G, ext.model, mode=mode, z_dim=1, num_gen=count, batch_size=batch_size, device=device,
        verbose=verbose, custom_fn_resize=ext.fn_resize,
    )  # fmt: skip


@contextlib.contextmanager
def _numpy_seed(seed: int):
    """clean-fid's KID draws subsets with the global NumPy RNG: seed it, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets (N, D): clean-fid's ``frechet_distance`` of the fitted
    Gaussians (μ, Σ), in float64."""
    feats_a, feats_b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    return _frechet(
        feats_a.mean(0),
        np.cov(feats_a, rowvar=False),
        feats_b.mean(0),
        np.cov(feats_b, rowvar=False),
    )


def _frechet(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """clean-fid's ``frechet_distance`` of two Gaussians (quietly: it passes SciPy's
    deprecated ``sqrtm(disp=False)``)."""
    from cleanfid.fid import frechet_distance as cleanfid_frechet

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return float(cleanfid_frechet(mu_a, sigma_a, mu_b, sigma_b))


def kernel_inception_distance(
    feats_a: np.ndarray, feats_b: np.ndarray, seed: int = 0, **options
) -> float:
    """KID between two feature sets: clean-fid's ``kernel_distance`` (100 subsets of ≤ 1000),
    with its subset draws seeded so the number is reproducible."""
    from cleanfid.fid import kernel_distance

    feats_a, feats_b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    with _numpy_seed(seed):
        return float(kernel_distance(feats_a, feats_b, **options))


METRICS = ("fid", "kid")


def metrics(
    samples,
    reference,
    *,
    which: Sequence[str] = METRICS,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    **options,
) -> dict[str, float]:
    """FID and/or KID between ``samples`` and ``reference`` (any sources, see the module
    docstring), from one pass of feature extraction: ``{"fid": …, "kid": …}``.

    Options: ``extractor`` ("toy" default, "inception", or a callable), ``mode`` ("clean",
    "legacy_tensorflow"), ``n`` (images to draw or read from ``samples``), ``batch_size``,
    ``device``, ``num_workers``, ``download``, ``verbose``. KID averages ``kid_subsets``
    subsets of ``kid_subset_size`` images (clean-fid's defaults: 100 × 1000)."""
    unknown = [m for m in which if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; allowed: {METRICS}")
    kid_options = dict(num_subsets=kid_subsets, max_subset_size=kid_subset_size)
    for source in (samples, reference):  # fail on a bad folder before any heavy compute
        if isinstance(source, (str, Path)):
            _check_folder(source)
    if isinstance(reference, ReferenceStats):
        extractor, mode = options.get("extractor", "toy"), options.get("mode", "clean")
        if extractor != "inception":
            raise ValueError(
                f"ReferenceStats are Inception statistics: pass extractor='inception', got {extractor!r}"
            )
        download = options.get("download", True)
        stats = {m: reference.load(mode, kid=m == "kid", download=download) for m in which}
        feats = np.asarray(extract_features(samples, **options), np.float64)
        out = {}
        if "fid" in which:
            mu, sigma = stats["fid"]["mu"], stats["fid"]["sigma"]
            out["fid"] = _frechet(feats.mean(0), np.cov(feats, rowvar=False), mu, sigma)
        if "kid" in which:
            out["kid"] = kernel_inception_distance(stats["kid"]["feats"], feats, **kid_options)
        return out
    feats_a = extract_features(samples, **options)
    feats_b = extract_features(reference, **dict(options, n=None))
    out = {}
    if "fid" in which:
        out["fid"] = frechet_distance(feats_a, feats_b)
    if "kid" in which:
        out["kid"] = kernel_inception_distance(feats_a, feats_b, **kid_options)
    return out


def fid(samples, reference, **options) -> float:
    """FID between ``samples`` and ``reference``; options as :func:`metrics`."""
    return metrics(samples, reference, which=("fid",), **options)["fid"]


def kid(samples, reference, **options) -> float:
    """KID between ``samples`` and ``reference``; options as :func:`metrics`."""
    return metrics(samples, reference, which=("kid",), **options)["kid"]


def fid_from_folders(
    a: str | Path, b: str | Path, *, extractor="toy", mode: str = "clean", **options
) -> float:
    """FID between two image folders."""
    return fid(a, b, extractor=extractor, mode=mode, **options)


def kid_from_folders(
    a: str | Path, b: str | Path, *, extractor="toy", mode: str = "clean", **options
) -> float:
    """KID between two image folders."""
    return kid(a, b, extractor=extractor, mode=mode, **options)


def fid_from_generator(
    generate_fn: Callable[[int], torch.Tensor], reference, n: int, **options
) -> float:
    """FID of ``n`` images from ``generate_fn(batch_size) -> (B, 3, H, W) in [-1, 1]`` against
    ``reference`` (a folder, images, a data set or :class:`ReferenceStats`)."""
    return fid(generate_fn, reference, n=n, **options)


def kid_from_generator(
    generate_fn: Callable[[int], torch.Tensor], reference, n: int, **options
) -> float:
    """KID of ``n`` generated images against ``reference``; as :func:`fid_from_generator`."""
    return kid(generate_fn, reference, n=n, **options)


# --------------------------------------------------------------------------------------------
# python -m hdit_edu.evaluation train-classifier | fid A B
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hdit_edu.evaluation", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train-classifier", help="train the toy classifier and write its weights"
    )
    train.add_argument(
        "--out", default=str(TOY_CLASSIFIER_DIR), help="output folder (default data/toy_classifier)"
    )
    train.add_argument("--epochs", type=int, default=2)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--seed", type=int, default=0)
    metric = sub.add_parser("fid", help="FID and KID between two image folders")
    metric.add_argument("a")
    metric.add_argument("b")
    metric.add_argument("--extractor", choices=EXTRACTORS, default="toy")
    metric.add_argument("--mode", choices=MODES, default="clean")
    args = parser.parse_args(argv)
    if args.command == "train-classifier":
        _, record = train_toy_classifier(
            args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
        )
        print(f"test accuracy {record['test_accuracy']:.4f}; wrote {args.out}")
    elif args.command == "fid":
        print(json.dumps(metrics(args.a, args.b, extractor=args.extractor, mode=args.mode)))


if __name__ == "__main__":
    main()
