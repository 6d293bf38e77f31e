"""A study's cells: one question asked at several resolutions, each arm given the same training
compute in a cell (the paper's Fig. 1–2 and Table 1's R4 row: quality per FLOP, and how the
hourglass's advantage grows with resolution; issue 30's study is the first user).

Keys of ``study.toml`` this module reads (validated once, by :func:`parse_cells`, called from
:func:`hdit_edu.studies.spec.parse_study`)::

    [task]
    data = "toy-detail"                       # or "toy": the plain toy set, resolution-free
    resolutions = [32, 64, 128]               # one cell per resolution: every arm is built as
                                              #   before, then moved to n² by App. A's rule
                                              #   (configs.at_resolution), trained on data at n²
    budget = { kind = "flops", final_gflop = { 32 = 240, 64 = 1200, 128 = 7000 } }
                                              # equal compute per cell (or one number for every
                                              #   cell); omitted: every arm trains train_steps
    anytime = [0.125, 0.25, 0.5, 1.0]         # evaluations at these fractions of each arm's own
                                              #   steps (equal-FLOP points across arms)

    [evaluation]
    classifiers = { 32 = "data/toy_detail_classifier/32" }   # per resolution, the evaluation
                                              #   classifier's folder (repository-relative or
                                              #   absolute); default for toy-detail:
                                              #   toy_detail.detail_classifier(n); for toy: the
                                              #   shipped 32² one
    metrics = ["class_accuracy", "coherence", "detail_distance", "fid", "heldout_loss"]

    [analysis]
    comparisons = [["global", "E", "hourglass vs global", { 32 = "none", 128 = "better" }]]
                                              # expect: one sign, or one per resolution
    crossover = { win = ["detail_distance"], not_worse = ["class_accuracy"] }   # optional
    scaling = "../../benchmarks/results/hourglass_vs_global-cpu-DATE.json"      # optional

**FLOPs.** A training step of arm a at n² costs :data:`TRAIN_FLOPS_PER_MAC` × the analytic
forward multiply-adds per image (:func:`hdit_edu.flops.analytic_terms`) × the batch: the
forward pass, the backward's two (activations and weights), two FLOPs per multiply-add — the
"6 N" rule. An arm's steps are ⌊budget ÷ FLOPs per step⌋, fixed when the spec is read (before
any run): no arm exceeds the budget, and each falls short of it by less than one step. The
anytime evaluations are at ⌊f × steps + ½⌋ (f < 1) and the last step.

**ResolutionCells as arms.** A cell's arm is an :class:`~hdit_edu.studies.spec.Arm` labelled
``ARM@n`` (records ``ARM@n-sSEED.json``) with its own :class:`~hdit_edu.ablation.ToyBudget`
(steps, evaluation steps, resolution, data, classifier), and each comparison becomes one per
cell (``what @ n²``, that cell's expected sign); the queue, the claims, the records and the
analysis are the study's own, so every cell is read exactly as a study of one resolution is.
:func:`analyze_study` adds what reads across cells: each cell's anytime curves (quality against
training GFLOPs and CPU-seconds, mean and 95 % t interval over seeds), the crossover reading
(``crossover``: the smallest resolution from which on Y wins every cell, fixed in advance) and
the scaling exponents of a benchmark file (``exponent``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..ablation import ToyBudget, arm_config
from ..analysis import ALL_METRICS, analyze, load_study_records
from ..flops import analytic_terms
from ..stats import t_interval
from ..toy import MissingWeightsError
from ..toy_detail import classifier_folder, detail_classifier

__all__ = ["ResolutionCells", "CellPlan", "analyze_study", "parse_cells", "expand"]

TRAIN_FLOPS_PER_MAC = 6  # forward + backward (×3), two FLOPs per multiply-add (×2)
BUDGET_KINDS = ("flops",)
CELL_TASK_KEYS = ("resolutions", "budget", "anytime")
CELL_EVALUATION_KEYS = ("classifiers",)
CELL_ANALYSIS_KEYS = ("crossover", "scaling")


@dataclass(frozen=True)
class CellPlan:
    """One arm in one cell, fixed before any run: forward multiply-adds per image, FLOPs per
    training step, steps, evaluation steps and the FLOPs they spend."""

    arm: str
    resolution: int
    forward_mac: int
    step_flops: int
    steps: int
    eval_steps: tuple[int, ...]

    @property
    def gflop(self) -> float:
        return self.steps * self.step_flops / 1e9


@dataclass(frozen=True)
class ResolutionCells:
    """A study's cells (module docstring): the resolutions, the data, the per-cell budget in
    GFLOP (None: steps), the anytime fractions, the classifier per resolution, the base arms'
    labels, the plan of every (arm, resolution), the crossover rule and the scaling file."""

    resolutions: tuple[int, ...]
    data: str
    final_gflop: dict[int, float] | None
    anytime: tuple[float, ...]
    classifiers: dict[int, str | None]
    arms: tuple[str, ...]
    plan: tuple[CellPlan, ...]
    crossover: dict[str, tuple[str, ...]] | None = None
    scaling: Path | None = None

    def label(self, arm: str, resolution: int) -> str:
        return cell_label(arm, resolution)


def cell_label(arm: str, resolution: int) -> str:
    """``ARM@n``: a cell's arm (its records ``ARM@n-sSEED.json``)."""
    return f"{arm}@{int(resolution)}"


