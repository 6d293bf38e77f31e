"""``hdit-edu sample``, ``fid`` and ``fid-folders``: samples of a trained run into a PNG grid,
their FID / KID against a reference (``hdit_edu.evaluation``), FID / KID of two folders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import evaluation
from ..checkpoints import writing
from ..configs import (
    normalize_resolution,
)
from ..data import save_grid
from ..resolution import sampling_config
from ..rope import POSITION_READINGS
from ..runs import load_run
from ..sampling import DDPM_SAMPLER, SAMPLERS, generate, grid_columns, sample_labels
from ..toy import (
    ToyDataset,
    class_accuracy,
)
from .arguments import (
    FINITE,
    NON_NEGATIVE,
    POSITIVE,
    add_command,
    add_renamed,
    add_shared,
    check_output_file,
    check_run_folder,
    check_sample_memory,
    device_arg,
    int_at_least,
    resolution_arg,
    torch_device,
)


def add_sample(sub) -> None:
    """``sample``: a run's samples into one PNG grid."""
    sample = add_command(
        sub,
        "sample",
        cmd_sample,
        help="draw samples from a run's EMA weights into a PNG grid",
        description="Load RUN's config.json and the EMA weights of its newest checkpoint, draw "
        "N samples (with the run's own sampler: Table 6's 50 steps of DPM++(3M) SDE; a DDPM "
        "run, R1: DiT's 250 ancestral steps) and write them as one PNG grid.",
    )
    add_shared(sample, "--run")
    sample.add_argument("--n", type=POSITIVE, default=16, help="number of samples")
    add_sampling_args(sample)
    sample.add_argument("--out", help="output PNG (default: RUN/samples/sample-SEED.png)")
    sample.add_argument("--nrow", type=POSITIVE, help="images per row of the grid")
    sample.add_argument(
        "--resolution",
        type=resolution_arg,
        help="sample at this size, N or HxW (default: the training size); must divide into "
        "every level's token grid and fit its kernels (hdit_edu.resolution)",
    )
    sample.add_argument(
        "--positions",
        default="normalised",
        choices=POSITION_READINGS,
        help="how positions are read at another size: normalised (the training range [-1, 1]; "
        "the additive table resized bicubically; default), grid (units of the training grid: "
        "extrapolation; the additive table border-padded), fixed (no resizing: the training "
        "size only)",
    )
    sample.add_argument(
        "--shift",
        action="store_true",
        help="warp the σ schedule by the resolution shift of the interpolated-cosine density "
        "(EDM's samplers; a DDPM run samples its respaced discrete steps)",
    )


def add_fid(sub) -> None:
    """``fid``: FID (and KID) of a run's samples."""
    fid = add_command(
        sub,
        "fid",
        cmd_fid,
        help="FID/KID of a run's samples (toy extractor offline, Inception online)",
        description="Draw N samples from RUN and compute FID (and KID) against a reference "
        "through clean-fid. Toy-set runs default to the toy classifier's features against the "
        "toy test split (offline); --extractor inception uses clean-fid's Inception (a "
        "download), optionally --mode legacy_tensorflow to match the paper's ADM evaluator.",
    )
    add_shared(fid, "--run")
    fid.add_argument(
        "--n", type=int_at_least(2), default=1000, help="number of samples (FID needs >= 2)"
    )
    fid.add_argument(
        "--ref",
        default="toy",
        help="reference: 'toy' (the toy test split), an image folder, or clean-fid statistics "
        "NAME:RES:SPLIT (e.g. ffhq:1024:trainval70k)",
    )
    fid.add_argument(
        "--extractor", default="toy", choices=("toy", "inception"), help="feature extractor"
    )
    fid.add_argument(
        "--mode", default="clean", choices=("clean", "legacy_tensorflow"), help="clean-fid mode"
    )
    fid.add_argument("--kid", action="store_true", help="also compute KID")
    add_sampling_args(fid)
    fid.add_argument("--json", help="also write the result as JSON to this file")


def add_fid_folders(sub) -> None:
    """``fid-folders``: FID and KID between two image folders."""
    folders = add_command(
        sub,
        "fid-folders",
        cmd_fid_folders,
        help="FID and KID between two image folders",
        description="FID and KID between the images of two folders (any layout), through "
        "clean-fid, with the toy classifier's features (offline) or Inception (a download).",
    )
    folders.add_argument("a", help="first image folder")
    folders.add_argument("b", help="second image folder")
    folders.add_argument(
        "--extractor", default="toy", choices=evaluation.EXTRACTORS, help="feature extractor"
    )
    folders.add_argument("--mode", default="clean", choices=evaluation.MODES, help="clean-fid mode")


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", choices=(*SAMPLERS, DDPM_SAMPLER),
                   help="sampler (default: the run's own: dpmpp_3m_sde; a DDPM run, R1: ddpm)")
    add_renamed(p, "--sampler-steps", "--steps", type=POSITIVE, metavar="N",
                help="sampler steps (default: Table 6's 50; a DDPM run: DiT's 250)")  # fmt: skip
    p.add_argument(
        "--cfg", type=FINITE, default=1.0, help="classifier-free guidance scale (1 = none)"
    )
    p.add_argument(
        "--class",
        dest="class_",
        metavar="CLASS",
        type=NON_NEGATIVE,
        help="class index for every sample (default: classes 0, 1, 2, ... in turn; "
        "NUM_CLASSES = unconditional)",
    )
    add_shared(p, "--seed")
    p.add_argument("--weights", default="ema", choices=("ema", "model"), help="which weights")
    p.add_argument("--checkpoint", help="a checkpoint folder (default: the run's newest)")
    p.add_argument("--batch-size", type=POSITIVE, default=64, help="sampling batch size")
    p.add_argument(
        "--device", type=device_arg, help="torch device (default: cuda if available, else cpu)"
    )
    add_shared(p, "--backend")


