"""The memory of paper-scale training: what one training step holds on a GPU, and the CPU
measurements it is fitted on and checked against (Table 6, App. E; issues 17 and 32).

:func:`hdit_edu.planner.plan` tries micro-batches and checkpointing modes against
:func:`estimate_memory`; ``hdit-edu plan`` prints the parts.

**Memory of one training step** (per GPU; P parameters; fp32 master weights in every
precision, as ``torch.autocast`` keeps them)::

    peak = weights 4P + EMA 4P + AdamW moments 8P                 (resident between steps)
         + max(b · activations per image                          (forward end / recomputation)
                 [+ gradients 4P: accumulation] [+ autocast's bf16 weight copies 2P],
               b · activations per image + gradients 4P            (checkpointing: recomputation)
               gradients 4P + optimizer temporaries)                (the AdamW step)
         + inputs

Without checkpointing the activations peak at the end of the forward pass, before any
gradient exists (the backward frees each saved activation as the parameter gradients fill
up). With checkpointing the peak comes during a segment's recomputation in the backward pass,
when gradients are already accumulating, and with accumulation every micro-step after the
first runs its forward pass with the gradients of the earlier ones held: in both cases the
gradients are added (an upper bound for checkpointing: not all of them exist yet). Under bf16
autocast the forward pass caches a bf16 copy of every weight it casts (freed when the
``autocast`` block exits, before the backward and its recomputations). *Inputs*: ``Trainer.micro_batches`` holds the
image and noise of every micro-batch of the step at once.

*Activations per image* come from the model's shape: with ``S = Σ_layers T_l · w_l`` (tokens ×
width of every transformer layer the image passes, down, middle and up), ``"none"`` keeps
``k · S`` fp32 numbers per image; ``"layer"`` keeps each layer's input (``S``) plus one layer
being recomputed (``k · max_l T_l w_l``); ``"level"`` keeps each level's input plus one level
being recomputed (``k · max_level Σ_its layers T w``). *bf16*: × :data:`BF16_ACTIVATION_FACTOR`
(0.67, measured on CPU autocast, not ½: the model upcasts norms, RoPE, the cosine-similarity
q/k and the pure-PyTorch neighborhood kernel to fp32 on purpose).

**Fitted and held out.** Three constants are fitted (:func:`_calibrate`; the tests recompute
them from the files): ``k`` on FFHQ-1024² (batch 1, fp32, no checkpointing), AdamW's
foreach temporaries :data:`OPTIMIZER_TEMP` on ImageNet-128 (batch 1, whose step peaks in the
optimizer), both in :data:`CALIBRATION_FILE`; the bf16 factor on four cells of
:data:`CELLS_FILE` (:data:`BF16_FIT_CELLS`: the toy, 2 and 4 images, fp32 and bf16). Every
other recorded row — other modes and configs at batch 1, batch 2–4 in every checkpointing
mode, accumulation, bf16 with checkpointing, FFHQ's five levels at 256² — is a prediction,
compared by
:func:`heldout_table` (``benchmarks/README.md`` shows it). The CPU runs the "torch" /
masked-SDPA neighborhood kernels, which keep their attention weights for the backward pass;
NATTEN's fused GPU kernels keep less, so on a GPU the estimate should err on the safe side.

**The measurement** the planner is calibrated against: :class:`PeakMemory` /
:func:`peak_allocated`, the most tensor memory a block holds at once above what was allocated
at entry — CUDA's allocator count on a GPU, and on the CPU (where
``torch.cuda.max_memory_allocated`` has no counterpart) the running sum of the allocator events
``torch.profiler`` records with ``profile_memory=True``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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
    Path(__file__).resolve().parents[2] / "benchmarks/results/planner-calibration-cpu.json"
)
# Cells at batch ≥ 2, with accumulation and in CPU bf16 autocast (issue 32): the bf16 factor is
# fitted on four of them (BF16_FIT_CELLS), the rest are the held-out check.
CELLS_FILE = CALIBRATION_FILE.with_name("planner-cells-cpu.json")
# k: fp32 numbers a transformer layer keeps per token and channel for the backward pass,
# fitted on FFHQ-1024² (batch 1, fp32, CPU, no checkpointing; CALIBRATION_FILE).
ACTIVATION_K = 27.721
# AdamW's foreach temporaries at its step, as a fraction of the gradients' 4P bytes (measured
# on ImageNet-128, whose batch-1 step peaks in the optimizer: CALIBRATION_FILE).
OPTIMIZER_TEMP = 0.11160
# bf16 autocast's activations per image over fp32's: measured on the CPU (the slope of the step
# peak in the batch, toy, 2→4 images: 0.670; CELLS_FILE, BF16_FIT_CELLS). ImageNet-128's bf16
# steps ran past 300 s on the loaded CPU (recorded as timed out); issue 32 reports 0.67 there
# too (240 / 358 MiB per image). Not ½: the model computes norms, RoPE, the cosine-similarity
# q/k and the pure-PyTorch neighborhood kernel in fp32 on purpose. CUDA's autocast rules
# differ: the GPU check measures it there.
BF16_ACTIVATION_FACTOR = 0.67
BF16_FACTOR_SOURCE = "measured on CPU autocast"
BF16_FIT_CELLS = {"toy": (2, 4)}  # batches of the slope
BYTES_FP32 = 4
BYTES_BF16 = 2
ACTIVATION_SCALE = {"fp32": 1.0, "bf16": BF16_ACTIVATION_FACTOR}
CHECKPOINTING_ORDER = ("none", "level", "layer")  # least recomputation first


def _layer_sizes(model) -> list[list[int]]:
    """``T · w`` of every layer, grouped by the level pass that runs it (down passes, the
    middle, up passes), for one image."""
    from ..configs import token_grids

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
    from ..layers import check_checkpointing

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


def input_bytes(config, images: int) -> int:
    """A step's inputs: ``Trainer.micro_batches`` holds every micro-batch's image and noise
    (fp32) at once."""
    from ..configs import normalize_resolution

    h, w = normalize_resolution(config.model.resolution)
    return images * 2 * config.model.in_channels * h * w * BYTES_FP32


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
    grad_accum: int = 1
    autocast_cache: float = 0.0  # bf16 copies of the weights, alive through the forward pass
    inputs: float = 0.0  # the step's images and noise, every micro-batch

    @property
    def activations(self) -> float:
        return self.activations_per_image * self.micro_batch

    @property
    def gradients_held(self) -> float:
        """Gradients alive at the activations' peak: during a checkpointed segment's
        recomputation, and through every micro-step's forward pass after the first."""
        return self.gradients if self.checkpointing != "none" or self.grad_accum > 1 else 0.0

    @property
    def transient(self) -> float:
        """The step's own peak above the resident tensors: the largest of the forward pass's
        end (with autocast's weight cache), a checkpointed segment's recomputation in the
        backward pass (no cache: the ``autocast`` block has exited) and AdamW's step."""
        held = self.gradients if self.grad_accum > 1 else 0.0
        forward = self.activations + held + self.autocast_cache
        recompute = self.activations + self.gradients if self.checkpointing != "none" else 0.0
        optimizer = self.gradients + self.optimizer_temporaries
        return self.inputs + max(forward, recompute, optimizer)

    @property
    def peak(self) -> float:
        return self.weights + self.ema + self.adam_moments + self.transient


