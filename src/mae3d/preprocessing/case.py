"""Preprocess one image: read -> crop to non-zero -> z-score -> resample -> store.

Arrays stay in the file's own SimpleITK array order (``mae3d.io.volumes``: no reorientation, the
order nnU-Net's fine-tuning and prediction read), so the encoder sees the same axes in pre-training
and downstream; spacings are listed in that order. Order follows nnssl/nnU-Net: normalise *before*
resampling, so that the non-zero region still fits the image exactly when the statistics are taken.
The default z-score uses the whole cropped box (nnssl, nnU-Net with ``use_mask_for_norm=False``);
``zscore-nonzero`` uses the non-zero region only and sets the voxels outside it to 0. Masks
(anatomy, anonymisation) are cropped with the image's box and resampled onto the same grid. Bad
input raises ``CaseError`` whose message is a one-line reason naming the file; the runner turns it
into a skipped case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mae3d.corpus.manifest import ImageRecord
from mae3d.io.blosc2_store import Blosc2Params
from mae3d.io.volumes import ARRAY_LAYOUT, ORIENTATION, Volume, VolumeError, read_volume
from mae3d.preprocessing.crop import crop_box_slices, nonzero_crop
from mae3d.preprocessing.normalize import intensity_stats, zscore_
from mae3d.preprocessing.resample import compute_new_shape, resample_image, resample_mask
from mae3d.preprocessing.store import write_case

__all__ = ["NORMALIZATIONS", "CaseError", "CaseSettings", "PreprocessedCase", "check_spacing",
           "preprocess_case", "process_case", "stored_geometry"]

#: ``zscore``: mean/std over the whole cropped box (nnssl's; nnU-Net's ``use_mask_for_norm=False``);
#: ``zscore-nonzero``: over the non-zero region, 0 outside it (nnU-Net's ``use_mask_for_norm=True``)
NORMALIZATIONS = ("zscore", "zscore-nonzero")
_MASK_FIELDS = {"anatomy": "anatomy_mask", "anonymization": "anonymization_mask"}


class CaseError(ValueError):
    """An image cannot be preprocessed (bad input); the message is the one-line reason."""


@dataclass(frozen=True)
class CaseSettings:
    """What one worker needs to process a case (the plan's resolved values)."""

    target_spacing: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
    patch_size: tuple[int, int, int] = (160, 160, 160)
    normalization: str = "zscore"
    image_order: int = 3
    mask_order: int = 1
    order_z: int = 0
    anisotropy_threshold: float = 3.0
    max_spacing: float = 20.0
    blosc2: Blosc2Params = field(default_factory=Blosc2Params)


@dataclass
class PreprocessedCase:
    """A processed image ``(1, z, y, x)`` float32, its uint8 masks on the same grid, properties."""

    image_czyx: np.ndarray
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
    if not vol.same_grid(image):
        raise CaseError(f"{path}: {kind} mask shape/affine {vol.shape} (origin {vol.origin}) does not match "
                        f"the image {image.path} {image.shape} (origin {image.origin})")
    m = np.rint(vol.array)
    if m.min() < 0 or m.max() > 255:
        raise CaseError(f"{path}: {kind} mask values outside 0..255 ({m.min()}..{m.max()})")
    return m.astype(np.uint8)


def stored_geometry(vol: Volume, lo: list[int], old_shape: tuple[int, ...], new_shape: tuple[int, ...]
                    ) -> dict[str, list[float]]:
    """SimpleITK geometry (``spacing``/``origin``/``direction``) of the cropped (offset ``lo``, array
    order) and resampled grid, voxel centres as in skimage resize; ``sitk.GetImageFromArray`` of the
    stored array with it lies where the source image lies."""
    scale = np.array([o / n for o, n in zip(old_shape, new_shape, strict=True)], dtype=np.float64)
    first = np.asarray(lo, dtype=np.float64) + (scale - 1.0) / 2.0  # array index of new voxel 0
    direction = np.asarray(vol.direction, dtype=np.float64).reshape(3, 3)
    sp_xyz = np.asarray(vol.sitk_spacing, dtype=np.float64)
    origin = np.asarray(vol.origin, dtype=np.float64) + direction @ (sp_xyz * first[::-1])
    return {"spacing": (sp_xyz * scale[::-1]).tolist(), "origin": origin.tolist(),
            "direction": list(vol.direction)}


def preprocess_case(record: ImageRecord, settings: CaseSettings) -> PreprocessedCase:
    """Run every step on ``record`` in memory (nothing written)."""
    if settings.normalization not in NORMALIZATIONS:
        raise CaseError(f"{record.path}: unknown normalization {settings.normalization!r} "
                        f"(valid: {', '.join(NORMALIZATIONS)})")
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
        where = "non-zero region" if norm_region is not None else "cropped box"
        raise CaseError(f"{record.path}: constant inside the {where} (value {stats['mean']:g})")
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
    geometry = stored_geometry(vol, [b[0] for b in box], crop_shape, new_shape)

    props: dict[str, Any] = {
        "image_id": record.image_id, "dataset_id": record.dataset_id, "subject_id": record.subject_id,
        "session_id": record.session_id, "name": record.name, "source_path": str(record.path),
        "modality": record.modality, "metadata": record.metadata,
        "mask_paths": {k: str(getattr(record, f)) for k, f in _MASK_FIELDS.items()
                       if getattr(record, f) is not None},
        "source_shape": list(vol.source_shape), "source_orientation": vol.source_orientation,
        "source_dtype": vol.source_dtype, "orientation": ORIENTATION, "array_layout": ARRAY_LAYOUT,
        "sitk_stuff": vol.sitk_stuff(),
        "original_spacing": list(vol.spacing), "original_shape": list(vol.shape),
        "crop_box": box, "shape_after_crop": list(crop_shape),
        "spacing": list(spacing), "stored_sitk_stuff": geometry,
        "intensity": stats,
        "normalization": {"scheme": settings.normalization, "mean": stats["mean"], "std": stats["std"]},
    }
    masks_czyx = {k: m[None] for k, m in masks.items()}
    return PreprocessedCase(image_czyx=x[None], masks=masks_czyx, properties=props)


def process_case(record: ImageRecord, settings: CaseSettings, cases_dir: Path, *, nthreads: int = 1
                 ) -> dict[str, Any]:
    """Preprocess ``record`` and store it in ``cases_dir`` (properties last); return the properties."""
    case = preprocess_case(record, settings)
    return write_case(cases_dir, record.image_id, case.image_czyx, case.properties, case.masks,
                      patch_size=settings.patch_size, params=settings.blosc2, nthreads=nthreads)
