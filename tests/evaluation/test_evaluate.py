"""Folder evaluation on small NIfTI files: values, JSON/CSV content, input errors, CLI."""

from __future__ import annotations

import argparse
import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mae3d.cli import evaluate as cli_evaluate
from mae3d.evaluation.evaluate import EvaluationInputError, evaluate_folders, labels_from_dataset_json
from mae3d.evaluation.metrics import binary_metrics, image_diagonal_mm

SPACING_XYZ = (1.5, 1.0, 2.0)  # SimpleITK order; numpy arrays are (z, y, x)
SPACING_ZYX = SPACING_XYZ[::-1]


def _write(path, array_zyx, spacing_xyz=SPACING_XYZ):
    image = sitk.GetImageFromArray(np.asarray(array_zyx, dtype=np.uint8))
    image.SetSpacing(spacing_xyz)
    sitk.WriteImage(image, str(path))


def _box(shape, lo, hi, value, out=None):
    out = np.zeros(shape, dtype=np.uint8) if out is None else out
    out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = value
    return out


@pytest.fixture()
def folders(tmp_path):
    """Two cases, labels 1 and 2. case_a: label 1 shifted by one voxel; case_b: label 2 not predicted."""
    shape = (8, 12, 10)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    gt_a = _box(shape, (2, 2, 2), (5, 6, 6), 1)
    _box(shape, (5, 7, 6), (7, 10, 9), 2, out=gt_a)
    pred_a = _box(shape, (2, 3, 2), (5, 7, 6), 1)
    _box(shape, (5, 7, 6), (7, 10, 9), 2, out=pred_a)
    gt_b = _box(shape, (1, 1, 1), (4, 4, 4), 1)
    _box(shape, (5, 5, 5), (7, 8, 8), 2, out=gt_b)
    pred_b = _box(shape, (1, 1, 1), (4, 4, 4), 1)
    for name, g, p in (("case_a", gt_a, pred_a), ("case_b", gt_b, pred_b)):
        _write(gt / f"{name}.nii.gz", g)
        _write(pred / f"{name}.nii.gz", p)
    return pred, gt, {"case_a": (pred_a, gt_a), "case_b": (pred_b, gt_b)}, shape


