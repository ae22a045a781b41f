"""Average rank (ties as in the paper) and paired comparisons, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from mae3d.benchmark.stats import average_ranks, paired_comparison, rank_per_dataset

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
