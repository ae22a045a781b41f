"""Build a manifest from an nnU-Net v2 raw dataset folder (``DatasetXXX_Name``), ignoring its labels.

Lets a labelled segmentation dataset also serve as unlabelled pre-training data. Rules:

- ``dataset.json`` gives ``file_ending`` (required) and ``channel_names`` (``{"0": "T1", ...}``;
  nnU-Net v1's ``modality`` is accepted too). ``labels`` and ``labelsTr`` are ignored.
- Images are ``imagesTr/<case>_<XXXX><file_ending>`` and ``imagesTs/...`` (hidden files skipped),
  or, if ``dataset.json`` has a ``dataset`` object (nnU-Net's explicit file list), its
  ``{case: {"images": [channel 0, channel 1, ...]}}`` paths (relative ones are relative to the
  dataset folder).
- One image per case and channel: dataset = the folder name, subject = case id, session
  ``ses-DEFAULT``, name ``<case>_<XXXX>``, modality = the channel's name as written in
  ``channel_names`` (not normalised), metadata ``{"split": "train"|"test", "channel": XXXX}``.
  ``dataset.json``'s ``name`` becomes dataset metadata ``dataset_name``.
- A channel index missing from ``channel_names`` raises ``ManifestError``; a case lacking some
  channel is kept and a warning logged.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mae3d.corpus.manifest import Collection, ImageEntry, Manifest, ManifestError
from mae3d.io.atomic import read_json

__all__ = ["build_from_nnunet_raw"]

log = logging.getLogger(__name__)

SESSION = "ses-DEFAULT"
_SPLITS = (("imagesTr", "train"), ("imagesTs", "test"))


def _channel_names(meta: Mapping[str, Any], source: Path) -> dict[int, str]:
    names = meta.get("channel_names", meta.get("modality"))
    if not isinstance(names, Mapping) or not names:
        raise ManifestError(f"{source}: no 'channel_names' object")
    try:
        return {int(k): str(v) for k, v in names.items()}
    except ValueError:
        raise ManifestError(f"{source}: channel_names keys must be channel numbers, "
                            f"got {list(names)}") from None


def _scan(folder: Path, ending: str) -> dict[str, dict[int, Path]]:
    """``{case: {channel: path}}`` for ``<case>_<XXXX><ending>`` files in ``folder``."""
    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    cases: dict[str, dict[int, Path]] = defaultdict(dict)
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        m = pattern.match(f.name)
        if m is None:
            if f.name.endswith(ending):
                log.warning("%s: not named <case>_<XXXX>%s; ignored", f, ending)
            continue
        cases[m["case"]][int(m["ch"])] = f
    return cases


def _explicit(listing: Any, root: Path, source: Path) -> dict[str, dict[int, Path]]:
    if not isinstance(listing, Mapping):
        raise ManifestError(f"{source}: 'dataset' must be an object {{case: {{images: [...]}}}}")
    cases: dict[str, dict[int, Path]] = {}
    for case, entry in listing.items():
        images = entry.get("images") if isinstance(entry, Mapping) else None
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
            raise ManifestError(f"{source}: dataset/{case}: 'images' must be a list of paths")
        cases[str(case)] = {i: Path(p) if os.path.isabs(p) else root / p for i, p in enumerate(images)}
    return cases


def _stored(path: Path, relative_to: Path | None) -> str:
    if relative_to is None:
        return path.as_posix()
    return Path(os.path.relpath(path, relative_to)).as_posix()


def build_from_nnunet_raw(dataset_dir: str | os.PathLike, *, collection_name: str | None = None,
                          relative_to: str | os.PathLike | None = None) -> Manifest:
    """Describe the images of an nnU-Net raw dataset folder (rules in the module docstring).

    Args:
        dataset_dir: the ``DatasetXXX_Name`` folder holding ``dataset.json``.
        collection_name: default: the folder name.
        relative_to: the folder the manifest will be saved in; paths are stored relative to it.
            Default: absolute paths.

    Raises:
        FileNotFoundError: no such folder or no ``dataset.json``.
        ManifestError: ``dataset.json`` lacks ``file_ending``/``channel_names``, a file names an
            unknown channel, a case id is used in both imagesTr and imagesTs, or no image is found.
    """
    root = Path(os.path.abspath(dataset_dir))
    source = root / "dataset.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: not found (is {root} an nnU-Net raw dataset folder?)")
    try:
        meta = read_json(source)
    except ValueError as e:
        raise ManifestError(str(e)) from None
    if not isinstance(meta, Mapping):
        raise ManifestError(f"{source}: expected a JSON object")
    ending = meta.get("file_ending")
    if not isinstance(ending, str) or not ending:
        raise ManifestError(f"{source}: no 'file_ending' (e.g. \".nii.gz\")")
    channels = _channel_names(meta, source)
    rel_base = None if relative_to is None else Path(os.path.abspath(relative_to))

    splits: list[tuple[str, dict[str, dict[int, Path]]]] = []
    if "dataset" in meta:
        splits.append(("train", _explicit(meta["dataset"], root, source)))
    else:
        splits.extend((split, _scan(root / folder, ending)) for folder, split in _SPLITS
                      if (root / folder).is_dir())

    ds_id = root.name
    manifest = Manifest(Collection(collection_name or root.name, metadata={
        "built_from": {"builder": "nnunet", "source": root.as_posix()}}), rel_base or root)
    for split, cases in splits:
        for case in sorted(cases):
            files = cases[case]
            unknown = sorted(set(files) - set(channels))
            if unknown:
                raise ManifestError(f"{files[unknown[0]]}: channel {unknown[0]:04d} is not in "
                                    f"{source.name}'s channel_names {sorted(channels)}")
            missing = sorted(set(channels) - set(files))
            if missing:
                log.warning("%s case %s lacks channel(s) %s", ds_id, case, missing)
            for ch in sorted(files):
                try:
                    manifest.add_image(ds_id, case, SESSION, ImageEntry(
                        name=f"{case}_{ch:04d}", path=_stored(files[ch], rel_base), modality=channels[ch],
                        metadata={"split": split, "channel": ch}))
                except ManifestError as e:
                    raise ManifestError(f"{source}: case {case!r} appears twice ({e})") from None
    if not manifest.collection.datasets:
        raise ManifestError(f"{root}: no images found in imagesTr/imagesTs (file_ending {ending!r})")
    if isinstance(meta.get("name"), str) and meta["name"]:
        manifest.collection.datasets[ds_id].metadata["dataset_name"] = meta["name"]
    return manifest
