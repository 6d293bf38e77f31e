"""Training: Table 6's recipe and the trainer — logging, exact resume, DDP (§5.1, Table 6).

One training step (:meth:`Trainer.train_step`), in the order the code runs it::

    indices   = sampler.batch_indices(step, B)                 # data.ResumableSampler
    x0, y     = dataset.batch(indices)                         # images in [-1, 1], classes
    x0, aug   = Augment(p)(x0)                                 # non-leaking augmentation
    y[u < 0.1] = num_classes                                   # conditioning dropout (10 %)
    σ         = training_sigmas(config, B, stratified=True)    # interpolated cosine, stratified
    ε         = randn_like(x0)
    losses    = Denoiser.loss(x0, ε, σ, class_cond=y, aug_cond=aug)   # eq. 1, soft-min-snr
    losses.mean().backward();  [clip];  AdamW.step()
    θ_ema     = lerp(θ_ema, θ, 1 − decay(step))                # EMA with warm-up

**Gradient accumulation** (``training.grad_accum`` = A). The global batch
``training.batch_size`` = micro-batch × A × processes. Each rank cuts its batch of the step
into A micro-batches and runs the lines from ``Augment`` to ``backward`` once per micro-batch
with the loss scaled by 1/A (the gradients add up to those of the rank's whole batch), then
clips, steps AdamW and updates the EMA once. σ stays stratified over the *global* batch, as
in the authors' trainer (k-diffusion's ``enable_stratified_accelerate``): micro-step m of
rank r draws the strata of group ``r·A + m`` of ``world_size·A``. The draws of micro-step m
come from their own streams of (seed, step, rank), so a run killed between micro-steps
resumes at the start of its optimizer step and repeats it exactly. Under DDP the gradients
are all-reduced only on the last micro-step (``no_sync``).

**Table 6's optimiser.** AdamW, lr 5·10⁻⁴, betas (0.9, 0.95), eps 10⁻⁸, weight decay 10⁻²
applied only to weight matrices, the mapping network at ⅓ of the learning rate (as the
authors' k-diffusion does: ``model.param_groups(lr, mapping_lr_scale)``), a constant learning
rate, and an EMA of the weights with decay 0.9999 for evaluation and samples. Gradient-norm
clipping is ``training.grad_clip`` (default 1.0, as the authors' k-diffusion trainer always
clips; Table 6 does not list it; the toy configs keep it off).

**EMA warm-up.** A fixed decay of 0.9999 averages over ~10⁴ steps: a few-hundred-step toy run
would sample from (mostly) its random initialisation. As k-diffusion does, the decay follows
an inverse schedule that starts at 0 (the first update copies the weights) and rises towards
the paper's value (:class:`EMAWarmup`)::

    decay(t) = min(ema_decay, 1 − (1 + t/inv_gamma)^(−power)),   t = updates so far.

**Activation checkpointing** (``training.checkpointing``: ``none``, ``level``, ``layer``;
:func:`hdit_edu.models.set_checkpointing`): the backward pass recomputes each level's or each
layer's activations instead of keeping them (``torch.utils.checkpoint``, non-reentrant), for
about one more forward pass of time; the gradients are the same.

**Exact resume.** Every random draw of a step (augmentation, conditioning dropout, σ, ε) comes
from a generator that is a pure function of (seed, step, rank, stream)
(:func:`hdit_edu.data.step_generator`), and the data order is a pure function of the step
(:class:`hdit_edu.data.ResumableSampler`; a step's batch: :mod:`hdit_edu.batches`). The global
RNGs (used by dropout layers) are saved per rank. So a run killed at any point and resumed from
its last checkpoint repeats the same loss sequence bit for bit (on CPU; GPU kernels are not
bitwise deterministic).

**The run folder** (``runs/<name>/``) has one owner, :mod:`hdit_edu.runfolder`: the trainer
claims it (a second process is refused, naming the holder), asks it where to resume and whether
the config is the one the checkpoint was trained with (:data:`RECOVERABLE_FIELDS` such as the
lr may change with ``allow_change``, logged in ``config-changes.jsonl``; the rest is refused),
and writes metrics rows and checkpoints (:mod:`hdit_edu.checkpoints`: atomic, with a manifest
and a health record) through it. A SIGINT or SIGTERM stops training only at a step boundary
(:class:`hdit_edu.runfolder.StepBoundary`), so a checkpoint labelled step N holds step N.

**Divergence.** A non-finite loss stops training before the optimizer step and names the last
good checkpoint (:func:`hdit_edu.checkpoints.is_healthy`) with the command that resumes from it
at a lower learning rate.

**DDP.** Launch with ``torchrun --nproc_per_node N -m hdit_edu.cli train ...``; when
``WORLD_SIZE > 1`` the trainer joins the process group from the environment (NCCL on GPUs,
gloo on CPU), splits the global batch over the ranks (each reads its shard of the same
permutation and draws its own strata of σ), averages gradients with
``DistributedDataParallel`` and lets rank 0 alone write logs, samples and checkpoints.

Elsewhere: the profiles (:mod:`hdit_edu.profiles`), using a finished run
(:mod:`hdit_edu.runs`, :func:`hdit_edu.sampling.generate`, :func:`hdit_edu.viz.plot_losses`)
and the ablation chain (:mod:`hdit_edu.ablation`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .batches import (  # noqa: F401 - read_step, make_dataset: also used via training
    MICRO_STREAM_STRIDE,
    STREAM_AUGMENT,
    STREAM_DROPOUT,
    STREAM_NOISE,
    STREAM_SIGMA,
    StepAugment,
    make_dataset,
    read_step,
)
from .batches import loader_batches as _loader_batches
from .checkpoints import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    seed_everything,
    set_rng_state,
    writing,
)
from .configs import Config, image_d, validate_config
from .data import Augment, HorizontalFlip, ResumableSampler, save_grid, step_generator
from .ddpm import DDPMDenoiser, sample_training_sigmas
from .diffusion import Denoiser, sample_sigmas
from .layers import check_class_labels
from .logging_sinks import open_sinks
from .models import build_model, set_checkpointing
from .runfolder import (  # noqa: F401 - RESUMABLE_FIELDS, ConfigChangeError: used via training
    RECOVERABLE_FIELDS,
    RESUMABLE_FIELDS,
    ConfigChangeError,
    RunFolder,
    StepBoundary,
)
from .sampling import generate, grid_columns

SIGMA_BINS = 6  # log-spaced bins of σ for the per-noise-level loss in metrics.jsonl
EMA_POWER = 2 / 3  # EMAWarmup's default (training.ema_power; the paper configs: 0.75)
EMA_INV_GAMMA = 1.0
class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without updating the weights."""


