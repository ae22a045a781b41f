"""Resampling to a target spacing with nnU-Net's scheme, computed separably in float32.

Semantics are nnU-Net v2's ``resample_data_or_seg_to_shape`` (what nnssl uses): images with a
cubic B-spline (``order=3``), masks by linear interpolation of each label's indicator and arg-max
(``order=1``, ties to the nearest voxel); when the spacing anisotropy exceeds ``ANISO_THRESHOLD``
(3) the low-resolution axis is resampled with ``order_z`` (0 = nearest). Voxel centres are aligned as in
``skimage.transform.resize`` (``scipy.ndimage.zoom(..., grid_mode=True, mode="nearest")``).

Why not call nnU-Net's function: it converts to float64 and evaluates 4x4x4 spline taps per
output voxel, and importing it loads torch, pandas and scikit-image in every worker process.
An axis-aligned zoom is separable, so here each axis is one small ``(new_n, old_n)`` matrix
(built by applying ``scipy.ndimage.zoom`` to an identity matrix, i.e. the same prefilter and
weights) applied with a float32 BLAS product: the same result (to float32 rounding, tested
against nnU-Net's) several times faster.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import zoom

__all__ = ["ANISO_THRESHOLD", "axis_orders", "compute_new_shape", "interpolation_matrix", "resample_image",
           "resample_mask"]

# float32 products miss exact ties (e.g. 0.5 vs 0.5) that float64 (nnU-Net) detects; treat as ties
_TIE = 2e-5
ANISO_THRESHOLD = 3.0  # nnunetv2.configuration.ANISO_THRESHOLD (not imported: that module loads torch)


def compute_new_shape(old_shape: Sequence[int], old_spacing: Sequence[float],
                      new_spacing: Sequence[float]) -> tuple[int, ...]:
    """Shape after resampling, rounded like nnU-Net's ``compute_new_shape``."""
    return tuple(round(o * s / t) for o, s, t in zip(old_shape, old_spacing, new_spacing, strict=True))


def axis_orders(old_spacing: Sequence[float], new_spacing: Sequence[float], order: int, order_z: int,
                anisotropy_threshold: float = ANISO_THRESHOLD) -> tuple[int, int, int]:
    """Interpolation order per axis, following nnU-Net's separate-z rule.

    If the source (else the target) spacing is anisotropic beyond the threshold and exactly one
    axis has the largest spacing, that axis gets ``order_z``; all others get ``order``.
    """
    for sp in (old_spacing, new_spacing):
        sp = np.asarray(sp, dtype=np.float64)
        if sp.max() / sp.min() > anisotropy_threshold:
            low_res = np.flatnonzero(sp == sp.max())
            if len(low_res) == 1:
                orders = [order] * 3
                orders[int(low_res[0])] = order_z
                return tuple(orders)  # type: ignore[return-value]
            return (order, order, order)
    return (order, order, order)


