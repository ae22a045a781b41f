"""Fixtures for benchmark tests: small real nnU-Net datasets and spec builders."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

#: seconds-long fine-tuning on CPU (resenc-xs, 32^3 patches, in-process augmentation and preprocessing)
TINY_BUDGET: dict[str, Any] = {
    "epochs": 1, "iterations_per_epoch": 2, "val_iterations_per_epoch": 1, "da_workers": 0,
    "export_workers": 1, "preprocess_workers": 1, "final_validation": False,
    "schedule": {"name": "warmup", "warmup_epochs": 1},
}

#: a one-epoch S3D pre-training of resenc-xs at 4 mm on 32^3 patches
TINY_PRETRAIN: dict[str, Any] = {
    "model.name": "resenc-xs", "method.name": "s3d", "method.mask.block_size": 8,
    "loader.patch_size": [32, 32, 32], "loader.batch_size": 2, "loader.workers": 0,
    "loader.val_fraction": 0.3, "train.epochs": 1, "train.iterations_per_epoch": 2, "train.val_iterations": 2,
    "train.quiet": True,
    "train.tensorboard": False, "train.num_threads": 1, "checkpoint.every": 1,
}


@pytest.fixture(scope="session")
def brain_raw(tmp_path_factory) -> Path:
    """Dataset901_BrainExtraction at 4 mm: 2 real training heads, the ROBEX head held out (imagesTs)."""
    from mae3d.data import NnunetDataConfig, build_nnunet_dataset

    raw = tmp_path_factory.mktemp("raw")
    return build_nnunet_dataset("brainextraction", raw, NnunetDataConfig(spacing=4.0))


@pytest.fixture(scope="session")
def six_case_raw(tmp_path_factory, anatomical_nii) -> Path:
    """Dataset950_Six: 6 training cases from nibabel's real T1 (flips / shifts; label: thresholded head)."""
    img = nib.load(anatomical_nii)
    data = np.asarray(img.dataobj, dtype=np.float32)
    mask = (data > np.percentile(data, 60)).astype(np.uint8)
    root = tmp_path_factory.mktemp("raw6") / "Dataset950_Six"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(6):
        d, m = (data[::-1], mask[::-1]) if i % 2 else (data, mask)
        d, m = np.roll(d, i, axis=2), np.roll(m, i, axis=2)
        nib.save(nib.Nifti1Image(np.ascontiguousarray(d), img.affine),
                 root / "imagesTr" / f"case{i}_0000.nii.gz")
        nib.save(nib.Nifti1Image(np.ascontiguousarray(m), img.affine), root / "labelsTr" / f"case{i}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1"}, "labels": {"background": 0, "head": 1}, "numTraining": 6,
        "file_ending": ".nii.gz"}))
    return root


def base_spec(dataset: Path | None = None, **changes: Any) -> dict[str, Any]:
    """A valid spec mapping: one dataset, a checkpoint method and the fixed baseline."""
    spec: dict[str, Any] = {
        "schema_version": 1,
        "name": "unit",
        "seeds": [0],
        "budget": copy.deepcopy(TINY_BUDGET),
        "datasets": [{"name": "brain", "role": "test",
                      **({"path": str(dataset)} if dataset else
                         {"embedded": "brainextraction", "spacing": 4.0}),
                      "split": "fixed"}],
        "methods": [{"name": "pre", "checkpoint": "ckpt.pth"},
                    {"name": "scratch", "baseline": "fixed", "plans_from": "pre"}],
    }
    spec.update(changes)
    return spec


@pytest.fixture(scope="session")
def make_spec() -> Callable[..., dict[str, Any]]:
    """:func:`base_spec` for tests (test modules cannot import conftest)."""
    return base_spec


@pytest.fixture(scope="session")
def tiny_budget() -> dict[str, Any]:
    return copy.deepcopy(TINY_BUDGET)


@pytest.fixture(scope="session")
def tiny_pretrain() -> dict[str, Any]:
    return copy.deepcopy(TINY_PRETRAIN)
