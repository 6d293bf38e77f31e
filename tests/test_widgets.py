"""The live training view (``hdit_edu.widgets.LiveTrainingView``) and the trainer's callback
hook it rides on (``Trainer.fit(steps, callback=…)``, ``logging_sinks.Sinks.attach``):

* the callback receives every ``metrics.jsonl`` record at its step, with the trainer's logged
  losses, and every sample grid at its step; it is detached and closed when ``fit`` returns;
* the view's data are the run's ``metrics.jsonl`` and its newest ``samples/`` grid (shape of a
  one-class-per-column grid), in widget and in print mode, with and without a run dir;
* ``sample_accuracy`` is the one timed sampling + class-accuracy measurement.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from hdit_edu.measure import sample_accuracy
from hdit_edu.runs import load_run, read_metrics
from hdit_edu.sampling import generate, grid_columns
from hdit_edu.toy import class_accuracy
from hdit_edu.training import Trainer
from hdit_edu.widgets import SHIPPED_RUN, LiveTrainingView


class Recorder:
    """A sink that writes down what it is given (the protocol of ``hdit_edu.logging_sinks``)."""

    def __init__(self):
        self.calls = []

    def begin(self, step, total):
        self.calls.append(("begin", step, total))

    def metrics(self, step, values):
        self.calls.append(("metrics", step, values))

    def image(self, step, path):
        self.calls.append(("image", step, path))

    def close(self):
        self.calls.append(("close",))


def _run(tmp_path, toy_data, callback, steps=8, run_dir=True):
    config = tiny_config(6, log_every=3, sample_every=4, checkpoint_every=4, keep_checkpoints=5)
    run = tmp_path / "run" if run_dir else None
    trainer = Trainer(config, run, dataset=toy_data, progress=False, sample_steps=2, n_samples=8)
    trainer.fit(steps, callback=callback)
    return trainer, run


def test_fit_callback_gets_each_logged_record_and_grid_at_its_step(tmp_path, toy_data):
    recorder = Recorder()
    trainer, run = _run(tmp_path, toy_data, recorder)
    kinds = [c[0] for c in recorder.calls]
    assert recorder.calls[0] == ("begin", 0, 8) and kinds[-1] == "close"
    assert kinds.count("begin") == kinds.count("close") == 1
    metrics = [c for c in recorder.calls if c[0] == "metrics"]
    assert [c[1] for c in metrics] == [3, 6, 8]  # every log_every steps, and the last step
    logged = read_metrics(run)
    assert [c[2]["loss"] for c in metrics] == [r["loss"] for r in trainer.history]
    assert [c[2]["loss"] for c in metrics] == [r["loss"] for r in logged]
    assert metrics[0][2]["samples_per_s"] == logged[0]["samples_per_s"]
    images = [c for c in recorder.calls if c[0] == "image"]
    assert [(c[1], c[2].name) for c in images] == [
        (4, "step-00000004.png"),
        (8, "step-00000008.png"),
    ]
    assert trainer.sinks.sinks == []  # detached: a later fit without it does not call it
    trainer.fit(9)
    assert len(recorder.calls) == 1 + 3 + 2 + 1


def test_live_view_holds_metrics_jsonl_and_the_newest_grid(tmp_path, toy_data, capsys):
    view = LiveTrainingView(every=1, mode="widget", title="tiny")
    trainer, run = _run(tmp_path, toy_data, view)
    logged = read_metrics(run)
    assert view.steps == [r["step"] for r in logged] == [3, 6, 8]
    assert view.losses == [r["loss"] for r in logged]
    assert [r["lr"] for r in view.records] == [r["lr"] for r in logged]
    # 8 samples of 8 classes: one row of 8 columns of 32×32 images with 2-pixel padding
    columns = grid_columns(8, 8)
    assert columns == 8
    assert view.grid.shape == (32 + 2 * 2, columns * (32 + 2) + 2, 3) == (36, 274, 3)
    assert view.grid_step == 8
    written = np.asarray(Image.open(run / "samples" / "step-00000008.png").convert("RGB"))
    assert np.array_equal(view.grid, written)
    assert view.progress.value == view.progress.max == 8
    assert view.loss_image.value[:8] == b"\x89PNG\r\n\x1a\n"
    grid_png = Image.open(io.BytesIO(view.grid_image.value))
    assert grid_png.size == (274 * view.scale, 36 * view.scale)
    assert "step 8 / 8 · loss" in view.status.value


def test_live_view_prints_without_a_kernel_and_needs_no_run_dir(tmp_path, toy_data, capsys):
    view = LiveTrainingView(every=5)  # auto: no Jupyter kernel here → print
    assert view.mode == "print"
    trainer, _ = _run(tmp_path, toy_data, view, run_dir=False)
    assert view.steps == [r["step"] for r in trainer.history] == [3, 6, 8]
    assert view.losses == [r["loss"] for r in trainer.history]
    assert view.grid is None  # grids are the PNGs of a run dir
    lines = capsys.readouterr().out.splitlines()
    # redrawn at the first record, after `every` = 5 more steps, and at the end
    # and the end-of-run line (outside IPython there is no picture to show)
    assert [line.split(" · ")[0] for line in lines] == ["step 3 / 8", "step 8 / 8", "step 8 / 8"]


def test_live_view_refuses_bad_settings_by_name():
    with pytest.raises(ValueError, match="mode='table'; allowed: 'auto', 'widget', 'print'"):
        LiveTrainingView(mode="table")
    with pytest.raises(ValueError, match="every=0; allowed: an integer >= 1"):
        LiveTrainingView(every=0)
    with pytest.raises(ValueError, match="scale=0.5; allowed: an integer >= 1"):
        LiveTrainingView(scale=0.5)


def test_sample_accuracy_is_generate_then_the_toy_classifier():
    config, denoiser = load_run(SHIPPED_RUN, device="cpu")
    run = sample_accuracy(denoiser, config, 16, steps=4, cfg_scale=2.0, seed=3)
    assert run.labels.tolist() == [i % 8 for i in range(16)]
    images = generate(denoiser, config, 16, steps=4, cfg_scale=2.0, class_cond=run.labels, seed=3)
    assert torch.equal(run.images, images)
    assert run.class_accuracy == class_accuracy(images, run.labels) and run.seconds > 0
