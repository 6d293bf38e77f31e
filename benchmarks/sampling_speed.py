"""Sampling speed: images per second of 50-step DPM++(3M) SDE (§5.1, Table 6).

    python benchmarks/sampling_speed.py                   # CPU: toy (50 steps, measured) and
                                                          # imagenet256 (2 steps, extrapolated)
    python benchmarks/sampling_speed.py --device cuda     # GPU: imagenet256 and ffhq1024, 50
                                                          # steps measured

Each config's model (freshly initialised — the cost of a step does not depend on the weights) is
sampled with :func:`hdit_edu.sampling.generate`, the library's sampling path: the Karras
schedule over the config's σ range, ``--sampler`` (default ``dpmpp_3m_sde``, the paper's),
``--cfg-scale`` (default 1: no guidance, as the paper's Table 4; w ≠ 1 doubles the batch of
every model call), one batch of ``--batch-size`` images. The sampler calls the model once per
step (50 steps = 50 model evaluations).

**Measured vs extrapolated.** On CUDA every config runs its full ``--steps`` (50). On the CPU a
big model runs only ``--measured-steps`` (default 2 for everything but the toy config) and the
50-step time is *extrapolated*: ``seconds(50) = 50 × seconds(measured) / measured_steps``
(each step is one model evaluation of the same cost; the per-sample overhead outside the steps
is negligible next to one model evaluation). The JSON says which: ``measured_steps``,
``steps``, ``extrapolated``. Before the timed runs, ``--warmup`` (at least 1) untimed 1-step
runs warm up (lazy initialisation, attention masks, allocator); the first one also measures
the peak memory of a step (:class:`common.PeakMemory`).

On CUDA the model runs under bf16 autocast (Table 6's precision), on the CPU in fp32, with the
neighborhood attention ``--backend`` (default ``"auto"``; the JSON lists what it picks at each
level). With ``HDIT_K_DIFFUSION_SRC`` set, the same sampling is timed with k-diffusion's model
(same config and weights) inside our sampler: ``reference`` and ``ours_over_reference`` (ratio of
images/s) in the JSON.

Writes ``benchmarks/results/sampling_speed-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import common  # benchmarks/common.py (it also puts the repository root on sys.path)
import torch

from hdit_edu.diffusion import Denoiser
from hdit_edu.flops import analytic_gflops, analytic_params
from hdit_edu.models import build_model
from hdit_edu.presets import get_config
from hdit_edu.sampling import SAMPLERS, generate

CPU_CONFIGS = ("toy", "imagenet256")
CUDA_CONFIGS = ("imagenet256", "ffhq1024")
# Batch sizes per config and device kind (overridable with --batch-size).
BATCH_SIZES = {
    "cpu": {"toy": 16},
    "cuda": {"toy": 256, "imagenet128": 128, "imagenet256": 64, "ffhq1024": 8},
}
CPU_FULL_STEP_CONFIGS = ("toy",)  # the only configs that run all steps on the CPU by default


def default_batch_size(name: str, device) -> int:
    return BATCH_SIZES[device.type].get(name.split("@")[0], 1)


def default_measured_steps(name: str, steps: int, device) -> int:
    if device.type == "cuda" or name.split("@")[0] in CPU_FULL_STEP_CONFIGS:
        return steps
    return min(2, steps)


def time_sampling(denoiser, config, *, batch_size, steps, args, device) -> float:
    """Seconds of one :func:`generate` call of ``batch_size`` images with ``steps`` steps."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def run():
        with torch.no_grad(), autocast:
            generate(
                denoiser,
                config,
                batch_size,
                sampler=args.sampler,
                steps=steps,
                cfg_scale=args.cfg_scale,
                batch_size=batch_size,
                device=device,
            )

    common.synchronize(device)
    t0 = time.perf_counter()
    run()
    common.synchronize(device)
    return time.perf_counter() - t0


def benchmark_denoiser(
    denoiser, config, *, batch_size, measured_steps, repeats, args, device
) -> dict:
    """``--warmup`` untimed 1-step runs (the first also measures the peak memory: every step
    costs the same), then ``repeats`` timed runs of ``measured_steps`` steps; images/s of
    ``--steps`` steps (extrapolated when fewer were measured)."""
    one_step = {"batch_size": batch_size, "steps": 1, "args": args, "device": device}
    with common.PeakMemory(device) as memory:
        time_sampling(denoiser, config, **one_step)
    for _ in range(args.warmup - 1):
        time_sampling(denoiser, config, **one_step)
    seconds = [
        time_sampling(
            denoiser, config, batch_size=batch_size, steps=measured_steps, args=args, device=device
        )
        for _ in range(repeats)
    ]
    timing = common.Timing(seconds)
    per_step = timing.median / measured_steps
    total = per_step * args.steps
    return {
        **timing.to_dict(),
        "seconds_per_step": per_step,
        "seconds_per_step_per_image": per_step / batch_size,
        "seconds_for_steps": total,
        "images_per_s": batch_size / total,
        "peak_memory_MiB": memory.peak_MiB,
        "memory_kind": memory.kind,
    }


