"""Read 3D medical volumes into one common orientation (RAS+) with their geometry.

NIfTI (``.nii``, ``.nii.gz``) is read with nibabel; NRRD/MetaImage (``.nrrd``, ``.nhdr``, ``.mha``,
``.mhd``) with SimpleITK, whose LPS world coordinates are converted to nibabel's RAS convention.
Every array is then reoriented with ``nibabel.orientations`` (what ``as_closest_canonical`` does)
so that array axis 0 runs left->Right, 1 posterior->Anterior, 2 inferior->Superior for every
file, whatever its on-disk layout. Bad files raise ``VolumeError`` with one line naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt2axcodes,
    ornt_transform,
)

__all__ = ["ORIENTATION", "Volume", "VolumeError", "VolumeHeader", "read_header", "read_volume",
           "supported_suffix"]

ORIENTATION = "RAS"
_NIBABEL_SUFFIXES = (".nii", ".nii.gz")
_SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class VolumeError(ValueError):
    """A file cannot be used as a 3D volume; the message names the file and the problem."""


@dataclass(frozen=True)
class VolumeHeader:
    """Geometry of a volume after reorientation to RAS (no voxel data read).

    ``shape``/``spacing`` are in the reoriented axis order; ``affine`` maps reoriented voxel
    indices to RAS millimetres; ``source_orientation`` gives the on-disk axis codes (e.g. "LPS").
    """

    path: Path
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    source_orientation: str
    source_shape: tuple[int, ...]
    source_dtype: str


@dataclass(frozen=True)
class Volume(VolumeHeader):
    """A volume's voxels (float32, ``(X, Y, Z)`` in RAS order) plus its reoriented geometry."""

    array: np.ndarray = None  # type: ignore[assignment]  # always set by read_volume


def supported_suffix(path: str | os.PathLike) -> str | None:
    """The recognised file ending of ``path`` (``.nii.gz``, ``.nrrd`` ...), or None."""
    name = str(path).lower()
    for s in (*_NIBABEL_SUFFIXES, *_SITK_SUFFIXES):
        if name.endswith(s):
            return s
    return None


