# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Megapixel synthesis: the FFHQ-1024² model (§5.3, Table 6)
#
# The paper's headline result is a transformer that trains directly on 1024×1024 pixels —
# without latent autoencoders, multi-scale losses or self-conditioning — because its cost is
# linear in the number of pixels. This notebook holds the whole experiment:
#
# 1. the configuration of Table 6's FFHQ-1024² column and what it costs,
# 2. training cells that survive interruptions (exact resume) and scale to many GPUs with
#    `torchrun`,
# 3. sampling cells that load a checkpoint and draw 1024² faces with 50 steps of DPM++(3M) SDE.
#
# **gpu profile**: the paper's model on an FFHQ folder `DATA`. **cpu profile**: the *same
# cells* on the 32×32 toy set with a tiny model (`hdit_edu.profiles.to_toy_scale`: the same
# kinds of levels, dropout, augmentation and objective), so the notebook always runs.

# %% tags=["parameters"]
PROFILE = "auto"
DATA = "data/ffhq1024"  # gpu: FFHQ-1024 images (a folder; the 1000-image chunk folders are fine)
RUN_DIR = None  # None: runs/ffhq1024 (gpu, resumable) or a temporary folder (cpu)
TRAIN_STEPS = None  # None: Table 6's 1M (gpu) or 60 (cpu); re-run the cell to continue
BATCH_SIZE = None  # None: Table 6's 256 (global, split over the GPUs)
N_SAMPLES = None  # None: 4 (gpu, 1024² each) or 16 (cpu)
RUN_FID = False  # gpu: FID of 50k samples against clean-fid's FFHQ-1024 statistics (hours)
SAMPLE_RUN = None  # sample from this run dir instead of RUN_DIR (e.g. `hdit-edu convert
#                    from-k-diffusion` of the authors' checkpoint); relative: to the repository
GPU_MEMORY_GIB = None  # gpu: None = the device's memory; the planner fits the batch into it

# %%
from hdit_edu.env import resolve_profile

PROFILE = resolve_profile(PROFILE)
print(f"profile: {PROFILE}")

# %%
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import hdit_edu
from hdit_edu.checkpoints import list_checkpoints
from hdit_edu.configs import sampling_sigma_range, token_grids
from hdit_edu.flops import TABLE6, analytic_breakdown, analytic_gflops, analytic_params
from hdit_edu.planner import plan
from hdit_edu.presets import paper_config
from hdit_edu.profiles import for_profile
from hdit_edu.runs import load_run, read_metrics
from hdit_edu.sampling import generate, karras_sigmas, sample, sample_labels
from hdit_edu.toy import TOY_CLASSES
from hdit_edu.training import Trainer
from hdit_edu.viz import plot_losses, show_images
from hdit_edu.widgets import SHIPPED_RUN, LiveTrainingView

if PROFILE == "cpu":
    torch.set_num_threads(1)  # tiny models on 2 shared cores: no oversubscription stalls
# Relative paths name places in the repository (as the command line, run from its root, does),
# wherever the notebook's kernel was started.
REPO_ROOT = Path(hdit_edu.__file__).resolve().parents[1]


def from_repo(path):
    return None if path is None else REPO_ROOT / Path(path)  # an absolute path stays as it is


