"""Training throughput: samples/s, model FLOPs utilisation (MFU) and peak memory of full
training steps, for each neighborhood-attention backend, eager and ``torch.compile``.

    python benchmarks/train_throughput.py                  # CPU: the toy config, batch 32, fp32
    python benchmarks/train_throughput.py --gpu            # GPU: ImageNet-128 E (Table 6: 117M
                                                           # parameters) at batch 256 and FFHQ-1024
                                                           # at the largest batch that fits, bf16,
                                                           # backends natten (fused) / natten-flex /
                                                           # torch, eager and torch.compile

One step is :meth:`hdit_edu.training.Trainer.train_step` — batch, augmentation, σ / noise /
label-dropout draws, forward, backward, AdamW, EMA: everything a run does. ``--warmup`` untimed
steps (the compiled runs compile there), then ``--repeats`` timed steps (median reported). Configs
whose data set is not on this machine (ImageNet, FFHQ) train on random images from memory
(:class:`common.RandomImages`): a step's cost does not depend on the pixels.

* **MFU** = model FLOP/s ÷ the device's dense bf16 peak (:data:`BF16_PEAK`). Model FLOPs per
  image and step = 3 × forward (backward ≈ 2 × forward), the forward counted by
  :func:`hdit_edu.flops.analytic_gflops` in multiply-adds, × 2 FLOPs each (31.4 GMAC for E at
  128²: 188 GFLOP per image and step). No MFU on the CPU (no meaningful peak).
* **Largest batch** (``--batch-size max``, CUDA only): powers of two, eager, default backend,
  two steps each, until one runs out of memory; the largest that ran is then timed with every
  backend and mode (a backend that needs more memory records its out-of-memory).
* **Backends** (``--backends``): ``auto`` (NATTEN's fused kernels on CUDA; masked SDPA / ours on
  CPU), ``natten`` (fused where compiled, else NATTEN's flex path), ``natten-flex`` (NATTEN's
  flex-attention kernel, forced), ``torch`` (ours, pure PyTorch), ``masked-sdpa``. See
  ``hdit_edu/attention.py``. NATTEN cannot backpropagate on the CPU: there its backends are
  recorded as skipped.
* **Reference side by side**: with ``HDIT_K_DIFFUSION_SRC`` pointing at a k-diffusion clone, each
  HDiT row also times a *model step* — the same loss (our :class:`~hdit_edu.diffusion.Denoiser`
  around the network), backward and AdamW on one fixed batch, bf16 autocast on CUDA — for our
  network and for k-diffusion's ``image_transformer_v2`` with identical config and weights
  (:func:`common.reference_model`), and reports ``ours_over_reference`` of samples/s. Data,
  EMA and bookkeeping are left out of both, so the ratio compares the networks alone.

Writes ``benchmarks/results/train_throughput-<device>-<date>.json`` (schema of ``common.py``).
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys

import common  # benchmarks/common.py (it also puts the repository root on sys.path)
import torch

from hdit_edu.attention import NA_BACKENDS
from hdit_edu.diffusion import Denoiser
from hdit_edu.flops import analytic_gflops
from hdit_edu.presets import get_config
from hdit_edu.training import Trainer, training_sigmas

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets.
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "RTX 4090": 165e12}
GPU_DEFAULTS = {"configs": ["imagenet128", "ffhq1024"], "batch": {"ffhq1024": "max"}}
GPU_BACKENDS = ["auto", "natten-flex", "torch"]
MODES = ("eager", "compile")


def bf16_peak(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named ``device_name`` (None when not in the table)."""
    return next((v for k, v in BF16_PEAK.items() if k in device_name), None)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def make_trainer(config, batch_size: int, backend: str, mode: str, device) -> Trainer:
    """A :class:`Trainer` (writing nothing) of ``config`` at ``batch_size`` with ``backend`` on
    every attention module, compiled when ``mode == "compile"``."""
    config = copy.deepcopy(config)
    config.training.batch_size = batch_size
    config.training.compile = mode == "compile"
    dataset = common.benchmark_dataset(config)
    return Trainer(
        config, None, dataset=dataset, device=device, progress=False, attention_backend=backend
    )


def largest_batch(config, device, *, limit: int = 4096) -> dict:
    """The largest power-of-two batch (eager, backend ``auto``) with which two training steps
    run on ``device`` (CUDA): ``{"batch_size", "tried"}``."""
    if device.type != "cuda":
        raise ValueError("--batch-size max searches GPU memory: it needs --device cuda")
    best, tried, batch = None, [], 1
    while batch <= limit:
        try:
            trainer = make_trainer(config, batch, "auto", "eager", device)
            trainer.train_step()
            trainer.train_step()
            best = batch
            tried.append({"batch_size": batch, "fits": True})
        except torch.OutOfMemoryError:
            tried.append({"batch_size": batch, "fits": False})
            break
        finally:
            trainer = None
            _release(device)
        batch *= 2
    if best is None:
        raise RuntimeError(f"{config.name}: not even batch 1 fits on {common.device_name(device)}")
    return {"batch_size": best, "tried": tried}


