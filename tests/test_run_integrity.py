"""Crash-consistent run folders and experiments (issue 27), each class of failure tried with
its real mechanism: second processes on one folder, real SIGINT / SIGTERM / SIGKILL at random
and at the worst moments, deleted and symlinked files, hand-edited configs.

Training runs use a micro HDiT (widths 16/32, batch 4) on 256 toy images, one thread."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_cli_args

from hdit_edu.ablation import read_record, record_missing
from hdit_edu.checkpoints import RunWriteError, list_checkpoints, load_checkpoint
from hdit_edu.cli import main
from hdit_edu.configs import Config
from hdit_edu.runfolder import ConfigChangeError, RunFolderError, release
from hdit_edu.toy import ToyDataset
from hdit_edu.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
CLI_CMD = [sys.executable, "-m", "hdit_edu.cli"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", HDIT_PROFILE="cpu", PYTHONPATH=str(ROOT))
TINY_ARGS = tiny_cli_args(sample_steps=2)
# ablate at three steps, a small evaluation (tests/test_ablation.py's budget)
ABLATE = ["ablate", "--profile", "cpu", "--train-steps", "3", "--n-eval", "16", "--sample-steps",
          "2", "--n-loss", "32", "--sample-batch", "16", "--no-progress"]  # fmt: skip

MICRO = """
from hdit_edu.presets import toy
from hdit_edu.profiles import ToyScale, to_toy_scale

def micro_config(**training):
    config = to_toy_scale(
        toy(),
        ToyScale(widths=(16, 32), depths=(1, 1), head_dim=8, mapping_width=16, batch_size=4),
    )
    config.training.log_every = 1
    config.training.sample_every = 0
    for key, value in training.items():
        setattr(config.training, key, value)
    return config
"""
_namespace: dict = {}
exec(MICRO, _namespace)  # the same function here and in the subprocesses
micro_config = _namespace["micro_config"]


def micro_data():
    return ToyDataset("train", resolution=32, size=256)


def rows(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.err + captured.out


# --- two processes on one experiment ----------------------------------------------------------


def test_two_ablate_processes_on_one_folder_train_every_run_exactly_once(tmp_path):
    """The user with two cores starts ``ablate`` twice on one output folder: each run is
    claimed by one process; the other passes it by and waits for it at the end. Every run
    is trained once (its one metrics row, at step 3, once; one evaluation line in the two logs) and
    every record is complete."""
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    args = [*ABLATE, "--steps", "C,D,E", "--seeds", "0", "--out", str(out), "--run-dir", str(ckpt)]
    procs = [
        subprocess.Popen([*CLI_CMD, *args], env=ENV, cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
    logs = "".join(o for o, _ in outs)
    for name in ("C-s0", "D-s0", "E-s0"):
        assert logs.count(f'{{"run": "{name}"') == 1, logs  # evaluated by one process only
        assert [r["step"] for r in rows(ckpt / name / "metrics.jsonl")] == [3]  # one writer
        record = read_record(out / f"{name}.json")
        assert record["status"] == "done" and record_missing(record, out) == []
    # each process met each run the other trained: in progress (left to it) or done (skipped)
    assert logs.count("left to it") + logs.count("is done: skipped") >= 3, logs


def test_ablate_resume_after_a_kill_during_the_final_evaluation_completes_the_record(tmp_path):
    """SIGKILL while the final evaluation runs (the final checkpoint is on disk, the record
    not yet done). ``ablate --resume`` makes the evaluation up: the record is done only with
    its final evaluation and grid; a record that says done without them (what the old code
    wrote) is run again rather than skipped."""
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    args = [*ABLATE, "--steps", "C", "--seeds", "0", "--out", str(out), "--run-dir", str(ckpt)]
    slow_eval = ["--n-eval", "256", "--sample-steps", "6"]  # seconds of evaluation to land in
    proc = subprocess.Popen([*CLI_CMD, *args, *slow_eval], env=ENV, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    final = ckpt / "C-s0" / "checkpoints" / "step-00000003"
    deadline = time.monotonic() + 300
    while not final.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert final.is_dir()
    record = read_record(out / "C-s0.json")
    assert record is None or record["status"] == "running"  # killed before it said done

    resumed = subprocess.run([*CLI_CMD, *args, *slow_eval, "--resume"], env=ENV, cwd=ROOT,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = read_record(out / "C-s0.json")
    assert record["status"] == "done" and record_missing(record, out) == []
    assert record["final"]["step"] == 3 and record["final"]["n_samples"] == 256

    # the old bug's record: done, no evaluations, final null -> run again, not skipped
    (out / "C-s0.json").write_text(json.dumps(record | {"evaluations": [], "final": None}))
    (out / "C-s0.png").unlink()
    again = subprocess.run([*CLI_CMD, *args, *slow_eval, "--resume"], env=ENV, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "says done but lacks the evaluation at step 3" in again.stdout
    redone = read_record(out / "C-s0.json")
    assert redone["status"] == "done" and redone["final"]["fid"] == record["final"]["fid"]


def test_a_corrupt_ablation_record_is_named(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "C-s0.json").write_text('{"status": "do')
    rc, text = cli(capsys, *ABLATE, "--steps", "C", "--seeds", "0", "--out", out,
                   "--run-dir", tmp_path / "ckpt")  # fmt: skip
    assert rc == 2 and "C-s0.json' is corrupt" in text and "Traceback" not in text


# --- signals ---------------------------------------------------------------------------------


def fingerprint(model_state: dict, ema_state: dict, optimizer_state: dict) -> str:
    """SHA-256 over every tensor of a trainer's state (weights, EMA, AdamW moments and steps)."""
    h = hashlib.sha256()
    for state in (model_state, ema_state):
        for k in sorted(state):
            h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    for i in sorted(optimizer_state["state"]):
        for k in ("step", "exp_avg", "exp_avg_sq"):
            h.update(torch.as_tensor(optimizer_state["state"][i][k]).cpu().numpy().tobytes())
    return h.hexdigest()


