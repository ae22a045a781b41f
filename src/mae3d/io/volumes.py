"""Read 3D medical volumes in nnU-Net's array convention, with SimpleITK's geometry.

The one convention (shared with nnU-Net v2's ``SimpleITKIO`` and nnssl): a volume is the array
``sitk.GetArrayFromImage(sitk.ReadImage(path))`` of the file, i.e. the stored voxel grid with its axes
reversed (array axis 0 = ITK index k, 1 = j, 2 = i), **no reorientation, no transpose**; spacing is
listed in the same array order (``GetSpacing()[::-1]``). ``shape``/``spacing`` of a
:class:`VolumeHeader` are in that order; ``sitk_spacing``/``origin``/``direction`` keep SimpleITK's
own (x, y, z) index order and LPS world coordinates (what nnssl stores as ``sitk_stuff``).

NIfTI (``.nii``, ``.nii.gz``) voxels are read with nibabel, which detects truncated files (SimpleITK
silently returns a partly zero volume) and transposed to SimpleITK's order; the result equals
SimpleITK's array (tested on real files). The geometry of every format comes from SimpleITK's
header reader, so spacing is exactly what nnU-Net sees. NRRD/MetaImage (``.nrrd``, ``.nhdr``,
``.mha``, ``.mhd``) are read with SimpleITK. Bad files raise ``VolumeError`` with one line naming
the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.orientations import aff2axcodes

__all__ = ["ARRAY_LAYOUT", "ORIENTATION", "Volume", "VolumeError", "VolumeHeader", "array_index_to_world",
           "read_header", "read_sitk_image", "read_volume", "supported_suffix"]

#: no reorientation: arrays keep each file's own voxel axes (SimpleITK / nnU-Net array order)
ORIENTATION = "as-stored"
#: the axis order of every array (and of every spacing / patch list) mae3d prepares
ARRAY_LAYOUT = "SimpleITK array order (z, y, x) of the file's voxel grid, no reorientation"
_NIBABEL_SUFFIXES = (".nii", ".nii.gz")
_SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


class VolumeError(ValueError):
    """A file cannot be used as a 3D volume; the message names the file and the problem."""


@dataclass(frozen=True)
class VolumeHeader:
    """Geometry of a volume (no voxel data read).

    ``shape``/``spacing`` are in array order (SimpleITK's ``GetArrayFromImage`` order, reversed
    relative to its ``GetSize()``/``GetSpacing()``); ``sitk_spacing``, ``origin`` (LPS mm) and
    ``direction`` (9 numbers, row-major) are SimpleITK's, in its (x, y, z) index order.
    ``source_orientation`` gives the stored axis codes (nibabel style, e.g. "LAS" = index i runs
    to the patient's left) of ITK index axes (i, j, k).
    """

    path: Path
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    sitk_spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    source_orientation: str
    source_shape: tuple[int, ...]
    source_dtype: str

    def sitk_stuff(self) -> dict[str, list[float]]:
        """``{"spacing", "origin", "direction"}`` as SimpleITK reports them (JSON-ready)."""
        return {"spacing": list(self.sitk_spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    def same_grid(self, other: VolumeHeader, atol: float = 1e-3) -> bool:
        """True if both have the same shape, spacing, origin and direction (within ``atol``)."""
        return (self.shape == other.shape
                and np.allclose(self.sitk_spacing, other.sitk_spacing, rtol=0, atol=atol)
                and np.allclose(self.origin, other.origin, rtol=0, atol=atol)
                and np.allclose(self.direction, other.direction, rtol=0, atol=atol))


@dataclass(frozen=True)
class Volume(VolumeHeader):
    """A volume's voxels (float32, array order, see the module docstring) plus its geometry."""

    array: np.ndarray = None  # type: ignore[assignment]  # always set by read_volume


def supported_suffix(path: str | os.PathLike) -> str | None:
    """The recognised file ending of ``path`` (``.nii.gz``, ``.nrrd`` ...), or None."""
    name = str(path).lower()
    for s in (*_NIBABEL_SUFFIXES, *_SITK_SUFFIXES):
        if name.endswith(s):
            return s
    return None


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _squeeze_to_3d(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Validate the stored shape (index order i, j, k[, ...]): 3D, or 4D+ with extra axes of length 1."""
    if len(shape) < 3:
        raise VolumeError(f"{path}: not a 3D image (2D, shape {tuple(shape)})")
    extra = shape[3:]
    if any(n != 1 for n in extra):
        raise VolumeError(f"{path}: not a 3D image (4D with {int(np.prod(extra))} volumes, "
                          f"shape {tuple(shape)})")
    if any(n < 2 for n in shape[:3]):
        raise VolumeError(f"{path}: not a 3D image (a single slice, shape {tuple(shape)})")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _check_geometry(path: Path, spacing: np.ndarray, matrix: np.ndarray, origin: np.ndarray) -> None:
    if not (np.all(np.isfinite(spacing)) and np.all(np.isfinite(matrix)) and np.all(np.isfinite(origin))):
        raise VolumeError(f"{path}: absurd spacing or geometry (non-finite values, spacing "
                          f"{tuple(float(s) for s in spacing)})")
    if np.any(spacing <= 0) or abs(np.linalg.det(matrix)) < 1e-12:
        raise VolumeError(f"{path}: absurd spacing {tuple(float(s) for s in spacing)} (must be > 0)")


def _sitk_reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except Exception as e:  # SimpleITK raises RuntimeError with a multi-line ITK message
        raise VolumeError(f"{path}: unreadable by SimpleITK ({type(e).__name__}: {_first_line(e)})") from None
    if reader.GetNumberOfComponents() != 1:
        n = reader.GetNumberOfComponents()
        raise VolumeError(f"{path}: not a scalar image ({n} components per voxel)")
    return reader


def _nibabel_image(path: Path) -> nib.spatialimages.SpatialImage:
    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel raises many types for corrupt headers
        raise VolumeError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def _header(path: Path) -> tuple[VolumeHeader, nib.spatialimages.SpatialImage | None,
                                 sitk.ImageFileReader]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    suffix = supported_suffix(path)
    if suffix is None:
        raise VolumeError(f"{path}: unsupported file type (expected one of "
                          f"{', '.join((*_NIBABEL_SUFFIXES, *_SITK_SUFFIXES))})")
    nii = None
    if suffix in _NIBABEL_SUFFIXES:
        # nibabel first: clear messages for 2D / 4D / broken headers, and its voxel reader later
        nii = _nibabel_image(path)
        source_shape = tuple(int(s) for s in nii.shape)
        _squeeze_to_3d(path, source_shape)
        aff = np.asarray(nii.affine, dtype=np.float64)
        _check_geometry(path, np.sqrt((aff[:3, :3] ** 2).sum(axis=0)), aff[:3, :3], aff[:3, 3])
        dtype = str(nii.get_data_dtype())
    reader = _sitk_reader(path)
    size = tuple(int(s) for s in reader.GetSize())  # ITK index order (i, j, k[, t]); 4D with t=1 -> 3D
    if nii is None:
        source_shape = size
        dtype = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    ijk = _squeeze_to_3d(path, size if nii is None else source_shape)
    if size[:3] != ijk:
        raise VolumeError(f"{path}: nibabel and SimpleITK disagree on the shape ({ijk} vs {size})")
    dim = len(size)
    spacing = np.asarray(reader.GetSpacing(), dtype=np.float64)[:3]
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    origin = np.asarray(reader.GetOrigin(), dtype=np.float64)[:3]
    _check_geometry(path, spacing, direction, origin)
    ras = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine = np.eye(4)
    affine[:3, :3] = ras
    codes = "".join(aff2axcodes(affine))
    header = VolumeHeader(
        path=path, shape=(ijk[2], ijk[1], ijk[0]),
        spacing=(float(spacing[2]), float(spacing[1]), float(spacing[0])),
        sitk_spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        origin=tuple(float(o) for o in origin),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in direction.ravel()),
        source_orientation=codes, source_shape=source_shape, source_dtype=dtype)
    return header, nii, reader


def read_header(path: str | os.PathLike) -> VolumeHeader:
    """Geometry of ``path`` in array order, without reading the voxels (cheap)."""
    return _header(Path(path))[0]


def _nibabel_voxels(nii: nib.spatialimages.SpatialImage) -> np.ndarray:
    """The stored voxels (index order i, j, k), float32, scale factors applied."""
    proxy = nii.dataobj
    if hasattr(proxy, "get_unscaled"):
        arr = np.asarray(proxy.get_unscaled())
        slope, inter = proxy.slope, proxy.inter
        if slope != 1 or inter != 0:
            # in float64 then rounded once, as ITK does: bit-identical to SimpleITK's float32 array
            return (arr * np.float64(slope) + np.float64(inter)).astype(np.float32)
        return arr
    return np.asarray(proxy, dtype=np.float32)


def read_volume(path: str | os.PathLike) -> Volume:
    """Read ``path`` as float32 voxels in SimpleITK's array order (no reorientation), with geometry.

    Raises:
        FileNotFoundError: the file does not exist.
        VolumeError: unsupported type, unreadable or truncated file, not 3D (2D, or 4D with more
            than one volume; a 4D file with one volume is squeezed), degenerate geometry.
    """
    path = Path(path)
    header, nii, reader = _header(path)
    try:
        if nii is None:
            arr = sitk.GetArrayFromImage(reader.Execute())  # (..., k, j, i), a copy
            arr = arr.reshape(arr.shape[-3:])
        else:
            arr = _nibabel_voxels(nii)
            arr = arr.reshape(arr.shape[:3]).transpose(2, 1, 0)  # (i, j, k) -> SimpleITK's (k, j, i)
    except Exception as e:  # truncated gzip, short file, ITK read errors ...
        raise VolumeError(f"{path}: unreadable or truncated ({type(e).__name__}: {_first_line(e)})") from None
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    return Volume(**{f: getattr(header, f) for f in VolumeHeader.__dataclass_fields__}, array=arr)


def read_sitk_image(path: str | os.PathLike, pixel: int = sitk.sitkFloat32) -> sitk.Image:
    """``path`` as a checked 3D ``sitk.Image`` cast to ``pixel`` (the reader behind :func:`read_volume`).

    Same checks as :func:`read_volume` (a truncated NIfTI is an error, not a half-zero image); the
    voxels and geometry equal ``sitk.ReadImage(path, pixel)``'s.
    """
    vol = read_volume(path)
    img = sitk.GetImageFromArray(vol.array)
    img.SetSpacing(vol.sitk_spacing)
    img.SetOrigin(vol.origin)
    img.SetDirection(vol.direction)
    return img if pixel == sitk.sitkFloat32 else sitk.Cast(img, pixel)


def array_index_to_world(header: VolumeHeader | dict[str, Any]) -> np.ndarray:
    """4x4 matrix mapping array indices (a0, a1, a2) = (k, j, i) to LPS millimetres."""
    if isinstance(header, VolumeHeader):
        sp, org, d = header.sitk_spacing, header.origin, header.direction
    else:
        sp, org, d = header["spacing"], header["origin"], header["direction"]
    m = np.eye(4)
    m[:3, :3] = (np.asarray(d, dtype=np.float64).reshape(3, 3) @ np.diag(sp))[:, ::-1]
    m[:3, 3] = org
    return m
