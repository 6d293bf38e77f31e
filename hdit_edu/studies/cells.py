"""Evaluation-only studies (a ``study.toml`` with ``[cells]``): trained checkpoints measured at a
grid of cells — guidance scales (App. D's classifier-free guidance, Fig. 9's sweep), sampling
resolutions, position readings and the σ shift (§5.2's claim that RoPE extrapolates, §7's
"arbitrary resolutions") — with the one protocol's metrics (:func:`hdit_edu.protocol.measure`).

- :func:`run` measures every (arm, seed) of the study at every cell its record does not hold
  yet, from the arm's run folder (``cells.checkpoints``) — seed by seed, cell by cell, every
  arm in turn, so that a partial run holds the same cells of every arm — and writes the record
  ``LABEL-sSEED.json`` atomically after each cell (resumable; 16 samples per cell as a grid);
  with ``cells.real`` it also puts real training images through the same metrics
  (``real_floor.json``).
- :func:`load` reads the records back: ``{arm: {seed: {cell key: cell}}}``, arms in the spec's
  order, seeds ascending, cells in their record's order; a cell counts only with the spec's
  sample count ``cells.n``.

The analyses and the report of such a study are :mod:`hdit_edu.studies.cell_report`'s.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import atomic_write_text
from ..data import save_grid
from ..env import cpu_model, versions
from ..protocol import EvalProtocol, evaluate, measure
from ..runs import load_run
from ..sampling import grid_columns, sample_labels
from ..toy import ToyDataset
from .spec import CellGrid, Study

SETTINGS = ("n", "sampler", "steps", "cfg", "batch", "coherence", "diversity")
REAL = "real_floor.json"


def grid(study: Study) -> CellGrid:
    if study.cells is None:
        raise ValueError(f"{study.path} has no [cells]: not an evaluation-only study")
    return study.cells


def _cells_of(g: CellGrid, record: dict) -> dict[str, dict]:
    """A record's cells by key (a list of cells is keyed by its axes' values)."""
    cells = record.get("cells", {})
    items = cells.values() if isinstance(cells, dict) else cells
    return {g.key(c): c for c in items if c.get("n_samples") == g.n}


def load(study: Study) -> dict:
    """``{arm: {seed: {cell key: cell}}}`` of the study's records (arms without any left out)."""
    g, runs = grid(study), {}
    for arm in study.arms:
        for seed in sorted(arm.seeds):
            for folder in study.read_records:
                path = folder / f"{arm.label}-s{seed}.json"
                if path.exists():
                    cells = _cells_of(g, json.loads(path.read_text()))
                    runs.setdefault(arm.label, {})[seed] = cells
                    break
    return runs


def cpu_seconds(cell: dict) -> float:
    """One cell's measured CPU time (sampling and metrics)."""
    if "cpu_s" in cell:
        return cell["cpu_s"]
    return cell["sample_cpu_s"] + cell["metrics_cpu_s"]


def settings(study: Study) -> dict:
    g, b = grid(study), study.budget
    return {"n": g.n, "sampler": b.sampler, "steps": b.sample_steps, "cfg": b.cfg,
            "batch": b.sample_batch, "coherence": g.coherence, "diversity": g.diversity}  # fmt: skip


def measure_cell(study: Study, denoiser, config, cell: dict, seed: int):
    """Sample ``cells.n`` images at ``cell`` (noise seed 1000 + seed, classes in turn) and
    measure them: the one protocol (:func:`hdit_edu.protocol.evaluate`) at the cell's guidance
    scale, size, position reading and σ shift. Returns (the record's cell, the images)."""
    g, s = grid(study), settings(study)
    protocol = EvalProtocol(
        n=g.n, sampler=s["sampler"], steps=s["steps"], cfg=cell.get("cfg", s["cfg"]),
        batch_size=s["batch"], coherence=g.coherence, diversity=g.diversity,
        resolution=cell.get("resolution"), positions=cell.get("positions"),
        shift=cell.get("shift", False),
    )  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    measured, images, _ = evaluate(denoiser, config, protocol, 1000 + seed)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {
        **cell,
        **measured,
        "nonfinite_samples": int((~images.isfinite().flatten(1).all(1)).sum()),
        "metrics_s": wall - measured["sample_s"],
        "metrics_cpu_s": cpu - measured["sample_cpu_s"],
    }
    return out, images


