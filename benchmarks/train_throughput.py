"""Training throughput: samples/s, peak memory and (on GPU) model FLOPs utilisation.

    python benchmarks/train_throughput.py                 # CPU: the toy config (toy_config())
    python benchmarks/train_throughput.py --gpu           # GPU: ImageNet-128 ablation step E,
                                                          # batch 256, bf16 (Table 6)

Each run times ``--steps`` full training steps of :class:`hdit_edu.training.Trainer` (data,
augmentation, σ and noise draws, forward, backward, AdamW, EMA) after ``--warmup`` untimed
ones, and writes ``benchmarks/results/train_throughput-<device>-<date>.json`` with the device,
versions, config and numbers. The GPU benchmark feeds random images from memory (no ImageNet
needed): the model cost does not depend on the pixels.

MFU = achieved model FLOP/s ÷ the GPU's dense bf16 peak. Model FLOPs per image and step =
3 × forward (forward + backward ≈ 2 × forward), with the forward counted by
:func:`hdit_edu.flops.analytic_gflops` in multiply-adds (× 2 FLOPs each).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from hdit_edu.configs import get_config, paper_config, toy_config
from hdit_edu.env import environment_report
from hdit_edu.flops import analytic_gflops
from hdit_edu.training import Trainer

RESULTS = Path(__file__).resolve().parent / "results"
# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets.
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "RTX 4090": 165e12}


class RandomImages:
    """``batch(indices)`` → random images in [-1, 1] and classes: data without a data set."""

    def __init__(self, resolution: int, num_classes: int, size: int = 1_000_000):
        self.resolution, self.num_classes, self.size = resolution, num_classes, size

    def __len__(self) -> int:
        return self.size

    def batch(self, indices):
        g = torch.Generator().manual_seed(int(indices[0]))
        n = len(indices)
        images = torch.rand(n, 3, self.resolution, self.resolution, generator=g) * 2 - 1
        return images, torch.randint(0, max(1, self.num_classes), (n,), generator=g)


def peak_of(device_name: str) -> float | None:
    for key, value in BF16_PEAK.items():
        if key in device_name:
            return value
    return None


def benchmark(config, *, steps: int, warmup: int, device: str, synthetic: bool) -> dict:
    dataset = RandomImages(config.model.resolution, config.model.num_classes) if synthetic else None
    trainer = Trainer(config, None, dataset=dataset, device=device, progress=False)
    cuda = trainer.device.type == "cuda"
    for _ in range(warmup):
        trainer.train_step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    samples_per_s = steps * config.training.batch_size / seconds
    gflops_forward = analytic_gflops(config)  # multiply-adds per image, forward
    flops_per_s = samples_per_s * 3 * 2 * gflops_forward * 1e9
    name = torch.cuda.get_device_name(trainer.device) if cuda else platform.processor() or "cpu"
    peak = peak_of(name) if cuda else None
    result = {
        "device": name,
        "device_type": trainer.device.type,
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],  # other processes competing for the CPU
        "config": config.name,
        "params_M": sum(p.numel() for p in trainer.model.parameters()) / 1e6,
        "resolution": config.model.resolution,
        "batch_size": config.training.batch_size,
        "precision": "bf16 autocast" if trainer.use_bf16 else "fp32",
        "compile": config.training.compile,
        "steps_timed": steps,
        "seconds": seconds,
        "s_per_step": seconds / steps,
        "samples_per_s": samples_per_s,
        "forward_gflops_per_image": gflops_forward,
        "model_tflops_per_s": flops_per_s / 1e12,
        "mfu": flops_per_s / peak if peak else None,
        "peak_memory_MiB": (
            torch.cuda.max_memory_allocated(trainer.device) / 2**20
            if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS (Linux: KiB)
        ),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if cuda else "process peak RSS",
    }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--gpu", action="store_true", help="ImageNet-128 E at batch 256 bf16 on CUDA"
    )
    parser.add_argument(
        "--config", help="another config name (default: toy on CPU, imagenet128 on GPU)"
    )
    parser.add_argument("--batch-size", type=int, help="override the batch size")
    parser.add_argument("--steps", type=int, help="timed steps (default 20 CPU, 50 GPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 3 CPU, 10 GPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--device", help="torch device (default: cuda with --gpu, else cpu)")
    parser.add_argument("--out", help="output JSON (default: benchmarks/results/...)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)

    if args.gpu:
        if not torch.cuda.is_available() and not args.device:
            print("--gpu: CUDA is not available on this machine", file=sys.stderr)
            return 2
        config = get_config(args.config) if args.config else paper_config("imagenet128")
        device, steps, warmup = args.device or "cuda", args.steps or 50, args.warmup or 10
    else:
        config = get_config(args.config) if args.config else toy_config()
        device, steps, warmup = args.device or "cpu", args.steps or 20, args.warmup or 3
    if args.batch_size:
        config.training.batch_size = args.batch_size
    config.training.compile = args.compile
    result = benchmark(config, steps=steps, warmup=warmup, device=device, synthetic=args.gpu)
    report = environment_report()
    result["versions"] = {
        "python": report["python"],
        "torch": report["torch"],
        "natten": report["natten"],
    }
    result["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    result["omp_num_threads_env"] = os.environ.get("OMP_NUM_THREADS")
    result["command"] = " ".join(
        ["python", "benchmarks/train_throughput.py", *(argv or sys.argv[1:])]
    )
    print(json.dumps(result, indent=1))
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        kind = result["device_type"]
        tag = f"{kind}-{config.name}" + (f"-{result['threads']}threads" if kind == "cpu" else "")
        out = Path(args.out) if args.out else RESULTS / f"train_throughput-{tag}.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
