"""The time of paper-scale training: days as a range, from utilisation calibrated on the paper's
own two reported runs (App. E, Table 6), and the data loader's images/s against what the plan
consumes (issue 32). :mod:`hdit_edu.planner` adds the memory; ``hdit-edu plan`` prints both.

**The two runs with a wall-clock time** (Table 6; ImageNet-256 reports none)::

    ImageNet-128 (ablation E, 117M):   400k steps × batch 256 in 15 hours on 4 A100
    FFHQ-1024² (85M):                  1M steps × batch 256 in 5 days on 64 A100

With the planner's own FLOP count — *model FLOPs* = 3 × 2 × forward GMAC
(:func:`hdit_edu.flops.analytic_gflops`; the backward pass ≈ 2 forwards; recomputation not
counted, as MFU is defined) per image and step — and the A100's dense bf16 peak of 312
TFLOP/s, these runs imply a model-FLOP utilisation (:func:`paper_mfu`) of **28.6 %** at 128²
and **3.67 %** at 1024²: the 1024² model ran 7.8× further below the hardware's peak.

**The model** (every number below is named in the plan's output, with its source):

1. *Utilisation on the A100, per config* — the calibrated MFU of the paper run of the same
   resolution; between 128² and 1024² (ImageNet-256) a range: from ImageNet-128's MFU (the
   same finest-level width, 384, so the same per-FLOP cost of the widest, memory-bound
   layers) to the log-linear interpolation in pixels between the two runs. The reported times
   are rounded ("15 hours", "5 days"): ± :data:`PAPER_RUNS`' ``rounding_h``, which widens each
   calibrated MFU into a range.
2. *Another GPU* — the A100 time per image divided by a speed-up between the ratio of memory
   bandwidths (the step memory-bound: the low end) and the ratio of dense bf16 peaks (the
   utilisation carries over: the high end). The paper does not say which A100 (40 GB:
   1.555 TB/s, 80 GB: 2.039 TB/s); the bandwidth ratio is taken against the faster one.
3. *Recomputation* — activation checkpointing runs one more forward: × 8/6 on the step time
   (the paper's runs fit without it, see :func:`hdit_edu.planner.plan` on their hardware).
4. *The kernel path* of neighborhood attention (:data:`KERNEL_PATHS`): the paper's runs used
   NATTEN's CUDA kernels (k-diffusion's ``image_transformer_v2`` calls ``natten``), the
   calibration's own path (× 1). The pure-PyTorch gather kernel is measured, on the CPU only,
   at 1.53 × the step time of masked SDPA (toy, ``benchmarks/results/profile_step-cpu-…``);
   flex and masked SDPA against NATTEN are assumed × 1 until the GPU check measures them.
5. *Images*: the config's steps × batch, and its batch-size schedule (ImageNet-256:
   2M × 256 + 50k × 512 + 100k × 1024 + 50k × 2048 = 1.318 × the 2.2M × 256 of its steps).

**Why 1024² runs so far below 128²** — what the arithmetic shows: FFHQ-1024's finest levels
are narrow (width 128 at 256² tokens, 256 at 128²), so their matrix multiplications are short
(a 128-wide row does 128 multiply-adds per number read) and the per-token work that does not
scale with the width — norms, RoPE, the cosine-similarity q/k, the neighborhood kernel's
gathers and softmax, the residual adds — moves T·w numbers per layer for only T·w² FLOPs:
:func:`elementwise_per_flop` (numbers moved per model FLOP) is 2.5×
ImageNet-128's. Measured on the CPU (``benchmarks/results/planner-layers-cpu.json``: one layer
per level, forward + backward, true widths): the width-128 level runs at 0.45× the FLOP/s of
ImageNet-128's first level, FFHQ-1024's layers as a whole at 1/1.66 — of the 7.8×, the part
this machine can show. A roofline with one efficiency and one bytes-per-number constant cannot fit
both runs (the 1024² run is 51× slower per image, its FLOPs 6.6× and its element traffic
16×): the rest — 3× beyond memory traffic — is *not* explained by anything measured here. Open
candidates, none measured: NATTEN's 2023 (unfused) kernels at 2 heads of 64 channels and 64k
tokens, the data loader (decoding and augmenting 1024² PNGs: FFHQ's run needed 9.26 images/s
per GPU, one of our measured workers gives 6.6), and all-reduce over 8 nodes (85M parameters
per step). The GPU check (``benchmarks/gpu_checks.py``) measures the model step's own MFU at
1024² on one GPU, one batch kept on the device: what remains is the loader's and the
network's.

**The data loader**: the plan's images/s per GPU (at the fast end of its range) against the
images/s one worker process decodes (:data:`LOADER_PER_WORKER`, measured by
``benchmarks/loader_throughput.py`` on this project's shared 2-core CPU — a floor: a GPU
node's free cores decode faster). ImageNet's JPEGs are smaller than the measured 1024² files:
the rate is scaled by the source pixels (ImageNet's mean training image, ≈ 469 × 387), an
assumption. When one worker per GPU cannot keep up, the plan says so and how many would.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# ----------------------------------------------------------------------------------------------
# Hardware and the paper's runs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_tflops: float  # dense bf16 peak
    bandwidth_TBps: float  # HBM bandwidth (the fastest variant where there are several)
    memory_GiB: float


GPUS = {
    "A100": GPU("A100", 312.0, 2.039, 80.0),  # SXM 80 GB (40 GB: 1.555 TB/s)
    "H100": GPU("H100", 989.0, 3.35, 80.0),  # SXM
    "H200": GPU("H200", 989.0, 4.8, 141.0),
}


@dataclass(frozen=True)
class PaperRun:
    """A run of Table 6 with a reported wall-clock time."""

    config: str
    gpu: str
    gpus: int
    steps: int
    batch: int
    hours: float
    rounding_h: float  # how far the rounded report may be from the true time
    reported: str


PAPER_RUNS = {
    "imagenet128": PaperRun("imagenet128", "A100", 4, 400_000, 256, 15.0, 0.5, "15 hours"),
    "ffhq1024": PaperRun("ffhq1024", "A100", 64, 1_000_000, 256, 120.0, 12.0, "5 days"),
}
RECOMPUTE = 8 / 6  # activation checkpointing: one more forward per step


@dataclass(frozen=True)
class KernelPath:
    factor: float  # step time relative to the calibration runs' path (NATTEN)
    source: str


KERNEL_PATHS = {
    "natten": KernelPath(1.0, "the paper's runs used NATTEN's CUDA kernels (calibration)"),
    "natten-fused": KernelPath(1.0, "assumed ≤ the paper's NATTEN kernels; GPU check measures"),
    "natten-flex": KernelPath(1.0, "assumed; not measured (GPU check measures it)"),
    "masked-sdpa": KernelPath(1.0, "assumed; levels ≤ 32² tokens only"),
    "torch": KernelPath(
        1.53,
        "CPU: toy step 2.95 s vs 1.92 s with masked SDPA "
        "(benchmarks/results/profile_step-cpu-2026-11-23.json)",
    ),
}


def model_flops_per_image(config) -> float:
    """Model FLOPs of one training image: 3 passes (forward, backward ≈ 2×) × 2 FLOPs per MAC."""
    from ..flops import analytic_gflops

    return 6 * analytic_gflops(config) * 1e9


def pixels(config) -> int:
    from ..configs import normalize_resolution

    h, w = normalize_resolution(config.model.resolution)
    return h * w


def paper_mfu(name: str, hours: float | None = None) -> float:
    """The model-FLOP utilisation the paper run ``name`` implies (at ``hours``, default the
    reported time)."""
    from ..presets import get_config

    run = PAPER_RUNS[name]
    flops = model_flops_per_image(get_config(name)) * run.steps * run.batch
    seconds = 3600 * (hours if hours is not None else run.hours)
    return flops / (seconds * run.gpus * GPUS[run.gpu].bf16_tflops * 1e12)


def paper_mfu_range(name: str) -> tuple[float, float]:
    """(low, high) MFU of paper run ``name`` over its reported time's rounding."""
    run = PAPER_RUNS[name]
    return paper_mfu(name, run.hours + run.rounding_h), paper_mfu(name, run.hours - run.rounding_h)


