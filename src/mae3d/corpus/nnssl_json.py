"""Import and export nnssl's ``pretrain_data.json`` (the OpenMind collection format).

Mapping (nnssl -> manifest):

- ``collection_name`` -> ``Collection.name``; ``collection_index`` -> collection metadata
  ``collection_index``.
- ``datasets[<key>]`` -> dataset id ``dataset_index`` (as a string; the key if absent);
  ``dataset_info`` -> dataset metadata; ``name`` (when not null) -> dataset metadata ``dataset_name``.
- ``subject_info`` / ``session_info`` / ``image_info`` -> subject / session / image metadata.
- image ``name``, ``image_path``, ``modality`` and ``associated_masks.{anatomy_mask,
  anonymization_mask}`` -> the ``ImageEntry`` fields. Paths are kept exactly as written: ``$VAR/...``
  paths (``$nnssl_raw``) resolve from the environment, or from an explicit ``env`` mapping, when
  used; relative paths resolve against the json's folder.
- Quality: ``dataset_info["image_quality_score"]`` is a list of ``{modality, derived_from,
  image_quality_score}``. An image gets the numeric metadata field ``quality`` from the first entry
  whose ``modality`` equals the image's modality and whose ``derived_from`` equals the image's
  ``image_info["derived_from"]`` (both may be null; an entry without a ``derived_from`` key
  matches any). A ``quality`` already present in ``image_info`` is kept as it is.

``to_nnssl_json`` inverts the mapping (a ``quality`` equal to the derived value is not written back
into ``image_info``; relative paths are written absolute since nnssl resolves no manifest folder),
so json -> manifest -> json returns the input for files using absolute or ``$VAR`` paths.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mae3d.corpus.manifest import (
    Collection,
    CorpusDataset,
    ImageEntry,
    Manifest,
    ManifestError,
    Session,
    Subject,
)
from mae3d.io.atomic import read_json

__all__ = ["QUALITY_FIELD", "build_from_nnssl_json", "quality_lookup", "to_nnssl_json"]

log = logging.getLogger(__name__)

QUALITY_FIELD = "quality"
DEFAULT_COLLECTION_INDEX = 1  # written when a manifest from another source has none


def _as_dict(x: Any, where: str) -> dict[str, Any]:
    if x is None:
        return {}
    if not isinstance(x, Mapping):
        raise ManifestError(f"{where}: expected an object, got {type(x).__name__}")
    return dict(x)


def quality_lookup(dataset_info: Mapping[str, Any], modality: str, derived_from: Any) -> float | None:
    """The ``image_quality_score`` of ``dataset_info`` for (modality, derived_from), or None.

    Rules in the module docstring; non-numeric scores are ignored.
    """
    entries = dataset_info.get("image_quality_score") or []
    if not isinstance(entries, list):
        return None
    found: list[float] = []
    for e in entries:
        if not isinstance(e, Mapping) or e.get("modality") != modality:
            continue
        if "derived_from" in e and e["derived_from"] != derived_from:
            continue
        score = e.get("image_quality_score")
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            found.append(float(score))
    if len(set(found)) > 1:
        log.warning("several image_quality_score entries for modality %r derived_from %r: %s; using %s",
                    modality, derived_from, found, found[0])
    return found[0] if found else None


def build_from_nnssl_json(path: str | os.PathLike, *, env: Mapping[str, str] | None = None,
                          collection_name: str | None = None,
                          relative_to: str | os.PathLike | None = None) -> Manifest:
    """Read an nnssl ``pretrain_data.json`` into a manifest (mapping in the module docstring).

    Args:
        path: the json file.
        env: values for ``$VAR`` paths, used before the process environment (e.g.
            ``{"nnssl_raw": "/data/raw"}``); kept on the returned manifest, not saved with it.
        collection_name: overrides the json's ``collection_name``.
        relative_to: re-express relative paths against this folder (where the manifest will live).

    Raises:
        FileNotFoundError: no such file.
        ManifestError: the file is not a valid ``pretrain_data.json`` (message names the entry), or
            one session lists two images of the same name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrain_data.json not found")
    try:
        data = read_json(path)
    except ValueError as e:
        raise ManifestError(str(e)) from None
    if not isinstance(data, Mapping) or not isinstance(data.get("datasets"), Mapping):
        raise ManifestError(f"{path}: not an nnssl pretrain_data.json (no 'datasets' object)")
    source = Path(os.path.abspath(path)).as_posix()
    coll_meta: dict[str, Any] = {"built_from": {"builder": "nnssl", "source": source}}
    if data.get("collection_index") is not None:
        coll_meta["collection_index"] = data["collection_index"]
    name = collection_name or data.get("collection_name") or path.parent.name
    manifest = Manifest(Collection(str(name), metadata=coll_meta), Path(os.path.abspath(path.parent)),
                        None if env is None else dict(env))
    where = str(path)
    for ds_key, ds in data["datasets"].items():
        w_ds = f"{where}: datasets/{ds_key}"
        ds = _as_dict(ds, w_ds)
        ds_id = str(ds.get("dataset_index", ds_key))
        if ds_id in manifest.collection.datasets:
            raise ManifestError(f"{w_ds}: dataset_index {ds_id!r} is used twice")
        info = _as_dict(ds.get("dataset_info"), w_ds + "/dataset_info")
        ds_meta = dict(info)
        if ds.get("name") is not None:
            ds_meta["dataset_name"] = ds["name"]
        ds_obj = manifest.collection.datasets[ds_id] = CorpusDataset(ds_id, metadata=ds_meta)
        for sub_key, sub in _as_dict(ds.get("subjects"), w_ds + "/subjects").items():
            w_sub = f"{w_ds}/subjects/{sub_key}"
            sub = _as_dict(sub, w_sub)
            sub_id = str(sub.get("subject_id", sub_key))
            sub_obj = ds_obj.subjects.setdefault(sub_id, Subject(sub_id))
            sub_obj.metadata.update(_as_dict(sub.get("subject_info"), w_sub + "/subject_info"))
            for ses_key, ses in _as_dict(sub.get("sessions"), w_sub + "/sessions").items():
                w_ses = f"{w_sub}/sessions/{ses_key}"
                ses = _as_dict(ses, w_ses)
                ses_id = str(ses.get("session_id", ses_key))
                ses_obj = sub_obj.sessions.setdefault(ses_id, Session(ses_id))
                ses_obj.metadata.update(_as_dict(ses.get("session_info"), w_ses + "/session_info"))
                images = ses.get("images") or []
                if not isinstance(images, list):
                    raise ManifestError(f"{w_ses}/images: expected a list")
                for i, img in enumerate(images):
                    w_img = f"{w_ses}/images[{i}]"
                    entry = _image_entry(_as_dict(img, w_img), info, w_img)
                    try:
                        manifest.add_image(ds_id, sub_id, ses_id, entry)
                    except ManifestError as e:
                        raise ManifestError(f"{w_img}: {e}") from None
    if relative_to is not None:
        manifest = manifest.rebased(relative_to)
    return manifest


