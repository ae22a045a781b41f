"""Crop a volume to its non-zero region (nnU-Net's ``crop_to_nonzero`` semantics).

The region is the non-zero voxels with holes filled; the crop box is its bounding box. This gives
the same box and region as ``nnunetv2.preprocessing.cropping.cropping.crop_to_nonzero`` (tested),
written out here because that module imports torch (via acvl_utils) into every worker process,
and because filling holes changes no bounding box, so it can run on the cropped block only.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_fill_holes

__all__ = ["crop_box_slices", "nonzero_crop"]


def crop_box_slices(box: list[list[int]]) -> tuple[slice, ...]:
    """``[[lo, hi), ...]`` per axis -> a tuple of slices."""
    return tuple(slice(lo, hi) for lo, hi in box)


def nonzero_crop(x_xyz: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """Bounding box ``[[lo, hi), ...]`` of the non-zero voxels and the filled region inside it.

    Returns an empty box (all ``[0, 0]``) and an empty mask if every voxel is zero.
    """
    nz = x_xyz != 0
    box = []
    for axis in range(x_xyz.ndim):
        other = tuple(a for a in range(x_xyz.ndim) if a != axis)
        idx = np.flatnonzero(nz.any(axis=other))
        if idx.size == 0:
            return [[0, 0] for _ in range(x_xyz.ndim)], np.zeros((0,) * x_xyz.ndim, dtype=bool)
        box.append([int(idx[0]), int(idx[-1]) + 1])
    region = binary_fill_holes(nz[crop_box_slices(box)])
    return box, region