def estimate_memory(
    config,
    micro_batch: int = 1,
    checkpointing: str = "none",
    precision: str = "fp32",
    grad_accum: int = 1,
) -> MemoryEstimate:
    """The predicted peak memory of a training step of ``config`` at ``micro_batch`` images
    and ``grad_accum`` micro-steps per optimizer step."""
    from ..flops import analytic_params

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
        grad_accum=grad_accum,
        autocast_cache=BYTES_BF16 * params if precision == "bf16" else 0.0,
        inputs=input_bytes(config, micro_batch * grad_accum),
    )


# ----------------------------------------------------------------------------------------------
# Calibration and the held-out check
# ----------------------------------------------------------------------------------------------


def read_calibration(path: str | Path = CALIBRATION_FILE) -> list[dict]:
    """The measured rows of ``benchmarks/planner_calibration.py`` (failed cells left out)."""
    return [r for r in json.loads(Path(path).read_text())["results"] if "error" not in r]


def row_config(row: dict):
    """The config a measured row ran: its name at its resolution (all levels kept)."""
    from ..presets import get_config

    config = get_config(row["config"])
    config.model.resolution = tuple(row["resolution"])
    if config.model.resolution[0] == config.model.resolution[1]:
        config.model.resolution = config.model.resolution[0]
    return config


