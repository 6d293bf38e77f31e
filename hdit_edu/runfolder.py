"""The run folder and its one owner: claim, resume, config identity, safe writes (§5.1).

Everything that writes into a run folder (``runs/<name>/``: the trainer, ``hdit-edu ablate``'s
:func:`hdit_edu.ablation.run_toy`, a study's runner) goes through this module, which holds the
folder's invariants:

1. **One owner at a time.** :func:`claim` takes an exclusive ``fcntl.flock`` on a file
   descriptor opened on the *folder itself* (``O_DIRECTORY | O_NOFOLLOW``), never on a file in
   it: deleting, replacing or symlinking ``.lock`` cannot let a second process in. The kernel
   drops the claim when its process dies (SIGKILL included), so a dead owner never blocks.
   ``.lock`` only *describes* the owner (pid, host, start time, command) for messages; it is
   written by rename, so a ``.lock`` symlink is replaced, never followed.
2. **Nothing before the claim.** No file in the folder is created, changed or deleted before
   the claim is held; a folder that is to be emptied or restarted is claimed first
   (:meth:`Claim.clear` empties it while holding it), so nothing is ever deleted that another
   live process holds.
3. **No writes through symlinks it did not create.** Files are appended with ``O_NOFOLLOW``
   (:func:`hdit_edu.checkpoints.append_text`) or replaced by rename
   (:func:`hdit_edu.checkpoints.atomic_write_bytes`), and the sub-folders a writer uses are
   refused when they are symlinks (:meth:`RunFolder.subdir`).
4. **A checkpoint carries its config**, and a resume compares against it
   (:meth:`RunFolder.resume_point`, :func:`check_same_experiment`): a hand-edited or deleted
   ``config.json`` cannot change the experiment unnoticed.
5. **Whole steps only.** SIGINT and SIGTERM act only between training steps
   (:class:`StepBoundary`), so a checkpoint labelled step N holds exactly step N's state.

:class:`RunFolder` is the trainer's view of its folder (resume point, what a resume moves
aside, metrics rows, checkpoints); ``ablate`` and a study's runner use :func:`claim` directly.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import signal
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

from .checkpoints import (
    CheckpointError,
    append_text,
    atomic_write_bytes,
    atomic_write_text,
    checkpoint_config,
    clean_unfinished,
    find_checkpoint,
    is_healthy,
    last_good_checkpoint,
    list_checkpoints,
    read_manifest,
    save_checkpoint,
    writing,
)
from .configs import Config, load_config
from .runs import parse_metrics

LOCK_FILE = ".lock"


class RunFolderError(ValueError):
    """A run folder that cannot be used as it is (a symlink, a file, a ``.lock`` folder)."""


class RunLockedError(RunFolderError):
    """Another live process holds the run folder's claim (the message names it)."""


def holder_info() -> dict:
    """What ``.lock`` says about this process: pid, host, start time, command."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(sys.argv),
    }


def read_holder(path: str | Path) -> dict | None:
    """The holder record in ``path/.lock`` (None if absent, unreadable, or not a plain file)."""
    try:
        fd = os.open(Path(path) / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "r") as f:
            record = json.loads(f.read(65536))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def describe_holder(record: dict | None) -> str:
    if not record:
        return "another process (its holder record is unreadable)"
    return (
        f"pid {record.get('pid')} on host {record.get('host')!r}, started "
        f"{record.get('started')} ({record.get('command', '?')})"
    )


def _open_folder(path: Path) -> int:
    """An fd on the folder ``path`` itself (created if absent, parents too); never a symlink."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path)  # never follows a symlink: an existing one gives EEXIST
        except FileExistsError:
            pass
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR) or path.is_symlink():
            what = "a symlink" if path.is_symlink() else "not a folder"
            raise RunFolderError(
                f"run folder {str(path)!r} is {what}: a run folder must be a real folder "
                f"(pass the path it points to, or another folder)"
            ) from None
        raise OSError(e.errno, f"could not create run folder {str(path)!r}: {e.strerror}") from None


