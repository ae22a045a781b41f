"""Train/validation split: subject level, deterministic, never empty train, clear errors."""

from __future__ import annotations

import pytest

from mae3d.pretraining.data.split import split_cases, split_corpus, subject_of


def test_subject_level_split_keeps_subjects_together():
    ids = [f"c{i}" for i in range(40)]
    subjects = {c: f"s{i // 4}" for i, c in enumerate(ids)}  # 10 subjects x 4 scans
    train, val = split_cases(ids, 0.2, seed=1, subjects=subjects)
    assert len(val) == 8 and len(train) == 32 and set(train).isdisjoint(val)
    assert {subjects[c] for c in train}.isdisjoint({subjects[c] for c in val})
    assert split_cases(ids, 0.2, seed=1, subjects=subjects) == (train, val)
    assert split_cases(ids, 0.2, seed=2, subjects=subjects) != (train, val)


def test_case_level_and_minimums():
    ids = [f"c{i}" for i in range(10)]
    train, val = split_cases(ids, 0.05)
    assert len(val) == 1 and len(train) == 9  # at least one validation case
    assert split_cases(["a"], 0.05) == (["a"], [])
    assert split_cases(["a", "b"], 0.9)[0] != []  # never everything to validation
    assert split_cases(ids, 0.0) == (ids, [])
    # one subject only (or unknown subjects) -> case level
    assert len(split_cases(ids, 0.2, subjects=dict.fromkeys(ids, "s"))[1]) == 2
    assert len(split_cases(ids, 0.2, subjects={"c0": "s"})[1]) == 2
    with pytest.raises(ValueError, match="empty"):
        split_cases([], 0.05)


def test_split_corpus_reads_subjects_from_properties(corpus):
    assert subject_of(corpus.properties("case3")) == "ds1__sub1"
    train, val = split_corpus(corpus, val_fraction=0.34, seed=0)
    assert len(val) == 2 and sorted(train + val) == corpus.case_ids
    assert len({subject_of(corpus.properties(c)) for c in val}) == 1
