"""The ablation chain (§5.2, Tables 1, 2 and 5) as an experiment: runs, records, analysis.

Table 1 goes from a global-attention hourglass (step A) through Swin (B1), neighborhood
attention (B2), GEGLU (C), axial RoPE (D) to soft-min-SNR (E), next to the single-level
baseline R4; Table 2 ablates E's skip merge (lerp, add, concat); Table 5 the loss weighting of
D's model (SNR, min-SNR γ = 5, min-SNR γ = 4, soft-min-SNR γ = 4 = E). One module, three parts:

* **The toy experiment** (``cpu`` profile; ``results/ablation-toy/``, its design pre-registered
  in that folder's README): :func:`run_config` builds configuration ``name`` (one of
  :data:`TOY_EXPERIMENT`, or any name of the registry :mod:`hdit_edu.presets` such as issue 19's
  all-local ``L``) on a toy task (:data:`hdit_edu.presets.TOY_TASKS`) with one budget
  (:class:`ToyBudget`, the pre-registered defaults);
  :func:`run_toy` trains one (configuration, seed), evaluates its EMA model (toy FID, class
  accuracy, held-out loss under one common weighting) and writes one JSON record (resumable: a
  ``done`` record is skipped, an unfinished run starts again — runs are bit-identical);
  :func:`rerun_prefix` retrains the first steps of a record and compares the losses exactly.
* **The analysis** of a folder of records: :func:`analyze` (per configuration mean ± 95 % t
  CI; per paper comparison the seed-paired difference with its CI and the paired t-test;
  Holm's adjustment per metric; the sign against the paper's; Kendall's τ-b against the
  paper's FID order) is the study analysis :func:`hdit_edu.analysis.analyze_runs` with
  the paper's chain (the statistics: :mod:`hdit_edu.stats`); :func:`summary_markdown`,
  :func:`plot_summary`, written together by :func:`write_summary`.
* **The paper-scale chain** (``gpu`` profile): :func:`ablation_config` (the paper's
  ImageNet-128 settings), :func:`run_ablation` (every step with one budget, measured on a
  held-out image folder), :func:`train_command` (the ``torchrun`` command that trains one step
  into the very run folder :func:`run_ablation` resumes), :func:`ablation_markdown`.

:func:`hdit_edu.protocol.evaluate_loss` (a held-out loss under one weighting, the same
images, σ and noise for every model) serves both profiles; the toy evaluation is the studies'
one protocol (:mod:`hdit_edu.protocol`, which also splits a model's error by noise
level).
``hdit-edu ablate`` is the command line of all three parts.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import evaluation
from .analysis import METRIC_LABELS, METRICS, analyze_runs, budget_difference, load_records
from .checkpoints import atomic_write_text
from .configs import Config, at_resolution
from .data import ImageFolderDataset, save_grid
from .ddpm import SAMPLING_STEPS
from .env import cpu_kind, cpu_kind_label, cpu_model, git, same_cpu_kind, versions  # noqa: F401 (cpu_model, git: part of this API)
from .flops import analytic_gflops
from .presets import ABLATION_STEPS, BASELINES, MIN_SNR_VARIANTS, get_config, on_toy_task
from .protocol import EvalProtocol, evaluate, evaluate_loss
from .runfolder import claim, describe_holder, read_holder
from .runs import read_metrics
from .sampling import generate, grid_columns
from .training import Trainer

# ----------------------------------------------------------------------------------------------
# The configurations: names of the registry (hdit_edu.presets)
# ----------------------------------------------------------------------------------------------

# The two experiments' configurations, named in the registry (hdit_edu.presets): Table 1's chain
# (and R4 on the toy set, R1–R4 at the paper's size), Table 2's skips (E is lerp), Table 5's
# weightings on D's model (D is SNR, E is soft-min-SNR γ = 4). Configurations outside the
# pre-registered toy experiment (the registry's FOLLOW_UPS, e.g. issue 19's all-local "L") run
# through run_toy too, but not through its analysis or `hdit-edu ablate`.
TOY_EXPERIMENT = (*ABLATION_STEPS, "R4", "E-add", "E-concat", *MIN_SNR_VARIANTS)
PAPER_CHAIN = (*ABLATION_STEPS, *BASELINES, "E-add", "E-concat", *MIN_SNR_VARIANTS)
EXACT_PREFIX = 100  # the loss of each of a run's first steps, kept exactly in its record
# ToyBudget's fields of a study's cell: absent from a record's settings when None (records made
# before them, and every plain toy run, read the same)
CELL_SETTINGS = ("resolution", "data", "classifier")


# ----------------------------------------------------------------------------------------------
# The toy experiment: one (configuration, seed) run → one JSON record
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyBudget:
    """Everything a toy run's result depends on besides (configuration, seed); the defaults are
    the pre-registered design (``results/ablation-toy/README.md``). ``eval_at``: extra
    evaluations (comma-separated steps, ``n_eval_mid`` samples each); ``eval_seed``: the sampling
    noise's seed (None: 1000 + seed); ``tag``: a suffix of the run name (pilot variants);
    ``ddpm_steps``: a DDPM arm's (R1's) sampler steps, DiT's ancestral sampler (``sampler`` and
    ``sample_steps`` are the EDM arms'; :meth:`hdit_edu.protocol.EvalProtocol.sampling`)."""

    task: str = "p4k3"
    train_steps: int = 20_000
    batch_size: int = 16
    lr: float | None = None  # None: Table 6's 5e-4
    eval_at: str = ""
    n_eval: int = 2048
    n_eval_mid: int = 256
    n_loss: int = 2048
    loss_weighting: str = "soft-min-snr"
    sampler: str = "dpmpp_3m_sde"
    sample_steps: int = 50
    cfg: float = 3.0
    sample_batch: int = 64
    eval_seed: int | None = None
    tag: str = ""
    ddpm_steps: int = SAMPLING_STEPS  # sampler steps of a DDPM arm (R1: DiT's ancestral sampler)
    # A study's cell (issue 30; hdit_edu.studies.resolutions): None keeps the toy task's 32² toy set.
    resolution: int | None = None  # the arm moved to n × n by App. A (configs.at_resolution)
    data: str | None = None  # training.dataset: "toy" (None) or "toy-detail"
    classifier: str | None = None  # the evaluation classifier's folder (None: the shipped one)


