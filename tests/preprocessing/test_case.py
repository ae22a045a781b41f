"""One real image through read -> crop -> z-score -> resample, checked against references.

Arrays are in SimpleITK's array order of the file (no reorientation); the stored grid's geometry
(``stored_sitk_stuff``) places it where the source lies.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mae3d.corpus.manifest import load_manifest
from mae3d.data.sources import locate
from mae3d.io.volumes import array_index_to_world, read_volume
from mae3d.preprocessing.case import CaseError, CaseSettings, check_spacing, preprocess_case
from mae3d.preprocessing.crop import nonzero_crop


def _record(make_manifest, **entry):
    return next(load_manifest(make_manifest([{"subject": "s1", **entry}])).images())


def _world(geometry, idx):
    return (array_index_to_world(geometry) @ np.array([*idx, 1.0]))[:3]


def test_t1_2mm_to_1mm(make_manifest, anatomical_nii):
    rec = _record(make_manifest, path=anatomical_nii)
    case = preprocess_case(rec, CaseSettings(target_spacing=(1, 1, 1)))
    p = case.properties
    x = case.image_czyx
    assert x.dtype == np.float32 and x.shape[0] == 1
    assert p["original_spacing"] == pytest.approx([2, 2, 2]) and p["spacing"] == [1.0, 1.0, 1.0]
    assert list(x.shape[1:]) == [2 * s for s in p["shape_after_crop"]]
    assert p["original_shape"] == [25, 41, 33] and p["source_orientation"] == "LAS"  # (k, j, i): no RAS
    ref = sitk.ReadImage(str(anatomical_nii))
    assert p["sitk_stuff"]["spacing"] == pytest.approx(ref.GetSpacing())
    assert p["sitk_stuff"]["direction"] == pytest.approx(ref.GetDirection())
    assert p["stored_sitk_stuff"]["spacing"] == pytest.approx([1, 1, 1])
    # the stored grid covers the same world box: centres of both grids coincide
    lo = np.array([b[0] for b in p["crop_box"]])
    crop_centre = _world(p["sitk_stuff"], lo + (np.array(p["shape_after_crop"]) - 1) / 2)
    np.testing.assert_allclose(_world(p["stored_sitk_stuff"], (np.array(x.shape[1:]) - 1) / 2), crop_centre,
                               atol=1e-6)
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1  # the region is the whole box here


def _padded(t1, tmp_path):
    x, aff = t1
    padded = np.pad(x - x.min() + 1, ((4, 2), (3, 3), (0, 5)))  # a zero border that must be cropped
    path = tmp_path / "padded.nii.gz"
    nib.save(nib.Nifti1Image(padded, aff), path)
    return x, path


def test_zscore_nonzero_inside_the_region_without_resampling(make_manifest, t1, tmp_path):
    x, path = _padded(t1, tmp_path)
    case = preprocess_case(_record(make_manifest, path=path),
                           CaseSettings(target_spacing=None, normalization="zscore-nonzero"))
    p = case.properties
    # array order (k, j, i) of the file: the padding of stored axis i = (4, 2) is on array axis 2
    assert p["crop_box"] == [[0, 25], [3, 44], [4, 37]]
    assert p["spacing"] == pytest.approx([2, 2, 2]) and p["shape_after_crop"] == [25, 41, 33]
    _, region = nonzero_crop(read_volume(path).array)
    inside = case.image_czyx[0][region]
    assert inside.mean() == pytest.approx(0, abs=1e-5) and inside.std() == pytest.approx(1, abs=1e-5)
    assert p["intensity"]["mean"] == pytest.approx(float(x.mean() - x.min() + 1), rel=1e-5)
    assert p["normalization"]["scheme"] == "zscore-nonzero"


def test_default_zscore_uses_the_whole_box_so_background_is_not_zero(make_manifest):
    """nnssl's normalisation: statistics over the cropped box; the background keeps a negative value
    of its own instead of 0 (the masking fill value). The MNI 2009a T1 is skull-stripped: 0 outside."""
    assert CaseSettings().normalization == "zscore"
    path = locate("mni2009a_t1")
    vol = read_volume(path)
    case = preprocess_case(_record(make_manifest, path=path), CaseSettings(target_spacing=None))
    x = case.image_czyx[0]
    box = tuple(slice(lo, hi) for lo, hi in case.properties["crop_box"])
    raw = vol.array[box]
    np.testing.assert_allclose(x, (raw - raw.mean()) / raw.std(), atol=1e-4)
    assert x.mean() == pytest.approx(0, abs=1e-5) and x.std() == pytest.approx(1, abs=1e-4)
    background = raw == 0
    assert background.any() and np.all(x[background] < -0.1)


def test_brain1_with_mask_matches_nnunet_pipeline(make_manifest, brain1):
    """Whole case vs nnU-Net's crop -> normalise -> resample on SimpleITK's array of the file."""
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    rec = _record(make_manifest, path=brain1[0], anatomy_mask=brain1[1])
    case = preprocess_case(rec, CaseSettings(target_spacing=(2, 2, 2), normalization="zscore-nonzero"))
    p = case.properties
    vol, lab = read_volume(brain1[0]), read_volume(brain1[1])
    assert vol.spacing == pytest.approx((6.5, 0.78125, 0.78125), abs=1e-4)  # the thick axis is array axis 0
    data, seg, _ = crop_to_nonzero(vol.array[None].copy())
    region = seg[0] == 0
    v = data[0][region]
    data = np.where(region, (data[0] - v.mean()) / v.std(), 0)[None].astype(np.float32)
    shape = tuple(case.image_czyx.shape[1:])
    ref = resample_data_or_seg_to_shape(data, shape, vol.spacing, (2, 2, 2), order=3, order_z=0,
                                        force_separate_z=None)
    np.testing.assert_allclose(case.image_czyx, ref, atol=2e-4)
    # the tumour mask lands on the same grid, at the same world position
    m = case.masks["anatomy"][0]
    assert m.shape == shape and m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
    c_new = _world(p["stored_sitk_stuff"], np.argwhere(m).mean(0))
    c_old = _world(lab, np.argwhere(lab.array > 0).mean(0))
    assert np.linalg.norm(c_new - c_old) < 2.0  # mm
    assert p["mask_paths"] == {"anatomy": str(brain1[1])}


@pytest.mark.parametrize("spacing", [(0.0, 1, 1), (-1.0, 1, 1), (float("nan"), 1, 1), (1, 1, 20.5)])
def test_absurd_spacing_rejected(spacing, tmp_path):
    with pytest.raises(CaseError, match="absurd spacing"):
        check_spacing(tmp_path / "x.nii", spacing, 20.0)
