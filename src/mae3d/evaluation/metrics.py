"""Segmentation metrics for one binary mask pair: Dice, normalised surface Dice (NSD) and HD95.

All distances are in millimetres: voxel spacing enters through ``distance_transform_edt(sampling=spacing)``,
so anisotropic voxels are handled exactly.

Definitions (what the numbers mean):

* **Dice** = 2|P ∩ R| / (|P| + |R|) over voxels (P prediction, R reference).
* **Surface** of a mask = its foreground voxels that have at least one face neighbour (6-connectivity
  in 3-D) in the background, i.e. ``mask & ~binary_erosion(mask)``; outside the array counts as
  background, so an object touching the image border has a surface there. Distances are measured
  between voxel centres.
* **Directed surface distances** d(P->R): for every surface voxel of P, the Euclidean distance in mm to
  the nearest surface voxel of R (and vice versa).
* **NSD** at tolerance t (Nikolov et al. 2021) = (#{p in S_P: d(p, S_R) <= t} + #{r in S_R: d(r, S_P) <= t})
  / (|S_P| + |S_R|). Surface elements are counted as voxels (not weighted by surfel area as in DeepMind's
  ``surface-distance`` package), so values can differ slightly from that package on coarse grids.
* **HD95** = max(95th percentile of d(P->R), 95th percentile of d(R->P)) (the MONAI / DeepMind
  convention; numpy's linear-interpolation percentile).

Empty masks (no voxel of the class):

* both empty: Dice 1, NSD 1, HD95 0 (nothing to find, nothing found). NB: nnU-Net's own evaluation
  reports Dice as NaN here and leaves the case out of the mean; mae3d counts it as a success.
* exactly one empty: Dice 0, NSD 0, HD95 = ``inf``. An infinite distance cannot be averaged;
  :mod:`mae3d.evaluation.evaluate` reports it as ``null`` (JSON) / ``inf`` (CSV) per case and replaces it
  by a cap for the means: by default the image diagonal in mm (the largest distance possible inside the
  image, as e.g. BraTS does with 373.13 mm), or a fixed number of mm chosen by the user.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["BinaryMetrics", "binary_metrics", "dice", "hd95", "image_diagonal_mm", "nsd", "surface_distances",
           "surface_mask"]


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics of one class in one case; ``hd95`` is ``inf`` when exactly one mask is empty."""

    dice: float
    nsd: float
    hd95: float
    n_ref: int
    n_pred: int


def _check(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {pred.ndim}-D mask")
    if any(not (s > 0) for s in spacing):
        raise ValueError(f"spacing must be positive, got {tuple(spacing)}")
    return pred, ref


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the image's diagonal in mm (extent = shape x spacing): the HD95 cap used by default."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient of two binary masks; 1.0 when both are empty."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    denom = int(pred.sum()) + int(ref.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / denom


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a binary mask (face-connected erosion; outside the array is background)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop_to_union(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union plus one voxel (where the image allows).

    Surfaces lie inside that box and the Euclidean distance transform is exact, so distances do not
    change; the one-voxel margin keeps the erosion's notion of "outside" identical to the full image.
    """
    coords = np.argwhere(pred | ref)
    lo = np.maximum(coords.min(axis=0) - 1, 0)
    hi = np.minimum(coords.max(axis=0) + 2, pred.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    return pred[box], ref[box]


def surface_distances(pred: np.ndarray, ref: np.ndarray,
                      spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (pred surface -> ref surface, ref surface -> pred surface).

    Both masks must be non-empty.
    """
    pred, ref = _check(pred, ref, spacing)
    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks")
    pred, ref = _crop_to_union(pred, ref)
    s_pred, s_ref = surface_mask(pred), surface_mask(ref)
    sampling = tuple(float(s) for s in spacing)
    to_ref = ndimage.distance_transform_edt(~s_ref, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~s_pred, sampling=sampling)
    return to_ref[s_pred], to_pred[s_ref]


def _nsd(d_pred: np.ndarray, d_ref: np.ndarray, tolerance_mm: float) -> float:
    return float((np.count_nonzero(d_pred <= tolerance_mm) + np.count_nonzero(d_ref <= tolerance_mm))
                 / (d_pred.size + d_ref.size))


def _hd95(d_pred: np.ndarray, d_ref: np.ndarray) -> float:
    return float(max(np.percentile(d_pred, 95), np.percentile(d_ref, 95)))


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                   tolerance_mm: float = 1.0) -> BinaryMetrics:
    """Dice, NSD at ``tolerance_mm`` and HD95 of one binary mask pair (see the module docstring).

    Args:
        pred: predicted mask (any dtype; non-zero = foreground).
        ref: reference mask, same shape.
        spacing: voxel size in mm per array axis.
        tolerance_mm: NSD tolerance.
    """
    if tolerance_mm < 0:
        raise ValueError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    pred, ref = _check(pred, ref, spacing)
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    if n_pred == 0 and n_ref == 0:
        return BinaryMetrics(dice=1.0, nsd=1.0, hd95=0.0, n_ref=0, n_pred=0)
    if n_pred == 0 or n_ref == 0:
        return BinaryMetrics(dice=0.0, nsd=0.0, hd95=math.inf, n_ref=n_ref, n_pred=n_pred)
    d_pred, d_ref = surface_distances(pred, ref, spacing)
    return BinaryMetrics(dice=dice(pred, ref), nsd=_nsd(d_pred, d_ref, tolerance_mm),
                         hd95=_hd95(d_pred, d_ref), n_ref=n_ref, n_pred=n_pred)


def nsd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 1.0) -> float:
    """Normalised surface Dice at ``tolerance_mm`` (1.0 if both masks are empty, 0.0 if one is)."""
    return binary_metrics(pred, ref, spacing, tolerance_mm).nsd


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (0.0 if both empty, ``inf`` if one is)."""
    return binary_metrics(pred, ref, spacing).hd95
