"""The statistics every study of this package reports (§5.2's ablations, read at toy scale).

The paper reports one FID per configuration; a toy study has a few seeds per configuration and
reads its differences with their uncertainty. Four tools, used by :mod:`hdit_edu.ablation`,
:mod:`hdit_edu.studies` and the scripts under ``results/``:

* :func:`t_interval`: mean, SD (n − 1) and the 95 % Student-t interval over seeds;
* :func:`paired_difference`: the seed-paired difference Y − X with its interval and the
  two-sided paired t-test;
* :func:`holm`: Holm–Bonferroni adjusted p-values over a family of comparisons;
* :func:`kendall_tau`: Kendall's τ-b between two orderings (e.g. the paper's FIDs and ours);

and one reading rule, :func:`ci_verdict`: a difference is ``better`` / ``worse`` where its 95 %
interval lies wholly on one side of 0, ``not resolved`` otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05  # two-sided: 95 % intervals, significance at p < 0.05
VERDICTS = ("better", "worse", "not resolved")


def t_interval(values) -> dict:
    """Mean, SD (n − 1), n and the 95 % t interval mean ± t₀.₉₇₅,ₙ₋₁ · SD/√n (NaN for n < 2),
    with the values."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    sd = float(v.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    return {
        "mean": mean,
        "sd": sd,
        "n": n,
        "ci95": [mean - half, mean + half],
        "half": half,
        "values": v.tolist(),
    }


def paired_difference(x: dict[int, float], y: dict[int, float]) -> dict:
    """The seed-paired difference Y − X of one metric (``{seed: value}`` each) over the seeds
    both have: ``seeds``, ``difference`` (:func:`t_interval` of the differences) and ``p``, the
    two-sided paired t-test's (NaN for fewer than two seeds or differences without spread)."""
    seeds = sorted(set(x) & set(y))
    diffs = [y[s] - x[s] for s in seeds]
    p = (
        float(stats.ttest_1samp(diffs, 0.0).pvalue)
        if len(diffs) > 1 and np.std(diffs) > 0
        else math.nan
    )
    return {"seeds": seeds, "difference": t_interval(diffs), "p": p}


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values: the k-th smallest of m is multiplied by m − k + 1,
    made monotone and capped at 1 (NaN stays NaN and is not counted)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> dict | None:
    """Kendall's τ-b between two paired sequences (``scipy.stats.kendalltau``) and its p-value:
    ``{"tau", "p"}``; None for fewer than three pairs."""
    if len(a) != len(b):
        raise ValueError(f"kendall_tau: {len(a)} values against {len(b)}; allowed: equal lengths")
    if len(a) < 3:
        return None
    tau = stats.kendalltau(list(a), list(b))
    return {"tau": float(tau.statistic), "p": float(tau.pvalue)}


def ci_verdict(interval: dict, better_sign: int) -> str:
    """The interval reading rule on one :func:`t_interval` of a difference: ``better`` where its
    95 % CI lies wholly on the better side of 0 (``better_sign`` +1: higher is better, −1:
    lower is better), ``worse`` where it lies wholly on the other side, else ``not resolved``
    (also for n < 2)."""
    if better_sign not in (1, -1):
        raise ValueError(f"better_sign={better_sign!r}; allowed: 1 or -1")
    low, high = (better_sign * v for v in interval["ci95"])
    if interval["n"] < 2 or math.isnan(low) or math.isnan(high):
        return "not resolved"
    if min(low, high) > 0:
        return "better"
    if max(low, high) < 0:
        return "worse"
    return "not resolved"
