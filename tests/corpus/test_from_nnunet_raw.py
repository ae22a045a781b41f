"""nnU-Net raw dataset import (labels ignored, one image per case and channel)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mae3d.corpus.from_nnunet_raw import build_from_nnunet_raw
from mae3d.corpus.manifest import ManifestError


def test_cases_channels_and_splits(nnunet_raw: Path):
    m = build_from_nnunet_raw(nnunet_raw)
    recs = {r.image_id: r for r in m.images()}
    assert list(m.collection.datasets) == ["Dataset042_Toy"]
    assert m.collection.datasets["Dataset042_Toy"].metadata["dataset_name"] == "Toy"
    assert sorted((r.subject_id, r.name, r.modality, r.metadata["split"], r.metadata["channel"])
                  for r in recs.values()) == [
        ("case01", "case01_0000", "T1", "train", 0), ("case01", "case01_0001", "FLAIR", "train", 1),
        ("case02", "case02_0000", "T1", "train", 0), ("case02", "case02_0001", "FLAIR", "train", 1),
        ("case03", "case03_0000", "T1", "test", 0), ("case03", "case03_0001", "FLAIR", "test", 1),
    ]
    assert all(r.path.is_file() and r.path.parent.name in ("imagesTr", "imagesTs") for r in recs.values())
    assert recs["Dataset042_Toy__case03__ses-DEFAULT__case03_0001"].path == \
        nnunet_raw / "imagesTs" / "case03_0001.nii.gz"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_unknown_channel_and_duplicate_case_are_errors(nnunet_raw: Path, tmp_path: Path):
    d = _copy(nnunet_raw, tmp_path / "Dataset042_Toy")
    os.symlink(os.readlink(d / "imagesTr" / "case01_0000.nii.gz"), d / "imagesTr" / "case01_0002.nii.gz")
    with pytest.raises(ManifestError, match=r"channel 0002 is not in dataset\.json"):
        build_from_nnunet_raw(d)
    (d / "imagesTr" / "case01_0002.nii.gz").unlink()
    os.symlink(os.readlink(d / "imagesTr" / "case01_0000.nii.gz"), d / "imagesTs" / "case01_0000.nii.gz")
    with pytest.raises(ManifestError, match="case 'case01' appears twice"):
        build_from_nnunet_raw(d)


def test_explicit_dataset_listing_and_missing_fields(nnunet_raw: Path, tmp_path: Path):
    d = _copy(nnunet_raw, tmp_path / "Dataset043_Listed")
    meta = json.loads((d / "dataset.json").read_text())
    meta["dataset"] = {"A": {"images": ["imagesTr/case01_0000.nii.gz", "imagesTr/case01_0001.nii.gz"],
                             "label": "labelsTr/case01.nii.gz"}}
    (d / "dataset.json").write_text(json.dumps(meta))
    recs = list(build_from_nnunet_raw(d).images())
    assert [(r.subject_id, r.modality, r.path.name) for r in recs] == [
        ("A", "T1", "case01_0000.nii.gz"), ("A", "FLAIR", "case01_0001.nii.gz")]
    del meta["file_ending"]
    (d / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ManifestError, match="file_ending"):
        build_from_nnunet_raw(d)
    with pytest.raises(FileNotFoundError, match=r"dataset\.json"):
        build_from_nnunet_raw(tmp_path)
