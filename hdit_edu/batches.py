"""A training step's batch: read, augmented and sharded as a pure function of the step (§5.1).

The trainer (:mod:`hdit_edu.training`) asks for the batch of step ``s``; this module makes it
the same wherever it is computed. :func:`make_dataset` opens the training set a config names;
the data order is :class:`hdit_edu.data.ResumableSampler`'s (a function of the step);
:class:`StepAugment` draws micro-batch ``m`` of step ``s``'s augmentation from the generator
``step_generator(seed, s, rank, STREAM_AUGMENT + MICRO_STREAM_STRIDE·m)``; :func:`read_step`
stacks and augments one step's images, in the trainer's process (in-memory data sets) or in
the worker processes of :func:`loader_batches`' ``DataLoader`` (image files), bit for bit the
same. Exact resume depends on it: a resumed run reads the very batches it would have read.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .configs import Config
from .data import Augment, ImageFolderDataset, step_generator
from .toy import ToyDataset
from .toy_detail import ToyDetailDataset

# Independent random streams of one step (see data.step_generator).
STREAM_AUGMENT, STREAM_DROPOUT, STREAM_SIGMA, STREAM_NOISE = 0, 1, 2, 3
MICRO_STREAM_STRIDE = 1000  # micro-step m of gradient accumulation uses streams + 1000·m


def make_dataset(config: Config, *, on_error: str = "raise"):
    """The training set a config names: ``training.dataset = "toy"`` → :class:`ToyDataset`,
    ``"toy-detail"`` → :class:`hdit_edu.toy_detail.ToyDetailDataset`,
    else a path → :class:`ImageFolderDataset` (class sub-folders when the model is
    class-conditional; ``on_error="skip"`` skips unreadable files), at the model resolution."""
    name, res = config.training.dataset, config.model.resolution
    if name == "toy":
        return ToyDataset("train", resolution=res)
    if name == "toy-detail":  # the toy set with detail drawn at the resolution (issue 30)
        return ToyDetailDataset("train", resolution=res)
    path = Path(name)
    if not path.is_dir():
        raise ValueError(
            f"training.dataset must be 'toy', 'toy-detail' or an image folder; {name!r} is none"
        )
    return ImageFolderDataset(
        path, res, class_subfolders=config.model.num_classes > 0, on_error=on_error
    )


class StepAugment:
    """The non-leaking augmentation of one step's batch, as the trainer draws it: micro-batch
    ``m`` (images ``m·micro_batch_size`` … of this rank's batch) of step ``s`` is augmented with
    the generator ``step_generator(seed, s, rank, STREAM_AUGMENT + MICRO_STREAM_STRIDE·m)``.
    A pure function of (seed, step, rank, micro-step) and the images, so a DataLoader worker
    process computes exactly what the main process would (``StepAugment(...)(images, step)`` →
    ``(augmented images, aug_cond (B, 9))``; DiT's flip, :class:`hdit_edu.data.HorizontalFlip`,
    gives no aug_cond: None)."""

    def __init__(self, augment: Augment, seed: int, rank: int, micro_batch_size: int):
        self.augment, self.seed, self.rank = augment, seed, rank
        self.micro_batch_size = micro_batch_size

    def __call__(self, images: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        out, cond = [], []
        for micro, lo in enumerate(range(0, len(images), self.micro_batch_size)):
            stream = STREAM_AUGMENT + MICRO_STREAM_STRIDE * micro
            g = step_generator(self.seed, step, self.rank, stream)
            x, c = self.augment(images[lo : lo + self.micro_batch_size], generator=g)
            out.append(x)
            cond.append(c)
        if len(out) == 1:
            return out[0], cond[0]
        return torch.cat(out), None if cond[0] is None else torch.cat(cond)


def read_step(dataset, indices, step: int, augment: StepAugment | None = None):
    """One step's batch of this rank: ``(images, classes, aug_cond or None)`` — the images of
    ``indices`` stacked (``dataset.batch`` when the data set has one) and, with ``augment``,
    augmented. The trainer calls it in its main process (in-memory data sets, or no loader
    workers) or in its DataLoader's worker processes (:class:`_StepData`)."""
    if hasattr(dataset, "batch") and torch.utils.data.get_worker_info() is None:
        images, classes = dataset.batch(indices)
    else:  # in a worker, default_collate stacks straight into shared memory (no copy to send)
        images, classes = torch.utils.data.default_collate([dataset[int(i)] for i in indices])
    if augment is None:
        return images, classes, None
    images, aug_cond = augment(images, step)
    return images, classes, aug_cond


class _StepData(torch.utils.data.Dataset):
    """The DataLoader's view of a data set: item ``(step, indices)`` is :func:`read_step` of
    them, computed whole in one worker process (decoding and augmentation off the main
    process)."""

    def __init__(self, dataset, augment: StepAugment | None):
        self.dataset, self.augment = dataset, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        step, indices = key
        return read_step(self.dataset, indices, step, self.augment)


class _Steps(torch.utils.data.Sampler):
    """The DataLoader's keys: ``(step, this rank's indices of the step)`` for steps
    ``start_step``, ``start_step + 1``, … (``indices(step)``: a pure function of the step;
    it runs in the main process, the keys travel to the workers)."""

    def __init__(self, indices, start_step: int):
        self.indices, self.start_step = indices, start_step

    def __iter__(self):
        step = self.start_step
        while True:
            yield step, self.indices(step).tolist()
            step += 1


def loader_batches(dataset, indices, start_step: int, workers: int, augment=None):
    """Step batches ``(images, classes, aug_cond or None)`` (:func:`read_step`) for steps
    ``start_step, start_step + 1, …`` read by a ``DataLoader``: each worker process decodes and
    augments whole steps (the order and the draws stay functions of the step)."""
    loader = torch.utils.data.DataLoader(
        _StepData(dataset, augment),
        sampler=_Steps(indices, start_step),
        batch_size=None,  # an item is already a step's batch
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        generator=torch.Generator(),  # leaves the global RNG untouched (exact resume)
    )
    return iter(loader)
