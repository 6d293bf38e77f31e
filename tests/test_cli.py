"""The ``hdit-edu`` command line: train (killed with SIGKILL and resumed exactly), sample,
fid, ablate, flops, and the help texts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_cli_args
from PIL import Image

from hdit_edu.cli import build_parser, main
from hdit_edu.configs import apply_overrides
from hdit_edu.presets import toy

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "hdit-edu"
CLI_CMD = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "hdit_edu.cli"]
TINY = tiny_cli_args(sample_steps=4)
ENV = dict(os.environ, OMP_NUM_THREADS="1", HDIT_PROFILE="cpu")


def hdit(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI_CMD, *args], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs
    )


def losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if line.strip()]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """An uninterrupted 12-step CLI run (checkpoints at 4, 8, 12)."""
    run = tmp_path_factory.mktemp("cli") / "full"
    proc = hdit("train", *TINY, "--steps", "12", "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 12" in proc.stdout
    return run


def test_train_killed_with_sigkill_resumes_bit_for_bit(trained_run, tmp_path):
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [*CLI_CMD, "train", *TINY, "--steps", "12", "--run-dir", str(run)],
        env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.time() + 240
    # Wait until a checkpoint exists and training has moved past it, then SIGKILL.
    while time.time() < deadline and proc.poll() is None:
        if (run / "checkpoints/step-00000004/manifest.json").exists() and len(
            [ln for ln in (run / "metrics.jsonl").read_text().splitlines() if ln]
        ) >= 5:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (run / "checkpoints/step-00000004").is_dir()
    killed_at = len(losses(run))
    assert 5 <= killed_at < 12
    resumed = hdit("train", *TINY, "--steps", "12", "--run-dir", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr + resumed.stdout
    assert losses(run) == losses(trained_run)  # all 12 steps, bit for bit
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_corrupt_checkpoint_is_a_clear_cli_error(trained_run, tmp_path):
    import shutil

    run = tmp_path / "corrupt"
    shutil.copytree(trained_run, run)
    bad = run / "checkpoints/step-00000012/trainer_state.pt"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    proc = hdit("train", *TINY, "--steps", "16", "--run-dir", str(run), "--resume")
    assert proc.returncode == 2
    assert (
        str(bad) in proc.stderr and "step-00000008" in proc.stderr and "--fallback" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_sample_writes_a_png_grid_of_the_right_size(trained_run, tmp_path):
    out = tmp_path / "grid.png"
    proc = hdit("sample", "--run", str(trained_run), "--n", "8", "--sampler-steps", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Image.open(out) as image:
        # 8 classes → one row of 8 images of 32² with torchvision's 2-pixel padding
        assert image.size == (8 * (32 + 2) + 2, 32 + 2 + 2) and image.mode == "RGB"
    out2 = tmp_path / "one_class.png"
    proc = hdit("sample", "--run", str(trained_run), "--n", "9", "--sampler-steps", "3", "--class", "2",
                "--cfg", "2.0", "--out", str(out2))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Image.open(out2) as image:
        assert image.size == (3 * 34 + 2, 3 * 34 + 2)


def test_sample_at_another_resolution_and_the_sizes_that_cannot_work(trained_run, tmp_path):
    """``--resolution``: 48² with extrapolated positions and the σ shift works (patch 2, kernel
    7, two levels: sides divisible by 4, the outer grid at least 7 tokens); each impossible
    size is a one-line error naming the value and what is allowed."""
    out = tmp_path / "grid48.png"
    proc = hdit("sample", "--run", str(trained_run), "--n", "8", "--sampler-steps", "3", "--resolution",
                "48", "--positions", "grid", "--shift", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(48x48)" in proc.stdout
    with Image.open(out) as image:
        assert image.size == (8 * (48 + 2) + 2, 48 + 2 + 2)
    cases = {
        "34": "--resolution 34 (the model trained at 32): resolution 34×34 is not divisible by "
        "patch_size·2^(levels−1) = 2·2^1 = 4; allowed: multiples of 4",
        "12": "kernel 7 is larger than its 6×6 token grid at resolution 12×12; allowed: an odd "
        "kernel <= 6",
    }
    for size, message in cases.items():
        proc = hdit("sample", "--run", str(trained_run), "--n", "8", "--sampler-steps", "3",
                    "--resolution", size, "--out", str(tmp_path / f"bad{size}.png"))  # fmt: skip
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr and not (tmp_path / f"bad{size}.png").exists()
    proc = hdit("sample", "--run", str(trained_run), "--n", "8", "--sampler-steps", "3", "--resolution",
                "48", "--positions", "fixed", "--out", str(tmp_path / "fixed.png"))  # fmt: skip
    assert proc.returncode == 2 and "RoPE position grid is fixed" in proc.stderr
    assert "allowed: --resolution 32" in proc.stderr


def test_fid_of_a_run_with_the_toy_extractor(trained_run, tmp_path):
    from hdit_edu.toy import TOY_CLASSIFIER_DIR

    if not TOY_CLASSIFIER_DIR.exists():
        pytest.skip("the shipped toy classifier is not in data/toy_classifier yet")
    out = tmp_path / "fid.json"
    proc = hdit("fid", "--run", str(trained_run), "--n", "64", "--sampler-steps", "3", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["fid"] > 0 and 0 <= result["class_accuracy"] <= 1 and result["n"] == 64


def test_the_readme_command_list_parses():
    """Every ``hdit-edu …`` line of the README's command list names flags that exist, with
    values their types accept (parsed only: nothing runs)."""
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("The `hdit-edu` command", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("hdit-edu") and "…" not in line]
    assert len(commands) >= 12, commands
    parser = build_parser()
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])
        assert args.command == shlex.split(command)[1], command


def test_help_texts_name_the_options():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    expected = {
        "train": [
            "--config",
            "--profile",
            "--steps",
            "--run-dir",
            "--resume",
            "torchrun",
            "--tensorboard",
            "--wandb",
        ],  # fmt: skip
        "sample": ["--run", "--n", "--sampler", "--cfg", "--class", "--out", "dpmpp_3m_sde"],
        "fid": ["--run", "--extractor", "legacy_tensorflow", "--ref"],
        "fid-folders": ["--extractor", "--mode"],
        "convert": ["from-k-diffusion", "to-k-diffusion", "--weights", "--strict"],
        "data": ["make-toy", "preview"],
        "classifier": ["train"],
        "ablate": ["toy", "paper"],
        "flops": ["--config", "--resolution"],
        "prepare": ["SRC", "DST", "--resolution", "--flat", "--workers"],
    }
    for command, words in expected.items():
        text = sub[command].format_help()
        for word in words:
            assert word in text, (command, word)
    for command in ("train", "sample", "fid"):  # the attention backend, one tuple of names
        text = sub[command].format_help()
        assert "--backend {auto,natten,natten-flex,torch,masked-sdpa}" in text, command


def test_bad_input_is_a_one_line_error(capsys):
    assert main(["train", "--config", "nonsense", "--profile", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "nonsense" in err and "imagenet128" in err  # names the allowed configs
    with pytest.raises(ValueError, match="unknown field 'lrr'"):
        apply_overrides(toy(), ["training.lrr=1"])
    config = apply_overrides(toy(), ["training.lr=1e-4", "model.levels.0.depth=1"])
    assert config.training.lr == 1e-4 and config.model.levels[0].depth == 1


def test_config_overrides_are_a_config_operation():
    """``configs.apply_overrides`` (``train --set``): JSON values, dotted paths into lists, a
    new config (the given one untouched), and errors that name the assignment and what is
    allowed; the CLI prefixes them with the flag."""
    base = toy()
    config = apply_overrides(base, ["model.resolution=[32,48]", "training.dataset=/data/x",
                                    "training.grad_clip=null", "model.levels.1.depth=3"])  # fmt: skip
    assert config.model.resolution == (32, 48) and config.training.dataset == "/data/x"
    assert config.training.grad_clip is None and config.model.levels[1].depth == 3
    assert base.model.resolution == 32 and base.model.levels[1].depth == 4
    with pytest.raises(ValueError, match=r"expects KEY=VALUE .*got 'training.lr'"):
        apply_overrides(base, ["training.lr"])
    with pytest.raises(ValueError, match=r"model.levels\[2\] does not exist; allowed indices: 0 … 1"):
        apply_overrides(base, ["model.levels.2.depth=1"])
    with pytest.raises(ValueError, match=r"'training.lr.x' is not a config field"):
        apply_overrides(base, ["training.lr.x=1"])
    assert apply_overrides(base, []) == base and apply_overrides(base, []) is not base


def test_flops_prints_the_measured_and_closed_form_gflops(capsys):
    from hdit_edu.flops import analytic_gflops
    from hdit_edu.presets import get_config

    assert main(["flops", "--config", "toy", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["gflops"] == pytest.approx(analytic_gflops(get_config("toy")), rel=1e-6)
    assert sum(result["by_kind"].values()) == pytest.approx(result["gflops"], rel=1e-6)


def test_rectangular_config_trains_samples_and_counts_on_the_cli(tmp_path):
    """A 32×48 (height × width) toy run end to end: train 4 steps, sample, count FLOPs."""
    from hdit_edu.configs import load_config
    from hdit_edu.flops import analytic_gflops

    run = tmp_path / "rect"
    proc = hdit("train", *TINY, "--set", "model.resolution=[32,48]", "--steps", "4",
                "--run-dir", str(run))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["model"]["resolution"] == [32, 48]
    assert len(losses(run)) == 4
    out = tmp_path / "grid.png"
    proc = hdit("sample", "--run", str(run), "--n", "8", "--sampler-steps", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(32x48)" in proc.stdout
    with Image.open(out) as image:  # one row of 8 images 48 wide, 32 high, 2-pixel padding
        assert image.size == (8 * (48 + 2) + 2, 32 + 2 + 2)
    config = load_config(run / "config.json")
    counts = {}
    for size in ("32x48", "48x32"):
        proc = hdit("flops", "--config", str(run / "config.json"), "--resolution", size, "--json")
        assert proc.returncode == 0, proc.stderr[-3000:]
        counts[size] = json.loads(proc.stdout)
    assert counts["32x48"]["resolution"] == [32, 48] and counts["48x32"]["resolution"] == [48, 32]
    expected = analytic_gflops(config, (32, 48))
    assert counts["32x48"]["gflops"] == pytest.approx(expected, rel=1e-6)
    assert counts["48x32"]["gflops"] == pytest.approx(expected, rel=1e-6)  # H × W = W × H
    assert expected > analytic_gflops(config, 32)


def test_train_tensorboard_flag_sets_the_config_field_and_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "tb"
    proc = hdit("train", *TINY, "--steps", "2", "--run-dir", str(run), "--tensorboard")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["training"]["tensorboard"] is True
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1


@pytest.mark.parametrize(
    "old, new, replacement",
    [
        (["sample", "--run", "R", "--steps", "7"], ["sample", "--run", "R", "--sampler-steps", "7"],
         "use --sampler-steps"),
        (["fid", "--run", "R", "--steps", "7"], ["fid", "--run", "R", "--sampler-steps", "7"],
         "use --sampler-steps"),
        (["train", "--config", "toy", "--sample-steps", "7", "--steps", "9"],
         ["train", "--config", "toy", "--sampler-steps", "7", "--steps", "9"], "use --sampler-steps"),
        (["ablate", "toy", "--steps", "D,E", "--sample-steps", "3"],
         ["ablate", "toy", "--configs", "D,E", "--sampler-steps", "3"], "use --configs"),
        (["ablate", "paper", "--steps", "A"], ["ablate", "paper", "--configs", "A"], "use --configs"),
        (["ablate", "--profile", "cpu", "--seeds", "1", "--resume"],
         ["ablate", "toy", "--seeds", "1", "--resume"], "use `hdit-edu ablate toy`"),
        (["ablate", "--profile=gpu", "--data", "d", "--out", "o", "--resume", "--threads", "2"],
         ["ablate", "paper", "--data", "d"], "use `hdit-edu ablate paper`"),
    ],
)  # fmt: skip
def test_old_flag_spellings_still_work_with_a_deprecation_message(old, new, replacement, capsys):
    """One release of grace: ``--steps`` where it meant sampler steps (sample, fid) or
    configurations (ablate), ``--sample-steps``, and ``ablate --profile cpu|gpu`` parse to
    exactly what the new spelling parses to, and say on stderr what replaced them."""
    from hdit_edu.cli.ablate import legacy_argv

    parser = build_parser()
    got = vars(parser.parse_args(legacy_argv(old)))
    err = capsys.readouterr().err
    assert "is deprecated and will be removed in the next release" in err and replacement in err
    assert got == vars(parser.parse_args(legacy_argv(new)))
    assert capsys.readouterr().err == ""  # the new spelling is silent
    command = next(a for a in parser._actions if a.dest == "command").choices[new[0]]
    if new[0] == "ablate":
        command = next(a for a in command._actions if a.dest == "experiment").choices[new[1]]
    text = command.format_help()  # the old spellings are not advertised
    assert all(f"{word} " not in text for word in ("--steps", "--sample-steps", "--profile")
               if word in old and word not in new)  # fmt: skip


def test_a_deprecated_spelling_draws_the_same_samples(tmp_path, capsys):
    run = ROOT / "data" / "checkpoints" / "toy-hdit"
    for flag in ("--steps", "--sampler-steps"):
        assert main(["sample", "--run", str(run), "--n", "2", flag, "2",
                     "--out", str(tmp_path / f"{flag}.png")]) == 0  # fmt: skip
    assert "--steps is deprecated" in capsys.readouterr().err
    assert (tmp_path / "--steps.png").read_bytes() == (tmp_path / "--sampler-steps.png").read_bytes()
