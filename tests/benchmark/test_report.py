"""Aggregation and the report, from hand-made cell results (no training)."""

from __future__ import annotations

import csv

import pytest

from mae3d.benchmark.aggregate import aggregate
from mae3d.benchmark.report import pretrain_trend, write_report
from mae3d.benchmark.runner import BENCHMARK_JSON
from mae3d.io.atomic import write_json

SPEC = {
    "name": "hand", "description": "hand-made results", "seeds": [0, 1], "reference": "scratch",
    "evaluation": {"bootstrap": 500, "report_seed": 0},
    "methods": [{"name": "s3d"}, {"name": "mae"}, {"name": "scratch"}],
    "datasets": [{"name": "A", "role": "dev", "split": {"kind": "fixed", "folds": []}},
                 {"name": "B", "role": "dev", "split": {"kind": "fixed", "folds": []}},
                 {"name": "C", "role": "test", "split": {"kind": "kfold", "folds": [0, 1]}}],
}

# dataset -> method -> per-seed case Dice ({case: dice}); cell Dice = mean over its cases
CASES = {
    "A": {"s3d": [{"a1": 0.8, "a2": 0.9}, {"a1": 0.9, "a2": 0.8}],  # cells 0.85, 0.85
          "mae": [{"a1": 0.7, "a2": 0.8}, {"a1": 0.7, "a2": 0.8}],  # 0.75, 0.75
          "scratch": [{"a1": 0.7, "a2": 0.8}, {"a1": 0.8, "a2": 0.7}]},  # 0.75, 0.75 (tie with mae)
    "B": {"s3d": [{"b1": 0.5}, {"b1": 0.7}],  # 0.5, 0.7 -> 0.6 +- 0.1414
          "mae": [{"b1": 0.7}, {"b1": 0.7}],  # 0.7
          "scratch": [{"b1": 0.4}, {"b1": 0.6}]},  # 0.5
}


def _result(method: str, dataset: str, fold: int, seed: int, case_dice: dict[str, float], role: str) -> dict:
    dice = sum(case_dice.values()) / len(case_dice)
    return {"status": "ok", "method": method, "dataset": dataset, "role": role, "fold": fold, "seed": seed,
            "dice": dice, "nsd": dice, "hd95": 1.0, "case_dice": case_dice, "seconds": 10.0}


def _results() -> list[dict]:
    out = []
    for ds, methods in CASES.items():
        for m, seeds in methods.items():
            out += [_result(m, ds, 0, s, cd, "dev") for s, cd in enumerate(seeds)]
    # C: 2 folds x 2 seeds, 3 cases per fold; s3d beats scratch by 0.1 on every case
    for fold in (0, 1):
        for seed in (0, 1):
            cases = {f"c{fold}{i}": 0.5 + 0.05 * i for i in range(3)}
            out.append(_result("scratch", "C", fold, seed, cases, "test"))
            out.append(_result("s3d", "C", fold, seed, {k: v + 0.1 for k, v in cases.items()}, "test"))
    out.append({"status": "failed", "method": "mae", "dataset": "C", "role": "test", "fold": 0, "seed": 0,
                "error": "RuntimeError: out of memory"})
    out.append(_result("ghost", "A", 0, 0, {"a1": 1.0}, "dev"))  # not in the spec: ignored
    return out


def test_aggregate_tables_ranks_deltas_and_pairs():
    agg = aggregate(SPEC, _results())
    assert agg.n_ok == 6 + 6 + 8 and agg.n_expected == 3 * (1 + 1 + 2) * 2 and len(agg.failed) == 1
    e = agg.entries[("s3d", "B")]
    assert e.mean == pytest.approx(0.6) and e.std == pytest.approx(0.141421356, rel=1e-6) and e.n == 2
    dev = agg.groups["dev"]
    assert dev.ranks["A"] == {"s3d": 1.0, "mae": 2.5, "scratch": 2.5}
    assert dev.ranks["B"] == {"mae": 1.0, "s3d": 2.0, "scratch": 3.0}
    assert dev.avg_rank == pytest.approx({"s3d": 1.5, "mae": 1.75, "scratch": 2.75})
    assert dev.avg_dice["s3d"] == pytest.approx((0.85 + 0.6) / 2)
    assert agg.delta[("s3d", "A")] == pytest.approx(0.10) and agg.delta[("mae", "B")] == pytest.approx(0.2)
    assert dev.avg_delta["s3d"] == pytest.approx((0.10 + 0.10) / 2)
    test = agg.groups["test"]
    assert test.ranks["C"] == {"s3d": 1.0, "scratch": 2.0}  # mae has no finished cell on C
    assert agg.groups["all"].n_datasets == {"s3d": 3, "mae": 2, "scratch": 3}
    # pairs: (fold, case), averaged over seeds: 6 cases on C, each +0.1
    t = agg.paired[("s3d", "C")]
    assert t.n == 6 and t.mean_diff == pytest.approx(0.1) and t.p_value == pytest.approx(2 / 64)
    assert t.ci_low == pytest.approx(0.1) and t.ci_high == pytest.approx(0.1)
    # A: s3d case means over seeds (0.85, 0.85) vs scratch (0.75, 0.75): 2 cases
    assert agg.paired[("s3d", "A")].n == 2
    assert ("mae", "C") not in agg.paired and ("scratch", "A") not in agg.paired


