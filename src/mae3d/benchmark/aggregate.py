"""Turn cell results into the benchmark's tables: Dice per method and dataset, averages, ranks, deltas and
paired comparisons with the reference baseline, separately for development and test datasets.

Units: a cell's score is the mean over its test cases of the foreground-mean Dice. A (method, dataset)
entry is the mean ± standard deviation (ddof 1) over its finished cells (folds x seeds). Averages over
datasets use the datasets a method has results on (``n_datasets`` says how many). Paired comparisons
pair cases (fold, case id), each averaged over seeds. The headline (:func:`~mae3d.benchmark.stats.headline`)
pairs every (dataset, fold, case id, seed) unit that both a method and the reference finished, over all
datasets of the benchmark (development and test together).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mae3d.benchmark.stats import Headline, PairedTest, average_ranks, headline, paired_comparison

__all__ = ["GROUPS", "Aggregate", "Entry", "GroupSummary", "aggregate"]

#: dataset groups of the report: development, test, and all datasets together
GROUPS = ("dev", "test", "all")


@dataclass(frozen=True)
class Entry:
    """One method on one dataset: its finished cells' scores."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else math.nan


@dataclass
class GroupSummary:
    """Averages of each method over one group of datasets."""

    datasets: list[str]
    avg_dice: dict[str, float] = field(default_factory=dict)
    n_datasets: dict[str, int] = field(default_factory=dict)
    ranks: dict[str, dict[str, float]] = field(default_factory=dict)  # dataset -> method -> rank
    avg_rank: dict[str, float] = field(default_factory=dict)
    avg_delta: dict[str, float] = field(default_factory=dict)  # vs the reference, over shared datasets


@dataclass
class Aggregate:
    """Everything the report shows."""

    name: str
    methods: list[str]
    datasets: list[str]
    roles: dict[str, str]
    reference: str | None
    entries: dict[tuple[str, str], Entry]
    groups: dict[str, GroupSummary]
    delta: dict[tuple[str, str], float]  # method - reference mean Dice
    paired: dict[tuple[str, str], PairedTest]
    headlines: dict[str, Headline]  # method -> headline vs the reference (every method but the reference)
    failed: list[dict[str, Any]]
    n_ok: int
    n_expected: int


def _case_scores(cells: Sequence[Mapping[str, Any]]) -> dict[tuple[int, str], float]:
    per: dict[tuple[int, str], list[float]] = {}
    for c in cells:
        for case, dice in (c.get("case_dice") or {}).items():
            per.setdefault((int(c["fold"]), case), []).append(float(dice))
    return {k: float(np.mean(v)) for k, v in per.items()}


def _unit_scores(cells: Sequence[Mapping[str, Any]]) -> dict[tuple[int, str, int], float]:
    """(fold, case id, seed) -> Dice of the case in that cell."""
    return {(int(c["fold"]), case, int(c["seed"])): float(dice)
            for c in cells for case, dice in (c.get("case_dice") or {}).items()}


def aggregate(spec: Mapping[str, Any], results: Sequence[Mapping[str, Any]], *, rank_decimals: int | None = 4
              ) -> Aggregate:
    """Aggregate ``results`` (cell ``result.json`` contents) of ``spec`` (``BenchmarkSpec.to_dict()``).

    Results of methods / datasets no longer in the spec are ignored.
    """
    methods = [m["name"] for m in spec["methods"]]
    datasets = [d["name"] for d in spec["datasets"]]
    roles = {d["name"]: d["role"] for d in spec["datasets"]}
    n_folds = {d["name"]: len(d["split"]["folds"]) if d["split"]["kind"] == "kfold" else 1
               for d in spec["datasets"]}
    reference = spec.get("reference")
    ok = [r for r in results if r.get("status") == "ok" and r.get("method") in methods
          and r.get("dataset") in datasets]
    failed = [r for r in results if r.get("status") != "ok" and r.get("method") in methods
              and r.get("dataset") in datasets]
    by_pair: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in ok:
        by_pair.setdefault((r["method"], r["dataset"]), []).append(r)
    entries = {k: Entry(tuple(float(c["dice"]) for c in v)) for k, v in by_pair.items()}

    delta: dict[tuple[str, str], float] = {}
    paired: dict[tuple[str, str], PairedTest] = {}
    ev = spec.get("evaluation") or {}
    if reference in methods:
        for ds in datasets:
            ref = entries.get((reference, ds))
            if ref is None:
                continue
            ref_cases = _case_scores(by_pair[(reference, ds)])
            for m in methods:
                if m == reference or (m, ds) not in entries:
                    continue
                delta[(m, ds)] = entries[(m, ds)].mean - ref.mean
                mine = _case_scores(by_pair[(m, ds)])
                shared = sorted(set(mine) & set(ref_cases))
                paired[(m, ds)] = paired_comparison([mine[k] for k in shared], [ref_cases[k] for k in shared],
                                                    n_boot=int(ev.get("bootstrap", 10000)),
                                                    seed=int(ev.get("report_seed", 0)))

    headlines: dict[str, Headline] = {}
    if reference in methods:
        for m in methods:
            if m == reference:
                continue
            diffs: dict[str, list[float]] = {}
            for ds in datasets:
                if (m, ds) not in by_pair or (reference, ds) not in by_pair:
                    continue
                mine, ref_units = _unit_scores(by_pair[(m, ds)]), _unit_scores(by_pair[(reference, ds)])
                diffs[ds] = [mine[k] - ref_units[k] for k in sorted(set(mine) & set(ref_units))]
            headlines[m] = headline(m, reference, diffs, n_boot=int(ev.get("bootstrap", 10000)),
                                    seed=int(ev.get("report_seed", 0)))

    groups: dict[str, GroupSummary] = {}
    for group in GROUPS:
        names = [d for d in datasets if group == "all" or roles[d] == group]
        g = GroupSummary(datasets=names)
        table = {d: {m: entries[(m, d)].mean for m in methods if (m, d) in entries} for d in names}
        g.ranks, g.avg_rank = average_ranks(table, decimals=rank_decimals)
        for m in methods:
            scores = [entries[(m, d)].mean for d in names if (m, d) in entries]
            if scores:
                g.avg_dice[m] = float(np.mean(scores))
                g.n_datasets[m] = len(scores)
            deltas = [delta[(m, d)] for d in names if (m, d) in delta]
            if deltas:
                g.avg_delta[m] = float(np.mean(deltas))
        groups[group] = g
    expected = sum(n_folds[d] for d in datasets) * len(methods) * len(spec.get("seeds") or [0])
    return Aggregate(name=str(spec.get("name", "")), methods=methods, datasets=datasets, roles=roles,
                     reference=reference if reference in methods else None, entries=entries, groups=groups,
                     delta=delta, paired=paired, headlines=headlines, failed=failed, n_ok=len(ok),
                     n_expected=expected)