class Claim:
    """An exclusive claim of one run folder by this process (see :func:`claim`).

    ``path``: the folder. ``locked``: False only on a file system without ``flock`` (a
    warning said so). Release with :meth:`release` or by leaving a ``with`` block; the kernel
    releases it when the process dies."""

    def __init__(self, path: Path, fd: int, locked: bool):
        self.path, self._fd, self.locked = path, fd, locked
        self._ino = os.fstat(fd)[1:3]

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with _registry_lock:
            if _registry.get(self._ino) is self:
                del _registry[self._ino]
        try:
            if self.locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Claim({str(self.path)!r}, held={self.held})"

    def _write_holder(self) -> None:
        """Write ``.lock`` (the holder record) by rename: a symlink there is replaced, not
        followed; a folder there is refused by name."""
        lock = self.path / LOCK_FILE
        if lock.is_dir() and not lock.is_symlink():
            raise RunFolderError(
                f"{str(lock)!r} is a folder: it is where a run folder records which process "
                f"owns it and must be a file (or absent). Move it away and start again"
            )
        atomic_write_bytes(self.path / LOCK_FILE, (json.dumps(holder_info()) + "\n").encode())

    def clear(self, keep: tuple[str, ...] = (LOCK_FILE,)) -> None:
        """Delete everything in the claimed folder but ``keep`` (symlinks are removed, never
        followed). Only the holder may clear a folder: that is what makes it safe."""
        if not self.held:
            raise RunFolderError(f"clear() of {str(self.path)!r} without holding its claim")
        for entry in os.scandir(self.path):
            if entry.name in keep:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


_registry: dict[tuple[int, int], Claim] = {}  # (device, inode) of a folder -> this process's claim
_registry_lock = threading.Lock()


def claim(path: str | Path, *, wait: bool = False, timeout: float | None = None) -> Claim | None:
    """Atomically claim the run folder ``path`` (created if absent, parents too).

    Returns the :class:`Claim`, or None when another live process (or another thread of this
    one) holds it and ``wait`` is False; with ``wait`` it blocks until the folder is free (at
    most ``timeout`` seconds, then None). Nothing in the folder is created, changed or deleted
    before the claim is held. The claim is an ``flock`` on the folder's own descriptor, so it
    stays valid when ``.lock`` is deleted or replaced, is released by the kernel when the
    process dies, and never follows a symlink (a symlinked ``path`` raises
    :class:`RunFolderError`). Having it, the holder record ``.lock`` is (re)written."""
    path = Path(path)
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.01
    while True:
        fd = _open_folder(path)
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                warnings.warn(
                    f"could not lock run folder {str(path)!r} ({e.strerror}): the file system "
                    f"does not support flock; make sure no other process writes this folder",
                    stacklevel=2,
                )
                locked = False
            else:
                os.close(fd)
                if not wait or (deadline is not None and time.monotonic() >= deadline):
                    return None
                time.sleep(delay if deadline is None else min(delay, deadline - time.monotonic()))
                delay = min(delay * 2, 0.5)
                continue
        # The folder may have been renamed away or replaced between open and flock (its last
        # holder removed it): a claim on a folder no longer at `path` is worthless, try again.
        try:
            same = os.stat(path, follow_symlinks=False)[1:3] == os.fstat(fd)[1:3]
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        held = Claim(path, fd, locked)
        try:
            held._write_holder()
        except BaseException:
            held.release()
            raise
        with _registry_lock:
            _registry[held._ino] = held
        return held


def held_claim(path: str | Path) -> Claim | None:
    """This process's claim of the folder ``path`` (None if it holds none)."""
    try:
        key = os.stat(path, follow_symlinks=False)[1:3]
    except OSError:
        return None
    with _registry_lock:
        return _registry.get(key)


def hold(path: str | Path) -> Claim:
    """The claim of ``path`` for a writer that needs it: the one this process already holds
    (e.g. ``ablate`` claimed the run before building its trainer; a notebook's second
    trainer), else a new one; :class:`RunLockedError` naming the holder when another live
    process has it."""
    existing = held_claim(path)
    if existing is not None:
        return existing
    got = claim(path)
    if got is None:
        raise RunLockedError(
            f"run dir {str(path)!r} is in use by {describe_holder(read_holder(path))}: only "
            f"one process may write a run folder. Wait for it to finish (or stop it), or "
            f"choose another --run-dir"
        )
    return got


