"""Preprocess one image: read -> RAS -> crop to non-zero -> z-score -> resample -> store.

Order follows nnssl/nnU-Net: normalise *before* resampling, so that the non-zero region still
fits the image exactly when the statistics are taken. Masks (anatomy, anonymisation) are cropped
with the image's box and resampled onto the same grid. Bad input raises ``CaseError`` whose
message is a one-line reason naming the file; the runner turns it into a skipped case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mae3d.corpus.manifest import ImageRecord
from mae3d.io.blosc2_store import Blosc2Params
from mae3d.io.volumes import ORIENTATION, Volume, VolumeError, read_volume
from mae3d.preprocessing.crop import crop_box_slices, nonzero_crop
from mae3d.preprocessing.normalize import intensity_stats, zscore_
from mae3d.preprocessing.resample import compute_new_shape, resample_image, resample_mask
from mae3d.preprocessing.store import write_case

__all__ = ["CaseError", "CaseSettings", "PreprocessedCase", "check_spacing", "preprocess_case",
           "process_case"]

_MASK_FIELDS = {"anatomy": "anatomy_mask", "anonymization": "anonymization_mask"}


class CaseError(ValueError):
    """An image cannot be preprocessed (bad input); the message is the one-line reason."""


@dataclass(frozen=True)
class CaseSettings:
    """What one worker needs to process a case (the plan's resolved values)."""

    target_spacing: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
    patch_size: tuple[int, int, int] = (160, 160, 160)
    normalization: str = "zscore-nonzero"
    image_order: int = 3
    mask_order: int = 1
    order_z: int = 0
    anisotropy_threshold: float = 3.0
    max_spacing: float = 20.0
    blosc2: Blosc2Params = field(default_factory=Blosc2Params)


@dataclass
class PreprocessedCase:
    """A processed image ``(1, X, Y, Z)`` float32, its uint8 masks on the same grid, properties."""

    image_cxyz: np.ndarray
    masks: dict[str, np.ndarray]
    properties: dict[str, Any]


def check_spacing(path: Path, spacing: tuple[float, ...], max_spacing: float) -> None:
    """Reject spacings that are not finite, not positive, or above ``max_spacing`` mm."""
    if any(not math.isfinite(s) or s <= 0 or s > max_spacing for s in spacing):
        raise CaseError(f"{path}: absurd spacing {tuple(round(s, 4) for s in spacing)} mm "
                        f"(must be finite, > 0 and <= {max_spacing})")


def _read(path: Path) -> Volume:
    try:
        return read_volume(path)
    except FileNotFoundError as e:
        raise CaseError(str(e)) from None
    except VolumeError as e:
        raise CaseError(str(e)) from None


def _read_mask(kind: str, path: Path, image: Volume) -> np.ndarray:
    vol = _read(path)
    if vol.shape != image.shape or not np.allclose(vol.affine, image.affine, rtol=0, atol=1e-3):
        raise CaseError(f"{path}: {kind} mask shape/affine {vol.shape} does not match the image "
                        f"{image.path} {image.shape}")
    m = np.rint(vol.array)
    if m.min() < 0 or m.max() > 255:
        raise CaseError(f"{path}: {kind} mask values outside 0..255 ({m.min()}..{m.max()})")
    return m.astype(np.uint8)


def _resampled_affine(affine: np.ndarray, lo: list[int], old_shape: tuple[int, ...],
                      new_shape: tuple[int, ...]) -> np.ndarray:
    """Affine of the cropped (offset ``lo``) and resampled grid (voxel centres as in skimage resize)."""
    crop = np.eye(4)
    crop[:3, 3] = lo
    scale = np.array([o / n for o, n in zip(old_shape, new_shape, strict=True)], dtype=np.float64)
    zoom = np.eye(4)
    zoom[:3, :3] = np.diag(scale)
    zoom[:3, 3] = (scale - 1.0) / 2.0
    return affine @ crop @ zoom


def preprocess_case(record: ImageRecord, settings: CaseSettings) -> PreprocessedCase:
    """Run every step on ``record`` in memory (nothing written)."""
    vol = _read(record.path)
    check_spacing(record.path, vol.spacing, settings.max_spacing)
    x = vol.array
    lo_val, hi_val = float(x.min()), float(x.max())  # NaN propagates through min/max
    if not (math.isfinite(lo_val) and math.isfinite(hi_val)):
        n_bad = int(np.count_nonzero(~np.isfinite(x)))
        raise CaseError(f"{record.path}: {n_bad} NaN/Inf voxels")
    if lo_val == hi_val:
        what = "all-zero image" if lo_val == 0 else f"constant image (every voxel = {lo_val:g})"
        raise CaseError(f"{record.path}: {what}")
    masks = {kind: _read_mask(kind, p, vol) for kind, f in _MASK_FIELDS.items()
             if (p := getattr(record, f)) is not None}

    box, region = nonzero_crop(x)
    sl = crop_box_slices(box)
    x = x[sl].copy()
    masks = {k: m[sl] for k, m in masks.items()}
    norm_region = region if settings.normalization == "zscore-nonzero" else None
    values = x[region] if norm_region is not None else x.ravel()
    stats = intensity_stats(values)
    del values
    if stats["std"] <= 1e-8 * max(1.0, abs(stats["mean"])):
        raise CaseError(f"{record.path}: constant inside the non-zero region (value {stats['mean']:g})")
    zscore_(x, stats["mean"], stats["std"], norm_region)

    crop_shape = tuple(int(s) for s in x.shape)
    if settings.target_spacing is None:
        spacing, new_shape = tuple(vol.spacing), crop_shape
    else:
        spacing = tuple(float(s) for s in settings.target_spacing)
        new_shape = tuple(max(1, s) for s in compute_new_shape(crop_shape, vol.spacing, spacing))
    if new_shape != crop_shape:
        x = resample_image(x, new_shape, vol.spacing, spacing, order=settings.image_order,
                           order_z=settings.order_z, anisotropy_threshold=settings.anisotropy_threshold)
        masks = {k: resample_mask(m, new_shape, vol.spacing, spacing, order=settings.mask_order,
                                  order_z=0, anisotropy_threshold=settings.anisotropy_threshold)
                 for k, m in masks.items()}
    affine = _resampled_affine(vol.affine, [b[0] for b in box], crop_shape, new_shape)

    props: dict[str, Any] = {
        "image_id": record.image_id, "dataset_id": record.dataset_id, "subject_id": record.subject_id,
        "session_id": record.session_id, "name": record.name, "source_path": str(record.path),
        "modality": record.modality, "metadata": record.metadata,
        "mask_paths": {k: str(getattr(record, f)) for k, f in _MASK_FIELDS.items()
                       if getattr(record, f) is not None},
        "source_shape": list(vol.source_shape), "source_orientation": vol.source_orientation,
        "source_dtype": vol.source_dtype, "orientation": ORIENTATION,
        "original_spacing": list(vol.spacing), "original_shape": list(vol.shape),
        "crop_box": box, "shape_after_crop": list(crop_shape),
        "spacing": list(spacing), "affine": affine.tolist(),
        "intensity": stats,
        "normalization": {"scheme": settings.normalization, "mean": stats["mean"], "std": stats["std"]},
    }
    masks_cxyz = {k: m[None] for k, m in masks.items()}
    return PreprocessedCase(image_cxyz=x[None], masks=masks_cxyz, properties=props)


def process_case(record: ImageRecord, settings: CaseSettings, cases_dir: Path, *, nthreads: int = 1
                 ) -> dict[str, Any]:
    """Preprocess ``record`` and store it in ``cases_dir`` (properties last); return the properties."""
    case = preprocess_case(record, settings)
    return write_case(cases_dir, record.image_id, case.image_cxyz, case.properties, case.masks,
                      patch_size=settings.patch_size, params=settings.blosc2, nthreads=nthreads)
