"""What a manifest holds: counts per dataset and modality, total voxels, missing files, duplicates.

Used by ``mae3d corpus info`` to check a corpus before spending hours preprocessing it. Voxel
counts come from image headers only (``imagefiles.read_header``), so this stays fast on large
collections. Images that are not usable 3D volumes (e.g. 4D series) are listed as unreadable,
with the reason preprocessing would give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mae3d.corpus.duplicates import DuplicateGroup, find_duplicates
from mae3d.corpus.manifest import Manifest
from mae3d.io.volumes import read_header

__all__ = ["CorpusSummary", "GroupCounts", "MissingFile", "UnreadableImage", "summarize"]


@dataclass
class GroupCounts:
    """Counts for one dataset or one modality (``voxels`` of the readable images only)."""

    subjects: int = 0
    sessions: int = 0
    images: int = 0
    missing: int = 0
    voxels: int = 0


@dataclass(frozen=True)
class MissingFile:
    image_id: str
    kind: str  # "image", "anatomy_mask" or "anonymization_mask"
    path: str


@dataclass(frozen=True)
class UnreadableImage:
    image_id: str
    path: str
    reason: str


@dataclass
class CorpusSummary:
    """The result of ``summarize``; ``to_dict`` for JSON, ``format`` for people."""

    collection: str
    datasets: int
    subjects: int
    sessions: int
    images: int
    per_dataset: dict[str, GroupCounts]
    per_modality: dict[str, GroupCounts]
    missing: list[MissingFile] = field(default_factory=list)
    unreadable: list[UnreadableImage] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    total_voxels: int | None = None  # None when headers were not read

    @property
    def ok(self) -> bool:
        """No missing or unreadable file and no duplicate."""
        return not (self.missing or self.unreadable or self.duplicates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection, "datasets": self.datasets, "subjects": self.subjects,
            "sessions": self.sessions, "images": self.images, "total_voxels": self.total_voxels,
            "per_dataset": {k: vars(v) for k, v in self.per_dataset.items()},
            "per_modality": {k: vars(v) for k, v in self.per_modality.items()},
            "missing": [vars(m) for m in self.missing],
            "unreadable": [vars(u) for u in self.unreadable],
            "duplicates": [d.to_dict() for d in self.duplicates],
        }

    def format(self) -> str:
        """A plain-text report: totals, a table per dataset and per modality, then the problems."""
        vox = "not read" if self.total_voxels is None else _human(self.total_voxels)
        lines = [f"collection {self.collection}: {self.datasets} datasets, {self.subjects} subjects, "
                 f"{self.sessions} sessions, {self.images} images, {vox} voxels", ""]
        for title, groups, cols in (("dataset", self.per_dataset, ("subjects", "sessions", "images")),
                                    ("modality", self.per_modality, ("subjects", "images"))):
            header = (title, *cols, "missing", "voxels")
            rows = [(name, *(str(getattr(g, c)) for c in cols), str(g.missing),
                     "-" if self.total_voxels is None else _human(g.voxels))
                    for name, g in sorted(groups.items())]
            lines += [*_table(header, rows), ""]
        if self.missing:
            lines.append(f"missing files ({len(self.missing)}):")
            lines += [f"  {m.image_id}  {m.kind}  {m.path}" for m in self.missing]
        if self.unreadable:
            lines.append(f"unreadable images ({len(self.unreadable)}):")
            lines += [f"  {u.image_id}  {u.reason}" for u in self.unreadable]
        if self.duplicates:
            lines.append(f"duplicates ({len(self.duplicates)} groups; the first of each is used):")
            for d in self.duplicates:
                lines.append(f"  same {d.kind.replace('_', ' ')} {d.key}: "
                             + ", ".join(f"{r.image_id} ({r.path})" for r in d.records))
        if self.ok:
            lines.append("no missing, unreadable or duplicate files")
        return "\n".join(lines).rstrip() + "\n"


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:  # first column left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return [fmt(header), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in rows)]


def summarize(manifest: Manifest, *, read_headers: bool = True) -> CorpusSummary:
    """Count and check every image of ``manifest``.

    Args:
        manifest: the corpus.
        read_headers: read each existing image's header (``mae3d.io.volumes.read_header``, no voxel
            data is loaded) to count voxels and to find files that are not usable 3D volumes.

    Raises:
        ManifestError: a ``$VAR`` path needs a variable that is neither in ``manifest.env`` nor set.
    """
    records = list(manifest.images())
    per_dataset: dict[str, GroupCounts] = {}
    per_modality: dict[str, GroupCounts] = {}
    seen: dict[str, tuple[set[str], set[tuple[str, str]]]] = {}  # group key -> (subjects, sessions)
    missing: list[MissingFile] = []
    unreadable: list[UnreadableImage] = []
    total = 0
    for r in records:
        voxels = 0
        image_missing = not r.path.is_file()
        if image_missing:
            missing.append(MissingFile(r.image_id, "image", str(r.path)))
        elif read_headers:
            try:
                voxels = math.prod(read_header(r.path).shape)
            except (ValueError, OSError) as e:
                unreadable.append(UnreadableImage(r.image_id, str(r.path), str(e)))
        for kind in ("anatomy_mask", "anonymization_mask"):
            p = getattr(r, kind)
            if p is not None and not p.is_file():
                missing.append(MissingFile(r.image_id, kind, str(p)))
        total += voxels
        for key, groups in ((f"d:{r.dataset_id}", per_dataset), (f"m:{r.modality}", per_modality)):
            g = groups.setdefault(key[2:], GroupCounts())
            subs, sess = seen.setdefault(key, (set(), set()))
            subs.add(r.subject_key)
            sess.add((r.subject_key, r.session_id))
            g.subjects, g.sessions = len(subs), len(sess)
            g.images += 1
            g.missing += int(image_missing)
            g.voxels += voxels
    return CorpusSummary(
        collection=manifest.collection.name,
        datasets=len({r.dataset_id for r in records}),
        subjects=len({r.subject_key for r in records}),
        sessions=len({(r.subject_key, r.session_id) for r in records}),
        images=len(records),
        per_dataset=per_dataset, per_modality=per_modality,
        missing=missing, unreadable=unreadable, duplicates=find_duplicates(records),
        total_voxels=total if read_headers else None,
    )
