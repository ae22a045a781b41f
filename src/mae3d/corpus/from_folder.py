"""Build a manifest by scanning a folder tree of volumes (BIDS-aware, plain folders work too).

Rules (in order of application):

Files.
    Volumes are files ending in ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd``
    (any case). Hidden files and folders (name starting with ``.``) are skipped, as are the
    ``.raw``/``.zraw`` voxel files of ``.mhd``/``.nhdr`` headers and files matching an ``exclude``
    pattern (default: label and segmentation files such as ``*_label.nrrd``, ``*_seg.nii.gz``,
    ``*_dseg.nii.gz``).

Datasets.
    If ``root`` itself is a dataset folder (it holds ``sub-*`` folders or a
    ``dataset_description.json``), or none of its sub-folders is one, everything belongs to one
    dataset named after ``root``. Otherwise each first-level folder under ``root`` is a dataset
    (files lying directly in ``root`` go to a dataset named after ``root``). The ``Name`` of a
    ``dataset_description.json`` is kept as dataset metadata ``dataset_name``.

Masks (never listed as images).
    A file is a mask if its stem ends in ``_mask``, ``_brainmask``, ``_defacemask``,
    ``_desc-brain_mask`` or ``_desc-deface_mask``. Files inside a ``derivatives`` (processed data)
    or ``sourcedata`` (pre-conversion originals) folder are never images either; the masks among
    them are used for pairing. Kinds: ``_defacemask`` and
    ``_desc-deface_mask`` are anonymisation (defacing) masks, every other mask is an anatomy mask.
    Removing the tag gives the mask's *target*; an image with stem ``S`` (e.g.
    ``sub-01_ses-1_T1w``) and, if BIDS-named, entity prefix ``P`` (``S`` without its suffix, e.g.
    ``sub-01_ses-1``) gets, per kind, the first existing of: a mask for ``S`` in the same folder;
    a mask for ``S`` anywhere in the same dataset (e.g. its ``derivatives``); a mask for ``P`` in
    the same folder; a mask for ``P`` anywhere in the same dataset. Non-BIDS names are not unique
    across folders, so their masks are only looked for in the same folder. BIDS derivative masks carry no
    modality suffix, so a ``P`` mask is shared by all images of the session; whether it lies on an
    image's grid is checked when preprocessing. Several candidates at one level: the first in
    sorted order is used and a warning is logged. Masks are only searched within the image's
    dataset folder.

Identifiers.
    BIDS-named files (``sub-<label>[_<key>-<value>]..._<suffix>``) give subject ``sub-<label>``,
    session ``ses-<label>`` (or the enclosing ``ses-*`` folder, else ``ses-DEFAULT``) and modality
    ``<suffix>`` (e.g. ``T1w``). Other files inside a ``sub-*`` folder take subject/session from
    their folders. Remaining files: subject = file stem, prefixed with its sub-folders inside the
    dataset joined by ``_`` so that equal names in different folders stay apart; session
    ``ses-DEFAULT``. Their modality is guessed from the name's tokens (split at non-alphanumerics,
    case-insensitive): ``t1``/``t1w``/``mprage`` -> ``T1w``, ``t2``/``t2w`` -> ``T2w``, ``flair`` ->
    ``FLAIR``, ``pd``/``pdw`` -> ``PDw``, ``t2star``/``t2s`` -> ``T2starw``, ``ct`` -> ``CT``;
    no or conflicting hits -> ``unknown``. The image name is the file stem. Two files with the
    same image id (e.g. ``x.nii.gz`` and ``x.nrrd`` side by side) raise ``ManifestError``.

Paths are absolute, or relative to ``relative_to`` (the folder the manifest will be saved in).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mae3d.corpus.imagefiles import IMAGE_EXTENSIONS, split_image_name
from mae3d.corpus.manifest import Collection, ImageEntry, Manifest, ManifestError
from mae3d.io.atomic import read_json

__all__ = ["DEFAULT_EXCLUDE", "DEFAULT_SESSION", "build_from_folder", "guess_modality", "parse_bids_name"]

log = logging.getLogger(__name__)

DEFAULT_SESSION = "ses-DEFAULT"  # nnssl's OpenMind convention for data without sessions
DEFAULT_EXCLUDE: tuple[str, ...] = ("*_label.*", "*_labels.*", "*_seg.*", "*_dseg.*", "*_probseg.*")

ANATOMY = "anatomy"
ANONYMIZATION = "anonymization"
# (tag at the end of a stem, kind); longer tags first so "_desc-deface_mask" is not read as "_mask"
_MASK_TAGS: tuple[tuple[str, str], ...] = (
    ("_desc-deface_mask", ANONYMIZATION),
    ("_desc-brain_mask", ANATOMY),
    ("_defacemask", ANONYMIZATION),
    ("_brainmask", ANATOMY),
    ("_mask", ANATOMY),
)
_MODALITY_TOKENS: dict[str, str] = {
    "t1": "T1w", "t1w": "T1w", "mprage": "T1w",
    "t2": "T2w", "t2w": "T2w",
    "flair": "FLAIR",
    "pd": "PDw", "pdw": "PDw",
    "t2star": "T2starw", "t2s": "T2starw",
    "ct": "CT",
}
# BIDS folders whose volumes are not raw images: processed outputs, and pre-conversion originals
# (often duplicates, possibly not yet defaced)
_NOT_IMAGE_FOLDERS = frozenset({"derivatives", "sourcedata"})
_BIDS_NAME = re.compile(r"^sub-[A-Za-z0-9]+(?:_[A-Za-z0-9]+-[A-Za-z0-9]+)*_[A-Za-z0-9]+$")


def parse_bids_name(stem: str) -> tuple[dict[str, str], str] | None:
    """``sub-01_ses-1_acq-x_T1w`` -> ``({"sub": "01", "ses": "1", "acq": "x"}, "T1w")``; None if not BIDS."""
    if not _BIDS_NAME.match(stem):
        return None
    *pairs, suffix = stem.split("_")
    return dict(p.split("-", 1) for p in pairs), suffix


def guess_modality(stem: str) -> str:
    """Guess the modality of a non-BIDS file from its name (rules in the module docstring)."""
    hits = {_MODALITY_TOKENS[t] for t in re.split(r"[^a-z0-9]+", stem.lower()) if t in _MODALITY_TOKENS}
    return hits.pop() if len(hits) == 1 else "unknown"


def _mask_tag(stem: str) -> tuple[str, str] | None:
    """``(kind, target stem)`` if ``stem`` names a mask."""
    low = stem.lower()
    for tag, kind in _MASK_TAGS:
        if low.endswith(tag) and len(stem) > len(tag):
            return kind, stem[: -len(tag)]
    return None


def _is_dataset_dir(d: Path) -> bool:
    if (d / "dataset_description.json").is_file():
        return True
    try:
        return any(c.is_dir() and c.name.startswith("sub-") for c in d.iterdir())
    except OSError:
        return False


def _walk(root: Path) -> list[Path]:
    """All non-hidden files under ``root`` that have a volume extension, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames)
                   if not f.startswith(".") and split_image_name(f) is not None)
    return out


