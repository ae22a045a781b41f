from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from mae3d.data.volumes import (
    GeometryError,
    check_same_grid,
    downsampled_grid,
    read_volume,
    resample_image,
    resample_labels,
    same_grid,
)


def test_reorientation_is_exact_and_keeps_world_positions():
    raw = read_volume("robex_t1", orientation=None)  # stored LAS
    ras = read_volume("robex_t1")
    assert raw.GetDirection() != ras.GetDirection()
    assert ras.GetDirection() == pytest.approx((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert ras.GetSize() == raw.GetSize()
    for idx in [(10, 20, 30), (57, 75, 77), (100, 140, 150)]:
        point = raw.TransformIndexToPhysicalPoint(idx)
        assert ras[ras.TransformPhysicalPointToIndex(point)] == raw[idx]


def test_downsampled_grid_keeps_field_of_view_and_never_upsamples():
    img = read_volume("pyradiomics_brain1_image")  # 0.78 x 0.78 x 6.5 mm
    ref = downsampled_grid(img, 2.0)
    assert ref.GetSpacing() == pytest.approx((2.0, 2.0, img.GetSpacing()[2]))
    assert ref.GetSize()[2] == img.GetSize()[2]
    lo = lambda im: np.array(im.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, -0.5)))  # noqa: E731
    assert lo(ref) == pytest.approx(lo(img), abs=1e-4)
    assert same_grid(downsampled_grid(img, None), img)
    assert same_grid(downsampled_grid(img, 0.5), img)  # a spacing finer than the image changes nothing
    with pytest.raises(ValueError, match="positive"):
        downsampled_grid(img, -1.0)


def test_resampling_labels_is_nearest_and_images_are_float32():
    t1 = read_volume("nibabel_anatomical_t1")  # 2 mm
    lbl = sitk.Cast(t1 > 5000, sitk.sitkUInt8) * 3
    ref = downsampled_grid(t1, 4.0)
    out_lbl, out_img = resample_labels(lbl, ref), resample_image(t1, ref)
    assert same_grid(out_lbl, out_img) and same_grid(out_lbl, ref)
    assert out_img.GetPixelID() == sitk.sitkFloat32 and out_lbl.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(out_lbl))) == {0, 3}
    arr = sitk.GetArrayViewFromImage(out_img)
    assert arr.min() >= sitk.GetArrayViewFromImage(t1).min() - 1e-3  # linear: no overshoot


def test_check_same_grid_names_the_pair():
    a = read_volume("nibabel_anatomical_t1")
    b = resample_image(a, downsampled_grid(a, 4.0))
    with pytest.raises(GeometryError, match="my pair: grids differ"):
        check_same_grid(a, b, "my pair")


@pytest.mark.parametrize("name", ["robex_t1", "mni2009c_t1", "pyradiomics_brain1_label"])
def test_builders_read_through_the_io_reader_exactly_as_simpleitk(name):
    """One volume reader: the builders' images equal ``sitk.ReadImage`` (voxels and geometry)."""
    from mae3d.data.sources import locate

    for pixel in (sitk.sitkFloat32, sitk.sitkUInt8):
        ours, ref = read_volume(name, pixel=pixel, orientation=None), sitk.ReadImage(str(locate(name)), pixel)
        assert ours.GetPixelID() == ref.GetPixelID() and same_grid(ours, ref)
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(ref))


def test_builders_refuse_a_truncated_file(tmp_path):
    """SimpleITK alone would return a partly zero volume; the io reader names the file instead."""
    from mae3d.data.sources import locate

    path = tmp_path / "t1.nii.gz"
    full = locate("robex_t1").read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(GeometryError, match=r"t1\.nii\.gz: unreadable or truncated"):
        read_volume(path)
