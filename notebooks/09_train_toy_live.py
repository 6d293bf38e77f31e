# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 — Train a toy HDiT and watch it learn (§5.1, Table 6's recipe)
#
# Notebook 08 sampled from the model that ships with the repository. This notebook trains one
# like it, with the command of its README (`data/checkpoints/toy-hdit/README.md`) written as
# notebook cells:
#
# ```bash
# hdit-edu train --config toy --profile cpu --set model.patch_size=4 --steps 25000 ...
# ```
#
# While it trains, a **live view** shows the loss curve and the EMA model's samples: they start
# as noise, become blobs of the right colours, then shapes, and after a few thousand steps
# shapes of the class they were asked for. At the end the **toy classifier** measures how many
# samples are recognisably their class (chance: 1 in 8).
#
# **cpu profile**: a few minutes of training on one core (the shipped model trained 25,000
# steps in 37 minutes). **gpu profile**: the README's whole run.
#
# Library code used: `hdit_edu.training.Trainer`, `hdit_edu.widgets.LiveTrainingView` (the
# live view), `hdit_edu.measure.sample_accuracy`, `hdit_edu.presets`, `hdit_edu.configs`,
# `hdit_edu.profiles.for_profile`, `hdit_edu.runs.read_metrics`.

# %% tags=["parameters"]
PROFILE = "auto"
RUN_DIR = None  # None: a temporary folder, deleted with the kernel
TRAIN_STEPS = None  # None: 2,500 (cpu) or the README's 25,000 (gpu)
LR = None  # None: 1e-3 (cpu: a short run learns faster with it) or the README's 5e-4 (gpu)
CFG_SCALE = 4.5  # the guidance scale w of the final measurement (App. D)
N_EVAL = 256  # samples of the final measurement

# %%
from hdit_edu.env import resolve_profile

PROFILE = resolve_profile(PROFILE)
print(f"profile: {PROFILE}")

# %%
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from hdit_edu.configs import load_config
from hdit_edu.measure import sample_accuracy
from hdit_edu.models import build_model
from hdit_edu.presets import get_config, paper_config
from hdit_edu.profiles import for_profile
from hdit_edu.runs import read_metrics
from hdit_edu.toy import TOY_CLASSES, predict_classes
from hdit_edu.training import EMAWarmup, Trainer
from hdit_edu.viz import show_images
from hdit_edu.widgets import SHIPPED_RUN, LiveTrainingView

if PROFILE == "cpu":
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and CI runs two notebooks

# %% [markdown]
# ## 1. The README's command, as a config
#
# `--config toy --profile cpu` is `for_profile(get_config("toy"), "cpu")`: the toy HDiT at the
# cpu profile's sizes (two levels: neighborhood attention 7×7 on the outer one, global on the
# inner one; GEGLU, axial RoPE, lerp skips, 8 classes + the dropped class for guidance) with
# Table 6's objective and optimiser. `--set model.patch_size=4` makes its token grids 8×8 and
# 4×4. The cell checks that this is the model that ships.

# %%
config = for_profile(get_config("toy"), "cpu")
config.model.patch_size = 4
shipped = load_config(SHIPPED_RUN / "config.json")
assert config.model == shipped.model and config.diffusion == shipped.diffusion
assert config.training.batch_size == shipped.training.batch_size == 16

if PROFILE == "gpu":
    TRAIN_STEPS, LR = TRAIN_STEPS or shipped.training.steps, LR or shipped.training.lr
else:
    TRAIN_STEPS, LR = TRAIN_STEPS or 2500, LR or 1e-3
