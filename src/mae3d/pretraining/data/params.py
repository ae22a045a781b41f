"""Per-sample augmentation parameters and the coordinate convention of a patch.

Convention (all in voxel indices of the stored array's spatial axes 0, 1, 2 = X, Y, Z): output voxel
``o`` of a patch of size ``P`` sits at offset ``u = o - (P - 1) / 2`` from the patch centre and is
read from input coordinate ``q = centre + A @ u`` with ``A = R @ (s * I) @ F``:

* ``R = R2 @ R1 @ R0``, ``Rk`` a rotation by angle ``a_k`` in the plane of the two other axes
  (``R0 = [[1, 0, 0], [0, cos, -sin], [0, sin, cos]]``, likewise for axes 1 and 2, same composition
  order as batchgeneratorsv2). A 90° rotation about axis 0 gives ``out = np.rot90(crop, -1, axes=(1, 2))``.
* ``s`` isotropic scale (> 1 samples a larger region: structures look smaller).
* ``F = diag(±1)`` mirroring; flipping output axis k is the same as negating column k of ``A``.

Parameters are drawn from an explicit ``numpy.random.Generator`` with a fixed number of draws per
sample, so a stream is reproducible from its seed whatever the outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mae3d.pretraining.data.config import AugmentConfig

__all__ = ["PatchParams", "draw_centre", "draw_params", "draw_scale", "output_bbox", "rotation_matrix"]


def rotation_matrix(angles_rad: Sequence[float]) -> np.ndarray:
    """``R2 @ R1 @ R0`` for rotations by ``angles_rad[k]`` about array axis k (float64 3x3)."""
    a0, a1, a2 = (float(a) for a in angles_rad)
    c0, s0, c1, s1, c2, s2 = np.cos(a0), np.sin(a0), np.cos(a1), np.sin(a1), np.cos(a2), np.sin(a2)
    r0 = np.array([[1, 0, 0], [0, c0, -s0], [0, s0, c0]])
    r1 = np.array([[c1, 0, s1], [0, 1, 0], [-s1, 0, c1]])
    r2 = np.array([[c2, -s2, 0], [s2, c2, 0], [0, 0, 1]])
    return r2 @ r1 @ r0


@dataclass(frozen=True)
class PatchParams:
    """Where and how one patch is sampled (see the module docstring for the convention)."""

    centre: tuple[float, float, float]
    angles_rad: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    mirror: tuple[bool, bool, bool] = (False, False, False)

    @property
    def transformed(self) -> bool:
        """True when the patch needs interpolation (a rotation or scaling was drawn)."""
        return any(a != 0.0 for a in self.angles_rad) or self.scale != 1.0

    def matrix(self, *, with_mirror: bool = True) -> np.ndarray:
        """``A`` (float64 3x3) mapping output offsets to input offsets."""
        a = rotation_matrix(self.angles_rad) * self.scale
        if with_mirror:
            a = a * np.where(self.mirror, -1.0, 1.0)[None, :]
        return a

    def crop_start(self, patch_size: Sequence[int]) -> np.ndarray:
        """Lower corner of the untransformed patch (int64), i.e. ``round(centre - (P - 1) / 2)``."""
        p = np.asarray(patch_size, dtype=np.float64)
        return np.floor(np.asarray(self.centre) - (p - 1) / 2 + 0.5).astype(np.int64)


def draw_centre(rng: np.random.Generator, shape: Sequence[int], patch_size: Sequence[int]) -> np.ndarray:
    """Random patch centre: the untransformed patch lies inside the volume where it fits.

    Per axis the lower corner is uniform over the integers ``[0, shape - P]``; an axis shorter than
    the patch is centred (the rest is zero padding). This is where the reference's 257³-crop loader
    puts the 160³ patch too (its padding allowance cancels the crop's margin).
    """
    centre = np.empty(3, dtype=np.float64)
    for k in range(3):
        n, p = int(shape[k]), int(patch_size[k])
        lo = int(rng.integers(0, n - p + 1)) if n >= p else -((p - n) // 2)
        centre[k] = lo + (p - 1) / 2
    return centre


def draw_scale(u_side: float, u_value: float, aug: AugmentConfig) -> float:
    """A scale in ``aug.scale`` from two uniform numbers in [0, 1), per ``aug.scale_draw``.

    ``"split"`` (batchgenerators): if ``lo < 1`` and ``u_side < 0.5`` the scale is ``U(lo, 1)``,
    otherwise ``U(max(lo, 1), hi)``. ``"uniform"``: ``U(lo, hi)`` (``u_side`` unused).
    """
    lo, hi = (float(v) for v in aug.scale)
    if aug.scale_draw == "split":
        lo, hi = (lo, min(1.0, hi)) if lo < 1.0 and u_side < 0.5 else (max(lo, 1.0), hi)
    return lo + (hi - lo) * u_value


def draw_params(
    rng: np.random.Generator, shape: Sequence[int], patch_size: Sequence[int], aug: AugmentConfig
) -> PatchParams:
    """Draw a centre, rotation, scale and mirroring for one patch of a volume of spatial ``shape``.

    Always consumes the same number of random values (3 centre + 2 decisions + 3 angles + 2 scale
    + 3 mirror), so streams stay aligned whatever is drawn.
    """
    centre = draw_centre(rng, shape, patch_size)
    u_rot, u_scale = rng.random(2)
    lim = np.deg2rad(aug.rotation_deg)
    angles = rng.uniform(-lim, lim, 3)
    u_side, u_value = rng.random(2)
    scale = draw_scale(float(u_side), float(u_value), aug)
    u_mirror = rng.random(3)
    angles_t = tuple(float(a) for a in angles) if u_rot < aug.p_rotation else (0.0, 0.0, 0.0)
    if u_scale >= aug.p_scale:
        scale = 1.0
    mirror = tuple(bool(k in aug.mirror_axes and u_mirror[k] < aug.p_mirror) for k in range(3))
    return PatchParams(tuple(float(c) for c in centre), angles_t, scale, mirror)  # type: ignore[arg-type]


def output_bbox(params: PatchParams, patch_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Input-space box ``[start, stop)`` (int64) holding every voxel trilinear sampling touches.

    For an untransformed patch this is exactly the crop. Otherwise it is the bounding box of the 8
    mapped corners of the output grid, widened to the voxels below and above each coordinate.
    """
    p = np.asarray(patch_size, dtype=np.float64)
    if not params.transformed:
        start = params.crop_start(patch_size)
        return start, start + np.asarray(patch_size, dtype=np.int64)
    half = (p - 1) / 2
    signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=np.float64)
    corners = np.asarray(params.centre)[None, :] + (signs * half[None, :]) @ params.matrix().T
    # small slack so float32 rounding inside grid_sample can never step outside the box
    start = np.floor(corners.min(0) - 1e-3).astype(np.int64)
    stop = np.floor(corners.max(0) + 1e-3).astype(np.int64) + 2
    return start, stop