# ----------------------------------------------------------------------------------------------
# Table 6's recipe: optimiser, EMA, conditioning dropout
# ----------------------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, config: Config) -> torch.optim.AdamW:
    """AdamW with Table 6's hyper-parameters over the model's parameter groups: weight decay
    only on weight matrices, the mapping network at ``mapping_lr_scale`` (⅓) × lr."""
    t = config.training
    groups = model.param_groups(t.lr, t.mapping_lr_scale)
    return torch.optim.AdamW(
        groups, lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay
    )


@dataclass
class EMAWarmup:
    """The EMA decay schedule: ``decay(t) = min(max_decay, 1 − (1 + t/inv_gamma)^(−power))``.

    t = number of EMA updates done so far, so the first update (t = 0) has decay 0 and copies
    the weights. With power 2/3 the decay reaches 0.99 after 1k updates, 0.999 after 31.6k
    and the paper's 0.9999 after 1M. ``warmup=False``: ``max_decay`` from the first update on
    (DiT's train.py, ``training.ema_warmup``)."""

    max_decay: float = 0.9999
    power: float = EMA_POWER
    inv_gamma: float = EMA_INV_GAMMA
    warmup: bool = True

    def decay(self, t: int) -> float:
        if not self.warmup:
            return self.max_decay
        return min(self.max_decay, max(0.0, 1 - (1 + t / self.inv_gamma) ** -self.power))


