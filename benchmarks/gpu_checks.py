"""The GPU check of issue 32 in about 5 minutes: what the planner assumes, measured where it
matters most, first. Each stage writes the JSON as it goes, so a run stopped by a time limit
keeps everything measured until then.

    python benchmarks/gpu_checks.py --out benchmarks/results/    # on a GPU (about 5 minutes)
    python benchmarks/gpu_checks.py --smoke                       # the same stages shortened, CPU

Writes ``gpu-checks-<device tag>.json`` (``--out`` a file or a folder) with the device's name,
torch / CUDA / NATTEN versions and which neighborhood-attention kernel ran at each level.

**Stage 0 — preflight** (seconds): imports, CUDA, the device, its free and total memory
(``torch.cuda.mem_get_info``), versions, NATTEN (``hdit_edu.env.natten_status``: with its
fused CUDA kernels ``backend="auto"`` runs them; without, masked SDPA at ≤ 32² tokens and the
pure-PyTorch gather kernel elsewhere — the JSON names the path that was measured), and the
plans the later stages check (:func:`hdit_edu.planner.plan` for one GPU of this memory).

**Stage 1 — the bf16 activation factor** (:data:`hdit_edu.planner.BF16_ACTIVATION_FACTOR`,
0.67 measured on CPU autocast): the activation memory per image,
``(peak(b₂) − peak(b₁)) / (b₂ − b₁)``, in fp32 and in bf16 autocast, without checkpointing,
for ImageNet-128 E (4, 8 images) and FFHQ-1024's five levels and widths at 256² (1, 2: 1/16 of
the tokens — no fp32 step at full size). ``bf16_over_fp32`` is what the planner should use on
this GPU.

**Stage 2 — one bf16 FFHQ-1024 step at the planned micro-batch** against the predicted peak:
the plan for one GPU of this memory (micro-batch, accumulation, checkpointing); a real
:meth:`~hdit_edu.training.Trainer.train_step` with two of the planned micro-steps (with
accumulation the peak is the second micro-step's: the gradients of the first are held), after
AdamW's moments exist; measured: resident tensors + the step's allocator peak
(:func:`planner_calibration.step_peak`) and ``torch.cuda.max_memory_allocated``. Out of memory
is recorded, and the micro-batch halved. Then its time: the *model step* (forward, backward,
clipping, AdamW, EMA) of one micro-batch kept on the device (no host-side image generation or
augmentation in the timed part), and the MFU it reaches at 1024².

**Stage 3 — ImageNet-128 E throughput with MFU**: the same model step at the planned
micro-batch (batch 256 where it fits), one batch kept on the device, for the kernel paths
``auto``, then ``natten-flex`` and ``torch`` while time is left. MFU = samples/s × 6 ×
forward GMAC (:func:`hdit_edu.flops.analytic_gflops`) ÷ the dense bf16 peak
(``train_throughput.BF16_PEAK``), next to the planner's calibrated range
(:func:`hdit_edu.planner.time_model.estimate_time`).

``--smoke`` runs the same stages shortened on the CPU in about a minute: the toy config at 32²
for the FFHQ and ImageNet roles (a pretend 0.15 GiB device, so the plan accumulates), the bf16
factor with CPU autocast (the trainer autocasts only on CUDA: here its ``use_bf16`` is
switched on), one timed repeat. ``tests/test_benchmarks.py`` checks the JSON it writes;
``benchmarks/results/gpu-checks-cpu-smoke.json`` is the committed smoke run.
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
import torch
import train_throughput

from hdit_edu import planner
from hdit_edu.env import natten_status
from hdit_edu.flops import analytic_gflops
from hdit_edu.planner.time_model import estimate_time
from hdit_edu.presets import get_config
from hdit_edu.training import Trainer

NAME = "gpu-checks"
GPU_SETTINGS = {
    "ffhq": ("ffhq1024", None),  # (config, resolution override)
    "imagenet": ("imagenet128", None),
    "factor_cells": {"imagenet128": (None, [4, 8]), "ffhq1024": (256, [1, 2])},
    "gpu_memory_GiB": None,  # the device's
    "step_accum": 2,
    "step_warmup": 2,
    "step_repeats": 5,
    "bench_backends": ["auto", "natten-flex", "torch"],
    "budget_s": 300,
    "stage_budget_s": {"preflight": 30, "bf16_factor": 60, "ffhq_step": 110, "imagenet128": 100},
}
SMOKE_SETTINGS = {
    "ffhq": ("toy", None),
    "imagenet": ("toy", None),
    "factor_cells": {"toy": (None, [2, 4])},
    "gpu_memory_GiB": 0.15,  # a pretend device: the plan accumulates
    "step_accum": 2,
    "step_warmup": 0,
    "step_repeats": 1,
    "bench_backends": ["auto", "torch"],
    "budget_s": 420,  # CPU bf16 autocast is slow: ~2 minutes on a quiet CPU
    "stage_budget_s": {"preflight": 30, "bf16_factor": 240, "ffhq_step": 90, "imagenet128": 60},
}
STAGES = ("preflight", "bf16_factor", "ffhq_step", "imagenet128")


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
# Measurements
# ----------------------------------------------------------------------------------------------


def config_for(name: str, resolution=None, *, precision="bf16", batch=1, accum=1, mode="none"):
    """``name``'s config (all levels kept at ``resolution``) for one measurement."""
    config = get_config(name)
    if resolution:
        config.model.resolution = resolution
    t = config.training
    t.batch_size, t.grad_accum, t.checkpointing, t.precision = batch * accum, accum, mode, precision
    return config