def forward_mac(config) -> int:
    """The analytic multiply-adds of one forward pass of one image (closed form)."""
    return int(sum(t.flops for t in analytic_terms(config)))


def derived_steps(final_gflop: float, step_flops: int) -> int:
    """⌊budget ÷ FLOPs per step⌋ (budget in GFLOP, 10⁹ FLOPs), computed on integers."""
    return int(round(final_gflop * 1e9)) // int(step_flops)


def anytime_steps(fractions, steps: int) -> tuple[int, ...]:
    """The evaluation steps of a run of ``steps`` steps: ⌊f × steps + ½⌋ for each f < 1, and
    ``steps``."""
    return tuple(sorted({math.floor(f * steps + 0.5) for f in fractions if f < 1} | {steps}))


def _resolution_table(value, resolutions, key: str, fail, check, allowed: str) -> dict[int, object]:
    """A per-resolution table ``{ 32 = …, 64 = … }`` (TOML keys are strings) covering exactly
    ``resolutions``, or one value for every cell; each value passes ``check``."""
    if not isinstance(value, dict):
        value = {str(n): value for n in resolutions}
    keys = {str(n) for n in resolutions}
    if set(value) != keys:
        fail(key, f"{sorted(value)}; allowed: one entry per resolution, {sorted(keys, key=int)}")
    out = {}
    for n in resolutions:
        item = value[str(n)]
        if not check(item):
            fail(f"{key}.{n}", f"{item!r}; allowed: {allowed}")
        out[n] = item
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def cell_resolutions(task: dict, fail) -> list[int] | None:
    """``task.resolutions``, validated (None where absent: no cells)."""
    resolutions = task.get("resolutions")
    if resolutions is None:
        return None
    ok = isinstance(resolutions, list) and resolutions and all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 8 and n % 8 == 0
        for n in resolutions
    )  # fmt: skip
    if not ok or len(set(resolutions)) != len(resolutions) or resolutions != sorted(resolutions):
        fail("task.resolutions", f"{resolutions!r}; allowed: increasing multiples of 8")
    return resolutions