def _image_entry(img: dict[str, Any], dataset_info: Mapping[str, Any], where: str) -> ImageEntry:
    for key in ("name", "image_path"):
        if not isinstance(img.get(key), str) or not img[key]:
            raise ManifestError(f"{where}: missing or empty {key!r}")
    meta = _as_dict(img.get("image_info"), where + "/image_info")
    masks = _as_dict(img.get("associated_masks"), where + "/associated_masks")
    modality = str(img.get("modality") or "unknown")
    if QUALITY_FIELD not in meta:
        q = quality_lookup(dataset_info, modality, meta.get("derived_from"))
        if q is not None:
            meta[QUALITY_FIELD] = q
    return ImageEntry(name=img["name"], path=img["image_path"], modality=modality,
                      anatomy_mask=masks.get("anatomy_mask"),
                      anonymization_mask=masks.get("anonymization_mask"), metadata=meta)


def _export_path(p: str | None, root: Path) -> str | None:
    if p is None or p.startswith(("$", "~")) or os.path.isabs(p):
        return p
    return Path(os.path.normpath(os.path.join(os.path.abspath(root), p))).as_posix()


def to_nnssl_json(manifest: Manifest) -> dict[str, Any]:
    """The manifest as an nnssl ``pretrain_data.json`` object (inverse of ``build_from_nnssl_json``)."""
    coll = manifest.collection
    datasets: dict[str, Any] = {}
    for ds_id, ds in coll.datasets.items():
        info = {k: v for k, v in ds.metadata.items() if k != "dataset_name"}
        subjects: dict[str, Any] = {}
        for sub_id, sub in ds.subjects.items():
            sessions: dict[str, Any] = {}
            for ses_id, ses in sub.sessions.items():
                images = []
                for img in ses.images:
                    meta = dict(img.metadata)
                    if QUALITY_FIELD in meta and meta[QUALITY_FIELD] == quality_lookup(
                            info, img.modality, meta.get("derived_from")):
                        del meta[QUALITY_FIELD]  # derived on import; dataset_info carries it
                    images.append({
                        "name": img.name,
                        "image_path": _export_path(img.path, manifest.root),
                        "modality": img.modality,
                        "image_info": meta,
                        "associated_masks": {
                            "anonymization_mask": _export_path(img.anonymization_mask, manifest.root),
                            "anatomy_mask": _export_path(img.anatomy_mask, manifest.root),
                        },
                    })
                sessions[ses_id] = {"session_id": ses_id, "session_info": dict(ses.metadata),
                                    "images": images}
            subjects[sub_id] = {"subject_id": sub_id, "subject_info": dict(sub.metadata),
                                "sessions": sessions}
        datasets[ds_id] = {"dataset_index": ds_id, "name": ds.metadata.get("dataset_name"),
                           "dataset_info": info, "subjects": subjects}
    return {"collection_index": coll.metadata.get("collection_index", DEFAULT_COLLECTION_INDEX),
            "collection_name": coll.name, "datasets": datasets}
