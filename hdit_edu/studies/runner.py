"""Running a study: its queue of (arm, seed) runs, worked by one or more processes (§5.2's
ablation runs, one thread each, on the CPU).

Every run goes through :func:`hdit_edu.ablation.run_toy` (the toy experiment's one trainer
path: the same configs, data order and draws, so a study's run is bit-identical to an
``ablate`` run of the same configuration and seed on one CPU kind). Around it:

* **Claimed atomically.** Before it looks at or touches a run, a worker claims the run's
  claim folder ``RECORDS/.claims/LABEL-sSEED`` (:func:`hdit_edu.runfolder.claim`: an
  ``flock`` the kernel releases when the process dies). A run another live process holds is
  skipped, so two workers — or two ``study run`` processes, or two machines on a shared
  folder with working ``flock`` — never train the same run. The claim folder is apart from the
  run folder so that nothing ``run_toy`` does to its run folder can weaken it.
* **Done means complete.** Under the claim the record is read again: a record counts as done
  only with a full final evaluation at the study's ``train_steps`` (:func:`is_done`); anything
  else is (re)run — resumed from its checkpoint where one exists (bit-identical).
* **One thread per worker**; ``workers > 1`` spawns that many processes.
* **Progress**: a tqdm bar per run with the ETA from its measured step rate (a training
  sink, fed the numbers ``metrics.jsonl`` gets).
* **One queue.** ``hdit-edu ablate toy`` is a study too (:mod:`.chain`): it runs through
  :func:`run` with its own thread count, resume flag and command, waiting at the end for the
  runs another process holds (``wait``).
* **A log** ``RECORDS/queue.jsonl``: one line per start, finish, failure and skip (pid,
  host, UTC time), so "every run trained exactly once" can be checked afterwards.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..ablation import run_name, run_toy
from ..analysis import complete
from ..checkpoints import atomic_write_text, list_checkpoints
from ..configs import Config
from ..env import cpu_model
from ..protocol import EvalProtocol, evaluate, loss_profile, select_guidance
from ..runfolder import claim, describe_holder, read_holder
from ..runs import load_run
from .registration import check
from .resolutions import check_classifiers
from .spec import Arm, Study, load_study

CLAIMS = ".claims"
QUEUE_LOG = "queue.jsonl"
STATES = ("done", "running", "partial", "failed", "pending")


def record_path(study: Study, arm: Arm, seed: int) -> Path:
    """Where the run's record is: the first records folder that holds it, else the study's
    own (where a new run writes it)."""
    name = f"{run_name(arm.label, seed)}.json"
    for folder in study.read_records:
        if (folder / name).exists():
            return folder / name
    return study.records / name


def run_folder(study: Study, arm: Arm, seed: int) -> Path:
    """The run folder (checkpoints, metrics) of one run; ``run_toy`` adds the run's name."""
    return study.checkpoints / run_name(arm.label, seed)


def claim_folder(study: Study, arm: Arm, seed: int) -> Path:
    return study.records / CLAIMS / run_name(arm.label, seed)


def arm_budget(study: Study, arm: Arm):
    """The arm's budget: a cell's own (steps from its FLOPs, resolution, data, classifier;
    :mod:`hdit_edu.studies.resolutions`), else the study's."""
    return arm.budget or study.budget


def arm_overrides(study: Study, arm: Arm) -> tuple[str, ...]:
    """The arm's ``--set`` assignments, with ``training.compile=true`` for a compiled study."""
    return (*arm.overrides, *(("training.compile=true",) if study.compile else ()))


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON record ({e}); move it away to run it again") from None


def _log(study: Study, event: str, run: str, **extra) -> None:
    """One line of ``queue.jsonl`` (appended in one write, so lines of two processes never
    mix)."""
    line = {
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "event": event,
        "run": run,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    } | extra
    study.records.mkdir(parents=True, exist_ok=True)
    fd = os.open(
        study.records / QUEUE_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644
    )
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def queue_log(study: Study) -> list[dict]:
    """The lines of the study's ``queue.jsonl``, oldest first."""
    path = study.records / QUEUE_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _alive(holder: dict | None) -> bool:
    """Whether a claim's holder record names a live process on this host (for display only:
    decisions are made by the claim itself)."""
    if not holder or holder.get("host") != socket.gethostname():
        return bool(holder)  # another host: assume it runs
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, ValueError, TypeError, KeyError):
        return False
    except PermissionError:
        return True
    return True


