"""Training: Table 6's recipe, checkpoints that resume exactly, logging, DDP (§5.1, Table 6).

One training step (:meth:`Trainer.train_step`), in the order the code runs it::

    indices   = sampler.batch_indices(step, B)                 # data.ResumableSampler
    x0, y     = dataset.batch(indices)                         # images in [-1, 1], classes
    x0, aug   = Augment(p)(x0)                                 # non-leaking augmentation
    y[u < 0.1] = num_classes                                   # conditioning dropout (10 %)
    σ         = sample_sigmas(config, B, stratified=True)      # interpolated cosine, stratified
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

**Checkpoints** (``runs/<name>/checkpoints/step-XXXXXXXX/``): ``model.safetensors``,
``ema.safetensors`` (weights), ``trainer_state.pt`` (optimizer, step, RNG states, data
position, log accumulators; saved with ``torch.save`` of tensors/ints/lists/dicts only and
read with ``torch.load(weights_only=True)``) and ``manifest.json`` (the files' SHA-256). A
checkpoint is written into a temporary folder and renamed into place (atomic), so a crash
while writing never damages an earlier checkpoint; the last ``keep_checkpoints`` are kept.

**DDP.** Launch with ``torchrun --nproc_per_node N -m hdit_edu.cli train ...``; when
``WORLD_SIZE > 1`` the trainer joins the process group from the environment (NCCL on GPUs,
gloo on CPU), splits the global batch over the ranks (each reads its shard of the same
permutation and draws its own strata of σ), averages gradients with
``DistributedDataParallel`` and lets rank 0 alone write logs, samples and checkpoints.

**Profiles.** :func:`for_profile` keeps a config as the paper sets it (``"gpu"``) or moves it
onto the 32×32 toy set at tiny sizes (``"cpu"``, :func:`toy_scale`), keeping the *kinds* of
choices that define it; :func:`run_ablation` trains Table 1's chain that way with one budget.

Using a run: :func:`load_run` (config + EMA denoiser of the newest checkpoint),
:func:`generate` (DPM++(3M) SDE samples), :func:`save_grid`, :func:`read_metrics`,
:func:`plot_losses`, :func:`evaluate_loss` (a held-out loss comparable across weightings).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .configs import Config, build_model, load_config, save_config
from .data import Augment, ImageFolderDataset, ResumableSampler, ToyDataset, step_generator
from .diffusion import Denoiser, sample_sigmas
from .sampling import SAMPLERS, karras_sigmas, sample

# Independent random streams of one step (see data.step_generator).
STREAM_AUGMENT, STREAM_DROPOUT, STREAM_SIGMA, STREAM_NOISE = 0, 1, 2, 3
SIGMA_BINS = 6  # log-spaced bins of σ for the per-noise-level loss in metrics.jsonl
EMA_POWER = 2 / 3  # k-diffusion's EMAWarmup: 2/3 for long runs (0.999 at 31.6k, 0.9999 at 1M)
EMA_INV_GAMMA = 1.0
CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "trainer_state.pt")
# Training fields that may change when a run is resumed (they do not change the maths).
RESUMABLE_FIELDS = ("steps", "checkpoint_every", "keep_checkpoints", "sample_every", "log_every")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, incomplete or corrupt (names the file)."""


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
# RNG states (for dropout layers; the per-step draws need none) — tensors/ints/lists only
# ----------------------------------------------------------------------------------------------


