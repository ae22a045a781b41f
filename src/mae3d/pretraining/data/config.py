"""Configuration of the pre-training patch loader and its spatial augmentation.

Defaults are the reference's MAE pre-training values (nnssl ``BaseMAETrainer``; paper §6): 160³
patches, rotation U(±30°) about every axis with probability 0.2 per sample, isotropic scaling in
[0.7, 1.4] with probability 0.2 (drawn like batchgenerators' spatial transform: half below 1, half
above), mirroring of every axis with probability 0.5, no intensity augmentation, batch size 6.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = ["MASK_KINDS", "AugmentConfig", "LoaderConfig"]

# stored mask kind (store API name) -> key of the sampled mask in a batch
MASK_KINDS: dict[str, str] = {"anonymization": "anon", "anatomy": "anat"}


@dataclass
class AugmentConfig:
    """Spatial augmentation drawn per sample.

    ``scale`` multiplies the sampled input coordinates (as in batchgenerators): values > 1 cover a
    larger input region, so structures appear smaller. ``scale_draw`` says how a drawn scale is
    distributed over ``scale = (lo, hi)``:

    * ``"split"`` (default; batchgenerators' ``augment_spatial``, which nnssl uses): when ``lo < 1``,
      with probability 0.5 from U(lo, 1), otherwise from U(max(lo, 1), hi) - zooming in and out
      equally often whatever the interval's asymmetry (U(0.7, 1.4) alone is below 1 only 3/7 of
      the time);
    * ``"uniform"``: U(lo, hi).
    """

    p_rotation: float = 0.2
    rotation_deg: float = 30.0
    p_scale: float = 0.2
    scale: tuple[float, float] = (0.7, 1.4)
    scale_draw: Literal["split", "uniform"] = "split"
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    p_mirror: float = 0.5

    def __post_init__(self) -> None:
        for name in ("p_rotation", "p_scale", "p_mirror"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"augment.{name} must be in [0, 1], got {p}")
        if self.rotation_deg < 0:
            raise ValueError(f"augment.rotation_deg must be >= 0, got {self.rotation_deg}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"augment.scale must satisfy 0 < low <= high, got {self.scale}")
        if self.scale_draw not in ("split", "uniform"):
            raise ValueError(f"augment.scale_draw must be 'split' or 'uniform', got {self.scale_draw!r}")
        bad = [a for a in self.mirror_axes if a not in (0, 1, 2)]
        if bad or len(set(self.mirror_axes)) != len(self.mirror_axes):
            raise ValueError(f"augment.mirror_axes must be distinct of 0, 1, 2, got {self.mirror_axes}")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all (every patch is a plain crop)."""
        return cls(p_rotation=0.0, p_scale=0.0, mirror_axes=(), p_mirror=0.0)


@dataclass
class LoaderConfig:
    """Training/validation loader settings.

    ``workers`` are DataLoader processes per rank (0 = load in the main process); ``prefetch`` is
    the DataLoader ``prefetch_factor`` (batches queued per worker). With ``device_augment`` the
    workers only read the (image-clipped) input region of each patch and the rotation/scaling/
    mirroring runs batched on the training device (``GPUAugment``), so a GPU node needs few workers.
    ``masks`` lists stored masks to sample alongside the image ("anonymization" -> batch key
    "anon", "anatomy" -> "anat"); they are sampled with nearest-neighbour interpolation.

    There is no seed here: the loaders take the run's one seed (``train.seed``) as an argument.
    ``val_patches_per_case`` only applies when validation has no batch budget
    (``train.val_iterations = 0``).
    """

    __removed_keys__ = MappingProxyType({
        "seed": "a run has one seed, train.seed (initialisation, masks, data stream and split); "
                "set train.seed instead",
    })

    patch_size: tuple[int, int, int] = (160, 160, 160)
    batch_size: int = 6
    workers: int = 4
    prefetch: int = 4
    pin_memory: bool = True  # only takes effect when CUDA is available
    device_augment: bool = False
    masks: tuple[str, ...] = ()
    val_fraction: float = 0.05
    val_patches_per_case: int = 1
    val_batch_size: int = 0  # 0 = batch_size
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if len(self.patch_size) != 3 or min(self.patch_size) < 2:
            raise ValueError(f"loader.patch_size must be 3 sizes >= 2, got {self.patch_size}")
        if self.batch_size < 1:
            raise ValueError(f"loader.batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 0 or self.prefetch < 1:
            raise ValueError(f"loader.workers must be >= 0 and loader.prefetch >= 1, got "
                             f"{self.workers}, {self.prefetch}")
        unknown = [m for m in self.masks if m not in MASK_KINDS]
        if unknown:
            raise ValueError(f"loader.masks: unknown mask kind {unknown[0]!r}; valid: {sorted(MASK_KINDS)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"loader.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_patches_per_case < 1 or self.val_batch_size < 0:
            raise ValueError("loader.val_patches_per_case must be >= 1 and loader.val_batch_size >= 0")
