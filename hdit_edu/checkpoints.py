"""Checkpoints that resume exactly: atomic folders, manifests, and the RNG states (§5.1).

A checkpoint is a folder ``runs/<name>/checkpoints/step-XXXXXXXX/`` holding

* ``model.safetensors`` and ``ema.safetensors`` — the weights and their EMA (safetensors: no
  pickle);
* ``trainer_state.pt`` — optimizer state, step, RNG states, data position, log accumulators,
  saved with ``torch.save`` of tensors/ints/lists/dicts only and read back with
  ``torch.load(weights_only=True)`` (no arbitrary objects are unpickled);
* ``config.json`` — the config the weights were trained with (:func:`checkpoint_config`: a
  resume compares against it, not against the run folder's editable copy);
* ``manifest.json`` — the SHA-256 of the files (:data:`CHECKPOINT_FILES` and ``config.json``),
  written last.

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

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "trainer_state.pt")
CONFIG_FILE = "config.json"  # the config the weights were trained with (newer checkpoints)


WEIGHT_FILES = {"model": "model.safetensors", "ema": "ema.safetensors"}
# Leftovers of interrupted saves/removals: .tmp-step-XXXXXXXX-PID, .stale-…, .trash-…
_UNFINISHED = re.compile(r"^\.(tmp|stale|trash)-step-\d+-(\d+)$")
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, incomplete or corrupt (names the file)."""


class RunWriteError(OSError):
    """Writing a run-folder file failed (disk full, permissions): names what was written."""


@contextlib.contextmanager
def writing(what: str) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``what`` into a :class:`RunWriteError` whose
    message names ``what`` (``"checkpoint step-00001000"``, ``"runs/x/metrics.jsonl"``)."""
    try:
        yield
    except RunWriteError:
        raise
    except OSError as e:
        reason = e.strerror or str(e)
        raise RunWriteError(e.errno, f"could not write {what}: {reason}") from e


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write a file atomically: ``write(tmp)`` fills a new temporary file beside it (created
    ``O_EXCL | O_NOFOLLOW``: never an existing file or a symlink; fsync'ed), then it is renamed
    over ``path`` (a symlink there is replaced, never followed). A kill or a full disk leaves
    the old file intact; the error is a :class:`RunWriteError` naming ``path``. ``write`` is
    :func:`_write_new` of some bytes, or a writer that streams a large file
    (:func:`save_safetensors`, :func:`save_torch`) without a copy of it in memory."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{threading.get_ident()}")
    try:
        with writing(str(path)):
            tmp.unlink(missing_ok=True)  # our own leftover (same process and thread)
            write(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda tmp: _write_new(tmp, data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text (a small JSON record, a config)."""
    atomic_write_bytes(path, text.encode())


def append_text(path: str | Path, text: str, *, fsync: bool = False) -> None:
    """Append to a file, created if absent, never through a symlink (``O_NOFOLLOW``): a
    symlink at ``path`` raises :class:`RunWriteError` naming it, its target untouched."""
    path = Path(path)
    with writing(str(path)):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RunWriteError(
                    e.errno,
                    f"could not write {str(path)!r}: it is a symlink (a run folder's files are "
                    f"never written through a symlink the trainer did not create); remove it",
                ) from None
            raise
        try:
            _write_all(fd, text.encode())
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (``O_EXCL | O_NOFOLLOW``) holding ``data``, fsync'ed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class _File(io.RawIOBase):
    """A new file (``O_EXCL | O_NOFOLLOW``) for ``torch.save``, which reports a failed write
    as a ``RuntimeError``: the first ``OSError`` (a full disk) is kept to be raised instead."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            _write_all(self.fd, bytes(data))
        except OSError as e:
            self.error = self.error or e
            raise
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def save_torch(obj, path: Path) -> None:
    """``torch.save(obj)`` into a new file ``path``, fsync'ed; a failed write raises the
    ``OSError`` (``ENOSPC`` …), not torch's ``RuntimeError``."""
    f = _File(path)
    try:
        try:
            torch.save(obj, f)
        except RuntimeError:
            if f.error is not None:
                raise f.error from None
            raise
        os.fsync(f.fd)
    finally:
        f.close()


