"""Calibration data of the memory planner: one real training step of each paper config at its
true resolution, batch 1, fp32, on this machine's CPU (issue 17).

    python benchmarks/planner_calibration.py            # all configs and modes (~15 min, 1 thread)
    python benchmarks/planner_calibration.py --configs imagenet128 --modes none

Each (config, checkpointing) runs in a fresh process: build the :class:`~hdit_edu.training.Trainer`
(model, EMA, AdamW) at batch 1 with an in-memory set of one random image, create AdamW's
moments with one zero-gradient ``optimizer.step()`` (as after any first step), then run one
:meth:`~hdit_edu.training.Trainer.train_step` — data, augmentation, σ and ε, forward,
backward, AdamW, EMA — under :class:`hdit_edu.planner.PeakMemory`. Recorded per run:

* ``resident_bytes`` — the tensors alive before the step: weights, EMA weights and buffers,
  AdamW's moments (summed from the tensors themselves);
* ``step_peak_bytes`` — the allocator's peak during the step above that (gradients,
  activations, temporaries);
* ``peak_bytes`` — their sum: the step's peak tensor memory;
* ``step_s`` — the step's wall time under the profiler (it slows the step a little),
  and the process's peak RSS.

Writes ``benchmarks/results/planner-calibration-cpu.json`` (the planner's tests read it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import common  # benchmarks/common.py (it also puts the repository root on sys.path)
import torch

from hdit_edu.configs import normalize_resolution
from hdit_edu.planner import PeakMemory
from hdit_edu.presets import PAPER_CONFIGS, get_config
from hdit_edu.training import Trainer

OUT = common.RESULTS_DIR / "planner-calibration-cpu.json"


class OneImage:
    """A data set of one fixed random image (class 0) at the model's resolution."""

    def __init__(self, resolution):
        h, w = normalize_resolution(resolution)
        self.image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def __len__(self) -> int:
        return 1

    def batch(self, indices):
        n = len(indices)
        return self.image.expand(n, -1, -1, -1).clone(), torch.zeros(n, dtype=torch.long)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def resident_bytes(trainer: Trainer) -> int:
    """Bytes of the tensors a run holds between steps: weights and buffers, the EMA copy,
    AdamW's moments (summed from the tensors themselves)."""
    return (
        tensor_bytes(trainer.model.parameters())
        + tensor_bytes(trainer.model.buffers())
        + tensor_bytes(trainer.ema.parameters())
        + tensor_bytes(trainer.ema.buffers())
        + sum(tensor_bytes(s.values()) for s in trainer.optimizer.state.values())
    )


def create_moments(trainer: Trainer) -> None:
    """Make AdamW's moments exist, as after any first step: one step on zero gradients."""
    for p in trainer.model.parameters():
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def step_peak(trainer: Trainer) -> dict:
    """One :meth:`~hdit_edu.training.Trainer.train_step` under :class:`PeakMemory`, after
    :func:`create_moments`: ``resident_bytes`` (before the step), ``step_peak_bytes`` (the
    allocator's peak during the step above that), ``peak_bytes`` (their sum), ``step_s`` and
    ``measured_with``. On CUDA also ``cuda_max_memory_allocated_bytes``: the allocator's own
    peak over the step, everything on the device counted."""
    create_moments(trainer)
    device = trainer.device
    resident = resident_bytes(trainer)
    t0 = time.perf_counter()
    with PeakMemory(device) as memory:
        trainer.train_step()
    seconds = time.perf_counter() - t0
    step = round(memory.peak_MiB * 2**20)
    row = {
        "resident_bytes": resident,
        "step_peak_bytes": step,
        "peak_bytes": resident + step,
        "peak_GiB": (resident + step) / 2**30,
        "step_s": seconds,
        "measured_with": memory.kind,
    }
    if device.type == "cuda":  # PeakMemory reset the peak at entry
        row["cuda_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    return row


def measure(name: str, mode: str) -> dict:
    config = get_config(name)
    t = config.training
    t.batch_size, t.grad_accum, t.precision, t.checkpointing = 1, 1, "fp32", mode
    trainer = Trainer(config, None, dataset=OneImage(config.model.resolution), progress=False)
    params = sum(p.numel() for p in trainer.model.parameters())
    peak = step_peak(trainer)
    return {
        "config": name,
        "resolution": list(normalize_resolution(config.model.resolution)),
        "checkpointing": mode,
        "batch": 1,
        "precision": "fp32",
        "params": params,
        **{k: peak[k] for k in ("resident_bytes", "step_peak_bytes", "peak_bytes", "peak_GiB")},
        "step_s": peak["step_s"],
        "peak_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "measured_with": peak["measured_with"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=list(PAPER_CONFIGS))
    p.add_argument("--modes", nargs="+", default=["none", "level", "layer"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--one", nargs=2, metavar=("CONFIG", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one:
        print("RESULT " + json.dumps(measure(*args.one)), flush=True)
        return 0
    load_before = os.getloadavg()
    rows = []
    for name in args.configs:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--one", name, mode, "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                raise RuntimeError(f"{name}/{mode} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(line[0][len("RESULT ") :]))
            r = rows[-1]
            print(
                f"{name:12s} {mode:6s} peak {r['peak_GiB']:.2f} GiB "
                f"(resident {r['resident_bytes'] / 2**30:.2f}) step {r['step_s']:.1f} s",
                flush=True,
            )
    document = common.make_result(
        "planner-calibration",
        torch.device("cpu"),
        command="python benchmarks/planner_calibration.py " + " ".join(argv or sys.argv[1:]),
        settings={"threads": args.threads, "batch": 1, "precision": "fp32"},
        results=rows,
        summary={"configs": args.configs, "modes": args.modes},
        load_before=list(load_before),
    )
    path = common.write_result(document, torch.device("cpu"), args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