def parse_cells(raw: dict, arms, budget: ToyBudget, folder: Path, fail) -> ResolutionCells | None:
    """The cells of a spec (None where ``task.resolutions`` is absent; then the other cell keys
    are refused), with every arm's plan: its config at each resolution, FLOPs, steps."""
    task, evaluation = raw.get("task", {}), raw.get("evaluation", {})
    analysis = raw.get("analysis", {})
    given = [f"task.{k}" for k in CELL_TASK_KEYS[1:] if k in task]
    given += [f"evaluation.{k}" for k in CELL_EVALUATION_KEYS if k in evaluation]
    given += [f"analysis.{k}" for k in CELL_ANALYSIS_KEYS if k in analysis]
    resolutions = cell_resolutions(task, fail)
    if resolutions is None:
        if given:
            fail(given[0], "needs task.resolutions (the cells)")
        return None
    data = task.get("data", "toy")
    final = None
    if "budget" in task:
        b = task["budget"]
        if not isinstance(b, dict) or set(b) != {"kind", "final_gflop"}:
            fail("task.budget", f"{b!r}; allowed: {{ kind = \"flops\", final_gflop = … }}")
        if b["kind"] not in BUDGET_KINDS:
            fail("task.budget.kind", f"{b['kind']!r}; allowed: {', '.join(BUDGET_KINDS)}")
        final = _resolution_table(b["final_gflop"], resolutions, "task.budget.final_gflop", fail,
                                  _number, "a number of GFLOP > 0")  # fmt: skip
        if "train_steps" in task:
            fail("task.train_steps", "with task.budget every arm's steps follow from its FLOPs")
    anytime = task.get("anytime", [1.0])
    ok = isinstance(anytime, list) and anytime and all(_number(f) and f <= 1 for f in anytime)
    if not ok or anytime != sorted(set(anytime)) or anytime[-1] != 1:
        fail("task.anytime", f"{anytime!r}; allowed: increasing fractions in (0, 1], ending at 1")
    if budget.eval_at:
        fail("evaluation.eval_at", "not with task.resolutions: the arms' steps differ; give "
                                   "task.anytime (fractions of each arm's own steps)")  # fmt: skip
    default = {n: detail_classifier(n) if data == "toy-detail" else None for n in resolutions}
    classifiers = default
    if "classifiers" in evaluation:
        classifiers = _resolution_table(
            evaluation["classifiers"], resolutions, "evaluation.classifiers", fail,
            lambda v: isinstance(v, str) and bool(v), "a classifier folder (string)",
        )  # fmt: skip
    crossover = _crossover(analysis.get("crossover"), raw, fail)
    scaling = analysis.get("scaling")
    if scaling is not None and (not isinstance(scaling, str) or not scaling):
        fail("analysis.scaling", f"{scaling!r}; allowed: a benchmark result file (JSON) path")
    plan = []
    for arm in arms:
        for n in resolutions:
            cell = replace(budget, resolution=n, data=None if data == "toy" else data)
            try:
                config = arm_config(arm.config, 0, cell, arm.overrides, arm.label)
            except ValueError as e:
                fail(f"arms.{arm.label}", f"cannot be built at {n}² ({e})")
            mac = forward_mac(config)
            step_flops = TRAIN_FLOPS_PER_MAC * mac * budget.batch_size
            steps = budget.train_steps if final is None else derived_steps(final[n], step_flops)
            where = f"task.budget.final_gflop.{n}"
            if steps < 1:
                fail(where, f"{final[n]!r} GFLOP is less than one step of {arm.label} "
                            f"({step_flops / 1e9:.4g} GFLOP)")  # fmt: skip
            evals = anytime_steps(anytime, steps)
            if len(evals) != len(anytime) or evals[0] < 1:
                fail("task.anytime", f"{anytime} of {arm.label}'s {steps} steps at {n}² gives "
                                     f"the steps {list(evals)}: a larger budget or fewer points")  # fmt: skip
            plan.append(CellPlan(arm.label, n, mac, step_flops, steps, evals))
    scaling_path = None if scaling is None else Path(folder) / scaling
    return ResolutionCells(tuple(resolutions), data, final, tuple(anytime), classifiers,
                 tuple(a.label for a in arms), tuple(plan), crossover, scaling_path)  # fmt: skip


def _crossover(value, raw: dict, fail) -> dict[str, tuple[str, ...]] | None:
    if value is None:
        return None
    metrics = raw.get("evaluation", {}).get("metrics")
    if not isinstance(value, dict) or not set(value) <= {"win", "not_worse"} or "win" not in value:
        fail("analysis.crossover", f"{value!r}; allowed: {{ win = [metrics], not_worse = [metrics] }}")
    out = {}
    for key in ("win", "not_worse"):
        names = value.get(key, [])
        if not isinstance(names, list) or (key == "win" and not names):
            fail(f"analysis.crossover.{key}", f"{names!r}; allowed: a list of metrics")
        for m in names:
            if m not in ALL_METRICS or (metrics is not None and m not in metrics):
                fail(f"analysis.crossover.{key}", f"{m!r}; allowed: a metric of evaluation.metrics")
        out[key] = tuple(names)
    return out


