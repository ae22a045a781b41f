"""Aggregate statistics of a benchmark: average rank over datasets and paired per-case comparisons.

* Rank (the paper's "average rank"): on each dataset the methods are ranked by their mean Dice, 1 = best;
  tied methods share the mean of the ranks they occupy (``scipy.stats.rankdata(method="average")``);
  a method's average rank is the mean of its ranks over the datasets it has results on. Scores are
  rounded to ``decimals`` first (default: the reported precision, Dice in % with 2 decimals), so methods
  that look tied in the table are ranked as tied.
* Paired comparison of a method with the reference baseline on one dataset, over cases: the Wilcoxon
  signed-rank test (``scipy.stats.wilcoxon``, two-sided, zero differences dropped) and a percentile
  bootstrap confidence interval of the mean difference (cases resampled with replacement, seeded).
  With fewer than 6 non-zero differences the exact two-sided p-value cannot fall below 0.05
  (its minimum is 2 / 2^n); all-zero differences give p = 1; the notes say so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata, wilcoxon

__all__ = ["PairedTest", "average_ranks", "paired_comparison", "rank_per_dataset"]


def rank_per_dataset(scores: Mapping[str, float], *, decimals: int | None = 4) -> dict[str, float]:
    """Ranks (1 = highest score, ties = mean rank) of the methods in ``scores`` (method -> score).

    NaN scores are left out. ``decimals`` rounds the scores before ranking (None: exact).
    """
    names = [m for m, s in scores.items() if s is not None and math.isfinite(s)]
    if not names:
        return {}
    values = np.array([scores[m] for m in names], dtype=float)
    if decimals is not None:
        values = np.round(values, decimals)
    ranks = rankdata(-values, method="average")
    return {m: float(r) for m, r in zip(names, ranks, strict=True)}


def average_ranks(table: Mapping[str, Mapping[str, float]], *, decimals: int | None = 4
                  ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-dataset ranks and each method's average rank.

    Args:
        table: dataset -> method -> score (higher is better; missing / NaN = no result).
        decimals: rounding before ranking (see :func:`rank_per_dataset`).

    Returns:
        (dataset -> method -> rank, method -> mean rank over the datasets it was ranked on).
    """
    per_dataset = {ds: rank_per_dataset(scores, decimals=decimals) for ds, scores in table.items()}
    methods: dict[str, list[float]] = {}
    for ranks in per_dataset.values():
        for m, r in ranks.items():
            methods.setdefault(m, []).append(r)
    return per_dataset, {m: float(np.mean(r)) for m, r in methods.items()}


@dataclass(frozen=True)
class PairedTest:
    """Method minus reference over paired cases."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float | None
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"n": self.n, "mean_diff": self.mean_diff, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "p_value": self.p_value, "note": self.note}


def paired_comparison(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10000, seed: int = 0,
                      confidence: float = 0.95) -> PairedTest:
    """Compare paired samples ``a`` (method) and ``b`` (reference): Wilcoxon + bootstrap CI of mean(a - b).

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples must be 1-D of equal length, got {x.shape} and {y.shape}")
    d = x - y
    n = int(d.size)
    if n == 0:
        return PairedTest(0, math.nan, math.nan, math.nan, None, "no paired cases")
    mean = float(d.mean())
    # a plain percentile bootstrap instead of scipy.stats.bootstrap, which refuses samples of one case
    # (common here: one held-out scan per task) and warns on degenerate (all-equal) resamples
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = (float(v) for v in np.quantile(boot, [alpha, 1 - alpha]))
    notes = []
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        return PairedTest(n, mean, lo, hi, 1.0, "all differences are zero")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties / small samples; the notes say it
        p = float(wilcoxon(d).pvalue)
    if nonzero < 6:
        notes.append(f"{nonzero} non-zero differences < 6: p cannot fall below 0.05 "
                     f"(min {2 / 2 ** nonzero:.3g})")
    if n == 1:
        notes.append("one case: the CI has no spread")
    return PairedTest(n, mean, lo, hi, p, "; ".join(notes))
