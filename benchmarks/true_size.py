"""The paper configs end to end at their true sizes on the CPU: time and peak memory (issue 17).

    python benchmarks/true_size.py --threads 1                      # all three configs
    python benchmarks/true_size.py --threads 1 --configs imagenet128

For each paper config (``imagenet128`` at 128², ``imagenet256`` at 256², ``ffhq1024`` at 1024²),
the path a researcher takes on day one, each command a separate ``hdit-edu`` process:

1. **data** — a folder of a few generated images at the config's resolution (random smooth colour
   fields, ``loader_throughput.smooth_image``): one flat folder for FFHQ; for ImageNet the
   1000 class sub-folders its model needs, each holding one of the images (hard links);
2. **train** — ``hdit-edu train --config NAME --profile gpu --data FOLDER --steps 1`` at batch 1
   (``--set training.batch_size=1``; ImageNet-256's batch-size schedule dropped, it cannot apply to
   batch 1) with one DataLoader worker: the real loader reads the files and, for FFHQ
   (augmentation probability 0.12, x-flips ½), augments in the worker process; one AdamW step of
   the paper's recipe in fp32, then the checkpoint of step 1;
3. **resume** (``--continue-to 2``, the default for ``imagenet128`` only: a step of the larger
   configs costs minutes here) — ``hdit-edu train --resume --steps 2`` in the same folder, and
   an uninterrupted ``--steps 2`` run beside it to compare with (the test does the comparison);
4. **sample** — ``hdit-edu sample --n 1 --sampler-steps 2``: two DPM++(3M) SDE steps at full size from
   the EMA weights, written as a PNG.

Each command's wall-clock time, CPU time and **peak resident memory** (``VmHWM`` of its process,
:func:`measured`) are recorded. The test ``tests/test_true_size.py`` runs the same function
(:func:`run_config`) in CI and checks what was written (images, checkpoints, resumed state).

Writes ``benchmarks/results/true_size-cpu-<date>.json`` (schema of ``common.py``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # benchmarks/common.py (it also puts the repository root on sys.path)
from loader_throughput import smooth_image
from PIL import Image

from hdit_edu.configs import normalize_resolution
from hdit_edu.presets import get_config

PAPER_CONFIGS = ("imagenet128", "imagenet256", "ffhq1024")
IMAGES = 4  # generated files per config
CLI = [sys.executable, "-m", "hdit_edu.cli"]


def make_folder(root: Path, name: str) -> Path:
    """The config's training folder: :data:`IMAGES` generated PNGs at its resolution; for a
    class-conditional config (ImageNet: the loader requires one sub-folder per class of the
    model) each of the ``num_classes`` class folders holds one of them, hard-linked."""
    config = get_config(name)
    height, width = normalize_resolution(config.model.resolution)
    assert height == width, "the paper configs are square"
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(IMAGES):
        files.append(root / f"{i:05d}.png")
        Image.fromarray(smooth_image(height, seed=i)).save(files[-1])
    if config.model.num_classes:
        for c in range(config.model.num_classes):
            (root / f"n{c:04d}").mkdir()
            source = files[c % IMAGES]
            os.link(source, root / f"n{c:04d}" / source.name)
        for source in files:
            source.unlink()
    return root


def peak_rss_gib(pid: int) -> float | None:
    """The peak resident set of process ``pid`` so far (``VmHWM``: its own memory map's
    high-water mark; ``ru_maxrss`` would not do: Linux carries the parent's peak into a child
    across ``fork`` + ``exec``, so a child of a large process reports the parent's peak)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return None


def measured(args: list[str], threads: int, poll_s: float = 0.2) -> dict:
    """Run ``hdit-edu ARGS`` in its own process: ``{"seconds", "cpu_seconds", "peak_rss_gib",
    "returncode", "stdout", "stderr"}``. The CPU time (its own and its DataLoader worker's)
    comes from ``os.wait4``; with one thread and no other load it is the wall-clock time, so on
    a shared machine it is the better estimate of what an idle one takes. The peak resident set
    is the main process's (:func:`peak_rss_gib`, read every ``poll_s`` seconds; the loader
    worker is a fork that shares its pages)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(common.REPO_ROOT))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*CLI, *args], env=env, stdout=out, stderr=err, text=True)
        peak = 0.0
        while True:
            peak = max(peak, peak_rss_gib(proc.pid) or 0.0)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(poll_s)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        return {
            "seconds": round(seconds, 2),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_gib": round(peak, 3),
            "returncode": proc.returncode,
            "stdout": out.read(),
            "stderr": err.read(),
        }


def train_args(name: str, data: Path, run: Path, steps: int, *, resume: bool = False) -> list:
    args = ["train", "--config", name, "--profile", "gpu", "--device", "cpu", "--no-progress",
            "--data", str(data), "--steps", str(steps), "--run-dir", str(run), "--workers", "1",
            "--set", "training.batch_size=1", "--set", "training.log_every=1"]  # fmt: skip
    if get_config(name).training.batch_schedule:
        args += ["--set", "training.batch_schedule=null"]
    return args + (["--resume"] if resume else [])


def run_config(name: str, work: Path, *, threads: int = 1, continue_to: int | None = None) -> dict:
    """The steps of the module docstring for config ``name`` in folder ``work``; returns
    ``{"config", "resolution", "data", "run", "phases": {phase: measured(...)}}`` (phases
    ``train``, optionally ``resume`` and ``uninterrupted``, and ``sample``). Stops at the first
    command that fails (its ``returncode`` says so)."""
    resolution = normalize_resolution(get_config(name).model.resolution)[0]
    data, run = make_folder(work / "data", name), work / "run"
    commands = {"train": train_args(name, data, run, 1)}
    if continue_to:
        commands["resume"] = train_args(name, data, run, continue_to, resume=True)
        commands["uninterrupted"] = train_args(name, data, work / "run-full", continue_to)
    commands["sample"] = ["sample", "--run", str(run), "--n", "1", "--sampler-steps", "2", "--device",
                          "cpu", "--out", str(work / "sample.png")]  # fmt: skip
    phases = {}
    for phase, args in commands.items():
        phases[phase] = measured(args, threads)
        if phases[phase]["returncode"] != 0:
            break
    return {"config": name, "resolution": resolution, "data": data, "run": run, "phases": phases}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser, repeats="1 (fixed)", warmup="none")
    parser.add_argument("--configs", nargs="+", choices=PAPER_CONFIGS, default=list(PAPER_CONFIGS))
    args = parser.parse_args(argv)
    args.threads = args.threads or 1
    return args, common.resolve_device("cpu")


def run(args, device) -> tuple[dict, list, dict]:
    rows = []
    for name in args.configs:
        with tempfile.TemporaryDirectory(prefix=f"true-size-{name}-") as tmp:
            result = run_config(
                name,
                Path(tmp),
                threads=args.threads,
                continue_to=2 if name == "imagenet128" else None,
            )
        phases = {
            phase: {k: m[k] for k in ("seconds", "cpu_seconds", "peak_rss_gib", "returncode")}
            for phase, m in result["phases"].items()
        }
        rows.append({"config": name, "resolution": result["resolution"], "phases": phases})
        print(name, phases, flush=True)
    summary = {
        row["config"]: {
            "seconds": round(sum(p["seconds"] for p in row["phases"].values()), 1),
            "cpu_seconds": round(sum(p["cpu_seconds"] for p in row["phases"].values()), 1),
            "peak_rss_gib": max(p["peak_rss_gib"] for p in row["phases"].values()),
            "ok": all(p["returncode"] == 0 for p in row["phases"].values()),
        }
        for row in rows
    }
    settings = {"threads": args.threads, "batch_size": 1, "train_steps": 1, "sample_steps": 2,
                "loader_workers": 1, "images": "generated PNGs at the config's resolution"}  # fmt: skip
    return settings, rows, summary


def main(argv=None) -> int:
    return common.run_script("true_size", parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
