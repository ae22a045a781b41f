"""Intensity statistics of a region and z-score normalisation (in place, float32).

Statistics are accumulated in float64 so that large volumes do not lose precision; percentiles
use a regular subsample of at most ``_PERCENTILE_SAMPLES`` voxels (as nnU-Net's fingerprint samples
foreground voxels), which keeps their cost independent of the volume size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["intensity_stats", "zscore_"]

_PERCENTILE_SAMPLES = 100_000


def intensity_stats(values: np.ndarray) -> dict[str, Any]:
    """Mean, std, min, max and 0.5/50/99.5 percentiles of a 1D sample of voxel values."""
    v64_mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    step = max(1, values.size // _PERCENTILE_SAMPLES)
    p_lo, median, p_hi = np.percentile(values[::step], [0.5, 50.0, 99.5])
    return {"mean": v64_mean, "std": std, "min": float(values.min()), "max": float(values.max()),
            "median": float(median), "percentile_00_5": float(p_lo), "percentile_99_5": float(p_hi),
            "n_voxels": int(values.size)}


def zscore_(x: np.ndarray, mean: float, std: float, region: np.ndarray | None = None) -> np.ndarray:
    """``(x - mean) / std`` in place; voxels outside ``region`` (if given) become 0."""
    x -= np.float32(mean)
    x *= np.float32(1.0 / max(std, 1e-8))
    if region is not None:
        x[~region] = 0
    return x
