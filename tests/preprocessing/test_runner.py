"""prepare(): bad input skipped with reasons, parts, resume after a kill, plan safety, CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mae3d.cli.main import main
from mae3d.corpus.filters import CorpusFilter
from mae3d.io.atomic import read_json, write_json
from mae3d.preprocessing.config import PrepareConfig
from mae3d.preprocessing.plan import PlanMismatchError
from mae3d.preprocessing.runner import part_of, prepare
from mae3d.preprocessing.store import OutdatedCorpusError, PreprocessedCorpus

FAST = {"workers": 0, "spacing_mode": "none"}  # no resampling: the tests are about the runner


def _good_entries(good_volumes):
    return [{"subject": k, "path": good_volumes[k]} for k in "abcde"]


def _ids(report_items):
    return sorted(s["image_id"] for s in report_items)


# ---------------------------------------------------------------- bad input, one run for all kinds
@pytest.fixture(scope="module")
def bad_run(tmp_path_factory, good_volumes, bad_volumes, manifest_writer):
    d = tmp_path_factory.mktemp("badrun")
    entries = [{"subject": "good", "path": good_volumes["a"], "anatomy_mask": good_volumes["a_mask"]}]
    for kind, e in bad_volumes.items():
        entries.append({"subject": kind, **{k: v for k, v in e.items() if k != "words"}})
    entries.append({"subject": "good", "path": good_volumes["b"]})  # same id as the first entry
    entries.append({"subject": "zdup_path", "path": good_volumes["a"]})  # same file, other id (sorted last)
    man = manifest_writer(d / "manifest.json", entries)
    report = prepare(man, d / "out", PrepareConfig(**FAST), progress=False)
    return report, d / "out"


BAD_KINDS = ["truncated", "2d", "4d", "nan", "inf", "constant", "zeros", "spacing_big", "spacing_nan",
             "spacing_zero", "mask_shape", "mask_affine", "missing"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_is_skipped_with_a_reason(bad_run, bad_volumes, kind):
    report, out = bad_run
    entry = next(s for s in report.skipped if s["image_id"] == f"ds__{kind}__ses-1__T1w")
    assert bad_volumes[kind]["words"] in entry["reason"], entry["reason"]
    assert "\n" not in entry["reason"]
    assert not (out / "cases" / f"ds__{kind}__ses-1__T1w.json").exists()


@pytest.mark.parametrize("kind", ["id", "path"])
def test_duplicates_are_skipped_and_the_first_entry_kept(bad_run, good_volumes, kind):
    report, _ = bad_run
    dups = [s for s in report.skipped if "duplicate entry" in s["reason"]]
    if kind == "id":
        entry = next(s for s in dups if s["image_id"] == "ds__good__ses-1__T1w")
        assert entry["path"] == str(good_volumes["b"])
    else:
        entry = next(s for s in dups if s["image_id"] == "ds__zdup_path__ses-1__T1w")
        assert "same file as image ds__good__ses-1__T1w" in entry["reason"]


def test_bad_run_keeps_the_good_case_and_reports(bad_run):
    report, out = bad_run
    assert report.done == ["ds__good__ses-1__T1w"]
    assert len(report.skipped) == len(BAD_KINDS) + 2
    saved = read_json(out / "report.json")
    assert saved["done"] == report.done and _ids(saved["skipped"]) == _ids(report.skipped)
    corpus = PreprocessedCorpus(out)
    assert corpus.case_ids == ["ds__good__ses-1__T1w"]
    assert corpus.mask("ds__good__ses-1__T1w", "anatomy") is not None
    assert corpus.mask("ds__good__ses-1__T1w", "anonymization") is None
    assert read_json(out / "fingerprint.json")["n_cases"] == 1
    text = report.summary()
    assert "skipped 15" in text and "ds__nan__ses-1__T1w: " in text


def test_strict_cli_fails_on_bad_input(make_manifest, good_volumes, bad_volumes, tmp_path, capsys):
    man = make_manifest([{"subject": "a", "path": good_volumes["a"]},
                         {"subject": "nan", "path": bad_volumes["nan"]["path"]}])
    args = ["prepare", str(man), str(tmp_path / "out"), "--workers", "0", "--spacing", "2", "2", "2",
            "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "done 1" in out and "skipped 1" in out and "NaN/Inf" in out
    assert main([*args, "--strict"]) == 1  # resumed: the good case is already done, the bad one still bad
    assert "already done 1" in capsys.readouterr().out
    cfg = read_json(tmp_path / "out" / "config.json")
    assert cfg["config"]["strict"] is True and cfg["config"]["target_spacing"] == [2.0, 2.0, 2.0]
    assert "provenance" in cfg


# ---------------------------------------------------------------- parts
def test_parts_are_disjoint_and_cover(make_manifest, good_volumes, tmp_path):
    man = make_manifest(_good_entries(good_volumes))
    done = []
    for i in range(3):
        r = prepare(man, tmp_path / "out", PrepareConfig(**FAST, part=i, parts=3), progress=False)
        assert (tmp_path / "out" / f"report.part-{i}-of-3.json").is_file()
        done.append(set(r.done))
    assert sum(len(d) for d in done) == 5 and set.union(*done) == {f"ds__{k}__ses-1__T1w" for k in "abcde"}
    assert all(part_of(i, 3) == k for k, d in enumerate(done) for i in d)
    assert len(PreprocessedCorpus(tmp_path / "out")) == 5
    assert read_json(tmp_path / "out" / "fingerprint.json")["n_cases"] == 5


# ---------------------------------------------------------------- resume
def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_resume_redoes_only_unfinished_cases(make_manifest, good_volumes, tmp_path):
    man = make_manifest([{**e, "anatomy_mask": good_volumes["a_mask"]} if e["subject"] == "a" else e
                         for e in _good_entries(good_volumes)])
    out = tmp_path / "out"
    prepare(man, out, PrepareConfig(**FAST), progress=False)
    cases = out / "cases"
    # simulate a kill while writing case "c": its properties are missing, a temp file is left over
    (cases / "ds__c__ses-1__T1w.json").unlink()
    (cases / ".ds__c__ses-1__T1w.b2nd.x1y2z3.tmp.b2nd").write_bytes(b"partial")
    (cases / ".ds__a__ses-1__T1w__anat.b2nd.q9.tmp.b2nd").write_bytes(b"partial")
    before = _mtimes(cases)
    time.sleep(0.02)
    report = prepare(man, out, PrepareConfig(**FAST), progress=False)
    assert report.done == ["ds__c__ses-1__T1w"] and len(report.already_done) == 4
    after = _mtimes(cases)
    assert not [n for n in after if n.startswith(".")]  # no temporary files left
    for name, t in after.items():
        if "__c__" in name:
            assert name not in before or t > before[name]
        else:
            assert before[name] == t, name  # finished cases untouched
    # overwrite redoes everything; without it a different plan is refused
    with pytest.raises(PlanMismatchError, match="target_spacing"):
        prepare(man, out, PrepareConfig(workers=0, target_spacing=(3.0, 3.0, 3.0)), progress=False)
    report = prepare(man, out, PrepareConfig(**FAST, overwrite=True), progress=False)
    assert len(report.done) == 5 and all(_mtimes(cases)[n] > after[n] for n in after)


def test_resume_after_killing_the_process(make_manifest, good_volumes, tmp_path):
    """SIGKILL a real ``mae3d prepare`` after its first finished case, then rerun it."""
    entries = [{"subject": f"{k}{i}", "path": good_volumes[k]} for i in range(4) for k in "abcde"]
    # distinct files per entry (duplicate paths would be skipped): copies of the same scans
    for e in entries:
        e["path"] = shutil.copy(e["path"], tmp_path / f"{e['subject']}{''.join(e['path'].suffixes)}")
    man = make_manifest(entries)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mae3d.cli.main", "prepare", str(man), str(out), "--workers", "0",
           "--spacing", "0.7", "0.7", "0.7", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60

    def finished() -> list[Path]:  # temporary files (".<name>.<random>.tmp.json") are not finished
        return [p for p in (out / "cases").glob("*.json") if not p.name.startswith(".")]

    while time.time() < deadline and not finished():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in finished()}
    assert 1 <= len(first) < len(entries)  # killed mid-way
    cfg = PrepareConfig(workers=0, target_spacing=(0.7, 0.7, 0.7))
    report = prepare(man, out, cfg, progress=False)
    assert len(report.done) + len(report.already_done) == len(entries) and not report.skipped
    assert set(report.already_done) >= {n[:-5] for n in first}
    assert all((out / "cases" / n).stat().st_mtime_ns == t for n, t in first.items())
    assert not [p for p in (out / "cases").iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- pool, filters, median
def test_pool_gives_the_same_arrays_as_inline(make_manifest, good_volumes, tmp_path):
    man = make_manifest(_good_entries(good_volumes)[:3])
    cfg = {"target_spacing": (1.5, 1.5, 1.5)}
    prepare(man, tmp_path / "inline", PrepareConfig(workers=0, **cfg), progress=False)
    report = prepare(man, tmp_path / "pool", PrepareConfig(workers=2, **cfg), progress=False)
    assert len(report.done) == 3
    a, b = PreprocessedCorpus(tmp_path / "inline"), PreprocessedCorpus(tmp_path / "pool")
    assert a.case_ids == b.case_ids
    for cid in a.case_ids:
        np.testing.assert_allclose(a.image(cid)[...], b.image(cid)[...], atol=1e-5)  # BLAS threads differ


def test_filter_and_median_spacing(make_manifest, good_volumes, brain1, tmp_path):
    entries = [*_good_entries(good_volumes)[:2], {"subject": "br", "path": brain1[0], "modality": "T1c"}]
    man = make_manifest(entries)
    cfg = PrepareConfig(workers=0, spacing_mode="median", filters=CorpusFilter(modalities=["T1w"]))
    report = prepare(man, tmp_path / "out", cfg, progress=False)
    assert _ids(report.filtered) == ["ds__br__ses-1__T1w"] and "modality" in report.filtered[0]["reason"]
    assert report.ok and len(report.done) == 2
    plan = read_json(tmp_path / "out" / "plan.json")
    assert plan["spacing_mode"] == "median" and plan["target_spacing"] == [2.0, 2.0, 2.0]
    assert plan["median_spacing_from_n_images"] == 2


def _die_on_b(record, settings, cases_dir, nthreads):
    """Stand-in task: the worker process dies (as if OOM-killed) on subject ``b``."""
    if record.subject_id == "b":
        os._exit(1)
    from mae3d.preprocessing.runner import _case_task

    return _case_task(record, settings, cases_dir, nthreads)


def test_a_dying_worker_costs_only_its_case(make_manifest, good_volumes, tmp_path):
    from mae3d.corpus.manifest import load_manifest
    from mae3d.preprocessing.case import CaseSettings
    from mae3d.preprocessing.runner import PrepareReport, _Pool, _run_cases

    records = list(load_manifest(make_manifest(_good_entries(good_volumes)[:3])).images())
    report = PrepareReport(out_dir=tmp_path, n_images=3)
    pool = _Pool(2, 1)
    try:
        _run_cases(records, CaseSettings(target_spacing=None), tmp_path, pool, 1, report, False,
                   task=_die_on_b)
    finally:
        pool.reset()
    assert sorted(report.done) == ["ds__a__ses-1__T1w", "ds__c__ses-1__T1w"]
    assert [s["image_id"] for s in report.skipped] == ["ds__b__ses-1__T1w"]
    assert "worker process died" in report.skipped[0]["reason"]


# ---------------------------------------------------------------- plan version
@pytest.mark.parametrize("overwrite", [False, True])
def test_prepare_into_a_folder_of_an_older_plan_version_is_refused(make_manifest, good_volumes, tmp_path,
                                                                   overwrite, capsys):
    """A version-1 folder (RAS arrays) is never extended or half-rewritten with the new axis order."""
    out = tmp_path / "old"
    (out / "cases").mkdir(parents=True)
    old_plan = {"schema_version": 1, "orientation": "RAS", "array_layout": "(C=1, X, Y, Z)",
                "target_spacing": None, "spacing_mode": "none", "patch_size": [160, 160, 160]}
    write_json(out / "plan.json", old_plan)
    (out / "cases" / "old.json").write_text("{}")
    man = make_manifest(_good_entries(good_volumes)[:1])
    with pytest.raises(OutdatedCorpusError, match=r"schema_version 1 .*re-run `mae3d prepare` into a new"):
        prepare(man, out, PrepareConfig(**FAST, overwrite=overwrite), progress=False)
    assert read_json(out / "plan.json") == old_plan and sorted(p.name for p in (out / "cases").iterdir()) == [
        "old.json"]
    # the CLI says it in one line and exits non-zero
    assert main(["prepare", str(man), str(out), "--workers", "0", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "re-run `mae3d prepare` into a new folder" in err[0]


def test_normalization_switch_is_recorded_in_the_plan(make_manifest, good_volumes, tmp_path):
    man = make_manifest(_good_entries(good_volumes)[:1])
    assert main(["prepare", str(man), str(tmp_path / "z"), "--workers", "0", "--no-progress"]) == 0
    assert main(["prepare", str(man), str(tmp_path / "nz"), "--workers", "0", "--no-progress",
                 "--normalization", "zscore-nonzero"]) == 0
    plans = {k: read_json(tmp_path / k / "plan.json") for k in ("z", "nz")}
    assert plans["z"]["normalization"] == "zscore" and plans["nz"]["normalization"] == "zscore-nonzero"
    assert plans["z"]["schema_version"] == 2 and plans["z"]["orientation"] == "as-stored"
    # one folder, one normalisation: a resumed run with the other one is refused
    with pytest.raises(PlanMismatchError, match="normalization"):
        prepare(man, tmp_path / "z", PrepareConfig(workers=0, normalization="zscore-nonzero"), progress=False)