def show(images, nrow, title=None, size=8, column_labels=None):
    """Images (N, 3, H, W) in [-1, 1] as one grid ``size`` inches wide, its columns named by
    ``column_labels``."""
    columns = min(nrow, len(images))
    rows = -(-len(images) // columns)
    height, width = images.shape[-2:]
    fig, ax = plt.subplots(figsize=(size, size * rows * height / (columns * width)))
    show_images(ax, images, nrow=nrow, title=title, column_labels=column_labels, padding=2)
    plt.show()


# %% [markdown]
# ## 1. The configuration (Table 6, "FFHQ-1024²")
#
# Patch 4 turns 1024² pixels into a 256×256 grid of tokens. Five levels of depth 2 halve it
# four times: **neighborhood attention** (7×7) on the 256², 128² and 64² grids, **global
# attention** on 32² and 16². Widths 128 → 1024, dropout 0.1 only in the innermost level,
# unconditional, non-leaking augmentation with p = 0.12, mapping network of depth 2.

# %%
paper = paper_config("ffhq1024")
grids = token_grids(paper.model)
for level, grid in zip(paper.model.levels, grids):
    print(f"{grid[0]:4d}×{grid[1]:<4d} tokens  depth {level.depth}  width {level.width:5d}  "
          f"{level.attention:13s} heads {level.width // level.head_dim:2d}  dropout {level.dropout}")  # fmt: skip
params, gflops = analytic_params(paper), analytic_gflops(paper)
print(f"\n{params / 1e6:.1f}M parameters (Table 6: 85M), {gflops:.0f} GFLOP/forward (Table 6: 206)")

by_level = {k: v for k, v in analytic_breakdown(paper, by="level").items() if k is not None}
plt.figure(figsize=(6, 3))
plt.bar([f"{g[0]}²" for g in grids], [by_level[i] for i in range(len(grids))])
plt.ylabel("GFLOP / forward")
plt.title("cost per level: the big local grids are cheap")
plt.show()

# %%
assert [g[0] for g in grids] == [256, 128, 64, 32, 16]
assert [lv.attention for lv in paper.model.levels] == ["neighborhood"] * 3 + ["global"] * 2
assert abs(params - TABLE6["ffhq1024"]["params"]) / TABLE6["ffhq1024"]["params"] < 0.01
assert abs(gflops - TABLE6["ffhq1024"]["gflops"]) / TABLE6["ffhq1024"]["gflops"] < 0.01
t = paper.training
assert (t.lr, t.betas, t.weight_decay, t.ema_decay, t.batch_size) == (
    5e-4,
    (0.9, 0.95),
    1e-2,
    0.9999,
    256,
)
assert paper.model.num_classes == 0 and t.augment_p == 0.12 and t.steps == 1_000_000

# %% [markdown]
# ### What the run costs on real hardware: `hdit-edu plan`
#
# Arithmetic, so it runs in every profile. `plan` fits Table 6's batch of 256 into the GPUs'
# memory (micro-batch × accumulation × checkpointing) and gives the days **as a range**: the
# utilisation is calibrated on the paper's own two runs (App. E: ImageNet-128 in 15 hours on
# 4 A100 ≈ 29 % MFU; this model in 5 days on 64 A100 ≈ 3.7 %), and another GPU is faster by
# somewhere between its memory-bandwidth ratio and its bf16-peak ratio. Each line names the
# assumption beside its number; the last says whether the measured data loader keeps up.

# %%
from hdit_edu.planner import format_plan
from hdit_edu.planner.time_model import paper_mfu

paper_gpus = plan(paper, gpus=64, gpu_memory_GiB=80, gpu="A100")  # the paper's hardware
print(format_plan(paper_gpus), end="\n\n")
h100s = plan(paper, gpus=8, gpu_memory_GiB=80, gpu="H100")  # one 8-GPU node
print(format_plan(h100s))
print(f"\nimplied MFU of the paper's runs: ImageNet-128 {paper_mfu('imagenet128'):.1%}, "
      f"FFHQ-1024 {paper_mfu('ffhq1024'):.2%}")  # fmt: skip

# %%
assert paper_gpus.days[0] < 5 < paper_gpus.days[1]  # the reported 5 days are inside the range
assert h100s.days[0] > 5  # 8 H100 have fewer FLOP/s than 64 A100: longer than the paper's run
assert paper_mfu("ffhq1024") < paper_mfu("imagenet128") / 5  # 1024² runs far below 128²
assert h100s.micro_batch * h100s.grad_accum * 8 == 256

# %% [markdown]
# ## 2. The profile's configuration
#
# The cpu profile keeps what defines the experiment — unconditional, augmentation p = 0.12
# (with its conditioning vector), dropout in the inner level, soft-min-SNR, the interpolated
# cosine σ density, Table 6's optimiser — and shrinks the rest onto the toy set.

# %%
config = for_profile(paper, PROFILE)
if PROFILE == "gpu":
    config.training.dataset = str(from_repo(DATA))
    TRAIN_STEPS = TRAIN_STEPS or config.training.steps
    N_SAMPLES = N_SAMPLES or 4
    RUN_DIR = from_repo(RUN_DIR or "runs/ffhq1024")
    SAMPLE_STEPS, WORKERS = 50, 8
else:
    TRAIN_STEPS = TRAIN_STEPS or 60
    N_SAMPLES = N_SAMPLES or 16
    if RUN_DIR is None:  # a temporary folder, removed when the kernel stops
        temporary_run = tempfile.TemporaryDirectory(prefix="hdit-ffhq-")
        RUN_DIR = temporary_run.name
    RUN_DIR = Path(RUN_DIR)
    SAMPLE_STEPS, WORKERS = 15, 0
    config.training.checkpoint_every = config.training.sample_every = TRAIN_STEPS // 2
if BATCH_SIZE:
    config.training.batch_size = BATCH_SIZE
if PROFILE == "gpu":  # never out of memory by default: the planner splits the batch to fit
    memory = GPU_MEMORY_GIB or torch.cuda.get_device_properties(0).total_memory / 2**30
    gpu_plan = plan(config, gpus=1, gpu_memory_GiB=memory)  # this process: one GPU
    config.training.grad_accum = gpu_plan.grad_accum
    config.training.checkpointing = gpu_plan.checkpointing
    print(gpu_plan.table())  # the predicted time of the run, before it starts
m = config.model
print(f"{config.name} ({PROFILE}): {m.resolution}² pixels, levels "
      f"{[(lv.depth, lv.width, lv.attention) for lv in m.levels]}, batch {config.training.batch_size}, "
      f"augmentation p = {config.training.augment_p}, run dir {RUN_DIR}")  # fmt: skip

# %%
assert m.num_classes == 0 and config.training.augment_p == paper.training.augment_p
assert m.levels[-1].dropout == 0.1 and m.aug_dim == paper.model.aug_dim
assert config.diffusion == paper.diffusion or PROFILE == "cpu"
assert config.diffusion.loss_weighting == "soft-min-snr"

# %% [markdown]
# ## 3. Training (resume-safe)
#
# The cell below continues the run in `RUN_DIR` if it has checkpoints (`resume=True`) and
# starts it otherwise, so it can be re-run after any interruption — a closed laptop, a
# pre-empted GPU, a `kill -9`. Checkpoints (`RUN_DIR/checkpoints/step-*`: safetensors weights +
# a `weights_only` trainer state) are written atomically; the newest `keep_checkpoints` stay.
#
# **One notebook process uses one GPU.** Table 6's run used 64 A100s (batch 256 = 4 per GPU);
# on one GPU the planner (above: `hdit_edu.planner.plan`, `hdit-edu plan`) keeps the global
# batch of 256 and splits it into micro-batches that fit (gradient accumulation, activation
# checkpointing when needed), so the recipe stays Table 6's. The same training from a terminal,
# with DDP over all GPUs (rank 0 writes the run dir; `hdit-edu plan --gpus 8` gives the flags):
#
# ```bash
# # one machine, 8 GPUs
# torchrun --standalone --nproc_per_node 8 -m hdit_edu.cli train \
#     --config ffhq1024 --data /data/ffhq1024 --run-dir runs/ffhq1024 --workers 8 --resume
# # 8 machines × 8 GPUs (run on every machine; HOST = the first machine)
# torchrun --nnodes 8 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
#     --rdzv-id ffhq1024 -m hdit_edu.cli train --config ffhq1024 --data /data/ffhq1024 \
#     --run-dir /shared/runs/ffhq1024 --workers 8 --resume
# ```
#
# The loss curves and sample grids below read the same run dir, wherever it was trained.
#
# While it trains, the cell shows a **live view** (`hdit_edu.widgets.LiveTrainingView`): a
# progress bar, the loss curve and the newest EMA sample grid, redrawn every few logged steps.
# It is one argument, `trainer.fit(steps, callback=LiveTrainingView())`: the trainer hands it
# each `metrics.jsonl` record and each `samples/` grid as it writes them, so the view shows the
# run's own numbers. When the cell ends, the view is replaced by a still picture of the end state.

# %%
trainer = Trainer(
    config,
    RUN_DIR,
    resume=True,
    num_workers=WORKERS,
    sample_steps=SAMPLE_STEPS,
    n_samples=8,
    progress=False,  # the live view has the progress bar
)
view = LiveTrainingView(every=10 if PROFILE == "cpu" else 1000, title=f"{config.name}, {PROFILE}")
summary = trainer.fit(TRAIN_STEPS, callback=view)
print(f"step {summary['final_step']}: {summary['steps']} steps in {summary['time_s']:.0f} s")

# %%
records = read_metrics(RUN_DIR)
assert records[-1]["step"] == trainer.step == TRAIN_STEPS
this_call = records[len(records) - len(view.steps) :]  # the view saw this cell's records
assert view.steps == [r["step"] for r in this_call]
assert view.losses == [r["loss"] for r in this_call]
assert summary["steps"] == 0 or view.grid_step == TRAIN_STEPS  # the final grid is in the view
assert list_checkpoints(RUN_DIR)[-1].name == f"step-{TRAIN_STEPS:08d}"
assert (RUN_DIR / "config.json").exists()

# %% [markdown]
# ### Loss curves
#
# The total loss (left) mixes very different noise levels; split by σ (right), each band is a
# different task — from removing faint grain (σ ≈ 0.01) to inventing the face (σ ≈ 100).
# `metrics.jsonl` holds both.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
plot_losses(RUN_DIR, ax=axes[0])
plot_losses(RUN_DIR, by_sigma=True, ax=axes[1])
plt.tight_layout()
plt.show()

# %%
losses = [r["loss"] for r in records]
assert min(losses[len(losses) // 2 :]) < losses[0]  # the loss went down

# %% [markdown]
# ### Exact resume, demonstrated
#
# Every random draw of a step is a pure function of (seed, step, rank) and the data order a
# pure function of the step, so stopping and resuming changes nothing. Here with a tiny copy
# of the configuration on the CPU: one run of 8 steps, and one stopped after 4 and resumed.

# %%
demo = for_profile(paper, "cpu")
demo.training.batch_size, demo.training.checkpoint_every, demo.training.log_every = 8, 4, 1
with tempfile.TemporaryDirectory() as tmp:
    straight = Trainer(demo, Path(tmp, "a"), device="cpu", progress=False).fit(8)["losses"]
    Trainer(demo, Path(tmp, "b"), device="cpu", progress=False).fit(4)
    resumed = Trainer(demo, Path(tmp, "b"), device="cpu", progress=False, resume=True)
    print(f"resumed at step {resumed.step}")
    continued = resumed.fit(8)["losses"]
print("uninterrupted:", [f"{x:.6f}" for x in straight[4:]])
print("resumed:      ", [f"{x:.6f}" for x in continued])

# %%
assert continued == straight[4:]  # bit for bit

# %% [markdown]
# ## 4. Sampling from a checkpoint
#
# `load_run` reads `config.json` and the EMA weights of the newest checkpoint; `generate` draws
# samples with Table 6's sampler, 50 steps of DPM++(3M) SDE on the Karras schedule (no
# guidance: the FFHQ model is unconditional).
#
# **cpu profile:** the 60 steps above only show the machinery; a model that young samples pure
# noise. So here the same cells sample a real model instead: the shipped toy HDiT
# (`data/checkpoints/toy-hdit`, 32², trained on the toy set; its README says how), the largest
# model this repository ships trained weights for. Set `SAMPLE_RUN` to sample any other run. The cell prints the time each sample took here; the
# repository holds no timing of a 1024² sample on a GPU yet.

# %%
# Needs no cell above but the imports: set SAMPLE_RUN to sample a run trained elsewhere.
device = "cuda" if torch.cuda.is_available() else "cpu"
if SAMPLE_RUN is None and PROFILE == "cpu":
    SAMPLE_RUN = SHIPPED_RUN  # a trained model: the 60-step run above only samples noise
sample_run = from_repo(SAMPLE_RUN) or RUN_DIR
run_config, denoiser = load_run(sample_run, device=device)
# a class-conditional model (the toy one): classes 0, 1, 2, … in turn, no guidance
classes = sample_labels(N_SAMPLES, run_config.model.num_classes)  # None: unconditional
cond = {"class_cond": classes} if classes is not None else {}
step_name = list_checkpoints(sample_run)[-1].name
batch = 2 if PROFILE == "gpu" else 16
sample_start = time.perf_counter()
images = generate(
    denoiser, run_config, N_SAMPLES, steps=SAMPLE_STEPS, seed=0, batch_size=batch, **cond
)
sample_s = (time.perf_counter() - sample_start) / N_SAMPLES
print(f"{N_SAMPLES} samples at {run_config.model.resolution}² on {device}: {sample_s:.2f} s each")
title = f"EMA samples of {sample_run.name}, {step_name}"
column_labels = None
if cond:  # name the class of every column: the classes go in turn, 8 to a row
    names = TOY_CLASSES if len(TOY_CLASSES) == run_config.model.num_classes else None
    column_labels = [names[c] if names else str(c) for c in classes[:8].tolist()]
    title += ", one class per column" if N_SAMPLES % 8 == 0 else ""
show(images, nrow=8 if cond else (4 if PROFILE == "cpu" else 2), title=title,
     column_labels=column_labels)  # fmt: skip
if PROFILE == "gpu":  # the detail the paper asks to zoom into: a 256² crop at full resolution
    show(images[:1, :, 384:640, 384:640], nrow=1, title="256² crop, 1:1", size=5)

# %%
res = run_config.model.resolution
assert images.shape == (N_SAMPLES, 3, res, res)
assert torch.isfinite(images).all() and images.abs().max() <= 1

# %% [markdown]
# ### A denoising trajectory
#
# The sampler's callback sees the denoiser's estimate of the clean image at every step: the
# global layout (where the face is) is decided at high σ, details at low σ.

# %%
sigmas = karras_sigmas(SAMPLE_STEPS, *sampling_sigma_range(run_config), device=device)
x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(1)).to(device) * sigmas[0]
snapshots = {}
keep = {0, SAMPLE_STEPS // 4, SAMPLE_STEPS // 2, 3 * SAMPLE_STEPS // 4, SAMPLE_STEPS - 1}
with torch.no_grad():
    first = {k: v[:1] for k, v in cond.items()}  # the first sample's class
    final = sample(denoiser, x, sigmas, "dpmpp_3m_sde", generator=1, **first,
                   callback=lambda d: snapshots.update({d["i"]: (d["sigma"], d["denoised"].cpu())})
                   if d["i"] in keep else None)  # fmt: skip
fig, axes = plt.subplots(1, len(keep), figsize=(3 * len(keep), 3.2))
for ax, i in zip(axes, sorted(keep)):
    sigma, d = snapshots[i]
    ax.imshow(((d[0].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy())
    ax.set_title(f"step {i}, σ = {float(sigma):.3g}")
    ax.axis("off")
plt.tight_layout()
plt.show()

# %%
assert sorted(snapshots) == sorted(keep)
levels = [float(snapshots[i][0]) for i in sorted(keep)]
assert all(a > b for a, b in zip(levels, levels[1:]))  # σ falls along the trajectory
assert torch.isfinite(final).all()

# %% [markdown]
# ## 5. FID
#
# The paper reports FID on 50k samples against FFHQ-1024 (Table 3). clean-fid ships the FFHQ
# reference statistics; `hdit_edu.evaluation` wraps it (Inception, a download; `mode=
# evaluation.PAPER_FID_MODE`, i.e. "legacy_tensorflow": the ADM evaluator's TF Inception resize,
# the protocol of the paper's numbers). In the cpu profile the same call
# runs offline with the toy classifier's features against the toy test split.

# %%
from hdit_edu import evaluation
from hdit_edu.toy import ToyDataset

if PROFILE == "gpu" and RUN_FID:
    reference = evaluation.ReferenceStats("ffhq", 1024, "trainval70k")

    def generate_fn(batch_size):
        return generate(
            denoiser, run_config, batch_size, steps=50, seed=int(torch.randint(1 << 30, ()))
        )

    score = evaluation.fid(
        generate_fn,
        reference,
        extractor="inception",
        mode=evaluation.PAPER_FID_MODE,  # the ADM evaluator's protocol: comparable with Table 3
        n=50_000,
        batch_size=8,
    )
elif PROFILE == "cpu":
    score = evaluation.fid(images, ToyDataset("test", resolution=res, size=512), extractor="toy")
else:
    score = None
print("FID:", score)

# %%
assert score is None or score > 0


# %% [markdown]
# ## Exercises
#
# Predict first, then compute your answer in the answer cell (replace the `...`); `check` says
# whether it is right and, if not, what to look at. The collapsed solution runs with the
# notebook and passes the same check.
#
# **1. How often does Table 6's run see each face?** FFHQ has 70,000 images; the run takes
# 1M steps at a global batch of 256. Predict the number of passes over the data set (epochs),
# then compute it from `paper.training`.

# %% tags=["exercise"]
from hdit_edu.exercises import check, passes

ffhq_epochs = ...  # your answer
check("07.1", ffhq_epochs)

# %% jupyter={"source_hidden": true} tags=["solution"]
ffhq_images = 70_000
epochs = paper.training.steps * paper.training.batch_size / ffhq_images
print(f"{epochs:,.0f} passes over FFHQ: each face is seen about {epochs:,.0f} times")
# so much repetition is why the run uses non-leaking augmentation (p = 0.12, §5.3) against
# memorisation
assert passes("07.1", epochs) and paper.training.augment_p > 0

# %% [markdown]
# **2. A size the model refuses.** The patch size and the four 2× merges mean every side must be
# a multiple of some number. Predict it, then ask `check_grids` about a 1000×1000 image and read
# the error; find the nearest sizes that work.

# %% tags=["exercise"]
side_multiple = ...  # your answer
check("07.2", side_multiple)

# %% jupyter={"source_hidden": true} tags=["solution"]
from hdit_edu.configs import check_grids

multiple = paper.model.patch_size * 2 ** (len(paper.model.levels) - 1)
try:
    check_grids(paper.model, 1000)
    raise AssertionError("1000×1000 should have been refused")
except ValueError as error:
    print(error)
    assert f"multiples of {multiple}" in str(error)
assert passes("07.2", multiple)
for side in (960, 1024):  # the multiples of 64 around 1000
    print(side, "→ token grids", [g[0] for g in check_grids(paper.model, side)])

# %% [markdown]
# **3. Interrupt anywhere.** Section 3 stopped the 8-step run after step 4. Predict what changes
# if it stops after step 3 instead, and twice (after steps 2 and 5), then check it with the
# same tiny configuration `demo`.

# %% tags=["exercise"]
resumed_losses = ...  # your answer: the losses of steps 6-8 after stopping at 2 and at 5
check("07.3", resumed_losses, straight=straight)

# %% jupyter={"source_hidden": true} tags=["solution"]
with tempfile.TemporaryDirectory() as tmp:
    for stop in (2, 5):
        Trainer(demo, Path(tmp), device="cpu", progress=False, resume=True).fit(stop)
    rest = Trainer(demo, Path(tmp), device="cpu", progress=False, resume=True).fit(8)["losses"]
print("resumed at 2 and 5:", [f"{x:.6f}" for x in rest])
assert passes("07.3", rest, straight=straight)  # every draw is a function of (seed, step, rank)