def save_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict) -> None:
    """``safetensors`` ``save_file`` into a new file ``path``, fsync'ed. The file is created here
    (``O_EXCL | O_NOFOLLOW``: never an existing file or a symlink, in the caller's own new
    folder) and safetensors streams the tensors into it: no second copy of the weights in memory
    (ImageNet-256's are 2.2 GB a file). A failed write, which safetensors reports as a
    ``SafetensorError`` carrying the OS error's code, raises that ``OSError`` (``ENOSPC`` …)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
    try:
        save_file(state, str(path), metadata=metadata)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors' SafetensorError is no OSError
        code = re.search(r"(?:os error|code:)\s*(\d+)", str(e))
        if code is None:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), str(path)) from None
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def new_folder(final: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a new temporary folder beside ``final`` to fill; when the block ends without error
    its files are fsync'ed and it becomes ``final`` by rename (an existing ``final`` only with
    ``replace``: swapped out, then deleted). On error or a kill ``final`` is untouched (a kill
    leaves a ``.tmp-`` folder beside it, never a half-written ``final``)."""
    final = Path(final)
    if (final.exists() or final.is_symlink()) and not replace:
        raise FileExistsError(errno.EEXIST, f"{str(final)!r} exists (not replaced)")
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    with writing(str(final)):
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    try:
        yield tmp
        with writing(str(final)):
            for file in tmp.iterdir():
                if file.is_file():
                    with open(file, "rb") as f:
                        os.fsync(f.fileno())
            _fsync_dir(tmp)
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            if final.exists() or final.is_symlink():
                os.replace(final, old)  # a symlink is moved, never followed
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        if old.is_symlink() or old.is_file():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def error_summary(e: BaseException) -> str:
    """A library's error message without advice to disable the safe loader (the file failed
    ``weights_only=True`` loading: it is corrupt or not ours, never to be unpickled)."""
    text = str(e).strip().splitlines()
    keep = [ln for ln in text if "weights_only" not in ln and ln.strip()]
    return (keep[0] if keep else type(e).__name__)[:300]


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
    """The run's checkpoint folders ``step-NNNNNNNN``, oldest first (unfinished temporary
    folders and anything else in ``checkpoints/`` are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def remove_checkpoint(path: str | Path) -> None:
    """Delete a checkpoint folder atomically: renamed away (``.trash-…``, invisible to
    :func:`list_checkpoints`) first, then deleted; a kill in between leaves no visible
    half-deleted checkpoint, and :func:`clean_unfinished` finishes the job on the next start."""
    path = Path(path)
    trash = path.parent / f".trash-{path.name}-{os.getpid()}"
    shutil.rmtree(trash, ignore_errors=True)  # an earlier removal of ours, cut short
    with writing(f"checkpoint folder {str(path)!r} (removing it)"):
        os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_unfinished(run_dir: str | Path) -> list[Path]:
    """Remove what interrupted saves and removals left in ``checkpoints/`` (``.tmp-step-*``,
    ``.stale-step-*``, ``.trash-step-*``), except those of a process that still runs on this
    host (it may be saving right now). Returns the removed folders."""
    root = Path(run_dir) / "checkpoints"
    removed = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        m = _UNFINISHED.match(p.name)
        if not m:
            continue
        pid = int(m.group(2))
        if pid != os.getpid() and _pid_alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0
    return True


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    trainer_state: dict,
    keep: int = 3,
    *,
    health: dict | None = None,
    protect: Iterable[str | Path] = (),
    config: dict | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and delete all but the newest ``keep`` (never one
    in ``protect``: the trainer protects its last good checkpoint).

    The files go to a temporary folder first (each created new, never through a symlink, and
    fsync'ed; the manifest with their SHA-256 last) that is then renamed to
    ``checkpoints/step-XXXXXXXX`` in one ``os.replace``. A failed write (a full disk: the
    serialisers' own ``SafetensorError`` / ``RuntimeError`` never reach the caller) removes the
    temporary folder and raises :class:`RunWriteError` naming the file; earlier checkpoints are
    untouched. ``health`` (numbers describing the weights and losses, see :func:`is_healthy`)
    is stored in the manifest; ``config`` (the config the weights were trained with, as a
    dict) as ``config.json``, hashed in the manifest too (:func:`checkpoint_config`)."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    try:
        with writing(f"checkpoint folder {str(final.parent)!r}"):
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        meta = {"step": str(step)}
        for name, state in (("model.safetensors", model_state), ("ema.safetensors", ema_state)):
            with writing(f"checkpoint file {str(final / name)!r}"):
                save_safetensors(_cpu_copy(state), tmp / name, meta)
        with writing(f"checkpoint file {str(final / 'trainer_state.pt')!r}"):
            save_torch(trainer_state, tmp / "trainer_state.pt")
        names = list(CHECKPOINT_FILES)
        if config is not None:
            with writing(f"checkpoint file {str(final / CONFIG_FILE)!r}"):
                _write_new(tmp / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
            names.append(CONFIG_FILE)
        manifest = {"step": step, "files": {n: _sha256(tmp / n) for n in names}}
        if health is not None:
            manifest["health"] = health
        with writing(f"checkpoint file {str(final / 'manifest.json')!r}"):
            _write_new(tmp / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
            _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with writing(f"checkpoint folder {str(final)!r}"):
        if final.exists():  # re-reaching a step after resuming from an older checkpoint
            remove_checkpoint(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    keep_paths = {os.path.realpath(p) for p in protect}
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        if os.path.realpath(old) not in keep_paths:
            remove_checkpoint(old)
    return final


def checkpoint_config(path: str | Path) -> dict | None:
    """The config a checkpoint's weights were trained with (its ``config.json``, checked
    against the manifest), or None for a checkpoint written before checkpoints carried one."""
    path = Path(path)
    manifest = read_manifest(path)
    if CONFIG_FILE not in manifest["files"]:
        return None
    verify_checkpoint(path, files=(CONFIG_FILE,))
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint file {str(path / CONFIG_FILE)!r} is corrupt: {error_summary(e)}"
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint file {str(path / CONFIG_FILE)!r} is not a config")
    return config


def read_manifest(path: str | Path) -> dict:
    """The ``manifest.json`` of a checkpoint folder; :class:`CheckpointError` naming the file
    when it is missing, unreadable or not a manifest."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {str(path)!r} does not exist")
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {str(manifest_path)!r} is missing") from None
    except (OSError, ValueError) as e:  # JSON and UTF-8 decoding errors are ValueErrors
        raise CheckpointError(
            f"checkpoint file {str(manifest_path)!r} is corrupt: {error_summary(e)}"
        ) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise CheckpointError(
            f"checkpoint file {str(manifest_path)!r} is corrupt: expected a JSON object with "
            f'"files": {{name: sha256}}'
        )
    return manifest


