"""The evaluation protocol of every toy study (§5.2's FID, at toy scale): one dataclass, one
sampling-and-measuring function.

A model is measured by sampling ``n`` images with classes 0, 1, …, 7 in turn
(:func:`hdit_edu.sampling.sample_labels`) and putting them through :func:`measure`:

* **toy FID**: the Fréchet distance between the samples' and the held-out test split's
  features in the shipped toy classifier's penultimate layer (:func:`toy_test_features`, at the
  samples' resolution);
* **class accuracy**: the fraction the toy classifier assigns to their intended class, overall
  and per class;
* optionally **fid_ae**: the Fréchet distance in a second feature space, the encoder of a
  denoising autoencoder trained without labels (:mod:`hdit_edu.toy_autoencoder`), so a
  sample cannot score well on it merely by being prototypical for the classifier;
* optionally the **coherence** (one whole object of the intended class,
  :func:`hdit_edu.toy.toy_coherence`) and the **diversity** terms (FID's mean term and the
  features' spread against real images, overall and within each class).

:class:`EvalProtocol`'s defaults are the toy ablation's pre-registered protocol (2,048
samples, DPM++(3M) SDE with 50 steps, guidance w = 3, batches of 64); the noise seed is
given per call (the ablation's records use 1000 + the training seed). :func:`error_by_sigma`
measures a model's unweighted denoising error at fixed noise levels (where in σ two arms
differ, whatever weighting each was trained with). :func:`select_guidance` gives each model
its own guidance scale, chosen on selection noise kept apart from the test noise that scores
it, with the FID–accuracy frontier over w (one w for every arm, chosen on one arm's pilot,
favours that arm: the toy ablation's guidance sweep). The toy ablation's
records, its guidance sweep, its follow-up's diversity look, the sampler study and the
resolution study all measure through :func:`measure`, so a published number has one
definition.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from . import evaluation
from .configs import Config
from .ddpm import SAMPLING_STEPS
from .diffusion import Denoiser
from .sampling import DDPM_SAMPLER, generate, sample_labels
from .spectrum import spectrum_distance
from .toy import ToyClassifier, ToyDataset, load_toy_classifier, predict_classes, toy_coherence
from .toy_autoencoder import fid_ae as autoencoder_fid
from .toy_detail import ToyDetailDataset, classifier_folder
from .training import make_dataset, training_sigmas

_TEST_FEATURES: dict = {}
DATA = {"toy": ToyDataset, "toy-detail": ToyDetailDataset}  # the toy data sets, by name
_CLASSIFIERS: dict[str, ToyClassifier] = {}


def eval_classifier(path: str | None) -> ToyClassifier | None:
    """The evaluation classifier a protocol names (None: the shipped one, left to
    :mod:`hdit_edu.toy`), loaded once per process (:func:`toy_detail.classifier_folder`)."""
    if path is None:
        return None
    if path not in _CLASSIFIERS:
        _CLASSIFIERS[path] = load_toy_classifier(classifier_folder(path))
    return _CLASSIFIERS[path]


@torch.no_grad()
def classifier_features(images: torch.Tensor, classifier: ToyClassifier, batch: int = 256):
    """A given toy classifier's standardised features (B, 128) of images in [-1, 1]."""
    parts = [classifier.features(images[i : i + batch].float()) for i in range(0, len(images), batch)]
    return torch.cat(parts).double().numpy()


def toy_test_features(
    resolution: int = 32, data: str = "toy", classifier: str | None = None
) -> np.ndarray:
    """Toy-classifier features of the whole held-out test split (2,048 images) of ``data``
    rendered at ``resolution``, computed once per process; ``classifier``: the folder of
    another evaluation classifier than the shipped one (:func:`eval_classifier`)."""
    key = resolution if (data, classifier) == ("toy", None) else (resolution, data, classifier)
    if key not in _TEST_FEATURES:
        test = DATA[data]("test", resolution=resolution)
        if classifier is None:
            feats = evaluation.extract_features(test, extractor="toy", batch_size=256)
        else:  # in chunks: the 128² test split is 400 MB as float32
            model, n = eval_classifier(classifier), len(test)
            chunks = [test.batch(np.arange(i, min(i + 256, n)))[0] for i in range(0, n, 256)]
            feats = np.concatenate([classifier_features(c, model) for c in chunks])
        _TEST_FEATURES[key] = feats
    return _TEST_FEATURES[key]


