"""CPU patch sampling: fast-path crops, bounded reads, trilinear accuracy, orientation, padding, masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates

from mae3d.pretraining.data.params import PatchParams, output_bbox
from mae3d.pretraining.data.sampling import (
    affine_grid_3d,
    read_region,
    region_theta,
    sample_patch,
)
from mae3d.pretraining.data.workspace import Workspace

P = (12, 16, 20)  # anisotropic on purpose: an axis mix-up changes shapes


def _reference(vol_xyz: np.ndarray, params: PatchParams, patch_size) -> np.ndarray:
    """Independent reference: q = centre + A u evaluated by scipy, trilinear, zero outside (float64)."""
    p = np.asarray(patch_size, dtype=np.float64)
    axes = [np.arange(n) - (n - 1) / 2 for n in patch_size]
    u = np.stack(np.meshgrid(*axes, indexing="ij"), 0).reshape(3, -1)
    q = np.asarray(params.centre)[:, None] + params.matrix() @ u
    assert q.shape[1] == int(np.prod(p))
    out = map_coordinates(vol_xyz.astype(np.float64), q, order=1, mode="grid-constant", cval=0.0)
    return out.reshape(patch_size)


class _Recorder:
    """Wraps a stored array and records every slice read from it."""

    def __init__(self, arr):
        self.arr, self.keys = arr, []
        self.shape, self.dtype = arr.shape, arr.dtype

    def __getitem__(self, key):
        self.keys.append(key)
        return self.arr[key]


def test_fast_path_equals_direct_slice_of_stored_array(corpus):
    img = corpus.image("case0")
    params = PatchParams((3 + (P[0] - 1) / 2, 7 + (P[1] - 1) / 2, 2 + (P[2] - 1) / 2))
    assert not params.transformed
    x = sample_patch(img, params, P)["x"]
    assert x.shape == (1, *P) and x.dtype == torch.float32
    np.testing.assert_array_equal(x.numpy(), img[:, 3:3 + P[0], 7:7 + P[1], 2:2 + P[2]])


def test_mirroring_flips_the_crop(corpus):
    img = corpus.image("case1")
    crop = img[:, 1:1 + P[0], 2:2 + P[1], 0:P[2]]
    centre = (1 + (P[0] - 1) / 2, 2 + (P[1] - 1) / 2, (P[2] - 1) / 2)
    for mirror in [(True, False, False), (False, True, True), (True, True, True)]:
        x = sample_patch(img, PatchParams(centre, mirror=mirror), P)["x"].numpy()
        axes = tuple(k + 1 for k in range(3) if mirror[k])
        np.testing.assert_array_equal(x, np.flip(crop, axes))
    # mirrored crop that leaves the image: padding is mirrored with the content
    start, centre = np.array([-3, 30, -5]), (-3 + (P[0] - 1) / 2, 30 + (P[1] - 1) / 2, -5 + (P[2] - 1) / 2)
    x = sample_patch(img, PatchParams(centre, mirror=(True, True, False)), P)["x"].numpy()
    np.testing.assert_array_equal(x, np.flip(read_region(img, start, start + np.asarray(P)), (1, 2)))


@pytest.mark.parametrize("params", [
    PatchParams((16.0, 20.5, 12.0), angles_rad=(0.4, -0.3, 0.5), scale=1.3, mirror=(True, False, True)),
    PatchParams((10.2, 25.0, 9.7), angles_rad=(-0.5, 0.1, 0.0), scale=0.8),
    PatchParams((16.0, 20.0, 12.0), scale=0.75, mirror=(False, True, False)),   # separable path
    PatchParams((2.0, 38.0, 23.0), scale=1.35, mirror=(True, True, False)),     # separable, at a corner
    PatchParams((1.0, 1.0, 1.0), angles_rad=(0.3, 0.2, -0.4), scale=1.1),        # mostly outside the image
])
def test_transformed_patch_matches_full_volume_interpolation(corpus, t1_xyz, params):
    img = corpus.image("case0")
    x = sample_patch(img, params, P, workspace=Workspace())["x"][0].numpy()
    np.testing.assert_allclose(x, _reference(t1_xyz, params, P), rtol=0, atol=2e-5)


def test_transformed_read_touches_only_the_bounding_region(corpus):
    img = corpus.image("case0")
    params = PatchParams((16.0, 20.0, 12.0), angles_rad=(0.2, 0.1, -0.2), scale=0.7)
    rec = _Recorder(img)
    sample_patch(rec, params, (8, 8, 8))
    start, stop = output_bbox(params, (8, 8, 8))
    assert len(rec.keys) == 1
    got = [(s.start, s.stop) for s in rec.keys[0][1:]]
    assert got == list(zip(start.tolist(), stop.tolist(), strict=True))
    assert np.prod(stop - start) < 0.25 * np.prod(img.shape[1:])  # a small part of the volume


def test_affine_grid_3d_equals_torch_affine_grid():
    theta = torch.randn(3, 3, 4, generator=torch.Generator().manual_seed(0))
    ours = affine_grid_3d(theta, (5, 7, 9))
    ref = F.affine_grid(theta, (3, 1, 5, 7, 9), align_corners=True)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("axis", "size"), [(0, (10, 12, 12)), (1, (12, 10, 12)), (2, (12, 12, 10))])
def test_rotation_by_90_degrees_equals_rot90(corpus, axis, size):
    """Pins the orientation: +90° about axis a == np.rot90(crop, -1, axes=(a+1, a+2) cyclic)."""
    img = corpus.image("case0")
    lo = np.array([5, 9, 4])
    centre = tuple(float(c) for c in lo + (np.asarray(size) - 1) / 2)
    crop = img[0, lo[0]:lo[0] + size[0], lo[1]:lo[1] + size[1], lo[2]:lo[2] + size[2]]
    angles = [0.0, 0.0, 0.0]
    angles[axis] = np.pi / 2
    x = sample_patch(img, PatchParams(centre, angles_rad=tuple(angles)), size)["x"][0].numpy()
    plane = ((axis + 1) % 3, (axis + 2) % 3)
    np.testing.assert_allclose(x, np.rot90(crop, -1, axes=plane), atol=1e-5)
    assert not np.allclose(x, crop, atol=1e-2)  # the content really moved


def test_out_of_volume_is_zero(corpus):
    img = corpus.image("case0")
    # crop starting at (-4, -6, -2): the first voxels along each axis lie outside the image
    centre = (-4 + (P[0] - 1) / 2, -6 + (P[1] - 1) / 2, -2 + (P[2] - 1) / 2)
    x = sample_patch(img, PatchParams(centre), P)["x"][0].numpy()
    assert np.all(x[:4] == 0) and np.all(x[:, :6] == 0) and np.all(x[:, :, :2] == 0)
    np.testing.assert_array_equal(x[4:, 6:, 2:], img[0, :P[0] - 4, :P[1] - 6, :P[2] - 2])
    # transformed patch far outside the image: exactly zero
    far = PatchParams((-40.0, -40.0, -40.0), angles_rad=(0.1, 0.0, 0.0))
    assert torch.count_nonzero(sample_patch(img, far, P)["x"]) == 0
    assert read_region(img, (-30, -30, -30), (-20, -20, -20)).shape == (1, 10, 10, 10)


@pytest.mark.parametrize("params", [
    PatchParams((16.0, 20.0, 12.0), angles_rad=(0.3, -0.2, 0.1), scale=1.1, mirror=(True, False, False)),
    PatchParams((3.3, 20.0, 12.0), scale=1.27, mirror=(False, True, False)),  # separable path, padded
])
def test_masks_use_nearest_sampling_on_the_same_grid(corpus, params):
    img, anon = corpus.image("case0"), corpus.mask("case0", "anonymization")
    out = sample_patch(img, params, P, {"anon": anon})
    m = out["anon"]
    assert m.dtype == torch.uint8 and m.shape == (1, *P)
    assert set(torch.unique(m).tolist()) <= {0, 1} and m.sum() > 0
    full = torch.from_numpy(anon[:].astype(np.float32))[None]
    theta = region_theta(params.matrix(), params.centre, (0, 0, 0), img.shape[1:], P)
    theta = torch.from_numpy(theta).float()
    ref = F.grid_sample(full, F.affine_grid(theta[None], (1, 1, *P), align_corners=True), mode="nearest",
                        align_corners=True)[0]
    assert (ref.to(torch.uint8) != m).float().mean() < 1e-3  # float ties may round differently
    crop = sample_patch(img, PatchParams((9.5, 12.5, 11.5)), (8, 8, 8), {"anon": anon})["anon"]
    np.testing.assert_array_equal(crop.numpy(), anon[:, 6:14, 9:17, 8:16])