def cell_budget(cells: ResolutionCells, budget: ToyBudget, plan: CellPlan) -> ToyBudget:
    """The :class:`ToyBudget` of one arm in one cell: its steps, its anytime evaluation steps,
    the resolution, the data and the classifier."""
    return replace(
        budget,
        train_steps=plan.steps,
        eval_at=",".join(str(s) for s in plan.eval_steps[:-1]),
        resolution=plan.resolution,
        data=None if cells.data == "toy" else cells.data,
        classifier=cells.classifiers[plan.resolution],
    )


def expand(cells: ResolutionCells, arms, comparisons, budget: ToyBudget, arm_type, comparison_type):
    """The study's arms and comparisons, one per cell: arms ``ARM@n`` (each with its cell's
    budget), comparisons per cell with that cell's expected sign."""
    plans = {(p.arm, p.resolution): p for p in cells.plan}
    out_arms = tuple(
        arm_type(cell_label(a.label, n), a.config, a.overrides, a.seeds, base=a.label,
                 resolution=n, budget=cell_budget(cells, budget, plans[a.label, n]))  # fmt: skip
        for n in cells.resolutions
        for a in arms
    )

    def at(side, n):
        return cell_label(side, n) if isinstance(side, str) else tuple(cell_label(s, n) for s in side)

    out = []
    for n in cells.resolutions:
        for c in comparisons:
            expect = c.expect[str(n)] if isinstance(c.expect, dict) else c.expect
            out.append(comparison_type(at(c.x, n), at(c.y, n), f"{c.what} @ {n}²", expect))
    return out_arms, tuple(out)


def check_classifiers(study) -> None:
    """Refuse to start a cell study whose evaluation classifiers are not on this machine (before
    any training: a run that cannot be evaluated is not started)."""
    if study.resolution_cells is None:
        return
    for n, path in study.resolution_cells.classifiers.items():
        if path is None:
            continue
        folder = classifier_folder(path)
        if not (folder / "model.safetensors").is_file():
            data = "toy-detail" if study.resolution_cells.data == "toy-detail" else "toy"
            raise MissingWeightsError(
                f"{study.path}: the evaluation classifier for {n}² is not at {folder}; make it "
                f"with `hdit-edu classifier train --data {data} --resolution {n} --out {folder}`"
            )


# --- the analysis across cells ------------------------------------------------------------------


def anytime_curves(study, runs: dict) -> dict:
    """Per cell and arm: at each anytime evaluation, the training GFLOPs (exact, from the plan),
    the mean training CPU-seconds so far and each metric's :func:`t_interval` over seeds."""
    cells, out = study.resolution_cells, {}
    for plan in cells.plan:
        label = cell_label(plan.arm, plan.resolution)
        by_seed = runs.get(label, {})
        points = []
        for step, fraction in zip(plan.eval_steps, cells.anytime):
            evals = [e for r in by_seed.values() for e in r["evaluations"] if e["step"] == step]
            point = {"fraction": fraction, "step": step, "gflop": step * plan.step_flops / 1e9,
                     "n_seeds": len(evals)}  # fmt: skip
            if evals:
                point["train_cpu_s"] = t_interval([e["train_cpu_s_so_far"] for e in evals])
                for m in study.metrics:
                    values = [e[m] for e in evals if isinstance(e.get(m), (int, float))]
                    if len(values) == len(evals):
                        point[m] = t_interval(values)
            points.append(point)
        out.setdefault(str(plan.resolution), {})[plan.arm] = points
    return out


def _interpolate(points: list[dict], metric: str, cpu_s: float) -> float | None:
    """A curve's mean ``metric`` at ``cpu_s`` training CPU-seconds: linear in log CPU-seconds
    between the two evaluations around it; None outside the curve (no extrapolation)."""
    xs = [(p["train_cpu_s"]["mean"], p[metric]["mean"]) for p in points if metric in p]
    for (c0, v0), (c1, v1) in zip(xs, xs[1:]):
        if c0 <= cpu_s <= c1:
            if c1 == c0:
                return v0
            t = (math.log(cpu_s) - math.log(c0)) / (math.log(c1) - math.log(c0))
            return v0 + t * (v1 - v0)
    return None