def is_done(study: Study, record: dict | None) -> bool:
    """Whether a record is this study's finished run: complete for the study's metrics
    (:func:`hdit_edu.analysis.complete`) *and* trained for the study's ``train_steps`` (a
    record of a shorter budget is continued or refused by ``run_toy``, never counted)."""
    if record is None or not complete(record, study.metrics):
        return False
    label = record.get("arm") or record.get("config_name")
    labels = [a.label for a in study.arms]
    budget = arm_budget(study, study.arm(label)) if label in labels else study.budget
    return record["config"]["training"]["steps"] == budget.train_steps  # a cell's arm: its own


def run_state(study: Study, arm: Arm, seed: int) -> dict:
    """One run's state, read without claiming anything: ``done`` (a complete record),
    ``running`` (its claim's holder is alive), ``failed``, ``partial`` (a record or a
    checkpoint, not complete) or ``pending``; with the record's step, final metrics and CPU."""
    record = _read(record_path(study, arm, seed))
    out = {"run": run_name(arm.label, seed), "arm": arm.label, "seed": seed}
    holder = read_holder(claim_folder(study, arm, seed))
    if is_done(study, record):
        state = "done"
    elif holder is not None and _alive(holder) and holder.get("pid") != os.getpid():
        state = "running"
    elif record is not None and record.get("status") == "failed":
        state = "failed"
    elif record is not None or list_checkpoints(run_folder(study, arm, seed)):
        state = "partial"
    else:
        state = "pending"
    out["state"] = state
    if record is not None:
        final = record.get("final") or {}
        out |= {
            "step": final.get("step"),
            "cpu": (record.get("versions") or {}).get("cpu"),
            "compiled": bool(record["config"]["training"].get("compile")),
            **{m: final.get(m) for m in study.metrics},
        }
        if record.get("error"):
            out["error"] = record["error"]
    if state == "running":
        out["holder"] = {k: holder.get(k) for k in ("pid", "host", "started")}
    return out


def status(spec: str | Path | Study) -> list[dict]:
    """:func:`run_state` of every run of the study, in queue order."""
    study = spec if isinstance(spec, Study) else load_study(spec)
    return [run_state(study, arm, seed) for arm, seed in study.runs()]


class _ProgressBar:
    """A training sink (``Trainer.fit(callback=…)``): a tqdm bar over one run's steps, with the
    ETA from the measured step rate."""

    def __init__(self, desc: str, position: int, enabled: bool):
        self.desc, self.position, self.enabled, self.bar = desc, position, enabled, None

    def begin(self, step: int, total: int) -> None:
        if self.enabled:
            self.bar = tqdm(
                total=total, initial=step, desc=self.desc, position=self.position, unit="step",
                leave=True, smoothing=0.1, dynamic_ncols=True,
            )  # fmt: skip

    def metrics(self, step: int, values: dict) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if values.get("loss") is not None:
                self.bar.set_postfix(loss=f"{values['loss']:.4g}", refresh=False)

    def image(self, step: int, path) -> None:
        pass

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


_COMPILER_OK: list[bool] = []  # the probe's verdict, once per process


def check_compiler() -> None:
    """A compiled study (``[options] compile = true``) needs ``torch.compile`` to build CPU
    kernels here: inductor compiles C++ with ``g++`` (or ``$CXX``). A two-element function is
    compiled and run once per process; where that fails (no C++ compiler on the PATH), the
    study is refused before any run, with torch's reason, instead of every run failing."""
    if _COMPILER_OK:
        return
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2))
    except Exception as e:
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
        raise ValueError(
            f"options.compile = true, but torch.compile cannot build CPU kernels here "
            f"({reason}); install a C++ compiler (g++, or set CXX) or set compile = false"
        ) from None
    _COMPILER_OK.append(True)


