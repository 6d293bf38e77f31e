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

**Table 6's optimiser.** AdamW, lr 5·10⁻⁴, betas (0.9, 0.95), eps 10⁻⁸, weight decay 10⁻²
applied only to weight matrices, the mapping network at ⅓ of the learning rate (as the
authors' k-diffusion does: ``model.param_groups(lr, mapping_lr_scale)``), a constant learning
rate, and an EMA of the weights with decay 0.9999 for evaluation and samples. Gradient-norm
clipping is ``training.grad_clip`` (off unless set: Table 6 does not list it, though the
authors' k-diffusion trainer always clips at 1.0).

**EMA warm-up.** A fixed decay of 0.9999 averages over ~10⁴ steps: a few-hundred-step toy run
would sample from (mostly) its random initialisation. As k-diffusion does, the decay follows
an inverse schedule that starts at 0 (the first update copies the weights) and rises towards
the paper's value (:class:`EMAWarmup`)::

    decay(t) = min(ema_decay, 1 − (1 + t/inv_gamma)^(−power)),   t = updates so far.

**Exact resume.** Every random draw of a step (augmentation, conditioning dropout, σ, ε) comes
from a generator that is a pure function of (seed, step, rank, stream)
(:func:`hdit_edu.data.step_generator`), and the data order is a pure function of the step
(:class:`hdit_edu.data.ResumableSampler`). The global RNGs (used by dropout layers) are saved
per rank. So a run killed at any point and resumed from its last checkpoint repeats the same
loss sequence bit for bit (on CPU; GPU kernels are not bitwise deterministic).

**Checkpoints** (``runs/<name>/checkpoints/step-XXXXXXXX/``, :mod:`hdit_edu.checkpoints`):
weights as safetensors, the trainer state (optimizer, step, RNG states, data position, log
accumulators) read back with ``torch.load(weights_only=True)``, a manifest of SHA-256 sums;
written atomically, the last ``keep_checkpoints`` kept.

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

import copy
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .checkpoints import (
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from .configs import Config, image_d, load_config, save_config
from .data import Augment, ImageFolderDataset, ResumableSampler, save_grid, step_generator
from .diffusion import Denoiser, sample_sigmas
from .layers import check_class_labels
from .logging_sinks import open_sinks
from .models import build_model
from .sampling import generate, grid_columns
from .toy import ToyDataset

# Independent random streams of one step (see data.step_generator).
STREAM_AUGMENT, STREAM_DROPOUT, STREAM_SIGMA, STREAM_NOISE = 0, 1, 2, 3
SIGMA_BINS = 6  # log-spaced bins of σ for the per-noise-level loss in metrics.jsonl
EMA_POWER = 2 / 3  # k-diffusion's EMAWarmup: 2/3 for long runs (0.999 at 31.6k, 0.9999 at 1M)
EMA_INV_GAMMA = 1.0
# Training fields that may change when a run is resumed (they do not change the maths).
RESUMABLE_FIELDS = (
    *("steps", "checkpoint_every", "keep_checkpoints", "sample_every", "log_every"),
    *("tensorboard", "wandb"),  # where copies of the metrics go (logging_sinks)
)


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
    and the paper's 0.9999 after 1M."""

    max_decay: float = 0.9999
    power: float = EMA_POWER
    inv_gamma: float = EMA_INV_GAMMA

    def decay(self, t: int) -> float:
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
# Data
# ----------------------------------------------------------------------------------------------


def make_dataset(config: Config):
    """The training set a config names: ``training.dataset = "toy"`` → :class:`ToyDataset`,
    else a path → :class:`ImageFolderDataset` (class sub-folders when the model is
    class-conditional), at the model resolution."""
    name, res = config.training.dataset, config.model.resolution
    if name == "toy":
        return ToyDataset("train", resolution=res)
    path = Path(name)
    if not path.is_dir():
        raise ValueError(f"training.dataset must be 'toy' or an image folder; {name!r} is neither")
    return ImageFolderDataset(path, res, class_subfolders=config.model.num_classes > 0)


def _loader_batches(
    dataset, sampler: ResumableSampler, batch_size: int, start_step: int, workers: int
):
    """Batches ``(images, classes)`` for steps ``start_step, start_step + 1, …`` read by a
    ``DataLoader`` (worker processes decode image files; the order stays a function of step)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler.batches(batch_size, start_step),
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        generator=torch.Generator(),  # leaves the global RNG untouched (exact resume)
    )
    return iter(loader)


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------


class Trainer:
    """Train ``config``'s model, writing into ``run_dir`` (``None``: write nothing).

    ``resume``: ``False`` (a fresh run; a run dir that holds checkpoints is an error),
    ``True`` (continue from the newest checkpoint; start fresh if there is none) or a
    checkpoint folder. ``fallback=True`` resumes from the newest *intact* checkpoint when the
    newest is corrupt. ``dataset`` overrides the config's (anything with ``len`` and
    ``batch(indices)`` or ``__getitem__`` → (image, class)). ``sample_steps`` is the number of
    DPM++(3M) SDE steps of the periodic sample grids (Table 6: 50). ``attention_backend``: the
    neighborhood-attention backend of the model and its EMA (one of
    :data:`hdit_edu.attention.NA_BACKENDS`; every backend computes the same numbers).
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path | None = None,
        *,
        resume: bool | str | Path = False,
        fallback: bool = False,
        dataset=None,
        device: str | torch.device | None = None,
        progress: bool = True,
        num_workers: int = 0,
        sample_steps: int = 50,
        n_samples: int = 16,
        attention_backend: str = "auto",
    ):
        self.dist = init_distributed(device)
        self.device = self.dist.device
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress, self.num_workers = progress, num_workers
        self.sample_steps, self.n_samples = sample_steps, n_samples
        checkpoint = self._resolve_resume(config, resume, fallback)
        t = config.training
        self.config = config
        if t.batch_size % self.dist.world_size:
            raise ValueError(
                f"training.batch_size={t.batch_size} must be divisible by the number of "
                f"processes ({self.dist.world_size})"
            )
        self.batch_size = t.batch_size // self.dist.world_size  # per rank
        self.use_bf16 = t.precision == "bf16" and self.device.type == "cuda"
        if t.precision not in ("bf16", "fp32"):
            raise ValueError(f"training.precision must be 'bf16' or 'fp32', got {t.precision!r}")

        # Model, EMA copy, optimiser (identical initialisation on every rank).
        seed_everything(t.seed)
        self.model = build_model(config, attention_backend).to(self.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = make_optimizer(self.model, config)
        self.ema_schedule = EMAWarmup(max_decay=t.ema_decay)
        # Dropout layers draw from the global RNG: seed it per rank.
        seed_everything(step_generator(t.seed, 0, self.dist.rank, stream=99).initial_seed())

        # The network the training step calls: DDP-wrapped and/or compiled.
        net: nn.Module = self.model
        if self.dist.world_size > 1:
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if t.compile:
            net = torch.compile(net)
        if net is not self.model and hasattr(self.model, "out_channels_used"):
            net.out_channels_used = self.model.out_channels_used  # for the Denoiser (DiT R1/R2)
        d = config.diffusion
        self.denoiser = Denoiser(net, d.sigma_data, d.loss_weighting, d.gamma)
        self.ema_denoiser = Denoiser(self.ema, d.sigma_data, d.loss_weighting, d.gamma)

        # Data: a deterministic, DDP-sharded order; batches are a pure function of the step.
        self.dataset = make_dataset(config) if dataset is None else dataset
        n_classes = config.model.num_classes
        if n_classes and getattr(self.dataset, "num_classes", n_classes) != n_classes:
            raise ValueError(
                f"model.num_classes={n_classes} but the data set has "
                f"{self.dataset.num_classes} classes"
            )
        self.sampler = ResumableSampler(
            len(self.dataset), seed=t.seed, rank=self.dist.rank, world_size=self.dist.world_size
        )
        self.augment = Augment(t.augment_p) if t.augment_p > 0 else None

        self.step = 0
        self.history: list[dict] = []  # the metrics records of this process's fit() calls
        self.bin_edges = sigma_bin_edges(d.sigma_min, d.sigma_max)
        self._reset_log()
        self.last_checkpoint: Path | None = None
        if checkpoint is not None:
            self._load(checkpoint)
        if self.run_dir is not None and self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.run_dir / "config.json")
            self._truncate_metrics(self.step)
            for pattern in (".tmp-step-*", ".stale-step-*"):  # saves cut short by a crash
                for unfinished in (self.run_dir / "checkpoints").glob(pattern):
                    shutil.rmtree(unfinished, ignore_errors=True)
        self.sinks = open_sinks(self.run_dir if self.dist.is_main else None, config)

    # --- resume bookkeeping ------------------------------------------------------------------

    def _resolve_resume(self, config: Config, resume, fallback: bool) -> Path | None:
        if self.run_dir is None:
            if resume not in (False, None):
                raise ValueError("resume needs a run_dir")
            return None
        existing = list_checkpoints(self.run_dir)
        if resume is False or resume is None:
            if existing:
                raise ValueError(
                    f"run dir {str(self.run_dir)!r} already holds checkpoints "
                    f"({existing[-1].name}): pass resume=True (--resume) to continue it, or "
                    f"choose another run dir"
                )
            return None
        saved = self.run_dir / "config.json"
        if saved.exists():
            _check_same_experiment(load_config(saved), config)
        if resume is True:
            return find_checkpoint(self.run_dir, fallback=fallback)
        return Path(resume)

    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        state = ckpt["trainer"]
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.step = int(state["step"])
        self.last_checkpoint = path
        if "optimizer" not in state:  # weights only (e.g. converted from k-diffusion)
            warnings.warn(
                f"{path} holds weights but no trainer state: continuing from step {self.step} "
                f"with a fresh optimizer (not an exact resume)",
                stacklevel=2,
            )
            return
        self.optimizer.load_state_dict(state["optimizer"])
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

    def _truncate_metrics(self, step: int) -> None:
        """Drop log lines past ``step`` (written after the checkpoint we resume from)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        keep = [ln for ln in lines if json.loads(ln)["step"] <= step]
        if len(keep) != len(lines):
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in keep))
            os.replace(tmp, path)

    # --- one step ------------------------------------------------------------------------------

    def _generator(self, step: int, stream: int) -> torch.Generator:
        seed = step_generator(
            self.config.training.seed, step, self.dist.rank, stream
        ).initial_seed()
        return torch.Generator(self.device).manual_seed(seed)

    def get_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This rank's ``(x0, classes, aug_cond)`` of training step ``step`` (pure in step)."""
        images, classes = self.dataset.batch(self.sampler.batch_indices(step, self.batch_size))
        return self._prepare(images, classes, step)

    def _prepare(self, images, classes, step):
        if self.config.model.num_classes:  # the labels enter here, still on the host
            check_class_labels(classes, self.config.model.num_classes)
        aug_cond = None
        if self.augment is not None:
            g = step_generator(self.config.training.seed, step, self.dist.rank, STREAM_AUGMENT)
            images, aug_cond = self.augment(images, generator=g)
            aug_cond = aug_cond.to(self.device, non_blocking=True)
        return (
            images.to(self.device, non_blocking=True),
            classes.to(self.device, non_blocking=True),
            aug_cond,
        )

    def draw_noise(self, x0: torch.Tensor, classes: torch.Tensor, step: int):
        """The step's random draws: dropped labels, stratified σ (this rank's strata), ε."""
        t, m = self.config.training, self.config.model
        cond = {}
        if m.num_classes:
            g = self._generator(step, STREAM_DROPOUT)
            cond["class_cond"] = drop_class_labels(classes, t.cond_dropout, m.num_classes, g)
        sigma = training_sigmas(
            self.config,
            len(x0),
            stratified=True,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            generator=self._generator(step, STREAM_SIGMA),
            device=self.device,
        )
        noise = torch.randn(
            x0.shape, generator=self._generator(step, STREAM_NOISE), device=self.device
        )
        return sigma, noise, cond

    def forward_backward(self, x0, noise, sigma, **cond) -> torch.Tensor:
        """Per-sample losses (B,) of eq. 1 and ``losses.mean().backward()`` (DDP averages the
        gradients over ranks, so they equal the full-batch mean's)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            losses = self.denoiser.loss(x0, noise, sigma, **cond)
        losses.mean().backward()
        return losses.detach().float()

    def train_step(self, batch=None) -> float:
        """One optimiser step; returns the loss (mean over the global batch)."""
        step, t = self.step, self.config.training
        x0, classes, aug_cond = (
            self.get_batch(step) if batch is None else self._prepare(*batch, step)
        )
        sigma, noise, cond = self.draw_noise(x0, classes, step)
        if aug_cond is not None:
            cond["aug_cond"] = aug_cond
        losses = self.forward_backward(x0, noise, sigma, **cond)
        loss = _all_mean(losses.mean(), self.dist).item()
        grad_norm = None
        if t.grad_clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip).item()
        if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            self._flush_log()
            what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm}"
            last = str(self.last_checkpoint) if self.last_checkpoint else "none (no checkpoint yet)"
            raise NonFiniteLossError(
                f"{what} at step {step + 1}: training stopped before the optimizer step, so the "
                f"weights were not updated and no checkpoint was written. Last good "
                f"checkpoint: {last}. Resume from it (--resume) after lowering the learning "
                f"rate or setting training.grad_clip."
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        ema_update(self.ema, self.model, self.ema_schedule.decay(step))
        self.step = step + 1
        self._accumulate(loss, losses, sigma, grad_norm)
        return loss

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
        self._log_steps_timed = 0

    def _accumulate(self, loss, losses, sigma, grad_norm) -> None:
        acc = self._log_acc
        acc["loss_sum"] += loss
        acc["steps"] += 1
        acc["grad_norm_sum"] += grad_norm or 0.0
        self._log_steps_timed += 1
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
            "samples_per_s": self._log_steps_timed * t.batch_size / max(elapsed, 1e-9),
            "sigma_bins": {
                label: (s / c if c else None)
                for label, s, c in zip(labels, sums.tolist(), counts.tolist())
            },
            "sigma_bin_counts": dict(zip(labels, [int(c) for c in counts.tolist()])),
        }
        if t.grad_clip is not None:
            record["grad_norm"] = acc["grad_norm_sum"] / acc["steps"]
        if self.run_dir is not None and self.dist.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            self.sinks.metrics(record)  # TensorBoard / W&B copies (training.tensorboard, .wandb)
        self.history.append(record)
        self._reset_log()
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
            "data": [self.sampler.state_dict() | {"position": self.step * self.batch_size}],
            "log": self._log_acc,
            "world_size": self.dist.world_size,
        }

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0; all ranks must call it)."""
        state = self.state_dict()  # collective under DDP
        if self.run_dir is None or not self.dist.is_main:
            return None
        self.last_checkpoint = save_checkpoint(
            self.run_dir,
            self.step,
            self.model.state_dict(),
            self.ema.state_dict(),
            state,
            keep=self.config.training.keep_checkpoints,
        )
        return self.last_checkpoint

    def save_samples(self) -> Path | None:
        """A grid of EMA-model samples (DPM++(3M) SDE) at ``samples/step-XXXXXXXX.png``."""
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
        path = self.run_dir / "samples" / f"step-{self.step:08d}.png"
        save_grid(images, path, nrow=grid_columns(self.n_samples, self.config.model.num_classes))
        self.sinks.image(path, self.step)
        return path

    # --- the loop ------------------------------------------------------------------------------

    def fit(self, steps: int | None = None) -> dict:
        """Train until step ``steps`` (default ``training.steps``); returns a summary."""
        t = self.config.training
        total = t.steps if steps is None else steps
        start_step, t0 = self.step, time.perf_counter()
        losses: list[float] = []
        bar = tqdm(
            total=total,
            initial=self.step,
            desc=self.config.name,
            disable=not (self.progress and self.dist.is_main),
            smoothing=0.1,
        )
        batches = None  # in-memory data sets are gathered by get_batch; files by a DataLoader
        if self.num_workers or not hasattr(self.dataset, "batch"):
            batches = _loader_batches(
                self.dataset, self.sampler, self.batch_size, self.step, self.num_workers
            )
        self._log_t0 = time.perf_counter()
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
        except KeyboardInterrupt:
            if self.dist.world_size == 1 and self.step > start_step:
                self._print(f"interrupted: saving a checkpoint at step {self.step}")
                self.save()
            raise
        finally:
            bar.close()
        return {
            "steps": self.step - start_step,
            "final_step": self.step,
            "time_s": time.perf_counter() - t0,
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "losses": losses,
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }


def _check_same_experiment(saved: Config, given: Config) -> None:
    """A resumed run may change only the bookkeeping fields of ``RESUMABLE_FIELDS``."""
    a, b = saved.to_dict(), given.to_dict()
    for key in RESUMABLE_FIELDS:
        a["training"].pop(key), b["training"].pop(key)
    diffs = sorted(_diff_keys(a, b))
    if diffs:
        raise ValueError(
            f"cannot resume: the config differs from the run's config.json in {diffs} "
            f"(only training.{{{', '.join(RESUMABLE_FIELDS)}}} may change when resuming)"
        )


def _diff_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


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