def interpolation_matrix(old_n: int, new_n: int, order: int) -> np.ndarray:
    """``(new_n, old_n)`` float32 matrix mapping samples on the old grid to the new grid (1D)."""
    eye = np.eye(old_n, dtype=np.float64)
    m = zoom(eye, (new_n / old_n, 1.0), order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    if m.shape != (new_n, old_n):  # zoom rounds the output shape; guard against an off-by-one
        raise AssertionError(f"zoom gave {m.shape}, expected {(new_n, old_n)}")
    return m.astype(np.float32)


def _apply_axis(x: np.ndarray, m: np.ndarray, axis: int) -> np.ndarray:
    if axis == 0:
        return (m @ x.reshape(x.shape[0], -1)).reshape(m.shape[0], *x.shape[1:])
    if axis == 1:
        return np.matmul(m, x)  # broadcast over axis 0: (Y', Y) @ (X, Y, Z)
    return x @ m.T


def _resample(x: np.ndarray, new_shape: Sequence[int], orders: Sequence[int], *, clip: bool) -> np.ndarray:
    """Resample ``x`` axis by axis; ``clip`` bounds the result to the input range (spline overshoot).

    As in nnU-Net (skimage ``resize(clip=True)``), the clip range is the whole input's, except with
    a separate low-resolution axis, where nnU-Net resizes slice by slice and clips each slice to
    its own range before interpolating across slices.
    """
    sep = [a for a in range(3) if orders[a] != max(orders)] if len(set(orders)) > 1 else []
    if sep:
        z = sep[0]
        in_plane = [a for a in range(3) if a != z]
        if clip:
            lo = x.min(axis=tuple(in_plane), keepdims=True)
            hi = x.max(axis=tuple(in_plane), keepdims=True)
        for a in in_plane:
            if x.shape[a] != new_shape[a]:
                x = _apply_axis(x, interpolation_matrix(x.shape[a], int(new_shape[a]), orders[a]), a)
        if clip:
            x = np.clip(x, lo, hi, out=x)
        if x.shape[z] != new_shape[z]:
            x = _apply_axis(x, interpolation_matrix(x.shape[z], int(new_shape[z]), orders[z]), z)
        return np.ascontiguousarray(x)
    lo, hi = (x.min(), x.max()) if clip else (None, None)
    # shrink first: later passes then run on fewer voxels
    for a in sorted(range(3), key=lambda a: new_shape[a] / x.shape[a]):
        if x.shape[a] != new_shape[a]:
            x = _apply_axis(x, interpolation_matrix(x.shape[a], int(new_shape[a]), orders[a]), a)
    if clip:
        x = np.clip(x, lo, hi, out=x)
    return np.ascontiguousarray(x)


def resample_image(x_xyz: np.ndarray, new_shape: Sequence[int], old_spacing: Sequence[float],
                   new_spacing: Sequence[float], *, order: int = 3, order_z: int = 0,
                   anisotropy_threshold: float = ANISO_THRESHOLD) -> np.ndarray:
    """Resample a 3D float image to ``new_shape`` (float32 result)."""
    orders = axis_orders(old_spacing, new_spacing, order, order_z, anisotropy_threshold)
    return _resample(np.asarray(x_xyz, dtype=np.float32), new_shape, orders, clip=order > 1)


def resample_mask(m_xyz: np.ndarray, new_shape: Sequence[int], old_spacing: Sequence[float],
                  new_spacing: Sequence[float], *, order: int = 1, order_z: int = 0,
                  anisotropy_threshold: float = ANISO_THRESHOLD) -> np.ndarray:
    """Resample a label mask like nnU-Net's ``resize_segmentation``.

    Each label's indicator (background included) is interpolated; a voxel takes the label with the
    largest value, and ties (up to float32 rounding) take the nearest source voxel's label.
    """
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(m_xyz.shape) == new_shape:
        return m_xyz.copy()
    orders = axis_orders(old_spacing, new_spacing, order, order_z, anisotropy_threshold)
    labels = np.unique(m_xyz)
    if len(labels) == 1:
        return np.full(new_shape, labels[0], dtype=m_xyz.dtype)
    if len(labels) == 2:  # the common binary case: background's indicator is 1 - the label's
        frac = _resample((m_xyz == labels[1]).astype(np.float32), new_shape, orders, clip=False)
        out = np.where(frac > 0.5, labels[1], labels[0]).astype(m_xyz.dtype)
        tie = np.abs(frac - 0.5) <= _TIE
    else:
        fracs = np.stack([_resample((m_xyz == lab).astype(np.float32), new_shape, orders, clip=False)
                          for lab in labels])
        top2 = np.partition(fracs, -2, axis=0)[-2:]
        out = labels[np.argmax(fracs, axis=0)].astype(m_xyz.dtype)
        tie = (top2[1] - top2[0]) <= _TIE
    if tie.any():
        nearest = _resample(m_xyz.astype(np.float32), new_shape, (0, 0, 0), clip=False)
        out[tie] = nearest[tie].astype(m_xyz.dtype)
    return out
