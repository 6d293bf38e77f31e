"""Shared pytest options: ``--runslow`` runs tests (and notebooks) marked slow. Shared fixtures:
``k_diffusion`` (the authors' reference implementation, with ``HDIT_K_DIFFUSION_SRC`` set),
``toy_data`` (512 toy training images), ``small_book``. Shared helpers, imported by the test
files as ``from conftest import …`` (pytest puts this folder on ``sys.path``): :data:`TINY_STUDY`, :data:`TINY` and
:func:`tiny_config` (the tests' tiny model), :func:`tiny_cli_args` (the same on the command
line)."""

import os
from dataclasses import replace

import pytest

# Under pytest-xdist (`make test` runs two workers, one per core) each worker computes on one
# thread, and so do the notebook kernels and subprocesses it starts (they inherit the variable):
# two workers with two threads each would only fight over the two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

from hdit_edu.configs import Config  # noqa: E402  (after the thread count is set)
from hdit_edu.presets import toy  # noqa: E402
from hdit_edu.profiles import ToyScale, to_toy_scale  # noqa: E402
from hdit_edu.toy import ToyDataset  # noqa: E402

# Tests that take minutes run first, so that two workers finish together instead of one of them
# starting a long notebook at the end (names as they appear in the test ids). The true-size
# runs (tests/test_true_size.py, ~4 min together) are one xdist group: the worker that gets them
# starts them first.
LONG_FIRST = (
    "test_paper_config_end_to_end_at_true_size",
    "test_notebook_runs_in_cpu_profile",
    "test_browser",
    "test_demo",
)


# The tests' tiny model: the toy config (hdit_edu.presets.toy) moved by profiles.to_toy_scale to
# widths 32/64, one layer a level, head dim 16, mapping width 32, batch 8 — a training step in
# milliseconds on two cores.
TINY = ToyScale(widths=(32, 64), depths=(1, 1), head_dim=16, mapping_width=32, batch_size=8)


def tiny_config(steps: int = TINY.steps, /, **training) -> Config:
    """The tests' tiny model (:data:`TINY`) for a ``steps``-step run (``training.steps``; the
    toy move sets checkpoints and sample grids at every quarter of it), with ``training``'s
    fields set on top (e.g. ``log_every=1``; ``steps`` among them is ``training.steps`` too)."""
    config = to_toy_scale(toy(), replace(TINY, steps=steps))
    for key, value in training.items():
        setattr(config.training, key, value)
    return config


@pytest.fixture(scope="session")
def toy_data() -> ToyDataset:
    """512 images of the toy set's training split at 32×32, made once for the session."""
    return ToyDataset("train", resolution=32, size=512)


def tiny_cli_args(sample_steps: int) -> list[str]:
    """``hdit-edu train`` options of the tests' tiny run: the cpu profile of the toy config,
    shrunk further (widths 32/64, one layer in the inner level, head dim 16) at batch 8, a log
    record every step, a checkpoint every 4, no sample grids; ``sample_steps`` sampler steps."""
    return [
        "--config", "toy", "--profile", "cpu", "--no-progress",
        "--sampler-steps", str(sample_steps),
        "--set", "training.batch_size=8", "--set", "training.log_every=1",
        "--set", "training.checkpoint_every=4", "--set", "training.sample_every=0",
        "--set", "model.levels.0.width=32", "--set", "model.levels.1.width=64",
        "--set", "model.levels.1.depth=1", "--set", "model.levels.0.head_dim=16",
        "--set", "model.levels.1.head_dim=16", "--set", "model.mapping.width=32",
    ]  # fmt: skip


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not any(name in item.nodeid for name in LONG_FIRST))
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def k_diffusion():
    """The authors' ``k_diffusion`` package, imported from the source tree named by
    ``HDIT_K_DIFFUSION_SRC`` (:func:`hdit_edu.reference_source.import_k_diffusion`) once for the whole
    session; the tests that use it skip when the variable is unset."""
    from hdit_edu.reference_source import (
        K_DIFFUSION_SRC_ENV,
        import_k_diffusion,
        k_diffusion_source,
    )

    src = k_diffusion_source()
    if src is None:
        pytest.skip(
            f"reference source not available: set {K_DIFFUSION_SRC_ENV} to a clone of "
            f"crowsonkb/k-diffusion to compare with the authors' implementation"
        )
    with import_k_diffusion(src) as package:
        yield package


# The two cheap chapters the book tests build (tests/test_book.py, tests/test_browser_book.py).
SMALL_BOOK = ["00_tour", "02_hourglass_and_skips"]


@pytest.fixture(scope="session")
def small_book(tmp_path_factory):
    """``tools/build_book.py`` run on :data:`SMALL_BOOK` (cpu profile) once for the session:
    ``(output folder, chapters)``."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import build_book

    out = tmp_path_factory.mktemp("book")
    return out, build_book.build_book(out, SMALL_BOOK, log=lambda _: None)


# The tiny study every studies test starts from (two arms, 10 steps, 16 samples): tests derive
# their variants by replacing lines, so the machinery is exercised on one text.
TINY_STUDY = """\
question = "Does GEGLU (C) beat GELU (B2) on a tiny budget?"
seeds = [0, 1]
arms = ["B2", "C"]
checkpoints = "{checkpoints}"

[task]
train_steps = 10
batch_size = 4

[evaluation]
n_eval = 16
n_loss = 16
sample_steps = 3
sample_batch = 16

[analysis]
comparisons = [["B2", "C", "+ GEGLU", "better"]]
"""
