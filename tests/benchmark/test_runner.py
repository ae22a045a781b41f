"""The benchmark runner: cell selection, resume (finished cells are skipped), failures recorded, and a tiny
real 2-method x 1-dataset x 1-fold benchmark end to end with its report."""

from __future__ import annotations

import copy

import pytest

from mae3d.benchmark.cells import Cell, cell_key, enumerate_cells, load_results, parse_only
from mae3d.benchmark.report import write_report
from mae3d.benchmark.runner import run_benchmark
from mae3d.benchmark.spec import SpecError, validate
from mae3d.corpus.manifest import load_manifest
from mae3d.io.atomic import read_json, write_json


def _spec(make_spec, **changes):
    return validate(make_spec(**changes), check_paths=False)


def test_only_filters_select_cells(make_spec):
    data = make_spec(seeds=[0, 1])
    data["datasets"].append({"name": "six", "role": "dev", "path": "/nowhere/Dataset950_Six",
                             "split": {"kind": "kfold", "folds": [0, 2]}})
    spec = validate(data, check_paths=False)
    assert len(enumerate_cells(spec)) == (1 + 2) * 2 * 2
    only = parse_only(["method=pre,dataset=six", "seed=1"])
    assert only == {"method": {"pre"}, "dataset": {"six"}, "seed": {"1"}}
    assert enumerate_cells(spec, only) == [Cell("pre", "six", 0, 1), Cell("pre", "six", 2, 1)]
    assert len(enumerate_cells(spec, parse_only(["method=pre,scratch", "role=test"]))) == 4
    with pytest.raises(SpecError, match=r"--only: unknown method 'S3D'; valid: pre, scratch"):
        enumerate_cells(spec, parse_only(["method=S3D"]))
    with pytest.raises(SpecError, match=r"--only: unknown key 'colour'"):
        parse_only(["colour=red"])


def _fake_result(spec, cell: Cell, dice: float = 0.5, status: str = "ok") -> dict:
    return {"status": status, "cell_key": cell_key(spec, cell), "method": cell.method,
            "dataset": cell.dataset, "role": "test", "fold": cell.fold, "seed": cell.seed, "dice": dice,
            "nsd": dice, "hd95": 1.0, "case_dice": {"robex_t1": dice}, "seconds": 1.0}


def test_finished_cells_are_skipped_without_any_work(tmp_path, make_spec):
    spec = _spec(make_spec)
    cells = enumerate_cells(spec)
    for c in cells:
        write_json(tmp_path / c.rel_dir() / "result.json", _fake_result(spec, c))
    lines: list[str] = []
    summary = run_benchmark(spec, tmp_path, device="cpu", progress=lines.append)
    assert summary.skipped == cells and not summary.done and not summary.failed
    assert not (tmp_path / "data").exists() and not (tmp_path / "work").exists()  # nothing was built
    assert "2 cells (2 finished, 0 to run)" in lines[0]
    assert read_json(tmp_path / "benchmark.json")["spec"]["name"] == "unit"


def test_workers_must_be_positive(tmp_path, make_spec):
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        run_benchmark(_spec(make_spec), tmp_path, device="cpu", workers=0, progress=None)
    assert not any(tmp_path.iterdir())


def test_a_changed_spec_never_reuses_finished_cells(tmp_path, make_spec):
    spec = _spec(make_spec)
    cell = enumerate_cells(spec)[0]
    write_json(tmp_path / cell.rel_dir() / "result.json", _fake_result(spec, cell))
    budget = copy.deepcopy(make_spec()["budget"]) | {"epochs": 2}
    changed = _spec(make_spec, budget=budget)
    assert cell_key(changed, cell) != cell_key(spec, cell)
    with pytest.raises(SpecError, match=r"this cell was run with another definition"):
        run_benchmark(changed, tmp_path, device="cpu", progress=None)


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory, make_spec, tiny_pretrain):
    """A real grid: S3D pre-trained by recipe (embedded corpus without the test head), the fixed
    baseline, and a method whose checkpoint is garbage. Run in two steps: first only S3D, then all."""
    root = tmp_path_factory.mktemp("bench")
    (root / "garbage.pth").write_bytes(b"not a checkpoint")
    data = make_spec()
    data["corpora"] = {"embedded": {"embedded": True, "exclude": ["robex_t1"],
                                    "prepare": {"target_spacing": [4, 4, 4], "patch_size": [32, 32, 32],
                                                "workers": 0}}}
    data["methods"] = [{"name": "S3D", "pretrain": {"corpus": "embedded", "set": tiny_pretrain}},
                       {"name": "scratch", "baseline": "fixed", "plans_from": "S3D"},
                       {"name": "broken", "checkpoint": str(root / "garbage.pth")}]
    spec = validate(data, check_paths=True)
    out = root / "out"
    first = run_benchmark(spec, out, only={"method": {"S3D"}}, device="cpu", threads=1, progress=None)
    s3d_result = out / Cell("S3D", "brain", 0, 0).rel_dir() / "result.json"
    before = (s3d_result.read_bytes(), s3d_result.stat().st_mtime_ns)
    lines: list[str] = []
    second = run_benchmark(spec, out, device="cpu", threads=1, progress=lines.append)
    return spec, out, first, second, before, lines