def run_config(name: str, seed: int, budget: ToyBudget = ToyBudget()) -> Config:
    """The config of the toy run (``name``, ``seed``): the registry's ``name`` on the toy task
    ``budget.task`` (:func:`hdit_edu.presets.on_toy_task`) with the budget's steps, batch size
    and learning rate; checkpoint only at the end, no periodic samples. Every configuration of
    seed ``seed`` sees the same batches and noise."""
    config = on_toy_task(name, budget.task)
    t = config.training
    t.seed, t.steps, t.batch_size = seed, budget.train_steps, budget.batch_size
    if budget.lr is not None:
        t.lr = budget.lr
    t.checkpoint_every, t.keep_checkpoints, t.sample_every = budget.train_steps, 1, 0
    config.validate()
    return config


def arm_config(
    name: str,
    seed: int,
    budget: ToyBudget = ToyBudget(),
    overrides: Sequence[str] = (),
    label: str | None = None,
) -> Config:
    """A study arm's config: :func:`run_config` of ``name`` with ``budget``, then the ``--set``
    ``overrides`` (:func:`hdit_edu.configs.apply_overrides`), named ``label``."""
    config = run_config(name, seed, budget)
    if overrides:  # configs.apply_overrides: moved there from the CLI by issue 26's split
        from .configs import apply_overrides

        config = apply_overrides(config, list(overrides))
        config.name = label or name
        config.validate()
    if budget.resolution is not None or budget.data is not None:  # a study's cell
        if budget.resolution is not None:  # after the overrides: App. A copies the outer level
            config = at_resolution(config, budget.resolution)
        if budget.data is not None:
            config.training.dataset = budget.data
        config.name = label or config.name
        config.validate()
    return config


def run_name(name: str, seed: int, tag: str = "") -> str:
    """``CONFIG-sSEED[TAG]``: the file name of a run's record (``.json``) and grid (``.png``)."""
    return f"{name}-s{seed}{tag}"


def evaluate_toy(trainer: Trainer, budget: ToyBudget, n: int, eval_seed: int):
    """The EMA model's metrics: ``n`` samples (classes 0..7 in turn) → toy FID against the test
    split and class accuracy (overall, per class) by the one evaluation protocol
    (:func:`hdit_edu.protocol.evaluate` with the budget's sampler settings); the
    held-out loss on ``budget.n_loss`` test images under ``budget.loss_weighting``. Returns
    (metrics, samples)."""
    config, denoiser = trainer.config, trainer.ema_denoiser
    protocol = EvalProtocol(
        n=n,
        sampler=budget.sampler,
        steps=budget.sample_steps,
        cfg=budget.cfg,
        batch_size=budget.sample_batch,
        ddpm_steps=budget.ddpm_steps,
        data=budget.data or "toy",
        classifier=budget.classifier,
    )
    metrics, images, _ = evaluate(denoiser, config, protocol, eval_seed)
    out = {"step": trainer.step, **metrics}
    t0, c0 = time.perf_counter(), time.process_time()
    out["heldout_loss"] = evaluate_loss(
        denoiser, config, n=budget.n_loss, weighting=budget.loss_weighting, seed=0
    )
    out["loss_s"] = time.perf_counter() - t0
    out["loss_cpu_s"] = time.process_time() - c0
    return out, images


