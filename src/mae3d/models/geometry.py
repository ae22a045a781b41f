"""Patch-size arithmetic of a ResEnc U-Net: total stride, per-stage feature-map shapes, checks.

A patch must be divisible by the network's total stride (else the decoder's transposed convs do
not line up with the skips), its bottleneck must hold more than one voxel (InstanceNorm cannot
normalise a single value in training), and - for masked pre-training - the mask block size must
divide the patch. :func:`check_patch_size` turns each of these into a one-line error before any
tensor is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mae3d.models.spec import ArchitectureConfig, ArchitectureSpec, resolve

__all__ = ["PatchSizeError", "Triple", "as_triple", "check_patch_size", "mask_grid", "stage_shapes",
           "total_stride"]

Triple = tuple[int, int, int]
ArchLike = ArchitectureConfig | ArchitectureSpec | str


class PatchSizeError(ValueError):
    """A patch size does not fit the network or the mask block size."""


def as_triple(value: int | Sequence[int], what: str = "size") -> Triple:
    """``96`` -> ``(96, 96, 96)``; a 3-sequence of positive ints passes through as a tuple."""
    t = (value, value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(t) != 3 or any(v < 1 for v in t):
        raise PatchSizeError(f"{what}: expected a positive int or 3 positive ints, got {value!r}")
    return t  # type: ignore[return-value]


def mask_grid(patch_size: int | Sequence[int], block_size: int | Sequence[int]) -> Triple:
    """The mask block grid ``patch_size // block_size``; :class:`PatchSizeError` unless it divides exactly."""
    patch = as_triple(patch_size, "patch_size")
    block = as_triple(block_size, "block_size")
    if any(p % b for p, b in zip(patch, block, strict=True)):
        raise PatchSizeError(
            f"block_size {list(block)} does not divide patch_size {list(patch)}; "
            "choose a block size that divides every patch edge"
        )
    return tuple(p // b for p, b in zip(patch, block, strict=True))  # type: ignore[return-value]


def total_stride(arch: ArchLike) -> Triple:
    """Product of all stage strides per axis (32 for ResEnc-L: 160^3 -> 5^3 bottleneck)."""
    spec = resolve(arch)
    return tuple(math.prod(s[a] for s in spec.strides) for a in range(3))  # type: ignore[return-value]


def stage_shapes(arch: ArchLike, patch_size: int | Sequence[int]) -> list[Triple]:
    """Spatial shape of every encoder stage's output for ``patch_size`` (full resolution first)."""
    spec = resolve(arch)
    shape = as_triple(patch_size, "patch_size")
    out = []
    for s in spec.strides:
        shape = tuple(d // f for d, f in zip(shape, s, strict=True))  # type: ignore[assignment]
        out.append(shape)
    return out


def check_patch_size(
    arch: ArchLike, patch_size: int | Sequence[int], block_size: int | Sequence[int] | None = None
) -> None:
    """Raise :class:`PatchSizeError` unless ``patch_size`` works for ``arch`` (and ``block_size``).

    Checks: divisible by the total stride; bottleneck has more than one voxel; if ``block_size`` is
    given, each block edge divides the patch edge and every stage that is at least as fine as the
    mask grid is a whole multiple of it (so the mask upsamples to it exactly).
    """
    spec = resolve(arch)
    patch = as_triple(patch_size, "patch_size")
    stride = total_stride(spec)
    if any(p % s for p, s in zip(patch, stride, strict=True)):
        raise PatchSizeError(
            f"patch_size {list(patch)} is not divisible by the total stride {list(stride)} of "
            f"architecture {spec.name!r}; use multiples of {list(stride)}"
        )
    bottleneck = stage_shapes(spec, patch)[-1]
    if math.prod(bottleneck) < 2:
        raise PatchSizeError(
            f"patch_size {list(patch)} gives a {list(bottleneck)} bottleneck in architecture {spec.name!r}; "
            "InstanceNorm needs more than one voxel there - use a larger patch or fewer stages"
        )
    if block_size is None:
        return
    block = as_triple(block_size, "block_size")
    grid = mask_grid(patch, block)
    for i, shape in enumerate(stage_shapes(spec, patch)):
        finer = all(d >= g for d, g in zip(shape, grid, strict=True))
        if finer and any(d % g for d, g in zip(shape, grid, strict=True)):
            raise PatchSizeError(
                f"stage {i} feature map {list(shape)} is not a multiple of the mask grid {list(grid)} "
                f"(patch {list(patch)}, block {list(block)})"
            )