def benchmark_config(name: str, args, device) -> dict:
    config = get_config(name)
    res = config.model.resolution
    batch_size = args.batch_size or default_batch_size(name, device)
    measured_steps = args.measured_steps or default_measured_steps(name, args.steps, device)
    measured_steps = min(measured_steps, args.steps)
    # a full-length run is cheap enough for 3 repeats; an extrapolated (big) one gets 2
    repeats = args.repeats or (1 if args.quick else 3 if measured_steps == args.steps else 2)
    row = {
        "config": config.name,
        "resolution": res,
        "params": analytic_params(config),
        "forward_gflops_per_image": analytic_gflops(config),
        "batch_size": batch_size,
        "sampler": args.sampler,
        "cfg_scale": args.cfg_scale,
        "steps": args.steps,
        "measured_steps": measured_steps,
        "extrapolated": measured_steps < args.steps,
        "model_evaluations_per_image": args.steps * (2 if args.cfg_scale != 1 else 1),
        "na_backends": common.resolved_backends(config.model, res, args.backend, device),
    }
    print(
        f"{name}: {row['params'] / 1e6:.1f}M parameters, {res}², batch {batch_size}, "
        f"{measured_steps}/{args.steps} steps{' (extrapolated)' if row['extrapolated'] else ''}",
        flush=True,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = build_model(config, attention_backend=args.backend).eval().requires_grad_(False)
    d = config.diffusion
    denoiser = Denoiser(model, d.sigma_data, d.loss_weighting, d.gamma)
    kwargs = {
        "batch_size": batch_size,
        "measured_steps": measured_steps,
        "repeats": repeats,
        "args": args,
    }
    row.update(benchmark_denoiser(denoiser, config, device=device, **kwargs))
    print(
        f"  {row['images_per_s']:.4g} images/s ({row['seconds_per_step']:.3f} s per step of "
        f"{batch_size} images)",
        flush=True,
    )
    if common.k_diffusion_source() and config.model.arch == "hdit":
        try:
            with common.reference_model(model, device) as reference:
                ref = Denoiser(reference, d.sigma_data, d.loss_weighting, d.gamma)
                row["reference"] = benchmark_denoiser(ref, config, device=device, **kwargs)
                row["reference"]["ours_over_reference"] = (
                    row["images_per_s"] / row["reference"]["images_per_s"]
                )
        except Exception as error:  # noqa: BLE001 - record why the reference failed
            row["reference"] = {"skipped": f"{type(error).__name__}: {error}"[:300]}
    del model, denoiser
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(
        parser, repeats="3; 2 when extrapolated", warmup="1-step runs, at least 1"
    )
    parser.add_argument("--configs", nargs="+", help="config names (CPU: toy imagenet256; CUDA: "
                        "imagenet256 ffhq1024)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (Table 6: 50)")
    parser.add_argument(
        "--measured-steps", type=int, help="steps actually run (CPU big models: 2, else all)"
    )
    parser.add_argument("--batch-size", type=int, help="images per batch (per-config default)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="dpmpp_3m_sde")
    parser.add_argument("--cfg-scale", type=float, default=1.0, help="1 = no guidance")
    parser.add_argument("--precision", choices=("bf16", "fp32"), help="CUDA bf16, CPU fp32")
    parser.add_argument("--backend", default="auto", help="neighborhood attention backend")
    args = parser.parse_args(argv)
    device = common.resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.quick:
        args.configs = args.configs or ["toy"]
        args.batch_size = args.batch_size or 1
        args.measured_steps = args.measured_steps or 2
        args.threads = args.threads or 1
    args.configs = args.configs or list(CUDA_CONFIGS if cuda else CPU_CONFIGS)
    args.warmup = max(1, args.warmup or 1)
    args.precision = args.precision or ("bf16" if cuda else "fp32")
    if args.steps < 1 or (args.measured_steps is not None and args.measured_steps < 1):
        parser.error("--steps and --measured-steps must be >= 1")
    return args, device


def run(args, device) -> tuple[dict, list, dict]:
    """Time every config; ``(settings, results, summary)`` of the result JSON."""
    rows = [benchmark_config(name, args, device) for name in args.configs]
    summary = {
        r["config"]: {
            "images_per_s": r["images_per_s"],
            "steps": r["steps"],
            "measured_steps": r["measured_steps"],
            "extrapolated": r["extrapolated"],
            "batch_size": r["batch_size"],
            **(
                {"ours_over_reference": r["reference"].get("ours_over_reference")}
                if "reference" in r
                else {}
            ),
        }
        for r in rows
    }
    settings = {
        "configs": args.configs,
        "steps": args.steps,
        "sampler": args.sampler,
        "cfg_scale": args.cfg_scale,
        "precision": args.precision,
        "backend": args.backend,
        "repeats": args.repeats or "3 (full-length runs), 2 (extrapolated runs)",
        "warmup": f"{args.warmup} untimed 1-step run(s) per config",
        "k_diffusion_source": common.k_diffusion_source(),
        "quick": args.quick,
        "threads": torch.get_num_threads(),
    }
    return settings, rows, summary


def main(argv=None) -> int:
    return common.run_script("sampling_speed", parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
