"""Whole-file conversion between k-diffusion checkpoints and hdit-edu run folders — the
command line's ``hdit-edu convert from-k-diffusion | to-k-diffusion``.

:mod:`hdit_edu.interop` translates the pieces (configs, parameter names, the two layouts); this
module reads and writes the files around them: a k-diffusion training or inference checkpoint
becomes a run folder that :func:`hdit_edu.runs.load_run` opens, and a run folder (or one of its
checkpoints) becomes a k-diffusion inference checkpoint, written whole or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from .checkpoints import (
    atomic_write,
    error_summary,
    find_checkpoint,
    load_weights,
    save_checkpoint,
    save_safetensors,
    save_torch,
)
from .configs import load_config, save_config, validate_config
from .interop import (
    config_from_k_diffusion,
    from_k_diffusion,
    is_state_dict,
    load_k_diffusion_checkpoint,
    to_k_diffusion,
)
from .models import build_model

# ----------------------------------------------------------------------------------------------
# Whole files: a k-diffusion checkpoint -> an hdit-edu run directory, and back
# ----------------------------------------------------------------------------------------------


def convert_from_k_diffusion(
    source: str | Path,
    output: str | Path,
    *,
    config: str | Path | None = None,
    strict: bool = False,
) -> Path:
    """A k-diffusion checkpoint (``.pth`` training checkpoint, or ``.safetensors`` inference
    checkpoint with its config in the metadata) → an hdit-edu run directory ``output``
    (``config.json`` + ``checkpoints/step-N/{model,ema}.safetensors``) that
    :func:`hdit_edu.runs.load_run` and ``hdit-edu sample`` read. ``config``: the k-diffusion
    config JSON (default: the one stored in the checkpoint); ``strict``: as
    :func:`config_from_k_diffusion`. Both weights are converted (model → model, model_ema →
    ema)."""
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"output {str(output)!r} exists and is not an empty directory")
    stored, checkpoint = load_k_diffusion_checkpoint(source)
    kd_config = json.loads(Path(config).read_text()) if config else stored
    if kd_config is None:
        raise ValueError(f"{str(source)!r} stores no config; pass the k-diffusion --config")
    ours = config_from_k_diffusion(kd_config, strict=strict, name=output.name)
    ema = from_k_diffusion(kd_config, checkpoint, ema=True)
    raw = ema
    if not is_state_dict(checkpoint) and is_state_dict(checkpoint.get("model")):
        raw = from_k_diffusion(kd_config, checkpoint, ema=False)
    step = checkpoint.get("step", 0) if not is_state_dict(checkpoint) else 0
    step = int(step) if isinstance(step, int) else 0
    output.mkdir(parents=True, exist_ok=True)
    save_config(ours, output / "config.json")
    trainer_state = {"step": step, "converted_from": f"k-diffusion {Path(source).name}"}
    save_checkpoint(output, step, raw.state_dict(), ema.state_dict(), trainer_state, keep=1)
    return output


def _load_hdit(source: Path, config_path: Path | None, which: str):
    """``(model, Config)`` of an hdit-edu run directory, checkpoint folder or weights file."""
    source = Path(source)
    weights_name = f"{which}.safetensors"
    if source.is_dir() and (source / weights_name).is_file():  # a checkpoint folder
        weights, run_dir = source / weights_name, source.parent.parent
    elif source.is_dir():  # a run directory
        checkpoint = find_checkpoint(source, files=(weights_name,))
        if checkpoint is None:
            raise ValueError(f"run dir {str(source)!r} holds no checkpoint")
        weights, run_dir = checkpoint / weights_name, source
    elif source.suffix == ".safetensors" and source.is_file():
        weights, run_dir = source, None
    else:
        raise ValueError(
            f"{str(source)!r}: expected an hdit-edu run directory, checkpoint folder or "
            f".safetensors weights file"
        )
    if config_path is None:
        if run_dir is None or not (run_dir / "config.json").is_file():
            raise ValueError(f"no config.json found for {str(source)!r}; pass --config")
        config_path = run_dir / "config.json"
    config = load_config(config_path)
    validate_config(config)
    model = build_model(config)
    if weights.parent.is_dir() and (weights.parent / "manifest.json").is_file():
        state = load_weights(weights.parent, which)  # verified against the manifest
    else:
        try:
            state = load_file(str(weights))
        except Exception as e:  # noqa: BLE001
            raise ValueError(
                f"weights file {str(weights)!r} is corrupt: {error_summary(e)}"
            ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"weights {str(weights)!r} do not fit the model of {str(config_path)!r}: "
            f"{str(e).splitlines()[0]}"
        ) from None
    return model.eval(), config


def convert_to_k_diffusion(
    source: str | Path,
    output: str | Path,
    *,
    config: str | Path | None = None,
    weights: str = "ema",
) -> Path:
    """An hdit-edu run directory, checkpoint folder or ``.safetensors`` weights file (with
    ``config``, the hdit-edu config JSON, when no ``config.json`` is next to it) → a k-diffusion
    inference checkpoint ``output`` (``.safetensors`` with the config in the metadata, as
    k-diffusion's ``convert_for_inference.py`` writes) or a ``.pth`` ``{config, model_ema}``.
    ``weights``: which weights of a run to export, ``"ema"`` or ``"model"``."""
    output = Path(output)
    if output.suffix not in (".safetensors", ".pth", ".pt"):
        raise ValueError(f"output {str(output)!r}: allowed suffixes: .safetensors, .pth, .pt")
    model, ours = _load_hdit(source, config, weights)
    kd_config, state_dict = to_k_diffusion(model, ours)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Whole or not at all (checkpoints.atomic_write): a kill or a full disk leaves no
    # half-written file under the output's name, and the error names the file. The writers
    # stream the weights into the file (no second copy in memory: 2.2 GB at ImageNet-256).
    if output.suffix == ".safetensors":
        metadata = {"config": json.dumps(kd_config, indent=4)}
        atomic_write(output, lambda tmp: save_safetensors(state_dict, tmp, metadata))
    else:
        kd = {"config": kd_config, "model_ema": state_dict}
        atomic_write(output, lambda tmp: save_torch(kd, tmp))
    return output