def a100_mfu(config) -> tuple[float, float, str]:
    """(low, high) MFU of ``config`` on the A100 and where it comes from (the module's rule 1)."""
    lo128, hi128 = paper_mfu_range("imagenet128")
    lo1024, hi1024 = paper_mfu_range("ffhq1024")
    p = pixels(config)
    if config.name in PAPER_RUNS:
        lo, hi = paper_mfu_range(config.name)
        run = PAPER_RUNS[config.name]
        return lo, hi, f"{config.name}'s own run ({run.reported} on {run.gpus} {run.gpu})"
    if p <= 128**2:
        return lo128, hi128, "ImageNet-128's run (≤ 128²)"
    if p >= 1024**2:
        return lo1024, hi1024, "FFHQ-1024's run (≥ 1024²)"
    x = math.log(p / 128**2) / math.log(1024**2 / 128**2)  # 0 at 128², 1 at 1024²
    interpolated = math.exp((1 - x) * math.log(lo128) + x * math.log(lo1024))
    return interpolated, hi128, (
        "between the log-pixel interpolation of the two runs and ImageNet-128's run"
    )


def elementwise_per_flop(config) -> float:
    """Numbers that per-token work moves (Σ tokens × width over every layer an image passes)
    per model FLOP of the image: the memory traffic that FLOPs do not pay for."""
    from ..configs import token_grids

    model = config.model
    total = 0
    last = len(model.levels) - 1
    for i, (level, (h, w)) in enumerate(zip(model.levels, token_grids(model))):
        total += h * w * level.width * level.depth * (1 if i == last else 2)
    return total / model_flops_per_image(config)


