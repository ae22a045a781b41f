"""Dice / NSD / HD95 against hand-computed values and an independent brute-force implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mae3d.evaluation.metrics import (
    binary_metrics,
    dice,
    hd95,
    image_diagonal_mm,
    nsd,
    surface_distances,
    surface_mask,
)


def _cube(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


def test_dice_of_two_overlapping_cubes():
    a = _cube((10, 10, 10), (2, 2, 2), (6, 6, 6))  # 64 voxels
    b = _cube((10, 10, 10), (3, 2, 2), (7, 6, 6))  # 64 voxels, overlap 3*4*4 = 48
    assert dice(a, b) == pytest.approx(2 * 48 / 128)
    assert binary_metrics(a, b, (1, 1, 1)).dice == pytest.approx(0.75)


def test_surface_definition():
    assert surface_mask(_cube((5, 5, 5), (1, 1, 1), (4, 4, 4))).sum() == 26  # 3^3 minus the centre
    assert surface_mask(_cube((6, 6, 6), (1, 1, 1), (5, 5, 5))).sum() == 64 - 8
    full = np.ones((4, 4, 4), dtype=bool)  # touching the border: the outside counts as background
    assert surface_mask(full).sum() == 64 - 8


def test_hd95_of_shifted_cubes_with_anisotropic_spacing():
    # 2x2x2 cubes (all voxels are surface) shifted by 3 voxels along axis 0: along that axis the
    # directed distances are 2 and 3 voxels (4 voxels each), so HD95 = 3 voxels along axis 0.
    a = _cube((10, 6, 6), (2, 2, 2), (4, 4, 4))
    b = _cube((10, 6, 6), (5, 2, 2), (7, 4, 4))
    d_ab, d_ba = surface_distances(a, b, (2.0, 1.0, 1.0))
    assert sorted(d_ab) == [4.0] * 4 + [6.0] * 4 and sorted(d_ba) == sorted(d_ab)
    assert hd95(a, b, (2.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert hd95(a, b, (1.0, 1.0, 2.0)) == pytest.approx(3.0)  # spacing of the other axes is irrelevant
    assert hd95(a, b, (0.5, 3.0, 3.0)) == pytest.approx(1.5)


def test_nsd_with_tolerance():
    a = _cube((10, 6, 6), (2, 2, 2), (4, 4, 4))
    b = _cube((10, 6, 6), (5, 2, 2), (7, 4, 4))
    spacing = (2.0, 1.0, 1.0)  # distances 4 mm (half the surface) and 6 mm (other half)
    assert nsd(a, b, spacing, tolerance_mm=3.9) == 0.0
    assert nsd(a, b, spacing, tolerance_mm=5.0) == pytest.approx(0.5)
    assert nsd(a, b, spacing, tolerance_mm=6.0) == 1.0
    assert nsd(a, a, spacing, tolerance_mm=0.0) == 1.0


def test_empty_masks():
    empty = np.zeros((5, 5, 5), dtype=bool)
    some = _cube((5, 5, 5), (1, 1, 1), (3, 3, 3))
    both = binary_metrics(empty, empty, (1, 1, 1))
    assert (both.dice, both.nsd, both.hd95) == (1.0, 1.0, 0.0)
    for pred, ref in ((empty, some), (some, empty)):
        m = binary_metrics(pred, ref, (1, 1, 1))
        assert (m.dice, m.nsd) == (0.0, 0.0) and math.isinf(m.hd95)
        assert m.n_ref + m.n_pred == 8


def test_input_errors():
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), (1, 1))
    assert image_diagonal_mm((3, 4, 12), (1.0, 1.0, 1.0)) == pytest.approx(13.0)


def _brute_force(pred, ref, spacing, tol):
    """Independent reference: surfaces by explicit 6-neighbour test, all pairwise distances."""
    def surface_points(m):
        padded = np.pad(m, 1)
        inner = np.ones_like(m)
        for axis in range(3):
            for shift in (-1, 1):
                inner &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(m & ~inner) * np.asarray(spacing)

    sp, sr = surface_points(pred), surface_points(ref)
    d = cdist(sp, sr)
    d_pr, d_rp = d.min(axis=1), d.min(axis=0)
    hd = max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))
    return ((d_pr <= tol).sum() + (d_rp <= tol).sum()) / (len(d_pr) + len(d_rp)), hd


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_brute_force_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    shape, spacing, tol = (14, 12, 9), (0.8, 1.3, 2.5), 1.5
    masks = []
    for _ in range(2):  # two random unions of boxes, some touching the image border
        m = np.zeros(shape, dtype=bool)
        for _ in range(3):
            lo = rng.integers(0, np.array(shape) - 2)
            hi = lo + rng.integers(2, 7, size=3)
            m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
        masks.append(m)
    pred, ref = masks
    expected_nsd, expected_hd = _brute_force(pred, ref, spacing, tol)
    m = binary_metrics(pred, ref, spacing, tolerance_mm=tol)
    assert m.nsd == pytest.approx(expected_nsd)
    assert m.hd95 == pytest.approx(expected_hd)
    assert m.dice == pytest.approx(2 * (pred & ref).sum() / (pred.sum() + ref.sum()))
