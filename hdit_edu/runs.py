"""Using a run: its config and trained denoiser, and its logged metrics (§5.1).

A run folder (``runs/<name>/``, written by :class:`hdit_edu.training.Trainer`) holds
``config.json``, ``metrics.jsonl`` (one record per logged step), ``samples/step-*.png`` and
``checkpoints/step-*/`` (:mod:`hdit_edu.checkpoints`), plus ``.lock`` (who trains it,
:mod:`hdit_edu.runfolder`) and, after resumes that changed something, ``config-changes.jsonl``
and ``metrics-dropped.jsonl``. :func:`load_run` gives the config and the EMA (or raw) denoiser
of its newest intact checkpoint (it needs only that weights file); :func:`read_metrics` the
logged records (:func:`parse_metrics` also reports a half-written last line).
Sampling a loaded run is :func:`hdit_edu.sampling.generate`; its loss curves are
:func:`hdit_edu.viz.plot_losses`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from .checkpoints import WEIGHT_FILES, CheckpointError, find_checkpoint, load_weights
from .configs import Config, load_config, validate_config
from .ddpm import DDPMDenoiser
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
    if which not in WEIGHT_FILES:
        raise ValueError(f"which must be 'ema' or 'model', got {which!r}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run dir {str(run_dir)!r} does not exist or is not a folder")
    config = load_config(run_dir / "config.json")
    validate_config(config)
    if checkpoint is not None:
        path = Path(checkpoint)
    else:
        path = find_checkpoint(run_dir, files=(WEIGHT_FILES[which],))
    if path is None:
        raise CheckpointError(f"run dir {str(run_dir)!r} holds no checkpoint yet")
    state = load_weights(path, which)
    model = build_model(config, attention_backend)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint file {str(path / WEIGHT_FILES[which])!r} does not fit the model of "
            f"{str(run_dir / 'config.json')!r}: {str(e).splitlines()[0]}"
        ) from None
    model = model.to(device).eval().requires_grad_(False)
    d = config.diffusion
    if d.process == "ddpm":  # R1: DiT's discrete process (hdit_edu.ddpm)
        return config, DDPMDenoiser(model)
    return config, Denoiser(model, d.sigma_data, d.loss_weighting, d.gamma)


def parse_metrics(path: str | Path) -> tuple[list[dict], list[str], str | None]:
    """``(records, lines, broken_tail)`` of a ``metrics.jsonl``: the parsed records, their raw
    lines, and a half-written last line (what a kill during a write leaves: not valid JSON and
    no newline after it) or None. Any other line that is not a JSON object with an integer
    ``"step"`` raises ``ValueError`` naming the file and the line number."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{str(path)!r} is corrupt: not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline
    broken = None
    if tail.strip():
        try:
            json.loads(tail)
            lines.append(tail)
        except ValueError:
            broken = tail
    records, raw = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            record, reason = None, f"not valid JSON ({e})"
        else:
            reason = "not a JSON object with an integer 'step'"
        if not (isinstance(record, dict) and type(record.get("step")) is int):
            raise ValueError(
                f"{str(path)!r} is corrupt: line {number} is {reason}: {line[:80]!r}; move the "
                f"file away (its steps will be logged again from the checkpoint) or fix the line"
            )
        records.append(record)
        raw.append(line)
    return records, raw, broken


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl`` (one dict per logged step); a half-written
    last line is left out with a warning, any other corrupt line is a ``ValueError``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"no metrics.jsonl in {str(run_dir)!r}: has this run logged a step yet?")
    records, _, broken = parse_metrics(path)
    if broken is not None:
        warnings.warn(
            f"{str(path)!r}: ignoring a half-written last line {broken[:60]!r}", stacklevel=2
        )
    return records
