"""The preprocessed-corpus folder written by ``mae3d prepare`` and read by pre-training.

Layout (see notes/STORE_CONTRACT.md)::

    OUT/plan.json, fingerprint.json, config.json, report.json
    OUT/cases/<id>.b2nd           float32 (1, z, y, x), plan spacing (see below)
    OUT/cases/<id>.json           properties; written LAST, so its presence means "finished"
    OUT/cases/<id>__anat.b2nd     uint8 (1, z, y, x) anatomy mask (optional)
    OUT/cases/<id>__anon.b2nd     uint8 (1, z, y, x) anonymisation mask (optional)

Arrays are in SimpleITK's array order of each source file (``mae3d.io.volumes``), the order nnU-Net
reads for fine-tuning. Plan schema version 2 introduced this; version 1 folders hold arrays
reoriented to RAS ``(X, Y, Z)`` and are refused (:func:`check_plan_version`), never mixed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import blosc2
import numpy as np

from mae3d.corpus.filters import CorpusFilter
from mae3d.io.atomic import read_json, write_json
from mae3d.io.blosc2_store import Blosc2Params, open_array, save_array

__all__ = [
    "CASES_DIR",
    "MASK_SUFFIX",
    "PLAN_SCHEMA_VERSION",
    "NotAPreparedCorpusError",
    "OutdatedCorpusError",
    "PreprocessedCorpus",
    "case_files",
    "check_plan_version",
    "write_case",
]

#: 1: arrays reoriented to RAS (X, Y, Z); 2: SimpleITK array order of the file, spacing in that order,
#: whole-box z-score by default
PLAN_SCHEMA_VERSION = 2
CASES_DIR = "cases"
MaskKind = Literal["anatomy", "anonymization"]
MASK_SUFFIX: dict[str, str] = {"anatomy": "__anat", "anonymization": "__anon"}


class NotAPreparedCorpusError(FileNotFoundError):
    """The folder has no ``plan.json``: it was not written by ``mae3d prepare``."""


class OutdatedCorpusError(ValueError):
    """The folder was prepared with another plan schema version (e.g. RAS arrays of version 1)."""


def check_plan_version(plan: dict[str, Any], plan_file: str | os.PathLike) -> None:
    """Raise :class:`OutdatedCorpusError` (one line naming the fix) unless ``plan`` is this version."""
    version = plan.get("schema_version")
    if version == PLAN_SCHEMA_VERSION:
        return
    why = ("arrays reoriented to RAS, not the axis order nnU-Net fine-tunes on" if version == 1
           else "unknown to this mae3d")
    raise OutdatedCorpusError(f"{plan_file}: prepared corpus of plan schema_version {version!r} ({why}); "
                              f"this mae3d reads version {PLAN_SCHEMA_VERSION}: re-run `mae3d prepare` "
                              "into a new folder")


def case_files(cases_dir: str | os.PathLike, case_id: str) -> dict[str, Path]:
    """Paths of every file of a case: ``image``, ``properties`` and one per mask kind."""
    d = Path(cases_dir)
    files = {"image": d / f"{case_id}.b2nd", "properties": d / f"{case_id}.json"}
    for kind, suffix in MASK_SUFFIX.items():
        files[kind] = d / f"{case_id}{suffix}.b2nd"
    return files


def write_case(cases_dir: Path, case_id: str, image_czyx: np.ndarray, properties: dict[str, Any],
               masks: dict[str, np.ndarray] | None = None, *, patch_size: Sequence[int] = (160, 160, 160),
               params: Blosc2Params | None = None, nthreads: int = 1) -> dict[str, Any]:
    """Store one case atomically: image and masks first, the properties JSON last.

    ``properties`` is completed with ``masks`` (kinds present), ``shape`` and ``blosc2`` layout;
    the completed dict is returned.
    A killed writer leaves at most temporary files and no properties, i.e. an unfinished case.
    """
    masks = masks or {}
    unknown = set(masks) - set(MASK_SUFFIX)
    if unknown:
        raise ValueError(f"unknown mask kind(s) {sorted(unknown)}; valid: {sorted(MASK_SUFFIX)}")
    if image_czyx.ndim != 4:
        raise ValueError(f"{case_id}: image must be (C, z, y, x), got shape {image_czyx.shape}")
    files = case_files(cases_dir, case_id)
    # a case being rewritten is unfinished until its new properties land (a kill must not pair
    # old properties with new arrays)
    files["properties"].unlink(missing_ok=True)
    layout = save_array(files["image"], image_czyx.astype(np.float32, copy=False), patch_size=patch_size,
                        params=params, nthreads=nthreads)
    for kind, m in masks.items():
        if m.shape != image_czyx.shape:
            raise ValueError(f"{case_id}: {kind} mask shape {m.shape} != image shape {image_czyx.shape}")
        save_array(files[kind], m.astype(np.uint8, copy=False), patch_size=patch_size, params=params,
                   nthreads=nthreads)
    # a rerun may drop a mask; never leave a stale one beside the new properties
    for kind in set(MASK_SUFFIX) - set(masks):
        files[kind].unlink(missing_ok=True)
    props = {**properties, "masks": sorted(masks), "shape": list(image_czyx.shape[1:]), "blosc2": layout}
    write_json(files["properties"], props)
    return props


class PreprocessedCorpus:
    """Read access to a prepared corpus folder (finished cases only)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        plan_file = self.root / "plan.json"
        if not plan_file.is_file():
            raise NotAPreparedCorpusError(f"{self.root}: not a prepared corpus "
                                          "(no plan.json; run mae3d prepare)")
        self.plan: dict[str, Any] = read_json(plan_file)
        check_plan_version(self.plan, plan_file)
        self.cases_dir = self.root / CASES_DIR
        self.case_ids: list[str] = self._finished_ids()
        self._props: dict[str, dict[str, Any]] = {}

    def _finished_ids(self) -> list[str]:
        if not self.cases_dir.is_dir():
            return []
        # temporary files start with "." (mae3d.io.atomic), so they never count as finished
        return sorted(p.name[:-5] for p in self.cases_dir.iterdir()
                      if p.name.endswith(".json") and not p.name.startswith("."))

    def __len__(self) -> int:
        return len(self.case_ids)

    def _check(self, case_id: str) -> None:
        if not case_files(self.cases_dir, case_id)["properties"].is_file():
            raise KeyError(f"{self.root}: no finished case {case_id!r}")

    def properties(self, case_id: str) -> dict[str, Any]:
        """The case's properties JSON (cached)."""
        if case_id not in self._props:
            self._check(case_id)
            self._props[case_id] = read_json(case_files(self.cases_dir, case_id)["properties"])
        return self._props[case_id]

    def image(self, case_id: str) -> blosc2.NDArray:
        """The float32 ``(1, z, y, x)`` image, opened read-only and memory-mapped."""
        self._check(case_id)
        return open_array(case_files(self.cases_dir, case_id)["image"])

    def mask(self, case_id: str, kind: MaskKind) -> blosc2.NDArray | None:
        """The uint8 ``(1, z, y, x)`` mask of ``kind``, or None if the case has none."""
        if kind not in MASK_SUFFIX:
            raise ValueError(f"unknown mask kind {kind!r}; valid: {sorted(MASK_SUFFIX)}")
        if kind not in self.properties(case_id).get("masks", []):
            return None
        return open_array(case_files(self.cases_dir, case_id)[kind])

    def select(self, *, modalities: Iterable[str] | None = None, min_shape: Sequence[int] | None = None,
               min_quality: float | None = None, max_quality: float | None = None,
               quality_field: str = "quality") -> list[str]:
        """Finished case ids passing every given condition (``mae3d.corpus.filters.CorpusFilter``).

        ``min_shape`` compares the stored shape per axis. A quality bound excludes cases whose
        metadata lacks ``quality_field`` (their quality cannot be vouched for).
        """
        flt = CorpusFilter(modalities=None if modalities is None else list(modalities),
                           min_shape=None if min_shape is None else tuple(min_shape),
                           min_quality=min_quality, max_quality=max_quality, quality_field=quality_field)
        return [cid for cid in self.case_ids if flt.matches_record(self.properties(cid)) is None]