def equal_cpu(study, curves: dict) -> list[dict]:
    """The equal-CPU-seconds reading of the anytime curves (:func:`anytime_curves`): per cell
    and comparison of two arms, at each of X's evaluations, Y's mean metric at X's mean
    training CPU-seconds (:func:`_interpolate`) and Y − X; points outside Y's curve are None.
    Means only: the curves' seeds are read at their own CPU-seconds, which differ."""
    out = []
    for c in study.comparisons:
        if not (isinstance(c.x, str) and isinstance(c.y, str)):
            continue  # a difference of differences has no curve
        (x, n), y = c.x.rsplit("@", 1), c.y.rsplit("@", 1)[0]
        cx, cy = curves[n][x], curves[n][y]
        for m in study.metrics:
            rows = []
            for p in cx:
                if m not in p:
                    continue
                at = _interpolate(cy, m, p["train_cpu_s"]["mean"])
                rows.append({"train_cpu_s": p["train_cpu_s"]["mean"], "x": p[m]["mean"], "y": at,
                             "y_minus_x": None if at is None else at - p[m]["mean"]})  # fmt: skip
            out.append({"what": c.what, "x": c.x, "y": c.y, "metric": m, "points": rows})
    return out


def _reads_better(row: dict, rule: str, side: int) -> bool:
    """Whether one metric's comparison row reads ``side`` (+1: Y, −1: X) better, by the study's
    reading rule: ``ci``, the row's verdict; ``holm``, significant with the mean on that side."""
    if rule == "ci":
        return row["verdict"] == ("better" if side == 1 else "worse")
    mean = row["difference"]["mean"]
    y_better = -ALL_METRICS[row["metric"]] * (1 if mean > 0 else -1 if mean < 0 else 0)
    return bool(row["significant"]) and y_better == side


def crossover(study, result: dict) -> dict:
    """The crossover reading, per base comparison: in each cell Y *wins* where every ``win``
    metric reads better for Y and no ``not_worse`` metric reads worse (X wins in the mirror
    case; else *not resolved*; rows read by the study's rule); the **crossover resolution** is
    the smallest tested n at which Y wins and wins at every larger tested n too (None: no
    crossover up to the largest tested n)."""
    cells, rule = study.resolution_cells, study.resolution_cells.crossover
    per_cell = len(study.comparisons) // len(cells.resolutions)
    out = []
    for i in range(per_cell):
        readings = {}
        for j, n in enumerate(cells.resolutions):
            what = study.comparisons[j * per_cell + i].what
            rows = {r["metric"]: r for r in result["comparisons"] if r["what"] == what}
            verdict = "not resolved"
            for side, name in ((1, "Y wins"), (-1, "X wins")):
                win = all(_reads_better(rows[m], study.rule, side) for m in rule["win"])
                safe = not any(_reads_better(rows[m], study.rule, -side) for m in rule["not_worse"])
                if win and safe:
                    verdict = name
            readings[str(n)] = verdict
        first = None
        for n in reversed(cells.resolutions):
            if readings[str(n)] != "Y wins":
                break
            first = n
        c = study.comparisons[i]
        out.append({
            "x": c.x.rsplit("@", 1)[0] if isinstance(c.x, str) else [s.rsplit("@", 1)[0] for s in c.x],
            "y": c.y.rsplit("@", 1)[0] if isinstance(c.y, str) else [s.rsplit("@", 1)[0] for s in c.y],
            "what": c.what.rsplit(" @ ", 1)[0], "readings": readings,
            "crossover_resolution": first, "rule": {k: list(v) for k, v in rule.items()},
            "reading_rule": study.rule,
        })  # fmt: skip
    return {"comparisons": out}


def scaling_exponents(path: Path, folder: Path) -> dict:
    """The ``exponent`` of each arm from a ``benchmarks/hourglass_vs_global.py`` result file
    (its ``summary``), with where each arm stopped, the file (relative to the study's
    ``folder``, so that a summary is the same in every clone) and its SHA-256."""
    if not path.is_file():
        raise ValueError(f"analysis.scaling: {path} does not exist; run the benchmark first")
    document = json.loads(path.read_text())
    summary = document["summary"]
    return {
        "exponent": {arm: s.get("exponent") for arm, s in summary.items()},
        "scaling": {"file": Path(os.path.relpath(path, folder)).as_posix(), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "stopped_at": {arm: s.get("stopped_at") for arm, s in summary.items()},
                    "resolutions": {arm: s.get("resolutions") for arm, s in summary.items()}},
    }  # fmt: skip