def trainer_for(config, device, backend: str) -> Trainer:
    trainer = Trainer(
        config,
        None,
        dataset=common.benchmark_dataset(config),
        device=device,
        progress=False,
        attention_backend=backend,
    )
    trainer.use_bf16 = config.training.precision == "bf16"  # CPU autocast too (smoke)
    return trainer


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


def device_memory_GiB(device, settings) -> float:
    if settings["gpu_memory_GiB"] is not None:
        return settings["gpu_memory_GiB"]
    return torch.cuda.get_device_properties(device).total_memory / 2**30


def one_gpu_plan(name: str, resolution, settings, memory_GiB: float):
    """The plan of ``name`` at its global batch (the smoke run: 8) for one GPU of
    ``memory_GiB``."""
    config = config_for(name, resolution)
    config.training.batch_size = 8 if settings is SMOKE_SETTINGS else config.training.batch_size
    return config, planner.plan(config, 1, memory_GiB, "bf16")


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


def model_step_time(config, device, backend, stage, settings) -> dict:
    """The model step (forward, backward, clipping, AdamW, EMA) of one micro-batch kept on the
    device: samples/s and MFU."""
    trainer = None
    try:
        trainer = trainer_for(config, device, backend)
        fixed = trainer.micro_batches(trainer.step)  # made once, on the device

        def step():
            trainer.apply_update(*trainer.accumulate_gradients(fixed))

        timing = timed_steps(step, device, stage, settings["step_warmup"], settings["step_repeats"])
        micro = config.training.batch_size // config.training.grad_accum
        peak = train_throughput.bf16_peak(common.device_name(device))
        return {
            "backend": backend,
            "na_backends": common.resolved_backends(
                config.model, config.model.resolution, backend, device
            ),
            "micro_batch": micro,
            "precision": "bf16 autocast" if trainer.use_bf16 else "fp32",
            **timing,
            **train_throughput.throughput(timing["median_s"], micro, analytic_gflops(config), peak),
        }
    finally:
        trainer = None
        _release(device)


# ----------------------------------------------------------------------------------------------
# The stages
# ----------------------------------------------------------------------------------------------


