"""Folds of benchmark datasets on real volumes: fixed splits, nnU-Net's k-fold, label limits, test links."""

from __future__ import annotations

import os

import pytest

from mae3d.benchmark.spec import SpecError, validate
from mae3d.benchmark.splits import link_test_cases, resolve_folds, write_splits_final


def _entry(make_spec, dataset, **ds):
    data = make_spec(dataset)
    data["datasets"][0].update(ds)
    return validate(data, check_paths=False).datasets[0]


def test_fixed_split_of_an_embedded_dataset_uses_its_splits_json(make_spec, brain_raw):
    (plan,) = resolve_folds(brain_raw, _entry(make_spec, brain_raw), (0,))
    assert plan.fold == 0
    assert plan.train == ("mni2009c_t1", "mni2009c_t2")
    assert plan.val == plan.train  # nothing else left: validate on the training cases (nnU-Net's fold "all")
    (case,) = plan.test
    assert case.case_id == "robex_t1" and case.label == brain_raw / "labelsTs" / "robex_t1.nii.gz"
    assert case.images == (brain_raw / "imagesTs" / "robex_t1_0000.nii.gz",)


def test_explicit_lists_and_max_train_cases(make_spec, brain_raw):
    entry = _entry(make_spec, brain_raw,
                   split={"kind": "fixed", "train": ["mni2009c_t1"], "test": ["mni2009c_t2"]})
    (plan,) = resolve_folds(brain_raw, entry, (0,))
    assert plan.train == ("mni2009c_t1",) and plan.val == ("mni2009c_t1",)
    # held out of imagesTr
    assert plan.test[0].images == (brain_raw / "imagesTr" / "mni2009c_t2_0000.nii.gz",)
    (one,) = resolve_folds(brain_raw, _entry(make_spec, brain_raw, max_train_cases=1), (0,))
    assert len(one.train) == 1  # the unused training case is nnU-Net's validation case
    assert one.val == tuple(c for c in ("mni2009c_t1", "mni2009c_t2") if c not in one.train)
    bad = _entry(make_spec, brain_raw, split={"kind": "fixed", "test": ["nobody"]})
    with pytest.raises(SpecError, match=r"test case 'nobody' not found"):
        resolve_folds(brain_raw, bad, (0,))


def test_kfold_is_nnunets_split_and_limits_training_cases(make_spec, six_case_raw):
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    ids = [f"case{i}" for i in range(6)]
    reference = generate_crossval_split(ids, seed=12345, n_splits=5)
    plans = resolve_folds(six_case_raw, _entry(make_spec, six_case_raw, split="kfold"), tuple(range(5)))
    for plan, ref in zip(plans, reference, strict=True):
        assert sorted(plan.train) == sorted(ref["train"]) and sorted(plan.val) == sorted(ref["val"])
        assert [c.case_id for c in plan.test] == sorted(ref["val"])
    held_out = sorted(c.case_id for p in plans for c in p.test)
    assert held_out == ids  # every case is tested exactly once
    limited = resolve_folds(six_case_raw, _entry(make_spec, six_case_raw, split="kfold", max_train_cases=2),
                            (0, 1))
    assert [len(p.train) for p in limited] == [2, 2]
    assert set(limited[0].train) <= set(reference[0]["train"])


def test_splits_final_and_test_links(tmp_path, make_spec, six_case_raw):
    entry = _entry(make_spec, six_case_raw, split="kfold")
    plans = resolve_folds(six_case_raw, entry, tuple(range(5)))
    dest = write_splits_final(tmp_path / "pre", entry, plans)
    assert write_splits_final(tmp_path / "pre", entry, plans) == dest  # same split: accepted
    other = resolve_folds(six_case_raw, _entry(make_spec, six_case_raw, split="kfold", max_train_cases=1),
                          tuple(range(5)))
    with pytest.raises(SpecError, match=r"splits_final\.json: differs from the spec's split"):
        write_splits_final(tmp_path / "pre", entry, other)
    images, labels = link_test_cases(plans[0], tmp_path / "test0")
    names = sorted(p.name for p in labels.iterdir())
    assert names == sorted(f"{c.case_id}.nii.gz" for c in plans[0].test)
    assert all(os.path.samefile(images / c.images[0].name, c.images[0]) for c in plans[0].test)
    with pytest.raises(SpecError, match="holds test cases"):
        link_test_cases(plans[1], tmp_path / "test0")


def test_fixed_split_with_test_cases_from_a_cross_validation_dataset(make_spec, tmp_path_factory):
    """A kfold-style dataset (every case in imagesTr, splits.json test empty) with a spec-listed test case:
    the test case leaves the training list read from splits.json (the demo's heads split)."""
    from mae3d.data import NnunetDataConfig, build_nnunet_dataset

    raw = build_nnunet_dataset("heads", tmp_path_factory.mktemp("heads"), NnunetDataConfig(spacing=6.0))
    entry = _entry(make_spec, raw, split={"kind": "fixed", "test": ["mni2009c_t2"]})
    (plan,) = resolve_folds(raw, entry, (0,))
    assert plan.train == ("mni2009c_t1", "robex_t1") and plan.val == plan.train
    assert [c.case_id for c in plan.test] == ["mni2009c_t2"]
    assert plan.test[0].images == (raw / "imagesTr" / "mni2009c_t2_0000.nii.gz",)