def _load_for_sampling(args):
    check_run_folder("--run", args.run)
    device = torch_device(args.device)
    config, denoiser = load_run(
        args.run,
        which=args.weights,
        checkpoint=args.checkpoint,
        device=device,
        attention_backend=args.backend,
    )
    classes = config.model.num_classes
    if args.class_ is not None and not (classes and args.class_ <= classes):
        allowed = f"0 … {classes} ({classes} = unconditional)" if classes else "none"
        raise ValueError(
            f"--class {args.class_}: the model of {args.run!r} has {classes} classes; "
            f"allowed: {allowed}"
        )
    return config, denoiser, device


def _generate(args, config, denoiser, device, n):
    """``sampling.generate`` with the command's flags; refuses non-finite samples."""
    images = generate(
        denoiser,
        config,
        n,
        resolution=getattr(args, "resolution", None),
        positions=getattr(args, "positions", None),
        shift=getattr(args, "shift", False),
        sampler=args.sampler,
        steps=args.sampler_steps,
        cfg_scale=args.cfg,
        class_cond=args.class_,
        seed=args.seed,
        batch_size=args.batch_size,
        device=device,
    )
    bad = (~images.isfinite().flatten(1).all(1)).sum().item()
    if bad:
        raise ValueError(
            f"{bad} of {n} samples hold NaN or inf pixels: the weights of {args.run!r} "
            f"(checkpoint {args.checkpoint or 'newest'}) produce non-finite outputs; nothing "
            f"was written. Try an earlier checkpoint (--checkpoint) or --weights model"
        )
    return images


def cmd_sample(args: argparse.Namespace) -> int:
    out = Path(args.out or Path(args.run) / "samples" / f"sample-{args.seed}.png")
    check_output_file("--out", out, (".png",), what="a PNG grid")
    config, denoiser, device = _load_for_sampling(args)
    at = sampling_config(config, args.resolution, args.positions)  # checked before sampling
    check_sample_memory(
        "--resolution", args.n, args.batch_size, at.model.in_channels, at.model.resolution, device
    )
    images = _generate(args, config, denoiser, device, args.n)
    nrow = args.nrow or grid_columns(args.n, config.model.num_classes if args.class_ is None else 0)
    with writing(f"the sample grid {str(out)!r}"):
        save_grid(images, out, nrow=nrow)
    height, width = normalize_resolution(at.model.resolution)
    print(f"wrote {args.n} samples ({height}x{width}) to {out}")
    return 0


def _reference(ref: str, config):
    if ref == "toy":
        return ToyDataset("test", resolution=config.model.resolution)
    if Path(ref).exists():
        return str(ref)
    parts = ref.split(":")
    if len(parts) == 3 and parts[1].isdigit():
        return evaluation.ReferenceStats(parts[0], int(parts[1]), parts[2])
    raise ValueError(
        f"--ref {ref!r}: expected 'toy', an existing image folder, or clean-fid statistics "
        f"NAME:RES:SPLIT (e.g. ffhq:1024:trainval70k)"
    )


def cmd_fid(args: argparse.Namespace) -> int:
    if args.json:
        check_output_file("--json", args.json, (".json",))
    config, denoiser, device = _load_for_sampling(args)
    reference = _reference(args.ref, config)
    images = _generate(args, config, denoiser, device, args.n)
    options = dict(extractor=args.extractor, mode=args.mode, device=device)
    result = {
        "run": str(args.run),
        "n": args.n,
        "extractor": args.extractor,
        "mode": args.mode,
        "reference": args.ref,
        "fid": evaluation.fid(images, reference, **options),
    }
    if args.kid:
        result["kid"] = evaluation.kid(images, reference, **options)
    if config.model.num_classes and args.extractor == "toy" and config.training.dataset == "toy":
        labels = sample_labels(args.n, config.model.num_classes, args.class_)
        result["class_accuracy"] = class_accuracy(images, labels)
    print(json.dumps(result, indent=1))
    if args.json:
        with writing(repr(str(args.json))):
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def cmd_fid_folders(args: argparse.Namespace) -> int:
    print(json.dumps(evaluation.metrics(args.a, args.b, extractor=args.extractor, mode=args.mode)))
    return 0
