"""One writer per run folder: an exclusive advisory lock held for the life of the process.

A trainer that writes into ``runs/<name>/`` first takes :func:`lock_run_dir`: an exclusive
``fcntl.flock`` on ``runs/<name>/.lock``, which also records who holds it (pid, host, start
time, command). A second trainer on the same folder is refused with :class:`RunLockedError`
naming that holder, instead of interleaving metrics rows and deleting the checkpoints the
first one is resuming from.

The kernel drops a ``flock`` when its process dies (SIGKILL included), so a lock left by a
dead process never blocks: the next trainer takes it and overwrites the stale holder record.
``flock`` locks belong to an open file, so one process taking the same folder twice (a
notebook that builds a second Trainer) gets the lock it already holds. On file systems without
``flock`` (some network mounts) the lock is skipped with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

LOCK_FILE = ".lock"

_held: dict[str, int] = {}  # realpath of a run folder -> the open lock file descriptor


class RunLockedError(ValueError):
    """Another live process holds the run folder's lock (the message names it)."""


def holder_info() -> dict:
    """What the lock file says about this process: pid, host, start time, command."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(sys.argv),
    }


def read_holder(run_dir: str | Path) -> dict | None:
    """The holder record of ``run_dir/.lock`` (None if absent or unreadable)."""
    try:
        record = json.loads((Path(run_dir) / LOCK_FILE).read_text())
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


def lock_run_dir(run_dir: str | Path) -> None:
    """Take the exclusive lock of ``run_dir`` (created if missing) for the rest of this
    process's life, or raise :class:`RunLockedError` naming the process that holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(run_dir)
    if key in _held:
        return
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunLockedError(
                f"run dir {str(run_dir)!r} is in use by {describe_holder(read_holder(run_dir))}: "
                f"only one trainer may write a run folder. Wait for it to finish (or stop it), "
                f"or choose another --run-dir"
            ) from None
        warnings.warn(
            f"could not lock run dir {str(run_dir)!r} ({e.strerror}): the file system does not "
            f"support flock; make sure no other trainer writes this folder",
            stacklevel=2,
        )
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder_info()) + "\n").encode())
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        raise OSError(
            e.errno, f"could not write {str(run_dir / LOCK_FILE)!r}: {e.strerror}"
        ) from None
    _held[key] = fd  # kept open (and locked) until the process exits or unlock_run_dir


def unlock_run_dir(run_dir: str | Path) -> None:
    """Release this process's lock of ``run_dir`` (no-op if it holds none)."""
    fd = _held.pop(os.path.realpath(Path(run_dir)), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
