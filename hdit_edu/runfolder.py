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
   (:func:`append_line`) or replaced by rename (:func:`replace_file`), and the sub-folders a
   writer uses are refused when they are symlinks.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

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
        replace_file(self.path, LOCK_FILE, (json.dumps(holder_info()) + "\n").encode())

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
# Writes that never follow a symlink they did not create
# ----------------------------------------------------------------------------------------------


def replace_file(folder: str | Path, name: str, data: bytes) -> None:
    """Write ``folder/name`` atomically: a new temporary file (``O_EXCL``: never an existing
    one or a symlink), fsync'ed, then renamed over ``name`` (a symlink there is replaced, not
    followed). A kill or a full disk leaves the old file intact."""
    folder = Path(folder)
    tmp = folder / f".tmp-{name}-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        os.unlink(tmp)  # our own leftover (same pid and thread)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