def stage_preflight(report: Report, stage: Stage, settings: dict, device, backend: str):
    env = report.document["environment"]
    row = {"cuda_available": torch.cuda.is_available(), "device": common.device_name(device)}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        row.update(free_GiB=free / 2**30, total_GiB=total / 2**30)
        row["capability"] = list(torch.cuda.get_device_capability(device))
    row["natten"] = env["natten"]
    row["kernel_path"] = (
        "natten-fused" if env["natten"].get("fused") and device.type == "cuda" else
        "masked-sdpa (<= 32² tokens) / torch gather (no NATTEN fused kernels here)"
    )  # fmt: skip
    memory = device_memory_GiB(device, settings)
    for role in ("ffhq", "imagenet"):
        name, res = settings[role]
        config, p = one_gpu_plan(name, res, settings, memory)
        row[f"plan_{role}"] = p.to_dict()
        row[f"plan_{role}_table"] = p.table()
        env.setdefault("na_backends", {})[name] = common.resolved_backends(
            config.model, config.model.resolution, backend, device
        )
    report.set("preflight", "checks", row)


def stage_bf16_factor(report: Report, stage: Stage, settings: dict, device, backend: str):
    """Activations per image in fp32 and bf16 from the step peaks at two batches."""
    for name, (res, (b1, b2)) in settings["factor_cells"].items():
        out: dict = {"resolution": res, "batches": [b1, b2], "checkpointing": "none", "rows": []}
        per_image = {}
        for precision in ("bf16", "fp32"):
            peaks = {}
            for b in (b1, b2):
                if not stage.fits(5):
                    out["skipped"] = f"stage budget: {stage.left():.0f} s left"
                    break
                config = config_for(name, res, precision=precision, batch=b)
                try:
                    row = measure_peak(config, device, backend)
                except Exception as error:  # noqa: BLE001 - recorded
                    out["rows"].append({"precision": precision, "batch": b, **_error(error)})
                    break
                out["rows"].append({"precision": precision, "batch": b, **row})
                peaks[b] = row["step_peak_bytes"]
                report.set("bf16_factor", name, out)
            if len(peaks) == 2:
                per_image[precision] = (peaks[b2] - peaks[b1]) / (b2 - b1)
                predicted = planner.activation_bytes(config_for(name, res), "none", precision)
                out[precision] = {
                    "measured_activation_bytes_per_image": per_image[precision],
                    "predicted_activation_bytes_per_image": predicted,
                }
        if len(per_image) == 2 and per_image["fp32"] > 0:
            out["bf16_over_fp32"] = per_image["bf16"] / per_image["fp32"]
        out["planner_assumes"] = planner.BF16_ACTIVATION_FACTOR
        report.set("bf16_factor", name, out)


def compare(estimate, measured: dict) -> dict:
    predicted = estimate.peak
    out = {"predicted": {**vars(estimate), "peak": predicted}}
    out["measured"] = measured
    out["predicted_peak_bytes"] = predicted
    out["measured_peak_bytes"] = measured["peak_bytes"]
    out["error_percent"] = 100 * (predicted / measured["peak_bytes"] - 1)
    if "cuda_max_memory_allocated_bytes" in measured:
        out["cuda_max_memory_allocated_bytes"] = measured["cuda_max_memory_allocated_bytes"]
    return out