def throughput(seconds_per_step: float, batch_size: int, gflops_forward: float, peak) -> dict:
    """samples/s, model TFLOP/s (3 × forward × 2 FLOPs per multiply-add) and MFU."""
    samples_per_s = batch_size / seconds_per_step
    flops_per_s = samples_per_s * 3 * 2 * gflops_forward * 1e9
    return {
        "samples_per_s": samples_per_s,
        "model_tflops_per_s": flops_per_s / 1e12,
        "mfu": flops_per_s / peak if peak else None,
    }


def model_step(inner: torch.nn.Module, config, batch_size: int, device, *, compile_: bool):
    """A closure doing one loss + backward + AdamW step of ``inner`` (our Denoiser around it;
    bf16 autocast on CUDA) on one fixed random batch: the network's cost alone."""
    m, d, t = config.model, config.diffusion, config.training
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch_size, m.in_channels, m.resolution, m.resolution, generator=g) * 2 - 1
    x0 = x0.to(device)
    noise = torch.randn(x0.shape, generator=g).to(device)
    sigma = training_sigmas(config, batch_size, generator=g).to(device)
    cond = {}
    if m.num_classes:
        cond["class_cond"] = torch.randint(0, m.num_classes, (batch_size,), generator=g).to(device)
    net = torch.compile(inner) if compile_ else inner
    denoiser = Denoiser(net, d.sigma_data, d.loss_weighting, d.gamma)
    optimizer = torch.optim.AdamW(inner.parameters(), lr=t.lr, betas=tuple(t.betas))
    bf16 = device.type == "cuda" and t.precision == "bf16"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            losses = denoiser.loss(x0, noise, sigma, **cond)
        losses.mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def compare_with_reference(trainer: Trainer, args, device, mode: str) -> dict:
    """Model-step samples/s of our network and of k-diffusion's with the same weights."""
    config, batch = trainer.config, trainer.config.training.batch_size
    local = any(level.attention == "neighborhood" for level in config.model.levels)
    if device.type == "cpu" and local:
        # k-diffusion calls natten.functional.na2d, whose CPU path cannot backpropagate
        return {"skipped": "the reference's neighborhood attention (NATTEN) is forward-only on CPU"}
    out = {}
    ours = copy.deepcopy(trainer.model).train()
    with common.reference_model(ours, device) as reference:
        for label, net in (("ours", ours), ("reference", reference.train())):
            step = model_step(net, config, batch, device, compile_=mode == "compile")
            timing = common.time_call(step, device, warmup=args.warmup, repeats=args.repeats)
            out[label] = {"step_time": timing.to_dict(), "samples_per_s": batch / timing.median}
    out["ours_over_reference"] = out["ours"]["samples_per_s"] / out["reference"]["samples_per_s"]
    return out


