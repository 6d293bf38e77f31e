"""The analysis of a study's records (§5.2's ablation tables, read with their uncertainty):
per arm and metric the mean over seeds with its 95 % t interval; per comparison and metric the
seed-paired difference Y − X with its interval and paired t-test; the multiplicity correction;
the expected sign; the reading rule; Kendall's τ-b against a reference ranking; the CPU cost.

:func:`analyze_runs` is the whole analysis on plain arguments (the toy ablation's
:func:`hdit_edu.ablation.analyze` calls it with the paper's chain); :func:`analyze` reads a
:class:`~hdit_edu.studies.spec.Study`'s records and calls it with the study's fields. The result
is plain JSON (``summary.json``): ``n_runs``, ``table``, ``comparisons``, ``kendall_tau``,
``cost``. A record counts only when it is complete (:func:`complete`); seed-paired arms must
come from one CPU kind unless the study allows otherwise (the same seed on another CPU kind is
another model: :data:`hdit_edu.ablation.CROSS_CPU_RTOL`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .env import cpu_kind_label, same_cpu_kind
from .stats import ALPHA, ci_verdict, holm, kendall_tau, paired_difference, t_interval

METRICS = {"fid": +1, "class_accuracy": -1, "heldout_loss": +1}  # +1: lower is better
METRIC_LABELS = {
    "fid": "toy FID",
    "class_accuracy": "class accuracy",
    "heldout_loss": "held-out loss",
}
# Measured at each arm's own guidance scale (protocol.select_guidance; a study with
# evaluation.select_cfg): the test noise's numbers at the w the selection noise chose.
SELECTED_METRICS = {"fid_selected": +1, "class_accuracy_selected": -1}
# The losses that favour no arm's weighting (protocol.loss_profile; evaluation.loss_profile):
# the unweighted error per σ band and the held-out loss under the arm's own weighting.
PROFILE_METRICS = {"error_low": +1, "error_mid": +1, "error_high": +1, "heldout_loss_own": +1}
# Toy FID in a second feature space, a label-free autoencoder's (evaluation.fid_ae): a
# sample cannot score well on it merely by being prototypical for the toy classifier.
FEATURE_METRICS = {"fid_ae": +1, "fid_ae_selected": +1}
# The layout's coherence and the fine detail (task.data = "toy-detail", issue 30): one whole
# object of the right class, and the spectrum distance to real images above 1/8 cycle/pixel.
DETAIL_METRICS = {"coherence": -1, "detail_distance": +1}
ALL_METRICS = METRICS | SELECTED_METRICS | PROFILE_METRICS | FEATURE_METRICS | DETAIL_METRICS
METRIC_LABELS |= {
    "fid_selected": "toy FID at own best w",
    "class_accuracy_selected": "class accuracy at own best w",
    "error_low": "unweighted error, σ ≤ 0.2",
    "error_mid": "unweighted error, σ 0.5–5",
    "error_high": "unweighted error, σ ≥ 10",
    "heldout_loss_own": "held-out loss, own weighting",
    "fid_ae": "FID, autoencoder features",
    "fid_ae_selected": "FID, autoencoder features, at own best w",
    "coherence": "coherence",
    "detail_distance": "detail distance (decades)",
}
# The expected direction of Y against X, times a metric's lower-is-better sign.
EXPECT = {"better": -1, "worse": +1, "none": 0}
# Settings in which two records of one study may differ (not the budget).
NOT_BUDGET = {"config", "seed", "eval_seed", "out", "resume", "overrides"}


# Budget settings added after records were made, with the value those records ran with (a
# record without ddpm_steps had no DDPM arm: every run of it sampled as before).
ADDED_SETTINGS = {"ddpm_steps": 250}  # ddpm.SAMPLING_STEPS (this module stays free of torch)


def budget_difference(a: dict, b: dict) -> str:
    """The budget settings in which two records' ``settings`` differ (``"key: a vs b, …"``; not
    the configuration and its overrides, seed, sampling seed, output folder or resume flag; a
    setting of :data:`ADDED_SETTINGS` that a record lacks has the value it ran with)."""
    a, b = ADDED_SETTINGS | a, ADDED_SETTINGS | b
    keys = sorted((set(a) | set(b)) - NOT_BUDGET)
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k))


def complete(record: dict, metrics: Sequence[str] = tuple(METRICS)) -> bool:
    """A record counts when it says ``done`` *and* holds what that promises: a final
    evaluation at its last training step with every metric (a finite number each)."""
    final = record.get("final")
    if record.get("status") != "done" or not isinstance(final, dict):
        return False
    steps = (record.get("config") or {}).get("training", {}).get("steps")
    values = [final.get(m) for m in metrics]
    return final.get("step") == steps and all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in values
    )


def load_records(folder: str | Path, labels: Sequence[str] | None = None) -> dict:
    """``{label: {seed: record}}`` of the complete records in ``folder`` (``LABEL-sSEED.json``,
    file-name order; other JSON files, such as a summary, are ignored), only ``labels`` if
    given. A record that is not JSON is named."""
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            r = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a JSON record ({e})") from None
        if not isinstance(r, dict) or "config_name" not in r or not complete(r):
            continue
        label = r.get("arm", r["config_name"])
        if labels is None or label in labels:
            runs.setdefault(label, {})[r["seed"]] = r
    return runs


def _cpu_s(record: dict) -> float:
    """A run's CPU seconds: training plus every evaluation's sampling and held-out loss (and a
    study's guidance selection)."""
    evals = record.get("evaluations") or []
    cpu = record["train_cpu_s"] + sum(e["sample_cpu_s"] + e["loss_cpu_s"] for e in evals)
    for extra in ("guidance_selection", "loss_profile", "second_features"):  # a study's
        if extra in record:
            cpu = cpu + record[extra]["cpu_s"]
    return cpu


def side_label(side) -> str:
    """An arm's label, or ``(B − A)`` for a pair (A, B)."""
    return f"({side[1]} − {side[0]})" if isinstance(side, (tuple, list)) else side


def _arms_of(side) -> tuple[str, ...]:
    return tuple(side) if isinstance(side, (tuple, list)) else (side,)


def _side_values(final: dict, side, metric: str) -> dict[int, float]:
    """``{seed: value}`` of one side of a comparison: an arm's metric, or for a pair (A, B)
    the per-seed difference B − A over the seeds both have."""
    if isinstance(side, (tuple, list)):
        a, b = (_side_values(final, s, metric) for s in side)
        return {s: b[s] - a[s] for s in sorted(set(a) & set(b))}
    return {s: r[metric] for s, r in final.get(side, {}).items()}


def _check_cpu_kinds(runs: dict, x, y, seeds: list[int], per_seed: bool = False) -> None:
    """Refuse a comparison whose runs come from different CPU kinds (``env.same_cpu_kind``): all
    of its runs, or with ``per_seed`` (``cross_cpu = "seeds"``) the runs of each seed."""
    arms = (*_arms_of(x), *_arms_of(y))
    groups = [[s] for s in seeds] if per_seed else [seeds]
    for group in groups:
        kinds = {f"{arm}-s{s}": runs[arm][s].get("versions", {}) for arm in arms for s in group}
        if all(same_cpu_kind(v, w) for v in kinds.values() for w in kinds.values()):
            continue
        listed = ", ".join(f"{k} on {cpu_kind_label(v)}" for k, v in kinds.items())
        what = f"{side_label(x)} → {side_label(y)}"
        scope = "within one seed " if per_seed else ""
        raise ValueError(
            f"comparison {what} pairs runs {scope}from different CPU kinds ({listed}): the same "
            "seed on another CPU kind is another model; train both arms on one kind, or allow "
            "it in the study (options.cross_cpu = true, or \"seeds\": each seed on one kind)"
        )


def analyze_runs(
    runs: dict[str, dict[int, dict]],
    *,
    arms: Sequence[str],
    comparisons: Sequence[tuple[str, str, str, int | None]],
    metrics: Sequence[str] = tuple(METRICS),
    reference: dict | None = None,
    correction: str = "holm",
    family: str = "metric",
    rule: str = "holm",
    cross_cpu: bool | str = False,
    one_budget: bool = True,
) -> dict:
    """The analysis of ``runs`` (:func:`load_records`): ``table`` (arm → metric →
    :func:`t_interval` over seeds, plus ``seeds``; arms in ``arms`` order), ``comparisons``
    (one row per metric and comparison ``(X, Y, what, expect)``, where ``expect`` is the
    expected direction of Y against X as −1 better / +1 worse / 0 none, or None to take it from
    ``reference``: the seeds, Y − X's :func:`t_interval`, the paired t-test's ``p``, the
    expected sign of the difference, ``sign_matches``, the corrected p (``p_holm``, per
    ``family`` of metric or comparison; ``p_adjusted`` = p without correction),
    ``significant`` (corrected p < 0.05) and, under the ``ci`` rule, the ``verdict``),
    ``kendall_tau`` and ``cost``. ``reference``: ``{"name", "metric", "values", "rank"}`` —
    the rows carry ``NAME_difference_METRIC`` and the expected sign as ``NAME_sign``.
    ``one_budget=False``: the arms' budgets differ by design (a study's cells: steps from each
    arm's FLOPs, resolutions), each record checked against its own arm's by the caller.
    ``cross_cpu``: False, every run of a comparison from one CPU kind; ``"seeds"``, the runs of
    each seed from one kind (each paired difference within one kind); True, no check."""
    records = [r for by_seed in runs.values() for r in by_seed.values()]
    for r in records[1:] if one_budget else ():
        other = budget_difference(records[0]["settings"], r["settings"])
        if other:
            raise ValueError(
                f"runs {records[0]['name']!r} and {r['name']!r} have different budgets ({other}): "
                "one analysis compares runs of one budget"
            )
    final = {c: {s: r["final"] for s, r in by_seed.items()} for c, by_seed in runs.items()}
    table = {
        c: {m: t_interval([final[c][s][m] for s in sorted(final[c])]) for m in metrics}
        | {"seeds": sorted(final[c])}
        for c in arms
        if c in final
    }
    ref_values = (reference or {}).get("values", {})
    sign_key = f"{reference['name']}_sign" if reference else "expected_sign"
    rows_by_metric = []
    for metric in metrics:
        lower_better = ALL_METRICS[metric]
        rows = []
        for x, y, what, expect in comparisons:
            pair = paired_difference(
                _side_values(final, x, metric), _side_values(final, y, metric)
            )
            if cross_cpu is not True and pair["seeds"]:
                _check_cpu_kinds(runs, x, y, pair["seeds"], per_seed=cross_cpu == "seeds")
            sides = [list(s) if isinstance(s, tuple) else s for s in (x, y)]
            row = {"metric": metric, "x": sides[0], "y": sides[1], "what": what, **pair}
            if expect is None:
                gap = ref_values[y] - ref_values[x]
                row[f"{reference['name']}_difference_{reference['metric']}"] = gap
                expected = int(np.sign(gap)) * lower_better
            else:
                expected = expect * lower_better
            mean = pair["difference"]["mean"]
            row[sign_key] = expected
            row["sign_matches"] = (
                None if expected == 0 else bool(pair["seeds"]) and int(np.sign(mean)) == expected
            )
            if rule == "ci":
                row["verdict"] = ci_verdict(pair["difference"], -lower_better)
            rows.append(row)
        rows_by_metric.append(rows)
    _correct(rows_by_metric, correction, family)
    comparisons_out = [row for rows in rows_by_metric for row in rows]
    rank = [c for c in (reference or {}).get("rank", ()) if c in table]
    tau = None
    if rank:
        metric = reference["metric"]
        tau = kendall_tau([ref_values[c] for c in rank], [table[c][metric]["mean"] for c in rank])
    per_run = {
        r["name"]: {"cpu_s": _cpu_s(r), "train_cpu_s": r["train_cpu_s"]}
        for by_seed in runs.values()
        for _, r in sorted(by_seed.items())
    }
    return {
        "n_runs": len(per_run),
        "table": table,
        "comparisons": comparisons_out,
        "kendall_tau": None if tau is None else {"configs": rank, **tau},
        "cost": {
            "per_run_cpu_s": per_run,
            "total_cpu_s": sum(r["cpu_s"] for r in per_run.values()),
        },
    }


def _correct(rows_by_metric: list[list[dict]], correction: str, family: str) -> None:
    """Add the corrected p and ``significant`` to every row: Holm over each family (the
    comparisons of one metric, or the metrics of one comparison), or no correction."""
    if correction == "none":
        for row in (r for rows in rows_by_metric for r in rows):
            row["p_adjusted"] = row["p"]
            row["significant"] = bool(row["p"] < ALPHA) if not math.isnan(row["p"]) else False
        return
    families = rows_by_metric if family == "metric" else list(zip(*rows_by_metric))
    for rows in families:
        for row, p_holm in zip(rows, holm([r["p"] for r in rows])):
            row["p_holm"] = p_holm
            row["significant"] = bool(p_holm < ALPHA) if not math.isnan(p_holm) else False


def load_study_records(study) -> dict:
    """:func:`load_records` of every records folder of a study (its own first), its arms only;
    one (arm, seed) found in two folders is refused."""
    labels = [a.label for a in study.arms]
    runs: dict[str, dict[int, dict]] = {}
    for folder in study.read_records:
        for label, by_seed in load_records(folder, labels).items():
            for seed, r in by_seed.items():
                if seed in runs.get(label, {}):
                    raise ValueError(
                        f"{label}-s{seed} has a complete record in two of the study's records "
                        f"folders ({', '.join(map(str, study.read_records))}): keep one"
                    )
                runs.setdefault(label, {})[seed] = r
    return runs


def study_settings(study, arm=None) -> dict:
    """The budget settings every record of ``study`` (of its arm ``arm``: a cell's arm has a
    budget of its own) must have been made with."""
    budget = getattr(arm, "budget", None) or study.budget
    return asdict(budget)


def analyze(study, runs: dict | None = None) -> dict:
    """:func:`analyze_runs` of a study's complete records (``runs``: default
    :func:`load_records` of its records folder, its arms only). Refuses records made with
    another budget than the spec's."""
    labels = [a.label for a in study.arms]
    runs = load_study_records(study) if runs is None else runs
    runs = {
        label: {s: r for s, r in by_seed.items() if s in study.arm(label).seeds}
        for label, by_seed in runs.items()
    }
    for label, r in ((label, r) for label, by_seed in runs.items() for r in by_seed.values()):
        other = budget_difference(r["settings"], study_settings(study, study.arm(label)))
        if other:
            raise ValueError(
                f"record {r['name']!r} was made with other settings than {study.path} "
                f"({other}): a changed budget is another study"
            )
    reference = None if study.reference is None else asdict(study.reference)
    return analyze_runs(
        runs,
        arms=labels,
        comparisons=[
            (c.x, c.y, c.what, None if c.expect is None else EXPECT[c.expect])
            for c in study.comparisons
        ],
        metrics=study.metrics,
        reference=reference,
        correction=study.correction,
        family=study.family,
        rule=study.rule,
        cross_cpu=study.cross_cpu,
        one_budget=getattr(study, "resolution_cells", None) is None,
    )