@pytest.mark.slow
def test_partly_finished_benchmark_resumes_and_records_failures(tiny_benchmark):
    spec, out, first, second, before, lines = tiny_benchmark
    s3d, scratch, broken = (Cell(m, "brain", 0, 0) for m in ("S3D", "scratch", "broken"))
    assert first.done == [s3d] and first.ok
    # resumed: the finished S3D cell is skipped and left untouched; the others ran
    assert second.skipped == [s3d] and second.done == [scratch] and list(second.failed) == [broken]
    path = out / s3d.rel_dir() / "result.json"
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    failed = read_json(out / broken.rel_dir() / "result.json")
    assert failed["status"] == "failed" and "garbage.pth" in failed["error"] and failed["traceback"]
    assert any("broken / brain / fold 0 / seed 0: FAILED" in line for line in lines)
    ok = read_json(out / scratch.rel_dir() / "result.json")
    assert ok["status"] == "ok" and 0.0 <= ok["dice"] <= 1.0 and ok["test_cases"] == ["robex_t1"]
    assert ok["train_cases"] == ["mni2009c_t1", "mni2009c_t2"]
    assert ok["finetune_config"]["baseline"] == "fixed"
    assert set(ok["case_dice"]) == {"robex_t1"} and ok["cell_key"] == cell_key(spec, scratch)
    # the recipe was pre-trained once, on the corpus without the held-out ROBEX head
    assert (out / "pretrain" / "S3D" / "checkpoint_final.pth").is_file()
    manifest = load_manifest(out / "data" / "corpora" / "embedded" / "manifest.json")
    sources = {r.metadata.get("source") for r in manifest.images()}
    assert "robex_t1" not in sources and "mni2009c_t1" in sources
    # S3D and scratch share one preprocessed dataset (one data folder, plans of both methods)
    pre = out / "work" / "brain" / "nnUNet_preprocessed" / "Dataset901_BrainExtraction"
    assert len(list(pre.glob("mae3d_Spacing_*.mae3d_preprocessing.json"))) == 1
    assert len(list(pre.glob("mae3dPlans_*.json"))) == 2


@pytest.mark.slow
def test_tiny_benchmark_report_has_the_table_and_figures(tiny_benchmark):
    _, out, *_ = tiny_benchmark
    files = write_report(out)
    md = files.markdown.read_text()
    assert "## Test datasets" in md and "| Method | brain | Avg Dice | Δ vs scratch | Avg rank |" in md
    results = {r["method"]: r for r in load_results(out)}
    assert f"| S3D | {100 * results['S3D']['dice']:.2f} |" in md
    assert f"| scratch | {100 * results['scratch']['dice']:.2f} |" in md
    assert "## Failed cells" in md and "| broken | brain | 0 | 0 |" in md
    assert "![Dice per dataset](dice_per_dataset.png)" in md
    for png in (files.dice_png, files.ranks_png):
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5_000
    assert files.aggregate.groups["test"].avg_rank.keys() == {"S3D", "scratch"}


@pytest.mark.slow
def test_parallel_workers_run_pretrainings_and_cells_side_by_side(tmp_path, make_spec, tiny_pretrain):
    """workers=2: two recipe pre-trainings at once, then the cells in worker processes; every cell
    finishes with the same record layout as a serial run."""
    data = make_spec()
    data["corpora"] = {"embedded": {"embedded": True, "exclude": ["robex_t1"],
                                    "prepare": {"target_spacing": [4, 4, 4], "patch_size": [32, 32, 32],
                                                "workers": 0}}}
    data["methods"] = [{"name": "S3D", "pretrain": {"corpus": "embedded", "set": tiny_pretrain}},
                       {"name": "MAE", "pretrain": {"corpus": "embedded",
                                                    "set": tiny_pretrain | {"method.name": "mae"}}},
                       {"name": "scratch", "baseline": "fixed", "plans_from": "S3D"}]
    spec = validate(data, check_paths=True)
    lines: list[str] = []
    summary = run_benchmark(spec, tmp_path, device="cpu", workers=2, threads=1, progress=lines.append)
    assert summary.ok and sorted(c.method for c in summary.done) == ["MAE", "S3D", "scratch"]
    assert any("pre-training S3D, MAE side by side (1 torch threads each)" in line for line in lines)
    assert any("3 cells, 2 at a time (1 torch threads each)" in line for line in lines)
    for m in ("S3D", "MAE"):
        assert (tmp_path / "pretrain" / m / "checkpoint_final.pth").is_file()
    results = {r["method"]: r for r in load_results(tmp_path)}
    assert all(r["status"] == "ok" and r["cell_key"] == cell_key(spec, Cell(m, "brain", 0, 0))
               and set(r["case_dice"]) == {"robex_t1"} for m, r in results.items())
    # rerun: nothing left to do, no worker is started
    again = run_benchmark(spec, tmp_path, device="cpu", workers=2, progress=None)
    assert len(again.skipped) == 3 and not again.done