def measure(config, batch_size: int, backend: str, mode: str, args, device) -> dict:
    """One row: time ``--repeats`` training steps, then one more step for peak memory."""
    row = {"config": config.name, "batch_size": batch_size, "backend": backend, "mode": mode}
    row["na_backends"] = common.resolved_backends(
        config.model, config.model.resolution, backend, device
    )
    if device.type == "cpu" and backend.startswith("natten"):
        row["skipped"] = "NATTEN cannot backpropagate on the CPU (its flex path is forward-only)"
        return row
    trainer = None
    try:
        trainer = make_trainer(config, batch_size, backend, mode, device)
        timing = common.time_call(
            trainer.train_step, device, warmup=args.warmup, repeats=args.repeats
        )
        with common.PeakMemory(device) as memory:
            trainer.train_step()
        gflops = analytic_gflops(config)
        row.update(
            params_M=sum(p.numel() for p in trainer.model.parameters()) / 1e6,
            resolution=config.model.resolution,
            precision="bf16 autocast" if trainer.use_bf16 else "fp32",
            step_time=timing.to_dict(),
            forward_gflops_per_image=gflops,
            **throughput(timing.median, batch_size, gflops, args.peak),
            peak_memory_MiB=memory.peak_MiB,
            peak_memory_kind=memory.kind,
        )
        if common.k_diffusion_source() and config.model.arch == "hdit":
            row["reference"] = compare_with_reference(trainer, args, device, mode)
    except torch.OutOfMemoryError:
        row["skipped"] = "out of memory"
    finally:
        trainer = None
        _release(device)
    return row


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(
        parser, repeats="timed steps; default 20 CPU, 50 GPU", warmup="default 3 CPU, 10 GPU"
    )
    parser.add_argument(
        "--gpu", action="store_true", help="the GPU benchmark (--device cuda and its defaults)"
    )
    parser.add_argument(
        "--configs", nargs="+", help="config names (default: toy on CPU; imagenet128 ffhq1024 GPU)"
    )
    parser.add_argument(
        "--batch-size",
        help="an int, or 'max' (largest power of two that fits; CUDA). Default: the config's "
        "(Table 6: 256), or max for ffhq1024 on GPU",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        help=f"NA backends (default: auto on CPU; {' '.join(GPU_BACKENDS)} on GPU)",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        help="eager and/or compile (default: eager CPU, both GPU)",
    )
    parser.add_argument("--compile", action="store_true", help="shorthand for --modes compile")
    args = parser.parse_args(argv)
    if args.gpu and args.device == "auto":
        args.device = "cuda"
    try:
        device = common.resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    gpu = device.type == "cuda"
    if args.quick:  # the smoke test: toy model, tiny batch, one step
        args.configs = args.configs or ["toy"]
        args.batch_size = args.batch_size or "4"
        args.repeats, args.warmup = args.repeats or 1, args.warmup or 1
        args.backends = args.backends or ["auto", "torch"]
        args.threads = args.threads or 1
    args.configs = args.configs or (GPU_DEFAULTS["configs"] if gpu else ["toy"])
    args.backends = args.backends or (GPU_BACKENDS if gpu else ["auto"])
    args.modes = ["compile"] if args.compile else args.modes or (list(MODES) if gpu else ["eager"])
    args.repeats = args.repeats or (50 if gpu else 20)
    args.warmup = args.warmup if args.warmup is not None else (10 if gpu else 3)
    if args.batch_size not in (None, "max") and not str(args.batch_size).isdigit():
        parser.error(f"--batch-size {args.batch_size!r}: a positive int or 'max'")
    if args.batch_size == "max" and not gpu:
        parser.error("--batch-size max searches GPU memory: it needs --device cuda")
    unknown = [b for b in args.backends if b not in NA_BACKENDS]
    if unknown:
        parser.error(f"unknown --backends {unknown}; allowed: {', '.join(NA_BACKENDS)}")
    for name in args.configs:
        try:
            get_config(name)
        except ValueError as error:
            parser.error(str(error))
    args.peak = bf16_peak(common.device_name(device)) if gpu else None
    return args, device


def batch_for(config, args, device) -> tuple[int, dict | None]:
    """The batch a config is timed at, and the search record when it was searched."""
    wanted = args.batch_size
    if wanted is None and device.type == "cuda":
        wanted = GPU_DEFAULTS["batch"].get(config.name)
    if wanted == "max":
        search = largest_batch(config, device)
        return search["batch_size"], search
    return (int(wanted) if wanted else config.training.batch_size), None


def run(args, device) -> tuple[dict, list, dict]:
    """Time every config, backend and mode; ``(settings, results, summary)`` of the JSON."""
    rows, searches = [], {}
    for name in args.configs:
        config = get_config(name)
        if device.type != "cuda":
            config.training.precision = "fp32"
        batch, search = batch_for(config, args, device)
        if search:
            searches[name] = search
        for backend in args.backends:
            for mode in args.modes:
                row = measure(config, batch, backend, mode, args, device)
                rows.append(row)
                shown = row.get("skipped") or f"{row['samples_per_s']:.1f} samples/s"
                print(f"{name} batch {batch} {backend} {mode}: {shown}", file=sys.stderr)
    settings = {
        "configs": args.configs,
        "batch_size": args.batch_size,
        "largest_batch_search": searches,
        "backends": args.backends,
        "modes": args.modes,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "bf16_peak_flops": args.peak,
        "data": "the config's own data set where present, else random images in memory",
        "k_diffusion_source": common.k_diffusion_source(),
        "quick": args.quick,
        "threads": torch.get_num_threads(),
    }
    summary = {
        f"{r['config']} b{r['batch_size']} {r['backend']} {r['mode']}": (
            {"skipped": r["skipped"]}
            if "skipped" in r
            else {
                "samples_per_s": r["samples_per_s"],
                "mfu": r["mfu"],
                "peak_memory_MiB": r["peak_memory_MiB"],
                "ours_over_reference": r.get("reference", {}).get("ours_over_reference"),
            }
        )
        for r in rows
    }
    return settings, rows, summary


def main(argv=None) -> int:
    return common.run_script("train_throughput", parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
