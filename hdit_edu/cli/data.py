"""``hdit-edu prepare``, ``data make-toy|preview|check`` and ``classifier train``: an image folder
resized once for fast loading, the toy set as files, an image folder read up front, the toy
classifier (offline FID features, class accuracy)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from PIL import Image

from ..checkpoints import new_folder
from ..configs import (
    format_resolution,
)
from ..data import ImageFolderDataset, prepare_image_folder
from ..toy import (
    SPLITS,
    TOY_CLASSES,
    TOY_CLASSIFIER_DIR,
    make_toy_folder,
    toy_grid,
    train_toy_classifier,
)
from ..toy_detail import ToyDetailDataset
from .arguments import (
    NON_NEGATIVE,
    POSITIVE,
    add_command,
    add_shared,
    check_apart,
    check_output_file,
    check_writable_folder,
    finite_float,
    resolution_arg,
)


def add_prepare(sub) -> None:
    """``prepare``: an image folder resized and cropped once into fast-loading PNGs."""
    prepare = add_command(
        sub,
        "prepare",
        cmd_prepare,
        help="resize and crop an image folder once into fast-loading uncompressed PNGs",
        description="Resize (to cover) and center-crop every image of SRC to --resolution, "
        "exactly as training reads it, into DST as uncompressed PNGs with the same layout "
        "(class sub-folders stay classes). Training on DST at that resolution reads the same "
        "pixels as on SRC; the loader reads ~3x more of them per second than FFHQ-like PNGs "
        "(benchmarks/README.md; 3 MiB per 1024² image on disk). Files already in DST are "
        "kept: rerun to continue.",
    )
    prepare.add_argument("source", metavar="SRC", help="image folder (flat, or class sub-folders)")
    prepare.add_argument("target", metavar="DST", help="output folder (created)")
    prepare.add_argument(
        "--resolution", required=True, type=resolution_arg, help="N or HxW (e.g. 1024)"
    )
    prepare.add_argument(
        "--flat",
        action="store_true",
        help="one unconditional set at any depth (FFHQ); default: class sub-folders if SRC "
        "holds no images itself",
    )
    prepare.add_argument("--workers", type=NON_NEGATIVE, default=0, help="decoding processes")


def add_data(sub) -> None:
    """``data make-toy|preview|check``."""
    data = add_command(
        sub,
        "data",
        None,
        help="write the toy data set as PNG files or its preview grid; check an image folder",
    )
    data_sub = data.add_subparsers(dest="action", metavar="ACTION", required=True)
    make = add_command(
        data_sub,
        "make-toy",
        cmd_data_make_toy,
        help="write toy images as PNGs in class sub-folders (ImageNet layout)",
    )
    make.add_argument("path", help="output folder (created)")
    make.add_argument("--n", type=POSITIVE, default=1024, help="number of images")
    add_shared(make, "--resolution")
    add_shared(make, "--seed")
    make.add_argument("--split", choices=SPLITS, default="test", help="which split to draw")
    preview = add_command(
        data_sub,
        "preview",
        cmd_data_preview,
        help="write a PNG grid of the toy set (rows = classes)",
    )
    preview.add_argument("path", help="output PNG, e.g. data/toy_preview.png")
    preview.add_argument("--per-class", type=POSITIVE, default=8, help="images per class (row)")
    add_shared(preview, "--resolution")
    add_shared(preview, "--seed")
    check = add_command(
        data_sub,
        "check",
        cmd_data_check,
        help="read every image of a folder up front; name unreadable files and empty classes",
        description="Open and decode every image below DIR as training would (resized to "
        "--resolution), list the classes (sub-folders) with their image counts, and name "
        "unreadable files and class folders without images. Exit status 1 if any file is bad.",
    )
    check.add_argument("path", help="the image folder (flat, or one sub-folder per class)")
    add_shared(check, "--resolution")
    check.add_argument(
        "--layout",
        choices=("auto", "classes", "flat"),
        default="auto",
        help="classes: each sub-folder is a class; flat: one unconditional set; auto: classes "
        "if DIR holds no images itself",
    )


def add_classifier(sub) -> None:
    """``classifier train``: the toy classifier."""
    classifier = add_command(
        sub, "classifier", None, help="train the toy classifier (offline FID features)"
    )
    classifier_sub = classifier.add_subparsers(dest="action", metavar="ACTION", required=True)
    train_classifier = add_command(
        classifier_sub,
        "train",
        cmd_classifier_train,
        help="train the toy classifier and write its weights",
        description="Train the toy classifier (hdit_edu.toy.ToyClassifier) on the toy train "
        "split, test it on the test split and write model.safetensors + config.json.",
    )
    train_classifier.add_argument(
        "--out",
        default="runs/toy_classifier",
        help="output folder, written whole or not at all (default runs/toy_classifier; the "
        "shipped data/toy_classifier is replaced only when named with --force)",
    )
    train_classifier.add_argument(
        "--force", action="store_true", help="replace an existing output folder"
    )
    train_classifier.add_argument("--epochs", type=POSITIVE, default=2, help="training epochs")
    train_classifier.add_argument("--batch-size", type=POSITIVE, default=128, help="batch size")
    train_classifier.add_argument(
        "--lr", type=finite_float(0.0, open_low=True), default=2e-3, help="Adam learning rate"
    )
    add_shared(train_classifier, "--seed")
    train_classifier.add_argument(
        "--data", choices=("toy", "toy-detail"), default="toy",
        help="the data set: toy (default) or toy-detail (issue 30's per-resolution evaluation "
        "classifiers, data/toy_detail_classifier/N)",
    )  # fmt: skip
    train_classifier.add_argument(
        "--resolution", type=POSITIVE, default=32, help="image size n (n × n; a multiple of 8)"
    )


def cmd_prepare(args: argparse.Namespace) -> int:
    check_apart("SRC", args.source, "DST", args.target)
    done = prepare_image_folder(
        args.source,
        args.target,
        args.resolution,
        class_subfolders=False if args.flat else None,
        workers=args.workers,
    )
    print(
        f"{done['images']} images at {format_resolution(args.resolution)} in {args.target}: "
        f"{done['written']} written, {done['skipped']} already there"
    )
    return 0


def cmd_data_make_toy(args: argparse.Namespace) -> int:
    if Path(args.path).exists() and not Path(args.path).is_dir():
        raise ValueError(f"path {args.path!r} is a file; allowed: a folder (created if missing)")
    check_writable_folder("path", args.path)
    path = make_toy_folder(args.path, args.n, args.resolution, args.seed, args.split)
    print(f"wrote {args.n} toy images ({args.resolution}x{args.resolution}) to {path}")
    return 0


def cmd_data_preview(args: argparse.Namespace) -> int:
    check_output_file("path", args.path)
    grid = toy_grid(args.per_class, args.resolution, args.seed)
    Image.fromarray(grid, mode="RGB").save(args.path, optimize=True)
    print(f"wrote {args.path} (rows: {', '.join(TOY_CLASSES)})")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    layout = {"auto": None, "classes": True, "flat": False}[args.layout]
    dataset = ImageFolderDataset(
        args.path, args.resolution, class_subfolders=layout, on_error="skip"
    )
    total = len(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every bad file is listed below
        try:
            bad = dataset.verify()
        except ValueError:  # nothing readable at all
            bad = list(dataset.skipped)
    counts = {name: 0 for name in dataset.classes}
    for target in dataset.targets:
        counts[dataset.classes[target]] += 1
    print(f"{args.path}: {total} image files, {total - len(bad)} readable, {len(bad)} bad")
    if len(counts) > 1:
        print(f"{len(counts)} classes: " + ", ".join(f"{k} ({v})" for k, v in counts.items()))
    for folder in dataset.empty_classes:
        print(f"empty class folder (no images; not counted as a class): {folder}")
    for path in bad:
        print(f"bad image: {path}")
    return 1 if bad else 0


def cmd_classifier_train(args: argparse.Namespace) -> int:
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out!r} is a file; allowed: a folder (created if missing)")
    check_writable_folder("--out", args.out)
    out = Path(args.out)
    if out.exists() and not args.force:
        shipped = " (the shipped classifier every toy FID uses)" * (
            out.resolve() == TOY_CLASSIFIER_DIR.resolve()
        )
        raise ValueError(f"--out {args.out!r} exists{shipped}: pass --force to replace it")
    with new_folder(out, replace=args.force) as tmp:  # a cut-short run leaves `out` as it was
        _, record = train_toy_classifier(
            tmp, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            resolution=args.resolution, dataset=ToyDetailDataset if args.data == "toy-detail" else None,
        )  # fmt: skip
    print(f"test accuracy {record['test_accuracy']:.4f}; wrote {args.out}")
    return 0