# ----------------------------------------------------------------------------------------------
# Images of a run, and the loader
# ----------------------------------------------------------------------------------------------


def images_of_run(training) -> tuple[int, list[tuple[int, int]]]:
    """Images of ``training``'s ``steps``, with its batch-size schedule: (images, the
    [steps, batch] segments)."""
    starts = [(0, training.batch_size), *map(tuple, training.batch_schedule or ())]
    segments = []
    for i, (start, batch) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else training.steps
        if end > start:
            segments.append((end - start, batch))
    return sum(s * b for s, b in segments), segments


# images/s of one loader worker (1024² sources, benchmarks/results/loader_throughput-cpu-2026-12-
# 02.json: Intel Xeon, 2 shared cores, 1 torch thread), by format and augmentation on/off.
LOADER_FILE = "benchmarks/results/loader_throughput-cpu-2026-12-02.json"
LOADER_PER_WORKER = {
    ("png", False): 9.549,
    ("png", True): 6.586,
    ("jpeg", False): 18.211,
    ("jpeg", True): 9.956,
    ("prepared", False): 27.709,
    ("prepared", True): 14.718,
}
LOADER_SOURCE_PIXELS = 1024 * 1024
IMAGENET_SOURCE_PIXELS = 469 * 387  # ImageNet's mean training image (an assumption)


@dataclass
class LoaderCheck:
    format: str
    augment: bool
    per_worker: float  # images/s one worker delivers, scaled to this dataset's sources
    needed_per_gpu: float  # images/s one GPU consumes at the fast end of the plan
    workers: int  # loader workers per GPU assumed
    workers_needed: int
    source: str

    @property
    def limits(self) -> bool:
        return self.per_worker * self.workers < self.needed_per_gpu


def loader_check(config, images_per_s_per_gpu: float, workers: int = 1) -> LoaderCheck:
    """The measured loader against the plan's images/s per GPU (module docstring)."""
    imagenet = "imagenet" in config.name
    fmt = "jpeg" if imagenet else "png"
    augment = config.training.augment_p > 0
    per_worker = LOADER_PER_WORKER[(fmt, augment)]
    source = f"{LOADER_FILE} ({fmt}, 1024² sources, augmentation {'on' if augment else 'off'})"
    if imagenet:
        per_worker *= LOADER_SOURCE_PIXELS / IMAGENET_SOURCE_PIXELS
        source += ", × 1024²/(469·387) for ImageNet's smaller JPEGs (assumed)"
    return LoaderCheck(
        format=fmt,
        augment=augment,
        per_worker=per_worker,
        needed_per_gpu=images_per_s_per_gpu,
        workers=workers,
        workers_needed=max(1, math.ceil(images_per_s_per_gpu / per_worker)),
        source=source,
    )


