"""Run folders that never lose data, one trainer per folder, recoverable divergence, and bad
input as named errors (issue 14). One test (at least) per class of failure the audit found.

Runs use a tiny HDiT (widths 32/64, one layer per level) on the 32×32 toy set, batch 8."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_cli_args
from conftest import tiny_config as tiny
from PIL import Image
from safetensors.torch import load_file, save_file

from hdit_edu import checkpoints
from hdit_edu.checkpoints import (
    CheckpointError,
    RunWriteError,
    clean_unfinished,
    is_healthy,
    list_checkpoints,
    save_checkpoint,
)
from hdit_edu.cli import main
from hdit_edu.configs import load_config
from hdit_edu.data import ImageFolderDataset
from hdit_edu.presets import get_config, toy
from hdit_edu.runfolder import RunLockedError
from hdit_edu.runfolder import hold as lock_run_dir
from hdit_edu.runfolder import release as unlock_run_dir
from hdit_edu.runs import load_run, read_metrics
from hdit_edu.training import ConfigChangeError, NonFiniteLossError, Trainer

ROOT = Path(__file__).resolve().parents[1]
CLI_CMD = [sys.executable, "-m", "hdit_edu.cli"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", HDIT_PROFILE="cpu", PYTHONPATH=str(ROOT))
TINY_ARGS = tiny_cli_args(sample_steps=2)


def tiny_config(**training):
    """A log record every step, a checkpoint every 2, no sample grids."""
    return tiny(**({"log_every": 1, "checkpoint_every": 2, "sample_every": 0} | training))


@pytest.fixture(scope="module")
def four_step_run(tmp_path_factory, toy_data):
    """A 4-step run with checkpoints at steps 2 and 4 (copied by each test that changes it)."""
    run = tmp_path_factory.mktemp("runs") / "four"
    trainer = Trainer(tiny_config(), run, dataset=toy_data, progress=False)
    trainer.fit(4)
    unlock_run_dir(run)
    return run


@pytest.fixture
def run(four_step_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(four_step_run, dst)
    return dst


def rows(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.err + captured.out


# --- the lock ----------------------------------------------------------------------------------


def test_two_trainers_started_at_once_one_runs_the_other_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "shared"
    cmd = [*CLI_CMD, "train", *TINY_ARGS, "--steps", "40", "--run-dir", str(run)]
    procs = [
        subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] == 2, [o[1][-2000:] for o in outs]
    winner = next(p for p in procs if p.returncode == 0)
    loser_err = next(err for p, (_, err) in zip(procs, outs) if p.returncode != 0)
    assert f"pid {winner.pid}" in loser_err and socket.gethostname() in loser_err
    assert "in use by" in loser_err and "Traceback" not in loser_err
    steps = [json.loads(line)["step"] for line in rows(run / "metrics.jsonl")]
    assert steps == list(range(1, 41))  # one writer: no interleaved or repeated rows


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    run = tmp_path / "stale"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hdit_edu.runfolder import hold; "
         "hold(sys.argv[1]); print('locked', flush=True); time.sleep(300)", str(run)],
        env=ENV, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError, match=f"pid {holder.pid} on host"):
        lock_run_dir(run)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock_run_dir(run)  # the kernel released the flock with the process
    record = json.loads((run / ".lock").read_text())
    assert record["pid"] == os.getpid()
    unlock_run_dir(run)


# --- resume never destroys a run folder -----------------------------------------------------------


def test_resume_without_checkpoints_refuses_and_keeps_the_history(run, toy_data):
    shutil.rmtree(run / "checkpoints")
    before = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(ValueError, match="logs 4 steps but .* holds no checkpoint"):
        Trainer(tiny_config(), run, dataset=toy_data, progress=False, resume=True)
    assert (run / "metrics.jsonl").read_bytes() == before
    with pytest.raises(ValueError, match="already holds a metrics.jsonl"):
        Trainer(tiny_config(), run, dataset=toy_data, progress=False)  # a fresh run
    assert (run / "metrics.jsonl").read_bytes() == before


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_again(run, toy_data):
    shutil.rmtree(run / "checkpoints")
    old_rows = rows(run / "metrics.jsonl")
    config = tiny_config(checkpoint_every=10)  # no checkpoint was due in the 4 logged steps
    trainer = Trainer(config, run, dataset=toy_data, progress=False, resume=True)
    assert trainer.step == 0
    assert rows(run / "metrics.jsonl") == [] and rows(run / "metrics-dropped.jsonl") == old_rows


def test_resume_from_an_older_checkpoint_moves_rather_than_deletes(run, toy_data):
    old_rows = rows(run / "metrics.jsonl")
    trainer = Trainer(
        tiny_config(),
        run,
        dataset=toy_data,
        progress=False,
        resume=run / "checkpoints/step-00000002",
    )
    assert trainer.step == 2
    assert rows(run / "metrics.jsonl") == old_rows[:2]
    assert rows(run / "metrics-dropped.jsonl") == old_rows[2:]
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002"]
    (abandoned,) = (run / "abandoned").iterdir()
    assert (abandoned / "step-00000004" / "model.safetensors").is_file()


def test_a_half_written_last_metrics_line_is_repaired_on_resume(run, toy_data):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.1')  # a kill in the middle of a write
    trainer = Trainer(tiny_config(), run, dataset=toy_data, progress=False, resume=True)
    trainer.fit(5)
    steps = [r["step"] for r in read_metrics(run)]
    assert steps == [1, 2, 3, 4, 5]
    assert json.loads(rows(run / "metrics-dropped.jsonl")[0]) == {
        "half_written_line": '{"step": 5, "loss": 0.1'
    }


def test_a_corrupt_metrics_line_in_the_middle_is_named(run, toy_data):
    lines = rows(run / "metrics.jsonl")
    lines[1] = "garbage{"
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl' is corrupt: line 2 is not valid JSON"):
        Trainer(tiny_config(), run, dataset=toy_data, progress=False, resume=True)
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(run)


# --- checkpoint files: atomic removal, leftovers, a full disk --------------------------------------


def tiny_state(value: float) -> dict:
    return {"w": torch.full((4,), value)}


def test_removing_a_checkpoint_cut_short_leaves_no_visible_half_checkpoint(tmp_path, monkeypatch):
    for step in (1, 2):
        save_checkpoint(tmp_path, step, tiny_state(step), tiny_state(step), {"step": step}, keep=5)

    real_rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):  # deletes one file, then the process dies
        if not Path(path).is_dir():
            return real_rmtree(path, *args, **kwargs)
        sorted(Path(path).iterdir())[0].unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 3, tiny_state(3), tiny_state(3), {"step": 3}, keep=2)
    monkeypatch.undo()
    visible = list_checkpoints(tmp_path)
    assert [p.name for p in visible] == ["step-00000002", "step-00000003"]
    for p in visible:
        checkpoints.verify_checkpoint(p)  # complete, not half-deleted
    (removed,) = clean_unfinished(tmp_path)  # the next start finishes the removal
    assert removed.name == f".trash-step-00000001-{os.getpid()}" and not removed.exists()


def test_leftover_temp_folders_of_dead_processes_go_a_live_savers_stay(tmp_path):
    root = tmp_path / "checkpoints"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = root / f".tmp-step-00000008-{sleeper.pid}"
        dead = root / ".tmp-step-00000008-999999999"
        for p in (live, dead):
            p.mkdir(parents=True)
        assert clean_unfinished(tmp_path) == [dead]
        assert live.is_dir() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a real tmpfs of ``size`` (``"1m"``) mounted in ``tmp_path`` (the
    test is skipped, saying why, where mounting is not permitted), unmounted afterwards."""
    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        for run in folder.iterdir():
            unlock_run_dir(run)
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.parametrize("failing", ["model.safetensors", "trainer_state.pt"])
def test_a_real_full_disk_names_the_file_and_keeps_the_previous_checkpoint(small_disk, failing):
    """A real full file system (1 MB tmpfs): safetensors raises ``SafetensorError`` and
    ``torch.save`` a ``RuntimeError`` when they write a file themselves; neither is an
    ``OSError``. The checkpoint's files are written by ``checkpoints`` itself, so the error is
    the file system's own ``ENOSPC``, naming the file."""
    disk = small_disk("1m")
    previous = save_checkpoint(disk, 1, tiny_state(1), tiny_state(1), {"step": 1})
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    big = {"w": torch.zeros(300_000)}  # 1.2 MB
    model, trainer = (big, {"step": 2}) if failing == "model.safetensors" else (
        tiny_state(2), {"step": 2, "big": big["w"]}
    )
    with pytest.raises(RunWriteError) as info:
        save_checkpoint(disk, 2, model, tiny_state(2), trainer)
    assert f"step-00000002/{failing}" in str(info.value) and "No space left" in str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert [p.name for p in (disk / "checkpoints").iterdir()] == ["step-00000001"]