def verify_checkpoint(path: str | Path, files: Iterable[str] = CHECKPOINT_FILES) -> dict:
    """Check a checkpoint folder's ``files`` (default: all three) against its manifest;
    returns the manifest. Readers that need only the weights (sampling, FID, conversion)
    verify only those, so a checkpoint without ``trainer_state.pt`` serves them.

    Raises :class:`CheckpointError` naming the first missing or corrupt file."""
    path = Path(path)
    manifest = read_manifest(path)
    manifest_path = path / "manifest.json"
    for name in files:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {str(file)!r} is missing")
        if _sha256(file) != manifest["files"].get(name):
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
        out[key] = _load_weights(path / name)
    try:
        out["trainer"] = torch.load(
            path / "trainer_state.pt", map_location="cpu", weights_only=True
        )
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint file {str(path / 'trainer_state.pt')!r} is corrupt or not an hdit-edu "
            f"trainer state ({error_summary(e)}); resume from an earlier checkpoint "
            f"(--resume-from) or sample from this one's weights"
        ) from None
    if not isinstance(out["trainer"], dict) or not isinstance(out["trainer"].get("step"), int):
        raise CheckpointError(
            f"checkpoint file {str(path / 'trainer_state.pt')!r} is corrupt: expected a dict "
            f"with an integer 'step'"
        )
    return out


