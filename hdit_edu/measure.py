"""Headless measurements of a trained class-conditional model on the toy set (§5.1, App. D,
Fig. 9): what the sampling demo, notebooks 08–09 and scripts measure, without ipywidgets.

* :func:`sample_accuracy` — ``n`` samples, the classes in turn, timed, and their class accuracy
  by the toy classifier (:class:`AccuracyRun`): the studies' one evaluation protocol
  (:func:`hdit_edu.protocol.evaluate`, which also gives the toy FID) with the demo's settings,
  behind the two below and the live training notebook's end-of-run check;
* :func:`guidance_sweep` — Figure 9 on the toy set: class accuracy and toy FID against the
  classifier-free guidance scale w (the shipped run's ``cfg_sweep.json``);
* :func:`sampler_study` — §5.1's samplers compared: the ODE samplers' discretisation error
  against the model evaluations (:func:`model_evaluations`), and every sampler's class accuracy
  at an equal budget (the shipped run's ``sampler_study.json``).

:mod:`hdit_edu.widgets` (the apps) imports these; nothing here draws or displays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .configs import normalize_resolution
from .evaluation import fid
from .protocol import EvalProtocol, evaluate
from .sampling import SAMPLERS, karras_sigmas, sample
from .toy import ToyDataset

# The measurements' defaults, and the sampling demo's: the paper's sampler (§5.1: 50 steps of
# DPM++(3M) SDE) with guidance w = 2.5 (near the FID optimum of the shipped run's cfg_sweep.json,
# at 85 % class accuracy).
DEFAULT_SAMPLER = "dpmpp_3m_sde"
DEFAULT_STEPS = 50
DEFAULT_CFG_SCALE = 2.5


@dataclass
class AccuracyRun:
    """Samples of every class in turn and how many the toy classifier recognises."""

    images: torch.Tensor  # (n, C, H, W) in [-1, 1]
    labels: torch.Tensor  # (n,) the classes asked for: 0, 1, 2, … in turn (sample_labels)
    class_accuracy: float  # the fraction the toy classifier assigns to the class asked for
    seconds: float  # sampling time (the classifier not included)
    metrics: dict = field(default_factory=dict)  # protocol.evaluate's: fid, per-class accuracy…


def sample_accuracy(
    denoiser,
    config,
    n: int = 512,
    *,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    cfg_scale: float = DEFAULT_CFG_SCALE,
    seed: int = 0,
    batch_size: int = 128,
) -> AccuracyRun:
    """``n`` samples of a class-conditional toy-set model, classes 0, 1, 2, … in turn
    (:func:`hdit_edu.sampling.sample_labels`), timed, and their class accuracy by the toy
    classifier (chance: 1 / classes): :func:`hdit_edu.protocol.evaluate` with these sampler
    settings and noise seed ``seed``, so a demo's number and a study's have one definition
    (``metrics`` holds the rest of the protocol's: toy FID against the test split, the
    accuracy per class). The one measurement behind :func:`guidance_sweep`,
    :func:`sampler_study` and the live training notebook's end-of-run check."""
    if not config.model.num_classes:
        raise ValueError("class accuracy needs a class-conditional model (num_classes > 0)")
    protocol = EvalProtocol(
        n=n, sampler=sampler, steps=steps, cfg=float(cfg_scale), batch_size=batch_size
    )
    metrics, images, labels = evaluate(denoiser, config, protocol, seed)
    return AccuracyRun(images, labels, metrics["class_accuracy"], metrics["sample_s"], metrics)


