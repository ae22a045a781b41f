"""``PrepareConfig``: every setting of ``mae3d prepare`` (defaults follow nnssl's ``onemmiso`` plan)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mae3d.corpus.filters import CorpusFilter
from mae3d.io.blosc2_store import Blosc2Params

__all__ = ["PrepareConfig"]


@dataclass
class PrepareConfig:
    """Settings of one ``prepare`` run.

    Attributes:
        spacing_mode: ``fixed`` resamples to ``target_spacing``; ``median`` to the corpus median
            spacing (from the headers of every manifest image); ``none`` keeps each image's spacing.
        target_spacing: mm per array axis for ``fixed`` (array order = SimpleITK's ``(z, y, x)``
            order of each file, see ``mae3d.io.volumes``); nnssl's ``onemmiso`` is 1 mm.
        patch_size: pre-training patch (voxels, array order); drives the blosc2 chunk layout.
        normalization: ``zscore`` (default, nnssl's): mean/std over the whole cropped box, so the
            background keeps a value of its own (not 0, the masking fill value); ``zscore-nonzero``:
            over the (hole-filled) non-zero region, voxels outside it set to 0 (nnU-Net's
            ``use_mask_for_norm``). Recorded in the plan and the checkpoint; fine-tuning plans follow it.
        image_order / mask_order / order_z: interpolation orders for images, masks, and the
            low-resolution axis of anisotropic images (nnU-Net: 3 / 1 / 0).
        anisotropy_threshold: spacing ratio above which the low-resolution axis uses ``order_z``.
        max_spacing: images with any spacing above this (mm) are rejected as absurd.
        workers: processes (None: all cores; 0 or 1: inline, no pool).
        part / parts: process only part ``part`` (0-based) of ``parts`` deterministic shares.
        overwrite: redo finished cases and replace a plan that differs.
        strict: the command fails (exit 1) if any case was skipped as bad input.
        blosc2: codec settings of the stored arrays.
        filters: which manifest images to use (modality, shape, quality), applied before work.
    """

    spacing_mode: Literal["fixed", "median", "none"] = "fixed"
    target_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    patch_size: tuple[int, int, int] = (160, 160, 160)
    normalization: Literal["zscore", "zscore-nonzero"] = "zscore"
    image_order: int = 3
    mask_order: int = 1
    order_z: int = 0
    anisotropy_threshold: float = 3.0
    max_spacing: float = 20.0
    workers: int | None = None
    part: int = 0
    parts: int = 1
    overwrite: bool = False
    strict: bool = False
    blosc2: Blosc2Params = field(default_factory=Blosc2Params)
    filters: CorpusFilter = field(default_factory=CorpusFilter)

    def __post_init__(self) -> None:
        if self.parts < 1 or not 0 <= self.part < self.parts:
            raise ValueError(f"part {self.part} / parts {self.parts}: need parts >= 1 and 0 <= part < parts")
        if any(not (0 < s <= self.max_spacing) for s in self.target_spacing):
            raise ValueError(f"target_spacing {self.target_spacing} must be in (0, {self.max_spacing}] mm")
        if self.normalization not in ("zscore", "zscore-nonzero"):
            raise ValueError(f"normalization must be 'zscore' or 'zscore-nonzero', "
                             f"got {self.normalization!r}")
        if any(p < 1 for p in self.patch_size):
            raise ValueError(f"patch_size {self.patch_size} must be positive")
        for name in ("image_order", "mask_order", "order_z"):
            if not 0 <= getattr(self, name) <= 5:
                raise ValueError(f"{name} must be in 0..5, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
