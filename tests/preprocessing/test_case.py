"""One real image through read -> RAS -> crop -> z-score -> resample, checked against references."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mae3d.corpus.manifest import load_manifest
from mae3d.io.volumes import read_volume
from mae3d.preprocessing.case import CaseError, CaseSettings, check_spacing, preprocess_case
from mae3d.preprocessing.crop import nonzero_crop


def _record(make_manifest, **entry):
    return next(load_manifest(make_manifest([{"subject": "s1", **entry}])).images())


def _world(affine, idx):
    return (affine @ np.array([*idx, 1.0]))[:3]


def test_t1_2mm_to_1mm(make_manifest, anatomical_nii):
    rec = _record(make_manifest, path=anatomical_nii)
    case = preprocess_case(rec, CaseSettings(target_spacing=(1, 1, 1)))
    p = case.properties
    x = case.image_cxyz
    assert x.dtype == np.float32 and x.shape[0] == 1
    assert p["original_spacing"] == pytest.approx([2, 2, 2]) and p["spacing"] == [1.0, 1.0, 1.0]
    assert list(x.shape[1:]) == [2 * s for s in p["shape_after_crop"]]
    aff = np.array(p["affine"])
    assert np.sqrt((aff[:3, :3] ** 2).sum(0)) == pytest.approx([1, 1, 1])
    assert nib.aff2axcodes(aff) == ("R", "A", "S") and p["source_orientation"] == "LAS"
    # the stored grid covers the same world box: centres of both grids coincide
    src = read_volume(anatomical_nii)
    lo = np.array([b[0] for b in p["crop_box"]])
    crop_centre = _world(src.affine, lo + (np.array(p["shape_after_crop"]) - 1) / 2)
    np.testing.assert_allclose(_world(aff, (np.array(x.shape[1:]) - 1) / 2), crop_centre, atol=1e-6)
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1  # the region is the whole box here


def test_zscore_inside_the_region_without_resampling(make_manifest, t1, tmp_path):
    x, aff = t1
    padded = np.pad(x - x.min() + 1, ((4, 2), (3, 3), (0, 5)))  # a zero border that must be cropped
    path = tmp_path / "padded.nii.gz"
    nib.save(nib.Nifti1Image(padded, aff), path)
    case = preprocess_case(_record(make_manifest, path=path), CaseSettings(target_spacing=None))
    p = case.properties
    assert p["crop_box"] == [[2, 35], [3, 44], [0, 25]]  # LAS on disk: the x padding swaps sides in RAS
    assert p["spacing"] == pytest.approx([2, 2, 2]) and p["shape_after_crop"] == [33, 41, 25]
    _, region = nonzero_crop(read_volume(path).array)
    inside = case.image_cxyz[0][region]
    assert inside.mean() == pytest.approx(0, abs=1e-5) and inside.std() == pytest.approx(1, abs=1e-5)
    assert p["intensity"]["mean"] == pytest.approx(float(x.mean() - x.min() + 1), rel=1e-5)


def test_brain1_with_mask_matches_nnunet_pipeline(make_manifest, brain1):
    """Whole case vs nnU-Net's crop -> normalise -> resample on the same RAS array."""
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    rec = _record(make_manifest, path=brain1[0], anatomy_mask=brain1[1])
    case = preprocess_case(rec, CaseSettings(target_spacing=(2, 2, 2)))
    p = case.properties
    vol, lab = read_volume(brain1[0]), read_volume(brain1[1])
    data, seg, _ = crop_to_nonzero(vol.array[None].copy())
    region = seg[0] == 0
    v = data[0][region]
    data = np.where(region, (data[0] - v.mean()) / v.std(), 0)[None].astype(np.float32)
    shape = tuple(case.image_cxyz.shape[1:])
    ref = resample_data_or_seg_to_shape(data, shape, vol.spacing, (2, 2, 2), order=3, order_z=0,
                                        force_separate_z=None)
    np.testing.assert_allclose(case.image_cxyz, ref, atol=2e-4)
    # the tumour mask lands on the same grid, at the same world position
    m = case.masks["anatomy"][0]
    assert m.shape == shape and m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
    c_new = _world(np.array(p["affine"]), np.argwhere(m).mean(0))
    c_old = _world(lab.affine, np.argwhere(lab.array > 0).mean(0))
    assert np.linalg.norm(c_new - c_old) < 2.0  # mm
    assert p["mask_paths"] == {"anatomy": str(brain1[1])}


@pytest.mark.parametrize("spacing", [(0.0, 1, 1), (-1.0, 1, 1), (float("nan"), 1, 1), (1, 1, 20.5)])
def test_absurd_spacing_rejected(spacing, tmp_path):
    with pytest.raises(CaseError, match="absurd spacing"):
        check_spacing(tmp_path / "x.nii", spacing, 20.0)
