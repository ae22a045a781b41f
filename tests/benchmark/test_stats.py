"""Average rank (ties as in the paper) and paired comparisons, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mae3d.benchmark.stats import (
    average_ranks,
    bootstrap_mean_ci,
    headline,
    paired_comparison,
    rank_per_dataset,
    sign_test,
    verdict,
)

# hand-computed: per dataset rank 1 = best, ties share the mean of their ranks
TABLE = {
    "A": {"m1": 0.80, "m2": 0.70, "m3": 0.70},  # m1 1, m2 2.5, m3 2.5
    "B": {"m1": 0.60, "m2": 0.65, "m3": 0.50},  # m2 1, m1 2, m3 3
    "C": {"m1": 0.90, "m2": 0.90, "m3": 0.90},  # all 2
}


def test_ranks_with_ties_match_the_hand_computed_table():
    per, avg = average_ranks(TABLE)
    assert per["A"] == {"m1": 1.0, "m2": 2.5, "m3": 2.5}
    assert per["B"] == {"m1": 2.0, "m2": 1.0, "m3": 3.0}
    assert per["C"] == {"m1": 2.0, "m2": 2.0, "m3": 2.0}
    assert avg == pytest.approx({"m1": 5 / 3, "m2": 5.5 / 3, "m3": 7.5 / 3})


def test_ranking_rounds_to_the_reported_precision_and_skips_missing_results():
    # 70.004 % and 70.00 % look tied in a table with two decimals: they rank as tied
    assert rank_per_dataset({"a": 0.700004, "b": 0.70, "c": 0.9}) == {"a": 2.5, "b": 2.5, "c": 1.0}
    assert rank_per_dataset({"a": 0.700004, "b": 0.70}, decimals=None) == {"a": 1.0, "b": 2.0}
    per, avg = average_ranks({"A": {"m1": 0.5, "m2": math.nan}, "B": {"m1": 0.4, "m2": 0.6}})
    assert per["A"] == {"m1": 1.0}  # m2 has no result on A
    assert avg == {"m1": 1.5, "m2": 1.0}


def test_wilcoxon_and_bootstrap_on_a_hand_computed_example():
    base = [0.5, 0.6, 0.7, 0.4, 0.55, 0.65]
    diffs = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    t = paired_comparison([b + d for b, d in zip(base, diffs, strict=True)], base, n_boot=2000, seed=3)
    assert t.n == 6 and t.mean_diff == pytest.approx(0.035)
    # all 6 differences positive: exact two-sided p = 2 / 2^6
    assert t.p_value == pytest.approx(2 / 64)
    assert 0.01 <= t.ci_low < t.mean_diff < t.ci_high <= 0.06
    assert t.note == ""
    again = paired_comparison([b + d for b, d in zip(base, diffs, strict=True)], base, n_boot=2000, seed=3)
    assert (again.ci_low, again.ci_high) == (t.ci_low, t.ci_high)  # seeded


def test_small_samples_and_zero_differences_are_reported_not_crashed():
    # ranks of |d| 1..5, negative rank sum 2: p = 2 * #{subsets with rank sum <= 2} / 2^5 = 2 * 3 / 32
    t = paired_comparison([0.1, -0.2, 0.3, 0.4, 0.5], [0.0] * 5)
    assert t.p_value == pytest.approx(6 / 32)
    assert "5 non-zero differences < 6" in t.note
    zero = paired_comparison([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])
    assert zero.p_value == 1.0 and zero.note == "all differences are zero" and zero.mean_diff == 0.0
    one = paired_comparison([0.8], [0.6])
    assert one.n == 1 and one.ci_low == pytest.approx(0.2) and one.ci_high == pytest.approx(0.2)
    assert "one case" in one.note
    empty = paired_comparison([], [])
    assert empty.n == 0 and empty.p_value is None and math.isnan(empty.mean_diff)
    with pytest.raises(ValueError, match="equal length"):
        paired_comparison([0.1, 0.2], [0.1])


# ---- headline: pooled paired difference, sign test over tasks, verdict ----------------------------------

def test_bootstrap_ci_covers_the_known_mean_of_synthetic_samples():
    # 200 synthetic samples of N(0.03, 0.02^2), 60 units each: the 95 % CI covers 0.03 in ~95 % of them
    rng = np.random.default_rng(0)
    covered = 0
    for i in range(200):
        lo, hi = bootstrap_mean_ci(rng.normal(0.03, 0.02, size=60), n_boot=1000, seed=i)
        assert lo < hi
        covered += lo <= 0.03 <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_ci_of_a_constant_sample_is_that_constant():
    assert bootstrap_mean_ci([0.25, 0.25, 0.25]) == pytest.approx((0.25, 0.25))
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean_ci([])


@pytest.mark.parametrize(("pos", "neg"), [(3, 0), (0, 3), (5, 1), (2, 2), (7, 3), (1, 0), (10, 0)])
def test_sign_test_p_value_is_the_two_sided_binomial_formula(pos, neg):
    n, k = pos + neg, min(pos, neg)
    expected = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) * 0.5 ** n)
    assert sign_test(pos, neg) == pytest.approx(expected)


def test_sign_test_known_values():
    assert sign_test(3, 0) == pytest.approx(0.25)  # 2 / 2^3
    assert sign_test(6, 0) == pytest.approx(1 / 32)  # the smallest p reachable with 6 tasks
    assert sign_test(0, 0) == 1.0
    assert sign_test(2, 2) == 1.0


def test_verdict_reads_the_interval():
    assert verdict(0.01, 0.05) == "helped"
    assert verdict(-0.05, -0.01) == "hurt"
    assert verdict(-0.01, 0.02) == "cannot be told"


def test_headline_clearly_positive_negative_and_overlapping():
    up = headline("S3D", "scratch",
                  {"a": [0.05, 0.06, 0.04], "b": [0.03, 0.05, 0.04], "c": [0.02, 0.04, 0.06]})
    assert up.verdict == "helped" and up.n_units == 9 and up.n_tasks == 3
    assert up.mean_diff == pytest.approx(np.mean([0.05, 0.06, 0.04, 0.03, 0.05, 0.04, 0.02, 0.04, 0.06]))
    assert up.ci_low > 0 and up.sign_p == pytest.approx(0.25)
    text = up.text()
    assert "pre-training **helped**" in text and "+4.33 Dice points" in text and "above zero" in text
    assert "better on 3 of 3 tasks" in text and "p = 0.25" in text

    down = headline("MAE", "scratch", {"a": [-0.05, -0.07], "b": [-0.04, -0.06]})
    assert down.verdict == "hurt" and down.ci_high < 0
    assert "pre-training **hurt**" in down.text() and "below zero" in down.text()
    assert down.tasks_worse == ("a", "b") and "worse on 2" in down.text()

    mixed = headline("S3D", "scratch", {"a": [0.05, 0.04], "b": [-0.05, -0.06], "c": [0.01, -0.02]})
    assert mixed.verdict == "cannot be told" and mixed.ci_low < 0 < mixed.ci_high
    assert "**cannot be told**" in mixed.text() and "contains zero" in mixed.text()
    assert mixed.tasks_better == ("a",) and set(mixed.tasks_worse) == {"b", "c"}


def test_headline_without_units_cannot_be_told():
    h = headline("S3D", "scratch", {"a": []})
    assert h.n_units == 0 and h.verdict == "cannot be told" and "no paired results" in h.text()
