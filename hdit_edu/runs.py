"""Using a run: its config and trained denoiser, and its logged metrics (§5.1).

A run folder (``runs/<name>/``, written by :class:`hdit_edu.training.Trainer`) holds
``config.json``, ``metrics.jsonl`` (one record per logged step), ``samples/step-*.png`` and
``checkpoints/step-*/`` (:mod:`hdit_edu.checkpoints`). :func:`load_run` gives the config and the
EMA (or raw) denoiser of its newest intact checkpoint; :func:`read_metrics` the logged records.
Sampling a loaded run is :func:`hdit_edu.sampling.generate`; its loss curves are
:func:`hdit_edu.viz.plot_losses`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from .checkpoints import CheckpointError, find_checkpoint, verify_checkpoint
from .configs import Config, load_config
from .diffusion import Denoiser
from .models import build_model


def load_run(
    run_dir: str | Path,
    *,
    which: str = "ema",
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    attention_backend: str = "auto",
) -> tuple[Config, Denoiser]:
    """A run's config and its denoiser with the ``which`` (``"ema"`` or ``"model"``) weights of
    the newest (or the given) checkpoint, in eval mode, with the neighborhood-attention backend
    ``attention_backend`` (:data:`hdit_edu.attention.NA_BACKENDS`)."""
    if which not in ("ema", "model"):
        raise ValueError(f"which must be 'ema' or 'model', got {which!r}")
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.json")
    path = Path(checkpoint) if checkpoint is not None else find_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(f"run dir {str(run_dir)!r} holds no checkpoint yet")
    verify_checkpoint(path)
    model = build_model(config, attention_backend)
    model.load_state_dict(load_file(path / f"{which}.safetensors"))
    model = model.to(device).eval().requires_grad_(False)
    d = config.diffusion
    return config, Denoiser(model, d.sigma_data, d.loss_weighting, d.gamma)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl`` (one dict per logged step)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise ValueError(f"no metrics.jsonl in {str(run_dir)!r}: has this run logged a step yet?")
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