def work(
    spec: str | Path, worker: int = 0, *, progress: bool = True, log=print,
    stop_at: float | None = None, threads: int = 1, resume: bool | None = None,
    command: str | None = None, wait: bool = False,
) -> dict:  # fmt: skip
    """One worker's pass over the queue (``threads`` torch threads, default one): claim each
    unfinished run in turn, skip those another process holds, train and evaluate the rest.
    After the wall-clock time ``stop_at`` (``time.time()`` seconds) no new run is started; the
    one under way finishes. With ``wait``, the runs another process held are waited for at the
    end and taken over if its process died (``hdit-edu ablate toy``'s two processes on one
    folder). ``resume``: ``run_toy``'s (None: continue from a checkpoint where there is one);
    ``command``: the command the records name (default ``hdit-edu study run SPEC``).
    Returns ``{"trained", "skipped_done", "held", "failed", "not_started"}`` (run names) and
    ``errors`` (run name → the failure's message)."""
    torch.set_num_threads(threads)
    study = check(spec)
    if study.compile:
        check_compiler()
    check_classifiers(study)  # a cell study's evaluation classifiers, before any training
    out: dict[str, list[str]] = {
        "trained": [], "skipped_done": [], "held": [], "failed": [], "not_started": []
    }  # fmt: skip
    errors: dict[str, str] = {}
    options = dict(progress=progress, log=log, resume=resume, command=command, worker=worker)
    for arm, seed in study.runs():
        name = run_name(arm.label, seed)
        path = record_path(study, arm, seed)
        if stop_at is not None and time.time() >= stop_at:
            if not is_done(study, _read(path)):
                out["not_started"].append(name)
            continue
        if is_done(study, _read(path)):
            out["skipped_done"].append(name)
            log(f"{path} is done: skipped")
            continue
        held = claim(claim_folder(study, arm, seed), wait=False)
        if held is None:
            out["held"].append(name)
            _log(study, "held-elsewhere", name)
            holder = describe_holder(read_holder(claim_folder(study, arm, seed)))
            log(f"{name}: in progress in {holder}: left to it")
            continue
        with held:
            _claimed(study, arm, seed, out, errors, **options)
    if wait:  # the runs left to other processes: wait for each, take it over if theirs died
        for arm, seed in study.runs():
            name = run_name(arm.label, seed)
            if name not in out["held"]:
                continue
            out["held"].remove(name)
            with claim(claim_folder(study, arm, seed), wait=True) as held:
                _claimed(study, arm, seed, out, errors, **options)
    return out | {"errors": errors}


def _claimed(study, arm, seed, out, errors, *, progress, log, resume, command, worker) -> None:
    """One run of :func:`work` once its claim is held: skipped if another worker finished it,
    else trained and evaluated (``run_toy``), its outcome put into ``out`` and ``errors``."""
    name, path = run_name(arm.label, seed), record_path(study, arm, seed)
    record = _read(path)  # again, under the claim: another worker may have finished it
    if is_done(study, record):
        out["skipped_done"].append(name)
        log(f"{path} is done: skipped")
        return
    folder = run_folder(study, arm, seed)
    if resume is None:
        resume = bool(list_checkpoints(folder))
    _log(study, "start", name, resume=resume, cpu=cpu_model(), worker=worker)
    bar = _ProgressBar(name, worker, progress)
    overrides = arm_overrides(study, arm)
    # a registry configuration unchanged: the record of `ablate toy` (no "arm" key)
    label = arm.label if overrides or arm.label != arm.config else None
    try:
        record = run_toy(
            arm.config, seed, study.records, arm_budget(study, arm),
            run_dir=study.checkpoints, resume=resume, log=log, label=label,
            overrides=overrides, callback=bar,
            command=command or f"hdit-edu study run {study.path}",
        )  # fmt: skip
    except Exception as e:  # every run is reported; the queue goes on
        out["failed"].append(name)
        errors[name] = f"{type(e).__name__}: {e}"
        _log(study, "failed", name, error=errors[name])
        return
    finally:
        bar.close()
    if record is None:  # its run folder is held by another process (e.g. `ablate`)
        out["held"].append(name)
        _log(study, "held-elsewhere", name)
        return
    if complete(record):
        record = _unbiased_evaluation(study, arm, seed, record)
    ok = is_done(study, record)
    out["trained" if ok else "failed"].append(name)
    _log(study, "done" if ok else "incomplete", name)


SELECTION_SEED = 2000  # selection noise: 2000 + seed (the test noise is the record's eval_seed)


def _unbiased_evaluation(study: Study, arm: Arm, seed: int, record: dict) -> dict:
    """What a study adds to a finished record, on its final EMA checkpoint: each arm's own
    guidance scale (``evaluation.select_cfg``: protocol.select_guidance → the record's
    ``guidance_selection`` and ``cfg_selected``, ``fid_selected``, ``class_accuracy_selected``
    in ``final``) and the loss profile (``evaluation.loss_profile``: protocol.loss_profile →
    ``loss_profile`` and its band errors and own-weighting loss in ``final``) and the second
    feature space (``evaluation.fid_ae``: ``fid_ae_selected`` from the selection's own test
    samples; ``fid_ae`` at cfg only where the metrics ask for it, by drawing those again). Written
    atomically; a record that lacks one its study asks for is not complete for that study."""
    todo_select = study.select_cfg and not (
        "guidance_selection" in record
        and ("fid_ae_selected" in record["final"] or "fid_ae_selected" not in study.metrics)
    )
    todo_profile = study.loss_profile and "loss_profile" not in record
    todo_ae = "fid_ae" in study.metrics and "fid_ae" not in record["final"]
    if not (todo_select or todo_profile or todo_ae):
        return record
    _, denoiser = load_run(run_folder(study, arm, seed))
    config = Config.from_dict(record["config"])
    if todo_profile:
        c0 = time.process_time()
        profile = loss_profile(denoiser, config)
        record["final"] |= {k: profile[k] for k in ("error_low", "error_mid", "error_high",
                                                    "heldout_loss_own")}  # fmt: skip
        record["loss_profile"] = profile | {"cpu_s": time.process_time() - c0}
    if todo_select:
        record = _select_guidance(study, seed, record, denoiser, config, arm_budget(study, arm))
    if todo_ae:
        record = _second_features(study, record, denoiser, config, arm_budget(study, arm))
    atomic_write_text(record_path(study, arm, seed), json.dumps(record, indent=1) + "\n")
    return record


