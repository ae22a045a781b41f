"""Check an nnU-Net v2 raw dataset before planning: every problem is one line naming the file.

nnU-Net's ``verify_dataset_integrity`` covers the same ground but reports through ``print`` plus a
generic ``RuntimeError`` / ``AssertionError``, treats geometry mismatches as warnings and runs a
spawn pool; a bad case would then surface as a crash deep inside preprocessing or training. This
module reuses nnU-Net's file discovery (``get_filenames_of_train_images_and_targets``), its image
readers and its ``LabelManager``, and raises :class:`DatasetError` with the first problem found:

* folder not named ``DatasetXXX_Name`` or lacking ``dataset.json`` / ``imagesTr`` / ``labelsTr``;
* ``dataset.json`` without the required keys, or labels that are not 0, 1, 2, ... consecutive;
* a case with a missing label file or with a channel count different from ``channel_names``;
* an unreadable image, NaNs, image/label shape, spacing, origin/direction or affine mismatch;
* label values that ``dataset.json`` does not declare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mae3d.io.atomic import read_json

__all__ = ["DatasetError", "DatasetSummary", "check_dataset", "dataset_name_of"]

_NAME = re.compile(r"^Dataset\d{3}_[A-Za-z0-9._-]+$")
_REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


class DatasetError(ValueError):
    """The raw dataset is not usable for training; the message names the file and the problem."""


@dataclass(frozen=True)
class DatasetSummary:
    """What the checks found: enough to plan without reading ``dataset.json`` again."""

    folder: Path
    name: str
    cases: tuple[str, ...]
    num_channels: int
    labels: dict[str, Any]
    file_ending: str
    dataset_json: dict[str, Any]


def dataset_name_of(folder: str | Path) -> str:
    """``DatasetXXX_Name`` of ``folder``; raises :class:`DatasetError` for any other folder name."""
    folder = Path(folder)
    if not _NAME.match(folder.name):
        raise DatasetError(f"{folder}: not an nnU-Net raw dataset folder (the name must be DatasetXXX_Name "
                           "with a three-digit ID, e.g. Dataset901_BrainExtraction)")
    return folder.name


def _read_dataset_json(folder: Path) -> dict[str, Any]:
    path = folder / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{path}: missing (an nnU-Net raw dataset needs dataset.json)")
    ds = read_json(path)
    if not isinstance(ds, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in ds]
    if missing:
        raise DatasetError(f"{path}: missing required keys {missing}")
    channels = ds["channel_names"]
    if not channels or not isinstance(channels, dict) \
            or sorted(channels) != [str(i) for i in range(len(channels))]:
        raise DatasetError(f"{path}: channel_names must map '0', '1', ... to channel names, got {channels!r}")
    if not isinstance(ds["labels"], dict) or "background" not in ds["labels"]:
        raise DatasetError(f"{path}: labels must be a dict that includes 'background', got {ds['labels']!r}")
    return ds


def _expected_labels(ds: dict[str, Any], path: Path) -> list[int]:
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    try:
        lm = LabelManager(ds["labels"], regions_class_order=ds.get("regions_class_order"))
    except (AssertionError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: invalid labels {ds['labels']!r} ({e})") from None
    expected = sorted(lm.all_labels + ([lm.ignore_label] if lm.has_ignore_label else []))
    if expected != list(range(len(expected))):
        raise DatasetError(f"{path}: label values must be consecutive 0, 1, 2, ... (nnU-Net), got {expected}")
    return expected


def _geometry_problem(img_props: dict[str, Any], seg_props: dict[str, Any]) -> str | None:
    if not np.allclose(img_props["spacing"], seg_props["spacing"]):
        return f"spacing {list(seg_props['spacing'])} differs from the image's {list(img_props['spacing'])}"
    if "sitk_stuff" in img_props and "sitk_stuff" in seg_props:
        a, b = img_props["sitk_stuff"], seg_props["sitk_stuff"]
        for key in ("origin", "direction"):
            if not np.allclose(a[key], b[key], atol=1e-3):
                return (f"{key} {list(np.round(b[key], 4))} differs from the image's "
                        f"{list(np.round(a[key], 4))}")
    if "nibabel_stuff" in img_props and "nibabel_stuff" in seg_props:
        a, b = img_props["nibabel_stuff"]["original_affine"], seg_props["nibabel_stuff"]["original_affine"]
        if not np.allclose(a, b, atol=1e-3):
            return "affine differs from the image's"
    return None


def _check_case(case: str, images: list[str], label: str, rw: Any, num_channels: int,
                expected: list[int]) -> None:
    # channels are read one by one: nnU-Net's readers report inconsistent channels only via print()
    arrays, img_props = [], None
    for f in images:
        try:
            arr, props = rw.read_images([f])
        except Exception as e:  # readers raise assorted errors (RuntimeError, AssertionError, ITK errors)
            raise DatasetError(f"{f}: cannot read image of case {case!r} ({type(e).__name__}: {e})") from None
        if img_props is None:
            img_props = props
        elif arr.shape[1:] != arrays[0].shape[1:]:
            raise DatasetError(f"{f}: shape {list(arr.shape[1:])} differs from channel 0's "
                               f"{list(arrays[0].shape[1:])} (case {case!r})")
        else:
            problem = _geometry_problem(img_props, props)
            if problem:
                raise DatasetError(f"{f}: {problem.replace('image', 'channel 0')} (case {case!r})")
        arrays.append(arr)
    data = np.concatenate(arrays, axis=0)
    if data.shape[0] != num_channels:
        raise DatasetError(f"{images[0]}: case {case!r} has {data.shape[0]} channels, dataset.json declares "
                           f"{num_channels}")
    if np.isnan(data).any():
        raise DatasetError(f"{images[0]}: case {case!r} contains NaN intensities")
    try:
        seg, seg_props = rw.read_seg(label)
    except Exception as e:  # see above
        raise DatasetError(f"{label}: cannot read label of case {case!r} ({type(e).__name__}: {e})") from None
    if seg.shape[1:] != data.shape[1:]:
        raise DatasetError(f"{label}: label shape {list(seg.shape[1:])} differs from the image shape "
                           f"{list(data.shape[1:])} (case {case!r})")
    problem = _geometry_problem(img_props, seg_props)
    if problem:
        raise DatasetError(f"{label}: {problem} (case {case!r})")
    values = np.unique(seg)
    if np.isnan(values).any():
        raise DatasetError(f"{label}: contains NaN (case {case!r})")
    unexpected = sorted(int(v) for v in values if int(v) not in expected or v != int(v))
    if unexpected:
        raise DatasetError(f"{label}: label values {unexpected} are not declared in dataset.json "
                           f"(expected a subset of {expected})")


def check_dataset(folder: str | Path, *, read_cases: bool = True) -> DatasetSummary:
    """Validate the nnU-Net raw dataset ``folder`` (see module docstring).

    Args:
        folder: ``.../DatasetXXX_Name`` with ``dataset.json``, ``imagesTr`` and ``labelsTr``.
        read_cases: also read every image/label pair (shapes, geometry, channels, label values);
            without it only names, files and ``dataset.json`` are checked.

    Raises:
        DatasetError: one line naming the offending file and the problem.
    """
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: dataset folder not found")
    name = dataset_name_of(folder)
    ds = _read_dataset_json(folder)
    json_path = folder / "dataset.json"
    if "dataset" not in ds:
        for sub in ("imagesTr", "labelsTr"):
            if not (folder / sub).is_dir():
                raise DatasetError(f"{folder / sub}: missing (an nnU-Net raw dataset needs imagesTr and "
                                   "labelsTr)")
    expected = _expected_labels(ds, json_path)
    num_channels = len(ds["channel_names"])
    cases = {str(k): v for k, v in get_filenames_of_train_images_and_targets(str(folder), ds).items()}
    if not cases:
        raise DatasetError(f"{folder / 'imagesTr'}: no training images ending in {ds['file_ending']!r} "
                           "(expected CASE_0000{ending}, one file per channel)")
    if len(cases) != ds["numTraining"]:
        raise DatasetError(f"{json_path}: numTraining is {ds['numTraining']} but {len(cases)} training cases "
                           f"were found in imagesTr")
    for case, files in cases.items():
        if len(files["images"]) != num_channels:
            raise DatasetError(f"{folder / 'imagesTr'}: case {case!r} has {len(files['images'])} channel "
                               f"file(s), dataset.json declares {num_channels} channels")
        missing = [f for f in files["images"] if not Path(f).is_file()]
        if missing:
            raise DatasetError(f"{missing[0]}: image of case {case!r} is missing")
        if not Path(files["label"]).is_file():
            raise DatasetError(f"{files['label']}: label of case {case!r} is missing")
    if read_cases:
        first = next(iter(cases.values()))["images"][0]
        rw = determine_reader_writer_from_dataset_json(ds, first, verbose=False)()
        for case, files in cases.items():
            _check_case(case, files["images"], files["label"], rw, num_channels, expected)
    return DatasetSummary(folder=folder, name=name, cases=tuple(sorted(cases)), num_channels=num_channels,
                          labels=dict(ds["labels"]), file_ending=ds["file_ending"], dataset_json=ds)
