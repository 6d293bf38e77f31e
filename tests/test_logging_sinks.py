"""TensorBoard and Weights & Biases copies of a run's metrics (``hdit_edu.logging_sinks``).

A tiny run (the training tests' HDiT, widths 32/64, batch 8) logs every 2 steps and writes a
sample grid every 2 steps; the TensorBoard event file is read back with TensorBoard's own
reader and must hold exactly metrics.jsonl's numbers (as float32, TensorBoard's storage) and
the PNG grids' pixels. W&B is tested only where ``wandb`` is installed (offline mode).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import tiny_config as tiny
from PIL import Image

from hdit_edu.logging_sinks import open_sinks, scalars
from hdit_edu.runs import read_metrics
from hdit_edu.toy import ToyDataset
from hdit_edu.training import Trainer


def tiny_config(**training):
    """4 steps: a log record and a grid every 2, a checkpoint at 4, clipping on (so that
    grad_norm is logged too)."""
    run = {"log_every": 2, "sample_every": 2, "checkpoint_every": 4, "grad_clip": 1.0}
    return tiny(4, **(run | training))


def run(tmp_path, **training):
    path = tmp_path / "run"
    trainer = Trainer(
        tiny_config(**training),
        path,
        dataset=ToyDataset("train", resolution=32, size=64),
        progress=False,
        sample_steps=2,
        n_samples=4,
    )
    trainer.fit(4)
    return path, trainer


def test_scalars_name_each_number_of_a_record_once():
    record = {
        "step": 7, "loss": 0.5, "lr": 5e-4, "ema_decay": 0.9, "samples_per_s": 12.0,
        "sigma_bins": {"1e-03-1e-02": 0.25, "1e-02-1e-01": None},
        "sigma_bin_counts": {"1e-03-1e-02": 3, "1e-02-1e-01": 0},
    }  # fmt: skip
    assert scalars(record) == {
        "loss": 0.5, "lr": 5e-4, "ema_decay": 0.9, "samples_per_s": 12.0,
        "sigma_bins/1e-03-1e-02": 0.25,
    }  # fmt: skip


def test_tensorboard_event_file_holds_metrics_jsonl_and_the_sample_grids(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path, trainer = run(tmp_path, tensorboard=True)
    records = read_metrics(path)
    assert [r["step"] for r in records] == [2, 4]
    events = EventAccumulator(str(path / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for name, value in scalars(record).items():
            expected.setdefault(name, []).append((record["step"], value))
    assert {"loss", "lr", "ema_decay", "samples_per_s", "grad_norm"} <= set(expected)
    assert any(name.startswith("sigma_bins/") for name in expected)
    assert sorted(events.Tags()["scalars"]) == sorted(expected)
    for name, points in expected.items():
        logged = [(e.step, e.value) for e in events.Scalars(name)]
        # TensorBoard stores float32: the JSON's float64 rounded once, exactly
        assert logged == [(step, float(np.float32(v))) for step, v in points], name
    grids = events.Images("samples")
    assert [g.step for g in grids] == [2, 4]
    for grid in grids:
        logged = np.asarray(Image.open(io.BytesIO(grid.encoded_image_string)).convert("RGB"))
        on_disk = np.asarray(Image.open(path / "samples" / f"step-{grid.step:08d}.png"))
        assert logged.shape == on_disk.shape and np.array_equal(logged, on_disk)
    trainer.sinks.close()


def test_sinks_are_opt_in_and_a_resume_may_switch_them_on(tmp_path):
    path, trainer = run(tmp_path)
    assert not trainer.sinks and not (path / "tensorboard").exists()
    assert json.loads((path / "config.json").read_text())["training"]["tensorboard"] is False
    # nothing to log to without a run dir, whatever the config says
    assert not open_sinks(None, tiny_config(tensorboard=True, wandb=True))
    with pytest.raises(ValueError, match="training.tensorboard: got 'yes'"):
        tiny_config(tensorboard="yes").validate()
    pytest.importorskip("tensorboard")  # the rest switches TensorBoard on when resuming
    resumed = Trainer(
        tiny_config(tensorboard=True, steps=4),
        path,
        resume=True,
        dataset=ToyDataset("train", resolution=32, size=64),
        progress=False,
    )
    assert resumed.step == 4 and resumed.sinks
    assert list((path / "tensorboard").glob("events.out.tfevents.*"))
    resumed.sinks.close()


def test_wandb_offline_run_gets_the_metrics_and_the_sample_grids(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    path, trainer = run(tmp_path, wandb=True)
    (sink,) = trainer.sinks.sinks
    last = read_metrics(path)[-1]
    summary = {key: sink.run.summary[key] for key in scalars(last)}  # the last logged values
    assert summary == scalars(last) and sink.run.summary["step"] == last["step"] == 4
    assert sink.run.settings.mode == "offline"
    trainer.sinks.close()
    (offline,) = (path / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb"))  # what `wandb sync` uploads
    grids = sorted((offline / "files" / "media" / "images").glob("samples_*.png"))
    assert len(grids) == 2  # the sample grids of steps 2 and 4, as written
    on_disk = {(path / "samples" / f"step-{s:08d}.png").read_bytes() for s in (2, 4)}
    assert {np.asarray(Image.open(g)).tobytes() for g in grids} == {
        np.asarray(Image.open(io.BytesIO(b))).tobytes() for b in on_disk
    }
