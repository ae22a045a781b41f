"""Duplicate images in a manifest: one image id used twice, or one file listed under two ids.

Builders refuse duplicate ids, but hand-written or merged manifests can still hold them, and
listing one scan twice would over-weight it in pre-training. ``corpus info`` reports the groups;
preprocessing keeps the first record of each group and reports the others as skipped.

Paths are compared after the manifest's own resolution (``$VAR``, relative to the manifest
folder) and normalisation, without following symbolic links: a deliberately symlinked file is not
a duplicate of its target.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from mae3d.corpus.manifest import ImageRecord, Manifest

__all__ = ["DuplicateGroup", "dedupe", "find_duplicates"]


def _path_key(record: ImageRecord) -> str:
    return os.path.normpath(os.path.abspath(record.path))


@dataclass(frozen=True)
class DuplicateGroup:
    """Records sharing an image id (``kind="image_id"``) or a file (``kind="path"``), in manifest order."""

    kind: Literal["image_id", "path"]
    key: str
    records: tuple[ImageRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key,
                "image_ids": [r.image_id for r in self.records],
                "paths": [str(r.path) for r in self.records]}


def find_duplicates(manifest_or_records: Manifest | Iterable[ImageRecord]) -> list[DuplicateGroup]:
    """All groups of duplicate records; a group per repeated image id, then per repeated file."""
    records = (list(manifest_or_records.images()) if isinstance(manifest_or_records, Manifest)
               else list(manifest_or_records))
    by_id: dict[str, list[ImageRecord]] = defaultdict(list)
    by_path: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_id[r.image_id].append(r)
        by_path[_path_key(r)].append(r)
    groups = [DuplicateGroup("image_id", k, tuple(v)) for k, v in by_id.items() if len(v) > 1]
    groups += [DuplicateGroup("path", k, tuple(v)) for k, v in by_path.items() if len(v) > 1]
    return groups


def dedupe(records: Iterable[ImageRecord]) -> tuple[list[ImageRecord], list[tuple[ImageRecord, str]]]:
    """Keep the first record per image id and per file; return ``(kept, [(dropped, reason), ...])``."""
    kept: list[ImageRecord] = []
    dropped: list[tuple[ImageRecord, str]] = []
    ids: dict[str, ImageRecord] = {}
    paths: dict[str, ImageRecord] = {}
    for r in records:
        key = _path_key(r)
        if r.image_id in ids:
            dropped.append((r, f"duplicate entry: image id {r.image_id} appears more than once "
                                f"(first listed with {ids[r.image_id].path})"))
        elif key in paths:
            dropped.append((r, f"duplicate entry: same file as image {paths[key].image_id}"))
        else:
            ids[r.image_id] = r
            paths[key] = r
            kept.append(r)
    return kept, dropped
