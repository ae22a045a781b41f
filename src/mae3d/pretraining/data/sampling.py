"""Sampling one augmented patch straight from a stored volume (the CPU path).

Instead of cropping an enlarged block (nnssl crops 257³ for a 160³ patch) and transforming all of
it, the output grid is mapped into the input first (``params.output_bbox``), only that box -
clipped to the image - is read from the blosc2 array (slicing decompresses only the chunks it
touches), and the patch is interpolated from that small region:

* neither rotation nor scaling drawn: a plain crop (zero outside the image), mirrored by flipping
  (the fast path batchgeneratorsv2 also takes);
* rotation drawn: ``torch.nn.functional.grid_sample``, trilinear (``mode="bilinear"`` on 5-D input),
  ``align_corners=True`` in voxel-index coordinates, zero padding - the interpolation nnU-Net v2 /
  batchgeneratorsv2 use for images. The reference (batchgenerators v1) uses cubic splines, ~3.5x
  slower on CPU (research/anchor_perf.md) for no benefit to a reconstruction target;
* scaling (and mirroring) only: the same trilinear interpolation computed separably, one linear
  pass per axis (identical weights, ~4x cheaper than grid_sample's per-point 8-neighbour gather).

Masks use nearest neighbour. Sampling from the clipped region equals sampling the whole volume
with zero padding (tested): every neighbour outside the region gets weight on a zero either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mae3d.pretraining.data.params import PatchParams, output_bbox
from mae3d.pretraining.data.workspace import Workspace, new_tensor

__all__ = ["affine_grid_3d", "read_box", "read_region", "region_theta", "sample_patch", "sample_region"]

_SLAB = 16  # output slices per grid_sample call: small outputs reuse heap memory instead of faulting


def read_region(arr: Any, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
    """Return ``arr[:, start:stop]`` for a ``(C, X, Y, Z)`` array, zero where the box leaves the image.

    ``arr`` is a blosc2 ``NDArray`` (only touched chunks are decompressed) or a numpy array. The
    result is always a new C-contiguous array (never a view of an in-memory source).
    """
    shape = np.asarray(arr.shape[1:], dtype=np.int64)
    start = np.asarray(start, dtype=np.int64)
    stop = np.asarray(stop, dtype=np.int64)
    lo = np.clip(start, 0, shape)
    hi = np.clip(stop, 0, shape)
    inner = (slice(None), *(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)))
    if np.array_equal(lo, start) and np.array_equal(hi, stop):
        out = arr[inner]
        return np.array(out, copy=True) if isinstance(arr, np.ndarray) else np.ascontiguousarray(out)
    out = np.zeros((arr.shape[0], *(stop - start).tolist()), dtype=arr.dtype)
    if np.all(hi > lo):
        dst = (slice(None), *(slice(int(a), int(b)) for a, b in zip(lo - start, hi - start, strict=True)))
        out[dst] = arr[inner]
    return out


def read_box(shape: Sequence[int], params: PatchParams, patch_size: Sequence[int]
             ) -> tuple[np.ndarray, np.ndarray]:
    """The box ``[start, stop)`` to read for a patch of a volume of spatial ``shape``.

    The crop itself for an untransformed patch (zero-padded where it leaves the image); for a
    transformed one the sampling box clipped to the image - exact, because the samplers treat
    everything outside the region as zero, and much smaller (a rotated, 1.4x-scaled 160³ grid
    spans ~300³).
    """
    start, stop = output_bbox(params, patch_size)
    if params.transformed:
        shp = np.asarray(shape, dtype=np.int64)
        lo, hi = np.maximum(start, 0), np.minimum(stop, shp)
        keep = hi - lo >= 2  # clip only where >= 2 voxels remain (grid normalisation needs 2)
        start, stop = np.where(keep, lo, start), np.where(keep, hi, stop)
    return start, stop


def region_theta(
    matrix: np.ndarray, centre: Sequence[float], region_start: Sequence[int], region_size: Sequence[int],
    patch_size: Sequence[int],
) -> np.ndarray:
    """``affine_grid`` matrix (3x4, float64) sampling the patch from a region of the volume.

    Maps the output's normalised coordinates (``align_corners=True``) to the region's normalised
    coordinates, both in grid_sample's (axis 2, axis 1, axis 0) order.
    """
    p = np.asarray(patch_size, dtype=np.float64)
    s = np.asarray(region_size, dtype=np.float64)
    if np.any(s < 2) or np.any(p < 2):
        raise ValueError(f"region {tuple(region_size)} and patch {tuple(patch_size)} need >= 2 voxels/axis")
    scale_in = 2.0 / (s - 1)
    m = scale_in[:, None] * np.asarray(matrix, dtype=np.float64) * ((p - 1) / 2)[None, :]
    t = scale_in * (np.asarray(centre, dtype=np.float64) - np.asarray(region_start, dtype=np.float64)) - 1.0
    theta = np.empty((3, 4), dtype=np.float64)
    theta[:, :3] = m[::-1, ::-1]
    theta[:, 3] = t[::-1]
    return theta


def affine_grid_3d(theta_b34: torch.Tensor, size: Sequence[int], out: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """``F.affine_grid(theta, (B, 1, *size), align_corners=True)`` built per axis.

    Equal to affine_grid up to float rounding (tested), several times faster on CPU: each of the
    three coordinates is affine in each output axis, so it is a broadcast sum of 1-D terms written
    into its own contiguous plane instead of a (P³ x 4) @ (4 x 3) product. Returns a
    ``(B, D, H, W, 3)`` view of planes ``(B, 3, D, H, W)`` (``out``, if given, must have that
    planar shape); grid_sample accepts the strided view.
    """
    b = theta_b34.shape[0]
    d, h, w = (int(n) for n in size)
    kw = {"dtype": theta_b34.dtype, "device": theta_b34.device}

    def lin(n: int) -> torch.Tensor:
        return torch.linspace(-1.0, 1.0, n, **kw) if n > 1 else torch.zeros(1, **kw)

    z, y, x = lin(d), lin(h), lin(w)
    th = theta_b34[:, :, None, None, None, :]  # (B, 3, 1, 1, 1, 4)
    dh = z[:, None, None] * th[..., 2] + y[None, :, None] * th[..., 1] + th[..., 3]  # (B, 3, D, H, 1)
    xw = x[None, None, :] * th[..., 0]  # (B, 3, 1, 1, W)
    if out is None:
        out = torch.empty((b, 3, d, h, w), **kw)
    torch.add(dh, xw, out=out)
    return out.permute(0, 2, 3, 4, 1)


def _grid_sample_slabs(src_bcdhw: torch.Tensor, grid: torch.Tensor, out: torch.Tensor, mode: str) -> None:
    """``out[:] = grid_sample(src, grid)`` computed a few output slices at a time (see ``_SLAB``)."""
    for z0 in range(0, grid.shape[1], _SLAB):
        sl = slice(z0, min(z0 + _SLAB, grid.shape[1]))
        out[:, :, sl] = F.grid_sample(src_bcdhw, grid[:, sl], mode=mode, padding_mode="zeros",
                                      align_corners=True)


def _axis_taps(n_out: int, a: float, offset: float, size: int) -> tuple[torch.Tensor, ...]:
    """Indices and weights of 1-D linear interpolation at ``offset + a * (o - (n_out - 1) / 2)``."""
    q = offset + a * (np.arange(n_out, dtype=np.float64) - (n_out - 1) / 2)
    i0 = np.floor(q)
    w1 = q - i0
    i0 = i0.astype(np.int64)
    i1 = i0 + 1
    w0 = (1.0 - w1) * ((i0 >= 0) & (i0 < size))  # a neighbour outside the region is a zero
    w1 = w1 * ((i1 >= 0) & (i1 < size))
    return (torch.from_numpy(np.clip(i0, 0, size - 1)), torch.from_numpy(np.clip(i1, 0, size - 1)),
            torch.from_numpy(w0.astype(np.float32)), torch.from_numpy(w1.astype(np.float32)))


def _separable_sample(src_cxyz: torch.Tensor, diag: np.ndarray, centre_rel: np.ndarray,
                      patch_size: Sequence[int], ws: Workspace, out: torch.Tensor) -> None:
    """Trilinear sampling for a diagonal ``A`` (scale/mirror): one linear pass per axis."""
    x = src_cxyz
    for k in range(3):
        i0, i1, w0, w1 = _axis_taps(int(patch_size[k]), float(diag[k]), float(centre_rel[k]), x.shape[k + 1])
        shape = list(x.shape)
        shape[k + 1] = int(patch_size[k])
        wshape = [1, 1, 1, 1]
        wshape[k + 1] = -1
        lo = out if k == 2 else ws.get(f"sep{k % 2}", shape)
        hi = ws.get("sep_hi", shape)
        if k < 2:
            torch.index_select(x, k + 1, i0, out=lo)
            torch.index_select(x, k + 1, i1, out=hi)
        else:  # gather is ~7x faster than index_select along the innermost axis
            torch.gather(x, 3, i0.view(1, 1, 1, -1).expand(shape), out=lo)
            torch.gather(x, 3, i1.view(1, 1, 1, -1).expand(shape), out=hi)
        lo.mul_(w0.view(wshape)).addcmul_(hi, w1.view(wshape))
        x = lo


def _crop_into(arr: Any, start: np.ndarray, stop: np.ndarray, mirror: Sequence[bool],
               out: np.ndarray) -> None:
    """``out[:] = flip(read_region(arr, start, stop))`` with a single copy out of the stored array."""
    axes = tuple(k + 1 for k in range(3) if mirror[k])
    target = np.flip(out, axes) if axes else out  # writing into a flipped view mirrors the result
    shape = np.asarray(arr.shape[1:], dtype=np.int64)
    lo, hi = np.clip(start, 0, shape), np.clip(stop, 0, shape)
    if not np.all(hi > lo):
        target[...] = 0
        return
    a, b = lo - start, hi - start
    for k in range(3):  # zero only the margins that lie outside the image
        before: list[Any] = [slice(None)] * 4
        after: list[Any] = [slice(None)] * 4
        before[k + 1], after[k + 1] = slice(0, int(a[k])), slice(int(b[k]), None)
        target[tuple(before)] = 0
        target[tuple(after)] = 0
    src = (slice(None), *(slice(int(x), int(y)) for x, y in zip(lo, hi, strict=True)))
    target[(slice(None), *(slice(int(x), int(y)) for x, y in zip(a, b, strict=True)))] = arr[src]


def _separable_nearest(region: np.ndarray, diag: np.ndarray, centre_rel: np.ndarray,
                       patch_size: Sequence[int], out: np.ndarray) -> None:
    """Nearest-neighbour sampling for a diagonal ``A``: one index pass per axis (zero outside)."""
    m = region
    for k in range(3):
        n = int(patch_size[k])
        q = centre_rel[k] + diag[k] * (np.arange(n, dtype=np.float64) - (n - 1) / 2)
        idx = np.rint(q).astype(np.int64)  # round half to even, like grid_sample's nearest
        valid = (idx >= 0) & (idx < m.shape[k + 1])
        m = np.take(m, np.clip(idx, 0, m.shape[k + 1] - 1), axis=k + 1)
        if not valid.all():
            sl: list[Any] = [slice(None)] * 4
            sl[k + 1] = ~valid
            m[tuple(sl)] = 0
    out[...] = m


def _new_outputs(image: Any, masks: Mapping[str, Any], patch_size: Sequence[int]) -> dict[str, torch.Tensor]:
    c = int(image.shape[0])
    out = {"x": new_tensor((c, *patch_size), np.float32)}
    for key, arr in masks.items():
        out[key] = new_tensor((int(arr.shape[0]), *patch_size), np.dtype(arr.dtype))
    return out


def sample_patch(
    image: Any, params: PatchParams, patch_size: Sequence[int], masks: Mapping[str, Any] | None = None,
    workspace: Workspace | None = None, out: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Sample one augmented patch: ``{"x": float32 (C, *patch_size), <mask key>: (C, *patch_size)}``.

    ``image`` and the ``masks`` values are ``(C, X, Y, Z)`` blosc2/numpy arrays on the same grid;
    masks keep their dtype. ``workspace`` holds reusable scratch memory (pass one per process).
    ``out`` (optional) are contiguous CPU tensors to write into (e.g. slots of a batch), same keys.
    """
    masks = masks or {}
    ws = workspace or Workspace()
    res = dict(out) if out is not None else _new_outputs(image, masks, patch_size)
    start, stop = read_box(image.shape[1:], params, patch_size)
    sources = (("x", image), *masks.items())
    if not params.transformed:
        for key, arr in sources:
            _crop_into(arr, start, stop, params.mirror, res[key].numpy())
        return res
    matrix = params.matrix()
    diag = np.diagonal(matrix).copy()
    centre_rel = np.asarray(params.centre) - start
    if np.array_equal(matrix, np.diag(diag)):  # scaling/mirroring only: separable interpolation
        _separable_sample(torch.from_numpy(read_region(image, start, stop).astype(np.float32, copy=False)),
                          diag, centre_rel, patch_size, ws, res["x"])
        for key, arr in masks.items():
            _separable_nearest(read_region(arr, start, stop), diag, centre_rel, patch_size, res[key].numpy())
        return res
    theta = torch.from_numpy(region_theta(matrix, params.centre, start, stop - start, patch_size)).float()
    grid = affine_grid_3d(theta[None], patch_size, out=ws.get("grid", (1, 3, *patch_size)))
    for key, arr in sources:
        region = torch.from_numpy(read_region(arr, start, stop).astype(np.float32, copy=False))
        _grid_sample_slabs(region[None], grid, res[key][None], "bilinear" if key == "x" else "nearest")
    return res


def sample_region(
    image: Any, params: PatchParams, patch_size: Sequence[int], masks: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read only what the device-side augmentation needs for one patch (no interpolation here).

    Returns ``{"region": float32 (C, S0, S1, S2), <mask key>: region of the mask, "origin": int64 (3,)
    volume index of region[:, 0, 0, 0], "centre" (3,), "matrix" (3, 3) float64 with mirroring,
    "mirror" bool (3,), "transformed" bool}``. Untransformed patches ship their exact (unflipped)
    crop; transformed ones the sampling box clipped to the image (the device treats the rest as zero).
    """
    masks = masks or {}
    start, stop = read_box(image.shape[1:], params, patch_size)
    out: dict[str, Any] = {
        "region": read_region(image, start, stop).astype(np.float32, copy=False),
        "origin": start.astype(np.int64),
        "centre": np.asarray(params.centre, dtype=np.float64),
        "matrix": params.matrix(),
        "mirror": np.asarray(params.mirror, dtype=bool),
        "transformed": bool(params.transformed),
    }
    for key, arr in masks.items():
        out[key] = read_region(arr, start, stop)
    return out
