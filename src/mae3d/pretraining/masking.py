"""Block masks for masked image modelling, sampled on a coarse grid and upsampled by broadcasting.

Conventions (SparK's): a mask is a ``bool`` tensor ``mask_b1ghw`` of shape ``(B, 1, G, H, W)`` on
the *block grid* ``patch_size // block_size``; ``True`` = visible, ``False`` = masked. Each sample
gets exactly ``n_masked = floor(ratio * N + 0.5)`` masked blocks out of ``N = G*H*W`` (round half
up, then clamped to ``[0, N - 1]`` so that at least one block stays visible: the sparse encoder
normalises over visible voxels). The ratio is either fixed or drawn per sample from ``U(lo, hi)``.

All randomness comes from the ``torch.Generator`` passed in - there is no global RNG use and no
module state, so a seeded generator reproduces a mask stream exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mae3d.models.geometry import PatchSizeError, Triple, mask_grid

__all__ = [
    "MaskError",
    "mask_grid_shape",
    "num_masked_blocks",
    "sample_block_mask",
    "upsample_mask",
]

class MaskError(ValueError):
    """Invalid masking parameters (block size, ratio, shapes)."""


def mask_grid_shape(patch_size: int | Sequence[int], block_size: int | Sequence[int]) -> Triple:
    """The block grid ``patch_size // block_size`` (:func:`mae3d.models.geometry.mask_grid`).

    Raises :class:`MaskError` unless the block size divides the patch exactly.
    """
    try:
        return mask_grid(patch_size, block_size)
    except PatchSizeError as e:
        raise MaskError(str(e)) from None


def num_masked_blocks(ratio: float, n_blocks: int) -> int:
    """Masked blocks for ``ratio`` of ``n_blocks``: round half up, at least one block left visible."""
    return min(max(math.floor(ratio * n_blocks + 0.5), 0), n_blocks - 1)


def _check_ratio(ratio: float | tuple[float, float] | Sequence[float]) -> tuple[float, float]:
    if isinstance(ratio, (int, float)):
        lo = hi = float(ratio)
    elif isinstance(ratio, Sequence) and len(ratio) == 2:
        lo, hi = float(ratio[0]), float(ratio[1])
    else:
        raise MaskError(f"mask ratio must be a float or a (lo, hi) pair, got {ratio!r}")
    if not (0.0 <= lo <= hi < 1.0):
        raise MaskError(f"mask ratio must be a float or (lo, hi) range with 0 <= lo <= hi < 1, got {ratio!r}")
    return lo, hi


def sample_block_mask(
    batch_size: int,
    patch_size: int | Sequence[int],
    block_size: int | Sequence[int],
    ratio: float | tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Sample one block mask per sample; returns ``mask_b1ghw`` (bool, True = visible).

    Args:
        batch_size: B.
        patch_size: voxel size of the patch (int or 3 ints).
        block_size: voxel size of a mask block; must divide ``patch_size`` (else :class:`MaskError`).
        ratio: fraction of blocks to mask, or a ``(lo, hi)`` range from which every sample draws
            its own ratio uniformly. The count per sample is exact (see module docstring).
        generator: source of all randomness; the mask lives on ``generator.device``.
    """
    if batch_size < 1:
        raise MaskError(f"batch_size must be >= 1, got {batch_size}")
    grid = mask_grid_shape(patch_size, block_size)
    lo, hi = _check_ratio(ratio)
    n_blocks = math.prod(grid)
    device = generator.device
    if lo == hi:
        n_masked = torch.full((batch_size,), num_masked_blocks(lo, n_blocks), device=device)
    else:
        u = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)
        ratios = lo + (hi - lo) * u
        n_masked = torch.floor(ratios * n_blocks + 0.5).clamp_(0, n_blocks - 1).long()
    # a uniformly random ranking of the blocks per sample; the n_masked lowest ranks are masked
    scores = torch.rand(batch_size, n_blocks, generator=generator, device=device)
    rank = scores.argsort(dim=1).argsort(dim=1)
    visible = rank >= n_masked[:, None]
    return visible.view(batch_size, 1, *grid)


def upsample_mask(
    mask_b1ghw: torch.Tensor, spatial_shape: Sequence[int], dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Nearest-upsample a grid mask to a feature map of ``spatial_shape``; returns ``(B, 1, D, H, W)``.

    The mask is viewed as ``(B, 1, G, 1, H, 1, W, 1)`` and *expanded* (no copy) to the block layout;
    one reshape then materialises the single-channel result. Consumers multiply it into
    ``(B, C, D, H, W)`` features by broadcasting over C, so the mask is never copied per channel and
    there is no chain of ``repeat_interleave`` copies.

    A feature map coarser than the grid on any axis (e.g. the bottleneck when blocks are smaller
    than the network's total stride) is treated as **all visible** (SparK's convention): a coarse
    voxel there mixes visible and masked blocks. Raises :class:`MaskError` if a finer shape is not
    a whole multiple of the grid.

    Args:
        mask_b1ghw: bool grid mask (True = visible).
        spatial_shape: target ``(D, H, W)``.
        dtype: result dtype (default: bool, like the input).
    """
    if mask_b1ghw.dim() != 5 or mask_b1ghw.shape[1] != 1:
        raise MaskError(f"mask must have shape (B, 1, G, H, W), got {tuple(mask_b1ghw.shape)}")
    b = mask_b1ghw.shape[0]
    grid = tuple(mask_b1ghw.shape[2:])
    shape = tuple(int(s) for s in spatial_shape)
    dtype = dtype or mask_b1ghw.dtype
    if len(shape) != 3:
        raise MaskError(f"spatial_shape must have 3 entries, got {shape}")
    if any(s < g for s, g in zip(shape, grid, strict=True)):
        return torch.ones((b, 1, *shape), dtype=dtype, device=mask_b1ghw.device)
    if any(s % g for s, g in zip(shape, grid, strict=True)):
        raise MaskError(f"feature map {list(shape)} is not a multiple of the mask grid {list(grid)}")
    f = [s // g for s, g in zip(shape, grid, strict=True)]
    m = mask_b1ghw.to(dtype).view(b, 1, grid[0], 1, grid[1], 1, grid[2], 1)
    m = m.expand(b, 1, grid[0], f[0], grid[1], f[1], grid[2], f[2])
    return m.reshape(b, 1, *shape)