# ----------------------------------------------------------------------------------------------
# The time estimate
# ----------------------------------------------------------------------------------------------


@dataclass
class TimeEstimate:
    """Days of a run as a range, with every assumption that went into it."""

    gpu: str
    gpus: int
    peak_tflops: float
    model_gflop_per_image: float
    images: int
    segments: list
    mfu_a100: tuple[float, float] | None  # None when --mfu was given
    mfu_source: str
    speedup: tuple[float, float]  # A100 → this GPU, (memory-bound, compute-bound)
    recompute: float
    kernel_path: str
    kernel_factor: float
    step_s: tuple[float, float]  # at the config's first batch, (fast, slow)
    days: tuple[float, float]  # (low, high)
    mfu: tuple[float, float]  # effective model-FLOP utilisation on this GPU (of the days)
    loader: LoaderCheck | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["days"] = {"low": self.days[0], "high": self.days[1]}
        d["step_s"] = {"low": self.step_s[0], "high": self.step_s[1]}
        d["mfu"] = {"low": self.mfu[0], "high": self.mfu[1]}
        d["speedup"] = {"memory_bound": self.speedup[0], "compute_bound": self.speedup[1]}
        if self.mfu_a100 is not None:
            d["mfu_a100"] = {"low": self.mfu_a100[0], "high": self.mfu_a100[1]}
        if self.loader is not None:
            d["loader"]["limits"] = self.loader.limits
        return d


def estimate_time(
    config,
    gpus: int,
    *,
    gpu: str = "H100",
    peak_tflops: float | None = None,
    mfu: float | None = None,
    checkpointing: str = "none",
    kernel_path: str = "natten",
    loader_workers: int = 1,
) -> TimeEstimate:
    """Days of ``config``'s run on ``gpus`` × ``gpu`` (module docstring); ``mfu`` given
    overrides the calibration (then the range is one point); ``peak_tflops`` overrides the
    GPU's peak."""
    if gpu not in GPUS:
        raise ValueError(f"gpu={gpu!r}: allowed {sorted(GPUS)}")
    if kernel_path not in KERNEL_PATHS:
        raise ValueError(f"kernel_path={kernel_path!r}: allowed {sorted(KERNEL_PATHS)}")
    target = GPUS[gpu]
    peak = peak_tflops or target.bf16_tflops
    flops = model_flops_per_image(config)
    images, segments = images_of_run(config.training)
    recompute = RECOMPUTE if checkpointing != "none" else 1.0
    kernel = KERNEL_PATHS[kernel_path].factor
    a100 = GPUS["A100"]
    if mfu is not None:
        per_image = (flops / (peak * 1e12 * mfu),) * 2  # GPU-seconds per image
        mfu_a100, source, speedup = None, "given (--mfu)", (1.0, 1.0)
    else:
        lo, hi, source = a100_mfu(config)
        mfu_a100 = (lo, hi)
        if gpu == "A100" and peak_tflops is None:
            speedup = (1.0, 1.0)
        else:
            speedup = (target.bandwidth_TBps / a100.bandwidth_TBps, peak / a100.bf16_tflops)
        a100_s = flops / (a100.bf16_tflops * 1e12)
        per_image = (a100_s / hi / speedup[1], a100_s / lo / speedup[0])
    per_image = tuple(s * recompute * kernel for s in per_image)
    days = tuple(images * s / gpus / 86_400 for s in per_image)
    batch = config.training.batch_size
    estimate = TimeEstimate(
        gpu=gpu,
        gpus=gpus,
        peak_tflops=peak,
        model_gflop_per_image=flops / 1e9,
        images=images,
        segments=segments,
        mfu_a100=mfu_a100,
        mfu_source=source,
        speedup=speedup,
        recompute=recompute,
        kernel_path=kernel_path,
        kernel_factor=kernel,
        step_s=tuple(batch * s / gpus for s in per_image),
        days=days,
        mfu=tuple(flops / (s * peak * 1e12) for s in per_image),
    )
    estimate.loader = loader_check(config, 1 / per_image[0], loader_workers)
    return estimate
