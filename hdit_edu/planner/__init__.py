"""Paper-scale training, planned: how to fit Table 6's batch on the GPUs at hand, and how many
days it takes (App. E; issues 17 and 32).

:func:`plan` (CLI: ``hdit-edu plan --config ffhq1024 --gpus 8 --gpu-memory 80``) picks, for a
config's global batch on ``gpus`` GPUs of ``gpu_memory`` GiB, the per-GPU micro-batch, the
gradient-accumulation steps and the activation checkpointing that fit (the least
recomputation, then the largest micro-batch), and the days as a range; :func:`format_plan`
prints it in a dozen lines, each number beside the assumption it rests on.

* :mod:`.memory` — the peak memory of one training step (weights, EMA, AdamW moments,
  activations, gradients held, autocast's weight cache, inputs), fitted on CPU measurements
  and checked on cells held out of the fit; :class:`PeakMemory`, the measurement.
* :mod:`.time_model` — the days: utilisation calibrated on the paper's two reported runs, the
  GPU's speed-up over the A100, the batch-size schedule, the kernel path, the data loader.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .memory import (
    ACTIVATION_K,
    ACTIVATION_SCALE,
    BF16_ACTIVATION_FACTOR,
    BF16_FACTOR_SOURCE,
    BF16_FIT_CELLS,
    CALIBRATION_FILE,
    CELLS_FILE,
    CHECKPOINTING_ORDER,
    OPTIMIZER_TEMP,
    MemoryEstimate,
    PeakMemory,
    activation_bytes,
    estimate_memory,
    heldout_table,
    input_bytes,
    peak_allocated,
    predict_row,
    read_calibration,
)
from .time_model import KERNEL_PATHS, TimeEstimate, estimate_time

__all__ = [
    "ACTIVATION_K", "ACTIVATION_SCALE", "BF16_ACTIVATION_FACTOR", "BF16_FACTOR_SOURCE",
    "BF16_FIT_CELLS", "CALIBRATION_FILE", "CELLS_FILE", "CHECKPOINTING_ORDER", "KERNEL_PATHS",
    "MEMORY_HEADROOM", "OPTIMIZER_TEMP", "MemoryEstimate", "PeakMemory", "Plan", "TimeEstimate",
    "activation_bytes", "estimate_memory", "estimate_time", "format_plan", "heldout_table",
    "input_bytes", "peak_allocated", "plan", "predict_row", "read_calibration",
]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------------

MEMORY_HEADROOM = 0.9  # plan to 90 % of the device (allocator fragmentation, CUDA context)


@dataclass
class Plan:
    config: str
    gpus: int
    gpu: str
    gpu_memory_GiB: float
    precision: str
    global_batch: int
    micro_batch: int
    grad_accum: int
    checkpointing: str
    memory: MemoryEstimate
    time: TimeEstimate
    steps: int

    @property
    def days(self) -> tuple[float, float]:
        """(low, high) days of the configured steps (and batch schedule)."""
        return self.time.days

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("memory", "time")}
        d["memory"] = {**asdict(self.memory), "peak": self.memory.peak}
        d["memory"]["budget"] = MEMORY_HEADROOM * self.gpu_memory_GiB * 2**30
        d["memory"]["bf16_activation_factor"] = {
            "value": BF16_ACTIVATION_FACTOR, "source": BF16_FACTOR_SOURCE
        }  # fmt: skip
        d["time"] = self.time.to_dict()
        d["days"] = d["time"]["days"]
        return d

    def table(self) -> str:
        return format_plan(self)


def format_plan(p: Plan) -> str:
    """The plan in a dozen lines, each number with the assumption it rests on."""
    gib = 2**30
    m, t = p.memory, p.time
    resident = m.weights + m.ema + m.adam_moments
    held = "accumulation" if m.grad_accum > 1 else p.checkpointing if m.gradients_held else "none"
    scale = ACTIVATION_SCALE[p.precision]
    lines = [
        f"{p.config} on {p.gpus} × {p.gpu} ({p.gpu_memory_GiB:g} GiB), {p.precision}, "
        f"global batch {p.global_batch}",
        f"  per GPU    micro-batch {p.micro_batch} × {p.grad_accum} accumulation, "
        f"checkpointing {p.checkpointing}",
        f"  memory     {m.peak / gib:.1f} GiB of {MEMORY_HEADROOM * p.gpu_memory_GiB:.1f} "
        f"({MEMORY_HEADROOM:.0%} of {p.gpu_memory_GiB:g}) = resident {resident / gib:.2f} "
        "(weights, EMA, AdamW: 16 B/param)",
        f"             + activations {m.micro_batch} × {m.activations_per_image / gib:.3f} "
        f"(k = {ACTIVATION_K:.1f} numbers/token/channel, CPU-fitted"
        + (f"; bf16 × {scale:.2f}, {BF16_FACTOR_SOURCE})" if p.precision == "bf16" else ")"),
        f"             + gradients held {m.gradients_held / gib:.2f} ({held})"
        f" + autocast cache {m.autocast_cache / gib:.2f} + inputs {m.inputs / gib:.2f}"
        f"  [AdamW step: {(m.gradients + m.optimizer_temporaries + m.inputs) / gib:.2f}]",
    ]
    lo, hi = t.days
    images = f"{t.images:.3g} images" + (
        " with the batch schedule " + " + ".join(f"{s:,}×{b}" for s, b in t.segments)
        if len(t.segments) > 1
        else f" ({p.steps:,} steps × {p.global_batch})"
    )
    span = f"{lo:.1f} – {hi:.1f} days" if hi >= 2 else f"{24 * lo:.1f} – {24 * hi:.1f} hours"
    lines.append(f"  time       {span}   {images}")
    if t.mfu_a100 is not None:
        lines.append(
            f"    A100 MFU   {t.mfu_a100[0]:.1%} – {t.mfu_a100[1]:.1%}   {t.mfu_source}, "
            "± the report's rounding"
        )
        if t.speedup != (1.0, 1.0):
            lines.append(
                f"    A100→{p.gpu:4s}  × {t.speedup[0]:.2f} – {t.speedup[1]:.2f}   "
                f"memory-bandwidth ratio … dense-bf16 ratio ({t.peak_tflops:g} TFLOP/s)"
            )
    else:
        lines.append(f"    MFU        {t.mfu[0]:.1%}   {t.mfu_source}")
    lines.append(
        f"    kernels    × {t.kernel_factor:.2f}   {t.kernel_path}: "
        f"{KERNEL_PATHS[t.kernel_path].source}"
    )
    if t.recompute != 1:
        lines.append(f"    recompute  × {t.recompute:.2f}   one more forward (checkpointing)")
    lines.append(
        f"  step       {t.step_s[0]:.2f} – {t.step_s[1]:.2f} s at batch {p.global_batch}; "
        f"MFU on the {p.gpu} {t.mfu[1]:.1%} – {t.mfu[0]:.1%} "
        f"({t.model_gflop_per_image:.0f} model GFLOP per image)"
    )
    ld = t.loader
    verdict = (
        f"LOADER LIMITS: give each GPU ≥ {ld.workers_needed} workers"
        if ld.limits
        else f"keeps up with {ld.workers} worker(s) per GPU"
    )
    lines.append(
        f"  loader     needs {ld.needed_per_gpu:.0f} images/s per GPU (fast end); one worker "
        f"gives {ld.per_worker:.1f} ({ld.format}) → {verdict}"
    )
    return "\n".join(lines)


def plan(
    config,
    gpus: int = 8,
    gpu_memory_GiB: float = 80.0,
    precision: str | None = None,
    *,
    mfu: float | None = None,
    peak_tflops: float | None = None,
    gpu: str = "H100",
    kernel_path: str = "natten",
    loader_workers: int = 1,
) -> Plan:
    """The micro-batch, accumulation and checkpointing that fit ``config``'s global batch on
    ``gpus`` devices of ``gpu_memory_GiB``: the least recomputation (none, then level, then
    layer) that fits, with the largest micro-batch dividing the per-GPU batch; and the days
    (:func:`hdit_edu.planner.time_model.estimate_time`: calibrated, or at ``mfu`` if given). Raises
    ``ValueError`` when even one image per GPU with per-layer checkpointing does not fit."""
    t = config.training
    precision = precision or t.precision
    if gpus < 1 or t.batch_size % gpus:
        raise ValueError(f"gpus={gpus}: must be >= 1 and divide the global batch {t.batch_size}")
    if not gpu_memory_GiB > 0 or (mfu is not None and not 0 < mfu <= 1):
        raise ValueError(f"need gpu_memory_GiB > 0 and 0 < mfu <= 1; got {gpu_memory_GiB}, {mfu}")
    per_gpu = t.batch_size // gpus
    budget = MEMORY_HEADROOM * gpu_memory_GiB * 2**30
    divisors = [b for b in range(per_gpu, 0, -1) if per_gpu % b == 0]
    chosen = None
    for mode in CHECKPOINTING_ORDER:
        for b in divisors:
            estimate = estimate_memory(config, b, mode, precision, per_gpu // b)
            if estimate.peak <= budget:
                chosen = (mode, b, estimate)
                break
        if chosen:
            break
    if chosen is None:
        need = estimate_memory(config, 1, "layer", precision, per_gpu).peak / 2**30
        raise ValueError(
            f"{config.name}: one image per GPU with per-layer checkpointing needs "
            f"{need:.1f} GiB, more than {MEMORY_HEADROOM:.0%} of {gpu_memory_GiB:g} GiB"
        )
    mode, b, estimate = chosen
    time = estimate_time(
        config,
        gpus,
        gpu=gpu,
        peak_tflops=peak_tflops,
        mfu=mfu,
        checkpointing=mode,
        kernel_path=kernel_path,
        loader_workers=loader_workers,
    )
    return Plan(
        config=config.name,
        gpus=gpus,
        gpu=gpu,
        gpu_memory_GiB=gpu_memory_GiB,
        precision=precision,
        global_batch=t.batch_size,
        micro_batch=b,
        grad_accum=per_gpu // b,
        checkpointing=mode,
        memory=estimate,
        time=time,
        steps=t.steps,
    )