def stage_ffhq_step(report: Report, stage: Stage, settings: dict, device, backend: str):
    name, res = settings["ffhq"]
    memory = device_memory_GiB(device, settings)
    _, p = one_gpu_plan(name, res, settings, memory)
    entry = {"plan": f"{p.micro_batch} x {p.grad_accum}, checkpointing {p.checkpointing}",
             "predicted_peak_bytes": p.memory.peak, "attempts": []}  # fmt: skip
    report.set("ffhq_step", "memory", entry)
    micro, mode = p.micro_batch, p.checkpointing
    while micro >= 1 and stage.fits(10):
        accum = min(settings["step_accum"], p.global_batch // micro)
        config = config_for(name, res, batch=micro, accum=accum, mode=mode)
        estimate = planner.estimate_memory(config, micro, mode, "bf16", accum)
        attempt = {"micro_batch": micro, "grad_accum": accum, "checkpointing": mode}
        try:
            attempt.update(compare(estimate, measure_peak(config, device, backend)))
        except Exception as error:  # noqa: BLE001 - recorded; an out-of-memory retries smaller
            attempt.update(_error(error))
        entry["attempts"].append(attempt)
        report.set("ffhq_step", "memory", entry)
        if "error" not in attempt or attempt["error"] != "out of memory":
            break
        micro //= 2
    if not entry["attempts"] or "error" in entry["attempts"][-1] or not stage.fits(10):
        return
    config = config_for(name, res, batch=micro, mode=mode)
    try:
        row = model_step_time(config, device, backend, stage, settings)
    except Exception as error:  # noqa: BLE001 - recorded
        row = _error(error)
    time_plan = estimate_time(config_for(name, res), 1, gpu=_gpu_kind(device),
                              checkpointing=mode)  # fmt: skip
    row["planner_mfu_range"] = list(time_plan.mfu)
    report.set("ffhq_step", "time", row)


def _gpu_kind(device) -> str:
    name = common.device_name(device)
    return next((g for g in ("H200", "H100", "A100") if g in name), "H100")


def stage_imagenet128(report: Report, stage: Stage, settings: dict, device, backend: str):
    name, res = settings["imagenet"]
    memory = device_memory_GiB(device, settings)
    _, p = one_gpu_plan(name, res, settings, memory)
    time_plan = estimate_time(config_for(name, res), 1, gpu=_gpu_kind(device),
                              checkpointing=p.checkpointing)  # fmt: skip
    report.set("imagenet128", "plan", {"micro_batch": p.micro_batch,
               "checkpointing": p.checkpointing, "planner_mfu_range": list(time_plan.mfu)})  # fmt: skip
    backends = [backend] + [b for b in settings["bench_backends"] if b != backend]
    for b in backends:
        micro, row, oom = p.micro_batch, {}, []
        while micro >= 1:
            if not stage.fits(15):
                row = {"skipped": f"stage budget: {stage.left():.0f} s left", **row}
                break
            config = config_for(name, res, batch=micro, mode=p.checkpointing)
            try:
                row = model_step_time(config, device, b, stage, settings)
                break
            except Exception as error:  # noqa: BLE001 - recorded; out of memory: half the batch
                row = {**_error(error), "micro_batch": micro}
                if row["error"] != "out of memory":
                    break
                oom.append(micro)
                micro //= 2
        report.set("imagenet128", b, {**row, "out_of_memory_at": oom} if oom else row)


# ----------------------------------------------------------------------------------------------
# The summary and the command line
# ----------------------------------------------------------------------------------------------


def summarize(document: dict) -> dict:
    results, out = document["results"], {}
    pre = results.get("preflight", {}).get("checks", {})
    out["kernel_path"] = pre.get("kernel_path")
    out["bf16_over_fp32"] = {
        name: f.get("bf16_over_fp32") for name, f in results.get("bf16_factor", {}).items()
    }
    ok = [a for a in results.get("ffhq_step", {}).get("memory", {}).get("attempts", [])
          if "measured" in a]  # fmt: skip
    if ok:
        a = ok[-1]
        out["ffhq_step_memory"] = {
            "at": f"{a['micro_batch']} x {a['grad_accum']}, {a['checkpointing']}",
            "predicted_GiB": a["predicted_peak_bytes"] / 2**30,
            "measured_GiB": a["measured_peak_bytes"] / 2**30,
            "error_percent": a["error_percent"],
        }
    step = results.get("ffhq_step", {}).get("time", {})
    out["ffhq_step_time"] = {k: step.get(k) for k in ("median_s", "samples_per_s", "mfu")}
    out["imagenet128"] = {
        b: {k: r.get(k) for k in ("micro_batch", "samples_per_s", "mfu", "skipped", "error")
            if r.get(k) is not None}
        for b, r in results.get("imagenet128", {}).items() if b != "plan"
    }  # fmt: skip
    return out


def _num(value, fmt: str = ".3g") -> str:
    return "–" if value is None else format(value, fmt)


def markdown(document: dict) -> str:
    """The result as the Markdown tables of ``benchmarks/README.md`` (``--markdown JSON``)."""
    env, s = document["environment"], document.get("summary") or summarize(document)
    natten = env.get("natten", {})
    lines = [
        f"{env['device']}, torch {env['versions']['torch']}, CUDA {env['versions']['cuda']}, "
        f"NATTEN {natten.get('version') or 'not installed'} ({s.get('kernel_path')}); "
        f"{document['date']}, {document.get('elapsed_s')} s",
        "",
        "| check | planner | measured |",
        "| --- | --- | --- |",
    ]
    for name, f in s.get("bf16_over_fp32", {}).items():
        lines.append(f"| bf16 / fp32 activations, {name} | {planner.BF16_ACTIVATION_FACTOR} | "
                     f"{_num(f)} |")  # fmt: skip
    m = s.get("ffhq_step_memory")
    if m:
        lines.append(f"| FFHQ step peak at {m['at']} (GiB) | {m['predicted_GiB']:.2f} | "
                     f"{m['measured_GiB']:.2f} ({m['error_percent']:+.1f} %) |")  # fmt: skip
    t = s.get("ffhq_step_time", {})
    lines.append(f"| FFHQ model step: s, samples/s, MFU | – | {_num(t.get('median_s'))}, "
                 f"{_num(t.get('samples_per_s'))}, {_num(t.get('mfu'), '.1%')} |")  # fmt: skip
    for b, r in s.get("imagenet128", {}).items():
        shown = r.get("skipped") or r.get("error") or (
            f"{_num(r.get('samples_per_s'))} samples/s at {r.get('micro_batch')}, "
            f"MFU {_num(r.get('mfu'), '.1%')}"
        )
        lines.append(f"| ImageNet-128 E model step, {b} | – | {shown} |")
    if document.get("notes"):
        lines += ["", *[f"* {note}" for note in document["notes"]]]
    return "\n".join(lines)


def default_out(device, smoke: bool) -> Path:
    return common.RESULTS_DIR / f"{NAME}-{common.device_tag(device)}{'-smoke' if smoke else ''}.json"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="the same stages shortened, on the CPU")
    p.add_argument("--device", default="auto", help="cuda (default when present) or cpu")
    p.add_argument("--out", help="a JSON path, or a folder for gpu-checks-<device>.json")
    p.add_argument("--budget", type=float, help="seconds for the whole run (GPU 300, smoke 420)")
    p.add_argument("--backend", default="auto", help="neighborhood attention backend (auto)")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
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
    settings = SMOKE_SETTINGS if args.smoke else GPU_SETTINGS
    budget = settings["budget_s"] if args.budget is None else args.budget
    out = Path(args.out) if args.out else default_out(device, args.smoke)
    if out.is_dir() or (args.out and args.out.endswith("/")):
        out = out / default_out(device, args.smoke).name
    shown = {**copy.deepcopy(settings), "budget_s": budget, "backend": args.backend,
             "stages": args.stages, "smoke": args.smoke}  # fmt: skip
    with common.torch_threads(args.threads):
        report = Report(device, out, common.command_line("gpu_checks.py", argv), shown)
        timer = watchdog(report, budget + 30)
        run = {"preflight": stage_preflight, "bf16_factor": stage_bf16_factor,
               "ffhq_step": stage_ffhq_step, "imagenet128": stage_imagenet128}  # fmt: skip
        try:
            for name in args.stages:
                stage = Stage(report, name, settings["stage_budget_s"][name], budget)
                if name == args.stages[-1]:  # the last stage gets whatever the others left
                    stage.deadline = budget
                print(f"[{report.elapsed():6.1f} s] stage {name}", file=sys.stderr, flush=True)
                try:
                    run[name](report, stage, settings, device, args.backend)
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