@pytest.mark.parametrize(
    ("size", "failing"), [("256k", "model.safetensors"), ("1m", "trainer_state.pt")]
)
def test_a_training_run_on_a_real_full_disk_stops_with_a_named_error(
    small_disk, capsys, size, failing
):
    run = small_disk(size) / "run"
    rc, out = cli(capsys, "train", *TINY_ARGS, "--steps", "4", "--run-dir", run)
    assert rc == 1 and "Traceback" not in out, out
    assert f"step-00000004/{failing}" in out and "No space left on device" in out, out
    assert list((run / "checkpoints").iterdir()) == []  # no half-written checkpoint


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_convert_onto_a_real_full_disk_names_the_file_and_leaves_no_half_file(
    run, small_disk, capsys, suffix
):
    """``convert to-k-diffusion`` writes its output whole or not at all: on a real tmpfs filled
    to its last 8 KiB the error names the output and no file is left under its name."""
    disk = small_disk("1m")
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * (free - 8192))
    out = disk / f"kd{suffix}"
    rc, text = cli(capsys, "convert", "to-k-diffusion", run, "-o", out)
    assert rc == 1 and "Traceback" not in text, text
    assert str(out.name) in text and "No space left on device" in text, text
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


# --- divergence ---------------------------------------------------------------------------------


