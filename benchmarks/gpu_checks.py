"""The GPU checks of issue 17 in one run of about 8 minutes: the memory planner against measured
CUDA memory, one FFHQ-1024 training step at the planned micro-batch, and the ``make bench-gpu``
subset for ImageNet-128 E.

    python benchmarks/gpu_checks.py --out benchmarks/results/     # on a GPU (about 8 minutes)
    python benchmarks/gpu_checks.py --smoke                        # the same path on the CPU,
                                                                   # toy sizes, seconds (the test)

Writes one JSON (``gpu-checks-<device tag>.json``; ``--out`` a file or a folder) with the
device's name, torch / CUDA / NATTEN versions and which neighborhood-attention backend ran at
each level. The file is rewritten after every measurement, so a run stopped by a time limit
still leaves everything measured until then. Each stage has its own time budget (checked
before every measurement; a measurement that would not fit is recorded as skipped), and a
watchdog ends the process at ``--budget`` + 60 s, noting where it stopped.

**Stage 1 — the planner against measured memory** (:mod:`hdit_edu.planner`; ``hdit-edu plan``).
For ``ffhq1024`` on one GPU of this device's memory, in bf16 and in fp32:

* the plan (micro-batch, accumulation, checkpointing, predicted peak by part);
* one real training step of the plan — :meth:`~hdit_edu.training.Trainer.train_step` with the
  paper recipe (augmentation, σ density, AdamW, gradient clipping, EMA) at the planned
  micro-batch, accumulation and checkpointing, on random images — after AdamW's moments
  exist; measured: the resident tensors plus the step's allocator peak
  (:func:`planner_calibration.step_peak`, the quantity the planner is calibrated on) and
  ``torch.cuda.max_memory_allocated``. A plan that runs out of memory is recorded as such, and
  the same global batch is measured again at half the micro-batch. Not in the planner's sum:
  the step's input batch on the device (``Trainer.micro_batches`` holds every micro-batch's
  images and noise at once: ``input_bytes``), and, with accumulation, the gradients kept
  during the next micro-step's forward pass;
* the *bf16 activation factor* the planner assumes (activations in bf16 = ½ of fp32): the
  activation memory per image, ``(peak(b₂) − peak(b₁)) / (b₂ − b₁)`` at two small batches
  without checkpointing, in fp32 and in bf16 autocast, for ``ffhq1024`` (1, 2) and
  ``imagenet128`` (4, 8: at one image its step peaks in the optimizer, not in the
  activations); ``bf16_over_fp32`` against :data:`hdit_edu.planner.ACTIVATION_SCALE`, and each
  against :func:`hdit_edu.planner.activation_bytes`.

**Stage 2 — FFHQ-1024 step time at the planned (bf16) micro-batch**: a training step of one
micro-batch (``grad_accum`` 1) — the model step (forward, backward, clipping, AdamW, EMA on
one fixed micro-batch already on the device) and the full ``train_step`` (with the data and the
augmentation in the main process); a few warm-up steps, then timed steps (CUDA synchronised);
samples/s and MFU = samples/s × 6 × forward GMAC (:func:`hdit_edu.flops.analytic_gflops`) ×
10⁹ ÷ the device's dense bf16 peak (``train_throughput.BF16_PEAK``), next to the planner's
predicted time of the same micro-batch at its stated MFU.

**Stage 3 — ``make bench-gpu`` for ImageNet-128 E**, through the benchmark scripts' own
functions (each script's ``parse_args`` and ``run``): ``train_throughput`` (batch 256, eager,
backends ``auto``, ``natten-flex``, ``torch``; then ``compile`` for ``auto`` if time is
left), ``profile_step`` (the neighborhood attention's share of a step, batch 64),
``sampling_speed`` (50 DPM++(3M) SDE steps, batch 128) and ``scaling`` (HDiT-B/4 = E at 128²
and, by the same rule, 256²–1024², batch 1: the growth exponent k).

**NATTEN.** ``backend="auto"`` runs NATTEN's fused CUDA kernels only where NATTEN was built
with them (``hdit_edu.env.natten_status``); otherwise it runs masked SDPA (≤ 32² tokens) or
the pure-PyTorch gather kernel, and the JSON says so (``natten`` and ``notes``). NATTEN's
``natten-flex`` backend (torch's flex attention) needs only NATTEN's Python package.

``--smoke`` runs every stage on the CPU at toy sizes (the toy config at 32² with a global batch
of 8 on a pretend 0.15 GiB device, so the plan has accumulation; one or two steps per
measurement) in seconds: ``tests/test_benchmarks.py`` checks the JSON it writes. On the CPU
the trainer never autocasts, so there the bf16 factor measures fp32 twice (noted).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import common  # benchmarks/common.py (it also puts the repository root on sys.path)
import planner_calibration
import profile_step
import sampling_speed
import scaling
import torch
import train_throughput

from hdit_edu import planner
from hdit_edu.configs import normalize_resolution
from hdit_edu.env import natten_status
from hdit_edu.flops import analytic_gflops
from hdit_edu.presets import get_config
from hdit_edu.training import Trainer

NAME = "gpu-checks"
# Seconds of each stage (checked before each measurement), and the whole run's budget.
GPU_SETTINGS = {
    "memory_config": "ffhq1024",
    "global_batch": None,  # the config's (Table 6: 256)
    "gpu_memory_GiB": None,  # the device's
    "factor_batches": {"ffhq1024": [1, 2], "imagenet128": [4, 8]},
    "step_warmup": 2,
    "step_repeats": 5,
    "bench_config": "imagenet128",
    "bench_batch": 256,
    "bench_backends": ["auto", "natten-flex", "torch"],
    "bench_warmup": 3,
    "bench_repeats": 10,
    "profile_batch": 64,
    "sampling_batch": 128,
    "sampling_steps": 50,
    "scaling_resolutions": [128, 256, 512, 1024],
    "compile_min_s": 150,  # start the compiled run only with this much of the budget left
    "budget_s": 450,
    "stage_budget_s": {"memory": 200, "step_time": 60, "bench": 190},
}
SMOKE_SETTINGS = {
    "memory_config": "toy",
    "global_batch": 4,
    "gpu_memory_GiB": 0.15,  # a pretend device: the fp32 plan then needs accumulation (2 x 2)
    "factor_batches": {"toy": [1, 2]},
    "step_warmup": 1,
    "step_repeats": 1,
    "bench_config": "toy",
    "bench_batch": 2,
    "bench_backends": ["auto"],
    "bench_warmup": 0,
    "bench_repeats": 1,
    "profile_batch": 2,
    "sampling_batch": 1,
    "sampling_steps": 2,
    "scaling_resolutions": [32],
    "compile_min_s": 10**9,  # never on the CPU smoke run
    "budget_s": 120,
    "stage_budget_s": {"memory": 60, "step_time": 30, "bench": 30},
}
PRECISIONS = ("bf16", "fp32")


# ----------------------------------------------------------------------------------------------
# The document: written after every measurement
# ----------------------------------------------------------------------------------------------


def _tested_torch() -> str | None:
    """The torch version ``requirements/constraints.txt`` pins (what CI tests with)."""
    with contextlib.suppress(OSError):
        for line in (common.REPO_ROOT / "requirements/constraints.txt").read_text().splitlines():
            if line.startswith("torch=="):
                return line.split("==", 1)[1].strip()
    return None


class Report:
    """The result document (:func:`common.make_result`'s keys), rewritten to ``path`` after
    every change; thread-safe, so the watchdog can add its note and write it too."""

    def __init__(self, device, path: Path, command: str, settings: dict):
        self.device, self.path, self.lock = device, path, threading.Lock()
        self.t0 = time.monotonic()
        self.document = common.make_result(
            NAME,
            device,
            command=command,
            settings=settings,
            results={},
            summary={},
            load_before=common.load_average(),
        )
        env = self.document["environment"]
        env["natten"] = natten_status()
        env["cuda_device_count"] = torch.cuda.device_count() if device.type == "cuda" else 0
        env["float32_matmul_precision"] = torch.get_float32_matmul_precision()
        tested = _tested_torch()
        if tested and not torch.__version__.startswith(tested):
            self.document.setdefault("notes", []).append(
                f"torch {torch.__version__} here; the repository is tested with torch {tested} "
                "(requirements/constraints.txt)"
            )
        self.document.setdefault("notes", [])
        self.write()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def set(self, stage: str, key: str, value) -> None:
        with self.lock:
            self.document["results"].setdefault(stage, {})[key] = value
            self._write()

    def note(self, text: str) -> None:
        with self.lock:
            self.document["notes"].append(text)
            self._write()

    def write(self) -> None:
        with self.lock:
            self._write()

    def _write(self) -> None:
        """Write the document atomically (a run killed mid-write keeps the previous file)."""
        self.document["load_average"]["after"] = common.load_average()
        self.document["elapsed_s"] = round(self.elapsed(), 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.document, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)


class Stage:
    """A stage's time budget: ``fits(seconds)`` before a measurement expected to take that
    long (it must also fit the whole run's budget)."""

    def __init__(self, report: Report, name: str, seconds: float, total: float):
        self.report, self.name = report, name
        self.deadline = min(report.elapsed() + seconds, total)
        report.document.setdefault("stage_times_s", {})[name] = None
        self.start = report.elapsed()

    def left(self) -> float:
        return self.deadline - self.report.elapsed()

    def fits(self, seconds: float) -> bool:
        return seconds <= self.left()

    def done(self) -> None:
        with self.report.lock:
            self.report.document["stage_times_s"][self.name] = round(
                self.report.elapsed() - self.start, 1
            )
            self.report._write()


def watchdog(report: Report, seconds: float) -> threading.Timer:
    """End the process ``seconds`` after the start (a measurement that overran its stage),
    first noting it in the JSON."""

    def fire():
        try:
            report.note(f"watchdog: stopped after {report.elapsed():.0f} s (--budget + 60 s)")
        finally:  # the file keeps the last complete write if the note cannot be added
            os._exit(124)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def _release(device) -> None:
    """Free the last measurement's device memory (on the CPU, reference counting does; a
    ``gc.collect`` there costs ~0.4 s after a profiled step)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def _error(error: BaseException) -> dict:
    oom = isinstance(error, torch.OutOfMemoryError)
    return {
        "error": "out of memory" if oom else f"{type(error).__name__}: {error}"[:500],
        "traceback": None if oom else traceback.format_exc(limit=6)[-2000:],
    }


# ----------------------------------------------------------------------------------------------
# Stage 1: the planner against measured memory
# ----------------------------------------------------------------------------------------------


def check_config(name: str, settings: dict, *, precision=None, batch=None, accum=1, mode="none"):
    """``name``'s config with the run's global batch, ``grad_accum``, checkpointing and
    precision set (fp32 on the CPU: the trainer autocasts only on CUDA)."""
    config = get_config(name)
    t = config.training
    t.batch_size = batch or settings["global_batch"] or t.batch_size
    t.grad_accum, t.checkpointing = accum, mode
    if precision:
        t.precision = precision
    return config


def input_bytes(config, images: int) -> int:
    """The step's inputs on the device: each image and its noise in fp32 (plus 9 numbers of
    augmentation conditioning)."""
    h, w = normalize_resolution(config.model.resolution)
    return images * (2 * config.model.in_channels * h * w + 9) * 4


def trainer_for(config, device, backend: str) -> Trainer:
    return Trainer(
        config,
        None,
        dataset=common.benchmark_dataset(config),
        device=device,
        progress=False,
        attention_backend=backend,
    )


def measure_peak(config, device, backend: str) -> dict:
    """One real training step of ``config`` (:func:`planner_calibration.step_peak`)."""
    _release(device)  # what an earlier failed step left
    trainer = None
    try:
        trainer = trainer_for(config, device, backend)
        row = planner_calibration.step_peak(trainer)
        row["precision"] = "bf16 autocast" if trainer.use_bf16 else "fp32"
        return row
    finally:
        trainer = None
        _release(device)


def plan_row(name: str, settings: dict, precision: str, memory_GiB: float) -> tuple:
    config = check_config(name, settings, precision=precision)
    plan = planner.plan(config, 1, memory_GiB, precision)
    return config, plan


def compare(predicted: float, measured: dict) -> dict:
    out = {"predicted_peak_bytes": predicted, "measured_peak_bytes": measured["peak_bytes"]}
    out["predicted_over_measured"] = predicted / measured["peak_bytes"]
    out["error_percent"] = 100 * (predicted / measured["peak_bytes"] - 1)
    if "cuda_max_memory_allocated_bytes" in measured:
        cuda = measured["cuda_max_memory_allocated_bytes"]
        out["cuda_max_memory_allocated_bytes"] = cuda
        out["predicted_over_cuda_max_memory_allocated"] = predicted / cuda
    return out


def stage_memory(report: Report, stage: Stage, settings: dict, device, memory_GiB, backend):
    """Plan and measure the memory config in each precision, then the bf16 factor."""
    name = settings["memory_config"]
    key = "memory"
    for precision in PRECISIONS:
        config, plan = plan_row(name, settings, precision, memory_GiB)
        entry = {
            "command": f"hdit-edu plan --config {name} --gpus 1 --gpu-memory {memory_GiB:.2f} "
            f"--precision {precision}"
            + (
                f" (with the global batch set to {plan.global_batch})"
                if settings["global_batch"]
                else ""
            ),
            "plan": plan.to_dict(),
            "plan_table": plan.table(),
        }
        report.set(key, f"plan_{precision}", entry)
        if not stage.fits(settings["stage_budget_s"]["memory"] / 4):
            entry["measured"] = {"skipped": f"stage budget: {stage.left():.0f} s left"}
            report.set(key, f"plan_{precision}", entry)
            continue
        micro, accum, mode = plan.micro_batch, plan.grad_accum, plan.checkpointing
        attempts = []
        while micro >= 1:
            cfg = check_config(
                name, settings, precision=precision, batch=plan.global_batch, accum=accum, mode=mode
            )
            attempt = {"micro_batch": micro, "grad_accum": accum, "checkpointing": mode}
            estimate = planner.estimate_memory(cfg, micro, mode, precision)
            attempt["predicted"] = {**vars(estimate), "peak": estimate.peak}
            attempt["input_bytes"] = input_bytes(cfg, plan.global_batch)  # every micro-batch
            retry = False
            try:
                measured = measure_peak(cfg, device, backend)
                attempt["measured"] = measured
                attempt.update(compare(estimate.peak, measured))
            except Exception as error:  # noqa: BLE001 - recorded; an OOM retries smaller
                attempt.update(_error(error))
                if device.type == "cuda":
                    attempt["cuda_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
                retry = isinstance(error, torch.OutOfMemoryError) and stage.fits(30)
            attempts.append(attempt)
            entry["attempts"] = attempts
            report.set(key, f"plan_{precision}", entry)
            if not retry:
                break
            _release(device)  # the failed step's tensors, freed with the exception
            micro, accum = micro // 2, accum * 2
        ok = [a for a in attempts if "measured" in a]
        if ok:
            entry["result"] = {
                k: ok[-1][k]
                for k in ("micro_batch", "grad_accum", "checkpointing", "error_percent")
            }
            entry["result"]["as_planned"] = ok[-1]["micro_batch"] == plan.micro_batch
            report.set(key, f"plan_{precision}", entry)
    factors = {}
    for name, batches in settings["factor_batches"].items():
        factors[name] = activation_factor(report, stage, name, batches, settings, device, backend)
        report.set(key, "bf16_factor", factors)


def activation_factor(report, stage, name, batches, settings, device, backend) -> dict:
    """Activations per image in fp32 and bf16 from the step peaks at two batches."""
    b1, b2 = batches
    out: dict = {"batches": batches, "checkpointing": "none", "rows": []}
    per_image = {}
    for precision in ("fp32", "bf16"):
        peaks = {}
        for b in batches:
            if not stage.fits(10):
                out["skipped"] = f"stage budget: {stage.left():.0f} s left"
                return out
            config = check_config(name, settings, precision=precision, batch=b)
            try:
                row = measure_peak(config, device, backend)
            except Exception as error:  # noqa: BLE001 - recorded
                out["rows"].append({"precision": precision, "batch": b, **_error(error)})
                _release(device)
                return out
            out["rows"].append({"precision": precision, "batch": b, **row})
            peaks[b] = row["step_peak_bytes"]
        measured = (peaks[b2] - peaks[b1]) / (b2 - b1)
        predicted = planner.activation_bytes(get_config(name), "none", precision)
        per_image[precision] = measured
        out[precision] = {
            "measured_activation_bytes_per_image": measured,
            "predicted_activation_bytes_per_image": predicted,
            "predicted_over_measured": predicted / measured if measured > 0 else None,
            "input_bytes_per_image": input_bytes(get_config(name), 1),
        }
    out["bf16_over_fp32"] = per_image["bf16"] / per_image["fp32"] if per_image["fp32"] else None
    out["planner_assumes"] = planner.ACTIVATION_SCALE["bf16"]
    if device.type != "cuda":
        out["note"] = "CPU: the Trainer autocasts only on CUDA, so both rows ran in fp32"
    return out


# ----------------------------------------------------------------------------------------------
# Stage 2: the step time at the planned micro-batch
# ----------------------------------------------------------------------------------------------


def timed_steps(fn, device, stage: Stage, warmup: int, repeats: int) -> dict:
    """``warmup`` untimed calls, then up to ``repeats`` timed ones (CUDA synchronised), as
    many as the stage's budget allows after the first."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    common.synchronize(device)
    warm = (time.perf_counter() - t0) / max(1, warmup)
    seconds = []
    for _ in range(repeats):
        if seconds and not stage.fits(2 * seconds[-1]):
            break
        t0 = time.perf_counter()
        fn()
        common.synchronize(device)
        seconds.append(time.perf_counter() - t0)
    return {**common.Timing(seconds).to_dict(), "warmup": warmup, "warmup_s_per_call": warm}


def stage_step_time(report: Report, stage: Stage, settings: dict, device, memory_GiB, backend):
    name = settings["memory_config"]
    _, plan = plan_row(name, settings, "bf16", memory_GiB)
    micro = plan.micro_batch
    measured = report.document["results"].get("memory", {}).get("plan_bf16", {})
    if measured.get("result") and not measured["result"]["as_planned"]:
        micro = measured["result"]["micro_batch"]  # the planned one ran out of memory
        report.note(
            f"stage 2 times micro-batch {micro}: the planned {plan.micro_batch} did not fit"
        )
    config = check_config(name, settings, precision="bf16", batch=micro, mode=plan.checkpointing)
    gmac = analytic_gflops(config)
    peak_flops = train_throughput.bf16_peak(common.device_name(device))
    row = {
        "config": name,
        "micro_batch": micro,
        "planned_micro_batch": plan.micro_batch,
        "checkpointing": plan.checkpointing,
        "forward_gmac_per_image": gmac,
        "bf16_peak_flops": peak_flops,
        "na_backends": common.resolved_backends(
            config.model, config.model.resolution, backend, device
        ),
        "planner_predicted_s_per_micro_step": plan.step_s * micro / plan.global_batch,
        "planner_mfu": plan.mfu,
    }
    report.set("step_time", name, row)
    trainer = None
    try:
        trainer = trainer_for(config, device, backend)
        row["precision"] = "bf16 autocast" if trainer.use_bf16 else "fp32"
        fixed = trainer.micro_batches(trainer.step)  # one micro-batch, on the device

        def model_step():
            trainer.apply_update(*trainer.accumulate_gradients(fixed))

        w, r = settings["step_warmup"], settings["step_repeats"]
        timing = timed_steps(model_step, device, stage, w, r)
        row["model_step"] = {
            **timing,
            **train_throughput.throughput(timing["median_s"], micro, gmac, peak_flops),
        }
        report.set("step_time", name, row)
        if stage.fits(3 * timing["median_s"] + 5):
            timing = timed_steps(trainer.train_step, device, stage, w, r)
            row["train_step"] = {
                **timing,
                **train_throughput.throughput(timing["median_s"], micro, gmac, peak_flops),
                "what": "Trainer.train_step: random images, augmentation (main process), draws",
            }
    except Exception as error:  # noqa: BLE001 - recorded
        row.update(_error(error))
    finally:
        trainer = None
        _release(device)
    report.set("step_time", name, row)


# ----------------------------------------------------------------------------------------------
# Stage 3: `make bench-gpu` for ImageNet-128 E
# ----------------------------------------------------------------------------------------------


def _script_run(module, argv: list[str]) -> dict:
    """A benchmark script's own ``parse_args`` and ``run`` (no file written)."""
    args, device = module.parse_args(argv)
    settings, results, summary = module.run(args, device)
    return {"command": common.command_line(f"{module.__name__}.py", argv), "settings": settings,
            "results": results, "summary": summary}  # fmt: skip


def stage_bench(report: Report, stage: Stage, settings: dict, device, smoke: bool):
    dev = str(device)
    cfg, batch = settings["bench_config"], str(settings["bench_batch"])
    w, r = str(settings["bench_warmup"]), str(settings["bench_repeats"])
    runs = [
        (f"train_throughput {backend} eager", train_throughput,
         ["--device", dev, "--configs", cfg, "--batch-size", batch, "--backends", backend,
          "--modes", "eager", "--warmup", w, "--repeats", r], 20)
        for backend in settings["bench_backends"][:1]
    ]  # fmt: skip
    runs += [
        ("profile_step", profile_step,
         ["--device", dev, "--config", cfg, "--batch-size", str(settings["profile_batch"]),
          "--backends", "auto", "--warmup", w if smoke else "2", "--repeats", r]
         + (["--profile-steps", "1"] if smoke else []), 15),
        ("sampling_speed", sampling_speed,
         ["--device", dev, "--configs", cfg, "--batch-size", str(settings["sampling_batch"]),
          "--steps", str(settings["sampling_steps"]), "--repeats", "1" if smoke else "2"], 15),
        ("scaling", scaling,
         ["--device", dev, "--models", "HDiT-B/4", "--resolutions",
          *map(str, settings["scaling_resolutions"]), "--fvcore", "never", "--max-seconds", "30",
          "--warmup", "0" if smoke else "3", "--repeats", r]
         + (["--size", "toy", "--threads", "1"] if smoke else []), 15),
    ]  # fmt: skip
    runs += [
        (f"train_throughput {backend} eager", train_throughput,
         ["--device", dev, "--configs", cfg, "--batch-size", batch, "--backends", backend,
          "--modes", "eager", "--warmup", w, "--repeats", r], 20)
        for backend in settings["bench_backends"][1:]
    ]  # fmt: skip
    runs.append(
        ("train_throughput auto compile", train_throughput,
         ["--device", dev, "--configs", cfg, "--batch-size", batch, "--backends", "auto",
          "--modes", "compile", "--warmup", w, "--repeats", r], settings["compile_min_s"])
    )  # fmt: skip
    for label, module, argv, needs in runs:
        if not stage.fits(needs):
            report.set("bench", label, {"skipped": f"stage budget: {stage.left():.0f} s left"})
            continue
        t0 = time.perf_counter()
        try:
            out = _script_run(module, argv)
        except Exception as error:  # noqa: BLE001 - recorded; the next benchmark runs
            out = _error(error)
        finally:
            _release(device)
        out["wall_s"] = time.perf_counter() - t0
        report.set("bench", label, out)


# ----------------------------------------------------------------------------------------------
# The summary and the command line
# ----------------------------------------------------------------------------------------------


def summarize(document: dict) -> dict:
    results, out = document["results"], {}
    memory = results.get("memory", {})
    for precision in PRECISIONS:
        entry = memory.get(f"plan_{precision}", {})
        plan = entry.get("plan", {})
        ok = [a for a in entry.get("attempts", []) if "measured" in a]
        row = {
            "planned": f"{plan.get('micro_batch')} x {plan.get('grad_accum')}, "
            f"checkpointing {plan.get('checkpointing')}",
            "predicted_peak_GiB": plan.get("memory", {}).get("peak", 0) / 2**30,
        }
        if ok:
            a = ok[-1]
            row.update(
                measured_at=f"{a['micro_batch']} x {a['grad_accum']}",
                measured_peak_GiB=a["measured_peak_bytes"] / 2**30,
                cuda_max_memory_allocated_GiB=a["cuda_max_memory_allocated_bytes"] / 2**30
                if "cuda_max_memory_allocated_bytes" in a
                else None,
                error_percent=a["error_percent"],
                out_of_memory_first=len(entry["attempts"]) > 1,
            )
        out[f"memory_{precision}"] = row
    out["bf16_factor"] = {
        name: f.get("bf16_over_fp32") for name, f in memory.get("bf16_factor", {}).items()
    }
    for name, row in results.get("step_time", {}).items():
        step = row.get("model_step", {})
        out[f"step_{name}"] = {
            "micro_batch": row.get("micro_batch"),
            "model_step_s": step.get("median_s"),
            "samples_per_s": step.get("samples_per_s"),
            "mfu": step.get("mfu"),
            "planner_predicted_s": row.get("planner_predicted_s_per_micro_step"),
            "train_step_s": row.get("train_step", {}).get("median_s"),
        }
    bench = {}
    for label, run in results.get("bench", {}).items():
        bench[label] = run.get("summary") or {k: run[k] for k in ("skipped", "error") if k in run}
    out["bench"] = bench
    return out


def _gib(value) -> str:
    return "–" if value is None else f"{value / 2**30:.2f}"


def _num(value, fmt: str = ".3g") -> str:
    return "–" if value is None else format(value, fmt)


def markdown(document: dict) -> str:
    """The result as the Markdown tables of ``benchmarks/README.md`` (``--markdown JSON``)."""
    env, results = document["environment"], document["results"]
    natten = env.get("natten", {})
    lines = [
        f"{env['device']}, torch {env['versions']['torch']}, CUDA {env['versions']['cuda']}, "
        f"NATTEN {natten.get('version') or 'not installed'} "
        f"({'fused kernels' if natten.get('fused') else 'no fused kernels'}); "
        f"{document['date']}, {document.get('elapsed_s')} s",
        "",
        "| precision | plan (micro-batch × accumulation, checkpointing) | measured at | predicted "
        "GiB | measured GiB (resident + step peak) | torch.cuda.max_memory_allocated GiB | "
        "error | inputs GiB (not planned) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    memory = results.get("memory", {})
    for precision in PRECISIONS:
        entry = memory.get(f"plan_{precision}")
        if not entry:
            continue
        plan = entry["plan"]
        planned = f"{plan['micro_batch']} × {plan['grad_accum']}, {plan['checkpointing']}"
        for a in entry.get("attempts", []) or [{}]:
            at = f"{a['micro_batch']} × {a['grad_accum']}" if a else "not measured"
            lines.append(
                f"| {precision} | {planned} | {at} | {_gib(a.get('predicted', {}).get('peak'))} | "
                f"{_gib(a.get('measured_peak_bytes'))} | "
                f"{_gib(a.get('cuda_max_memory_allocated_bytes'))} | "
                + (f"{a['error_percent']:+.1f} %" if "error_percent" in a else a.get("error", "–"))
                + f" | {_gib(a.get('input_bytes'))} |"
            )
    lines += [
        "",
        "| config | batches | activations per image fp32 MiB (measured / planner) | bf16 MiB "
        "(measured / planner) | bf16 / fp32 measured | planner assumes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, f in memory.get("bf16_factor", {}).items():
        cells = []
        for precision in ("fp32", "bf16"):
            row = f.get(precision, {})
            m = row.get("measured_activation_bytes_per_image")
            q = row.get("predicted_activation_bytes_per_image")
            cells.append("–" if m is None else f"{m / 2**20:.0f} / {q / 2**20:.0f}")
        lines.append(
            f"| {name} | {f['batches']} | {cells[0]} | {cells[1]} | "
            f"{_num(f.get('bf16_over_fp32'))} | {f.get('planner_assumes', '–')} |"
        )
    lines += [
        "",
        "| config | micro-batch | model step s | samples/s | MFU | planner's s at its MFU | "
        "train_step s (data, augmentation) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in results.get("step_time", {}).items():
        step = row.get("model_step", {})
        mfu = step.get("mfu")
        lines.append(
            f"| {name} | {row.get('micro_batch')} | {_num(step.get('median_s'))} | "
            f"{_num(step.get('samples_per_s'))} | {'–' if mfu is None else f'{mfu:.1%}'} | "
            f"{_num(row.get('planner_predicted_s_per_micro_step'))} "
            f"({_num(row.get('planner_mfu'), '.0%')}) | "
            f"{_num(row.get('train_step', {}).get('median_s'))} |"
        )
    lines += ["", "| benchmark | result |", "| --- | --- |"]
    for label, run in results.get("bench", {}).items():
        shown = run.get("summary") or {k: run[k] for k in ("skipped", "error") if k in run}
        lines.append(f"| {label} | `{json.dumps(shown, default=str)[:400]}` |")
    if document.get("notes"):
        lines += ["", *[f"* {note}" for note in document["notes"]]]
    return "\n".join(lines)


def default_out(device) -> Path:
    return common.RESULTS_DIR / f"{NAME}-{common.device_tag(device)}.json"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="the same path on the CPU, toy sizes")
    p.add_argument("--device", default="auto", help="cuda (default when present) or cpu")
    p.add_argument("--out", help="a JSON path, or a folder for gpu-checks-<device>.json")
    p.add_argument("--budget", type=float, help="seconds for the whole run (GPU 450, smoke 120)")
    p.add_argument("--backend", default="auto", help="neighborhood attention backend (auto)")
    p.add_argument(
        "--stages", nargs="+", choices=("memory", "step_time", "bench"),
        default=["memory", "step_time", "bench"],
    )  # fmt: skip
    p.add_argument("--threads", type=int, help="torch CPU threads (smoke: 1)")
    p.add_argument("--markdown", metavar="JSON", help="print a result's tables, run nothing")
    args = p.parse_args(argv)
    if args.markdown:
        return args, None
    if args.smoke and args.device == "auto":
        args.device = "cpu"
    try:
        device = common.resolve_device(args.device)
    except ValueError as error:
        p.error(str(error))
    if device.type != "cuda" and not args.smoke:
        p.error("no CUDA device here: run on a GPU, or pass --smoke for the CPU path")
    args.threads = args.threads or (1 if args.smoke else None)
    return args, device


def main(argv=None) -> int:
    args, device = parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    settings = copy.deepcopy(SMOKE_SETTINGS if args.smoke else GPU_SETTINGS)
    if args.budget is not None:
        settings["budget_s"] = args.budget
    memory_GiB = settings["gpu_memory_GiB"]
    if memory_GiB is None:
        memory_GiB = torch.cuda.get_device_properties(device).total_memory / 2**30
    settings.update(gpu_memory_GiB=memory_GiB, backend=args.backend, stages=args.stages,
                    smoke=args.smoke)  # fmt: skip
    out = Path(args.out) if args.out else default_out(device)
    if out.is_dir() or (args.out and args.out.endswith("/")):
        out = out / default_out(device).name
    command = common.command_line("gpu_checks.py", argv)
    with common.torch_threads(args.threads):
        report = Report(device, out, command, settings)
        if not report.document["environment"]["natten"]["fused"] and device.type == "cuda":
            report.note(
                "NATTEN's fused CUDA kernels are not available here "
                f"({report.document['environment']['natten']}); backend 'auto' ran masked SDPA "
                "(<= 32x32 tokens) or the pure-PyTorch gather kernel: see na_backends"
            )
        for name in dict.fromkeys([settings["memory_config"], settings["bench_config"]]):
            config = get_config(name)
            report.document["environment"].setdefault("na_backends", {})[name] = (
                common.resolved_backends(
                    config.model, config.model.resolution, args.backend, device
                )
            )
        timer = watchdog(report, settings["budget_s"] + 60)
        stages = {
            "memory": lambda s: stage_memory(report, s, settings, device, memory_GiB, args.backend),
            "step_time": lambda s: stage_step_time(
                report, s, settings, device, memory_GiB, args.backend
            ),
            "bench": lambda s: stage_bench(report, s, settings, device, args.smoke),
        }
        try:
            for name in args.stages:
                stage = Stage(report, name, settings["stage_budget_s"][name], settings["budget_s"])
                if name == "bench":  # the last stage gets whatever the others left
                    stage.deadline = settings["budget_s"]
                print(f"[{report.elapsed():6.1f} s] stage {name}", file=sys.stderr, flush=True)
                try:
                    stages[name](stage)
                except Exception as error:  # noqa: BLE001 - recorded; the next stage runs
                    report.set(name, "stage_error", _error(error))
                finally:
                    _release(device)
                    stage.done()
        finally:
            timer.cancel()
        with report.lock:
            report.document["summary"] = summarize(report.document)
            report._write()
    print(json.dumps(report.document["summary"], indent=1, default=str))
    print(f"wrote {out} ({report.elapsed():.0f} s)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
