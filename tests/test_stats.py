"""The statistics module (:mod:`hdit_edu.stats`): the t interval, the seed-paired difference,
Holm's adjustment, Kendall's τ-b and the interval reading rule, against closed forms."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from hdit_edu.stats import ci_verdict, holm, kendall_tau, paired_difference, t_interval


def test_paired_t_interval_closed_form():
    """Differences 1, 2, 3: mean 2, SD 1; with 2 degrees of freedom the t quantile and the
    two-sided p have closed forms: t₀.₉₇₅ = 0.95 / √(2·0.975·0.025), p = 1 − √(t²/(2 + t²))."""
    ci = t_interval([1.0, 2.0, 3.0])
    t975 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # 4.3027
    assert ci["mean"] == 2.0 and ci["sd"] == 1.0 and ci["n"] == 3
    assert ci["half"] == pytest.approx(t975 / math.sqrt(3), rel=1e-12)  # 2.4841
    assert ci["ci95"] == pytest.approx([2 - t975 / math.sqrt(3), 2 + t975 / math.sqrt(3)])
    t = 2.0 / (1.0 / math.sqrt(3))
    p = stats.ttest_1samp([1.0, 2.0, 3.0], 0.0).pvalue
    assert p == pytest.approx(1 - math.sqrt(t * t / (2 + t * t)), rel=1e-12)  # 0.0742
    one = t_interval([5.0])
    assert one["mean"] == 5.0 and math.isnan(one["half"]) and math.isnan(one["sd"])


def test_paired_difference_closed_form():
    """Y − X over the seeds both have (seed 3 of X has no partner): differences 1, 2, 3, so the
    t_interval of the closed-form test above and the same two-sided p; NaN p for one seed and
    for differences without spread; no seeds in common: n = 0."""
    x = {0: 1.0, 1: 1.0, 2: 1.0, 3: 9.0}
    pair = paired_difference(x, {0: 2.0, 1: 3.0, 2: 4.0})
    t975 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    t = 2.0 / (1.0 / math.sqrt(3))
    assert pair["seeds"] == [0, 1, 2]
    assert pair["difference"]["values"] == [1.0, 2.0, 3.0]
    assert pair["difference"]["ci95"] == pytest.approx([2 - t975 / 3**0.5, 2 + t975 / 3**0.5])
    assert pair["p"] == pytest.approx(1 - math.sqrt(t * t / (2 + t * t)), rel=1e-12)  # 0.0742
    one = paired_difference(x, {1: 3.0})
    assert one["seeds"] == [1] and one["difference"]["mean"] == 2.0 and math.isnan(one["p"])
    flat = paired_difference(x, {0: 2.0, 1: 2.0, 2: 2.0})
    assert flat["difference"]["sd"] == 0.0 and math.isnan(flat["p"])
    none = paired_difference(x, {7: 1.0})
    assert none["seeds"] == [] and none["difference"]["n"] == 0 and math.isnan(none["p"])


def test_holm_order_and_monotonicity():
    """Holm: the k-th smallest of m p-values × (m − k + 1), running maximum, capped at 1; NaN
    (a comparison without two seeds) is neither adjusted nor counted."""
    assert holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx(
        [0.03, 0.06, 0.06, math.nan], nan_ok=True
    )
    assert holm([0.5, 0.2, 0.001]) == pytest.approx([0.5, 0.4, 0.003])
    assert holm([0.9, 0.6]) == [1.0, 1.0]


def test_kendall_tau_closed_form():
    """τ-b of 4 items: one discordant pair of 6 gives (5 − 1) / 6; a tie in one ranking counts
    in τ-b's denominator √((n₀ − n₁)(n₀ − n₂)); fewer than three pairs: None."""
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3])["tau"] == pytest.approx(4 / 6, rel=1e-12)
    tied = kendall_tau([1, 2, 3], [1, 1, 2])["tau"]  # concordant 2, tied 1 in y: 2 / √(3·2)
    assert tied == pytest.approx(2 / math.sqrt(6), rel=1e-12)
    assert kendall_tau([1, 2], [2, 1]) is None
    with pytest.raises(ValueError, match="equal lengths"):
        kendall_tau([1, 2, 3], [1, 2])


def test_ci_verdict_reads_the_interval():
    """better / worse where the 95 % CI excludes 0 on one side, else not resolved (n < 2 too);
    the sign of "better" is the metric's."""
    clear = t_interval([0.19, 0.2, 0.21])  # 0.2 ± 0.025
    assert ci_verdict(clear, +1) == "better" and ci_verdict(clear, -1) == "worse"
    assert ci_verdict(t_interval([0.1, 0.2, 0.3]), +1) == "not resolved"  # 0.2 ± 0.248
    assert ci_verdict(t_interval([0.2]), +1) == "not resolved"
    with pytest.raises(ValueError, match="better_sign"):
        ci_verdict(clear, 0)
