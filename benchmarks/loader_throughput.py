"""Data loading at scale: images/s of the image-folder loader at 1024², per worker process, next
to the rate FFHQ-1024's training consumes (issue 17).

    python benchmarks/loader_throughput.py --threads 1          # 1024², JPEG and PNG, 0/1/2 workers
    python benchmarks/loader_throughput.py --quick              # 64², a smoke run

**What is timed** is the path a training run reads images through:
:class:`hdit_edu.data.ImageFolderDataset` (decode, cover-resize and center-crop, uint8 → float in
[−1, 1]) in the order of :class:`hdit_edu.data.ResumableSampler`; with 0 workers the trainer's
``dataset.batch(indices)`` in the main process, with N ≥ 1 workers the trainer's own
``DataLoader`` (``hdit_edu.training._loader_batches``: worker processes, one step's batch
each in flight, in shared memory); with augmentation on, the trainer's non-leaking
augmentation of the batch (:class:`hdit_edu.training.StepAugment`: :class:`hdit_edu.data.Augment`
at FFHQ's p = 0.12, drawn from the trainer's per-step generators), done where the batch is read:
in the worker process that decoded it, or in the main process with 0 workers. Not timed: the
copy to the GPU.

**The images** are made by code (``--images`` files, default 32, at ``--source-size``, default
1024² like FFHQ's PNGs): random smooth colour fields (bicubically upsampled 12×12 noise) with a
fine grain of σ = 3/255, so PNG compresses them about as well as photographs (≈ 2 MB each at
1024², FFHQ's are 1–2 MB) and JPEG (quality ``--jpeg-quality``, 90) too; ``prepared`` is the PNG
folder after ``hdit-edu prepare`` (:func:`hdit_edu.data.prepare_image_folder`: resized once,
stored uncompressed; its own images/s is timed too). The folder is read
several times over, so the files sit in the page cache: this measures decoding, not the disk.

**The rate training needs** (Table 6, FFHQ-1024²): 1M steps × batch 256 in 5 days on 64 A100 =
2.56·10⁸ images / 432 000 s = 593 images/s for the run, **9.26 images/s per GPU**. The summary
states, per format and augmentation setting, the images/s one worker process delivers and how
many workers per GPU that rate needs (on this CPU's cores; a GPU node has several per GPU), and
the best rate with augmentation on (the workers augment what they decode, so it grows with the
number of workers, as decoding does).

Writes ``benchmarks/results/loader_throughput-cpu-<date>.json`` (schema of ``common.py``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common  # benchmarks/common.py (it also puts the repository root on sys.path)
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hdit_edu.data import Augment, ImageFolderDataset, ResumableSampler, prepare_image_folder
from hdit_edu.training import StepAugment, _loader_batches, read_step

# Table 6, FFHQ-1024²: training steps, batch size, GPUs, wall-clock days.
FFHQ_STEPS, FFHQ_BATCH, FFHQ_GPUS, FFHQ_DAYS = 1_000_000, 256, 64, 5
FFHQ_IMAGES_PER_S = FFHQ_STEPS * FFHQ_BATCH / (FFHQ_DAYS * 86_400)  # 592.6 for the run
FFHQ_IMAGES_PER_S_PER_GPU = FFHQ_IMAGES_PER_S / FFHQ_GPUS  # 9.26
FFHQ_AUGMENT_P = 0.12
FORMATS = {"png": ("PNG", {}), "jpeg": ("JPEG", {})}  # JPEG quality from --jpeg-quality
# "prepared": the PNG folder after `hdit-edu prepare` (resized once, stored uncompressed)
CHOICES = (*FORMATS, "prepared")


def smooth_image(size: int, seed: int) -> np.ndarray:
    """A random smooth RGB image (size, size, 3) uint8: 12×12 uniform noise upsampled
    bicubically, plus a grain of σ = 3/255 (so it compresses like a photograph, not a flat)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 12, 12, generator=g)
    image = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    image = image + torch.randn(image.shape, generator=g) * (3 / 255)
    return (image.clamp(0, 1)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def make_images(
    folder: Path, n: int, size: int, fmt: str, jpeg_quality: int = 90, seed: int = 0
) -> Path:
    """``n`` files ``00000.<fmt>`` … in ``folder`` (made if needed); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    pil_format, options = FORMATS[fmt]
    if fmt == "jpeg":
        options = {"quality": jpeg_quality}
    for i in range(n):
        Image.fromarray(smooth_image(size, seed + i)).save(
            folder / f"{i:05d}.{fmt}", format=pil_format, **options
        )
    return folder


def loader_rate(
    folder: Path,
    resolution: int,
    *,
    workers: int,
    augment_p: float,
    batch_size: int,
    batches: int,
    repeats: int,
) -> dict:
    """images/s of the trainer's read path (see the module docstring) over ``repeats`` timed
    passes of ``batches`` batches, after one untimed batch (which also starts the workers)."""
    dataset = ImageFolderDataset(folder, resolution, class_subfolders=False)
    sampler = ResumableSampler(len(dataset), seed=0)
    augment = StepAugment(Augment(augment_p), 0, 0, batch_size) if augment_p > 0 else None
    total = 1 + batches * repeats
    indices = lambda step: sampler.batch_indices(step, batch_size)
    if workers:  # the trainer's DataLoader path (Trainer.fit with num_workers > 0)
        loader = _loader_batches(dataset, indices, 0, workers, augment)
        step = lambda s: next(loader)
    else:  # the trainer's in-process path (Trainer.read_step)
        step = lambda s: read_step(dataset, indices(s), s, augment)

    step(0)
    rates, main_ms, s = [], [], 1
    for _ in range(repeats):
        t0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(batches):
            step(s)
            s += 1
        rates.append(batches * batch_size / (time.perf_counter() - t0))
        main_ms.append((time.process_time() - cpu0) * 1000 / (batches * batch_size))
    assert s == total
    rate = statistics.median(rates)
    return {
        "images_per_s": rate,
        # CPU time of the main process (the training loop's) per image: the load-independent
        # cost of reading that the trainer's own process pays
        "main_process_cpu_ms_per_image": statistics.median(main_ms),
        "images_per_s_per_worker": rate / max(1, workers),
        "all_images_per_s": rates,
        "images_timed": batches * batch_size * repeats,
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser, repeats="3 passes", warmup="1 batch (fixed)")
    parser.add_argument("--resolution", type=int, help="loader output side (default 1024)")
    parser.add_argument("--source-size", type=int, help="side of the made files (= resolution)")
    parser.add_argument("--images", type=int, help="files per format (default 32)")
    parser.add_argument("--formats", nargs="+", choices=CHOICES, default=list(CHOICES))
    parser.add_argument("--workers", nargs="+", type=int, help="worker counts (default 0 1 2)")
    parser.add_argument("--batch-size", type=int, help="images per batch (default 4: Table 6's "
                        "256 over 64 GPUs)")  # fmt: skip
    parser.add_argument("--batches", type=int, help="batches per timed pass (default 4)")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    args = parser.parse_args(argv)
    device = common.resolve_device("cpu")  # the loader runs on the host
    if args.quick:
        args.resolution = args.resolution or 64
        args.images = args.images or 8
        args.workers = args.workers or [0, 1]
        args.batch_size = args.batch_size or 2
        args.batches = args.batches or 2
        args.repeats = args.repeats or 1
        args.threads = args.threads or 1
    args.resolution = args.resolution or 1024
    args.source_size = args.source_size or args.resolution
    args.images = args.images or 32
    args.workers = args.workers if args.workers is not None else [0, 1, 2]
    args.batch_size = args.batch_size or 4
    args.batches = args.batches or 4
    args.repeats = args.repeats or 3
    if min(args.workers) < 0 or min(args.images, args.batch_size, args.batches) < 1:
        parser.error("--workers must be >= 0; --images, --batch-size, --batches >= 1")
    return args, device


def run(args, device) -> tuple[dict, list, dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hdit-loader-") as tmp:
        for fmt in args.formats:
            if fmt == "prepared":  # hdit-edu prepare of the PNG files, timed (one process)
                png = make_images(Path(tmp) / "png-source", args.images, args.source_size, "png")
                t0 = time.perf_counter()
                folder = Path(tmp) / fmt
                prepare_image_folder(png, folder, args.resolution, class_subfolders=False)
                prepare_rate = args.images / (time.perf_counter() - t0)
            else:
                folder = make_images(
                    Path(tmp) / fmt, args.images, args.source_size, fmt, args.jpeg_quality
                )
            mb = sum(p.stat().st_size for p in folder.iterdir()) / args.images / 2**20
            for augment_p in (0.0, FFHQ_AUGMENT_P):
                for workers in args.workers:
                    rate = loader_rate(
                        folder,
                        args.resolution,
                        workers=workers,
                        augment_p=augment_p,
                        batch_size=args.batch_size,
                        batches=args.batches,
                        repeats=args.repeats,
                    )
                    rows.append(
                        {
                            "format": fmt,
                            "file_MiB": mb,
                            "augment_p": augment_p,
                            "workers": workers,
                            **rate,
                        }  # fmt: skip
                    )
                    print(f"{fmt} p={augment_p} workers={workers}: "
                          f"{rate['images_per_s']:.1f} images/s, main process "
                          f"{rate['main_process_cpu_ms_per_image']:.1f} ms CPU per image",
                          file=sys.stderr)  # fmt: skip
    need = FFHQ_IMAGES_PER_S_PER_GPU
    summary = {
        **(
            {"prepare_images_per_s_one_process": prepare_rate} if "prepared" in args.formats else {}
        ),
        "ffhq1024_needs": {
            "arithmetic": f"{FFHQ_STEPS:.0e} steps x {FFHQ_BATCH} images / ({FFHQ_DAYS} days x "
            f"86400 s) = {FFHQ_IMAGES_PER_S:.1f} images/s; / {FFHQ_GPUS} A100 = "
            f"{need:.2f} images/s per GPU (Table 6)",
            "images_per_s_per_gpu": need,
        },
    }
    one = 1 if 1 in args.workers else min(args.workers, key=lambda w: (w == 0, w))
    for fmt in args.formats:
        rate = {(r["augment_p"], r["workers"]): r["images_per_s"] for r in rows
                if r["format"] == fmt}  # fmt: skip
        decode = rate[0.0, one] / max(1, one)  # one worker process, augmentation off
        augmented = max(v for (p, _), v in rate.items() if p > 0)  # best over worker counts
        summary[fmt] = {
            "images_per_s_one_worker": decode,
            "workers_per_gpu_needed": math.ceil(need / decode),
            "one_worker_keeps_up": decode >= need,
            # the workers augment what they decode: more workers raise this too
            "augmented_images_per_s_best": augmented,
            "augmented_keeps_up": augmented >= need,
        }
    settings = {
        "resolution": args.resolution,
        "source_size": args.source_size,
        "images_per_format": args.images,
        "formats": args.formats,
        "jpeg_quality": args.jpeg_quality,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "batches_per_pass": args.batches,
        "repeats": args.repeats,
        "warmup": "1 batch (starts the workers)",
        "augment_p": [0.0, FFHQ_AUGMENT_P],
        "quick": args.quick,
        "threads": torch.get_num_threads(),
    }
    return settings, rows, summary


def main(argv=None) -> int:
    return common.run_script("loader_throughput", parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
