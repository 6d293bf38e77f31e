"""Where a run's metrics go besides ``metrics.jsonl``: TensorBoard and Weights & Biases.

``metrics.jsonl`` (written by :class:`hdit_edu.training.Trainer`) is the record of a run; the
tools researchers watch runs with read copies of the same numbers, opt-in per run:

* ``training.tensorboard = True`` (``hdit-edu train --tensorboard``): TensorBoard event files
  in ``RUN_DIR/tensorboard/`` (``tensorboard --logdir runs``). Needs the ``tensorboard``
  package (in the ``dev`` extra): the writer is ``torch.utils.tensorboard.SummaryWriter``.
* ``training.wandb = True`` (``--wandb``): a Weights & Biases run in **offline** mode in
  ``RUN_DIR/wandb/`` (no network, no account; ``wandb sync RUN_DIR/wandb/offline-run-*``
  uploads it later). Needs ``wandb`` (tested with 0.31; the values are plotted against
  their ``step``).

Each metrics record becomes scalars at its ``step``, under the record's own key names:
``loss``, ``lr``, ``ema_decay``, ``samples_per_s``, ``grad_norm`` (with clipping) and
``sigma_bins/<bin>`` (the loss per decade of σ, e.g. ``sigma_bins/1e-03-1e-02``; a bin that
drew no σ in the interval is left out, as its ``null`` in the JSON says). Each sample grid
(``samples/step-XXXXXXXX.png``) becomes the image ``samples`` at its step, read back from the
PNG that was written (so every viewer shows the same pixels).

The trainer calls :func:`open_sinks` once (rank 0 with a run dir) and then
:meth:`Sinks.metrics` / :meth:`Sinks.image` where it writes a record or a grid. A sink flushes
after each call: a run killed at any point leaves every logged value readable.

A sink is any object with ``metrics(step, values)``, ``image(step, path)`` and ``close()``
(``begin(step, total)`` is optional). Besides the run's own sinks, ``Trainer.fit(steps,
callback=sink)`` attaches one for the length of that call (:meth:`Sinks.attach`): the live
training view of the notebooks (:class:`hdit_edu.widgets.LiveTrainingView`) is such a sink, so
it shows exactly the numbers of ``metrics.jsonl`` and the grids of ``samples/``, computed where
they are logged anyway (no extra host synchronisation in the training step). The metrics reach
an attached sink with or without a run dir; sample grids need one (they are the PNGs written).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

SCALAR_KEYS = ("loss", "lr", "ema_decay", "samples_per_s", "grad_norm")
SAMPLES_TAG = "samples"


def scalars(record: dict) -> dict[str, float]:
    """The scalars of one metrics record, named as the sinks log them (see the module doc)."""
    out = {key: float(record[key]) for key in SCALAR_KEYS if record.get(key) is not None}
    for label, value in (record.get("sigma_bins") or {}).items():
        if value is not None:
            out[f"sigma_bins/{label}"] = float(value)
    return out


class TensorBoardSink:
    """Event files in ``log_dir`` (``torch.utils.tensorboard.SummaryWriter``)."""

    def __init__(self, log_dir: Path):
        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError(
                "training.tensorboard needs the tensorboard package: pip install tensorboard "
                "(or the dev extra: pip install -e .[dev])"
            )
        from torch.utils.tensorboard import SummaryWriter  # lazy: imports tensorboard

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def metrics(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()

    def image(self, step: int, path: Path) -> None:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        self.writer.add_image(SAMPLES_TAG, pixels, global_step=step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """An offline Weights & Biases run in ``run_dir/wandb`` named after the run dir, with the
    config as its config; the values are plotted against their training ``step``."""

    def __init__(self, run_dir: Path, config: dict, name: str):
        if importlib.util.find_spec("wandb") is None:
            raise ValueError("training.wandb needs the wandb package: pip install wandb")
        import wandb  # lazy: optional, and slow to import

        self.wandb = wandb
        self.run = wandb.init(
            mode="offline", dir=str(run_dir), name=name, config=config, reinit="finish_previous"
        )  # a second trainer in one process (a notebook) starts its own run
        # The training step is the x-axis of every value; each log call is committed at once
        # (W&B's own step would hold a row open until a later step, and refuses a second
        # call at a committed step: the sample grid follows the metrics of its step).
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.run.log({"step": step, **values})

    def image(self, step: int, path: Path) -> None:
        self.run.log({"step": step, SAMPLES_TAG: self.wandb.Image(str(path))})

    def close(self) -> None:
        self.run.finish()


class Sinks:
    """The sinks of one run (possibly none): the trainer's one handle on them."""

    def __init__(self, sinks: list):
        self.sinks = sinks

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def metrics(self, record: dict) -> None:
        """Log one ``metrics.jsonl`` record (at its ``step``)."""
        values = scalars(record)
        for sink in self.sinks:
            sink.metrics(int(record["step"]), values)

    def image(self, path: str | Path, step: int) -> None:
        """Log the sample grid written to ``path`` at training step ``step``."""
        for sink in self.sinks:
            sink.image(step, Path(path))

    def attach(self, sink, *, step: int, total: int) -> None:
        """Add ``sink`` (``None``: nothing) until :meth:`detach`; a training call from step
        ``step`` to step ``total`` starts (its optional ``begin(step, total)`` is called)."""
        if sink is None:
            return
        begin = getattr(sink, "begin", None)
        if begin is not None:
            begin(step, total)
        self.sinks.append(sink)

    def detach(self, sink) -> None:
        """Remove and close a sink added by :meth:`attach` (no-op for ``None`` or a sink not
        attached)."""
        if sink is not None and any(s is sink for s in self.sinks):
            self.sinks = [s for s in self.sinks if s is not sink]
            sink.close()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_sinks(run_dir: str | Path | None, config) -> Sinks:
    """The sinks ``config.training`` asks for, writing under ``run_dir``; none without a run
    dir (``None``: a run that writes nothing, or a rank other than 0)."""
    t, sinks = config.training, []
    if run_dir is not None:
        run_dir = Path(run_dir)
        if t.tensorboard:
            sinks.append(TensorBoardSink(run_dir / "tensorboard"))
        if t.wandb:
            sinks.append(WandbSink(run_dir, config.to_dict(), name=run_dir.name))
    return Sinks(sinks)
