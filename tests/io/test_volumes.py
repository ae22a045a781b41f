"""read_volume / read_header on real files: RAS orientation, both readers agree, bad files named."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mae3d.data.sources import locate
from mae3d.io.volumes import VolumeError, read_header, read_volume


@pytest.fixture(scope="module")
def brain1_nrrd():
    return locate("pyradiomics_brain1_image")


def test_nifti_matches_nibabel_canonical(anatomical_nii):
    vol = read_volume(anatomical_nii)
    canon = nib.as_closest_canonical(nib.load(anatomical_nii))
    assert vol.source_orientation == "LAS"  # the file really is stored flipped
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, canon.get_fdata(), rtol=0, atol=1e-3)
    np.testing.assert_allclose(vol.affine, canon.affine)
    assert vol.spacing == pytest.approx((2.0, 2.0, 2.0))
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")


def test_nrrd_and_its_nifti_conversion_agree(brain1_nrrd, tmp_path):
    """SimpleITK's LPS geometry, converted to RAS, equals nibabel's reading of the same image."""
    nii = tmp_path / "brain1.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(brain1_nrrd)), str(nii))
    a, b = read_volume(brain1_nrrd), read_volume(nii)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    assert a.spacing == pytest.approx((0.78125, 0.78125, 6.5), abs=1e-4)
    assert nib.aff2axcodes(a.affine) == ("R", "A", "S")


def test_asymmetric_marker_keeps_its_world_position(anatomical_nii, tmp_path):
    """A marker on the patient's right (stored at a low index of a right->left x axis) ends up at a
    high x index in RAS, at the same world point."""
    data = np.asanyarray(nib.load(anatomical_nii).dataobj).astype(np.float32)
    data[:] = 0
    idx = (2, 30, 20)
    data[idx] = 1000
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # x runs right->left (L), y anterior, z superior
    affine[:3, 3] = [32.0, -40.0, -24.0]
    path = tmp_path / "marker.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    vol = read_volume(path)
    new_idx = np.argwhere(vol.array == 1000)[0]
    assert new_idx[0] == data.shape[0] - 1 - idx[0]  # x flipped to left->right
    world_before = affine @ np.array([*idx, 1.0])
    world_after = vol.affine @ np.array([*new_idx, 1.0])
    np.testing.assert_allclose(world_before, world_after)
    assert world_after[0] > 0  # x > 0 in RAS is the patient's right ...
    assert new_idx[0] > vol.shape[0] // 2  # ... which is the high-index side in RAS


def test_header_matches_volume_without_reading_voxels(brain1_nrrd):
    h, v = read_header(brain1_nrrd), read_volume(brain1_nrrd)
    assert h.shape == v.shape and h.spacing == v.spacing
    np.testing.assert_array_equal(h.affine, v.affine)


def test_4d_with_one_volume_is_squeezed():
    path = locate("robex_t1")  # stored (116, 150, 155, 1)
    vol = read_volume(path)
    assert vol.source_shape == (116, 150, 155, 1)
    assert vol.array.ndim == 3 and vol.array.shape == vol.shape


def _save(tmp_path, name, arr, spacing=2.0):
    p = tmp_path / name
    nib.save(nib.Nifti1Image(arr, np.diag([spacing, spacing, spacing, 1.0])), p)
    return p


@pytest.mark.parametrize("kind", ["2d", "4d", "truncated", "garbage", "missing", "suffix"])
def test_bad_files_raise_one_line_naming_the_file(anatomical_nii, tmp_path, kind):
    data = np.asanyarray(nib.load(anatomical_nii).dataobj).astype(np.float32)
    if kind == "2d":
        path, err, words = _save(tmp_path, "a.nii.gz", data[:, :, 10]), VolumeError, "2D"
    elif kind == "4d":
        path, err, words = _save(tmp_path, "a.nii.gz", np.stack([data, data], -1)), VolumeError, "2 volumes"
    elif kind == "truncated":
        full = _save(tmp_path, "full.nii.gz", data).read_bytes()
        path = tmp_path / "a.nii.gz"
        path.write_bytes(full[: len(full) // 2])
        err, words = VolumeError, "truncated"
    elif kind == "garbage":
        path = tmp_path / "a.nii.gz"
        path.write_bytes(gzip.compress(b"not an image at all" * 10))
        err, words = VolumeError, "unreadable"
    elif kind == "missing":
        path, err, words = tmp_path / "none.nrrd", FileNotFoundError, "not found"
    else:
        path = tmp_path / "a.png"
        path.write_bytes(b"x")
        err, words = VolumeError, "unsupported"
    with pytest.raises(err) as exc:
        read_volume(path)
    msg = str(exc.value)
    assert str(path) in msg and words in msg and "\n" not in msg
