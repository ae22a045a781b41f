"""Reading, reorienting, checking and resampling the embedded volumes as ``sitk.Image``.

Files are read by mae3d's one volume reader (:func:`mae3d.io.volumes.read_sitk_image`: the voxels and
geometry of ``sitk.ReadImage``, with its checks, e.g. a truncated NIfTI is an error). SimpleITK keeps
the full geometry (origin, spacing, direction) and is what nnU-Net's default ``SimpleITKIO`` reads
back, so geometry written here is geometry nnU-Net sees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mae3d.data.sources import locate
from mae3d.io.volumes import VolumeError, read_sitk_image

__all__ = [
    "ORIENTATION",
    "GeometryError",
    "binarise",
    "check_same_grid",
    "downsampled_grid",
    "read_volume",
    "resample_image",
    "resample_labels",
    "same_grid",
]

# Every dataset is written in one orientation so that arrays of different cases line up (the MNI
# templates are RAS; ROBEX and the NRRDs are LAS). Letters say where each axis points (nibabel style).
# This is the orientation of the files written; readers (mae3d prepare, nnU-Net) never reorient.
ORIENTATION = "RAS"
_ATOL = 1e-4  # mm / direction cosines; headers round-trip through float32


class GeometryError(ValueError):
    """Two volumes that must share a voxel grid do not."""


def read_volume(source: str | Path, *, pixel: int = sitk.sitkFloat32,
                orientation: str | None = ORIENTATION) -> sitk.Image:
    """Read a registered file (a ``str`` name, see ``sources.SOURCES``) or a ``Path`` as a 3-D image.

    The voxels are cast to ``pixel`` (scale factors applied) and the axes permuted/flipped to
    ``orientation`` (exact: no interpolation); ``None`` keeps the stored orientation.
    """
    path = source if isinstance(source, Path) else locate(source)
    try:
        img = read_sitk_image(path, pixel)
    except VolumeError as e:
        raise GeometryError(str(e)) from None
    if orientation is not None:
        img = sitk.DICOMOrient(img, orientation)
    return img


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """True if ``a`` and ``b`` have the same size, spacing, origin and direction."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=_ATOL)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=_ATOL)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=_ATOL))


def check_same_grid(a: sitk.Image, b: sitk.Image, what: str) -> None:
    """Raise ``GeometryError`` naming ``what`` if the two grids differ."""
    if not same_grid(a, b):
        raise GeometryError(
            f"{what}: grids differ (size {a.GetSize()} vs {b.GetSize()}, spacing {a.GetSpacing()} vs "
            f"{b.GetSpacing()}, origin {a.GetOrigin()} vs {b.GetOrigin()}, direction {a.GetDirection()} vs "
            f"{b.GetDirection()})")


def binarise(img: sitk.Image, threshold: float = 0.5) -> sitk.Image:
    """``img > threshold`` as uint8 0/1, same grid."""
    out = sitk.GetImageFromArray((sitk.GetArrayViewFromImage(img) > threshold).astype(np.uint8))
    out.CopyInformation(img)
    return out


def downsampled_grid(img: sitk.Image, spacing: float | None) -> sitk.Image:
    """An empty reference grid over ``img``'s field of view where no axis is finer than ``spacing`` mm.

    Axes already coarser than ``spacing`` keep their spacing (thick-slice scans are never
    upsampled). The outer voxel corners stay where they were, so the field of view is preserved up
    to rounding of the voxel count. ``None`` returns ``img``'s own grid.
    """
    if spacing is not None and spacing <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    old = np.array(img.GetSpacing())
    if spacing is None or np.all(old >= spacing - _ATOL):
        new, size = old, np.array(img.GetSize())
    else:
        new = np.maximum(old, spacing)
        size = np.maximum(1, np.round(np.array(img.GetSize()) * old / new)).astype(int)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    # keep the corner of the first voxel: centres move by half the spacing change along each axis
    origin = np.array(img.GetOrigin()) + direction @ ((new - old) / 2)
    ref = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in new])
    ref.SetOrigin([float(o) for o in origin])
    ref.SetDirection(img.GetDirection())
    return ref


def resample_image(img: sitk.Image, ref: sitk.Image) -> sitk.Image:
    """Intensity image onto ``ref``'s grid: Gaussian anti-aliasing, then linear interpolation (float32).

    Without the pre-filter, linear downsampling by 2x or more aliases fine structure (as in
    ``skimage.transform.resize(anti_aliasing=True)``, sigma = (factor - 1) / 2 voxels per axis).
    """
    if same_grid(img, ref):
        return sitk.Cast(img, sitk.sitkFloat32)
    factor = np.array(ref.GetSpacing()) / np.array(img.GetSpacing())
    sigma_xyz = np.maximum(0.0, (factor - 1.0) / 2.0)
    if np.any(sigma_xyz > 0):
        arr_zyx = sitk.GetArrayFromImage(img).astype(np.float32)
        arr_zyx = ndimage.gaussian_filter(arr_zyx, sigma=sigma_xyz[::-1], mode="nearest")
        smoothed = sitk.GetImageFromArray(arr_zyx)
        smoothed.CopyInformation(img)
        img = smoothed
    return sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def resample_labels(lbl: sitk.Image, ref: sitk.Image) -> sitk.Image:
    """Label map onto ``ref``'s grid by nearest neighbour in world coordinates (uint8, 0 outside)."""
    lbl = sitk.Cast(lbl, sitk.sitkUInt8)
    if same_grid(lbl, ref):
        return lbl
    return sitk.Resample(lbl, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