def _write_json(path: Path, record: dict) -> None:
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def read_record(path: str | Path) -> dict | None:
    """The run record at ``path`` (None if there is none); one that cannot be read or is not a
    JSON object raises ``ValueError`` naming the file."""
    path = Path(path)
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # JSON and UTF-8 errors are ValueErrors
        raise ValueError(
            f"run record {str(path)!r} is corrupt or unreadable ({type(e).__name__}: "
            f"{str(e)[:200]}); move it away to run that run again"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"run record {str(path)!r} is corrupt: not a JSON object")
    return record


def _eval_steps(settings: dict) -> list[int]:
    """The steps a run with these settings evaluates at: ``eval_at`` and the last step."""
    extra = {int(s) for s in str(settings.get("eval_at") or "").split(",") if s}
    return sorted(extra | {int(settings["train_steps"])})


def record_missing(record: dict, out: str | Path) -> list[str]:
    """What a record lacks of what it promises (empty: complete): an evaluation at each of its
    evaluation steps, ``final`` (the last step's), and the sample grid ``out/NAME.png``. Only a
    complete record may say ``done``."""
    try:
        steps = {e["step"] for e in record["evaluations"]}
        want = _eval_steps(record["settings"])
        final = record.get("final")
        missing = [f"the evaluation at step {s}" for s in want if s not in steps]
        if not isinstance(final, dict) or final.get("step") != want[-1]:
            missing.append("'final'")
    except (KeyError, TypeError, ValueError) as e:
        return [f"a well-formed record ({type(e).__name__}: {e})"]
    if not (Path(out) / f"{record.get('name')}.png").is_file():
        missing.append(f"{record.get('name')}.png")
    return missing


def run_toy(
    name: str,
    seed: int,
    out: str | Path,
    budget: ToyBudget = ToyBudget(),
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    command: str | None = None,
    log=print,
    wait: bool = False,
    label: str | None = None,
    overrides: Sequence[str] = (),
    callback=None,
) -> dict | None:
    """One (configuration, seed) run of the toy experiment: train ``budget.train_steps`` steps on
    the CPU, evaluate (at ``budget.eval_at`` and the end), write ``out/NAME-sSEED.json`` after
    every evaluation (atomically; ``status`` running → done / failed) and the final samples'
    grid ``out/NAME-sSEED.png`` (8 per class). Returns the record.

    **One process per run.** The run folder (``run_dir``, default
    ``runs/ablation-toy/<out folder name>/NAME-sSEED``) is claimed
    (:func:`hdit_edu.runfolder.claim`) before the record or the folder is read or touched, and
    held to the end; every writer of the record holds it. A run another live process holds is
    skipped (returns None) or, with ``wait``, waited for. A record says ``done`` only when it
    is complete (:func:`record_missing`: every evaluation, ``final``, the grid, written before
    the record that names them); a ``done`` record is returned as it is (skipped) unless
    ``resume`` asks for more steps than it has. An unfinished run starts again from step 0
    (bit-identical; the folder is emptied while claimed), or with ``resume`` continues from
    its newest checkpoint (it keeps the final one) and makes up the evaluations it lacks.

    The record: the config, the settings, the command, :func:`versions`, ``OMP_NUM_THREADS``,
    wall-clock (``*_s``) and CPU (``*_cpu_s``) times, load averages, the loss of each of the
    first :data:`EXACT_PREFIX` steps exactly (``losses_first_steps``), the trainer's loss per
    logged step (``loss_every_10``) and the metrics of every evaluation (:func:`evaluate_toy`;
    ``final`` is the last step's). ``cpu_s`` is this run's CPU time (the stage-1 driver recorded
    its whole process's, imports included)."""
    eval_seed = 1000 + seed if budget.eval_seed is None else budget.eval_seed
    name_s = run_name(label or name, seed, budget.tag)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name_s}.json"
    run_dir = Path(run_dir) if run_dir is not None else Path("runs/ablation-toy") / out.name
    run_dir = run_dir / name_s
    held = claim(run_dir, wait=wait)
    if held is None:
        log(f"{name_s}: in progress in {describe_holder(read_holder(run_dir))}: left to it")
        return None
    with held:
        arm = {"label": label, "overrides": tuple(overrides), "callback": callback}
        return _run_claimed(
            name, seed, out, path, held, budget, eval_seed, resume, command, log, **arm
        )


def run_settings(name, seed, out, budget, eval_seed, resume, overrides=()) -> dict:
    """A run record's ``settings``: the configuration, seed, budget, sampling seed, output
    folder, resume flag and (a study's arm) the ``--set`` overrides."""
    settings = {"config": name, "task": budget.task, "seed": seed} | {
        k: v
        for k, v in asdict(budget).items()
        if k != "task" and (v is not None or k not in CELL_SETTINGS)
    }
    settings |= {"eval_seed": eval_seed, "out": str(out), "resume": resume}
    if overrides:  # a study's arm: a registry configuration changed by --set assignments
        settings["overrides"] = list(overrides)
    return settings


