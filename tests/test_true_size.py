"""The paper configs end to end at their true sizes on the CPU (issue 17): ``imagenet128`` at
128², ``imagenet256`` at 256², ``ffhq1024`` at 1024².

Each runs ``benchmarks/true_size.py``'s :func:`run_config` — generated image files read by the
real loader (one DataLoader worker; FFHQ's augmentation on), one training step of the paper's
recipe at batch 1 through ``hdit-edu train``, its checkpoint, and two sampling steps at full size
through ``hdit-edu sample`` — and checks what the commands wrote. Resume: for ``imagenet128``
``--resume`` trains a second step that must equal an uninterrupted two-step run bit for bit;
for all three a resumed :class:`~hdit_edu.training.Trainer` must hold the newest checkpoint's
step, weights, EMA and AdamW state exactly (a second step of the larger configs costs minutes
here). The same trainer then reads a step through its DataLoader (one worker process) and in its
main process: the images (and FFHQ's augmentation, at a step that draws a geometric transform)
must be equal bit for bit.

The three share one xdist group (``make test`` runs ``--dist loadgroup``), so one worker runs
them one after the other: their processes peak at 2–10 GiB each and CI has 24 GiB.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import true_size  # noqa: E402

from hdit_edu.configs import load_config  # noqa: E402
from hdit_edu.runfolder import release as unlock_run_dir  # noqa: E402
from hdit_edu.runs import read_metrics  # noqa: E402
from hdit_edu.training import Trainer, _loader_batches, make_dataset  # noqa: E402

RESOLUTION = {"imagenet128": 128, "imagenet256": 256, "ffhq1024": 1024}


def _first_augmented_step(trainer: Trainer, res: int, steps: int = 64) -> int:
    """The first step whose drawn augmentation moves pixels (a translation, scale, rotation
    or stretch, not only flips): the loader check below then compares a real resampling."""
    for step in range(steps):
        _, cond = trainer.augment(torch.zeros(1, 3, res, res), step)
        if cond[:, 2:].abs().sum() > 0:
            return step
    raise AssertionError(f"no step of the first {steps} draws a geometric augmentation")


@pytest.mark.xdist_group("true_size")
@pytest.mark.parametrize("name", true_size.PAPER_CONFIGS)
def test_paper_config_end_to_end_at_true_size(name, tmp_path):
    continue_to = 2 if name == "imagenet128" else None
    result = true_size.run_config(name, tmp_path, continue_to=continue_to)
    phases = result["phases"]
    for phase, m in phases.items():
        assert m["returncode"] == 0, f"{phase}: {m['stderr'][-3000:]}"
        print(f"{name} {phase}: {m['seconds']} s, {m['cpu_seconds']} s CPU, "
              f"peak RSS {m['peak_rss_gib']} GiB")  # fmt: skip
    assert list(phases) == [
        "train",
        *(["resume", "uninterrupted"] if continue_to else []),
        "sample",
    ]
    res, run = RESOLUTION[name], result["run"]
    assert result["resolution"] == res

    # The run: the paper's config at batch 1 on the generated folder, one step, its checkpoint.
    config = load_config(run / "config.json")
    assert config.model.resolution == res and config.training.batch_size == 1
    assert config.training.dataset == str(result["data"])
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2][: continue_to or 1]
    assert all(0 < r["loss"] < 10 for r in records)

    # imagenet128: the resumed second step equals the uninterrupted two-step run, bit for bit.
    if continue_to:
        full = tmp_path / "run-full"
        assert [r["loss"] for r in records] == [r["loss"] for r in read_metrics(full)]
        for file in ("model.safetensors", "ema.safetensors"):
            a = load_file(run / "checkpoints/step-00000002" / file)
            b = load_file(full / "checkpoints/step-00000002" / file)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)

    # Resume: a resumed trainer holds the newest checkpoint exactly (step, weights, EMA, AdamW).
    # The files are compared tensor by tensor (safetensors opened lazily, the trainer state
    # memory-mapped): ImageNet-256's 557M parameters make weights, EMA and moments 9 GiB.
    steps = continue_to or 1
    checkpoint = run / f"checkpoints/step-{steps:08d}"
    resumed = Trainer(config, run, resume=True, dataset=make_dataset(config), progress=False)
    saved = None
    try:
        assert resumed.step == steps and resumed.last_checkpoint == checkpoint
        for net, file in ((resumed.model, "model.safetensors"), (resumed.ema, "ema.safetensors")):
            state = net.state_dict()
            with safe_open(checkpoint / file, framework="pt") as f:
                assert set(f.keys()) == set(state)
                assert all(torch.equal(state[k], f.get_tensor(k)) for k in f.keys())
        opt = resumed.optimizer.state_dict()["state"]
        saved = torch.load(
            checkpoint / "trainer_state.pt", map_location="cpu", weights_only=True, mmap=True
        )
        want = saved["optimizer"]["state"]
        assert opt.keys() == want.keys() and len(opt) == len(list(resumed.model.parameters()))
        for i in want:
            assert all(torch.equal(opt[i][k], want[i][k]) for k in ("exp_avg", "exp_avg_sq"))
            assert float(opt[i]["step"]) == float(want[i]["step"]) == steps
        assert sum(float(s["exp_avg"].abs().sum()) for s in opt.values()) > 0  # a real update

        # The loader: the files decoded at full size; FFHQ's augmentation, done in the worker
        # process, equals the trainer's own in its main process, bit for bit.
        if name == "ffhq1024":
            assert resumed.augment is not None and config.training.augment_p == 0.12
            step = _first_augmented_step(resumed, res)
        else:
            assert resumed.augment is None
            step = 0
        loader = _loader_batches(resumed.dataset, resumed.step_indices, step, 1, resumed.augment)
        images, classes, aug_cond = next(loader)
        del loader
        main = resumed.read_step(step)
        decoded = resumed.dataset.batch(resumed.step_indices(step))[0]  # not augmented
    finally:
        unlock_run_dir(run)
        del resumed, saved
        gc.collect()
    assert images.shape == decoded.shape == (1, 3, res, res) and images.dtype == torch.float32
    assert -1 <= decoded.min() < decoded.max() <= 1
    assert torch.equal(images, main[0]) and torch.equal(classes, main[1])
    if name == "ffhq1024":  # bicubic resampling may overshoot [-1, 1] a little
        assert aug_cond.shape == (1, 9) and aug_cond[:, 2:].abs().sum() > 0
        assert torch.equal(aug_cond, main[2]) and not torch.equal(images, decoded)
    else:
        assert aug_cond is None and main[2] is None and torch.equal(images, decoded)
        assert 0 <= int(classes[0]) < 1000

    # Sampling: two steps at full size from the EMA weights (a grid of one image: no frame).
    with Image.open(tmp_path / "sample.png") as image:
        assert image.size == (res, res) and image.mode == "RGB"
        pixels = np.asarray(image)
    assert pixels.std() > 0
