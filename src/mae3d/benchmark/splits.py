"""Training / test cases of a benchmark dataset per fold, and the files nnU-Net and the predictor read.

* ``kfold``: nnU-Net's own 5-fold split (``generate_crossval_split`` of the sorted ``imagesTr`` ids with
  seed 12345, exactly what nnU-Net writes as ``splits_final.json``); the test cases of fold ``k`` are its
  held-out cases, which nnU-Net also validates on during training (its cross-validation protocol).
* ``fixed``: one split (fold 0). Test cases come from ``imagesTs``/``labelsTs`` or, when listed there,
  from ``imagesTr``/``labelsTr`` (then excluded from training). nnU-Net's validation set is the training
  cases not used for training (or the training cases themselves, as nnU-Net's fold ``all``); test cases
  are never seen during training.

``max_train_cases`` keeps a seeded random subset of each fold's training cases (the same subset for every
method and seed). The split is written as ``splits_final.json`` into the dataset's preprocessed folder,
where nnU-Net's trainer reads it; test images and references are linked into one folder per fold.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mae3d.benchmark.raw_cases import TestCase, list_cases
from mae3d.benchmark.spec import DatasetEntry, SpecError
from mae3d.io.atomic import atomic_dir, read_json, write_json

__all__ = ["FoldPlan", "TestCase", "link_test_cases", "list_cases", "resolve_folds", "write_splits_final"]

NNUNET_SPLIT_SEED = 12345  # nnU-Net's do_split


@dataclass(frozen=True)
class FoldPlan:
    """One fold of a dataset: nnU-Net's train / validation ids and the test cases."""

    fold: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[TestCase, ...]

    def to_dict(self) -> dict[str, object]:
        return {"fold": self.fold, "train": list(self.train), "val": list(self.val),
                "test": [c.case_id for c in self.test]}


def _subset(ids: list[str], n: int | None, seed: int) -> list[str]:
    if n is None or n >= len(ids):
        return ids
    keep = np.random.RandomState(seed).choice(len(ids), n, replace=False)
    return sorted(ids[i] for i in keep)


def _fixed_lists(dataset_dir: Path, entry: DatasetEntry, tr: dict[str, TestCase], ts: dict[str, TestCase]
                 ) -> tuple[list[str], list[str]]:
    train, test = entry.split.train, entry.split.test
    split_file = dataset_dir / "splits.json"
    if (train is None or test is None) and split_file.is_file():
        listed = read_json(split_file)
        if not isinstance(listed, dict):
            raise SpecError(f"datasets {entry.name!r}.split: {split_file} is not a mapping with train/test "
                            "lists")
        train = train if train is not None else listed.get("train")
        test = test if test is not None else listed.get("test")
    if test is None:
        test = sorted(ts)
    if train is None:
        train = sorted(c for c in tr if c not in set(test))
    elif entry.split.train is None:  # from splits.json: the spec's test cases leave training
        train = [c for c in train if c not in set(test)]
    return list(train), list(test)


def resolve_folds(dataset_dir: str | Path, entry: DatasetEntry, folds: tuple[int, ...]) -> list[FoldPlan]:
    """The train / validation / test cases of ``folds`` of ``entry`` (a dataset folder on disk).

    Raises:
        SpecError: the split names missing cases, has no test or training case, or too few for k folds.
    """
    dataset_dir = Path(dataset_dir)
    where = f"datasets {entry.name!r}.split"
    tr, ts = list_cases(dataset_dir, "Tr"), list_cases(dataset_dir, "Ts")
    if entry.split.kind == "kfold":
        from nnunetv2.utilities.crossval_split import generate_crossval_split

        ids = sorted(tr)
        if len(ids) < entry.split.n_splits:
            raise SpecError(f"{where}: {entry.split.n_splits}-fold cross-validation needs >= "
                            f"{entry.split.n_splits} training cases, {dataset_dir} has {len(ids)}")
        splits = generate_crossval_split(ids, seed=NNUNET_SPLIT_SEED, n_splits=entry.split.n_splits)
        plans = []
        for k in folds:
            train = _subset(sorted(splits[k]["train"]), entry.max_train_cases, entry.subset_seed + k)
            held_out = sorted(splits[k]["val"])
            plans.append(FoldPlan(k, tuple(train), tuple(held_out), tuple(tr[c] for c in held_out)))
        return plans
    train, test = _fixed_lists(dataset_dir, entry, tr, ts)
    missing = [c for c in train if c not in tr]
    if missing:
        raise SpecError(f"{where}: training case {missing[0]!r} not found in {dataset_dir}/imagesTr+labelsTr")
    missing = [c for c in test if c not in ts and c not in tr]
    if missing:
        raise SpecError(f"{where}: test case {missing[0]!r} not found in {dataset_dir}/imagesTs+labelsTs "
                        "or imagesTr+labelsTr")
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise SpecError(f"{where}: case {overlap[0]!r} is both a training and a test case")
    if not test:
        raise SpecError(f"{where}: no test cases ({dataset_dir} has no imagesTs+labelsTs and no test list)")
    if not train:
        raise SpecError(f"{where}: no training cases")
    train = _subset(sorted(train), entry.max_train_cases, entry.subset_seed)
    rest = sorted(c for c in tr if c not in set(train) and c not in set(test))
    val = rest or train
    return [FoldPlan(0, tuple(train), tuple(val), tuple(ts.get(c) or tr[c] for c in sorted(test)))]


def write_splits_final(preprocessed_dataset_dir: str | Path, entry: DatasetEntry,
                       plans: list[FoldPlan]) -> Path:
    """Write nnU-Net's ``splits_final.json`` (``plans`` = every fold, in order) or check an existing one.

    An existing file with other content is an error (the spec's split changed under the same output).
    """
    if [p.fold for p in plans] != list(range(len(plans))):
        raise ValueError(f"plans must cover folds 0..n-1 in order, got {[p.fold for p in plans]}")
    splits = [{"train": list(p.train), "val": list(p.val)} for p in plans]
    dest = Path(preprocessed_dataset_dir) / "splits_final.json"
    if dest.is_file():
        if read_json(dest) != splits:
            raise SpecError(f"{dest}: differs from the spec's split of dataset {entry.name!r} (changed split "
                            "or max_train_cases); use another output folder")
        return dest
    return write_json(dest, splits)


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst)
    except OSError:  # file systems without symlinks
        shutil.copyfile(src, dst)


def link_test_cases(plan: FoldPlan, dest: str | Path) -> tuple[Path, Path]:
    """``dest/images`` and ``dest/labels`` holding (links to) the fold's test cases; made once, atomically."""
    dest = Path(dest)
    if not dest.is_dir():
        with atomic_dir(dest) as tmp:
            (tmp / "images").mkdir()
            (tmp / "labels").mkdir()
            for case in plan.test:
                for img in case.images:
                    _link(img, tmp / "images" / img.name)
                _link(case.label, tmp / "labels" / case.label.name)
    have = sorted(p.name for p in (dest / "labels").iterdir())
    want = sorted(c.label.name for c in plan.test)
    if have != want:
        raise SpecError(f"{dest}: holds test cases {have}, the spec's fold {plan.fold} has {want}; use "
                        "another output folder")
    return dest / "images", dest / "labels"