def release(path: str | Path) -> None:
    """Release this process's claim of ``path`` (no-op if it holds none)."""
    existing = held_claim(path)
    if existing is not None:
        existing.release()



# ----------------------------------------------------------------------------------------------
# Config identity: what a resume may change
# ----------------------------------------------------------------------------------------------

# Training fields that may change when a run is resumed (they do not change the maths).
# grad_accum: the same global batch split differently (the micro-steps' draws differ, so the
# loss sequence is not repeated bit for bit after a change).
RESUMABLE_FIELDS = (
    "steps",
    "checkpoint_every",
    "keep_checkpoints",
    "sample_every",
    "log_every",
    "grad_accum",
    "checkpointing",
    "tensorboard",  # where copies of the metrics go (logging_sinks)
    "wandb",
)
# Training fields a resume may change when asked to (allow_change / --allow-change): they
# change how the optimisation continues (the way out of a divergence), not what is learnt.
RECOVERABLE_FIELDS = (
    "lr",
    "grad_clip",
    "betas",
    "eps",
    "weight_decay",
    "mapping_lr_scale",
    "ema_decay",
    "ema_power",
    "precision",
    "compile",
)


class ConfigChangeError(ValueError):
    """Resuming with a config that differs from the run's; ``recoverable`` lists the fields
    that ``allow_change`` would accept (``training.lr``, …), ``refused`` those it never does."""

    def __init__(self, message: str, recoverable: list[str], refused: list[str]):
        super().__init__(message)
        self.recoverable, self.refused = recoverable, refused


def check_same_experiment(
    saved: Config, given: Config, allow_change=(), source: str = "the run's config.json"
) -> dict:
    """A resumed run may change the bookkeeping fields of ``RESUMABLE_FIELDS`` freely and the
    :data:`RECOVERABLE_FIELDS` named in ``allow_change`` (``"training.lr"``); returns those
    changes ``{field: (old, new)}``. Anything else raises :class:`ConfigChangeError`;
    ``source`` names where ``saved`` came from (the checkpoint or ``config.json``)."""
    recoverable = [f"training.{k}" for k in RECOVERABLE_FIELDS]
    allow = set()
    for item in [allow_change] if isinstance(allow_change, str) else allow_change:
        for name in str(item).split(","):
            name = name.strip()
            if name and not name.startswith("training."):
                name = f"training.{name}" if name in RECOVERABLE_FIELDS else name
            if name and name not in recoverable:
                raise ValueError(
                    f"--allow-change {name!r}: not a recoverable field (it would change the "
                    f"experiment, or does not exist); allowed: {', '.join(recoverable)}"
                )
            allow.add(name)
    a, b = saved.to_dict(), given.to_dict()
    for key in RESUMABLE_FIELDS:
        a["training"].pop(key), b["training"].pop(key)
    diffs = sorted(_diff_keys(a, b))
    refused = [d for d in diffs if d not in recoverable]
    unasked = [d for d in diffs if d in recoverable and d not in allow]
    if refused:
        raise ConfigChangeError(
            f"cannot resume: the config differs from {source} in {refused}, which change the "
            f"experiment (model, data, diffusion or seed); start a new run for that. "
            f"Only training.{{{', '.join(RESUMABLE_FIELDS)}}} may change freely, and "
            f"{', '.join(recoverable)} with --allow-change",
            unasked,
            refused,
        )
    if unasked:
        raise ConfigChangeError(
            f"cannot resume: the config differs from {source} in {unasked}; to continue with "
            f"the new value, allow the change explicitly (it is logged in "
            f"config-changes.jsonl): --allow-change {','.join(unasked)} "
            f"(Trainer(allow_change={unasked!r}))",
            unasked,
            [],
        )
    return {d: (_get(a, d), _get(b, d)) for d in diffs}


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[int(part)] if isinstance(d, list) else d[part]
    return list(d) if isinstance(d, tuple) else d