def test_health_test_of_a_last_good_checkpoint():
    ok = {"max_abs_weight": 12.0, "loss": 0.14, "reference_loss": 0.12}
    assert is_healthy(ok)
    assert not is_healthy(ok | {"max_abs_weight": 1e10})  # the diverged checkpoint
    assert not is_healthy(ok | {"max_abs_weight": float("nan")})
    assert not is_healthy(ok | {"loss": 1.3})  # > 10 × the step-1 loss: diverging, finite
    assert not is_healthy(ok | {"loss": float("inf")})
    assert is_healthy(ok | {"loss": 1.1})
    assert not is_healthy(ok | {"reference_loss": None}, best_loss=0.01)  # > 10 × best
    assert is_healthy(ok | {"loss": None})  # no steps since the previous checkpoint


def test_a_malformed_health_record_is_ignored_not_fatal(run, toy_data):
    manifest_path = run / "checkpoints/step-00000004/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["health"] = "oops"
    manifest_path.write_text(json.dumps(manifest))
    assert checkpoints.last_good_checkpoint(run) == run / "checkpoints/step-00000002"
    Trainer(tiny_config(), run, dataset=toy_data, progress=False, resume=True).fit(6)
    assert checkpoints.last_good_checkpoint(run) == run / "checkpoints/step-00000006"


class PoisonedData:
    """The toy set with NaN images: any step that reads it has a NaN loss."""

    def __init__(self, data):
        self.data, self.num_classes = data, data.num_classes

    def __len__(self):
        return len(self.data)

    def batch(self, indices):
        images, classes = self.data.batch(indices)
        return torch.full_like(images, float("nan")), classes


