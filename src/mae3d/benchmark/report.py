"""``write_report``: the benchmark report of an output folder -- Markdown, CSV tables and PNG figures.

Written to ``OUT/report/`` (each file atomically; the report is derived data and is rewritten on every
call): ``report.md``, ``summary.csv`` (method x dataset: n, mean, std, rank, delta), ``averages.csv``
(method x group: average Dice, average rank, average delta), ``significance.csv`` (paired comparisons),
``headline.csv`` (each method vs the reference over all (task, case, seed) units, with the verdict),
``cells.csv`` (every cell), ``dice_per_dataset.png``, ``ranks.png`` and, when methods were pre-trained
by recipe in this folder, ``pretrain_curves.png`` (their ``pretrain/<method>/log.csv``).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mae3d.benchmark.aggregate import GROUPS, Aggregate, aggregate
from mae3d.benchmark.cells import load_results
from mae3d.benchmark.plots import plot_dice_per_dataset, plot_pretrain_curves, plot_ranks
from mae3d.benchmark.runner import BENCHMARK_JSON
from mae3d.io.atomic import read_json, write_text

__all__ = [
    "REPORT_DIR",
    "ReportFiles",
    "format_table",
    "headline_section",
    "pretrain_trend",
    "read_log_csv",
    "render_markdown",
    "write_report",
]

REPORT_DIR = "report"
_GROUP_TITLES = {"dev": "Development datasets", "test": "Test datasets", "all": "All datasets"}


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    markdown: Path
    summary_csv: Path
    averages_csv: Path
    significance_csv: Path
    headline_csv: Path
    cells_csv: Path
    dice_png: Path
    ranks_png: Path
    pretrain_png: Path | None  # pre-training loss curves of recipe methods (None: no recipe run here)
    aggregate: Aggregate


def _pct(v: float | None, digits: int = 2, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:+.{digits}f}" if sign else f"{100 * v:.{digits}f}"


def _cell(agg: Aggregate, m: str, ds: str, best: bool = False) -> str:
    e = agg.entries.get((m, ds))
    if e is None:
        return "–"
    text = f"**{_pct(e.mean)}**" if best else _pct(e.mean)
    if not math.isnan(e.std):
        text += f" ± {_pct(e.std)}"
    return text


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown pipe table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _group_section(agg: Aggregate, group: str) -> str:
    g = agg.groups[group]
    if not g.datasets:
        return ""
    ref = agg.reference
    if group == "all":
        header = ["Method", "Avg Dice", f"Δ vs {ref}" if ref else "Δ", "Avg rank", "datasets"]
        rows = []
        for m in agg.methods:
            rows.append([m, _pct(g.avg_dice.get(m)), _pct(g.avg_delta.get(m), sign=True) if m != ref else "·",
                         f"{g.avg_rank[m]:.2f}" if m in g.avg_rank else "–",
                         f"{g.n_datasets.get(m, 0)}/{len(g.datasets)}"])
        return f"## {_GROUP_TITLES[group]}\n\n" + format_table(header, rows) + "\n"
    header = ["Method", *g.datasets, "Avg Dice", f"Δ vs {ref}" if ref else "Δ", "Avg rank"]
    best = {ds: min(g.ranks[ds].values()) for ds in g.datasets if g.ranks.get(ds)}
    rows, ranks = [], []
    for m in agg.methods:
        partial = g.n_datasets.get(m, 0) < len(g.datasets)
        avg = _pct(g.avg_dice.get(m)) + (" *" if partial and m in g.avg_dice else "")
        rows.append([m, *(_cell(agg, m, ds, best=g.ranks.get(ds, {}).get(m) == best.get(ds))
                          for ds in g.datasets), avg,
                     _pct(g.avg_delta.get(m), sign=True) if m != ref else "·",
                     f"{g.avg_rank[m]:.2f}" if m in g.avg_rank else "–"])
        ranks.append([m, *(f"{g.ranks[ds][m]:.1f}" if m in g.ranks.get(ds, {}) else "–" for ds in g.datasets),
                      f"{g.avg_rank[m]:.2f}" if m in g.avg_rank else "–"])
    note = "\n\\* average over the datasets this method has results on.\n" if any(
        g.n_datasets.get(m, 0) < len(g.datasets) for m in agg.methods if m in g.avg_dice) else ""
    return (f"## {_GROUP_TITLES[group]}\n\nDice (%) on held-out cases, mean ± std over folds × seeds; "
            "the best mean per dataset in bold.\n\n" + format_table(header, rows) + "\n" + note
            + "\nRank per dataset (1 = best; ties share the mean rank):\n\n"
            + format_table(["Method", *g.datasets, "Avg rank"], ranks) + "\n")


def _significance_section(agg: Aggregate) -> str:
    if agg.reference is None or not agg.paired:
        return ""
    header = ["Dataset", "Role", "Method", "n cases", f"mean Δ Dice (%) vs {agg.reference}",
              "95% bootstrap CI", "Wilcoxon p", "note"]
    rows = []
    for ds in agg.datasets:
        for m in agg.methods:
            t = agg.paired.get((m, ds))
            if t is None:
                continue
            rows.append([ds, agg.roles[ds], m, str(t.n), _pct(t.mean_diff, sign=True),
                         f"[{_pct(t.ci_low, sign=True)}, {_pct(t.ci_high, sign=True)}]",
                         "–" if t.p_value is None else f"{t.p_value:.3g}", t.note])
    return ("## Paired comparison with the reference baseline\n\nPer dataset, over test cases (each averaged "
            "over seeds): Wilcoxon signed-rank test (two-sided) and a percentile bootstrap CI of the mean "
            "difference.\n\n" + format_table(header, rows) + "\n")


def headline_section(agg: Aggregate) -> str:
    """``## Headline``: does pre-training help? One verdict sentence per method against the reference."""
    if agg.reference is None or not agg.headlines:
        return ""
    lines = [f"- {h.text()}" for h in agg.headlines.values()]
    return ("## Headline: did pre-training help?\n\n" + "\n".join(lines) + "\n\n"
            "Each unit pairs a method's Dice on one held-out case of one task and seed with the reference's "
            "on the same (task, case, seed); the CI is a percentile bootstrap of their mean difference (all "
            "tasks together). Verdict: helped = the CI lies above zero, hurt = below, cannot be told = it "
            "contains zero. The sign test counts tasks whose mean difference is positive vs negative (exact "
            "binomial, two-sided); with few tasks it cannot reach significance and says so by its p-value.\n")