def test_headline_pairs_every_task_case_seed_unit():
    agg = aggregate(SPEC, _results())
    assert set(agg.headlines) == {"s3d", "mae"}  # every method but the reference
    h = agg.headlines["s3d"]
    # A: 2 cases x 2 seeds, B: 1 x 2, C: 2 folds x 3 cases x 2 seeds; every unit +0.1
    assert h.n_units == 4 + 2 + 12 and h.mean_diff == pytest.approx(0.1)
    assert h.verdict == "helped" and h.tasks_better == ("A", "B", "C") and h.sign_p == pytest.approx(0.25)
    m = agg.headlines["mae"]
    # A: seed 0 ties on both cases, seed 1 -0.1 / +0.1 (a tie on A); B: +0.3, +0.1; no unit on C (failed)
    assert m.n_units == 6 and m.mean_diff == pytest.approx(0.4 / 6)
    assert m.tasks_tied == ("A",) and m.tasks_better == ("B",) and m.sign_p == 1.0


def test_report_writes_markdown_csv_and_figures(tmp_path):
    write_json(tmp_path / BENCHMARK_JSON, {"spec": SPEC})
    for i, r in enumerate(_results()):
        write_json(tmp_path / "cells" / r["method"] / r["dataset"] / f"fold_{r['fold']}" / f"seed_{r['seed']}"
                   / "result.json", {**r, "_i": i})
    files = write_report(tmp_path)
    md = files.markdown.read_text()
    assert "## Development datasets" in md and "## Test datasets" in md and "## All datasets" in md
    assert "| s3d | **85.00** ± 0.00 | 60.00 ± 14.14 | 72.50 | +10.00 | 1.50 |" in md  # best on A in bold
    assert "| mae | 75.00 ± 0.00 | **70.00** ± 0.00 | 72.50 | +10.00 | 1.75 |" in md
    # rank tables: ties share the mean rank; a method without a finished cell on a dataset has none
    assert "| Method | A | B | Avg rank |" in md and "| scratch | 2.5 | 3.0 | 2.75 |" in md
    assert "| Method | C | Avg rank |\n|---|---|---|\n| s3d | 1.0 | 1.00 |\n| mae | – | – |\n" in md
    assert "## Headline: did pre-training help?" in md
    assert "**s3d** vs scratch: pre-training **helped**: +10.00 Dice points on average over 18" in md
    assert md.index("## Headline") < md.index("## Development datasets")
    head = {r["method"]: r for r in csv.DictReader(files.headline_csv.open())}
    assert head["s3d"]["verdict"] == "helped" and head["s3d"]["n_units"] == "18"
    assert head["mae"]["verdict"] in ("helped", "cannot be told") and head["mae"]["tasks_better"] == "1"
    assert "## Paired comparison with the reference baseline" in md and "RuntimeError: out of memory" in md
    assert "ghost" not in md
    for png in (files.dice_png, files.ranks_png):
        assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(files.summary_csv.open()))
    row = next(r for r in rows if r["method"] == "s3d" and r["dataset"] == "C")
    assert float(row["dice_mean"]) == pytest.approx(0.65) and row["rank"] == "1.0" and row["n_cells"] == "4"
    averages = list(csv.DictReader(files.averages_csv.open()))
    assert {(r["method"], r["group"]) for r in averages} >= {("s3d", "dev"), ("mae", "test"),
                                                              ("scratch", "all")}
    sig = list(csv.DictReader(files.significance_csv.open()))
    assert {(r["method"], r["dataset"]) for r in sig} == {("s3d", "A"), ("s3d", "B"), ("mae", "A"),
                                                           ("mae", "B"), ("s3d", "C")}
    assert files.pretrain_png is None and "## Pre-training" not in md  # no recipe was run here
    with pytest.raises(FileNotFoundError, match="not a benchmark output folder"):
        write_report(tmp_path / "nothing")


def test_pretrain_trend_words():
    assert pretrain_trend([1.0, 0.8, 0.7, 0.6, 0.5, 0.4])[1] == "still falling"
    change, word = pretrain_trend([1.0, 0.6, 0.5, 0.5, 0.5, 0.5])
    assert word == "flattened" and change == pytest.approx(0.0)
    assert pretrain_trend([1.0, 0.5, 0.5, 0.6])[1] == "rising"
    assert pretrain_trend([1.0, float("nan")])[1] == "too short to tell"


def test_report_shows_the_pretraining_curves_of_recipe_methods(tmp_path):
    spec = {**SPEC, "methods": [{"name": "s3d", "pretrain": {"corpus": "c", "set": []}}, {"name": "mae"},
                                {"name": "scratch"}]}
    write_json(tmp_path / BENCHMARK_JSON, {"spec": spec})
    for r in _results():
        write_json(tmp_path / "cells" / r["method"] / r["dataset"] / f"fold_{r['fold']}" / f"seed_{r['seed']}"
                   / "result.json", r)
    log = "epoch,train_loss,val_loss,lr,epoch_time_s\n0,nan,1.0,nan,nan\n" + "".join(
        f"{e},{1 - 0.05 * e},{1 - 0.04 * e},0.01,30\n" for e in range(1, 11))
    (tmp_path / "pretrain" / "s3d").mkdir(parents=True)
    (tmp_path / "pretrain" / "s3d" / "log.csv").write_text(log)
    files = write_report(tmp_path)
    md = files.markdown.read_text()
    assert files.pretrain_png is not None and files.pretrain_png.read_bytes()[:4] == b"\x89PNG"
    assert "## Pre-training" in md and "![Pre-training curves](pretrain_curves.png)" in md
    # 10 epochs, val loss 1.0 -> 0.6; over the last fifth (epoch 8 -> 10) 0.68 -> 0.60: still falling
    assert "| s3d | 10 | 1.0000 | 0.6000 | -11.8 % | still falling | 5.0 |" in md