def test_divergence_names_the_last_healthy_checkpoint_and_keeps_it(run, toy_data):
    trainer = Trainer(
        tiny_config(keep_checkpoints=1), run, dataset=toy_data, progress=False, resume=True
    )
    with torch.no_grad():  # a divergence in progress: weights of ~1e10, the loss still finite
        next(trainer.model.parameters()).mul_(1e10)
    trainer.step = 6
    trainer.save()  # step 6: unhealthy; with keep=1 it would have deleted step 4
    assert [p.name for p in list_checkpoints(run)] == ["step-00000004", "step-00000006"]
    trainer.dataset = PoisonedData(toy_data)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(8)
    message = str(info.value)
    good = run / "checkpoints/step-00000004"
    assert f"Last good checkpoint (finite weights of sane size, loss not diverging): {good}" in (
        message
    )
    command = (
        f"hdit-edu train --run-dir {run} --resume-from {good} --allow-change training.lr "
        f"--set training.lr=5e-05"
    )
    assert command in message


def test_resume_accepts_an_allowed_recoverable_change_and_logs_it(run, toy_data):
    changed = tiny_config(lr=1e-4)
    with pytest.raises(ConfigChangeError, match=r"--allow-change training.lr") as info:
        Trainer(changed, run, dataset=toy_data, progress=False, resume=True)
    assert info.value.recoverable == ["training.lr"] and info.value.refused == []
    trainer = Trainer(
        changed, run, dataset=toy_data, progress=False, resume=True, allow_change=["training.lr"]
    )
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]  # the new lr, not the saved one
    assert sorted(set(lrs)) == pytest.approx(sorted({1e-4, 1e-4 / 3}))
    (record,) = [json.loads(line) for line in rows(run / "config-changes.jsonl")]
    assert record["step"] == 4 and record["changes"] == {"training.lr": {"from": 5e-4, "to": 1e-4}}
    assert load_config(run / "config.json").training.lr == 1e-4


def test_resume_refuses_experiment_changes_even_when_allowed(run, toy_data):
    wider = tiny_config()
    wider.model.levels[0].width = 48
    with pytest.raises(ValueError, match=r"not a recoverable field"):
        Trainer(wider, run, dataset=toy_data, progress=False, resume=True,
                allow_change=["model.levels.0.width"])  # fmt: skip
    with pytest.raises(ConfigChangeError, match=r"\['model.levels.0.width'\], which change"):
        Trainer(wider, run, dataset=toy_data, progress=False, resume=True)


def test_cli_prints_the_exact_command_for_an_unallowed_change(run, capsys):
    argv = ["train", "--run-dir", run, "--resume", "--no-progress", "--set", "training.lr=1e-4"]
    rc, text = cli(capsys, *argv)
    assert rc == 2
    expected = " ".join(map(str, argv)) + " --allow-change training.lr"
    assert f"hdit-edu {expected}" in text


# --- corrupt run-folder files, for every reader ----------------------------------------------------


def test_readers_that_need_no_trainer_state_do_not_require_it(run, tmp_path, capsys):
    (run / "checkpoints/step-00000004/trainer_state.pt").unlink()
    config, denoiser = load_run(run)
    assert config.model.levels[0].width == 32
    rc, text = cli(capsys, "sample", "--run", run, "--n", "2", "--steps", "2", "--out",
                   tmp_path / "g.png")  # fmt: skip
    assert rc == 0 and (tmp_path / "g.png").is_file(), text
    rc, text = cli(capsys, "convert", "to-k-diffusion", run, "-o", tmp_path / "kd.safetensors")
    assert rc == 0, text
    with pytest.raises(CheckpointError, match="trainer_state.pt' is missing"):
        Trainer(tiny_config(), run, progress=False, resume=True)