def test_values_json_and_csv(folders, tmp_path):
    pred, gt, arrays, shape = folders
    out = tmp_path / "out"
    res = evaluate_folders(pred, gt, {"background": 0, "wm": 1, "lesion": 2}, tolerance_mm=1.0,
                           output_dir=out)
    assert res.labels == {"wm": 1, "lesion": 2}
    expected_a1 = binary_metrics(arrays["case_a"][0] == 1, arrays["case_a"][1] == 1, SPACING_ZYX, 1.0)
    case_a, case_b = res.cases
    assert case_a.case == "case_a" and case_a.spacing == SPACING_ZYX
    assert case_a.metrics[1].dice == pytest.approx(expected_a1.dice)
    assert case_a.metrics[1].dice == pytest.approx(2 * 36 / (48 + 48))  # 3x4x4 boxes, overlap 3x3x4
    assert case_a.metrics[1].hd95 == pytest.approx(1.0)  # one voxel along y (1.0 mm)
    assert case_a.metrics[2].dice == 1.0 and case_a.metrics[2].hd95 == 0.0
    diagonal = image_diagonal_mm(shape, SPACING_ZYX)
    assert math.isinf(case_b.metrics[2].hd95) and case_b.metrics[2].hd95_capped == pytest.approx(diagonal)
    assert res.mean[2]["dice"] == pytest.approx(0.5)
    assert res.mean[2]["hd95"] == pytest.approx(diagonal / 2) and res.mean[2]["n_hd95_capped"] == 1
    assert res.foreground_mean["dice"] == pytest.approx((res.mean[1]["dice"] + res.mean[2]["dice"]) / 2)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 2 and summary["tolerance_mm"] == 1.0
    assert summary["mean"]["2"]["name"] == "lesion"
    b2 = summary["metric_per_case"][1]["metrics"]["2"]
    assert b2["hd95"] is None and b2["hd95_infinite"] is True and b2["hd95_capped"] == pytest.approx(diagonal)
    assert summary["foreground_mean"]["dice"] == pytest.approx(res.foreground_mean["dice"])

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 4 and rows[0]["case"] == "case_a" and rows[0]["name"] == "wm"
    assert float(rows[3]["hd95"]) == math.inf and float(rows[3]["hd95_capped"]) == pytest.approx(diagonal)
    assert float(rows[0]["dice"]) == pytest.approx(0.75)

    table = res.format_summary()
    assert "lesion" in table and "NSD@1mm" in table and "1/2" in table

    with pytest.raises(FileExistsError, match=r"summary\.json"):  # finished results are not replaced silently
        evaluate_folders(pred, gt, output_dir=out)
    evaluate_folders(pred, gt, output_dir=out, overwrite=True, hd95_cap_mm=100.0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean"]["2"]["hd95"] == pytest.approx(50.0)


def test_labels_default_to_values_in_references(folders):
    pred, gt, _, _ = folders
    res = evaluate_folders(pred, gt, write=False)
    assert res.labels == {"1": 1, "2": 2}
    assert not (pred / "summary.json").exists()


def test_ignore_label_is_excluded(tmp_path):
    shape = (6, 6, 6)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    ref = _box(shape, (1, 1, 1), (3, 3, 3), 1)
    _box(shape, (4, 4, 4), (6, 6, 6), 3, out=ref)  # label 3 = ignore
    p = _box(shape, (1, 1, 1), (3, 3, 3), 1)
    _box(shape, (4, 4, 4), (6, 6, 6), 1, out=p)  # predicted label 1 inside the ignored region
    _write(gt / "c.nii.gz", ref), _write(pred / "c.nii.gz", p)
    res = evaluate_folders(pred, gt, {"background": 0, "x": 1, "ignore": 3}, write=False)
    assert res.labels == {"x": 1} and res.cases[0].metrics[1].dice == 1.0


def test_missing_predictions_are_listed(folders):
    pred, gt, _, _ = folders
    (pred / "case_a.nii.gz").unlink()
    (pred / "case_b.nii.gz").unlink()
    with pytest.raises(EvaluationInputError, match=r"missing predictions for 2 of 2 cases: case_a, case_b"):
        evaluate_folders(pred, gt)


def test_shape_and_spacing_mismatch_name_the_file(folders):
    pred, gt, _, shape = folders
    _write(pred / "case_a.nii.gz", np.zeros((8, 12, 11)))
    _write(pred / "case_b.nii.gz", np.zeros(shape), spacing_xyz=(1.0, 1.0, 1.0))
    with pytest.raises(EvaluationInputError) as info:
        evaluate_folders(pred, gt)
    msg = str(info.value)
    assert "case_a.nii.gz: shape (8, 12, 11) differs" in msg
    assert "case_b.nii.gz: spacing" in msg


def test_dataset_json_labels(tmp_path):
    path = tmp_path / "dataset.json"
    labels = {"background": 0, "edema": 1, "tumor": 2}
    path.write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz"}))
    assert labels_from_dataset_json(path) == {"background": 0, "edema": 1, "tumor": 2}
    path.write_text(json.dumps({"labels": {"background": 0, "whole_tumor": [1, 2, 3], "core": [2, 3]},
                                "regions_class_order": [1, 2]}))
    with pytest.raises(EvaluationInputError, match=r"dataset.json: label 'whole_tumor' is region-based"):
        labels_from_dataset_json(path)


def test_real_volume_and_workers(anatomical_nii, tmp_path):
    """nibabel's real T1 (2 mm): tissue classes by intensity, prediction = reference shifted by 1 voxel."""
    img = nib.load(anatomical_nii)
    data = np.asarray(img.dataobj, dtype=np.float32)
    ref = (np.digitize(data, np.percentile(data[data > 0], [40, 75])) + 1).astype(np.uint8) * (data > 0)
    pred = np.roll(ref, 1, axis=0)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir(), pred_dir.mkdir()
    spacing_xyz = tuple(float(z) for z in img.header.get_zooms()[:3])
    for name in ("s1", "s2"):
        _write(gt_dir / f"{name}.nii.gz", ref.transpose(2, 1, 0), spacing_xyz)
        _write(pred_dir / f"{name}.nii.gz", pred.transpose(2, 1, 0), spacing_xyz)
    serial = evaluate_folders(pred_dir, gt_dir, tolerance_mm=2.0, write=False)
    parallel = evaluate_folders(pred_dir, gt_dir, tolerance_mm=2.0, num_workers=2, write=False)
    assert serial.labels == {"1": 1, "2": 2, "3": 3}
    direct = binary_metrics(pred == 2, ref == 2, spacing_xyz, 2.0)
    got = serial.cases[0].metrics[2]
    assert (got.dice, got.nsd, got.hd95) == pytest.approx((direct.dice, direct.nsd, direct.hd95))
    assert 0.3 < got.dice < 1.0 and got.nsd > got.dice * 0.5 and got.hd95 == pytest.approx(2.0)
    assert parallel.to_dict()["mean"] == serial.to_dict()["mean"]


def test_cli(folders, tmp_path):
    pred, gt, _, _ = folders
    ds = tmp_path / "dataset.json"
    ds.write_text(json.dumps({"labels": {"background": 0, "wm": 1, "lesion": 2}}))
    parser = argparse.ArgumentParser(prog="mae3d")
    cli_evaluate.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli_out"
    args = parser.parse_args(["evaluate", str(pred), str(gt), "--dataset-json", str(ds), "--tolerance", "2",
                              "-o", str(out)])
    assert args.func(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tolerance_mm"] == 2.0 and summary["labels"] == {"wm": 1, "lesion": 2}
    assert json.loads((out / "evaluation_config.json").read_text())["config"]["tolerance_mm"] == 2.0
    assert (out / "metrics.csv").is_file()
