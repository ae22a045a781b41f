"""read_volume / read_header on real files: SimpleITK's array order and geometry, bad files named."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mae3d.data.sources import locate
from mae3d.io.volumes import (
    ORIENTATION,
    VolumeError,
    array_index_to_world,
    read_header,
    read_sitk_image,
    read_volume,
)


@pytest.fixture(scope="module")
def brain1_nrrd():
    return locate("pyradiomics_brain1_image")


def _assert_same_as_simpleitk(vol, path):
    ref = sitk.ReadImage(str(path), sitk.sitkFloat32)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref))  # exact, no transpose
    assert vol.spacing == pytest.approx(ref.GetSpacing()[::-1], abs=1e-6)  # array order
    assert vol.sitk_spacing == pytest.approx(ref.GetSpacing(), abs=1e-6)
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(vol.direction, ref.GetDirection(), atol=1e-6)


# LAS big-endian int16; 4-D with one volume; int16 with scale factors (RAS); anisotropic NRRD (LAS);
# NRRD stored LPS
@pytest.mark.parametrize("name", ["nibabel_anatomical_t1", "robex_t1", "mni2009c_t1",
                                  "pyradiomics_brain1_image", "pyradiomics_breast1_image"])
def test_embedded_files_equal_simpleitk_exactly(name):
    path = locate(name)
    vol = read_volume(path)
    assert vol.array.dtype == np.float32 and ORIENTATION == "as-stored"
    _assert_same_as_simpleitk(vol, path)


def test_anisotropic_spacing_follows_its_axis(brain1_nrrd):
    vol = read_volume(brain1_nrrd)  # 256 x 256 x 25 slices of 6.5 mm on disk (ITK x, y, z)
    assert vol.shape == (25, 256, 256)
    assert vol.spacing == pytest.approx((6.5, 0.78125, 0.78125), abs=1e-4)
    assert vol.source_orientation == "LAS"


def test_mha_and_oblique_permuted_nifti_keep_simpleitk_order(tmp_path):
    """Files written with permuted axes and a rotated direction are read as stored: no reorientation."""
    img = sitk.ReadImage(str(locate("nibabel_anatomical_t1")), sitk.sitkFloat32)
    perm = sitk.PermuteAxes(img, [2, 0, 1])
    angle = np.deg2rad(20.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    perm.SetDirection((rot @ np.array(perm.GetDirection()).reshape(3, 3)).ravel().tolist())
    perm.SetSpacing((2.0, 1.5, 3.0))  # anisotropic too
    for name in ("oblique.nii.gz", "oblique.mha"):
        path = tmp_path / name
        sitk.WriteImage(perm, str(path))
        vol = read_volume(path)
        assert vol.shape == sitk.GetArrayViewFromImage(perm).shape
        assert vol.spacing == pytest.approx((3.0, 1.5, 2.0))
        _assert_same_as_simpleitk(vol, path)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read_sitk_image(path)), vol.array)


def test_marker_keeps_its_world_position(anatomical_nii, tmp_path):
    """A marker's array index maps to the same world point as SimpleITK's index of it."""
    data = np.zeros(nib.load(anatomical_nii).shape, np.float32)
    idx = (2, 30, 20)  # nibabel / ITK index (i, j, k)
    data[idx] = 1000
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # i runs right->left (L)
    affine[:3, 3] = [32.0, -40.0, -24.0]
    path = tmp_path / "marker.nii.gz"
    nib.save(nib.Nifti1Image(data + 1, affine), path)
    vol = read_volume(path)
    found = np.argwhere(vol.array == 1001)[0]
    assert tuple(found) == idx[::-1]  # array order (k, j, i)
    world = (array_index_to_world(vol) @ np.array([*found, 1.0]))[:3]
    np.testing.assert_allclose(world, sitk.ReadImage(str(path)).TransformIndexToPhysicalPoint(idx))
    assert vol.source_orientation == "LAS"


def test_header_matches_volume_without_reading_voxels(brain1_nrrd, anatomical_nii):
    for path in (brain1_nrrd, anatomical_nii):
        h, v = read_header(path), read_volume(path)
        assert h.shape == v.shape == v.array.shape and h.spacing == v.spacing
        assert h.sitk_stuff() == v.sitk_stuff() and h.same_grid(v)


def test_4d_with_one_volume_is_squeezed():
    path = locate("robex_t1")  # stored (116, 150, 155, 1)
    vol = read_volume(path)
    assert vol.source_shape == (116, 150, 155, 1)
    assert vol.array.shape == vol.shape == (155, 150, 116)


def test_read_sitk_image_casts_like_simpleitk():
    path = locate("pyradiomics_brain1_label")
    img, ref = read_sitk_image(path, sitk.sitkUInt8), sitk.ReadImage(str(path), sitk.sitkUInt8)
    assert img.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(img), sitk.GetArrayViewFromImage(ref))
    assert img.GetSpacing() == pytest.approx(ref.GetSpacing())
    assert img.GetOrigin() == pytest.approx(ref.GetOrigin())


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
    if kind == "truncated":  # the same check guards the sitk.Image reader of the dataset builders
        with pytest.raises(VolumeError, match="truncated"):
            read_sitk_image(path)
