"""Cropping and resampling give nnU-Net's results (its own functions are the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from mae3d.io.volumes import read_volume
from mae3d.preprocessing.crop import crop_box_slices, nonzero_crop
from mae3d.preprocessing.resample import axis_orders, compute_new_shape, resample_image, resample_mask


def test_crop_matches_nnunet(t1):
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

    x, _ = t1
    x = np.pad(x - x.min() + 1, ((3, 5), (0, 2), (4, 1)))  # zero border around a real scan
    x[15:18, 20:22, 12:14] = 0  # an enclosed hole: filled, so inside the region
    box, region = nonzero_crop(x)
    data, seg, bbox = crop_to_nonzero(x[None].copy())
    assert box == [list(b) for b in bbox] == [[3, 36], [0, 41], [4, 29]]
    np.testing.assert_array_equal(x[crop_box_slices(box)], data[0])
    np.testing.assert_array_equal(region, seg[0] == 0)
    assert region[15 - 3, 20, 12 - 4]  # the hole is part of the region


def test_crop_of_empty_image_is_empty():
    box, region = nonzero_crop(np.zeros((4, 5, 6), np.float32))
    assert box == [[0, 0]] * 3 and region.size == 0


@pytest.mark.parametrize("target", [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0)])
def test_resampling_matches_nnunet(brain1, target):
    """Anisotropic 0.78x0.78x6.5 mm: separate-z rule, cubic in-plane, nearest across slices."""
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    vol = read_volume(brain1[0])
    lab = read_volume(brain1[1]).array.astype(np.uint8)
    x = (vol.array - vol.array.mean()) / vol.array.std()
    x, lab = x[:, 60:190, 50:200], lab[:, 60:190, 50:200]  # keeps the tumour, halves the work
    new_shape = compute_new_shape(x.shape, vol.spacing, target)
    assert axis_orders(vol.spacing, target, 3, 0) == (0, 3, 3)  # array axis 0 is the 6.5 mm one
    ours = resample_image(x, new_shape, vol.spacing, target)
    ref = resample_data_or_seg_to_shape(x[None], new_shape, vol.spacing, target, is_seg=False, order=3,
                                        order_z=0, force_separate_z=None)[0]
    assert ours.dtype == np.float32 and ours.shape == tuple(new_shape)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
    m_ours = resample_mask(lab, new_shape, vol.spacing, target)
    m_ref = resample_data_or_seg_to_shape(lab[None], new_shape, vol.spacing, target, is_seg=True, order=1,
                                          order_z=0, force_separate_z=None)[0]
    assert m_ours.sum() > 100
    assert np.count_nonzero(m_ours != m_ref) <= 1e-4 * m_ours.size


def test_isotropic_resampling_matches_nnunet(t1):
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    x, _ = t1
    new_shape = compute_new_shape(x.shape, (2, 2, 2), (1.3, 0.9, 3.1))
    ours = resample_image(x, new_shape, (2, 2, 2), (1.3, 0.9, 3.1))
    ref = resample_data_or_seg_to_shape(x[None], new_shape, (2, 2, 2), (1.3, 0.9, 3.1), order=3,
                                        force_separate_z=None)[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(x).max())