def check_settings(path, previous: dict, settings: dict) -> None:
    """Refuse to count or redo the done record ``previous`` (at ``path``) for a run of other
    ``settings``: another budget or other overrides is another experiment."""
    other = budget_difference(previous["settings"], settings)
    old, new = previous["settings"].get("overrides", []), settings.get("overrides", [])
    if old != new:
        other = f"overrides: {old} vs {new}"
    if other:
        raise ValueError(f"{path} was recorded with other settings ({other}); write to another folder")


def check_done_records(
    names: Sequence[str], seeds: Sequence[int], out, budget: ToyBudget = ToyBudget(), *,
    resume: bool = False,
) -> None:  # fmt: skip
    """Before any run: every done record in ``out`` of a (configuration, seed) to run again
    holds this ``budget`` (:func:`check_settings`; with ``resume``, one of fewer steps is to be
    continued instead), and every record there is readable (:func:`read_record`)."""
    for name in names:
        for seed in seeds:
            path = Path(out) / f"{run_name(name, seed, budget.tag)}.json"
            previous = read_record(path)
            if previous is None or previous.get("status") != "done":
                continue
            if resume and previous["config"]["training"]["steps"] < budget.train_steps:
                continue
            eval_seed = 1000 + seed if budget.eval_seed is None else budget.eval_seed
            check_settings(path, previous, run_settings(name, seed, out, budget, eval_seed, resume))


def _run_claimed(
    name, seed, out, path, held, budget, eval_seed, resume, command, log, *, label, overrides,
    callback,
) -> dict:  # fmt: skip
    """:func:`run_toy` once its run folder ``held`` is claimed."""
    name_s, run_dir = held.path.name, held.path
    previous = read_record(path)
    missing = record_missing(previous, out) if previous is not None else []
    extend = (
        resume
        and previous is not None
        and previous["config"]["training"]["steps"] < budget.train_steps
    )
    settings = run_settings(name, seed, out, budget, eval_seed, resume, overrides)
    if previous is not None and previous.get("status") == "done" and not extend:
        check_settings(path, previous, settings)
        if not missing:
            log(f"{path} is done: skipped")
            return previous
        log(f"{path} says done but lacks {', '.join(missing)}: running it again")
    if not resume:  # an unfinished attempt: start again (bit-identical), in the claimed folder
        held.clear()
    config = arm_config(name, seed, budget, overrides, label)
    record = {
        "name": name_s,
        "config_name": name,
        **({"arm": label} if label else {}),
        "seed": seed,
        "config": config.to_dict(),
        "settings": settings,
        "command": command or " ".join([Path(sys.executable).name, *sys.argv]),
        "versions": versions(),
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "run_dir": str(run_dir),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_start": list(os.getloadavg()),
        "status": "running",
        "evaluations": [],
        "final": None,
    }
    if config.training.compile:  # a compiled study's run (tests/test_studies_chain.py)
        record["compiled"] = {
            "backend": "inductor",  # torch.compile's default: C++ kernels on the CPU
            "torch": torch.__version__,
            "reproducible": "bit-identical when rerun on the same CPU kind (versions.cpu), "
            "torch version and thread count; another CPU kind gives another model",
        }
    clock = {"t": time.perf_counter(), "c": time.process_time(), "train_s": 0.0, "train_cpu_s": 0.0}
    exact = []
    trainer = Trainer(config, run_dir, resume=resume, progress=False, device="cpu")
    if resume and previous is not None:  # continue a recorded run from its checkpoint
        # the evaluations up to the checkpoint resumed from (later ones are made again)
        record["evaluations"] = [
            e for e in previous.get("evaluations", []) if e["step"] <= trainer.step
        ]
        record["resumed_from"] = {
            k: previous.get(k) for k in ("settings", "command", "started", "status")
        } | {"step": record["evaluations"][-1]["step"] if record["evaluations"] else None}
        clock["train_s"] = previous.get("train_s", 0.0)
        clock["train_cpu_s"] = previous.get("train_cpu_s", 0.0)
        exact = previous.get("losses_first_steps", [])
    record["params"] = sum(p.numel() for p in trainer.model.parameters())
    grid = out / f"{name_s}.png"
    if not grid.is_file():  # the final evaluation is made again, with its grid
        record["evaluations"] = [e for e in record["evaluations"] if e["step"] < budget.train_steps]
    done = {e["step"] for e in record["evaluations"]}
    eval_at = [s for s in _eval_steps(settings) if s >= trainer.step and s not in done]
    try:
        for target in eval_at:
            t0, c0 = time.perf_counter(), time.process_time()
            summary = trainer.fit(target, callback=callback)
            clock["train_s"] += time.perf_counter() - t0
            clock["train_cpu_s"] += time.process_time() - c0
            exact += summary["losses"][: max(0, EXACT_PREFIX - len(exact))]
            final = target == budget.train_steps
            n = budget.n_eval if final else budget.n_eval_mid
            metrics, images = evaluate_toy(trainer, budget, n, eval_seed)
            metrics["train_s_so_far"] = clock["train_s"]
            metrics["train_cpu_s_so_far"] = clock["train_cpu_s"]
            metrics["load_average"] = list(os.getloadavg())
            if final:  # the grid first: a record that names it finds it there
                save_grid(images[:64], grid, nrow=8)
            record["evaluations"].append(metrics)
            record["losses_first_steps"] = exact
            record["loss_every_10"] = [[r["step"], r["loss"]] for r in read_metrics(run_dir)]
            _write_json(path, _stamp(record, clock))
            log(
                json.dumps(
                    {"run": name_s} | {k: v for k, v in metrics.items() if "per_class" not in k}
                )
            )
        finals = [e for e in record["evaluations"] if e["step"] == budget.train_steps]
        record["final"] = finals[-1] if finals else None
        lacking = record_missing(record, out)
        if lacking:
            raise RuntimeError(f"{path}: the run ended without {', '.join(lacking)}")
        record["status"] = "done"  # only now: everything the record promises is in it
        _write_json(path, _stamp(record, clock))
    except Exception as e:  # every run is reported, failed ones too
        record["status"] = "failed"
        record["error"] = f"{type(e).__name__}: {e}"
        _write_json(path, _stamp(record, clock))
        raise
    return record