def rng_state() -> dict:
    """The global RNG states of this process, as a ``weights_only``-loadable dict."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(py_state), py_gauss],
        "numpy": [
            np_kind,
            torch.from_numpy(np_keys.astype(np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if (
        state["cuda"]
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


# ----------------------------------------------------------------------------------------------
# Checkpoints: atomic folders of safetensors + a weights_only trainer state + a manifest
# ----------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cpu_copy(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoint folders, oldest first (unfinished temporary folders excluded)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    trainer_state: dict,
    keep: int = 3,
) -> Path:
    """Write checkpoint ``step`` atomically and delete all but the newest ``keep``.

    The files go to a temporary folder first (each fsync'ed, the manifest with their SHA-256
    last) that is then renamed to ``checkpoints/step-XXXXXXXX`` in one ``os.replace``."""
    from safetensors.torch import save_file

    final = checkpoint_dir(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    meta = {"step": str(step)}
    save_file(_cpu_copy(model_state), tmp / "model.safetensors", metadata=meta)
    save_file(_cpu_copy(ema_state), tmp / "ema.safetensors", metadata=meta)
    torch.save(trainer_state, tmp / "trainer_state.pt")
    manifest = {"step": step, "files": {name: _sha256(tmp / name) for name in CHECKPOINT_FILES}}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for name in (*CHECKPOINT_FILES, "manifest.json"):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():  # re-reaching a step after resuming from an older checkpoint
        stale = final.parent / f".stale-{final.name}-{os.getpid()}"
        os.replace(final, stale)
        shutil.rmtree(stale)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def verify_checkpoint(path: str | Path) -> dict:
    """Check a checkpoint folder against its manifest; returns the manifest.

    Raises :class:`CheckpointError` naming the first missing or corrupt file."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {str(manifest_path)!r} is missing") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint file {str(manifest_path)!r} is corrupt: {e}") from None
    for name in CHECKPOINT_FILES:
        file = path / name
        if not file.exists():
            raise CheckpointError(f"checkpoint file {str(file)!r} is missing")
        if _sha256(file) != files.get(name):
            raise CheckpointError(
                f"checkpoint file {str(file)!r} is corrupt (its SHA-256 does not match "
                f"{str(manifest_path)!r})"
            )
    return manifest


