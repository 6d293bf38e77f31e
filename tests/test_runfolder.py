"""The run folder's claim (issue 27): one owner at a time, by the real mechanism — second
processes, deleted and replaced ``.lock`` files, symlinks, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hdit_edu.runfolder import (
    LOCK_FILE,
    Claim,
    RunFolderError,
    RunLockedError,
    claim,
    hold,
    read_holder,
)

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
# A second process that claims a folder, says so, and holds it until killed.
HOLDER = (
    "import sys, time; from hdit_edu.runfolder import claim; c = claim(sys.argv[1]); "
    "print('held' if c else 'refused', flush=True); time.sleep(300)"
)


@pytest.fixture
def holder(tmp_path):
    """Start a real second process holding a claim of ``tmp_path/run``."""
    procs = []

    def start(folder: Path) -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)], env=ENV, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_claim_is_exclusive_across_processes_and_names_the_holder(tmp_path, holder):
    run = tmp_path / "a" / "b" / "run"  # parents are created
    p = holder(run)
    assert claim(run) is None
    with pytest.raises(RunLockedError, match=f"pid {p.pid} on host"):
        hold(run)
    p.send_signal(signal.SIGKILL)  # the kernel releases a dead process's claim
    p.wait()
    with claim(run) as c:
        assert isinstance(c, Claim) and c.held
        assert read_holder(run)["pid"] == os.getpid()
    assert not c.held


def test_deleting_or_replacing_the_lock_file_does_not_let_a_second_process_in(tmp_path, holder):
    run = tmp_path / "run"
    holder(run)
    (run / LOCK_FILE).unlink()
    assert claim(run) is None
    (run / LOCK_FILE).write_text("{}")  # a new file on a new inode
    assert claim(run) is None
    (run / LOCK_FILE).unlink()
    (run / LOCK_FILE).symlink_to(tmp_path / "elsewhere")
    assert claim(run) is None
    assert not (tmp_path / "elsewhere").exists()  # the refused claim wrote nothing
    assert (run / LOCK_FILE).is_symlink()  # and changed nothing in the folder


def test_a_lock_symlink_is_replaced_never_followed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run / LOCK_FILE).symlink_to(victim)
    with claim(run):
        assert not (run / LOCK_FILE).is_symlink()
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert victim.read_text() == "precious\n"


def test_a_symlinked_run_folder_and_a_lock_folder_are_named(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(RunFolderError, match="is a symlink"):
        claim(tmp_path / "link")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="not a folder"):
        claim(tmp_path / "file")
    (real / LOCK_FILE).mkdir()
    with pytest.raises(RunFolderError, match=r"\.lock' is a folder"):
        claim(real)
    (real / LOCK_FILE).rmdir()
    with claim(real) as c:  # the failed claim was released: it can be taken now
        assert c.held


def test_wait_blocks_until_the_holder_dies_and_timeout_gives_up(tmp_path, holder):
    run = tmp_path / "run"
    p = holder(run)
    t0 = time.monotonic()
    assert claim(run, wait=True, timeout=0.3) is None
    assert 0.25 < time.monotonic() - t0 < 3
    threading.Timer(0.5, p.kill).start()
    with claim(run, wait=True, timeout=30) as c:
        assert c.held and p.wait() != 0


def test_threads_of_one_process_exclude_each_other(tmp_path):
    run = tmp_path / "run"
    got = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        got.append(claim(run))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = [c for c in got if c is not None]
    assert len(held) == 1
    held[0].release()


def test_a_folder_removed_by_its_last_holder_is_not_claimed_as_a_ghost(tmp_path):
    """Claiming re-checks, after the flock, that the folder is still at ``path``: a claim on
    a folder its holder has just deleted would protect nothing."""
    run = tmp_path / "run"
    first = claim(run)
    first.clear()
    os.rename(run, tmp_path / "gone")  # e.g. an `rm -r` of the whole folder by its holder
    first.release()
    with claim(run) as second:
        assert os.stat(run).st_ino != os.stat(tmp_path / "gone").st_ino
        assert second.held


def test_clear_removes_everything_but_the_holder_record_and_never_follows_symlinks(tmp_path):
    run = tmp_path / "run"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    with claim(run) as c:
        (run / "checkpoints" / "step-1").mkdir(parents=True)
        (run / "metrics.jsonl").write_text("{}\n")
        (run / "link").symlink_to(outside)
        c.clear()
        assert sorted(os.listdir(run)) == [LOCK_FILE]
    assert (outside / "keep.txt").exists()