def _stamp(record: dict, clock: dict) -> dict:
    """The record's times and load average, now."""
    record["train_s"] = clock["train_s"]
    record["train_cpu_s"] = clock["train_cpu_s"]
    record["wall_s"] = time.perf_counter() - clock["t"]
    record["cpu_s"] = time.process_time() - clock["c"]
    record["load_average_end"] = list(os.getloadavg())
    return record


def record_config(record: dict) -> Config:
    """The config of a run record as this library builds it (:func:`run_config` from the
    record's configuration, seed and settings), checked against the config the record holds
    (fields added to the library since have their defaults). Raises ``ValueError`` if they
    differ: the run could not be reproduced."""
    s = record["settings"]
    budget = ToyBudget(
        task=s["task"], train_steps=s["train_steps"], batch_size=s["batch_size"], lr=s["lr"],
        resolution=s.get("resolution"), data=s.get("data"),
    )  # fmt: skip
    config = arm_config(
        record["config_name"], record["seed"], budget, s.get("overrides", ()), record.get("arm")
    )
    recorded = Config.from_dict(record["config"])
    if config != recorded:
        raise ValueError(
            f"run {record['name']!r}: run_config builds another config than the record holds"
        )
    return config


# Runs repeat bit for bit on the CPU kind they were recorded on (same model name, one thread).
# Another kind (e.g. AMD EPYC against the records' Intel Xeon) picks other float32 kernels for
# its vector units, which round sums differently: measured on E-s0's first 30 steps, the losses
# differ by at most 1.7e-7 relative (first at step 3, about one float32 ulp); over a whole run
# the difference grows like any perturbation (C-s1 retrained on AMD: toy FID 8.29 against the
# record's 8.59 — results/resolution-toy/README.md). CROSS_CPU_RTOL is the bound a prefix rerun
# must meet there: about 60× the measured difference, far below any real change.
CROSS_CPU_RTOL = 1e-5