def _open(study: Study, label: str, seed: int, run_dir: str | Path | None = None):
    """(record, path, config, denoiser) of one (arm, seed): its record so far (a fresh one if
    it has none or was measured with other settings) and its trained model."""
    g = grid(study)
    if run_dir is None:
        if label not in g.checkpoints:
            raise ValueError(f"{study.path}: cells.checkpoints names no run folder for {label!r}")
        run_dir = g.checkpoints[label].format(seed=seed)
    path = study.records / f"{label}-s{seed}.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    if record.get("settings") != settings(study):
        record = {"name": f"{label}-s{seed}", "arm": label, "seed": seed,
                  "settings": settings(study), "cells": {}}  # fmt: skip
    config, denoiser = load_run(run_dir)
    record |= {"run": str(run_dir), "cpu": cpu_model(), "versions": versions()}
    return record, path, config, denoiser


def _measure_into(study: Study, opened: tuple, cell: dict) -> None:
    """Measure ``cell`` into the record unless it holds it; rewrite the record atomically."""
    record, path, config, denoiser = opened
    g, key = grid(study), grid(study).key(cell)
    if key in record["cells"]:
        return
    measured, images = measure_cell(study, denoiser, config, cell, record["seed"])
    record["cells"][key] = measured
    nrow = grid_columns(16, config.model.num_classes)  # one class per column
    save_grid(images[:16], study.records / "grids" / f"{record['name']}-{key}.png", nrow=nrow)
    record["cpu_s"] = sum(cpu_seconds(c) for c in record["cells"].values())
    record["status"] = "done" if len(record["cells"]) == len(g.cells()) else "partial"
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def run_one(study: Study, label: str, seed: int, run_dir: str | Path | None = None) -> dict:
    """Measure one (arm, seed) at every cell its record lacks (``run_dir``: the arm's
    ``cells.checkpoints`` by default)."""
    opened = _open(study, label, seed, run_dir)
    for cell in grid(study).cells():
        _measure_into(study, opened, cell)
    return opened[0]

def real_floor(study: Study) -> dict:
    """``cells.real``: the first n training images of each class, classes in turn as the
    samples are, through the same metrics (what real images score, for scale)."""
    g = grid(study)
    train = ToyDataset("train", resolution=g.train_resolution)
    by_class = [np.flatnonzero(train.labels == c) for c in range(train.num_classes)]
    rows = []
    for n in g.real:
        labels = sample_labels(n, train.num_classes)
        index = [by_class[c][i // train.num_classes] for i, c in enumerate(labels.tolist())]
        images, _ = train.batch(np.array(index))
        measured = measure(images, labels, coherence=g.coherence, diversity_terms=g.diversity)
        rows.append({"n_samples": n, **measured})
    return {"split": "train", "rows": rows}


def run(study: Study) -> list[dict]:
    """Every (arm, seed) at every cell (one process; resumable), then the real reference if
    the spec asks for it and it is not written yet. Returns the records."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    study.records.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in sorted({s for a in study.arms for s in a.seeds}):
        opened = [_open(study, a.label, seed) for a in study.arms if seed in a.seeds]
        for cell in grid(study).cells():  # cell by cell, every arm in turn: a partial run
            for one in opened:  # holds the same cells of every arm (paired comparisons)
                _measure_into(study, one, cell)
        out += [one[0] for one in opened]
    if grid(study).real and not (study.records / REAL).exists():
        atomic_write_text(study.records / REAL, json.dumps(real_floor(study), indent=1))
    return out


def status(study: Study) -> list[dict]:
    """Each (arm, seed): how many of its cells are measured (``done`` when all are)."""
    runs, total = load(study), len(grid(study).cells())
    rows = []
    for arm, seed in study.runs():
        have = len(runs.get(arm.label, {}).get(seed, {}))
        state = "done" if have >= total else "partial" if have else "queued"
        rows.append({"run": f"{arm.label}-s{seed}", "state": state, "cells": f"{have}/{total}"})
    return rows