def guidance_sweep(
    denoiser,
    config,
    scales: Sequence[float] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
    *,
    n: int = 512,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    batch_size: int = 128,
    reference=None,
) -> dict:
    """Figure 9 on the toy set: for each guidance scale w, ``n`` samples (classes in turn) →
    class accuracy (toy classifier) and FID (toy classifier features) against ``reference``
    (default: the toy test split, the protocol's own FID of :func:`sample_accuracy`). Returns
    a JSON-able dict of lists, one entry per scale."""
    m = config.model
    if not m.num_classes:
        raise ValueError("guidance_sweep needs a class-conditional model (num_classes > 0)")
    accuracy, fids, seconds = [], [], []
    for w in scales:
        run = sample_accuracy(
            denoiser, config, n, sampler=sampler, steps=steps, cfg_scale=w, seed=seed,
            batch_size=batch_size,
        )  # fmt: skip
        seconds.append(run.seconds)
        accuracy.append(run.class_accuracy)
        # the protocol's toy FID (test split at the model's resolution), or another reference
        fids.append(run.metrics["fid"] if reference is None else
                    fid(run.images, reference, extractor="toy"))  # fmt: skip
    return {
        "scales": [float(w) for w in scales],
        "class_accuracy": accuracy,
        "fid": fids,
        "sampling_seconds": seconds,
        "n": n,
        "sampler": sampler,
        "steps": steps,
        "seed": seed,
        "reference": "toy test split"
        if reference is None or isinstance(reference, ToyDataset)
        else str(reference),
        "extractor": "toy",
    }


def model_evaluations(sampler: str, steps: int) -> int:
    """Denoiser calls of ``sampler`` for ``steps`` steps (per image, without guidance): Heun
    corrects every step but the last (EDM Alg. 2), 2·steps − 1; the others call it once a step."""
    return 2 * steps - 1 if sampler == "heun" else steps


@torch.no_grad()
def sampler_study(
    denoiser,
    config,
    *,
    n: int = 512,
    budget: int = DEFAULT_STEPS,
    cfg_scale: float = DEFAULT_CFG_SCALE,
    seed: int = 0,
    step_counts: Sequence[int] = (5, 10, 20, 40),
    reference_steps: int = 200,
    ode_seed: int = 3,
    batch_size: int = 128,
) -> dict:
    """§5.1's samplers compared two ways (notebook 08, section 5; the shipped run's
    ``sampler_study.json``). Returns a JSON-able dict.

    * ``errors``: the discretisation error of the ODE samplers (Euler, Heun, DPM++(2M)): one
      image per class from the same start noise (``ode_seed``), no guidance, RMS distance of
      each sampler's result at ``step_counts`` steps from a ``reference_steps``-step DPM++(2M)
      solution, against the number of model evaluations (``nfe``).
    * ``quality``: every sampler at an equal budget of about ``budget`` model evaluations per
      image (Heun: budget // 2 steps), guidance ``cfg_scale``, ``n`` samples (classes in turn)
      → class accuracy by the toy classifier.
    """
    m, d = config.model, config.diffusion
    if not m.num_classes:
        raise ValueError("sampler_study needs a class-conditional model (num_classes > 0)")
    device = next(denoiser.parameters()).device
    classes = torch.arange(m.num_classes, device=device)
    shape = (m.num_classes, m.in_channels, *normalize_resolution(m.resolution))
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(ode_seed)).to(device)

    def solve(sampler: str, steps: int) -> torch.Tensor:
        sigmas = karras_sigmas(steps, d.sigma_min, d.sigma_max, device=device)
        return sample(denoiser, x_T * sigmas[0], sigmas, sampler, class_cond=classes)

    reference = solve("dpmpp_2m", reference_steps)
    errors = {}
    for sampler in ("euler", "heun", "dpmpp_2m"):
        rms = [(solve(sampler, k) - reference).pow(2).mean().sqrt().item() for k in step_counts]
        nfe = [model_evaluations(sampler, k) for k in step_counts]
        errors[sampler] = {"steps": list(step_counts), "nfe": nfe, "rms": rms}

    quality = {}
    for sampler in SAMPLERS:
        steps = budget // 2 if sampler == "heun" else budget
        run = sample_accuracy(
            denoiser, config, n, sampler=sampler, steps=steps, cfg_scale=cfg_scale, seed=seed,
            batch_size=batch_size,
        )  # fmt: skip
        quality[sampler] = {
            "steps": steps,
            "nfe": model_evaluations(sampler, steps),
            "class_accuracy": run.class_accuracy,
            "sampling_seconds": run.seconds,
        }
    return {
        "errors": errors,
        "reference": {"sampler": "dpmpp_2m", "steps": reference_steps},
        "ode_images": m.num_classes,
        "ode_seed": ode_seed,
        "quality": quality,
        "n": n,
        "cfg_scale": float(cfg_scale),
        "seed": seed,
        "device": str(device),
    }