def rerun_prefix(record: dict, steps: int = 30) -> dict:
    """Train the first ``steps`` steps of a recorded run again (:func:`record_config`, on the
    CPU, with the current torch thread count — the records used one; no files written) and
    compare each step's loss with ``record["losses_first_steps"]``. Returns ``{"steps",
    "recorded", "rerun", "identical", "first_difference", "max_abs_difference",
    "max_rel_difference", "cpu", "recorded_cpu", "same_cpu", "reproduced", "seconds"}``:
    ``reproduced`` is ``identical`` (``==`` at every step) on the record's CPU kind (known by
    its ``cpu_id``: ``env.same_cpu_kind(known=True)``), and the losses within
    :data:`CROSS_CPU_RTOL` otherwise."""
    t0 = time.perf_counter()
    recorded = record["losses_first_steps"][:steps]
    trainer = Trainer(record_config(record), None, progress=False, device="cpu")
    rerun = [trainer.train_step() for _ in range(len(recorded))]
    same = [a == b for a, b in zip(rerun, recorded)]
    rel = max((abs(a - b) / abs(b) for a, b in zip(rerun, recorded)), default=0.0)
    here = cpu_kind()
    cpu, recorded_cpu = cpu_kind_label(here), cpu_kind_label(record["versions"])
    same_cpu = here.get("cpu") is not None and same_cpu_kind(here, record["versions"], known=True)
    return {
        "steps": len(recorded),
        "recorded": recorded,
        "rerun": rerun,
        "identical": all(same),
        "first_difference": None if all(same) else same.index(False),
        "max_abs_difference": max((abs(a - b) for a, b in zip(rerun, recorded)), default=0.0),
        "max_rel_difference": rel,
        "cpu": cpu,
        "recorded_cpu": recorded_cpu,
        "same_cpu": same_cpu,
        "reproduced": all(same) if same_cpu else rel <= CROSS_CPU_RTOL,
        "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------------------------
# The analysis (pre-registered: results/ablation-toy/README.md, "Analysis")
# ----------------------------------------------------------------------------------------------

# FID of the paper (Tables 1, 2, 5; ImageNet-128², 50k samples, 50 steps of DPM++(3M) SDE).
PAPER_FID = {
    "A": 50.76,
    "B1": 55.93,
    "B2": 51.07,
    "C": 44.36,
    "D": 41.41,
    "E": 27.74,
    "R4": 30.71,
    "E-add": 28.37,
    "E-concat": 33.75,
    "D-minsnr5": 36.65,
    "D-minsnr4": 35.62,
}
TABLE1 = ("A", "B1", "B2", "C", "D", "E", "R4")
# (X, Y, what): the difference is Y − X.
COMPARISONS = (
    ("A", "B1", "Table 1: + Swin attention"),
    ("A", "B2", "Table 1: + neighborhood attention"),
    ("B1", "B2", "Table 1: neighborhood vs Swin"),
    ("B2", "C", "Table 1: + GEGLU"),
    ("C", "D", "Table 1: + axial RoPE"),
    ("D", "E", "Table 1: + soft-min-SNR"),
    ("R4", "E", "Table 1: HDiT E vs single-level R4"),
    ("E", "E-add", "Table 2: lerp → add"),
    ("E", "E-concat", "Table 2: lerp → concat"),
    ("E-add", "E-concat", "Table 2: add → concat"),
    ("D", "D-minsnr5", "Table 5: SNR → min-SNR γ=5"),
    ("D-minsnr5", "D-minsnr4", "Table 5: min-SNR γ=5 → γ=4"),
    ("D-minsnr4", "E", "Table 5: min-SNR γ=4 → soft-min-SNR γ=4"),
)


def load_runs(folder: str | Path) -> dict[str, dict[int, dict]]:
    """{configuration: {seed: record}} of the complete records in ``folder``
    (:func:`hdit_edu.analysis.load_records`: ``done`` with a full final evaluation;
    other JSON files, such as a summary, are ignored)."""
    return load_records(folder)


def analyze(runs: dict[str, dict[int, dict]]) -> dict:
    """The pre-registered analysis of :func:`load_runs`' records — one study's analysis
    (:func:`hdit_edu.analysis.analyze_runs`; ``results/ablation-toy/study.toml`` is the
    same as a spec): ``table`` (configuration → metric → ``t_interval`` over seeds, plus
    ``seeds``), ``comparisons`` (one row per metric and :data:`COMPARISONS` entry: the
    seed-paired difference Y − X with its CI and the two-sided paired t-test's p; Holm-adjusted
    p per metric, the paper's sign, ``sign_matches``, ``significant`` = Holm p < 0.05),
    ``kendall_tau`` (τ-b of the paper's FIDs of :data:`TABLE1` against our mean toy FIDs) and
    ``cost`` (CPU seconds per run and in all)."""
    return analyze_runs(
        runs,
        arms=tuple(PAPER_FID),
        comparisons=[(x, y, what, None) for x, y, what in COMPARISONS],
        metrics=tuple(METRICS),
        reference={"name": "paper", "metric": "fid", "values": PAPER_FID, "rank": TABLE1},
    )


def _cell(ci: dict) -> str:
    return f"{ci['mean']:.4g} ± {ci['half']:.2g}" if ci["n"] > 1 else f"{ci['mean']:.4g}"


def summary_markdown(result: dict) -> str:
    """The analysis as Markdown: the table (mean ± 95 % CI half-width per metric, the paper's
    FID), the sign-and-significance table of every comparison, Kendall's τ-b and the cost."""
    lines = [
        "| config | n | toy FID | class accuracy | held-out loss | paper FID |",
        "|---|---|---|---|---|---|",
    ]
    for c, row in result["table"].items():
        cells = [_cell(row[m]) for m in METRICS]
        lines.append(f"| {c} | {row['fid']['n']} | " + " | ".join(cells) + f" | {PAPER_FID[c]} |")
    lines += [
        "",
        "| comparison | metric | n | difference (95 % CI) | p (Holm) | sign as paper | significant |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["comparisons"]:
        d = r["difference"]
        if d["n"] == 0:
            continue
        ci = f" [{d['ci95'][0]:.3g}, {d['ci95'][1]:.3g}]" if d["n"] > 1 else ""
        p = "–" if math.isnan(r["p_holm"]) else f"{r['p_holm']:.3g}"
        lines.append(
            f"| {r['x']} → {r['y']} ({r['what']}) | {r['metric']} | {d['n']} | {d['mean']:.4g}"
            f"{ci} | {p} | {'yes' if r['sign_matches'] else 'no'} | "
            f"{'yes' if r['significant'] else 'no'} |"
        )
    if result["kendall_tau"]:
        k = result["kendall_tau"]
        lines += [
            "",
            f"Kendall's τ-b (paper FID order vs ours, {', '.join(k['configs'])}): "
            f"{k['tau']:.3f} (p = {k['p']:.3g})",
        ]
    cost = result["cost"]
    lines += [
        "",
        f"{result['n_runs']} runs, {cost['total_cpu_s'] / 3600:.2f} CPU-hours "
        "(training, sampling and held-out loss).",
    ]
    return "\n".join(lines)


def plot_summary(result: dict, axes=None):
    """The paper's FID next to our metrics per configuration (one panel each: paper FID, toy
    FID, class accuracy, held-out loss): bars at the mean over seeds, 95 % CI error bars, one
    dot per seed. Returns the figure."""
    import matplotlib.pyplot as plt

    names = list(result["table"])
    if axes is None:
        fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    else:
        fig = axes[0].figure
    x = np.arange(len(names))
    colors = ["tab:red" if n == "E" else "tab:gray" for n in names]
    axes[0].bar(x, [PAPER_FID[n] for n in names], color=colors)
    axes[0].set_title("paper FID (ImageNet-128²)")
    for ax, metric in zip(axes[1:], METRICS):
        rows = [result["table"][n][metric] for n in names]
        halves = [r["half"] if r["n"] > 1 else 0.0 for r in rows]
        ax.bar(x, [r["mean"] for r in rows], yerr=halves, capsize=3, color=colors, alpha=0.7)
        for i, r in enumerate(rows):
            ax.plot([i] * r["n"], r["values"], "k.", ms=4)
        seeds = "/".join(str(n) for n in sorted({r["n"] for r in rows}))
        ax.set_title(f"{METRIC_LABELS[metric]} (toy; ± 95 % CI, n = {seeds})")
    for ax in axes:
        ax.set_xticks(x, names, rotation=45)
    fig.tight_layout()
    return fig


def write_summary(folder: str | Path, out: str | Path | None = None) -> dict:
    """Analyse the records in ``folder`` and write the summary JSON ``out`` (default
    ``folder/summary.json``), its Markdown (``.md``) and figure (``.png``) beside it. Returns the
    analysis with ``"markdown"`` added."""
    import matplotlib

    folder = Path(folder)
    out = Path(out) if out is not None else folder / "summary.json"
    result = analyze(load_runs(folder))
    if not result["table"]:
        raise ValueError(f"{str(folder)!r} holds no finished run records (status 'done')")
    text = summary_markdown(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_json(out, result)
    out.with_suffix(".md").write_text(text + "\n")
    with matplotlib.rc_context({"backend": "agg"}):
        import matplotlib.pyplot as plt

        fig = plot_summary(result)
        fig.savefig(out.with_suffix(".png"), dpi=100)
        plt.close(fig)
    return result | {"markdown": text}


# ----------------------------------------------------------------------------------------------
# The paper-scale chain (gpu profile)
# ----------------------------------------------------------------------------------------------


def ablation_config(
    step: str, *, train_steps: int | None = None, data: str | None = None
) -> Config:
    """The paper's ImageNet-128 config of ``step`` (:data:`PAPER_CHAIN`; the registry's config)
    training on the image folder ``data``, with one budget for all: ``train_steps`` (default the
    paper's), checkpoints at half-way and the end, no periodic samples."""
    config = get_config(step)
    if data is not None:
        config.training.dataset = data
    if train_steps is not None:
        config.training.steps = train_steps
    config.training.checkpoint_every = max(1, config.training.steps // 2)
    config.training.sample_every = 0
    return config


def train_command(
    step: str,
    run_dir: str | Path,
    data: str,
    *,
    train_steps: int | None = None,
    nproc: int = 8,
    workers: int = 8,
) -> list[str]:
    """The ``torchrun … hdit_edu.cli train`` command that trains ``step`` of the chain on
    ``nproc`` GPUs into ``run_dir/step`` with exactly :func:`ablation_config`'s config, so that
    :func:`run_ablation` (``resume=True``) finds and continues or measures that run."""
    config = ablation_config(step, train_steps=train_steps, data=data)
    command = ["torchrun", "--nproc_per_node", str(nproc), "-m", "hdit_edu.cli", "train"]
    command += ["--config", step, "--profile", "gpu", "--data", str(data)]
    command += ["--steps", str(config.training.steps), "--run-dir", str(Path(run_dir) / step)]
    command += ["--workers", str(workers), "--resume"]
    command += ["--set", f"training.checkpoint_every={config.training.checkpoint_every}"]
    command += ["--set", "training.sample_every=0"]
    return command


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


def run_ablation(
    steps: Sequence[str],
    run_dir: str | Path,
    *,
    data: str,
    eval_data: str,
    train_steps: int | None = None,
    n_eval: int = 10_000,
    n_ref: int = 10_000,
    n_loss: int = 1024,
    sample_steps: int = 50,
    workers: int = 8,
    resume: bool = True,
    progress: bool = True,
    live=None,
) -> dict:
    """The paper-scale chain: train every step of ``steps`` on the image folder ``data`` with
    one budget (:func:`ablation_config`: same data order, seed and number of steps) in
    ``run_dir/STEP`` (``resume``: continue or reuse a run there, e.g. one started with
    :func:`train_command`), reading images with ``workers`` loader processes; then measure each
    with its EMA weights on the held-out folder ``eval_data`` (never trained on, e.g. ImageNet's
    validation split in class folders): FID with Inception against ``n_ref`` random images of
    it, a held-out loss on ``n_loss`` random images of it under one common weighting
    (:func:`evaluate_loss`), the final training loss, parameters and GFLOPs. Writes
    ``run_dir/results.json`` and ``run_dir/results.md``; returns ``{"rows", "markdown"}``.
    ``live``: a function of the step's name giving a ``fit`` callback to watch it train, e.g.
    ``lambda name: LiveTrainingView(title=name)`` (:class:`hdit_edu.widgets.LiveTrainingView`)."""
    run_dir = Path(run_dir)
    for flag, folder in (("data", data), ("eval_data", eval_data)):
        if not Path(folder).is_dir():
            raise ValueError(f"{flag}={str(folder)!r} is not a folder; allowed: an image folder")
    if Path(eval_data).resolve() == Path(data).resolve():
        raise ValueError(
            f"eval_data={str(eval_data)!r} is the training folder; allowed: a held-out folder "
            f"(e.g. ImageNet's validation split), never trained on"
        )
    configs = {s: ablation_config(s, train_steps=train_steps, data=data) for s in steps}
    any_config = next(iter(configs.values()))
    held_out = ImageFolderDataset(
        eval_data, any_config.model.resolution, class_subfolders=any_config.model.num_classes > 0
    )
    reference = evaluation.extract_features(
        _random_images(held_out, n_ref), extractor="inception", n=min(n_ref, len(held_out))
    )
    loss_indices = np.random.default_rng(1).permutation(len(held_out))[:n_loss]
    rows = []
    for name, config in configs.items():
        t0 = time.perf_counter()
        out = run_dir / name
        trainer = Trainer(
            config,
            out,
            resume=resume and out.exists(),
            progress=progress,
            num_workers=workers,
            sample_steps=sample_steps,
        )
        trainer.fit(callback=live(name) if live is not None else None)
        train_time = time.perf_counter() - t0
        denoiser = trainer.ema_denoiser
        images = generate(denoiser, config, n_eval, steps=sample_steps, seed=1)
        rows.append(
            {
                "step": name,
                "params_M": sum(p.numel() for p in trainer.model.parameters()) / 1e6,
                "train_loss": _final_loss(read_metrics(out)),
                "eval_loss": evaluate_loss(denoiser, config, held_out, indices=loss_indices),
                "fid": evaluation.fid(images, reference, extractor="inception"),
                "gflops": analytic_gflops(config),
                "train_time_s": train_time,
                "loss_weighting": config.diffusion.loss_weighting,
                "run_dir": str(out),
            }
        )
        if trainer.dist.world_size == 1:
            save_grid(
                images[:16],
                out / "samples" / "eval.png",
                nrow=grid_columns(16, config.model.num_classes),
            )
    result = {
        "train_steps": {r["step"]: configs[r["step"]].training.steps for r in rows},
        "eval_data": str(eval_data),
        "rows": rows,
    }
    result["markdown"] = ablation_markdown(rows)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (run_dir / "results.md").write_text(result["markdown"] + "\n")
    return result


def _final_loss(records: list[dict], fraction: float = 0.2) -> float:
    """The mean logged training loss over the last ``fraction`` of a run's records."""
    tail = records[-max(1, int(len(records) * fraction)) :]
    return float(np.mean([r["loss"] for r in tail]))


def ablation_markdown(rows: list[dict]) -> str:
    """The paper-scale results as a Markdown table (Table 1's columns, the paper's FID)."""
    head = "| step | params (M) | train loss | held-out loss | FID | paper FID | GFLOP |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        paper = PAPER_FID.get(r["step"], "–")
        lines.append(
            f"| {r['step']} | {r['params_M']:.2f} | {r['train_loss']:.4f} | {r['eval_loss']:.4f} | "
            f"{r['fid']:.2f} | {paper} | {r['gflops']:.1f} |"
        )
    return "\n".join(lines)