def read_log_csv(path: Path) -> dict[str, list[float]]:
    """The columns of a pre-training ``log.csv`` as floats (non-numbers as NaN); {} when missing."""
    cols: dict[str, list[float]] = {}
    if not path.is_file():
        return cols
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                try:
                    cols.setdefault(k, []).append(float(v))
                except (TypeError, ValueError):
                    cols.setdefault(k, []).append(math.nan)
    return cols


def pretrain_trend(val_loss: list[float], tail: float = 0.2) -> tuple[float, str]:
    """Relative change of the held-out loss over the last ``tail`` of the epochs, and a word for it:
    ``still falling`` (down by more than 2 %), ``flattened`` (within 2 %) or ``rising``."""
    ys = [y for y in val_loss if not math.isnan(y)]
    if len(ys) < 3:
        return math.nan, "too short to tell"
    k = max(2, round(len(ys) * tail) + 1)
    before, last = ys[-k], ys[-1]
    change = (last - before) / abs(before) if before else math.nan
    if math.isnan(change):
        return change, "too short to tell"
    return change, "still falling" if change < -0.02 else ("rising" if change > 0.02 else "flattened")


def _pretrain_section(logs: dict[str, dict[str, list[float]]]) -> str:
    if not logs:
        return ""
    rows = []
    for m, log in logs.items():
        val = log.get("val_loss") or []
        change, word = pretrain_trend(val)
        seconds = sum(x for x in log.get("epoch_time_s", []) if not math.isnan(x))
        rows.append([m, str(max(0, len(val) - 1)), f"{val[0]:.4f}" if val else "–",
                     f"{val[-1]:.4f}" if val else "–",
                     "–" if math.isnan(change) else f"{100 * change:+.1f} %", word, f"{seconds / 60:.1f}"])
    return ("## Pre-training\n\nHeld-out reconstruction loss of each pre-training (validation images of the "
            "corpus): at the start, at the end, and its change over the last fifth of the epochs.\n\n"
            + format_table(["Method", "epochs", "val loss start", "val loss end", "last 20 %", "trend",
                            "minutes"], rows)
            + "\n\n![Pre-training curves](pretrain_curves.png)\n")


def _failures_section(agg: Aggregate) -> str:
    if not agg.failed:
        return ""
    rows = [[r["method"], r["dataset"], str(r["fold"]), str(r["seed"]),
             str(r.get("error", "")).replace("|", "/")] for r in agg.failed]
    return "## Failed cells\n\n" + format_table(["Method", "Dataset", "Fold", "Seed", "Error"], rows) + "\n"