def checkpoint_fingerprint(path: Path) -> tuple[int, set, str]:
    ckpt = load_checkpoint(path)
    opt = ckpt["trainer"]["optimizer"]
    steps = {float(s["step"]) for s in opt["state"].values()}
    return ckpt["trainer"]["step"], steps, fingerprint(ckpt["model"], ckpt["ema"], opt)


def test_sigint_right_after_the_optimizer_step_saves_a_whole_step(tmp_path):
    """The worst moment, made certain: a real SIGINT sent from AdamW's post-step hook (the
    update done, the step counter and the EMA not yet). The checkpoint saved on the way out is
    labelled with the step whose state it holds."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    run = tmp_path / "run"
    trainer = Trainer(micro_config(checkpoint_every=100, keep_checkpoints=100), run,
                      dataset=micro_data(), progress=False)  # fmt: skip
    calls = []

    def interrupt(optimizer, args, kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    handle = trainer.optimizer.register_step_post_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(10)
    handle.remove()
    release(run)
    assert trainer.step == 3 and [p.name for p in list_checkpoints(run)] == ["step-00000003"]
    step, adam_steps, _ = checkpoint_fingerprint(run / "checkpoints" / "step-00000003")
    assert step == 3 and adam_steps == {3.0}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


SIGINT_CHILD = MICRO + """
import sys
from hdit_edu.toy import ToyDataset
from hdit_edu.training import Trainer
run, total = sys.argv[1], int(sys.argv[2])
trainer = Trainer(micro_config(checkpoint_every=10_000, keep_checkpoints=10_000), run,
                  dataset=ToyDataset("train", resolution=32, size=256), progress=False)
while trainer.step < total:
    print("go", trainer.step, flush=True)  # the parent sends one SIGINT after each "go"
    try:
        trainer.fit(total)
    except KeyboardInterrupt:
        pass
    print("stopped", trainer.step, flush=True)