def rewrite_manifest(ckpt: Path) -> None:
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"] = {n: checkpoints._sha256(ckpt / n) for n in manifest["files"]}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, named",
    [
        ("manifest-shape", "manifest.json' is corrupt"),
        ("manifest-bytes", "manifest.json' is corrupt"),
        ("ema-bytes", "ema.safetensors' is corrupt"),
        ("config-bytes", "config.json' is not UTF-8"),
        ("config-shape", "config.json': config: expected a JSON object"),
    ],
)
def test_corrupt_files_are_named_by_every_reader(run, tmp_path, capsys, damage, named):
    ckpt = run / "checkpoints/step-00000004"
    if damage == "manifest-shape":
        (ckpt / "manifest.json").write_text('{"step": 4, "files": 3}')
    elif damage == "manifest-bytes":
        (ckpt / "manifest.json").write_bytes(bytes(range(256)))
    elif damage == "ema-bytes":  # unreadable, though its SHA-256 matches the manifest
        (ckpt / "ema.safetensors").write_bytes(b"\x00" * 4000)
        rewrite_manifest(ckpt)
    elif damage == "config-bytes":
        (run / "config.json").write_bytes(b"\xff\xfe" + bytes(range(200)))
    else:
        (run / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=named):
        load_run(run)
    readers = [
        ["sample", "--run", run, "--n", "2", "--steps", "2", "--out", tmp_path / "g.png"],
        ["fid", "--run", run, "--n", "8", "--steps", "2"],
        ["train", "--run-dir", run, "--resume", "--steps", "5", "--no-progress"],
        ["convert", "to-k-diffusion", run, "-o", tmp_path / "kd.safetensors"],
    ]
    for argv in readers:
        rc, text = cli(capsys, *argv)
        assert rc == 2 and named in text, (argv[0], text)


def test_an_unreadable_trainer_state_never_suggests_weights_only_false(run, capsys):
    ckpt = run / "checkpoints/step-00000004"
    (ckpt / "trainer_state.pt").write_bytes(b"PK\x03\x04" + bytes(500))
    rewrite_manifest(ckpt)
    rc, text = cli(capsys, "train", "--run-dir", run, "--resume", "--no-progress")
    assert rc == 2 and "trainer_state.pt' is corrupt" in text
    assert (
        "weights_only=False" not in text.replace(" ", "")
        and "weights_only set to False" not in text
    )


def test_nan_weights_give_an_error_not_nan_images(run, tmp_path, capsys):
    ckpt = run / "checkpoints/step-00000004"
    for name in ("ema.safetensors", "model.safetensors"):
        weights = load_file(ckpt / name)
        save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, ckpt / name)
    rewrite_manifest(ckpt)
    out = tmp_path / "nan.png"
    rc, text = cli(capsys, "sample", "--run", run, "--n", "2", "--steps", "2", "--out", out)
    assert rc == 2 and "holds NaN or inf weights" in text and not out.exists()


def test_a_training_run_never_writes_nan_sample_grids(run, toy_data):
    trainer = Trainer(
        tiny_config(), run, dataset=toy_data, progress=False, resume=True, sample_steps=2,
        n_samples=2,
    )  # fmt: skip
    with torch.no_grad():
        for p in trainer.ema.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="samples at step 4 hold NaN"):
        trainer.save_samples()
    assert not (run / "samples" / "step-00000004.png").exists()