def _load_weights(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except Exception as e:  # noqa: BLE001 - any failure to parse is a corrupt file
        raise CheckpointError(
            f"checkpoint file {str(file)!r} is corrupt: {error_summary(e)}"
        ) from None


def load_weights(path: str | Path, which: str = "ema", *, finite: bool = True) -> dict:
    """One state dict (``which``: ``"ema"`` or ``"model"``) of a checkpoint folder, verified
    against the manifest (the other files are not needed). ``finite``: refuse weights that
    hold NaN or inf (they can only produce NaN images)."""
    if which not in WEIGHT_FILES:
        raise ValueError(f"which must be one of {tuple(WEIGHT_FILES)}, got {which!r}")
    path = Path(path)
    verify_checkpoint(path, files=(WEIGHT_FILES[which],))
    state = _load_weights(path / WEIGHT_FILES[which])
    if finite:
        bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
        if bad:
            raise CheckpointError(
                f"checkpoint file {str(path / WEIGHT_FILES[which])!r} holds NaN or inf weights "
                f"(in {len(bad)} tensors, e.g. {bad[0]!r}): the run diverged before this "
                f"checkpoint; use an earlier one (--checkpoint)"
            )
    return state


# ----------------------------------------------------------------------------------------------
# Health: is a checkpoint a sane point to resume from after a divergence?
# ----------------------------------------------------------------------------------------------

MAX_SANE_WEIGHT = 1e3  # |w| above this is a divergence in progress (healthy weights are O(10))
MAX_LOSS_FACTOR = 10.0  # a loss above 10x the reference loss is diverging


def is_healthy(health: dict | None, best_loss: float | None = None) -> bool:
    """Whether a checkpoint's ``health`` record passes the test for a "last good checkpoint":

    * every weight finite and at most :data:`MAX_SANE_WEIGHT` in size (``max_abs_weight``);
    * the mean loss of the steps since the previous checkpoint (``loss``) finite and at most
      :data:`MAX_LOSS_FACTOR` × the reference: the smaller of ``reference_loss`` (the loss of
      the run's first step — the output layer starts at zero, so this is the loss of a network
      that predicts nothing, ≈ 0.15 for soft-min-SNR) and ``best_loss`` (the lowest checkpoint
      loss of the run). A loss ten times that of predicting nothing is a divergence, even
      while it is finite."""
    if not isinstance(health, dict):
        return False
    w, loss = health.get("max_abs_weight"), health.get("loss")
    if not _finite(w) or w > MAX_SANE_WEIGHT:
        return False
    if loss is None:
        return True  # no steps since the previous checkpoint (e.g. converted weights)
    if not _finite(loss):
        return False
    references = [x for x in (health.get("reference_loss"), best_loss) if _finite(x)]
    return not references or loss <= MAX_LOSS_FACTOR * min(references)


def last_good_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run whose manifest's health passes :func:`is_healthy`."""
    records = []
    for path in list_checkpoints(run_dir):
        try:
            records.append((path, read_manifest(path).get("health")))
        except CheckpointError:
            continue
    losses = [h["loss"] for _, h in records if isinstance(h, dict) and _finite(h.get("loss"))]
    best = min(losses) if losses else None
    for path, health in reversed(records):
        if is_healthy(health, best):
            return path
    return None


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def find_checkpoint(
    run_dir: str | Path, *, fallback: bool = False, files: Iterable[str] = CHECKPOINT_FILES
) -> Path | None:
    """The newest intact checkpoint of a run (None if there is none); ``files``: which files
    must be intact (default all; a sampler needs only one weights file).

    A corrupt newest checkpoint raises :class:`CheckpointError` naming the file and the
    previous checkpoint; with ``fallback=True`` the newest intact one is used instead."""
    checkpoints = list_checkpoints(run_dir)
    files = tuple(files)
    for i in range(len(checkpoints) - 1, -1, -1):
        try:
            verify_checkpoint(checkpoints[i], files)
            return checkpoints[i]
        except CheckpointError as e:
            if fallback:
                warnings.warn(f"{e}; falling back to an older checkpoint", stacklevel=2)
                continue
            previous = checkpoints[i - 1] if i > 0 else None
            hint = (
                f" The previous checkpoint {str(previous)!r} is untouched: resume from it with "
                f"`--resume-from {previous}` (Trainer(resume={str(previous)!r})), sample from "
                f"it with `--checkpoint {previous}`, or let the "
                f"trainer fall back to it with `--fallback` (Trainer(fallback=True))."
                if previous
                else " There is no earlier checkpoint to fall back to."
            )
            raise CheckpointError(str(e) + "." + hint) from None
    return None
