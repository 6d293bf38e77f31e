"""Memory and time of paper-scale training: how to fit Table 6's batch on the GPUs at hand.

:func:`plan` (CLI: ``hdit-edu plan --config ffhq1024 --gpus 8 --gpu-memory 80``) picks, for a
config's global batch on ``gpus`` GPUs of ``gpu_memory`` GiB, the per-GPU micro-batch, the
gradient-accumulation steps and the activation checkpointing that fit, and predicts the step
time and the days of the configured steps.

**Memory of one training step** (per GPU; P parameters; fp32 master weights in every
precision, as ``torch.autocast`` keeps them)::

    peak = weights 4P + EMA 4P + AdamW moments 8P               (resident between steps)
         + max(b · activations per image [+ gradients 4P],     (forward end / recomputation)
               gradients 4P + optimizer temporaries)            (the AdamW step)

Without checkpointing the activations peak at the end of the forward pass, before any
gradient exists (the backward frees each saved activation as the parameter gradients fill
up, so the two do not peak together). With checkpointing the peak comes during a segment's
recomputation in the backward pass, when gradients are already accumulating: the bracketed
term is added (an upper bound). Measured on the CPU, this is within a few per cent of every
row of :data:`CALIBRATION_FILE`; the plain sum would overestimate ImageNet-256 by ~20 %, the
plain max underestimate FFHQ-1024² with checkpointing by ~13 %.

*Activations per image* come from the model's shape: with ``S = Σ_layers T_l · w_l`` (tokens ×
width of every transformer layer the image passes, down, middle and up), ``"none"`` keeps
``k · S`` fp32 numbers per image; ``"layer"`` keeps each layer's input (``S``) plus one layer
being recomputed (``k · max_l T_l w_l``); ``"level"`` keeps each level's input plus one level
being recomputed (``k · max_level Σ_its layers T w``). The one constant ``k`` — numbers a
layer keeps per token and channel — is calibrated on the CPU (:data:`CALIBRATION`: FFHQ-1024²,
batch 1, fp32, no checkpointing, measured by ``benchmarks/planner_calibration.py``); the
other configs and modes are predictions, checked against the same table (the tests: within
15 %; measured: within 5 %). The CPU runs the "torch" / masked-SDPA neighborhood kernels,
which keep their attention weights for the backward pass; NATTEN's fused GPU kernels keep
less, so on a GPU the estimate should err on the safe side. *bf16*: activations × ½ (autocast's matmul outputs are bf16; an approximation that the
GPU check is to confirm). The optimizer temporaries (``torch.optim.AdamW``'s foreach
intermediates) are :data:`OPTIMIZER_TEMP` · 4P, also measured.

**Time** = 6 · GMAC(forward) · 10⁹ FLOPs per image and step (backward ≈ 2 × forward; one more
forward with checkpointing: 8 ·), over the GPUs' dense bf16 peak × the stated MFU.

**The measurement** the planner is calibrated against: :class:`PeakMemory` /
:func:`peak_allocated`, the most tensor memory a block holds at once above what was allocated
at entry — CUDA's allocator count on a GPU, and on the CPU (where
``torch.cuda.max_memory_allocated`` has no counterpart) the running sum of the allocator events
``torch.profiler`` records with ``profile_memory=True``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss() -> int:
    """The process's peak resident set size in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """``with PeakMemory(device) as mem: ...`` then ``mem.peak_MiB`` — the most memory the
    block's tensors held at once above what was allocated at entry (weights and inputs are not
    counted), and ``mem.kind``: how it was measured.

    * CUDA: ``max_memory_allocated − memory_allocated`` at entry (the caching allocator's own
      count).
    * CPU: the same quantity from torch's allocator events — the block runs under
      ``torch.profiler`` with ``profile_memory=True``, and the peak is the maximum of the
      running sum of the allocated/freed bytes it records, in time order. (The process RSS is
      no measure here: freed memory stays in the C heap and is reused without the RSS moving.)
      The profiler slows small ops down, so time the block separately. If that event stream is
      unavailable, falls back to the growth of the process's peak RSS (``ru_maxrss``), which
      reads 0 when an earlier, larger block already set the high-water mark.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_MiB: float | None = None
        self.kind = "torch.cuda.max_memory_allocated above entry"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            _synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        from torch.profiler import ProfilerActivity, profile

        self._rss_base = _peak_rss()
        self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._profiler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            _synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.peak_MiB = (peak - self._base) / 2**20
            return
        rss = _peak_rss()
        self._profiler.__exit__(*exc)
        if exc[0] is not None:
            return
        try:
            deltas = [
                (e.start_ns(), e.nbytes())
                for e in self._profiler.profiler.kineto_results.events()
                if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
            ]
        except AttributeError:  # a torch without this event stream
            deltas = None
        if deltas is None:
            self.kind = "growth of the peak RSS (ru_maxrss; fallback)"
            self.peak_MiB = max(0, rss - self._rss_base) / 2**20
            return
        running = peak = 0
        for _, nbytes in sorted(deltas):
            running += nbytes
            peak = max(peak, running)
        self.kind = "torch CPU allocator events above entry (torch.profiler profile_memory)"
        self.peak_MiB = peak / 2**20


