"""Checkpoints that resume exactly: atomic folders, manifests, and the RNG states (§5.1).

A checkpoint is a folder ``runs/<name>/checkpoints/step-XXXXXXXX/`` holding

* ``model.safetensors`` and ``ema.safetensors`` — the weights and their EMA (safetensors: no
  pickle);
* ``trainer_state.pt`` — optimizer state, step, RNG states, data position, log accumulators,
  saved with ``torch.save`` of tensors/ints/lists/dicts only and read back with
  ``torch.load(weights_only=True)`` (no arbitrary objects are unpickled);
* ``manifest.json`` — the SHA-256 of the three files (:data:`CHECKPOINT_FILES`), written last.

:func:`save_checkpoint` writes the files into a temporary folder, fsyncs them and renames the
folder into place (``os.replace``: atomic), so a crash while writing never damages an earlier
checkpoint; it keeps the newest ``keep``. :func:`verify_checkpoint` checks a folder against its
manifest, :func:`load_checkpoint` reads one, :func:`find_checkpoint` picks a run's newest intact
one (naming the corrupt file and the way out when the newest is damaged), and
:func:`list_checkpoints` lists them.

**RNG states.** Every random draw of a training step comes from a generator that is a pure
function of (seed, step, rank, stream) (:func:`hdit_edu.data.step_generator`); only the global
RNGs that dropout layers use need saving: :func:`rng_state` / :func:`set_rng_state` (per rank,
as ``weights_only``-loadable containers) and :func:`seed_everything`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "trainer_state.pt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, incomplete or corrupt (names the file)."""


# ----------------------------------------------------------------------------------------------
# RNG states (for dropout layers; the per-step draws need none) — tensors/ints/lists only
# ----------------------------------------------------------------------------------------------


def rng_state() -> dict:
    """The global RNG states of this process, as a ``weights_only``-loadable dict."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(py_state), py_gauss],
        "numpy": [
            np_kind,
            torch.from_numpy(np_keys.astype(np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if (
        state["cuda"]
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def seed_everything(seed: int) -> None:
    """Seed the global RNGs of torch, Python and NumPy."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


# ----------------------------------------------------------------------------------------------
# Checkpoints: atomic folders of safetensors + a weights_only trainer state + a manifest
# ----------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cpu_copy(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoint folders, oldest first (unfinished temporary folders excluded)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    trainer_state: dict,
    keep: int = 3,
) -> Path:
    """Write checkpoint ``step`` atomically and delete all but the newest ``keep``.

    The files go to a temporary folder first (each fsync'ed, the manifest with their SHA-256
    last) that is then renamed to ``checkpoints/step-XXXXXXXX`` in one ``os.replace``."""
    final = checkpoint_dir(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    meta = {"step": str(step)}
    save_file(_cpu_copy(model_state), tmp / "model.safetensors", metadata=meta)
    save_file(_cpu_copy(ema_state), tmp / "ema.safetensors", metadata=meta)
    torch.save(trainer_state, tmp / "trainer_state.pt")
    manifest = {"step": step, "files": {name: _sha256(tmp / name) for name in CHECKPOINT_FILES}}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for name in (*CHECKPOINT_FILES, "manifest.json"):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():  # re-reaching a step after resuming from an older checkpoint
        stale = final.parent / f".stale-{final.name}-{os.getpid()}"
        os.replace(final, stale)
        shutil.rmtree(stale)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def verify_checkpoint(path: str | Path) -> dict:
    """Check a checkpoint folder against its manifest; returns the manifest.

    Raises :class:`CheckpointError` naming the first missing or corrupt file."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {str(manifest_path)!r} is missing") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint file {str(manifest_path)!r} is corrupt: {e}") from None
    for name in CHECKPOINT_FILES:
        file = path / name
        if not file.exists():
            raise CheckpointError(f"checkpoint file {str(file)!r} is missing")
        if _sha256(file) != files.get(name):
            raise CheckpointError(
                f"checkpoint file {str(file)!r} is corrupt (its SHA-256 does not match "
                f"{str(manifest_path)!r})"
            )
    return manifest


def load_checkpoint(path: str | Path, *, verify: bool = True) -> dict:
    """Read a checkpoint folder: ``{"model", "ema"}`` state dicts (safetensors) and
    ``"trainer"`` (``torch.load(weights_only=True)``: no arbitrary objects are unpickled)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {str(path)!r} does not exist")
    if verify:
        verify_checkpoint(path)
    out = {}
    for key, name in (("model", "model.safetensors"), ("ema", "ema.safetensors")):
        try:
            out[key] = load_file(path / name)
        except Exception as e:  # noqa: BLE001 - any failure to parse is a corrupt file
            raise CheckpointError(f"checkpoint file {str(path / name)!r} is corrupt: {e}") from e
    try:
        out["trainer"] = torch.load(
            path / "trainer_state.pt", map_location="cpu", weights_only=True
        )
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint file {str(path / 'trainer_state.pt')!r} is corrupt: {e}"
        ) from e
    return out


def find_checkpoint(run_dir: str | Path, *, fallback: bool = False) -> Path | None:
    """The newest intact checkpoint of a run (None if there is none).

    A corrupt newest checkpoint raises :class:`CheckpointError` naming the file and the
    previous checkpoint; with ``fallback=True`` the newest intact one is used instead."""
    checkpoints = list_checkpoints(run_dir)
    for i in range(len(checkpoints) - 1, -1, -1):
        try:
            verify_checkpoint(checkpoints[i])
            return checkpoints[i]
        except CheckpointError as e:
            if fallback:
                warnings.warn(f"{e}; falling back to an older checkpoint", stacklevel=2)
                continue
            previous = checkpoints[i - 1] if i > 0 else None
            hint = (
                f" The previous checkpoint {str(previous)!r} is untouched: resume from it with "
                f"`--resume-from {previous}` (Trainer(resume={str(previous)!r})) or let the "
                f"trainer fall back to it with `--fallback` (Trainer(fallback=True))."
                if previous
                else " There is no earlier checkpoint to fall back to."
            )
            raise CheckpointError(str(e) + "." + hint) from None
    return None