@dataclass(frozen=True)
class _Found:
    path: Path
    dataset: str
    rel: tuple[str, ...]  # folders between the dataset folder and the file
    stem: str


class _MaskIndex:
    """Masks by (dataset, kind, target), remembering their folder for the same-folder preference."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, str], list[Path]] = defaultdict(list)

    def add(self, dataset: str, kind: str, target: str, path: Path) -> None:
        self._by_key[(dataset, kind, target)].append(path)

    def find(self, image: _Found, kind: str, targets: Sequence[str], *, anywhere: bool) -> Path | None:
        """First match by target, same folder before (if ``anywhere``) the rest of the dataset."""
        for target in targets:
            candidates = self._by_key.get((image.dataset, kind, target), [])
            levels = [[p for p in candidates if p.parent == image.path.parent]]
            if anywhere:
                levels.append(candidates)
            for level in levels:
                if level:
                    if len(level) > 1:
                        log.warning("%s: several %s masks match; using %s (others: %s)", image.path, kind,
                                    level[0], ", ".join(str(p) for p in level[1:]))
                    return level[0]
        return None


def _dataset_layout(root: Path) -> bool:
    """True if the first-level folders under ``root`` are datasets (a collection of datasets)."""
    if _is_dataset_dir(root):
        return False
    return any(c.is_dir() and not c.name.startswith(".") and _is_dataset_dir(c) for c in root.iterdir())


def _stored(path: Path, relative_to: Path | None) -> str:
    if relative_to is None:
        return path.as_posix()
    return Path(os.path.relpath(path, relative_to)).as_posix()


def _identify(item: _Found) -> tuple[str, str, str]:
    """(subject, session, modality) of an image (rules in the module docstring)."""
    folder_sub = next((p for p in reversed(item.rel) if p.startswith("sub-")), None)
    folder_ses = next((p for p in reversed(item.rel) if p.startswith("ses-")), None)
    bids = parse_bids_name(item.stem)
    if bids is not None:
        entities, suffix = bids
        session = f"ses-{entities['ses']}" if "ses" in entities else (folder_ses or DEFAULT_SESSION)
        return f"sub-{entities['sub']}", session, suffix
    if folder_sub is not None:
        return folder_sub, folder_ses or DEFAULT_SESSION, guess_modality(item.stem)
    return "_".join((*item.rel, item.stem)), DEFAULT_SESSION, guess_modality(item.stem)


def build_from_folder(root: str | os.PathLike, *, collection_name: str | None = None,
                      relative_to: str | os.PathLike | None = None,
                      exclude: Sequence[str] = DEFAULT_EXCLUDE) -> Manifest:
    """Scan ``root`` recursively and describe every volume found (rules in the module docstring).

    Args:
        root: folder to scan (a BIDS dataset, a folder of BIDS datasets, or any folder of volumes).
        collection_name: the collection's name; default: ``root``'s folder name.
        relative_to: the folder the manifest will be saved in; paths are stored relative to it.
            Default: absolute paths.
        exclude: ``fnmatch`` patterns on file names to leave out (neither image nor mask).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ManifestError: no volume found, or two files map to one image id.
    """
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    rel_base = None if relative_to is None else Path(os.path.abspath(relative_to))
    multi = _dataset_layout(root)

    images: list[_Found] = []
    masks = _MaskIndex()
    for path in _walk(root):
        if any(fnmatch.fnmatch(path.name.lower(), pat.lower()) for pat in exclude):
            log.debug("excluded %s", path)
            continue
        parts = path.relative_to(root).parts
        if multi and len(parts) > 1:
            dataset, rel = parts[0], parts[1:-1]
        else:
            dataset, rel = root.name, parts[:-1]
        stem = split_image_name(path.name)[0]  # type: ignore[index]
        item = _Found(path, dataset, tuple(rel), stem)
        tag = _mask_tag(stem)
        if tag is not None:
            masks.add(dataset, tag[0], tag[1], path)
        elif _NOT_IMAGE_FOLDERS.intersection(parts[:-1]):
            log.debug("not an image (derivatives/sourcedata): %s", path)
        else:
            images.append(item)
    if not images:
        raise ManifestError(f"{root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")

    manifest = Manifest(Collection(collection_name or root.name, metadata={
        "built_from": {"builder": "folder", "source": root.as_posix()}}), rel_base or root)
    for item in images:
        subject, session, modality = _identify(item)
        bids = parse_bids_name(item.stem)
        # only BIDS names (which carry subject/session) are unique enough to match across folders
        targets = [item.stem] if bids is None else [item.stem, item.stem.rsplit("_", 1)[0]]
        anat = masks.find(item, ANATOMY, targets, anywhere=bids is not None)
        anon = masks.find(item, ANONYMIZATION, targets, anywhere=bids is not None)
        manifest.add_image(item.dataset, subject, session, ImageEntry(
            name=item.stem, path=_stored(item.path, rel_base), modality=modality,
            anatomy_mask=None if anat is None else _stored(anat, rel_base),
            anonymization_mask=None if anon is None else _stored(anon, rel_base)))

    for ds_id, ds in manifest.collection.datasets.items():
        desc = (root / ds_id if multi and ds_id != root.name else root) / "dataset_description.json"
        if desc.is_file():
            try:
                name = read_json(desc).get("Name")
            except (ValueError, AttributeError) as e:
                log.warning("%s: ignored (%s)", desc, e)
                continue
            if isinstance(name, str) and name:
                ds.metadata["dataset_name"] = name
    return manifest