# --- flags: the flag's name and its domain, before any work ----------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "--run", "R", "--n", "0"], "argument --n: got '0'; allowed: an integer >= 1"),
        (["fid", "--run", "R", "--n", "1"], "argument --n: got '1'; allowed: an integer >= 2"),
        (["sample", "--run", "R", "--steps", "-1"], "argument --steps: got '-1'"),
        (["sample", "--run", "R", "--cfg", "nan"], "argument --cfg: got 'nan'; allowed: a finite"),
        (["fid", "--run", "R", "--cfg", "inf"], "argument --cfg: got 'inf'"),
        (["sample", "--run", "R", "--device", "bogus"], "argument --device: got 'bogus'"),
        (["train", "--config", "toy", "--workers", "-1"], "argument --workers: got '-1'"),
        (["flops", "--config", "E", "--resolution", "0"], "argument --resolution: got '0'"),
        (["classifier", "train", "--lr", "nan"], "argument --lr: got 'nan'"),
    ],
)
def test_flag_values_outside_their_domain_are_named(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_named(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--run", "R", "--device", "cuda"])
    assert "argument --device: got 'cuda' but CUDA is not available" in capsys.readouterr().err


def test_out_of_range_set_indices_and_bad_output_paths_are_named(four_step_run, tmp_path, capsys):
    for index in ("5", "-1", "x"):
        rc, text = cli(capsys, "train", *TINY_ARGS, "--set", f"model.levels.{index}.depth=1",
                       "--run-dir", tmp_path / f"r{index}")  # fmt: skip
        assert rc == 2 and f"model.levels[{index}] does not exist; allowed indices: 0 … 1" in text
    (tmp_path / "folder.png").mkdir()
    base = ["sample", "--run", four_step_run, "--n", "2", "--steps", "2"]
    rc, text = cli(capsys, *base, "--out", tmp_path / "folder.png")
    assert rc == 2 and "--out" in text and "is a folder" in text
    rc, text = cli(capsys, *base, "--out", four_step_run / "config.json" / "x.png")
    assert rc == 2 and "is a file, not a folder" in text
    rc, text = cli(capsys, *base, "--class", "9")
    assert rc == 2 and "--class 9: the model" in text and "allowed: 0 … 8" in text
    assert not (four_step_run / "samples").exists()


# --- data ----------------------------------------------------------------------------------------


def test_16_bit_pngs_are_read_at_their_full_scale(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as image:
        assert image.mode.startswith("I")  # Pillow's 16-bit grayscale
    x, _ = ImageFolderDataset(tmp_path, 32, class_subfolders=False)[0]
    expected = torch.from_numpy(np.rint(ramp / 257.0) / 127.5 - 1).float()
    assert torch.allclose(x[0], expected, atol=1e-6) and torch.equal(x[0], x[2])


def test_an_empty_class_folder_is_named(tmp_path, capsys):
    data = tmp_path / "classes"
    assert main(["data", "make-toy", str(data), "--n", "32"]) == 0
    empty = sorted(p for p in data.iterdir() if p.is_dir())[3]
    for f in empty.iterdir():
        f.unlink()
    rc, text = cli(capsys, "train", *TINY_ARGS, "--steps", "1", "--data", data, "--run-dir",
                   tmp_path / "run")  # fmt: skip
    assert rc == 2 and "has 7 classes" in text and str(empty) in text


def test_data_check_and_skip_bad_images_from_the_cli(tmp_path, capsys):
    data = tmp_path / "imgs"
    assert main(["data", "make-toy", str(data), "--n", "32"]) == 0
    capsys.readouterr()
    bad = sorted(data.rglob("*.png"))[5]
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    rc, text = cli(capsys, "data", "check", data)
    assert rc == 1 and f"bad image: {bad}" in text and "32 image files, 31 readable" in text
    common = [*TINY_ARGS, "--steps", "1", "--data", data]
    rc, text = cli(capsys, "train", *common, "--check-data", "--run-dir", tmp_path / "a")
    assert rc == 2 and str(bad) in text and not (tmp_path / "a" / "metrics.jsonl").exists()
    rc, text = cli(capsys, "train", *common, "--skip-bad-images", "--check-data",
                   "--run-dir", tmp_path / "b")  # fmt: skip
    assert rc == 0 and "checked 32 images: 1 skipped" in text


# --- config files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda d: d["model"]["levels"][0].pop("depth"),
            "levels[0]: missing required keys ['depth']",
        ),
        (lambda d: d["training"].__setitem__("betas", 0.9), "training.betas: got 0.9"),
        (lambda d: d["model"].__setitem__("levels", {"a": 1}), "levels: expected a list"),
    ],
)
def test_config_files_with_bad_structure_are_named(tmp_path, mutate, message):
    d = toy().to_dict()
    d["training"]["betas"] = list(d["training"]["betas"])
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=re.escape(f"config file '{path}'")) as info:
        get_config(str(path))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x89PNG\r\n\x1a\n\x00\xff", "is not UTF-8 text"),
        (b"", "is not valid JSON"),
        (b"[]", "expected a JSON object"),
    ],
)
def test_config_files_that_are_not_configs_are_named(tmp_path, content, message):
    path = tmp_path / "c.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        get_config(str(path))
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        get_config(str(folder))