print("done", flush=True)
"""


def test_fifty_real_sigints_at_random_moments_leave_only_whole_steps(tmp_path):
    """≥ 50 real SIGINTs at random moments into a training process. Every checkpoint saved on
    the way out holds exactly its step's state (AdamW's step count equals the label; weights,
    EMA and moments equal those of an uninterrupted run at that step, bit for bit), and
    resuming from one repeats the uninterrupted run's losses."""
    run, total, wanted = tmp_path / "run", 100, 55
    child = subprocess.Popen([sys.executable, "-c", SIGINT_CHILD, str(run), str(total)],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = run / "metrics.jsonl"

    def logged() -> int:
        return metrics.read_text().count("\n") if metrics.exists() else 0

    rng, sent, step_time = random.Random(27), 0, 0.05
    try:
        for line in child.stdout:  # "go": the child is (about to be) in fit()
            if not line.startswith("go") or sent >= wanted or logged() >= total - 6:
                continue
            # let 1 or 2 whole steps pass (timing them), then interrupt at a random moment
            # of the next one: anywhere in the forward, backward, update, log or save
            start, t0 = logged(), time.monotonic()
            target = start + rng.randint(1, 2)
            while logged() < target and child.poll() is None:
                time.sleep(0.002)
            step_time = 0.5 * step_time + 0.5 * (time.monotonic() - t0) / (target - start)
            time.sleep(rng.uniform(0.0, 1.2 * step_time))
            child.send_signal(signal.SIGINT)
            sent += 1
    finally:
        child.wait(timeout=300)
    assert child.returncode == 0, child.stderr.read()[-3000:]
    assert sent >= 50, f"only {sent} interrupts"

    # the uninterrupted run, one step at a time, fingerprinted after each step
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = Trainer(micro_config(), None, dataset=micro_data(), progress=False)
        states, losses = {}, []
        for _ in range(total):
            losses.append(reference.train_step())
            states[reference.step] = fingerprint(
                reference.model.state_dict(), reference.ema.state_dict(),
                reference.optimizer.state_dict(),
            )  # fmt: skip
        saved = list_checkpoints(run)
        assert len(saved) >= 40  # an interrupt after a whole step saves it
        for path in saved:
            step, adam_steps, fp = checkpoint_fingerprint(path)
            assert path.name == f"step-{step:08d}" and adam_steps == {float(step)}, path
            assert fp == states[step], f"{path.name} does not hold step {step}'s state"
        for path in random.Random(0).sample(saved[:-1], 2):
            resumed = Trainer(micro_config(), tmp_path / f"resume-{path.name}", resume=path,
                              dataset=micro_data(), progress=False)  # fmt: skip
            step = resumed.step
            assert [resumed.train_step() for _ in range(2)] == losses[step : step + 2]
            release(tmp_path / f"resume-{path.name}")
    finally:
        torch.set_num_threads(threads)
    rows_logged = [r["step"] for r in rows(run / "metrics.jsonl")]
    assert rows_logged == list(range(1, total + 1))  # every step logged once, in order


def test_sigterm_saves_at_a_step_boundary_then_exits_143(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [*CLI_CMD, "train", *TINY_ARGS, "--steps", "10000", "--run-dir", str(run)],
        env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    while not (run / "metrics.jsonl").exists() or len(rows(run / "metrics.jsonl")) < 3:
        time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == -signal.SIGTERM  # as SIGTERM's default action: exit 143
    (saved,) = list_checkpoints(run)[-1:]
    step, adam_steps, _ = checkpoint_fingerprint(saved)
    assert adam_steps == {float(step)} and step >= 3
    assert max(r["step"] for r in rows(run / "metrics.jsonl")) == step


# --- the lock file is not the lock -------------------------------------------------------------


def test_deleting_or_replacing_lock_while_a_trainer_runs_does_not_let_a_second_in(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [*CLI_CMD, "train", *TINY_ARGS, "--steps", "10000", "--run-dir", str(run)],
        env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while not (run / "metrics.jsonl").exists():
            time.sleep(0.05)
            assert first.poll() is None, first.stderr.read()[-2000:]
        for damage in ("delete", "replace"):
            (run / ".lock").unlink(missing_ok=True)
            if damage == "replace":
                (run / ".lock").write_text("{}")
            second = subprocess.run(
                [*CLI_CMD, "train", *TINY_ARGS, "--steps", "10000", "--run-dir", str(run),
                 "--resume"],
                env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert second.returncode == 2, second.stderr[-2000:]
            assert "is in use by" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None  # untouched: still training
        assert not (run / "abandoned").exists()
    finally:
        first.kill()
        first.wait()
    steps = [r["step"] for r in rows(run / "metrics.jsonl")]
    assert steps == list(range(1, len(steps) + 1))  # one writer


# --- symlinks ----------------------------------------------------------------------------------


def test_no_run_folder_file_is_written_through_a_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    trainer = Trainer(micro_config(checkpoint_every=2), run, dataset=micro_data(), progress=False)
    trainer.fit(2)
    assert not (run / ".lock").is_symlink() and victim.read_text() == "precious\n"
    release(run)

    victim.write_text((run / "metrics.jsonl").read_text())  # rows 1, 2: nothing to move
    before = victim.read_text()
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(victim)
    resumed = Trainer(micro_config(checkpoint_every=2), run, resume=True, dataset=micro_data(),
                      progress=False)  # fmt: skip
    with pytest.raises(RunWriteError, match="metrics.jsonl.*is a symlink"):
        resumed.fit(4)
    assert victim.read_text() == before
    release(run)

    other = tmp_path / "other"
    (run / "samples").symlink_to(other, target_is_directory=True)
    other.mkdir()
    (run / "metrics.jsonl").unlink()
    config = micro_config(checkpoint_every=2, sample_every=2)
    resumed = Trainer(config, run, resume=True, dataset=micro_data(), progress=False,
                      sample_steps=2, n_samples=4)  # fmt: skip
    with pytest.raises(RunFolderError, match="samples' is a symlink"):
        resumed.fit(4)
    assert list(other.iterdir()) == []
    release(run)


def test_a_symlinked_run_folder_and_a_lock_folder_are_named_by_the_cli(tmp_path, capsys):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    rc, text = cli(capsys, "train", *TINY_ARGS, "--steps", "1", "--run-dir", tmp_path / "link")
    assert rc == 2 and "is a symlink" in text and "Traceback" not in text
    (real / ".lock").mkdir()
    rc, text = cli(capsys, "train", *TINY_ARGS, "--steps", "1", "--run-dir", real)
    assert rc == 2 and ".lock' is a folder" in text and "Traceback" not in text


# --- config identity -----------------------------------------------------------------------------


@pytest.fixture
def two_step_run(tmp_path):
    run = tmp_path / "run"
    Trainer(micro_config(checkpoint_every=2), run, dataset=micro_data(), progress=False).fit(2)
    release(run)
    return run


def test_a_hand_edited_config_cannot_change_the_experiment_unnoticed(two_step_run, tmp_path):
    run = two_step_run
    saved = json.loads((run / "config.json").read_text())
    edited = json.loads(json.dumps(saved))
    edited["diffusion"]["sigma_data"] = 0.7
    (run / "config.json").write_text(json.dumps(edited))
    with pytest.raises(ConfigChangeError, match=r"checkpoint step-00000002 was trained with in "
                       r"\['diffusion.sigma_data'\]"):  # fmt: skip
        Trainer(Config.from_dict(edited), run, resume=True, dataset=micro_data(), progress=False)
    release(run)
    # a recoverable field needs --allow-change, and is then logged
    edited = json.loads(json.dumps(saved))
    edited["training"]["lr"] = 1e-4
    (run / "config.json").write_text(json.dumps(edited))
    with pytest.raises(ConfigChangeError, match="training.lr"):
        Trainer(Config.from_dict(edited), run, resume=True, dataset=micro_data(), progress=False)
    Trainer(Config.from_dict(edited), run, resume=True, allow_change="training.lr",
            dataset=micro_data(), progress=False)  # fmt: skip
    (change,) = rows(run / "config-changes.jsonl")
    assert change["changes"] == {"training.lr": {"from": saved["training"]["lr"], "to": 1e-4}}
    release(run)
    # config.json deleted, other values given: still compared with the checkpoint's
    (run / "config.json").unlink()
    other = micro_config(checkpoint_every=2)
    other.model.levels[0].width = 24
    with pytest.raises(ConfigChangeError, match="model.levels.0.width"):
        Trainer(other, run, resume=True, dataset=micro_data(), progress=False)
    release(run)


def test_resume_from_a_missing_checkpoint_is_named(two_step_run, capsys):
    rc, text = cli(capsys, "train", "--resume-from", two_step_run / "checkpoints" / "step-9",
                   "--run-dir", two_step_run, "--profile", "cpu", "--no-progress")  # fmt: skip
    assert rc == 2 and "step-9" in text and "Traceback" not in text
    assert "step-00000002" in text or "does not exist" in text


def test_checkpoints_carry_their_config(two_step_run):
    folder = two_step_run / "checkpoints" / "step-00000002"
    config = json.loads((folder / "config.json").read_text())
    assert config == json.loads((two_step_run / "config.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["config.json"] == hashlib.sha256(
        (folder / "config.json").read_bytes()
    ).hexdigest()


# --- files outside the run folder ----------------------------------------------------------------


def test_classifier_train_never_replaces_an_existing_folder_without_force(tmp_path, capsys):
    out = tmp_path / "clf"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"mine")
    rc, text = cli(capsys, "classifier", "train", "--out", out)
    assert rc == 2 and "exists: pass --force" in text and "Traceback" not in text
    assert (out / "model.safetensors").read_bytes() == b"mine"
    from hdit_edu.toy import TOY_CLASSIFIER_DIR

    if TOY_CLASSIFIER_DIR.exists():
        rc, text = cli(capsys, "classifier", "train", "--out", TOY_CLASSIFIER_DIR)
        assert rc == 2 and "the shipped classifier" in text


def test_a_new_folder_is_whole_or_absent_on_a_real_full_disk(tmp_path):
    """checkpoints.new_folder (classifier train's writer) on a real 1 MB tmpfs: the write that
    fills the disk fails naming the folder; the old folder is untouched, no half folder."""
    from hdit_edu.checkpoints import new_folder

    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}")
    try:
        final = disk / "clf"
        with new_folder(final) as tmp:
            (tmp / "a.bin").write_bytes(b"old")
        with pytest.raises(OSError, match="No space left"):
            with new_folder(final, replace=True) as tmp:
                (tmp / "a.bin").write_bytes(bytes(2 << 20))
        assert (final / "a.bin").read_bytes() == b"old" and sorted(os.listdir(disk)) == ["clf"]
        with pytest.raises(FileExistsError):
            with new_folder(final):
                pass
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_outputs_that_would_overwrite_or_read_themselves_are_refused(tmp_path, capsys):
    target = tmp_path / "kd.safetensors"
    target.write_bytes(b"precious")
    rc, text = cli(capsys, "convert", "to-k-diffusion", tmp_path / "run", "-o", target)
    assert rc == 2 and "exists: pass --force" in text and target.read_bytes() == b"precious"
    rc, text = cli(capsys, "convert", "to-k-diffusion", tmp_path / "run", "-o", tmp_path / "x.zip")
    assert rc == 2 and "allowed file name endings: .safetensors, .pth, .pt" in text
    src = tmp_path / "src"
    src.mkdir()
    rc, text = cli(capsys, "prepare", src, src / "sub", "--resolution", "32")
    assert rc == 2 and "is inside SRC" in text and not (src / "sub").exists()


def test_absurd_sample_sizes_and_wrong_endings_are_named_before_any_work(two_step_run, capsys):
    rc, text = cli(capsys, "sample", "--run", two_step_run, "--resolution", "100000",
                   "--positions", "grid", "--steps", "1")  # fmt: skip
    assert rc == 2 and "--resolution 100000x100000" in text and "GiB" in text, text
    rc, text = cli(capsys, "sample", "--run", two_step_run, "--out", two_step_run / "s.jpg")
    assert rc == 2 and "writes a PNG grid" in text and not (two_step_run / "s.jpg").exists()