def peak_allocated(fn: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """The peak, in bytes, of tensor memory allocated on ``device`` while ``fn()`` runs, above
    what was allocated before it started (:class:`PeakMemory`)."""
    with PeakMemory(torch.device(device)) as memory:
        fn()
    return round(memory.peak_MiB * 2**20)


# ----------------------------------------------------------------------------------------------
# The memory model
# ----------------------------------------------------------------------------------------------

CALIBRATION_FILE = (
    Path(__file__).resolve().parents[1] / "benchmarks/results/planner-calibration-cpu.json"
)
# k: fp32 numbers a transformer layer keeps per token and channel for the backward pass,
# fitted on FFHQ-1024² (batch 1, fp32, CPU, no checkpointing; CALIBRATION_FILE).
ACTIVATION_K = 27.826
# AdamW's foreach temporaries at its step, as a fraction of the gradients' 4P bytes (measured
# on ImageNet-128, whose batch-1 step peaks in the optimizer: CALIBRATION_FILE).
OPTIMIZER_TEMP = 0.11244
BYTES_FP32 = 4
ACTIVATION_SCALE = {"fp32": 1.0, "bf16": 0.5}
CHECKPOINTING_ORDER = ("none", "level", "layer")  # least recomputation first


def _layer_sizes(model) -> list[list[int]]:
    """``T · w`` of every layer, grouped by the level pass that runs it (down passes, the
    middle, up passes), for one image."""
    from .configs import token_grids

    grids = token_grids(model)
    levels = model.levels
    passes = []
    for i, (level, (h, w)) in enumerate(zip(levels, grids)):
        size = h * w * level.width
        if i < len(levels) - 1:
            passes.append([size] * level.depth)  # down
            passes.append([size] * level.depth)  # up
        else:
            passes.append([size] * level.depth)  # middle
    return passes


def activation_bytes(config, checkpointing: str = "none", precision: str = "fp32") -> float:
    """Bytes of activations one image keeps for the backward pass (see the module docstring)."""
    from .layers import check_checkpointing

    check_checkpointing(checkpointing)
    passes = _layer_sizes(config.model)
    total = sum(sum(p) for p in passes)
    if checkpointing == "none":
        numbers = ACTIVATION_K * total
    elif checkpointing == "layer":
        numbers = total + ACTIVATION_K * max(max(p) for p in passes)
    else:
        numbers = len(passes) and sum(p[0] for p in passes) + ACTIVATION_K * max(
            sum(p) for p in passes
        )
    return numbers * BYTES_FP32 * ACTIVATION_SCALE[precision]


@dataclass
class MemoryEstimate:
    """Predicted peak memory of one training step on one device, in bytes, by part."""

    weights: float
    gradients: float
    adam_moments: float
    ema: float
    activations_per_image: float
    micro_batch: int
    optimizer_temporaries: float
    checkpointing: str = "none"

    @property
    def activations(self) -> float:
        return self.activations_per_image * self.micro_batch

    @property
    def peak(self) -> float:
        recompute = self.gradients if self.checkpointing != "none" else 0.0
        transient = max(self.activations + recompute, self.gradients + self.optimizer_temporaries)
        return self.weights + self.ema + self.adam_moments + transient


def estimate_memory(
    config, micro_batch: int = 1, checkpointing: str = "none", precision: str = "fp32"
) -> MemoryEstimate:
    """The predicted peak memory of a training step of ``config`` at ``micro_batch`` images."""
    from .flops import analytic_params

    params = analytic_params(config)
    weight_bytes = BYTES_FP32 * params
    return MemoryEstimate(
        weights=weight_bytes,
        gradients=weight_bytes,
        adam_moments=2 * weight_bytes,
        ema=weight_bytes,
        activations_per_image=activation_bytes(config, checkpointing, precision),
        micro_batch=micro_batch,
        optimizer_temporaries=OPTIMIZER_TEMP * weight_bytes,
        checkpointing=checkpointing,
    )


# ----------------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------------

GPU_BF16_TFLOPS = 989.0  # H100 / H200 SXM dense bf16 (A100: 312)
DEFAULT_MFU = 0.35
MEMORY_HEADROOM = 0.9  # plan to 90 % of the device (allocator fragmentation, CUDA context)


@dataclass
class Plan:
    config: str
    gpus: int
    gpu_memory_GiB: float
    precision: str
    global_batch: int
    micro_batch: int
    grad_accum: int
    checkpointing: str
    memory: MemoryEstimate
    gflop_per_image_step: float
    step_s: float
    steps: int
    days: float
    mfu: float
    peak_tflops: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["memory"]["peak"] = self.memory.peak
        return d

    def table(self) -> str:
        gib = 2**30
        m = self.memory
        lines = [
            f"{self.config}: global batch {self.global_batch} on {self.gpus} GPU(s) of "
            f"{self.gpu_memory_GiB:g} GiB, {self.precision}",
            f"  per GPU: micro-batch {self.micro_batch} × {self.grad_accum} accumulation "
            f"steps, activation checkpointing {self.checkpointing}",
            "  predicted peak memory per GPU:",
            f"    weights        {m.weights / gib:8.2f} GiB",
            f"    gradients      {m.gradients / gib:8.2f} GiB",
            f"    AdamW moments  {m.adam_moments / gib:8.2f} GiB",
            f"    EMA            {m.ema / gib:8.2f} GiB",
            f"    activations    {m.activations / gib:8.2f} GiB "
            f"({m.activations_per_image / gib:.3f} GiB per image × {m.micro_batch})",
            f"    peak           {m.peak / gib:8.2f} GiB "
            f"(budget {MEMORY_HEADROOM:.0%} of {self.gpu_memory_GiB:g})",
            f"  time: {self.gflop_per_image_step:.0f} GFLOP per image and step at "
            f"{self.mfu:.0%} MFU of {self.peak_tflops:g} TFLOP/s per GPU: "
            f"{self.step_s:.2f} s per step, {self.days:.1f} days for {self.steps:,} steps",
        ]
        return "\n".join(lines)


def plan(
    config,
    gpus: int = 8,
    gpu_memory_GiB: float = 80.0,
    precision: str | None = None,
    *,
    mfu: float = DEFAULT_MFU,
    peak_tflops: float = GPU_BF16_TFLOPS,
) -> Plan:
    """The micro-batch, accumulation and checkpointing that fit ``config``'s global batch on
    ``gpus`` devices of ``gpu_memory_GiB``: the least recomputation (none, then level, then
    layer) that fits, with the largest micro-batch dividing the per-GPU batch. Raises
    ``ValueError`` when even one image per GPU with per-layer checkpointing does not fit."""
    from .flops import analytic_gflops

    t = config.training
    precision = precision or t.precision
    if gpus < 1 or t.batch_size % gpus:
        raise ValueError(f"gpus={gpus}: must be >= 1 and divide the global batch {t.batch_size}")
    if not gpu_memory_GiB > 0 or not 0 < mfu <= 1:
        raise ValueError(f"need gpu_memory_GiB > 0 and 0 < mfu <= 1; got {gpu_memory_GiB}, {mfu}")
    per_gpu = t.batch_size // gpus
    budget = MEMORY_HEADROOM * gpu_memory_GiB * 2**30
    divisors = [b for b in range(per_gpu, 0, -1) if per_gpu % b == 0]
    chosen = None
    for mode in CHECKPOINTING_ORDER:
        for b in divisors:
            estimate = estimate_memory(config, b, mode, precision)
            if estimate.peak <= budget:
                chosen = (mode, b, estimate)
                break
        if chosen:
            break
    if chosen is None:
        need = estimate_memory(config, 1, "layer", precision).peak / 2**30
        raise ValueError(
            f"{config.name}: one image per GPU with per-layer checkpointing needs "
            f"{need:.1f} GiB, more than {MEMORY_HEADROOM:.0%} of {gpu_memory_GiB:g} GiB"
        )
    mode, b, estimate = chosen
    passes = 8 if mode != "none" else 6  # forward + backward (2×) [+ the recomputation]
    gflop = passes * analytic_gflops(config)  # GMAC → FLOPs: × 2 (inside `passes`)
    step_s = gflop * 1e9 * t.batch_size / (gpus * peak_tflops * 1e12 * mfu)
    return Plan(
        config=config.name,
        gpus=gpus,
        gpu_memory_GiB=gpu_memory_GiB,
        precision=precision,
        global_batch=t.batch_size,
        micro_batch=b,
        grad_accum=per_gpu // b,
        checkpointing=mode,
        memory=estimate,
        gflop_per_image_step=gflop,
        step_s=step_s,
        steps=t.steps,
        days=step_s * t.steps / 86_400,
        mfu=mfu,
        peak_tflops=peak_tflops,
    )


def read_calibration(path: str | Path = CALIBRATION_FILE) -> list[dict]:
    """The measured rows of ``benchmarks/planner_calibration.py``."""
    return json.loads(Path(path).read_text())["results"]


def _calibrate() -> tuple[float, float]:
    """(ACTIVATION_K, OPTIMIZER_TEMP) from the recorded measurements (see the docstring)."""
    from .flops import analytic_params
    from .presets import get_config

    rows = {(r["config"], r["checkpointing"]): r for r in read_calibration()}
    ffhq = rows[("ffhq1024", "none")]
    total = sum(sum(p) for p in _layer_sizes(get_config("ffhq1024").model))
    k = ffhq["step_peak_bytes"] / (BYTES_FP32 * total)  # activations: the step's peak
    i128 = rows[("imagenet128", "none")]
    grads128 = BYTES_FP32 * analytic_params(get_config("imagenet128"))
    return k, (i128["step_peak_bytes"] - grads128) / grads128