def render_markdown(agg: Aggregate, spec: dict[str, Any], results: list[dict[str, Any]],
                    pretrain_logs: dict[str, dict[str, list[float]]] | None = None) -> str:
    """The report text (tables + figure links); ``pretrain_logs``: method -> its pre-training log.csv."""
    ok = [r for r in results if r.get("status") == "ok"]
    hours = sum(float(r.get("seconds", 0.0)) for r in ok) / 3600
    parts = [f"# Benchmark report: {agg.name}\n"]
    if spec.get("description"):
        parts.append(spec["description"].strip() + "\n")
    parts.append(f"{agg.n_ok} of {agg.n_expected} cells finished, {len(agg.failed)} failed "
                 f"({hours:.2f} h of cell time). Metric: Dice of the foreground classes (mean over classes, "
                 f"then over a cell's test cases), in %. Methods: {', '.join(agg.methods)}; reference "
                 f"baseline for Δ and tests: {agg.reference or 'none'}. Ranks: 1 = best per dataset, ties "
                 "share the mean rank.\n")
    parts.append(headline_section(agg))
    for group in GROUPS:
        section = _group_section(agg, group)
        if section:
            parts.append(section)
    parts.append(_significance_section(agg))
    parts.append(_pretrain_section(pretrain_logs or {}))
    parts.append("## Figures\n\n![Dice per dataset](dice_per_dataset.png)\n\n![Ranks](ranks.png)\n")
    parts.append(_failures_section(agg))
    return "\n".join(p for p in parts if p)


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _num(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def write_report(out: str | Path) -> ReportFiles:
    """Aggregate every cell under ``out`` and write the report into ``out/report``.

    Raises:
        FileNotFoundError: ``out`` holds no ``benchmark.json`` (not a benchmark output folder).
    """
    out = Path(out)
    meta = out / BENCHMARK_JSON
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: not found (not a benchmark output folder; run `mae3d benchmark "
                                "run` first)")
    spec = read_json(meta)["spec"]
    results = load_results(out)
    logs = {m["name"]: read_log_csv(out / "pretrain" / m["name"] / "log.csv") for m in spec["methods"]
            if m.get("pretrain")}
    logs = {m: log for m, log in logs.items() if log}
    agg = aggregate(spec, results)
    dest = out / REPORT_DIR
    g_all = agg.groups["all"]
    summary = [["method", "dataset", "role", "n_cells", "dice_mean", "dice_std", "rank",
                "delta_vs_reference"]]
    for ds in agg.datasets:
        for m in agg.methods:
            e = agg.entries.get((m, ds))
            summary.append([m, ds, agg.roles[ds], e.n if e else 0, _num(e.mean if e else None),
                            _num(e.std if e else None), _num(g_all.ranks.get(ds, {}).get(m)),
                            _num(agg.delta.get((m, ds)))])
    averages = [["method", "group", "n_datasets", "avg_dice", "avg_rank", "avg_delta_vs_reference"]]
    for group in GROUPS:
        g = agg.groups[group]
        for m in agg.methods:
            averages.append([m, group, g.n_datasets.get(m, 0), _num(g.avg_dice.get(m)),
                             _num(g.avg_rank.get(m)), _num(g.avg_delta.get(m))])
    sig = [["dataset", "role", "method", "reference", "n_cases", "mean_diff", "ci_low", "ci_high", "p_value",
            "note"]]
    for (m, ds), t in agg.paired.items():
        sig.append([ds, agg.roles[ds], m, agg.reference, t.n, _num(t.mean_diff), _num(t.ci_low),
                    _num(t.ci_high), _num(t.p_value), t.note])
    head = [["method", "reference", "n_units", "mean_diff", "ci_low", "ci_high", "verdict", "tasks_better",
             "tasks_worse", "sign_p"]]
    for h in agg.headlines.values():
        head.append([h.method, h.reference, h.n_units, _num(h.mean_diff), _num(h.ci_low), _num(h.ci_high),
                     h.verdict, len(h.tasks_better), len(h.tasks_worse), _num(h.sign_p)])
    cells = [["method", "dataset", "role", "fold", "seed", "status", "dice", "nsd", "hd95", "seconds",
              "error"]]
    for r in results:
        cells.append([r.get("method"), r.get("dataset"), r.get("role"), r.get("fold"), r.get("seed"),
                      r.get("status"), _num(r.get("dice")), _num(r.get("nsd")), _num(r.get("hd95")),
                      _num(r.get("seconds")), r.get("error", "")])
    files = ReportFiles(
        summary_csv=write_text(dest / "summary.csv", _csv(summary)),
        averages_csv=write_text(dest / "averages.csv", _csv(averages)),
        significance_csv=write_text(dest / "significance.csv", _csv(sig)),
        headline_csv=write_text(dest / "headline.csv", _csv(head)),
        cells_csv=write_text(dest / "cells.csv", _csv(cells)),
        dice_png=plot_dice_per_dataset(agg, dest / "dice_per_dataset.png"),
        ranks_png=plot_ranks(agg, dest / "ranks.png"),
        pretrain_png=plot_pretrain_curves(logs, dest / "pretrain_curves.png") if logs else None,
        markdown=write_text(dest / "report.md", render_markdown(agg, spec, results, logs)),
        aggregate=agg,
    )
    return files