def _select_guidance(study: Study, seed: int, record: dict, denoiser, config, b) -> dict:
    s = record["settings"]
    protocol = EvalProtocol(b.n_eval, b.sampler, b.sample_steps, b.cfg, b.sample_batch,
                            fid_ae=study.fid_ae, data=b.data or "toy",
                            classifier=b.classifier, ddpm_steps=b.ddpm_steps)  # fmt: skip
    c0 = time.process_time()
    chosen = select_guidance(
        denoiser, config, protocol, study.select_cfg, n_select=study.n_select,
        selection_seed=SELECTION_SEED + seed, test_seed=s["eval_seed"],
    )  # fmt: skip
    keys = ("cfg_selected", "fid_selected", "class_accuracy_selected", "fid_ae_selected")
    record["final"] |= {k: chosen[k] for k in keys if k in chosen}
    record["guidance_selection"] = {
        "scales": list(study.select_cfg), "n_select": study.n_select,
        "selection_seed": SELECTION_SEED + seed, "test_seed": s["eval_seed"],
        "frontier": chosen["frontier"], "test": chosen["test"],
        "cpu_s": time.process_time() - c0,
    }  # fmt: skip
    return record


def _second_features(study: Study, record: dict, denoiser, config, b) -> dict:
    """``fid_ae``: the record's test samples drawn again (same checkpoint, protocol and noise
    seed) and measured in the autoencoder's features; the toy FID of the redrawn samples is
    kept beside it, so a reader sees that they are the record's own samples."""
    s = record["settings"]
    protocol = EvalProtocol(b.n_eval, b.sampler, b.sample_steps, b.cfg, b.sample_batch,
                            fid_ae=True, data=b.data or "toy", classifier=b.classifier,
                            ddpm_steps=b.ddpm_steps)  # fmt: skip
    c0 = time.process_time()
    m, _, _ = evaluate(denoiser, config, protocol, s["eval_seed"])
    record["final"]["fid_ae"] = m["fid_ae"]
    record["second_features"] = {
        "extractor": "hdit_edu.toy_autoencoder (denoising autoencoder, no labels)",
        "fid_redrawn": m["fid"], "fid_record": record["final"]["fid"],
        "cpu_s": time.process_time() - c0,
    }  # fmt: skip
    return record


def _spawned(spec: str, worker: int, progress: bool, stop_at: float | None, options=None) -> None:
    result = work(spec, worker, progress=progress, log=lambda *a, **k: None, stop_at=stop_at,
                  **(options or {}))  # fmt: skip
    if result["failed"]:
        raise SystemExit(1)


def run(
    spec: str | Path, *, workers: int = 1, progress: bool = True, log=print,
    stop_after: float | None = None, **options,
) -> dict:  # fmt: skip
    """Work the study's queue with ``workers`` processes (1: this process), after checking its
    registration. ``stop_after``: minutes after which no worker starts a new run (a session or
    job with a time limit loses no half-trained run); ``options``: :func:`work`'s ``threads``,
    ``resume``, ``command`` and ``wait``. Returns the final :func:`status` rows, whether every
    worker succeeded, and (one worker) its failures' messages (``errors``)."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}; allowed: an integer ≥ 1")
    if stop_after is not None and not (isinstance(stop_after, (int, float)) and stop_after >= 0):
        raise ValueError(f"stop_after={stop_after!r}; allowed: minutes ≥ 0, or None")
    unknown = sorted(set(options) - {"threads", "resume", "command", "wait"})
    if unknown:
        raise TypeError(f"run() got unknown options {unknown}; allowed: threads, resume, "
                        "command, wait")  # fmt: skip
    stop_at = None if stop_after is None else time.time() + 60.0 * stop_after
    study = check(spec)
    if study.compile:
        check_compiler()  # refused here, before any worker starts
    errors = {}
    if workers == 1:
        result = work(study.path, 0, progress=progress, log=log, stop_at=stop_at, **options)
        ok, errors = not result["failed"], result["errors"]
    else:
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=_spawned, args=(str(study.path), i, progress, stop_at, options))
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        ok = all(p.exitcode == 0 for p in procs)
    return {"ok": ok, "status": status(study), "errors": errors}
