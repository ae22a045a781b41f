"""The corpus manifest: a versioned JSON description of a pre-training collection, shaped like BIDS.

Hierarchy: collection -> datasets -> subjects -> sessions -> images. Each image has a path, a
modality, optional anatomy and anonymisation (defacing) masks and free metadata. Paths are stored
as written; relative paths are resolved against the manifest's folder, and ``$VAR/rest`` paths
against the environment variable ``VAR`` (the convention of nnssl's ``pretrain_data.json``).

The field names follow nnssl's ``pretrain_data.json`` where they overlap (see
``corpus/nnssl_json.py``), so the two convert into each other without loss.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mae3d.io.atomic import read_json, write_json

__all__ = [
    "SCHEMA_VERSION",
    "Collection",
    "CorpusDataset",
    "ImageEntry",
    "ImageRecord",
    "Manifest",
    "ManifestError",
    "Session",
    "Subject",
    "load_manifest",
    "save_manifest",
]

SCHEMA_VERSION = 1
FORMAT_NAME = "mae3d-corpus"


class ManifestError(ValueError):
    """The manifest file is malformed; the message names the file and the offending entry."""


@dataclass
class ImageEntry:
    """One image as stored in the manifest (paths unresolved)."""

    name: str
    path: str
    modality: str = "unknown"
    anatomy_mask: str | None = None
    anonymization_mask: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Session:
    session_id: str
    images: list[ImageEntry] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Subject:
    subject_id: str
    sessions: dict[str, Session] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class CorpusDataset:
    dataset_id: str
    subjects: dict[str, Subject] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Collection:
    name: str
    datasets: dict[str, CorpusDataset] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageRecord:
    """A flattened image with its parents' identifiers and resolved absolute paths.

    ``image_id`` is unique within a collection and safe as a file name:
    ``dataset__subject__session__name``.
    """

    image_id: str
    dataset_id: str
    subject_id: str
    session_id: str
    name: str
    path: Path
    modality: str
    anatomy_mask: Path | None
    anonymization_mask: Path | None
    metadata: dict[str, Any]

    @property
    def subject_key(self) -> str:
        """Identifier of the subject across datasets (used for subject-level splits)."""
        return f"{self.dataset_id}__{self.subject_id}"


def _resolve(p: str | None, root: Path, env: Mapping[str, str] | None = None) -> Path | None:
    """Resolve a stored path: ``$VAR/rest`` via ``env`` (then the environment), relative via ``root``."""
    if p is None:
        return None
    if p.startswith("$"):
        var, _, rest = p[1:].partition("/")
        base = env.get(var) if env is not None else None
        if base is None:
            base = os.environ.get(var)
        if base is None:
            raise ManifestError(f"path {p!r} needs the variable {var}: set it in the environment "
                                "or pass it in the manifest's env mapping")
        return Path(base) / rest
    path = Path(p).expanduser()
    return path if path.is_absolute() else (root / path)


def _is_relative(p: str | None) -> bool:
    return p is not None and not p.startswith(("$", "~")) and not os.path.isabs(p)


@dataclass
class Manifest:
    """A collection plus the folder that relative paths are resolved against.

    ``env`` optionally maps variable names to folders for ``$VAR/rest`` paths; it takes precedence
    over the process environment and is not saved with the manifest (it describes one machine).
    """

    collection: Collection
    root: Path = field(default_factory=Path.cwd)
    env: dict[str, str] | None = None

    def images(self) -> Iterator[ImageRecord]:
        """All images, flattened, in a stable order (dataset, subject, session, listing order)."""
        for ds_id in sorted(self.collection.datasets):
            ds = self.collection.datasets[ds_id]
            for sub_id in sorted(ds.subjects):
                sub = ds.subjects[sub_id]
                for ses_id in sorted(sub.sessions):
                    ses = sub.sessions[ses_id]
                    for img in ses.images:
                        meta = {**ds.metadata, **sub.metadata, **ses.metadata, **img.metadata}
                        yield ImageRecord(
                            image_id=f"{ds_id}__{sub_id}__{ses_id}__{img.name}",
                            dataset_id=ds_id,
                            subject_id=sub_id,
                            session_id=ses_id,
                            name=img.name,
                            path=_resolve(img.path, self.root, self.env),  # type: ignore[arg-type]
                            modality=img.modality,
                            anatomy_mask=_resolve(img.anatomy_mask, self.root, self.env),
                            anonymization_mask=_resolve(img.anonymization_mask, self.root, self.env),
                            metadata=meta,
                        )

    def add_image(self, dataset_id: str, subject_id: str, session_id: str, image: ImageEntry) -> None:
        """Insert ``image``, creating its dataset/subject/session as needed.

        Raises:
            ManifestError: the session already holds an image of that name (its image id would be
                taken twice; builders must not accept duplicates silently).
        """
        ds = self.collection.datasets.setdefault(dataset_id, CorpusDataset(dataset_id))
        sub = ds.subjects.setdefault(subject_id, Subject(subject_id))
        ses = sub.sessions.setdefault(session_id, Session(session_id))
        for other in ses.images:
            if other.name == image.name:
                raise ManifestError(
                    f"duplicate image id {dataset_id}__{subject_id}__{session_id}__{image.name}: "
                    f"{image.path} and {other.path}")
        ses.images.append(image)

    def rebased(self, new_root: str | os.PathLike, *, absolute: bool = False) -> Manifest:
        """A copy whose relative paths are re-expressed against ``new_root`` (e.g. another save folder).

        ``$VAR`` and absolute paths are kept; with ``absolute`` relative paths become absolute.
        """
        new_root = Path(os.path.abspath(new_root))
        out = Manifest(copy.deepcopy(self.collection), new_root, None if self.env is None else dict(self.env))

        def move(p: str | None) -> str | None:
            if not _is_relative(p):
                return p
            full = os.path.normpath(os.path.join(os.path.abspath(self.root), p))  # type: ignore[arg-type]
            return Path(full).as_posix() if absolute else Path(os.path.relpath(full, new_root)).as_posix()

        for ds in out.collection.datasets.values():
            for sub in ds.subjects.values():
                for ses in sub.sessions.values():
                    for img in ses.images:
                        img.path = move(img.path)  # type: ignore[assignment]
                        img.anatomy_mask = move(img.anatomy_mask)
                        img.anonymization_mask = move(img.anonymization_mask)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "schema_version": SCHEMA_VERSION,
                "collection": dataclasses.asdict(self.collection)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], root: Path, *, source: str = "manifest") -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ManifestError(f"{source}: not a mae3d corpus manifest (missing format={FORMAT_NAME!r})")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(f"{source}: schema_version {version!r} is not supported "
                                f"(this mae3d reads {SCHEMA_VERSION})")
        try:
            return cls(_collection_from_dict(data["collection"]), root)
        except (KeyError, TypeError) as e:
            raise ManifestError(f"{source}: malformed entry ({e})") from None


def _collection_from_dict(c: dict[str, Any]) -> Collection:
    datasets = {}
    for ds_id, ds in c.get("datasets", {}).items():
        subjects = {}
        for sub_id, sub in ds.get("subjects", {}).items():
            sessions = {}
            for ses_id, ses in sub.get("sessions", {}).items():
                images = [ImageEntry(**img) for img in ses.get("images", [])]
                sessions[ses_id] = Session(ses_id, images, dict(ses.get("metadata", {})))
            subjects[sub_id] = Subject(sub_id, sessions, dict(sub.get("metadata", {})))
        datasets[ds_id] = CorpusDataset(ds_id, subjects, dict(ds.get("metadata", {})))
    return Collection(c["name"], datasets, dict(c.get("metadata", {})))


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read a manifest; relative image paths resolve against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    try:
        data = read_json(path)
    except ValueError as e:
        raise ManifestError(str(e)) from None
    return Manifest.from_dict(data, path.resolve().parent, source=str(path))


def save_manifest(manifest: Manifest, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``manifest`` atomically (refuses to replace an existing file unless ``overwrite``).

    Relative paths are rewritten relative to the destination folder when it differs from
    ``manifest.root``, so that they still point at the same files once loaded from there.
    """
    folder = Path(os.path.abspath(path)).parent
    if folder != Path(os.path.abspath(manifest.root)):
        manifest = manifest.rebased(folder)
    return write_json(path, manifest.to_dict(), overwrite=overwrite)
