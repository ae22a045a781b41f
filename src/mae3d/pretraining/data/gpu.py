"""Spatial augmentation on the training device: rotation, scaling and mirroring of a whole batch.

With ``LoaderConfig.device_augment`` the loader workers only read, per patch, the input region
its sampling grid touches (``sampling.sample_region``: the exact crop, or the sampling box clipped
to the image) plus the drawn parameters; ``collate_regions`` zero-pads the regions to a common
shape, and ``augment_batch`` / ``GPUAugment`` interpolate all transformed patches of the batch in
one ``grid_sample`` call on the device (trilinear, ``align_corners=True``, zero padding - the same
convention and result as the CPU path) and crop + flip the untransformed ones. A GPU node then
needs only enough CPU workers to decompress the regions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from mae3d.pretraining.data.sampling import affine_grid_3d, region_theta

__all__ = ["AUG_KEYS", "GPUAugment", "augment_batch", "collate_regions"]

AUG_KEYS = ("origin", "centre", "matrix", "mirror", "transformed")


def _pad_to(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    if tuple(arr.shape) == tuple(shape):
        return arr
    out = np.zeros(tuple(shape), dtype=arr.dtype)
    out[tuple(slice(0, n) for n in arr.shape)] = arr
    return out


def collate_regions(samples: Sequence[Mapping[str, Any]], mask_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Batch ``sample_region`` outputs: regions zero-padded (at the far end) to a common shape.

    Returns ``{"region": (B, C, S0, S1, S2) float32, <mask key>: (B, C, S0, S1, S2), "aug": {origin,
    centre, matrix, mirror, transformed} tensors, "case_ids": [...]}``. Padding after the region
    only adds zeros where the region already ended (the image border or beyond every sample point).
    """
    shape = np.max([s["region"].shape for s in samples], axis=0)
    out: dict[str, Any] = {}
    for key in ("region", *mask_keys):
        out[key] = default_collate([torch.from_numpy(_pad_to(s[key], shape)) for s in samples])
    out["aug"] = {k: default_collate([torch.as_tensor(np.asarray(s[k])) for s in samples]) for k in AUG_KEYS}
    out["case_ids"] = [s["case_id"] for s in samples]
    return out


def augment_batch(
    region_bcdhw: torch.Tensor, aug: Mapping[str, torch.Tensor], patch_size: Sequence[int], *,
    device: torch.device | str | None = None, mode: str = "bilinear",
) -> torch.Tensor:
    """Patches ``(B, C, *patch_size)`` sampled from a batch of regions on ``device``.

    ``aug`` holds per-sample ``origin`` (B, 3) int, ``centre`` (B, 3), ``matrix`` (B, 3, 3) (mirroring
    included), ``mirror`` (B, 3) bool and ``transformed`` (B,) bool, as made by ``collate_regions``.
    ``mode`` is "bilinear" (trilinear, images) or "nearest" (masks; the dtype is kept).
    """
    device = torch.device(device) if device is not None else region_bcdhw.device
    region = region_bcdhw.to(device, non_blocking=True)
    b, c = region.shape[:2]
    size = tuple(int(s) for s in region.shape[2:])
    p = tuple(int(s) for s in patch_size)
    origin = aug["origin"].cpu().numpy().astype(np.int64)
    centre = aug["centre"].cpu().numpy().astype(np.float64)
    matrix = aug["matrix"].cpu().numpy().astype(np.float64)
    mirror = aug["mirror"].cpu().numpy().astype(bool)
    transformed = aug["transformed"].cpu().numpy().astype(bool)
    out = torch.empty((b, c, *p), dtype=region.dtype, device=device)
    for i in np.flatnonzero(~transformed):
        lo = np.floor(centre[i] - (np.asarray(p) - 1) / 2 + 0.5).astype(np.int64) - origin[i]
        if np.any(lo < 0) or np.any(lo + p > size):
            raise ValueError(f"sample {i}: its crop lies outside the region it was shipped with")
        crop = region[i, :, lo[0]:lo[0] + p[0], lo[1]:lo[1] + p[1], lo[2]:lo[2] + p[2]]
        flip = [k + 1 for k in range(3) if mirror[i, k]]
        out[i] = crop.flip(flip) if flip else crop
    idx = np.flatnonzero(transformed)
    if idx.size:
        theta = np.stack([region_theta(matrix[i], centre[i], origin[i], size, p) for i in idx])
        theta_t = torch.from_numpy(theta).to(device=device, dtype=torch.float32)
        grid = affine_grid_3d(theta_t, p)
        index = torch.from_numpy(idx).to(device)
        src = region.index_select(0, index)
        res = F.grid_sample(src if src.is_floating_point() else src.float(), grid, mode=mode,
                            padding_mode="zeros", align_corners=True)
        out.index_copy_(0, index, res.to(region.dtype))
    return out


class GPUAugment(nn.Module):
    """Turns a ``device_augment`` loader batch into the training batch on ``device``.

    ``forward(batch)`` returns ``{"x": (B, 1, *patch_size) float32, <mask key>: uint8, "case_ids"}``.
    """

    def __init__(self, patch_size: Sequence[int], mask_keys: Sequence[str] = ()) -> None:
        super().__init__()
        self.patch_size = tuple(int(s) for s in patch_size)
        self.mask_keys = tuple(mask_keys)

    def forward(self, batch: Mapping[str, Any], device: torch.device | str | None = None) -> dict[str, Any]:
        region = batch["region"]
        dev = torch.device(device) if device is not None else region.device
        out: dict[str, Any] = {"x": augment_batch(region, batch["aug"], self.patch_size, device=dev)}
        for key in self.mask_keys:
            out[key] = augment_batch(batch[key], batch["aug"], self.patch_size, device=dev, mode="nearest")
        out["case_ids"] = list(batch["case_ids"])
        return out
