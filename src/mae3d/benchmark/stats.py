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
* Headline of a method against the reference over the whole benchmark (:func:`headline`): the mean
  paired difference over every (task, case, seed) unit with a percentile bootstrap CI (units resampled
  with replacement), and an exact two-sided sign test over tasks (each task's mean difference counts as
  one sign; zero means are dropped). The verdict reads the CI: entirely above zero = helped, entirely
  below = hurt, containing zero = cannot be told.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata, wilcoxon

__all__ = [
    "VERDICTS",
    "Headline",
    "PairedTest",
    "average_ranks",
    "bootstrap_mean_ci",
    "headline",
    "paired_comparison",
    "rank_per_dataset",
    "sign_test",
    "verdict",
]

#: the three outcomes of :func:`verdict`
VERDICTS = ("helped", "hurt", "cannot be told")


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


def bootstrap_mean_ci(d: Sequence[float], *, n_boot: int = 10000, seed: int = 0, confidence: float = 0.95
                      ) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``d`` (values resampled with replacement, seeded).

    Raises:
        ValueError: ``d`` is empty or ``confidence`` is not in (0, 1).
    """
    x = np.asarray(d, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"bootstrap needs a non-empty 1-D sample, got shape {x.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    boot = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return float(lo), float(hi)


def sign_test(n_positive: int, n_negative: int) -> float:
    """Exact two-sided sign test: ``min(1, 2 * P(X <= min(n+, n-)))`` with ``X ~ Binomial(n+ + n-, 1/2)``.

    Ties (zero differences) are not counted; with no non-zero difference the p-value is 1.
    """
    if n_positive < 0 or n_negative < 0:
        raise ValueError(f"counts must be >= 0, got {n_positive}, {n_negative}")
    n = n_positive + n_negative
    if n == 0:
        return 1.0
    k = min(n_positive, n_negative)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def verdict(ci_low: float, ci_high: float) -> str:
    """``helped`` (CI entirely above 0), ``hurt`` (entirely below) or ``cannot be told`` (contains 0)."""
    if ci_low > 0:
        return VERDICTS[0]
    if ci_high < 0:
        return VERDICTS[1]
    return VERDICTS[2]


@dataclass(frozen=True)
class Headline:
    """A method against the reference over every paired (task, case, seed) unit of the benchmark."""

    method: str
    reference: str
    n_units: int
    mean_diff: float
    ci_low: float
    ci_high: float
    tasks_better: tuple[str, ...]
    tasks_worse: tuple[str, ...]
    tasks_tied: tuple[str, ...]
    sign_p: float
    confidence: float = 0.95

    @property
    def n_tasks(self) -> int:
        return len(self.tasks_better) + len(self.tasks_worse) + len(self.tasks_tied)

    @property
    def verdict(self) -> str:
        return verdict(self.ci_low, self.ci_high) if self.n_units else VERDICTS[2]

    def text(self, scale: float = 100.0, unit: str = "Dice points") -> str:
        """One Markdown sentence a reader can act on (differences multiplied by ``scale``)."""
        if not self.n_units:
            return f"**{self.method}** vs {self.reference}: **cannot be told** (no paired results)."
        pct = round(100 * self.confidence)
        why = {VERDICTS[0]: "the whole interval is above zero",
               VERDICTS[1]: "the whole interval is below zero",
               VERDICTS[2]: "the interval contains zero"}[self.verdict]
        return (f"**{self.method}** vs {self.reference}: pre-training **{self.verdict}**: "
                f"{scale * self.mean_diff:+.2f} {unit} on average over {self.n_units} (task, case, seed) "
                f"pairs, {pct} % CI [{scale * self.ci_low:+.2f}, {scale * self.ci_high:+.2f}] ({why}); "
                f"better on {len(self.tasks_better)} of {self.n_tasks} tasks, worse on "
                f"{len(self.tasks_worse)} (sign test p = {self.sign_p:.3g}).")

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "reference": self.reference, "n_units": self.n_units,
                "mean_diff": self.mean_diff, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "confidence": self.confidence, "verdict": self.verdict,
                "tasks_better": list(self.tasks_better), "tasks_worse": list(self.tasks_worse),
                "tasks_tied": list(self.tasks_tied), "sign_p": self.sign_p}


def headline(method: str, reference: str, diffs_by_task: Mapping[str, Sequence[float]], *,
             n_boot: int = 10000, seed: int = 0, confidence: float = 0.95) -> Headline:
    """The :class:`Headline` of ``method`` from its paired differences (method - reference) per task.

    ``diffs_by_task`` maps a task to its differences, one per (case, seed) unit; tasks without units
    are left out.
    """
    tasks = {t: np.asarray(v, dtype=float) for t, v in diffs_by_task.items() if len(v)}
    if not tasks:
        return Headline(method, reference, 0, math.nan, math.nan, math.nan, (), (), (), 1.0, confidence)
    d = np.concatenate(list(tasks.values()))
    lo, hi = bootstrap_mean_ci(d, n_boot=n_boot, seed=seed, confidence=confidence)
    means = {t: float(v.mean()) for t, v in tasks.items()}
    better = tuple(t for t, m in means.items() if m > 0)
    worse = tuple(t for t, m in means.items() if m < 0)
    tied = tuple(t for t, m in means.items() if m == 0)
    return Headline(method, reference, int(d.size), float(d.mean()), lo, hi, better, worse, tied,
                    sign_test(len(better), len(worse)), confidence)
