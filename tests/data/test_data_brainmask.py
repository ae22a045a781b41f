from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from mae3d.data.brainmask import mni2009a_brain_mask, tissue_brain_mask
from mae3d.data.volumes import binarise, downsampled_grid, read_volume, resample_image, resample_labels


def _dice(a: sitk.Image, b: sitk.Image) -> float:
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return 2 * float((x & y).sum()) / float(x.sum() + y.sum())


def test_support_mask_is_the_official_mni_mask():
    support = mni2009a_brain_mask("support")
    official = resample_labels(binarise(read_volume("mni2009c_brain_mask")), support)
    assert np.array_equal(sitk.GetArrayViewFromImage(support), sitk.GetArrayViewFromImage(official))


def test_tissue_mask_agrees_with_the_official_mask():
    # on 2 mm maps to stay fast; the derivation does not depend on the resolution
    gm, wm = read_volume("mni2009a_gm"), read_volume("mni2009a_wm")
    ref = downsampled_grid(gm, 2.0)
    tissue = tissue_brain_mask(resample_image(gm, ref), resample_image(wm, ref))
    support = resample_labels(mni2009a_brain_mask("support"), ref)
    assert _dice(tissue, support) > 0.97
    with pytest.raises(ValueError, match="threshold"):
        tissue_brain_mask(gm, wm, threshold=3.0)
    with pytest.raises(ValueError, match="valid: support, tissue"):
        mni2009a_brain_mask("otsu")
