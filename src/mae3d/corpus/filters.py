"""Select images for pre-training by modality, size and quality score.

One predicate serves two moments: at preprocessing time on manifest records (shape from the
header, or unknown), and at training time on the stored case properties (modality, metadata and
the stored shape) — so ``CorpusFilter`` is a plain config dataclass and its core is
``matches(modality, shape, metadata)``, which returns the reason for rejecting or None.

Semantics:
- ``modalities``: keep only these (case-insensitive exact names, e.g. ``["T1w", "FLAIR"]``).
- ``min_shape``: per-axis lower bound on the spatial shape; ``min_voxels``: bound on its product.
  Singleton axes beyond three (a channel axis ``(1, X, Y, Z)`` or ``(X, Y, Z, 1)``) are dropped
  first; a longer shape is compared on its first ``len(min_shape)`` axes. An unknown shape
  (``None``) passes, since it is checked again once known.
- ``min_quality``/``max_quality``: bounds (inclusive) on ``metadata[quality_field]``. nnssl's
  OpenMind image quality score is "lower is better", so its threshold is a ``max_quality``. An
  image without a numeric score is rejected when a bound is set, unless ``keep_missing_quality``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mae3d.corpus.nnssl_json import QUALITY_FIELD

__all__ = ["CorpusFilter", "spatial_shape"]

R = TypeVar("R")


def spatial_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` without singleton axes beyond the third (leading first, then trailing)."""
    out = [int(s) for s in shape]
    while len(out) > 3 and out[0] == 1:
        out.pop(0)
    while len(out) > 3 and out[-1] == 1:
        out.pop()
    return tuple(out)


@dataclass
class CorpusFilter:
    """Which images to use (semantics in the module docstring); all criteria off by default."""

    modalities: list[str] | None = None
    min_shape: tuple[int, ...] | None = None
    min_voxels: int | None = None
    quality_field: str = QUALITY_FIELD
    min_quality: float | None = None
    max_quality: float | None = None
    keep_missing_quality: bool = False

    def __post_init__(self) -> None:
        if self.modalities is not None and not self.modalities:
            raise ValueError("modalities is an empty list (nothing would pass); use None for any")
        if self.min_shape is not None and any(int(s) < 0 for s in self.min_shape):
            raise ValueError(f"min_shape {self.min_shape} has a negative entry")
        if (self.min_quality is not None and self.max_quality is not None
                and self.min_quality > self.max_quality):
            raise ValueError(f"min_quality {self.min_quality} > max_quality {self.max_quality}")

    @property
    def active(self) -> bool:
        """Whether any criterion is set."""
        return any(v is not None for v in (self.modalities, self.min_shape, self.min_voxels,
                                            self.min_quality, self.max_quality))

    def matches(self, modality: str, shape: Sequence[int] | None,
                metadata: Mapping[str, Any] | None) -> str | None:
        """The reason to reject an image with these properties, or None to keep it."""
        if self.modalities is not None and str(modality).lower() not in {m.lower() for m in self.modalities}:
            return f"modality {modality!r} not in {list(self.modalities)}"
        if shape is not None and (self.min_shape is not None or self.min_voxels is not None):
            spatial = spatial_shape(shape)
            if self.min_shape is not None:
                n = len(self.min_shape)
                if len(spatial) < n or any(s < m for s, m in zip(spatial[:n], self.min_shape, strict=True)):
                    return f"shape {spatial} below min_shape {tuple(self.min_shape)}"
            if self.min_voxels is not None and math.prod(spatial) < self.min_voxels:
                return f"{math.prod(spatial)} voxels below min_voxels {self.min_voxels}"
        if self.min_quality is not None or self.max_quality is not None:
            q = (metadata or {}).get(self.quality_field)
            if not isinstance(q, (int, float)) or isinstance(q, bool) or math.isnan(q):
                return None if self.keep_missing_quality else f"no numeric {self.quality_field!r} in metadata"
            if self.min_quality is not None and q < self.min_quality:
                return f"{self.quality_field} {q} below min_quality {self.min_quality}"
            if self.max_quality is not None and q > self.max_quality:
                return f"{self.quality_field} {q} above max_quality {self.max_quality}"
        return None

    def matches_record(self, record: Any, shape: Sequence[int] | None = None) -> str | None:
        """``matches`` on an ``ImageRecord`` or a properties mapping (``modality``, ``shape``, ``metadata``).

        ``shape`` overrides the record's own (records from a manifest have none).
        """
        if isinstance(record, Mapping):
            modality, own_shape = record.get("modality"), record.get("shape")
            metadata = record.get("metadata")
        else:
            modality, own_shape, metadata = record.modality, None, record.metadata
        return self.matches(str(modality), shape if shape is not None else own_shape, metadata)

    def apply(self, records: Iterable[R], *, shape_of: Callable[[R], Sequence[int] | None] | None = None
              ) -> tuple[list[R], list[tuple[R, str]]]:
        """Split ``records`` into ``(kept, [(dropped, reason), ...])``, keeping their order.

        ``shape_of`` supplies a record's shape (e.g. from its header) when the criteria need one.
        """
        kept: list[R] = []
        dropped: list[tuple[R, str]] = []
        need_shape = self.min_shape is not None or self.min_voxels is not None
        for r in records:
            shape = shape_of(r) if (shape_of is not None and need_shape) else None
            reason = self.matches_record(r, shape)
            if reason is None:
                kept.append(r)
            else:
                dropped.append((r, reason))
        return kept, dropped