def analyze_study(study, runs: dict | None = None) -> dict:
    """:func:`hdit_edu.analysis.analyze` of a study, and for a cell study also ``cells`` (the
    plan: steps and GFLOPs per arm and cell), ``anytime`` (:func:`anytime_curves`),
    ``equal_cpu`` (:func:`equal_cpu`: the curves read at equal training CPU-seconds),
    ``crossover`` (:func:`crossover`, where the spec fixes its rule) and ``exponent`` /
    ``scaling`` (:func:`scaling_exponents`, where it names a benchmark file)."""
    runs = load_study_records(study) if runs is None else runs
    result = analyze(study, runs)
    cells = study.resolution_cells
    if cells is None:
        return result
    result["cells"] = {
        "resolutions": list(cells.resolutions), "data": cells.data,
        "final_gflop": None if cells.final_gflop is None else {str(k): v for k, v in cells.final_gflop.items()},
        "anytime": list(cells.anytime), "classifiers": {str(k): v for k, v in cells.classifiers.items()},
        "plan": [asdict(p) | {"gflop": p.gflop} for p in cells.plan],
    }  # fmt: skip
    result["anytime"] = anytime_curves(study, runs)
    result["equal_cpu"] = equal_cpu(study, result["anytime"])
    if cells.crossover is not None:
        result["crossover"] = crossover(study, result)
    if cells.scaling is not None:
        result |= scaling_exponents(cells.scaling, study.folder)
    return result


def plan_lines(study) -> list[str]:
    """The plan as a Markdown table: per arm and cell the forward GMAC per image, the GFLOPs
    per step, the steps, the GFLOPs they spend and the evaluation steps (fixed before any run)."""
    budget = study.resolution_cells.final_gflop
    lines = ["| arm | n² | budget GFLOP | forward GMAC/image | GFLOP/step | steps | GFLOP spent "
             "| evaluations at |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in study.resolution_cells.plan:
        cell = "–" if budget is None else f"{budget[p.resolution]:g}"
        lines.append(
            f"| {p.arm} | {p.resolution} | {cell} | {p.forward_mac / 1e9:.4g} | "
            f"{p.step_flops / 1e9:.4g} | {p.steps} | {p.gflop:.6g} | "
            f"{', '.join(map(str, p.eval_steps))} |"
        )
    return lines


def cells_markdown(result: dict, study) -> list[str]:
    """The cell study's part of ``summary.md``: the plan (steps and GFLOPs per arm and cell),
    each cell's anytime curve of the first metric, the crossover readings and the exponents."""
    lines = ["", "## ResolutionCells", "", *plan_lines(study)]
    metric = study.metrics[0]
    lines += ["", f"Anytime ({metric}, mean over seeds, at GFLOP | training CPU-s):", ""]
    for n, arms in result.get("anytime", {}).items():
        for arm, points in arms.items():
            shown = [
                f"{pt['gflop']:.3g} | {pt['train_cpu_s']['mean']:.3g} s: {pt[metric]['mean']:.4g}"
                for pt in points if metric in pt
            ]  # fmt: skip
            lines.append(f"- {arm} @ {n}²: " + ("; ".join(shown) or "no evaluations yet"))
    for c in (result.get("crossover") or {}).get("comparisons", []):
        where = c["crossover_resolution"]
        lines += ["", f"Crossover ({c['what']}; Y wins: {', '.join(c['rule']['win'])} better, "
                      f"{', '.join(c['rule'].get('not_worse', [])) or 'nothing'} not worse): "
                      + ", ".join(f"{n}²: {v}" for n, v in c["readings"].items())
                      + f" → {'from ' + str(where) + '²' if where else 'no crossover'}."]  # fmt: skip
    if "exponent" in result:
        lines += ["", f"Scaling exponents (∝ pixels^k, {result['scaling']['file']}): "
                      + "; ".join(f"{a}: {e}" for a, e in result["exponent"].items())]  # fmt: skip
    return lines