def _squeeze_to_3d(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Validate the on-disk shape: 3D, or 4D+ whose extra axes all have length 1."""
    if len(shape) < 3:
        raise VolumeError(f"{path}: not a 3D image (2D, shape {tuple(shape)})")
    extra = shape[3:]
    if any(n != 1 for n in extra):
        raise VolumeError(f"{path}: not a 3D image (4D with {int(np.prod(extra))} volumes, "
                          f"shape {tuple(shape)})")
    if any(n < 2 for n in shape[:3]):
        raise VolumeError(f"{path}: not a 3D image (a single slice, shape {tuple(shape)})")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _check_affine(path: Path, affine: np.ndarray) -> None:
    if not np.all(np.isfinite(affine)):
        raise VolumeError(f"{path}: absurd spacing or geometry (non-finite values in the affine)")
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if np.any(sizes <= 0) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeError(f"{path}: absurd spacing {tuple(float(s) for s in sizes)} (must be > 0)")


def _header_nibabel(path: Path) -> tuple[tuple[int, ...], np.ndarray, str, nib.spatialimages.SpatialImage]:
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises many types for corrupt headers
        raise VolumeError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    shape = tuple(int(s) for s in img.shape)
    return shape, np.asarray(img.affine, dtype=np.float64), str(img.get_data_dtype()), img


def _sitk_geometry(path: Path, size: tuple[int, ...], spacing: tuple[float, ...], origin: tuple[float, ...],
                   direction: tuple[float, ...]) -> np.ndarray:
    dim = len(size)
    d = np.asarray(direction, dtype=np.float64).reshape(dim, dim)[:3, :3]
    aff = np.eye(4)
    aff[:3, :3] = d @ np.diag(np.asarray(spacing[:3], dtype=np.float64))
    aff[:3, 3] = origin[:3]
    return _LPS_TO_RAS @ aff


def _header_sitk(path: Path) -> tuple[tuple[int, ...], np.ndarray, str, sitk.ImageFileReader]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except Exception as e:  # SimpleITK raises RuntimeError with a multi-line ITK message
        first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise VolumeError(f"{path}: unreadable ({type(e).__name__}: {first})") from None
    if reader.GetNumberOfComponents() != 1:
        n = reader.GetNumberOfComponents()
        raise VolumeError(f"{path}: not a scalar image ({n} components per voxel)")
    size = tuple(int(s) for s in reader.GetSize())  # ITK order (x, y, z[, t])
    if len(size) < 3:
        raise VolumeError(f"{path}: not a 3D image (2D, shape {size})")
    affine = _sitk_geometry(path, size, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    dtype = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    return size, affine, dtype, reader


def _reorient(affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, str]:
    """Orientation transform to RAS, the reoriented affine, and the source axis codes."""
    ornt = io_orientation(affine)
    transform = ornt_transform(ornt, axcodes2ornt(ORIENTATION))
    new_affine = affine @ inv_ornt_aff(transform, shape)
    return transform, new_affine, "".join(ornt2axcodes(ornt))


def _header(path: Path) -> tuple[VolumeHeader, np.ndarray, object]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    suffix = supported_suffix(path)
    if suffix is None:
        raise VolumeError(f"{path}: unsupported file type (expected one of "
                          f"{', '.join((*_NIBABEL_SUFFIXES, *_SITK_SUFFIXES))})")
    reader = _header_nibabel if suffix in _NIBABEL_SUFFIXES else _header_sitk
    source_shape, affine, dtype, handle = reader(path)
    shape3 = _squeeze_to_3d(path, source_shape)
    _check_affine(path, affine)
    transform, new_affine, codes = _reorient(affine, shape3)
    perm = transform[:, 0].astype(int)
    shape = [0, 0, 0]
    for src_axis, dst_axis in enumerate(perm):
        shape[dst_axis] = shape3[src_axis]
    spacing = tuple(float(s) for s in np.sqrt((new_affine[:3, :3] ** 2).sum(axis=0)))
    header = VolumeHeader(path=path, shape=tuple(shape), spacing=spacing, affine=new_affine,  # type: ignore[arg-type]
                          source_orientation=codes, source_shape=source_shape, source_dtype=dtype)
    return header, transform, handle


def read_header(path: str | os.PathLike) -> VolumeHeader:
    """Geometry of ``path`` after reorientation to RAS, without reading the voxels (cheap)."""
    return _header(Path(path))[0]


def read_volume(path: str | os.PathLike) -> Volume:
    """Read ``path`` as float32 ``(X, Y, Z)`` voxels reoriented to RAS, with geometry.

    Raises:
        FileNotFoundError: the file does not exist.
        VolumeError: unsupported type, unreadable or truncated file, not 3D (2D, or 4D with more
            than one volume; a 4D file with one volume is squeezed), degenerate affine.
    """
    path = Path(path)
    header, transform, handle = _header(path)
    try:
        if isinstance(handle, sitk.ImageFileReader):
            img = handle.Execute()
            arr = sitk.GetArrayViewFromImage(img)  # (..., z, y, x)
            arr = arr.reshape(arr.shape[-3:]).transpose(2, 1, 0)
        else:
            proxy = handle.dataobj  # type: ignore[attr-defined]
            if hasattr(proxy, "get_unscaled"):
                # scale in float32 ourselves: nibabel would scale in float64 (2x the memory and time)
                arr = np.asarray(proxy.get_unscaled())
                slope, inter = proxy.slope, proxy.inter
                if slope != 1 or inter != 0:
                    arr = arr.astype(np.float32) * np.float32(slope) + np.float32(inter)
            else:
                arr = np.asarray(proxy, dtype=np.float32)
            arr = arr.reshape(arr.shape[:3])
    except VolumeError:
        raise
    except Exception as e:  # truncated gzip, short file, ITK read errors ...
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise VolumeError(f"{path}: unreadable or truncated ({type(e).__name__}: {msg})") from None
    arr = np.ascontiguousarray(apply_orientation(arr, transform), dtype=np.float32)
    return Volume(**{f: getattr(header, f) for f in VolumeHeader.__dataclass_fields__}, array=arr)