def load_checkpoint(path: str | Path, *, verify: bool = True) -> dict:
    """Read a checkpoint folder: ``{"model", "ema"}`` state dicts (safetensors) and
    ``"trainer"`` (``torch.load(weights_only=True)``: no arbitrary objects are unpickled)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {str(path)!r} does not exist")
    if verify:
        verify_checkpoint(path)
    out = {}
    for key, name in (("model", "model.safetensors"), ("ema", "ema.safetensors")):
        try:
            out[key] = load_file(path / name)
        except Exception as e:  # noqa: BLE001 - any failure to parse is a corrupt file
            raise CheckpointError(f"checkpoint file {str(path / name)!r} is corrupt: {e}") from e
    try:
        out["trainer"] = torch.load(
            path / "trainer_state.pt", map_location="cpu", weights_only=True
        )
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint file {str(path / 'trainer_state.pt')!r} is corrupt: {e}"
        ) from e
    return out


def find_checkpoint(run_dir: str | Path, *, fallback: bool = False) -> Path | None:
    """The newest intact checkpoint of a run (None if there is none).

    A corrupt newest checkpoint raises :class:`CheckpointError` naming the file and the
    previous checkpoint; with ``fallback=True`` the newest intact one is used instead."""
    checkpoints = list_checkpoints(run_dir)
    for i in range(len(checkpoints) - 1, -1, -1):
        try:
            verify_checkpoint(checkpoints[i])
            return checkpoints[i]
        except CheckpointError as e:
            if fallback:
                warnings.warn(f"{e}; falling back to an older checkpoint", stacklevel=2)
                continue
            previous = checkpoints[i - 1] if i > 0 else None
            hint = (
                f" The previous checkpoint {str(previous)!r} is untouched: resume from it with "
                f"`--resume-from {previous}` (Trainer(resume={str(previous)!r})) or let the "
                f"trainer fall back to it with `--fallback` (Trainer(fallback=True))."
                if previous
                else " There is no earlier checkpoint to fall back to."
            )
            raise CheckpointError(str(e) + "." + hint) from None
    return None


# ----------------------------------------------------------------------------------------------
# Profiles: the same experiment, paper-sized ("gpu") or toy-sized ("cpu")
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyScale:
    """The sizes of an experiment moved onto the 32×32 toy data set (:func:`toy_scale`)."""

    widths: tuple[int, int] = (64, 128)  # outer (local attention) level, inner (global) level
    depths: tuple[int, int] = (1, 2)
    head_dim: int = 32
    mapping_width: int = 128
    batch_size: int = 16
    steps: int = 1000
    patch_size: int = 2


# "cpu" profile of `hdit-edu train`: a tiny model that trains in minutes on 2 cores.
CPU_SCALE = ToyScale()
# Even smaller, for the ablation chain (nine runs in a few CPU minutes).
ABLATION_CPU_SCALE = ToyScale(
    widths=(32, 64), depths=(1, 1), head_dim=16, mapping_width=64, batch_size=16, steps=150
)


def toy_scale(config: Config, scale: ToyScale = CPU_SCALE) -> Config:
    """``config`` moved onto the toy problem with the *same kinds* of choices and small sizes.

    What is kept: the architecture (HDiT levels or DiT), each level's attention kind (global /
    neighborhood 7×7 / shifted window 8) on the outer level with a global inner level, the FFN
    (GEGLU / GELU), the position embedding (RoPE / additive), the skip merge, dropout, the
    augmentation input and probability, the diffusion objective (loss weighting, σ density
    and range) and Table 6's optimiser. What changes: 32×32 toy images (8 classes, if the
    model is class-conditional), patch 2 (16×16 tokens on the outer level, 8×8 on the inner),
    ``scale``'s widths, depths, head dim, mapping width, batch size and steps, EMA max decay
    0.999 (0.9999 averages over more steps than a toy run has), fp32.

    A multi-level hourglass becomes two levels (outer: the config's outermost attention kind;
    inner: global). A single-level model (R3/R4, DiT) becomes one global level at the inner
    width with depth ``sum(depths)`` on the 16×16 grid, like step A's hyper-parameter-matched
    single-level version (§5.2).
    """
    from dataclasses import replace

    from .configs import LevelConfig, ModelConfig, validate_config

    m = config.model
    outer, inner = m.levels[0], m.levels[-1]
    if m.arch == "hdit" and len(m.levels) > 1:
        levels = [
            LevelConfig(
                depth=scale.depths[0],
                width=scale.widths[0],
                head_dim=scale.head_dim,
                attention=outer.attention,
                kernel_size=min(outer.kernel_size, 7),
                window_size=8,
                dropout=outer.dropout,
            ),
            LevelConfig(
                depth=scale.depths[1],
                width=scale.widths[1],
                head_dim=scale.head_dim,
                attention="global",
                dropout=inner.dropout,
            ),
        ]
    else:
        levels = [
            LevelConfig(
                depth=sum(scale.depths),
                width=scale.widths[1],
                head_dim=scale.head_dim,
                attention="global",
                dropout=inner.dropout,
            )
        ]
    model = ModelConfig(
        levels=levels,
        mapping=replace(m.mapping, width=scale.mapping_width, d_ff=None),
        arch=m.arch,
        patch_size=scale.patch_size,
        in_channels=3,
        out_channels=m.out_channels,
        num_classes=len(ToyDataset.classes) if m.num_classes else 0,
        aug_dim=m.aug_dim,
        ffn=m.ffn,
        pos_emb=m.pos_emb,
        skip=m.skip,
        resolution=32,
    )
    diffusion = replace(config.diffusion, noise_d_low=32, noise_d_high=None)
    training = replace(
        config.training,
        batch_size=scale.batch_size,
        steps=scale.steps,
        ema_decay=min(config.training.ema_decay, 0.999),
        precision="fp32",
        dataset="toy",
        checkpoint_every=max(1, scale.steps // 4),
        sample_every=max(1, scale.steps // 4),
        log_every=10,
        compile=False,
    )
    new = Config(name=config.name, model=model, diffusion=diffusion, training=training)
    validate_config(new)
    return new


def for_profile(config: Config, profile: str) -> Config:
    """``"gpu"``: the config as it is (the paper's settings); ``"cpu"``: :func:`toy_scale`
    with :data:`CPU_SCALE` (a tiny model on the toy set that trains in minutes on 2 cores)."""
    from .env import PROFILES

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    return config if profile == "gpu" else toy_scale(config, CPU_SCALE)


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
    DPM++(3M) SDE steps of the periodic sample grids (Table 6: 50).
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
        _seed_everything(t.seed)
        self.model = build_model(config).to(self.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = make_optimizer(self.model, config)
        self.ema_schedule = EMAWarmup(max_decay=t.ema_decay)
        # Dropout layers draw from the global RNG: seed it per rank.
        _seed_everything(step_generator(t.seed, 0, self.dist.rank, stream=99).initial_seed())

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
        sigma = sample_sigmas(
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
        self.history.append(record)
        self._reset_log()
        return record

    def _print(self, message: str) -> None:
        if self.dist.is_main:
            from tqdm.auto import tqdm

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
        save_grid(images, path, nrow=_grid_columns(self.n_samples, self.config.model.num_classes))
        return path

    # --- the loop ------------------------------------------------------------------------------

    def fit(self, steps: int | None = None) -> dict:
        """Train until step ``steps`` (default ``training.steps``); returns a summary."""
        from tqdm.auto import tqdm

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


# ----------------------------------------------------------------------------------------------
# Using a run: load, sample, plot
# ----------------------------------------------------------------------------------------------


def load_run(
    run_dir: str | Path,
    *,
    which: str = "ema",
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Config, Denoiser]:
    """A run's config and its denoiser with the ``which`` (``"ema"`` or ``"model"``) weights of
    the newest (or the given) checkpoint, in eval mode."""
    if which not in ("ema", "model"):
        raise ValueError(f"which must be 'ema' or 'model', got {which!r}")
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.json")
    path = Path(checkpoint) if checkpoint is not None else find_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(f"run dir {str(run_dir)!r} holds no checkpoint yet")
    verify_checkpoint(path)
    from safetensors.torch import load_file

    model = build_model(config)
    model.load_state_dict(load_file(path / f"{which}.safetensors"))
    model = model.to(device).eval().requires_grad_(False)
    d = config.diffusion
    return config, Denoiser(model, d.sigma_data, d.loss_weighting, d.gamma)


@torch.no_grad()
def generate(
    denoiser: Denoiser,
    config: Config,
    n: int,
    *,
    sampler: str = "dpmpp_3m_sde",
    steps: int = 50,
    cfg_scale: float = 1.0,
    class_cond: int | Sequence[int] | torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> torch.Tensor:
    """``n`` samples (n, C, H, W) in [-1, 1] from a denoiser (Table 6: 50 steps of DPM++(3M)
    SDE on the Karras schedule over the config's σ range). ``class_cond``: one class for all,
    a list of n classes, or None (class-conditional models: classes 0, 1, 2, … in turn)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    m, d = config.model, config.diffusion
    device = torch.device(device) if device is not None else next(denoiser.parameters()).device
    classes = _sample_labels(n, m.num_classes, class_cond)
    sigmas = karras_sigmas(steps, sigma_min or d.sigma_min, sigma_max or d.sigma_max, device=device)
    noise_gen = torch.Generator(device).manual_seed(seed)
    sde_gen = torch.Generator(device).manual_seed(seed + 1)
    shape = (m.in_channels, m.resolution, m.resolution)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = torch.randn((b, *shape), generator=noise_gen, device=device) * sigmas[0]
        cc = classes[start : start + b].to(device) if classes is not None else None
        out.append(
            sample(
                denoiser,
                x,
                sigmas,
                sampler,
                class_cond=cc,
                cfg_scale=cfg_scale,
                num_classes=m.num_classes or None,
                generator=sde_gen,
            )
            .float()
            .cpu()
        )
    return torch.cat(out).clamp(-1, 1)


def _sample_labels(n: int, num_classes: int, class_cond=None) -> torch.Tensor | None:
    """The class labels :func:`generate` uses: None for an unconditional model; ``class_cond``
    (one class, or n of them); default classes 0, 1, 2, … in turn."""
    if not num_classes:
        if class_cond is not None:
            raise ValueError("class_cond given but the model is unconditional (num_classes=0)")
        return None
    if class_cond is None:
        return torch.arange(n) % num_classes
    classes = torch.as_tensor(class_cond, dtype=torch.long).expand(n).clone()
    if (classes < 0).any() or (classes > num_classes).any():
        raise ValueError(
            f"class_cond must be in [0, {num_classes}] ({num_classes} = unconditional); "
            f"got {classes.unique().tolist()}"
        )
    return classes


def _grid_columns(n: int, num_classes: int) -> int:
    if 0 < num_classes <= 16 and n % num_classes == 0:
        return num_classes
    return max(1, math.ceil(math.sqrt(n)))


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid (``nrow`` images per row)."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    tmp = path.with_name(f".tmp-{path.name}")
    save_image((images.float() + 1) / 2, tmp, nrow=nrow, padding=2, format="png")
    os.replace(tmp, path)
    return path


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl`` (one dict per logged step)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise ValueError(f"no metrics.jsonl in {str(run_dir)!r}: has this run logged a step yet?")
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def plot_losses(
    runs: str | Path | Sequence[str | Path] | dict[str, str | Path],
    *,
    by_sigma: bool = False,
    ax=None,
    smooth: int = 1,
):
    """Loss curves of one or several runs (a run dir, a list, or ``{label: run dir}``).

    ``by_sigma=True`` plots one run's loss per σ bin instead. ``smooth`` is a moving-average
    window in log records. Returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    if isinstance(runs, (str, Path)):
        runs = {Path(runs).name: runs}
    elif not isinstance(runs, dict):
        runs = {Path(r).name: r for r in runs}
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))

    def smoothed(values):
        v = np.asarray(values, dtype=float)
        if smooth <= 1 or len(v) < smooth:
            return v
        return np.convolve(v, np.ones(smooth) / smooth, mode="valid")

    for label, run in runs.items():
        records = read_metrics(run)
        steps = [r["step"] for r in records]
        if by_sigma:
            for name in records[0]["sigma_bins"]:
                vals = [r["sigma_bins"][name] for r in records]
                ok = [(s, v) for s, v in zip(steps, vals) if v is not None]
                if ok:
                    s, v = zip(*ok)
                    ax.plot(
                        s[smooth - 1 :] if smooth > 1 and len(v) >= smooth else s,
                        smoothed(v),
                        label=f"{label} σ∈{name}" if len(runs) > 1 else f"σ ∈ {name}",
                    )
        else:
            v = smoothed([r["loss"] for r in records])
            ax.plot(steps[len(steps) - len(v) :], v, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss" + (" per σ bin" if by_sigma else ""))
    ax.set_yscale("log")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax


# ----------------------------------------------------------------------------------------------
# Evaluation helpers and the ablation chain (Table 1 rebuilt at toy scale)
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_loss(
    denoiser: Denoiser,
    config: Config,
    dataset=None,
    *,
    n: int = 256,
    weighting: str = "soft-min-snr",
    seed: int = 0,
    batch_size: int = 128,
) -> float:
    """A held-out loss that is comparable across runs: the same ``n`` test images, the same
    stratified σ and noise for every model, one fixed ``weighting`` (so runs trained with
    different loss weightings, like ablation steps D and E, are measured alike)."""
    m = config.model
    if dataset is None:
        dataset = (
            ToyDataset("test", resolution=m.resolution)
            if config.training.dataset == "toy"
            else make_dataset(config)
        )
    device = next(denoiser.parameters()).device
    n = min(n, len(dataset))
    images, classes = dataset.batch(np.arange(n))
    g = torch.Generator().manual_seed(seed)
    sigma = sample_sigmas(config, n, stratified=True, rank=0, world_size=1, generator=g)
    noise = torch.randn(images.shape, generator=g)
    total = 0.0
    for i in range(0, n, batch_size):
        cond = {"class_cond": classes[i : i + batch_size].to(device)} if m.num_classes else {}
        losses = denoiser.loss(
            images[i : i + batch_size].to(device),
            noise[i : i + batch_size].to(device),
            sigma[i : i + batch_size].to(device),
            weighting=weighting,
            **cond,
        )
        total += losses.sum().item()
    return total / n


def ablation_config(
    step: str, profile: str, *, train_steps: int | None = None, data: str | None = None
) -> Config:
    """The config of ablation step ``step`` (Table 1: A, B1, B2, C, D, E; R1–R4; Table 2:
    E-add, E-concat) in a profile: ``"gpu"`` — the paper's ImageNet-128 settings on the image
    folder ``data``; ``"cpu"`` — :func:`toy_scale` with :data:`ABLATION_CPU_SCALE`."""
    from .configs import get_config

    config = get_config(step)
    if profile == "cpu":
        config = toy_scale(config, ABLATION_CPU_SCALE)
    elif profile == "gpu":
        if data is not None:
            config.training.dataset = data
    else:
        raise ValueError(f"unknown profile {profile!r}; allowed: cpu, gpu")
    if train_steps is not None:
        config.training.steps = train_steps
    # One budget for all: checkpoints at half-way and the end; the evaluation draws the samples.
    config.training.checkpoint_every = max(1, config.training.steps // 2)
    config.training.sample_every = 0
    return config


def _final_loss(records: list[dict], fraction: float = 0.2) -> float:
    """The mean logged training loss over the last ``fraction`` of a run's records."""
    tail = records[-max(1, int(len(records) * fraction)) :]
    return float(np.mean([r["loss"] for r in tail]))


def run_ablation(
    steps: Sequence[str],
    run_dir: str | Path,
    *,
    profile: str = "cpu",
    train_steps: int | None = None,
    data: str | None = None,
    n_eval: int = 256,
    n_ref: int = 10_000,
    sample_steps: int = 20,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train every step of ``steps`` with one budget (same data order, seed and number of
    steps), then measure each with the EMA weights: the final training loss, a held-out loss
    with one common weighting (:func:`evaluate_loss`), FID against the toy test split with
    the toy classifier's features (``profile="gpu"``: Inception against ``data``), the class
    accuracy of its samples (toy set only), parameters and GFLOPs per forward pass — at the
    trained size and for the paper's 128² model (Table 1's column). Writes
    ``run_dir/results.json`` and ``run_dir/results.md``; returns ``{"rows", "markdown"}``."""
    from . import evaluation
    from .configs import get_config
    from .flops import analytic_gflops

    run_dir = Path(run_dir)
    if profile == "gpu" and data is None:
        raise ValueError(
            "the gpu profile trains on ImageNet-128: pass data=<image folder> (--data)"
        )
    configs = {s: ablation_config(s, profile, train_steps=train_steps, data=data) for s in steps}
    if profile == "cpu":  # the toy test split's features, computed once for every FID
        reference = evaluation.extract_features(
            ToyDataset("test", resolution=32), extractor="toy", batch_size=256
        )
    else:  # Inception features of a random subset of the training folder
        reference = evaluation.extract_features(
            _random_images(ImageFolderDataset(data, 128), n_ref), extractor="inception", n=n_ref
        )
    rows = []
    for name, config in configs.items():
        t0 = time.perf_counter()
        out = run_dir / name
        resume_this = resume and out.exists()
        trainer = Trainer(
            config, out, resume=resume_this, progress=progress, sample_steps=sample_steps
        )
        trainer.fit()
        train_time = time.perf_counter() - t0
        denoiser = trainer.ema_denoiser
        images = generate(denoiser, config, n_eval, steps=sample_steps, seed=1)
        labels = _sample_labels(n_eval, config.model.num_classes)
        if profile == "cpu":
            fid = evaluation.fid(images, reference, extractor="toy")
            acc = evaluation.class_accuracy(images, labels) if labels is not None else None
        else:
            fid = evaluation.fid(images, reference, extractor="inception")
            acc = None
        rows.append(
            {
                "step": name,
                "params_M": sum(p.numel() for p in trainer.model.parameters()) / 1e6,
                "train_loss": _final_loss(read_metrics(out)),
                "eval_loss": evaluate_loss(denoiser, config),
                "fid": fid,
                "class_accuracy": acc,
                "gflops": analytic_gflops(config),
                "paper_gflops_128": analytic_gflops(get_config(name)),
                "train_time_s": train_time,
                "loss_weighting": config.diffusion.loss_weighting,
                "run_dir": str(out),
            }
        )
        if trainer.dist.world_size == 1:
            save_grid(
                images[:16],
                out / "samples" / "eval.png",
                nrow=_grid_columns(16, config.model.num_classes),
            )
    result = {
        "profile": profile,
        "train_steps": {r["step"]: configs[r["step"]].training.steps for r in rows},
        "rows": rows,
    }
    result["markdown"] = ablation_markdown(rows)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (run_dir / "results.md").write_text(result["markdown"] + "\n")
    return result


def _random_images(dataset, n: int, seed: int = 0):
    """``generate_fn(batch_size)`` over ``n`` random images of a data set (clean-fid's
    generator protocol), for reference features of a large folder."""
    order = np.random.default_rng(seed).permutation(len(dataset))[:n]
    position = 0

    def next_images(batch_size: int) -> torch.Tensor:
        nonlocal position
        indices = order[position : position + batch_size]
        position += len(indices)
        return dataset.batch(indices)[0]

    return next_images


def ablation_markdown(rows: list[dict]) -> str:
    """The ablation results as a Markdown table (Table 1's columns plus the toy metrics)."""
    head = "| step | params (M) | train loss | held-out loss | FID (toy) | class acc. | GFLOP | GFLOP@128² (paper model) |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        acc = f"{r['class_accuracy']:.3f}" if r["class_accuracy"] is not None else "–"
        lines.append(
            f"| {r['step']} | {r['params_M']:.2f} | {r['train_loss']:.4f} | {r['eval_loss']:.4f} | "
            f"{r['fid']:.2f} | {acc} | {r['gflops']:.3f} | {r['paper_gflops_128']:.1f} |"
        )
    return "\n".join(lines)