def _diff_keys(a, b, prefix: str = "") -> list[str]:
    """The dotted names of the fields where ``a`` and ``b`` differ (``model.levels.0.width``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    if (
        isinstance(a, list)
        and isinstance(b, list)
        and len(a) == len(b)
        and a
        and (isinstance(a[0], dict))
    ):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff_keys(x, y, f"{prefix}{i}.")]
    return [] if a == b else [prefix.rstrip(".")]


# ----------------------------------------------------------------------------------------------
# The run folder a trainer writes
# ----------------------------------------------------------------------------------------------

METRICS, DROPPED, CHANGES, CONFIG = (
    "metrics.jsonl",
    "metrics-dropped.jsonl",
    "config-changes.jsonl",
    "config.json",
)


class RunFolder:
    """A trainer's run folder: every read and write of its bookkeeping.

    ``owner=True`` (rank 0) holds the folder's claim (:func:`hold`) for the life of the
    process, taken before anything in it is read or written; other ranks only read. The
    resume point and its config identity (:meth:`resume_point`), what a resume moves aside
    (:meth:`prepare`: newer checkpoints to ``abandoned/``, metrics rows past the checkpoint to
    ``metrics-dropped.jsonl``; nothing is deleted), metrics rows (:meth:`append_metrics`),
    checkpoints (:meth:`save_checkpoint`: never rotating away the last good one) and the
    sub-folders the trainer writes (:meth:`subdir`: never a symlink)."""

    def __init__(self, path: str | Path, *, owner: bool = True, log=print):
        self.path = Path(path)
        self.log = log
        self.claim = hold(self.path) if owner else None

    # --- resume ------------------------------------------------------------------------------

    def logged_steps(self) -> int:
        """The last step logged in ``metrics.jsonl`` (0 if none)."""
        path = self.path / METRICS
        if not path.is_file():
            return 0
        records, _, _ = parse_metrics(path)
        return max((r["step"] for r in records), default=0)

    def resume_point(
        self, config: Config, resume, *, fallback: bool = False, allow_change=()
    ) -> tuple[Path | None, dict]:
        """``(checkpoint to resume from or None, config changes {field: (old, new)})``.

        ``resume``: False (a fresh run: a folder with history is refused), True (the newest
        intact checkpoint; none yet is fine only before the first checkpoint was due) or a
        checkpoint folder. ``config`` is compared with the config the checkpoint was trained
        with (it carries one; older ones: the run's ``config.json``): a hand-edited or deleted
        ``config.json`` cannot change the experiment unnoticed."""
        existing = list_checkpoints(self.path)
        logged = self.logged_steps()
        if resume is False or resume is None:
            if existing or logged:
                what = f"checkpoints ({existing[-1].name})" if existing else "a metrics.jsonl"
                raise ValueError(
                    f"run dir {str(self.path)!r} already holds {what} of an earlier run: "
                    f"pass resume=True (--resume) to continue it, or choose another run dir"
                )
            return None, {}
        if resume is True:
            found = find_checkpoint(self.path, fallback=fallback)
            # Killed before the first checkpoint was due: start again (the rows are archived
            # by prepare). A history longer than that without a checkpoint means the
            # checkpoints are gone: refuse rather than silently start from step 0.
            if found is None and logged >= config.training.checkpoint_every:
                raise ValueError(
                    f"cannot resume {str(self.path)!r}: its metrics.jsonl logs {logged} "
                    f"steps but {str(self.path / 'checkpoints')!r} holds no checkpoint "
                    f"(missing or deleted). Restore the checkpoints folder to continue; to "
                    f"start again from step 0, use another run dir (or move this folder's "
                    f"metrics.jsonl away). Nothing was changed."
                )
        else:
            found = Path(resume)
            if not found.is_dir():
                names = [p.name for p in existing] or "none"
                raise CheckpointError(
                    f"--resume-from {str(found)!r}: no such checkpoint folder (the checkpoints "
                    f"of {str(self.path)!r}: {names}); pass one of them, or --resume for the "
                    f"newest"
                )
        trained = checkpoint_config(found) if found is not None else None
        if trained is not None:
            saved = Config.from_dict(trained)
            source = f"the config checkpoint {found.name} was trained with"
        elif (self.path / CONFIG).exists():
            saved, source = load_config(self.path / CONFIG), "the run's config.json"
        else:
            return found, {}
        return found, check_same_experiment(saved, config, allow_change, source)

    def prepare(self, config: Config, checkpoint: Path | None, step: int, changes: dict) -> None:
        """Make the folder a run at ``step`` of ``config`` (the owner, after loading): finish
        removing what interrupted saves left, move newer checkpoints to ``abandoned/``, log
        the config changes, write ``config.json``, archive metrics rows past ``step``."""
        clean_unfinished(self.path)
        if checkpoint is not None:
            self._abandon_newer(step)
        if changes:
            record = {
                "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                "step": step,
                "checkpoint": str(checkpoint) if checkpoint else None,
                "changes": {k: {"from": a, "to": b} for k, (a, b) in changes.items()},
            }
            append_text(self.path / CHANGES, json.dumps(record) + "\n", fsync=True)
            self.log(f"config changes at step {step} logged in {self.path / CHANGES}: {record['changes']}")
        atomic_write_text(self.path / CONFIG, json.dumps(config.to_dict(), indent=2) + "\n")
        self._truncate_metrics(step)

    def _abandon_newer(self, step: int) -> None:
        """Resuming from an older checkpoint: move the newer ones (another branch of the run,
        e.g. a divergence) to ``abandoned/`` so they are neither resumed from nor deleted."""
        newer = [p for p in list_checkpoints(self.path) if int(p.name[5:]) > step]
        if not newer:
            return
        grids = [
            p
            for p in sorted((self.path / "samples").glob("step-*.png"))
            if p.stem[5:].isdigit() and int(p.stem[5:]) > step
        ]
        dest = self.subdir("abandoned") / time.strftime("%Y%m%d-%H%M%S")
        with writing(str(dest)):
            (dest / "samples").mkdir(parents=True, exist_ok=True)
            for p in newer:
                os.replace(p, dest / p.name)
            for p in grids:  # the branch's sample grids (they would be overwritten)
                os.replace(p, dest / "samples" / p.name)
        self.log(
            f"resuming from step {step}: moved the newer checkpoints "
            f"{[p.name for p in newer]} and {len(grids)} sample grids to {dest}"
        )

    def _truncate_metrics(self, step: int) -> None:
        """Move log lines past ``step`` (written after the checkpoint we resume from: they
        will be logged again) and a half-written last line (a kill mid-write) out of
        ``metrics.jsonl`` into ``metrics-dropped.jsonl``: nothing logged is ever deleted."""
        path = self.path / METRICS
        if not path.exists():
            return
        records, lines, broken = parse_metrics(path)
        keep = [ln for r, ln in zip(records, lines) if r["step"] <= step]
        dropped = [ln for r, ln in zip(records, lines) if r["step"] > step]
        if broken is not None:
            dropped.append(json.dumps({"half_written_line": broken}))
        if not dropped:
            return
        append_text(self.path / DROPPED, "".join(ln + "\n" for ln in dropped), fsync=True)
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))
        self.log(
            f"moved {len(dropped)} metrics.jsonl lines past step {step} (to be logged again) "
            f"to {self.path / DROPPED}"
        )

    # --- writing -----------------------------------------------------------------------------

    def subdir(self, name: str) -> Path:
        """The sub-folder ``name`` (created if absent); a symlink there is refused by name (the
        trainer never writes through a symlink it did not create)."""
        path = self.path / name
        with writing(str(path)):
            try:
                os.mkdir(path)
            except FileExistsError:
                pass
        if path.is_symlink() or not path.is_dir():
            raise RunFolderError(
                f"{str(path)!r} is {'a symlink' if path.is_symlink() else 'not a folder'}: the "
                f"trainer writes only into real folders of its run folder (to keep a run on "
                f"another disk, point --run-dir there, or link the whole runs/ folder)"
            )
        return path

    def append_metrics(self, record: dict) -> None:
        append_text(self.path / METRICS, json.dumps(record) + "\n")

    def save_checkpoint(
        self, step, model_state, ema_state, trainer_state, *, config: Config, health: dict
    ) -> Path:
        """Write checkpoint ``step`` (carrying ``config``), keeping the newest
        ``training.keep_checkpoints`` — never rotating away the last good checkpoint
        (:func:`last_good_checkpoint`) while ``health`` says this one is not good."""
        self.subdir("checkpoints")
        losses = [health["loss"]] if health["loss"] is not None else []
        for p in list_checkpoints(self.path):
            try:
                h = read_manifest(p).get("health")
            except CheckpointError:
                continue
            if isinstance(h, dict) and isinstance(h.get("loss"), float) and math.isfinite(h["loss"]):
                losses.append(h["loss"])
        protect = []
        if not is_healthy(health, min(losses) if losses else None):
            good = last_good_checkpoint(self.path)
            protect = [good] if good is not None else []
        return save_checkpoint(
            self.path,
            step,
            model_state,
            ema_state,
            trainer_state,
            keep=config.training.keep_checkpoints,
            health=health,
            protect=protect,
            config=config.to_dict(),
        )

    def recovery_advice(self, lr: float) -> str:
        """Names the last good checkpoint and the command that resumes from it."""
        good = last_good_checkpoint(self.path)
        if good is None:
            return (
                "There is no good checkpoint to resume from: start a new run with a lower "
                "training.lr or with training.grad_clip set."
            )
        return (
            f"Last good checkpoint (finite weights of sane size, loss not diverging): {good}. "
            f"Resume from it with a lower learning rate:\n  hdit-edu train --run-dir "
            f"{self.path} --resume-from {good} --allow-change training.lr --set "
            f"training.lr={lr / 10:g}\n(or clip gradients: --allow-change training.grad_clip "
            f"--set training.grad_clip=1.0)."
        )


# ----------------------------------------------------------------------------------------------
# Signals: a checkpoint labelled step N holds exactly step N's state
# ----------------------------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM (``signum``), raised at a step boundary (:class:`StepBoundary`)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StepBoundary:
    """SIGINT and SIGTERM stop training only at a step boundary.

    Inside :meth:`guard` (the trainer's ``fit``, main thread), a signal that arrives while a
    step is being committed (``with boundary.commit():`` the optimizer update, the EMA, the
    step counter, the log accumulators, a metrics row, a checkpoint) is held until the commit
    ends and then raised as :class:`Interrupted`; one that arrives elsewhere (the forward and
    backward passes, which change nothing but gradients that the next step clears) is raised
    at once. So the state the trainer saves on the way out is always that of a whole number of
    steps. Only default handlers are taken over (a notebook's or the user's own are left
    alone); after a SIGTERM the guard ends the process as SIGTERM's default would (exit 143),
    once the trainer has saved."""

    def __init__(self):
        self._committing = False
        self._pending: int | None = None
        self._terminate = False

    def _handle(self, signum, frame) -> None:
        if self._committing:
            self._pending = signum
            return
        self._terminate = signum == signal.SIGTERM
        raise Interrupted(signum)

    @contextlib.contextmanager
    def guard(self):
        saved = {}
        if threading.current_thread() is threading.main_thread():
            for sig, default in (
                (signal.SIGINT, signal.default_int_handler),
                (signal.SIGTERM, signal.SIG_DFL),
            ):
                if signal.getsignal(sig) is default:
                    saved[sig] = signal.signal(sig, self._handle)
        self._terminate = False
        try:
            yield
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
            if self._terminate and signal.SIGTERM in saved:
                self._terminate = False
                signal.raise_signal(signal.SIGTERM)  # the default action, now: exit 143

    @contextlib.contextmanager
    def commit(self):
        if self._committing:  # nested (a save inside a commit)
            yield
            return
        self._committing = True
        try:
            yield
        finally:
            self._committing = False
            pending, self._pending = self._pending, None
        if pending is not None:
            self._terminate = pending == signal.SIGTERM
            raise Interrupted(pending)
