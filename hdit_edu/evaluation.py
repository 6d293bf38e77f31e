"""Evaluation: FID and KID through clean-fid (§5.1), with Inception or the toy classifier.

The paper reports FID (Heusel et al., 2017) on 50k samples with the ADM evaluator's Inception
network (§5.1). FID compares Gaussians fitted to features of two image sets,

    FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2}),

and KID (Bińkowski et al., 2018) is the unbiased MMD² with the kernel k(x, y) = (xᵀy / d + 1)³.
We compute both with clean-fid (Parmar et al., 2022): its ``mode="clean"`` resizes with
antialiasing, its ``mode="legacy_tensorflow"`` resizes like the TensorFlow Inception of the ADM
evaluator the paper used (same network weights in both modes).

**The paper's protocol** (:data:`PAPER_FID_MODE`). The ADM evaluator (Dhariwal & Nichol,
2021, ``evaluations/evaluator.py``) feeds images to the TensorFlow Inception graph's
``pool_3``, which resizes inside the graph (bilinear, no antialiasing), as TTUR's original
FID code does; clean-fid's ``legacy_tensorflow`` mode is its reproduction of exactly that
resize and network, so numbers comparable with the paper's use
``mode=PAPER_FID_MODE`` ("legacy_tensorflow"), 50k samples, and reference statistics of
the same mode (FFHQ: clean-fid's ``ReferenceStats("ffhq", 1024, "trainval70k")``; ImageNet:
statistics computed from ADM's reference batch, which clean-fid does not ship). ``"clean"``
(the default here) is the better-behaved metric, but its values differ from the paper's by
more than the differences Table 1 reports.

Inception's weights are a download. Offline — and for the toy set, whose 32² cartoons are far
from ImageNet — the feature space is the penultimate layer of the toy classifier
(:class:`hdit_edu.toy.ToyClassifier`, ``extractor="toy"``), shipped in ``data/toy_classifier/``.

Sources of images (``samples`` / ``reference`` below) can be: a folder of images (any layout;
clean-fid reads it), a generator function ``generate_fn(batch_size) -> images`` in [-1, 1]
(B, 3, H, W), a tensor of images in [-1, 1], a :class:`~hdit_edu.toy.ToyDataset` or
:class:`~hdit_edu.data.ImageFolderDataset`, an array of precomputed features (N, D), or —
as a reference only — :class:`ReferenceStats`, clean-fid's precomputed Inception statistics
(e.g. ``ReferenceStats("ffhq", 1024, "trainval70k")``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import check_choice, to_uint8
from .toy import MissingWeightsError, ToyFeatureExtractor, load_toy_classifier

EXTRACTORS = ("toy", "inception")
MODES = ("clean", "legacy_tensorflow")
PAPER_FID_MODE = "legacy_tensorflow"  # the ADM evaluator's TF Inception resize (module docstring)
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + INCEPTION_FILE
)
CLEANFID_STATS_URL = "https://www.cs.cmu.edu/~clean-fid/stats"
DOWNLOAD_TIMEOUT_S = 20.0


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    check_choice("mode", mode, MODES)
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

    check_choice("mode", mode, MODES)
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


def fid_from_generator(
    generate_fn: Callable[[int], torch.Tensor], reference, n: int, **options
) -> float:
    """FID of ``n`` images from ``generate_fn(batch_size) -> (B, 3, H, W) in [-1, 1]`` against
    ``reference`` (a folder, images, a data set or :class:`ReferenceStats`)."""
    return fid(generate_fn, reference, n=n, **options)


# --------------------------------------------------------------------------------------------