@dataclass(frozen=True)
class EvalProtocol:
    """How samples are drawn and measured; the defaults are the toy ablation's protocol."""

    n: int = 2048
    sampler: str = "dpmpp_3m_sde"
    steps: int = 50
    cfg: float = 3.0
    batch_size: int = 64
    coherence: bool = False  # add coherence (and its parts) to the metrics
    diversity: bool = False  # add FID's mean term and the features' spread
    fid_ae: bool = False  # add the FID in the label-free autoencoder's features (off: the
    # shipped records were measured without it)
    ddpm_steps: int = SAMPLING_STEPS  # a DDPM model (R1) samples with DiT's ancestral sampler, this many
    # respaced steps (DiT's sample.py); sampler and steps above are the EDM models'
    data: str = "toy"  # the real images (FID reference): "toy", or "toy-detail" (which adds
    # coherence and detail_distance, the fine detail's spectrum distance; issue 30)
    classifier: str | None = None  # the evaluation classifier's folder (None: the shipped one)
    resolution: int | None = None  # sample at another side than the training one (None: it)
    positions: str | None = None  # how positions are read there (rope.POSITION_READINGS)
    shift: bool = False  # the σ schedule moved by the resolution shift (resolution.py)

    def __post_init__(self):
        for name in ("n", "steps", "batch_size", "ddpm_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"EvalProtocol.{name}={value!r}; allowed: an integer ≥ 1")
        if self.data not in DATA:
            raise ValueError(f"EvalProtocol.data={self.data!r}; allowed: {', '.join(DATA)}")


    def sampling(self, config: Config) -> tuple[str, int]:
        """(sampler, steps) for a model of ``config``: the protocol's for an EDM model; DiT's
        ancestral sampler over ``ddpm_steps`` for a DDPM one (EDM's samplers are refused for
        it: :func:`hdit_edu.sampling.sampler_and_steps`)."""
        if config.diffusion.process == "ddpm":
            return DDPM_SAMPLER, self.ddpm_steps
        return self.sampler, self.steps


def spread(a: np.ndarray, b: np.ndarray) -> float:
    """Tr(Σ_a) / Tr(Σ_b): the total feature variance of ``a`` relative to ``b`` (below 1: the
    samples vary less than real images)."""
    return float(np.trace(np.cov(a, rowvar=False)) / np.trace(np.cov(b, rowvar=False)))


def diversity(feats: np.ndarray, labels: np.ndarray, real: np.ndarray, real_labels) -> dict:
    """FID, its mean term ‖μ_s − μ_r‖² (the covariance term is the rest), and the overall and
    within-class spread of ``feats`` (labels ``labels``) against ``real`` (``real_labels``)."""
    fid = evaluation.frechet_distance(feats, real)
    mean_term = float(np.sum((feats.mean(0) - real.mean(0)) ** 2))
    k = int(real_labels.max()) + 1
    within = [spread(feats[labels == c], real[real_labels == c]) for c in range(k)]
    return {
        "fid": fid,
        "fid_mean_term": mean_term,
        "fid_covariance_term": fid - mean_term,
        "spread": spread(feats, real),
        "spread_within_class": float(np.mean(within)),
        "spread_per_class": within,
    }


def measure(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    coherence: bool = False,
    diversity_terms: bool = False,
    fid_ae: bool = False,
    data: str = "toy",
    classifier: str | None = None,
) -> dict:
    """The protocol's metrics of ``images`` (B, 3, H, W) in [-1, 1] meant to show classes
    ``labels``: ``fid`` (against the test split at the images' resolution), ``class_accuracy``
    and ``class_accuracy_per_class``; with ``coherence`` also ``coherence``,
    ``coherence_per_class``, ``parts_match`` and ``inside``; with ``diversity_terms`` the
    :func:`diversity` terms; with ``fid_ae`` the FID in the autoencoder's features
    (:func:`hdit_edu.toy_autoencoder.fid_ae`). ``data``: the real images the FID is against
    (``"toy-detail"`` adds ``coherence`` and ``detail_distance``: the spectrum distance to as
    many test images, the split's first, :func:`hdit_edu.spectrum.spectrum_distance`); ``classifier``: the folder
    of the evaluation classifier (features, class accuracy, coherence; None: the shipped one)."""
    resolution = images.shape[-1]
    labels = torch.as_tensor(labels).long().cpu()
    k = int(labels.max()) + 1 if len(labels) else 0
    model = eval_classifier(classifier)
    if model is None:
        feats = evaluation.extract_features(images, extractor="toy", batch_size=256)
    else:
        feats = classifier_features(images, model)
    correct = (predict_classes(images, model) == labels).float()
    reference = toy_test_features(resolution, data, classifier)
    out = {
        "fid": evaluation.frechet_distance(feats, reference),
        "class_accuracy": correct.mean().item(),
        "class_accuracy_per_class": [correct[labels == c].mean().item() for c in range(k)],
    }
    if fid_ae:
        out["fid_ae"] = autoencoder_fid(images)
    if data == "toy-detail":  # against the test split's first images, as many as the samples
        test = ToyDetailDataset("test", resolution=resolution)
        real = test.batch(np.arange(min(len(images), len(test))))[0]
        out["detail_distance"] = spectrum_distance(images, real)
    if coherence or data == "toy-detail":
        c = toy_coherence(images, labels, model)
        out |= {
            "coherence": c["coherent"].float().mean().item(),
            "coherence_per_class": [
                c["coherent"][labels == j].float().mean().item() for j in range(k)
            ],
            "parts_match": c["parts"].float().mean().item(),
            "inside": c["inside"].float().mean().item(),
        }
    if diversity_terms:
        test = DATA[data]("test", resolution=resolution)
        real_labels = test.labels.astype(np.int64)
        out |= diversity(feats, labels.numpy(), reference, real_labels)
    return out


def evaluate(denoiser, config, protocol: EvalProtocol, noise_seed: int):
    """Sample ``protocol.n`` images (classes in turn) from ``denoiser`` with noise seed
    ``noise_seed`` (at ``protocol.resolution`` with its reading and shift, if given) and
    :func:`measure` them. Returns (metrics, images, labels); the metrics
    hold ``n_samples``, the sampling's wall and CPU seconds (``sample_s``, ``sample_cpu_s``)
    and the protocol's settings (``cfg``)."""
    t0, c0 = time.perf_counter(), time.process_time()
    p = protocol
    sampler, steps = p.sampling(config)
    images = generate(
        denoiser, config, p.n, resolution=p.resolution, positions=p.positions, shift=p.shift,
        sampler=sampler, steps=steps, cfg_scale=p.cfg, seed=noise_seed, batch_size=p.batch_size,
    )  # fmt: skip
    sample_s, sample_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    labels = sample_labels(protocol.n, config.model.num_classes)
    metrics = measure(
        images, labels, coherence=protocol.coherence, diversity_terms=protocol.diversity,
        fid_ae=protocol.fid_ae, data=protocol.data, classifier=protocol.classifier,
    )  # fmt: skip
    out = {"n_samples": protocol.n, **metrics, "sample_s": sample_s, "sample_cpu_s": sample_cpu_s}
    return out, images, labels


def select_guidance(
    denoiser,
    config,
    protocol: EvalProtocol,
    scales: Sequence[float],
    *,
    selection_seed: int,
    test_seed: int,
    n_select: int = 512,
) -> dict:
    """Each model's own guidance scale, chosen without looking at the numbers that score it:
    sample ``n_select`` images at every w of ``scales`` on the *selection* noise
    (``selection_seed``), take the w of lowest toy FID there, then sample ``protocol.n`` images
    at that w on the *test* noise (``test_seed``, which must differ) and :func:`measure` them.
    Returns ``{"frontier": [{cfg, fid, class_accuracy} per w on the selection noise],
    "cfg_selected", "fid_selected", "class_accuracy_selected", "test": the test metrics}``: the
    FID–accuracy frontier over w beside the best-w numbers. With ``protocol.fid_ae`` every
    frontier row and the test add the autoencoder FID (``fid_ae_selected``); w is still chosen
    by toy FID alone, so the second feature space stays a witness, not a criterion."""
    if selection_seed == test_seed:
        raise ValueError(
            f"selection_seed={selection_seed} is the test seed: the noise that chooses w must "
            "not be the noise that scores it"
        )
    if not scales:
        raise ValueError("scales is empty; allowed: one or more guidance scales")
    frontier = []
    for w in scales:
        probe = replace(protocol, n=n_select, cfg=float(w))
        m, _, _ = evaluate(denoiser, config, probe, selection_seed)
        keys = ("fid", "class_accuracy", "fid_ae")
        frontier.append({"cfg": float(w)} | {k: m[k] for k in keys if k in m})
    best = min(frontier, key=lambda row: row["fid"])["cfg"]  # chosen by toy FID only
    chosen = replace(protocol, cfg=best)
    test, _, _ = evaluate(denoiser, config, chosen, test_seed)
    out = {
        "frontier": frontier,
        "cfg_selected": best,
        "fid_selected": test["fid"],
        "class_accuracy_selected": test["class_accuracy"],
        "test": test,
    }
    if protocol.fid_ae:
        out["fid_ae_selected"] = test["fid_ae"]
    return out


@torch.no_grad()
def evaluate_loss(
    denoiser: Denoiser,
    config: Config,
    dataset=None,
    *,
    n: int = 256,
    weighting: str = "soft-min-snr",
    seed: int = 0,
    batch_size: int = 128,
    indices: Sequence[int] | None = None,
) -> float:
    """A held-out loss that is comparable across runs: the same ``n`` images of ``dataset``
    (default: the toy test split, or the training folder), the same stratified σ and noise for
    every model, one fixed ``weighting`` (so runs trained with different loss weightings, like
    ablation steps D and E, are measured alike). ``indices``: which images (default the first
    ``n``; an image folder sorted by class wants a random subset)."""
    m = config.model
    if dataset is None:
        dataset = (
            DATA[config.training.dataset]("test", resolution=m.resolution)
            if config.training.dataset in DATA
            else make_dataset(config)
        )
    device = next(denoiser.parameters()).device
    indices = np.arange(min(n, len(dataset))) if indices is None else np.asarray(indices)
    n = len(indices)
    images, classes = dataset.batch(indices)
    g = torch.Generator().manual_seed(seed)
    sigma = training_sigmas(config, n, stratified=True, rank=0, world_size=1, generator=g)
    noise = torch.randn(images.shape, generator=g)
    total = 0.0
    for i in range(0, n, batch_size):
        cond = {"class_cond": classes[i : i + batch_size].to(device)} if m.num_classes else {}
        losses = denoiser.loss(
            images[i : i + batch_size].to(device),
            noise[i : i + batch_size].to(device),
            sigma[i : i + batch_size].to(device),
            weighting=weighting,
            **cond,
        )
        total += losses.sum().item()
    return total / n


# The σ bands of the per-σ error (unweighted, so no arm's training weighting is favoured):
# low noise (fine detail), the middle (where the layout forms), high noise (the global mean).
SIGMA_BANDS = {"low": (0.01, 0.05, 0.2), "mid": (0.5, 1.0, 2.0, 5.0), "high": (10.0, 20.0, 80.0)}


def loss_profile(denoiser, config, *, n: int = 512, seed: int = 0) -> dict:
    """The losses that favour no arm's training objective: the mean unweighted denoising error
    in each σ band of :data:`SIGMA_BANDS` (:func:`error_by_sigma` on ``n`` test images, one ε
    for every model) and the held-out loss under the arm's *own* training weighting
    (``heldout_loss_own``; :func:`evaluate_loss` on the same ``n`` images)."""
    sigmas = [s for band in SIGMA_BANDS.values() for s in band]
    errors = dict(zip(sigmas, error_by_sigma(denoiser, config, sigmas, n=n, seed=seed)))
    out = {f"error_{name}": float(np.mean([errors[s] for s in band]))
           for name, band in SIGMA_BANDS.items()}  # fmt: skip
    d = config.diffusion
    out["heldout_loss_own"] = evaluate_loss(
        denoiser, config, n=n, weighting=d.loss_weighting, seed=seed
    )
    out["loss_weighting_own"] = d.loss_weighting
    out["error_by_sigma"] = {str(s): e for s, e in errors.items()}
    return out


@torch.no_grad()
def error_by_sigma(
    denoiser: Denoiser,
    config: Config,
    sigmas: Sequence[float],
    *,
    n: int = 512,
    seed: int = 0,
    batch_size: int = 128,
) -> list[float]:
    """The denoising error at each fixed noise level: E‖D(x₀ + σε, σ) − x₀‖² per pixel, over the
    first ``n`` toy test images with their classes, one noise ε (``seed``) shared by every σ and
    every model. Unweighted, so it shows *where* in σ a model is better: the training weightings
    (:func:`hdit_edu.diffusion.loss_weight`) differ only in how they trade these errors off."""
    m = config.model
    images, classes = ToyDataset("test", resolution=m.resolution).batch(np.arange(n))
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    device = next(denoiser.parameters()).device
    out = []
    for s in sigmas:
        total = 0.0
        for i in range(0, n, batch_size):
            x0 = images[i : i + batch_size].to(device)
            x = x0 + s * noise[i : i + batch_size].to(device)
            d = denoiser(x, s, class_cond=classes[i : i + batch_size].to(device))
            total += ((d - x0) ** 2).mean(dim=(1, 2, 3)).sum().item()
        out.append(total / n)
    return out