def predict_row(row: dict) -> MemoryEstimate:
    return estimate_memory(
        row_config(row),
        row.get("batch", 1),
        row["checkpointing"],
        row.get("precision", "fp32"),
        row.get("grad_accum", 1),
    )


def _calibrate() -> tuple[float, float, float]:
    """(ACTIVATION_K, OPTIMIZER_TEMP, BF16_ACTIVATION_FACTOR) from the recorded measurements
    (see the module docstring)."""
    from ..flops import analytic_params
    from ..presets import get_config

    rows = {(r["config"], r["checkpointing"]): r for r in read_calibration()}
    ffhq = rows[("ffhq1024", "none")]
    config = get_config("ffhq1024")
    total = sum(sum(p) for p in _layer_sizes(config.model))
    k = (ffhq["step_peak_bytes"] - input_bytes(config, 1)) / (BYTES_FP32 * total)
    i128 = rows[("imagenet128", "none")]
    config = get_config("imagenet128")
    grads128 = BYTES_FP32 * analytic_params(config)
    temp = (i128["step_peak_bytes"] - input_bytes(config, 1) - grads128) / grads128
    slopes = _bf16_slopes()
    return k, temp, sum(slopes.values()) / len(slopes)


FIT_ROWS = {("ffhq1024", "none"), ("imagenet128", "none")}  # CALIBRATION_FILE rows fitted on


def is_fit_row(row: dict) -> bool:
    """Whether a measured row was used to fit a constant (k, the optimizer's temporaries, the
    bf16 factor); every other row is a held-out check of the model."""
    if row.get("batch", 1) == 1 and row.get("grad_accum", 1) == 1 and row.get("precision") == "fp32":
        if (row["config"], row["checkpointing"]) in FIT_ROWS and "cell" not in row:
            return True
    pair = BF16_FIT_CELLS.get(row["config"])
    return bool(
        "cell" in row
        and pair
        and row["checkpointing"] == "none"
        and row.get("grad_accum", 1) == 1
        and row.get("batch") in pair
    )


def heldout_table() -> list[dict]:
    """Predicted against measured peak for every recorded row (both files), with ``fit``:
    whether the row fitted a constant. The held-out rows are the model's check."""
    out = []
    for path in (CALIBRATION_FILE, CELLS_FILE):
        for row in read_calibration(path):
            e = predict_row(row)
            predicted, resident = e.peak, e.weights + e.ema + e.adam_moments
            out.append({
                "config": row["config"],
                "resolution": row["resolution"][0],
                "checkpointing": row["checkpointing"],
                "micro_batch": row.get("batch", 1),
                "grad_accum": row.get("grad_accum", 1),
                "precision": row.get("precision", "fp32"),
                "predicted_bytes": predicted,
                "measured_bytes": row["peak_bytes"],
                "error_percent": 100 * (predicted / row["peak_bytes"] - 1),
                # the step's own memory (gradients, activations, temporaries), without the
                # resident tensors that dilute the error at small batches
                "transient_error_percent": 100 * (
                    (predicted - resident) / row["step_peak_bytes"] - 1
                ),
                "fit": is_fit_row(row),
            })  # fmt: skip
    return out


def _bf16_slopes() -> dict[str, float]:
    """bf16 / fp32 activations per image (slopes of the step peak in the batch) per config."""
    cells = read_calibration(CELLS_FILE)
    out = {}
    for name, (b1, b2) in BF16_FIT_CELLS.items():
        peak = {
            (r["precision"], r["batch"]): r["step_peak_bytes"]
            for r in cells
            if r["config"] == name and r["checkpointing"] == "none" and r["grad_accum"] == 1
        }
        if all((p, b) in peak for p in ("fp32", "bf16") for b in (b1, b2)):
            slope = {p: (peak[(p, b2)] - peak[(p, b1)]) / (b2 - b1) for p in ("fp32", "bf16")}
            out[name] = slope["bf16"] / slope["fp32"]
    return out