@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """θ_ema ← decay·θ_ema + (1 − decay)·θ for parameters; buffers are copied."""
    for p_ema, p in zip(ema_model.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1 - decay)
    for b_ema, b in zip(ema_model.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def drop_class_labels(
    class_cond: torch.Tensor, p: float, num_classes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Conditioning dropout: each label becomes the "dropped" class ``num_classes`` with
    probability ``p`` (Table 6: 0.1), so the model also learns the unconditional D for CFG."""
    u = torch.rand(class_cond.shape, generator=generator, device=class_cond.device)
    return torch.where(u < p, num_classes, class_cond)


def training_sigmas(config: Config, n: int, **draw) -> torch.Tensor:
    """``n`` noise levels from the σ density of ``config.diffusion`` at the model's resolution
    (Table 6: interpolated cosine on [1e-3, 1e3]); ``**draw`` as for
    :func:`hdit_edu.diffusion.rand_lognormal` (stratified, rank, world_size, generator, …)."""
    d = config.diffusion
    return sample_sigmas(
        d.sigma_density,
        n,
        image_d=image_d(config.model),
        sigma_data=d.sigma_data,
        sigma_min=d.sigma_min,
        sigma_max=d.sigma_max,
        lognormal_mean=d.lognormal_mean,
        lognormal_std=d.lognormal_std,
        noise_d_low=d.noise_d_low,
        noise_d_high=d.noise_d_high,
        **draw,
    )


def sigma_bin_edges(sigma_min: float, sigma_max: float, n: int = SIGMA_BINS) -> torch.Tensor:
    """``n + 1`` log-spaced edges over [σ_min, σ_max] (the paper's range: one bin a decade)."""
    return torch.logspace(math.log10(sigma_min), math.log10(sigma_max), n + 1)


def sigma_bin_labels(edges: torch.Tensor) -> list[str]:
    return [f"{lo:.0e}-{hi:.0e}" for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist())]


def batch_size_at(training, step: int) -> int:
    """The global batch of optimizer step ``step`` (0-based): ``training.batch_size``, or the
    last ``training.batch_schedule`` entry whose ``from_step`` is ≤ ``step``."""
    size = training.batch_size
    for start, batch in training.batch_schedule or ():
        if step >= start:
            size = batch
    return size


def samples_before(training, step: int) -> int:
    """Images of the global batches of steps ``0 … step − 1`` (the data stream's position)."""
    bounds = [(0, training.batch_size), *[tuple(e) for e in training.batch_schedule or ()]]
    total = 0
    for (start, batch), (end, _) in zip(bounds, [*bounds[1:], (math.inf, 0)]):
        if step > start:
            total += (min(step, end) - start) * batch
    return total


# ----------------------------------------------------------------------------------------------
# Distributed data parallel: one code path, initialised from torchrun's environment variables
# ----------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Join the process group torchrun set up (``WORLD_SIZE > 1``), else a single process.

    Backend: NCCL when CUDA is available, gloo on CPU. Each rank uses GPU ``LOCAL_RANK``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    return DistInfo(rank, world_size, local_rank, device)


def _all_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t = t / info.world_size
    return t


def _all_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------


class Trainer:
    """Train ``config``'s model, writing into ``run_dir`` (``None``: write nothing).

    ``resume``: ``False`` (a fresh run; a run dir that holds checkpoints or metrics is an
    error), ``True`` (continue from the newest checkpoint; start fresh if there is none and
    no checkpoint was due yet — a longer history without checkpoints is an error) or a
    checkpoint folder. ``fallback=True`` resumes from the newest *intact* checkpoint when the
    newest is corrupt. ``allow_change``: recoverable training fields (``"training.lr"``, see
    :data:`RECOVERABLE_FIELDS`) that may differ from the checkpoint's config on resume (the
    change is logged in ``config-changes.jsonl``). Rank 0 holds the run folder's claim
    (:class:`hdit_edu.runfolder.RunFolder`) for the life of the process. ``dataset`` overrides
    the config's (anything with ``len`` and ``batch(indices)`` or ``__getitem__`` → (image,
    class)). ``sample_steps`` is the number of sampler steps of the periodic sample grids (None:
    the process's own, :func:`hdit_edu.sampling.sampler_and_steps`: Table 6's 50 DPM++(3M) SDE
    steps, DiT's 250 DDPM steps). ``attention_backend``: the neighborhood-attention backend of the model and
    its EMA (one of :data:`hdit_edu.attention.NA_BACKENDS`; every backend computes the same
    numbers).
    ``compile_options``: keyword arguments of ``torch.compile`` when ``training.compile`` is
    on (e.g. ``{"mode": "max-autotune"}``, or ``{"backend": "aot_eager"}`` to trace without
    generating code).
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path | None = None,
        *,
        resume: bool | str | Path = False,
        fallback: bool = False,
        allow_change=(),
        dataset=None,
        device: str | torch.device | None = None,
        progress: bool = True,
        num_workers: int = 0,
        sample_steps: int | None = None,
        n_samples: int = 16,
        attention_backend: str = "auto",
        compile_options: dict | None = None,
    ):
        self.dist = init_distributed(device)
        self.device = self.dist.device
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress, self.num_workers = progress, num_workers
        self.sample_steps, self.n_samples = sample_steps, n_samples
        validate_config(config)
        # The run folder's one owner (rank 0 claims it before reading or writing anything).
        self.folder = None
        if self.run_dir is not None:
            self.folder = RunFolder(self.run_dir, owner=self.dist.is_main, log=self._print)
        elif resume not in (False, None):
            raise ValueError("resume needs a run_dir")
        checkpoint, changes = None, {}
        if self.folder is not None:
            checkpoint, changes = self.folder.resume_point(
                config, resume, fallback=fallback, allow_change=allow_change
            )
        t = config.training
        self.config = config
        if t.batch_size % (self.dist.world_size * t.grad_accum):
            raise ValueError(
                f"training.batch_size={t.batch_size} must be divisible by the number of "
                f"processes ({self.dist.world_size}) × training.grad_accum ({t.grad_accum})"
            )
        self.batch_size = t.batch_size // self.dist.world_size  # per rank (all micro-steps)
        self.grad_accum = t.grad_accum
        self.micro_batch_size = self.batch_size // t.grad_accum
        for start, batch in t.batch_schedule or ():
            if batch % (self.dist.world_size * self.micro_batch_size):
                raise ValueError(
                    f"training.batch_schedule: batch {batch} (from step {start}) must be a "
                    f"multiple of processes ({self.dist.world_size}) × micro-batch "
                    f"({self.micro_batch_size})"
                )
        self.use_bf16 = t.precision == "bf16" and self.device.type == "cuda"
        if t.precision not in ("bf16", "fp32"):
            raise ValueError(f"training.precision must be 'bf16' or 'fp32', got {t.precision!r}")

        # Model, EMA copy, optimiser (identical initialisation on every rank).
        seed_everything(t.seed)
        self.model = build_model(config, attention_backend).to(self.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        set_checkpointing(self.model, t.checkpointing)  # the EMA copy is never differentiated
        self.optimizer = make_optimizer(self.model, config)
        self.ema_schedule = EMAWarmup(t.ema_decay, t.ema_power, warmup=t.ema_warmup)
        # Dropout layers draw from the global RNG: seed it per rank.
        seed_everything(step_generator(t.seed, 0, self.dist.rank, stream=99).initial_seed())

        # The network the training step calls: DDP-wrapped and/or compiled.
        net: nn.Module = self.model
        self._ddp: nn.parallel.DistributedDataParallel | None = None
        if self.dist.world_size > 1:
            net = self._ddp = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if t.compile:
            net = torch.compile(net, **(compile_options or {}))
        if net is not self.model and hasattr(self.model, "out_channels_used"):
            net.out_channels_used = self.model.out_channels_used  # for the Denoiser (DiT R1/R2)
        d = config.diffusion
        if d.process == "ddpm":  # R1: DiT's discrete process and hybrid loss (hdit_edu.ddpm)
            self.denoiser, self.ema_denoiser = DDPMDenoiser(net), DDPMDenoiser(self.ema)
        else:
            self.denoiser = Denoiser(net, d.sigma_data, d.loss_weighting, d.gamma)
            self.ema_denoiser = Denoiser(self.ema, d.sigma_data, d.loss_weighting, d.gamma)

        # Data: a deterministic, DDP-sharded order; batches are a pure function of the step.
        self.dataset = make_dataset(config) if dataset is None else dataset
        n_classes = config.model.num_classes
        if n_classes and getattr(self.dataset, "num_classes", n_classes) != n_classes:
            empty = getattr(self.dataset, "empty_classes", [])
            raise ValueError(
                f"model.num_classes={n_classes} but the data set has "
                f"{self.dataset.num_classes} classes"
                + (
                    f"; these class folders hold no images: {[str(p) for p in empty]}"
                    if empty
                    else ""
                )
            )
        self.sampler = ResumableSampler(
            len(self.dataset), seed=t.seed, rank=self.dist.rank, world_size=self.dist.world_size
        )
        self.augment = None  # the step's augmentation (main process or loader workers)
        if t.augment_p > 0 or t.hflip:  # (the two are exclusive: validate_config)
            self.augment = StepAugment(
                Augment(t.augment_p, xflip_p=t.xflip_p) if t.augment_p > 0 else HorizontalFlip(),
                t.seed,
                self.dist.rank,
                self.micro_batch_size,
            )

        self.step = 0
        self.history: list[dict] = []  # the metrics records of this process's fit() calls
        self.bin_edges = sigma_bin_edges(d.sigma_min, d.sigma_max)
        self._reset_log()
        self._boundary = StepBoundary()
        self.last_checkpoint: Path | None = None
        self._window = [0.0, 0]  # loss sum and steps since the last checkpoint (its health)
        self._first_loss: float | None = None  # the run's step-1 loss (health's reference)
        if checkpoint is not None:
            self._load(checkpoint)
        if self.folder is not None and self.dist.is_main:
            self.folder.prepare(config, checkpoint, self.step, changes)
        self.sinks = open_sinks(self.run_dir if self.dist.is_main else None, config)

    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        try:
            self._load_state(path, ckpt)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit this run (model weights or "
                f"trainer_state.pt): {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            ) from None

    def _load_state(self, path: Path, ckpt: dict) -> None:
        state = ckpt["trainer"]
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.step = int(state["step"])
        self.last_checkpoint = path
        self._first_loss = state.get("first_loss")
        if "optimizer" not in state:  # weights only (e.g. converted from k-diffusion)
            warnings.warn(
                f"{path} holds weights but no trainer state: continuing from step {self.step} "
                f"with a fresh optimizer (not an exact resume)",
                stacklevel=2,
            )
            return
        self.optimizer.load_state_dict(state["optimizer"])
        # The config's hyper-parameters win over the saved ones (equal unless allow_change).
        fresh_groups = make_optimizer(self.model, self.config).param_groups
        for group, fresh in zip(self.optimizer.param_groups, fresh_groups, strict=True):
            for key in ("lr", "betas", "eps", "weight_decay"):
                group[key] = fresh[key]
        data = state["data"][0]
        if (data["size"], data["seed"]) != (self.sampler.size, self.sampler.seed):
            warnings.warn(
                f"the data set changed since the checkpoint (size {data['size']} → "
                f"{self.sampler.size}): the data order will differ from the original run",
                stacklevel=2,
            )
        self._log_acc = state["log"]
        rngs = state["rng"]
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        elif self.dist.is_main:
            warnings.warn(
                f"checkpoint was written by {len(rngs)} processes, this run has "
                f"{self.dist.world_size}: dropout masks will differ from the original run",
                stacklevel=2,
            )
        self._print(f"resumed from {path} (step {self.step})")

    # --- one step ------------------------------------------------------------------------------

    def _generator(self, step: int, stream: int, micro: int = 0) -> torch.Generator:
        seed = step_generator(
            self.config.training.seed, step, self.dist.rank, stream + MICRO_STREAM_STRIDE * micro
        ).initial_seed()
        return torch.Generator(self.device).manual_seed(seed)

    def get_batch(
        self, step: int, micro: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This rank's ``(x0, classes, aug_cond)`` of micro-step ``micro`` of training step
        ``step`` (pure in both)."""
        batch = self.read_step(step)
        return self._to_device(*self._micro_slice(batch, micro))

    def read_step(self, step: int):
        """This rank's batch of step ``step``, read and augmented in this process:
        ``(images, classes, aug_cond or None)`` (:func:`read_step`; ``fit`` reads image files
        through a DataLoader whose workers do the same)."""
        return read_step(self.dataset, self.step_indices(step), step, self.augment)

    def step_indices(self, step: int):
        """This rank's data-set indices of step ``step`` (its share of the step's global batch,
        :func:`batch_size_at`, at the stream position :func:`samples_before`)."""
        t, world = self.config.training, self.dist.world_size
        return self.sampler.indices(
            samples_before(t, step) // world, batch_size_at(t, step) // world
        )

    def _micro_slice(self, batch, micro: int):
        lo = micro * self.micro_batch_size
        hi = lo + self.micro_batch_size
        return [None if x is None else x[lo:hi] for x in batch]

    def _to_device(self, images, classes, aug_cond):
        if self.config.model.num_classes:  # the labels enter here, still on the host
            check_class_labels(classes, self.config.model.num_classes)
        if aug_cond is not None:
            aug_cond = aug_cond.to(self.device, non_blocking=True)
        return (
            images.to(self.device, non_blocking=True),
            classes.to(self.device, non_blocking=True),
            aug_cond,
        )

    def draw_noise(
        self,
        x0: torch.Tensor,
        classes: torch.Tensor,
        step: int,
        micro: int = 0,
        accum: int | None = None,
    ):
        """The random draws of micro-step ``micro`` of step ``step``: dropped labels,
        stratified σ (the strata of group rank·A + micro of world_size·A; A = ``accum``, the
        step's micro-steps, default ``training.grad_accum``), ε."""
        accum = self.grad_accum if accum is None else accum
        t, m = self.config.training, self.config.model
        cond = {}
        if m.num_classes:
            g = self._generator(step, STREAM_DROPOUT, micro)
            cond["class_cond"] = drop_class_labels(classes, t.cond_dropout, m.num_classes, g)
        if self.config.diffusion.process == "ddpm":  # DiT: t ~ U{0, …, 999}, given as σ_t
            sigma = sample_training_sigmas(
                self.denoiser.schedule,
                len(x0),
                generator=self._generator(step, STREAM_SIGMA, micro),
                device=self.device,
            )
        else:
            sigma = training_sigmas(
                self.config,
                len(x0),
                stratified=True,
                rank=self.dist.rank * accum + micro,
                world_size=self.dist.world_size * accum,
                generator=self._generator(step, STREAM_SIGMA, micro),
                device=self.device,
            )
        noise = torch.randn(
            x0.shape, generator=self._generator(step, STREAM_NOISE, micro), device=self.device
        )
        return sigma, noise, cond

    def micro_batches(self, step: int, batch=None) -> list[dict]:
        """The ``grad_accum`` micro-batches of step ``step`` for this rank, each a dict
        ``{x0, noise, sigma, **cond}`` ready for :meth:`accumulate_gradients`; ``batch``: this
        rank's ``(images, classes, aug_cond or None)`` of the step, augmented (default:
        :meth:`read_step`)."""
        if batch is None:
            batch = self.read_step(step)
        out = []
        accum = len(batch[0]) // self.micro_batch_size  # grows with a batch schedule
        for micro in range(accum):
            x0, classes, aug_cond = self._to_device(*self._micro_slice(batch, micro))
            sigma, noise, cond = self.draw_noise(x0, classes, step, micro, accum)
            if aug_cond is not None:
                cond["aug_cond"] = aug_cond
            out.append({"x0": x0, "noise": noise, "sigma": sigma, **cond})
        return out

    def forward_backward(self, x0, noise, sigma, *, scale: float = 1.0, **cond) -> torch.Tensor:
        """Per-sample losses (B,) of eq. 1 and ``(scale · losses.mean()).backward()`` (DDP
        averages the gradients over ranks, so they equal the full-batch mean's)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            losses = self.denoiser.loss(x0, noise, sigma, **cond)
        loss = losses.mean()
        (loss if scale == 1.0 else loss * scale).backward()
        return losses.detach().float()

    def accumulate_gradients(self, micro_batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward over the micro-batches of one optimizer step, each loss
        scaled by 1/len(micro_batches); DDP all-reduces on the last one only. Returns this
        rank's per-sample losses and σ of the whole step (concatenated)."""
        n = len(micro_batches)
        losses, sigmas = [], []
        for i, micro in enumerate(micro_batches):
            sync = self._ddp is None or i == n - 1
            with contextlib.nullcontext() if sync else self._ddp.no_sync():
                losses.append(self.forward_backward(**micro, scale=1.0 / n))
            sigmas.append(micro["sigma"])
        return torch.cat(losses), torch.cat(sigmas)

    def train_step(self, batch=None) -> float:
        """One optimiser step (``grad_accum`` micro-steps); returns the loss (mean over the
        global batch)."""
        step = self.step
        self.optimizer.zero_grad(set_to_none=True)  # what an interrupted step left
        losses, sigma = self.accumulate_gradients(self.micro_batches(step, batch))
        return self.apply_update(losses, sigma)

    def apply_update(self, losses: torch.Tensor, sigma: torch.Tensor) -> float:
        """Clip, check, AdamW step, EMA update and logging of the accumulated gradients."""
        step, t = self.step, self.config.training
        loss = _all_mean(losses.mean(), self.dist).item()
        grad_norm = None
        if t.grad_clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip).item()
        if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            self._flush_log()
            what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm}"
            raise NonFiniteLossError(
                f"{what} at step {step + 1}: training stopped before the optimizer step, so the "
                f"weights were not updated and no checkpoint was written. "
                + self._recovery_advice()
            )
        with self._boundary.commit():  # a signal waits until the step is whole
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            ema_update(self.ema, self.model, self.ema_schedule.decay(step))
            if step == 0:
                self._first_loss = loss
            self.step = step + 1
            self._window[0] += loss
            self._window[1] += 1
            self._accumulate(loss, losses, sigma, grad_norm)
        return loss

    def _recovery_advice(self) -> str:
        if self.folder is None:
            return (
                "There is no good checkpoint to resume from: start a new run with a lower "
                "training.lr or with training.grad_clip set."
            )
        return self.folder.recovery_advice(self.config.training.lr)

    def _health(self) -> dict:
        """The checkpoint's health record: the largest |weight| (model and EMA) and the mean
        loss of the steps since the previous checkpoint (None if there were none)."""
        params = [*self.model.parameters(), *self.ema.parameters()]
        max_abs = torch.stack([p.detach().abs().max().float() for p in params]).max()
        steps = self._window[1]
        return {
            "max_abs_weight": float(max_abs),  # one host sync per checkpoint
            "loss": self._window[0] / steps if steps else None,
            "steps": steps,
            "reference_loss": self._first_loss,
        }

    # --- logging -------------------------------------------------------------------------------

    def _reset_log(self) -> None:
        self._log_acc = {
            "loss_sum": 0.0,
            "steps": 0,
            "bin_sum": [0.0] * SIGMA_BINS,
            "bin_count": [0] * SIGMA_BINS,
            "grad_norm_sum": 0.0,
        }
        self._log_t0 = time.perf_counter()
        self._log_samples_timed = 0  # global images of the steps since the last log line

    def _accumulate(self, loss, losses, sigma, grad_norm) -> None:
        acc = self._log_acc
        acc["loss_sum"] += loss
        acc["steps"] += 1
        acc["grad_norm_sum"] += grad_norm or 0.0
        self._log_samples_timed += len(losses) * self.dist.world_size
        index = torch.bucketize(sigma.float().cpu(), self.bin_edges[1:-1].float())
        sums = torch.zeros(SIGMA_BINS, dtype=torch.float64).index_add_(
            0, index, losses.cpu().double()
        )
        counts = torch.bincount(index, minlength=SIGMA_BINS)
        acc["bin_sum"] = [a + b for a, b in zip(acc["bin_sum"], sums.tolist())]
        acc["bin_count"] = [a + b for a, b in zip(acc["bin_count"], counts.tolist())]

    def _flush_log(self) -> dict | None:
        """Write one metrics.jsonl line (rank 0) from the accumulated steps; all ranks call it."""
        acc = self._log_acc
        if acc["steps"] == 0:
            return None
        bins = torch.tensor(acc["bin_sum"] + acc["bin_count"], dtype=torch.float64)
        bins = _all_sum(bins.to(self.device), self.dist).cpu()
        sums, counts = bins[:SIGMA_BINS], bins[SIGMA_BINS:]
        elapsed = time.perf_counter() - self._log_t0
        t = self.config.training
        labels = sigma_bin_labels(self.bin_edges)
        record = {
            "step": self.step,
            "loss": acc["loss_sum"] / acc["steps"],
            "lr": t.lr,
            "ema_decay": self.ema_schedule.decay(self.step - 1),
            "samples_per_s": self._log_samples_timed / max(elapsed, 1e-9),
            "sigma_bins": {
                label: (s / c if c else None)
                for label, s, c in zip(labels, sums.tolist(), counts.tolist())
            },
            "sigma_bin_counts": dict(zip(labels, [int(c) for c in counts.tolist()])),
        }
        if t.grad_clip is not None:
            record["grad_norm"] = acc["grad_norm_sum"] / acc["steps"]
        with self._boundary.commit():
            if self.folder is not None and self.dist.is_main:
                self.folder.append_metrics(record)
            self.history.append(record)
            self._reset_log()
        if self.dist.is_main:  # copies: TensorBoard / W&B (training.tensorboard, .wandb), a view
            self.sinks.metrics(record)
        return record

    def _print(self, message: str) -> None:
        if self.dist.is_main:
            tqdm.write(message)

    # --- checkpoints and samples ---------------------------------------------------------------

    def state_dict(self) -> dict:
        """The trainer state of a checkpoint (tensors, numbers, strings, lists and dicts only)."""
        rngs = [rng_state()]
        if self.dist.world_size > 1:
            rngs = [None] * self.dist.world_size
            dist.all_gather_object(rngs, rng_state())
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "ema": {"updates": self.step, "max_decay": self.ema_schedule.max_decay},
            "rng": rngs,
            "data": [
                self.sampler.state_dict()
                | {
                    "position": samples_before(self.config.training, self.step)
                    // self.dist.world_size
                }
            ],
            "log": self._log_acc,
            "world_size": self.dist.world_size,
            "first_loss": self._first_loss,
        }

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0; all ranks must call it)."""
        state = self.state_dict()  # collective under DDP
        if self.run_dir is None or not self.dist.is_main:
            return None
        with self._boundary.commit():
            health = self._health()
            self.last_checkpoint = self.folder.save_checkpoint(
                self.step,
                self.model.state_dict(),
                self.ema.state_dict(),
                state,
                config=self.config,
                health=health,
            )
            self._window = [0.0, 0]
        return self.last_checkpoint

    def save_samples(self) -> Path | None:
        """A grid of EMA-model samples (the process's sampler) at ``samples/step-XXXXXXXX.png``."""
        if self.run_dir is None or not self.dist.is_main:
            return None
        images = generate(
            self.ema_denoiser,
            self.config,
            self.n_samples,
            steps=self.sample_steps,
            seed=self.config.training.seed,
            device=self.device,
        )
        path = self.folder.subdir("samples") / f"step-{self.step:08d}.png"
        if not images.isfinite().all():  # one host sync per sample grid
            raise NonFiniteLossError(
                f"the EMA model's samples at step {self.step} hold NaN or inf pixels (the "
                f"weights are diverging); {path.name} was not written. " + self._recovery_advice()
            )
        with writing(str(path)):
            save_grid(
                images, path, nrow=grid_columns(self.n_samples, self.config.model.num_classes)
            )
        self.sinks.image(path, self.step)
        return path

    # --- the loop ------------------------------------------------------------------------------

    def fit(self, steps: int | None = None, *, callback=None) -> dict:
        """Train until step ``steps`` (default ``training.steps``); returns a summary.

        ``callback``: one more sink for this call only (rank 0), e.g. the live view
        ``hdit_edu.widgets.LiveTrainingView()``: it receives each ``metrics.jsonl`` record and
        each sample grid exactly as the TensorBoard / W&B sinks do (see
        :mod:`hdit_edu.logging_sinks`), at no extra cost in the training step."""
        t = self.config.training
        total = t.steps if steps is None else steps
        start_step, t0 = self.step, time.perf_counter()
        if self.dist.is_main:
            self.sinks.attach(callback, step=self.step, total=total)
        losses: list[float] = []
        bar = tqdm(
            total=total,
            initial=self.step,
            desc=self.config.name,
            disable=not (self.progress and self.dist.is_main),
            smoothing=0.1,
        )
        batches = None  # in-memory data sets are read by read_step here; files by a DataLoader
        if self.num_workers or not hasattr(self.dataset, "batch"):
            batches = _loader_batches(
                self.dataset, self.step_indices, self.step, self.num_workers, self.augment
            )
        self._log_t0 = time.perf_counter()
        with self._boundary.guard():  # SIGINT / SIGTERM stop it only between steps
            try:
                while self.step < total:
                    batch = next(batches) if batches is not None else None
                    loss = self.train_step(batch)
                    losses.append(loss)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}")
                    s = self.step
                    if s % t.log_every == 0 or s == total:
                        self._flush_log()
                    if t.sample_every and s % t.sample_every == 0:
                        self.save_samples()
                    if (t.checkpoint_every and s % t.checkpoint_every == 0) or s == total:
                        self.save()
            except KeyboardInterrupt:  # at a step boundary (StepBoundary): save that step
                if self.dist.world_size == 1 and self.step > start_step:
                    # the steps since the last row become a row of their own, so that the
                    # checkpoint's log accumulators are empty and no step is logged twice
                    logged = self._flush_log() is not None
                    last = self.last_checkpoint
                    if logged or last is None or last.name != f"step-{self.step:08d}":
                        self._print(f"interrupted: saving a checkpoint at step {self.step}")
                        self.save()
                raise
            finally:
                bar.close()
                self.sinks.detach(callback)
        return {
            "steps": self.step - start_step,
            "final_step": self.step,
            "time_s": time.perf_counter() - t0,
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "losses": losses,
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }


def train(
    config: Config,
    run_dir: str | Path | None = None,
    *,
    steps: int | None = None,
    resume: bool | str | Path = False,
    **trainer_options,
) -> Trainer:
    """Build a :class:`Trainer`, run :meth:`Trainer.fit` and return the trainer (its
    ``summary`` attribute holds fit's result)."""
    trainer = Trainer(config, run_dir, resume=resume, **trainer_options)
    trainer.summary = trainer.fit(steps)
    return trainer
