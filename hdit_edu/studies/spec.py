"""The study file, ``study.toml`` (one per study folder): what a study asks, what it trains, how
it is measured and how its result will be read — all fixed before its first run (§5.2's
ablations are the model: seed-paired arms, one budget, one evaluation).

A spec is TOML (``tomllib``), validated once by :func:`load_study` with messages that name the
field and what is allowed. Every field, with its default::

    question = "Does axial RoPE beat additive positions at toy scale?"   # required
    seeds = [0, 1, 2]                        # required: every arm's seeds (paired by seed)
    arms = ["C", "D"]                        # required: registry names, or a table (below)
    extra_seeds = { D = [3, 4] }             # more seeds for some arms (default none)
    records = "runs"                         # the records' folder, relative to this file;
                                             # or a list: new runs go to the first, the
                                             # others are read (another study's records)
    checkpoints = "runs/studies/NAME"        # run folders, relative to the working dir
                                             # (default: NAME = this file's folder name)

    [arms]                                   # the table form of ``arms``: label → arm
    C = "C"                                  #   a registry name (label = name) ...
    D5 = { config = "D", set = ["model.levels.0.kernel_size=5"] }   # ... or base + --set

    [task]                                   # what every arm trains on, with one budget
    data = "toy"                             # the 32×32 toy set, or "toy-detail" (detail drawn
                                             #   at the resolution: toy_detail.ToyDetailDataset)
    # resolutions, budget, anytime: the study's cells (one per resolution, equal FLOPs per
    # cell, anytime evaluations) — see hdit_edu.studies.resolutions; with them also
    # evaluation.classifiers, analysis.crossover, analysis.scaling and a per-resolution expect
    task = "p4k3"                            # toy task: presets.TOY_TASKS (patch, kernel, window)
    train_steps = 20000
    batch_size = 16
    lr = 5e-4                                # optional; omitted: Table 6's 5e-4

    [evaluation]                             # ablation.ToyBudget's fields; defaults are its
    n_eval = 2048                            #   (the toy ablation's pre-registered protocol)
    n_loss = 2048
    loss_weighting = "soft-min-snr"
    sampler = "dpmpp_3m_sde"
    sample_steps = 50
    cfg = 3.0
    sample_batch = 64
    ddpm_steps = 250                         # a DDPM arm's (R1's) sampler steps: DiT's
                                             #   ancestral sampler (sampler / sample_steps
                                             #   are the EDM arms')
    eval_at = ""                             # extra evaluations: "5000,10000"
    n_eval_mid = 256
    # eval_seed omitted: 1000 + seed
    metrics = ["fid", "class_accuracy", "heldout_loss"]   # the final evaluation's keys
    select_cfg = [1.0, 1.5, 2.0, 3.0, 4.0]   # optional: each arm's own guidance scale, chosen
    n_select = 512                           #   on selection noise (seed 2000 + seed), scored
                                             #   on the test noise; adds the metrics
                                             #   fid_selected, class_accuracy_selected
    loss_profile = false                     # the unweighted error per σ band and the loss
                                             #   under each arm's own weighting (512 test
                                             #   images): error_low / _mid / _high,
                                             #   heldout_loss_own
    fid_ae = false                           # toy FID in a second, label-free feature space
                                             #   (hdit_edu.toy_autoencoder): metric fid_ae on
                                             #   the test noise's samples at cfg, drawn again
                                             #   (only if listed in metrics); with select_cfg
                                             #   also fid_ae_selected (and per w, frontier)

    [analysis]
    comparisons = [["C", "D", "+ axial RoPE", "better"]]  # [X, Y, what(, expect)]: Y − X
    # X or Y may be a pair [A, B]: the per-seed difference B − A; so an interaction is
    # [["C-smsnr", "E"], ["C", "D"], "(D − C) − (E − C-smsnr)", "none"]
    correction = "holm"                      # "holm" | "none"
    family = "metric"                        # Holm over the comparisons of one metric, or
                                             #   "comparison": over the metrics of one
    rule = "holm"                            # reading rule, fixed in advance:
        # "holm": a comparison is *significant* where its corrected p < 0.05, and its sign
        #         is read against the expected one;
        # "ci":   *better* / *worse* (Y against X) where the 95 % CI of Y − X excludes 0,
        #         else *not resolved* (stats.ci_verdict)

    [reference]                              # optional: outside numbers the arms are read
    name = "paper"                           #   against, e.g. the paper's FIDs: the expected
    metric = "fid"                           #   sign of a comparison without ``expect`` is
    label = "paper FID"                      #   the sign of values[Y] − values[X]
    values = { C = 44.36, D = 41.41 }
    rank = ["C", "D"]                        # Kendall's τ-b of values vs our means of metric

    [options]
    compile = false                          # torch.compile every arm (training.compile)
    cross_cpu = false                        # true: seed-paired arms may come from different
                                             #   CPU kinds; "seeds": each seed's runs from one

    [cells]                                  # optional: an EVALUATION-ONLY study (no training;
                                             #   hdit_edu.studies.cells): each arm's trained
                                             #   checkpoints measured at a grid of cells
    cfg = [1.0, 1.5, 2.0, 3.0, 4.0]          # the axes, any of them (one cell per combination):
    resolution = [24, 32, 48, 64]            #   guidance scale, sampling side, position reading
    positions = ["normalised", "grid"]       #   (hdit_edu.rope), σ shift; at train_resolution
    shift = [false, true]                    #   the reading and the shift are the training
    train_resolution = 32                    #   ones: one cell there (normalised, no shift)
    n = 512                                  # samples per cell (classes in turn, noise seed
                                             #   1000 + seed; [evaluation]'s sampler,
                                             #   sample_steps, sample_batch, and cfg unless an axis)
    coherence = false                        # add coherence (toy.toy_coherence) to the metrics
    diversity = false                        # add FID's mean term and the features' spread
    checkpoints = { C = "runs/x/C-s{seed}" } # each arm's run folder, {seed} filled in
    analysis = "from-base"                   # "best-cell": each arm at its own best cfg (best
                                             #   mean of the first metric), the comparisons there
                                             #   and at every cfg, the verdict from the first
                                             #   comparison's CI; "from-base": per cell the paired
                                             #   differences and those of the change from the
                                             #   training cell (ΔΔ), read by stats.ci_verdict
    effects = ["shift"]                      # from-base: a boolean axis's own effect per arm
    post_hoc = { why = "...", floors = { class_accuracy = 0.125 } }
                                             # from-base, labelled post hoc: the fraction of the
                                             #   training cell's level kept above each floor
    describe = ["fid", "fid_mean_term"]      # best-cell: the means table's measured keys
    real = [512, 2048]                       # best-cell: n real training images (classes in
                                             #   turn) through the same metrics, for scale

A cell study's ``evaluation.metrics`` may also hold ``coherence`` (:data:`CELL_METRICS`); its
records are ``LABEL-sSEED.json`` holding ``cells``, cell key → measurements (the key joins the
axes' values: ``24-grid-shift``, ``w1.5``; a list of cells, as the guidance sweep's records
hold them, is read too). Its ``[analysis]`` needs its comparisons; ``correction``, ``family``
and ``rule`` do not apply (the cell analyses read every interval by its 95 % CI).

``expect`` is ``"better"`` (Y is expected to be better than X), ``"worse"`` or ``"none"``.
A study needs an expected sign for every comparison, from ``expect`` or the reference.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..ablation import ToyBudget
from ..analysis import ALL_METRICS, EXPECT, METRICS
from ..presets import TOY_TASKS, config_names
from .resolutions import (
    CELL_ANALYSIS_KEYS,
    CELL_EVALUATION_KEYS,
    CELL_TASK_KEYS,
    ResolutionCells,
    cell_resolutions,
    expand,
    parse_cells,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser as a package (pyproject's dependencies)
    import tomli as tomllib

SPEC_NAMES = ("study.toml",)
DATA = ("toy", "toy-detail")
CORRECTIONS = ("holm", "none")
FAMILIES = ("metric", "comparison")
RULES = ("holm", "ci")
TOP_KEYS = (
    "question",
    "seeds",
    "arms",
    "extra_seeds",
    "records",
    "checkpoints",
    "task",
    "evaluation",
    "analysis",
    "reference",
    "options",
    "cells",
)
SELECTION_KEYS = ("metrics", "select_cfg", "n_select", "loss_profile", "fid_ae")
EVALUATION_KEYS = (
    "n_eval",
    "n_eval_mid",
    "eval_at",
    "n_loss",
    "loss_weighting",
    "sampler",
    "sample_steps",
    "cfg",
    "sample_batch",
    "eval_seed",
    "ddpm_steps",
)


# A cell study (``[cells]``): its axes in key order, its analyses, the metrics it may compare.
CELL_AXES = ("resolution", "positions", "shift", "cfg")
CELL_ANALYSES = ("best-cell", "from-base")
CELL_METRICS = {"coherence": -1}  # -1: higher is better (analysis.ALL_METRICS' convention)
CELL_KEYS = (*CELL_AXES, "train_resolution", "n", "coherence", "diversity", "checkpoints",
             "analysis", "effects", "post_hoc", "describe", "real")  # fmt: skip


class SpecError(ValueError):
    """A study file that cannot be used: the message names the file, the field, what it holds
    and what is allowed."""


@dataclass(frozen=True)
class Arm:
    """One arm: its ``label`` (records ``LABEL-sSEED.json``), the registry ``config`` it builds
    on, the ``overrides`` (``--set`` assignments) and its ``seeds``."""

    label: str
    config: str
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    base: str = ""  # a cell's arm (studies.resolutions): the spec's arm label ...
    resolution: int | None = None  # ... its cell's resolution ...
    budget: ToyBudget | None = None  # ... and its own budget (None: the study's)


@dataclass(frozen=True)
class Comparison:
    """Y − X, paired by seed; ``expect`` is the expected direction (:data:`EXPECT`), or None
    where it comes from the reference."""

    x: str | tuple[str, str]  # an arm, or a pair (A, B): the per-seed difference B − A
    y: str | tuple[str, str]
    what: str
    expect: str | dict[str, str] | None = None  # a dict: per resolution (before the cells' expansion)


@dataclass(frozen=True)
class Reference:
    """Outside numbers per arm (e.g. the paper's FIDs), read against ``metric``."""

    name: str
    metric: str
    label: str
    values: dict[str, float]
    rank: tuple[str, ...] = ()


@dataclass(frozen=True)
class CellGrid:
    """An evaluation-only study's grid (``[cells]``): ``axes`` (name → values, in
    :data:`CELL_AXES` order) and how its records are measured and analysed."""

    axes: dict[str, tuple]
    n: int
    analysis: str
    checkpoints: dict[str, str]
    train_resolution: int = 32
    coherence: bool = False
    diversity: bool = False
    effects: tuple[str, ...] = ()
    post_hoc: dict | None = None  # {"why": str, "floors": {metric: floor}}
    describe: tuple[str, ...] = ()
    real: tuple[int, ...] = ()

    def cells(self) -> list[dict]:
        """Every cell (axis → value); at the training resolution one reading and no shift."""
        out: list[dict] = [{}]
        for name, values in self.axes.items():
            out = [c | {name: v} for c in out for v in values]
        seen, cells = set(), []
        for c in out:
            if c.get("resolution") == self.train_resolution:
                c |= {k: v for k, v in (("positions", "normalised"), ("shift", False))
                      if k in self.axes}  # fmt: skip
            if self.key(c) not in seen:
                seen.add(self.key(c))
                cells.append(c)
        return cells

    def key(self, cell: dict) -> str:
        """The cell's name: its axes' values joined by ``-`` (``24-grid-shift``, ``w1.5``)."""
        parts = {
            "resolution": lambda v: str(v),
            "positions": str,
            "shift": lambda v: "shift" if v else "noshift",
            "cfg": lambda v: f"w{v:g}",
        }
        return "-".join(parts[a](cell[a]) for a in self.axes)

    @property
    def base(self) -> dict:
        """The training cell (from-base's reference): the training resolution, its reading."""
        return next(c for c in self.cells() if c.get("resolution") == self.train_resolution)


@dataclass(frozen=True)
class Study:
    """A validated ``study.toml`` (see the module docstring for the fields)."""

    path: Path
    question: str
    arms: tuple[Arm, ...]
    budget: ToyBudget
    metrics: tuple[str, ...]
    comparisons: tuple[Comparison, ...]
    correction: str = "holm"
    family: str = "metric"
    rule: str = "holm"
    reference: Reference | None = None
    compile: bool = False
    cross_cpu: bool | str = False  # True, False or "seeds" (each seed's runs on one CPU kind)
    select_cfg: tuple[float, ...] = ()  # guidance scales each arm chooses from (none: cfg)
    n_select: int = 512
    loss_profile: bool = False  # add protocol.loss_profile's metrics
    fid_ae: bool = False  # add the FID in the autoencoder's features (metric fid_ae)
    records: Path = field(default=Path("runs"))  # where new records are written
    read_records: tuple[Path, ...] = ()  # every folder records are read from (records first)
    checkpoints: Path = field(default=Path("runs/studies"))
    data: str = "toy"
    resolution_cells: ResolutionCells | None = None  # one cell per resolution (studies.resolutions); arms are ARM@n then
    cells: CellGrid | None = None  # an evaluation-only study's grid ([cells])

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        return self.folder.name

    def arm(self, label: str) -> Arm:
        for a in self.arms:
            if a.label == label:
                return a
        raise KeyError(label)

    def runs(self) -> list[tuple[Arm, int]]:
        """Every (arm, seed), seed-major: every arm at a seed before the next seed, so that a
        part-finished study holds whole seeds of paired comparisons."""
        seeds = sorted({s for a in self.arms for s in a.seeds})
        return [(a, s) for s in seeds for a in self.arms if s in a.seeds]


def spec_hash(path: str | Path) -> str:
    """SHA-256 of the spec file's bytes (any change, even of a comment, is a change)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_study(path: str | Path) -> Study:
    """Read and validate a study file (or a folder holding ``study.toml``)."""
    path = Path(path)
    if path.is_dir():
        path = path / SPEC_NAMES[0]
    if not path.is_file():
        raise SpecError(f"{path}: no such study file; allowed: a study.toml or its folder")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: not valid TOML ({e})") from None
    return parse_study(raw, path)


def parse_study(raw: dict[str, Any], path: Path) -> Study:
    """The :class:`Study` of a parsed TOML document ``raw`` (``path``: where it lives)."""
    where = str(path)

    def fail(key: str, message: str):
        raise SpecError(f"{where}: {key}: {message}")

    _known(raw, TOP_KEYS, "", fail)
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        fail("question", f"{question!r}; allowed: a non-empty string (what the study asks)")
    seeds = _seeds(raw.get("seeds"), "seeds", fail)
    extra = raw.get("extra_seeds", {})
    if not isinstance(extra, dict):
        fail("extra_seeds", f"{extra!r}; allowed: a table label → list of seeds")
    arms = _arms(raw.get("arms"), seeds, extra, fail)
    labels = [a.label for a in arms]
    for label in extra:
        if label not in labels:
            fail(f"extra_seeds.{label}", f"not an arm; allowed: {', '.join(labels)}")

    task = raw.get("task", {})
    _known(task, ("data", "task", "train_steps", "batch_size", "lr", *CELL_TASK_KEYS), "task", fail)
    data = task.get("data", "toy")
    if data not in DATA:
        fail("task.data", f"{data!r}; allowed: {', '.join(DATA)}")
    evaluation = raw.get("evaluation", {})
    _known(evaluation, (*EVALUATION_KEYS, *SELECTION_KEYS, *CELL_EVALUATION_KEYS), "evaluation", fail)
    plain_task = {k: v for k, v in task.items() if k not in CELL_TASK_KEYS}
    budget = _budget(plain_task, {k: v for k, v in evaluation.items() if k in EVALUATION_KEYS}, fail)
    select_cfg = evaluation.get("select_cfg", [])
    ok = isinstance(select_cfg, list) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
        for w in select_cfg
    )
    if not ok or len(set(select_cfg)) != len(select_cfg):
        fail("evaluation.select_cfg", f"{select_cfg!r}; allowed: a list of distinct numbers")
    n_select = evaluation.get("n_select", 512)
    if not isinstance(n_select, int) or isinstance(n_select, bool) or n_select < 1:
        fail("evaluation.n_select", f"{n_select!r}; allowed: an integer > 0")
    metrics = tuple(evaluation.get("metrics", tuple(METRICS)))
    allowed_metrics = ALL_METRICS | (CELL_METRICS if "cells" in raw else {})
    for m in metrics:
        if m not in allowed_metrics:
            fail("evaluation.metrics", f"{m!r}; allowed: {', '.join(allowed_metrics)}")
    if not metrics:
        fail("evaluation.metrics", "empty; allowed: one or more of " + ", ".join(METRICS))
    loss_profile = evaluation.get("loss_profile", False)
    if not isinstance(loss_profile, bool):
        fail("evaluation.loss_profile", f"{loss_profile!r}; allowed: true or false")
    fid_ae = evaluation.get("fid_ae", False)
    if not isinstance(fid_ae, bool):
        fail("evaluation.fid_ae", f"{fid_ae!r}; allowed: true or false")
    for m in ("fid_ae", "fid_ae_selected"):
        if m in metrics and not fid_ae:
            fail("evaluation.metrics", f"{m!r} needs evaluation.fid_ae = true")
    for m in metrics:
        if (m.startswith("error_") or m.endswith("_own")) and not loss_profile:
            fail("evaluation.metrics", f"{m!r} needs evaluation.loss_profile = true")
        if m.endswith("_selected") and not select_cfg:
            fail("evaluation.metrics", f"{m!r} needs evaluation.select_cfg (the scales to choose from)")
        if m == "detail_distance" and data != "toy-detail":
            fail("evaluation.metrics", f"{m!r} needs task.data = \"toy-detail\"")
        if m == "coherence" and data != "toy-detail" and "cells" not in raw:  # [cells]: its own
            fail("evaluation.metrics", f"{m!r} needs task.data = \"toy-detail\"")
    if fid_ae and data != "toy":
        fail("evaluation.fid_ae", f"not with task.data = {data!r} (its reference is the toy set)")

    reference = _reference(raw.get("reference"), labels, metrics, fail)
    analysis = raw.get("analysis", {})
    _known(analysis, ("comparisons", "correction", "family", "rule", *CELL_ANALYSIS_KEYS),
           "analysis", fail)  # fmt: skip
    resolutions = cell_resolutions(task, fail)
    comparisons = _comparisons(analysis.get("comparisons"), labels, reference, fail, resolutions)
    choices = {}
    for key, allowed, default in (
        ("correction", CORRECTIONS, "holm"),
        ("family", FAMILIES, "metric"),
        ("rule", RULES, "holm"),
    ):
        choices[key] = analysis.get(key, default)
        if choices[key] not in allowed:
            fail(f"analysis.{key}", f"{choices[key]!r}; allowed: {', '.join(allowed)}")

    options = raw.get("options", {})
    _known(options, ("compile", "cross_cpu"), "options", fail)
    if not isinstance(options.get("compile", False), bool):
        fail("options.compile", f"{options['compile']!r}; allowed: true or false")
    cross_cpu = options.get("cross_cpu", False)
    if not (isinstance(cross_cpu, bool) or cross_cpu == "seeds"):
        fail("options.cross_cpu", f"{cross_cpu!r}; allowed: true, false or \"seeds\"")
    if "checkpoints" in raw and (not isinstance(raw["checkpoints"], str) or not raw["checkpoints"]):
        fail("checkpoints", f"{raw['checkpoints']!r}; allowed: a folder path (string)")
    records = raw.get("records", "runs")
    records = [records] if isinstance(records, str) else records
    if not isinstance(records, list) or not records or not all(
        isinstance(r, str) and r for r in records
    ):
        fail("records", f"{raw['records']!r}; allowed: a folder path or a list of them")
    folder = path.parent
    cells = parse_cells(raw, arms, budget, folder, fail)
    if cells is not None:
        if reference is not None:
            fail("reference", "not with task.resolutions (a reference has no cells)")
        arms, comparisons = expand(cells, arms, comparisons, budget, Arm, Comparison)
    return Study(
        path=path,
        question=question.strip(),
        arms=arms,
        budget=budget,
        metrics=metrics,
        comparisons=comparisons,
        reference=reference,
        compile=options.get("compile", False),
        cross_cpu=options.get("cross_cpu", False),
        select_cfg=tuple(float(w) for w in select_cfg),
        n_select=n_select,
        loss_profile=loss_profile,
        fid_ae=fid_ae,
        records=folder / records[0],
        read_records=tuple(folder / r for r in records),
        checkpoints=Path(raw.get("checkpoints", f"runs/studies/{folder.resolve().name}")),
        data=data,
        resolution_cells=cells,
        cells=_cells(raw["cells"], arms, metrics, fail) if "cells" in raw else None,
        **choices,
    )


def _known(table: Any, allowed: tuple[str, ...], where: str, fail) -> None:
    if not isinstance(table, dict):
        fail(where or "(top level)", f"{table!r}; allowed: a table")
    for key in table:
        if key not in allowed:
            name = f"{where}.{key}" if where else key
            fail(name, f"unknown field; allowed: {', '.join(allowed)}")


def _seeds(value: Any, key: str, fail) -> tuple[int, ...]:
    ok = isinstance(value, list) and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value
    )
    if not ok or not value or len(set(value)) != len(value):
        fail(key, f"{value!r}; allowed: a non-empty list of distinct integers ≥ 0")
    return tuple(value)


def known_configs() -> tuple[str, ...]:
    """The configuration names an arm may build on: every name of the one registry
    (:mod:`hdit_edu.presets`), moved onto the toy task by :func:`hdit_edu.ablation.run_config`."""
    return config_names()


def _arms(value: Any, seeds, extra: dict, fail) -> tuple[Arm, ...]:
    if isinstance(value, list):
        value = {name: name for name in value}
    if not isinstance(value, dict) or not value:
        fail("arms", f"{value!r}; allowed: a list of registry names or a table label → arm")
    names = known_configs()
    arms = []
    for label, arm in value.items():
        if isinstance(arm, str):
            arm = {"config": arm}
        if not isinstance(arm, dict):
            fail(f"arms.{label}", f"{arm!r}; allowed: a registry name or {{config, set}}")
        _known(arm, ("config", "set"), f"arms.{label}", fail)
        config, sets = arm.get("config"), arm.get("set", [])
        if config not in names:
            fail(f"arms.{label}.config", f"{config!r}; allowed: {', '.join(names)}")
        if not isinstance(sets, list) or not all(isinstance(s, str) and "=" in s for s in sets):
            fail(f"arms.{label}.set", f"{sets!r}; allowed: a list of KEY=VALUE strings")
        if not sets and label != config:
            fail(f"arms.{label}", f"label differs from its config {config!r} without a change")
        if sets and label in names:
            fail(f"arms.{label}", "a changed arm needs its own label, not a registry name")
        more = _seeds(extra[label], f"extra_seeds.{label}", fail) if label in extra else ()
        if set(more) & set(seeds):
            fail(f"extra_seeds.{label}", f"{list(more)} repeats a seed of seeds {list(seeds)}")
        arms.append(Arm(label, config, tuple(sets), (*seeds, *more)))
    return tuple(arms)


def _budget(task: dict, evaluation: dict, fail) -> ToyBudget:
    kinds = {f.name: f.type for f in fields(ToyBudget)}
    values = {k: v for k, v in task.items() if k != "data"}
    values |= {k: v for k, v in evaluation.items() if k != "metrics"}
    if values.get("task", ToyBudget.task) not in TOY_TASKS:
        fail("task.task", f"{values['task']!r}; allowed: {', '.join(TOY_TASKS)}")
    for key, value in values.items():
        section = "task" if key in task else "evaluation"
        kind = kinds[key]
        if "int" in kind and "float" not in kind:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            ok = ok or (key == "eval_seed" and isinstance(value, int) and value >= 0)
            allowed = "an integer ≥ 0" if key == "eval_seed" else "an integer > 0"
        elif "float" in kind:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and (value > 0 or key == "cfg")
            allowed = "a finite number" + ("" if key == "cfg" else " > 0")
        else:
            ok, allowed = isinstance(value, str), "a string"
        if not ok:
            fail(f"{section}.{key}", f"{value!r}; allowed: {allowed}")
    if "cfg" in values:
        values["cfg"] = float(values["cfg"])
    if "lr" in values:
        values["lr"] = float(values["lr"])
    return ToyBudget(**values)


def _reference(value: Any, labels: list[str], metrics, fail) -> Reference | None:
    if value is None:
        return None
    _known(value, ("name", "metric", "label", "values", "rank"), "reference", fail)
    name, metric = value.get("name", "reference"), value.get("metric", metrics[0])
    if not isinstance(name, str) or not name.isidentifier():
        fail("reference.name", f"{name!r}; allowed: a word (letters, digits, _)")
    if metric not in metrics:
        fail("reference.metric", f"{metric!r}; allowed: {', '.join(metrics)}")
    values = value.get("values")
    ok = isinstance(values, dict) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()
    )
    if not ok or not values:
        fail("reference.values", f"{values!r}; allowed: a table arm → number")
    rank = tuple(value.get("rank", ()))
    for label in (*values, *rank):
        if label not in labels:
            fail("reference", f"{label!r} is not an arm; allowed: {', '.join(labels)}")
    for label in rank:
        if label not in values:
            fail("reference.rank", f"{label!r} has no reference value")
    label = value.get("label", f"{name} {metric}")
    return Reference(name, metric, label, dict(values), rank)


def _comparisons(value: Any, labels, reference, fail, resolutions=None) -> tuple[Comparison, ...]:
    if value == [] and len(labels) == 1:  # one arm, nothing to compare: said explicitly
        return ()  # (`hdit-edu ablate toy --configs C`'s study describes C's runs only)
    if not isinstance(value, list) or not value:
        fail("analysis.comparisons", f"{value!r}; allowed: a list of [X, Y, what(, expect)]")
    out = []
    for i, item in enumerate(value):
        key = f"analysis.comparisons[{i}]"
        if isinstance(item, dict):
            _known(item, ("x", "y", "what", "expect"), key, fail)
            item = [item.get("x"), item.get("y"), item.get("what", ""), item.get("expect")]
        if not isinstance(item, list) or len(item) not in (3, 4):
            fail(key, f"{item!r}; allowed: [X, Y, what] or [X, Y, what, expect]")
        x, y, what, expect = (*item, None)[:4]
        for side in (x, y):
            arms = side if isinstance(side, list) else [side]
            if isinstance(side, list) and (len(side) != 2 or side[0] == side[1]):
                fail(key, f"{side!r}; allowed: an arm or a pair [A, B] of two arms (B − A)")
            for arm in arms:
                if arm not in labels:
                    fail(key, f"{arm!r} is not an arm; allowed: {', '.join(labels)}")
        if x == y:
            fail(key, f"compares {x!r} with itself")
        x, y = (tuple(s) if isinstance(s, list) else s for s in (x, y))
        if expect is None and (isinstance(x, tuple) or isinstance(y, tuple)):
            fail(key, "a comparison of differences needs expect (better/worse/none)")
        if not isinstance(what, str):
            fail(key, f"what={what!r}; allowed: a string")
        if isinstance(expect, dict) and resolutions:  # one sign per cell (studies.resolutions)
            if set(expect) != {str(n) for n in resolutions} or not all(
                e in EXPECT for e in expect.values()
            ):
                fail(key, f"expect={expect!r}; allowed: {{ n = better/worse/none }} for each of "
                          f"the resolutions {resolutions}")  # fmt: skip
        elif expect is not None and (not isinstance(expect, str) or expect not in EXPECT):
            fail(key, f"expect={expect!r}; allowed: {', '.join(EXPECT)}")
        if expect is None and not (reference and x in reference.values and y in reference.values):
            fail(key, "no expected sign: give expect (better/worse/none) or reference values")
        out.append(Comparison(x, y, what, expect))
    return tuple(out)


def _cells(value: Any, arms: tuple[Arm, ...], metrics: tuple[str, ...], fail) -> CellGrid:
    """The ``[cells]`` table of an evaluation-only study (module docstring)."""
    _known(value, CELL_KEYS, "cells", fail)
    axes = {}
    kinds = {"resolution": (int, "integers ≥ 8"), "positions": (str, "'normalised' or 'grid'"),
             "shift": (bool, "true / false"), "cfg": ((int, float), "finite numbers")}  # fmt: skip
    for name in CELL_AXES:
        if name not in value:
            continue
        values, (kind, allowed) = value[name], kinds[name]
        ok = isinstance(values, list) and values and len(set(values)) == len(values)
        ok = ok and all(isinstance(v, kind) and (kind is bool or not isinstance(v, bool))
                        for v in values)  # fmt: skip
        ok = ok and (name != "resolution" or all(v >= 8 for v in values))
        ok = ok and (name != "positions" or set(values) <= {"normalised", "grid"})
        ok = ok and (name != "cfg" or all(math.isfinite(v) for v in values))
        if not ok:
            fail(f"cells.{name}", f"{values!r}; allowed: a list of distinct {allowed}")
        axes[name] = tuple(float(v) for v in values) if name == "cfg" else tuple(values)
    if not axes:
        fail("cells", f"no axis; allowed: one or more of {', '.join(CELL_AXES)}")
    for key in ("n", "train_resolution"):
        v = value.get(key, 32 if key == "train_resolution" else None)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            fail(f"cells.{key}", f"{v!r}; allowed: an integer > 0")
    for key in ("coherence", "diversity"):
        if not isinstance(value.get(key, False), bool):
            fail(f"cells.{key}", f"{value[key]!r}; allowed: true or false")
    if "coherence" in metrics and not value.get("coherence", False):
        fail("evaluation.metrics", "'coherence' needs cells.coherence = true")
    analysis = value.get("analysis")
    if analysis not in CELL_ANALYSES:
        fail("cells.analysis", f"{analysis!r}; allowed: {', '.join(CELL_ANALYSES)}")
    if analysis == "best-cell" and list(axes) != ["cfg"]:
        fail("cells", f"best-cell chooses among guidance scales: axes {list(axes)}; allowed: cfg only")
    if analysis == "from-base" and "resolution" not in axes:
        fail("cells", "from-base needs a resolution axis (its base: the training resolution)")
    checkpoints = value.get("checkpoints", {})
    labels = [a.label for a in arms]
    if not isinstance(checkpoints, dict) or not all(
        k in labels and isinstance(v, str) for k, v in checkpoints.items()
    ):
        fail("cells.checkpoints", f"{checkpoints!r}; allowed: a table arm → run folder ({{seed}})")
    effects = tuple(value.get("effects", ()))
    for axis in effects:
        if axis != "shift" or axis not in axes or analysis != "from-base":
            fail("cells.effects", f"{axis!r}; allowed: 'shift' (an axis) with from-base")
    post_hoc = value.get("post_hoc")
    if post_hoc is not None:
        _known(post_hoc, ("why", "floors"), "cells.post_hoc", fail)
        floors = post_hoc.get("floors", {})
        if not isinstance(post_hoc.get("why"), str) or not isinstance(floors, dict) or not all(
            m in metrics and isinstance(f, (int, float)) for m, f in floors.items()
        ) or analysis != "from-base":
            fail("cells.post_hoc", f"{post_hoc!r}; allowed: {{why = TEXT, floors = {{METRIC = "
                 "NUMBER}}}} with from-base")  # fmt: skip
        post_hoc = {"why": post_hoc["why"], "floors": {m: float(f) for m, f in floors.items()}}
    describe, real = tuple(value.get("describe", ())), tuple(value.get("real", ()))
    if not all(isinstance(d, str) for d in describe):
        fail("cells.describe", f"{list(describe)!r}; allowed: a list of measured keys")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in real):
        fail("cells.real", f"{list(real)!r}; allowed: a list of integers > 0")
    return CellGrid(
        axes=axes,
        n=value["n"],
        analysis=analysis,
        checkpoints=dict(checkpoints),
        train_resolution=value.get("train_resolution", 32),
        coherence=value.get("coherence", False),
        diversity=value.get("diversity", False),
        effects=effects,
        post_hoc=post_hoc,
        describe=describe,
        real=real,
    )