t = config.training
t.lr, t.steps = LR, TRAIN_STEPS
t.sample_every = max(TRAIN_STEPS // 10, 1)  # 10 sample grids over the run
t.checkpoint_every = TRAIN_STEPS  # one checkpoint, at the end
if RUN_DIR is None:  # a temporary folder, removed when the kernel stops
    temporary_run = tempfile.TemporaryDirectory(prefix="hdit-toy-live-")
    RUN_DIR = temporary_run.name
RUN_DIR = Path(RUN_DIR)
params = sum(p.numel() for p in build_model(config).parameters())
print(f"{params / 1e6:.2f}M parameters, batch {t.batch_size}, lr {t.lr:g}, {TRAIN_STEPS} steps")
print(f"samples every {t.sample_every} steps, run dir {RUN_DIR}")

# %% [markdown]
# ## 2. Training, live
#
# `trainer.fit(steps, callback=LiveTrainingView())` trains and shows the view: a progress bar,
# the loss of every logged step (`metrics.jsonl`) and the newest sample grid (16 EMA samples,
# one class per column: face, ring, plus, cross, triangle, diamond, pair, quad). The view is
# fed by the trainer as it writes its logs, so watching costs the training nothing.
#
# The first cell trains a tenth of the run: watch the first grids — noise, then colour blobs.

# %%
trainer = Trainer(config, RUN_DIR, progress=False, sample_steps=20, n_samples=16)
start = trainer.fit(TRAIN_STEPS // 10, callback=LiveTrainingView(every=50, title="the start"))
print(f"{start['steps']} steps in {start['time_s']:.0f} s")

# %% [markdown]
# `fit` continues from where it stopped: the next cell trains to the middle of the run (a new
# view, the same run), shapes appear...

# %%
middle = trainer.fit(TRAIN_STEPS // 2, callback=LiveTrainingView(every=100, title="the middle"))
print(f"{middle['steps']} steps in {middle['time_s']:.0f} s; loss {middle['loss_last']:.4f}")

# %% [markdown]
# ... and the last cell trains to the end, where the shapes start to follow the class asked for.
# (Re-run it with a larger `TRAIN_STEPS` to train longer.)

# %%
view = LiveTrainingView(every=100, title="the end")
end = trainer.fit(TRAIN_STEPS, callback=view)
print(f"{end['steps']} steps in {end['time_s']:.0f} s; loss {end['loss_last']:.4f}")
train_seconds = start["time_s"] + middle["time_s"] + end["time_s"]

# %%
records = read_metrics(RUN_DIR)
assert records[-1]["step"] == trainer.step == TRAIN_STEPS
n_view = len(view.steps)
assert view.steps == [r["step"] for r in records[-n_view:]]  # the view shows metrics.jsonl
assert view.losses == [r["loss"] for r in records[-n_view:]]
assert view.grid_step == TRAIN_STEPS - TRAIN_STEPS % t.sample_every  # the newest grid
assert view.grid.shape == (2 * 34 + 2, 8 * 34 + 2, 3)  # 2 rows × 8 classes of 32² + padding
losses = [r["loss"] for r in records]
assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])  # the loss fell

# %% [markdown]
# ### The whole run, and what its length can show
#
# The three views each showed one segment. Below: the run's loss from `metrics.jsonl`, first step
# to last, with the segment boundaries dotted, next to the shipped model's run (the same data and
# objective, 25,000 steps; `data/checkpoints/toy-hdit/metrics.jsonl`). Each log line is the loss
# of one batch, so both are smoothed with a running median.


# %%
def running_median(values, window=25):
    v = np.asarray(values, dtype=float)
    return np.array([np.median(v[max(0, i - window + 1) : i + 1]) for i in range(len(v))])


shipped_records = read_metrics(SHIPPED_RUN)
s_steps = np.array([r["step"] for r in shipped_records])
s_loss = running_median([r["loss"] for r in shipped_records])
r_steps = np.array([r["step"] for r in records])
r_loss = running_median(losses)
fig, ax = plt.subplots(figsize=(9, 3.4))
ax.plot(s_steps, s_loss, color="C7", label=f"shipped model ({s_steps[-1]:,} steps)")
ax.plot(r_steps, r_loss, color="C0", label=f"this run ({TRAIN_STEPS:,} steps)")
for boundary in (TRAIN_STEPS // 10, TRAIN_STEPS // 2):
    ax.axvline(boundary, color="C0", ls=":", lw=1)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("step")
ax.set_ylabel("training loss (running median)")
ax.legend(loc="lower left")
ax.grid(alpha=0.3)
plt.show()
end_here = float(np.median(losses[-max(1, len(losses) // 10) :]))
shipped_here = float(np.median([r["loss"] for r in shipped_records if r["step"] <= TRAIN_STEPS][-25:]))
shipped_end = float(np.median([r["loss"] for r in shipped_records][-250:]))
print(f"loss at the end of this run {end_here:.4f}; the shipped run at step {TRAIN_STEPS:,}: "
      f"{shipped_here:.4f}; at its end ({s_steps[-1]:,}): {shipped_end:.4f} "
      f"({shipped_here / shipped_end:.2f}× lower still)")  # fmt: skip

# %% [markdown]
# **What a run this short can and cannot show.** It shows the mechanics (the loss falling fastest
# in the first few hundred steps, as in the shipped run), the shapes forming out of noise
# (section 3) and a class signal well above chance (section 4). It cannot show where training
# ends up: at this step the shipped run's loss was still well above where it settled (the printed
# factor), its samples (section 4's reference) are far cleaner than these, and differences
# between configurations smaller than the seed-to-seed noise need full-length runs with seeds
# (notebook 06). The cpu profile trains 2,500 steps, a tenth of the shipped run; the gpu profile
# trains all 25,000.

# %% [markdown]
# **What the EMA reached.** The samples come from the EMA of the weights, whose decay warms up
# with the number of updates (`hdit_edu.training.EMAWarmup`); 1/(1 − decay) is roughly how many
# recent steps it averages. The logs record the decay; the schedule says what a paper-length run
# would reach.

# %%
paper_t = paper_config("ffhq1024").training
ema = {
    f"this run, step {TRAIN_STEPS:,}": records[-1]["ema_decay"],
    f"shipped run, step {s_steps[-1]:,}": shipped_records[-1]["ema_decay"],
    f"a paper-length run (Table 6), step {paper_t.steps:,}": EMAWarmup(
        max_decay=paper_t.ema_decay, power=paper_t.ema_power
    ).decay(paper_t.steps - 1),
}
for name, decay in ema.items():
    print(f"{name:<42} EMA decay {decay:.6f}: averages ~{1 / (1 - decay):,.0f} steps")

# %%
if TRAIN_STEPS < s_steps[-1]:
    assert shipped_here > 1.2 * shipped_end  # "still well above where it settled"
# the logged decay is the schedule's, at the last update
schedule = EMAWarmup(max_decay=t.ema_decay, power=t.ema_power)
assert records[-1]["ema_decay"] == schedule.decay(TRAIN_STEPS - 1)
# the EMA of a short run averages over a small part of it; a paper-length run reaches its cap
assert 1 / (1 - records[-1]["ema_decay"]) < TRAIN_STEPS
assert list(ema.values())[-1] == paper_t.ema_decay

# %% [markdown]
# ## 3. From noise to shapes
#
# Every grid the run wrote (`RUN_DIR/samples/step-*.png`) has the same start noise (the sample
# seed is fixed), so the first row of each — one sample per class — shows the *same* samples
# getting better as the training goes on.

# %%
grids = sorted((RUN_DIR / "samples").glob("step-*.png"))
rows = [np.asarray(Image.open(p).convert("RGB"))[: 34 + 2] for p in grids]  # the first row
fig, axes = plt.subplots(len(rows), 1, figsize=(7, 0.95 * len(rows)))
for ax, path, row in zip(axes, grids, rows):
    show_images(ax, row, column_labels=TOY_CLASSES)  # the class names under the last row
    ax.set_ylabel(f"{int(path.stem[5:]):,}", rotation=0, ha="right", va="center")
    if ax is not axes[-1]:
        ax.set_xticks([])
axes[0].set_title("EMA samples, one class per column (rows: training step)")
plt.tight_layout()
plt.show()

# %%
assert [int(p.stem[5:]) for p in grids] == list(
    range(t.sample_every, TRAIN_STEPS + 1, t.sample_every)
)

# %% [markdown]
# ## 4. Are the samples their class?
#
# `sample_accuracy` draws `N_EVAL` samples, the classes in turn, with the paper's sampler (50
# steps of DPM++(3M) SDE) and classifier-free guidance w = `CFG_SCALE`, and asks the toy
# classifier (100 % accurate on real toy images, `data/README.md`) which class each one is. A
# model that ignored the class would score 1/8 = 12.5 %. The shipped model, trained 25,000 steps
# at lr 5e-4, is the reference (its `cfg_sweep.json`: 1,000 samples per w).

# %%
final = sample_accuracy(trainer.ema_denoiser, config, N_EVAL, cfg_scale=CFG_SCALE, seed=0)
chance = 1 / len(TOY_CLASSES)
print(f"class accuracy after {TRAIN_STEPS:,} steps ({train_seconds:.0f} s of training): "
      f"{final.class_accuracy:.1%} (chance {chance:.1%}); sampling took {final.seconds:.0f} s")  # fmt: skip
sweep = json.loads((SHIPPED_RUN / "cfg_sweep.json").read_text())
print(f"the shipped model ({shipped.training.steps:,} steps):", ", ".join(
    f"w = {w:g}: {a:.1%}" for w, a in zip(sweep["scales"], sweep["class_accuracy"])))  # fmt: skip
fig, ax = plt.subplots(figsize=(9, 2.6))
show_images(
    ax,
    np.asarray(Image.open(grids[-1]).convert("RGB")),
    title=f"step {TRAIN_STEPS:,}: 16 samples, one class per column (no guidance)",
    column_labels=TOY_CLASSES,
)
plt.show()

# %%
# Well above chance: a model that ignored the class would score 12.5 % ± 2.1 % (binomial, 256
# samples), 20 % or more with a probability of 3·10⁻⁴. Measured on the cpu profile (2,500 steps,
# w = 4.5, one thread): 31.2 % (16.4 % without guidance); 31.6 % after 3,000 steps; 27–34 % in
# calibration runs at 2,000–3,000 steps (w = 4.5, 128 samples each).
assert final.class_accuracy >= 0.2, final.class_accuracy

# %% [markdown]
# ## Exercises
#
# Predict first, then compute your answer in the answer cell (replace the `...`); `check` says
# whether it is right and, if not, what to look at. The collapsed solution runs with the
# notebook and passes the same check.
#
# **1. Which classes come first?** Predict which of the eight shapes the young model draws best
# (big solid shapes? the ones made of discs?), then split the accuracy of section 4 by class.

# %% tags=["exercise"]
from hdit_edu.exercises import check, passes

accuracy_per_class = ...  # your answer: a list of 8 accuracies, class 0 first
check("09.1", accuracy_per_class, images=final.images, labels=final.labels)

# %% jupyter={"source_hidden": true} tags=["solution"]
predicted = predict_classes(final.images)
per_class = [(predicted[final.labels == c] == c).float().mean().item() for c in range(8)]
for name, accuracy in sorted(zip(TOY_CLASSES, per_class), key=lambda x: -x[1]):
    print(f"{name:9s} {accuracy:6.1%}")
# the mean over the (equally many) samples of each class is the overall accuracy
assert abs(np.mean(per_class) - final.class_accuracy) < 1e-6
assert passes("09.1", per_class, images=final.images, labels=final.labels)

# %% [markdown]
# **2. How much of the data did it see?** The toy training set holds 16,384 images. Predict how
# many passes over it (epochs) the run made, from the batch size and the steps. Then count the
# images in `metrics.jsonl`: every image of a step draws one σ, and each log line counts the
# draws per σ band (`sigma_bin_counts`).

# %% tags=["exercise"]
my_images_seen, my_epochs = ..., ...  # your answer
check("09.2", (my_images_seen, my_epochs), records=records, batch_size=t.batch_size,
      steps=TRAIN_STEPS)  # fmt: skip

# %% jupyter={"source_hidden": true} tags=["solution"]
from hdit_edu.toy import TOY_SIZES

images_seen = TRAIN_STEPS * t.batch_size
epochs = images_seen / TOY_SIZES["train"]
print(f"{images_seen:,} images = {epochs:.2f} passes over the training set")
logged = sum(sum(r["sigma_bin_counts"].values()) for r in records)
assert passes("09.2", (logged, epochs), records=records, batch_size=t.batch_size, steps=TRAIN_STEPS)

# %% [markdown]
# **3. Guidance on a young model.** Section 4 measured with w = `CFG_SCALE`. Predict the
# accuracy without guidance (w = 1): higher, lower or the same? Measure it with the same
# start noise (seed) and classes.

# %% tags=["exercise"]
unguided_run = ...  # your answer: sample_accuracy(...) of the same model with w = 1
check("09.3", unguided_run, guided=final)

# %% jupyter={"source_hidden": true} tags=["solution"]
unguided = sample_accuracy(trainer.ema_denoiser, config, N_EVAL, cfg_scale=1.0, seed=0)
print(f"w = 1: {unguided.class_accuracy:.1%}   w = {CFG_SCALE:g}: {final.class_accuracy:.1%}")
# guidance pushes each sample towards its class (D_c − D_u, App. D): the young model's weak
# class signal is amplified
assert passes("09.3", unguided, guided=final)
