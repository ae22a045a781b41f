"""Bad raw datasets fail before planning with one line naming the file and the problem."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mae3d.finetuning import DatasetError, check_dataset


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_valid_dataset_passes(make_small_dataset):
    root = make_small_dataset(channels=2)
    s = check_dataset(root)
    assert (s.name, s.cases, s.num_channels) == ("Dataset950_Small", ("case0", "case1"), 2)


def test_folder_name_must_be_nnunet_style(make_small_dataset):
    root = make_small_dataset(name="MyData")
    with pytest.raises(DatasetError, match="DatasetXXX_Name") as e:
        check_dataset(root)
    assert "MyData" in _one_line(e)


def test_missing_dataset_json_and_folders(make_small_dataset, tmp_path):
    root = make_small_dataset()
    (root / "dataset.json").unlink()
    with pytest.raises(DatasetError, match=r"dataset.json: missing"):
        check_dataset(root)
    with pytest.raises(DatasetError, match="not found"):
        check_dataset(tmp_path / "Dataset951_Nothing")


def test_missing_label(make_small_dataset):
    root = make_small_dataset()
    (root / "labelsTr" / "case1.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case1.nii.gz: label of case 'case1' is missing") as e:
        check_dataset(root)
    _one_line(e)


def test_label_values_not_in_dataset_json(make_small_dataset, anatomical_t1):
    root = make_small_dataset()
    _, affine = anatomical_t1
    seg = np.asanyarray(nib.load(root / "labelsTr" / "case0.nii.gz").dataobj).copy()
    seg[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(seg, affine), root / "labelsTr" / "case0.nii.gz")
    with pytest.raises(DatasetError, match=r"case0.nii.gz: label values \[3\] are not declared") as e:
        check_dataset(root)
    _one_line(e)


def test_non_consecutive_labels(make_small_dataset):
    root = make_small_dataset(labels={"background": 0, "head": 2})
    with pytest.raises(DatasetError, match="consecutive"):
        check_dataset(root)


def test_channel_count_mismatch_between_cases(make_small_dataset):
    root = make_small_dataset(channels=2)
    (root / "imagesTr" / "case1_0001.nii.gz").unlink()
    msg = r"case 'case1' has 1 channel file\(s\), dataset.json declares 2"
    with pytest.raises(DatasetError, match=msg) as e:
        check_dataset(root)
    _one_line(e)


def test_num_training_mismatch(make_small_dataset):
    root = make_small_dataset()
    ds = json.loads((root / "dataset.json").read_text())
    ds["numTraining"] = 5
    (root / "dataset.json").write_text(json.dumps(ds))
    with pytest.raises(DatasetError, match="numTraining is 5 but 2"):
        check_dataset(root)


def test_image_label_shape_mismatch(make_small_dataset, anatomical_t1):
    root = make_small_dataset()
    _, affine = anatomical_t1
    seg = np.asanyarray(nib.load(root / "labelsTr" / "case1.nii.gz").dataobj)[:-1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(seg), affine), root / "labelsTr" / "case1.nii.gz")
    with pytest.raises(DatasetError, match=r"case1.nii.gz: label shape .* differs from the image shape") as e:
        check_dataset(root)
    _one_line(e)


def test_image_label_affine_mismatch(make_small_dataset, anatomical_t1):
    root = make_small_dataset()
    _, affine = anatomical_t1
    shifted = affine.copy()
    shifted[:3, 3] += 10.0  # same grid size and spacing, moved by 10 mm
    seg = np.asanyarray(nib.load(root / "labelsTr" / "case0.nii.gz").dataobj)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(seg), shifted), root / "labelsTr" / "case0.nii.gz")
    with pytest.raises(DatasetError, match=r"case0.nii.gz: origin .* differs from the image's") as e:
        check_dataset(root)
    _one_line(e)


def test_channel_shape_mismatch(make_small_dataset, anatomical_t1):
    root = make_small_dataset(channels=2)
    data, affine = anatomical_t1
    nib.save(nib.Nifti1Image(data[:-2], affine), root / "imagesTr" / "case0_0001.nii.gz")
    with pytest.raises(DatasetError, match=r"case0_0001.nii.gz: shape .* differs from channel 0"):
        check_dataset(root)
